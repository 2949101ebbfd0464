"""minidocker-runc: the runtime layer behind runc's command line, over an OCI bundle.

Docker does not start containers itself: it writes an OCI *bundle* (a root
filesystem and a config.json) and hands it to a low-level runtime through a
small contract that containerd, CRI-O and podman all speak:

    minidocker-runc create --bundle DIR [--pid-file F] [--console-socket S] ID
    minidocker-runc start ID           # the process runs only now
    minidocker-runc state ID           # JSON: ociVersion, id, status, pid, bundle
    minidocker-runc kill ID [SIGNAL]   # --all for every process of the container
    minidocker-runc delete [--force] ID
    minidocker-runc exec [--process P.json] [--detach] [--pid-file F] ID [CMD...]
    minidocker-runc pause|resume ID, features, --version
    minidocker-runc update --resources FILE|- ID          # new limits, while it runs
    minidocker-runc ps [--format json] ID                 # its processes
    minidocker-runc events [--stats] [--interval 5s] ID   # cgroup figures, OOM kills

`create` sets everything up and returns, leaving the init blocked on a FIFO
(`exec.fifo`) in the container's state directory; `start` opens the FIFO and
the init execs the command: runc's own pattern.  The same runtime layer
(runtime.py, init.py) runs `minidocker.py run`: there is one way to start a
container.  State lives in files under --root; no daemon is needed to answer
`state`, and a container whose PID 1 is gone is "stopped".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time

from lib import cgroups, hooks, host, runtime, security, state
from lib.bundle import check_config, check_resources
from lib.cmdline import Formatter
from lib.host import MinidockerError

VERSION = "minidocker-runc version 0.1.0\nspec: 1.0.2"
OCI_VERSION = "1.0.2"


def _state_dir(root: str, cid: str) -> str:
    """The container's directory under --root; an ID is a name, never a path (as runc checks)."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", cid) or cid in (".", ".."):
        raise MinidockerError(f"invalid container id {cid!r}: letters, digits and _.+- only", 1)
    return os.path.join(root, cid)


def _load(root: str, cid: str) -> dict:
    try:
        return state.read_json(os.path.join(_state_dir(root, cid), "state.json"))
    except FileNotFoundError:
        raise MinidockerError(f"container does not exist: {cid}", 1) from None


def _status(root: str, st: dict) -> str:
    if not state.alive(st["pid"], st["pidStart"]):
        return "stopped"
    if os.path.exists(os.path.join(_state_dir(root, st["id"]), "exec.fifo")):
        return "created"
    with contextlib.suppress(OSError, NotImplementedError):
        if cgroups.for_container(st["cgroupsPath"]).frozen():
            return "paused"
    return "running"


def _limits(resources: dict) -> dict:
    """linux.resources, in the names the cgroup drivers take (Docker's)."""
    memory, cpu, pids = resources.get("memory") or {}, resources.get("cpu") or {}, resources.get("pids") or {}
    rules = []
    for d in resources.get("devices") or []:
        major = "*" if d.get("major") in (None, -1) else d["major"]
        minor = "*" if d.get("minor") in (None, -1) else d["minor"]
        rules.append(("allow" if d.get("allow") else "deny",
                      f"{d.get('type') or 'a'} {major}:{minor} {d.get('access') or 'rwm'}"))
    # As runc: after the spec's rules, the devices every container may use
    # (null, zero, tty, ptmx, /dev/pts/*...): engines rely on the runtime for
    # them.  Not the blanket mknod rules: those are `run`'s Docker default.
    rules += [("allow", rule) for rule in security.DEVICES_ALLOWED if not rule.endswith("*:* m")]
    # -1 is "no limit", as the spec has it; 0 or absent, "leave as it is".
    return {"Memory": memory.get("limit") or 0, "MemorySwap": memory.get("swap") or 0,
            "CpuQuota": cpu.get("quota") or 0, "CpuPeriod": cpu.get("period") or 0,
            "CpuShares": cpu.get("shares") or 0, "CpusetMems": cpu.get("mems") or "",
            "MemoryReservation": max(memory.get("reservation") or 0, 0),
            "MemorySwappiness": memory.get("swappiness"), "OomKillDisable": bool(memory.get("disableOOMKiller")),
            "Unified": resources.get("unified") or {},
            "CpusetCpus": cpu.get("cpus") or "", "PidsLimit": pids.get("limit") or 0,
            "DeviceRules": rules}


