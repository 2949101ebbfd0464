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

import contextlib  # loaded already: lib.state uses it
import os

# Only what `run` needs is imported up front: import, hashing and
# unpacking load their modules when they are used.
from lib import host, state
from lib.host import MinidockerError

TYPE_CHECKING = False
if TYPE_CHECKING:  # `typing` costs 5 ms a start; annotations need it only here
    from collections.abc import Iterator

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILTIN = ("busybox",)
BUSYBOX = "/bin/busybox"  # Debian's busybox-static
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EXIT_DATA = 1  # Docker's pull, load and import exit 1 on data they refuse (run makes it 125)
HEX = frozenset("0123456789abcdef")


def _dir(*parts: str) -> str:
    return state.path("images", *parts)


def is_hex64(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and HEX.issuperset(value)


def checked_digest(value: object, what: str, code: int = EXIT_DATA) -> str:
    """A digest that is about to become a file name or a URL path: exactly
    `sha256:` and 64 lowercase hex digits.  Anything else from an image
    (`sha256:../../etc/passwd`, another algorithm) is refused, never joined."""
    if not (isinstance(value, str) and value.startswith("sha256:") and is_hex64(value[7:])):
        raise MinidockerError(f"invalid digest for {what}: {str(value)[:80]!r} (want sha256: and 64 hex digits)",
                              code)
    return value


def _corrupt(file: str, why: object) -> MinidockerError:
    return MinidockerError(f"the image store is damaged: {file}: {why}")


def checked_config(body: object, where: str, code: int = EXIT_DATA) -> dict:
    """An image config whose fields are what `run` will use them as: its
    diff IDs digests, its Cmd and Env lists of strings, and so on."""
    rootfs = body.get("rootfs") if isinstance(body, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list):
        raise MinidockerError(f"{where}: not an image config (no rootfs.diff_ids)", code)
    for i, diff_id in enumerate(diff_ids):
        checked_digest(diff_id, f"layer {i + 1} in {where}", code)
    conf = body.get("config") or {}
    if not isinstance(conf, dict):
        raise MinidockerError(f"{where}: its config is not an object", code)
    lists = [conf.get(k) or [] for k in ("Cmd", "Entrypoint", "Env")]
    if not all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in lists) or \
            not all(isinstance(conf.get(k) or "", str) for k in ("User", "WorkingDir")):
        raise MinidockerError(f"{where}: its config's Cmd, Entrypoint, Env, User or WorkingDir is malformed", code)
    if not isinstance(body.get("created") or "", str):
        raise MinidockerError(f"{where}: its created time is not a string", code)
    return body


def parse_ref(ref: str) -> tuple[str, str]:
    """`busybox` -> ("busybox", "latest"); a registry port is not a tag."""
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag:
        return ref, "latest"
    return name, tag


def _repositories() -> dict[str, str]:
    file = _dir("repositories.json")
    try:
        repos = state.read_json(file)
    except FileNotFoundError:
        return {}
    except ValueError as e:
        raise _corrupt(file, f"not JSON ({e}); remove it to forget every image name") from None
    if not isinstance(repos, dict) or not all(isinstance(k, str) and is_hex64(v) for k, v in repos.items()):
        raise _corrupt(file, "not a map of names to image IDs; remove it to forget every image name")
    return repos


def _tag_unlocked(ref: str, image_id: str) -> None:
    repos = _repositories()
    repos[":".join(parse_ref(ref))] = image_id
    state.write_json(_dir("repositories.json"), repos)


def _tag(ref: str, image_id: str) -> None:
    os.makedirs(_dir(), exist_ok=True)
    with state.locked(_dir()):
        _tag_unlocked(ref, image_id)


def config(image_id: str) -> dict:
    """A stored image's config, checked as an incoming one is: the store is
    a file tree that anything running as root can have changed."""
    file = _dir("configs", image_id + ".json")
    try:
        body = state.read_json(file)
    except FileNotFoundError:
        raise _corrupt(file, f"image {image_id[:12]} has no config; rmi it and pull or load it again") from None
    except ValueError as e:
        raise _corrupt(file, f"not JSON ({e}); rmi the image and pull or load it again") from None
    checked_config(body, file, code=host.EXIT_ENGINE)
    if not isinstance((body.get("minidocker") or {}).get("size"), int):
        raise _corrupt(file, "no size; rmi the image and pull or load it again")
    return body


