"""Security: the escape table.  From inside a default container, each escape
is attempted and must fail; with --privileged, the ones that should work do.

busybox has no tool for some system calls (keyctl, ptrace), so those are made
with the host's own Python, bind-mounted read-only into the container.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import tarfile
import threading

import pytest
from conftest import MINIDOCKER, PYTHON, TOP, cgroup_dirs, cgroup_paths, cgroups_below, inspect, md, wait_for

pytestmark = [pytest.mark.order(6), pytest.mark.cgroupv2]  # the escape table holds on v1 and v2 alike

HOST_PYTHON = ["-v", "/usr:/usr:ro", "-v", "/usr/lib:/lib:ro", "-v", "/usr/lib64:/lib64:ro"]
SYSCALL = ("import ctypes, os, sys; libc = ctypes.CDLL(None, use_errno=True); "
           "r = libc.syscall(*[int(a) for a in sys.argv[1:]]); "
           "print('ok' if r >= 0 else os.strerror(ctypes.get_errno()))")
NR = {"x86_64": {"keyctl": 250, "ptrace": 101, "setns": 308, "unshare": 272},
      "aarch64": {"keyctl": 219, "ptrace": 117, "setns": 268, "unshare": 97}}[os.uname().machine]


def inside(script: str, *flags: str) -> str:
    """Run a shell script in a fresh default container; its output, both streams."""
    done = md("run", "--rm", "--network", "none", *flags, "busybox", "sh", "-c", script, check=False)
    return done.stdout + done.stderr


def refusal(out: str) -> str:
    """The line that says no, for the table's Result column."""
    lines = out.strip().splitlines()
    return next((line for line in lines if re.search("not permitted|denied|Read-only", line)), lines[0])[:60]


def syscall(name: str, *args: int, flags: tuple = ()) -> str:
    done = md("run", "--rm", "--network", "none", *flags, *HOST_PYTHON, "busybox",
              "/usr/bin/python3", "-I", "-c", SYSCALL, str(NR[name]), *map(str, args), check=False)
    return (done.stdout + done.stderr).strip()


@pytest.mark.row("4", "Capabilities", "CapBnd = CapEff = CapPrm = Docker's 14; inheritable and ambient empty")
def test_default_capabilities(row):
    status = dict(line.split(":\t") for line in inside("cat /proc/1/status").splitlines() if ":\t" in line)
    docker = {status[key].strip() for key in ("CapBnd", "CapEff", "CapPrm")}
    # a80425fb: Docker's 14; on cgroup v2, which has no devices file, MKNOD (bit 27) is not kept.
    assert docker in ({"00000000a80425fb"}, {"00000000a00425fb"}), status
    assert status["CapInh"].strip() == "0000000000000000"  # CVE-2022-24769
    assert status["CapAmb"].strip() == "0000000000000000"
    assert status["Seccomp"].strip() == "2" and status["NoNewPrivs"].strip() == "0"
    row.result = f"{docker.pop()[8:]} in three sets; CapInh 0; Seccomp 2"


@pytest.mark.row("4", "mount -t proc proc /mnt", "refused")
def test_mount(row):
    out = inside("mkdir -p /mnt; mount -t proc proc /mnt")
    assert "permission denied" in out.lower() or "not permitted" in out
    row.result = refusal(out)


# The escapes that one shell line attempts and one message refuses.
ESCAPES = [("unshare -m", "refused", "unshare -m true", "Operation not permitted"),
           ("write /proc/sys/kernel/hostname", "refused: read-only", "echo evil > /proc/sys/kernel/hostname",
            "Read-only file system"),
           ("insmod", "refused", "echo junk > /tmp/evil.ko; insmod /tmp/evil.ko", "Operation not permitted"),
           ("reboot -f", "refused", "reboot -f", "Operation not permitted"),
           ("change the host's clock", "refused", "date -s 2000-01-01", "Operation not permitted")]


@pytest.mark.parametrize("script, refused", [
    pytest.param(script, refused, id=check, marks=pytest.mark.row("4", check, expected))
    for check, expected, script, refused in ESCAPES])
def test_escape_is_refused(script, refused, row):
    out = inside(script)
    assert refused in out
    row.result = refusal(out)


SETNS = ("import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); "
         "fd = os.open('/proc/1/ns/cgroup', os.O_RDONLY); "  # not unshared: the host's own cgroup namespace
         "print('ok' if libc.setns(fd, 0x02000000) == 0 else os.strerror(ctypes.get_errno()))")


