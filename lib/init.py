"""The container init: the first code that runs inside the new namespaces.

Started by the monitor as

    unshare --mount --uts --ipc [--net] --propagation private -- \\
        python3 -I -S lib/init.py CONTAINER_DIR SPEC_FD REPORT_FD

it is PID 1 of the new pid namespace (see namespaces.py).  Like runc's
init it prepares the container from the inside, then becomes the user's
command with execve(2), so that the command itself is PID 1:

1. read the spec the monitor sends down SPEC_FD;
2. build the root filesystem (rootfs.py), set the hostname, bring up lo;
3. wait on SPEC_FD for "go": meanwhile the monitor puts this process in its
   cgroups and plugs in its network, so the command never runs unlimited
   and never sees a missing eth0;
4. execve the command.  REPORT_FD is close-on-exec: the monitor reads "R"
   (this process runs, so its namespaces exist), then EOF when execve
   succeeded, or "CODE message" when anything failed.

It imports as little as it can: every module is paid for on every start.
"""

import marshal
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lib import host, rootfs


def _read_exactly(fd: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise host.MinidockerError("the monitor went away before the start")
        data += chunk
    return data


def _loopback_up() -> None:
    """`ip link set lo up`, with one ioctl: a new net namespace's lo is down."""
    import _socket
    import fcntl
    import struct

    host.explain("network", "ip link set lo up")
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    flags = struct.unpack("16sH", fcntl.ioctl(sock.fileno(), siocgifflags, struct.pack("16sH", b"lo", 0)))[1]
    fcntl.ioctl(sock.fileno(), siocsifflags, struct.pack("16sH", b"lo", flags | iff_up))
    sock.close()


def _execvpe(file: str, args: list[str], env: dict[str, str]) -> None:
    """execvp(3) with the container's PATH.  os.execvpe would import
    `warnings`, and after pivot_root the host's Python library is gone."""
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


def _exec(process: dict) -> None:
    import _signal

    # Python ignores SIGPIPE and SIGXFSZ for itself, and an ignored signal
    # stays ignored across execve: give the command the defaults back.
    for sig in (_signal.SIGPIPE, _signal.SIGXFSZ):
        _signal.signal(sig, _signal.SIG_DFL)
    env = dict(e.split("=", 1) for e in process["env"] if "=" in e)
    args = process["args"]
    cwd = process.get("cwd", "/")
    os.makedirs(cwd, exist_ok=True)  # Docker creates a missing -w directory
    os.chdir(cwd)
    os.umask(0o022)
    host.explain("exec", "execve " + host.quote(args))
    try:
        _execvpe(args[0], args, env)
    except FileNotFoundError:
        where = f"stat {args[0]}: no such file or directory" if "/" in args[0] else \
            "executable file not found in $PATH"
        raise host.MinidockerError(f'exec: "{args[0]}": {where}', host.EXIT_NOT_FOUND) from None
    except IsADirectoryError:
        raise host.MinidockerError(f'exec: "{args[0]}": is a directory', host.EXIT_CANNOT_INVOKE) from None
    except OSError as e:
        raise host.MinidockerError(f'exec: "{args[0]}": {e.strerror.lower()}', host.EXIT_CANNOT_INVOKE) from None


def main() -> None:
    spec_fd, report_fd = int(sys.argv[2]), int(sys.argv[3])
    os.set_inheritable(report_fd, False)
    os.set_inheritable(spec_fd, False)
    explain_fd = os.environ.get("MINIDOCKER_EXPLAIN", "")
    if explain_fd.isdigit():
        os.set_inheritable(int(explain_fd), False)
        import shlex  # noqa: F401  -- now: after pivot_root it can no longer be found
    # Running at all means unshare(1) made our namespaces: say so.  Until
    # this byte arrives, /proc/<our pid>/ns/net is still the host's, and a
    # veth "moved into the container" would land on the host.
    os.write(report_fd, b"R")
    try:
        size = int.from_bytes(_read_exactly(spec_fd, 8), "little")
        # The spec comes as marshal: json would cost this process 12 ms of
        # imports (it pulls in `re`), a quarter of a whole container start.
        spec = marshal.loads(_read_exactly(spec_fd, size))
        root = spec["root"]["path"]
        overlay = spec["annotations"]
        rootfs.mount_overlay(root, overlay["org.minidocker.overlay.lowerdir"].split(":"),
                             overlay["org.minidocker.overlay.upperdir"],
                             overlay["org.minidocker.overlay.workdir"])
        rootfs.mount_all(root, spec["mounts"])
        rootfs.make_devices(root, spec["linux"]["devices"])
        host.write("/proc/sys/kernel/hostname", spec["hostname"], step="namespaces")
        if spec["annotations"].get("org.minidocker.network") != "host":
            _loopback_up()
        rootfs.pivot(root)
        if os.read(spec_fd, 1) != b"g":
            os._exit(host.EXIT_ENGINE)  # the monitor gave up on this start
        _exec(spec["process"])
    except host.MinidockerError as e:
        os.write(report_fd, f"{e.code} {e}".encode())
        os._exit(e.code)
    except Exception as e:  # anything else is a bug, but still one line for the user
        os.write(report_fd, f"{host.EXIT_ENGINE} container init: {type(e).__name__}: {e}".encode())
        os._exit(host.EXIT_ENGINE)


if __name__ == "__main__":
    main()
