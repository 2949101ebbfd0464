"""Phase 1: Isolation.  The seed's table, replayed against real containers."""

from __future__ import annotations

import os
import pty
import select
import shutil
import socket
import subprocess
import tempfile
import time

import pytest
from conftest import MINIDOCKER, SANDBOX, TOP, cgroups_below, inspect, leftovers, md, our_mounts, wait_for

pytestmark = pytest.mark.order(1)

NAMESPACES = ("pid", "mnt", "uts", "ipc", "net")


@pytest.mark.row("1", "PID namespace", "PID 1 is the command")
def test_pid_1_is_the_command(row):
    out = md("run", "--rm", "busybox", "sh", "-c", "echo $$").stdout
    assert out == "1\n"
    row.result = "echo $$ → 1"


@pytest.mark.row("1", "Host processes", "invisible inside")
def test_host_processes_are_invisible(row):
    out = md("run", "--rm", "busybox", "ps", "-o", "pid,comm").stdout.split("\n")[1:]
    pids = [line.split()[0] for line in out if line.strip()]
    assert pids == ["1"], out
    assert len(os.listdir("/proc")) > 10  # the host does have other processes
    row.result = "ps lists PID 1 only"


@pytest.mark.row("1", "Namespaces", "pid, mnt, uts, ipc, net inodes ≠ host's")
def test_namespace_inodes_differ(row):
    cid = md("run", "-d", "busybox", "sleep", "30").stdout.strip()
    pid = inspect(cid)["State"]["Pid"]
    # minidocker's host is the sandbox: its network namespace is the one the
    # container's must differ from (the machine's differs from both anyway).
    host = {kind: os.stat(f"/proc/self/ns/{kind}").st_ino for kind in NAMESPACES}
    host["net"] = os.stat(f"/run/netns/{SANDBOX}").st_ino
    differ = []
    for kind in NAMESPACES:
        assert os.stat(f"/proc/{pid}/ns/{kind}").st_ino != host[kind], f"{kind} namespace is the host's"
        differ.append(kind)
    row.result = ", ".join(differ) + " differ"


@pytest.mark.row("1", "Hostname", "the short ID inside; host's unchanged")
def test_hostname_is_the_short_id_and_host_unchanged(row):
    before = socket.gethostname()
    out = md("run", "--name", "hostname-test", "busybox", "hostname").stdout.strip()
    assert out == inspect("hostname-test")["Id"][:12]
    assert md("run", "--rm", "--hostname", "box", "busybox", "hostname").stdout.strip() == "box"
    assert socket.gethostname() == before
    row.result = f"{out} inside, {before} outside"


@pytest.mark.row("1", "Root filesystem", "host files invisible")
def test_host_files_are_invisible(row, tmp_path):
    marker = tmp_path / "host-only-file"
    marker.write_text("secret")
    done = md("run", "--rm", "busybox", "cat", str(marker), check=False)
    assert done.returncode != 0 and "No such file" in done.stderr
    listing = md("run", "--rm", "busybox", "ls", "/").stdout.split()
    assert "work" not in listing and "bin" in listing
    row.result = "cat of a host file: No such file"


@pytest.mark.row("1", "Copy-on-write root", "the image is unchanged after writes")
def test_image_unchanged_after_writes(row):
    md("run", "--rm", "busybox", "sh", "-c", "echo x > /bin/new-file && rm /bin/ls && echo y > /etc/passwd")
    check = md("run", "--rm", "busybox", "sh", "-c", "ls /bin/new-file; ls /bin/ls; cat /etc/passwd", check=False)
    assert "/bin/new-file: No such file" in check.stderr
    assert "/bin/ls" in check.stdout and "root:x:0:0" in check.stdout
    row.result = "writes stayed in the container's upper layer"


@pytest.mark.row("1", "Kernel filesystems", "/proc fresh, /sys read-only, /dev minimal")
def test_proc_sys_dev(row):
    out = md("run", "--rm", "busybox", "sh", "-c",
             "ls /dev; touch /sys/x 2>&1; cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /dev/pts").stdout
    for dev in ("null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx", "mqueue"):
        assert dev in out.split(), dev
    for absent in ("sda", "vda", "kmsg", "mem"):
        assert absent not in out.split()
    assert "Read-only file system" in out
    assert "sh -c ls /dev" in out
    row.result = "/dev: null zero full random urandom tty pts shm; /sys ro"


@pytest.mark.row("1", "Loopback", "lo is up inside")
def test_loopback_is_up(row):
    out = md("run", "--rm", "--network", "none", "busybox", "ip", "-o", "link", "show", "lo").stdout
    assert "UP" in out.split("<")[1].split(">")[0]
    assert md("run", "--rm", "--network", "none", "busybox", "ping", "-c", "1", "-W", "1", "127.0.0.1").returncode == 0
    row.result = "ping 127.0.0.1 answered"


def test_env_workdir_and_defaults():
    out = md("run", "--rm", "-e", "GREETING=hello there", "-w", "/tmp/work", "busybox",
             "sh", "-c", 'echo "$GREETING"; pwd; echo "$HOME"; echo "$PATH"').stdout.splitlines()
    assert out[0] == "hello there"
    assert out[1] == "/tmp/work"
    assert out[2] == "/root"
    assert "/bin" in out[3].split(":") and "/usr/sbin" in out[3].split(":")


@pytest.mark.row("1", "Exit codes", "0, 1, 3 passed through")
@pytest.mark.parametrize("code", [0, 1, 3])
def test_exit_code_is_the_commands(code, row):
    assert md("run", "--rm", "busybox", "sh", "-c", f"exit {code}", check=False).returncode == code
    row.result = f"exit {code} → {code}"


