"""The container init: the first code that runs inside the new namespaces.

It runs in the monitor's forked child (runtime.py), which the kernel made
PID 1 of a new pid namespace.  Like runc's init it prepares the container
from the inside, then becomes the user's command with execve(2), so that
the command itself is PID 1:

1. unshare(2) the mount, uts, ipc and net namespaces the spec asks for
   (what `unshare --mount --uts --ipc --net` does), setns(2) into those it
   names by path, and make every mount private;
2. tell the monitor "R": from now on /proc/<pid>/ns/* are the container's;
3. build the root filesystem (rootfs.py), set the hostname, bring up lo;
4. wait for "go": meanwhile the monitor puts this process in its cgroups
   and plugs in its network, so the command never runs unlimited and never
   sees a missing eth0;
5. execve the command.  The report pipe is close-on-exec: the monitor
   reads EOF when execve succeeded, or "CODE message" when it failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource  # a small C module; imported now, since after pivot_root it cannot be found

from lib import hooks, host, namespaces, rootfs, seccomp, security, terminal, users

# The namespaces the init can make or join, as the OCI spec names them.
KINDS = {"mount": (0x20000, "NEWNS", "--mount"), "uts": (0x4000000, "NEWUTS", "--uts"),
         "ipc": (0x8000000, "NEWIPC", "--ipc"), "network": (0x40000000, "NEWNET", "--net"),
         "cgroup": (0x2000000, "NEWCGROUP", "--cgroup")}


def _enter_namespaces(namespaces: list[dict], propagation: int) -> None:
    """unshare(2) the new ones, setns(2) into the ones given by path.

    A namespace with a path is another container's (`--network container:`):
    joining it is what `nsenter --net=PATH` does.
    """
    new = [KINDS[n["type"]] for n in namespaces if n["type"] in KINDS and not n.get("path")]
    flags = 0
    for flag, _, _ in new:
        flags |= flag
    host.unshare(flags, "|".join("CLONE_" + name for _, name, _ in new)
                 + ")  # = unshare " + " ".join(tool for _, _, tool in new))
    for n in namespaces:
        if n["type"] in KINDS and n.get("path"):
            fd = os.open(n["path"], os.O_RDONLY)
            host.setns(fd, KINDS[n["type"]][0], f"{n['path']}, CLONE_{KINDS[n['type']][1]})"
                       f"  # = nsenter {KINDS[n['type']][2]}={n['path']}")
            os.close(fd)
    # The new mount namespace starts as a copy of the host's, and where the
    # host's mounts are "shared" (systemd makes / shared) every mount made
    # here would propagate back onto the host.  Private first, then mount.
    # Without a mount namespace of its own, / is the caller's: left alone.
    if any(n["type"] == "mount" for n in namespaces):
        host.mount("none", "/", None, propagation)


def _loopback_up() -> None:
    """`ip link set lo up`, with one ioctl: a new net namespace's lo is down."""
    import _socket  # the C module: `socket` itself costs 6 ms of imports here
    import fcntl
    import struct

    host.explain("network", "ip link set lo up")
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    flags = struct.unpack("16sH", fcntl.ioctl(sock.fileno(), siocgifflags, struct.pack("16sH", b"lo", 0)))[1]
    fcntl.ioctl(sock.fileno(), siocsifflags, struct.pack("16sH", b"lo", flags | iff_up))
    sock.close()


def _execvpe(file: str, args: list[str], env: dict[str, str]) -> None:
    """execvp(3) with the container's PATH, not ours."""
    if "/" in file:
        os.execve(file, args, env)
    error: OSError = FileNotFoundError(file)
    for directory in env.get("PATH", "").split(":"):
        try:
            os.execve(os.path.join(directory or ".", file), args, env)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:  # found but not runnable: keep looking, report this
            error = e
    raise error


def _lookup(process: dict) -> None:
    """Fail now, with exec's own error, if the command cannot be found."""
    file = process["args"][0] if process.get("args") else ""
    if "/" in file:
        candidates = [file]
    else:
        path = next((e[5:] for e in process.get("env", []) if e.startswith("PATH=")), "")
        candidates = [os.path.join(d or ".", file) for d in path.split(":")]
    if not any(os.path.exists(c) for c in candidates if file):
        where = f"stat {file}: no such file or directory" if "/" in file else "executable file not found in $PATH"
        raise host.MinidockerError(f'exec: "{file}": {where}', host.EXIT_NOT_FOUND)


