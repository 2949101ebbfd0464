"""Security: the escape table.  From inside a default container, each escape
is attempted and must fail; with --privileged, the ones that should work do.

busybox has no tool for some system calls (keyctl, ptrace), so those are made
with the host's own Python, bind-mounted read-only into the container.
"""

from __future__ import annotations

import os
import re

import pytest
from conftest import inspect, md, wait_for

pytestmark = pytest.mark.order(6)

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


@pytest.mark.row("4", "Capabilities", "CapBnd = CapEff = CapPrm = 00000000a80425fb, ambient empty")
def test_default_capabilities(row):
    status = dict(line.split(":\t") for line in inside("cat /proc/1/status").splitlines() if ":\t" in line)
    for key in ("CapBnd", "CapEff", "CapPrm", "CapInh"):
        assert status[key].strip() == "00000000a80425fb", key
    assert status["CapAmb"].strip() == "0000000000000000"
    assert status["Seccomp"].strip() == "2" and status["NoNewPrivs"].strip() == "0"
    row.result = "a80425fb in all four sets; Seccomp 2; NoNewPrivs 0"


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


@pytest.mark.row("4", "nsenter -t 1 -m", "refused (setns)")
def test_nsenter(row):
    out = inside("nsenter -t 1 -m true")
    assert "Operation not permitted" in out
    assert syscall("setns", 0, 0) == "Operation not permitted"
    row.result = refusal(out)


@pytest.mark.row("4", "echo b > /proc/sysrq-trigger", "refused: read-only")
def test_sysrq(row):
    out = inside("echo b > /proc/sysrq-trigger")
    if os.path.exists("/proc/sysrq-trigger"):
        assert "Read-only file system" in out
        row.result = refusal(out)
    else:  # a kernel built without CONFIG_MAGIC_SYSRQ, as this CI machine's
        assert "can't create" in out
        row.result = "this kernel has no SysRq: nothing to write to"


@pytest.mark.row("4", "mknod of the host's disk, then read", "the node cannot be opened")
def test_mknod_host_disk(row):
    disk = os.stat("/").st_dev
    major, minor = os.major(disk), os.minor(disk)
    out = inside(f"mknod /dev/hostdisk b {major} {minor}; head -c 16 /dev/hostdisk | wc -c")
    assert "Operation not permitted" in out
    row.result = f"b {major}:{minor}: " + refusal(out)[:45]


@pytest.mark.row("4", "chroot out through ..", "refused; and after pivot_root .. is /")
def test_chroot_escape(row):
    out = inside("cd /; cd ../../..; pwd; ls / | head -3; chroot /tmp true")
    assert out.splitlines()[0] == "/" and "Operation not permitted" in out
    row.result = "cd ../../.. stays at /; chroot: not permitted"


@pytest.mark.row("4", "ptrace a process outside", "refused")
def test_ptrace(row):
    result = syscall("ptrace", 16, 1)  # PTRACE_ATTACH to the container's own PID 1: none is outside
    assert result == "Operation not permitted"
    row.result = "PTRACE_ATTACH: " + result


@pytest.mark.row("4", "read /proc/kcore", "masked: nothing to read")
def test_kcore(row):
    out = inside("for f in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug; do "
                 "[ -e $f ] && echo $f $(cat $f | wc -c); done").split("\n")
    sizes = dict(line.split() for line in out if line.startswith("/proc/"))
    assert sizes and all(size == "0" for size in sizes.values()), sizes
    assert os.path.exists("/proc/keys") and "/proc/keys" in sizes  # there to read on the host
    row.result = ", ".join(f"{f}: {n} bytes" for f, n in sizes.items())[:60]


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
    assert inside("id -u; id -g", "--user", "1000:1000").split() == ["1000", "1000"]
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
    assert "CapEff:\t00000000a80425fb" in status and "Seccomp:\t2" in status
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
