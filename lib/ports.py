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
iptables-save would quote a `:`, and the rules are found by their text) and
are added when it starts and deleted when it ends.  Ports are reserved in a file under a lock,
and a port a host process already listens on is refused.
"""

from __future__ import annotations

import contextlib
import os
import re

from lib import host, state
from lib.host import MinidockerError

CHAIN = "MINIDOCKER-DNAT"
_SPEC = re.compile(r"(?:(?P<ip>\d+\.\d+\.\d+\.\d+):)?(?:(?P<host>\d*):)?(?P<ctr>\d+)(?:/(?P<proto>tcp|udp))?")


def parse(spec: str) -> dict:
    """[IP:][HOSTPORT:]CONTAINERPORT[/tcp|udp]; no host port: any free one."""
    match = _SPEC.fullmatch(spec)
    if not match or any(p and not 0 < int(p) < 65536 for p in (match["host"], match["ctr"])):
        raise MinidockerError(f'invalid port specification: "{spec}"')
    return {"HostIp": match["ip"] or "0.0.0.0", "HostPort": match["host"] or "",
            "ContainerPort": match["ctr"], "Proto": match["proto"] or "tcp"}


def _registry() -> str:
    return state.path("network", "ports.json")


def _in_use_on_host(ip: str, port: int, proto: str) -> bool:
    """Does a host process hold this port?  Try to take it for a moment."""
    import socket

    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind((ip, port))
        except OSError:
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
        try:
            taken = state.read_json(_registry())
        except FileNotFoundError:
            taken = {}
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
    if not os.path.exists(_registry()):
        return
    with state.locked(state.path("network")):
        taken = state.read_json(_registry())
        kept = {k: v for k, v in taken.items() if v != cid}
        if kept != taken:
            state.write_json(_registry(), kept)


def _rules(cid: str, ip: str, bindings: list[dict]) -> list[str]:
    rules = []
    for b in bindings:
        dest = "" if b["HostIp"] == "0.0.0.0" else f"-d {b['HostIp']}/32 "
        rules.append(f"{CHAIN} {dest}-p {b['Proto']} -m {b['Proto']} --dport {b['HostPort']} "
                     f"-m comment --comment minidocker-{cid[:12]} -j DNAT --to-destination {ip}:{b['ContainerPort']}")
    return rules


def publish(cid: str, ip: str, bindings: list[dict]) -> None:
    rules = _rules(cid, ip, bindings)
    if rules:
        host.run(["iptables-restore", "--noflush"], "network",
                 stdin="*nat\n" + "".join(f"-A {r}\n" for r in rules) + "COMMIT\n")


def unpublish(cid: str, ip: str, bindings: list[dict]) -> None:
    """Delete the container's DNAT rules (those still there) and its ports."""
    rules = _rules(cid, ip, bindings)
    if rules:
        saved = host.run(["iptables-save", "-t", "nat"], "network")
        present = [r for r in rules if f"-A {r}" in saved]
        if present:
            with contextlib.suppress(MinidockerError):
                host.run(["iptables-restore", "--noflush"], "network",
                         stdin="*nat\n" + "".join(f"-D {r}\n" for r in present) + "COMMIT\n")
    release(cid)


def show(bindings: list[dict]) -> dict:
    """NetworkSettings.Ports as `inspect` shows it: {"80/tcp": [{HostIp, HostPort}]}."""
    ports: dict[str, list] = {}
    for b in bindings:
        ports.setdefault(f"{b['ContainerPort']}/{b['Proto']}", []).append(
            {"HostIp": b["HostIp"], "HostPort": b["HostPort"]})
    return ports
