"""containerd, Kubernetes' engine, driving minidocker-runc through its runc shim.

containerd never starts a container itself: its shim (containerd-shim-runc-v2)
runs a runc-compatible binary, and `ctr run --runc-binary` names ours.  The
test starts its own containerd, on its own socket, root and state, inside the
sandbox's network namespace and a mount namespace of its own: its image
mounts, and the containers' rootfs, never reach this machine's.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import termios
import time

import pytest
from conftest import SANDBOX, TOP, cgroup_limits, cgroup_paths, command_lines, md, read, wait_for

pytestmark = pytest.mark.order(9)

RUNC = os.path.join(TOP, "minidocker-runc")
NAMESPACE = f"mdt{os.getpid()}"  # containerd's namespace: also the top of its containers' cgroup paths
IMAGE = f"mdt-busybox-{os.getpid()}:latest"


class Containerd:
    def __init__(self, base: str) -> None:
        self.base = base
        self.socket = os.path.join(base, "containerd.sock")
        self.runc_root = os.path.join(base, "runc")  # minidocker-runc's --root is this/<namespace>, through the shim
        self.state = os.path.join(self.runc_root, NAMESPACE)

    def ctr(self, *args: str, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        done = subprocess.run(["ctr", "--address", self.socket, "--namespace", NAMESPACE, *args],
                              capture_output=True, text=True, timeout=timeout, **kw)
        if check and done.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)}: {done.returncode}: {done.stderr}")
        return done

    def run_flags(self) -> list[str]:
        return ["--runc-binary", RUNC, "--runc-root", self.runc_root]

    def runc(self, *args: str, **kw) -> subprocess.CompletedProcess:
        """minidocker-runc as the shim calls it, on the shim's own state."""
        return subprocess.run([RUNC, "--root", self.state, *args], capture_output=True, text=True, timeout=60,
                              **kw)

    def pid(self, task: str) -> int:
        line = next(x for x in self.ctr("task", "ls").stdout.splitlines() if x.split()[0] == task)
        return int(line.split()[1])

    @contextlib.contextmanager
    def detached(self, name: str, flags: list[str], command: list[str]):
        """A container run with -d, gone afterwards whatever the test did; its PID 1's host PID."""
        self.ctr("run", "-d", *self.run_flags(), *flags, IMAGE, name, *command)
        try:
            yield self.pid(name)
        finally:
            self.ctr("task", "rm", "--force", name, check=False)  # SIGKILL, then delete
            self.ctr("containers", "rm", name, check=False)


@pytest.fixture(scope="module")
def containerd(tmp_path_factory):
    if not (shutil.which("containerd") and shutil.which("ctr")):
        pytest.skip("needs Debian's containerd (.ci/setup-host installs it)")
    base = str(tmp_path_factory.mktemp("containerd"))
    with open(os.path.join(base, "config.toml"), "w") as f:
        f.write(f"""version = 2
root = "{base}/root"
state = "{base}/state"
# Kubernetes' CRI plugin wants CNI and a pause image: not this test's business.
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{base}/containerd.sock"
[ttrpc]
  address = "{base}/containerd.sock.ttrpc"
""")
    log = open(os.path.join(base, "containerd.log"), "w")  # noqa: SIM115 -- the daemon's, for as long as it runs
    daemon = subprocess.Popen(["nsenter", f"--net=/run/netns/{SANDBOX}", "unshare", "--mount", "--propagation",
                               "private", "containerd", "--config", os.path.join(base, "config.toml")],
                              stdout=log, stderr=log, start_new_session=True)
    c = Containerd(base)
    try:
        wait_for(lambda: c.ctr("version", check=False).returncode == 0, timeout=30)
        # The image: busybox, made by minidocker and handed over as an archive (`save`).
        rootfs, archive = os.path.join(base, "rootfs"), os.path.join(base, "busybox.tar")
        subprocess.run([os.path.join(TOP, "fixtures", "busybox-rootfs.sh"), rootfs], check=True)
        md("import", rootfs, IMAGE)
        md("save", "-o", archive, IMAGE)
        md("rmi", IMAGE)
        c.ctr("images", "import", archive)
        yield c
    finally:
        for task in c.ctr("task", "ls", "-q", check=False).stdout.split():
            c.ctr("task", "kill", "-s", "SIGKILL", task, check=False)
            c.ctr("task", "rm", "-f", task, check=False)
        for container in c.ctr("containers", "ls", "-q", check=False).stdout.split():
            c.ctr("containers", "rm", container, check=False)
        c.ctr("images", "rm", IMAGE, check=False)
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=30)
        log.close()
        # A shim outlives its daemon on purpose (it keeps its container):
        # ours go too, and with the last of them the mount namespace.
        for pid, cmdline in command_lines().items():
            if cmdline.split("\0")[1:3] == ["-namespace", NAMESPACE] and "containerd-shim" in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for d in cgroup_paths(NAMESPACE):
            with contextlib.suppress(OSError):
                os.rmdir(d)


