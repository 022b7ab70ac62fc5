#!/usr/bin/env bash
# Bounded fuzzing for CI: builds every cargo-fuzz target once, then runs each
# for SECONDS (default 30) from the checked-in seeds and regression inputs,
# and fails if any target crashes (a panic is a broken property).
#
#   fuzz/run-ci.sh [SECONDS]
#
# Environment: FUZZ_JOBS (targets run at once; default: the number of CPUs),
# FUZZ_TARGET_DIR (build directory; default fuzz/target/ci).
#
# New corpus entries go to a scratch directory that is removed at the end, so
# the checkout is left as it was; crash inputs are kept in fuzz/artifacts/.
# There is no nightly toolchain here: RUSTC_BOOTSTRAP=1 lets the stable one
# take the sanitizer flags cargo-fuzz passes.
set -euo pipefail

secs=${1:-30}
case $secs in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

fuzz_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$fuzz_dir/.."
export RUSTC_BOOTSTRAP=1
# As `cargo fuzz run` sets it: crates linked twice are not ODR violations.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_odr_violation=0}
started=$(date +%s)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

target_dir=${FUZZ_TARGET_DIR:-$fuzz_dir/target/ci}
echo "== building fuzz targets ($(cargo fuzz --version))"
# Sixteen codegen units instead of cargo-fuzz's one: the first build is about
# twice as fast on two cores, for slightly slower fuzzing.
cargo fuzz build --codegen-units 16 --target-dir "$target_dir"
built=$(date +%s)
triple=$(rustc -vV | sed -n 's/^host: //p')
bin_dir=$target_dir/$triple/release

mapfile -t targets < <(cargo fuzz list)
work=$(mktemp -d "${TMPDIR:-/tmp}/partseal-fuzz-ci.XXXXXX")
trap 'rm -rf "$work"' EXIT

run_one() {
    local t=$1
    local corpus=$work/$t/corpus
    mkdir -p "$corpus" "$fuzz_dir/artifacts/$t"
    local args=(
        -max_total_time="$secs"
        -timeout=30
        -rss_limit_mb=2048
        -print_final_stats=1
        -artifact_prefix="$fuzz_dir/artifacts/$t/"
    )
    if [[ -f $fuzz_dir/dicts/$t.dict ]]; then
        args+=(-dict="$fuzz_dir/dicts/$t.dict")
    fi
    # The first directory receives new inputs; the others are read only.
    local dirs=("$corpus")
    for d in "$fuzz_dir/corpus/$t" "$fuzz_dir/regressions/$t"; do
        if [[ -d $d ]]; then dirs+=("$d"); fi
    done
    local rc=0
    timeout --kill-after=10 $((secs * 3 + 120)) \
        "$bin_dir/$t" "${args[@]}" "${dirs[@]}" >"$work/$t.log" 2>&1 || rc=$?
    echo "$rc" >"$work/$t.rc"
}

jobs=${FUZZ_JOBS:-$(nproc)}
echo "== fuzzing ${#targets[@]} targets for ${secs}s each, $jobs at a time"
running=0
for t in "${targets[@]}"; do
    if ((running >= jobs)); then
        wait -n || true
        running=$((running - 1))
    fi
    run_one "$t" &
    running=$((running + 1))
done
wait

failed=0
printf '%-20s %8s %12s %10s %8s %9s  %s\n' target seconds executions exec/s corpus features result
for t in "${targets[@]}"; do
    log=$work/$t.log
    rc=$(cat "$work/$t.rc" 2>/dev/null || echo 1)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    time_s=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    # From libFuzzer's last status line: the corpus it holds (seeds and
    # regression inputs included) and the coverage features reached.
    corpus=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' "$log" | tail -1)
    features=$(sed -n 's/.* ft: \([0-9]*\) .*/\1/p' "$log" | tail -1)
    result=ok
    if [[ $rc != 0 ]]; then
        result="FAILED (exit $rc)"
        failed=1
    fi
    printf '%-20s %8s %12s %10s %8s %9s  %s\n' "$t" "${time_s:-?}" "${execs:-?}" "${rate:-?}" "${corpus:-?}" "${features:-?}" "$result"
done

for t in "${targets[@]}"; do
    if [[ $(cat "$work/$t.rc" 2>/dev/null || echo 1) != 0 ]]; then
        echo
        echo "== $t failed:"
        if grep -q 'panicked at' "$work/$t.log"; then
            # The broken property: the panic message (and its location).
            grep -A 3 'panicked at' "$work/$t.log" | head -n 12
        else
            # Not a panic (sanitizer report, timeout, out of memory, ...).
            grep -E 'ERROR|SUMMARY|==[0-9]+==' "$work/$t.log" | head -n 20
            tail -n 20 "$work/$t.log"
        fi
        for a in $(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$work/$t.log"); do
            echo "-- reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run $t $a"
            echo "-- input (hex): $(od -An -tx1 -v "$a" | tr -d ' \n' | head -c 2000)"
        done
    fi
done

finished=$(date +%s)
echo "== build $((built - started))s, total $((finished - started))s"
exit "$failed"
