"""Networking: a bridge, a veth pair per container, and NAT to the outside.

    container netns             host (or the tests' sandbox host)
    ┌──────────────┐            ┌─────────────────────────────────────────┐
    │ eth0         │◀── veth ──▶│ vethXXXXXXXX ─┐                         │
    │ 172.18.0.2/24│    pair    │   minidocker0 (bridge) 172.18.0.1/24    │
    │ default via  │            │               └─ routing + MASQUERADE ─▶ uplink
    │  172.18.0.1  │            └─────────────────────────────────────────┘
    └──────────────┘

* A bridge is a virtual switch; its own address (the first of the subnet)
  is the containers' gateway.  It must lie inside the containers' subnet,
  or the kernel refuses the route ("Nexthop has invalid gateway"): the
  seed's bug 4.
* A veth pair is a virtual cable: the host end plugs into the bridge, the
  other end is created directly inside the container's network namespace
  as `eth0` (one step for the seed's create, move and rename).  Nothing
  unplugs it: when the container's last process exits, the kernel destroys
  its network namespace, and with it eth0 and so the whole pair.  (Deleting
  it by hand took 60 ms a container here: unregistering a device waits for
  RCU grace periods.)
* Packets leave through the host's uplink, the interface of its default
  route, with their source rewritten to the host's (MASQUERADE).  The rule
  names the subnet and that interface, never `! -o bridge`: that rewrote
  the host's own traffic too and cut it off the net (the seed's bug 1).
* minidocker's iptables rules live in chains of its own (MINIDOCKER,
  MINIDOCKER-POSTROUTING), reached by one jump each that carries the
  comment "minidocker".  The chains are rewritten whole, in one
  iptables-restore, whenever the set of networks changes, so every rule
  exists exactly once and all of them can be found and removed.

Addresses come from a small IPAM file under a lock: never handed out twice,
freed when the container is removed.  The same lock serialises every change
to the bridges and the rules: two first `run`s at once would otherwise both
create the bridge (one fails, "File exists") and both add the jumps.

Everything here reads /proc/net, which belongs to the caller's network
namespace, not /sys/class/net, which shows the namespace that mounted /sys:
tests run minidocker inside a sandbox "host" namespace and must see its
interfaces, not the machine's.
"""

from __future__ import annotations

import os
import re

from lib import dns, host, state
from lib.host import MinidockerError

DEFAULT = {"Name": "bridge", "Bridge": "minidocker0", "Subnet": "172.18.0.0/24", "Gateway": "172.18.0.1"}
MODES = ("bridge", "none", "host")


def bridged(mode: str) -> bool:
    """Does this --network mode give the container a veth on one of our bridges?"""
    return mode not in ("none", "host") and not mode.startswith("container:")
CHAIN, NAT_CHAIN = "MINIDOCKER", "MINIDOCKER-POSTROUTING"
COMMENT = "-m comment --comment minidocker"


def _dir(*parts: str) -> str:
    return state.path("network", *parts)


def load(name: str, kind: type = dict) -> dict:
    """One of the JSON maps under network/ ({} before the first use).

    A damaged file is one line naming it, never a traceback: a crash or a
    hand edit can leave one, and every network command reads these."""
    file = _dir(name)
    try:
        data = state.read_json(file)
    except FileNotFoundError:
        return {}
    except ValueError as e:  # json.JSONDecodeError, UnicodeDecodeError
        raise MinidockerError(f"{file} is corrupt ({e}): repair or remove it") from None
    if not isinstance(data, dict) or not all(isinstance(v, kind) for v in data.values()):
        raise MinidockerError(f"{file} is corrupt (not a map of {kind.__name__}s): repair or remove it")
    return data


def _netns_key() -> str:
    """Which network namespace we run in: the bridge and rules belong to it."""
    return str(os.stat("/proc/self/ns/net").st_ino)


def interfaces() -> set[str]:
    with open("/proc/net/dev") as f:
        return {line.split(":")[0].strip() for line in f.readlines()[2:]}


def uplink() -> str | None:
    """The interface of the default route, from /proc/net/route."""
    with open("/proc/net/route") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == "00000000" and fields[7] == "00000000":
                return fields[0]
    return None


# IPv4 arithmetic by hand: the ipaddress module costs 5 ms of every start.
def valid_ip(ip: str) -> bool:
    """Four decimal bytes.  A leading zero is refused, as Go's parser (so
    Docker) refuses it: inet_aton(3), which iptables uses, reads 010 as 8."""
    parts = ip.split(".")
    return len(parts) == 4 and all(p.isascii() and p.isdigit() and int(p) < 256 and (p == "0" or p[0] != "0")
                                   for p in parts)


