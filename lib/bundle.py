"""What a bundle's config.json must be, checked before anything is made.

An engine writes config.json, but so may anyone who hands a bundle to
`minidocker-runc create`: every value is data from outside.  The OCI
runtime spec gives each field a type, and says that a value which "cannot
be mapped to a relevant kernel interface MUST cause an error": an unknown
capability or rlimit, a namespace type the kernel has not, a device type
mknod(2) cannot make.  A bundle that breaks either rule is refused with one
line naming the field, before any namespace, cgroup or mount exists.
Unknown fields are ignored, as the spec asks, so a newer engine's bundle
still runs.
"""

from __future__ import annotations

import contextlib
import os

from lib import rootfs
from lib.host import MinidockerError

_RLIMITS = {"RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_CPU", "RLIMIT_DATA", "RLIMIT_FSIZE", "RLIMIT_LOCKS",
            "RLIMIT_MEMLOCK", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_RSS",
            "RLIMIT_RTPRIO", "RLIMIT_RTTIME", "RLIMIT_SIGPENDING", "RLIMIT_STACK"}
_NAMESPACES = {"pid", "network", "mount", "ipc", "uts", "user", "cgroup"}
_HOOKS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")

# Each field's type: a Python type, a one-element list for "a list of", a
# dict of fields, or (str,) for "an object of string values".
_MAPPING = {"containerID": int, "hostID": int, "size": int}
_HOOK = {"path": str, "args": [str], "env": [str], "timeout": int}
_SCHEMA: dict = {
    "ociVersion": str,
    "hostname": str,
    "domainname": str,
    "annotations": (str,),
    "root": {"path": str, "readonly": bool},
    "process": {
        "terminal": bool, "cwd": str, "args": [str], "env": [str], "noNewPrivileges": bool, "oomScoreAdj": int,
        "apparmorProfile": str, "selinuxLabel": str, "consoleSize": {"height": int, "width": int},
        "user": {"uid": int, "gid": int, "umask": int, "additionalGids": [int], "username": str},
        "capabilities": {k: [str] for k in ("bounding", "effective", "permitted", "inheritable", "ambient")},
        "rlimits": [{"type": str, "soft": int, "hard": int}],
    },
    "mounts": [{"destination": str, "type": str, "source": str, "options": [str]}],
    "hooks": {k: [_HOOK] for k in _HOOKS},
    "linux": {
        "namespaces": [{"type": str, "path": str}],
        "uidMappings": [_MAPPING], "gidMappings": [_MAPPING],
        "devices": [{"path": str, "type": str, "major": int, "minor": int, "fileMode": int, "uid": int, "gid": int}],
        "cgroupsPath": str, "sysctl": (str,), "maskedPaths": [str], "readonlyPaths": [str],
        "rootfsPropagation": str, "mountLabel": str, "seccomp": {},
        "resources": {
            "memory": {"limit": int, "reservation": int, "swap": int, "kernel": int, "kernelTCP": int,
                       "swappiness": int, "disableOOMKiller": bool, "useHierarchy": bool},
            "cpu": {"shares": int, "quota": int, "period": int, "realtimeRuntime": int, "realtimePeriod": int,
                    "cpus": str, "mems": str, "idle": int},
            "pids": {"limit": int},
            "devices": [{"allow": bool, "type": str, "major": int, "minor": int, "access": str}],
            "unified": (str,),
        },
    },
}


_NAMES = {str: "a string", int: "an integer", bool: "a boolean"}


def _drop_nulls(value: object) -> object:
    """JSON null for an optional field means "not set", as Go's decoder reads it."""
    if isinstance(value, dict):
        for key in [k for k, v in value.items() if v is None]:
            del value[key]
        for v in value.values():
            _drop_nulls(v)
    elif isinstance(value, list):
        for v in value:
            _drop_nulls(v)
    return value


