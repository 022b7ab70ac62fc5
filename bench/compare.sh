#!/usr/bin/env bash
# Side-by-side timing of partseal against the usual tools on the same bytes,
# in one run (absolute times on shared machines drift; ratios measured side
# by side do not).
#
#   bench/compare.sh [SIZE_MIB] [PARTS] [ROUNDS]     defaults: 1024 64 5
#
# Creates a random file and its parts in a temporary directory (or $BENCH_DIR,
# kept afterwards), then alternates the commands ROUNDS times and prints the
# median time, GB/s, peak RSS and the ratio of each command's speed to
# `openssl dgst -sha256` on the same file. Then:
#
# * complete (Engine::verify alone) of the same file uploaded in PARTS parts
#   through Engine::put_part (examples/complete.rs): in chain mode, where
#   every part's hashCtx link was checked on arrival, as a percentage of
#   openssl's median time; and in stream mode (no midstates, background
#   hashing off), where complete hashes every byte in order while merging
#   the parts into the committed file, as a speed ratio to openssl.
# * RSS: `partseal verify --out` on 256 MiB and on 4 GiB (64 parts each);
#   the ratio of their peak RSS shows whether memory grows with the file.
#
# Environment: BENCH_COLD=1 drops the inputs from the page cache before every
# command (posix_fadvise DONTNEED on the files only, nothing system-wide);
# BENCH_RSS=0 skips the 4 GiB RSS check (it needs about 8.5 GiB of disk);
# BENCH_COMPLETE=0 skips the engine figure.
set -euo pipefail
size_mib=${1:-1024}
parts=${2:-64}
rounds=${3:-5}
cold=${BENCH_COLD:-0}
do_rss=${BENCH_RSS:-1}
do_complete=${BENCH_COMPLETE:-1}
here=$(cd "$(dirname "$0")/.." && pwd)

cargo build --release --quiet --manifest-path "$here/Cargo.toml" -p partseal \
  --features cli --bin partseal --example complete
bin="$here/target/release/partseal"
complete="$here/target/release/examples/complete"

dir=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$dir"
cleanup() {
  if [ -n "${BENCH_DIR:-}" ]; then
    rm -rf "$dir/out.bin" "$dir/store" "$dir/rss"
  else
    rm -rf "$dir"
  fi
}
trap cleanup EXIT
cd "$dir"

# Disk: file + parts + merged output, plus the RSS inputs and outputs.
need_mib=$((3 * size_mib + 64))
[ "$do_complete" = 1 ] && need_mib=$((need_mib + 2 * size_mib))
[ "$do_rss" = 1 ] && need_mib=$((need_mib + 2 * 4096 + 2 * 256))
avail_mib=$(df -Pm "$dir" | awk 'NR == 2 { print $4 }')
if [ "$avail_mib" -lt "$need_mib" ]; then
  echo "not enough disk in $dir: ${avail_mib} MiB free, ${need_mib} MiB needed" \
    "(BENCH_RSS=0 needs $((need_mib - 2 * 4096 - 2 * 256)) MiB)" >&2
  exit 2
fi

part_mib=$(( (size_mib + parts - 1) / parts ))
if [ ! -f file.bin ] || [ "$(stat -c %s file.bin)" -ne $((size_mib << 20)) ]; then
  echo "creating ${size_mib} MiB of random data in $parts parts of ${part_mib} MiB..." >&2
  head -c "$((size_mib << 20))" /dev/urandom > file.bin
  rm -f part.*
  split -b "${part_mib}M" -d -a 5 file.bin part.
fi
"$bin" ctx --part-size $((part_mib << 20)) file.bin > plan.json

# Drops the given files from the page cache (only with BENCH_COLD=1).
evict() {
  [ "$cold" = 1 ] || return 0
  python3 - "$@" <<'PY'
import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
PY
}

declare -a names=(
  "openssl dgst -sha256 FILE"
  "sha256sum FILE"
  "cat PARTS > OUT && openssl dgst -sha256 OUT"
  "partseal verify --plan PLAN PARTS"
  "partseal verify PARTS"
  "partseal verify --out OUT PARTS"
)
declare -a cmds=(
  "openssl dgst -sha256 file.bin"
  "sha256sum file.bin"
  "cat part.* > out.bin && sync out.bin && openssl dgst -sha256 out.bin"
  "$bin verify --plan plan.json part.*"
  "$bin verify part.*"
  "$bin verify --out out.bin part.*"
)

