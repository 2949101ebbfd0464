"""Security: the default seccomp profile is Docker's, call for call.

Each test runs a real container and makes the calls from inside it.  busybox
has no tool for most raw system calls, so those are made with the host's own
Python, bind-mounted read-only into the container, through ctypes.

A refusal by the filter and one by a missing capability both read EPERM, so
where it matters a call is made that the kernel would answer differently once
past the filter: chroot(2) looks its path up before it checks CAP_SYS_CHROOT,
so chroot to a missing directory says ENOENT when the filter lets it through.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
from conftest import TOP, md

sys.path.insert(0, TOP)
from lib import seccomp

pytestmark = [pytest.mark.order(6), pytest.mark.cgroupv2]  # the escape table holds on v1 and v2 alike

HOST_PYTHON = ["-v", "/usr:/usr:ro", "-v", "/usr/lib:/lib:ro", "-v", "/usr/lib64:/lib64:ro"]
# One raw call for each argument "nr,arg,arg...", one line of result each.  Arguments go as C longs:
# the filter compares all 64 bits of a register, and a C int could arrive sign-extended (0xffffffff
# as -1).
SYSCALLS = ("import ctypes, os, sys; libc = ctypes.CDLL(None, use_errno=True)\n"
            "for call in sys.argv[1:]:\n"
            "    r = libc.syscall(*[ctypes.c_long(int(a)) for a in call.split(',')])\n"
            "    print('ok' if r >= 0 else os.strerror(ctypes.get_errno()))")
# clone(2) without a stack is a fork: the child leaves at once, the parent says what happened.
CLONE = ("import ctypes, os, sys; libc = ctypes.CDLL(None, use_errno=True); "
         "r = libc.syscall(int(sys.argv[1]), int(sys.argv[2]), 0, 0, 0, 0); r == 0 and os._exit(0); "
         "print('ok' if r > 0 else os.strerror(ctypes.get_errno()))")
NR = {"x86_64": {"socket": 41, "personality": 135, "io_uring_setup": 425, "clone3": 435, "clone": 56,
                 "mount": 165, "ptrace": 101},
      "aarch64": {"socket": 198, "personality": 92, "io_uring_setup": 425, "clone3": 435, "clone": 220,
                  "mount": 40, "ptrace": 117}}[os.uname().machine]
AF_INET, AF_ALG, AF_VSOCK, SOCK_STREAM, SOCK_SEQPACKET = 2, 38, 40, 1, 5
CLONE_NEWUSER, SIGCHLD, PTRACE_TRACEME = 0x10000000, 17, 0


def inside(script: str, *flags: str) -> str:
    """Run a shell script in a fresh container; its output, both streams."""
    done = md("run", "--rm", "--network", "none", *flags, "busybox", "sh", "-c", script, check=False)
    return done.stdout + done.stderr


def python(code: str, *args: object, flags: tuple = ()) -> str:
    """Run the host's Python in a fresh container; its output, both streams."""
    done = md("run", "--rm", "--network", "none", *flags, *HOST_PYTHON, "busybox",
              "/usr/bin/python3", "-I", "-c", code, *map(str, args), check=False)
    return (done.stdout + done.stderr).strip()


def syscalls(*calls: tuple, flags: tuple = ()) -> list[str]:
    """Make raw calls, each (name, arg, ...), in one fresh container; what each returned."""
    return python(SYSCALLS, *[",".join(map(str, (NR[name], *args))) for name, *args in calls],
                  flags=flags).splitlines()


@pytest.mark.row("4", "chroot / in a default container", "allowed with CAP_SYS_CHROOT, as Docker; refused without")
def test_chroot_follows_cap_sys_chroot(row):
    assert inside("chroot / true && echo chrooted") == "chrooted\n"
    # Past the filter, the kernel looks the path up first: ENOENT, not EPERM.
    assert "No such file or directory" in inside("chroot /nonexistent true")
    # Without the capability, the filter itself refuses, before the path is looked up.
    dropped = inside("chroot /nonexistent true", "--cap-drop", "SYS_CHROOT")
    assert "Operation not permitted" in dropped
    row.result = "chroot / true: ok; with --cap-drop SYS_CHROOT: not permitted"


@pytest.mark.row("4", "socket(AF_VSOCK), socket(AF_ALG), io_uring_setup", "refused, as Docker")
def test_calls_docker_refuses(row):
    vsock, alg, uring, inet = syscalls(("socket", AF_VSOCK, SOCK_STREAM, 0), ("socket", AF_ALG, SOCK_SEQPACKET, 0),
                                       ("io_uring_setup", 1, 0), ("socket", AF_INET, SOCK_STREAM, 0))
    assert [vsock, alg, uring] == ["Operation not permitted"] * 3
    assert inet == "ok"  # the other families stay open
    row.result = "AF_VSOCK, AF_ALG, io_uring_setup: not permitted; AF_INET: ok"


def test_personality_only_the_values_programs_use():
    query, linux32, no_aslr = 0xFFFFFFFF, 0x0008, 0x0040000
    # query; what `linux32` and `setarch` ask for; turning ASLR off
    assert syscalls(("personality", query), ("personality", linux32), ("personality", no_aslr)) == \
        ["ok", "ok", "Operation not permitted"]


def test_ptrace_is_allowed_from_kernel_4_8():
    # Docker's rule with "minKernel": "4.8"; whom a process may trace is then the kernel's business.
    assert syscalls(("ptrace", PTRACE_TRACEME)) == ["ok"]


