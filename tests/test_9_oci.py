"""The OCI runtime face: minidocker-runc over a bundle, and podman driving it."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import shutil
import socket
import stat
import subprocess
import time

import pytest
from conftest import SANDBOX, TOP, cgroup_limits, cgroup_paths, read, wait_for

pytestmark = pytest.mark.order(9)

RUNC = os.path.join(TOP, "minidocker-runc")
IN_SANDBOX = ["nsenter", f"--net=/run/netns/{SANDBOX}"]
CAPS = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def runc(root: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    if args[0] == "create":  # the container keeps create's stdio, as with runc: not our pipes, then
        with open(os.path.join(root + ".stdio"), "w") as stdio:
            done = subprocess.run([*IN_SANDBOX, RUNC, "--root", root, *args], stdin=subprocess.DEVNULL,
                                  stdout=stdio, stderr=stdio, timeout=60)
        with open(root + ".stdio") as f:
            done.stderr = done.stdout = f.read()
    else:
        done = subprocess.run([*IN_SANDBOX, RUNC, "--root", root, *args], capture_output=True, text=True,
                              timeout=60)
    if check and done.returncode != 0:
        raise AssertionError(f"minidocker-runc {' '.join(args)}: {done.returncode}: {done.stderr}")
    return done


def create_and_start(root: str, bundle, cid: str) -> int:
    """runc's two steps; the init's host PID."""
    runc(root, "create", "--bundle", str(bundle), cid)
    pid = json.loads(runc(root, "state", cid).stdout)["pid"]
    runc(root, "start", cid)
    return pid


@contextlib.contextmanager
def mount_namespace(propagation: str):
    """A mount namespace of its own, kept by a process in it; its path.

    Not `unshare --mount=FILE`: binding a mount namespace to a file is
    refused (EINVAL) when the kernel takes it for a loop, and Linux 6.18's
    namespace IDs, handed out per CPU, make that check fail now and then in
    a namespace that is not the machine's first (the fresh-machine trial's)."""
    holder = subprocess.Popen(["unshare", "--mount", "--propagation", propagation, "sleep", "600"])
    path = f"/proc/{holder.pid}/ns/mnt"
    try:
        wait_for(lambda: os.readlink(path) != os.readlink("/proc/self/ns/mnt"))
        yield path
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture
def bundle(tmp_path):
    """A bundle: the busybox rootfs and a config.json as an engine would write it."""
    subprocess.run([os.path.join(TOP, "fixtures", "busybox-rootfs.sh"), str(tmp_path / "rootfs")], check=True)
    parent = f"mdt-runc-{os.getpid()}"
    spec = {"ociVersion": "1.0.2",
            "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "cwd": "/",
                        "args": ["sh", "-c", "echo started > /tmp/out; hostname >> /tmp/out; sleep 60"],
                        "env": ["PATH=/usr/bin:/bin:/usr/sbin:/sbin"],
                        "capabilities": {k: CAPS for k in ("bounding", "effective", "permitted", "inheritable")},
                        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 512}]},
            "root": {"path": "rootfs"}, "hostname": "bundled", "domainname": "example.org",
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                       {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
                       {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "rprivate"]},
                       {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["ro", "nosuid"]}],
            "linux": {"namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
                      "resources": {"memory": {"limit": 64 << 20}, "pids": {"limit": 16}},
                      "cgroupsPath": f"/{parent}/c1", "maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"]}}
    (tmp_path / "config.json").write_text(json.dumps(spec))
    yield tmp_path
    # Even after a failed test: kill what is left in the bundle's cgroups, then remove them.
    tops = cgroup_paths(parent)
    for top in tops:
        for pid in read(f"{top}/c1/cgroup.procs").split() + read(f"{top}/c2/cgroup.procs").split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 9)
    for top in tops:
        for d in sorted((dirpath for dirpath, _, _ in os.walk(top)), key=len, reverse=True):
            for _ in range(50):
                try:
                    os.rmdir(d)
                    break
                except OSError:
                    time.sleep(0.02)


@pytest.mark.row("oci", "create / start", "create returns with the init waiting; start runs it")
def test_create_start_state_kill_delete(bundle, tmp_path, row):
    root = str(tmp_path / "state")
    runc(root, "create", "--bundle", str(bundle), "--pid-file", str(tmp_path / "pid"), "c1")
    st = json.loads(runc(root, "state", "c1").stdout)
    assert st["status"] == "created" and st["id"] == "c1" and st["ociVersion"] and st["bundle"] == str(bundle)
    pid = int((tmp_path / "pid").read_text())
    assert st["pid"] == pid and not os.path.exists(f"/proc/{pid}/root/tmp/out")  # nothing ran yet
    runc(root, "start", "c1")
    assert wait_for(lambda: os.path.exists(f"/proc/{pid}/root/tmp/out"))
    assert json.loads(runc(root, "state", "c1").stdout)["status"] == "running"
    assert wait_for(lambda: read(f"/proc/{pid}/root/tmp/out").strip().endswith("bundled"))
    with open(f"/proc/{pid}/limits") as f:
        assert any(line.startswith("Max open files") and "512" in line for line in f)
    out = runc(root, "exec", "c1", "sh", "-c", "echo $$; grep CapEff /proc/self/status").stdout.split()
    assert out[0] != "1" and out[-1] == "0000000000000421"
    assert runc(root, "exec", "c1", "cat", "/proc/sys/kernel/domainname").stdout.strip() == "example.org"
    runc(root, "pause", "c1")
    assert json.loads(runc(root, "state", "c1").stdout)["status"] == "paused"
    runc(root, "resume", "c1")
    refused = runc(root, "delete", "c1", check=False)
    assert refused.returncode == 1 and "not stopped" in refused.stderr
    runc(root, "kill", "c1", "KILL")
    wait_for(lambda: json.loads(runc(root, "state", "c1").stdout)["status"] == "stopped")
    runc(root, "delete", "c1")
    assert not os.path.exists(os.path.join(root, "c1"))
    row.result = "created → running → paused → running → stopped → deleted"


@pytest.mark.row("oci", "delete of a created container", "releases everything")
def test_delete_created(bundle, tmp_path, row):
    root = str(tmp_path / "state")
    runc(root, "create", "--bundle", str(bundle), "c2")
    pid = json.loads(runc(root, "state", "c2").stdout)["pid"]
    cgroup = json.loads(read(os.path.join(root, "c2", "state.json")))["cgroupsPath"]
    runc(root, "delete", "c2")
    assert not os.path.exists(f"/proc/{pid}") or read(f"/proc/{pid}/stat").split()[2] == "Z"
    assert cgroup_paths(cgroup) == []
    assert not os.path.exists(os.path.join(root, "c2"))
    assert runc(root, "state", "c2", check=False).returncode == 1
    row.result = "process, cgroup and state gone"


@pytest.mark.row("oci", "linux.uidMappings", "the init runs in a user namespace with the bundle's maps")
def test_user_namespace_bundle(bundle, tmp_path, row):
    spec = json.loads((bundle / "config.json").read_text())
    spec["linux"]["namespaces"].append({"type": "user"})
    spec["linux"]["uidMappings"] = spec["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 200000,
                                                                    "size": 65536}]
    (bundle / "config.json").write_text(json.dumps(spec))
    root = str(tmp_path / "state")
    runc(root, "create", "--bundle", str(bundle), "u1")
    pid = json.loads(runc(root, "state", "u1").stdout)["pid"]
    assert read(f"/proc/{pid}/uid_map").split() == ["0", "200000", "65536"]
    runc(root, "start", "u1")
    assert wait_for(lambda: "Uid:\t200000" in read(f"/proc/{pid}/status"))
    runc(root, "delete", "--force", "u1")
    row.result = "uid_map 0 200000 65536; PID 1 is uid 200000 outside"


def edit(bundle, change) -> None:
    spec = json.loads((bundle / "config.json").read_text())
    change(spec)
    (bundle / "config.json").write_text(json.dumps(spec))


@pytest.mark.row("oci", "process.capabilities.ambient", "a non-root user keeps the ambient set across execve")
def test_ambient_capabilities_for_a_user(bundle, tmp_path, row):
    caps = ["CAP_KILL", "CAP_NET_BIND_SERVICE"]  # bits 5 and 10

    def change(spec):
        spec["process"].update(user={"uid": 1000, "gid": 1000}, args=["sleep", "60"],
                               capabilities={k: caps for k in ("bounding", "effective", "permitted", "inheritable",
                                                               "ambient")})
    edit(bundle, change)
    root = str(tmp_path / "state")
    pid = create_and_start(root, bundle, "a1")
    assert wait_for(lambda: read(f"/proc/{pid}/comm").strip() == "sleep")
    status = dict(line.split(":\t", 1) for line in read(f"/proc/{pid}/status").splitlines() if ":\t" in line)
    assert status["Uid"].split()[0] == "1000"
    # Without the ambient set, a uid other than 0 loses every capability at execve.
    assert {k: status[k] for k in ("CapAmb", "CapEff", "CapPrm", "CapInh", "CapBnd")} == \
        dict.fromkeys(("CapAmb", "CapEff", "CapPrm", "CapInh", "CapBnd"), "0000000000000420")
    runc(root, "delete", "--force", "a1")
    row.result = "uid 1000: CapAmb = CapEff = CapPrm = 0x420 after execve"


def test_seccomp_comes_last_under_no_new_privs(bundle, tmp_path):
    """As runc: with noNewPrivileges the filter is loaded just before execve,
    so a profile that refuses the calls which set up the user and the
    capabilities (setgroups, setresuid, capset, prctl) still starts a
    container: they have been made by then.  Loaded before them, it failed
    its own start."""
    refused = ["setgroups", "setresgid", "setresuid", "capset", "prctl"]

    def change(spec):
        spec["process"].update(user={"uid": 1000, "gid": 1000}, args=["sleep", "60"], noNewPrivileges=True)
        spec["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": [],
                                    "syscalls": [{"names": refused, "action": "SCMP_ACT_ERRNO"}]}
    edit(bundle, change)
    root = str(tmp_path / "state")
    pid = create_and_start(root, bundle, "s1")
    assert wait_for(lambda: read(f"/proc/{pid}/comm").strip() == "sleep")
    status = read(f"/proc/{pid}/status")
    assert "Seccomp:\t2" in status and "NoNewPrivs:\t1" in status and "Uid:\t1000" in status
    runc(root, "delete", "--force", "s1")


def test_hostname_in_a_joined_uts_namespace(bundle, tmp_path):
    """A bundle that joins a uts namespace by path and names a hostname: the
    joined namespace gets it, as under runc (it was dropped in silence)."""
    holder = subprocess.Popen(["unshare", "--uts", "sleep", "600"])
    try:
        uts = f"/proc/{holder.pid}/ns/uts"
        wait_for(lambda: os.readlink(uts) != os.readlink("/proc/self/ns/uts"))

        def change(spec):
            spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "uts"] + \
                [{"type": "uts", "path": uts}]
            spec["hostname"] = "joined"
        edit(bundle, change)
        root = str(tmp_path / "state")
        runc(root, "create", "--bundle", str(bundle), "u1")
        pid = json.loads(runc(root, "state", "u1").stdout)["pid"]
        assert os.readlink(f"/proc/{pid}/ns/uts") == os.readlink(uts)
        named = subprocess.run(["nsenter", f"--uts={uts}", "hostname"], capture_output=True, text=True, check=True)
        assert named.stdout == "joined\n"
        runc(root, "delete", "--force", "u1")
    finally:
        holder.kill()
        holder.wait()


def test_console_socket_gets_a_pty_of_the_console_size(bundle, tmp_path):
    """The engine's side of a terminal: a unix socket the runtime sends the
    pty's master to, and process.consoleSize as the window the command
    first sees (as runc sets it, before the engine resizes anything)."""
    def change(spec):
        spec["process"].update(terminal=True, consoleSize={"height": 40, "width": 132},
                               args=["sh", "-c", "echo size=$(stty size) $(tty); sleep 60"])
        spec["mounts"].append({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]})
    edit(bundle, change)
    root = str(tmp_path / "state")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(tmp_path / "console.sock"))
        server.listen(1)
        runc(root, "create", "--bundle", str(bundle), "--console-socket", str(tmp_path / "console.sock"), "t1")
        conn, _ = server.accept()
        with conn:
            master = socket.recv_fds(conn, 16, 1)[1][0]
    runc(root, "start", "t1")
    seen, deadline = b"", time.monotonic() + 10
    while b"/dev/pts/0" not in seen and time.monotonic() < deadline:
        if select.select([master], [], [], 0.2)[0]:
            seen += os.read(master, 4096)
    os.close(master)
    runc(root, "delete", "--force", "t1")
    assert b"size=40 132 /dev/pts/0" in seen, seen


@pytest.mark.row("oci", "no linux.namespaces", "the container shares the runtime's: chroot, not pivot_root")
def test_no_namespaces_listed(bundle, tmp_path, row):
    def change(spec):
        del spec["linux"]["namespaces"]
        del spec["hostname"], spec["domainname"]
    edit(bundle, change)
    root = str(tmp_path / "state")
    # Its mounts land in the caller's mount namespace, as under runc: a
    # private one here, made for the purpose, so that `delete` can be run in
    # it too and what it leaves there be seen.
    with mount_namespace("private") as keep:
        with open(tmp_path / "stdio", "w") as stdio:  # the container keeps create's stdio: a file, not our pipe
            done = subprocess.run(["nsenter", f"--mount={keep}", *IN_SANDBOX, RUNC,
                                   "--root", root, "create", "--bundle", str(bundle), "n1"],
                                  stdin=subprocess.DEVNULL, stdout=stdio, stderr=stdio, timeout=60)
        assert done.returncode == 0, (tmp_path / "stdio").read_text()
        pid = json.loads(runc(root, "state", "n1").stdout)["pid"]
        runc(root, "start", "n1")
        assert wait_for(lambda: os.path.exists(f"/proc/{pid}/root/tmp/out"))
        for kind in ("pid", "ipc", "uts"):
            assert os.readlink(f"/proc/{pid}/ns/{kind}") == os.readlink(f"/proc/self/ns/{kind}")
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{SANDBOX}").st_ino
        assert os.stat(f"/proc/{pid}/ns/mnt").st_ino == os.stat(keep).st_ino  # the caller's own
        assert os.readlink(f"/proc/{pid}/root") == str(bundle / "rootfs")  # chroot(2)
        with open("/proc/self/mountinfo") as f:
            assert str(bundle / "rootfs") not in f.read()  # this machine's namespace saw none of it
        subprocess.run(["nsenter", f"--mount={keep}", *IN_SANDBOX, RUNC, "--root", root, "delete", "--force", "n1"],
                       check=True, timeout=60)
        mounts = subprocess.run(["nsenter", f"--mount={keep}", "cat", "/proc/self/mountinfo"], capture_output=True,
                                text=True, check=True).stdout
        assert str(bundle / "rootfs") not in mounts  # delete took them down in the caller's namespace
    row.result = "pid, ipc, uts and net namespaces the runtime's; root chrooted"


def test_devices_of_every_kind_shares_and_reservation(bundle, tmp_path):
    def change(spec):
        spec["linux"]["devices"] = [{"path": "/dev/fifo0", "type": "p", "fileMode": 0o600},
                                    {"path": "/dev/unbuffered", "type": "u", "major": 1, "minor": 3}]
        spec["linux"]["resources"]["cpu"] = {"shares": 512}
        spec["linux"]["resources"]["memory"].update(reservation=32 << 20)
    edit(bundle, change)
    root = str(tmp_path / "state")
    runc(root, "create", "--bundle", str(bundle), "d1")
    st = json.loads(runc(root, "state", "d1").stdout)
    fifo = os.stat(f"/proc/{st['pid']}/root/dev/fifo0")
    assert stat.S_ISFIFO(fifo.st_mode) and stat.S_IMODE(fifo.st_mode) == 0o600
    dev = os.stat(f"/proc/{st['pid']}/root/dev/unbuffered")
    assert stat.S_ISCHR(dev.st_mode) and (os.major(dev.st_rdev), os.minor(dev.st_rdev)) == (1, 3)
    cgroup = json.loads(read(os.path.join(root, "d1", "state.json")))["cgroupsPath"]
    weights = [read(f"{d}/cpu.shares").strip() or read(f"{d}/cpu.weight").strip() for d in cgroup_paths(cgroup)
               if os.path.exists(f"{d}/cpu.shares") or os.path.exists(f"{d}/cpu.weight")]
    assert weights in (["512"], ["20"])  # v1's shares, or v2's weight by runc's formula
    reserved = [read(f"{d}/memory.soft_limit_in_bytes").strip() or read(f"{d}/memory.low").strip()
                for d in cgroup_paths(cgroup) if os.path.exists(f"{d}/memory.soft_limit_in_bytes")
                or os.path.exists(f"{d}/memory.low")]
    assert reserved == [str(32 << 20)]  # v1's soft limit, or v2's memory.low
    runc(root, "delete", "d1")


def test_umask_and_slave_propagation(bundle, tmp_path):
    (tmp_path / "volume").mkdir()

    def change(spec):
        spec["process"]["user"]["umask"] = 0o077
        spec["linux"]["rootfsPropagation"] = "rslave"
        spec["mounts"].append({"destination": "/mnt", "type": "bind", "source": str(tmp_path / "volume"),
                               "options": ["rbind"]})
    edit(bundle, change)
    root = str(tmp_path / "state")
    # Created from a mount namespace whose mounts are shared, as systemd
    # makes a machine's (this one's are private, where slave and private look
    # alike), kept by a process: a slave's master must outlive `create`.
    with mount_namespace("shared") as keep:
        with open(tmp_path / "stdio", "w") as stdio:
            subprocess.run(["nsenter", f"--mount={keep}", *IN_SANDBOX, RUNC, "--root", root, "create", "--bundle",
                            str(bundle), "m1"], stdin=subprocess.DEVNULL, stdout=stdio, stderr=stdio, timeout=60,
                           check=True)
        pid = json.loads(runc(root, "state", "m1").stdout)["pid"]
        runc(root, "start", "m1")
        assert wait_for(lambda: "Umask:\t0077" in read(f"/proc/{pid}/status"))
        # The bound directory is a slave: what the host mounts there comes in, nothing goes out.
        with open(f"/proc/{pid}/mountinfo") as f:
            assert "master:" in next(line for line in f if line.split()[4] == "/mnt")
        runc(root, "delete", "--force", "m1")


@pytest.mark.parametrize("propagation", ["private", "rshared"])
def test_propagation_never_reaches_the_callers_mounts(bundle, tmp_path, propagation):
    """Created from a namespace whose mounts are shared (a systemd machine's
    are): the container's mounts, and the unmount of its old root, must not
    reach the caller's.  A non-recursive "private" on / alone left the
    mounts below it shared, and the old root's lazy unmount took them down
    in the caller's namespace too."""
    edit(bundle, lambda spec: spec["linux"].update(rootfsPropagation=propagation))
    leaf = tmp_path / "leaf"
    leaf.mkdir()
    root = str(tmp_path / "state")
    with mount_namespace("shared") as keep:
        in_keep = ["nsenter", f"--mount={keep}"]
        subprocess.run([*in_keep, "mount", "-t", "tmpfs", "leaf", str(leaf)], check=True)
        with open(tmp_path / "stdio", "w") as stdio:
            subprocess.run([*in_keep, *IN_SANDBOX, RUNC, "--root", root, "create", "--bundle", str(bundle), "p1"],
                           stdin=subprocess.DEVNULL, stdout=stdio, stderr=stdio, timeout=60, check=True)
        mounts = subprocess.run([*in_keep, "cat", "/proc/self/mountinfo"], capture_output=True, text=True,
                                check=True).stdout
        assert f" {leaf} " in mounts  # still there
        assert str(bundle / "rootfs") not in mounts  # and none of the container's came out
        runc(root, "delete", "--force", "p1")


