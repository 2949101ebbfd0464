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
    from collections.abc import Iterator

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


def lookup(ref: str, pull: str = "missing") -> tuple[str, dict]:
    """The image ID and config for a name: built in (busybox), stored, or
    pulled from its registry, as Docker's `--pull missing|always|never`."""
    if pull == "always" and ref.split(":")[0] not in BUILTIN:
        return _pulled(ref)
    name, tag = parse_ref(ref)
    image_id = _repositories().get(f"{name}:{tag}")
    hexid = ref.removeprefix("sha256:")
    if image_id is None and len(hexid) >= 12 and all(c in "0123456789abcdef" for c in hexid):
        stored = os.listdir(_dir("configs")) if os.path.isdir(_dir("configs")) else []
        image_id = next((c[:-5] for c in stored if c.startswith(hexid)), None)  # by ID, named or not
    if image_id is None and name in BUILTIN and tag == "latest":
        image_id = _build_builtin(name)
    if image_id is None:
        if pull == "never":
            raise MinidockerError(f"Unable to find image '{name}:{tag}' locally")
        import sys

        print(f"Unable to find image '{name}:{tag}' locally", file=sys.stderr)
        return _pulled(ref)
    return image_id, config(image_id)


def _pulled(ref: str) -> tuple[str, dict]:
    from lib import registry

    try:
        image_id = registry.pull(ref)
    except MinidockerError as e:
        raise MinidockerError(str(e)) from None  # for run, an image that cannot be had is exit 125
    return image_id, config(image_id)


def tag(source: str, target: str) -> None:
    image_id, _ = lookup(source, pull="never")
    _tag(target, image_id)


def remove(ref: str, force: bool, in_use: list[str]) -> list[str]:
    """Untag an image; delete it, and the layers no other image uses, once untagged."""
    name, tag_ = parse_ref(ref)
    repos = _repositories()
    key = f"{name}:{tag_}"
    if key not in repos:
        hexid = ref.removeprefix("sha256:")
        keys = [k for k, v in repos.items() if len(hexid) >= 12 and v.startswith(hexid)]
        if not keys:
            raise MinidockerError(f"No such image: {ref}", 1)
        key = keys[0]
    image_id = repos[key]
    if in_use and not force:
        raise MinidockerError(f"conflict: unable to remove repository reference \"{ref}\" (must force) - "
                              f"container {in_use[0][:12]} is using its referenced image {image_id[:12]}", 1)
    out = [f"Untagged: {key}"]
    with state.locked(_dir()):
        repos = _repositories()
        repos.pop(key, None)
        state.write_json(_dir("repositories.json"), repos)
    if image_id in repos.values() or in_use:
        return out  # still named, or still a container's root: keep its files
    diff_ids = set(config(image_id)["rootfs"]["diff_ids"])
    os.unlink(_dir("configs", image_id + ".json"))
    out.append(f"Deleted: sha256:{image_id}")
    still = {d for other in set(repos.values()) for d in config(other)["rootfs"]["diff_ids"]}
    for diff_id in sorted(diff_ids - still):
        state.remove_tree(layer_path(diff_id))
        os.unlink(layer_path(diff_id) + ".size")
        for copy in [f for f in os.listdir(_dir("layers")) if f.startswith(diff_id[7:] + "@")]:
            state.remove_tree(_dir("layers", copy))
        out.append(f"Deleted: {diff_id}")
    return out


def layer_path(diff_id: str) -> str:
    return _dir("layers", diff_id.removeprefix("sha256:"))


def layer_size(diff_id: str) -> int:
    with open(layer_path(diff_id) + ".size") as f:
        return int(f.read())


def layer_dirs(image_config: dict, shift: int = 0) -> list[str]:
    """The image's layer directories, top first: overlayfs' lowerdir order.

    With a user namespace, root inside is `shift` outside, and files owned by
    host root would be nobody's inside: each layer then gets a copy whose
    owners are moved up by `shift` (once, kept beside the layer), as
    Docker's userns-remap keeps a copy of its image store per range.
    """
    diff_ids = list(reversed(image_config["rootfs"]["diff_ids"]))
    return [_shifted(d, shift) if shift else layer_path(d) for d in diff_ids]


