"""The test harness: real containers, a private state root, the phase tables.

Every test runs minidocker.py as a user would, as root, against the real
kernel.  Nothing here is mocked.  What the tests create is kept apart from a
user's: a private MINIDOCKER_ROOT and a cgroup parent named for this run.
After every test, every container is removed, even when the test failed;
a test after which a record, cgroup or mount of a container survives that
removal fails.

Networks are the one thing a mistake could break for the whole machine, so
minidocker runs in a sandbox "host": a network namespace with a veth to an
"uplink" namespace that plays the internet (docs/testing.md).  Its bridge, NAT
rules and ip_forward are the sandbox's; the machine's are never touched, and
the last test checks that they did not change.

A test that replays a row of a phase's verification table says so with
`@pytest.mark.row(phase, check, expected)`; it may put what it measured in
`row.result`.  When the suite ends, the tables are printed (and written to
.verification/) as Check | Expected | Result.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SANDBOX = f"mdt-host-{os.getpid()}"  # minidocker's "host": its network namespace
UPLINK = f"mdt-up-{os.getpid()}"  # the pretend internet beyond it
HOST_IP, UPLINK_IP, PUBLIC_IP = "10.231.250.2", "10.231.250.1", "198.51.100.7"
# minidocker.py as the tests run it: inside the sandbox's network namespace.
# nsenter --net, not `ip netns exec`, which would remount /sys and hide cgroupfs.
# The interpreter runs it as its #! line does (-IS), with the standard
# library's DeprecationWarnings as errors: a warning today is a failure on
# the next Python.  MINIDOCKER_PYTHON picks another interpreter (tox -e py312).
PYTHON = [os.environ.get("MINIDOCKER_PYTHON", "/usr/bin/python3"), "-IS", "-W", "error::DeprecationWarning"]
MINIDOCKER = ["nsenter", f"--net=/run/netns/{SANDBOX}", *PYTHON, os.path.join(TOP, "minidocker.py")]
PHASES = {"1": "Phase 1: Isolation", "2A": "Phase 2A: Resources", "2B": "Phase 2B: Lifecycle",
          "2C": "Phase 2C: Networking", "3": "Phase 3: Networks", "4": "Security: the escape table",
          "img": "Images: pulled from a registry", "oci": "The OCI runtime face"}


def md(*args: str, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    """Run minidocker.py with arguments; fail the test on a non-zero exit."""
    done = subprocess.run([*MINIDOCKER, *args], capture_output=True, text=True, timeout=timeout, **kw)
    if check and done.returncode != 0:
        raise AssertionError(f"minidocker {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done


def inspect(ref: str) -> dict:
    return json.loads(md("inspect", ref).stdout)[0]


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {predicate.__name__}")


def read(path: str) -> str:
    """A file's text; "" if it is not there (a process gone, a cgroup removed)."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def command_lines() -> dict[int, str]:
    """Every process's command line, NUL-separated, by PID (procps's pgrep
    and pkill are not on a minimal machine)."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline") as f:
                found[int(pid)] = f.read()
        except OSError:
            continue  # gone meanwhile
    return found


def cgroup_hierarchies() -> dict[str, str]:
    """The mount point of every cgroup hierarchy, each v1 controller's and v2's,
    with its name as /proc/PID/cgroup shows it ("memory", "name=systemd"; "" for v2).

    On a pure v2 host that is /sys/fs/cgroup itself; on a hybrid one, the v1
    controllers and /sys/fs/cgroup/unified.  A check that walks only
    /sys/fs/cgroup/<controller> is blind on v2.
    """
    found = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] == "cgroup":
                found[fields[4]] = ",".join(o for o in fields[sep + 3].split(",") if o not in ("rw", "ro"))
            elif fields[sep + 1] == "cgroup2":
                found[fields[4]] = ""
    return found


def cgroup_v2() -> bool:
    """Whether this host's memory controller is on cgroup v2 (its driver is v2's)."""
    for point, name in cgroup_hierarchies().items():
        if name == "" and os.path.exists(os.path.join(point, "cgroup.controllers")):
            with open(os.path.join(point, "cgroup.controllers")) as f:
                if "memory" in f.read().split():
                    return True
    return False


def cgroup_limits(pid: int) -> dict[str, str]:
    """The memory, pids and CPU quota limits of the cgroups a process is in,
    v1 or v2, found from the process itself (/proc/PID/cgroup), not from
    where an engine is expected to put it."""
    tops = {name: top for top, name in cgroup_hierarchies().items()}
    limits = {}
    with open(f"/proc/{pid}/cgroup") as f:
        lines = f.read().splitlines()
    for line in lines:
        _, name, path = line.split(":", 2)
        files = {"memory": "memory.max", "pids": "pids.max", "cpu": "cpu.max"} if not name else \
            {"memory": "memory.limit_in_bytes", "pids": "pids.max", "cpu": "cpu.cfs_quota_us"}
        for controller, file in files.items():
            if name == "" or controller in name.split(","):
                with contextlib.suppress(OSError), open(f"{tops[name]}{path}/{file}") as f:
                    limits[controller] = f.read().split()[0]
    return limits


def cgroup_paths(relative: str) -> list[str]:
    """Where a cgroup (a path relative to each hierarchy's root) exists on this host."""
    return [d for d in (os.path.join(h, relative.strip("/")) for h in cgroup_hierarchies()) if os.path.isdir(d)]


def cgroup_dirs(cid: str) -> list[str]:
    """Every directory a container's cgroup has on this host, v1 or v2."""
    return cgroup_paths(f"{os.environ['MINIDOCKER_CGROUP_PARENT']}/{cid}")


def cgroups_below(relative: str) -> list[str]:
    """Every cgroup under `relative`, at any depth, in every hierarchy."""
    return sorted(os.path.join(top, d) for base in cgroup_paths(relative)
                  for top, dirs, _ in os.walk(base) for d in dirs)


def our_mounts() -> list[str]:
    """Every mount of the state root's, in any mount namespace of the machine.

    A container's mounts live in its own mount namespace, never in this
    process's: they show in the mountinfo of the processes that are in it.
    A mount that outlives its container is one that some process still
    holds, or one that leaked into the host's namespace: either way it shows
    in some process's mountinfo, so every namespace is read, once.
    """
    root = os.environ["MINIDOCKER_ROOT"]
    seen, found = set(), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            ns = os.stat(f"/proc/{pid}/ns/mnt").st_ino
            if ns in seen:
                continue
            with open(f"/proc/{pid}/mountinfo") as f:
                lines = f.read().splitlines()
        except OSError:  # gone meanwhile
            continue
        seen.add(ns)
        found += [f"pid {pid}: {line}" for line in lines if root + "/" in line]
    return found


def leftovers() -> list[str]:
    """What of a container is still here: records, cgroups, mounts."""
    records = os.path.join(os.environ["MINIDOCKER_ROOT"], "containers")
    return ([f"record {c}" for c in (os.listdir(records) if os.path.isdir(records) else [])]
            + [f"cgroup {d}" for d in cgroups_below(os.environ["MINIDOCKER_CGROUP_PARENT"])]
            + [f"mount {m}" for m in our_mounts()])


def sh(*argv: str, netns: str | None = None) -> str:
    """A host command (in a namespace of the sandbox, if named); its stdout.

    Through the `sh` library: a failure raises with the command and its
    stderr.  (minidocker itself uses subprocess: docs/performance.md.)
    """
    import sh as shell

    if netns:
        return str(shell.nsenter(f"--net=/run/netns/{netns}", *argv))
    return str(shell.Command(argv[0])(*argv[1:]))


def host_network_state() -> dict:
    """What the machine's own network looks like: it must never change."""
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        forward = f.read()
    links = sorted(line.split(":")[1].strip() for line in sh("ip", "-o", "link").splitlines())
    return {"routes": sh("ip", "route"), "addresses": sh("ip", "-o", "addr"), "links": links, "ip_forward": forward,
            "iptables": "\n".join(line for line in sh("iptables-save").splitlines()
                                  if not line.startswith("#") and not line.startswith(":"))}


HOST_BEFORE: dict = {}


def minidocker_cgroups() -> set[str]:
    """The cgroup parents named for minidocker, at the top of each hierarchy.

    Another test run's own parent (minidocker-test-<its pid>) is its business:
    several runs may share this machine.
    """
    import glob
    import re

    ours = os.environ.get("MINIDOCKER_CGROUP_PARENT", "")
    return {d for h in cgroup_hierarchies() for d in glob.glob(f"{h}/minidocker*")
            if not re.fullmatch(r"minidocker-test-\d+(-custom)?", os.path.basename(d))
            or os.path.basename(d).startswith(ours)}


# ------------------------------------------------------------- fixtures
def _make_sandbox() -> None:
    # The veth pair is born in the two namespaces: the machine's own never
    # sees it, not even for a moment (another run's host-network check may
    # be looking at that moment).
    script = f"""
        ip netns add {SANDBOX}
        ip netns add {UPLINK}
        ip link add mdt-h{os.getpid()} netns {SANDBOX} type veth peer name mdt-u{os.getpid()} netns {UPLINK}
        ip -n {SANDBOX} addr add {HOST_IP}/30 dev mdt-h{os.getpid()}
        ip -n {SANDBOX} link set mdt-h{os.getpid()} up
        ip -n {SANDBOX} link set lo up
        ip -n {SANDBOX} route add default via {UPLINK_IP}
        ip -n {UPLINK} addr add {UPLINK_IP}/30 dev mdt-u{os.getpid()}
        ip -n {UPLINK} link set mdt-u{os.getpid()} up
        ip -n {UPLINK} link set lo up
        ip -n {UPLINK} addr add {PUBLIC_IP}/32 dev lo
    """
    subprocess.run(["sh", "-ec", script], check=True)


@pytest.fixture(scope="session", autouse=True)
def state_root():
    """A state root and cgroup parent of this run's own; removed at the end."""
    root = tempfile.mkdtemp(prefix="minidocker-test-")
    fstype = subprocess.run(["stat", "-f", "-c", "%T", root], capture_output=True, text=True).stdout.strip()
    on_tmpfs = fstype in ("overlayfs", "v9fs", "9p", "fuseblk")
    if on_tmpfs:  # an overlay upper dir cannot live on overlayfs or 9p
        subprocess.run(["mount", "-t", "tmpfs", "minidocker-test", root], check=True)
    os.environ["MINIDOCKER_ROOT"] = root
    os.environ["MINIDOCKER_CGROUP_PARENT"] = f"minidocker-test-{os.getpid()}"
    # `run` pulls a missing image from Docker Hub, as Docker does: never here.
    # The pull tests name their registry, on the sandbox's loopback.
    os.environ["MINIDOCKER_PULL"] = "never"
    # Not this machine's /etc/minidocker/daemon.json: the defaults, unless a test writes one here.
    os.environ["MINIDOCKER_CONFIG"] = os.path.join(root, "daemon.json")
    HOST_BEFORE.update(host_network_state(), cgroups=minidocker_cgroups())
    _make_sandbox()
    yield root
    _remove_all_containers()
    md("network", "prune", check=False)
    for ns in (SANDBOX, UPLINK):  # takes their veths, bridges and rules along
        subprocess.run(["ip", "netns", "del", ns], check=False)
    for d in cgroup_paths(os.environ["MINIDOCKER_CGROUP_PARENT"]):
        os.rmdir(d)
    if on_tmpfs:
        subprocess.run(["umount", root], check=False)
    shutil.rmtree(root, ignore_errors=True)


def _remove_all_containers() -> None:
    ids = md("ps", "-aq", "--no-trunc", check=False).stdout.split()
    if ids:
        # Each takes a kill, a wait and conmon's exit command: seconds apiece
        # in an emulated machine, where 30 at once outran a flat 60 s.
        md("rm", "-f", *ids, check=False, timeout=60 + 10 * len(ids))


@pytest.fixture(autouse=True)
def clean_containers():
    """No test sees another's containers, and none outlives its test.

    After `rm -f` of every container, nothing of one may be left: no record,
    no cgroup, no mount in any namespace.  What is left fails the test that
    left it (so the leak is named where it happened), and is cleaned away so
    that the next test starts clean.
    """
    yield
    _remove_all_containers()
    left = leftovers()
    if left:
        _force_clean()
        pytest.fail("left behind after rm -f of every container:\n" + "\n".join(left), pytrace=False)


def _force_clean() -> None:
    """Kill what holds a leaked cgroup or mount namespace; unmount, remove the rest."""
    import contextlib
    import signal

    def mnt_ns(pid: str) -> int:
        try:
            return os.stat(f"/proc/{pid}/ns/mnt").st_ino
        except OSError:
            return 0

    own = mnt_ns("self")
    leaked = {mnt_ns(line.split()[1].rstrip(":")) for line in our_mounts()} - {own, 0}
    holders = {pid for pid in filter(str.isdigit, os.listdir("/proc")) if mnt_ns(pid) in leaked}
    for d in cgroups_below(os.environ["MINIDOCKER_CGROUP_PARENT"]):
        with open(os.path.join(d, "cgroup.procs")) as f:
            holders.update(f.read().split())
    for pid in holders:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    for line in reversed(our_mounts()):  # what is left is in this namespace: leaked into the host's
        if mnt_ns(line.split()[1].rstrip(":")) == own:
            subprocess.run(["umount", "-l", line.split()[6]], check=False)
    for d in reversed(cgroups_below(os.environ["MINIDOCKER_CGROUP_PARENT"])):
        wait_for(lambda d=d: _rmdir(d), timeout=5)
    shutil.rmtree(os.path.join(os.environ["MINIDOCKER_ROOT"], "containers"), ignore_errors=True)


def _rmdir(d: str) -> bool:
    try:
        os.rmdir(d)
        return True
    except OSError:  # busy until the killed processes are gone
        return False


class Row:
    result = ""


@pytest.fixture
def row(request) -> Row:
    r = Row()
    request.node.row_result = r
    return r


# ------------------------------------------------------ the phase tables
_rows: dict[str, list[tuple[str, str, str, str]]] = {}
SUMMARY: list[str] = []  # lines for the end of the run (the doc runner's count)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("row")
    if marker is None or (report.when == "setup" and report.passed) or report.when == "teardown":
        return
    phase, check, expected = marker.args
    measured = getattr(getattr(item, "row_result", None), "result", "")
    if report.passed:
        result = "✔ " + measured if measured else "✔"
    elif report.skipped:
        result = "- skipped: " + str(report.longrepr[2] if isinstance(report.longrepr, tuple) else "")
    else:
        message = report.longrepr.reprcrash.message if hasattr(report.longrepr, "reprcrash") else str(report.longrepr)
        result = "✘ " + message.splitlines()[0][:100]
    _rows.setdefault(phase, []).append((check, expected, result, item.nodeid))


def pytest_terminal_summary(terminalreporter):
    for line in SUMMARY:
        terminalreporter.write_line(line, bold=True)
    if not _rows:
        return
    from tabulate import tabulate

    out = os.environ.get("MINIDOCKER_VERIFICATION", os.path.join(TOP, ".verification"))
    os.makedirs(out, exist_ok=True)
    for phase, title in PHASES.items():
        rows = _rows.get(phase)
        if not rows:
            continue
        table = tabulate([r[:3] for r in rows], ["Check", "Expected", "Result"], tablefmt="github")
        terminalreporter.write_sep("=", f"{title} — verification")
        for line in table.splitlines():
            failed = "| ✘" in line
            terminalreporter.write_line(line, red=failed, green="| ✔" in line, bold=failed)
        with open(os.path.join(out, f"phase-{phase}.md"), "w") as f:
            f.write(f"# {title}\n\n{table}\n")
