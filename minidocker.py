#!/usr/bin/python3 -IS
"""minidocker: a Docker-like container runtime built from the kernel's own parts.

    sudo ./minidocker.py run busybox echo hi
    sudo ./minidocker.py --explain run busybox true     # every host step, as it happens

This file is the command line only: one short function per verb, each
calling into lib/, where every module is named for the kernel feature it
teaches (namespaces, rootfs, cgroups, network, ...).
"""

import _signal  # the C module: `signal` would import enum (4 ms)

# Ctrl-C before main() has nothing to undo: die of it quietly (exit 130 to
# the shell) rather than print a KeyboardInterrupt traceback from an import.
# First of all, and so no `from __future__` here: that is an import too.
_signal.signal(_signal.SIGINT, _signal.SIG_DFL)

import time  # noqa: E402

STARTED = time.monotonic()  # --explain counts milliseconds from here

import argparse  # noqa: E402 -- after STARTED, so that imports count too
import os  # noqa: E402
import sys  # noqa: E402

# -I (isolated mode, in the #! line) keeps the caller's PYTHONPATH and user
# site-packages out of a program that runs as root; it also leaves this
# directory off sys.path, so put it back for `lib`.  -S skips `site` (7 ms
# a start here): minidocker needs nothing beyond Python's standard library.
sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

if __name__ == "__main__" and os.path.basename(sys.argv[0]) == "minidocker-runc":
    # The OCI runtime face, as busybox dispatches: before importing the
    # engine's modules (images, networks...), which a runtime never uses and
    # conmon would wait 15 ms a start for.
    from lib import oci

    sys.exit(oci.main(sys.argv[1:]))

from lib import container, state  # noqa: E402
from lib.host import MinidockerError  # noqa: E402


# ---------------------------------------------------------------- helpers
def _table(headers: list[str], rows: list[list[str]]) -> None:
    """Docker's plain columns: each as wide as its widest cell, three spaces
    apart, as Go's tabwriter prints them for `docker ps`.

    Not tabulate: its per-cell type inference costs 0.15 ms a cell here,
    150 ms of `ps -a` at 1000 containers (docs/performance.md).
    """
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    print("\n".join("   ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
                    for line in [headers, *rows]))


def _ago(stamp: str) -> str:
    return _human_duration(stamp) + " ago"


def _human_duration(stamp: str) -> str:
    """Docker's HumanDuration: "Less than a second", "About a minute", "5 hours"."""
    import time

    seconds = max(0, int(time.time() - state.parse_time(stamp)))
    if seconds < 1:
        return "Less than a second"
    if seconds == 1:
        return "1 second"
    if seconds < 60:
        return f"{seconds} seconds"
    minutes = seconds // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def _size(n: float, binary: bool = False) -> str:
    """Docker's HumanSize (decimal units, 3 digits: images) or BytesSize
    (binary units, 4 digits: stats, 100MiB)."""
    base, digits = (1024, 4) if binary else (1000, 3)
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB") if binary else ("B", "kB", "MB", "GB", "TB", "PB")
    for unit in units[:-1]:
        if n < base:
            return f"{n:.{digits}g}{unit}"
        n /= base
    return f"{n:.{digits}g}{units[-1]}"


def _each(refs: list[str], action, show: bool = True) -> int:
    """Apply to several containers, going on past failures: exit 1 at the end."""
    failed = 0
    for ref in refs:
        try:
            action(ref)
            if show:
                print(ref)
        except MinidockerError as e:
            print(f"minidocker: {e}", file=sys.stderr)
            failed = 1
    return failed


# ------------------------------------------------------------------ verbs
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
        return _each(container.restartable(_restart_filter(args.filter)), lambda cid: container.start(cid, True),
                     show=True)
    if not args.containers:
        raise MinidockerError('"start" requires at least 1 argument', 1)
    if args.attach:
        rec = container.find(args.containers[0])
        return container.start(rec["Id"], detach=False, tty=rec["Config"]["Tty"], interactive=args.interactive,
                               keys=_detach_keys(args))
    return _each(args.containers, lambda ref: container.start(container.find(ref)["Id"], detach=True))


