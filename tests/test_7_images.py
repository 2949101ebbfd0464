"""Images: pulled from a real registry (Debian's docker-registry, on the sandbox's
loopback, filled with skopeo from OCI layouts that fixtures/oci_layout.py builds)."""

from __future__ import annotations

import glob
import io
import os
import shutil
import subprocess
import sys
import tarfile
import time

import pytest
from conftest import SANDBOX, TOP, inspect, md

pytestmark = pytest.mark.order(7)
sys.path.insert(0, os.path.join(TOP, "fixtures"))

import oci_layout  # noqa: E402

REGISTRY = "127.0.0.1:5000"
IN_SANDBOX_PREFIX = ["nsenter", f"--net=/run/netns/{SANDBOX}"]
NEEDS = [tool for tool in ("docker-registry", "skopeo", "zstd") if not shutil.which(tool)]


def in_sandbox(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([*IN_SANDBOX_PREFIX, *argv], capture_output=True, text=True, check=True)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A registry on the sandbox's 127.0.0.1:5000, with the fixture images pushed."""
    if NEEDS:
        pytest.skip(f"needs {' and '.join(NEEDS)} (apt-get install docker-registry skopeo zstd: .ci/setup-host)")
    top = tmp_path_factory.mktemp("registry")
    (top / "config.yml").write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {top}/data\n"
                                    f"http:\n  addr: {REGISTRY}\nlog:\n  level: error\n")
    server = subprocess.Popen(["nsenter", f"--net=/run/netns/{SANDBOX}", "docker-registry", "serve",
                               str(top / "config.yml")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if subprocess.run(["nsenter", f"--net=/run/netns/{SANDBOX}", sys.executable, "-c",
                               f"import urllib.request; urllib.request.urlopen('http://{REGISTRY}/v2/')"],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        for kind, tag, name, copy_all in (
                ("busybox", "latest", "busybox:latest", False), ("busybox", "latest", "again:latest", False),
                ("whiteouts", "latest", "layered:1", False), ("multiarch", "latest", "multi:latest", True),
                ("unique", "latest", "corrupt:latest", False), ("zstd", "latest", "zstd:latest", False),
                ("shared", "a", "shareda:latest", False), ("shared", "b", "sharedb:latest", False)):
            layout = top / kind
            if not layout.exists():
                oci_layout.build(kind, str(layout))
            in_sandbox("skopeo", "copy", *(["--all"] if copy_all else []), "--dest-tls-verify=false",
                       f"oci:{layout}:{tag}", f"docker://{REGISTRY}/{name}")
        yield top
    finally:
        server.kill()
        server.wait()


def layers() -> set[str]:
    return {os.path.basename(p) for p in glob.glob(os.path.join(os.environ["MINIDOCKER_ROOT"], "images", "layers", "*"))
            if not p.endswith(".size")}


@pytest.mark.row("img", "pull", "from a registry over the v2 API; run it")
def test_pull_and_run(registry, row):
    out = md("pull", f"{REGISTRY}/busybox").stdout
    assert f"Downloaded {REGISTRY}/busybox:latest" in out
    assert md("run", "--rm", "--network", "none", f"{REGISTRY}/busybox", "echo", "pulled").stdout == "pulled\n"
    assert inspect(md("create", f"{REGISTRY}/busybox").stdout.strip())["Path"] == "sh"  # the image's Cmd
    row.result = "pulled, ran, Cmd honoured"


def test_layers_are_shared(registry):
    md("pull", f"{REGISTRY}/busybox")
    before = layers()
    md("pull", f"{REGISTRY}/again")  # the same layer under another name
    assert layers() == before


@pytest.mark.row("img", "Whiteouts", "a layer deletes a file and empties a directory")
def test_whiteouts(registry, row):
    md("pull", f"{REGISTRY}/layered:1")
    out = md("run", "--rm", "--network", "none", f"{REGISTRY}/layered:1", "sh", "-c",
             "ls /etc/secret 2>&1; ls /opt/data").stdout
    assert "No such file" in out and out.strip().endswith("c") and "a\n" not in out
    row.result = "/etc/secret gone; /opt/data holds only the top layer's c"


@pytest.mark.row("img", "Multi-platform", "this host's platform chosen from an index; --platform overrides")
def test_platform_choice(registry, row):
    md("pull", f"{REGISTRY}/multi")
    assert md("run", "--rm", "--network", "none", f"{REGISTRY}/multi").stdout == "amd64\n"
    md("pull", "--platform", "linux/arm64", f"{REGISTRY}/multi")
    assert md("run", "--rm", "--network", "none", f"{REGISTRY}/multi").stdout == "arm64\n"
    bad = md("pull", "--platform", "linux/s390x", f"{REGISTRY}/multi", check=False)
    assert bad.returncode == 1 and "no matching manifest" in bad.stderr
    row.result = "amd64 by default, arm64 asked for; s390x refused"


@pytest.mark.row("img", "Digest check", "a corrupted blob is refused; nothing stored")
def test_corrupted_blob_is_refused(registry, row):
    # Find the corrupt image's layer blob in the registry's storage, and flip its bytes.
    manifest = in_sandbox(sys.executable, "-c", "import urllib.request, json; r = urllib.request.Request("
                          f"'http://{REGISTRY}/v2/corrupt/manifests/latest', headers={{'Accept': "
                          "'application/vnd.oci.image.manifest.v1+json'}); "
                          "print(json.load(urllib.request.urlopen(r))['layers'][0]['digest'])").stdout.strip()
    blob = glob.glob(f"{registry}/data/docker/registry/v2/blobs/sha256/*/{manifest[7:]}/data")[0]
    with open(blob, "r+b") as f:
        f.seek(100)
        f.write(b"corrupted!")
    images_before = md("images").stdout  # (which makes busybox on a fresh root: count layers after it)
    before = layers()
    bad = md("pull", f"{REGISTRY}/corrupt", check=False)
    assert bad.returncode == 1 and "verification failed" in bad.stderr
    assert f"{REGISTRY}/corrupt" not in md("images").stdout
    assert layers() <= before and f"{REGISTRY}/corrupt" not in images_before
    row.result = bad.stderr.strip()[:60]


@pytest.mark.row("img", "zstd layers", "a zstd-compressed layer is pulled and runs")
def test_zstd_layer(registry, row):
    md("pull", f"{REGISTRY}/zstd")
    assert md("run", "--rm", "--network", "none", f"{REGISTRY}/zstd").stdout == "zstd\n"
    row.result = "application/vnd.oci.image.layer.v1.tar+zstd: ran"


def test_unknown_image(registry):
    pulled = md("pull", f"{REGISTRY}/no-such-image", check=False)
    run = md("run", "--pull", "missing", f"{REGISTRY}/no-such-image", "true", check=False)
    assert pulled.returncode == 1 and "manifest unknown" in pulled.stderr
    assert run.returncode == 125 and "Unable to find image" in run.stderr and "manifest unknown" in run.stderr
    assert md("ps", "-aq").stdout == ""


def test_rmi_and_tag(registry):
    md("pull", f"{REGISTRY}/layered:1")
    md("tag", f"{REGISTRY}/layered:1", "mine:v1")
    cid = md("create", "mine:v1").stdout.strip()
    refused = md("rmi", f"{REGISTRY}/layered:1", "mine:v1", check=False)
    assert refused.returncode == 1 and "is using its referenced image" in refused.stderr
    md("rm", cid)
    before = layers()
    out = md("rmi", f"{REGISTRY}/layered:1", "mine:v1").stdout
    assert "Untagged: mine:v1" in out and "Deleted: sha256:" in out
    assert len(before - layers()) == 2  # both of its layers: no other image uses them


def unique_name() -> str:
    return f"mdt-evil-{os.getpid()}-{os.urandom(4).hex()}"


def under_state_root(name: str) -> list[str]:
    """Every file or directory called `name` under the state root: where a
    layer's `../` would land if the unpacking only stripped it."""
    return [os.path.join(d, name) for d, dirs, files in os.walk(os.environ["MINIDOCKER_ROOT"]) if name in dirs + files]


def tar_of(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return out.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o755
    return info


@pytest.mark.row("img", "Hostile layer", "`../` x30 and a symlink-then-file: refused, nothing written outside")
def test_hostile_tarball_is_refused(tmp_path, row):
    target, name = f"/tmp/{unique_name()}", unique_name()
    os.mkdir(target)  # the symlink's target exists: a naive unpack would write into it
    try:
        attempts = {
            "../ x30": tar_of((member("../" * 30 + target.lstrip("/") + "/" + name), b"pwned\n")),
            "symlink, then a file through it": tar_of((member("x", tarfile.SYMTYPE, target), b""),
                                                      (member("x/" + name), b"pwned\n")),
        }
        results = []
        for i, (label, data) in enumerate(attempts.items()):
            (tmp_path / f"{i}.tar").write_bytes(data)
            done = md("import", str(tmp_path / f"{i}.tar"), f"evil{i}", check=False)
            assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
            reason = next(r for r in ("points outside the layer", "lies under a symlink") if r in done.stderr)
            results.append(f"{label}: {reason}")
            assert os.listdir(target) == [] and under_state_root(name) == []
        assert "evil" not in md("images").stdout
    finally:
        shutil.rmtree(target)
    row.result = "; ".join(results)


@pytest.mark.row("img", "save / load", "round trip keeps whiteouts; an OCI layout tarball loads")
def test_save_load_round_trip(registry, tmp_path, row):
    md("pull", f"{REGISTRY}/layered:1")
    archive = tmp_path / "layered.tar"
    md("save", "-o", str(archive), f"{REGISTRY}/layered:1")
    names = subprocess.run(["tar", "-tf", str(archive)], capture_output=True, text=True, check=True).stdout.split()
    assert {"manifest.json", "index.json", "oci-layout"} <= set(names)  # Docker's format and OCI's at once
    md("rmi", f"{REGISTRY}/layered:1")
    assert md("load", "-i", str(archive)).stdout.strip() == f"Loaded image: {REGISTRY}/layered:1"
    out = md("run", "--rm", "--network", "none", f"{REGISTRY}/layered:1", "sh", "-c",
             "ls /etc/secret 2>&1; ls /opt/data").stdout
    assert "No such file" in out and out.strip().endswith("c")
    layout = tmp_path / "layout"
    oci_layout.build("unique", str(layout))
    subprocess.run(["tar", "-C", str(layout), "-cf", str(tmp_path / "oci.tar"), "."], check=True)
    with open(tmp_path / "oci.tar", "rb") as f:
        loaded = md("load", stdin=f).stdout.strip()
    assert loaded.startswith("Loaded image ID: sha256:")
    assert md("run", "--rm", "--network", "none", loaded.split()[-1][7:19], "cat", "/marker").stdout
    row.result = "whiteouts survive save/load; OCI layout loads"


# An auth proxy in front of the registry: 401 with a Bearer challenge unless the
# request carries the token its realm hands out, as Docker Hub answers.
AUTH_PROXY = r'''
import http.server, json, sys, urllib.request, urllib.error
TOKEN, REALM = "minidocker-test-token", "http://127.0.0.1:5001/token"
class Proxy(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def do_GET(self):
        if self.path.startswith("/token"):
            ok = "scope=repository%3Abusybox%3Apull" in self.path and "service=test-registry" in self.path
            body = json.dumps({"token": TOKEN} if ok else {}).encode()
            self.send_response(200 if ok else 400)
        elif self.headers.get("Authorization") != f"Bearer {TOKEN}":
            body = b'{"errors": [{"code": "UNAUTHORIZED"}]}'
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="{REALM}",service="test-registry",'
                                                 'scope="repository:busybox:pull"')
        else:
            request = urllib.request.Request("http://127.0.0.1:5000" + self.path,
                                             headers={"Accept": self.headers.get("Accept", "")})
            try:
                answer = urllib.request.urlopen(request)
            except urllib.error.HTTPError as e:
                answer = e
            body = answer.read()
            self.send_response(answer.status if hasattr(answer, "status") else answer.code)
            self.send_header("Content-Type", answer.headers.get("Content-Type", ""))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("127.0.0.1", 5001), Proxy).serve_forever()
'''


@pytest.mark.row("img", "Bearer auth", "401 + WWW-Authenticate: the token from its realm is used")
def test_bearer_token_challenge(registry, row):
    proxy = subprocess.Popen([*IN_SANDBOX_PREFIX, sys.executable, "-c", AUTH_PROXY])
    try:
        probe = "import socket; socket.create_connection(('127.0.0.1', 5001), 1)"
        for _ in range(100):
            if subprocess.run([*IN_SANDBOX_PREFIX, sys.executable, "-c", probe], capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        md("rmi", "-f", f"{REGISTRY}/busybox", "127.0.0.1:5001/busybox", check=False)
        out = md("pull", "127.0.0.1:5001/busybox").stdout
        assert "Downloaded 127.0.0.1:5001/busybox:latest" in out
        assert md("run", "--rm", "--network", "none", "127.0.0.1:5001/busybox", "echo", "authorized").stdout == \
            "authorized\n"
    finally:
        proxy.kill()
        proxy.wait()
    row.result = "challenged, token fetched, pulled"