def _check(value: object, kind: object, where: str) -> None:
    if isinstance(kind, dict):
        if not isinstance(value, dict):
            raise MinidockerError(f"{where}: must be an object", 1)
        for key, sub in kind.items():
            if value.get(key) is not None:
                _check(value[key], sub, f"{where}.{key}" if where else key)
    elif isinstance(kind, list):
        if not isinstance(value, list):
            raise MinidockerError(f"{where}: must be a list", 1)
        for i, item in enumerate(value):
            _check(item, kind[0], f"{where}[{i}]")
    elif isinstance(kind, tuple):
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise MinidockerError(f"{where}: must be an object of strings", 1)
        if any("\0" in k + v for k, v in value.items()):
            raise MinidockerError(f"{where}: a NUL byte", 1)
    # JSON's true is no number: bool is a subclass of int in Python.
    elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):  # type: ignore[arg-type]
        raise MinidockerError(f"{where}: must be {_NAMES[kind]}", 1)  # type: ignore[index]
    elif kind is str and "\0" in value:  # type: ignore[operator]
        raise MinidockerError(f"{where}: a NUL byte", 1)  # no C string can hold it
    elif kind is int and not -(1 << 63) <= value < 1 << 64:  # type: ignore[operator]
        raise MinidockerError(f"{where}: out of range", 1)


def _refuse(where: str, problem: str) -> None:
    raise MinidockerError(f"{where}: {problem}", 1)


def _is_ours(path: str) -> bool:
    """Is this mount namespace the runtime's own or the machine's (PID 1's)?
    One that cannot be looked at is taken to be: setns(2) would fail too."""
    try:
        joined = os.stat(path).st_ino
    except FileNotFoundError:
        return False  # setns fails later, with its own message
    except OSError:
        return True
    own = [os.stat("/proc/self/ns/mnt").st_ino]
    with contextlib.suppress(OSError):  # PID 1 may hide its namespaces (PR_SET_DUMPABLE 0)
        own.append(os.stat("/proc/1/ns/mnt").st_ino)
    return joined in own


def _range(value: int | None, low: int, high: int, where: str) -> None:
    if value is not None and not low <= value <= high:
        _refuse(where, f"must be {low} to {high}")


_ID = (0, (1 << 32) - 2)  # a uid or gid; (uid_t)-1 means "unchanged" to setresuid(2)


def check_config(spec: dict, capability_names: list[str], unified_cgroups: bool) -> None:
    """Refuse a config.json that is not what the spec allows (module doc)."""
    try:
        _check_config(spec, capability_names, unified_cgroups)
    except MinidockerError as e:
        raise MinidockerError(f"config.json: {e}", 1) from None


def check_resources(resources: dict, unified_cgroups: bool, source: str) -> None:
    """The same rules for linux.resources given alone (`update --resources`)."""
    try:
        _check(_drop_nulls(resources), _SCHEMA["linux"]["resources"], "linux.resources")
        _check_resources(resources, unified_cgroups)
    except MinidockerError as e:
        raise MinidockerError(f"{source}: {e}", 1) from None