@pytest.mark.row("4", "setns into a host namespace", "refused")
def test_setns_into_the_hosts_namespace(row):
    out = inside("nsenter -t 1 -m true")
    assert "Operation not permitted" in out
    refused = md("run", "--rm", "--network", "none", *HOST_PYTHON, "busybox", "/usr/bin/python3", "-I", "-c",
                 SETNS).stdout.strip()
    # The same call, unconfined: the fd is real and the kernel would take it.
    control = md("run", "--rm", "--network", "none", "--privileged", *HOST_PYTHON, "busybox",
                 "/usr/bin/python3", "-I", "-c", SETNS).stdout.strip()
    assert (refused, control) == ("Operation not permitted", "ok")
    row.result = "setns(host's cgroup ns): " + refused + "; --privileged: ok"


@pytest.mark.row("4", "echo b > /proc/sysrq-trigger", "refused: read-only")
def test_sysrq(row):
    if not os.path.exists("/proc/sysrq-trigger"):
        pytest.skip("needs a kernel with CONFIG_MAGIC_SYSRQ (this one has no /proc/sysrq-trigger)")
    out = inside("echo b > /proc/sysrq-trigger")
    assert "Read-only file system" in out
    row.result = refusal(out)


@pytest.mark.row("4", "mknod of the host's disk, then read", "the node cannot be opened")
def test_mknod_host_disk(row):
    disk = os.stat("/").st_dev
    major, minor = os.major(disk), os.minor(disk)
    out = inside(f"mknod /dev/hostdisk b {major} {minor}; head -c 16 /dev/hostdisk | wc -c")
    assert "Operation not permitted" in out
    row.result = f"b {major}:{minor}: " + refusal(out)[:45]


# The classic chroot escape: chroot into a subdirectory without entering it,
# climb with "..", and chroot to where the climb ended.  After chroot(2) that
# is the host's "/"; after pivot_root(2) the old root is not mounted at all.
CHROOT_ESCAPE = ("import os, sys; os.makedirs('/jail', exist_ok=True); os.chroot('/jail'); "
                 "[os.chdir('..') for _ in range(64)]; os.chroot('.'); "
                 "print('HOST ROOT' if os.path.exists(sys.argv[1]) else 'contained', sorted(os.listdir('/'))[:4])")


@pytest.mark.row("4", "chroot out through ..", "lands in the container's own /")
def test_chroot_escape(row, tmp_path):
    marker = tmp_path / "host-marker"
    marker.write_text("host")
    # seccomp unconfined: CAP_SYS_CHROOT is in the default set, so only the
    # pivot_root must hold the line.
    out = md("run", "--rm", "--network", "none", "--security-opt", "seccomp=unconfined", *HOST_PYTHON, "busybox",
             "/usr/bin/python3", "-I", "-c", CHROOT_ESCAPE, str(marker)).stdout
    assert out.startswith("contained"), out
    row.result = "double chroot: " + out.strip()[:50]


@pytest.mark.row("4", "ptrace a host process", "cannot attach; it stays untraced")
def test_ptrace(row):
    victim = subprocess.Popen(["sleep", "60"])
    try:
        result = syscall("ptrace", 16, victim.pid)  # PTRACE_ATTACH, by its host PID
        with open(f"/proc/{victim.pid}/status") as f:
            status = dict(line.split(":", 1) for line in f)
        assert result in ("No such process", "Operation not permitted"), result
        assert status["TracerPid"].strip() == "0" and status["State"].split()[0] == "S"
    finally:
        victim.kill()
        victim.wait()
    row.result = f"PTRACE_ATTACH {victim.pid}: {result}; TracerPid 0"


MASKED_FILES = ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/interrupts"]


@pytest.mark.row("4", "read /proc/kcore, keys, timer_list", "masked: /dev/null (1:3) over each")
def test_masked_paths(row):
    present = [f for f in MASKED_FILES if os.path.exists(f)]
    if not present:
        pytest.skip("this kernel has none of " + ", ".join(MASKED_FILES))
    out = inside("stat -c '%n %t:%T' " + " ".join(present) + "; grep -E ' /proc/(acpi|scsi) ' /proc/self/mountinfo")
    nodes = dict(line.split() for line in out.splitlines() if line.startswith("/proc/"))
    assert nodes == {f: "1:3" for f in present}, out
    if os.path.isdir("/proc/acpi"):
        assert " /proc/acpi ro," in out and "- tmpfs" in out
    row.result = ", ".join(f.removeprefix("/proc/") for f in present) + ": 1:3 (/dev/null)"


@pytest.mark.row("4", "keyctl", "refused")
def test_keyctl(row):
    result = syscall("keyctl", 0, -3, 0)  # KEYCTL_GET_KEYRING_ID of the session keyring
    assert result == "Operation not permitted"
    row.result = "keyctl: " + result


