"""The monitor: conmon watches a container that outlives the command that started it.

Someone must be PID 1's parent for as long as the container runs: only a
parent (or a "subreaper", prctl PR_SET_CHILD_SUBREAPER) learns the exit
status from waitpid(2).  Someone must also read the container's stdout and
stderr, or its writes block once the pipe's 64 KiB are full.  That someone
is the *monitor*.  A monitor that is a copy of minidocker itself costs 8 MB
of the host's memory per container; conmon, written in C for podman and
CRI-O to do exactly this job, costs a third of one (docs/performance.md).

    minidocker run -d ──posix_spawn──▶ conmon ─fork, setsid─▶ conmon (stays)
         │                                                     │ fork, exec
         │                                                     ▼
         │                              minidocker-runc create  (our runtime)
         │                                   └─ fork ─▶ init: namespaces, mounts,
         ◀── {"data": PID} ── sync pipe ─────────────    waits on exec.fifo
         │  network into /proc/PID/ns/net
         │  minidocker-runc start: opens exec.fifo ───▶  execve(command)
         ▼
       exits             conmon: logs every line, keeps an attach socket, waits;
                         at the exit writes exits/ID and runs `minidocker.py
                         container-exited ID` (records it, frees what it held)

It is the contract podman speaks with runc, and minidocker-runc is the same
runtime layer that starts a foreground `run` in-process (runtime.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

from lib import host, state
from lib.host import MinidockerError

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNC = os.path.join(TOP, "minidocker-runc")
CLI = os.path.join(TOP, "minidocker.py")
# conmon's control FIFO message that resizes the container's pty.
WINDOW_RESIZE = 1


def conmon() -> str:
    # Only absolute directories of PATH: a "." in root's PATH would run a
    # local user's ./conmon as root.
    for directory in (*os.environ.get("PATH", "/usr/bin").split(":"), "/usr/libexec/podman", "/usr/bin"):
        candidate = os.path.join(directory, "conmon")
        if directory.startswith("/") and os.access(candidate, os.X_OK):
            return candidate
    raise MinidockerError("a container that runs in the background needs conmon, its monitor "
                          "(apt-get install conmon; .ci/setup-host installs it)")


def runtime_root() -> str:
    """minidocker-runc's own state (its OCI state.json, exec.fifo) for our containers."""
    return state.path("runc")


def exit_file(cid: str) -> str:
    return state.path("exits", cid)


def check_rotation(max_files: int) -> None:
    """conmon keeps old log files from version 2.2 on (--log-rotate); before,
    at max-size it starts the one file again, which is max-file=1."""
    import re
    import subprocess

    out = subprocess.run([conmon(), "--version"], capture_output=True, text=True).stdout
    match = re.search(r"version (\d+)\.(\d+)", out)
    if not match or (int(match[1]), int(match[2])) < (2, 2):
        version = match[0] if match else "of unknown version"
        raise MinidockerError(f"--log-opt max-file={max_files}: this host's conmon ({version}) cannot keep rotated "
                              "log files (conmon 2.2 and later can); max-file=1 bounds the log to max-size")


