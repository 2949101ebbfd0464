#!/bin/sh
# The OCI runtime conformance suite (opencontainers/runtime-tools) against
# minidocker-runc, or against any runc-compatible runtime for comparison.
#
#   sudo tests/oci/validate.sh CHECKOUT [PROGRAM...]
#   sudo RUNTIME=/usr/sbin/runc tests/oci/validate.sh CHECKOUT ...
#
# CHECKOUT is a clone of https://github.com/opencontainers/runtime-tools at
# commit 260e151, the last one that builds with Debian 12's Go 1.19 (it
# vendors its dependencies, so the build needs no network).  The first run
# builds `runtimetest` (copied into each test container) and the programs
# validation/NAME/NAME.t; each program creates bundles, drives the runtime
# through create/start/state/kill/delete and prints TAP.  Each runs in a
# private mount namespace, with the runtime's state in a directory of its
# own, so nothing it mounts or leaves can reach this machine's.
#
# Prints one line per program (ok, or the failed TAP lines) and a summary;
# exit 0 only when every program ran and none failed.
#
# Needs: golang-go (to build), tar, util-linux (unshare).
set -eu
expected=260e151
top=$(cd "$(dirname "$0")/../.." && pwd)
[ $# -ge 1 ] || { echo "usage: $0 RUNTIME_TOOLS_CHECKOUT [PROGRAM...]" >&2; exit 2; }
checkout=$(cd "$1" && pwd)
shift
head=$(git -C "$checkout" rev-parse --short=7 HEAD)
if [ "$head" != "$expected" ]; then
    echo "validate.sh: $checkout is at $head; this script expects runtime-tools $expected" \
         "(git -C $checkout checkout $expected)" >&2
    exit 2
fi
if [ ! -x "$checkout/runtimetest" ] || [ ! -x "$checkout/validation/create/create.t" ]; then
    echo "validate.sh: building runtime-tools $expected" >&2
    command -v go >/dev/null || { echo "validate.sh: needs Go (apt-get install golang-go)" >&2; exit 2; }
    (cd "$checkout" && GOFLAGS=-mod=vendor make runtimetest validation-executables) > "$checkout/build.log" 2>&1 || {
        echo "validate.sh: the build failed; see $checkout/build.log" >&2
        exit 2
    }
fi

runtime=${RUNTIME:-$top/minidocker-runc}
work=$(mktemp -d /tmp/mdt-oci-validate.XXXXXX)
chmod 755 "$work"  # a user namespace's root (linux_uid_mappings) must reach the bundles
trap 'rm -rf "$work"' EXIT
# The suite calls $RUNTIME with no --root: a wrapper gives it a state
# directory of its own.
cat > "$work/runtime" <<EOF
#!/bin/sh
exec '$runtime' --root '$work/state' "\$@"
EOF
chmod +x "$work/runtime"

# Where minidocker-runc puts a container whose config names no cgroupsPath:
# removed at the end if this run made it.
parents=""
for hierarchy in /sys/fs/cgroup/*/ /sys/fs/cgroup/unified/ /sys/fs/cgroup/; do
    [ -d "${hierarchy}minidocker-runc" ] || parents="$parents ${hierarchy}minidocker-runc"
done
trap 'rm -rf "$work"; for p in $parents; do [ -d "$p" ] && rmdir "$p" 2>/dev/null; done; true' EXIT

[ $# -gt 0 ] || set -- $(cd "$checkout/validation" && ls -d */ | tr -d / | grep -vx util)
passed=0 failed=0
for name in "$@"; do
    program="$checkout/validation/$name/$name.t"
    [ -x "$program" ] || { echo "validate.sh: no such program: $name" >&2; exit 2; }
    # The programs find runtimetest and the rootfs tarball in the current
    # directory, and make bundles under TMPDIR.
    rc=0
    (cd "$checkout" && TMPDIR="$work" RUNTIME="$work/runtime" timeout 300 \
        unshare --mount --propagation private "$program") > "$work/$name.tap" 2>&1 || rc=$?
    # Passed: exit 0 and no failed check.  The *_fail programs print no
    # TAP of their own: they exit 0 when the runtime refused the bundle.
    # The lifecycle programs (hooks, start...) report a failure as a YAML
    # "error" that belongs to no test line, or a WARNING, and exit 0.
    bad=$(grep -E '^(not ok|Bail out|WARNING)' "$work/$name.tap" || true)
    orphan=$(awk '/^(ok|not ok)/ { t = 1; next } /^  ---/ { o = !t; next } /^  \.\.\./ { t = o = 0 }
                  o && /^    "error":/ { print "a failure outside any check:"; exit }' "$work/$name.tap")
    if [ -n "$orphan" ]; then
        bad="$bad$(printf '\n%s\n' "$orphan"; grep -E '^ +"error"' "$work/$name.tap" | head -n 3)"
    fi
    if [ "$rc" = 0 ] && [ -z "$bad" ]; then
        echo "ok      $name ($(grep -c '^ok' "$work/$name.tap") checks)"
        passed=$((passed + 1))
    else
        echo "FAILED  $name (exit $rc)"
        { [ -n "$bad" ] && echo "$bad" || tail -n 5 "$work/$name.tap"; } | sed 's/^/        /'
        failed=$((failed + 1))
    fi
done
echo "validate.sh: $(basename "$runtime"): $passed passed, $failed failed"
[ "$failed" = 0 ]