def _ours(bundle: str, cid: str) -> bool:
    """Is this bundle minidocker's own record of this very container?  Its
    directory under the state root, which only root can reach (state.py),
    and which no engine's bundle can be."""
    try:
        return os.path.samefile(bundle, state.container_dir(cid))
    except OSError:
        return False


def create(root: str, cid: str, bundle: str, pid_file: str, console_socket: str, preserve_fds: int = 0) -> None:
    sdir = _state_dir(root, cid)
    if os.path.exists(sdir):
        raise MinidockerError(f"container with id exists: {cid}", 1)
    try:
        with open(os.path.join(bundle, "config.json")) as f:
            spec = json.load(f)
    except (OSError, ValueError) as e:
        raise MinidockerError(f"cannot read {bundle}/config.json: {e}", 1) from None
    check_config(spec, security.CAPS, cgroups.unified())
    linux = spec.setdefault("linux", {})
    linux.setdefault("namespaces", [])  # none listed: every namespace is the runtime's (the spec's rule)
    if any(n["type"] == "user" and n.get("path") for n in linux.get("namespaces", [])):
        raise MinidockerError("joining an existing user namespace is not supported by minidocker-runc", 1)
    spec["root"]["path"] = os.path.join(bundle, spec["root"]["path"])
    fifo = os.path.join(sdir, "exec.fifo")
    # Our own annotations steer the init (a console socket to connect to, a
    # FIFO): a bundle's own are data, never instructions to us.
    annotations = spec.get("annotations") or {}
    own = {k: v for k, v in annotations.items() if not k.startswith("org.minidocker.")}
    spec["annotations"] = {**own, "org.minidocker.exec-fifo": fifo}
    if _ours(bundle, cid):  # minidocker's own container, started through conmon: its overlay root
        spec["annotations"].update({k: v for k, v in annotations.items() if k.startswith("org.minidocker.overlay.")})
    spec["annotations"]["org.minidocker.preserve-fds"] = str(preserve_fds)
    if any((spec.get("hooks") or {}).get(kind) for kind in hooks.BEFORE_PIVOT):
        spec["annotations"]["org.minidocker.hooks"] = "1"
    if (spec.get("hooks") or {}).get("startContainer"):  # the init runs these, and tells them this
        spec["annotations"]["org.minidocker.state"] = json.dumps(
            {"ociVersion": OCI_VERSION, "id": cid, "status": "created", "bundle": os.path.abspath(bundle),
             "annotations": own})
    if spec.get("process", {}).get("terminal") and not console_socket:
        raise MinidockerError("a terminal needs --console-socket", 1)
    cgroup = cgroups.for_container(linux.get("cgroupsPath") or f"{cgroups.OCI_PARENT}/{cid}")
    if spec.get("process", {}).get("terminal"):
        spec["annotations"]["org.minidocker.console-socket"] = console_socket
    # Without a mount namespace of its own, the container's mounts are made
    # in the caller's (as under runc): they are taken down with it.
    caller_mounts = "" if any(n["type"] == "mount" for n in linux["namespaces"]) else spec["root"]["path"]
    init = None
    os.makedirs(sdir, mode=0o711)
    try:
        os.mkfifo(fifo, 0o600)
        root_outside = next((m["hostID"] for m in linux.get("uidMappings") or [] if m["containerID"] == 0), 0)
        group_outside = next((m["hostID"] for m in linux.get("gidMappings") or [] if m["containerID"] == 0), 0)
        os.chown(fifo, root_outside, group_outside)  # the init reopens it as root of its user namespace
        init = runtime.Init(spec, runtime.INHERIT, runtime.INHERIT)
        cgroup.create(_limits(linux.get("resources") or {}))
        cgroup.join(init.pid)
        init.wait_ready()
        st = {"ociVersion": OCI_VERSION, "id": cid, "pid": init.pid, "pidStart": state.process_start_time(init.pid),
              "bundle": os.path.abspath(bundle), "created": state.now(), "cgroupsPath": cgroup.name,
              "annotations": own, "owner": "", "hooks": spec.get("hooks") or {}, "callerMounts": caller_mounts}
        if "org.minidocker.hooks" in spec["annotations"]:
            init.wait_for_hooks()
            # prestart is createRuntime's older name, from when it ran at `start`: its
            # hooks are told "created", as runtime-tools' hooks_stdin checks.
            hooks.run(st["hooks"], "prestart", st, "created")
            hooks.run(st["hooks"], "createRuntime", st, "creating")
            hooks.run(st["hooks"], "createContainer", st, "creating", inside=init.pid)
            init.hooks_done()
        if any(n["type"] == "user" for n in linux.get("namespaces", [])):
            init.map_users(linux.get("uidMappings") or [], linux.get("gidMappings") or [])
        init.wait_waiting()
        state.write_json(os.path.join(sdir, "state.json"), st)
        if pid_file:
            with open(pid_file, "w") as f:
                f.write(str(init.pid))
    except BaseException:
        if init is not None:
            init.abort()
        _unmount_caller_mounts(caller_mounts)
        cgroup.remove()
        state.remove_tree(sdir)
        raise


