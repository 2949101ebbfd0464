"""The terminal: `run -it` and `exec -it` in a real terminal, tmux's.

A pane runs a shell; the test types into it (send-keys) and reads the
screen (capture-pane), as a person at the keyboard would.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time

import pytest
from conftest import MINIDOCKER, command_lines, md, wait_for

pytestmark = [pytest.mark.order(5), pytest.mark.cgroupv2,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install tmux)")]

HOST_PYTHON = "-v /usr:/usr:ro -v /usr/lib:/lib:ro -v /usr/lib64:/lib64:ro"
MINIDOCKER_CMD = shlex.join(MINIDOCKER)


class Pane:
    """A shell in a tmux pane of a server of our own (its own socket)."""

    def __init__(self, width: int = 91, height: int = 27) -> None:
        self.socket = f"mdt-tmux-{os.getpid()}"
        self.close()  # a server an earlier test left, if it failed half-way
        # The server inherits this environment: MINIDOCKER_ROOT and the cgroup parent of the test run.
        self.tmux("new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height),
                  "env PS1='host$ ' bash --norc --noprofile")
        self.wait_for("host$")

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True,
                              check=True).stdout

    def type(self, line: str) -> None:
        self.tmux("send-keys", "-t", "t", "-l", line)
        self.tmux("send-keys", "-t", "t", "Enter")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "t", *keys)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t")

    def wait_for(self, text: str, timeout: float = 120.0) -> str:  # emulated VMs are slow
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.05)
        raise AssertionError(f"{text!r} never showed; the screen:\n{self.screen()}")

    def clear(self) -> None:
        self.type("clear")
        time.sleep(0.2)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


@pytest.fixture
def pane():
    p = Pane()
    yield p
    p.close()


@pytest.mark.row("2B", "run -it in a terminal", "a pty of its own: tty, size, Ctrl-C, exit code")
def test_run_it_gets_a_pty_of_its_own(pane, row):
    pane.type(f"{MINIDOCKER_CMD} run -it --name mdt-tty --network none busybox sh")
    pane.wait_for("/ #")
    pane.type("tty; stty size; ls -l /proc/1/fd/ | grep -c pts/0")
    screen = pane.wait_for("\n3\n")
    assert "/dev/pts/0\n27 91\n" in screen  # the container's own devpts: numbering starts again
    pane.type("sleep 60")
    # Only once sleep runs has the shell put its terminal back to cooked mode
    # (ISIG): a ^C typed before then is read as a key by the line editor.
    wait_for(lambda: md("exec", "mdt-tty", "pidof", "sleep", check=False).returncode == 0, timeout=120)
    pane.keys("C-c")  # raw mode: the byte goes to the container's pty, whose line discipline sends SIGINT
    pane.wait_for("^C")
    pane.type("echo back; exit 3")
    pane.wait_for("\nhost$")
    pane.type("echo rc=$?; stty -a | tr ' ;' '\\n\\n' | grep -x -- '-\\?icanon' | sed 's/^/mode=/'")
    screen = pane.wait_for("\nmode=")
    assert "rc=3" in screen and "mode=icanon" in screen  # raw mode (-icanon) undone
    logs = md("logs", "mdt-tty").stdout
    assert "/dev/pts/0" in logs and "back" in logs
    row.result = "/dev/pts/0, 27 91, ^C to sleep, exit 3, logged, cooked again"


@pytest.mark.row("4", "TIOCSTI into the terminal of run -it", "stays in the container's own pty")
def test_tiocsti_cannot_type_into_the_users_shell(pane, row, tmp_path):
    marker = tmp_path / "typed-by-the-container"
    inject = ("import fcntl, termios; "
              f"[fcntl.ioctl(0, termios.TIOCSTI, bytes([c])) for c in b'touch {marker}\\n']")
    pane.type(f"{MINIDOCKER_CMD} run -it --rm --network none {HOST_PYTHON} busybox /usr/bin/python3 -I -c "
              f"{shlex.quote(inject)}; echo done=$?")
    pane.wait_for("done=0")
    pane.type("echo next")
    pane.wait_for("\nnext\n")  # the host's shell has run everything it was going to
    assert not marker.exists()
    row.result = "pushed 'touch …' with TIOCSTI: the host's shell never ran it"


def test_exec_it_gets_a_pty(pane):
    md("run", "-d", "--name", "mdt-exec-tty", "--network", "none", "busybox", "sleep", "60")
    pane.type(f"{MINIDOCKER_CMD} exec -it mdt-exec-tty sh")
    pane.wait_for("/ #")
    pane.type("tty; stty size")
    screen = pane.wait_for("27 91")
    assert "/dev/pts/" in screen
    pane.type("exit 4")
    pane.wait_for("\nhost$")
    pane.type("echo rc=$?")
    pane.wait_for("rc=4")


def test_tty_without_a_terminal():
    out = md("run", "--rm", "-t", "--network", "none", "busybox", "sh", "-c", "tty; echo $TERM").stdout
    assert out == "/dev/pts/0\nxterm\n"


def status(ref: str) -> str:
    return md("inspect", "-f", "{{.State.Status}}", ref).stdout.strip()


def wait_for_prompts(pane: Pane, count: int) -> str:
    """The host shell's prompt shown `count` times: it is back, and reads our keys."""
    return wait_for(lambda: pane.screen() if pane.screen().count("host$") >= count else "", timeout=120)


