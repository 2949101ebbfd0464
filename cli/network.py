"""`network create|ls|inspect|rm|prune`."""

import argparse
import os

from cli.common import each, filter_pairs, formatted_table, table
from lib import container, state
from lib.host import MinidockerError


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
        return each(args.names, network.remove)
    elif args.action == "inspect":
        print(json.dumps([_record(network, name) for name in args.names], indent=4))
    elif args.action == "prune":
        removed = network.prune()
        if removed:
            print("Deleted Networks:\n" + "\n".join(removed))
    else:
        _ls(args, network)
    return 0


def _record(network, name: str) -> dict:
    if name in ("host", "none"):  # --network modes: no bridge, no addresses of ours
        return {"Name": name, "Id": name, "Driver": "null" if name == "none" else "host", "Containers": {}}
    net = dict(network.find(name))
    net["Containers"] = {cid: {"Name": container.load(cid)["Name"].lstrip("/"), "IPv4Address": ip}
                         for cid, ip in network.members(net).items() if os.path.isdir(state.container_dir(cid))}
    return net


def record(name: str) -> dict | None:
    """`inspect` of a network; None if there is none by that name or ID."""
    from lib import network

    try:
        return _record(network, name)
    except MinidockerError:
        return None


def _ls(args: argparse.Namespace, network) -> None:
    """Docker's listing: the three networks every host has (bridge, and the
    host and none modes, driver null) and the user's, by name.  A network's
    subnet and bridge are in `network inspect`."""
    rows = [{"ID": n.get("Id", n["Name"]), "Name": n["Name"], "Driver": "bridge", "Type": "builtin"
             if n is network.DEFAULT else "custom"} for n in network.all_networks()]
    rows += [{"ID": mode, "Name": mode, "Driver": "null" if mode == "none" else "host", "Type": "builtin"}
             for mode in ("host", "none")]
    keys = {"id": "ID", "name": "Name", "driver": "Driver", "type": "Type"}
    wanted: dict[str, list[str]] = {}
    for key, value in filter_pairs(args.filter):
        if key not in keys:
            raise MinidockerError(f"invalid filter '{key}'", 1)
        wanted.setdefault(keys[key], []).append(value)

    def matches(row: dict, field: str, value: str) -> bool:
        if field == "ID":
            return row["ID"].startswith(value)
        return value in row[field] if field == "Name" else row[field] == value

    rows = sorted((r for r in rows if all(any(matches(r, f, v) for v in vs) for f, vs in wanted.items())),
                  key=lambda r: r["Name"])
    short = (lambda i: i) if args.no_trunc else (lambda i: i[:12])
    if args.quiet:
        for r in rows:
            print(short(r["ID"]))
        return
    if args.format:
        formatted_table(args.format, [{**r, "ID": short(r["ID"]), "Scope": "local"} for r in rows],
                        {"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE"})
        return
    table(["NETWORK ID", "NAME", "DRIVER", "SCOPE"], [[short(r["ID"]), r["Name"], r["Driver"], "local"] for r in rows])


def _network_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["create", "ls", "inspect", "rm", "prune"])
    p.add_argument("--subnet", help="create: an IPv4 CIDR (default: the first free 172.19-31.x.0/24)")
    p.add_argument("--gateway", help="create: the bridge's address (default: the subnet's first)")
    p.add_argument("-q", "--quiet", action="store_true", help="ls: only IDs")
    p.add_argument("--no-trunc", action="store_true", help="ls: full IDs")
    p.add_argument("-f", "--filter", action="append", default=[], help="ls: id, name, driver, type=builtin|custom")
    p.add_argument("--format", help="ls: a Go template per network, 'table ...' for columns")
    p.add_argument("names", nargs="*")



# verb: (function, flags), for cli.parse
VERBS = {
    "network": (cmd_network, _network_flags),
}