def _shifted(diff_id: str, shift: int) -> str:
    import tempfile

    final = f"{layer_path(diff_id)}@{shift}"
    if os.path.isdir(final):
        return final
    tmp = tempfile.mkdtemp(prefix=".shift-", dir=_dir("layers"))
    host.run(["cp", "-a", layer_path(diff_id) + "/.", tmp], "images")
    for dirpath, dirs, files in os.walk(tmp):
        for name in [*dirs, *files, ""] if dirpath == tmp else [*dirs, *files]:
            path = os.path.join(dirpath, name) if name else dirpath
            info = os.lstat(path)
            os.lchown(path, info.st_uid + shift, info.st_gid + shift)
            if not os.path.islink(path) and info.st_mode & 0o6000:  # chown cleared setuid/setgid
                os.chmod(path, info.st_mode & 0o7777)
    if not os.path.isdir(final):
        os.rename(tmp, final)
    else:
        state.remove_tree(tmp)
    return final


# ------------------------------------------------------------- storing
def decompressed(path: str) -> Iterator[bytes]:
    """A layer file's tar stream, whatever it is packed with: gzip, zstd or nothing."""
    import zlib

    with open(path, "rb") as f:
        magic = f.read(4)
        f.seek(0)
        if magic[:2] == b"\x1f\x8b":
            unpack = zlib.decompressobj(16 + zlib.MAX_WBITS)
            while chunk := f.read(1 << 16):
                yield unpack.decompress(chunk)
        elif magic == b"\x28\xb5\x2f\xfd":
            zstd = host.system_module("zstandard", "python3-zstandard")
            yield from zstd.ZstdDecompressor().read_to_iter(f)
        else:
            while chunk := f.read(1 << 16):
                yield chunk