def ip_to_int(ip: str) -> int:
    if not valid_ip(ip):
        raise MinidockerError(f"invalid IP address: {ip!r}")
    a, b, c, d = (int(x) for x in ip.split("."))
    return a << 24 | b << 16 | c << 8 | d


def int_to_ip(n: int) -> str:
    return ".".join(str(n >> shift & 255) for shift in (24, 16, 8, 0))


def prefix_len(subnet: str) -> int:
    return int(subnet.split("/")[1])


def hosts(subnet: str) -> range:
    """The usable addresses of a subnet: not the network, not broadcast."""
    first = ip_to_int(subnet.split("/")[0]) & ~((1 << (32 - prefix_len(subnet))) - 1)
    return range(first + 1, first + (1 << (32 - prefix_len(subnet))) - 1)


def parse_subnet(subnet: str) -> tuple[int, int]:
    """A CIDR as (first address, prefix length); refuses what is not one.

    Only `network create` takes a subnet, and Docker's fails with exit 1."""
    address, _, prefix = subnet.partition("/")
    if not valid_ip(address) or not re.fullmatch(r"[0-9]{1,2}", prefix) or not 8 <= int(prefix) <= 30:
        raise MinidockerError(f"invalid subnet {subnet}: an IPv4 CIDR from /8 to /30 is needed", 1)
    first, bits = ip_to_int(address), int(prefix)
    if first & ((1 << (32 - bits)) - 1):
        raise MinidockerError(f"invalid subnet {subnet}: host bits are set (did you mean "
                              f"{int_to_ip(first & ~((1 << (32 - bits)) - 1))}/{bits}?)", 1)
    return first, bits


def _overlap(a: str, b: str) -> bool:
    (fa, pa), (fb, pb) = parse_subnet(a), parse_subnet(b)
    return fa < fb + (1 << (32 - pb)) and fb < fa + (1 << (32 - pa))


def _user_networks() -> dict[str, dict]:
    return load("networks.json")


def find(name: str) -> dict:
    if name == "bridge":
        return DEFAULT
    user = _user_networks()
    if name in user:
        return user[name]
    matches = [n for n in user.values() if n["Id"].startswith(name)] if len(name) >= 3 else []
    if len(matches) == 1:
        return matches[0]
    raise MinidockerError(f"network {name} not found")


def all_networks() -> list[dict]:
    return [DEFAULT, *_user_networks().values()]


EXIT_NETWORK = 1  # Docker's `network` commands fail with the daemon's error, exit 1 (125 is run's)


def create(name: str, subnet: str | None, gateway: str | None) -> dict:
    """A user-defined network: a bridge of its own on a subnet of its own."""
    if not state.valid_name(name) or name in MODES:
        raise MinidockerError(f"invalid network name {name!r}", EXIT_NETWORK)
    if gateway and not valid_ip(gateway):
        raise MinidockerError(f"invalid gateway {gateway!r}: not an IPv4 address", EXIT_NETWORK)
    os.makedirs(_dir(), exist_ok=True)
    with state.locked(_dir()):
        user = _user_networks()
        if name in user:
            raise MinidockerError(f"network with name {name} already exists", EXIT_NETWORK)
        taken = [n["Subnet"] for n in all_networks()]
        if subnet:
            parse_subnet(subnet)  # refuses what is not a subnet
            for other in all_networks():
                if _overlap(subnet, other["Subnet"]):
                    raise MinidockerError(f"invalid pool request: Pool overlaps with other one on this address "
                                          f"space ({other['Subnet']}, network {other['Name']})", EXIT_NETWORK)
        else:  # the first free /24 of 172.19.0.0 - 172.31.255.0, as Docker picks from 172.17-31
            subnet = next((f"172.{b}.{c}.0/24" for b in range(19, 32) for c in range(256)
                           if not any(_overlap(f"172.{b}.{c}.0/24", t) for t in taken)), None)
            if subnet is None:
                raise MinidockerError("no free subnet left for a new network", EXIT_NETWORK)
        gateway = gateway or int_to_ip(parse_subnet(subnet)[0] + 1)
        if ip_to_int(gateway) not in hosts(subnet):
            raise MinidockerError(f"invalid gateway {gateway}: not a host address of {subnet}", EXIT_NETWORK)
        net_id = os.urandom(32).hex()
        net = {"Name": name, "Id": net_id, "Bridge": "md-" + net_id[:12], "Subnet": subnet, "Gateway": gateway,
               "Created": state.now()}
        user[name] = net
        state.write_json(_dir("networks.json"), user)
    ensure_bridge(net)
    return net


