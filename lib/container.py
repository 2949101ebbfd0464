"""Containers and their lifecycle: created -> running -> exited.

A container is a directory under the state root (state.py) and, while it
runs, a process tree on the host.  This module keeps the two in agreement.

Who watches a running container?  Its *monitor*: the process that started
it and is PID 1's parent, so that waitpid(2) tells it the exact exit code.
For `run` in the foreground the monitor is the CLI process itself; for
`run -d` it is a fork of the CLI that detaches (setsid) and lives on.  The
monitor copies the container's output into its log, records the exit, and
releases what the container held (cgroup, network).

The record must stay true even if the monitor dies (kill -9, a reboot).  So
every reader checks: is PID 1 still the process we started (pid and start
time)?  Is the monitor?  When both are gone and the record still says
running, the reader records the exit itself, with the unknown exit code 255,
and releases the resources: see `refresh`.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable

from lib import cgroups, dns, host, images, logs, network, ports, rootfs, spec, state, volumes
from lib.host import MinidockerError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from lib import runtime

# `runtime` and `subprocess` (5 ms and more of imports) are loaded by the
# verbs that start processes, not by ps, inspect or logs.

EXIT_UNKNOWN = 255  # what Docker reports for a container whose end nobody saw
DEFAULT_STOP_TIMEOUT = 10
# --init: where Docker puts its init (tini) in the container, and the host
# binaries that can be it.  Static ones only: the init runs on the image's
# root, and an image may have no C library at all (busybox-static, scratch).
DOCKER_INIT = "/sbin/docker-init"
INIT_BINARIES = ("/usr/bin/tini-static", "/usr/bin/catatonit")


# ------------------------------------------------------------ the record
class CorruptRecord(MinidockerError):
    def __init__(self, cid: str, why: str) -> None:
        super().__init__(f"container {cid[:12]}: its record is unreadable ({why}); `rm -f {cid[:12]}` removes it", 1)
        self.cid = cid


def load(cid: str) -> dict:
    try:
        rec = state.read_json(os.path.join(state.container_dir(cid), "container.json"))
    except FileNotFoundError:
        raise state.NoSuchContainer(cid) from None
    except (OSError, ValueError) as e:  # a crash mid-write is impossible (rename); a hand edit is not
        raise CorruptRecord(cid, str(e)) from None
    if not (isinstance(rec, dict) and rec.get("Id") == cid and isinstance(rec.get("State"), dict)
            and isinstance(rec.get("Minidocker"), dict) and isinstance(rec.get("HostConfig"), dict)):
        raise CorruptRecord(cid, "not a container record of this ID")
    return rec


def _save(rec: dict) -> None:
    state.write_json(os.path.join(state.container_dir(rec["Id"]), "container.json"), rec)


def update(cid: str, change: Callable[[dict], None]) -> dict:
    """Read, change and write a record under its lock: no lost updates."""
    with state.locked(state.container_dir(cid)):
        rec = load(cid)
        change(rec)
        _save(rec)
        return rec


def find(ref: str) -> dict:
    """The record for a name, ID or prefix, brought up to date."""
    return refresh(load(state.resolve(ref)))


def _private(rec: dict) -> dict:
    return rec["Minidocker"]


def running(rec: dict) -> bool:
    return rec["State"]["Running"]


# ---------------------------------------------------------------- create
def create(cfg: spec.RunConfig) -> str:
    """Make a container record and its directory; nothing runs yet."""
    mode, bindings, mounts = _network_mode(cfg), [ports.parse(p) for p in cfg.publish], \
        [volumes.parse(v) for v in cfg.volumes]
    if cfg.userns not in ("", "host", "private"):
        raise MinidockerError(f"invalid --userns {cfg.userns!r}: host or private")
    if cfg.workdir and not cfg.workdir.startswith("/"):
        raise MinidockerError(f"the working directory '{cfg.workdir}' is invalid, it needs to be an absolute path")
    if cfg.name and not state.valid_name(cfg.name):
        raise MinidockerError(f"Invalid container name ({cfg.name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    init = _init_binary() if cfg.init else ""
    image_id, image = images.lookup(cfg.image, cfg.pull)
    conf = image.get("config", {})
    entrypoint = cfg.entrypoint if cfg.entrypoint is not None else (conf.get("Entrypoint") or [])
    command = cfg.command or ([] if cfg.entrypoint is not None else conf.get("Cmd") or [])
    args = entrypoint + command
    if not args:
        raise MinidockerError("No command specified")
    env = _merge_env(conf.get("Env") or [], cfg.env)
    cfg.user = cfg.user or conf.get("User") or ""  # resolved at each start, in the container's /etc/passwd
    restart = spec.restart_policy(cfg.restart, cfg.auto_remove)
    log_config = logs.options(cfg.log_opts)
    if int(log_config["max-file"]) > 1:  # conmon must be able to rotate
        from lib import monitor

        monitor.check_rotation(int(log_config["max-file"]))
    cid = state.new_id()
    cdir = state.container_dir(cid)
    os.makedirs(cdir)
    name = cfg.name
    try:
        if name:
            state.claim_name(name, cid)
        else:
            for _ in range(20):
                name = state.random_name()
                with contextlib.suppress(MinidockerError):
                    state.claim_name(name, cid)
                    break
        for d in ("upper", "work", "rootfs"):
            os.mkdir(os.path.join(cdir, d))
        hostname = cfg.hostname or cid[:12]
        workdir = cfg.workdir or conf.get("WorkingDir") or "/"
        limits = spec.limits(cfg)
        cgroup = f"{cgroups.relative(cfg.cgroup_parent or cgroups.default_parent())}/{cid}"
        shift = spec.USERNS_BASE if cfg.userns == "private" else 0
        oci = _oci_spec(cdir, images.layer_dirs(image, shift), args, env, workdir, hostname, cfg, cgroup, limits)
        if shift:  # the container's own layer belongs to its root: USERNS_BASE outside
            for d in ("upper", "work"):
                os.chown(os.path.join(cdir, d), shift, shift)
            mapping = [{"containerID": 0, "hostID": shift, "size": spec.USERNS_SIZE}]
            oci["linux"].update(uidMappings=mapping, gidMappings=mapping)
            oci["linux"]["namespaces"].append({"type": "user"})
        oci["mounts"] += _name_files(cdir, mode, hostname, cfg.dns) + volumes.prepare(mounts)
        if init:  # last, so that no volume on /sbin hides it
            oci["mounts"].append({"destination": DOCKER_INIT, "type": "bind", "source": init,
                                  "options": ["bind", "ro"]})
            oci["process"]["args"] = [DOCKER_INIT, "--", *args]
        state.write_json(os.path.join(cdir, "config.json"), oci)
        _save({
            "Id": cid, "Created": state.now(), "Path": args[0], "Args": args[1:],
            "State": {"Status": "created", "Running": False, "Restarting": False, "Pid": 0, "ExitCode": 0,
                      "OOMKilled": False,
                      "Error": "", "StartedAt": state.ZERO_TIME, "FinishedAt": state.ZERO_TIME},
            "Image": "sha256:" + image_id, "Name": "/" + name, "RestartCount": 0,
            "LogPath": os.path.join(cdir, "container.log"),
            "HostConfig": {**limits, "AutoRemove": cfg.auto_remove, "RestartPolicy": restart,
                           "LogConfig": {"Type": "k8s-file", "Config": log_config}, "NetworkMode": mode,
                           "Privileged": cfg.privileged, "CapAdd": cfg.cap_add, "CapDrop": cfg.cap_drop,
                           "SecurityOpt": cfg.security_opt, "ReadonlyRootfs": cfg.read_only,
                           "UsernsMode": cfg.userns, **({"Init": True} if cfg.init else {}),
                           "CgroupParent": cfg.cgroup_parent, "IPAddress": cfg.ip, "Dns": cfg.dns,
                           "PortBindings": ports.show(bindings),
                           "Binds": [v for v, m in zip(cfg.volumes, mounts, strict=True) if m["Type"] == "bind"]},
            "Config": {"Hostname": hostname, "Env": env, "Cmd": command, "Entrypoint": entrypoint or None,
                       "Image": cfg.image, "WorkingDir": workdir, "Tty": cfg.tty, "OpenStdin": cfg.interactive,
                       "User": cfg.user},
            "NetworkSettings": {"IPAddress": "", "Gateway": "", "MacAddress": "", "Networks": {}, "Ports": {}},
            "Mounts": mounts,
            "Minidocker": {"Cgroup": cgroup, "PidStart": None, "MonitorPid": 0, "MonitorStart": None,
                           "StopRequested": False, "Publish": bindings, "Published": []},
        })
    except BaseException:
        state.release_name(name, cid)
        with contextlib.suppress(OSError):
            state.remove_tree(cdir)
        raise
    return cid


def _init_binary() -> str:
    """The host's init for --init: MINIDOCKER_INIT_PATH (dockerd's
    --init-path), else the first of INIT_BINARIES that is there."""
    wanted = os.environ.get("MINIDOCKER_INIT_PATH")
    for path in [wanted] if wanted else INIT_BINARIES:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise MinidockerError(f"--init: no init binary at {wanted or ' or '.join(INIT_BINARIES)} "
                          "(Debian's tini package has tini-static: apt-get install tini)")


def _merge_env(image_env: list[str], user_env: list[str]) -> list[str]:
    merged = {"PATH": images.DEFAULT_PATH}  # HOME comes from the user's passwd entry, at start (users.py)
    for item in image_env + user_env:
        key, sep, value = item.partition("=")
        if sep:
            merged[key] = value
        elif item in user_env and key in os.environ:
            # `-e KEY` passes the caller's value, as Docker.  An image's bare
            # KEY does not: an image could name AWS_SECRET_ACCESS_KEY.
            merged[key] = os.environ[key]
    return [f"{k}={v}" for k, v in merged.items()]


def _network_mode(cfg: spec.RunConfig) -> str:
    """Check --network (and what depends on it); the mode as it is recorded."""
    mode = cfg.network
    if mode.startswith("container:"):
        try:
            mode = "container:" + state.resolve(mode.removeprefix("container:"))
        except MinidockerError as e:  # `run` could not start: Docker's 125, not the 1 of `inspect nosuch`
            raise MinidockerError(str(e)) from None
    elif mode not in ("none", "host"):
        net = network.find(mode)
        if cfg.ip:
            if net is network.DEFAULT:
                raise MinidockerError("user specified IP address is supported on user defined networks only")
            if network.ip_to_int(cfg.ip) not in network.hosts(net["Subnet"]):
                raise MinidockerError(f"invalid IP address {cfg.ip}: not in {net['Subnet']} of network {mode}")
        return net["Name"]
    if cfg.ip:
        raise MinidockerError(f"--ip needs a user-defined network, not --network {cfg.network}")
    if cfg.publish:
        raise MinidockerError(f"published ports need a bridge network, not --network {cfg.network}")
    return mode


def _name_files(cdir: str, mode: str, hostname: str, servers: list[str]) -> list[dict]:
    """/etc/resolv.conf, hosts and hostname: the container's own (dns.py),
    or, sharing another's network, that container's."""
    if mode.startswith("container:"):
        return dns.mounts(state.container_dir(mode.removeprefix("container:")))
    resolv = dns.resolv_conf(servers) if mode != "host" or servers else host.read("/etc/resolv.conf")
    dns.write_in_place(os.path.join(cdir, "resolv.conf"), resolv)
    dns.write_in_place(os.path.join(cdir, "hostname"), hostname + "\n")
    hosts = host.read("/etc/hosts") if mode == "host" else dns.hosts("", hostname, hostname, {})
    dns.write_in_place(os.path.join(cdir, "hosts"), hosts)
    return dns.mounts(cdir)


def _oci_spec(cdir: str, lower: list[str], args: list[str], env: list[str], workdir: str,
              hostname: str, cfg: spec.RunConfig, cgroup: str, limits: dict) -> dict:
    """The OCI runtime spec (config.json) of this container."""
    resources: dict = {}
    if limits["Memory"]:
        resources["memory"] = {"limit": limits["Memory"], "swap": limits["MemorySwap"] or limits["Memory"]}
    if limits["CpuQuota"]:
        resources["cpu"] = {"quota": limits["CpuQuota"], "period": limits["CpuPeriod"]}
    if limits["CpusetCpus"]:
        resources.setdefault("cpu", {})["cpus"] = limits["CpusetCpus"]
    if limits["PidsLimit"]:
        resources["pids"] = {"limit": limits["PidsLimit"]}
    from lib import seccomp as seccomp_profile
    from lib import security

    # Inheritable stays empty, as Docker's since CVE-2022-24769: a file with
    # inheritable file capabilities run by a non-root user would otherwise
    # gain them, beyond what the user was given.
    caps = security.capabilities(cfg.cap_add, cfg.cap_drop, cfg.privileged,
                                 mknod_safe=cgroups.devices_controlled())
    seccomp, no_new_privs = (None if cfg.privileged else seccomp_profile.default_profile(caps)), False
    for opt in cfg.security_opt:
        key, _, value = opt.partition("=" if "=" in opt else ":")
        if key == "no-new-privileges" and value in ("", "true"):
            no_new_privs = True
        elif key == "seccomp":
            seccomp = None if value == "unconfined" else seccomp_profile.load_profile(value, caps)
        elif not (key == "no-new-privileges" and value == "false"):
            raise MinidockerError(f"invalid --security-opt: {opt}")
    mounts = rootfs.default_mounts()
    if cfg.privileged:  # /sys writable, as Docker gives a privileged container
        mounts = [{**m, "options": [o for o in m["options"] if o != "ro"]} if m["type"] == "sysfs" else m
                  for m in mounts]
    if cfg.tty and not any(e.startswith("TERM=") for e in env):
        env = [*env, "TERM=xterm"]  # as Docker: the pty is an xterm's, unless the user says otherwise
    kinds = ["pid", "mount", "uts", "ipc"] + ([] if cfg.network == "host" else ["network"])
    # --network container:X joins X's network namespace: its path is set at each start (X's PID changes).
    return {
        "ociVersion": "1.0.2",
        # `username` is the OCI spec's field for Windows; here it carries `-u`
        # to the init, which looks it up in the container's own files (users.py).
        "process": {"terminal": cfg.tty, "user": {"uid": 0, "gid": 0, **({"username": cfg.user} if cfg.user else {})},
                    "args": args, "env": env,
                    "cwd": workdir, "noNewPrivileges": no_new_privs,
                    "capabilities": {"bounding": caps, "effective": caps, "permitted": caps,
                                     "inheritable": [], "ambient": []}},
        "root": {"path": os.path.join(cdir, "rootfs"), "readonly": cfg.read_only},
        "hostname": hostname,
        "mounts": mounts,
        "linux": {"namespaces": [{"type": k} for k in kinds], "cgroupsPath": cgroup,
                  "resources": {**resources, "devices": _device_rules(cfg.privileged)}, "devices": [],
                  "seccomp": seccomp,
                  "maskedPaths": [] if cfg.privileged else security.MASKED,
                  "readonlyPaths": [] if cfg.privileged else security.READONLY},
        "annotations": {"org.minidocker.overlay.lowerdir": ":".join(lower),
                        "org.minidocker.overlay.upperdir": os.path.join(cdir, "upper"),
                        "org.minidocker.overlay.workdir": os.path.join(cdir, "work"),
                        "org.minidocker.network": cfg.network},
    }


def _device_rules(privileged: bool) -> list[dict]:
    """linux.resources.devices, as Docker writes them: every device denied,
    then mknod of any allowed (a node made for the host's disk still cannot
    be opened); the runtime adds the harmless ones (null, zero, tty...).
    Privileged: every device."""
    if privileged:
        return [{"allow": True, "access": "rwm"}]
    return [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "access": "m"},
            {"allow": True, "type": "b", "access": "m"}]


# ----------------------------------------------------------------- start
def _prepare(cid: str) -> tuple[dict, dict]:
    """The record and OCI spec of a container about to start."""
    rec = load(cid)
    if running(rec):
        raise MinidockerError(f"container {cid[:12]} is already running", 1)
    oci = state.read_json(os.path.join(state.container_dir(cid), "config.json"))
    mode = rec["HostConfig"]["NetworkMode"]
    if mode.startswith("container:"):  # join its network namespace, by path (its PID 1 now)
        other = refresh(load(mode.removeprefix("container:")))
        if not running(other):
            raise MinidockerError(f"cannot join network of a non running container: {other['Id'][:12]}")
        for ns in oci["linux"]["namespaces"]:
            if ns["type"] == "network":
                ns["path"] = f"/proc/{other['State']['Pid']}/ns/net"
    return rec, oci


def _plug(rec: dict, pid: int, published: list[dict]) -> dict:
    """A bridged container's veth, addresses and published ports; its NetworkSettings.

    `published` is filled as ports are reserved, so that a failure after
    them knows what to give back."""
    mode = rec["HostConfig"]["NetworkMode"]
    if not network.bridged(mode):
        return {}
    net = network.attach(rec, pid)
    network.write_hosts(rec)
    network.refresh_peers(mode)
    published += ports.reserve(rec["Id"], _private(rec)["Publish"])
    ports.publish(rec["Id"], net["IPAddress"], published)
    net["Ports"] = ports.show(published)
    return net


def _record_started(cid: str, pid: int, monitor_pid: int, net: dict, published: list[dict]) -> None:
    def started(r: dict) -> None:
        r["NetworkSettings"].update(net)
        _private(r)["Published"] = published
        r["State"].update(Status="running", Running=True, Restarting=False, Pid=pid, ExitCode=0, Error="",
                          OOMKilled=False, StartedAt=state.now(), FinishedAt=state.ZERO_TIME)
        _private(r).update(PidStart=state.process_start_time(pid), MonitorPid=monitor_pid,
                           MonitorStart=state.process_start_time(monitor_pid), StopRequested=False)

    update(cid, started)


def _record_failed(rec: dict, error: MinidockerError, published: list[dict]) -> None:
    """A start that failed: the record says why, and nothing it took is kept."""
    def failed(r: dict) -> None:
        r["State"].update(Status="created", Running=False, Restarting=False, Pid=0, ExitCode=error.code,
                          Error=str(error))

    update(rec["Id"], failed)
    _release(rec)
    if published:
        ports.unpublish(rec["Id"])


def _launch(cid: str, stdio: tuple) -> runtime.Init:
    """In-process: cgroup, namespaces, init; join, go: the container runs
    when this returns, with us as its monitor (a foreground `run`)."""
    from lib import runtime

    rec, oci = _prepare(cid)
    cgroup = cgroups.for_container(_private(rec)["Cgroup"])
    init = None
    published: list[dict] = []
    try:
        # The init starts first and builds the root filesystem while we
        # make its cgroup.  It cannot run the command before go(), so the
        # command never runs outside its limits.
        # Ctrl-C waits until the init is ours to abort: between fork() and
        # this assignment a KeyboardInterrupt would orphan it, still waiting
        # for "g" from a pipe we hold open.
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])
        try:
            init = runtime.Init(oci, *stdio)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
        cgroup.create(rec["HostConfig"])
        # Moving a process between cgroups waits for an RCU grace period in
        # the kernel (~15 ms here): done now, it overlaps the init's mounts.
        cgroup.join(init.pid)
        init.wait_ready()
        net = _plug(rec, init.pid, published)
        if oci["linux"].get("uidMappings"):
            init.map_users(oci["linux"]["uidMappings"], oci["linux"]["gidMappings"])
        _record_started(cid, init.pid, os.getpid(), net, published)
        init.go()
        return init
    except BaseException as e:  # Ctrl-C too: release everything this start took
        error = e if isinstance(e, MinidockerError) else MinidockerError("interrupted while starting", 130)
        if init is not None:
            error = init.own_failure() or error
            init.abort()
        _record_failed(rec, error, published)
        if error is not e:
            raise error from None
        raise


def _start_monitored(cid: str, attach: bool = False):
    """Through conmon (monitor.py): it runs `minidocker-runc create`, whose
    init waits on its exec.fifo; we plug in the network, then start it, as
    podman does with runc.  Returns once the command runs; with `attach`,
    a connection to conmon's attach socket, made before the command runs,
    so that none of its output is missed."""
    from lib import monitor

    rec, oci = _prepare(cid)
    cdir = state.container_dir(cid)
    if rec["HostConfig"]["NetworkMode"].startswith("container:"):  # the runtime reads the path from the bundle
        state.write_json(os.path.join(cdir, "config.json"), oci)
    pid = monitor_pid = 0
    published: list[dict] = []
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])
        try:
            pid, monitor_pid = monitor.spawn(cid, cdir, rec["LogPath"], rec["Config"]["Tty"],
                                             rec["Config"]["OpenStdin"], *_log_bounds(rec))
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
        net = _plug(rec, pid, published)
        _record_started(cid, pid, monitor_pid, net, published)
        sock = monitor.connect(cdir) if attach else None
        monitor.start(cid)
        return sock
    except BaseException as e:
        error = e if isinstance(e, MinidockerError) else MinidockerError("interrupted while starting", 130)
        # Recorded as not running first: conmon's exit command then finds
        # nothing to record, restart or wait for, when PID 1 dies below.
        _record_failed(rec, error, published)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_pid(monitor_pid, 10)
        monitor.forget(cid)
        if error is not e:
            raise error from None
        raise


def start(cid: str, detach: bool, tty: bool = False, interactive: bool = False, keys: bytes = b"") -> int:
    """Start a created (or ended) container; attached, return its exit code.

    In the foreground without a pty, we are the monitor (runtime.py).  With
    a pty the user may detach and come back: conmon watches it, and we
    attach to conmon."""
    if detach:
        if not running(refresh(load(cid))):  # as Docker: starting a running container is no error
            _start_detached(cid)
        return 0
    rec = load(cid)
    # conmon: a pty to detach from, a policy its exit command carries out, or rotated logs.
    if tty or _policy(rec)["Name"] != "no" or _log_bounds(rec)[1] > 1:
        return _attached(cid, interactive, keys, start=True)
    from lib import runtime

    # The container gets its own session: a signal that reaches us (Ctrl-C,
    # `kill` of the CLI) is passed on, as `docker run` does (PID 1 may
    # ignore it).
    with state.transition(cid):
        init = _launch(cid, (runtime.PIPE if interactive else runtime.NULL, runtime.PIPE))

    def forward(sig: int, _frame: object) -> None:
        os.kill(init.pid, sig)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, forward)
    return _monitor(cid, init)


def attach(ref: str, stdin: bool, keys: bytes) -> int:
    """`attach`: to a running container's output (and, with stdin, its input)."""
    rec = find(ref)
    if rec["State"].get("Restarting"):
        raise MinidockerError("You cannot attach to a restarting container, wait until it is running", 1)
    if not running(rec):
        raise MinidockerError("You cannot attach to a stopped container, start it first", 1)
    return _attached(rec["Id"], stdin and rec["Config"]["OpenStdin"], keys, start=False)