def cmd_restart(args: argparse.Namespace) -> int:
    def restart(ref: str) -> None:
        container.stop(ref, args.time)
        container.start(container.find(ref)["Id"], detach=True)

    return _each(args.containers, restart)


def cmd_stop(args: argparse.Namespace) -> int:
    return _each(args.containers, lambda ref: container.stop(ref, args.time))


def cmd_kill(args: argparse.Namespace) -> int:
    import signal

    name = args.signal.upper().removeprefix("SIG")
    try:
        sig = int(name) if name.isdigit() else signal.Signals["SIG" + name].value
    except KeyError:
        raise MinidockerError(f"Invalid signal: {args.signal}", 1) from None
    return _each(args.containers, lambda ref: container.kill(ref, sig))


def cmd_rm(args: argparse.Namespace) -> int:
    return _each(args.containers, lambda ref: container.remove(ref, args.force))


def cmd_wait(args: argparse.Namespace) -> int:
    return _each(args.containers, lambda ref: print(container.wait(ref)), show=False)


def cmd_prune(args: argparse.Namespace) -> int:
    print("Deleted Containers:")
    for cid in state.all_ids():
        try:
            if not container.running(container.refresh(container.load(cid))):
                print(container.remove(cid))
        except MinidockerError:
            continue  # removed by someone else meanwhile
    return 0


def cmd_ps(args: argparse.Namespace) -> int:
    records = []
    for cid in state.all_ids():
        try:
            records.append(container.refresh(container.load(cid)))
        except (MinidockerError, ValueError, OSError):
            continue  # half-created or being removed this very moment
    records.sort(key=lambda r: r["Created"], reverse=True)
    if not args.all:
        records = [r for r in records if container.running(r)]
    if args.quiet:
        for r in records:
            print(r["Id"] if args.no_trunc else r["Id"][:12])
        return 0
    rows = []
    for r in records:
        st = r["State"]
        command = " ".join([r["Path"], *r["Args"]])
        if not args.no_trunc and len(command) > 20:
            command = command[:19] + "…"
        if st.get("Restarting"):
            status = f"Restarting ({st['ExitCode']}) {_ago(st['FinishedAt'])}"
        elif st["Running"]:
            status = "Up " + _human_duration(st["StartedAt"])
        elif st["FinishedAt"] != state.ZERO_TIME:
            status = f"Exited ({st['ExitCode']}) {_ago(st['FinishedAt'])}"
        else:
            status = "Created"
        ports = ", ".join(f"{b['HostIp']}:{b['HostPort']}->{p}" for p, binds in r["NetworkSettings"]["Ports"].items()
                          for b in binds or [])
        rows.append([r["Id"] if args.no_trunc else r["Id"][:12], r["Config"]["Image"], f'"{command}"',
                     _ago(r["Created"]), status, ports, r["Name"].lstrip("/")])
    _table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"], rows)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    import json

    found, failed = [], 0
    for ref in args.containers:
        try:
            rec = container.find(ref)
        except state.NoSuchContainer:
            print(f"Error: No such object: {ref}", file=sys.stderr)
            failed = 1
            continue
        except MinidockerError as e:
            print(f"minidocker: {e}", file=sys.stderr)
            failed = 1
            continue
        rec.pop("Minidocker")
        found.append(rec)
    if args.format:
        for rec in found:
            print(_format(args.format, rec))
    else:
        print(json.dumps(found, indent=4))
    return failed


def _format(template: str, rec: dict) -> str:
    """Docker's --format for the common cases: {{.State.Pid}}, {{json .NetworkSettings}}."""
    import json
    import re

    def field(match: re.Match) -> str:
        as_json, path = match[1], match[2]
        value: object = rec
        for key in filter(None, path.split(".")):
            if not isinstance(value, dict) or key not in value:
                raise MinidockerError(f'template: no field "{key}" in {path}', 1)
            value = value[key]
        if as_json:
            return json.dumps(value)
        return str(value).lower() if isinstance(value, bool) else str(value)

    return re.sub(r"\{\{\s*(json\s+)?(\.[\w.]*)\s*\}\}", field, template)


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
                         f"{_size(new['memory'], binary=True)} / {_size(new['limit'], binary=True)}",
                         f"{new['memory'] / new['limit'] * 100:.2f}%", str(new["pids"])])
        if not args.no_stream:
            print("\033[2J\033[H", end="")  # clear the screen, as docker stats does
        _table(["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS"], rows)
        if args.no_stream:
            return 0
        sys.stdout.flush()
        before, then = after, now