class _Chunks:
    """A file-like reader over an iterator of bytes, for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks, self.buffer = chunks, b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.buffer) < size:
            chunk = next(self.chunks, b"")
            if not chunk:
                break
            self.buffer += chunk
        out, self.buffer = (self.buffer, b"") if size < 0 else (self.buffer[:size], self.buffer[size:])
        return out


def check_members(path: str) -> None:
    """Refuse a hostile layer before a byte of it is unpacked.

    No absolute names, no `..`, no member reached through a symlink the
    layer itself made (`a -> /etc` then `a/passwd` would write the host's),
    no hard link out of the layer, and no device nodes: a layer is files.
    """
    import tarfile

    links: set[str] = set()
    try:
        with tarfile.open(fileobj=_Chunks(decompressed(path)), mode="r|") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                parts = name.split("/")
                if member.name.startswith("/") or ".." in parts:
                    raise MinidockerError(f"refusing layer: member {member.name!r} points outside the layer")
                if any("/".join(parts[:i]) in links for i in range(1, len(parts))):
                    raise MinidockerError(f"refusing layer: member {member.name!r} lies under a symlink")
                if member.issym():
                    links.add(name.rstrip("/"))
                if member.islnk() and (member.linkname.startswith("/") or ".." in member.linkname.split("/")):
                    raise MinidockerError(f"refusing layer: hard link {member.name!r} points outside the layer")
                if (member.ischr() or member.isblk()) and not (member.devmajor == member.devminor == 0):
                    raise MinidockerError(f"refusing layer: device node {member.name!r}")
    except tarfile.TarError as e:
        raise MinidockerError(f"refusing layer: not a tar archive ({e})") from None


def _whiteouts(top: str) -> None:
    """OCI's whiteout files, as overlayfs wants them.

    A layer deletes a file of the layers below with an empty `.wh.NAME`
    beside it, and hides a whole directory's lower contents with
    `.wh..wh..opq` inside it.  overlayfs marks the same with a character
    device 0:0 named NAME, and an xattr trusted.overlay.opaque=y.
    """
    import stat

    for dirpath, _dirs, files in os.walk(top):
        for name in files:
            if not name.startswith(".wh."):
                continue
            os.unlink(os.path.join(dirpath, name))
            if name == ".wh..wh..opq":
                os.setxattr(dirpath, "trusted.overlay.opaque", b"y")
            else:
                os.mknod(os.path.join(dirpath, name[4:]), stat.S_IFCHR, os.makedev(0, 0))


def _store_layer(chunks: Iterator[bytes]) -> tuple[str, int]:
    """Unpack a tar stream into a new layer; return its diff ID and size.

    The stream is hashed as it is unpacked, so a layer is read once.  It is
    unpacked beside the store and renamed in: a crash leaves no half-layer.
    """
    import hashlib
    import subprocess
    import tempfile

    layers = _dir("layers")
    os.makedirs(layers, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".unpack-", dir=layers)
    try:
        tar = host.spawn(["tar", "-x", "--numeric-owner", "--same-permissions", "--xattrs", "-C", tmp, "-f", "-"],
                         "images", stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        digest = hashlib.sha256()
        try:
            for data in chunks:
                digest.update(data)
                tar.stdin.write(data)
        finally:
            tar.stdin.close()
        err = tar.stderr.read().decode()
        if tar.wait() != 0:
            raise MinidockerError(f"unpacking layer: tar: {err.strip()}")
        _whiteouts(tmp)
        diff_id = digest.hexdigest()
        size = _tree_size(tmp)
        if not os.path.isdir(os.path.join(layers, diff_id)):  # else: the same layer is stored, share it
            with open(os.path.join(layers, diff_id + ".size"), "w") as f:
                f.write(str(size))
            os.rename(tmp, os.path.join(layers, diff_id))
        return "sha256:" + diff_id, size
    finally:
        if os.path.isdir(tmp):
            state.remove_tree(tmp)


def store_layer_file(path: str) -> tuple[str, int]:
    """A layer from a (possibly hostile) file: checked, then unpacked."""
    check_members(path)
    return _store_layer(decompressed(path))


def _tree_size(top: str) -> int:
    import contextlib

    total = 0
    for dirpath, _dirs, files in os.walk(top):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def store_image(ref: str, diff_ids: list[str], size: int, image_conf: dict, created: str = "",
                digest: str = "") -> str:
    """Record an image (its layers are stored already) and name it."""
    import hashlib
    import json

    body = {
        "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine),
        "os": "linux",
        "created": created or state.now(),
        "config": image_conf,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "minidocker": {"size": size, "digest": digest},
    }
    raw = json.dumps(body, indent=1).encode()
    image_id = hashlib.sha256(raw).hexdigest()
    os.makedirs(_dir("configs"), exist_ok=True)
    with open(_dir("configs", image_id + ".json.tmp"), "wb") as f:
        f.write(raw)
    os.rename(_dir("configs", image_id + ".json.tmp"), _dir("configs", image_id + ".json"))
    if ref:  # a loaded image without a name is kept by ID only
        _tag(ref, image_id)
    return image_id


def import_rootfs(source: str, ref: str) -> str:
    """Make an image of one layer from a directory or a (gzipped) tarball."""
    import subprocess

    if os.path.isdir(source):  # a directory of this host's: trusted, as docker import trusts it
        tar = host.spawn(["tar", "-c", "--numeric-owner", "--xattrs", "-C", source, "-f", "-", "."], "images",
                         stdout=subprocess.PIPE)
        diff_id, size = _store_layer(iter(lambda: tar.stdout.read(1 << 16), b""))
        if tar.wait() != 0:
            raise MinidockerError(f"reading {source}: tar failed")
    elif os.path.isfile(source):
        diff_id, size = store_layer_file(source)
    else:
        raise MinidockerError(f"import: {source}: no such file or directory")
    return store_image(ref, [diff_id], size, {"Env": [f"PATH={DEFAULT_PATH}"], "Cmd": ["sh"]})


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
        rows.append({"repository": name, "tag": tag, "id": image_id, "created": conf["created"] or state.ZERO_TIME,
                     "size": conf["minidocker"]["size"]})
    return rows


# ------------------------------------------------------------ save, load
def _layer_tar(diff_id: str, out: str) -> tuple[str, int]:
    """A stored layer as a tar, overlayfs' whiteouts turned back into OCI's."""
    import hashlib
    import stat
    import tarfile

    top = layer_path(diff_id)
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirs, files in os.walk(top):
            dirs.sort()
            rel = os.path.relpath(dirpath, top)
            if rel != ".":
                tar.add(dirpath, arcname=rel, recursive=False)
            try:
                opaque = os.getxattr(dirpath, "trusted.overlay.opaque") == b"y"
            except OSError:
                opaque = False
            if opaque:
                tar.addfile(tarfile.TarInfo(os.path.normpath(os.path.join(rel, ".wh..wh..opq"))))
            for name in sorted(files) + sorted(d for d in dirs if os.path.islink(os.path.join(dirpath, d))):
                full = os.path.join(dirpath, name)
                info = os.lstat(full)
                if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
                    tar.addfile(tarfile.TarInfo(os.path.normpath(os.path.join(rel, ".wh." + name))))
                else:
                    tar.add(full, arcname=os.path.normpath(os.path.join(rel, name)), recursive=False)
    digest = hashlib.sha256()
    with open(out, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest(), os.path.getsize(out)


def save(refs: list[str], out: str) -> None:
    """`docker save`: one tarball that is both Docker's format and an OCI layout."""
    import hashlib
    import json
    import tempfile

    with tempfile.TemporaryDirectory(prefix=".save-", dir=_dir()) as tmp:
        blobs = os.path.join(tmp, "blobs", "sha256")
        os.makedirs(blobs)

        def blob(data: bytes) -> tuple[str, int]:
            digest = hashlib.sha256(data).hexdigest()
            with open(os.path.join(blobs, digest), "wb") as f:
                f.write(data)
            return "sha256:" + digest, len(data)

        docker_manifest, index = [], []
        for ref in refs:
            image_id, conf = lookup(ref, pull="never")
            layers = []
            for diff_id in conf["rootfs"]["diff_ids"]:
                part = os.path.join(tmp, "layer.tar")
                digest, size = _layer_tar(diff_id, part)
                os.replace(part, os.path.join(blobs, digest[7:]))
                layers.append((digest, size))
            config = {k: v for k, v in conf.items() if k != "minidocker"}
            config["rootfs"] = {"type": "layers", "diff_ids": [d for d, _ in layers]}
            config_digest, config_size = blob(json.dumps(config).encode())
            manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                   "digest": config_digest, "size": config_size},
                        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d,
                                    "size": s} for d, s in layers]}
            manifest_digest, manifest_size = blob(json.dumps(manifest).encode())
            name = ":".join(parse_ref(ref)) if ref.removeprefix("sha256:") not in image_id else ""
            docker_manifest.append({"Config": f"blobs/sha256/{config_digest[7:]}", "RepoTags": [name] if name else [],
                                    "Layers": [f"blobs/sha256/{d[7:]}" for d, _ in layers]})
            index.append({"mediaType": manifest["mediaType"], "digest": manifest_digest, "size": manifest_size,
                          "annotations": {"io.containerd.image.name": name,
                                          "org.opencontainers.image.ref.name": parse_ref(ref)[1]}})
        for name, data in (("manifest.json", docker_manifest), ("oci-layout", {"imageLayoutVersion": "1.0.0"}),
                           ("index.json", {"schemaVersion": 2, "manifests": index})):
            with open(os.path.join(tmp, name), "w") as f:
                json.dump(data, f)
        host.run(["tar", "-C", tmp, "-cf", os.path.abspath(out), "manifest.json", "oci-layout", "index.json",
                  "blobs"], "images")


