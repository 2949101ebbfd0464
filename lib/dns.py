"""Names: the files that tell a program where DNS is and who is who.

A container gets its own /etc/resolv.conf, /etc/hosts and /etc/hostname,
bind-mounted from files in its directory, as Docker does:

* resolv.conf comes from the host's, minus what cannot work inside: a
  loopback resolver such as systemd-resolved's 127.0.0.53 listens on the
  *host's* loopback, which a container's own network namespace does not
  have.  Then the upstream servers systemd-resolved itself uses
  (/run/systemd/resolve/resolv.conf) are taken, and failing those, Google's
  public resolvers, Docker's own fallback.  --dns replaces them all.
* hosts names localhost, the container itself, and, on a user-defined
  network, every other container on that network: that is how containers
  reach each other by name.

The files are rewritten in place, never replaced by rename: a bind mount
pins the file's inode, and a new inode would never be seen inside.
"""

from __future__ import annotations

import os

FALLBACK = ("8.8.8.8", "8.8.4.4")
UPSTREAM = "/run/systemd/resolve/resolv.conf"


def _loopback(server: str) -> bool:
    return server.startswith("127.") or server == "::1"


def _nameservers(text: str) -> list[str]:
    return [line.split()[1] for line in text.splitlines()
            if line.startswith("nameserver") and len(line.split()) > 1]


def resolv_conf(dns: list[str], host_resolv: str = "/etc/resolv.conf") -> str:
    """The container's resolv.conf: --dns, or the host's usable servers."""
    try:
        with open(host_resolv) as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    others = [line for line in text.splitlines() if line.startswith(("search", "domain", "options"))]
    servers = list(dns)
    note = ""
    if not servers:
        servers = [s for s in _nameservers(text) if not _loopback(s)]
    if not servers and os.path.exists(UPSTREAM):
        with open(UPSTREAM) as f:
            servers = [s for s in _nameservers(f.read()) if not _loopback(s)]
        note = f"# from {UPSTREAM}: the host's resolver listens on its own loopback\n"
    if not servers:
        servers = list(FALLBACK)
        note = "# no usable resolver on the host: Docker's fallback\n"
    return note + "".join(f"nameserver {s}\n" for s in servers) + "".join(f"{o}\n" for o in others)


def hosts(ip: str, hostname: str, name: str, peers: dict[str, str]) -> str:
    """/etc/hosts: localhost, this container, and its peers (name -> ip)."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    if ip:
        lines.append(f"{ip}\t{hostname} {name}" if hostname != name else f"{ip}\t{hostname}")
    lines += [f"{peer_ip}\t{peer}" for peer, peer_ip in sorted(peers.items())]
    return "\n".join(lines) + "\n"


def write_in_place(path: str, text: str) -> None:
    """Rewrite a file without changing its inode: a bind mount follows it."""
    with open(path, "w") as f:
        f.write(text)


FILES = ("resolv.conf", "hosts", "hostname")


def mounts(directory: str) -> list[dict]:
    """The OCI bind mounts of a container's name files over its /etc."""
    return [{"destination": f"/etc/{name}", "type": "bind", "source": os.path.join(directory, name),
             "options": ["rbind", "rprivate"]} for name in FILES]