def exec_process(process: dict, seccomp_filter: object = None, preserve_fds: int = 0,
                 start_hooks: tuple[list, dict] | None = None) -> None:
    """Become the process: its directory, confinement, then execve(2).
    `start_hooks` (startContainer's, and the state they are told) run last,
    as runc runs them: confined as the command will be, its user, its
    capabilities and its seccomp filter, with no fd of ours left open."""
    import signal

    # An ignored signal stays ignored across execve, and a blocked one stays
    # blocked: Python ignores SIGPIPE and SIGXFSZ, and the caller may have
    # ignored or blocked anything (`trap '' TERM`).  The command starts with
    # every signal at its default, as under runc.
    for sig in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}:
        with contextlib.suppress(OSError, ValueError):  # the C library's own real-time signals
            signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    env = dict(e.split("=", 1) for e in process["env"] if "=" in e)
    user = process.setdefault("user", {})
    if user.get("username"):
        user["uid"], user["gid"], user["additionalGids"], home = users.resolve(user["username"])
    else:
        home = users.home(user.get("uid", 0))
    env.setdefault("HOME", home)
    args = process["args"]
    cwd = process.get("cwd", "/")
    os.makedirs(cwd, exist_ok=True)  # Docker creates a missing -w directory
    os.chdir(cwd)
    os.umask(user.get("umask", 0o022))  # runc's default, where the bundle names none
    _limits(process)
    # As runc: under no_new_privs the filter needs no privilege to load, so
    # it comes last, and a profile need not allow the calls that set up the
    # user and capabilities.  Without it, loading needs CAP_SYS_ADMIN: first.
    late = seccomp_filter if process.get("noNewPrivileges") else None
    security.drop_to(process, None if late else seccomp_filter)
    host.close_on_exec_from(3 + preserve_fds)  # 0-2 and, for an engine, the fds it asked to pass
    if late is not None:
        security.load_seccomp(late)
    if start_hooks:
        hooks.run_in_init(*start_hooks)
    host.explain("exec", ["execve", *args])
    try:
        _execvpe(args[0], args, env)
    except FileNotFoundError:
        where = f"stat {args[0]}: no such file or directory" if "/" in args[0] else \
            "executable file not found in $PATH"
        raise host.MinidockerError(f'exec: "{args[0]}": {where}', host.EXIT_NOT_FOUND) from None
    except OSError as e:
        reason = "is a directory" if os.path.isdir(args[0]) else e.strerror.lower()
        raise host.MinidockerError(f'exec: "{args[0]}": {reason}', host.EXIT_CANNOT_INVOKE) from None


def no_more_imports() -> None:
    """From here on, import nothing from a file.

    After pivot_root (or setns into the container's mounts) a path such as
    /usr/lib/python3/.../x.py names the *image's* file: a lazy import there
    would run the image's code as root with every capability.  Without the
    path finder, only modules already loaded, built in or frozen can be
    imported; a forgotten lazy import then fails loudly instead."""
    import sys

    sys.meta_path[:] = [finder for finder in sys.meta_path if getattr(finder, "__name__", "") != "PathFinder"]


def _enter_user_namespace(go_fd: int, report_fd: int) -> None:
    """The last namespace, entered after every mount: root in here is an
    unprivileged uid outside.  The other namespaces stay owned by the host's
    user namespace, so root in here cannot mount, reconfigure the network or
    undo the masks; only its own files are its own.  Our uid_map and gid_map
    are written by the monitor (a process may not map itself to host root)."""
    host.unshare(0x10000000, "CLONE_NEWUSER)  # = unshare --user, entered last")
    os.write(report_fd, b"U")
    if os.read(go_fd, 1) != b"m":
        os._exit(host.EXIT_ENGINE)
    os.setresgid(0, 0, 0)  # the mapped root: uid 0 here, the range's first outside
    os.setresuid(0, 0, 0)


def _wait_for_start(fifo_fd: int, report_fd: int) -> None:
    """runc's create/start split: `create` returns while we wait here, and
    `start` opening the FIFO for reading is what lets us go on.  The FIFO was
    opened with O_PATH before pivot_root; /proc/self/fd reopens it for
    writing, which blocks until its reader comes."""
    os.write(report_fd, b"W")
    fd = os.open(f"/proc/self/fd/{fifo_fd}", os.O_WRONLY)
    os.write(fd, b"0")
    os.close(fd)
    os.close(fifo_fd)


def _limits(process: dict) -> None:
    """rlimits and the OOM score, while we may still raise them."""
    if process.get("oomScoreAdj") is not None:
        host.write("/proc/self/oom_score_adj", str(process["oomScoreAdj"]), step="security")
    if process.get("rlimits"):
        for limit in process["rlimits"]:
            host.explain("security", f"prlimit --{limit['type'][7:].lower()}={limit['soft']}:{limit['hard']}")
            try:
                # A value beyond a C long is RLIM_INFINITY (2**64 - 1 in the spec's uint64).
                soft, hard = (v if v < 1 << 63 else resource.RLIM_INFINITY for v in (limit["soft"], limit["hard"]))
                resource.setrlimit(getattr(resource, limit["type"]), (soft, hard))
            except (OSError, ValueError, AttributeError) as e:
                raise host.MinidockerError(f"setrlimit {limit['type']} {limit['soft']}:{limit['hard']}: {e}",
                                           host.EXIT_ENGINE) from None


