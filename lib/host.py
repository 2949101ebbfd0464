"""The host seam: the one place where minidocker touches the host.

Every command it runs (unshare, nsenter, ip, iptables, sysctl, tar), every
cgroupfs write and every mount(2) passes through a function here, so that

* `--explain` can print each one as it happens, labelled with the step it
  belongs to (namespaces, rootfs, cgroups, network, exec), and
* a failure is reported as one line naming the command and its stderr.

Mounts are made with the mount(2) system call rather than mount(8): the
container init makes a dozen of them and a fork+exec for each would cost
more than the rest of the start.  `--explain` still prints each one as the
mount(8) command that would do the same.
"""

from __future__ import annotations

import os

# Imports stay lazy: the container init loads this module, and on these
# machines `import subprocess` or `shlex` (which pulls in `re`) costs more
# than all of the init's mounts together.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess


def quote(argv: list[str]) -> str:
    import shlex

    return shlex.join(argv)

# Docker's exit codes for failures of the engine itself.
EXIT_ENGINE = 125
EXIT_CANNOT_INVOKE = 126
EXIT_NOT_FOUND = 127


class MinidockerError(Exception):
    """A failure the user should read as one line, with Docker's exit code."""

    def __init__(self, message: str, code: int = EXIT_ENGINE) -> None:
        super().__init__(message)
        self.code = code


class HostError(MinidockerError):
    """A host command or kernel call failed: says which, and what it said."""

    def __init__(self, what: str, detail: str, code: int = EXIT_ENGINE) -> None:
        super().__init__(f"{what}: {detail.strip()}", code)
        self.what = what
        self.detail = detail


# --explain: the CLI sets MINIDOCKER_EXPLAIN to a file descriptor, and every
# process of ours (the CLI, the monitor, the container init) writes there.
def _explain_fd() -> int:
    value = os.environ.get("MINIDOCKER_EXPLAIN", "")
    return int(value) if value.isdigit() else -1


def explaining() -> bool:
    return _explain_fd() >= 0


def explain(step: str, text: str | list[str]) -> None:
    """Print one step for --explain: a text, or a command line to quote.

    Each line starts with the milliseconds since the CLI started, taken
    from CLOCK_MONOTONIC, which every process on the machine shares.
    """
    fd = _explain_fd()
    if fd >= 0:
        import time

        if isinstance(text, list):
            text = quote(text)
        ms = (time.monotonic() - float(os.environ.get("MINIDOCKER_T0", "0"))) * 1000
        try:  # noqa: SIM105 -- contextlib would cost the init 1.5 ms of imports
            os.write(fd, f"{ms:6.1f}ms [{step:<10}] {text}\n".encode())
        except OSError:
            pass


def run(argv: list[str], step: str, stdin: str | None = None, check: bool = True) -> str:
    """Run one host command, explained; return its stdout.

    With check=False a failure returns None-like empty output instead of
    raising, for probes such as `iptables -C` whose exit code is the answer.
    """
    import subprocess  # imported here: the container init never runs commands

    if explaining():  # the command and its input in one write: the init writes too
        explain(step, quote(argv) + "".join(f"\n{' ' * 21}{line}" for line in (stdin or "").splitlines()))
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise HostError(argv[0], "command not found on the host (run .ci/setup-host)") from None
    if done.returncode != 0 and check:
        raise HostError(quote(argv), done.stderr or f"exit status {done.returncode}")
    return done.stdout if done.returncode == 0 else ""


def spawn(argv: list[str], step: str, **popen_args: object) -> subprocess.Popen:
    """Start a host command that runs alongside us (a pipe, the container)."""
    import subprocess

    explain(step, argv)
    try:
        return subprocess.Popen(argv, **popen_args)
    except FileNotFoundError:
        raise HostError(argv[0], "command not found on the host (run .ci/setup-host)") from None


def write(path: str, value: str, step: str = "cgroups") -> None:
    """Write a kernel control file (cgroupfs, /proc/sys), explained."""
    explain(step, f"echo {value} > {path}")
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        raise HostError(f"write {value!r} to {path}", e.strerror or str(e)) from None


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


# ---------------------------------------------------------------- syscalls
# Loaded only where mounts are made (the container init): ctypes costs ~1 ms.
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_UNBINDABLE = 0x20000
MNT_DETACH = 0x2

_FLAG_WORDS = [(MS_RDONLY, "ro"), (MS_NOSUID, "nosuid"), (MS_NODEV, "nodev"),
               (MS_NOEXEC, "noexec"), (MS_REMOUNT, "remount"), (MS_BIND, "bind"),
               (MS_REC, "rec"), (MS_PRIVATE, "private"), (MS_SLAVE, "slave"),
               (MS_SHARED, "shared"), (MS_UNBINDABLE, "unbindable")]

# pivot_root(2) has no glibc wrapper; its number differs between machines.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "armv7l": 218, "riscv64": 41, "ppc64le": 203}

