#!/bin/sh
# The cgroup v2 tier: the whole suite on a pure cgroup v2 kernel.  This
# machine's own cgroups are hybrid (memory, cpu, pids on v1), so the v2
# driver is proven in a software-emulated VM: virtme-ng boots Debian's stock
# kernel on this machine's own files (read-only), in ~30 s.
#
#   sudo tests/vm/cgroupv2.sh                    (tox -e vm) the whole suite
#   sudo tests/vm/cgroupv2.sh -m cgroupv2        (tox -e vm -- -m cgroupv2)
#                                                 any pytest args: one guest
#
# Emulation is ~15 times slower than the host, so the suite is split in
# shards of whole phases, one guest per CPU, each with its own kernel: no
# kernel object of one shard can meet another's.
#
# Needs: qemu-system-x86 (or -arm), linux-image-<arch>, and virtme-ng (pip).
# Without them it fails: a green run must have tested the v2 driver.  To
# leave the tier out on purpose, say so: MINIDOCKER_SKIP_VM=1.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
. "$top/tests/vm/results.sh"
if grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
    echo "cgroupv2.sh: this host is pure cgroup v2 already: the default suite tests the v2 driver natively"
    exit 0
fi
kernel=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)
qemu="qemu-system-$(uname -m)"
if [ "${MINIDOCKER_SKIP_VM:-}" = 1 ]; then
    echo "cgroupv2.sh: SKIPPED, as MINIDOCKER_SKIP_VM=1 asks: the cgroup v2 driver was NOT tested"
    exit 0
fi
if [ -z "$kernel" ] || ! command -v vng >/dev/null || ! command -v "$qemu" >/dev/null; then
    echo "cgroupv2.sh: FAILED: the cgroup v2 tier needs a kernel in /boot (linux-image-*), $qemu and vng" \
         "(virtme-ng); .ci/setup-host installs them where it can.  MINIDOCKER_SKIP_VM=1 leaves the tier out." >&2
    exit 1
fi
# Shards of about equal time under emulation, each a set of whole phases (a
# phase's table is written by one guest).
if [ $# -gt 0 ]; then  # quoted for the guest's shell
    set -- "$(python3 -c 'import shlex, sys; print(shlex.join(sys.argv[1:]))' "$@")"
elif [ "$(nproc)" -ge 2 ]; then
    set -- "tests/test_2a_resources.py tests/test_4_security.py tests/test_4_seccomp.py tests/test_5_terminal.py
            tests/test_7_images.py tests/test_8_docs.py tests/test_9_oci.py tests/test_9_oci_conformance.py" \
           "tests/test_1_isolation.py tests/test_2b_lifecycle.py tests/test_2c_network.py tests/test_3_networks.py
            tests/test_9_containerd.py tests/test_9_host_unaffected.py"
else
    set -- ""
fi
python=$(command -v python3)
# A venv's python moves with the checkout, to /mnt/src in the guest.
case "$python" in "$top"/*) python="/mnt/src${python#"$top"}" ;; esac
work=$(mktemp -d /var/tmp/mdt-vm.XXXXXX)
trap 'rm -rf "$work"' EXIT
shard=0
for args in "$@"; do
    args=$(printf '%s' "$args" | tr -s ' \n' '  ')  # one line
    shard=$((shard + 1))
    results="$work/$shard"
    mkdir "$results"
    # Inside the guest, from a script in the shared directory (no quoting
    # through three shells).  The guest's / is this machine's, read-only,
    # with writable overlays on /tmp, /var, /etc and more; over those, tmpfs
    # where the tests need a real filesystem: the state root in /tmp (an
    # overlay's upper directory cannot live on another overlay), podman's
    # store, and a home.  The checkout goes to /mnt/src, out of the way of
    # tests that hide /run or /tmp; it is bound first, as it may live in /tmp.
    cat > "$results/guest.sh" <<GUEST
set -u
{ mount --make-rprivate / && mkdir -p /run/mdt-src && mount --bind '$top' /run/mdt-src &&
  mount -t tmpfs tmpfs /mnt && mkdir /mnt/src && mount --move /run/mdt-src /mnt/src &&
  mount -t tmpfs tmpfs /tmp && mkdir -p /var/lib/containers && mount -t tmpfs tmpfs /var/lib/containers && mkdir /tmp/home && cd /mnt/src; } || {
    echo "guest: could not set up the checkout" > '$results/log'; exit 1; }
# The OCI conformance programs are left out: under emulation they would add
# ~25 minutes; the host runs them (tests/test_9_oci_conformance.py).
HOME=/tmp/home MINIDOCKER_VERIFICATION='$results' PYTHONDONTWRITEBYTECODE=1 MINIDOCKER_RUNTIME_TOOLS= \
    '$python' -m pytest -p no:cacheprovider -v --timeout 600 --durations=10 $args > '$results/log' 2>&1
echo \$? > '$results/rc'
GUEST
    # --disable-kvm: /dev/kvm here is a paravirtual device stock kernels
    # cannot drive, and without the flag the boot hangs.  udev's
    # 80-drivers.rules loads every module the emulated machine could use
    # (~10 s): hidden in a private mount namespace, the guest never sees it.
    unshare --mount sh -c "
      rules=/usr/lib/udev/rules.d/80-drivers.rules
      [ -e \$rules ] && mount --bind /dev/null \$rules
      exec vng --run '$kernel' --disable-kvm --cpus 1 --memory 2G --rwdir '$results' -- sh '$results/guest.sh'
    " > "$results/console" 2>&1 &
done
wait
report "$work" "$shard" cgroupv2