def _unmount_caller_mounts(rootfs: str) -> None:
    """Detach the rootfs bind (and all mounted below it) that a container
    without a mount namespace left in the caller's; elsewhere there is none."""
    if rootfs:
        with contextlib.suppress(MinidockerError):
            host.umount(rootfs, host.MNT_DETACH)


def start(root: str, cid: str) -> None:
    st = _load(root, cid)
    fifo = os.path.join(_state_dir(root, cid), "exec.fifo")
    if _status(root, st) != "created":
        raise MinidockerError(f"cannot start a container that has {_status(root, st)}", 1)
    import select

    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    pidfd = -1
    try:
        with contextlib.suppress(ProcessLookupError):
            pidfd = os.pidfd_open(st["pid"])
        # The init opens its end for writing and writes a byte; a FIFO that
        # never had a writer does not report end-of-file, so select(2) wakes
        # for that byte, or for the pidfd when the init dies first.
        # The byte is looked for first: a command as quick as `true` may have
        # run and exited before we look at all.
        while True:
            readable = select.select([fd] + ([pidfd] if pidfd >= 0 else []), [], [], 5)[0]
            with contextlib.suppress(BlockingIOError):
                if fd in readable and os.read(fd, 1):
                    break
            if pidfd < 0 or pidfd in readable or not state.alive(st["pid"], st["pidStart"]):
                raise MinidockerError("the container's init died before it could start", 1)
    finally:
        os.close(fd)
        if pidfd >= 0:
            os.close(pidfd)
    os.unlink(fifo)
    hooks.run(st.get("hooks") or {}, "poststart", st, "running", fatal=False)


def show_state(root: str, cid: str) -> dict:
    st = _load(root, cid)
    status = _status(root, st)
    return {"ociVersion": st["ociVersion"], "id": cid, "status": status,
            "pid": st["pid"] if status != "stopped" else 0, "bundle": st["bundle"], "rootfs": st["bundle"],
            "created": st["created"], "annotations": st.get("annotations", {}), "owner": ""}


def _signal_number(name: str) -> int:
    name = name.upper().removeprefix("SIG")
    try:
        return int(name) if name.isdigit() else signal.Signals["SIG" + name].value
    except KeyError:
        raise MinidockerError(f"unknown signal {name}", 1) from None


def kill(root: str, cid: str, sig: str, every: bool) -> None:
    st = _load(root, cid)
    number = _signal_number(sig)
    if _status(root, st) == "stopped":
        raise MinidockerError("container not running", 1)
    pids = cgroups.for_container(st["cgroupsPath"]).pids() if every else [st["pid"]]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, number)


