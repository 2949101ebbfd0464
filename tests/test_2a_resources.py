"""Phase 2A: Resources.  cgroup limits read back from the kernel's own files.

This machine's memory, cpu and pids controllers are cgroup v1, so these
tests exercise the v1 driver for real; tests marked `cgroupv2` also run in
the VM tier on a pure v2 kernel (tox -e vm).
"""

from __future__ import annotations

import os
import time

import pytest
from conftest import cgroup_dirs, inspect, md, wait_for

pytestmark = pytest.mark.order(2)


def cgroup_file(cid: str, name: str) -> str:
    """Read a cgroup file of the container, wherever this host keeps it."""
    for d in cgroup_dirs(cid):
        if os.path.exists(os.path.join(d, name)):
            with open(os.path.join(d, name)) as f:
                return f.read().strip()
    raise AssertionError(f"no {name} for {cid[:12]} in {cgroup_dirs(cid)}")


def v2() -> bool:
    return os.path.exists("/sys/fs/cgroup/cgroup.controllers") and \
        "memory" in open("/sys/fs/cgroup/cgroup.controllers").read()


@pytest.mark.cgroupv2
@pytest.mark.row("2A", "Limit files", "memory 100 MB, swap none, cpu 50000/100000, pids 10")
def test_limit_files_hold_the_values(row):
    cid = md("run", "-d", "--memory=100", "--cpus=0.5", "--pids-limit", "10", "busybox", "sleep", "30").stdout.strip()
    if v2():
        assert cgroup_file(cid, "memory.max") == "104857600"
        assert cgroup_file(cid, "memory.swap.max") == "0"
        assert cgroup_file(cid, "cpu.max") == "50000 100000"
        row.result = "memory.max, memory.swap.max=0, cpu.max, pids.max"
    else:
        assert cgroup_file(cid, "memory.limit_in_bytes") == "104857600"
        assert cgroup_file(cid, "memory.memsw.limit_in_bytes") == "104857600"
        assert cgroup_file(cid, "cpu.cfs_quota_us") == "50000"
        assert cgroup_file(cid, "cpu.cfs_period_us") == "100000"
        row.result = "memory.limit_in_bytes = memsw = 104857600, cfs_quota_us 50000"
    assert cgroup_file(cid, "pids.max") == "10"
    hc = inspect(cid)["HostConfig"]
    assert (hc["Memory"], hc["NanoCpus"], hc["PidsLimit"]) == (104857600, 500000000, 10)


def test_docker_units():
    for flag, expected in (("100m", 104857600), ("1g", 1 << 30), ("512000k", 512000 * 1024), ("100", 104857600)):
        cid = md("create", f"--memory={flag}", "busybox", "true").stdout.strip()
        assert inspect(cid)["HostConfig"]["Memory"] == expected, flag


@pytest.mark.cgroupv2
@pytest.mark.row("2A", "OOM killer", "allocating past --memory=100 is killed: 137, OOMKilled")
def test_oom_kill_is_reported(row):
    done = md("run", "--name", "hog", "--memory=100", "busybox", "dd", "if=/dev/zero", "of=/dev/null",
              "bs=200M", "count=1", check=False)
    assert done.returncode == 137
    state = inspect("hog")["State"]
    assert state["OOMKilled"] is True and state["ExitCode"] == 137
    row.result = "exit 137, State.OOMKilled true"


@pytest.mark.cgroupv2
@pytest.mark.row("2A", "Within the limit", "a 50 MB allocation under --memory=100 runs")
def test_allocation_within_limit_runs(row):
    done = md("run", "--rm", "--memory=100", "busybox", "dd", "if=/dev/zero", "of=/dev/null", "bs=50M", "count=1")
    assert "1+0 records out" in done.stderr
    row.result = "dd bs=50M finished"


@pytest.mark.cgroupv2
@pytest.mark.row("2A", "CPU limit", "--cpus=0.5: 3 s busy loop uses 1.5 s ± 25%")
def test_cpu_quota_throttles(row):
    cid = md("run", "-d", "--cpus=0.5", "busybox", "sh", "-c",
             "timeout 3 sh -c 'while :; do :; done'; sleep 30").stdout.strip()
    time.sleep(3.5)
    if v2():
        used = int(dict(line.split() for line in cgroup_file(cid, "cpu.stat").splitlines())["usage_usec"]) / 1e6
    else:
        used = int(cgroup_file(cid, "cpuacct.usage")) / 1e9
    assert 1.5 * 0.75 <= used <= 1.5 * 1.25, f"{used:.2f} s of CPU"
    row.result = f"{used:.2f} s of CPU in 3 s"