@pytest.mark.row("oci", "hooks", "each kind at its point, in its namespaces, with the state on stdin")
def test_hooks_run_in_order_with_the_state(bundle, tmp_path, row):
    log = tmp_path / "hooks.log"

    def hook(kind: str, script: str) -> dict:
        return {"path": "/bin/sh", "args": ["sh", "-c", script], "env": [f"KIND={kind}", f"LOG={log}"]}

    record = 'read -r state; echo "$KIND $state" >> "$LOG"'
    def change(spec):
        # The command copies what the startContainer hook left in the container's own /tmp:
        # the hook ran in there, and before it.
        spec["process"]["args"] = ["sh", "-c", "cat /tmp/start.log > /tmp/seen; exec sleep 60"]
        spec["hooks"] = {
            "createRuntime": [hook("createRuntime", record)],
            "createContainer": [hook("createContainer", record + '; readlink /proc/self/ns/mnt >> "$LOG"')],
            "startContainer": [hook("startContainer", 'read -r state; echo "$KIND $state" > /tmp/start.log; '
                                                      "readlink /proc/self/ns/mnt >> /tmp/start.log")],
            "poststart": [hook("poststart", record)],
            "poststop": [hook("poststop", record)]}
    edit(bundle, change)
    root = str(tmp_path / "state")
    runc(root, "create", "--bundle", str(bundle), "h1")
    pid = json.loads(runc(root, "state", "h1").stdout)["pid"]
    lines = log.read_text().splitlines()
    assert [line.split()[0] for line in lines[:2]] == ["createRuntime", "createContainer"]
    assert lines[2] == os.readlink(f"/proc/{pid}/ns/mnt")  # createContainer ran in the container's mounts
    runc(root, "start", "h1")
    seen = wait_for(lambda: read(f"/proc/{pid}/root/tmp/seen")).splitlines()
    assert seen[1] == os.readlink(f"/proc/{pid}/ns/mnt")  # in the container, after pivot_root
    kind, start_state = seen[0].split(" ", 1)
    assert kind == "startContainer" and json.loads(start_state) == {
        "ociVersion": "1.0.2", "id": "h1", "status": "created", "pid": 1, "bundle": str(bundle), "annotations": {}}
    runc(root, "delete", "--force", "h1")
    states = [(line.split()[0], json.loads(line.split(" ", 1)[1])) for line in log.read_text().splitlines()
              if line.startswith(("create", "post"))]
    assert [(kind, st["status"]) for kind, st in states] == [
        ("createRuntime", "creating"), ("createContainer", "creating"), ("poststart", "running"),
        ("poststop", "stopped")]
    assert all(st["id"] == "h1" and st["pid"] == pid and st["bundle"] == str(bundle) for _, st in states)
    row.result = "createRuntime, createContainer, startContainer (inside), poststart, poststop; state on stdin"