def delete(root: str, cid: str, force: bool) -> None:
    try:
        st = _load(root, cid)
    except MinidockerError:
        if not force:
            raise
        # As runc: --force deletes what is there, and nothing is no error.  An
        # engine cleaning up after a failed create calls it that way.
        with contextlib.suppress(FileNotFoundError):
            state.remove_tree(_state_dir(root, cid))
        return
    status = _status(root, st)
    if status in ("running", "paused") and not force:
        raise MinidockerError(f"cannot delete container {cid} that is not stopped: {status}", 1)
    cgroup = cgroups.for_container(st["cgroupsPath"])
    if status != "stopped":  # a created one waits on its FIFO: it goes too
        if status == "paused":
            cgroup.freeze(False)
        with contextlib.suppress(ProcessLookupError):
            os.kill(st["pid"], signal.SIGKILL)
        for _ in range(200):
            if not state.alive(st["pid"], st["pidStart"]):
                break
            time.sleep(0.01)
    _unmount_caller_mounts(st.get("callerMounts", ""))
    cgroup.remove()
    state.remove_tree(_state_dir(root, cid))
    hooks.run(st.get("hooks") or {}, "poststop", st, "stopped", fatal=False)


def exec_process(root: str, cid: str, args: argparse.Namespace) -> int:
    st = _load(root, cid)
    if _status(root, st) not in ("running", "created"):
        raise MinidockerError("cannot exec in a stopped container", 1)
    with open(os.path.join(st["bundle"], "config.json")) as f:
        spec = json.load(f)
    if args.process:
        with open(args.process) as f:
            process = json.load(f)
    else:
        process = {**spec["process"], "args": args.command, "terminal": args.tty}
        if args.cwd:
            process["cwd"] = args.cwd
        process["env"] = process.get("env", []) + args.env
    if process.get("terminal") and not args.console_socket:
        raise MinidockerError("a terminal needs --console-socket", 1)
    dirs = cgroups.for_container(st["cgroupsPath"]).dirs()
    result = runtime.exec_in(st["pid"], process, spec.get("linux", {}).get("seccomp"), dirs, runtime.INHERIT,
                             runtime.INHERIT,
                             detach=args.detach, console_socket=args.console_socket if process.get("terminal") else "",
                             preserve_fds=args.preserve_fds)
    if args.detach:
        if args.pid_file:
            with open(args.pid_file, "w") as f:
                f.write(str(result))
        return 0
    return result


def update(root: str, cid: str, resources: dict) -> None:
    """Change a live container's limits: containerd's shim hands over
    linux.resources (`update --resources -`), as Kubernetes resizes a pod.
    Devices are set at create only, as under runc: the rules a v1 cgroup
    would have to be emptied of to be rewritten cover running processes."""
    st = _load(root, cid)
    if _status(root, st) == "stopped":
        raise MinidockerError(f"container {cid} is not running", 1)
    check_resources(resources, cgroups.unified(), "--resources")
    cgroups.for_container(st["cgroupsPath"]).update(_limits(resources))


def ps(root: str, cid: str, fmt: str, ps_args: list[str]) -> str:
    """The container's processes: their host PIDs as JSON (what containerd's
    `ctr task ps` reads), or the host's `ps` table cut to them."""
    st = _load(root, cid)
    pids = cgroups.for_container(st["cgroupsPath"]).pids()
    if fmt == "json":
        return json.dumps(pids)
    lines = host.run(["ps", *(ps_args or ["-ef"])], "ps").splitlines()
    if not lines or "PID" not in lines[0].split():
        raise MinidockerError("ps: no PID column in its output", 1)
    column = lines[0].split().index("PID")
    return "\n".join([lines[0]] + [line for line in lines[1:]
                                    if len(line.split()) > column and line.split()[column].isdigit()
                                    and int(line.split()[column]) in pids])


def events(root: str, cid: str, once: bool, interval: float) -> None:
    """runc's event stream: the cgroup's figures every interval, and "oom"
    when the kernel's OOM killer has struck in it; one figure with --stats.
    One JSON object a line, as containerd's go-runc reads them."""
    st = _load(root, cid)
    if _status(root, st) == "stopped":
        raise MinidockerError(f"container with id {cid} is not running", 1)
    cgroup = cgroups.for_container(st["cgroupsPath"])

    def emit(event: dict) -> None:
        print(json.dumps({**event, "id": cid}), flush=True)

    if once:
        emit({"type": "stats", "data": cgroup.usage()})
        return
    oom_seen, next_stats = False, 0.0
    with contextlib.suppress(BrokenPipeError):  # the reader has gone: so do we
        while _status(root, st) != "stopped":
            if time.monotonic() >= next_stats:
                emit({"type": "stats", "data": cgroup.usage()})
                next_stats = time.monotonic() + interval
            if not oom_seen and cgroup.oom_killed():
                emit({"type": "oom"})
                oom_seen = True
            time.sleep(min(interval, 0.5))


