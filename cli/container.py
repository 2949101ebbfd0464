"""The container verbs: run, create, start, attach, stop, restart, kill,
rm, wait, prune, ps, inspect, logs, exec, stats; and the hidden one conmon
calls when a container has exited."""

import argparse
import os
import re
import sys

from cli.common import ago, each, filter_pairs, formatted, formatted_table, human_duration, size, table
from lib import container, state
from lib.host import MinidockerError


def _run_config(args: argparse.Namespace):
    from lib import spec

    memory, swap = spec.parse_memory(args.memory, args.memory_swap)
    return spec.RunConfig(
        image=args.image, command=args.command,
        entrypoint=None if args.entrypoint is None else ([args.entrypoint] if args.entrypoint else []),
        name=args.name or "", hostname=args.hostname or "", env=args.env, workdir=args.workdir or "",
        tty=args.tty, interactive=args.interactive, auto_remove=getattr(args, "rm", False), restart=args.restart,
        log_opts=args.log_opt,
        memory=memory, memory_swap=swap, nano_cpus=spec.parse_cpus(args.cpus),
        pids_limit=max(args.pids_limit or 0, 0), cpuset_cpus=spec.parse_cpuset(args.cpuset_cpus),
        cgroup_parent=args.cgroup_parent or "", network=args.network, ip=args.ip or "", dns=args.dns,
        publish=args.publish, volumes=args.volume, privileged=args.privileged, cap_add=args.cap_add,
        cap_drop=args.cap_drop, security_opt=args.security_opt, read_only=args.read_only, user=args.user or "",
        pull=args.pull, userns=args.userns or "", init=args.init)


def cmd_run(args: argparse.Namespace) -> int:
    keys = _detach_keys(args)
    cid = container.create(_run_config(args))
    try:
        if args.detach:
            container.start(cid, detach=True)
            print(cid)
            return 0
        return container.start(cid, detach=False, tty=args.tty, interactive=args.interactive, keys=keys)
    except (MinidockerError, KeyboardInterrupt):
        # A run that could not start leaves nothing behind, not even a record.
        container.remove(cid, force=True)
        raise


def _detach_keys(args: argparse.Namespace) -> bytes:
    from lib import monitor

    return monitor.detach_keys(args.detach_keys or monitor.DETACH_KEYS)


def cmd_attach(args: argparse.Namespace) -> int:
    return container.attach(args.container, not args.no_stdin, _detach_keys(args))


def cmd_create(args: argparse.Namespace) -> int:
    print(container.create(_run_config(args)))
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    if args.all:
        return each(container.restartable(_restart_filter(args.filter)), lambda cid: container.start(cid, True),
                     show=True)
    if not args.containers:
        raise MinidockerError('"start" requires at least 1 argument', 1)
    if args.attach:
        rec = container.find(args.containers[0])
        return container.start(rec["Id"], detach=False, tty=rec["Config"]["Tty"], interactive=args.interactive,
                               keys=_detach_keys(args))
    return each(args.containers, lambda ref: container.start(container.find(ref)["Id"], detach=True))


def cmd_restart(args: argparse.Namespace) -> int:
    def restart(ref: str) -> None:
        container.stop(ref, args.time)
        container.start(container.find(ref)["Id"], detach=True)

    return each(args.containers, restart)


def cmd_stop(args: argparse.Namespace) -> int:
    return each(args.containers, lambda ref: container.stop(ref, args.time))


def cmd_kill(args: argparse.Namespace) -> int:
    import signal

    name = args.signal.upper().removeprefix("SIG")
    try:
        sig = int(name) if name.isdigit() else signal.Signals["SIG" + name].value
    except KeyError:
        raise MinidockerError(f"Invalid signal: {args.signal}", 1) from None
    return each(args.containers, lambda ref: container.kill(ref, sig))


def cmd_rm(args: argparse.Namespace) -> int:
    return each(args.containers, lambda ref: container.remove(ref, args.force))


def cmd_wait(args: argparse.Namespace) -> int:
    return each(args.containers, lambda ref: print(container.wait(ref)), show=False)


def cmd_prune(args: argparse.Namespace) -> int:
    print("Deleted Containers:")
    for cid in state.all_ids():
        try:
            if not container.running(container.refresh(container.load(cid))):
                print(container.remove(cid))
        except MinidockerError:
            continue  # removed by someone else meanwhile
    return 0


