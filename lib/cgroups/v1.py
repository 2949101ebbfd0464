"""The cgroup v1 driver: one hierarchy per controller.

On v1 each controller is its own filesystem, so one container has several
directories: memory/minidocker/<id>, cpu/minidocker/<id>, pids/..., and a
process must be written into each.  Where two controllers share a mount
(`cpu,cpuacct` on many distributions) they share the directory.
"""

from __future__ import annotations

import contextlib
import os

from lib import host
from lib.cgroups import Cgroup, host_memory, make_dirs
from lib.security import DEVICES_ALLOWED

# What every container is put in; cpuset only when it is asked for, since a
# new v1 cpuset starts with no CPUs and must be filled before anyone joins.
_ALWAYS = ("memory", "cpu", "cpuacct", "pids", "freezer")


class Cgroup1(Cgroup):
    version = 1

    def __init__(self, name: str, mounts: dict[str, str]) -> None:
        super().__init__(name)
        self.mounts = mounts

    def _path(self, controller: str, file: str = "") -> str:
        return os.path.join(self.mounts[controller], self.name, *([file] if file else []))

    def dirs(self) -> list[str]:
        controllers = [c for c in (*_ALWAYS, "cpuset", "devices") if c in self.mounts]
        found = dict.fromkeys(self._path(c) for c in controllers)  # shared mounts once
        return [d for d in found if os.path.isdir(d)]

    def create(self, limits: dict) -> None:
        for c in _ALWAYS:
            if c in self.mounts:
                make_dirs(self._path(c))
        mem = limits.get("Memory", 0)
        if mem:
            host.write(self._path("memory", "memory.limit_in_bytes"), str(mem))
            # memsw is memory + swap.  Set equal to the limit, swap adds
            # nothing: the seed's rule, without which an "OOM" just swaps.
            swap = limits.get("MemorySwap", 0)
            memsw = self._path("memory", "memory.memsw.limit_in_bytes")
            if os.path.exists(memsw):
                host.write(memsw, str(mem if swap == 0 else swap))
            elif swap == 0:
                host.write(self._path("memory", "memory.swappiness"), "0")
        if limits.get("MemoryReservation"):
            host.write(self._path("memory", "memory.soft_limit_in_bytes"), str(limits["MemoryReservation"]))
        if limits.get("MemorySwappiness") is not None:
            host.write(self._path("memory", "memory.swappiness"), str(limits["MemorySwappiness"]))
        if limits.get("OomKillDisable"):
            host.write(self._path("memory", "memory.oom_control"), "1")
        if limits.get("CpuQuota"):
            host.write(self._path("cpu", "cpu.cfs_period_us"), str(limits["CpuPeriod"]))
            host.write(self._path("cpu", "cpu.cfs_quota_us"), str(limits["CpuQuota"]))
        if limits.get("CpuShares"):
            host.write(self._path("cpu", "cpu.shares"), str(limits["CpuShares"]))
        if limits.get("PidsLimit") and "pids" in self.mounts:
            host.write(self._path("pids", "pids.max"), str(limits["PidsLimit"]))
        if (limits.get("CpusetCpus") or limits.get("CpusetMems")) and "cpuset" in self.mounts:
            self._create_cpuset(limits.get("CpusetCpus", ""), limits.get("CpusetMems", ""))
        if "devices" in self.mounts:
            make_dirs(self._path("devices"))
            if not limits.get("Privileged"):
                # Deny every device, then allow the harmless ones and mknod (m)
                # of anything: a node made for the host's disk cannot be opened.
                host.write(self._path("devices", "devices.deny"), "a")
                for rule in limits.get("DeviceRules") or [("allow", r) for r in DEVICES_ALLOWED]:
                    host.write(self._path("devices", f"devices.{rule[0]}"), rule[1])

    def _create_cpuset(self, cpus: str, mems: str) -> None:
        top = self.mounts["cpuset"]
        path = top
        for part in self.name.split("/"):
            parent, path = path, os.path.join(path, part)
            if not os.path.isdir(path):
                make_dirs(path)
                for f in ("cpuset.cpus", "cpuset.mems"):  # inherit, or nobody can join
                    host.write(os.path.join(path, f), host.read(os.path.join(parent, f)).strip())
        for file, value in (("cpuset.cpus", cpus), ("cpuset.mems", mems)):
            if value:
                host.write(os.path.join(path, file), value)

    def stats(self) -> dict:
        def number(controller: str, file: str) -> int:
            with contextlib.suppress(OSError, ValueError, KeyError):
                return int(host.read(self._path(controller, file)))
            return 0

        limit = number("memory", "memory.limit_in_bytes")
        return {"memory": number("memory", "memory.usage_in_bytes"),
                "limit": min(limit, host_memory()) if limit else host_memory(),
                "cpu_ns": number("cpuacct", "cpuacct.usage"),
                "pids": number("pids", "pids.current")}

    def oom_killed(self) -> bool:
        with contextlib.suppress(OSError):
            for line in host.read(self._path("memory", "memory.oom_control")).splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value) > 0
        return False

    def freeze(self, frozen: bool) -> None:
        """pause/resume: the freezer stops every task of the cgroup at once."""
        host.write(self._path("freezer", "freezer.state"), "FROZEN" if frozen else "THAWED")

    def frozen(self) -> bool:
        with contextlib.suppress(OSError, KeyError):
            return host.read(self._path("freezer", "freezer.state")).strip() == "FROZEN"
        return False