def _stored_ids() -> list[str]:
    """Every image in the store, named or loaded by ID only."""
    try:
        names = os.listdir(_dir("configs"))
    except FileNotFoundError:
        return []
    return [n[:-5] for n in names if n.endswith(".json") and is_hex64(n[:-5])]


def _used_layers() -> set[str]:
    """The layers some stored image is made of.  An image whose config is
    damaged cannot run anyway, so it holds no layer."""
    used: set[str] = set()
    for image_id in _stored_ids():
        with contextlib.suppress(MinidockerError):
            used.update(config(image_id)["rootfs"]["diff_ids"])
    return used


def resolve(ref: str) -> str | None:
    """The stored image a name or an ID (a prefix of 12 or more) names, if any.
    Its config is not read: `rmi` must be able to remove a damaged image."""
    name, tag = parse_ref(ref)
    image_id = _repositories().get(f"{name}:{tag}")
    hexid = ref.removeprefix("sha256:")
    if image_id is None and 12 <= len(hexid) <= 64 and HEX.issuperset(hexid):
        image_id = next((c for c in _stored_ids() if c.startswith(hexid)), None)  # by ID, named or not
    return image_id


def lookup(ref: str, pull: str = "missing") -> tuple[str, dict]:
    """The image ID and config for a name: built in (busybox), stored, or
    pulled from its registry, as Docker's `--pull missing|always|never`."""
    if pull == "always" and ref.split(":")[0] not in BUILTIN:
        return _pulled(ref)
    name, tag = parse_ref(ref)
    image_id = resolve(ref)
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
    image_id = resolve(ref)
    if image_id is None:
        raise MinidockerError(f"No such image: {ref}", 1)
    repos = _repositories()
    key = ":".join(parse_ref(ref))
    if repos.get(key) != image_id:  # named by its ID: its first name, if it has one
        key = next((k for k, v in repos.items() if v == image_id), "")
    if in_use and not force:
        raise MinidockerError(f"conflict: unable to remove repository reference \"{ref}\" (must force) - "
                              f"container {in_use[0][:12]} is using its referenced image {image_id[:12]}", 1)
    out = [f"Untagged: {key}"] if key else []
    with state.locked(_dir()):
        repos = _repositories()
        repos.pop(key, None)
        state.write_json(_dir("repositories.json"), repos)
        if image_id in repos.values() or in_use:
            return out  # still named, or still a container's root: keep its files
        try:
            diff_ids = set(config(image_id)["rootfs"]["diff_ids"])
        except MinidockerError:
            diff_ids = set()  # a damaged config: delete it, and leave its layers to whoever else uses them
        os.unlink(_dir("configs", image_id + ".json"))
        out.append(f"Deleted: sha256:{image_id}")
        for diff_id in sorted(diff_ids - _used_layers()):
            _delete_layer(diff_id)
            out.append(f"Deleted: {diff_id}")
    return out


def _delete_layer(diff_id: str) -> None:
    """A layer, its size and its user-namespace copies."""
    top = layer_path(diff_id)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(top + ".size")
    stored = os.listdir(_dir("layers")) if os.path.isdir(_dir("layers")) else []
    for copy in [f for f in stored if f == diff_id[7:] or f.startswith(diff_id[7:] + "@")]:
        state.remove_tree(_dir("layers", copy))


def forget_layers(diff_ids: list[str]) -> None:
    """Undo a failed pull or load: delete the layers it stored itself, and
    only those, unless an image has come to use one meanwhile.  A layer it
    found already stored belongs to other images and is never touched."""
    if not diff_ids:
        return
    with state.locked(_dir()):
        used = _used_layers()
        for diff_id in diff_ids:
            if diff_id not in used:
                _delete_layer(diff_id)


def layer_path(diff_id: str) -> str:
    """Where a layer lives: checked here too, the last guard before a path."""
    return _dir("layers", checked_digest(diff_id, "a layer", host.EXIT_ENGINE)[7:])


def layer_size(diff_id: str) -> int:
    file = layer_path(diff_id) + ".size"
    try:
        with open(file) as f:
            return int(f.read())
    except (OSError, ValueError) as e:
        raise _corrupt(file, e) from None