_PS_FILTERS = ("id", "name", "status", "exited", "ancestor", "network", "volume", "before", "since")
_STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")


def _status(rec: dict) -> str:
    """Docker's state name; records from before 2026-11-30 say "stopped" for "exited"."""
    return rec["State"]["Status"].replace("stopped", "exited")


def _ps_filters(given: list[str]) -> dict[str, list[str]]:
    """-f key=value, as Docker reads them: one key's values are alternatives, keys must all hold."""
    filters: dict[str, list[str]] = {}
    for key, value in filter_pairs(given):
        if key not in _PS_FILTERS:
            raise MinidockerError(f"invalid filter '{key}'", 1)
        if (key == "status" and value not in _STATUSES) or (key == "exited" and not re.fullmatch(r"-?\d+", value)):
            raise MinidockerError(f"invalid filter '{key}={value}'", 1)
        if key == "name":
            try:
                re.compile(value)
            except re.error as e:
                raise MinidockerError(f"error parsing regexp: {e}: `{value}`", 1) from None
        if key in ("before", "since"):  # another container, by name or ID: when it was created
            value = container.load(state.resolve(value))["Created"]
        filters.setdefault(key, []).append(value)
    return filters


def _ps_match(rec: dict, key: str, value: str) -> bool:
    st = rec["State"]
    if key == "id":
        return rec["Id"].startswith(value)
    if key == "name":
        return re.search(value, rec["Name"].lstrip("/")) is not None
    if key == "status":
        return _status(rec) == value
    if key == "exited":
        return not st["Running"] and st["FinishedAt"] != state.ZERO_TIME and st["ExitCode"] == int(value)
    if key == "ancestor":
        image = rec["Config"]["Image"]
        return value in (image, image.removesuffix(":latest"), f"{image}:latest") or \
            (len(value) >= 4 and rec["Image"].removeprefix("sha256:").startswith(value.removeprefix("sha256:")))
    if key == "network":
        return value in (rec["HostConfig"]["NetworkMode"], *rec["NetworkSettings"]["Networks"])
    if key == "volume":
        return any(value in (m.get("Name"), m.get("Source"), m["Destination"]) for m in rec["Mounts"])
    return rec["Created"] < value if key == "before" else rec["Created"] > value  # value: the other's Created


def cmd_ps(args: argparse.Namespace) -> int:
    filters = _ps_filters(args.filter)
    records = []
    for cid in state.all_ids():
        try:
            records.append(container.refresh(container.load(cid)))
        except (MinidockerError, ValueError, OSError):
            continue  # half-created or being removed this very moment
    records.sort(key=lambda r: r["Created"], reverse=True)
    last = 1 if args.latest else args.last
    # As Docker: a status or exit-code filter, or -n, looks at all containers.
    if not (args.all or last > 0 or {"status", "exited"} & filters.keys()):
        records = [r for r in records if container.running(r)]
    records = [r for r in records if all(any(_ps_match(r, k, v) for v in vs) for k, vs in filters.items())]
    if last > 0:
        records = records[:last]
    if args.quiet:
        for r in records:
            print(r["Id"] if args.no_trunc else r["Id"][:12])
        return 0
    rows, fields = [], []
    for r in records:
        st = r["State"]
        command = " ".join([r["Path"], *r["Args"]])
        if not args.no_trunc and len(command) > 20:
            command = command[:19] + "…"
        if st.get("Restarting"):
            status = f"Restarting ({st['ExitCode']}) {ago(st['FinishedAt'])}"
        elif st["Running"]:
            status = "Up " + human_duration(st["StartedAt"])
        elif st["FinishedAt"] != state.ZERO_TIME:
            status = f"Exited ({st['ExitCode']}) {ago(st['FinishedAt'])}"
        else:
            status = "Created"
        ports = ", ".join(f"{b['HostIp']}:{b['HostPort']}->{p}" for p, binds in r["NetworkSettings"]["Ports"].items()
                          for b in binds or [])
        rows.append([r["Id"] if args.no_trunc else r["Id"][:12], r["Config"]["Image"], f'"{command}"',
                     ago(r["Created"]), status, ports, r["Name"].lstrip("/")])
        fields.append({**dict(zip(("ID", "Image", "Command", "RunningFor", "Status", "Ports", "Names"), rows[-1],
                                  strict=True)),
                       "CreatedAt": r["Created"], "State": _status(r),
                       "Networks": ",".join(r["NetworkSettings"]["Networks"]) or r["HostConfig"]["NetworkMode"],
                       "Mounts": ",".join(m.get("Name") or m["Source"] for m in r["Mounts"]), "Labels": ""})
    if args.format:
        formatted_table(args.format, fields, _PS_HEADERS)
        return 0
    table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"], rows)
    return 0