def spawn(cid: str, cdir: str, log_path: str, tty: bool, stdin: bool, log_size_max: int = 0,
          log_files: int = 1) -> tuple[int, int]:
    """Start conmon and, through it, `minidocker-runc create`; return
    (PID 1, conmon's PID) once the init waits on its exec.fifo."""
    os.makedirs(state.path("exits"), exist_ok=True)
    os.makedirs(runtime_root(), mode=0o700, exist_ok=True)
    forget(cid)  # a previous run's exit file, and its runtime state if a crash or reboot left it
    python = sys.executable or "/usr/bin/python3"
    argv = [conmon(), "--api-version", "1", "-c", cid, "-u", cid, "-n", cid,
            # The runtime run by this Python, as the CLI is (tox runs the suite under 3.11-3.13).
            "-r", python, "--runtime-arg", "-IS", "--runtime-arg", RUNC,
            "--runtime-arg", "--root", "--runtime-arg", runtime_root(),
            # Its errors as JSON lines with Docker's exit code (127: no such command).
            "--runtime-arg", "--log", "--runtime-arg", os.path.join(cdir, "runtime.log"),
            "--runtime-arg", "--log-format", "--runtime-arg", "json",
            "-b", cdir, "-p", os.path.join(cdir, "pidfile"), "-P", os.path.join(cdir, "conmon.pid"),
            "--exit-dir", state.path("exits"), "--full-attach", "-l", f"k8s-file:{log_path}",
            "--exit-command", python, "--exit-command-arg", "-IS", "--exit-command-arg", CLI,
            "--exit-command-arg", "container-exited", "--exit-command-arg", cid]
    if tty:
        argv.append("-t")
    if stdin:
        # Leave the container's stdin open when an attached client goes away:
        # a detached `-it` shell is still there to `attach` to.
        argv += ["-i", "--leave-stdin-open"]
    if log_size_max:
        argv += ["--log-size-max", str(log_size_max)]
        if log_files > 1:  # Docker's max-file counts the current file; conmon's, the old ones
            argv += ["--log-rotate", "--log-max-files", str(log_files - 1)]
    # conmon would inherit every fd we were given (a caller's `exec 7</`) and
    # keep it for the container's life: only the sync pipe goes.
    host.close_on_exec_from(3)
    sync_r, sync_w = os.pipe()
    env = {k: v for k, v in os.environ.items() if k not in ("MINIDOCKER_EXPLAIN", "MINIDOCKER_T0")}
    env["_OCI_SYNCPIPE"] = str(sync_w)
    host.explain("exec", argv)
    null = os.open(os.devnull, os.O_RDWR)
    os.set_inheritable(sync_w, True)
    try:
        # conmon forks itself into the background at once; the first process exits.
        first = os.posix_spawn(argv[0], argv, env, file_actions=[
            (os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, null, 1), (os.POSIX_SPAWN_DUP2, null, 2)])
    finally:
        os.close(null)
        os.close(sync_w)
    os.waitpid(first, 0)
    report = b""
    try:
        while not report.endswith(b"\n"):
            chunk = os.read(sync_r, 65536)
            if not chunk:
                break
            report += chunk
    finally:
        os.close(sync_r)
    try:
        answer = json.loads(report)
        pid = int(answer["data"])
    except (ValueError, KeyError, TypeError):
        raise MinidockerError("conmon ended before the container was created") from None
    if pid <= 0:
        raise _runtime_error(os.path.join(cdir, "runtime.log"), answer.get("message", ""))
    with open(os.path.join(cdir, "conmon.pid")) as f:
        return pid, int(f.read())


def _runtime_error(log: str, stderr: str) -> MinidockerError:
    """Why `minidocker-runc create` failed: the last line of its JSON log."""
    try:
        with open(log) as f:
            last = json.loads(f.readlines()[-1])
        os.unlink(log)
        return MinidockerError(last["msg"], int(last.get("code", host.EXIT_ENGINE)))
    except (OSError, ValueError, IndexError, KeyError):
        return MinidockerError(stderr.strip().removeprefix("minidocker-runc: ")
                               or "the runtime failed to create the container")


def start(cid: str) -> None:
    """minidocker-runc start, in-process: let the init waiting on exec.fifo exec."""
    from lib import oci

    oci.start(runtime_root(), cid)


def forget(cid: str) -> None:
    """Remove the runtime's state and the exit file of an ended container
    (its cgroup is ours to remove)."""
    with contextlib.suppress(FileNotFoundError):
        state.remove_tree(os.path.join(runtime_root(), cid))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(exit_file(cid))


def exit_code(cid: str) -> int | None:
    """The code conmon wrote when PID 1 exited (128 + signal if killed)."""
    try:
        with open(exit_file(cid)) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def wait_exit_code(cid: str, monitor_pid: int, monitor_start: int | None) -> int | None:
    """The exit code, once conmon has written it; None if conmon died first."""
    import time

    while (code := exit_code(cid)) is None and state.alive(monitor_pid, monitor_start):
        time.sleep(0.01)
    return code if code is not None else exit_code(cid)


def resize_pty(cdir: str, rows: int, cols: int) -> None:
    """Tell conmon the user's window size; it sets the container's pty to it."""
    fd = os.open(os.path.join(cdir, "ctl"), os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, f"{WINDOW_RESIZE} {rows} {cols}\n".encode())
    finally:
        os.close(fd)


