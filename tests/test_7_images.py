"""Images: pulled from a real registry (Debian's docker-registry, on the sandbox's
loopback, filled with skopeo from OCI layouts that fixtures/oci_layout.py builds)."""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import types

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


def image_rows() -> list[list[str]]:
    """`images` as REPOSITORY, TAG, IMAGE ID: without CREATED, which moves."""
    return [line.split()[:3] for line in md("images").stdout.splitlines()[1:]]


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
    here = {"x86_64": "amd64", "aarch64": "arm64"}[os.uname().machine]
    other = "arm64" if here == "amd64" else "amd64"
    md("pull", f"{REGISTRY}/multi")
    assert md("run", "--rm", "--network", "none", f"{REGISTRY}/multi").stdout == here + "\n"
    md("pull", "--platform", f"linux/{other}", f"{REGISTRY}/multi")
    assert md("run", "--rm", "--network", "none", f"{REGISTRY}/multi").stdout == other + "\n"
    bad = md("pull", "--platform", "linux/s390x", f"{REGISTRY}/multi", check=False)
    assert bad.returncode == 1 and "no matching manifest" in bad.stderr
    row.result = f"{here} by default, {other} asked for; s390x refused"


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


@pytest.mark.row("img", "Failed pull", "B shares A's layer, B's other blob lies: B refused, A still runs")
def test_failed_pull_keeps_shared_layers(registry, row):
    md("pull", f"{REGISTRY}/shareda")
    before = layers()
    # sharedb's second blob is intact (its digest is right) but unpacks to shareda's layer while its
    # config names another diff ID: only unpacking shows the lie, after the layer was found stored.
    bad = md("pull", f"{REGISTRY}/sharedb", check=False)
    assert bad.returncode == 1 and "its content is sha256:" in bad.stderr, bad.stderr
    assert layers() == before and f"{REGISTRY}/sharedb" not in md("images").stdout
    assert md("run", "--rm", "--network", "none", f"{REGISTRY}/shareda", "cat", "/marker").stdout
    row.result = "sharedb: " + bad.stderr.strip().split(": ", 2)[-1][:40] + "…; shareda runs"


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