def layer_dirs(image_config: dict, shift: int = 0) -> list[str]:
    """The image's layer directories, top first: overlayfs' lowerdir order.

    With a user namespace, root inside is `shift` outside, and files owned by
    host root would be nobody's inside: each layer then gets a copy whose
    owners are moved up by `shift` (once, kept beside the layer), as
    Docker's userns-remap keeps a copy of its image store per range.
    """
    diff_ids = list(reversed(image_config["rootfs"]["diff_ids"]))
    for diff_id in diff_ids:
        if not os.path.isdir(layer_path(diff_id)):
            raise _corrupt(layer_path(diff_id), "a layer of this image is missing; rmi it and pull or load it again")
    return [_shifted(d, shift) if shift else layer_path(d) for d in diff_ids]


def _shifted(diff_id: str, shift: int) -> str:
    import tempfile

    final = f"{layer_path(diff_id)}@{shift}"
    if os.path.isdir(final):
        return final
    tmp = tempfile.mkdtemp(prefix=".shift-", dir=_dir("layers"))
    host.run(["cp", "-a", layer_path(diff_id) + "/.", tmp], "images")
    done: set[tuple[int, int]] = set()  # hard links are one inode: shift it once, not once a name
    for dirpath, dirs, files in os.walk(tmp):
        for name in [*dirs, *files, ""] if dirpath == tmp else [*dirs, *files]:
            path = os.path.join(dirpath, name) if name else dirpath
            info = os.lstat(path)
            if (info.st_dev, info.st_ino) in done:
                continue
            done.add((info.st_dev, info.st_ino))
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
            try:
                while chunk := f.read(1 << 16):
                    yield unpack.decompress(chunk)
            except zlib.error as e:
                raise MinidockerError(f"{os.path.basename(path)}: not a valid gzip stream ({e})", EXIT_DATA) from None
        elif magic == b"\x28\xb5\x2f\xfd":
            # zstd(1) rather than a Python binding: Debian's python3-zstandard is
            # built for the system's Python only, the command serves every one.
            import subprocess

            unpack = host.spawn(["zstd", "-dcq", "--", path], "images", stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
            try:
                while chunk := unpack.stdout.read(1 << 16):
                    yield chunk
            finally:
                unpack.stdout.close()
                said = unpack.stderr.read().decode(errors="replace").strip().splitlines()
                unpack.stderr.close()
                failed = unpack.wait() != 0
            if failed:
                raise MinidockerError(f"{os.path.basename(path)}: not a valid zstd stream "
                                      f"({said[-1] if said else 'zstd failed'})", EXIT_DATA)
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


def check_members(path: str, archive: bool = False) -> None:
    """Refuse a hostile layer (or a `load` archive) before a byte of it is unpacked.

    No absolute names, no `..`, no member reached through a symlink the
    tar itself made (`a -> /etc` then `a/passwd` would write the host's), no
    hard link out of it or through such a symlink, and no device nodes: a
    layer is files.  A `load` archive holds only JSON and layer blobs, so
    there every entry must be a plain file or directory: a FIFO named as
    its manifest would hang the load, a symlink would lead its reads out.
    """
    import tarfile

    what = "archive" if archive else "layer"

    def canonical(name: str, shown: str) -> list[str]:
        parts = name.split("/")
        if name.startswith("/") or ".." in parts:
            raise MinidockerError(f"refusing {what}: {shown} points outside the {what}", EXIT_DATA)
        return [p for p in parts if p not in ("", ".")]

    links: set[str] = set()  # the symlinks so far, and the hard links to them (the same inode)
    try:
        with tarfile.open(fileobj=_Chunks(decompressed(path)), mode="r|") as tar:
            for member in tar:
                parts = canonical(member.name, f"member {member.name!r}")
                name = "/".join(parts)
                if any("/".join(parts[:i]) in links for i in range(1, len(parts))):
                    raise MinidockerError(f"refusing {what}: member {member.name!r} lies under a symlink", EXIT_DATA)
                if member.islnk():
                    target = canonical(member.linkname, f"hard link {member.name!r}")
                    if any("/".join(target[:i]) in links for i in range(1, len(target))):
                        raise MinidockerError(f"refusing {what}: hard link {member.name!r} goes through a symlink",
                                              EXIT_DATA)
                    if "/".join(target) in links:
                        links.add(name)  # a hard link to a symlink is that symlink again
                elif member.issym():
                    if archive:
                        raise MinidockerError(f"refusing archive: {member.name!r} is a symlink", EXIT_DATA)
                    links.add(name)
                elif archive and not (member.isfile() or member.isdir()):
                    raise MinidockerError(f"refusing archive: {member.name!r} is not a file or a directory",
                                          EXIT_DATA)
                elif (member.ischr() or member.isblk()) and not (member.devmajor == member.devminor == 0):
                    raise MinidockerError(f"refusing layer: device node {member.name!r}", EXIT_DATA)
    except tarfile.TarError as e:
        raise MinidockerError(f"refusing {what}: not a tar archive ({e})", EXIT_DATA) from None


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
                continue
            try:  # `.wh.` alone would name the directory, `.wh.x` beside an `x` a file it also ships
                os.mknod(os.path.join(dirpath, name[4:]), stat.S_IFCHR, os.makedev(0, 0))
            except OSError as e:
                raise MinidockerError(f"refusing layer: whiteout {name!r}: {e.strerror}", EXIT_DATA) from None


def _store_layer(chunks: Iterator[bytes], expected: str = "", what: str = "layer") -> tuple[str, int, bool]:
    """Unpack a tar stream into a new layer: its diff ID, its size, and
    whether this call stored it (False: it was there, other images' too).

    The stream is hashed as it is unpacked, so a layer is read once.  It is
    unpacked beside the store and renamed in only once its diff ID is the
    one `expected`: a crash or a lying image leaves no half-layer, and no
    mislabelled one that a later pull would take for the real thing.
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
        except BrokenPipeError:
            pass  # tar stopped early: its exit status and stderr say why
        finally:
            with contextlib.suppress(BrokenPipeError):
                tar.stdin.close()
        err = tar.stderr.read().decode(errors="replace")
        if tar.wait() != 0:
            raise MinidockerError(f"unpacking {what}: {_tar_said(err)}", EXIT_DATA)
        diff_id = "sha256:" + digest.hexdigest()
        if expected and diff_id != expected:
            raise MinidockerError(f"{what}: its content is {diff_id}, the image config says {expected}", EXIT_DATA)
        _whiteouts(tmp)
        size = _tree_size(tmp)
        final = layer_path(diff_id)
        if not os.path.isdir(final):
            with open(final + ".size", "w") as f:
                f.write(str(size))
            try:
                os.rename(tmp, final)
                return diff_id, size, True
            except OSError:
                if not os.path.isdir(final):
                    raise
        return diff_id, size, False  # the same layer is stored (maybe by a pull running beside us): share it
    finally:
        if os.path.isdir(tmp):
            state.remove_tree(tmp)


def _tar_said(stderr: str) -> str:
    """The line of tar's complaint that says what went wrong (it ends with a
    summary that does not)."""
    lines = [line for line in stderr.splitlines() if line.strip() and "Exiting with failure" not in line]
    return lines[-1] if lines else "tar failed"


def store_layer_file(path: str, expected: str = "", what: str = "layer") -> tuple[str, int, bool]:
    """A layer from a (possibly hostile) file: checked, then unpacked."""
    check_members(path)
    return _store_layer(decompressed(path), expected, what)


def _tree_size(top: str) -> int:
    import contextlib

    total = 0
    for dirpath, _dirs, files in os.walk(top):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def host_platform() -> str:
    return "linux/" + {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(os.uname().machine,
                                                                                  os.uname().machine)


def platform_entry(index: dict, platform: str) -> dict:
    """The entry of an image index (a manifest list) for a platform: `linux/amd64`."""
    os_, _, arch = platform.partition("/")
    arch, _, variant = arch.partition("/")
    manifests = index.get("manifests")
    platforms = [(m, m["platform"]) for m in manifests if isinstance(m, dict) and isinstance(m.get("platform"), dict)] \
        if isinstance(manifests, list) else []
    for entry, p in platforms:
        if p.get("os") == os_ and p.get("architecture") == arch and (not variant or p.get("variant") == variant):
            return entry
    offered = ", ".join(f"{p.get('os')}/{p.get('architecture')}" for _, p in platforms)
    raise MinidockerError(f"no matching manifest for {platform} in the manifest list entries ({offered})",
                          EXIT_DATA)


def store_image(ref: str, diff_ids: list[str], size: int, image_conf: dict, created: str = "",
                digest: str = "") -> str:
    """Record an image (its layers are stored already) and name it."""
    import hashlib
    import json

    body = {
        "architecture": host_platform().removeprefix("linux/"),
        "os": "linux",
        "created": created or state.now(),
        "config": image_conf,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "minidocker": {"size": size, "digest": digest},
    }
    raw = json.dumps(body, indent=1).encode()
    image_id = hashlib.sha256(raw).hexdigest()
    os.makedirs(_dir("configs"), exist_ok=True)
    with state.locked(_dir()):
        # Under the lock that a failed pull's clean-up takes: a layer this
        # image found stored may have been that pull's, and gone since.
        missing = [d for d in diff_ids if not os.path.isdir(layer_path(d))]
        if missing:
            raise MinidockerError(f"layer {missing[0]} was removed while this image was stored (a pull beside "
                                  "this one failed?): try again")
        with open(_dir("configs", image_id + ".json.tmp"), "wb") as f:
            f.write(raw)
        os.rename(_dir("configs", image_id + ".json.tmp"), _dir("configs", image_id + ".json"))
        if ref:  # a loaded image without a name is kept by ID only
            _tag_unlocked(ref, image_id)
    return image_id


def import_rootfs(source: str, ref: str) -> str:
    """Make an image of one layer from a directory or a (gzipped) tarball."""
    import subprocess

    created = []
    try:
        if os.path.isdir(source):  # a directory of this host's: trusted, as docker import trusts it
            tar = host.spawn(["tar", "-c", "--numeric-owner", "--xattrs", "-C", source, "-f", "-", "."], "images",
                             stdout=subprocess.PIPE)
            diff_id, size, new = _store_layer(iter(lambda: tar.stdout.read(1 << 16), b""))
            created += [diff_id] if new else []
            if tar.wait() != 0:
                raise MinidockerError(f"reading {source}: tar failed", EXIT_DATA)
        elif os.path.isfile(source):
            diff_id, size, new = store_layer_file(source)
            created += [diff_id] if new else []
        else:
            raise MinidockerError(f"import: {source}: no such file or directory", EXIT_DATA)
        return store_image(ref, [diff_id], size, {"Env": [f"PATH={DEFAULT_PATH}"], "Cmd": ["sh"]})
    except BaseException:
        forget_layers(created)
        raise


def busybox_tar() -> bytes:
    """A busybox root filesystem, as a tar, from the host's busybox-static.

    A root filesystem is just a directory tree a process can live in: a
    shell, the tools (one binary, a symlink per applet), /etc/passwd so `id`
    and `ps` can name users, and empty mount points (/proc, /sys, /dev) for
    the kernel filesystems the runtime mounts.  The binary must be static:
    no libc or loader exists inside the container.  Written as a tar in one
    go: a process per link (`ln -s`, ~300 of them) costs a second in an
    emulated VM.
    """
    import io
    import tarfile

    try:
        with open(BUSYBOX, "rb") as f:
            binary = f.read()
    except OSError:
        raise MinidockerError(f"{BUSYBOX} is missing: apt-get install busybox-static", EXIT_DATA) from None
    if _interpreter(binary):
        raise MinidockerError(f"{BUSYBOX} is dynamically linked: apt-get install busybox-static", EXIT_DATA)
    applets = host.run([BUSYBOX, "--list-full"], "images").split()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        def add(name: str, kind: bytes = tarfile.DIRTYPE, mode: int = 0o755, data: bytes = b"",
                link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.size, info.linkname = kind, mode, len(data), link
            tar.addfile(info, io.BytesIO(data) if data else None)

        for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "proc", "sys", "dev", "var",
                  "var/www", "home"):
            add(d)
        add("tmp", mode=0o1777)
        add("bin/busybox", tarfile.REGTYPE, 0o755, binary)
        for applet in applets:
            if applet != "bin/busybox":
                add(applet, tarfile.SYMTYPE, 0o777, link="/bin/busybox")
        add("etc/passwd", tarfile.REGTYPE, 0o644, b"root:x:0:0:root:/root:/bin/sh\n"
            b"daemon:x:1:1:daemon:/usr/sbin:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
        add("etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\ndaemon:x:1:\ntty:x:5:\nnogroup:x:65534:\n")
        add("etc/hostname", tarfile.REGTYPE, 0o644)
    return out.getvalue()


def _interpreter(elf: bytes) -> bool:
    """Whether an ELF binary names a loader (a PT_INTERP program header): dynamic."""
    import struct

    if elf[:4] != b"\x7fELF":
        return True  # not a binary this host runs: as unusable as a dynamic one
    wide, order = elf[4] == 2, "<" if elf[5] == 1 else ">"
    phoff, phentsize, phnum = (struct.unpack_from(order + "Q14xHH", elf, 32) if wide
                               else struct.unpack_from(order + "I10xHH", elf, 28))
    return any(struct.unpack_from(order + "I", elf, phoff + i * phentsize)[0] == 3 for i in range(phnum))


def _build_builtin(name: str) -> str:
    """busybox is always there: made from the host's busybox-static on first use."""
    data = busybox_tar()
    diff_id, size, _ = _store_layer(iter((data,)))
    return store_image(f"{name}:latest", [diff_id], size, {"Env": [f"PATH={DEFAULT_PATH}"], "Cmd": ["sh"]})