results=$(mktemp)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
trap 'rm -f "$results" "$results.one"; cleanup' EXIT
for r in $(seq "$rounds"); do
  echo "round $r of $rounds..." >&2
  for i in "${!cmds[@]}"; do
    rm -f out.bin
    evict file.bin part.*
    /usr/bin/time -f "$i %e %M" -o "$results.one" bash -c "${cmds[$i]}" > /dev/null
    cat "$results.one" >> "$results"
  done
  if [ "$do_complete" = 1 ]; then
    for mode in chain stream; do
      rm -f out.bin
      evict file.bin
      # The parts are sent from file.bin; only the verify is timed.
      line=$("$complete" file.bin --parts "$parts" --store "$dir/store" --mode "$mode")
      echo "complete ${line}" >> "$results"
    done
  fi
done
rm -f out.bin

if [ "$do_rss" = 1 ]; then
  echo "RSS check: verify --out of 256 MiB and of 4 GiB in 64 parts..." >&2
  mkdir -p rss/small rss/big
  head -c $((256 << 20)) /dev/urandom | split -b 4M -d -a 2 - rss/small/part.
  # The bytes do not matter for memory; repeat the file up to 4 GiB.
  for _ in $(seq $(( (4096 + size_mib - 1) / size_mib ))); do cat file.bin; done \
    | head -c $((4096 << 20)) | split -b 64M -d -a 2 - rss/big/part.
  for r in 1 2; do
    for which in small big; do
      rm -f rss/out.bin
      /usr/bin/time -f "rss_$which %e %M" -o "$results.one" \
        "$bin" verify --out rss/out.bin rss/$which/part.* > /dev/null
      cat "$results.one" >> "$results"
    done
  done
  rm -rf rss
fi

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$results" "$size_mib" "$parts" "$rounds" "$cold" "$load_before" "$load_after" \
  "${names[@]}" <<'PY'
import statistics, sys
path, size_mib, parts, rounds, cold, load_before, load_after, *names = sys.argv[1:]
times, rss, complete, puts, other = {}, {}, {}, {}, {}
for line in open(path):
    f = line.split()
    if f[0] == "complete":
        kv = dict(x.split("=", 1) for x in f[1:])
        complete.setdefault(kv["mode"], []).append(float(kv["complete_s"]))
        puts.setdefault(kv["mode"], []).append(float(kv["put_s"]))
    elif f[0].startswith("rss_"):
        other.setdefault(f[0], []).append((float(f[1]), int(f[2])))
    else:
        times.setdefault(int(f[0]), []).append(float(f[1]))
        rss.setdefault(int(f[0]), []).append(int(f[2]))
size = int(size_mib) * 2**20
base = statistics.median(times[0])
cache = "cold page cache (inputs evicted before each command)" if cold == "1" else "warm page cache"
print(f"{size_mib} MiB in {parts} parts, {rounds} rounds, medians, {cache}")
print(f"load average before: {load_before}, after: {load_after} (other work on the machine skews times)")
print(f"{'command':<46} {'time s':>8} {'GB/s':>7} {'vs openssl':>11} {'peak RSS MiB':>13}")
for i, name in enumerate(names):
    t = statistics.median(times[i])
    print(f"{name:<46} {t:>8.3f} {size / t / 1e9:>7.2f} {base / t:>10.2f}x {max(rss[i]) / 1024:>13.1f}")
if "chain" in complete:
    cs = complete["chain"]
    c, p = statistics.median(cs), statistics.median(puts["chain"])
    print()
    print(f"complete after arrival checks (Engine::verify, chain mode, {parts} parts):")
    print(f"  median {c * 1000:.1f} ms (min {min(cs) * 1000:.1f}, max {max(cs) * 1000:.1f})"
          f" = {100 * c / base:.2f}% of openssl's {base:.3f} s   [target <= 2%]")
    print(f"  (the {parts} put_part calls before it: median {p:.2f} s, {size / p / 1e9:.2f} GB/s,"
          f" links checked and parts fsynced)")
if "stream" in complete:
    cs = complete["stream"]
    c, p = statistics.median(cs), statistics.median(puts["stream"])
    print()
    print(f"complete in stream mode (Engine::verify: in-order hash + merge + fsync + commit):")
    print(f"  median {c:.3f} s (min {min(cs):.3f}, max {max(cs):.3f}), {size / c / 1e9:.2f} GB/s,"
          f" {base / c:.2f}x openssl   [target >= 1.1x]")
    print(f"  (the {parts} put_part calls before it: median {p:.2f} s, {size / p / 1e9:.2f} GB/s)")
if other:
    small = max(m for _, m in other["rss_small"])
    big = max(m for _, m in other["rss_big"])
    print()
    print("peak RSS of partseal verify --out, 64 parts:")
    print(f"  256 MiB: {small / 1024:.1f} MiB   4 GiB: {big / 1024:.1f} MiB"
          f"   ratio {big / small:.2f}   [target <= 1.1]")
PY
