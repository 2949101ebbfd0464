"""Published ports: -p 8080:80 makes the host's port 8080 lead to the container's 80.

The kernel does it with destination NAT, no process in between: a packet to
one of the host's own addresses on port 8080 has its destination rewritten
to the container's address and port 80 (`-j DNAT`), in the nat table's
PREROUTING (packets arriving from outside) and OUTPUT (the host's own
connections) chains, through a chain of ours, MINIDOCKER-DNAT.

Connecting from the host to 127.0.0.1:8080 needs one more thing: the
rewritten packet still carries the source 127.0.0.1, and Linux drops a
packet with a loopback source on any interface but lo, unless that
interface's `route_localnet` is 1.  minidocker sets it on its own bridges
only, and masquerades such packets to the bridge's address so the container
can answer.  (Docker runs a userland proxy process per port instead; this
costs no memory and no process to watch.)

Each container's rules carry its ID in a comment (`minidocker-<short id>`:
iptables-save would quote a `:`), are added when it starts, and are found
by that comment and deleted when it ends.  Never by the rule's text:
iptables prints a rule its own way, and a rule whose text differs from
ours would never be deleted.  Ports are reserved in a file under a lock,
and a port a host process already listens on is refused.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re

from lib import host, network, state
from lib.host import MinidockerError

CHAIN = network.DNAT_CHAIN
# ASCII digits only: \d would take "٨٠" too, and int() would read it as 80.
_SPEC = re.compile(r"(?:(?P<ip>[0-9]+(?:\.[0-9]+){3}):)?(?:(?P<host>[0-9]*):)?(?P<ctr>[0-9]+)(?:/(?P<proto>tcp|udp))?")


def parse(spec: str) -> dict:
    """[IP:][HOSTPORT:]CONTAINERPORT[/tcp|udp]; no host port: any free one.

    Ports are numbers: `-p 0080:80` is port 80 in inspect, ps, the rules
    and the reservations alike, as in Docker.  Kept as text, "0080" and
    "80" were two ports to the clash check and two rules to iptables."""
    match = _SPEC.fullmatch(spec)
    if not match or (match["ip"] and not network.valid_ip(match["ip"])) \
            or any(p and not 0 < int(p) < 65536 for p in (match["host"], match["ctr"])):
        raise MinidockerError(f'invalid port specification: "{spec}"')
    return {"HostIp": match["ip"] or "0.0.0.0", "HostPort": str(int(match["host"])) if match["host"] else "",
            "ContainerPort": str(int(match["ctr"])), "Proto": match["proto"] or "tcp"}


def _registry() -> str:
    return state.path("network", "ports.json")


def _in_use_on_host(ip: str, port: int, proto: str) -> bool:
    """Does a host process hold this port?  Try to take it for a moment."""
    import socket

    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind((ip, port))
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:
                raise MinidockerError(f"cannot publish on {ip}: it is not an address of this host") from None
            return True
    return False


def _clash(taken: dict, proto: str, ip: str, port: int) -> bool:
    """Is proto/ip:port taken?  0.0.0.0 means every address, so it clashes with all."""
    for key in taken:
        kproto, _, where = key.partition("/")
        kip, _, kport = where.rpartition(":")
        if kproto == proto and int(kport) == port and (kip == ip or "0.0.0.0" in (kip, ip)):
            return True
    return False


def reserve(cid: str, bindings: list[dict]) -> list[dict]:
    """Claim the host ports (choosing free ones where none was given)."""
    os.makedirs(state.path("network"), exist_ok=True)
    with state.locked(state.path("network")):
        taken = network.load("ports.json", str)
        claimed = []
        for b in bindings:
            port = int(b["HostPort"]) if b["HostPort"] else None
            candidates = [port] if port else range(32768, 61000)
            for candidate in candidates:
                if not _clash(taken, b["Proto"], b["HostIp"], candidate) and \
                        not _in_use_on_host(b["HostIp"], candidate, b["Proto"]):
                    taken[f"{b['Proto']}/{b['HostIp']}:{candidate}"] = cid
                    claimed.append({**b, "HostPort": str(candidate)})
                    break
            else:
                raise MinidockerError(f"Bind for {b['HostIp']}:{port} failed: port is already allocated")
        state.write_json(_registry(), taken)
    return claimed


def release(cid: str) -> None:
    if not os.path.isdir(state.path("network")):
        return
    with state.locked(state.path("network")):
        try:
            taken = network.load("ports.json", str)
        except MinidockerError:  # damaged: `rm` still goes on; the next reservation reports it
            return
        kept = {k: v for k, v in taken.items() if v != cid}
        if kept != taken:
            state.write_json(_registry(), kept)


def _comment(cid: str) -> str:
    return f"minidocker-{cid[:12]}"


def publish(cid: str, ip: str, bindings: list[dict]) -> None:
    rules = []
    for b in bindings:
        dest = "" if b["HostIp"] == "0.0.0.0" else f"-d {b['HostIp']}/32 "
        rules.append(f"-A {CHAIN} {dest}-p {b['Proto']} -m {b['Proto']} --dport {b['HostPort']} "
                     f"-m comment --comment {_comment(cid)} -j DNAT --to-destination {ip}:{b['ContainerPort']}")
    if rules:
        host.run(["iptables-restore", "--noflush"], "network", stdin="*nat\n" + "\n".join(rules) + "\nCOMMIT\n")


def unpublish(cid: str) -> None:
    """Delete the container's DNAT rules, found by their comment, and free its ports."""
    mark = f" --comment {_comment(cid)} "
    mine = [line for line in host.run(["iptables-save", "-t", "nat"], "network").splitlines()
            if line.startswith(f"-A {CHAIN} ") and mark in line]
    if mine:
        with contextlib.suppress(MinidockerError):  # gone already (a flush, a prune): nothing to delete
            host.run(["iptables-restore", "--noflush"], "network",
                     stdin="*nat\n" + "".join(f"-D{line[2:]}\n" for line in mine) + "COMMIT\n")
    release(cid)


def show(bindings: list[dict]) -> dict:
    """NetworkSettings.Ports as `inspect` shows it: {"80/tcp": [{HostIp, HostPort}]}."""
    ports: dict[str, list] = {}
    for b in bindings:
        ports.setdefault(f"{b['ContainerPort']}/{b['Proto']}", []).append(
            {"HostIp": b["HostIp"], "HostPort": b["HostPort"]})
    return ports