def test_privileged_lifts_it():
    out = inside("grep -E '^(CapEff|Seccomp):' /proc/1/status; mkdir -p /mnt; mount -t tmpfs t /mnt && echo mounted; "
                 "echo box > /proc/sys/kernel/hostname && hostname", "--privileged")
    assert "Seccomp:\t0" in out and "mounted" in out and out.strip().endswith("box")
    assert "a80425fb" not in out.splitlines()[0]
    assert syscall("unshare", 0x20000, flags=("--privileged",)) == "ok"


def test_cap_add_drop_user_read_only_and_seccomp_options():
    assert inside("grep CapEff /proc/1/status", "--cap-drop", "ALL", "--cap-add", "NET_RAW").split()[-1] == \
        "0000000000002000"
    assert "0000000000000000" in inside("grep CapEff /proc/1/status", "--cap-drop", "ALL")
    assert inside("id -u; id -g; grep CapEff /proc/self/status", "--user", "1000:1000").split() == \
        ["1000", "1000", "CapEff:", "0000000000000000"]
    assert "NoNewPrivs:\t1" in inside("cat /proc/1/status", "--security-opt", "no-new-privileges")
    assert "Read-only file system" in inside("touch /x", "--read-only")
    assert "Seccomp:\t0" in inside("cat /proc/1/status", "--security-opt", "seccomp=unconfined")
    bad = md("run", "--rm", "--cap-add", "NOT_A_CAP", "busybox", "true", check=False)
    assert bad.returncode == 125 and "invalid capability" in bad.stderr


def test_docker_profile_file(tmp_path):
    profile = tmp_path / "profile.json"
    profile.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir", "mkdirat"], '
                       '"action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}')
    out = inside("mkdir /tmp/x", "--security-opt", f"seccomp={profile}")
    assert "Permission denied" in out


def test_exec_is_confined_too():
    cid = md("run", "-d", "busybox", "sleep", "30").stdout.strip()
    status = md("exec", cid, "cat", "/proc/self/status").stdout
    caps = re.search(r"CapEff:\t(\w+)", status)[1]
    assert caps in ("00000000a80425fb", "00000000a00425fb") and "Seccomp:\t2" in status  # v2: no MKNOD
    assert "Operation not permitted" in md("exec", cid, "unshare", "-m", "true", check=False).stderr
    assert inspect(cid)["HostConfig"]["Privileged"] is False


