#!/bin/sh
# The cgroup v2 tier: run the tests marked `cgroupv2` on a pure cgroup v2
# kernel.  This machine's own cgroups are hybrid (memory, cpu, pids on v1),
# so the v2 driver is proven in a software-emulated VM: virtme-ng boots
# Debian's stock kernel on this machine's own files (read-only), in ~30 s.
#
#   sudo tests/vm/cgroupv2.sh [pytest args...]      (tox -e vm)
#
# Needs: qemu-system-x86 (or -arm), linux-image-<arch>, and virtme-ng (pip).
# Without them it fails: a green run must have tested the v2 driver.  To
# leave the tier out on purpose, say so: MINIDOCKER_SKIP_VM=1.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
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
results=$(mktemp -d /var/tmp/minidocker-vm.XXXXXX)
python=$(command -v python3)
# Inside the guest, from a script in the shared directory (no quoting through
# three shells): the checkout is bind-mounted to /run/mdt-src first, so that
# a tmpfs can go on /tmp even when the checkout lives under /tmp (a fresh
# clone in /tmp/x); the state root goes on tmpfs too (an overlay upper
# directory cannot live on the guest's 9p/virtiofs view of this disk).  A
# venv's python moves with the checkout.
case "$python" in "$top"/*) python="/run/mdt-src${python#"$top"}" ;; esac
cat > "$results/guest.sh" <<GUEST
set -u
mkdir -p /run/mdt-src && mount --bind '$top' /run/mdt-src && mount -t tmpfs tmpfs /tmp && cd /run/mdt-src || {
    echo "guest: could not set up the checkout" > '$results/log'; exit 1; }
MINIDOCKER_VERIFICATION='$results' PYTHONDONTWRITEBYTECODE=1 \
    '$python' -m pytest -p no:cacheprovider -m cgroupv2 -v --timeout 300 $* > '$results/log' 2>&1
echo \$? > '$results/rc'
GUEST
# --disable-kvm: /dev/kvm here is a paravirtual device stock kernels cannot
# drive, and without the flag the boot hangs.  udev's 80-drivers.rules loads
# every module the emulated machine could use (~10 s): hidden in a private
# mount namespace, the guest never sees it.
unshare --mount sh -c "
  rules=/usr/lib/udev/rules.d/80-drivers.rules
  [ -e \$rules ] && mount --bind /dev/null \$rules
  exec vng --run '$kernel' --disable-kvm --cpus 2 --memory 2G --rwdir '$results' -- sh '$results/guest.sh'
" > "$results/console" 2>&1 || true
cat "$results/log" 2>/dev/null || { echo "cgroupv2.sh: the VM did not run the tests:"; tail -20 "$results/console"; }
rc=$(cat "$results/rc" 2>/dev/null || echo 1)
# Green only when pytest ran and said so: a VM that ran nothing is a failure.
if [ "$rc" = 0 ] && ! grep -Eq '(^|[ =])[0-9]+ passed' "$results/log" 2>/dev/null; then
    echo "cgroupv2.sh: FAILED: no test ran in the VM" >&2
    rc=1
fi
mkdir -p "$top/.verification"
for table in "$results"/phase-*.md; do
    [ -e "$table" ] && cp "$table" "$top/.verification/$(basename "$table" .md)-cgroupv2.md"
done
rm -rf "$results"
exit "$rc"
