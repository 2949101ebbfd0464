# Sourced by cgroupv2.sh and arm64.sh: what the emulated machines bring back.
#
#   report WORK SHARDS TIER    print each machine's log; copy its phase tables
#                              to .verification/ as phase-X-TIER.md; exit 0
#                              only if every machine ran pytest and it passed
report() {
    rc=0
    mkdir -p "$top/.verification"
    for results in "$1"/*/; do
        echo "===== $3 machine $(basename "$results") of $2"
        cat "$results/log" 2>/dev/null || { echo "$3: the machine did not run the tests:"; tail -20 "$results/console"; }
        # Green only when pytest ran and said so: a machine that ran nothing is a failure.
        if [ "$(cat "$results/rc" 2>/dev/null)" != 0 ] || ! grep -Eq '(^|[ =])[0-9]+ passed' "$results/log" 2>/dev/null
        then
            echo "$3: FAILED in machine $(basename "$results")" >&2
            rc=1
        fi
        for table in "$results"/phase-*.md; do
            [ -e "$table" ] && cp "$table" "$top/.verification/$(basename "$table" .md)-$3.md"
        done
    done
    exit "$rc"
}
