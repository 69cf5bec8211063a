#!/usr/bin/env bash
# Builds the fuzz targets and runs each for SECONDS (or until RUNS executions) on its committed
# seeds in corpus/<target>/; what a run finds is kept in work/<target>/, never in corpus/.
# A crash fails the script, with the input in artifacts/<target>/.
#
#   bash fuzz/run.sh 30                        # CI: every target, 30 s each
#   bash fuzz/run.sh 1800 10000000 parquet     # a long run of one target
#
# cargo-fuzz needs nightly flags (-Zsanitizer, sancov): RUSTC_BOOTSTRAP=1 lets the stable
# toolchain take them. --codegen-units 16 builds in about half the time for a slightly slower
# run; debug assertions and overflow checks stay on, so an arithmetic overflow is a crash.
# FUZZ_PROFILE=dev (what CI uses) builds without optimisation: a third of the release build's
# CPU time, for fewer executions per second (enough for a short run that keeps the harness
# alive). FUZZ_JOBS runs that many targets side by side (default 1).
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:?usage: run.sh SECONDS [RUNS] [TARGET...]}
runs=${2:-0}
shift $(($# < 2 ? $# : 2))
export RUSTC_BOOTSTRAP=1
build=(--codegen-units 16)
[ "${FUZZ_PROFILE:-release}" = dev ] && build+=(--dev)
jobs=${FUZZ_JOBS:-1}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
    cargo fuzz build "${build[@]}"
else
    for target in "${targets[@]}"; do cargo fuzz build "${build[@]}" "$target"; done
fi
# One target's run; its log is work/TARGET.log, its figures printed at the end.
run_one() {
    local target=$1 rc=0
    mkdir -p "work/$target"
    local log="work/$target.log"
    # libFuzzer's -runs=-1 is "no limit"; -timeout: one input running this long is a hang.
    cargo fuzz run "${build[@]}" "$target" "work/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -runs="$([ "$runs" -gt 0 ] && echo "$runs" || echo -1)" \
        -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1 || rc=$?
    echo "-- $target: ${seconds} s$([ "$runs" -gt 0 ] && echo " or $runs runs")"
    grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb|Done )' "$log" || true
    if [ "$rc" -ne 0 ]; then
        tail -n 60 "$log"
        echo "fuzz target $target failed (exit $rc): the input is in fuzz/artifacts/$target/"
    fi
    return "$rc"
}
failed=0
running=0
for target in "${targets[@]}"; do
    if [ "$running" -ge "$jobs" ]; then
        wait -n || failed=1
        running=$((running - 1))
    fi
    run_one "$target" &
    running=$((running + 1))
done
while [ "$running" -gt 0 ]; do
    wait -n || failed=1
    running=$((running - 1))
done
exit "$failed"
