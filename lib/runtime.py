"""The runtime layer: starts one container from its OCI spec, as runc does.

It is deliberately small and knows nothing of names, logs or `ps`: it makes
the namespaces, starts the init inside them, and hands back a process that
is paused just before execve, so that the caller can put it in its cgroups
and plug in its network first.  Then `go()` lets the command run.

    monitor ──unshare(CLONE_NEWPID), spawn──▶ unshare(1) ──exec──▶ init.py (PID 1)
       │  spec (marshal) ──── SPEC_FD ────▶
       ◀── "R" ────────────── REPORT_FD ──  in its namespaces now
       │  cgroups, network                   mounts, pivot_root, hostname
       │  "g" ─────────────── SPEC_FD ────▶  execve(command)
       ◀── EOF, or "CODE message" ── REPORT_FD (close-on-exec)
"""

from __future__ import annotations

import contextlib
import marshal
import os
import subprocess

from lib import host, namespaces
from lib.host import MinidockerError


class Init:
    """A container's first process, started and held before its execve."""

    def __init__(self, container_dir: str, spec: dict, network: str,
                 stdio: tuple[int | None, int | None, int | None], new_session: bool) -> None:
        spec_r, self._spec_w = os.pipe()
        self._report_r, report_w = os.pipe()
        keep = [spec_r, report_w]
        explain = os.environ.get("MINIDOCKER_EXPLAIN", "")
        if explain.isdigit():
            keep.append(int(explain))
        argv = [*namespaces.unshare_argv(container_dir, network), str(spec_r), str(report_w)]
        try:
            with namespaces.pid_namespace_for_next_child():
                self.proc = host.spawn(argv, "namespaces", stdin=stdio[0], stdout=stdio[1], stderr=stdio[2],
                                       pass_fds=keep, start_new_session=new_session)
        finally:
            os.close(spec_r)
            os.close(report_w)
        blob = marshal.dumps(spec)
        os.write(self._spec_w, len(blob).to_bytes(8, "little") + blob)
        self.pid = self.proc.pid

    def wait_ready(self) -> None:
        """Wait until the init runs inside its new namespaces.

        Popen returns as soon as the child exists, before unshare(1) has
        made anything: plugging a veth into /proc/PID/ns/net then would
        plug it into the host.  The init's first act is to write "R".
        """
        first = os.read(self._report_r, 1)
        if first != b"R":
            self._fail(first)

    def _fail(self, report: bytes) -> None:
        while chunk := os.read(self._report_r, 4096):
            report += chunk
        self.proc.wait()
        code, _, message = report.decode().partition(" ")
        raise MinidockerError(message or "the container init died before it started",
                              int(code) if code.isdigit() else host.EXIT_ENGINE)

    def go(self) -> None:
        """Let the command run; raise with its exit code if execve failed."""
        with contextlib.suppress(BrokenPipeError):  # the init already failed: its report says why
            os.write(self._spec_w, b"g")
        os.close(self._spec_w)
        first = os.read(self._report_r, 4096)
        if first:
            self._fail(first)
        os.close(self._report_r)

    def abort(self) -> None:
        """Give up before go(): the init exits without running anything."""
        for fd in (self._spec_w, self._report_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


    def wait(self) -> int:
        """Wait for PID 1; its exit code as a shell reads it: 128 + signal if killed."""
        code = self.proc.wait()
        return code if code >= 0 else 128 - code
