"""Pulling images: the registry HTTP API v2 (the OCI distribution spec).

    GET /v2/<name>/manifests/<tag or digest>   what the image is made of
    GET /v2/<name>/blobs/<digest>              its config, and each layer

1. **Names.** `ubuntu` means `docker.io/library/ubuntu:latest`, served by
   registry-1.docker.io.  A first component with a dot or a port, or
   `localhost`, is a registry of its own: `127.0.0.1:5000/busybox`.
2. **Auth.** An anonymous request may be answered 401 with
   `WWW-Authenticate: Bearer realm=...,service=...,scope=...`; asking the
   realm for a token and retrying with it is the whole of anonymous auth.
3. **Manifests.** A tag may name an index (a manifest list) with one image
   per platform: pick this host's (`linux/amd64`, `linux/arm64`), or
   `--platform`'s.  An image manifest names a config blob and the layer
   blobs, bottom first.  Its type is Docker's schema 2 or OCI's; some
   registries leave `mediaType` out of the body, so Content-Type says.
4. **Blobs are content-addressed.** Every byte is checked against the
   sha256 digest it was asked for before anything is stored, and each layer's
   uncompressed stream against the config's `rootfs.diff_ids`.

Plain http is used for registries on this machine (localhost, 127.0.0.1)
and, with --insecure, others; everything else is https.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request

from lib import images, state
from lib.host import MinidockerError

INDEX_TYPES = ("application/vnd.docker.distribution.manifest.list.v2+json",
               "application/vnd.oci.image.index.v1+json")
MANIFEST_TYPES = ("application/vnd.docker.distribution.manifest.v2+json",
                  "application/vnd.oci.image.manifest.v1+json")
DOCKER_HUB = "registry-1.docker.io"
EXIT_PULL = 1  # Docker's `pull` failures exit 1 (`run` turns them into 125)


def parse(ref: str) -> tuple[str, str, str, str]:
    """(registry, repository, tag or digest, name to show) for a reference."""
    name, _, digest = ref.partition("@")
    name, tag = images.parse_ref(name)
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = DOCKER_HUB, name if "/" in name else "library/" + name
    if registry == "docker.io":
        registry = DOCKER_HUB
    if not re.fullmatch(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*", repository):
        raise MinidockerError(f"invalid reference format: repository name must be lowercase: {ref}", EXIT_PULL)
    return registry, repository, digest or tag, f"{name}@{digest}" if digest else f"{name}:{tag}"


def host_platform() -> str:
    return "linux/" + {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(os.uname().machine,
                                                                                  os.uname().machine)


class Registry:
    def __init__(self, registry: str, repository: str, insecure: bool) -> None:
        local = registry.split(":")[0] in ("localhost", "127.0.0.1", "[::1]")
        self.base = f"{'http' if local or insecure else 'https'}://{registry}/v2/{repository}"
        self.repository, self.token = repository, ""

    def _open(self, url: str, accept: tuple[str, ...] = ()):
        headers = {"Accept": ", ".join(accept)} if accept else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30)
        except urllib.error.HTTPError as e:
            if e.code == 401 and not self.token and "bearer" in e.headers.get("WWW-Authenticate", "").lower():
                self.token = self._token(e.headers["WWW-Authenticate"])
                return self._open(url, accept)
            if e.code == 404:
                raise MinidockerError(f"manifest for {self.repository} not found: manifest unknown "
                                      "(does the image exist? is the name right?)", EXIT_PULL) from None
            raise MinidockerError(f"{url}: HTTP {e.code} {e.reason}", EXIT_PULL) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise MinidockerError(f"cannot reach the registry at {url}: {reason}", EXIT_PULL) from None

    def _token(self, challenge: str) -> str:
        """Anonymous bearer auth: ask the realm the challenge names for a token."""
        fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        query = urllib.parse.urlencode({k: v for k, v in fields.items() if k in ("service", "scope")})
        with self._open_plain(f"{fields['realm']}?{query}") as answer:
            body = json.load(answer)
        return body.get("token") or body.get("access_token", "")

    @staticmethod
    def _open_plain(url: str):
        try:
            return urllib.request.urlopen(url, timeout=30)
        except (urllib.error.URLError, OSError) as e:
            raise MinidockerError(f"cannot get a registry token from {url}: {e}", EXIT_PULL) from None

    def manifest(self, reference: str) -> tuple[dict, str, str]:
        """A manifest, its media type, and its digest."""
        with self._open(f"{self.base}/manifests/{reference}", INDEX_TYPES + MANIFEST_TYPES) as answer:
            raw = answer.read()
            header_type = answer.headers.get("Content-Type", "").split(";")[0]
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if reference.startswith("sha256:") and reference != digest:
            raise MinidockerError(f"manifest verification failed for digest {reference}", EXIT_PULL)
        body = json.loads(raw)
        return body, body.get("mediaType") or header_type, digest

    def blob(self, digest: str, into: str, progress: str = "") -> None:
        """Download a blob to a file, checking it is what its digest says."""
        algorithm, _, expected = digest.partition(":")
        if algorithm != "sha256":
            raise MinidockerError(f"unsupported digest algorithm: {digest}", EXIT_PULL)
        check, done = hashlib.sha256(), 0
        with self._open(f"{self.base}/blobs/{digest}") as answer, open(into, "wb") as out:
            total = int(answer.headers.get("Content-Length") or 0)
            while chunk := answer.read(1 << 16):
                check.update(chunk)
                out.write(chunk)
                done += len(chunk)
                if progress and sys.stderr.isatty():
                    print(f"\r{progress}: {done / 1e6:.1f}/{total / 1e6:.1f} MB", end="", file=sys.stderr)
        if progress and sys.stderr.isatty():
            print(file=sys.stderr)
        if check.hexdigest() != expected:
            raise MinidockerError(f"filesystem layer verification failed for digest {digest}", EXIT_PULL)


def _choose(index: dict, platform: str) -> dict:
    os_, _, arch = platform.partition("/")
    arch, _, variant = arch.partition("/")
    for entry in index.get("manifests", []):
        p = entry.get("platform", {})
        if p.get("os") == os_ and p.get("architecture") == arch and (not variant or p.get("variant") == variant):
            return entry
    offered = ", ".join(f"{m['platform']['os']}/{m['platform']['architecture']}"
                        for m in index.get("manifests", []) if "platform" in m)
    raise MinidockerError(f"no matching manifest for {platform} in the manifest list entries ({offered})",
                          EXIT_PULL)


def pull(ref: str, platform: str = "", insecure: bool = False) -> str:
    """Fetch an image and its layers into the store; its image ID."""
    registry, repository, reference, shown = parse(ref)
    remote = Registry(registry, repository, insecure)
    manifest, kind, digest = remote.manifest(reference)
    if kind in INDEX_TYPES or "manifests" in manifest:
        manifest, kind, digest = remote.manifest(_choose(manifest, platform or host_platform())["digest"])
    if kind not in MANIFEST_TYPES and manifest.get("schemaVersion") != 2:
        raise MinidockerError(f"unsupported manifest type {kind or manifest.get('schemaVersion')}", EXIT_PULL)
    os.makedirs(state.path("images"), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pull-", dir=state.path("images")) as tmp:
        remote.blob(manifest["config"]["digest"], os.path.join(tmp, "config"))
        with open(os.path.join(tmp, "config"), "rb") as f:
            config = json.load(f)
        wanted = config["rootfs"]["diff_ids"]
        if len(wanted) != len(manifest["layers"]):
            raise MinidockerError("the manifest and the image config disagree on the number of layers", EXIT_PULL)
        diff_ids, size = [], 0
        for i, layer in enumerate(manifest["layers"]):  # bottom first: the order is the image
            path = os.path.join(tmp, f"layer{i}")
            stored = os.path.isdir(images.layer_path(wanted[i]))
            if not stored:
                remote.blob(layer["digest"], path, progress=f"{layer['digest'][7:19]} layer {i + 1}")
                diff_id, _ = images.store_layer_file(path)
                if diff_id != wanted[i]:
                    state.remove_tree(images.layer_path(diff_id))
                    raise MinidockerError(f"layer {layer['digest']}: its content is {diff_id}, the image says "
                                          f"{wanted[i]}", EXIT_PULL)
                os.unlink(path)
            diff_ids.append(wanted[i])
            size += images.layer_size(wanted[i])
    image_id = images.store_image(shown, diff_ids, size, config.get("config") or {},
                                  created=config.get("created", ""), digest=digest)
    return image_id
