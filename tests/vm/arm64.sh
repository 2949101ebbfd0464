#!/bin/sh
# The arm64 tier: a chosen part of the suite on an emulated arm64 machine
# (qemu's `virt`, software emulation), booted with Debian's arm64 kernel on
# a Debian arm64 userland: the machine a learner's Apple Silicon Mac runs.
#
#   sudo tests/vm/arm64.sh                      (tox -e arm64)
#   sudo tests/vm/arm64.sh tests/test_1_isolation.py    any pytest args
#
# The userland is made once and kept (MINIDOCKER_ARM64_CACHE, by default
# /var/cache/minidocker-test/arm64): debootstrap downloads and unpacks it
# here, and its second stage (the packages' own scripts, arm64 programs)
# runs in the emulated machine itself, so this host needs no binfmt handler.
# That takes ~15 minutes once; later runs boot it in ~30 s.
#
# Needs: qemu-system-arm, debootstrap, e2fsprogs, and virtme-ng (pip).
# Without them it fails; MINIDOCKER_SKIP_VM=1 leaves it out, and says so.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
. "$top/tests/vm/results.sh"
if [ "$(uname -m)" = aarch64 ]; then
    echo "arm64.sh: this host is arm64 already: the default suite tests arm64 natively"
    exit 0
fi
if [ "${MINIDOCKER_SKIP_VM:-}" = 1 ]; then
    echo "arm64.sh: SKIPPED, as MINIDOCKER_SKIP_VM=1 asks: arm64 was NOT tested"
    exit 0
fi
for tool in qemu-system-aarch64 debootstrap mkfs.ext4 vng; do
    if ! command -v "$tool" >/dev/null; then
        echo "arm64.sh: FAILED: the arm64 tier needs $tool (qemu-system-arm, debootstrap, e2fsprogs, virtme-ng);" \
             ".ci/setup-host installs them.  MINIDOCKER_SKIP_VM=1 leaves the tier out." >&2
        exit 1
    fi
done
# What the chosen tests use; the kernel is unpacked apart, for qemu to boot.
# (skopeo's containers-common needs a "container-network-stack": debootstrap
# does not choose among the packages that provide one, so it is named.)
packages="python3 busybox-static iproute2 iptables libseccomp2 zstd util-linux tar kmod procps conmon docker-registry skopeo
          containernetworking-plugins"
kernel_package=linux-image-arm64
cache=${MINIDOCKER_ARM64_CACHE:-/var/cache/minidocker-test/arm64}
key=$(printf '%s\n' bookworm "$packages" "$kernel_package" 1 | sha256sum | cut -c1-12)
image="$cache/$key/root.img"
kernel_dir="$cache/$key/kernel"
work=$(mktemp -d /var/tmp/mdt-arm64.XXXXXX)
trap 'rm -rf "$work"' EXIT

boot() {  # boot the image: boot RWDIR [vng args] -- command...
    rwdir=$1
    shift
    vmlinuz=$(ls "$kernel_dir"/boot/vmlinuz-* | head -n 1)
    vng --run "$vmlinuz" --arch arm64 --root-disk "$image" --root-fstype ext4 \
        --busybox "$kernel_dir/bin/busybox" --disable-kvm --cpus 1 --memory 2G --rwdir "$rwdir" "$@"
}