_PS_HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
               "RunningFor": "CREATED", "Ports": "PORTS", "Status": "STATUS", "Names": "NAMES", "State": "STATE",
               "Networks": "NETWORKS", "Mounts": "MOUNTS", "Labels": "LABELS"}


def _inspect_one(ref: str, kind: str | None) -> dict | None:
    """The record `inspect` shows for a reference: a container's, else an
    image's, a network's or a volume's (Docker's order), or of --type's kind."""
    from cli import image, network, volume

    finders = {"container": lambda: _container_record(ref), "image": lambda: image.record(ref),
               "network": lambda: network.record(ref), "volume": lambda: volume.record(ref)}
    for name, find in finders.items():
        if kind in (None, name):
            found = find()
            if found is not None:
                return found
    return None


def _container_record(ref: str) -> dict | None:
    try:
        rec = container.find(ref)
    except state.NoSuchContainer:
        return None
    rec.pop("Minidocker")
    return rec


def cmd_inspect(args: argparse.Namespace) -> int:
    import json

    found, failed = [], 0
    for ref in args.containers:
        try:
            rec = _inspect_one(ref, args.type)
        except MinidockerError as e:
            print(f"minidocker: {e}", file=sys.stderr)
            failed = 1
            continue
        if rec is None:
            print(f"Error: No such {args.type or 'object'}: {ref}", file=sys.stderr)
            failed = 1
            continue
        found.append(rec)
    if args.format:
        for rec in found:
            print(formatted(args.format, rec))
    else:
        print(json.dumps(found, indent=4))
    return failed


def cmd_logs(args: argparse.Namespace) -> int:
    from lib import logs

    rec = container.find(args.container)
    tail = None if args.tail in (None, "all") else int(args.tail)
    since = logs.parse_moment(args.since) if args.since else 0.0
    until = logs.parse_moment(args.until) if args.until else 0.0

    def still_running() -> bool:
        try:
            return container.running(container.refresh(container.load(rec["Id"])))
        except MinidockerError:
            return False

    for record in logs.read(rec["LogPath"], args.follow, still_running, tail, since, until):
        out = sys.stdout if record["stream"] == "stdout" else sys.stderr
        out.write((record["time"] + " " if args.timestamps else "") + record["log"])
        out.flush()
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    return container.exec_(args.container, args.command, args.env, args.workdir or "", args.interactive, args.tty)


def cmd_container_exited(args: argparse.Namespace) -> int:
    container.exited(args.container)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    import time

    from lib import cgroups

    if args.containers:
        records = [container.find(ref) for ref in args.containers]
    else:
        records = [r for r in (container.refresh(container.load(c)) for c in state.all_ids()) if container.running(r)]
    groups = [cgroups.for_container(r["Minidocker"]["Cgroup"]) for r in records]
    before, then = [g.stats() for g in groups], time.monotonic()
    while True:
        time.sleep(0.5 if args.no_stream else 1.0)
        after, now = [g.stats() for g in groups], time.monotonic()
        rows = []
        for rec, old, new in zip(records, before, after, strict=True):
            # CPU % as Docker counts it: 100% is one CPU busy for the whole interval.
            cpu = (new["cpu_ns"] - old["cpu_ns"]) / ((now - then) * 1e9) * 100
            rows.append([rec["Id"][:12], rec["Name"].lstrip("/"), f"{cpu:.2f}%",
                         f"{size(new['memory'], binary=True)} / {size(new['limit'], binary=True)}",
                         f"{new['memory'] / new['limit'] * 100:.2f}%", str(new["pids"])])
        if not args.no_stream:
            print("\033[2J\033[H", end="")  # clear the screen, as docker stats does
        table(["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS"], rows)
        if args.no_stream:
            return 0
        sys.stdout.flush()
        before, then = after, now


