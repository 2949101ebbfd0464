"""Volumes: host directories (or minidocker-managed ones) mounted into a container.

    -v /srv/data:/data        a bind mount of a host path (created if missing)
    -v /srv/conf:/etc/app:ro  read-only: a second mount(2) with MS_RDONLY,
                              since a bind mount ignores flags on the first
    -v cache:/var/cache       a named volume: volumes/cache/_data under the
                              state root, kept after the container is gone

The container path is resolved inside the container's root with every
symlink followed *as if that root were /* (rootfs.secure_join): an image
with `/data -> /etc` must not make a volume land on the host's /etc.
"""

from __future__ import annotations

import contextlib
import os
import re

from lib import state
from lib.host import MinidockerError

_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")


def volume_dir(name: str) -> str:
    return state.path("volumes", name, "_data")


def parse(spec: str) -> dict:
    """One -v value, as the Mounts entry `inspect` shows."""
    parts = spec.split(":")
    mode = "rw"
    if len(parts) == 3 and parts[2] in ("ro", "rw"):
        mode = parts.pop()
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise MinidockerError(f"invalid volume specification: '{spec}'")
    source, destination = parts
    if not destination.startswith("/"):
        raise MinidockerError(f"invalid mount config: the container path '{destination}' is not absolute")
    if ".." in destination.split("/"):
        raise MinidockerError(f"invalid mount config: the container path '{destination}' escapes with '..'")
    destination = os.path.normpath(destination)
    if destination == "/":
        raise MinidockerError("invalid mount config: a volume cannot replace the container's /")
    mount = {"Destination": destination, "Mode": mode, "RW": mode == "rw", "Propagation": "rprivate"}
    if source.startswith("/"):
        return {"Type": "bind", "Source": os.path.normpath(source), **mount}
    if not _NAME.fullmatch(source):
        raise MinidockerError(f'"{source}" includes invalid characters for a local volume name, only '
                              '"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed; a host path must be absolute')
    return {"Type": "volume", "Name": source, "Source": volume_dir(source), "Driver": "local", **mount}


def prepare(mounts: list[dict]) -> list[dict]:
    """Create missing sources, as Docker does; return the OCI bind mounts."""
    oci = []
    for m in mounts:
        if not os.path.lexists(m["Source"]):
            try:
                os.makedirs(m["Source"])
            except OSError as e:
                raise MinidockerError(f"error while creating mount source path '{m['Source']}': "
                                      f"{e.strerror.lower()}") from None
        oci.append({"destination": m["Destination"], "type": "bind", "source": m["Source"],
                    "options": ["rbind", "rprivate"] + ([] if m["RW"] else ["ro"])})
    return oci


def names() -> list[str]:
    try:
        return sorted(os.listdir(state.path("volumes")))
    except FileNotFoundError:
        return []


def create(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise MinidockerError(f'"{name}" includes invalid characters for a local volume name')
    os.makedirs(volume_dir(name), exist_ok=True)
    return name


def size(name: str) -> int:
    """Bytes of a volume's files, as `du` counts them (not following links)."""
    total = 0
    for top, _, files in os.walk(volume_dir(name)):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(top, f)).st_size
    return total


def remove(name: str, users: list[str]) -> None:
    if name not in names():
        raise MinidockerError(f"get {name}: no such volume", 1)
    if users:
        raise MinidockerError(f"remove {name}: volume is in use - [{', '.join(users)}]", 1)
    state.remove_tree(state.path("volumes", name))