def _attached(cid: str, stdin: bool, keys: bytes, start: bool) -> int:
    """Relay between the user and conmon until the container ends (its exit
    code) or the user detaches (0, and it runs on)."""
    from lib import monitor

    cdir = state.container_dir(cid)
    with monitor.attached(cdir):
        if start:
            with state.transition(cid):
                sock = _start_monitored(cid, attach=True)
        else:
            sock = monitor.connect(cdir)
        rec = load(cid)
        if monitor.relay(sock, cdir, rec["Config"]["Tty"], stdin, keys or monitor.detach_keys(monitor.DETACH_KEYS)):
            return 0
        # conmon closes our connection, writes the exit file, then runs its
        # exit command, which records the exit, then waits for us before it
        # removes a --rm container.  We return once the record is true, as
        # `docker run` does: an `inspect` right after us says "exited".
        code = monitor.wait_exit_code(cid, _private(rec)["MonitorPid"], _private(rec)["MonitorStart"])
        deadline = time.monotonic() + 10
        while running(load(cid)) and time.monotonic() < deadline:
            time.sleep(0.01)
    return code if code is not None else _wait_recorded(cid)["State"]["ExitCode"]


def _start_detached(cid: str) -> None:
    with state.transition(cid):
        _start_monitored(cid)


def _log_bounds(rec: dict) -> tuple[int, int]:
    """(max-size in bytes, max-file) of a container's log; 0: no bound."""
    config = rec["HostConfig"].get("LogConfig", {}).get("Config", {})
    return logs.size_bytes(config.get("max-size", "-1")), int(config.get("max-file", 1))