if [ ! -e "$cache/$key/complete" ]; then
    echo "arm64.sh: making the arm64 userland in $cache/$key (once; ~15 minutes)"
    rm -rf "${cache:?}"/*  # an older userland too: each is a few hundred MB
    mkdir -p "$cache/$key"
    rootfs="$cache/$key/rootfs"
    mirror=http://deb.debian.org/debian
    debootstrap --foreign --arch arm64 --variant=minbase --include="$(echo $packages $kernel_package | tr ' ' ,)" \
        bookworm "$rootfs" "$mirror" > "$cache/$key/debootstrap.log" 2>&1 || {
        echo "arm64.sh: FAILED: debootstrap's first stage; see $cache/$key/debootstrap.log" >&2
        exit 1
    }
    # The kernel is qemu's to boot, not the guest's to install (its scripts
    # would build an initramfs under emulation, for nothing): unpack it apart
    # with busybox, which virtme-ng's initramfs runs, and strike both from the
    # second stage's list.
    mkdir -p "$kernel_dir"
    for deb in "$rootfs"/var/cache/apt/archives/linux-image-*arm64.deb \
               "$rootfs"/var/cache/apt/archives/busybox-static_*.deb; do
        dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$kernel_dir"
    done
    drop="linux-image-[^ ]*|initramfs-tools[^ ]*|linux-base"
    sed -E -i "s/(^| )($drop)( |$)/ /g; s/(^| )($drop)( |$)/ /g" "$rootfs/debootstrap/base" \
        "$rootfs/debootstrap/required"
    rm -f "$rootfs"/var/cache/apt/archives/linux-image-*.deb
    # No fsync after every file: the image is thrown away if the build fails.
    echo force-unsafe-io > "$rootfs/etc/dpkg/dpkg.cfg.d/minidocker-build"
    # debootstrap's first stage leaves /proc a symlink to the host's; the
    # guest needs a directory to mount its own on.
    [ -L "$rootfs/proc" ] && rm "$rootfs/proc" && mkdir "$rootfs/proc"
    mkdir -p "$rootfs/mnt/src" "$rootfs/mnt/site"  # where the tests' files appear, on a read-only root
    # No journal: a guest that stops without unmounting (virtme-ng's init
    # cannot power off this userland) would leave one to replay, and the
    # tests mount the image read-only.
    truncate -s 4G "$image"
    mkfs.ext4 -q -F -O ^has_journal -L minidocker -d "$rootfs" "$image"
    rm -rf "$rootfs"
    # virtme-ng's init hides /var/cache (where the packages wait) and a few
    # more under tmpfs mounts: the second stage runs with them put back.
    cat > "$work/second-stage.sh" <<'STAGE'
for m in /var/cache /var/lib/apt /var/log /var/tmp /usr/lib/modules /etc/hosts /etc/fstab /etc/sudoers /tmp; do
    umount "$m" 2>/dev/null
done
/debootstrap/debootstrap --second-stage && apt-get clean && rm /etc/dpkg/dpkg.cfg.d/minidocker-build
rc=$?
sync  # the guest ends without unmounting its root
echo $rc > "$1/rc"
STAGE
    boot "$work" --rw -- sh "$work/second-stage.sh" "$work" > "$cache/$key/second-stage.log" 2>&1 || true
    if [ "$(cat "$work/rc" 2>/dev/null)" != 0 ]; then
        echo "arm64.sh: FAILED: debootstrap's second stage, in the arm64 machine; see $cache/$key/second-stage.log" >&2
        exit 1
    fi
    # A root that was never unmounted is checked (exit 1: something was put right).
    e2fsck -fy "$image" > "$cache/$key/fsck.log" 2>&1 || [ $? = 1 ] || {
        echo "arm64.sh: FAILED: the new image does not check clean; see $cache/$key/fsck.log" >&2
        exit 1
    }
    touch "$cache/$key/complete"
fi

# The chosen part: Phase 1, the cgroup v2 limits and OOM, the escape table
# and the seccomp filter (its architecture and system call numbers), a
# bridge with NAT to the sandbox's uplink, and a multi-platform pull.  In
# two shards of about equal time, one machine per CPU (the image is
# attached read-only to both); a phase's table is written by one machine.
if [ $# -gt 0 ]; then
    set -- "$(python3 -c 'import shlex, sys; print(shlex.join(sys.argv[1:]))' "$@")"
elif [ "$(nproc)" -ge 2 ]; then
    set -- "tests/test_4_security.py" \
           "tests/test_1_isolation.py tests/test_2a_resources.py tests/test_4_seccomp.py
            tests/test_2c_network.py::test_nat_to_the_uplink tests/test_7_images.py::test_platform_choice"
else
    set -- "tests/test_1_isolation.py tests/test_2a_resources.py tests/test_4_security.py tests/test_4_seccomp.py
            tests/test_2c_network.py::test_nat_to_the_uplink tests/test_7_images.py::test_platform_choice"
fi
# The tests' own Python packages (pytest and the rest: pure Python) come
# from this tier's virtualenv, for the guest's python3 of the same version.
site=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
shard=0
for args in "$@"; do
    args=$(printf '%s' "$args" | tr -s ' \n' '  ')  # one line
    shard=$((shard + 1))
    results="$work/$shard"
    mkdir "$results"
    cat > "$results/guest.sh" <<GUEST
set -u
{ mount --make-rprivate / && mount -t tmpfs tmpfs /tmp && mkdir -p /var/lib/containers /tmp/home &&
  cd /mnt/src; } || { echo "guest: could not set up" > '$results/log'; exit 1; }
HOME=/tmp/home PYTHONPATH=/mnt/site MINIDOCKER_VERIFICATION='$results' PYTHONDONTWRITEBYTECODE=1 \
    python3 -m pytest -p no:cacheprovider -v --timeout 600 --durations=10 $args > '$results/log' 2>&1
echo \$? > '$results/rc'
GUEST
    boot "$results" --rodir "/mnt/src=$top" --rodir "/mnt/site=$site" -- sh "$results/guest.sh" \
        > "$results/console" 2>&1 &
done
wait
report "$work" "$shard" arm64