def features() -> dict:
    return {"ociVersionMin": "1.0.0", "ociVersionMax": OCI_VERSION,
            "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
            "mountOptions": ["ro", "rw", "nosuid", "nodev", "noexec", "bind", "rbind", "private", "rprivate",
                             "slave", "rslave", "shared", "rshared", "strictatime", "relatime", "noatime"],
            "linux": {"namespaces": ["pid", "mount", "uts", "ipc", "network", "cgroup"],
                      "capabilities": ["CAP_" + c for c in security.CAPS],
                      "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False},
                      "seccomp": {"enabled": True, "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
                                                              "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
                                                              "SCMP_ACT_TRAP", "SCMP_ACT_TRACE", "SCMP_ACT_LOG"],
                                  "operators": ["SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ",
                                                "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"]}}}


def _create_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", "-b", default=".")
    p.add_argument("--pid-file")
    p.add_argument("--console-socket")
    for flag in ("--no-pivot", "--no-new-keyring"):
        p.add_argument(flag, action="store_true")
    p.add_argument("--preserve-fds", type=int, default=0)
    p.add_argument("id")


def _id_only(p: argparse.ArgumentParser) -> None:
    p.add_argument("id")


def _kill_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--all", "-a", action="store_true")
    p.add_argument("id")
    p.add_argument("signal", nargs="?", default="SIGTERM")


def _delete_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", "-f", action="store_true")
    p.add_argument("id")


def _exec_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--process", "-p")
    p.add_argument("--pid-file")
    p.add_argument("--detach", "-d", action="store_true")
    p.add_argument("--tty", "-t", action="store_true")
    p.add_argument("--console-socket")
    p.add_argument("--cwd")
    p.add_argument("--env", "-e", action="append", default=[])
    p.add_argument("--preserve-fds", type=int, default=0)
    p.add_argument("id")
    p.add_argument("command", nargs=argparse.REMAINDER)


def _update_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resources", "-r", help="linux.resources as JSON, from this file or - for stdin")
    for flag in ("--memory", "--memory-swap", "--memory-reservation"):
        p.add_argument(flag, help="bytes, or with a k, m or g suffix; -1 for no limit")
    for flag in ("--cpu-period", "--cpu-quota", "--cpu-share", "--pids-limit"):
        p.add_argument(flag, type=int)
    p.add_argument("--cpuset-cpus")
    p.add_argument("--cpuset-mems")
    p.add_argument("id")


def _ps_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", "-f", choices=["table", "json"], default="table")
    p.add_argument("id")
    p.add_argument("ps_args", nargs=argparse.REMAINDER, help="for ps(1), instead of -ef")


def _events_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stats", action="store_true", help="one figure, then exit")
    p.add_argument("--interval", default="5s", help="between figures (Go's form: 5s, 500ms, 1m)")
    p.add_argument("id")


# Each verb: its help, and what adds its arguments.
VERBS = {"create": ("set a container up from a bundle; it waits for start", _create_flags),
         "start": ("run the created container's command", _id_only),
         "state": ("the container's state, as JSON", _id_only),
         "pause": ("freeze every process of the container", _id_only),
         "resume": ("thaw them", _id_only),
         "kill": ("signal the container's init (--all: every process)", _kill_flags),
         "delete": ("remove a stopped container (--force: any)", _delete_flags),
         "exec": ("run another process in the container", _exec_flags),
         "update": ("change a running container's limits", _update_flags),
         "ps": ("the container's processes", _ps_flags),
         "events": ("cgroup figures and OOM kills, as JSON lines", _events_flags),
         "features": ("what this runtime supports, as JSON", lambda p: None)}
_GLOBAL_VALUES = {"--root", "--log", "--log-format"}  # the global flags that take a value


def parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The command line; with `verb`, that verb's arguments only.  Every
    add_argument costs argparse a formatter and a translation lookup: conmon
    runs `create` for each detached container, and waits for it."""
    top = argparse.ArgumentParser(prog="minidocker-runc", description=__doc__.splitlines()[0],
                                  formatter_class=Formatter)
    top.add_argument("--root", default="/run/minidocker-runc", help="where container state lives")
    top.add_argument("--log", help="write errors here too")
    top.add_argument("--log-format", choices=["text", "json"], default="text")
    top.add_argument("--debug", action="store_true")
    top.add_argument("--systemd-cgroup", action="store_true", help="accepted; cgroups are managed as cgroupfs")
    top.add_argument("--version", "-v", action="version", version=VERSION)
    verbs = top.add_subparsers(dest="verb", required=True)
    for name, (text, flags) in VERBS.items():
        if verb in (None, name):
            flags(verbs.add_parser(name, help=text, formatter_class=Formatter))
    return top


def _verb_in(argv: list[str]) -> str | None:
    """The verb, found before parsing: the first word not a global flag or its value."""
    words = iter(argv)
    for word in words:
        if word in _GLOBAL_VALUES:
            next(words, None)
        elif not word.startswith("-"):
            return word if word in VERBS else None
    return None


def _resources(args: argparse.Namespace) -> dict:
    """`update`'s linux.resources: from --resources, or built from the flags as runc does."""
    if args.resources:
        try:
            if args.resources == "-":
                resources = json.load(sys.stdin)
            else:
                with open(args.resources) as f:
                    resources = json.load(f)
        except (OSError, ValueError) as e:
            raise MinidockerError(f"--resources: {e}", 1) from None
        if not isinstance(resources, dict):
            raise MinidockerError("--resources: must be a JSON object", 1)
        return resources
    from lib.spec import parse_bytes

    def size(value: str | None, flag: str) -> int | None:
        if value is None:
            return None
        return -1 if value == "-1" else parse_bytes(value + "b" if value.isdigit() else value, flag)

    memory = {"limit": size(args.memory, "--memory"), "swap": size(args.memory_swap, "--memory-swap"),
              "reservation": size(args.memory_reservation, "--memory-reservation")}
    cpu = {"period": args.cpu_period, "quota": args.cpu_quota, "shares": args.cpu_share,
           "cpus": args.cpuset_cpus, "mems": args.cpuset_mems}
    return {"memory": memory, "cpu": cpu, "pids": {"limit": args.pids_limit}}


def _seconds(duration: str) -> float:
    import re

    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    if not match or float(match[1]) <= 0:
        raise MinidockerError(f"invalid --interval {duration!r}: a duration such as 5s or 500ms", 1)
    return float(match[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match[2]]


def main(argv: list[str]) -> int:
    args = parser(_verb_in(argv)).parse_args(argv)
    try:
        if args.verb == "create":
            create(args.root, args.id, os.path.abspath(args.bundle), args.pid_file or "", args.console_socket or "",
                   args.preserve_fds)
        elif args.verb == "start":
            start(args.root, args.id)
        elif args.verb == "state":
            print(json.dumps(show_state(args.root, args.id), indent=2))
        elif args.verb == "kill":
            kill(args.root, args.id, args.signal, args.all)
        elif args.verb == "delete":
            delete(args.root, args.id, args.force)
        elif args.verb == "exec":
            return exec_process(args.root, args.id, args)
        elif args.verb in ("pause", "resume"):
            st = _load(args.root, args.id)
            cgroups.for_container(st["cgroupsPath"]).freeze(args.verb == "pause")
        elif args.verb == "update":
            update(args.root, args.id, _resources(args))
        elif args.verb == "ps":
            print(ps(args.root, args.id, args.format, args.ps_args))
        elif args.verb == "events":
            events(args.root, args.id, args.stats, _seconds(args.interval))
        elif args.verb == "features":
            print(json.dumps(features(), indent=2))
        return 0
    except MinidockerError as e:
        _log(args, str(e), e.code)
        return e.code if e.code != host.EXIT_ENGINE else 1


def _log(args: argparse.Namespace, message: str, code: int) -> None:
    print(f"minidocker-runc: {message}", file=sys.stderr)
    if args.log:
        with contextlib.suppress(OSError), open(args.log, "a") as f:
            if args.log_format == "json":  # runc's fields, and the exit code Docker would give
                f.write(json.dumps({"level": "error", "msg": message, "time": state.now(), "code": code}) + "\n")
            else:
                f.write(f"{state.now()} error: {message}\n")
