"""Phase 2C: Networking.  The seed's table, replayed inside the sandbox host.

Every packet here stays between the sandbox "host", its containers and the
"uplink" namespace that plays the internet: 198.51.100.7 (a documentation
address) exists only on the uplink's loopback.
"""

from __future__ import annotations

import ipaddress
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import HOST_IP, PUBLIC_IP, SANDBOX, UPLINK, inspect, md, sh, wait_for

pytestmark = pytest.mark.order(4)


def sandbox_links(kind: str = "veth") -> list[str]:
    return [line.split(":")[1].strip().split("@")[0]
            for line in sh("ip", "-o", "link", "show", "type", kind, netns=SANDBOX).splitlines()]


def in_container(cid: str, *argv: str) -> str:
    return md("exec", cid, *argv).stdout


@pytest.mark.row("2C", "Bridge", "minidocker0 exists, UP, 172.18.0.1/24")
def test_bridge_is_up_with_gateway_address(row):
    md("run", "-d", "busybox", "sleep", "30")
    out = sh("ip", "-o", "addr", "show", "dev", "minidocker0", netns=SANDBOX)
    assert "inet 172.18.0.1/24" in out
    link = sh("ip", "link", "show", "minidocker0", netns=SANDBOX)
    assert "state UP" in link
    row.result = "172.18.0.1/24, state UP"


@pytest.mark.row("2C", "veth pair", "host end on the bridge, eth0 inside")
def test_veth_pair_on_the_bridge(row):
    cid = md("run", "-d", "busybox", "sleep", "30").stdout.strip()
    veth = "veth" + cid[:8]
    assert "master minidocker0" in sh("ip", "link", "show", veth, netns=SANDBOX)
    assert "eth0@" in in_container(cid, "ip", "-o", "link", "show", "eth0")
    row.result = f"{veth} → minidocker0; eth0 inside"


@pytest.mark.row("2C", "Network namespace", "unique inode per container")
def test_network_namespace_is_unique(row):
    pids = [inspect(md("run", "-d", "busybox", "sleep", "30").stdout.strip())["State"]["Pid"] for _ in range(2)]
    inodes = {os.stat(f"/proc/{p}/ns/net").st_ino for p in pids}
    sandbox = os.stat(f"/run/netns/{SANDBOX}").st_ino
    assert len(inodes) == 2 and sandbox not in inodes and os.stat("/proc/self/ns/net").st_ino not in inodes
    row.result = f"{len(inodes)} containers, {len(inodes)} inodes"


