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
from lib.cgroups import Cgroup, make_dirs
from lib.security import DEVICES_ALLOWED

# What every container is put in; cpuset only when it is asked for, since a
# new v1 cpuset starts with no CPUs and must be filled before anyone joins.
_ALWAYS = ("memory", "cpu", "cpuacct", "pids", "freezer")
# "No limit" as v1 shows it (PAGE_COUNTER_MAX pages) or larger.
_UNLIMITED = 1 << 62


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
        # Memory without a swap figure means no swap: the seed's rule,
        # without which an "OOM" just swaps.
        self.update({**limits, "MemorySwap": limits.get("MemorySwap") or limits.get("Memory", 0)})
        if "devices" in self.mounts:
            make_dirs(self._path("devices"))
            if not limits.get("Privileged"):
                # Deny every device, then allow the harmless ones and mknod (m)
                # of anything: a node made for the host's disk cannot be opened.
                host.write(self._path("devices", "devices.deny"), "a")
                for rule in limits.get("DeviceRules") or [("allow", r) for r in DEVICES_ALLOWED]:
                    host.write(self._path("devices", f"devices.{rule[0]}"), rule[1])

    def update(self, limits: dict) -> None:
        if limits.get("Memory") or limits.get("MemorySwap"):
            self._set_memory(limits.get("Memory", 0), limits.get("MemorySwap", 0))
        if limits.get("MemoryReservation"):
            host.write(self._path("memory", "memory.soft_limit_in_bytes"), str(limits["MemoryReservation"]))
        if limits.get("MemorySwappiness") is not None:
            host.write(self._path("memory", "memory.swappiness"), str(limits["MemorySwappiness"]))
        if limits.get("OomKillDisable"):
            host.write(self._path("memory", "memory.oom_control"), "1")
        if limits.get("CpuPeriod"):
            host.write(self._path("cpu", "cpu.cfs_period_us"), str(limits["CpuPeriod"]))
        if limits.get("CpuQuota"):
            host.write(self._path("cpu", "cpu.cfs_quota_us"), str(max(limits["CpuQuota"], -1)))
        if limits.get("CpuShares"):
            host.write(self._path("cpu", "cpu.shares"), str(limits["CpuShares"]))
        if limits.get("PidsLimit") and "pids" in self.mounts:
            host.write(self._path("pids", "pids.max"), str(limits["PidsLimit"]) if limits["PidsLimit"] > 0 else "max")
        if (limits.get("CpusetCpus") or limits.get("CpusetMems")) and "cpuset" in self.mounts:
            running = [] if os.path.isdir(self._path("cpuset")) else self.pids()  # a cpuset made only now
            self._create_cpuset(limits.get("CpusetCpus", ""), limits.get("CpusetMems", ""))
            for pid in running:  # `update` of a running container: its processes go in too
                host.write(self._path("cpuset", "cgroup.procs"), str(pid))

    def _set_memory(self, memory: int, swap: int) -> None:
        """memory (-1: unlimited), and swap as memory + swap (Docker's
        --memory-swap; equal to memory: none; 0: as it was)."""
        limit = self._path("memory", "memory.limit_in_bytes")
        memsw = self._path("memory", "memory.memsw.limit_in_bytes")
        if not os.path.exists(memsw):  # swap accounting off (the kernel's default): no swap is all we can ask
            if memory:
                host.write(limit, str(max(memory, -1)))
            if memory and swap == memory:
                host.write(self._path("memory", "memory.swappiness"), "0")
            return
        old_memory, old_total = int(host.read(limit)), int(host.read(memsw))
        new_memory = old_memory if not memory else _UNLIMITED if memory < 0 else memory
        if swap:  # with no memory limit, no swap limit either (as on v2)
            new_total = _UNLIMITED if swap < 0 or new_memory >= _UNLIMITED else swap
        else:  # as it was: none stays none, and memory + swap grows with memory
            new_total = new_memory if old_total == old_memory else max(old_total, new_memory)
        # The kernel keeps memory <= memory + swap at every write (EINVAL):
        # raise the total first when the old memory would not fit under it.
        order = [(memsw, new_total), (limit, new_memory)] if new_total >= old_memory else \
            [(limit, new_memory), (memsw, new_total)]
        for path, value in order:
            host.write(path, "-1" if value >= _UNLIMITED else str(value))

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

    def usage(self) -> dict:
        def number(controller: str, file: str) -> int:
            with contextlib.suppress(OSError, ValueError, KeyError):
                return int(host.read(self._path(controller, file)))
            return 0  # not there, or "max"

        def keyed(controller: str, file: str) -> dict[str, int]:
            with contextlib.suppress(OSError, KeyError, ValueError):
                return {k: int(v) for k, v in (line.split() for line in host.read(self._path(controller, file))
                                               .splitlines())}
            return {}

        def entry(prefix: str) -> dict:
            return {key: number("memory", f"{prefix}.{file}") for key, file in
                    (("limit", "limit_in_bytes"), ("usage", "usage_in_bytes"), ("max", "max_usage_in_bytes"),
                     ("failcnt", "failcnt"))}

        raw, ticks = keyed("memory", "memory.stat"), keyed("cpuacct", "cpuacct.stat")
        throttle = keyed("cpu", "cpu.stat")
        percpu: list[int] = []
        with contextlib.suppress(OSError, KeyError, ValueError):
            percpu = [int(n) for n in host.read(self._path("cpuacct", "cpuacct.usage_percpu")).split()]
        tick_ns = 1_000_000_000 // os.sysconf("SC_CLK_TCK")  # cpuacct.stat counts in USER_HZ ticks
        return {"cpu": {"usage": {"total": number("cpuacct", "cpuacct.usage"), "percpu": percpu,
                                  "kernel": ticks.get("system", 0) * tick_ns, "user": ticks.get("user", 0) * tick_ns},
                        "throttling": {"periods": throttle.get("nr_periods", 0),
                                       "throttledPeriods": throttle.get("nr_throttled", 0),
                                       "throttledTime": throttle.get("throttled_time", 0)}},
                "memory": {"usage": entry("memory"), "swap": entry("memory.memsw"),
                           "cache": raw.get("total_cache", raw.get("cache", 0)), "raw": raw},
                "pids": {"current": number("pids", "pids.current"), "limit": number("pids", "pids.max")}}

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