def remove(name: str) -> None:
    if name in MODES:  # bridge, host, none: Docker's three, always there
        raise MinidockerError(f"{name} is a pre-defined network and cannot be removed", 1)
    net = find(name)
    with state.locked(_dir()):
        _remove(net)


def _remove(net: dict) -> None:
    """Delete a user-defined network, its bridge and its rules (the lock is held)."""
    users = _ipam().get(net["Name"], {})
    if users:
        raise MinidockerError(f"error while removing network: network {net['Name']} id {net['Id'][:12]} has "
                              f"active endpoints ({len(users)} container{'s' if len(users) > 1 else ''})", 1)
    user = _user_networks()
    user.pop(net["Name"], None)
    state.write_json(_dir("networks.json"), user)
    if net["Bridge"] in interfaces():
        host.run(["ip", "link", "del", net["Bridge"]], "network")
    _install_rules([n for n in all_networks() if n["Bridge"] in interfaces()])


def members(net: dict) -> dict[str, str]:
    """container ID -> IP address, for the containers that hold an address on a network."""
    return {cid: ip for ip, cid in _ipam().get(net["Name"], {}).items()}


def write_hosts(rec: dict) -> None:
    """A container's /etc/hosts; on a user-defined network, with its peers.

    Containers on a user-defined network reach each other by name: each
    one's hosts file lists the others, and is rewritten as they come and go.
    The default bridge does not do this, as in Docker.
    """
    mode = rec["HostConfig"]["NetworkMode"]
    net = find(mode) if bridged(mode) else None
    ips = members(net) if net else {}
    peers = {}
    if net is not None and net is not DEFAULT:
        for other, ip in ips.items():
            path = os.path.join(state.container_dir(other), "container.json")
            if other != rec["Id"] and os.path.exists(path):
                peers[state.read_json(path)["Name"].lstrip("/")] = ip
    text = dns.hosts(ips.get(rec["Id"], ""), rec["Config"]["Hostname"], rec["Name"].lstrip("/"), peers)
    dns.write_in_place(os.path.join(state.container_dir(rec["Id"]), "hosts"), text)


def refresh_peers(net_name: str, leaving: str = "") -> None:
    """Rewrite the hosts files of a user-defined network's containers."""
    if not bridged(net_name) or net_name == "bridge":  # the default bridge names no peers, as Docker's
        return
    with_net = find(net_name)
    for cid in members(with_net):
        path = os.path.join(state.container_dir(cid), "container.json")
        if cid != leaving and os.path.exists(path):
            write_hosts(state.read_json(path))


# -------------------------------------------------------------------- IPAM
def _ipam() -> dict[str, dict[str, str]]:
    return load("ipam.json")


def allocate(net: dict, cid: str, wanted: str = "") -> str:
    """The address asked for, or the lowest free one (never the gateway)."""
    os.makedirs(_dir(), exist_ok=True)
    with state.locked(_dir()):
        ipam = _ipam()
        used = ipam.setdefault(net["Name"], {})
        taken = set(used) | {net["Gateway"]}
        if wanted:
            if used.get(wanted) == cid:
                return wanted
            if wanted in taken:
                raise MinidockerError(f"Address already in use: {wanted} on network {net['Name']}")
            used[wanted] = cid
            state.write_json(_dir("ipam.json"), ipam)
            return wanted
        for n in hosts(net["Subnet"]):
            if int_to_ip(n) not in taken:
                used[int_to_ip(n)] = cid
                state.write_json(_dir("ipam.json"), ipam)
                return int_to_ip(n)
    raise MinidockerError(f"no free IP address left in {net['Subnet']} (network {net['Name']})")


def release(cid: str) -> None:
    if not os.path.isdir(_dir()):
        return
    with state.locked(_dir()):
        try:
            ipam = _ipam()
        except MinidockerError:  # damaged: `rm` still goes on; the next allocation reports it
            return
        changed = False
        for used in ipam.values():
            for ip in [ip for ip, owner in used.items() if owner == cid]:
                del used[ip]
                changed = True
        if changed:
            state.write_json(_dir("ipam.json"), ipam)