# --------------------------------------------------------------- attaching
DETACH_KEYS = "ctrl-p,ctrl-q"
CTRL_KEYS = "@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_"


def detach_keys(spec: str) -> bytes:
    """Docker's --detach-keys: "ctrl-p,ctrl-q", each a letter, ctrl-<a-z@[\\]^_>."""
    codes = b""
    for key in spec.split(","):
        if len(key) == 1:
            codes += key.encode()
        elif len(key) == 6 and key.lower().startswith("ctrl-") and key[5].upper() in CTRL_KEYS:
            codes += bytes([ord(key[5].upper()) & 0x1F])  # Ctrl keeps a character's low 5 bits: ctrl-p is 16
        else:
            raise MinidockerError(f"Invalid detach keys ({spec}) provided")
    return codes


@contextlib.contextmanager
def attached(cdir: str):
    """Held by a client for as long as it is attached: the exit command
    waits for it before removing a --rm container, so the client can still
    read how the container ended."""
    import fcntl

    fd = os.open(os.path.join(cdir, "client.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def wait_for_clients(cdir: str, timeout: float) -> None:
    import fcntl
    import time

    try:
        fd = os.open(os.path.join(cdir, "client.lock"), os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                time.sleep(0.02)
    finally:
        os.close(fd)


def connect(cdir: str):
    """A connection to conmon's attach socket: SOCK_SEQPACKET, one packet a
    write.  Through /proc/self/fd: a socket's path is limited to 108 bytes,
    and a state root's can be longer."""
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    directory = os.open(cdir, os.O_PATH | os.O_CLOEXEC)
    try:
        sock.connect(f"/proc/self/fd/{directory}/attach")
    except FileNotFoundError:
        sock.close()
        raise MinidockerError("cannot attach: this container runs in the foreground, without a pty, attached to "
                              "the terminal that started it; its output is in `logs`", 1) from None
    except OSError as e:
        sock.close()
        raise MinidockerError(f"cannot attach: {e.strerror}", 1) from None
    finally:
        os.close(directory)
    return sock


def relay(sock, cdir: str, tty: bool, stdin: bool, keys: bytes) -> bool:
    """Copy the container's output to ours and (with stdin) our keys to it,
    until it ends (False) or the user types the detach keys (True).

    conmon sends each chunk with its stream first: 2 stdout, 3 stderr.  With
    a pty, our terminal is raw meanwhile (terminal.py): every key, Ctrl-C
    too, goes to the container's own line discipline."""
    import select
    import signal

    from lib import stdio, terminal

    def resize(*_: object) -> None:
        rows, cols = terminal.window_size(0)
        if rows:
            with contextlib.suppress(OSError):
                resize_pty(cdir, rows, cols)

    class Leave(Exception):
        pass

    def leave(*_: object) -> None:  # a closed terminal (SIGHUP) or a kill leaves it running
        raise Leave

    previous = {sig: signal.signal(sig, leave) for sig in (signal.SIGHUP, signal.SIGTERM)}
    if tty and os.isatty(0):
        resize()
        previous[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, resize)
    readers = [sock] + ([0] if stdin else [])
    held = b""  # the detach keys typed so far
    try:
        with terminal.raw(0) if tty and stdin else contextlib.nullcontext():
            while True:
                for ready in select.select(readers, [], [])[0]:
                    if ready is sock:
                        packet = sock.recv(65536)
                        if not packet:
                            return False
                        stdio.write_all(2 if packet[0] == 3 else 1, packet[1:])
                        continue
                    typed = os.read(0, 4096)
                    if not typed:
                        readers.remove(0)
                        continue
                    out = b""
                    for byte in typed:
                        if byte == keys[len(held)]:
                            held += bytes([byte])
                            if held == keys:
                                if out:
                                    sock.send(out)
                                return True
                        else:
                            out += held
                            held = b""
                            if byte == keys[0]:
                                held = bytes([byte])
                            else:
                                out += bytes([byte])
                    for i in range(0, len(out), 32767):  # conmon reads a packet into 32 KiB
                        sock.send(out[i:i + 32767])
    except Leave:
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()