def _container_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--help", action="help", help="show this help")
    p.add_argument("-i", "--interactive", action="store_true", help="keep STDIN open")
    p.add_argument("-t", "--tty", action="store_true", help="a pty of the container's own (its output logged)")
    p.add_argument("--log-opt", action="append", default=[],
                   help="max-size=10m: the log's bound, after which it starts again; max-file=N: files kept "
                        "(N > 1 needs conmon 2.2); default: /etc/minidocker/daemon.json")
    p.add_argument("--restart", default="no",
                   help="restart when it exits: no (default), on-failure[:N], always, unless-stopped")
    p.add_argument("--name", help="assign a name to the container")
    p.add_argument("-h", "--hostname", help="container host name (default: the short ID)")
    p.add_argument("-e", "--env", action="append", default=[], help="set an environment variable KEY=VAL")
    p.add_argument("-w", "--workdir", help="working directory inside the container")
    p.add_argument("--entrypoint", help="overwrite the image's ENTRYPOINT")
    p.add_argument("-m", "--memory", help="memory limit: 100m, 1g; a bare number is MB (the seed's --memory=100)")
    p.add_argument("--memory-swap", help="memory + swap limit; -1 for unlimited swap (default: no swap)")
    p.add_argument("--cpus", "--cpu", dest="cpus", help="number of CPUs: 0.5 is half of one")
    p.add_argument("--pids-limit", type=int, help="maximum number of processes")
    p.add_argument("--cpuset-cpus", help="CPUs in which to allow execution (0-3, 0,1)")
    p.add_argument("--cgroup-parent", help="parent cgroup (default: minidocker)")
    p.add_argument("--network", "--net", dest="network", default="bridge",
                   help="bridge (default), none, host, container:NAME|ID, or a network's name")
    p.add_argument("--ip", help="a fixed IPv4 address on a user-defined network")
    p.add_argument("--dns", action="append", default=[], help="a DNS server for /etc/resolv.conf")
    p.add_argument("-p", "--publish", action="append", default=[],
                   help="publish a port: [IP:]HOSTPORT:CONTAINERPORT[/tcp|udp]")
    p.add_argument("-v", "--volume", action="append", default=[],
                   help="HOSTPATH:CONTAINERPATH[:ro] or VOLUME:CONTAINERPATH[:ro]")
    p.add_argument("--privileged", action="store_true", help="lift all confinement: every capability, "
                   "no seccomp, no masked paths, every device")
    p.add_argument("--cap-add", action="append", default=[], help="add a capability (ALL for all)")
    p.add_argument("--cap-drop", action="append", default=[], help="drop a capability (ALL for all)")
    p.add_argument("--security-opt", action="append", default=[],
                   help="seccomp=unconfined|PROFILE.json, no-new-privileges")
    p.add_argument("--read-only", action="store_true", help="mount the container's root read-only")
    p.add_argument("--init", action="store_true",
                   help="run tini as PID 1: it reaps orphaned zombies and passes signals to the command")
    p.add_argument("-u", "--user", help="run as uid[:gid]")
    p.add_argument("--userns", choices=["host", "private"],
                   help="private: a user namespace in which root is uid 100000 on the host")
    p.add_argument("--pull", choices=["missing", "always", "never"],
                   default=os.environ.get("MINIDOCKER_PULL", "missing"),
                   help="pull the image from its registry: missing (default), always, never")
    p.add_argument("image")
    p.add_argument("command", nargs=argparse.REMAINDER)


def _run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-d", "--detach", action="store_true", help="run in the background, print the ID")
    p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    _detach_keys_flag(p)
    _container_flags(p)


def _restart_filter(filters: list[str]) -> set[str]:
    policies = set()
    for f in filters:
        key, _, value = f.partition("=")
        if key != "restart-policy" or value not in ("always", "unless-stopped", "on-failure", "no"):
            raise MinidockerError(f"invalid filter '{f}': restart-policy=always|unless-stopped|on-failure|no")
        policies.add(value)
    return policies or {"always", "unless-stopped", "on-failure", "no"}