@pytest.mark.row("2C", "Container IP", "in 172.18.0.0/24, default via 172.18.0.1")
def test_address_and_default_route(row):
    cid = md("run", "-d", "busybox", "sleep", "30").stdout.strip()
    settings = inspect(cid)["NetworkSettings"]
    ip = settings["IPAddress"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network("172.18.0.0/24")
    assert settings["Gateway"] == "172.18.0.1" and settings["MacAddress"].startswith("02:42:ac:12:")
    assert f"inet {ip}/24" in in_container(cid, "ip", "-o", "addr", "show", "eth0")
    assert "default via 172.18.0.1 dev eth0" in in_container(cid, "ip", "route")
    row.result = f"{ip}/24 via 172.18.0.1"


@pytest.mark.row("2C", "NAT", "container reaches the uplink host; source rewritten to the host's")
def test_nat_to_the_uplink(row):
    for source in (HOST_IP, "172.18.0.0/24"):
        sh("iptables", "-A", "INPUT", "-s", source, "-p", "icmp", "-j", "ACCEPT", netns=UPLINK)
    try:
        md("run", "--rm", "busybox", "ping", "-c", "2", "-W", "2", PUBLIC_IP)
        counts = {}
        for line in sh("iptables", "-L", "INPUT", "-v", "-n", "-x", netns=UPLINK).splitlines()[2:]:
            fields = line.split()
            counts[fields[7]] = int(fields[0])
    finally:
        sh("iptables", "-F", "INPUT", netns=UPLINK)
    assert counts[HOST_IP] >= 2 and counts["172.18.0.0/24"] == 0
    row.result = f"uplink saw {counts[HOST_IP]} pings from {HOST_IP}, 0 from 172.18.0.0/24"


@pytest.mark.row("2C", "NAT rule", "present once, -o the uplink, never ! -o bridge")
def test_nat_rule_exactly_once(row):
    for _ in range(3):
        md("run", "--rm", "busybox", "true")
    saved = sh("iptables-save", netns=SANDBOX)
    masquerade = [line for line in saved.splitlines() if "MASQUERADE" in line and "127.0.0.0/8" not in line]
    assert masquerade == [f"-A MINIDOCKER-POSTROUTING -s 172.18.0.0/24 -o mdt-h{SANDBOX.split('-')[-1]} "
                          "-j MASQUERADE"]
    assert saved.count("--comment minidocker") == 4  # POSTROUTING, FORWARD, PREROUTING, OUTPUT
    assert "! -o" not in saved
    row.result = masquerade[0].split(" ", 2)[2]


def test_ip_forward_is_on_in_the_sandbox_only():
    md("run", "--rm", "busybox", "true")
    assert sh("cat", "/proc/sys/net/ipv4/ip_forward", netns=SANDBOX).strip() == "1"


def test_forward_policy_drop_still_lets_containers_out():
    sh("iptables", "-P", "FORWARD", "DROP", netns=SANDBOX)  # as after Docker is installed
    try:
        md("run", "--rm", "busybox", "ping", "-c", "1", "-W", "2", PUBLIC_IP)
    finally:
        sh("iptables", "-P", "FORWARD", "ACCEPT", netns=SANDBOX)


@pytest.mark.row("2C", "Container to container", "two containers ping each other")
def test_two_containers_ping_each_other(row):
    a = md("run", "-d", "busybox", "sleep", "30").stdout.strip()
    b = md("run", "-d", "busybox", "sleep", "30").stdout.strip()
    ip_b = inspect(b)["NetworkSettings"]["IPAddress"]
    ip_a = inspect(a)["NetworkSettings"]["IPAddress"]
    md("exec", a, "ping", "-c", "1", "-W", "2", ip_b)
    md("exec", b, "ping", "-c", "1", "-W", "2", ip_a)
    row.result = f"{ip_a} ⇄ {ip_b}"


@pytest.mark.row("2C", "IPAM", "30 parallel containers get 30 distinct IPs")
def test_thirty_parallel_containers_get_distinct_ips(row):
    with ThreadPoolExecutor(15) as pool:
        ids = list(pool.map(lambda _: md("run", "-d", "busybox", "sleep", "30").stdout.strip(), range(30)))
    ips = {inspect(c)["NetworkSettings"]["IPAddress"] for c in ids}
    assert len(ips) == 30
    row.result = f"{len(ips)} distinct addresses"


@pytest.mark.row("2C", "Cleanup", "veth and IP released; 50 run/rm cycles leave nothing")
def test_fifty_cycles_leave_nothing(row):
    for _ in range(50):
        cid = md("run", "-d", "busybox", "true").stdout.strip()
        md("rm", "-f", cid)
    # The kernel destroys a dead container's network namespace, and with it
    # the veth pair, in a worker thread: moments later, not at once.
    wait_for(lambda: not [v for v in sandbox_links() if v.startswith("veth")])
    ipam = os.path.join(os.environ["MINIDOCKER_ROOT"], "network", "ipam.json")
    with open(ipam) as f:
        assert '"172.18' not in f.read()
    row.result = "0 veths, 0 addresses allocated"


def test_full_subnet_is_a_clear_error():
    """A /24 has 253 addresses for containers; the 254th is refused, not shared."""
    ipam = os.path.join(os.environ["MINIDOCKER_ROOT"], "network", "ipam.json")
    import json

    with open(ipam) as f:
        data = json.load(f)
    data["bridge"] = {f"172.18.0.{i}": "f" * 64 for i in range(2, 255)}
    with open(ipam, "w") as f:
        json.dump(data, f)
    try:
        done = md("run", "--rm", "busybox", "true", check=False)
        assert done.returncode == 125 and "no free IP address" in done.stderr
        assert md("ps", "-aq").stdout == ""
    finally:
        data["bridge"] = {}
        with open(ipam, "w") as f:
            json.dump(data, f)


def test_network_none_has_only_loopback():
    out = md("run", "--rm", "--network", "none", "busybox", "ip", "-o", "link").stdout
    assert [line.split(":")[1].strip() for line in out.splitlines()] == ["lo"]


def test_network_prune_removes_bridge_and_rules():
    md("run", "--rm", "busybox", "true")
    md("network", "prune")
    assert "minidocker0" not in sh("ip", "-o", "link", netns=SANDBOX)
    assert "minidocker" not in sh("iptables-save", netns=SANDBOX).lower()
    md("run", "--rm", "busybox", "true")  # and it comes back when needed
    assert "minidocker0" in sh("ip", "-o", "link", netns=SANDBOX)