_libc = None


def _call(name: str, *args: object) -> None:
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    if getattr(_libc, name)(*args) != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def mount(source: str, target: str, fstype: str | None, flags: int = 0,
          data: str = "", step: str = "rootfs") -> None:
    words = [w for bit, w in _FLAG_WORDS if flags & bit] + ([data] if data else [])
    shown = ["mount"] + (["-t", fstype] if fstype else []) + (["-o", ",".join(words)] if words else [])
    explain(step, [*shown, source, target])
    try:
        _call("mount", source.encode(), target.encode(),
              fstype.encode() if fstype else None, flags, data.encode() if data else None)
    except OSError as e:
        raise HostError(quote([*shown, source, target]), e.strerror) from None


def restrict_bind(target: str, flags: int, recursive: bool, step: str = "rootfs") -> None:
    """Apply ro, nosuid, nodev, noexec to a bind mount, and to every mount below it too.

    A bind mount ignores MS_RDONLY when it is made, so it takes a remount,
    and a remount changes one mount only: with `-v /srv:/data:ro` a mount
    under /srv would stay writable in the container.  mount_setattr(2) with
    AT_RECURSIVE (Linux 5.12) changes the whole tree at once, as Docker 25
    does; on an older kernel each submount is remounted in turn."""
    words = [w for bit, w in _FLAG_WORDS if flags & bit and bit in (MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC)]
    if recursive:
        import ctypes

        # struct mount_attr: attr_set, attr_clr, propagation, userns_fd.  The
        # MOUNT_ATTR_ bits for ro, nosuid, nodev, noexec are MS_'s own values.
        attr = (ctypes.c_uint64 * 4)(flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC), 0, 0, 0)
        explain(step, f"mount_setattr({target}, AT_RECURSIVE, {'+'.join(words)})  # = mount -o remount,bind,"
                      f"{','.join(words)} of it and every mount below it")
        try:  # mount_setattr is 442 on every architecture; AT_FDCWD, AT_RECURSIVE
            _call("syscall", 442, -100, target.encode(), 0x8000, attr, ctypes.sizeof(attr))
            return
        except OSError as e:
            import errno

            if e.errno != errno.ENOSYS:
                raise HostError(f"mount_setattr {target}", e.strerror) from None
        with open("/proc/self/mountinfo") as f:
            below = [line.split()[4] for line in f if line.split()[4].startswith(target.rstrip("/") + "/")]
    else:
        below = []
    for point in [target, *below]:
        mount("", point, None, flags | MS_REMOUNT | MS_BIND, step=step)


def umount(target: str, flags: int = MNT_DETACH, step: str = "rootfs") -> None:
    explain(step, f"umount {'-l ' if flags & MNT_DETACH else ''}{target}")
    try:
        _call("umount2", target.encode(), flags)
    except OSError as e:
        raise HostError(f"umount {target}", e.strerror) from None


def pivot_root(new_root: str, put_old: str, step: str = "rootfs") -> None:
    explain(step, f"pivot_root {new_root} {put_old}")
    try:
        _call("syscall", _SYS_PIVOT_ROOT[os.uname().machine], new_root.encode(), put_old.encode())
    except OSError as e:
        raise HostError(f"pivot_root {new_root} {put_old}", e.strerror) from None


def close_on_exec_from(first: int) -> None:
    """Mark every file descriptor from `first` up close-on-exec.

    Whatever the caller had open (a shell's `exec 7</`, a leaked directory
    fd) would otherwise be inherited by the container's command, and an fd
    of a host directory is a way out of any root: /proc/self/fd/7/.. walks
    the host's tree (CVE-2024-21626 in runc).  close_range(2) with
    CLOSE_RANGE_CLOEXEC does it in one call (Linux 5.11); rather than
    closing, the flag keeps our own report pipe working until execve."""
    explain("exec", f"close_range({first}, ~0U, CLOSE_RANGE_CLOEXEC)  # no fd of the host's goes in")
    try:
        _call("syscall", 436, first, 0xFFFFFFFF, 4)  # close_range has number 436 on every architecture
    except OSError:  # an older kernel: one fcntl per open descriptor
        import fcntl

        for name in os.listdir("/proc/self/fd"):
            if int(name) >= first:
                try:
                    fcntl.fcntl(int(name), fcntl.F_SETFD, fcntl.FD_CLOEXEC)
                except OSError:
                    continue  # the directory's own fd, closed by now


def unshare(flags: int, shown: str, step: str = "namespaces") -> None:
    explain(step, f"unshare({shown}")
    try:
        _call("unshare", flags)
    except OSError as e:
        raise HostError(f"unshare({shown})", e.strerror) from None


def setns(fd: int, nstype: int, shown: str, step: str = "namespaces") -> None:
    explain(step, f"setns({shown}")
    try:
        _call("setns", fd, nstype)
    except OSError as e:
        raise HostError(f"setns({shown})", e.strerror) from None