def _monitor(cid: str, init: runtime.Init) -> int:
    """Copy output to the log and our own stdio, our stdin in; wait, record, release."""
    from lib import stdio

    rec = load(cid)
    log = logs.LogWriter(rec["LogPath"], _log_bounds(rec)[0])

    def copier(stream: str, own: int):
        def copy(data: bytes) -> None:
            log.feed(stream, data)
            with contextlib.suppress(OSError):
                stdio.write_all(own, data)
        return copy

    stdin, init.stdin = init.stdin, None  # pump closes it when our stdin ends
    stdio.pump({init.stdout: copier("stdout", 1), init.stderr: copier("stderr", 2)}, stdin, close_sink_at_eof=True)
    os.close(init.stdout)
    os.close(init.stderr)
    log.close()
    code = init.wait()
    _finish(cid, code)
    return code


def _finish(cid: str, code: int, error: str = "", auto_remove: bool = True, restart: bool = False) -> dict | None:
    """Record the end and give back what the container held; the record,
    or None if someone had already recorded it (or removed the container).

    With `restart` (conmon's exit command), the restart policy is decided
    in the same locked update: a `stop` either comes before, and is seen,
    or after, and finds the container restarting."""
    recorded = False

    def ended(r: dict) -> None:
        nonlocal recorded
        if not running(r):
            return
        recorded = True
        cgroup = cgroups.for_container(_private(r)["Cgroup"])
        oom = cgroup.oom_killed()
        # "exited" however it ended, as Docker says: scripts test .State.Status for it.
        r["State"].update(Status="exited", Running=False,
                          Pid=0, ExitCode=code, OOMKilled=oom, Error=error, FinishedAt=state.now())
        _release(r, cgroup)
        delay = _restart_delay(r) if restart and not r["HostConfig"]["AutoRemove"] else None
        if delay is not None:
            r["State"].update(Status="restarting", Restarting=True)
            r["RestartCount"] = r.get("RestartCount", 0) + 1
            _private(r).update(RestartDelay=min(delay * 2, 60.0), RestartIn=delay)

    try:
        rec = update(cid, ended)
    except MinidockerError:
        return None  # removed meanwhile (rm -f): nothing left to record
    if auto_remove and rec["HostConfig"]["AutoRemove"]:
        _remove_files(rec)
    return rec if recorded else None


