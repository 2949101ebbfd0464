"""Phase 3: DNS, network modes, user-defined networks, stable IPs, ports, volumes.

All traffic stays between the sandbox host, its containers and the uplink.
"""

from __future__ import annotations

import os
import sys

import pytest
from conftest import HOST_IP, SANDBOX, TOP, UPLINK, inspect, md, sh, wait_for

pytestmark = pytest.mark.order(5)
sys.path.insert(0, TOP)

from lib import dns  # noqa: E402

WEB = "mkdir -p /www && echo hello from $(hostname) > /www/index.html && httpd -f -p 80 -h /www"


def fetch(netns: str, url: str) -> str:
    """An HTTP GET from inside one of the sandbox's namespaces; "" if it fails."""
    client = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode(), end='')"
    try:
        return sh(sys.executable, "-c", client, url, netns=netns)
    except Exception:
        return ""


@pytest.fixture(autouse=True)
def no_networks_left():
    yield
    for line in md("network", "ls").stdout.splitlines()[1:]:
        name = line.split()[1]
        if name != "bridge":
            md("network", "rm", name, check=False)


@pytest.mark.row("3", "resolv.conf", "the host's usable servers; --dns overrides")
def test_resolv_conf(row, tmp_path):
    with open("/etc/resolv.conf") as f:
        usable = [line.split()[1] for line in f if line.startswith("nameserver") and not line.split()[1]
                  .startswith("127.")]
    inside = md("run", "--rm", "busybox", "cat", "/etc/resolv.conf").stdout
    assert [line.split()[1] for line in inside.splitlines() if line.startswith("nameserver")] == \
        (usable or list(dns.FALLBACK) if not os.path.exists(dns.UPSTREAM) else usable)
    assert md("run", "--rm", "--dns", "192.0.2.53", "busybox", "cat", "/etc/resolv.conf").stdout == \
        "nameserver 192.0.2.53\n"
    stub = tmp_path / "resolv.conf"  # systemd-resolved's stub: useless inside a container
    stub.write_text("nameserver 127.0.0.53\nsearch lan\n")
    text = dns.resolv_conf([], str(stub))
    assert "127.0.0.53" not in text and "search lan" in text and "nameserver" in text
    row.result = f"{', '.join(usable)}; --dns 192.0.2.53; 127.0.0.53 dropped"


def test_hosts_and_hostname_files():
    out = md("run", "--rm", "--name", "named", "--hostname", "box", "busybox", "sh", "-c",
             "cat /etc/hostname; grep box /etc/hosts; grep localhost /etc/hosts | head -1").stdout.splitlines()
    assert out[0] == "box"
    assert out[1].split()[1:] == ["box", "named"] and out[1].startswith("172.18.0.")
    assert out[2].split() == ["127.0.0.1", "localhost"]


@pytest.mark.row("3", "--network host", "shares the host's network namespace")
def test_network_host(row):
    pid = inspect(md("run", "-d", "--network", "host", "busybox", "sleep", "30").stdout.strip())["State"]["Pid"]
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{SANDBOX}").st_ino
    links = md("run", "--rm", "--network", "host", "busybox", "ip", "-o", "link").stdout
    assert "mdt-h" in links and "veth" not in links.split(":")[1]
    row.result = "same inode as the (sandbox) host's"


@pytest.mark.row("3", "--network container:", "shares that container's network namespace")
def test_network_container(row):
    md("run", "-d", "--name", "server", "busybox", "sh", "-c", WEB)
    pid = inspect("server")["State"]["Pid"]
    joined = inspect(md("run", "-d", "--network", "container:server", "busybox", "sleep", "30").stdout.strip())
    assert os.stat(f"/proc/{joined['State']['Pid']}/ns/net").st_ino == os.stat(f"/proc/{pid}/ns/net").st_ino
    page = md("run", "--rm", "--network", "container:server", "busybox", "wget", "-qO-", "http://127.0.0.1/")
    assert page.stdout.startswith("hello from")
    row.result = "same net inode; localhost reaches the other's server"


@pytest.mark.row("3", "User-defined network", "containers reach each other by name; other networks cannot")
def test_user_network_names_and_isolation(row):
    md("network", "create", "front")
    md("network", "create", "--subnet", "10.77.0.0/24", "back")
    md("run", "-d", "--name", "api", "--network", "front", "busybox", "sh", "-c", WEB)
    md("run", "-d", "--name", "db", "--network", "back", "busybox", "sleep", "30")
    out = md("run", "--rm", "--network", "front", "busybox", "sh", "-c", "ping -c 1 -W 2 api && wget -qO- http://api/")
    assert "1 packets received" in out.stdout and "hello from" in out.stdout
    db_ip = inspect("db")["NetworkSettings"]["IPAddress"]
    assert db_ip.startswith("10.77.0.")
    cross = md("run", "--rm", "--network", "front", "busybox", "ping", "-c", "1", "-W", "1", db_ip, check=False)
    assert cross.returncode != 0
    default = md("run", "--rm", "busybox", "ping", "-c", "1", "-W", "1", db_ip, check=False)
    assert default.returncode != 0
    row.result = f"ping api ok; {db_ip} on another network unreachable"


def test_hosts_follow_containers_coming_and_going():
    md("network", "create", "team")
    md("run", "-d", "--name", "first", "--network", "team", "busybox", "sleep", "30")
    md("run", "-d", "--name", "second", "--network", "team", "busybox", "sleep", "30")
    assert "second" in md("exec", "first", "cat", "/etc/hosts").stdout.split()
    md("rm", "-f", "second")
    assert "second" not in md("exec", "first", "cat", "/etc/hosts").stdout.split()


