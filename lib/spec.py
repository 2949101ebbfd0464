"""What to run: the one description of a container.

The CLI fills a `RunConfig` from flags once.  `container.create` turns it,
with the image's config, into two documents:

* `container.json`, what `inspect` shows (Docker's field names), and
* `config.json`, an OCI runtime spec: process, root, hostname, mounts,
  namespaces, cgroup limits.  The runtime layer (runtime.py and the init)
  executes that and nothing else, which is what lets the same layer serve
  an OCI bundle handed over by podman or containerd.

This module also reads Docker's units: `100m`, `1g`, `--cpus 1.5`.
"""

from __future__ import annotations

import os
import re

from lib.host import MinidockerError

MIN_MEMORY = 6 * 1024 * 1024  # Docker's minimum: below it a container cannot even start
CPU_PERIOD = 100_000  # µs: the CFS period Docker uses; --cpus 0.5 is 50000 of it
USERNS_BASE, USERNS_SIZE = 100_000, 65_536  # as /etc/subuid's first range: root inside is 100000 outside


class RunConfig:
    """Everything `run` was asked for.  A plain class, not a dataclass:
    `dataclasses` imports `inspect`, 9 ms of every container start here."""

    image: str = ""
    command: list[str] = []  # noqa: RUF012 -- defaults only read; __init__ sets new lists
    entrypoint: list[str] | None = None
    name: str = ""
    hostname: str = ""
    env: list[str] = []  # noqa: RUF012
    workdir: str = ""
    tty: bool = False
    interactive: bool = False
    auto_remove: bool = False
    memory: int = 0
    memory_swap: int = 0  # 0: no swap beyond the limit; -1: unlimited
    nano_cpus: int = 0
    pids_limit: int = 0
    cpuset_cpus: str = ""
    cgroup_parent: str = ""
    network: str = "bridge"
    ip: str = ""
    dns: list[str] = []  # noqa: RUF012
    publish: list[str] = []  # noqa: RUF012
    volumes: list[str] = []  # noqa: RUF012
    privileged: bool = False
    cap_add: list[str] = []  # noqa: RUF012
    cap_drop: list[str] = []  # noqa: RUF012
    security_opt: list[str] = []  # noqa: RUF012
    read_only: bool = False
    user: str = ""
    pull: str = "missing"
    userns: str = ""  # "" or "host": the host's; "private": root inside is USERNS_BASE outside
    init: bool = False  # --init: tini as PID 1, the command its child
    restart: str = "no"  # --restart: no, on-failure[:N], always, unless-stopped
    log_opts: list[str] = []  # noqa: RUF012 -- --log-opt max-size=10m, max-file=3

    def __init__(self, **fields: object) -> None:
        for key, value in fields.items():
            if not hasattr(RunConfig, key):
                raise TypeError(f"RunConfig has no field {key}")
            setattr(self, key, value)


def parse_bytes(value: str, flag: str) -> int:
    """`100m` = 104857600 (binary units); a bare number is MB, as in the seed."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([bkmg]?)b?", value.strip().lower())
    if not match:
        raise MinidockerError(f'invalid argument "{value}" for "{flag}" flag: invalid size: \'{value}\'')
    number, unit = float(match[1]), match[2]
    scale = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "": 1 << 20}[unit]
    return int(number * scale)


def parse_memory(memory: str | None, swap: str | None) -> tuple[int, int]:
    mem = parse_bytes(memory, "--memory") if memory else 0
    if mem and mem < MIN_MEMORY:
        raise MinidockerError("Minimum memory limit allowed is 6MB")
    if swap is None or swap == "0":
        return mem, 0
    if not mem:
        raise MinidockerError("You should always set the Memory limit when using Memoryswap limit, see usage")
    if swap == "-1":
        return mem, -1
    total = parse_bytes(swap, "--memory-swap")
    if total < mem:
        raise MinidockerError("Minimum memoryswap limit should be larger than memory limit, see usage")
    return mem, total


def parse_cpus(value: str | None) -> int:
    """--cpus as nano-CPUs, Docker's own unit: 0.5 -> 500000000."""
    if value is None:
        return 0
    try:
        cpus = float(value)
    except ValueError:
        raise MinidockerError(f'invalid argument "{value}" for "--cpus" flag: failed to parse {value} as a '
                              "rational number") from None
    ncpu = os.cpu_count() or 1
    if not 0.01 <= cpus <= ncpu:
        raise MinidockerError(f"Range of CPUs is from 0.01 to {ncpu:.2f}, as there are only {ncpu} CPUs available")
    return round(cpus * 1e9)


def parse_cpuset(value: str | None) -> str:
    if not value:
        return ""
    ncpu = os.cpu_count() or 1
    if not re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", value) or \
            any(int(n) >= ncpu for n in re.findall(r"\d+", value)):
        raise MinidockerError(f"invalid value for --cpuset-cpus: {value} (this host has CPUs 0-{ncpu - 1})")
    return value


def restart_policy(value: str, auto_remove: bool) -> dict:
    """--restart as HostConfig.RestartPolicy, checked as Docker checks it."""
    name, sep, count = value.partition(":")
    if name not in ("no", "on-failure", "always", "unless-stopped"):
        raise MinidockerError(f"invalid restart policy: unknown policy '{name}'; use one of "
                              "'no', 'always', 'on-failure', or 'unless-stopped'")
    if sep and name != "on-failure":
        raise MinidockerError("invalid restart policy: maximum retry count can only be used with 'on-failure'")
    if sep and not re.fullmatch(r"-?[0-9]+", count):  # not isdigit(): it takes "²", which int() refuses
        raise MinidockerError("invalid restart policy format: maximum retry count must be an integer")
    if count and int(count) < 0:
        raise MinidockerError("invalid restart policy: maximum retry count cannot be negative")
    if name != "no" and auto_remove:
        raise MinidockerError("Conflicting options: --restart and --rm")
    return {"Name": name, "MaximumRetryCount": int(count or 0)}


def limits(cfg: RunConfig) -> dict:
    """HostConfig's resource fields, in Docker's names and units."""
    quota = cfg.nano_cpus * CPU_PERIOD // 10**9 if cfg.nano_cpus else 0
    return {"Memory": cfg.memory, "MemorySwap": cfg.memory_swap, "NanoCpus": cfg.nano_cpus,
            "CpuPeriod": CPU_PERIOD if quota else 0, "CpuQuota": quota,
            "PidsLimit": cfg.pids_limit, "CpusetCpus": cfg.cpuset_cpus}