def cmd_network(args: argparse.Namespace) -> int:
    try:
        return _network(args)
    except MinidockerError as e:  # Docker: every `network` error is exit 1
        raise MinidockerError(str(e), 1) from None


def _network(args: argparse.Namespace) -> int:
    import json

    from lib import network

    if args.action == "create":
        if len(args.names) != 1:
            raise MinidockerError('"network create" requires exactly 1 argument', 1)
        print(network.create(args.names[0], args.subnet, args.gateway)["Id"])
    elif args.action == "rm":
        return _each(args.names, network.remove)
    elif args.action == "inspect":
        found = []
        for name in args.names:
            net = dict(network.find(name))
            net["Containers"] = {cid: {"Name": container.load(cid)["Name"].lstrip("/"), "IPv4Address": ip}
                                 for cid, ip in network.members(net).items()
                                 if os.path.isdir(state.container_dir(cid))}
            found.append(net)
        print(json.dumps(found, indent=4))
    elif args.action == "prune":
        removed = network.prune()
        if removed:
            print("Deleted Networks:\n" + "\n".join(removed))
    else:
        present = network.interfaces()
        _table(["NETWORK ID", "NAME", "DRIVER", "SUBNET", "GATEWAY", "BRIDGE"],
               [[n.get("Id", n["Name"])[:12], n["Name"], "bridge", n["Subnet"], n["Gateway"],
                 n["Bridge"] + ("" if n["Bridge"] in present else " (not created yet)")]
                for n in network.all_networks()])
    return 0


def cmd_volume(args: argparse.Namespace) -> int:
    import json

    from lib import volumes

    def users(name: str) -> list[str]:
        return [c[:12] for c in state.all_ids()
                if any(m.get("Name") == name for m in container.load(c)["Mounts"])]

    if args.action == "create":
        for name in args.names or [os.urandom(32).hex()]:
            print(volumes.create(name))
    elif args.action == "rm":
        return _each(args.names, lambda name: volumes.remove(name, users(name)))
    elif args.action == "inspect":
        missing = [n for n in args.names if n not in volumes.names()]
        if missing:
            raise MinidockerError(f"get {missing[0]}: no such volume", 1)
        print(json.dumps([{"Name": n, "Driver": "local", "Mountpoint": volumes.volume_dir(n)}
                          for n in args.names], indent=4))
    else:
        _table(["DRIVER", "VOLUME NAME"], [["local", n] for n in volumes.names()])
    return 0


