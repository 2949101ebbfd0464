"""Phase 2C: Networking.  The seed's table, replayed inside the sandbox host.

Every packet here stays between the sandbox "host", its containers and the
"uplink" namespace that plays the internet: 198.51.100.7 (a documentation
address) exists only on the uplink's loopback.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import HOST_IP, PUBLIC_IP, SANDBOX, UPLINK, inspect, md, sh, wait_for

pytestmark = pytest.mark.order(4)
UPLINK_DEV = f"mdt-h{SANDBOX.split('-')[-1]}"  # the sandbox host's end of its link to the uplink


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
    assert masquerade == [f"-A MINIDOCKER-POSTROUTING -s 172.18.0.0/24 -o {UPLINK_DEV} -j MASQUERADE"]
    assert saved.count("--comment minidocker") == 4  # POSTROUTING, FORWARD, PREROUTING, OUTPUT
    assert "! -o" not in saved
    row.result = masquerade[0].split(" ", 2)[2]


PEER_ECHO = """
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    conn, peer = server.accept()
    conn.sendall(f"{peer[0]}\\n".encode())
    conn.close()
"""
ECHO_PORT = 7777


@pytest.fixture
def peer_echo():
    """A TCP server on the uplink's public address that answers with the address it sees."""
    server = subprocess.Popen(["nsenter", f"--net=/run/netns/{UPLINK}", sys.executable, "-c", PEER_ECHO,
                               PUBLIC_IP, str(ECHO_PORT)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline() == "ready\n"
        yield
    finally:
        server.kill()
        server.wait()


def seen_by_uplink(source: str) -> str:
    """Connect from the sandbox host itself, from `source`; the address the uplink saw."""
    client = ("import socket, sys; s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2, "
              "source_address=(sys.argv[3], 0)); print(s.recv(64).decode(), end='')")
    return sh(sys.executable, "-c", client, PUBLIC_IP, str(ECHO_PORT), source, netns=SANDBOX).strip()


@pytest.mark.row("2C", "Host Internet", "unaffected: the host's own packets leave as they are, a container's NATed")
def test_host_traffic_is_not_translated(row, peer_echo):
    """The seed's bug 1: `! -o minidocker0 -j MASQUERADE` NATed the host's own traffic too.

    MASQUERADE rewrites a source to the uplink's primary address, so a
    packet from that very address looks the same NATed or not.  The host
    therefore speaks from a second address of its own too (as a host with
    an alias or a VPN does): that one must reach the uplink unchanged.
    """
    alias = "10.231.251.2"
    md("run", "-d", "busybox", "sleep", "30")  # the bridge, and with it the NAT rules, are in
    assert "-A MINIDOCKER-POSTROUTING" in sh("iptables-save", "-t", "nat", netns=SANDBOX)
    sh("ip", "addr", "add", f"{alias}/32", "dev", UPLINK_DEV, netns=SANDBOX)
    sh("ip", "route", "add", f"{alias}/32", "via", HOST_IP, netns=UPLINK)
    try:
        seen = {source: seen_by_uplink(source) for source in (HOST_IP, alias)}
    finally:
        sh("ip", "route", "del", f"{alias}/32", netns=UPLINK)
        sh("ip", "addr", "del", f"{alias}/32", "dev", UPLINK_DEV, netns=SANDBOX)
    container = md("run", "--rm", "busybox", "nc", PUBLIC_IP, str(ECHO_PORT)).stdout.strip()
    assert seen == {HOST_IP: HOST_IP, alias: alias}
    assert container == HOST_IP
    row.result = f"host's {HOST_IP} and {alias} arrive as sent; a container's as {HOST_IP}"


def bridges() -> list[str]:
    return [line.split(":")[1].strip() for line in sh("ip", "-o", "link", "show", "type", "bridge",
                                                       netns=SANDBOX).splitlines()]


SLOW_IP = """#!/bin/sh
# ip, two seconds slow to make a bridge (as on a loaded machine): the window a race needs.
[ "$*" = "-batch -" ] || exec {ip} "$@"
batch=$(cat)
case $batch in *"type bridge"*) sleep 2;; esac
printf '%s\\n' "$batch" | exec {ip} -batch -
"""


@pytest.mark.row("2C", "First runs in parallel", "8 at once on a fresh host: one bridge, rules once, all reachable")
def test_parallel_first_runs_make_one_bridge(row, tmp_path):
    md("network", "prune")
    assert bridges() == [] and "minidocker" not in sh("iptables-save", netns=SANDBOX).lower()
    # Without the lock, every run that looks before the first bridge is up
    # makes one too; all but one fail ("File exists").
    (tmp_path / "ip").write_text(SLOW_IP.format(ip=shutil.which("ip")))
    (tmp_path / "ip").chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}")
    with ThreadPoolExecutor(8) as pool:
        runs = list(pool.map(lambda _: md("run", "-d", "busybox", "sleep", "3600", check=False, env=env, timeout=600),
                             range(8)))
    assert [r.stderr for r in runs if r.returncode] == []
    assert bridges() == ["minidocker0"]
    saved = sh("iptables-save", netns=SANDBOX)
    assert saved.count("--comment minidocker ") == 4  # the jumps: POSTROUTING, FORWARD, PREROUTING, OUTPUT
    assert [line for line in saved.splitlines() if "MASQUERADE" in line] == [
        f"-A MINIDOCKER-POSTROUTING -s 172.18.0.0/24 -o {UPLINK_DEV} -j MASQUERADE",
        "-A MINIDOCKER-POSTROUTING -s 127.0.0.0/8 -o minidocker0 -j MASQUERADE"]

    def reachable(cid: str) -> None:
        # subprocess, not the sh library, in these threads: sh forks with
        # os.fork(), which Python 3.12 warns against in a threaded process.
        subprocess.run(["nsenter", f"--net=/run/netns/{SANDBOX}", "busybox", "ping", "-c", "1", "-W", "2",
                        inspect(cid)["NetworkSettings"]["IPAddress"]], check=True, capture_output=True, timeout=30)
        # Two echoes: eight first packets at once, all with the same ICMP id
        # (each ping is PID 2 of its container) and NATed to one address,
        # can clash in conntrack, and the loser is dropped; it was, twice,
        # on a busy machine.  Docker's bridge does the same.
        md("exec", cid, "ping", "-c", "2", "-W", "2", PUBLIC_IP)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(reachable, [r.stdout.strip() for r in runs]))
    row.result = "8 started; 1 bridge, 4 jumps, 2 MASQUERADE; each pinged and pinging out"


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
        ids = list(pool.map(lambda _: md("run", "-d", "busybox", "sleep", "3600", timeout=600).stdout.strip(),
                            range(30)))
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