def test_dangling_images_are_listed_and_filtered(tmp_path):
    """A name given to a new image leaves the old one nameless: Docker lists
    it as <none>, -f dangling=true finds it, and `rmi` of its ID removes it.
    It used to be invisible, and so kept for ever."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "one").write_text("1")
    first = md("import", str(tree), "mdt-dangle").stdout.strip().removeprefix("sha256:")[:12]
    (tree / "two").write_text("2")
    second = md("import", str(tree), "mdt-dangle").stdout.strip().removeprefix("sha256:")[:12]
    assert ["<none>", "<none>", first] in image_rows() and ["mdt-dangle", "latest", second] in image_rows()
    dangling = md("images", "-q", "-f", "dangling=true").stdout.split()
    assert first in dangling and second not in dangling  # (earlier tests may leave nameless images too)
    assert second in md("images", "-q", "-f", "dangling=false").stdout.split()
    assert md("images", "-q", "-f", "reference=mdt-dang*").stdout.split() == [second]
    assert md("images", "-q", "-f", "reference=mdt-dangle:latest").stdout.split() == [second]
    assert md("images", "-f", "reference=mdt-dangle", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").stdout == \
        f"mdt-dangle:latest {second}\n"
    bad = md("images", "-f", "size=big", check=False)
    assert (bad.returncode, bad.stderr) == (1, "minidocker: invalid filter 'size=big'\n")
    md("rmi", first, "mdt-dangle")
    assert all(first not in row and second not in row for row in image_rows())


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


def load_refused(archive, data: bytes, *phrases: str) -> str:
    """`load` of DATA must fail in one line that says one of `phrases`, soon; that line."""
    archive.write_bytes(data)
    done = md("load", "-i", str(archive), check=False, timeout=20)  # a FIFO read would hang for ever
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert any(p in done.stderr for p in phrases), done.stderr
    return done.stderr


@pytest.mark.row("img", "Hostile archive", "load: paths and digests out, symlinks, FIFOs, devices, links out: refused")
def test_load_refuses_hostile_archives(tmp_path, row):
    # A real image's files outside any archive: what an escaping path in one would load.
    outside = tmp_path / "outside"
    outside.mkdir()
    md("save", "-o", str(tmp_path / "busybox.tar"), "busybox")
    subprocess.run(["tar", "-C", str(outside), "-xf", str(tmp_path / "busybox.tar")], check=True)
    saved = json.loads((outside / "manifest.json").read_text())[0]
    index = json.loads((outside / "index.json").read_text())["manifests"][0]
    up = "../" * 30

    def away(rel: str) -> str:
        return up + str(outside / rel).lstrip("/")

    escaping = [{"Config": away(saved["Config"]), "Layers": [away(x) for x in saved["Layers"]],
                 "RepoTags": ["escaped:latest"]}]
    escaping_index = {"schemaVersion": 2, "manifests": [{**index, "digest": "sha256:" + away(
        "blobs/sha256/" + index["digest"][7:]), "annotations": {"io.containerd.image.name": "escaped:latest"}}]}
    device = member("null", tarfile.CHRTYPE)
    device.devmajor, device.devminor = 1, 3
    cases = {
        "Config/Layers out": (tar_of((member("manifest.json"), json.dumps(escaping).encode())),
                              "points outside the archive"),
        "index digest out": (tar_of((member("oci-layout"), b'{"imageLayoutVersion": "1.0.0"}'),
                                    (member("index.json"), json.dumps(escaping_index).encode())), "invalid digest"),
        "symlink": (tar_of((member("manifest.json", tarfile.SYMTYPE, str(outside / "manifest.json")), b"")),
                    "is a symlink"),
        "FIFO": (tar_of((member("manifest.json", tarfile.FIFOTYPE), b"")), "is not a file or a directory"),
        "hard link out": (tar_of((member("h", tarfile.LNKTYPE, "../../../etc/passwd"), b"")),
                          "points outside the archive"),
        "device": (tar_of((device, b"")), "is not a file or a directory"),
    }
    for i, (data, phrase) in enumerate(cases.values()):
        load_refused(tmp_path / f"{i}.tar", data, phrase)
    assert "escaped" not in md("images").stdout
    row.result = ", ".join(cases) + ": refused"


@pytest.mark.row("img", "Broken archives", "truncated or corrupt tar, gzip and zstd, to import and load: one line")
def test_broken_archives(tmp_path, row):
    if not shutil.which("zstd"):
        pytest.skip("needs zstd (apt-get install zstd: .ci/setup-host)")
    md("save", "-o", str(tmp_path / "busybox.tar"), "busybox")
    saved = (tmp_path / "busybox.tar").read_bytes()
    layer = tar_of(*[(member(f"file{i}"), os.urandom(200_000)) for i in range(3)])  # many 64 KiB reads
    zstd = subprocess.run(["zstd", "-q", "-c"], input=layer, capture_output=True, check=True).stdout

    def corrupt(packed: bytes) -> bytes:  # mid-stream, inside a member's data: not where tarfile reads a header
        middle = len(packed) // 2
        return packed[:middle] + bytes(b ^ 0xFF for b in packed[middle:middle + 200]) + packed[middle + 200:]

    # A file, then a file under it: every member is harmless, yet tar cannot unpack it.
    unpackable = tar_of((member("a"), b"file\n"), (member("a/b"), b"under a file\n"))
    cases = {"load": {"half a save": saved[:len(saved) // 2], "not a tar": b"not a tar at all", "empty": b"",
                      "a file under a file": unpackable},
             "import": {"half a tar": layer[:len(layer) // 2], "half a gzip": gzip.compress(layer)[:len(layer) // 2],
                        "corrupt gzip": corrupt(gzip.compress(layer)), "corrupt zstd": corrupt(zstd),
                        "a file under a file": unpackable}}
    before, images_before = layers(), image_rows()
    for verb, broken in cases.items():
        for name, data in broken.items():
            (tmp_path / "broken.tar").write_bytes(data)
            done = md(verb, *(["-i"] if verb == "load" else []), str(tmp_path / "broken.tar"),
                      *(["broken"] if verb == "import" else []), check=False)
            assert done.returncode == 1 and done.stderr.count("\n") == 1, f"{verb} {name}: {done.stderr}"
    assert layers() == before and image_rows() == images_before
    assert not glob.glob(os.path.join(os.environ["MINIDOCKER_ROOT"], "images", ".*"))  # no half-unpacked leftovers
    row.result = "; ".join(f"{verb}: {', '.join(broken)}" for verb, broken in cases.items()) + ": refused"


def fresh_root() -> tuple[str, dict]:
    """A new, empty state root (on the suite's own filesystem, which overlay accepts) and its env."""
    root = tempfile.mkdtemp(prefix="fresh-", dir=os.environ["MINIDOCKER_ROOT"])
    return root, {**os.environ, "MINIDOCKER_ROOT": root}


@pytest.mark.row("img", "Fresh state root", "`images` lists the built-in busybox; `save busybox` works")
def test_fresh_state_root(tmp_path, row):
    roots = [fresh_root() for _ in range(3)]
    try:
        listed = md("images", env=roots[0][1]).stdout.splitlines()
        assert [line.split()[:2] for line in listed[1:]] == [["busybox", "latest"]]
        md("save", "-o", str(tmp_path / "busybox.tar"), "busybox", env=roots[1][1])
        assert md("load", "-i", str(tmp_path / "busybox.tar"), env=roots[2][1]).stdout == \
            "Loaded image: busybox:latest\n"
        assert md("run", "--rm", "--network", "none", "busybox", "echo", "ok", env=roots[2][1]).stdout == "ok\n"
    finally:
        for root, _ in roots:
            shutil.rmtree(root, ignore_errors=True)
    row.result = "listed; saved, loaded elsewhere, ran"


def damage(root: str, what: str, host_dir: str) -> None:
    images = os.path.join(root, "images")
    repos = os.path.join(images, "repositories.json")
    with open(repos) as f:
        image_id = json.load(f)["busybox:latest"]
    config = os.path.join(images, "configs", image_id + ".json")
    with open(config) as f:
        body = json.load(f)
    if what == "repositories.json not JSON":
        (open(repos, "w")).close()
    elif what == "repositories.json naming a path":
        with open(repos, "w") as f:
            json.dump({"busybox:latest": "../" * 10 + "etc/passwd"}, f)
    elif what == "the config not JSON":
        with open(config, "w") as f:
            f.write("{")
    elif what == "a diff ID naming a host directory":
        body["rootfs"]["diff_ids"] = ["sha256:" + host_dir]
        with open(config, "w") as f:
            json.dump(body, f)
    elif what == "its layer gone":
        shutil.rmtree(os.path.join(images, "layers", body["rootfs"]["diff_ids"][0][7:]))
    elif what == "images/ gone":
        shutil.rmtree(images)


@pytest.mark.row("img", "Damaged store", "each image verb says what is wrong in one line; rmi recovers")
def test_damaged_store(tmp_path, row):
    host_dir = f"/tmp/{unique_name()}"  # a "layer" on the host, that a diff ID could name
    os.makedirs(host_dir + "/bin")
    for tool in ("sh", "cat"):
        shutil.copy("/bin/busybox", f"{host_dir}/bin/{tool}")
    (tmp_path / "marker").write_text("host files\n")
    shutil.copy(tmp_path / "marker", host_dir + "/marker")
    damages = ("repositories.json not JSON", "repositories.json naming a path", "the config not JSON",
               "a diff ID naming a host directory", "its layer gone", "images/ gone")
    try:
        for what in damages:
            root, env = fresh_root()
            try:
                md("run", "--rm", "--network", "none", "busybox", "true", env=env)  # makes busybox
                damage(root, what, host_dir)
                for verb in (["images"], ["run", "--rm", "--network", "none", "busybox", "sh", "-c", "cat /marker; :"],
                             ["save", "-o", str(tmp_path / "out.tar"), "busybox"], ["tag", "busybox", "other"]):
                    done = md(*verb, check=False, env=env)
                    assert "host files" not in done.stdout, what
                    assert done.stderr.count("\n") <= 1 and "internal error" not in done.stderr, (what, done.stderr)
                    # A store without images/ is a new one; `images` and `tag` need no layer: these just work.
                    works = what == "images/ gone" or (verb[0] in ("images", "tag") and what == "its layer gone")
                    assert done.returncode == 0 if works else done.returncode in (1, 125), (what, verb, done)
                if what.startswith("repositories.json"):  # as the message says: remove it
                    os.unlink(os.path.join(root, "images", "repositories.json"))
                else:
                    md("rmi", "-f", "busybox", env=env)
                assert md("run", "--rm", "--network", "none", "busybox", "echo", "ok", env=env).stdout == "ok\n"
            finally:
                shutil.rmtree(root, ignore_errors=True)
    finally:
        shutil.rmtree(host_dir)
    row.result = f"{len(damages)} damages: clear lines; rmi (or removing the named file) recovers"


# A registry that misbehaves, as a hostile or a careless one would: a stdlib HTTP server in the
# sandbox, on several loopback addresses at once, that logs every request (and the Authorization it
# carried) and exits on its own after `lifetime` seconds.  Each listener has a mode:
#   proxy     forwards to the real registry
#   auth      401 + Bearer challenge unless the request carries the token its realm hands out (as
#             Docker Hub answers); optionally redirects blobs to another host
#   endless   answers anything with 64 MiB of spaces
#   layouts   serves OCI layouts (hostile ones the tests make) as a registry would; a blob with a
#             `.endless` file beside it is streamed without end
BAD_REGISTRY = r"""
import http.server, json, os, re, socket, socketserver, sys, threading, urllib.error, urllib.request
conf = json.load(open(sys.argv[1]))
TOKEN = "minidocker-test-token"
lock = threading.Lock()

class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def send(self, code, body=b"", headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def endless(self, chunk):
        self.send_response(200)
        self.end_headers()
        try:
            for _ in range((64 << 20) // len(chunk)):
                self.wfile.write(chunk)
        except OSError:
            pass  # the client hung up: what a capped client does

    def proxy(self):
        request = urllib.request.Request(conf["upstream"] + self.path, headers={"Accept": self.headers["Accept"] or ""})
        try:
            answer = urllib.request.urlopen(request, timeout=10)
        except urllib.error.HTTPError as e:
            answer = e
        self.send(getattr(answer, "status", None) or answer.code, answer.read(),
                  [("Content-Type", answer.headers.get("Content-Type", ""))])

    def layouts(self):
        parts = self.path.split("/")
        if len(parts) != 5 or parts[1] != "v2":
            return self.send(404)
        layout, ref = os.path.join(conf["layouts"], parts[2]), parts[4]
        if parts[3] == "manifests" and not ref.startswith("sha256:"):
            with open(os.path.join(layout, "index.json")) as f:
                ref = json.load(f)["manifests"][0]["digest"]
        blob = os.path.join(layout, "blobs", "sha256", ref.removeprefix("sha256:"))
        if not re.fullmatch("sha256:[0-9a-f]{64}", ref) or not os.path.exists(blob):
            return self.send(404)
        if os.path.exists(blob + ".endless"):
            return self.endless(b"\0" * 65536)
        with open(blob, "rb") as f:
            body = f.read()
        kind = json.loads(body).get("mediaType", "") if parts[3] == "manifests" else "application/octet-stream"
        self.send(200, body, [("Content-Type", kind)])

    def do_GET(self):
        me = self.server.listener
        with lock, open(conf["log"], "a") as f:
            f.write(json.dumps({"listener": me["name"], "path": self.path,
                                "auth": self.headers["Authorization"] or ""}) + "\n")
        if me["mode"] == "endless":
            return self.endless(b" " * 65536)
        if me["mode"] in ("proxy", "layouts"):
            return getattr(self, me["mode"])()
        if self.path.startswith("/token"):
            ok = "scope=repository%3Abusybox%3Apull" in self.path and "service=test-registry" in self.path
            return self.send(200 if ok else 400, json.dumps({"token": TOKEN} if ok else {}).encode())
        if self.headers["Authorization"] != "Bearer " + TOKEN:
            challenge = f'Bearer realm="{me["realm"]}",service="test-registry",scope="repository:busybox:pull"'
            return self.send(401, b'{"errors": [{"code": "UNAUTHORIZED"}]}', [("WWW-Authenticate", challenge)])
        if "/blobs/" in self.path and me.get("redirect"):
            return self.send(307, b"", [("Location", me["redirect"] + self.path)])
        self.proxy()

class Server(http.server.ThreadingHTTPServer):
    def server_bind(self):
        # HTTPServer's own asks DNS for the address's name (getfqdn): from
        # the sandbox, no resolver answers, and each listener waited 10 s.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

for listener in conf["listeners"]:
    family = socket.AF_INET6 if ":" in listener["host"] else socket.AF_INET
    server_class = type("Server", (Server,), {"address_family": family})
    server = server_class((listener["host"], listener["port"]), Handler)
    server.listener = listener
    threading.Thread(target=server.serve_forever, daemon=True).start()
print("ready", flush=True)
threading.Event().wait(conf["lifetime"])
"""
BAD = {  # name: (address, port, mode, extra)
    "auth": ("127.0.0.1", 5001, "auth", {"realm": "http://127.0.0.1:5001/token"}),
    "redirecting": ("127.0.0.1", 5002, "auth", {"realm": "http://127.0.0.1:5002/token",
                                                "redirect": "http://127.0.0.2:5003"}),
    "elsewhere": ("127.0.0.2", 5003, "proxy", {}),
    "file-realm": ("127.0.0.1", 5004, "auth", {}),  # realm: the fixture's file:// URL
    "endless": ("127.0.0.1", 5005, "endless", {}),
    "endless-token": ("127.0.0.1", 5006, "auth", {"realm": "http://127.0.0.1:5005/token"}),
    "ipv6": ("::1", 5007, "proxy", {}),
    "layouts": ("127.0.0.1", 5008, "layouts", {}),
}


def bad(name: str) -> str:
    host, port = BAD[name][:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@pytest.fixture(scope="module")
def bad_registry(registry, tmp_path_factory):
    """BAD_REGISTRY's listeners; `.log()` is every request they saw, `.secret` a token in a local file."""
    top = tmp_path_factory.mktemp("bad-registry")
    secret = "secret-" + os.urandom(8).hex()
    (top / "token.json").write_text(json.dumps({"token": secret}))
    (top / "layouts").mkdir()
    listeners = [{"name": name, "host": host, "port": port, "mode": mode, **extra}
                 for name, (host, port, mode, extra) in BAD.items()]
    # The `#` makes urllib drop the query a client appends: the file is read as it is.
    listeners[[x["name"] for x in listeners].index("file-realm")]["realm"] = f"file://{top}/token.json#"
    (top / "conf.json").write_text(json.dumps({"upstream": f"http://{REGISTRY}", "log": str(top / "log"),
                                               "layouts": str(top / "layouts"), "lifetime": 900,
                                               "listeners": listeners}))
    (top / "server.py").write_text(BAD_REGISTRY)
    server = subprocess.Popen([*IN_SANDBOX_PREFIX, sys.executable, str(top / "server.py"), str(top / "conf.json")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline() == "ready\n"
        yield types.SimpleNamespace(
            top=top, secret=secret, base=registry / "busybox",
            log=lambda: [json.loads(line) for line in (top / "log").read_text().splitlines()])
    finally:
        server.kill()
        server.wait()


def refused(ref: str, *phrases: str) -> str:
    """Pull `ref`: it must fail in one line that says one of `phrases`; that line."""
    done = md("pull", ref, check=False)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert any(p in done.stderr for p in phrases), done.stderr
    assert ref not in md("images").stdout
    return done.stderr.strip().removeprefix("minidocker: ")


@pytest.mark.row("img", "Bearer auth", "401 + WWW-Authenticate: the token from its realm is used")
def test_bearer_token_challenge(bad_registry, row):
    md("rmi", "-f", f"{REGISTRY}/busybox", f"{bad('auth')}/busybox", check=False)
    out = md("pull", f"{bad('auth')}/busybox").stdout
    assert f"Downloaded {bad('auth')}/busybox:latest" in out
    assert md("run", "--rm", "--network", "none", f"{bad('auth')}/busybox", "echo", "authorized").stdout == \
        "authorized\n"
    row.result = "challenged, token fetched, pulled"


@pytest.mark.row("img", "Token stays home", "a blob redirect to another host gets no Authorization")
def test_token_is_not_sent_to_another_host(bad_registry, row):
    md("pull", f"{bad('redirecting')}/busybox")
    seen = bad_registry.log()
    home = [e for e in seen if e["listener"] == "redirecting" and "/blobs/" in e["path"]]
    away = [e for e in seen if e["listener"] == "elsewhere" and "/blobs/" in e["path"]]
    assert home and all(e["auth"].startswith("Bearer ") for e in home)  # the token was there to leak
    assert away and [e["auth"] for e in away] == [""] * len(away)  # the redirects were followed, bare
    row.result = f"{len(away)} blob(s) fetched from 127.0.0.2 without it"


@pytest.mark.row("img", "Token realm", "a file:// realm is refused; the local file never becomes a token")
def test_token_realm_must_be_http(bad_registry, row):
    refused(f"{bad('file-realm')}/busybox", "token realm")
    assert not any(bad_registry.secret in e["auth"] for e in bad_registry.log())
    row.result = "refused: not an http(s) URL; the file's token never sent"


def hostile_layout(bad_registry, name: str, edit_config=None, edit_manifest=None) -> str:
    """A copy of the busybox layout, edited, served by the `layouts` listener as NAME."""
    layout = bad_registry.top / "layouts" / name
    shutil.copytree(bad_registry.base, layout)
    oci_layout.rewrite(str(layout), edit_config, edit_manifest)
    return f"{bad('layouts')}/{name}"


def layout_manifest(bad_registry, name: str) -> dict:
    layout = bad_registry.top / "layouts" / name
    digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    return json.loads((layout / "blobs" / "sha256" / digest[7:]).read_text())


@pytest.mark.row("img", "Download caps", "manifest 4 MiB, token 1 MiB, a blob past its size, a layer over 16 GiB")
def test_download_caps(bad_registry, row):
    results = [refused(f"{bad('endless')}/busybox", "larger than 4 MiB"),
               refused(f"{bad('endless-token')}/busybox", "larger than 1 MiB")]
    ref = hostile_layout(bad_registry, "endless-config")
    config = layout_manifest(bad_registry, "endless-config")["config"]
    (bad_registry.top / "layouts" / "endless-config" / "blobs" / "sha256" / (config["digest"][7:] + ".endless")).touch()
    results.append(refused(ref, f"larger than the {config['size']} bytes its manifest says"))
    ref = hostile_layout(bad_registry, "huge-layer", edit_manifest=lambda m: m["layers"][0].update(size=17 << 30))
    results.append(refused(ref, "more than the 16384 MiB"))
    assert len(results) == 4
    row.result = "endless manifest, endless token, endless config, a 17 GiB layer: refused"


@pytest.mark.row("img", "[::1] is local", "plain http to [::1] without --insecure, as to 127.0.0.1")
def test_ipv6_loopback_is_local(bad_registry, row):
    md("pull", f"{bad('ipv6')}/busybox")
    assert md("run", "--rm", "--network", "none", f"{bad('ipv6')}/busybox", "echo", "v6").stdout == "v6\n"
    assert any(e["listener"] == "ipv6" for e in bad_registry.log())
    row.result = f"pulled {bad('ipv6')}/busybox over http"


@pytest.mark.row("img", "Digests (pull)", "a diff ID naming a host directory, `..` in blob digests: refused")
def test_pull_refuses_digests_that_are_paths(bad_registry, row):
    # A "layer" on the host, with the .size file the store keeps beside each: without the digest
    # check, the pull finds it stored, and a container gets the host's directory as its root.
    host_dir = f"/tmp/{unique_name()}"
    os.makedirs(host_dir + "/bin")
    shutil.copy("/bin/busybox", host_dir + "/bin/sh")
    with open(host_dir + ".size", "w") as f:
        f.write("0")
    try:
        results = [refused(hostile_layout(bad_registry, "diffid-path", edit_config=lambda c: c["rootfs"].update(
            diff_ids=["sha256:" + host_dir])), "invalid digest")]
    finally:
        shutil.rmtree(host_dir)
        os.unlink(host_dir + ".size")
    dotdot = "sha256:" + "../" * 10 + "etc/passwd"
    results.append(refused(hostile_layout(bad_registry, "config-digest", edit_manifest=lambda m: m["config"].update(
        digest=dotdot)), "invalid digest"))
    results.append(refused(hostile_layout(bad_registry, "layer-digest", edit_manifest=lambda m: m["layers"][0].update(
        digest=dotdot)), "invalid digest"))
    # An index whose entry for this platform is a path.
    layout = bad_registry.top / "layouts" / "index-digest"
    shutil.copytree(bad_registry.base, layout)
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    inner = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": [{"digest": dotdot, "size": 1, "platform": {"os": "linux", "architecture": arch},
                                       "mediaType": "application/vnd.oci.image.manifest.v1+json"}]}).encode()
    digest = hashlib.sha256(inner).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(inner)
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"digest": "sha256:" + digest, "size": len(inner), "mediaType": "application/vnd.oci.image.index.v1+json"}]}))
    results.append(refused(f"{bad('layouts')}/index-digest", "invalid digest"))
    assert len(results) == 4
    row.result = "diff ID sha256:/tmp/…, config, layer and index entry sha256:../…: refused"
