"""`network create|ls|inspect|rm|prune`."""

import argparse
import os

from cli.common import each, table
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
        table(["NETWORK ID", "NAME", "DRIVER", "SUBNET", "GATEWAY", "BRIDGE"],
               [[n.get("Id", n["Name"])[:12], n["Name"], "bridge", n["Subnet"], n["Gateway"],
                 n["Bridge"] + ("" if n["Bridge"] in present else " (not created yet)")]
                for n in network.all_networks()])
    return 0


def _network_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["create", "ls", "inspect", "rm", "prune"])
    p.add_argument("--subnet", help="create: an IPv4 CIDR (default: the first free 172.19-31.x.0/24)")
    p.add_argument("--gateway", help="create: the bridge's address (default: the subnet's first)")
    p.add_argument("names", nargs="*")



# verb: (function, flags), for cli.parse
VERBS = {
    "network": (cmd_network, _network_flags),
}