def load(path: str) -> list[str]:
    """`docker load` of a `docker save` tarball or an OCI layout tarball; the names loaded."""
    import json
    import tempfile

    check_members(path)
    os.makedirs(_dir(), exist_ok=True)
    loaded = []
    with tempfile.TemporaryDirectory(prefix=".load-", dir=_dir()) as tmp:
        host.run(["tar", "-C", tmp, "-xf", path], "images")

        def read(rel: str) -> dict:
            with open(os.path.join(tmp, rel)) as f:
                return json.load(f)

        if os.path.exists(os.path.join(tmp, "manifest.json")):
            entries = [(m["Config"], m["Layers"], m.get("RepoTags") or []) for m in read("manifest.json")]
        elif os.path.exists(os.path.join(tmp, "index.json")):
            entries = []
            for m in read("index.json")["manifests"]:
                manifest = read(f"blobs/sha256/{m['digest'][7:]}")
                # org.opencontainers.image.ref.name is a tag alone: without a full name, load by ID.
                name = m.get("annotations", {}).get("io.containerd.image.name", "")
                entries.append((f"blobs/sha256/{manifest['config']['digest'][7:]}",
                                [f"blobs/sha256/{layer['digest'][7:]}" for layer in manifest["layers"]],
                                [name] if name else []))
        else:
            raise MinidockerError(f"{path}: neither a docker save archive nor an OCI image layout", 1)
        for config_path, layer_paths, names in entries:
            config = read(config_path)
            diff_ids, size = [], 0
            for i, rel in enumerate(layer_paths):
                diff_id, layer_bytes = store_layer_file(os.path.join(tmp, rel))
                if config["rootfs"]["diff_ids"][i] != diff_id:
                    raise MinidockerError(f"{rel}: its content is {diff_id}, the image config says "
                                          f"{config['rootfs']['diff_ids'][i]}", 1)
                diff_ids.append(diff_id)
                size += layer_bytes
            for name in names or [""]:
                image_id = store_image(name, diff_ids, size, config.get("config") or {},
                                       created=config.get("created", ""))
                loaded.append(f"Loaded image: {name}" if name else f"Loaded image ID: sha256:{image_id}")
    return loaded