def listing() -> list[dict]:
    """`images`: every named image, the built-in ones included, which
    `run` makes on first use and so must be listed before it too."""
    repos = _repositories()
    for name in BUILTIN:
        if f"{name}:latest" not in repos:
            repos[f"{name}:latest"] = _build_builtin(name)
    rows = []
    named = [(*parse_ref(ref), image_id) for ref, image_id in sorted(repos.items())]
    # An image no name points at any more (its tag moved on, or it was loaded
    # by ID) is still stored: Docker lists it as <none>:<none>, "dangling".
    dangling = [("<none>", "<none>", i) for i in sorted(set(_stored_ids()) - set(repos.values()))]
    for name, tag, image_id in named + dangling:
        try:
            conf = config(image_id)
        except (MinidockerError, OSError):
            if tag != "<none>":
                raise  # a named image's damage is reported (its name says which)
            continue  # a nameless one damaged, or removed as we read: not listed
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

    wanted = [(ref, *lookup(ref, pull="never")) for ref in refs]  # may make busybox, and so images/
    for _ref, _image_id, conf in wanted:
        layer_dirs(conf)  # each layer is there, or one clear line
    os.makedirs(_dir(), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".save-", dir=_dir()) as tmp:
        blobs = os.path.join(tmp, "blobs", "sha256")
        os.makedirs(blobs)

        def blob(data: bytes) -> tuple[str, int]:
            digest = hashlib.sha256(data).hexdigest()
            with open(os.path.join(blobs, digest), "wb") as f:
                f.write(data)
            return "sha256:" + digest, len(data)

        docker_manifest, index = [], []
        for ref, image_id, conf in wanted:
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