@pytest.mark.row("3", "Stable IP", "--ip honoured and kept after restart")
def test_fixed_ip_survives_restart(row):
    md("network", "create", "--subnet", "10.88.0.0/24", "fixed")
    md("run", "-d", "--name", "pinned", "--network", "fixed", "--ip", "10.88.0.42", "busybox", "sleep", "60")
    assert "inet 10.88.0.42/24" in md("exec", "pinned", "ip", "-o", "addr", "show", "eth0").stdout
    md("run", "-d", "--name", "roamer", "--network", "fixed", "busybox", "sleep", "60")
    roamer = inspect("roamer")["NetworkSettings"]["IPAddress"]
    md("restart", "-t", "0", "pinned", "roamer")
    assert "inet 10.88.0.42/24" in md("exec", "pinned", "ip", "-o", "addr", "show", "eth0").stdout
    assert inspect("roamer")["NetworkSettings"]["IPAddress"] == roamer
    taken = md("run", "--rm", "--network", "fixed", "--ip", "10.88.0.42", "busybox", "true", check=False)
    assert taken.returncode == 125 and "already in use" in taken.stderr
    row.result = f"10.88.0.42 and {roamer} kept across restart"


@pytest.mark.row("3", "Published port", "-p 8080:80: host's 127.0.0.1 and its uplink address get the page")
def test_published_port(row):
    cid = md("run", "-d", "--name", "site", "-p", "8080:80", "busybox", "sh", "-c", WEB).stdout.strip()
    assert "0.0.0.0:8080->80/tcp" in md("ps").stdout
    assert inspect("site")["NetworkSettings"]["Ports"] == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}

    def page(netns: str, address: str) -> str:
        return fetch(netns, f"http://{address}:8080/")

    assert wait_for(lambda: page(SANDBOX, "127.0.0.1")).startswith("hello from")
    assert page(SANDBOX, HOST_IP).startswith("hello from")
    assert page(UPLINK, HOST_IP).startswith("hello from")  # a remote user, through the host's address
    md("rm", "-f", "site")
    assert cid[:12] not in sh("iptables-save", "-t", "nat", netns=SANDBOX)
    assert page(SANDBOX, "127.0.0.1") == ""
    row.result = "127.0.0.1, host address, from the uplink; rules gone after rm"


def test_publish_on_a_chosen_address_and_udp():
    md("run", "-d", "-p", f"{HOST_IP}:9090:80", "-p", "5353:53/udp", "busybox", "sh", "-c", WEB)
    out = md("ps").stdout
    assert f"{HOST_IP}:9090->80/tcp" in out and "0.0.0.0:5353->53/udp" in out
    assert fetch(UPLINK, f"http://{HOST_IP}:9090/").startswith("hello")


@pytest.mark.row("3", "Volumes", "-v read-write and :ro behave; named volumes persist")
def test_volumes(row, tmp_path):
    shared = tmp_path / "shared"
    md("run", "--rm", "-v", f"{shared}:/data", "busybox", "sh", "-c", "echo written > /data/file")
    assert (shared / "file").read_text() == "written\n"  # created on the host, as Docker does
    ro = md("run", "--rm", "-v", f"{shared}:/data:ro", "busybox", "sh", "-c", "cat /data/file; touch /data/x",
            check=False)
    assert ro.stdout == "written\n" and "Read-only file system" in ro.stderr
    md("run", "--rm", "-v", "keep:/cache", "busybox", "sh", "-c", "echo kept > /cache/note")
    assert md("run", "--rm", "-v", "keep:/cache", "busybox", "cat", "/cache/note").stdout == "kept\n"
    assert "keep" in md("volume", "ls").stdout
    md("volume", "rm", "keep")
    mounts = inspect(md("create", "-v", f"{shared}:/data:ro", "busybox", "true").stdout.strip())["Mounts"]
    assert mounts[0]["Source"] == str(shared) and mounts[0]["RW"] is False
    row.result = "rw writes reach the host; ro refused; named volume kept"


def test_volume_target_cannot_escape_through_a_symlink(tmp_path):
    md("run", "--name", "linker", "busybox", "ln", "-s", "/etc", "/data")
    image_root = tmp_path / "rootfs"
    os.makedirs(image_root)
    # The container's /data -> /etc must resolve inside its own root, never the host's /etc.
    md("run", "--rm", "-v", f"{image_root}:/etc/probe", "busybox", "true")
    assert not os.path.exists("/etc/probe")


@pytest.mark.row("3", "Bad input", "one line, exit 125, nothing left behind")
@pytest.mark.parametrize("args", [["network", "create", "--subnet", "10.1.2.3/33", "x"],
                                  ["network", "create", "bridge"],
                                  ["run", "-p", "80:80:80:80", "busybox", "true"],
                                  ["run", "-p", "99999:80", "busybox", "true"],
                                  ["run", "--network", "nosuchnet", "busybox", "true"],
                                  ["run", "--ip", "172.18.0.9", "busybox", "true"],
                                  ["run", "-v", "/tmp:/../x", "busybox", "true"]])
def test_bad_input_is_refused(args, row):
    done = md(*args, check=False)
    assert done.returncode == 125, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert md("ps", "-aq").stdout == ""
    row.result = done.stderr.strip().removeprefix("minidocker: ")[:55]


def test_duplicate_network_and_used_port():
    md("network", "create", "dup")
    again = md("network", "create", "dup", check=False)
    assert again.returncode == 125 and "already exists" in again.stderr
    md("run", "-d", "-p", "7070:80", "busybox", "sleep", "30")
    used = md("run", "-p", "7070:80", "busybox", "true", check=False)
    assert used.returncode == 125 and "port is already allocated" in used.stderr
    assert len(md("ps", "-aq").stdout.split()) == 1
    busy = md("network", "rm", "dup", check=False)
    assert busy.returncode == 0