@pytest.mark.row("1", "Exit code 125", "minidocker's own failure, one line")
@pytest.mark.parametrize("args", [["no-such-image", "true"], ["--memory=abc", "busybox", "true"],
                                  ["--bogus-flag", "busybox", "true"], ["-w", "relative", "busybox", "pwd"],
                                  ["--network", "container:nosuch", "busybox", "true"]])
def test_exit_125_for_engine_errors(args, row):
    before = leftovers()
    done = md("run", *args, check=False)
    assert done.returncode == 125
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert leftovers() == before
    row.result = done.stderr.strip()[:60]


@pytest.mark.row("1", "Exit codes 126, 127", "not executable, not found")
def test_exit_126_and_127(row):
    missing = md("run", "--rm", "busybox", "no-such-command", check=False)
    assert missing.returncode == 127
    assert 'exec: "no-such-command": executable file not found in $PATH' in missing.stderr
    for target in ("/etc/passwd", "/etc"):
        assert md("run", "--rm", "busybox", target, check=False).returncode == 126
    # Without --rm, which would remove the container anyway: a run that could
    # not start leaves nothing.
    for command, code in (("no-such-command", 127), ("/etc", 126)):
        assert md("run", "busybox", command, check=False).returncode == code
        assert md("ps", "-aq").stdout == "" and leftovers() == []
    row.result = "127 and 126, nothing left behind"


@pytest.mark.row("1", "Exit code 137", "killed by SIGKILL")
def test_exit_137_when_killed(row):
    run = subprocess.Popen([*MINIDOCKER, "run", "--name", "victim", "busybox", "sleep", "60"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: "victim" in md("ps").stdout)
    md("kill", "victim")
    assert run.wait(timeout=20) == 137
    row.result = "run returned 137"


@pytest.mark.row("1", "Cleanup", "no mounts or cgroups left on the host")
def test_no_mounts_left_after_exit(row):
    md("run", "--rm", "busybox", "true")
    assert our_mounts() == []
    assert cgroups_below(os.environ["MINIDOCKER_CGROUP_PARENT"]) == []
    row.result = "mountinfo and cgroupfs clean"


def test_not_root_is_refused():
    # Run from a copy anyone may read: a clone under /root or in a 0750 home
    # is closed to uid 65534, which must meet the refusal, not a PermissionError.
    copy = tempfile.mkdtemp(prefix="minidocker-nonroot-")
    try:
        shutil.copy(os.path.join(TOP, "minidocker.py"), copy)
        for package in ("cli", "lib"):
            shutil.copytree(os.path.join(TOP, package), os.path.join(copy, package),
                            ignore=shutil.ignore_patterns("__pycache__"))
        for top, _, files in os.walk(copy):  # readable by all, whatever the clone's umask was
            os.chmod(top, 0o755)
            for name in files:
                os.chmod(os.path.join(top, name), 0o755 if name == "minidocker.py" else 0o644)
        done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               os.path.join(copy, "minidocker.py"), "ps"], capture_output=True, text=True)
    finally:
        shutil.rmtree(copy)
    assert done.returncode == 125
    assert "needs root" in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.row("1", "images", "REPOSITORY, TAG, IMAGE ID, CREATED, SIZE")
def test_images_lists_busybox(row):
    md("run", "--rm", "busybox", "true")
    lines = md("images").stdout.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    busybox = next(line for line in lines if line.startswith("busybox "))
    assert busybox.split()[1] == "latest" and busybox.rstrip().endswith("MB")
    row.result = " ".join(busybox.split())


def test_import_directory_and_tarball(tmp_path):
    rootfs = tmp_path / "rootfs"
    subprocess.run([os.path.join(TOP, "fixtures", "busybox-rootfs.sh"), str(rootfs)], check=True)
    (rootfs / "etc" / "motd").write_text("imported from a directory\n")
    md("import", str(rootfs), "fromdir:v1")
    assert md("run", "--rm", "fromdir:v1", "cat", "/etc/motd").stdout == "imported from a directory\n"
    tarball = tmp_path / "rootfs.tar.gz"
    (rootfs / "etc" / "motd").write_text("imported from a tarball\n")
    subprocess.run(["tar", "-czf", str(tarball), "-C", str(rootfs), "."], check=True)
    md("import", str(tarball), "fromtar")
    assert md("run", "--rm", "fromtar", "cat", "/etc/motd").stdout == "imported from a tarball\n"
    assert any(line.startswith("fromtar ") and " latest " in line for line in md("images").stdout.splitlines())


def test_interactive_tty_shell():
    """`run -it busybox sh`: a prompt, a command, Ctrl-D leaves with the code."""
    main, child = pty.openpty()
    proc = subprocess.Popen([*MINIDOCKER, "run", "-it", "--rm", "busybox", "sh"], stdin=child, stdout=child,
                            stderr=child)
    os.close(child)
    seen = b""

    def read_until(token: bytes, timeout: float = 10) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while token not in seen and time.monotonic() < deadline:
            if select.select([main], [], [], 0.2)[0]:
                try:
                    seen += os.read(main, 4096)
                except OSError:
                    break
        assert token in seen, seen

    read_until(b"# ")
    os.write(main, b"echo hello from $$; false\n")
    # Ctrl-D only once the next prompt is out: busybox sh puts the terminal in
    # raw mode before it prints one.  A ^D typed while the line discipline is
    # still canonical is stored as a NUL, which the raw-mode shell ignores.
    read_until(b"hello from 1\r\n/ # ")
    os.write(main, b"\x04")  # Ctrl-D: end of input, the shell exits with $? of `false`
    assert proc.wait(timeout=10) == 1
    os.close(main)
