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

Plain http is used for registries on this machine (localhost, 127.0.0.0/8,
[::1], as Docker treats them) and, with --insecure, others; everything else
is https.

Everything a registry sends is hostile until checked:

* **Digests become paths and URLs**, so each must be `sha256:` and 64 hex
  digits (images.checked_digest); `sha256:../../x` is refused, never joined.
* **Sizes are capped.** A manifest, a config and a token answer are small
  JSON: at most 4 MiB, 4 MiB and 1 MiB (4 MiB is the distribution
  registry's own limit for a manifest).  A blob may not grow past the size
  its descriptor declares, and no layer may declare more than 16 GiB, so a
  registry that streams forever cannot fill the disk.  (A small layer that
  decompresses to a huge tree is bounded by the disk only, as in Docker.)
* **The token goes only where it was given.**  The realm that hands it out
  must be http(s): urllib would read `file:///root/...` as gladly and send
  what it found as our token.  On a redirect to another host (Docker Hub
  sends blobs to a CDN), urllib would copy the Authorization header along;
  it is dropped there, as Go's net/http (and so Docker) does.
* **A failed pull takes back only what it stored itself**, never a layer it
  found stored: other images stand on those (images.forget_layers).
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
MAX_MANIFEST = MAX_CONFIG = 4 << 20
MAX_TOKEN = 1 << 20
MAX_LAYER = 16 << 30


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
    if digest:
        images.checked_digest(digest, ref, EXIT_PULL)
    elif not re.fullmatch(r"[\w][\w.-]{0,127}", tag):
        raise MinidockerError(f"invalid reference format: bad tag: {ref}", EXIT_PULL)
    return registry, repository, digest or tag, f"{name}@{digest}" if digest else f"{name}:{tag}"


def is_local(registry: str) -> bool:
    """localhost, 127.0.0.0/8 or [::1]: Docker's default insecure registries."""
    import ipaddress

    host = urllib.parse.urlsplit("//" + registry).hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _TokenStaysHome(urllib.request.HTTPRedirectHandler):
    """Follow a registry's redirect, but not with our token to another host.

    urllib copies every header of a request to the one it redirects to,
    Authorization included: a blob redirect would hand the bearer token to
    whatever host the registry (or anyone who can make it redirect) names.
    """

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            was, now = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(new.full_url)
            if now.scheme not in ("http", "https"):
                raise MinidockerError(f"refusing a redirect to {newurl[:80]}: not http(s)", EXIT_PULL)
            if (was.scheme, was.netloc) != (now.scheme, now.netloc):
                new.remove_header("Authorization")
        return new


def _read(answer, cap: int, what: str) -> bytes:
    """A small answer whole, or a refusal once it passes `cap` bytes."""
    body = answer.read(cap + 1)
    if len(body) > cap:
        raise MinidockerError(f"{what} is larger than {cap >> 20} MiB: refused", EXIT_PULL)
    return body


def _descriptor(value: object, what: str, cap: int) -> dict:
    """A manifest's pointer to a blob: a valid digest and a size within `cap`."""
    if not isinstance(value, dict):
        raise MinidockerError(f"the manifest's {what} is not a descriptor", EXIT_PULL)
    images.checked_digest(value.get("digest"), what, EXIT_PULL)
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise MinidockerError(f"the manifest's {what} has no valid size", EXIT_PULL)
    if size > cap:
        raise MinidockerError(f"the manifest's {what} is {size} bytes, more than the {cap >> 20} MiB "
                              "minidocker takes", EXIT_PULL)
    return value


def _json(raw: bytes, what: str) -> dict:
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise MinidockerError(f"{what} is not JSON ({e})", EXIT_PULL) from None
    if not isinstance(body, dict):
        raise MinidockerError(f"{what} is not a JSON object", EXIT_PULL)
    return body


class Registry:
    def __init__(self, registry: str, repository: str, insecure: bool) -> None:
        self.base = f"{'http' if is_local(registry) or insecure else 'https'}://{registry}/v2/{repository}"
        self.repository, self.token = repository, ""
        self.opener = urllib.request.build_opener(_TokenStaysHome)

    def _open(self, url: str, accept: tuple[str, ...] = (), missing: str = ""):
        headers = {"Accept": ", ".join(accept)} if accept else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            return self.opener.open(urllib.request.Request(url, headers=headers), timeout=30)
        except urllib.error.HTTPError as e:
            if e.code == 401 and not self.token and "bearer" in e.headers.get("WWW-Authenticate", "").lower():
                self.token = self._token(e.headers["WWW-Authenticate"])
                return self._open(url, accept, missing)
            if e.code == 404:
                raise MinidockerError(missing or f"{url}: not found", EXIT_PULL) from None
            raise MinidockerError(f"{url}: HTTP {e.code} {e.reason}", EXIT_PULL) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise MinidockerError(f"cannot reach the registry at {url}: {reason}", EXIT_PULL) from None

    def _token(self, challenge: str) -> str:
        """Anonymous bearer auth: ask the realm the challenge names for a token."""
        fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = fields.get("realm", "")
        if urllib.parse.urlsplit(realm).scheme not in ("http", "https"):
            raise MinidockerError(f"refusing the registry's token realm {realm[:80]!r}: not an http(s) URL",
                                  EXIT_PULL)
        query = urllib.parse.urlencode({k: v for k, v in fields.items() if k in ("service", "scope")})
        try:
            with self.opener.open(f"{realm}?{query}", timeout=30) as answer:
                body = _json(_read(answer, MAX_TOKEN, f"the token from {realm}"), f"the token from {realm}")
        except (urllib.error.URLError, OSError) as e:
            raise MinidockerError(f"cannot get a registry token from {realm}: {e}", EXIT_PULL) from None
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str) or not re.fullmatch(r"[\x21-\x7e]+", token):  # it goes into a header
            raise MinidockerError(f"the answer from {realm} holds no usable token", EXIT_PULL)
        return token

    def manifest(self, reference: str) -> tuple[dict, str, str]:
        """A manifest, its media type, and its digest."""
        missing = f"manifest for {self.repository}:{reference} not found: manifest unknown"
        with self._open(f"{self.base}/manifests/{reference}", INDEX_TYPES + MANIFEST_TYPES, missing) as answer:
            raw = _read(answer, MAX_MANIFEST, f"the manifest of {self.repository}")
            header_type = answer.headers.get("Content-Type", "").split(";")[0]
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if reference.startswith("sha256:") and reference != digest:
            raise MinidockerError(f"manifest verification failed for digest {reference}", EXIT_PULL)
        body = _json(raw, f"the manifest of {self.repository}")
        return body, body.get("mediaType") or header_type, digest

    def blob(self, descriptor: dict, into: str, progress: str = "") -> None:
        """Download a blob to a file, checking it is what its descriptor says:
        never a byte past its size, and its sha256 digest."""
        digest, size = descriptor["digest"], descriptor["size"]
        check, done = hashlib.sha256(), 0
        url = f"{self.base}/blobs/{digest}"
        with self._open(url, missing=f"blob {digest} not found: blob unknown") as answer, open(into, "wb") as out:
            while chunk := answer.read(1 << 16):
                done += len(chunk)
                if done > size:
                    raise MinidockerError(f"blob {digest} is larger than the {size} bytes its manifest says: "
                                          "refused", EXIT_PULL)
                check.update(chunk)
                out.write(chunk)
                if progress and sys.stderr.isatty():
                    print(f"\r{progress}: {done / 1e6:.1f}/{size / 1e6:.1f} MB", end="", file=sys.stderr)
        if progress and sys.stderr.isatty():
            print(file=sys.stderr)
        if done != size or "sha256:" + check.hexdigest() != digest:
            raise MinidockerError(f"filesystem layer verification failed for digest {digest}", EXIT_PULL)