def cmd_images(args: argparse.Namespace) -> int:
    from lib import images

    rows = [[i["repository"], i["tag"], i["id"][:12], _ago(i["created"]), _size(i["size"])]
            for i in images.listing()]
    _table(["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], rows)
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from lib import registry

    image_id = registry.pull(args.reference, args.platform or "", args.insecure)
    print(f"Status: Downloaded {registry.parse(args.reference)[3]}\nsha256:{image_id}")
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    from lib import images

    images.tag(args.source, args.target)
    return 0


def cmd_rmi(args: argparse.Namespace) -> int:
    from lib import images

    def remove(ref: str) -> None:
        image_id = images.resolve(ref)  # not lookup: a damaged image's config cannot be read, yet must go
        users = [c for c in state.all_ids() if image_id and container.load(c)["Image"] == "sha256:" + image_id]
        print("\n".join(images.remove(ref, args.force, users)))

    return _each(args.images, remove, show=False)


def cmd_save(args: argparse.Namespace) -> int:
    from lib import images

    if args.output:
        images.save(args.images, args.output)
        return 0
    if sys.stdout.isatty():
        raise MinidockerError("cowardly refusing to save to a terminal. Use the -o flag or redirect", 1)
    import shutil
    import tempfile

    with tempfile.NamedTemporaryFile(prefix="minidocker-save-") as archive:
        images.save(args.images, archive.name)
        shutil.copyfileobj(archive, sys.stdout.buffer)
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from lib import images

    if args.input:
        print("\n".join(images.load(args.input)))
        return 0
    import shutil
    import tempfile

    with tempfile.NamedTemporaryFile(prefix="minidocker-load-") as copy:  # read twice: checked, then unpacked
        shutil.copyfileobj(sys.stdin.buffer, copy)
        copy.flush()
        print("\n".join(images.load(copy.name)))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from lib import images

    print("sha256:" + images.import_rootfs(args.source, args.reference))
    return 0


# ----------------------------------------------------------------- parser
class _Formatter(argparse.HelpFormatter):
    """argparse imports `shutil` (3 ms) to learn the terminal's width for help
    text, even when no help is printed; os knows the width too."""

    def __init__(self, prog: str) -> None:
        try:
            width = os.get_terminal_size().columns - 2
        except OSError:
            width = 78
        super().__init__(prog, width=width)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        # Docker's answer to a bad flag is exit 125 and one line.
        raise MinidockerError(f"{self.prog}: {message}. See '{self.prog} --help'.", 125)


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
    p.add_argument("-f", "--format", help="a Go-template field: '{{.State.Pid}}', '{{json .Config}}'")
    p.add_argument("containers", nargs="+")


def _prune_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--force", action="store_true", help="do not ask (minidocker never asks)")


def _ps_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--all", action="store_true", help="show all containers, not only running ones")
    p.add_argument("-q", "--quiet", action="store_true", help="only IDs")
    p.add_argument("--no-trunc", action="store_true", help="full IDs and commands")


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


def _network_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["create", "ls", "inspect", "rm", "prune"])
    p.add_argument("--subnet", help="create: an IPv4 CIDR (default: the first free 172.19-31.x.0/24)")
    p.add_argument("--gateway", help="create: the bridge's address (default: the subnet's first)")
    p.add_argument("names", nargs="*")


def _volume_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["create", "ls", "inspect", "rm"])
    p.add_argument("names", nargs="*")


