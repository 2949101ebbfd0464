#!/bin/sh
# A new user's first hour, replayed: a fresh Debian 12 (minbase) userland on
# this kernel, a clone of this checkout, and exactly the README's two
# commands, RUNS times in a row (default 3).  Run it as root:
#
#     tests/fresh/debian12.sh [RUNS]
#
# The userland is made once with debootstrap and copied afresh for the
# first run; later runs reuse it, as a user who runs the suite again would
# (so the arm64 tier builds its userland once).  It gets only git, sudo and
# ca-certificates beyond minbase: everything else must come from
# .ci/setup-host.
#
# The network: the userland runs in a network namespace of its own
# (mdt-fresh-<pid>), so the README's first command, which makes a bridge and
# NAT rules, does that there and not on this machine.  Its only way out is an
# HTTP proxy on its own 127.0.0.1:3128: a process that listens in that
# namespace and connects out from this machine's, to Debian's archive and
# PyPI only.  The userland is told of it the way a user behind a proxy would
# tell apt, pip and wget: in /etc, never through the environment, so that
# no test sees a proxy variable.
#
# Needs: debootstrap, python3, util-linux (unshare), iproute2.
set -eu
runs=${1:-3}
here=$(cd "$(dirname "$0")/../.." && pwd)
work=/var/tmp/mdt-fresh.$$
netns=mdt-fresh-$$
mkdir -p "$work"
results=$work/results
mkdir -p "$results"

cleanup() {
    [ -n "${proxy:-}" ] && kill "$proxy" 2>/dev/null || true
    ip netns del "$netns" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

echo "fresh: making a Debian 12 minbase userland in $work/pristine" >&2
debootstrap --variant=minbase --include=git,sudo,ca-certificates \
    bookworm "$work/pristine" http://deb.debian.org/debian > "$work/debootstrap.log" 2>&1
cp -a "$work/pristine" "$work/root"
root=$work/root
cat > "$root/etc/apt/apt.conf.d/01proxy" <<'EOF'
Acquire::http::Proxy "http://127.0.0.1:3128";
EOF
# This machine's own egress may inspect TLS with a CA of its own (local
# CAs in /usr/local/share/ca-certificates): the userland gets those, and
# pip is told to use the system's store, as this machine's pip is.
cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
chroot "$root" update-ca-certificates > /dev/null 2>&1
printf '[global]\nproxy = http://127.0.0.1:3128\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$root/etc/pip.conf"
# wget (debootstrap's downloader) in root's own ~/.wgetrc: /etc/wgetrc is the
# wget package's conffile, and a file there before it is installed stops dpkg.
printf 'use_proxy = on\nhttp_proxy = http://127.0.0.1:3128\nhttps_proxy = http://127.0.0.1:3128\n' > "$root/root/.wgetrc"
printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$(hostname)" > "$root/etc/hosts"

ip netns add "$netns"
ip -n "$netns" link set lo up

# The proxy: its listening socket is made inside the namespace (a socket
# stays in the namespace it was created in), then the process returns to
# this machine's namespace for the connections it makes on the way out.
python3 - "$netns" > "$work/proxy.log" 2>&1 <<'EOF' &
import ctypes, os, select, socket, sys, threading
ALLOWED = {"deb.debian.org", "security.debian.org", "pypi.org", "files.pythonhosted.org"}
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000
home = os.open("/proc/self/ns/net", os.O_RDONLY)
target = os.open(f"/run/netns/{sys.argv[1]}", os.O_RDONLY)
assert libc.setns(target, CLONE_NEWNET) == 0
listener = socket.create_server(("127.0.0.1", 3128))
assert libc.setns(home, CLONE_NEWNET) == 0

def pipe(a, b):
    socks = [a, b]
    while True:
        for s in select.select(socks, [], [])[0]:
            data = s.recv(65536)
            if not data:
                return
            (b if s is a else a).sendall(data)

def serve(client):
    with client:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(65536)
            if not chunk:
                return
            head += chunk
        line = head.split(b"\r\n", 1)[0].decode()
        method, target, _ = line.split(" ", 2)
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
        else:
            rest = target.split("://", 1)[1]
            hostport, path = (rest.split("/", 1) + [""])[:2]
            host, _, port = hostport.partition(":")
            port = port or "80"
            head = head.replace(target.encode(), b"/" + path.encode(), 1)
        print(method, host, port, flush=True)
        if host not in ALLOWED or port not in ("80", "443"):
            client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        with socket.create_connection((host, int(port)), timeout=60) as up:
            if method == "CONNECT":
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                # One request per connection keeps the relay simple.
                head = head.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
                up.sendall(head)
            pipe(client, up)

while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
EOF
proxy=$!

# One run: a private mount namespace, the userland as root, this machine's
# /proc, /sys and /dev, a tmpfs /tmp, and this checkout (read-only) to clone.
run_one() {
    n=$1
    # nsenter, not `ip netns exec`: the latter remounts /sys, and with it
    # would go this machine's cgroup hierarchies.
    unshare --mount --propagation private nsenter --net="/run/netns/$netns" sh -c '
        set -e
        root=$1 src=$2
        # A machine'"'"'s / is a mount point; a bare directory is not, and a
        # container'"'"'s "make / rprivate" fails there (EINVAL).
        mount --bind "$root" "$root"
        mount -t proc proc "$root/proc"
        mount --rbind /sys "$root/sys"
        mount --rbind /dev "$root/dev"
        mount -t tmpfs tmpfs "$root/tmp"
        mount -t tmpfs tmpfs "$root/run"
        mkdir -p "$root/mnt/src"
        mount --bind -o ro "$src" "$root/mnt/src"
        # pivot_root, not chroot: in a chroot the kernel refuses user
        # namespaces (unshare(2): EPERM), which a real machine allows.
        cd "$root"
        mkdir -p .old-root
        pivot_root . .old-root
        umount -l /.old-root
        rmdir /.old-root
        exec /usr/bin/env -i HOME=/root TERM=xterm LANG=C.UTF-8 \
            PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            /bin/bash -lc "
            set -e
            cd /root && rm -rf minidocker
            git clone -q /mnt/src minidocker && cd minidocker
            git log --oneline -1
            sudo .ci/setup-host && sudo ./minidocker.py run busybox echo hi
            sudo tox
        "' sh "$root" "$here" > "$results/run$n.log" 2>&1
}

status=0
i=1
while [ "$i" -le "$runs" ]; do
    echo "fresh: run $i of $runs (log: $results/run$i.log)" >&2
    start=$(date +%s)
    if run_one "$i"; then verdict=green; else verdict=RED; status=1; fi
    echo "fresh: run $i $verdict in $(( $(date +%s) - start )) s" | tee -a "$results/summary" >&2
    i=$((i + 1))
done
exit $status