def pull(ref: str, platform: str = "", insecure: bool = False) -> str:
    """Fetch an image and its layers into the store; its image ID."""
    registry, repository, reference, shown = parse(ref)
    remote = Registry(registry, repository, insecure)
    manifest, kind, digest = remote.manifest(reference)
    if kind in INDEX_TYPES or "manifests" in manifest:
        entry = images.platform_entry(manifest, platform or images.host_platform())
        manifest, kind, digest = remote.manifest(images.checked_digest(entry.get("digest"), "a manifest list entry"))
    if kind not in MANIFEST_TYPES and manifest.get("schemaVersion") != 2:
        raise MinidockerError(f"unsupported manifest type {kind or manifest.get('schemaVersion')}", EXIT_PULL)
    config_blob = _descriptor(manifest.get("config"), "image config", MAX_CONFIG)
    if not isinstance(manifest.get("layers"), list):
        raise MinidockerError("the manifest lists no layers", EXIT_PULL)
    layers = [_descriptor(layer, f"layer {i + 1}", MAX_LAYER) for i, layer in enumerate(manifest["layers"])]
    os.makedirs(state.path("images"), exist_ok=True)
    created: list[str] = []  # the layers this pull stored: the only ones its failure may take back
    try:
        with tempfile.TemporaryDirectory(prefix=".pull-", dir=state.path("images")) as tmp:
            remote.blob(config_blob, os.path.join(tmp, "config"))
            with open(os.path.join(tmp, "config"), "rb") as f:
                what = f"the image config {config_blob['digest']}"
                config = images.checked_config(_json(f.read(), what), what)
            wanted = config["rootfs"]["diff_ids"]
            if len(wanted) != len(layers):
                raise MinidockerError("the manifest and the image config disagree on the number of layers",
                                      EXIT_PULL)
            size = 0
            # Bottom first: the order is the image.
            for i, (layer, diff_id) in enumerate(zip(layers, wanted, strict=True)):
                if not os.path.isdir(images.layer_path(diff_id)):
                    path = os.path.join(tmp, f"layer{i}")
                    remote.blob(layer, path, progress=f"{layer['digest'][7:19]} layer {i + 1}")
                    _, _, new = images.store_layer_file(path, diff_id, f"layer {layer['digest']}")
                    created += [diff_id] if new else []
                    os.unlink(path)
                size += images.layer_size(diff_id)
            return images.store_image(shown, wanted, size, config.get("config") or {},
                                      created=config.get("created") or "", digest=digest)
    except BaseException:
        images.forget_layers(created)
        raise