def exited(cid: str) -> None:
    """conmon's exit command: record the exit it saw, give back what the
    container held, forget the runtime's state of it; remove it (--rm) or
    restart it (--restart)."""
    from lib import monitor

    code = monitor.exit_code(cid)
    if code is None:  # `create` failed, or `stop` recorded the end: the one that did cleans up
        return
    with contextlib.suppress(MinidockerError):
        # conmon, our parent, waits for us; a start since (after a `stop`
        # that recorded the end itself) has a conmon of its own, and its
        # runtime state is not ours to forget.
        if _private(load(cid))["MonitorPid"] != os.getppid():
            return
        rec = _finish(cid, code, auto_remove=False, restart=True)
        if rec is None:  # a start that failed, and recorded why itself
            monitor.forget(cid)
            return
        monitor.forget(cid)  # before a restart: the runtime refuses an ID whose state it still has
        if rec["HostConfig"]["AutoRemove"]:
            # An attached `run -it --rm` reads the exit code first; a
            # client stopped with Ctrl-Z is not waited for past a while.
            monitor.wait_for_clients(state.container_dir(cid), timeout=10)
            _remove_files(load(cid))
        elif rec["State"]["Restarting"]:
            _restart(cid, _private(rec)["RestartIn"])


def restartable(policies: set[str]) -> list[str]:
    """Containers to start after a reboot, as dockerd does when it starts:
    those not running whose restart policy is one of `policies`; an
    unless-stopped one only if no one stopped it."""
    found = []
    for cid in state.all_ids():
        with contextlib.suppress(MinidockerError):
            rec = refresh(load(cid))
            name = _policy(rec)["Name"]
            if not running(rec) and name in policies and \
                    not (name == "unless-stopped" and _private(rec)["StopRequested"]):
                found.append(cid)
    return found