def test_run_rm_output_and_exit_code(containerd):
    done = containerd.ctr("run", "--rm", *containerd.run_flags(), IMAGE, "mdt-rm", "sh", "-c",
                          "echo hi from pid $$; exit 3", check=False)
    assert (done.stdout, done.returncode) == ("hi from pid 1\n", 3), done.stderr
    assert containerd.ctr("containers", "ls", "-q").stdout == ""
    assert os.listdir(containerd.state) == []  # the shim deleted it through us
    assert cgroup_paths(f"{NAMESPACE}/mdt-rm") == []


def test_stdin_reaches_the_container(containerd):
    done = containerd.ctr("run", "--rm", *containerd.run_flags(), IMAGE, "mdt-stdin", "sh", "-c",
                          "read line; echo got $line", input="a line\n")
    assert done.stdout == "got a line\n"


def test_limits_exec_ps_pause_resume_kill_delete(containerd):
    c = containerd
    c.ctr("run", "-d", *c.run_flags(), "--memory-limit", str(64 << 20), "--cpus", "0.5", IMAGE, "mdt-life",
          "sh", "-c", "sleep 300 & wait")
    pid = c.pid("mdt-life")
    limits = cgroup_limits(pid)
    assert (limits["memory"], limits["cpu"]) == (str(64 << 20), "50000"), limits
    assert c.ctr("task", "exec", "--exec-id", "e1", "mdt-life", "sh", "-c", "exit 5", check=False).returncode == 5
    # ps: the shim's `ps --format json`; the host PIDs of both processes.
    listed = {int(line.split()[0]) for line in c.ctr("task", "ps", "mdt-life").stdout.splitlines()[1:]}
    children = {int(p) for p in read(f"/proc/{pid}/task/{pid}/children").split()}
    assert listed == {pid} | children and len(children) == 1, listed

    c.ctr("task", "pause", "mdt-life")
    assert "PAUSED" in c.ctr("task", "ls").stdout
    # Frozen by the kernel, as the cgroup's own file says (v1's freezer, or v2's cgroup.events).
    states = [read(f"{d}/freezer.state") + read(f"{d}/cgroup.events") for d in cgroup_paths(f"{NAMESPACE}/mdt-life")]
    assert any("FROZEN" in s or re.search(r"^frozen 1$", s, re.M) for s in states), states
    c.ctr("task", "resume", "mdt-life")
    assert "RUNNING" in c.ctr("task", "ls").stdout

    c.ctr("task", "kill", "-s", "SIGKILL", "mdt-life")
    wait_for(lambda: "STOPPED" in c.ctr("task", "ls").stdout)
    c.ctr("task", "rm", "mdt-life")
    c.ctr("containers", "rm", "mdt-life")
    assert cgroup_paths(f"{NAMESPACE}/mdt-life") == [] and os.listdir(c.state) == []


def test_update_resources_as_the_shim_sends_them(containerd):
    """Kubernetes resizes a pod through the shim's Update, which runs
    `runc update --resources=- ID` with linux.resources on stdin (go-runc's
    Update).  ctr 1.6 has no verb for it, so the test calls it that way."""
    c = containerd
    with c.detached("mdt-update", ["--memory-limit", str(64 << 20)], ["sleep", "300"]) as pid:
        resources = {"memory": {"limit": 128 << 20}, "cpu": {"quota": 25000, "period": 100000},
                     "pids": {"limit": 42}, "devices": [{"allow": False, "access": "rwm"}]}
        done = c.runc("update", "--resources=-", "mdt-update", input=json.dumps(resources))
        assert done.returncode == 0, done.stderr
        assert cgroup_limits(pid) == {"memory": str(128 << 20), "pids": "42", "cpu": "25000"}
        # Lower again, past the old swap figure on v1 (memory + swap must stay above memory).
        done = c.runc("update", "--memory", "32m", "--pids-limit", "-1", "mdt-update")
        assert done.returncode == 0, done.stderr
        assert cgroup_limits(pid)["memory"] == str(32 << 20) and cgroup_limits(pid)["pids"] == "max"
        # A cpuset, never asked for at create: the running process is in it at once (v1 makes it only now).
        assert c.runc("update", "--cpuset-cpus", "0", "mdt-update").returncode == 0
        assert "Cpus_allowed_list:\t0\n" in read(f"/proc/{pid}/status")
        bad = c.runc("update", "--resources=-", "mdt-update", input='{"memory": {"limit": "lots"}}')
        assert (bad.returncode, bad.stderr) == (1, "minidocker-runc: --resources: linux.resources.memory.limit: "
                                                   "must be an integer\n")
        assert cgroup_limits(pid)["memory"] == str(32 << 20)