@pytest.mark.cgroupv2
@pytest.mark.row("2A", "Process limit", "--pids-limit 10 stops a fork loop; host unaffected")
def test_pids_limit_stops_fork_loop(row):
    # A failed `&` makes busybox sh exit, so each fork is tried in a subshell.
    cid = md("run", "-d", "--pids-limit", "10", "busybox", "sh", "-c",
             "i=0; while [ $i -lt 30 ]; do (sleep 60 &) 2>/dev/null || echo fork refused; i=$((i+1)); done;"
             " echo done; sleep 60").stdout.strip()
    wait_for(lambda: "done" in md("logs", cid).stdout)
    assert int(cgroup_file(cid, "pids.current")) <= 10
    assert md("logs", cid).stdout.count("fork refused") >= 20
    assert md("run", "--rm", "busybox", "true").returncode == 0  # the rest of the host still forks
    row.result = "pids.current stayed at 10"


@pytest.mark.cgroupv2
@pytest.mark.row("2A", "Cleanup", "cgroup directories gone after exit")
def test_cgroups_removed_after_exit(row):
    cid = md("run", "-d", "--memory=50m", "busybox", "sleep", "30").stdout.strip()
    dirs = cgroup_dirs(cid)
    assert dirs
    md("stop", "-t", "0", cid)
    assert cgroup_dirs(cid) == []
    row.result = f"{len(dirs)} directories removed"


@pytest.mark.row("2A", "stats", "--no-stream shows the limit")
def test_stats_shows_the_limit(row):
    md("run", "-d", "--name", "watched", "--memory=100", "busybox", "sleep", "30")
    lines = md("stats", "--no-stream").stdout.splitlines()
    assert lines[0].split() == ["CONTAINER", "ID", "NAME", "CPU", "%", "MEM", "USAGE", "/", "LIMIT", "MEM", "%", "PIDS"]
    watched = next(line for line in lines if " watched " in line)
    assert "/ 100MiB" in watched and watched.split()[-1] == "1"
    row.result = " ".join(watched.split()[2:7])


@pytest.mark.row("2A", "Bad values", "one line, exit 125, nothing left behind")
@pytest.mark.parametrize("flag", ["--memory=abc", "--memory=1k", "--cpus=-1", "--cpus=abc", "--cpus=999",
                                  "--memory-swap=10m", "--cpuset-cpus=99"])
def test_bad_values_are_refused(flag, row):
    args = [flag] if flag != "--memory-swap=10m" else ["--memory=100m", flag]
    done = md("run", *args, "busybox", "true", check=False)
    assert done.returncode == 125, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert md("ps", "-aq").stdout == ""
    row.result = f"{flag}: {done.stderr.strip().removeprefix('minidocker: ')[:50]}"


def test_cpuset_cpus():
    cid = md("run", "-d", "--cpuset-cpus", "0", "busybox", "sleep", "30").stdout.strip()
    assert cgroup_file(cid, "cpuset.cpus") == "0"
    pid = inspect(cid)["State"]["Pid"]
    assert os.sched_getaffinity(pid) == {0}


def test_cgroup_parent():
    parent = os.environ["MINIDOCKER_CGROUP_PARENT"] + "-custom"
    cid = md("run", "-d", "--cgroup-parent", parent, "busybox", "sleep", "30").stdout.strip()
    pid = inspect(cid)["State"]["Pid"]
    with open(f"/proc/{pid}/cgroup") as f:
        assert f"/{parent}/{cid}" in f.read()
    md("rm", "-f", cid)
    for top in ("/sys/fs/cgroup", *[f"/sys/fs/cgroup/{c}" for c in os.listdir("/sys/fs/cgroup")]):
        if os.path.isdir(f"{top}/{parent}"):  # the parent is the user's: removal leaves it, so do we
            os.rmdir(f"{top}/{parent}")
