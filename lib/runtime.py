"""The runtime layer: starts one container from its OCI spec, as runc does.

It is deliberately small and knows nothing of names, logs or `ps`: it makes
the namespaces, starts the init inside them, and hands back a process that
is paused just before execve, so that the caller can put it in its cgroups
and plug in its network first.  Then `go()` lets the command run.

    monitor ─ unshare(CLONE_NEWPID); fork ─▶ child = PID 1 of a new pid namespace
       │                                      init.main: unshare(mnt, uts, ipc, net)
       ◀── "R" ──────────── report pipe ───   in its namespaces now
       │  cgroups, network                    mounts, pivot_root, hostname
       │  "g" ──────────────── go pipe ────▶  ... waits, then execve(command)
       ◀── EOF, or "CODE message" ── report pipe (close-on-exec)

Why fork instead of exec'ing `unshare(1)`?  unshare(1) is unshare(2) and an
execve; the execve would have to start a second Python for the init, 30 ms
of a 70 ms start here.  A fork of the monitor has all it needs loaded, and
stays the monitor's child, so waitpid(2) gives the exact exit status.
"""

from __future__ import annotations

import contextlib
import os

from lib import cgroups, host, init, namespaces, seccomp, stdio, terminal
from lib.host import MinidockerError

INHERIT, NULL, PIPE, CONSOLE = "inherit", "null", "pipe", "console"


class Init:
    """A container's first process, started and held before its execve.

    stdin is INHERIT (an engine's own, passed through), NULL, or PIPE, whose
    write end is then `stdin`; stdout and stderr are INHERIT or PIPE, whose
    read ends are then `stdout` and `stderr`.  A pty (`-t`) is asked for by
    the spec and sent to an engine's console socket: conmon's, for our own
    containers (monitor.py).  Whatever the
    modes, the init starts a session of its own (setsid), as runc's does: a
    terminal passed through is then never its controlling terminal, so it
    can neither push keys into it (TIOCSTI) nor signal the caller's group.
    """

    def __init__(self, spec: dict, stdin: str, output: str) -> None:
        self._report_r, report_w = os.pipe()  # os.pipe() fds are close-on-exec
        go_r, self._go_w = os.pipe()
        stdin_pipe = os.pipe() if stdin == PIPE else None
        pipes = [os.pipe(), os.pipe()] if output == PIPE else []
        pid_ns = next((n for n in spec["linux"]["namespaces"] if n["type"] == "pid"), None)
        with (namespaces.pid_namespace_for_next_child(pid_ns.get("path")) if pid_ns else contextlib.nullcontext()):
            pid = os.fork()
        if pid == 0:  # the child: PID 1 of the new pid namespace (when the spec asks for one)
            try:
                _unreadable()
                os.close(self._report_r)
                os.close(self._go_w)
                _child_stdio(stdin, stdin_pipe, pipes, False)
                # Nothing of the monitor's either: a lock it holds (flock is shared
                # through fork) would stay held for as long as this child waits.
                preserved = int(spec.get("annotations", {}).get("org.minidocker.preserve-fds", 0))
                close_all_but({0, 1, 2, report_w, go_r, int(os.environ.get("MINIDOCKER_EXPLAIN", "-1")),
                                *range(3, 3 + preserved)})
                init.main(spec, go_r, report_w)
            except host.MinidockerError as e:
                with contextlib.suppress(BaseException):
                    os.write(report_w, f"{e.code} {e}".encode())
            except BaseException as e:  # never return into the monitor's code
                with contextlib.suppress(BaseException):
                    os.write(report_w, f"{host.EXIT_ENGINE} container init: {e}".encode())
            os._exit(host.EXIT_ENGINE)
        self.pid = pid
        os.close(report_w)
        os.close(go_r)
        self.stdin: int | None = None
        if stdin_pipe is not None:
            os.close(stdin_pipe[0])
            self.stdin = stdin_pipe[1]
        self.stdout: int | None = None
        self.stderr: int | None = None
        if pipes:
            (self.stdout, out_w), (self.stderr, err_w) = pipes
            os.close(out_w)
            os.close(err_w)
        self.status: int | None = None

    def _close(self, name: str) -> None:
        """Close one of our pipe ends once: a second close could hit a reused fd."""
        fd = getattr(self, name)
        if fd is not None:
            setattr(self, name, None)
            os.close(fd)

    def wait_ready(self) -> None:
        """Wait until the init runs inside its new namespaces.

        fork() returns before the child has called unshare(2): plugging a
        veth into /proc/PID/ns/net then would plug it into the host.  The
        init writes "R" once its namespaces exist.
        """
        first = os.read(self._report_r, 1)
        if first != b"R":
            self._fail(first)

    def _fail(self, report: bytes) -> None:
        while chunk := os.read(self._report_r, 4096):
            report += chunk
        self._close("_report_r")
        self.wait()
        code, _, message = report.decode().partition(" ")
        raise MinidockerError(message or "the container init died before it started",
                              int(code) if code.isdigit() else host.EXIT_ENGINE)

    def own_failure(self) -> MinidockerError | None:
        """Why the init failed, if it has: when a step of ours fails because
        the init is gone (its network namespace with it), the init's own
        report is the one the user needs to read.

        The report, not waitpid(WNOHANG), tells: the init writes it before
        it exits, and an exiting process gives up its namespaces well before
        it becomes a zombie.  In between, our `ip` already fails on the
        vanished namespace while WNOHANG still says "running"."""
        if self._report_r is None or self.status is not None:
            return None
        os.set_blocking(self._report_r, False)
        report = b""
        with contextlib.suppress(BlockingIOError):  # nothing (more) written yet
            while chunk := os.read(self._report_r, 4096):
                report += chunk
        code, _, message = report.lstrip(b"RWU").decode(errors="replace").partition(" ")
        if not (code.isdigit() and message):  # no report: the init lives on, or exec'd
            return None
        self.wait()
        return MinidockerError(message, int(code))

    def wait_waiting(self) -> None:
        """OCI create: wait until the init is set up and waits for `start`."""
        first = os.read(self._report_r, 1)
        if first != b"W":
            self._fail(first)
        self._close("_report_r")
        self._close("_go_w")

    def wait_for_hooks(self) -> None:
        """OCI create with hooks: wait until the init has its mounts and
        waits, before pivot_root, for the runtime to run them."""
        first = os.read(self._report_r, 1)
        if first != b"H":
            self._fail(first)

    def hooks_done(self) -> None:
        os.write(self._go_w, b"h")

    def map_users(self, uid_mappings: list[dict], gid_mappings: list[dict]) -> None:
        """Write the init's uid and gid maps once it has entered its user namespace."""
        first = os.read(self._report_r, 1)
        if first != b"U":
            self._fail(first)
        for kind, mappings in (("uid_map", uid_mappings), ("gid_map", gid_mappings)):
            host.write(f"/proc/{self.pid}/{kind}",
                       "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in mappings), step="security")
        os.write(self._go_w, b"m")

    def go(self) -> None:
        """Let the command run; raise with its exit code if execve failed."""
        with contextlib.suppress(BrokenPipeError):  # the init already failed: its report says why
            os.write(self._go_w, b"g")
        self._close("_go_w")
        first = os.read(self._report_r, 4096)
        if first:
            self._fail(first)
        self._close("_report_r")

    def abort(self) -> None:
        """Give up: the init exits without running anything."""
        for name in ("_go_w", "_report_r", "stdin", "stdout", "stderr"):
            self._close(name)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, 9)
        self.wait()

    def wait(self) -> int:
        """Wait for PID 1; its exit code as a shell reads it: 128 + signal if killed."""
        if self.status is None:
            _, status = os.waitpid(self.pid, 0)
            self.status = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
        return self.status