def _member(archive: str, top: str, rel: object, what: str) -> str:
    """A file a `load` archive's own JSON names, as a path inside the unpacked
    archive: relative, no `..`, no symlink on the way, a plain file."""
    import stat

    parts = rel.split("/") if isinstance(rel, str) else [".."]
    if not isinstance(rel, str) or rel.startswith("/") or ".." in parts:
        raise MinidockerError(f"{archive}: {what} {str(rel)[:80]!r} points outside the archive", EXIT_DATA)
    parts = [p for p in parts if p not in ("", ".")]
    path = top
    for i, part in enumerate(parts):
        path = os.path.join(path, part)
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            raise MinidockerError(f"{archive}: {what} {rel!r} is not in the archive", EXIT_DATA) from None
        if not (stat.S_ISDIR(mode) if i < len(parts) - 1 else stat.S_ISREG(mode)):
            raise MinidockerError(f"{archive}: {what} {rel!r} is not a plain file", EXIT_DATA)
    if not parts:
        raise MinidockerError(f"{archive}: {what} {rel!r} is not a plain file", EXIT_DATA)
    return path


def _read_member(archive: str, top: str, rel: object, what: str) -> object:
    import json

    try:
        with open(_member(archive, top, rel, what)) as f:
            return json.load(f)
    except ValueError as e:
        raise MinidockerError(f"{archive}: {what} {rel!r} is not JSON ({e})", EXIT_DATA) from None


