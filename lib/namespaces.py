"""Namespaces: what makes a process a container.

A namespace gives a process its own copy of one kind of kernel resource:

| namespace | flag          | the container gets its own            |
|-----------|---------------|---------------------------------------|
| pid       | CLONE_NEWPID  | process numbers: its command is PID 1 |
| mount     | CLONE_NEWNS   | mount table: its root, /proc, /dev    |
| uts       | CLONE_NEWUTS  | hostname                              |
| ipc       | CLONE_NEWIPC  | System V IPC and POSIX message queues |
| net       | CLONE_NEWNET  | interfaces, routes, iptables, ports   |

A process can unshare(2) its own mount, uts, ipc and net namespaces (the
init does, see init.py).  The pid namespace is different: a process never
moves into a new one itself, only its next child is born there, as PID 1.
`unshare --pid --fork` would do that fork, but then unshare(1) is PID 1's
parent and it alone learns how PID 1 died; util-linux 2.38 even reports a
death by SIGKILL as exit 1.  So the monitor asks the kernel itself:
unshare(CLONE_NEWPID), fork, and setns() back to its own pid namespace.
The monitor stays PID 1's parent and waitpid(2) tells it the exact exit
code, 137 for the OOM killer included.

Entering a running container (exec) is what nsenter(1) does: setns(2) into
each namespace of its PID 1.  minidocker does it in a forked child so that
the new process also gets the container's confinement (security.py) before
its execve, as runc's "setns init" does; nsenter would leave it all powers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from lib import host

CLONE_NEWPID = 0x20000000
KINDS = ("pid", "mnt", "uts", "ipc", "net")


@contextlib.contextmanager
def pid_namespace_for_next_child(join: str | None = None) -> Iterator[None]:
    """Within this block, a child we fork is PID 1 of a new pid namespace
    or, with `join` (a /proc/PID/ns/pid path), a member of that one."""
    parent = os.getpid()
    own = os.open("/proc/self/ns/pid", os.O_RDONLY)
    try:
        if join is None:
            host.unshare(CLONE_NEWPID, "CLONE_NEWPID) # our next child is PID 1 of a new pid namespace")
        else:
            target = os.open(join, os.O_RDONLY)
            try:
                host.setns(target, CLONE_NEWPID, f"{join}, CLONE_NEWPID)  # = nsenter --pid")
            finally:
                os.close(target)
        yield
    finally:
        if os.getpid() == parent:  # a child forked in the block leaves this to us
            host.setns(own, CLONE_NEWPID, "/proc/self/ns/pid, CLONE_NEWPID)  # later children: back to ours")
        os.close(own)


def inode(pid: int | str, kind: str) -> int:
    """The namespace's identity: two processes share one iff the inodes match."""
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


# setns(2) flag of each namespace exec enters; mnt last: it also moves our root.
JOIN = (("ipc", 0x8000000, "--ipc"), ("uts", 0x4000000, "--uts"), ("net", 0x40000000, "--net"),
        ("mnt", 0x20000, "--mount"))


def join_all(pid: int) -> None:
    """Enter a running container's namespaces, as nsenter(1) would; its user
    namespace, if it has one, last: the others belong to the host's."""
    own_user = os.stat("/proc/self/ns/user").st_ino
    joins = JOIN + ((("user", 0x10000000, "--user"),) if os.stat(f"/proc/{pid}/ns/user").st_ino != own_user else ())
    # Open all first: once in the container's mounts, /proc is its own and
    # no longer shows the host's PID of its init.
    fds = [(os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY), kind, flag, tool) for kind, flag, tool in joins]
    # setns(2) into a mount namespace puts us at that namespace's first root,
    # not at the root its PID 1 has: they differ when the container was made
    # by a caller in a chroot, whose pivot_root happened inside the chroot.
    # There, `exec touch /go` would touch the machine's own /go.  So hold
    # PID 1's root, and chroot to it once inside: nsenter --root does this.
    root = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for fd, kind, flag, tool in fds:
            try:
                host.setns(fd, flag, f"/proc/{pid}/ns/{kind})  # = nsenter {tool}", step="exec")
            finally:
                os.close(fd)
        host.explain("exec", f"chroot /proc/{pid}/root  # = nsenter --root")
        os.fchdir(root)
        os.chroot(".")
    finally:
        os.close(root)
    if len(joins) > len(JOIN):  # in a user namespace: become its root, as nsenter --user does
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)


# The sysctls a container may set: only those its own namespaces hold.  Any
# other (kernel.core_pattern, vm.*) is the whole machine's: a bundle that sets
# kernel.core_pattern to "|/evil" has the host's root run /evil on the next
# crash anywhere.  runc's validator draws the same lines.
_IPC_SYSCTLS = {"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"}


def sysctl_path(key: str, namespaces: list[dict]) -> str:
    """/proc/sys/... for a sysctl the container's namespaces hold, or refused."""
    import re

    dotted = key.replace("/", ".")
    if not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+", dotted):
        raise host.MinidockerError(f"invalid sysctl {key!r}")
    own = {n["type"] for n in namespaces}
    if dotted in _IPC_SYSCTLS or dotted.startswith("fs.mqueue."):
        needed = "ipc"
    elif dotted.startswith("net."):
        needed = "network"
    elif dotted in ("kernel.hostname", "kernel.domainname"):
        needed = "uts"
    else:
        raise host.MinidockerError(f"sysctl {key!r} is not in a separate kernel namespace")
    if needed not in own:
        raise host.MinidockerError(f"sysctl {key!r} needs a {needed} namespace of the container's own")
    return "/proc/sys/" + dotted.replace(".", "/")