@pytest.mark.row("4", "--userns private", "root inside is uid 100000 outside; so are its files")
def test_user_namespace(row, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    cid = md("run", "-d", "--userns", "private", "-v", f"{shared}:/share", "busybox", "sh", "-c",
             "echo hi > /share/made-inside; sleep 30").stdout.strip()
    pid = inspect(cid)["State"]["Pid"]
    with open(f"/proc/{pid}/uid_map") as f:
        assert f.read().split() == ["0", "100000", "65536"]
    wait_for((shared / "made-inside").exists)
    assert (shared / "made-inside").stat().st_uid == 100000
    assert md("exec", cid, "id", "-u").stdout == "0\n"
    assert "ok" in md("exec", cid, "sh", "-c", "echo x > /etc/mine && echo ok").stdout  # its image files are its own
    assert "permission denied" in md("exec", cid, "sh", "-c", "mount -t tmpfs t /tmp", check=False).stderr
    row.result = "uid_map 0 100000 65536; a file it made: uid 100000"


# ------------------------------------------------ hostile images, flags, fds
@pytest.fixture(scope="module")
def busybox_tree(tmp_path_factory):
    tree = tmp_path_factory.mktemp("busybox") / "rootfs"
    subprocess.run([os.path.join(TOP, "fixtures", "busybox-rootfs.sh"), str(tree)], check=True)
    return tree


def hostile_image(base, tmp_path, name: str, links: dict[str, str]) -> str:
    """busybox, with some of its top-level directories replaced by symlinks."""
    tree = tmp_path / name
    subprocess.run(["cp", "-a", str(base), str(tree)], check=True)
    for path, target in links.items():
        subprocess.run(["rm", "-rf", str(tree / path)], check=True)
        os.symlink(target, tree / path)
    md("import", str(tree), name)
    return name


@pytest.mark.parametrize("directory", [
    pytest.param(d, marks=pytest.mark.row("4", f"image whose /{d} is a symlink", f"refused: no unmasked /{d}"))
    for d in ("proc", "sys")])
def test_image_cannot_move_proc_or_sys(directory, busybox_tree, tmp_path, row):
    image = hostile_image(busybox_tree, tmp_path, f"mdt-moved-{directory}", {directory: f"/run/{directory}"})
    (busybox_tree / "run").mkdir(exist_ok=True)
    done = md("run", "--rm", "--network", "none", image, "sh", "-c",
              "head -1 /proc/timer_list; echo x > /proc/sys/kernel/domainname && echo WRITABLE", check=False)
    assert "WRITABLE" not in done.stdout
    assert done.returncode == 125 and done.stderr.strip().splitlines() == [
        f"minidocker: the image's /{directory} is not a directory (a symlink or a file): refusing to mount "
        f"{'proc' if directory == 'proc' else 'sysfs'} there"]
    assert md("ps", "-aq").stdout == ""
    row.result = f"/{directory} -> /run/{directory}: " + done.stderr.strip().removeprefix("minidocker: ")[:40]


# One container start, in-process, up to the point where the CLI plugs in its
# network: wait until the init's network namespace is gone (as `ip` finds it),
# then ask why.  An exiting process gives up its namespaces well before it is
# a zombie, so in that window waitpid(WNOHANG) still says "running".
RACE = """
import os, sys
sys.path.insert(0, sys.argv[1])
from lib import runtime
spec = {"linux": {"namespaces": [{"type": t} for t in ("pid", "mount", "network")]},
        "root": {"path": sys.argv[2]}, "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "process": {"args": ["true"]}}
for _ in range(50):
    init = runtime.Init(spec, runtime.NULL, runtime.INHERIT)
    init.wait_ready()
    while True:
        try:
            os.readlink(f"/proc/{init.pid}/ns/net")
        except OSError:
            break
    print(init.own_failure())
    init.abort()
"""


def test_the_inits_refusal_is_what_the_user_reads(busybox_tree, tmp_path):
    """`run` of a hostile image with a network: the init refuses and exits
    while the CLI plugs in the veth.  The init's reason is the error, not
    the `ip` failure its vanished namespace causes."""
    tree = tmp_path / "moved-proc"
    subprocess.run(["cp", "-a", str(busybox_tree), str(tree)], check=True)
    (tree / "proc").rmdir()
    os.symlink("/run/p", tree / "proc")
    done = subprocess.run([*PYTHON, "-c", RACE, TOP, str(tree)],
                          capture_output=True, text=True, timeout=60, check=True)
    assert set(done.stdout.splitlines()) == {
        "the image's /proc is not a directory (a symlink or a file): refusing to mount proc there"}


@pytest.mark.row("4", "image whose /dev is a symlink to a host directory", "refused; no device node on the host")
def test_image_cannot_make_devices_on_the_host(busybox_tree, tmp_path, row):
    target = tmp_path / "host-dir"
    target.mkdir()
    image = hostile_image(busybox_tree, tmp_path, "mdt-moved-dev", {"dev": str(target)})
    done = md("run", "--rm", "--network", "none", image, "true", check=False)
    assert done.returncode == 125 and "/dev is not a directory" in done.stderr
    assert os.listdir(target) == []  # no 0666 null, zero, random... in a host directory
    row.result = f"{target.name}: empty; " + done.stderr.strip()[12:50]


@pytest.mark.row("4", "volume target through an image's symlink", "lands inside the container")
def test_volume_target_through_a_symlink_stays_inside(busybox_tree, tmp_path, row):
    probe = f"mdt-probe-{os.getpid()}"
    image = hostile_image(busybox_tree, tmp_path, "mdt-data-link", {"data": "/etc"})
    source = tmp_path / "volume"
    source.mkdir()
    (source / "marker").write_text("from the volume\n")
    out = md("run", "--rm", "--network", "none", "-v", f"{source}:/data/{probe}", image,
             "cat", f"/etc/{probe}/marker").stdout
    assert out == "from the volume\n"  # it is in the container's /etc: the link was followed inside
    assert not os.path.lexists(f"/etc/{probe}")
    row.result = f"/data -> /etc: mounted on the container's /etc/{probe[:9]}…; host /etc untouched"


def _host_dir_fd(tmp_path) -> tuple[int, str]:
    secret = tmp_path / "host-only"
    secret.mkdir()
    (secret / "host-secret").write_text("host\n")
    return os.open(secret, os.O_RDONLY | os.O_DIRECTORY), "host-secret"


@pytest.mark.row("4", "an fd the caller left open (run, exec)", "closed before the command runs")
def test_inherited_fd_does_not_reach_the_container(tmp_path, row):
    fd, secret = _host_dir_fd(tmp_path)
    try:
        # As `bash -c 'exec 7</host-dir; minidocker run ...'` would pass it: inherited, open.
        listing = f"ls /proc/self/fd; ls /proc/self/fd/{fd}/ 2>&1"
        run = md("run", "--rm", "--network", "none", "busybox", "sh", "-c", listing, pass_fds=(fd,),
                 check=False).stdout
        cid = md("run", "-d", "--network", "none", "busybox", "sleep", "30", pass_fds=(fd,)).stdout.strip()
        ex = md("exec", cid, "sh", "-c", listing, pass_fds=(fd,), check=False).stdout
        pid1 = md("exec", cid, "ls", "/proc/1/fd").stdout.split()
        with open(f"/proc/{inspect(cid)['State']['Pid']}/stat") as f:
            monitor = int(f.read().rsplit(")", 1)[1].split()[1])
        held = {os.readlink(f"/proc/{monitor}/fd/{n}") for n in os.listdir(f"/proc/{monitor}/fd")}
    finally:
        os.close(fd)
    assert str(tmp_path / "host-only") not in held  # nor does the detached monitor keep it
    for out in (run, ex):
        assert secret not in out and "No such file" in out, out
    assert sorted(pid1) == ["0", "1", "2"]
    row.result = f"run, exec: /proc/self/fd/{fd}: No such file; PID 1 has 0 1 2"


@pytest.mark.row("4", "--cgroup-parent outside the cgroup tree", "refused; /abs is under each hierarchy")
def test_cgroup_parent(row):
    for bad in ("../../..", "a/../../b"):
        done = md("run", "--rm", "--network", "none", "--cgroup-parent", bad, "busybox", "true", check=False)
        assert done.returncode == 125 and done.stderr.startswith(f"minidocker: invalid --cgroup-parent '{bad}'")
    parent = f"mdt-cgparent-{os.getpid()}"
    cid = md("run", "-d", "--network", "none", "--memory", "64m", "--cgroup-parent", f"/{parent}", "busybox",
             "sleep", "30").stdout.strip()
    try:
        assert not os.path.exists(f"/{parent}")  # not a directory on the host's disk
        pid = inspect(cid)["State"]["Pid"]
        with open(f"/proc/{pid}/cgroup") as f:
            memory = next(line for line in f if re.match(r"\d+:(memory|):", line)).strip()
        assert memory.endswith(f":/{parent}/{cid}"), memory
    finally:
        md("rm", "-f", cid)
        for d in cgroup_paths(parent):
            os.rmdir(d)
    row.result = "'../../..': refused; /" + parent[:12] + "…: " + memory.split(":", 1)[1][:20] + "…"


@pytest.mark.row("4", "the state root, for other host users", "closed: 0710, as Docker's")
def test_state_root_is_closed_to_other_users(tmp_path, row):
    root = tmp_path / "root"
    root.mkdir(mode=0o755)  # as an older minidocker left it
    env = {**os.environ, "MINIDOCKER_ROOT": str(root)}
    cid = md("create", "--network", "none", "busybox", "sh", env=env).stdout.strip()
    try:
        assert oct(os.stat(root).st_mode & 0o777) == "0o710"
        upper = root / "containers" / cid / "upper"
        probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                "stat", str(upper)], capture_output=True, text=True)
        assert probe.returncode != 0 and "Permission denied" in probe.stderr
    finally:
        md("rm", "-f", cid, env=env)
    row.result = "mode 0710; uid 65534: stat upper/: Permission denied"