def _fields(archive: str, body: object, what: str, keys: dict[str, type]) -> list:
    """`keys` of a JSON object from an archive, each of its type."""
    if not isinstance(body, dict) or not all(isinstance(body.get(k), t) for k, t in keys.items()):
        raise MinidockerError(f"{archive}: {what} has no {', '.join(keys)} of the right types", EXIT_DATA)
    return [body[k] for k in keys]


def _blob(digest: object, what: str) -> str:
    """An OCI layout's path for a blob: only ever `blobs/sha256/<64 hex>`."""
    return f"blobs/sha256/{checked_digest(digest, what)[7:]}"


def _archive_images(archive: str, top: str) -> list[tuple[object, list, list]]:
    """What an unpacked `load` archive holds: (config path, layer paths, names)
    for each image, from Docker's manifest.json or else OCI's index.json."""
    if os.path.lexists(os.path.join(top, "manifest.json")):
        manifest = _read_member(archive, top, "manifest.json", "manifest.json")
        entries = [_fields(archive, m, "an entry of manifest.json", {"Config": str, "Layers": list})
                   for m in (manifest if isinstance(manifest, list) else [None])]
        names = [m.get("RepoTags") or [] for m in manifest]
        if not all(isinstance(n, list) for n in names):
            raise MinidockerError(f"{archive}: manifest.json: RepoTags must be a list", EXIT_DATA)
        return [(config, layers, n) for (config, layers), n in zip(entries, names, strict=True)]
    if not os.path.lexists(os.path.join(top, "index.json")):
        raise MinidockerError(f"{archive}: neither a docker save archive nor an OCI image layout", EXIT_DATA)
    (manifests,) = _fields(archive, _read_member(archive, top, "index.json", "index.json"), "index.json",
                           {"manifests": list})
    images = []
    for m in manifests:
        (digest,) = _fields(archive, m, "an entry of index.json", {"digest": str})
        manifest = _read_member(archive, top, _blob(digest, "a manifest in index.json"), "manifest")
        if isinstance(manifest, dict) and "manifests" in manifest:  # a multi-platform image: load ours
            entry = platform_entry(manifest, host_platform())
            manifest = _read_member(archive, top, _blob(entry.get("digest"), "a manifest in an index"), "manifest")
        config, layers = _fields(archive, manifest, f"manifest {digest}", {"config": dict, "layers": list})
        # org.opencontainers.image.ref.name is a tag alone: without a full name, load by ID.
        annotations = m.get("annotations")
        name = annotations.get("io.containerd.image.name") if isinstance(annotations, dict) else ""
        images.append((_blob(config.get("digest"), "an image config"),
                       [_blob(d.get("digest") if isinstance(d, dict) else d, "a layer") for d in layers],
                       [name]))
    return images