def _unreadable() -> None:
    """First thing in a child that is going into a container: not dumpable.

    Until execve it holds the caller's environment and fds and the host's
    view of things, and an exec'd child is visible in the container's pid
    namespace at once: root in there could read /proc/<it>/environ, or open
    /proc/<it>/fd/N, in that window.  PR_SET_DUMPABLE 0 makes /proc/<it>
    root's of the host only; execve makes the command dumpable again."""
    host._call("prctl", 4, 0, 0, 0, 0)  # PR_SET_DUMPABLE


def _child_stdio(stdin: str, stdin_pipe: tuple[int, int] | None, pipes: list[tuple[int, int]],
                 console: bool) -> None:
    """The container's fds 0, 1, 2, in a session of its own; nothing else of ours."""
    if os.environ.get("MINIDOCKER_EXPLAIN"):  # keep --explain off the container's stderr
        os.environ["MINIDOCKER_EXPLAIN"] = str(os.dup(2))
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    if stdin_pipe is not None:
        os.dup2(stdin_pipe[0], 0)
        os.close(stdin_pipe[0])
        os.close(stdin_pipe[1])
    elif stdin == NULL or console:
        os.dup2(null, 0)
    for target, (read_end, write_end) in zip((1, 2), pipes, strict=False):
        os.dup2(write_end, target)
        os.close(write_end)
        os.close(read_end)
    if console:  # until the pty replaces them: the user's terminal never reaches the container
        os.dup2(null, 1)
        os.dup2(null, 2)
    os.close(null)