def test_cap_sys_admin_opens_mount_and_namespaces():
    # Past the filter, mount(2) with no target would say "Bad address": EPERM is the filter's.
    assert syscalls(("mount", 0, 0, 0, 0, 0), ("clone3", 0, 0)) == \
        ["Operation not permitted", "Function not implemented"]  # ENOSYS: glibc falls back to clone
    assert python(CLONE, NR["clone"], CLONE_NEWUSER | SIGCHLD) == "Operation not permitted"
    admin = ("--cap-add", "SYS_ADMIN")
    out = inside("mkdir -p /mnt; mount -t tmpfs t /mnt && echo mounted; unshare -m true && echo unshared", *admin)
    assert out.split() == ["mounted", "unshared"], out
    assert python(CLONE, NR["clone"], CLONE_NEWUSER | SIGCHLD, flags=admin) == "ok"
    assert syscalls(("clone3", 0, 0), flags=admin) == ["Invalid argument"]  # the kernel's own answer


# i386 calls from a 64-bit process: `int 0x80`, with the i386 numbers, straight from machine code.
INT80 = """
import ctypes, mmap, os
def int80(nr, *args):
    code = b"\\x53\\xb8" + nr.to_bytes(4, "little")  # push rbx; mov eax, nr
    for mov, arg in zip(b"\\xbb\\xb9\\xba", args):  # mov ebx, ecx, edx
        code += bytes([mov]) + arg.to_bytes(4, "little")
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code + b"\\xcd\\x80\\x5b\\xc3")  # int 0x80; pop rbx; ret
    r = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))()
    return "ok" if r >= 0 else os.strerror(-r)
print(int80(20), int80(310, 0x20000), int80(359, 40, 1, 0), int80(359, 2, 1, 0), sep=", ")
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="i386 calls through int 0x80 are an x86_64 matter")
@pytest.mark.row("4", "i386 calls (int 0x80) from an x86_64 process", "the same rules, not a way round them")
def test_compat_abi_is_filtered_too(row):
    out = python(INT80)
    # getpid; unshare(CLONE_NEWNS); socket(AF_VSOCK); socket(AF_INET).  A filter without the i386
    # ABI kills the process at the first call (SIGSYS); one that let it through would allow all four.
    assert out == "ok, Operation not permitted, Operation not permitted, ok", out
    row.result = "i386 getpid: ok; unshare, socket(AF_VSOCK): not permitted"


@pytest.mark.row("4", "--security-opt seccomp=FILE, Docker's default.json format", "loads and confines")
def test_docker_format_profile(row, tmp_path):
    # seccomp.DEFAULT is Docker's default.json, rule for rule: archMap, includes/excludes, minKernel.
    profile = tmp_path / "default.json"
    profile.write_text(json.dumps(seccomp.DEFAULT, indent=1))
    opt = ("--security-opt", f"seccomp={profile}")
    results = syscalls(("socket", AF_VSOCK, SOCK_STREAM, 0), ("clone3", 0, 0), ("mount", 0, 0, 0, 0, 0),
                       ("ptrace", PTRACE_TRACEME), flags=opt)
    assert results == ["Operation not permitted", "Function not implemented", "Operation not permitted", "ok"]
    assert "Seccomp:\t2" in inside("ls / >/dev/null && cat /proc/self/status", *opt)
    row.result = "AF_VSOCK, mount: not permitted; clone3: ENOSYS; ptrace: ok"


def test_profile_fields_as_runc_reads_them(tmp_path):
    # defaultErrnoRet; the old single "name"; errnoRet; two conditions on one argument, which runc
    # (and so Docker) reads as two rules, either of which matches.
    either = [{"index": 0, "value": family, "op": "SCMP_CMP_EQ"} for family in (AF_VSOCK, AF_ALG)]
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({**seccomp.DEFAULT, "defaultErrnoRet": 38, "syscalls": [
        *seccomp.DEFAULT["syscalls"], {"name": "socket", "action": "SCMP_ACT_ERRNO", "errnoRet": 13, "args": either}]}))
    results = syscalls(("io_uring_setup", 1, 0), ("socket", AF_VSOCK, SOCK_STREAM, 0),
                       ("socket", AF_ALG, SOCK_SEQPACKET, 0), ("socket", AF_INET, SOCK_STREAM, 0),
                       flags=("--security-opt", f"seccomp={profile}"))
    assert results == ["Function not implemented", "Permission denied", "Permission denied", "ok"]


def test_docker_format_profile_follows_capabilities(tmp_path):
    profile = tmp_path / "default.json"
    profile.write_text(json.dumps(seccomp.DEFAULT))
    assert inside("chroot / true && echo chrooted", "--security-opt", f"seccomp={profile}") == "chrooted\n"


GARBAGE = {
    "not JSON": "{not json",
    "not an object": "[]",
    "unknown action": '{"defaultAction": "SCMP_ACT_MAYBE", "syscalls": []}',
    "rule without names": '{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_ERRNO"}]}',
    "bad argument": '{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], '
                    '"action": "SCMP_ACT_ERRNO", "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]}',
    "both name and names": '{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"name": "read", '
                           '"names": ["read"], "action": "SCMP_ACT_ERRNO"}]}',
    "bad minKernel": '{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], '
                     '"action": "SCMP_ACT_ERRNO", "includes": {"minKernel": "four"}}]}',
}


@pytest.mark.parametrize("content", list(GARBAGE.values()), ids=list(GARBAGE))
def test_bad_profile_is_one_line(content, tmp_path):
    profile = tmp_path / "profile.json"
    profile.write_text(content)
    done = md("run", "--rm", "--network", "none", "--security-opt", f"seccomp={profile}", "busybox", "true",
              check=False)
    assert done.returncode == 125
    assert len(done.stderr.strip().splitlines()) == 1 and "seccomp profile" in done.stderr, done.stderr
    assert md("ps", "-aq").stdout == ""  # nothing left behind
