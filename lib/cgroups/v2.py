"""The cgroup v2 driver: one unified hierarchy, one directory a container.

A controller works in a cgroup only when its parent lists it in
`cgroup.subtree_control`, so the parent `minidocker` enables memory, cpu,
pids and cpuset for its children ("+memory +cpu ...").  v2 also forbids
processes in a cgroup that hands controllers down, so the parent stays empty
and every container gets its own leaf.
"""

from __future__ import annotations

import contextlib
import os

from lib import host
from lib.cgroups import Cgroup, make_dirs

_CONTROLLERS = ("memory", "cpu", "pids", "cpuset")
_UNLIMITED = (1 << 64) - 1  # "max", as runc reports it


class Cgroup2(Cgroup):
    version = 2

    def __init__(self, name: str, mount: str) -> None:
        super().__init__(name)
        self.mount = mount

    def _path(self, file: str = "") -> str:
        return os.path.join(self.mount, self.name, *([file] if file else []))

    def dirs(self) -> list[str]:
        return [self._path()] if os.path.isdir(self._path()) else []

    def _make_path(self) -> None:
        """Create each level, enabling the controllers in the one above it."""
        level = self.mount
        for part in self.name.split("/"):
            available = host.read(os.path.join(level, "cgroup.controllers")).split()
            have = host.read(os.path.join(level, "cgroup.subtree_control")).split()
            wanted = [c for c in _CONTROLLERS if c in available and c not in have]
            if wanted:
                host.write(os.path.join(level, "cgroup.subtree_control"), " ".join("+" + c for c in wanted))
            level = os.path.join(level, part)
            make_dirs(level)

    def create(self, limits: dict) -> None:
        self._make_path()
        # Memory without a swap figure means no swap, as on v1 (v1.py).
        self.update({**limits, "MemorySwap": limits.get("MemorySwap") or limits.get("Memory", 0)})

    def update(self, limits: dict) -> None:
        mem, swap = limits.get("Memory", 0), limits.get("MemorySwap", 0)
        if mem:
            host.write(self._path("memory.max"), "max" if mem < 0 else str(mem))
        if swap:
            # memory.swap.max is swap alone (v1's memsw, and Docker's
            # --memory-swap, are memory + swap).
            if not mem:
                current = host.read(self._path("memory.max")).strip()
                mem = -1 if current == "max" else int(current)
            host.write(self._path("memory.swap.max"), "max" if swap < 0 or mem < 0 else str(max(swap - mem, 0)))
        quota, period = limits.get("CpuQuota", 0), limits.get("CpuPeriod", 0)
        if quota or period:  # cpu.max is both, "QUOTA PERIOD": what is not given stays
            old_quota, old_period = host.read(self._path("cpu.max")).split()
            host.write(self._path("cpu.max"),
                       f"{('max' if quota < 0 else quota) if quota else old_quota} {period or old_period}")
        if limits.get("CpuShares"):
            # v1's shares (2..262144, 1024 the default) on v2's weight scale
            # (1..10000, 100 the default), by runc's formula, so an engine's
            # --cpu-shares means the same on either.
            shares = min(max(limits["CpuShares"], 2), 262144)  # v1 clamps to this range too
            host.write(self._path("cpu.weight"), str(1 + (shares - 2) * 9999 // 262142))
        if limits.get("PidsLimit"):
            host.write(self._path("pids.max"), str(limits["PidsLimit"]) if limits["PidsLimit"] > 0 else "max")
        if limits.get("MemoryReservation"):
            host.write(self._path("memory.low"), str(limits["MemoryReservation"]))
        if limits.get("CpusetCpus"):
            host.write(self._path("cpuset.cpus"), limits["CpusetCpus"])
        if limits.get("CpusetMems"):
            host.write(self._path("cpuset.mems"), limits["CpusetMems"])
        # An engine's raw v2 settings (linux.resources.unified), file by file:
        # names are checked (bundle.py) to be files of this cgroup, never paths.
        for file, value in (limits.get("Unified") or {}).items():
            host.write(self._path(file), value)

    def _keyed(self, file: str) -> dict[str, int]:
        with contextlib.suppress(OSError, ValueError):
            return {k: int(v) for k, v in (line.split() for line in host.read(self._path(file)).splitlines())}
        return {}

    def usage(self) -> dict:
        def number(file: str) -> int:
            with contextlib.suppress(OSError, ValueError):
                return int(host.read(self._path(file)))
            return _UNLIMITED if file.endswith(".max") and os.path.exists(self._path(file)) else 0

        memory, swap, events = number("memory.current"), number("memory.swap.current"), self._keyed("memory.events")
        raw, cpu = self._keyed("memory.stat"), self._keyed("cpu.stat")
        pids_limit = number("pids.max")
        # As runc reports v2: swap as memory + swap, the figure v1's memsw gives.
        return {"cpu": {"usage": {"total": cpu.get("usage_usec", 0) * 1000, "percpu": [],
                                  "kernel": cpu.get("system_usec", 0) * 1000, "user": cpu.get("user_usec", 0) * 1000},
                        "throttling": {"periods": cpu.get("nr_periods", 0),
                                       "throttledPeriods": cpu.get("nr_throttled", 0),
                                       "throttledTime": cpu.get("throttled_usec", 0) * 1000}},
                "memory": {"usage": {"limit": number("memory.max"), "usage": memory, "max": number("memory.peak"),
                                     "failcnt": events.get("max", 0)},
                           "swap": {"limit": min(number("memory.max") + number("memory.swap.max"), _UNLIMITED),
                                    "usage": memory + swap, "max": 0, "failcnt": 0},
                           "cache": raw.get("file", 0), "raw": raw},
                "pids": {"current": number("pids.current"), "limit": 0 if pids_limit == _UNLIMITED else pids_limit}}

    def oom_killed(self) -> bool:
        return self._keyed("memory.events").get("oom_kill", 0) > 0

    def _kill_all(self, d: str) -> None:
        kill = os.path.join(d, "cgroup.kill")  # Linux 5.14: one write kills all
        if os.path.exists(kill):
            with contextlib.suppress(host.HostError):
                host.write(kill, "1")
                return
        super()._kill_all(d)

    def freeze(self, frozen: bool) -> None:
        """pause/resume: cgroup.freeze stops every task of the cgroup at once."""
        host.write(self._path("cgroup.freeze"), "1" if frozen else "0")

    def frozen(self) -> bool:
        return self._keyed("cgroup.events").get("frozen") == 1