@pytest.mark.row("2B", "detach, attach", "ctrl-p ctrl-q leaves it running; attach returns to it; its exit code")
def test_detach_and_attach_again(pane, row):
    pane.type(f"{MINIDOCKER_CMD} run -it --name mdt-attach --network none busybox sh")
    pane.wait_for("/ #")
    pane.type("echo first-$((6*7))")
    pane.wait_for("first-42")
    pane.keys("C-p", "C-q")
    wait_for_prompts(pane, 2)
    pane.type("echo detached=$?")
    pane.wait_for("detached=0")
    assert status("mdt-attach") == "running"
    pane.clear()
    pane.type(f"{MINIDOCKER_CMD} attach mdt-attach")
    pane.type("tty; stty size; echo again-$((7*6))")
    screen = pane.wait_for("again-42")
    assert "/dev/pts/0\n27 91\n" in screen
    pane.type("exit 6")
    wait_for_prompts(pane, 2)
    pane.type("echo rc=$?")
    pane.wait_for("rc=6")
    assert status("mdt-attach") == "exited"
    assert "first-42" in md("logs", "mdt-attach").stdout  # what was shown before the detach, too
    row.result = "detached (0), still running; attach: /dev/pts/0, 27 91; exit 6 back to the caller"


def test_detach_keys_of_ones_own(pane):
    pane.type(f"{MINIDOCKER_CMD} run -it --detach-keys ctrl-x,x --name mdt-keys --network none busybox sh")
    pane.wait_for("/ #")
    pane.keys("C-p", "C-q")  # not the keys now: they reach the shell, and nothing detaches
    pane.type("echo still-$((5*5))")
    pane.wait_for("still-25")
    pane.keys("C-x", "x")
    wait_for_prompts(pane, 2)
    assert status("mdt-keys") == "running"
    done = md("run", "--rm", "--detach-keys", "ctrl-", "busybox", "true", check=False)
    assert done.returncode == 125 and "Invalid detach keys (ctrl-) provided" in done.stderr


def test_closing_the_terminal_leaves_it_running(pane):
    pane.type(f"{MINIDOCKER_CMD} run -it --name mdt-hangup --network none busybox sh")
    pane.wait_for("/ #")
    pane.close()  # the terminal goes: the client gets SIGHUP
    wait_for(lambda: not any("run\0-it\0--name\0mdt-hangup" in c for c in command_lines().values()), timeout=30)
    assert status("mdt-hangup") == "running"
    assert md("exec", "mdt-hangup", "echo", "alive").stdout == "alive\n"


def test_start_ai_attaches_to_a_created_one(pane):
    md("create", "-it", "--name", "mdt-start-ai", "--network", "none", "busybox", "sh")
    pane.type(f"{MINIDOCKER_CMD} start -ai mdt-start-ai")
    pane.wait_for("/ #")
    pane.type("tty; exit 2")
    wait_for_prompts(pane, 2)
    pane.type("echo rc=$?")
    screen = pane.wait_for("rc=2")
    assert "/dev/pts/0" in screen
