"""Images: read-only layers, stacked by overlayfs under every container.

An image is a list of layers (directory trees, each the difference from the
one below) and a config (the default command, environment, working dir).
They are stored once each, by the sha256 digest of the layer's tar stream
(its "diff ID", in the OCI image spec's words), so two images that share a
base share its files on disk:

    images/
    ├── repositories.json        {"busybox:latest": "<image id>"}
    ├── configs/<image id>.json  OCI image config: config{}, rootfs.diff_ids[]
    └── layers/<diff id>/        the layer's files, never written again

The image ID is the sha256 of the config file, as Docker's is.
"""

from __future__ import annotations

import os

# Only what `run` needs is imported up front: import, hashing and
# unpacking load their modules when they are used.
from lib import host, state
from lib.host import MinidockerError

TYPE_CHECKING = False
if TYPE_CHECKING:  # `typing` costs 5 ms a start; annotations need it only here
    from typing import IO

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILTIN = {"busybox": os.path.join(HERE, "fixtures", "busybox-rootfs.sh")}
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _dir(*parts: str) -> str:
    return state.path("images", *parts)


def parse_ref(ref: str) -> tuple[str, str]:
    """`busybox` -> ("busybox", "latest"); a registry port is not a tag."""
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag:
        return ref, "latest"
    return name, tag


def _repositories() -> dict[str, str]:
    try:
        return state.read_json(_dir("repositories.json"))
    except FileNotFoundError:
        return {}


def _tag(ref: str, image_id: str) -> None:
    os.makedirs(_dir(), exist_ok=True)
    with state.locked(_dir()):
        repos = _repositories()
        repos[":".join(parse_ref(ref))] = image_id
        state.write_json(_dir("repositories.json"), repos)


def config(image_id: str) -> dict:
    return state.read_json(_dir("configs", image_id + ".json"))


def lookup(ref: str) -> tuple[str, dict]:
    """The image ID and config for a name; builds the built-in busybox."""
    name, tag = parse_ref(ref)
    image_id = _repositories().get(f"{name}:{tag}")
    hexid = ref.removeprefix("sha256:")
    if image_id is None and len(hexid) >= 12 and all(c in "0123456789abcdef" for c in hexid):
        image_id = next((i for i in _repositories().values() if i.startswith(hexid)), None)
    if image_id is None and name in BUILTIN and tag == "latest":
        image_id = _build_builtin(name)
    if image_id is None:
        raise MinidockerError(f"Unable to find image '{name}:{tag}' locally")
    return image_id, config(image_id)


def layer_dirs(image_config: dict) -> list[str]:
    """The image's layer directories, top first: overlayfs' lowerdir order."""
    return [_dir("layers", d.removeprefix("sha256:")) for d in reversed(image_config["rootfs"]["diff_ids"])]


# ------------------------------------------------------------- storing
def _store_layer(stream: IO[bytes]) -> tuple[str, int]:
    """Unpack a tar stream into a new layer; return its diff ID and size.

    The stream is hashed as it is unpacked, so a layer is read once.  It is
    unpacked beside the store and renamed in: a crash leaves no half-layer.
    """
    import hashlib
    import shutil
    import subprocess
    import tempfile
    import zlib

    layers = _dir("layers")
    os.makedirs(layers, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".unpack-", dir=layers)
    try:
        tar = host.spawn(["tar", "-x", "--numeric-owner", "--same-permissions", "-C", tmp, "-f", "-"],
                         "images", stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        digest = hashlib.sha256()
        first = stream.read(1 << 16)
        gunzip = zlib.decompressobj(16 + zlib.MAX_WBITS) if first[:2] == b"\x1f\x8b" else None
        chunk = first
        while chunk:
            data = gunzip.decompress(chunk) if gunzip else chunk
            digest.update(data)
            tar.stdin.write(data)
            chunk = stream.read(1 << 16)
        tar.stdin.close()
        err = tar.stderr.read().decode()
        if tar.wait() != 0:
            raise MinidockerError(f"unpacking layer: tar: {err.strip()}")
        diff_id = digest.hexdigest()
        final = os.path.join(layers, diff_id)
        size = _tree_size(tmp)
        try:
            os.rename(tmp, final)
        except OSError:  # the same layer is already stored: share it
            shutil.rmtree(tmp)
        return "sha256:" + diff_id, size
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)


def _tree_size(top: str) -> int:
    import contextlib

    total = 0
    for dirpath, _dirs, files in os.walk(top):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def _store_image(ref: str, diff_ids: list[str], size: int, image_conf: dict) -> str:
    import hashlib
    import json

    body = {
        "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine),
        "os": "linux",
        "created": state.now(),
        "config": image_conf,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "minidocker": {"size": size},
    }
    raw = json.dumps(body, indent=1).encode()
    image_id = hashlib.sha256(raw).hexdigest()
    os.makedirs(_dir("configs"), exist_ok=True)
    with open(_dir("configs", image_id + ".json.tmp"), "wb") as f:
        f.write(raw)
    os.rename(_dir("configs", image_id + ".json.tmp"), _dir("configs", image_id + ".json"))
    _tag(ref, image_id)
    return image_id


def import_rootfs(source: str, ref: str) -> str:
    """Make an image of one layer from a directory or a (gzipped) tarball."""
    import subprocess

    if os.path.isdir(source):
        tar = host.spawn(["tar", "-c", "--numeric-owner", "-C", source, "-f", "-", "."], "images",
                         stdout=subprocess.PIPE)
        diff_id, size = _store_layer(tar.stdout)
        if tar.wait() != 0:
            raise MinidockerError(f"reading {source}: tar failed")
    elif os.path.isfile(source):
        with open(source, "rb") as f:
            diff_id, size = _store_layer(f)
    else:
        raise MinidockerError(f"import: {source}: no such file or directory")
    return _store_image(ref, [diff_id], size, {"Env": [f"PATH={DEFAULT_PATH}"], "Cmd": ["sh"]})


def _build_builtin(name: str) -> str:
    """busybox is always there: made from the host's busybox-static on first use."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="minidocker-build-") as tmp:
        host.run([BUILTIN[name], os.path.join(tmp, "rootfs")], "images")
        return import_rootfs(os.path.join(tmp, "rootfs"), f"{name}:latest")


def listing() -> list[dict]:
    rows = []
    for ref, image_id in sorted(_repositories().items()):
        name, tag = parse_ref(ref)
        conf = config(image_id)
        rows.append({"repository": name, "tag": tag, "id": image_id, "created": conf["created"],
                     "size": conf["minidocker"]["size"]})
    return rows