def _image_with_config(base, tmp_path, name: str, config: dict) -> str:
    """A docker-save archive of busybox with this image config, loaded."""
    import hashlib

    layer = tmp_path / "layer.tar"
    with tarfile.open(layer, "w") as tar:
        tar.add(base, arcname=".")
    diff_id = "sha256:" + hashlib.sha256(layer.read_bytes()).hexdigest()
    blob = json.dumps({"architecture": "amd64", "os": "linux", "config": config,
                       "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    config_name = hashlib.sha256(blob).hexdigest() + ".json"
    archive = tmp_path / f"{name}.tar"
    with tarfile.open(archive, "w") as tar:
        for member, data in ((config_name, blob),
                             ("manifest.json", json.dumps([{"Config": config_name, "RepoTags": [f"{name}:latest"],
                                                            "Layers": ["layer.tar"]}]).encode())):
            path = tmp_path / member
            path.write_bytes(data)
            tar.add(path, arcname=member)
        tar.add(layer, arcname="layer.tar")
    md("load", "-i", str(archive))
    return name


@pytest.mark.row("4", "-u NAME and an image's USER", "looked up in the container's /etc/passwd")
def test_users_by_name(busybox_tree, tmp_path, row):
    assert inside("id; echo $HOME", "-u", "nobody").split() == \
        ["uid=65534(nobody)", "gid=65534(nogroup)", "groups=65534(nogroup)", "/nonexistent"]
    assert inside("id -u; id -g", "-u", "daemon:tty").split() == ["1", "5"]
    image = _image_with_config(busybox_tree, tmp_path, "mdt-user", {"User": "nobody", "Cmd": ["id"]})
    assert md("run", "--rm", "--network", "none", image).stdout.startswith("uid=65534(nobody)")
    unknown = md("run", "--rm", "--network", "none", "-u", "mdt-nosuchuser", "busybox", "true", check=False)
    assert unknown.returncode == 125 and unknown.stderr == \
        "minidocker: unable to find user mdt-nosuchuser: no matching entries in passwd file\n"
    assert md("ps", "-aq").stdout == ""
    row.result = "nobody: uid 65534, HOME /nonexistent; USER nobody: 65534; unknown: 125"


@pytest.mark.row("4", "a mount under a :ro volume", "read-only too (recursive)")
def test_read_only_volume_is_recursive(tmp_path, row):
    source = tmp_path / "ro"
    (source / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "mdt-sub", str(source / "sub")], check=True)
    try:
        out = inside("touch /data/sub/x 2>&1; touch /data/y 2>&1; echo done", "-v", f"{source}:/data:ro")
    finally:
        subprocess.run(["umount", str(source / "sub")], check=True)
    assert out.count("Read-only file system") == 2 and not os.listdir(source / "sub"), out
    row.result = "touch /data/sub/x: Read-only file system"


@pytest.mark.row("4", "eight `start`s of one container at once", "one PID 1")
def test_concurrent_starts_make_one_container(row):
    cid = md("create", "--network", "none", "busybox", "sleep", "30").stdout.strip()
    results = []
    threads = [threading.Thread(target=lambda: results.append(md("start", cid, check=False))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.returncode == 0 for r in results) >= 1
    procs = set()
    for d in cgroup_dirs(cid):
        with open(os.path.join(d, "cgroup.procs")) as f:
            procs.update(f.read().split())
    assert len(procs) == 1, procs
    row.result = f"{sum(r.returncode == 0 for r in results)} started, 1 process in the cgroup"


@pytest.mark.row("4", "a corrupt container.json, every verb", "one line each; rm -f removes it")
def test_corrupt_record_is_one_line_for_every_verb(row):
    cid = md("create", "--network", "none", "--name", "mdt-corrupt", "busybox", "true").stdout.strip()
    with open(os.path.join(os.environ["MINIDOCKER_ROOT"], "containers", cid, "container.json"), "w") as f:
        f.write('{"Id": "truncated')
    for verb in (["inspect"], ["start"], ["stop"], ["kill"], ["rm"], ["logs"], ["wait"], ["exec"], ["restart"]):
        done = md(*verb, "mdt-corrupt", *(["true"] if verb == ["exec"] else []), check=False)
        assert done.returncode == 1, (verb, done.stderr)
        assert done.stderr.splitlines() == [f"minidocker: container {cid[:12]}: its record is unreadable (Unterminated "
                                            f"string starting at: line 1 column 8 (char 7)); `rm -f {cid[:12]}` "
                                            "removes it"], (verb, done.stderr)
    for verb in (["ps", "-a"], ["prune"]):
        done = md(*verb)
        assert done.stderr == "" and cid[:12] not in done.stdout
    assert md("rm", "-f", "mdt-corrupt").stdout == "mdt-corrupt\n"
    assert not os.path.exists(os.path.join(os.environ["MINIDOCKER_ROOT"], "containers", cid))
    assert md("create", "--network", "none", "--name", "mdt-corrupt", "busybox", "true").returncode == 0
    row.result = "inspect, start, ...: exit 1, one line; rm -f: gone, name free"


@pytest.mark.row("4", "Ctrl-C while `run` starts the container", "nothing left: record, cgroup, process")
def test_interrupted_start_leaves_nothing(row):
    import signal
    import time

    parent = os.environ["MINIDOCKER_CGROUP_PARENT"]
    md("run", "--rm", "--network", "none", "busybox", "true")  # the image is there: what is cut short is a start
    interrupted = 0
    for delay in [0.005 * i for i in range(15)]:
        cli = subprocess.Popen([*MINIDOCKER, "--explain", "run", "--network", "none", "busybox", "sleep", "0.3"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        first = cli.stderr.readline()  # its first step (a pid namespace): the start is under way
        assert "[namespaces]" in first, first
        time.sleep(delay)
        cli.send_signal(signal.SIGINT)
        _, err = cli.communicate(timeout=60)
        err = first + err
        interrupted += cli.returncode in (130, -2)
        assert "Traceback" not in err and "internal error" not in err, err
        if cli.returncode != 0:  # interrupted before the command ran: no record may stay
            assert md("ps", "-aq").stdout == "", (delay, cli.returncode, err)
        md("rm", "-f", *md("ps", "-aq").stdout.split(), check=False)
        left = cgroups_below(parent)
        assert left == [], (delay, left)
    assert interrupted, "no SIGINT landed while the start was under way"
    row.result = f"{interrupted} of 15 runs interrupted 0-70 ms into the start: 0 records, 0 cgroups"


@pytest.mark.row("4", "a bundle's sysctl kernel.core_pattern", "refused: not the container's own")
def test_bundle_cannot_set_a_host_sysctl(busybox_tree, tmp_path, row):
    """minidocker-runc takes an engine's config.json: its bytes are hostile too."""
    with open("/proc/sys/kernel/core_pattern") as f:
        before = f.read()
    subprocess.run(["cp", "-a", str(busybox_tree), str(tmp_path / "rootfs")], check=True)
    results = {}
    for key, value in (("kernel.core_pattern", "|/tmp/mdt-evil"), ("net/../kernel/core_pattern", "|/tmp/mdt-evil"),
                       ("net.ipv4.ip_forward", "1")):
        spec = {"ociVersion": "1.0.2", "root": {"path": "rootfs"},
                "process": {"args": ["cat", f"/proc/sys/{key.replace('.', '/')}"], "cwd": "/", "env": ["PATH=/bin"]},
                "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
                "linux": {"namespaces": [{"type": t} for t in ("pid", "mount", "network")],
                          "cgroupsPath": f"/mdt-sysctl-{os.getpid()}/c1", "sysctl": {key: value}}}
        (tmp_path / "config.json").write_text(json.dumps(spec))
        root, errors = tmp_path / "state", tmp_path / "stderr"
        try:
            with open(errors, "w+") as err:  # not a pipe: a created container's init would hold it open
                done = subprocess.run([*MINIDOCKER[:2], os.path.join(TOP, "minidocker-runc"), "--root", str(root),
                                       "create", "--bundle", str(tmp_path), "c1"], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=err, timeout=60)
                err.seek(0)
                results[key] = (done.returncode, err.read().strip())
        finally:
            subprocess.run([os.path.join(TOP, "minidocker-runc"), "--root", str(root), "delete", "--force", "c1"],
                           capture_output=True)
    for d in cgroup_paths(f"mdt-sysctl-{os.getpid()}"):
        os.rmdir(d)
    with open("/proc/sys/kernel/core_pattern") as f:
        assert f.read() == before
    assert results["kernel.core_pattern"] == (1, "minidocker-runc: sysctl 'kernel.core_pattern' is not in a "
                                                 "separate kernel namespace")
    assert results["net/../kernel/core_pattern"] == (1, "minidocker-runc: invalid sysctl 'net/../kernel/core_pattern'")
    assert results["net.ipv4.ip_forward"][0] == 0  # the container's own network namespace: its to set
    row.result = "core_pattern: refused; net/../: refused; net.ipv4.ip_forward: set"


@pytest.mark.row("4", "exec without -t: the caller's terminal and group", "pipes, a session of its own")
def test_exec_gets_neither_the_terminal_nor_the_group(row, tmp_path):
    """From a script, as a cron job would run it: the exec'd process signals
    its own process group; the script and a bystander of the caller's group
    must survive, and the process's fds are pipes, never the caller's."""
    cid = md("run", "-d", "--network", "none", "busybox", "sleep", "60").stdout.strip()
    script = (f"sleep 60 >/dev/null 2>&1 & echo bystander=$!; {shlex.join(MINIDOCKER)} exec {cid} sh -c "
              "'ls -l /proc/self/fd/0 /proc/self/fd/1 /proc/self/fd/2; kill -TERM 0'; echo script-went-on rc=$?")
    out = subprocess.run(["setsid", "sh", "-c", script], capture_output=True, text=True, timeout=60).stdout
    bystander = int(re.search(r"bystander=(\d+)", out)[1])
    try:
        with open(f"/proc/{bystander}/stat") as f:
            alive = f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        alive = False
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(bystander, 9)
    assert "script-went-on rc=143" in out and alive, out
    assert out.count("-> pipe:[") == 2 and "/proc/self/fd/0 -> /dev/null" in out, out
    row.result = "kill -TERM 0 ended only itself (143); the script and its group went on"


@pytest.mark.row("4", "/proc/<exec'd process> before its execve", "nothing to read: not dumpable")
def test_exec_window_is_not_readable(row):
    """A process of the container's reads every /proc/*/environ it can, while
    `exec` runs with a secret in the caller's environment."""
    cid = md("run", "-d", "--network", "none", "busybox", "sh", "-c",
             "while :; do cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep MDT_SECRET >> /found; done"
             ).stdout.strip()
    env = {**os.environ, "MDT_SECRET": "caller-only"}
    for _ in range(25):
        md("exec", cid, "true", env=env)
    assert md("exec", cid, "cat", "/found").stdout == ""
    row.result = "25 execs with MDT_SECRET in the caller's environment: never seen"


def test_image_env_cannot_pull_the_callers_variables(busybox_tree, tmp_path):
    image = _image_with_config(busybox_tree, tmp_path, "mdt-env", {"Env": ["PATH=/bin:/usr/bin", "MDT_CALLER_SECRET"],
                                                                   "Cmd": ["env"]})
    env = {**os.environ, "MDT_CALLER_SECRET": "hunter2", "MDT_PASSED": "yes"}
    out = md("run", "--rm", "--network", "none", "-e", "MDT_PASSED", image, env=env).stdout
    assert "hunter2" not in out and "MDT_PASSED=yes" in out  # -e KEY passes the caller's, as Docker


@pytest.mark.row("4", "a FIFO at the image's /etc/passwd", "no hang: start, exec, rm -f go on")
def test_fifo_passwd_does_not_hang(row):
    cid = md("run", "-d", "--network", "none", "busybox", "sleep", "60").stdout.strip()
    md("exec", cid, "sh", "-c", "rm /etc/passwd && mkfifo /etc/passwd")
    assert md("exec", cid, "echo", "ok", timeout=20).stdout == "ok\n"  # (busybox's own `id` would wait on it)
    md("restart", "-t", "1", cid, timeout=30)
    assert md("rm", "-f", cid, timeout=20).stdout.strip() == cid
    row.result = "exec, restart, rm -f: each returned"


def test_deep_upper_directory_is_removed():
    md("run", "--name", "mdt-deep", "--network", "none", "busybox", "sh", "-c",
       "cd /tmp && i=0 && while [ $i -lt 1200 ]; do mkdir d && cd d && i=$((i+1)); done && ln -s / up")
    cid = inspect("mdt-deep")["Id"]
    done = md("rm", "mdt-deep", check=False)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert not os.path.exists(os.path.join(os.environ["MINIDOCKER_ROOT"], "containers", cid))


def test_the_callers_signal_dispositions_do_not_pass():
    out = subprocess.run(["sh", "-c", f"trap '' TERM HUP USR1; {shlex.join(MINIDOCKER)} run --rm --network none "
                          "busybox grep -E '^Sig(Ign|Blk)' /proc/self/status"], capture_output=True, text=True).stdout
    assert out.split() == ["SigBlk:", "0000000000000000", "SigIgn:", "0000000000000000"], out


def test_runc_ids_are_names(tmp_path):
    root = tmp_path / "root"
    done = subprocess.run([os.path.join(TOP, "minidocker-runc"), "--root", str(root), "create", "--bundle",
                           str(tmp_path), "../escaped"], capture_output=True, text=True)
    assert done.returncode == 1 and "invalid container id '../escaped'" in done.stderr
    assert not (tmp_path / "escaped").exists()


def test_logs_into_a_closed_pipe():
    md("run", "--name", "mdt-many-lines", "--network", "none", "busybox", "sh", "-c", "seq 1 100000")
    done = subprocess.run(["sh", "-c", f"{shlex.join(MINIDOCKER)} logs mdt-many-lines | head -1"],
                          capture_output=True, text=True)
    assert done.stdout == "1\n" and done.stderr == ""


def test_a_bundles_own_annotations_do_not_steer_the_init(busybox_tree, tmp_path):
    """org.minidocker.* annotations are the runtime's instructions to its init;
    from a bundle they are data: here, a console socket it must not connect to."""
    import socket

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "lure.sock"))
    listener.listen(1)
    listener.settimeout(3)
    subprocess.run(["cp", "-a", str(busybox_tree), str(tmp_path / "rootfs")], check=True)
    spec = {"ociVersion": "1.0.2", "root": {"path": "rootfs"},
            "process": {"args": ["true"], "cwd": "/", "env": ["PATH=/bin"]},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "annotations": {"org.minidocker.console-socket": str(tmp_path / "lure.sock")},
            "linux": {"namespaces": [{"type": t} for t in ("pid", "mount")],
                      "cgroupsPath": f"/mdt-annotation-{os.getpid()}/c1"}}
    (tmp_path / "config.json").write_text(json.dumps(spec))
    runc = [os.path.join(TOP, "minidocker-runc"), "--root", str(tmp_path / "state")]
    try:
        subprocess.run([*runc, "create", "--bundle", str(tmp_path), "c1"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        subprocess.run([*runc, "delete", "--force", "c1"], capture_output=True)
        listener.close()
        for d in cgroup_paths(f"mdt-annotation-{os.getpid()}"):
            os.rmdir(d)


def test_userns_shifts_a_hard_linked_file_once(busybox_tree, tmp_path):
    tree = tmp_path / "linked"
    subprocess.run(["cp", "-a", str(busybox_tree), str(tree)], check=True)
    (tree / "etc" / "a").write_text("one inode, two names\n")
    os.link(tree / "etc" / "a", tree / "etc" / "b")
    image = _image_with_config(tree, tmp_path, "mdt-hardlink", {"Cmd": ["sh"]})
    out = md("run", "--rm", "--network", "none", "--userns", "private", image, "sh", "-c",
             "stat -c '%u %h' /etc/a; echo more >> /etc/b && echo written").stdout
    assert out == "0 2\nwritten\n", out  # shifted twice, it was 200000 outside: nobody's inside
