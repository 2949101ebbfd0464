"""`volume create|ls|inspect|rm`."""

import argparse
import os

from cli.common import each, table
from lib import container, state
from lib.host import MinidockerError


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
        return each(args.names, lambda name: volumes.remove(name, users(name)))
    elif args.action == "inspect":
        missing = [n for n in args.names if n not in volumes.names()]
        if missing:
            raise MinidockerError(f"get {missing[0]}: no such volume", 1)
        print(json.dumps([{"Name": n, "Driver": "local", "Mountpoint": volumes.volume_dir(n)}
                          for n in args.names], indent=4))
    else:
        table(["DRIVER", "VOLUME NAME"], [["local", n] for n in volumes.names()])
    return 0


def _volume_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["create", "ls", "inspect", "rm"])
    p.add_argument("names", nargs="*")



# verb: (function, flags), for cli.parse
VERBS = {
    "volume": (cmd_volume, _volume_flags),
}