def test_a_failing_hook_fails_create_and_leaves_nothing(bundle, tmp_path):
    edit(bundle, lambda spec: spec.update(hooks={"createRuntime": [
        {"path": "/bin/sh", "args": ["sh", "-c", "echo no GPU here >&2; exit 3"]}]}))
    root = str(tmp_path / "state")
    done = runc(root, "create", "--bundle", str(bundle), "h2", check=False)
    assert done.returncode == 1 and done.stderr == "minidocker-runc: createRuntime hook /bin/sh: exit 3: no GPU here\n"
    assert not os.path.exists(os.path.join(root, "h2"))
    assert cgroup_paths(f"mdt-runc-{os.getpid()}/c1") == []


def test_a_start_hook_is_confined_as_the_command(bundle, tmp_path):
    """The hook's file is the image's: it runs with the command's user,
    capabilities and no_new_privs, never as the init's root with every
    capability (which could remount /proc/sys and write core_pattern)."""
    def change(spec):
        spec["process"].update(user={"uid": 1000, "gid": 1000}, noNewPrivileges=True,
                               args=["sh", "-c", "cat /tmp/hook > /tmp/seen; exec sleep 60"])
        spec["hooks"] = {"startContainer": [{"path": "/bin/sh", "args": [
            "sh", "-c", "{ id -u; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; } > /tmp/hook"]}]}
    edit(bundle, change)
    root = str(tmp_path / "state")
    runc(root, "create", "--bundle", str(bundle), "h4")
    pid = json.loads(runc(root, "state", "h4").stdout)["pid"]
    runc(root, "start", "h4")
    seen = wait_for(lambda: read(f"/proc/{pid}/root/tmp/seen")).split()
    runc(root, "delete", "--force", "h4")
    # CAPS (chown, kill, net_bind_service) are bits 0, 5 and 10; a uid other than 0 has no effective ones.
    assert seen == ["1000", "CapEff:", "0000000000000000", "CapBnd:", "0000000000000421", "NoNewPrivs:", "1"], seen