def _pull_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--platform", help="os/arch[/variant] from a multi-platform image (default: this host's)")
    p.add_argument("--insecure", action="store_true", help="plain http to a registry not on this machine")
    p.add_argument("reference", metavar="NAME[:TAG|@DIGEST]")


def _tag_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("source")
    p.add_argument("target")


def _rmi_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--force", action="store_true", help="untag even while a container uses it")
    p.add_argument("images", nargs="+")


def _save_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", help="write to a file, not standard output")
    p.add_argument("images", nargs="+")


def _load_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--input", help="read from a tar archive file, not standard input")


def _no_flags(p: argparse.ArgumentParser) -> None:
    pass


def _import_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a root filesystem directory, or a tarball of one")
    p.add_argument("reference", metavar="NAME[:TAG]")


# One table of verbs: name, function, flags, help.  Only the verb being run
# has its parser built: building all of them costs 20 ms a call here.
VERBS = {
    "run": (cmd_run, _run_flags, "create and start a container"),
    "create": (cmd_create, _container_flags, "create a container without starting it"),
    "start": (cmd_start, _start_flags, "start created or stopped containers"),
    "attach": (cmd_attach, _attach_flags, "attach to a running container's input and output"),
    "stop": (cmd_stop, _stop_flags, "stop containers: SIGTERM, then SIGKILL"),
    "restart": (cmd_restart, _stop_flags, "stop and start containers"),
    "kill": (cmd_kill, _kill_flags, "send a signal to containers"),
    "rm": (cmd_rm, _rm_flags, "remove containers"),
    "wait": (cmd_wait, _containers, "wait for containers to exit, print their exit codes"),
    "prune": (cmd_prune, _prune_flags, "remove all stopped containers"),
    "ps": (cmd_ps, _ps_flags, "list containers"),
    "inspect": (cmd_inspect, _inspect_flags, "show containers' records as JSON"),
    "logs": (cmd_logs, _logs_flags, "show a container's output"),
    "exec": (cmd_exec, _exec_flags, "run a command in a running container"),
    "stats": (cmd_stats, _stats_flags, "show containers' CPU, memory and process counts"),
    "network": (cmd_network, _network_flags, "manage networks: create, ls, inspect, rm, prune"),
    "volume": (cmd_volume, _volume_flags, "manage named volumes: create, ls, inspect, rm"),
    "images": (cmd_images, _no_flags, "list images"),
    "pull": (cmd_pull, _pull_flags, "fetch an image from a registry"),
    "tag": (cmd_tag, _tag_flags, "give an image another name"),
    "rmi": (cmd_rmi, _rmi_flags, "remove images (and layers no image uses)"),
    "save": (cmd_save, _save_flags, "write images to a tar archive (docker save and OCI layout at once)"),
    "load": (cmd_load, _load_flags, "read images from a docker save or OCI layout tar archive"),
    "import": (cmd_import, _import_flags, "make an image from a root filesystem directory or tarball"),
}
# conmon runs this when a container it watches has exited (monitor.py).
HIDDEN = {"container-exited": (cmd_container_exited, _one_container, "record a container's exit")}
_NO_HELP_FLAG = {"run", "create"}  # -h is --hostname there, as in Docker

USAGE = """usage: minidocker [--explain] [--debug] VERB [ARGS...]

minidocker: a Docker-like container runtime built from the kernel's own parts.

global flags:
  --explain   print every host command, kernel write and mount as it happens
  --debug     show a traceback on internal errors

verbs:
"""


def parse(argv: list[str]) -> tuple[argparse.Namespace, bool, bool]:
    """Global flags, then the verb's own flags: (args, explain, debug)."""
    explain = debug = False
    while argv and argv[0].startswith("-"):
        flag, argv = argv[0], argv[1:]
        if flag == "--explain":
            explain = True
        elif flag == "--debug":
            debug = True
        elif flag in ("-h", "--help"):
            print(USAGE + "\n".join(f"  {name:<9} {v[2]}" for name, v in VERBS.items()))
            raise SystemExit(0)
        else:
            raise MinidockerError(f"unknown flag: {flag}. See 'minidocker --help'.")
    if not argv or argv[0] not in VERBS | HIDDEN:
        what = f"'{argv[0]}' is not a minidocker command" if argv else "a verb is needed"
        raise MinidockerError(f"{what}. See 'minidocker --help'.", 1)
    func, flags, help = (VERBS | HIDDEN)[argv[0]]
    p = _Parser(prog=f"minidocker {argv[0]}", description=help, add_help=argv[0] not in _NO_HELP_FLAG,
                formatter_class=_Formatter)
    flags(p)
    p.set_defaults(func=func, verb=argv[0])
    # `network create --subnet X NAME`: names may follow flags there.
    parse_args = p.parse_intermixed_args if argv[0] in ("network", "volume") else p.parse_args
    return parse_args(argv[1:]), explain, debug


def main(argv: list[str]) -> int:
    debug = False
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)  # from here on, Ctrl-C undoes what was done
    try:
        args, explain, debug = parse(argv)
        if explain:
            os.environ["MINIDOCKER_EXPLAIN"] = "2"
            os.environ["MINIDOCKER_T0"] = str(STARTED)
        if os.geteuid() != 0:
            raise MinidockerError("minidocker needs root: it creates namespaces, mounts and cgroups "
                                  "(try: sudo ./minidocker.py ...)")
        if args.verb == "exec" and not args.command:
            raise MinidockerError('"exec" requires at least 2 arguments', 1)
        state.secure_root()
        return args.func(args)
    except MinidockerError as e:
        print(f"minidocker: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `logs | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # and the exit's flush of stdout must not fail again
        return 141
    except Exception as e:  # a bug of ours: one line, unless --debug asks for more
        if debug:
            raise
        print(f"minidocker: internal error: {type(e).__name__}: {e} (run with --debug for details)",
              file=sys.stderr)
        return 125


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
