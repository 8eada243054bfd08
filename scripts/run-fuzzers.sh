#!/bin/sh
# run-fuzzers.sh BUILD_DIR SECONDS - runs every libFuzzer target in BUILD_DIR
# (fuzz_*, built with -DLMX_FUZZ=ON) for SECONDS each, starting from the seed
# corpus tests/fuzz/corpus/<target>/ (+ <target>.dict when present), and
# prints executions and findings. Exit status: 1 when any target found a
# crash/leak/timeout (artifacts under BUILD_DIR/fuzz-artifacts/), else 0.
# New corpus entries go to BUILD_DIR/fuzz-corpus/<target>/ (the committed
# seeds are never modified).
set -u
BUILD=${1:-build-fuzz}
SECS=${2:-60}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SEEDS="$ROOT/tests/fuzz/corpus"
ART="$BUILD/fuzz-artifacts"
mkdir -p "$ART"
found=0
ran=0
printf '%-18s %12s %10s %8s %8s  %s\n' target executions exec/s corpus cov findings
for bin in "$BUILD"/fuzz_*; do
    [ -x "$bin" ] && [ -f "$bin" ] || continue
    name=$(basename "$bin")
    work="$BUILD/fuzz-corpus/$name"
    mkdir -p "$work"
    dict=""
    [ -f "$SEEDS/$name.dict" ] && dict="-dict=$SEEDS/$name.dict"
    log="$BUILD/fuzz-$name.log"
    before=$(ls "$ART" | grep -c "^$name-" || true)
    # shellcheck disable=SC2086
    "$bin" -max_total_time="$SECS" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$ART/$name-" $dict "$work" "$SEEDS/$name" >"$log" 2>&1
    rc=$?
    after=$(ls "$ART" | grep -c "^$name-" || true)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    corp=$(ls "$work" | wc -l | tr -d ' ')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    new=$((after - before))
    if [ "$rc" -ne 0 ] || [ "$new" -gt 0 ]; then
        found=1
        what="$new new artifact(s), exit $rc: see $log"
    else
        what="none"
    fi
    printf '%-18s %12s %10s %8s %8s  %s\n' "$name" "${execs:-?}" "${rate:-?}" "$corp" "${cov:-?}" "$what"
    ran=$((ran + 1))
done
if [ "$ran" -eq 0 ]; then
    echo "run-fuzzers: no fuzz_* binaries in $BUILD (configure with -DLMX_FUZZ=ON and clang)" >&2
    exit 1
fi
exit $found