def test_a_failing_start_hook_stops_the_command(bundle, tmp_path):
    (tmp_path / "out").mkdir()

    def change(spec):
        spec["process"]["args"] = ["touch", "/out/ran"]
        spec["mounts"].append({"destination": "/out", "type": "bind", "source": str(tmp_path / "out"),
                               "options": ["rbind"]})
        spec["hooks"] = {"startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]}]}
    edit(bundle, change)
    root = str(tmp_path / "state")
    runc(root, "create", "--bundle", str(bundle), "h3")
    runc(root, "start", "h3")
    wait_for(lambda: json.loads(runc(root, "state", "h3").stdout)["status"] == "stopped")
    assert not os.path.exists(tmp_path / "out" / "ran")
    assert read(root + ".stdio") == "minidocker-runc: startContainer hook /bin/sh: exit 3\n"
    runc(root, "delete", "h3")


BROKEN = {
    "process.args": lambda s: s["process"].pop("args"),
    "process.capabilities.bounding": lambda s: s["process"]["capabilities"]["bounding"].append("CAP_TEST"),
    "process.rlimits": lambda s: s["process"]["rlimits"].append({"type": "RLIMIT_TEST", "soft": 1, "hard": 1}),
    "process.user.uid": lambda s: s["process"]["user"].update(uid="0"),
    "process.cwd": lambda s: s["process"].update(cwd="relative"),
    "linux.namespaces": lambda s: s["linux"]["namespaces"].append({"type": "time-travel"}),
    "linux.devices[0].type": lambda s: s["linux"].update(devices=[{"path": "/dev/x", "type": "x"}]),
    "linux.resources.memory.limit": lambda s: s["linux"]["resources"]["memory"].update(limit=True),
    "linux.mountLabel": lambda s: s["linux"].update(mountLabel="system_u:object_r:container_file_t:s0"),
    "mounts[0]": lambda s: s["mounts"].__setitem__(0, "proc"),
    "root.path": lambda s: s["root"].update(path=7),
    "hostname": lambda s: s["linux"].update(namespaces=[{"type": "mount"}, {"type": "pid"}]),
    "domainname": lambda s: (s.pop("hostname"), s["linux"].update(namespaces=[{"type": "mount"}])),
    "hooks.poststop[0].path": lambda s: s.update(hooks={"poststop": [{"path": "sh"}]}),
    "linux.rootfsPropagation": lambda s: s["linux"].update(rootfsPropagation="sideways"),
    "linux.resources.blockIO": lambda s: s["linux"]["resources"].update(blockIO={"weight": 500}),
    "linux.resources.memory.kernel": lambda s: s["linux"]["resources"]["memory"].update(kernel=1 << 30),
    "linux.resources.unified": lambda s: s["linux"]["resources"].update(unified={"../../escape": "1"}),
    "ociVersion": lambda s: s.update(ociVersion="invalid"),
    "linux.resources.unified ": lambda s: s["linux"]["resources"].update(unified={"cgroup.procs": "1"}),
    "linux.namespaces[4]": lambda s: s["linux"]["namespaces"][4].update(path="/proc/1/ns/mnt"),
    "process.user.uid ": lambda s: s["process"]["user"].update(uid=1 << 32),
    "process.capabilities.effective": lambda s: s["process"]["capabilities"]["effective"].append("CAP_SYS_ADMIN"),
    "linux.rootfsPropagation ": lambda s: (s.pop("hostname"), s.pop("domainname"),
                                           s["linux"].update(namespaces=[{"type": "pid"}], rootfsPropagation="rslave")),
    "process.user.umask": lambda s: s["process"]["user"].update(umask=1 << 32),
    "process.rlimits ": lambda s: s["process"]["rlimits"].append({"soft": 1, "hard": 1}),
    "linux.personality": lambda s: s["linux"].update(personality={"domain": "LINUX32"}),
}


def test_null_is_an_absent_field_and_infinity_a_limit(bundle, tmp_path):
    """JSON null in an optional field means "not set", as Go engines write it;
    an rlimit of 2**64 - 1 is RLIM_INFINITY, as the spec's uint64 writes it.

    The limit is one whose hard value is unlimited for us already: raising a
    hard limit needs CAP_SYS_RESOURCE, which this machine's root is not
    given, and `sudo` sets the core limit's to 0."""
    import resource

    kind, label = next((k, label) for k, label in (("RLIMIT_FSIZE", "Max file size"), ("RLIMIT_CPU", "Max cpu time"),
                                                    ("RLIMIT_AS", "Max address space"))
                       if resource.getrlimit(getattr(resource, k))[1] == resource.RLIM_INFINITY)
    infinity = [{"type": kind, "soft": (1 << 64) - 1, "hard": (1 << 64) - 1}]
    edit(bundle, lambda spec: (spec["process"].update(cwd=None, rlimits=infinity, oomScoreAdj=None),
                               spec["linux"].update(sysctl=None, devices=None), spec.update(hooks=None)))
    root = str(tmp_path / "state")
    runc(root, "create", "--bundle", str(bundle), "z1")
    pid = json.loads(runc(root, "state", "z1").stdout)["pid"]
    runc(root, "start", "z1")
    # The command runs (if not: what it said, and how its process stands).
    with contextlib.suppress(AssertionError):
        wait_for(lambda: os.path.exists(f"/proc/{pid}/root/tmp/out"))
    assert os.path.exists(f"/proc/{pid}/root/tmp/out"), (read(root + ".stdio"), read(f"/proc/{pid}/status")[:400])
    with open(f"/proc/{pid}/limits") as f:
        assert next(line for line in f if line.startswith(label))[26:].split()[:2] == ["unlimited"] * 2
    runc(root, "delete", "--force", "z1")


@pytest.mark.row("oci", "a broken config.json", "one line naming the field, exit 1, nothing made")
@pytest.mark.parametrize("field", BROKEN)
def test_broken_config_is_one_line(bundle, tmp_path, field, row):
    edit(bundle, BROKEN[field])
    root = str(tmp_path / "state")
    done = runc(root, "create", "--bundle", str(bundle), "b1", check=False)
    assert done.returncode == 1
    # (a key's trailing space only tells two cases of one field apart)
    assert done.stderr.startswith(f"minidocker-runc: config.json: {field.strip()}") and done.stderr.count("\n") == 1
    assert not os.path.exists(os.path.join(root, "b1"))
    assert cgroup_paths(f"mdt-runc-{os.getpid()}/c1") == []  # the bundle fixture's cgroupsPath
    row.result = f"{len(BROKEN)} kinds refused, one line each"


def test_features_version_and_errors(tmp_path):
    features = json.loads(runc(str(tmp_path), "features").stdout)
    assert "pid" in features["linux"]["namespaces"] and features["linux"]["seccomp"]["enabled"]
    assert "spec:" in runc(str(tmp_path), "--version").stdout
    missing = runc(str(tmp_path), "start", "nope", check=False)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    # As runc: a forced delete of what is not there is done (an engine cleaning up after a failed create).
    assert runc(str(tmp_path), "delete", "--force", "nope").returncode == 0
    assert runc(str(tmp_path), "delete", "nope", check=False).returncode == 1


# ------------------------------------------------------------------ podman
PODMAN = ["podman", "--cgroup-manager", "cgroupfs", "--runtime", RUNC]
# This machine's hard limits: podman asks for more files and processes than
# root may have here (crun fails the same way), so the tests ask for less.
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096", "--network", "none"]
IMAGE = f"minidocker-test-busybox-{os.getpid()}"


def podman(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    done = subprocess.run([*IN_SANDBOX, *PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {done.returncode}: {done.stderr}")
    return done


@pytest.fixture(scope="module")
def busybox_in_podman(tmp_path_factory):
    if not shutil.which("podman"):
        pytest.skip("needs Debian's podman (.ci/setup-host installs it)")
    existed = set(cgroup_paths("libpod_parent"))
    rootfs = tmp_path_factory.mktemp("podman") / "rootfs"
    subprocess.run([os.path.join(TOP, "fixtures", "busybox-rootfs.sh"), str(rootfs)], check=True)
    tar = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], capture_output=True, check=True).stdout
    subprocess.run([*IN_SANDBOX, *PODMAN, "import", "-", IMAGE], input=tar, capture_output=True, check=True)
    yield IMAGE
    ids = podman("ps", "-aq", "--filter", f"ancestor={IMAGE}", check=False).stdout.split()
    if ids:
        podman("rm", "-f", "-t", "0", *ids, check=False)
    podman("rmi", "-f", IMAGE, check=False)
    for top in set(cgroup_paths("libpod_parent")) - existed:  # podman's parent (and conmon's in it) came with us
        for d in sorted((dirpath for dirpath, _, _ in os.walk(top)), key=len, reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(d)


@pytest.mark.row("oci", "podman run --rm", "podman drives minidocker-runc: the command's output and exit code")
def test_podman_run(busybox_in_podman, row):
    done = podman("run", "--rm", *LIMITS, busybox_in_podman, "sh", "-c", "echo hi from $(hostname); exit 3",
                  check=False)
    assert done.stdout.startswith("hi from") and done.returncode == 3
    row.result = done.stdout.strip()[:50] + ", exit 3"


@pytest.mark.row("oci", "podman -d, exec, stop, rm -f", "all through minidocker-runc")
def test_podman_lifecycle(busybox_in_podman, row):
    cid = podman("run", "-d", *LIMITS, "--memory", "64m", "--pids-limit", "20", busybox_in_podman,
                 "sleep", "300").stdout.strip()
    assert podman("exec", cid, "sh", "-c", "echo $$").stdout.strip() != "1"
    assert podman("exec", cid, "sh", "-c", "exit 7", check=False).returncode == 7
    limits = cgroup_limits(int(podman("inspect", cid, "--format", "{{.State.Pid}}").stdout))
    assert (limits["memory"], limits["pids"]) == (str(64 << 20), "20"), limits
    podman("stop", "-t", "1", cid)
    assert podman("inspect", cid, "--format", "{{.State.ExitCode}}").stdout.strip() == "137"
    podman("rm", "-f", cid)
    row.result = f"exec exit 7; memory {limits['memory']} and pids {limits['pids']} in its cgroup; stop 137; rm -f"


def test_podman_interactive_tty(busybox_in_podman):
    main, child = pty.openpty()
    proc = subprocess.Popen([*IN_SANDBOX, *PODMAN, "run", "-it", "--rm", *LIMITS, busybox_in_podman, "sh"],
                            stdin=child, stdout=child, stderr=child, start_new_session=True)
    os.close(child)
    seen, deadline = b"", time.monotonic() + 30
    os.write(main, b"echo tty=$(tty) pid=$$; exit 4\n")
    while proc.poll() is None and time.monotonic() < deadline:
        if select.select([main], [], [], 0.2)[0]:
            try:
                seen += os.read(main, 4096)
            except OSError:
                break
    assert proc.wait(timeout=30) == 4, seen
    assert b"tty=/dev/pts/" in seen and b"pid=1" in seen
    os.close(main)