def _start_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--attach", action="store_true", help="attach output and wait for the exit")
    p.add_argument("-i", "--interactive", action="store_true", help="attach STDIN")
    _detach_keys_flag(p)
    p.add_argument("--all", action="store_true",
                   help="every container that is not running (with --filter restart-policy=...: "
                        "what a boot does, docs/phases/2b-lifecycle.md)")
    p.add_argument("--filter", action="append", default=[], help="restart-policy=always|unless-stopped|...")
    p.add_argument("containers", nargs="*")


def _detach_keys_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detach-keys", help="the keys that detach from a container with a tty (default: ctrl-p,ctrl-q)")


def _attach_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-stdin", action="store_true", help="do not attach STDIN")
    _detach_keys_flag(p)
    p.add_argument("container")


def _stop_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-t", "--time", type=int, default=container.DEFAULT_STOP_TIMEOUT,
                   help="seconds to wait before SIGKILL")
    p.add_argument("containers", nargs="+")


def _kill_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-s", "--signal", default="KILL", help="signal name or number (default KILL)")
    p.add_argument("containers", nargs="+")


def _rm_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--force", action="store_true", help="kill a running container first")
    p.add_argument("containers", nargs="+")


def _containers(p: argparse.ArgumentParser) -> None:
    p.add_argument("containers", nargs="+")


def _inspect_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--format", help="a Go template: '{{.State.Pid}}', '{{json .Config}}', "
                   "'{{range .Mounts}}{{.Source}} {{end}}'")
    p.add_argument("--type", choices=["container", "image", "network", "volume"], help="look only for this kind")
    p.add_argument("containers", nargs="+", metavar="NAME|ID")


def _prune_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--force", action="store_true", help="do not ask (minidocker never asks)")


def _ps_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--all", action="store_true", help="show all containers, not only running ones")
    p.add_argument("-q", "--quiet", action="store_true", help="only IDs")
    p.add_argument("--no-trunc", action="store_true", help="full IDs and commands")
    p.add_argument("-f", "--filter", action="append", default=[],
                   help=f"key=value, repeatable: {', '.join(_PS_FILTERS)}")
    p.add_argument("-n", "--last", type=int, default=-1, help="the last N containers created, in any state")
    p.add_argument("-l", "--latest", action="store_true", help="the last container created, in any state")
    p.add_argument("--format", help="a Go template per container, 'table ...' for columns: "
                   "'table {{.ID}}\\t{{.Names}}\\t{{.Status}}'")


def _logs_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the container exits")
    p.add_argument("-t", "--timestamps", action="store_true", help="prefix each line with its time")
    p.add_argument("-n", "--tail", help="lines from the end (default: all)")
    p.add_argument("--since", help="a time (RFC 3339) or a duration ago (42m)")
    p.add_argument("--until", help="a time (RFC 3339) or a duration ago (42m)")
    p.add_argument("container")


def _one_container(p: argparse.ArgumentParser) -> None:
    p.add_argument("container")


def _exec_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--interactive", action="store_true", help="keep STDIN open")
    p.add_argument("-t", "--tty", action="store_true", help="a pty of the container's own")
    p.add_argument("-e", "--env", action="append", default=[], help="set an environment variable")
    p.add_argument("-w", "--workdir", help="working directory inside the container")
    p.add_argument("container")
    p.add_argument("command", nargs=argparse.REMAINDER)


def _stats_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-stream", action="store_true", help="print once instead of refreshing")
    p.add_argument("containers", nargs="*", help="default: all running containers")



# verb: (function, flags), for cli.parse
VERBS = {
    "run": (cmd_run, _run_flags),
    "create": (cmd_create, _container_flags),
    "start": (cmd_start, _start_flags),
    "attach": (cmd_attach, _attach_flags),
    "stop": (cmd_stop, _stop_flags),
    "restart": (cmd_restart, _stop_flags),
    "kill": (cmd_kill, _kill_flags),
    "rm": (cmd_rm, _rm_flags),
    "wait": (cmd_wait, _containers),
    "prune": (cmd_prune, _prune_flags),
    "ps": (cmd_ps, _ps_flags),
    "inspect": (cmd_inspect, _inspect_flags),
    "logs": (cmd_logs, _logs_flags),
    "exec": (cmd_exec, _exec_flags),
    "stats": (cmd_stats, _stats_flags),
    "container-exited": (cmd_container_exited, _one_container),
}