def main(spec: dict, go_fd: int, report_fd: int) -> None:
    """Become the container; returns only by raising.  With an engine's
    console socket the command gets a pty (terminal.py)."""
    wanted = spec["linux"]["namespaces"]
    propagation = rootfs.PROPAGATION.get(spec["linux"].get("rootfsPropagation") or "", 0)
    # Until pivot_root every mount here is recursively private, or a slave
    # if the bundle asks for that (nothing goes out of a slave either):
    # under a shared / the rootfs bind, the proc and sys mounts, and the
    # unmount of the old root would all reach the host's namespace.  The
    # bundle's own choice is applied to the new root, after pivot_root.
    _enter_namespaces(wanted, host.MS_REC | (host.MS_SLAVE if propagation & host.MS_SLAVE else host.MS_PRIVATE))
    os.write(report_fd, b"R")
    root = spec["root"]["path"]
    annotations = spec.get("annotations", {})
    if "org.minidocker.overlay.lowerdir" in annotations:
        rootfs.mount_overlay(root, annotations["org.minidocker.overlay.lowerdir"].split(":"),
                             annotations["org.minidocker.overlay.upperdir"],
                             annotations["org.minidocker.overlay.workdir"])
    else:  # an OCI bundle's ready-made root: pivot_root needs it to be a mount point
        host.mount(root, root, None, host.MS_BIND | host.MS_REC)
    rootfs.mount_all(root, spec["mounts"])
    if host.explaining():
        import shlex  # noqa: F401 -- explain quotes with it, and after pivot_root it cannot be found
    fifo = annotations.get("org.minidocker.exec-fifo")
    fifo_fd = os.open(fifo, os.O_PATH) if fifo else -1
    console_fd = -1
    if annotations.get("org.minidocker.console-socket"):
        console_fd = terminal.connect_console(annotations["org.minidocker.console-socket"])
    if console_fd >= 0:
        terminal.preload()
    seccomp_filter = seccomp.compile_filter(spec["linux"]["seccomp"]) if spec["linux"].get("seccomp") else None
    sysctls = [(namespaces.sysctl_path(k, wanted), v) for k, v in (spec["linux"].get("sysctl") or {}).items()]
    if any(n["type"] == "network" and not n.get("path") for n in wanted):
        _loopback_up()  # before pivot_root: it imports _socket, which some Pythons load from a file
    if annotations.get("org.minidocker.hooks"):
        # createRuntime and createContainer hooks run now, while the rootfs is
        # mounted but not yet our root: the runtime runs them, then says go.
        os.write(report_fd, b"H")
        if os.read(go_fd, 1) != b"h":
            os._exit(host.EXIT_ENGINE)
    no_more_imports()
    if any(n["type"] == "mount" for n in wanted):
        rootfs.pivot(root)
        if propagation:
            # As runc: on the new root itself, once it is the root; before,
            # the flag would have gone to the host's mount of the rootfs.
            host.mount("", "/", None, propagation)
    else:
        rootfs.chroot(root)
    # Everything below works on paths as the container sees them.  Before
    # pivot_root, a path like <rootfs>/proc/sys leads through the image's own
    # symlinks, and an image whose /proc is a link to an absolute path would
    # make the masks land on the host's tree while the container's /proc
    # stayed bare: its /proc/sys writable (core_pattern: code run as host root).
    rootfs.make_devices(spec["linux"].get("devices", []))
    for path, value in sysctls:
        host.write(path, value, step="namespaces")
    for name in ("hostname", "domainname"):
        # In a joined uts namespace too, as runc does: the bundle names it (bundle.py checks there is one).
        if spec.get(name) and any(n["type"] == "uts" for n in wanted):
            host.write(f"/proc/sys/kernel/{name}", spec[name], step="namespaces")
    security.mask_paths(spec["linux"].get("maskedPaths", []), spec["linux"].get("readonlyPaths", []))
    if spec["root"].get("readonly"):
        host.mount("", "/", None, host.MS_REMOUNT | host.MS_BIND | host.MS_RDONLY)
    if console_fd >= 0:
        terminal.take_console("/dev/pts", console_fd, spec["process"].get("consoleSize"))
    if any(n["type"] == "user" and not n.get("path") for n in wanted):
        _enter_user_namespace(go_fd, report_fd)
    if fifo:
        # As runc: a command that is not there fails `create`, where the
        # engine still hears of it, not the start, after which no one would.
        _lookup(spec["process"])
        _wait_for_start(fifo_fd, report_fd)
    elif os.read(go_fd, 1) != b"g":
        os._exit(host.EXIT_ENGINE)  # the monitor gave up on this start
    start_hooks = (spec["hooks"]["startContainer"], json.loads(annotations["org.minidocker.state"])) \
        if (spec.get("hooks") or {}).get("startContainer") else None
    try:
        exec_process(spec["process"], seccomp_filter, int(annotations.get("org.minidocker.preserve-fds", 0)),
                     start_hooks)
    except host.MinidockerError as e:
        with contextlib.suppress(OSError):
            os.write(report_fd, f"{e.code} {e}".encode())
        if fifo:  # `create` has returned: no one reads the report; the container's stderr it is
            with contextlib.suppress(OSError):
                os.write(2, f"minidocker-runc: {e}\n".encode())
        os._exit(e.code)