def _policy(rec: dict) -> dict:
    return rec["HostConfig"].get("RestartPolicy") or {"Name": "no", "MaximumRetryCount": 0}


def _restart_delay(rec: dict) -> float | None:
    """Seconds to wait before restarting an exited container; None: leave it.

    Docker's rule: the delay starts at 100 ms and doubles with each restart,
    up to a minute, so that a container that crashes at once does not take
    the machine with it; a run of 10 seconds or more counts as a success and
    starts the count again."""
    policy, st = _policy(rec), rec["State"]
    if running(rec) or _private(rec)["StopRequested"] or policy["Name"] == "no":
        return None
    if policy["Name"] == "on-failure" and (st["ExitCode"] == 0 or 0 < policy["MaximumRetryCount"]
                                           <= rec.get("RestartCount", 0)):
        return None
    if state.parse_time(st["FinishedAt"]) - state.parse_time(st["StartedAt"]) >= 10:
        return 0.1
    return _private(rec).get("RestartDelay", 0.1)


def _restart(cid: str, delay: float) -> None:
    """The restart policy, carried out by conmon's exit command: wait, then
    start again under a new conmon, unless `stop` or `rm` came meanwhile."""
    time.sleep(delay)
    with contextlib.suppress(MinidockerError), state.transition(cid):
        rec = load(cid)
        if rec["State"]["Restarting"] and not _private(rec)["StopRequested"]:
            _start_monitored(cid)


