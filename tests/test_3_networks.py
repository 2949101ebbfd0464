"""Phase 3: DNS, network modes, user-defined networks, stable IPs, ports, volumes.

All traffic stays between the sandbox host, its containers and the uplink.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest
from conftest import HOST_IP, MINIDOCKER, SANDBOX, UPLINK, inspect, md, sh, wait_for

pytestmark = pytest.mark.order(5)

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
    for name in md("network", "ls", "-q", "-f", "type=custom").stdout.split():
        md("network", "rm", name, check=False)


def md_seeing(files: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """minidocker on a host whose files read as given, such as its /etc/resolv.conf.

    It runs in a mount namespace of its own, where a tmpfs hides the real
    /run (systemd-resolved's files live there) and the given files are
    bind-mounted over the real ones: the machine's files are neither read
    nor touched, whatever resolver this host happens to use.
    """
    script = ["mount -t tmpfs mdt-run /run"]
    for n, (path, text) in enumerate(files.items()):
        script += [f"printf %s {shlex.quote(text)} > /run/.given{n}",
                   f"target=$(realpath -m {path})",  # /etc/resolv.conf may be a link into /run
                   'case $target in /run/*) mkdir -p "${target%/*}"; : > "$target";; esac',
                   f'mount --bind /run/.given{n} "$target"']
    # nsenter first: /run/netns, where the sandbox is, is about to be hidden.
    argv = [*MINIDOCKER[:2], "unshare", "--mount", "--propagation", "private",
            "sh", "-ec", "\n".join(script) + '\nexec "$@"', "sh", *MINIDOCKER[2:], *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


LAN = "nameserver 127.0.0.53\nnameserver 192.0.2.10\nsearch example.test\noptions ndots:2\n"
STUB = "nameserver 127.0.0.53\nsearch lan\n"  # systemd-resolved's stub
UPSTREAM = "/run/systemd/resolve/resolv.conf"  # where systemd-resolved lists the servers it asks


@pytest.mark.row("3", "resolv.conf", "the host's servers but loopback ones; resolved's upstream; fallback; --dns")
def test_resolv_conf(row):
    def resolv(files: dict[str, str], *flags: str) -> str:
        done = md_seeing(files, "run", "--rm", *flags, "busybox", "cat", "/etc/resolv.conf")
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert resolv({"/etc/resolv.conf": LAN}) == "nameserver 192.0.2.10\nsearch example.test\noptions ndots:2\n"
    assert resolv({"/etc/resolv.conf": STUB, UPSTREAM: "nameserver 192.0.2.20\n"}) == (
        f"# from {UPSTREAM}: the host's resolver listens on its own loopback\nnameserver 192.0.2.20\nsearch lan\n")
    assert resolv({"/etc/resolv.conf": STUB}) == (
        "# no usable resolver on the host: Docker's fallback\nnameserver 8.8.8.8\nnameserver 8.8.4.4\nsearch lan\n")
    assert resolv({"/etc/resolv.conf": LAN}, "--dns", "192.0.2.53") == \
        "nameserver 192.0.2.53\nsearch example.test\noptions ndots:2\n"
    row.result = "127.0.0.53 dropped, 192.0.2.10 kept; resolved's 192.0.2.20; 8.8.8.8; --dns 192.0.2.53"


def test_hosts_and_hostname_files():
    out = md("run", "--rm", "--name", "named", "--hostname", "box", "busybox", "sh", "-c",
             "cat /etc/hostname; grep box /etc/hosts; grep localhost /etc/hosts | head -1").stdout.splitlines()
    assert out[0] == "box"
    assert out[1].split()[1:] == ["box", "named"] and out[1].startswith("172.18.0.")
    assert out[2].split() == ["127.0.0.1", "localhost"]


def links(listing: str) -> list[tuple[str, str]]:
    """(index, name) of every link in `ip -o link` output (eth0@if7 is eth0)."""
    return [(line.split(":")[0], line.split(":")[1].strip().split("@")[0]) for line in listing.splitlines()]


@pytest.mark.row("3", "--network host", "shares the host's network namespace: its links, none of its own")
def test_network_host(row):
    # The veths of the containers of earlier tests die with their namespaces, moments later.
    wait_for(lambda: not [name for _, name in links(sh("ip", "-o", "link", netns=SANDBOX)) if name.startswith("veth")])
    cid = md("run", "-d", "--network", "host", "busybox", "sleep", "30").stdout.strip()
    pid = inspect(cid)["State"]["Pid"]
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{SANDBOX}").st_ino
    inside = links(md("exec", cid, "ip", "-o", "link").stdout)
    assert inside == links(sh("ip", "-o", "link", netns=SANDBOX))
    names = [name for _, name in inside]
    assert f"mdt-h{SANDBOX.split('-')[-1]}" in names and "eth0" not in names
    assert not [name for name in names if name.startswith("veth")]
    row.result = f"same inode as the (sandbox) host's; the same {len(inside)} links, no veth"


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

    def ping_db(network: str) -> str:
        return md("run", "--rm", "--network", network, "busybox", "ping", "-c", "1", "-W", "1", db_ip,
                  check=False).stdout

    # db answers on its own network: the silence below is the FORWARD chain's drop, not a dead db.
    assert "1 packets transmitted, 1 packets received, 0% packet loss" in ping_db("back")
    for other in ("front", "bridge"):
        assert "1 packets transmitted, 0 packets received, 100% packet loss" in ping_db(other)
    row.result = f"ping api ok; {db_ip} answers on back, 100% loss from front and bridge"


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


def test_restart_while_the_old_namespace_is_held():
    """The old veth pair lives as long as its namespace: a `restart` must not trip over it."""
    cid = md("run", "-d", "busybox", "sleep", "60").stdout.strip()
    held = os.open(f"/proc/{inspect(cid)['State']['Pid']}/ns/net", os.O_RDONLY)  # as a debugging nsenter would
    try:
        md("restart", "-t", "0", cid)
        assert "inet 172.18.0." in md("exec", cid, "ip", "-o", "addr", "show", "eth0").stdout
    finally:
        os.close(held)


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


def connect(netns: str, address: str, port: int) -> str:
    """A TCP connection from one of the sandbox's namespaces: "connected" or "refused"."""
    client = ("import socket, sys\ntry: socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)\n"
              "except ConnectionRefusedError: print('refused')\nelse: print('connected')")
    return sh(sys.executable, "-c", client, address, str(port), netns=netns).strip()


UDP_ECHO = """
import socket
server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server.bind(("0.0.0.0", 53))
print("ready", flush=True)
while True:
    data, peer = server.recvfrom(512)
    server.sendto(data + f" from {peer[0]}".encode(), peer)
"""


def udp_round_trip(netns: str, address: str, port: int) -> str:
    """Send one datagram; what came back, and from where."""
    client = ("import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2); "
              "s.sendto(b'hello', (sys.argv[1], int(sys.argv[2]))); data, peer = s.recvfrom(512); "
              "print(data.decode(), 'answered by', '%s:%d' % peer)")
    return sh(sys.executable, "-c", client, address, str(port), netns=netns).strip()


@pytest.mark.row("3", "Published UDP, one address", "-p IP:9090:80 answers on IP only; -p 5353:53/udp round trip")
def test_publish_on_a_chosen_address_and_udp(row):
    cid = md("run", "-d", "-p", f"{HOST_IP}:9090:80", "-p", "5353:53/udp", "busybox", "sh", "-c", WEB).stdout.strip()
    out = md("ps").stdout
    assert f"{HOST_IP}:9090->80/tcp" in out and "0.0.0.0:5353->53/udp" in out
    assert wait_for(lambda: fetch(UPLINK, f"http://{HOST_IP}:9090/")).startswith("hello")
    # The host's other addresses do not lead to the container: nothing listens there.
    assert connect(SANDBOX, "127.0.0.1", 9090) == "refused"
    assert connect(SANDBOX, "172.18.0.1", 9090) == "refused"
    # busybox has no UDP server: a Python one serves in the container's network namespace.
    pid = inspect(cid)["State"]["Pid"]
    server = subprocess.Popen(["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, "-c", UDP_ECHO],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline() == "ready\n"
        remote = udp_round_trip(UPLINK, HOST_IP, 5353)
        local = udp_round_trip(SANDBOX, "127.0.0.1", 5353)
    finally:
        server.kill()
        server.wait()
    assert remote == f"hello from 10.231.250.1 answered by {HOST_IP}:5353"
    assert local == "hello from 172.18.0.1 answered by 127.0.0.1:5353"
    row.result = f"{HOST_IP}:9090 serves, 127.0.0.1 and 172.18.0.1 refuse; UDP echoed from the uplink and 127.0.0.1"


@pytest.mark.row("3", "Ports are numbers", "-p 08080:080 is 8080->80 everywhere; its rule goes with the container")
def test_ports_are_normalised(row):
    cid = md("run", "-d", "--name", "zeros", "-p", "08080:080", "busybox", "sh", "-c", WEB).stdout.strip()
    shown = {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}
    assert inspect(cid)["NetworkSettings"]["Ports"] == shown and inspect(cid)["HostConfig"]["PortBindings"] == shown
    assert "0.0.0.0:8080->80/tcp" in md("ps").stdout
    rules = [line for line in sh("iptables-save", "-t", "nat", netns=SANDBOX).splitlines() if cid[:12] in line]
    ip = inspect(cid)["NetworkSettings"]["IPAddress"]
    assert len(rules) == 1 and "--dport 8080 " in rules[0] and rules[0].endswith(f"--to-destination {ip}:80")
    assert wait_for(lambda: fetch(SANDBOX, "http://127.0.0.1:8080/")).startswith("hello")
    taken = md("run", "-p", "8080:80", "busybox", "true", check=False)
    assert taken.returncode == 125 and "port is already allocated" in taken.stderr
    md("rm", "-f", cid)
    assert cid[:12] not in sh("iptables-save", "-t", "nat", netns=SANDBOX)
    row.result = "inspect, ps, rule, clash: 8080->80; rule gone after rm"


def test_rules_are_deleted_by_their_comment():
    """Whatever their text: a rule of the container's that iptables prints otherwise than we wrote."""
    cid = md("run", "-d", "-p", "8181:80", "busybox", "sleep", "30").stdout.strip()
    # As another minidocker version, or a hand, might have written one.
    sh("iptables", "-t", "nat", "-A", "MINIDOCKER-DNAT", "-d", HOST_IP, "-p", "udp", "--dport", "08282", "-m",
       "comment", "--comment", f"minidocker-{cid[:12]}", "-j", "DNAT", "--to-destination", "172.18.0.250:82",
       netns=SANDBOX)
    assert len([line for line in sh("iptables-save", "-t", "nat", netns=SANDBOX).splitlines()
                if cid[:12] in line]) == 2
    md("rm", "-f", cid)
    assert cid[:12] not in sh("iptables-save", "-t", "nat", netns=SANDBOX)


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


def test_inspect_any_kind_of_object():
    """`inspect` finds a container, else an image, a network or a volume, as
    Docker's does; --type looks for one kind only."""
    md("volume", "create", "mdt-insp")
    md("run", "--rm", "busybox", "true")  # the built-in image exists from here on
    assert md("inspect", "-f", "{{.RepoTags}} {{.RootFS.Type}}", "busybox").stdout == "[busybox:latest] layers\n"
    assert md("inspect", "-f", "{{.Name}} {{.Subnet}}", "bridge").stdout == "bridge 172.18.0.0/24\n"
    assert md("inspect", "-f", "{{.Name}} {{.Driver}}", "mdt-insp").stdout == "mdt-insp local\n"
    wrong = md("inspect", "--type", "image", "mdt-insp", check=False)
    assert (wrong.returncode, wrong.stdout, wrong.stderr) == (1, "[]\n", "Error: No such image: mdt-insp\n")
    md("volume", "rm", "mdt-insp")


def test_volume_ls_filters_and_prune():
    md("volume", "create", "mdt-used")
    md("volume", "create", "mdt-unused")
    md("run", "-d", "--name", "mdt-vol-user", "-v", "mdt-used:/data", "busybox", "sleep", "60")
    assert md("volume", "ls", "-q", "-f", "name=mdt-").stdout.split() == ["mdt-unused", "mdt-used"]
    assert md("volume", "ls", "-q", "-f", "name=mdt-", "-f", "dangling=true").stdout.split() == ["mdt-unused"]
    assert md("volume", "ls", "-f", "name=mdt-", "--format", r"table {{.Name}}\t{{.Driver}}").stdout.split("\n") == \
        ["VOLUME NAME   DRIVER", "mdt-unused    local", "mdt-used      local", ""]
    # Without --all, Docker 23 and later prune only anonymous volumes; without -f it asks.
    asked = md("volume", "prune", input="n\n")
    assert asked.stdout.endswith("Are you sure you want to continue? [y/N] ")
    assert md("volume", "prune", "-f").stdout == "Total reclaimed space: 0B\n"
    pruned = md("volume", "prune", "-a", input="y\n").stdout
    assert "Deleted Volumes:\nmdt-unused\n\nTotal reclaimed space: " in pruned
    assert md("volume", "ls", "-q", "-f", "name=mdt-").stdout.split() == ["mdt-used"]  # in use: kept
    md("rm", "-f", "mdt-vol-user")
    md("volume", "rm", "mdt-used")


@pytest.mark.row("3", "Bad input", "one line, Docker's exit code, nothing left behind")
@pytest.mark.parametrize("args, code, message", [
    (["network", "create", "--subnet", "10.1.2.3/33", "x"], 1, "invalid subnet 10.1.2.3/33: an IPv4 CIDR from"),
    (["network", "create", "--subnet", "10.1.2.0/24", "--gateway", "10.1.2.256", "x"], 1,
     "invalid gateway '10.1.2.256': not an IPv4 address"),
    (["network", "create", "bridge"], 1, "invalid network name 'bridge'"),
    (["run", "-p", "80:80:80:80", "busybox", "true"], 125, 'invalid port specification: "80:80:80:80"'),
    (["run", "-p", "99999:80", "busybox", "true"], 125, 'invalid port specification: "99999:80"'),
    (["run", "-p", "http", "busybox", "true"], 125, 'invalid port specification: "http"'),
    (["run", "-p", "300.1.1.1:80:80", "busybox", "true"], 125, 'invalid port specification: "300.1.1.1:80:80"'),
    (["run", "--rm", "-p", "192.0.2.99:80:80", "busybox", "true"], 125,
     "cannot publish on 192.0.2.99: it is not an address of this host"),
    (["run", "--network", "nosuchnet", "busybox", "true"], 125, "network nosuchnet not found"),
    (["run", "--ip", "172.18.0.9", "busybox", "true"], 125,
     "user specified IP address is supported on user defined networks only"),
    (["run", "-v", "/tmp:/../x", "busybox", "true"], 125, "invalid mount config: the container path '/../x' escapes"),
], ids=["subnet", "gateway", "network-name", "port-parts", "port-range", "port-name", "port-ip", "port-ip-not-ours",
        "no-network", "ip-on-bridge", "volume-target"])
def test_bad_input_is_refused(args, code, message, row):
    done = md(*args, check=False)
    assert done.returncode == code and done.stderr.startswith(f"minidocker: {message}"), done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert md("ps", "-aq").stdout == "" and md("network", "ls", "-q", "-f", "type=custom").stdout == ""
    row.result = f"exit {code}: {message}"[:60]


def test_network_ls_as_docker():
    """Docker's columns, its three built-in networks (host and none are modes,
    not bridges: drivers host and null), -q, --no-trunc and -f."""
    net_id = md("network", "create", "lan").stdout.strip()
    rows = [line.split() for line in md("network", "ls").stdout.splitlines()]
    assert rows == [["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"], ["bridge", "bridge", "bridge", "local"],
                    ["host", "host", "host", "local"], [net_id[:12], "lan", "bridge", "local"],
                    ["none", "none", "null", "local"]]
    assert md("network", "ls", "-q", "--no-trunc", "-f", "type=custom").stdout.split() == [net_id]
    assert md("network", "ls", "-q", "-f", "driver=bridge", "-f", "name=la").stdout.split() == [net_id[:12]]
    assert md("network", "ls", "-q", "-f", "driver=null").stdout.split() == ["none"]
    assert md("network", "ls", "-f", "type=custom", "--format", "{{.Name}}/{{.Driver}}/{{.Scope}}").stdout == \
        "lan/bridge/local\n"
    for name in ("host", "none", "bridge"):
        refused = md("network", "rm", name, check=False)
        assert (refused.returncode, refused.stderr) == (
            1, f"minidocker: {name} is a pre-defined network and cannot be removed\n")


def test_bad_ip_on_a_user_network():
    md("network", "create", "--subnet", "10.66.0.0/24", "lan")
    for ip, message in (("garbage", "invalid IP address: 'garbage'"), ("10.66.0.300", "invalid IP address: "),
                        ("10.66.0.010", "invalid IP address: '10.66.0.010'"),
                        ("10.99.0.5", "invalid IP address 10.99.0.5: not in 10.66.0.0/24 of network lan")):
        done = md("run", "--network", "lan", "--ip", ip, "busybox", "true", check=False)
        assert done.returncode == 125 and done.stderr.startswith(f"minidocker: {message}"), done.stderr
        assert len(done.stderr.splitlines()) == 1
    assert md("ps", "-aq").stdout == ""


@pytest.mark.parametrize("file, args", [("networks.json", ["network", "ls"]),
                                        ("ipam.json", ["run", "--rm", "busybox", "true"]),
                                        ("ports.json", ["run", "--rm", "-p", "8088:80", "busybox", "true"])])
def test_damaged_network_state_is_one_line(file, args):
    md("network", "create", "once")  # every file exists
    md("run", "--rm", "--network", "once", "-p", "8087:80", "busybox", "true")
    md("network", "rm", "once")
    path = os.path.join(os.environ["MINIDOCKER_ROOT"], "network", file)
    with open(path) as f:
        kept = f.read()
    try:
        for damage in ('{"truncated', "[]"):
            with open(path, "w") as f:
                f.write(damage)
            done = md(*args, check=False)
            code = 1 if args[0] == "network" else 125  # Docker: every `network` error is exit 1
            assert done.returncode == code and done.stderr.startswith(f"minidocker: {path} is corrupt (")
            assert len(done.stderr.splitlines()) == 1
            assert md("ps", "-aq").stdout == ""
    finally:
        with open(path, "w") as f:
            f.write(kept)


def test_duplicate_network_and_used_port():
    md("network", "create", "dup")
    again = md("network", "create", "dup", check=False)
    assert again.returncode == 1 and again.stderr == "minidocker: network with name dup already exists\n"
    md("run", "-d", "-p", "7070:80", "busybox", "sleep", "30")
    used = md("run", "-p", "7070:80", "busybox", "true", check=False)
    assert used.returncode == 125 and "port is already allocated" in used.stderr
    assert len(md("ps", "-aq").stdout.split()) == 1
    busy = md("network", "rm", "dup", check=False)
    assert busy.returncode == 0