def _console_pair() -> tuple:
    """A socket pair over which the init sends its pty's master (SCM_RIGHTS)."""
    import socket

    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


def close_all_but(keep: set[int]) -> None:
    """Close every fd but those listed: what the caller had open has no
    business in a container, not even until execve."""
    for fd in map(int, os.listdir("/proc/self/fd")):
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def exec_in(target: int, process: dict, seccomp_profile: dict | None, cgroup_dirs: list[str],
            stdin: str, output: str, detach: bool = False, console_socket: str = "", preserve_fds: int = 0) -> int:
    """Run a process inside a running container (exec); its exit code.

    A forked child joins the container's cgroup and pid namespace (as a
    member, not PID 1), then its ipc, uts, net and mount namespaces (the
    last also makes the container's / our root), and takes on the same
    capabilities, seccomp filter and user as the container's PID 1.  Its
    stdio as Init's: INHERIT (an engine's, with an engine's console socket)
    or, from our own CLI, pipes and a pty that we copy (stdio.py).
    """
    report_r, report_w = os.pipe()
    ours, console_sock = _console_pair() if output == CONSOLE else (None, None)
    stdin_pipe = os.pipe() if stdin == PIPE and output != CONSOLE else None  # a pty is its stdin too
    pipes = [os.pipe(), os.pipe()] if output == PIPE else []
    # Compiled here: after setns into the container's mounts, the host's
    # Python library (and libseccomp's bindings) can no longer be found.
    seccomp_filter = seccomp.compile_filter(seccomp_profile) if seccomp_profile else None
    with namespaces.pid_namespace_for_next_child(join=f"/proc/{target}/ns/pid"):
        pid = os.fork()
    if pid == 0:
        try:
            _unreadable()
            os.close(report_r)
            if ours is not None:
                ours.close()
            cgroups.join_self(cgroup_dirs)  # before anything runs: no unlimited window
            if console_sock is not None:
                console = console_sock.detach()
            else:
                console = terminal.connect_console(console_socket) if console_socket else -1
            if console >= 0:
                terminal.preload()
            _child_stdio(stdin, stdin_pipe, pipes, console >= 0)
            explain = int(os.environ.get("MINIDOCKER_EXPLAIN", "-1"))
            close_all_but({0, 1, 2, report_w, console, explain, *range(3, 3 + preserve_fds)})
            if host.explaining():
                import shlex  # noqa: F401 -- explain quotes with it; after joining the mounts it is gone
            init.no_more_imports()
            namespaces.join_all(target)
            if console >= 0:
                terminal.take_console("/dev/pts", console, process.get("consoleSize"))
            init.exec_process(process, seccomp_filter, preserve_fds)
        except host.MinidockerError as e:
            with contextlib.suppress(BaseException):
                os.write(report_w, f"{e.code} {e}".encode())
            os._exit(e.code)
        except BaseException as e:
            with contextlib.suppress(BaseException):
                os.write(report_w, f"{host.EXIT_CANNOT_INVOKE} exec: {e}".encode())
        os._exit(host.EXIT_CANNOT_INVOKE)
    os.close(report_w)
    if output != INHERIT:  # our own CLI: a signal that reaches us is the process's, as for `run`
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, lambda number, _frame: os.kill(pid, number))
    master, sink, outputs = -1, None, {}
    if ours is not None:
        console_sock.close()
        master = terminal.receive_master(ours)
        ours.close()
    if stdin_pipe is not None:
        os.close(stdin_pipe[0])
        sink = stdin_pipe[1]
    for (read_end, write_end), own in zip(pipes, (1, 2), strict=False):
        os.close(write_end)
        outputs[read_end] = own
    report = b""
    while chunk := os.read(report_r, 4096):
        report += chunk
    os.close(report_r)
    if detach:  # the caller reports the PID; whoever adopts the orphan reaps it
        if report:
            raise MinidockerError(report.decode().partition(" ")[2], host.EXIT_CANNOT_INVOKE)
        return pid
    if master >= 0:
        if not report:
            with terminal.user_side(master, stdin == PIPE):
                stdio.pump({master: lambda data: stdio.write_all(1, data)}, master if stdin == PIPE else None,
                           close_sink_at_eof=False)
        os.close(master)
    elif outputs:
        stdio.pump({fd: (lambda data, own=own: stdio.write_all(own, data)) for fd, own in outputs.items()},
                   sink, close_sink_at_eof=True)
        for fd in outputs:
            os.close(fd)
    _, status = os.waitpid(pid, 0)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
    if report:
        raise MinidockerError(report.decode().partition(" ")[2], code)
    return code