def _check_config(spec: dict, capability_names: list[str], unified_cgroups: bool) -> None:
    _check(_drop_nulls(spec), _SCHEMA, "")
    import re

    # SemVer, as the spec requires, and of the spec's major version 1.
    if not re.fullmatch(r"1\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?", spec.get("ociVersion") or ""):
        _refuse("ociVersion", f"{spec.get('ociVersion')!r} is not a version 1.x.y of the runtime spec")
    if not isinstance(spec.get("root"), dict) or not spec["root"].get("path"):
        _refuse("root.path", "is required")
    process = spec.get("process")
    if not isinstance(process, dict) or not process.get("args"):
        _refuse("process.args", "is required: the command to run")
    if not process.get("cwd", "/").startswith("/"):
        _refuse("process.cwd", "must be an absolute path")
    user = process.get("user") or {}
    for key in ("uid", "gid"):
        _range(user.get(key), *_ID, f"process.user.{key}")
    for i, gid in enumerate(user.get("additionalGids") or []):
        _range(gid, *_ID, f"process.user.additionalGids[{i}]")
    _range(user.get("umask"), 0, 0o777, "process.user.umask")
    _range(process.get("oomScoreAdj"), -1000, 1000, "process.oomScoreAdj")
    for key in ("height", "width"):  # a winsize's unsigned shorts
        _range((process.get("consoleSize") or {}).get(key), 0, 65535, f"process.consoleSize.{key}")
    caps = process.get("capabilities") or {}
    for kind, names in caps.items():
        for name in names:
            if name.removeprefix("CAP_") not in capability_names or not name.startswith("CAP_"):
                _refuse(f"process.capabilities.{kind}", f"unknown capability {name!r}")
    # What capset(2) and PR_CAP_AMBIENT_RAISE would refuse at start, refused now.
    for kind, within in (("effective", ("permitted",)), ("ambient", ("permitted", "inheritable"))):
        for name in caps.get(kind) or []:
            if any(name not in (caps.get(w) or []) for w in within):
                _refuse(f"process.capabilities.{kind}", f"{name} is not also {' and '.join(within)}")
    seen = set()
    for limit in process.get("rlimits") or []:
        if limit.get("type") not in _RLIMITS:
            _refuse("process.rlimits", f"unknown rlimit {limit.get('type')!r}")
        if limit["type"] in seen:
            _refuse("process.rlimits", f"{limit['type']} is given twice")
        for key in ("soft", "hard"):
            _range(limit.get(key), 0, (1 << 64) - 1, f"process.rlimits: {limit['type']} {key}")
        if limit.get("soft", 0) > limit.get("hard", 0):
            _refuse("process.rlimits", f"{limit['type']}: soft limit above the hard one")
        seen.add(limit["type"])
    linux = spec.get("linux") or {}
    for i, n in enumerate(linux.get("namespaces") or []):
        if "type" not in n:
            _refuse(f"linux.namespaces[{i}].type", "is required")
        if n["type"] == "mount" and n.get("path") and _is_ours(n["path"]):
            # pivot_root there would move the root of every process of the
            # runtime's own namespace, or the machine's: the caller's mounts
            # are had by leaving the mount namespace out.
            _refuse(f"linux.namespaces[{i}]", "that mount namespace is the runtime's own or the machine's")
    for key in ("uidMappings", "gidMappings"):
        for i, m in enumerate(linux.get(key) or []):
            for field in ("containerID", "hostID", "size"):
                _range(m.get(field), 0, (1 << 32) - 1, f"linux.{key}[{i}].{field}")
    kinds = [n["type"] for n in linux.get("namespaces") or []]
    for kind in kinds:
        if kind not in _NAMESPACES:
            _refuse("linux.namespaces", f"unknown namespace type {kind!r}")
        if kinds.count(kind) > 1:
            _refuse("linux.namespaces", f"{kind} is given twice")
    for name in ("hostname", "domainname"):
        if spec.get(name) and "uts" not in kinds:
            _refuse(name, "needs a uts namespace of its own: it would rename the runtime's machine")
    # Spec fields this runtime does not apply: refused, never dropped in silence.
    for where, value in (("process.ioPriority", process.get("ioPriority")),
                         ("process.scheduler", process.get("scheduler")),
                         ("process.execCPUAffinity", process.get("execCPUAffinity")),
                         ("linux.personality", linux.get("personality")),
                         ("linux.intelRdt", linux.get("intelRdt")),
                         ("linux.memoryPolicy", linux.get("memoryPolicy")),
                         ("linux.timeOffsets", linux.get("timeOffsets"))):
        if value:
            _refuse(where, "not supported by minidocker-runc")
    for i, dev in enumerate(linux.get("devices") or []):
        if dev.get("type") not in ("c", "u", "b", "p"):
            _refuse(f"linux.devices[{i}].type", "must be c, u, b or p")
        if not os.path.normpath(dev.get("path", "")).startswith("/dev/"):
            _refuse(f"linux.devices[{i}].path", "must be under /dev")
        if dev["type"] != "p" and (dev.get("major") is None or dev.get("minor") is None):
            _refuse(f"linux.devices[{i}]", "a device node needs major and minor")
        for field in ("major", "minor", "uid", "gid"):
            _range(dev.get(field), 0, (1 << 32) - 1, f"linux.devices[{i}].{field}")
        _range(dev.get("fileMode"), 0, 0o7777, f"linux.devices[{i}].fileMode")  # the type comes from `type`
    propagation = linux.get("rootfsPropagation", "rprivate")
    if propagation not in rootfs.PROPAGATION:
        _refuse("linux.rootfsPropagation", f"unknown propagation {propagation!r}")
    if "rootfsPropagation" in linux and "mount" not in kinds:
        _refuse("linux.rootfsPropagation", "needs a mount namespace of its own: it would change the caller's /")
    # Labels for security modules this runtime does not drive: refused, as
    # running without the confinement they ask for would be silent.
    for where, value in (("process.apparmorProfile", process.get("apparmorProfile")),
                         ("process.selinuxLabel", process.get("selinuxLabel")),
                         ("linux.mountLabel", linux.get("mountLabel"))):
        if value:
            _refuse(where, "minidocker-runc does not apply AppArmor or SELinux labels; leave it out")
    for kind, hooks in (spec.get("hooks") or {}).items():
        for i, hook in enumerate(hooks if kind in _HOOKS else []):
            if not hook.get("path", "").startswith("/"):
                _refuse(f"hooks.{kind}[{i}].path", "must be an absolute path")
            _range(hook.get("timeout"), 1, 86400, f"hooks.{kind}[{i}].timeout")
    _check_resources(linux.get("resources") or {}, unified_cgroups)
    for i, mount in enumerate(spec.get("mounts") or []):
        if not mount.get("destination"):
            _refuse(f"mounts[{i}].destination", "is required")


