"""The container's standard streams: pipes (or a pty) that the monitor copies.

A container is never handed the user's own stdin, stdout or stderr.  Those
are often a terminal, and a terminal is an input device too: a process that
holds it can read the keys typed into it, change its modes, or push keys
into it with TIOCSTI that the user's shell then runs.  So, as Docker does,
the container's streams are pipes (or, with -t, a pty of its own:
terminal.py), and the monitor copies between them and the user's.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable


def write_all(fd: int, data: bytes) -> None:
    """os.write may take only part of a large write; a pipe or terminal often does."""
    while data:
        data = data[os.write(fd, data):]


def pump(outputs: dict[int, Callable[[bytes], None]], sink: int | None, close_sink_at_eof: bool) -> None:
    """Copy each output fd to its handler until all of them end, and our
    stdin into `sink` meanwhile.  The sink is non-blocking and typed input
    waits in a buffer: a container that stops reading never stops its output.

    A pty's master reports the end of its slave's last holder as EIO, not
    as an empty read: both end an output."""
    import select

    outputs = dict(outputs)
    readers = list(outputs) + ([0] if sink is not None else [])
    pending = b""
    if sink is not None:
        os.set_blocking(sink, False)
    while outputs:
        readable, writable, _ = select.select(readers, [sink] if pending else [], [])
        for fd in readable:
            if fd in outputs:
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                except OSError:  # EIO from a pty master
                    data = b""
                if data:
                    outputs[fd](data)
                else:
                    del outputs[fd]
                    readers.remove(fd)
            else:
                typed = os.read(0, 65536)
                if typed:
                    pending += typed
                else:  # our stdin ended: so does the container's, if it is a pipe of its own
                    readers.remove(0)
                    if close_sink_at_eof and not pending:
                        os.close(sink)
                        sink = None
        if writable and pending:
            try:
                pending = pending[os.write(sink, pending):]
            except BlockingIOError:
                pass
            except BrokenPipeError:  # the container closed its stdin: what it did not read is dropped
                pending = b""
            if not pending and close_sink_at_eof and 0 not in readers:
                os.close(sink)
                sink = None
    if sink is not None and close_sink_at_eof:
        with contextlib.suppress(OSError):
            os.close(sink)