def load(path: str) -> list[str]:
    """`docker load` of a `docker save` tarball or an OCI layout tarball; the names loaded."""
    import tempfile

    from lib import registry

    check_members(path, archive=True)
    os.makedirs(_dir(), exist_ok=True)
    loaded: list[str] = []
    created: list[str] = []  # the layers this load stored: the only ones its failure may take back
    try:
        with tempfile.TemporaryDirectory(prefix=".load-", dir=_dir()) as tmp:
            try:
                host.run(["tar", "-C", tmp, "--no-same-owner", "-xf", path], "images")
            except host.HostError as e:
                raise MinidockerError(f"{path}: {_tar_said(e.detail)}", EXIT_DATA) from None
            for config_path, layer_paths, names in _archive_images(path, tmp):
                names = [n for n in names if n]
                for name in names:  # a name, not a path or a table row
                    try:
                        registry.parse(name if isinstance(name, str) else "")
                    except MinidockerError:
                        raise MinidockerError(f"{path}: invalid image name {str(name)[:80]!r}", EXIT_DATA) from None
                config = checked_config(_read_member(path, tmp, config_path, "config"), f"{path}: {config_path}")
                wanted = config["rootfs"]["diff_ids"]
                if len(wanted) != len(layer_paths):
                    raise MinidockerError(f"{path}: {config_path} names {len(wanted)} layers, the manifest "
                                          f"{len(layer_paths)}", EXIT_DATA)
                size = 0
                for rel, diff_id in zip(layer_paths, wanted, strict=True):
                    _, layer_bytes, new = store_layer_file(_member(path, tmp, rel, "layer"), diff_id, str(rel))
                    created += [diff_id] if new else []
                    size += layer_bytes
                for name in names or [""]:
                    image_id = store_image(name, wanted, size, config.get("config") or {},
                                           created=config.get("created") or "")
                    loaded.append(f"Loaded image: {name}" if name else f"Loaded image ID: sha256:{image_id}")
    except BaseException:
        forget_layers(created)
        raise
    return loaded