# Resources this runtime does not set: refused, never dropped in silence.
# (kernel memory is gone from Linux 6.x; blkio weights need a scheduler this
# runtime does not configure; net_cls, hugetlb and rdma it does not drive.)
_UNSUPPORTED = {"blockIO": "block I/O limits", "hugepageLimits": "hugetlb limits", "network": "net_cls/net_prio",
                "rdma": "rdma limits"}


_UNIFIED = {"memory", "cpu", "pids", "cpuset", "io"}


def _check_resources(resources: dict, unified_cgroups: bool) -> None:
    for key, what in _UNSUPPORTED.items():
        if resources.get(key):
            _refuse(f"linux.resources.{key}", f"{what} are not supported by minidocker-runc")
    memory, cpu = resources.get("memory") or {}, resources.get("cpu") or {}
    for key in ("kernel", "kernelTCP"):
        if memory.get(key):
            _refuse(f"linux.resources.memory.{key}", "kernel memory limits are gone from Linux since 6.1")
    for key in ("realtimeRuntime", "realtimePeriod"):
        if cpu.get(key):
            _refuse(f"linux.resources.cpu.{key}", "real-time CPU limits are not supported by minidocker-runc")
    if unified_cgroups:
        for key in ("swappiness", "disableOOMKiller"):  # v1 knobs: cgroup v2 has none
            if memory.get(key) not in (None, False):
                _refuse(f"linux.resources.memory.{key}", "this host's cgroup v2 has no such setting")
    elif resources.get("unified"):
        _refuse("linux.resources.unified", "this host's memory, cpu and pids controllers are cgroup v1")
    for name in resources.get("unified") or {}:
        # A controller's file of the container's own cgroup, "memory.high":
        # never a path, and never cgroup.procs, which would move any host
        # process into the container's cgroup, or cgroup.subtree_control.
        controller, dot, rest = name.partition(".")
        if controller not in _UNIFIED or not dot or not rest.replace("_", "").replace(".", "").isalnum() \
                or not rest.isascii():
            _refuse("linux.resources.unified", f"{name!r} is not a file of a cgroup v2 controller")
    swappiness = memory.get("swappiness")
    if swappiness is not None and not 0 <= swappiness <= 100:
        _refuse("linux.resources.memory.swappiness", "must be 0 to 100")
