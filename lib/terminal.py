"""The terminal: a pty of the container's own for `-t`, and the user's side of it.

A pty is a pair of devices: the *slave* behaves like a terminal (line
editing, Ctrl-C becomes SIGINT, `tty` names it) and the *master* is the
other end, where a terminal emulator or sshd reads what the programs
print and writes what the user types.

Why not hand the container the user's own terminal?  Because a terminal
is also an input device: the TIOCSTI ioctl pushes bytes into its input
queue as if typed, and whatever a container pushed into the user's
terminal runs in the user's root shell once the container exits.  So, as
runc and Docker do:

* the init opens a new pty in the container's *own* devpts instance
  (/dev/pts, mounted with `newinstance`), makes the slave its stdin,
  stdout, stderr and controlling terminal, and sends the master to the
  monitor over a socket (SCM_RIGHTS: a file descriptor crosses processes);
* the monitor copies the user's keystrokes into the master and the
  master's output to the user's screen and to the log.  The user's
  terminal is in raw mode meanwhile, so every key (Ctrl-C too) goes to the
  container's pty, whose own line discipline acts on it.
"""

from __future__ import annotations

import contextlib
import os

TIOCSPTLCK, TIOCGPTN = 0x40045431, 0x80045430


def connect_console(path: str) -> int:
    """Connect to an engine's console socket, while its path can still be reached."""
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return sock.detach()


def preload() -> None:
    """Import what take_console needs while the host's Python library can
    still be found: it runs after pivot_root (or setns into the container's
    mounts), where every import from a file fails."""
    import fcntl  # noqa: F401
    import socket  # noqa: F401
    import struct  # noqa: F401
    import termios  # noqa: F401


def take_console(dev_pts: str, sock_fd: int, size: dict | None = None) -> None:
    """In the container: a pty from its own devpts; the master goes to the
    monitor (or engine) over `sock_fd`, the slave becomes our stdio and
    controlling terminal.  `size` is the spec's consoleSize: the command's
    first look at its window (the engine may resize it later).  fcntl,
    socket, struct and termios must have been imported before pivot_root:
    after it, the host's Python library is gone."""
    import fcntl
    import socket
    import struct
    import termios

    from lib import host

    try:
        master = os.open(os.path.join(dev_pts, "ptmx"), os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise host.MinidockerError("a terminal needs a devpts mount (newinstance) at /dev/pts", 1) from None
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))  # unlock the slave
    number = struct.unpack("i", fcntl.ioctl(master, TIOCGPTN, b"\0" * 4))[0]
    if size and size.get("height") and size.get("width"):
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", size["height"], size["width"], 0, 0))
    slave = os.open(os.path.join(dev_pts, str(number)), os.O_RDWR | os.O_NOCTTY)
    host.explain("exec", f"console: /dev/pts/{number} of the container's own devpts; master sent to the monitor")
    with socket.socket(fileno=sock_fd) as sock:
        socket.send_fds(sock, [b"/dev/ptmx"], [master])
    os.close(master)
    if os.getsid(0) != os.getpid():  # a session of our own, so that the slave can become its terminal
        os.setsid()
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    os.close(slave)


def receive_master(sock) -> int:
    """The monitor's end: the master the init sent, or -1 if it died first."""
    import socket

    _, fds, _, _ = socket.recv_fds(sock, 16, 1)
    return fds[0] if fds else -1


def window_size(fd: int) -> tuple[int, int]:
    """(rows, columns) of a terminal; (0, 0) if fd is none."""
    import fcntl
    import struct
    import termios

    try:
        rows, cols = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))[:2]
    except OSError:
        return 0, 0
    return rows, cols


def copy_size(source: int, master: int) -> None:
    """The user's window size onto the container's pty (TIOCGWINSZ -> TIOCSWINSZ)."""
    import fcntl
    import termios

    with contextlib.suppress(OSError):
        fcntl.ioctl(master, termios.TIOCSWINSZ, fcntl.ioctl(source, termios.TIOCGWINSZ, b"\0" * 8))


@contextlib.contextmanager
def raw(fd: int):
    """A terminal in raw mode meanwhile, and as it was on every way out;
    nothing to do if fd is not a terminal."""
    import termios
    import tty

    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)  # not TCSAFLUSH: keys typed ahead must not be thrown away
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def user_side(master: int, interactive: bool):
    """The user's terminal while a `-t` container runs: its size followed
    (SIGWINCH), raw mode while typing goes in, restored on every way out."""
    import signal

    if not os.isatty(0):
        yield
        return
    copy_size(0, master)
    previous = signal.signal(signal.SIGWINCH, lambda _sig, _frame: copy_size(0, master))
    try:
        with raw(0) if interactive else contextlib.nullcontext():
            yield
    finally:
        signal.signal(signal.SIGWINCH, previous)
