"""cgroups: how much of the machine a container may use.

A cgroup is a directory in a special filesystem; a process is in it when its
pid is written to the directory's `cgroup.procs`, and the kernel enforces the
limits written to the directory's other files.  There are two versions:

* v2 (Ubuntu 24.04, Debian 12 with systemd): one tree at /sys/fs/cgroup,
  every controller in it, limits named memory.max, cpu.max, pids.max.
* v1 (older hosts, and this project's own CI machines, which are "hybrid"):
  one tree per controller, /sys/fs/cgroup/memory, /sys/fs/cgroup/cpu, ...,
  limits named memory.limit_in_bytes, cpu.cfs_quota_us, pids.max.

`for_container()` looks at what the host has mounted and returns a driver
for it (v1.py or v2.py); both offer the same few methods, so the rest of
minidocker never asks which version it is running on.
"""

from __future__ import annotations

import contextlib
import os
import time

from lib import host

DEFAULT_PARENT = "minidocker"
OCI_PARENT = "minidocker-runc"  # minidocker-runc's, when a bundle names no cgroupsPath


def default_parent() -> str:
    """Where containers' cgroups live; tests move it to keep theirs apart."""
    return os.environ.get("MINIDOCKER_CGROUP_PARENT", DEFAULT_PARENT)


_found: tuple[str | None, dict[str, str]] | None = None


def _mounts() -> tuple[str | None, dict[str, str]]:
    """The cgroup2 mount point that has controllers, and each v1 controller's.

    Read once a process: a `run` asks at create, at start and at exit, and
    the host's cgroup mounts do not change under one command.
    """
    global _found
    if _found is None:
        _found = _read_mounts()
    return _found


def _read_mounts() -> tuple[str | None, dict[str, str]]:
    v2, v1 = None, {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            fstype, point, opts = fields[sep + 1], fields[4], fields[sep + 3].split(",")
            if fstype == "cgroup2":
                with contextlib.suppress(OSError):
                    if "memory" in host.read(os.path.join(point, "cgroup.controllers")).split():
                        v2 = point
            elif fstype == "cgroup":
                for opt in opts:
                    v1.setdefault(opt, point)
    return v2, v1


class Cgroup:
    """One container's cgroup: what both drivers offer."""

    version = 0

    def __init__(self, name: str) -> None:
        self.name = name  # relative: "minidocker/<id>"

    def dirs(self) -> list[str]:
        raise NotImplementedError

    def create(self, limits: dict) -> None:
        raise NotImplementedError

    def update(self, limits: dict) -> None:
        """Change the limits of a cgroup that exists: only those given.
        -1 for Memory, MemorySwap, CpuQuota or PidsLimit means no limit."""
        raise NotImplementedError

    def usage(self) -> dict:
        """What the kernel counts for the cgroup, in runc's shape (the "data"
        of `runc events --stats`): cpu, memory and pids."""
        raise NotImplementedError

    def stats(self) -> dict:
        """The few figures `stats` shows."""
        used = self.usage()
        limit = used["memory"]["usage"]["limit"]
        return {"memory": used["memory"]["usage"]["usage"],
                "limit": min(limit, host_memory()) if limit else host_memory(),
                "cpu_ns": used["cpu"]["usage"]["total"], "pids": used["pids"]["current"]}

    def oom_killed(self) -> bool:
        raise NotImplementedError

    def freeze(self, frozen: bool) -> None:
        raise NotImplementedError

    def frozen(self) -> bool:
        raise NotImplementedError

    def join(self, pid: int) -> None:
        for d in self.dirs():
            host.write(os.path.join(d, "cgroup.procs"), str(pid))

    def pids(self) -> list[int]:
        found: set[int] = set()
        for d in self.dirs():
            with contextlib.suppress(OSError):
                found.update(int(p) for p in host.read(os.path.join(d, "cgroup.procs")).split())
        return sorted(found)

    def remove(self) -> None:
        """rmdir each directory; kill what is left in it first, if anything.

        A cgroup with a process in it cannot be removed (EBUSY).  When the
        container's PID 1 is gone its pid namespace is gone too and the
        kernel has killed the rest, so this loop rarely has to kill.
        """
        for d in self.dirs():
            for attempt in range(50):
                try:
                    host.explain("cgroups", f"rmdir {d}")
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if attempt == 0:
                        self._kill_all(d)
                    time.sleep(0.02)
            self._remove_parent(os.path.dirname(d))

    def _kill_all(self, d: str) -> None:
        with contextlib.suppress(OSError):
            for pid in host.read(os.path.join(d, "cgroup.procs")).split():
                host.explain("cgroups", f"kill -KILL {pid}  # left in {d}")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), 9)

    def _remove_parent(self, parent: str) -> None:
        # Only our own default parents, and only when empty: a --cgroup-parent
        # the user made is theirs, and another container may still be inside.
        if os.path.basename(parent) in (default_parent(), OCI_PARENT):
            with contextlib.suppress(OSError):
                os.rmdir(parent)
                host.explain("cgroups", f"rmdir {parent}")


def join_self(dirs: list[str]) -> None:
    """Move the calling process, single-threaded, into these cgroups.

    Writing a PID to `cgroup.procs` moves a whole thread group, and the
    kernel first takes a global lock whose writer waits for an RCU grace
    period: 10-40 ms here.  A thread that moves only itself, by writing 0 to
    v1's `tasks`, skips that lock, and one thread is all a forked child has.
    v2 moves threads only within a threaded subtree: there, cgroup.procs."""
    for d in dirs:
        tasks = os.path.join(d, "tasks")
        if os.path.exists(tasks):
            host.write(tasks, "0")
        else:
            host.write(os.path.join(d, "cgroup.procs"), str(os.getpid()))


def devices_controlled() -> bool:
    """Can a devices cgroup refuse access to device nodes here?  Only on v1:
    v2 does it with a BPF program instead of a file (security.py)."""
    unified, controllers = _mounts()
    return not unified and "devices" in controllers


def relative(path: str, what: str = "--cgroup-parent") -> str:
    """A cgroup path as a place under each hierarchy's root, or refused.

    Docker's cgroupfs driver reads `--cgroup-parent /foo` as /foo in every
    hierarchy, not as /foo on the host's disk: joined naively to
    /sys/fs/cgroup/memory, an absolute path would replace it, and `..` would
    climb out of the cgroup tree.  Either way the container would run with
    no limits and no devices cgroup, yet with CAP_MKNOD."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or any(p.startswith("cgroup.") or "\n" in p for p in parts):
        raise host.MinidockerError(f"invalid {what} {path!r}: a cgroup path under the hierarchy's root, "
                                   "without '..'")
    return "/".join(parts)


def unified() -> bool:
    """Is this a pure cgroup v2 host, where the memory, cpu and pids controllers are v2's?"""
    return _mounts()[0] is not None


def for_container(name: str) -> Cgroup:
    from lib.cgroups import v1, v2

    name = relative(name, "cgroup path")
    unified, controllers = _mounts()
    if unified:
        return v2.Cgroup2(name, unified)
    if "memory" in controllers:
        return v1.Cgroup1(name, controllers)
    raise host.MinidockerError("no cgroup memory controller is mounted on this host")


def host_memory() -> int:
    """MemTotal in bytes: what `stats` shows as the limit of an unlimited container."""
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1]) * 1024


def make_dirs(path: str) -> None:
    """mkdir -p, explained: each level, so a learner sees the tree grow."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for d in reversed(missing):
        host.explain("cgroups", f"mkdir {d}")
        with contextlib.suppress(FileExistsError):
            os.mkdir(d)