def mac_for(ip: str) -> str:
    """Docker's MAC address: 02:42 and the four bytes of the IP address."""
    return "02:42:" + ":".join(f"{int(b):02x}" for b in ip.split("."))


# ------------------------------------------------------- bridge and rules
def _ruleset(nets: list[dict], out: str | None) -> str:
    """All of minidocker's rules, as one iptables-restore input."""
    bridges = [n["Bridge"] for n in nets]
    lines = ["*nat", f":{NAT_CHAIN} - [0:0]"]
    if out:
        lines += [f"-A {NAT_CHAIN} -s {n['Subnet']} -o {out} -j MASQUERADE" for n in nets]
    # The host's own connections to 127.0.0.1:PUBLISHED (ports.py) leave with
    # a loopback source: give them the bridge's, so the container can answer.
    lines += [f"-A {NAT_CHAIN} -s 127.0.0.0/8 -o {br} -j MASQUERADE" for br in bridges]
    lines += ["COMMIT", "*filter", f":{CHAIN} - [0:0]"]
    for br in bridges:
        lines.append(f"-A {CHAIN} -o {br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
        lines.append(f"-A {CHAIN} -o {br} -m conntrack --ctstate DNAT -j ACCEPT")  # published ports
        # Containers on different networks must not reach each other.
        lines += [f"-A {CHAIN} -i {br} -o {other} -j DROP" for other in bridges if other != br]
        lines.append(f"-A {CHAIN} -i {br} -j ACCEPT")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


DNAT_CHAIN = "MINIDOCKER-DNAT"  # per-container rules (ports.py): created once, never rewritten here
_JUMPS = (("nat", "POSTROUTING", NAT_CHAIN), ("filter", "FORWARD", CHAIN),
          ("nat", "PREROUTING", DNAT_CHAIN), ("nat", "OUTPUT", DNAT_CHAIN))
_JUMP_MATCH = {DNAT_CHAIN: "-m addrtype --dst-type LOCAL "}  # only packets to the host's own addresses


def _jump(chain: str, target: str) -> str:
    return f"{chain} {_JUMP_MATCH.get(target, '')}{COMMENT} -j {target}"


def _install_rules(nets: list[dict]) -> None:
    """Rewrite our chains, and add the jumps to them if they are missing.

    Redeclaring a chain in `iptables-restore --noflush` empties it first, so
    the result has every rule once, however often this runs.  The jumps
    are inserted at the top of FORWARD: where Docker is installed, the
    FORWARD policy is DROP, and our accepts must come before that.
    """
    saved = host.run(["iptables-save"], "network")
    rules = _ruleset(nets, uplink())
    if f":{DNAT_CHAIN} " not in saved:
        rules = rules.replace("*nat\n", f"*nat\n:{DNAT_CHAIN} - [0:0]\n", 1)
    for table, chain, target in _JUMPS:
        if f"-A {_jump(chain, target)}" not in saved:
            op = "-I" if chain == "FORWARD" else "-A"
            rules = _add_line(rules, table, f"{op} {_jump(chain, target)}")
    host.run(["iptables-restore", "--noflush"], "network", stdin=rules)


def _add_line(rules: str, table: str, line: str) -> str:
    head, _, tail = rules.partition(f"*{table}\n")
    body, _, rest = tail.partition("COMMIT\n")
    return f"{head}*{table}\n{body}{line}\nCOMMIT\n{rest}"


def _enable_forwarding() -> None:
    """Routing between interfaces is off by default; turn it on, and
    remember how we found it so that `network prune` can put it back.

    1 is written even where forwarding is on already (the kernel ignores a
    write that changes nothing): one step, the same on every host, where a
    host that runs Docker or podman has it on and a fresh one has it off."""
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        was = f.read().strip()
    if was != "1":  # recorded first: a Ctrl-C after the write still leaves prune what to restore
        with open(_dir(f"ip_forward.{_netns_key()}"), "w") as f:
            f.write(was)
    host.write("/proc/sys/net/ipv4/ip_forward", "1", step="network")


def ensure_bridge(net: dict) -> None:
    """Create the network's bridge if this host has none yet (then reuse it).

    Under the network lock, so that two first `run`s at once make one
    bridge and one set of rules.  Forwarding and the rules come first and
    the bridge last: a bridge that exists is a finished one, even after a
    Ctrl-C halfway (the chains are rewritten whole the next time).
    """
    os.makedirs(_dir(), exist_ok=True)
    with state.locked(_dir()):
        if net["Bridge"] in interfaces():
            return
        _enable_forwarding()
        _install_rules([n for n in all_networks() if n["Bridge"] in interfaces() or n["Name"] == net["Name"]])
        host.run(["ip", "-batch", "-"], "network", stdin=(
            f"link add {net['Bridge']} type bridge\n"
            f"addr add {net['Gateway']}/{prefix_len(net['Subnet'])} dev {net['Bridge']}\n"
            f"link set {net['Bridge']} up\n"))
        # A connection from the host to 127.0.0.1:PUBLISHED is DNAT'ed out of
        # this bridge with its loopback source; Linux drops such packets on any
        # interface but lo unless route_localnet allows it, here only.
        host.write(f"/proc/sys/net/ipv4/conf/{net['Bridge']}/route_localnet", "1", step="network")


# ------------------------------------------------------------ containers
def veth_name(cid: str) -> str:
    return "veth" + cid[:8]  # named after the container: cleanup can find it


def attach(rec: dict, pid: int) -> dict:
    """Plug a started container into its network; return its settings."""
    net = find(rec["HostConfig"]["NetworkMode"])
    # The address first: a `network prune` meanwhile then sees the network in use.
    ip = allocate(net, rec["Id"], rec["NetworkSettings"]["IPAddress"] or rec["HostConfig"].get("IPAddress", ""))
    prefix = prefix_len(net["Subnet"])
    veth, mac = veth_name(rec["Id"]), mac_for(ip)
    try:
        ensure_bridge(net)
        if veth in interfaces():
            # This container's pair from its last run.  It goes with the old
            # namespace, but only once nothing holds that any more: moments
            # after the last process (a kernel worker), or never while a
            # debugging `nsenter` keeps it.  Deleting one end deletes both.
            host.run(["ip", "link", "del", veth], "network", check=False)
        host.run(["ip", "-batch", "-"], "network", stdin=(
            f"link add {veth} type veth peer name eth0 address {mac} netns {pid}\n"
            f"link set {veth} master {net['Bridge']} up\n"))
        host.run(["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-batch", "-"], "network", stdin=(
            f"addr add {ip}/{prefix} dev eth0\n"
            "link set eth0 up\n"
            f"route add default via {net['Gateway']}\n"))
    except MinidockerError:
        release(rec["Id"])
        raise  # the veth, if made, dies with the namespace of the init being aborted
    settings = {"IPAddress": ip, "IPPrefixLen": prefix, "Gateway": net["Gateway"], "MacAddress": mac}
    return {**settings, "Networks": {net["Name"]: {**settings, "NetworkID": net["Name"]}}}


def prune() -> list[str]:
    """Remove networks and bridges no container uses, their rules; restore ip_forward."""
    os.makedirs(_dir(), exist_ok=True)
    with state.locked(_dir()):
        used = {name for name, ips in _ipam().items() if ips}
        removed = []
        for net in all_networks():
            if net["Name"] in used:
                continue
            if net is not DEFAULT:  # as Docker: unused user-defined networks go entirely
                _remove(net)
                removed.append(net["Name"])
            elif net["Bridge"] in interfaces():
                host.run(["ip", "link", "del", net["Bridge"]], "network")
                removed.append(net["Name"])
        remaining = [n for n in all_networks() if n["Bridge"] in interfaces()]
        if remaining:
            _install_rules(remaining)
        else:
            _remove_rules()
    return removed


def _remove_rules() -> None:
    """The last bridge is gone: our jumps and chains go, and ip_forward goes back."""
    saved = host.run(["iptables-save"], "network")
    lines = []
    for table in ("nat", "filter"):
        jumps = [(chain, target) for t, chain, target in _JUMPS if t == table]
        lines.append(f"*{table}")
        lines += [f"-D {_jump(chain, target)}" for chain, target in jumps if f"-A {_jump(chain, target)}" in saved]
        for target in dict.fromkeys(target for _, target in jumps):
            if f":{target} " in saved:
                lines += [f"-F {target}", f"-X {target}"]
        lines.append("COMMIT")
    if any(not line.startswith(("*", "COMMIT")) for line in lines):
        host.run(["iptables-restore", "--noflush"], "network", stdin="\n".join(lines) + "\n")
    original = _dir(f"ip_forward.{_netns_key()}")
    if os.path.exists(original):
        with open(original) as f:
            host.write("/proc/sys/net/ipv4/ip_forward", f.read().strip(), step="network")
        os.unlink(original)