def test_events_stats_is_what_the_kernel_counts(containerd):
    c = containerd
    with c.detached("mdt-events", ["--memory-limit", str(64 << 20)], ["sh", "-c", "sleep 300 & sleep 301 & wait"]):
        wait_for(lambda: len(json.loads(c.runc("ps", "--format", "json", "mdt-events").stdout or "[]")) == 3)
        done = c.runc("events", "--stats", "mdt-events")
        assert done.returncode == 0, done.stderr
        event = json.loads(done.stdout)
        assert (event["type"], event["id"]) == ("stats", "mdt-events")
        data = event["data"]
        assert data["pids"]["current"] == 3
        assert data["memory"]["usage"]["limit"] == 64 << 20
        assert 0 < data["memory"]["usage"]["usage"] < 64 << 20
        assert data["cpu"]["usage"]["total"] > 0
        # containerd reads the cgroup itself for its own figures: the same count.
        assert json.loads(c.ctr("task", "metrics", "--format", "json", "mdt-events").stdout)["pids"]["current"] == 3
        # The stream: figures every interval, until the container is gone.
        stream = subprocess.Popen([RUNC, "--root", c.state, "events", "--interval", "200ms", "mdt-events"],
                                  stdout=subprocess.PIPE, text=True)
        assert json.loads(stream.stdout.readline())["type"] == "stats"
        c.ctr("task", "kill", "-s", "SIGKILL", "mdt-events")
        assert stream.wait(timeout=10) == 0


def test_tty_follows_the_terminal(containerd):
    """ctr run -t: a pty of the container's, sized as the user's terminal.
    ctr sends the size once the task has started, so the shell may read
    it a moment later: asked until it shows, within a few seconds."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
    proc = subprocess.Popen(["ctr", "--address", containerd.socket, "--namespace", NAMESPACE, "run", "-t", "--rm",
                             *containerd.run_flags(), IMAGE, "mdt-tty", "sh"],
                            stdin=child, stdout=child, stderr=child, start_new_session=True)
    os.close(child)
    seen, deadline, asked, sized = b"", time.monotonic() + 30, 0.0, False
    while proc.poll() is None and time.monotonic() < deadline:
        if not sized and time.monotonic() - asked > 1:
            os.write(main, b"echo tty=$(tty) size=$(stty size)\n")
            asked = time.monotonic()
        if select.select([main], [], [], 0.2)[0]:
            try:
                seen += os.read(main, 4096)
            except OSError:
                break
        if not sized and b"size=33 101" in seen:
            sized = True
            os.write(main, b"exit 4\n")
    os.close(main)
    assert proc.wait(timeout=30) == 4, seen
    assert b"tty=/dev/pts/0 size=33 101" in seen, seen


def test_the_kubernetes_configuration_is_what_containerd_reads(tmp_path):
    """docs/oci-runtime.md's config.toml block, loaded by containerd itself."""
    if not shutil.which("containerd"):
        pytest.skip("needs Debian's containerd (.ci/setup-host installs it)")
    with open(os.path.join(TOP, "docs", "oci-runtime.md")) as f:
        block = re.search(r"```toml\n(.*?)```", f.read(), re.S)[1]
    config = tmp_path / "config.toml"
    config.write_text(block.replace("/opt/minidocker/minidocker-runc", RUNC))
    dump = subprocess.run(["containerd", "--config", str(config), "config", "dump"], capture_output=True, text=True,
                          check=True, timeout=60).stdout
    runtime = dump.split('[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.minidocker]')[1].split("\n\n[")[0]
    assert 'runtime_type = "io.containerd.runc.v2"' in runtime
    assert f'BinaryName = "{RUNC}"' in dump.split("runtimes.minidocker.options]")[1].split("[")[0]