def _release(rec: dict, cgroup: cgroups.Cgroup | None = None) -> None:
    """Give back the container's host resources; safe to call twice.

    Its IP address stays reserved until `rm`, so a restart keeps it; its
    veth pair went with its network namespace (network.py)."""
    _remove_cgroup(_private(rec)["Cgroup"], cgroup)
    if _private(rec)["Published"]:
        ports.unpublish(rec["Id"])
        _private(rec)["Published"] = []
        rec["NetworkSettings"]["Ports"] = {}


def _remove_cgroup(name: str, cgroup: cgroups.Cgroup | None = None) -> None:
    try:
        cgroup = cgroup or cgroups.for_container(name)
    except MinidockerError:  # no memory hierarchy mounted (`ip netns exec` remounts /sys): none of ours here
        return
    cgroup.remove()


def refresh(rec: dict) -> dict:
    """The record, corrected if its process died and nobody recorded it.

    conmon writes the exit code to a file before it runs its exit command;
    between the two, the file is the truth.  Without it the end was seen by
    nobody: Docker's unknown exit code."""
    st, priv = rec["State"], _private(rec)
    if st["Running"] and not state.alive(st["Pid"], priv["PidStart"]) \
            and not state.alive(priv["MonitorPid"], priv["MonitorStart"]):
        from lib import monitor

        code = monitor.exit_code(rec["Id"])
        if code is None:
            _finish(rec["Id"], EXIT_UNKNOWN, "the container's monitor died; its exit code is unknown")
        else:
            _finish(rec["Id"], code)
        with contextlib.suppress(MinidockerError):
            return load(rec["Id"])
    return rec


