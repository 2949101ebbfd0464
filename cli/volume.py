"""`volume create|ls|inspect|rm` and `volume prune`."""

import argparse
import os
import sys

from cli.common import each, filter_pairs, formatted_table, table
from cli.common import size as human_size
from lib import container, state
from lib.host import MinidockerError


def cmd_volume(args: argparse.Namespace) -> int:
    import json

    from lib import volumes

    def users(name: str) -> list[str]:
        return [c[:12] for c in state.all_ids()
                if any(m.get("Name") == name for m in container.load(c)["Mounts"])]

    def listed() -> list[str]:
        """`ls -f`: name=PART, dangling=true|false (used by no container)."""
        found = volumes.names()
        for key, value in filter_pairs(args.filter):
            if key == "name":
                found = [n for n in found if value in n]
            elif key == "dangling" and value in ("true", "false"):
                found = [n for n in found if (not users(n)) == (value == "true")]
            else:
                raise MinidockerError(f"invalid filter '{key}={value}'", 1)
        return found

    if args.action == "create":
        for name in args.names or [os.urandom(32).hex()]:
            print(volumes.create(name))
    elif args.action == "rm":
        return each(args.names, lambda name: volumes.remove(name, users(name)))
    elif args.action == "inspect":
        missing = [n for n in args.names if n not in volumes.names()]
        if missing:
            raise MinidockerError(f"get {missing[0]}: no such volume", 1)
        print(json.dumps([record(n) for n in args.names], indent=4))
    elif args.quiet:
        for name in listed():
            print(name)
    elif args.format:
        formatted_table(args.format, [{"Name": n, "Driver": "local", "Scope": "local",
                                       "Mountpoint": volumes.volume_dir(n)} for n in listed()],
                        {"Driver": "DRIVER", "Name": "VOLUME NAME", "Scope": "SCOPE", "Mountpoint": "MOUNTPOINT"})
    else:
        table(["DRIVER", "VOLUME NAME"], [["local", n] for n in listed()])
    return 0


def _volume_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["create", "ls", "inspect", "rm"])
    p.add_argument("-q", "--quiet", action="store_true", help="ls: only names")
    p.add_argument("-f", "--filter", action="append", default=[], help="ls: name=PART, dangling=true|false")
    p.add_argument("--format", help="ls: a Go template per volume, 'table ...' for columns")
    p.add_argument("names", nargs="*")



def record(name: str) -> dict | None:
    """`inspect` of a volume; None if there is none by that name."""
    from lib import volumes

    if name not in volumes.names():
        return None
    return {"Name": name, "Driver": "local", "Mountpoint": volumes.volume_dir(name), "Scope": "local"}


def cmd_prune(args: argparse.Namespace) -> int:
    """`volume prune`.  Docker 23 and later remove only anonymous volumes
    (made for a container's -v /path, and so nameless) unless --all;
    minidocker makes none, so only --all removes anything."""
    from lib import volumes

    if not args.force:
        print("WARNING! This will remove all local volumes not used by at least one container." if args.all
              else "WARNING! This will remove anonymous local volumes not used by at least one container.",
              "Are you sure you want to continue? [y/N] ", sep="\n", end="", flush=True)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    used = {m.get("Name") for c in state.all_ids() for m in container.load(c)["Mounts"]}
    removed = [n for n in volumes.names() if n not in used] if args.all else []
    reclaimed = sum(volumes.size(n) for n in removed)
    for name in removed:
        volumes.remove(name, [])
    if removed:
        print("Deleted Volumes:\n" + "".join(f"{n}\n" for n in removed))
    print(f"Total reclaimed space: {human_size(reclaimed) if removed else '0B'}")
    return 0


def _prune_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--all", action="store_true", help="every unused volume, not only anonymous ones")
    p.add_argument("-f", "--force", action="store_true", help="do not ask")


# verb: (function, flags), for cli.parse
VERBS = {
    "volume": (cmd_volume, _volume_flags),
    "volume-prune": (cmd_prune, _prune_flags),
}
