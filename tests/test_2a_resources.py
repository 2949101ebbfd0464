"""Phase 2A: Resources.  cgroup limits read back from the kernel's own files.

This machine's memory, cpu and pids controllers are cgroup v1, so these
tests exercise the v1 driver for real; tests marked `cgroupv2` also run in
the VM tier on a pure v2 kernel (tox -e vm).
"""

from __future__ import annotations

import os
import re
import time

import pytest
from conftest import cgroup_dirs, cgroup_paths, cgroup_v2, inspect, leftovers, md, wait_for

pytestmark = pytest.mark.order(2)


def cgroup_file(cid: str, name: str) -> str:
    """Read a cgroup file of the container, wherever this host keeps it."""
    for d in cgroup_dirs(cid):
        if os.path.exists(os.path.join(d, name)):
            with open(os.path.join(d, name)) as f:
                return f.read().strip()
    raise AssertionError(f"no {name} for {cid[:12]} in {cgroup_dirs(cid)}")


@pytest.mark.cgroupv2
@pytest.mark.row("2A", "Limit files", "memory 100 MB, swap none, cpu 50000/100000, pids 10")
def test_limit_files_hold_the_values(row):
    cid = md("run", "-d", "--memory=100", "--cpus=0.5", "--pids-limit", "10", "busybox", "sleep", "30").stdout.strip()
    if cgroup_v2():
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


def cpu_used(cid: str) -> tuple[float, int]:
    """The container's CPU time so far (s), and how many periods the kernel throttled it."""
    stat = dict(line.split() for line in cgroup_file(cid, "cpu.stat").splitlines())
    used = int(stat["usage_usec"]) / 1e6 if cgroup_v2() else int(cgroup_file(cid, "cpuacct.usage")) / 1e9
    return used, int(stat["nr_throttled"])


@pytest.mark.cgroupv2
@pytest.mark.row("2A", "CPU limit", "--cpus=0.5: a busy loop gets at most half a CPU, and is throttled")
def test_cpu_quota_throttles(row):
    cid = md("run", "-d", "--cpus=0.5", "busybox", "sh", "-c", "echo spinning; while :; do :; done").stdout.strip()
    wait_for(lambda: "spinning" in md("logs", cid).stdout, timeout=60)
    # Measured over a window of our own clock, however slow the machine: the
    # quota bounds the share of wall time, whatever the loop's speed.
    used0, throttled0, start = *cpu_used(cid), time.monotonic()
    time.sleep(2)
    used1, throttled1, end = *cpu_used(cid), time.monotonic()
    share = (used1 - used0) / (end - start)
    # 50 ms in every 100 ms period; the window's two edges may each add up to
    # one period's quota.
    assert share <= 0.5 + 2 * 0.05 / (end - start), f"{share:.0%} of a CPU"
    assert throttled1 > throttled0, "the loop never used up its quota"
    row.result = f"{share:.0%} of a CPU over {end - start:.1f} s, throttled {throttled1 - throttled0} times"


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


CPU_RANGE = r"Range of CPUs is from 0\.01 to \d+\.00, as there are only \d+ CPUs available"


@pytest.mark.row("2A", "Bad values", "Docker's message, one line, exit 125, nothing left behind")
@pytest.mark.parametrize("flag, message", [
    ("--memory=abc", re.escape('invalid argument "abc" for "--memory" flag: invalid size: \'abc\'')),
    ("--memory=1k", "Minimum memory limit allowed is 6MB"),
    ("--cpus=-1", CPU_RANGE),
    ("--cpus=abc", re.escape('invalid argument "abc" for "--cpus" flag: failed to parse abc as a rational number')),
    ("--cpus=999", CPU_RANGE),
    ("--memory-swap=10m", "Minimum memoryswap limit should be larger than memory limit, see usage"),
    ("--cpuset-cpus=99", r"invalid value for --cpuset-cpus: 99 \(this host has CPUs [0-9,-]+\)"),
])
def test_bad_values_are_refused(flag, message, row):
    # The message, not only the 125: argparse refuses a flag it does not
    # know with 125 too, and that must not pass for the value check.
    args = [flag] if flag != "--memory-swap=10m" else ["--memory=100m", flag]
    done = md("run", *args, "busybox", "true", check=False)
    assert done.returncode == 125, done.stderr
    assert re.fullmatch("minidocker: " + message, done.stderr.strip()), done.stderr
    assert md("ps", "-aq").stdout == "" and leftovers() == []
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
    for d in cgroup_paths(parent):  # the parent is the user's: removal leaves it, so do we
        os.rmdir(d)