# ------------------------------------------------------- stop, kill, rm
def _signal(rec: dict, sig: int) -> None:
    if state.alive(rec["State"]["Pid"], _private(rec)["PidStart"]):
        host.explain("exec", f"kill -{signal.Signals(sig).name.removeprefix('SIG')} {rec['State']['Pid']}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec["State"]["Pid"], sig)


def _wait_gone(rec: dict, timeout: float) -> bool:
    """Wait for PID 1 to exit."""
    return _wait_pid(rec["State"]["Pid"], timeout, _private(rec)["PidStart"])


def _wait_pid(pid: int, timeout: float, start: int | None = None) -> bool:
    """Wait for a process to exit: a pidfd turns readable when it does.
    With its start time, a reused PID is not mistaken for it."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return True
    try:
        if start is not None and not state.alive(pid, start):
            return True
        return bool(select.select([pidfd], [], [], timeout)[0])
    finally:
        os.close(pidfd)


def _wait_recorded(cid: str, timeout: float = 10.0) -> dict:
    """Wait until the monitor has recorded the exit (or reap it ourselves).

    conmon writes the exit code to a file as soon as it has reaped PID 1,
    then starts its exit command, a second interpreter (tens of ms), to
    record it and apply the restart policy.  After `stop`, `kill` or `rm -f`
    there is no policy to apply, so the file is enough: we record the end
    ourselves.  A --rm container's removal stays the exit command's, which
    waits for an attached client to read the exit code first."""
    from lib import monitor

    deadline = time.monotonic() + timeout
    while True:
        rec = refresh(load(cid))
        if not running(rec) or time.monotonic() > deadline:
            return rec
        if _private(rec)["StopRequested"] and not rec["HostConfig"]["AutoRemove"] \
                and (code := monitor.exit_code(cid)) is not None:
            ended = _finish(cid, code, auto_remove=False) or load(cid)
            monitor.forget(cid)  # the exit command, finding no exit file, leaves it all to us
            return ended
        time.sleep(0.005)


def _mark_stopping(cid: str) -> None:
    update(cid, lambda r: _private(r).update(StopRequested=True))


def stop(ref: str, timeout: int = DEFAULT_STOP_TIMEOUT) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds, as `docker stop`.

    PID 1 is special: the kernel delivers it no signal it has not asked
    for.  A shell that traps TERM exits at once (143); `sleep` as PID 1
    ignores TERM, and only the SIGKILL after the timeout ends it (137).
    """
    cid = state.resolve(ref)
    with state.transition(cid):
        rec = refresh(load(cid))
        if not running(rec):
            if rec["State"].get("Restarting"):  # waiting to restart: the waiting exit command gives up
                def given_up(r: dict) -> None:
                    _private(r)["StopRequested"] = True
                    r["State"].update(Status="exited", Restarting=False)

                update(cid, given_up)
            return
        _mark_stopping(cid)
        _signal(rec, signal.SIGTERM)
        if not _wait_gone(rec, timeout):
            _signal(rec, signal.SIGKILL)
            _wait_gone(rec, 10)
        _wait_recorded(cid)


def kill(ref: str, sig: int = signal.SIGKILL) -> None:
    cid = state.resolve(ref)
    with state.transition(cid):
        rec = refresh(load(cid))
        if not running(rec):
            raise MinidockerError(f"Cannot kill container: {ref}: container {cid} is not running", 1)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            _mark_stopping(cid)
        _signal(rec, sig)
        if sig == signal.SIGKILL:
            _wait_gone(rec, 10)
            _wait_recorded(cid)


def remove(ref: str, force: bool = False) -> str:
    cid = state.resolve(ref)
    with state.transition(cid):
        try:
            rec = refresh(load(cid))
        except CorruptRecord:
            if not force:
                raise
            _remove_unreadable(cid)
            return cid
        if running(rec):
            if not force:
                raise MinidockerError(f'cannot remove container "{rec["Name"]}": container is running: '
                                      "stop the container before removing or force remove", 1)
            _mark_stopping(cid)
            _signal(rec, signal.SIGKILL)
            _wait_gone(rec, 10)
            rec = _wait_recorded(cid)
        _remove_files(rec)
    return cid


def _remove_unreadable(cid: str) -> None:
    """rm -f of a container whose record cannot be read: what it may hold is
    found by its ID (its cgroup under our parent, its address, its ports, its
    name), and its processes are killed with its cgroup."""
    _remove_cgroup(f"{cgroups.default_parent()}/{cid}")
    network.release(cid)
    ports.unpublish(cid)
    for name in os.listdir(state.path("names")) if os.path.isdir(state.path("names")) else []:
        state.release_name(name, cid)
    state.remove_tree(state.container_dir(cid))


def _remove_files(rec: dict) -> None:
    from lib import monitor

    cdir = state.container_dir(rec["Id"])
    with contextlib.suppress(FileNotFoundError), state.locked(cdir):
        _release(rec)
        monitor.forget(rec["Id"])
        network.release(rec["Id"])
        network.refresh_peers(rec["HostConfig"]["NetworkMode"], leaving=rec["Id"])
        state.release_name(rec["Name"].lstrip("/"), rec["Id"])
        state.remove_tree(cdir)


def wait(ref: str) -> int:
    rec = find(ref)
    if running(rec):
        _wait_gone(rec, 1e9)
        rec = _wait_recorded(rec["Id"])
    return rec["State"]["ExitCode"]


# ------------------------------------------------------------------ exec
def exec_(ref: str, command: list[str], env: list[str], workdir: str, interactive: bool, tty: bool = False) -> int:
    """Run a command inside a running container: its namespaces, root, cgroup
    and confinement (runtime.exec_in).  Its exit code."""
    from lib import runtime

    rec = find(ref)
    if not running(rec):
        raise MinidockerError(f"container {rec['Id']} is not running", 1)
    oci = state.read_json(os.path.join(state.container_dir(rec["Id"]), "config.json"))
    process = {**oci["process"], "args": command, "env": _merge_env(rec["Config"]["Env"], env),
               "cwd": workdir or rec["Config"]["WorkingDir"]}
    dirs = cgroups.for_container(_private(rec)["Cgroup"]).dirs()
    return runtime.exec_in(rec["State"]["Pid"], process, oci["linux"].get("seccomp"), dirs,
                           runtime.PIPE if interactive else runtime.NULL, runtime.CONSOLE if tty else runtime.PIPE)
