#!/usr/bin/env bash
# Side-by-side timing of partseal's offline verify against the usual tools on
# the same bytes, in one run (absolute times on shared machines drift; ratios
# measured side by side do not).
#
#   bench/compare.sh [SIZE_MIB] [PARTS] [ROUNDS]     defaults: 1024 64 3
#
# Creates a random file and its parts in a temporary directory (or $BENCH_DIR),
# then alternates the commands ROUNDS times and prints the median time, peak
# RSS and the ratio of each command's speed to `openssl dgst -sha256`.
set -euo pipefail
size_mib=${1:-1024}
parts=${2:-64}
rounds=${3:-3}
here=$(cd "$(dirname "$0")/.." && pwd)

cargo build --release --quiet --manifest-path "$here/Cargo.toml" --bin partseal
bin="$here/target/release/partseal"

dir=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$dir"
cleanup() { [ -n "${BENCH_DIR:-}" ] || rm -rf "$dir"; }
trap cleanup EXIT
cd "$dir"

part_mib=$(( (size_mib + parts - 1) / parts ))
if [ ! -f file.bin ] || [ "$(stat -c %s file.bin)" -ne $((size_mib << 20)) ]; then
  echo "creating ${size_mib} MiB of random data in $parts parts of ${part_mib} MiB..." >&2
  head -c "$((size_mib << 20))" /dev/urandom > file.bin
  rm -f part.*
  split -b "${part_mib}M" -d -a 5 file.bin part.
fi
"$bin" ctx --part-size $((part_mib << 20)) file.bin > plan.json

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
for r in $(seq "$rounds"); do
  for i in "${!cmds[@]}"; do
    rm -f out.bin
    /usr/bin/time -f "$i %e %M" -o "$results.one" bash -c "${cmds[$i]}" > /dev/null
    cat "$results.one" >> "$results"
  done
done
rm -f out.bin "$results.one"

python3 - "$results" "$size_mib" "$parts" "$rounds" "${names[@]}" <<'PY'
import statistics, sys
path, size_mib, parts, rounds, *names = sys.argv[1:]
times, rss = {}, {}
for line in open(path):
    i, t, m = line.split()
    times.setdefault(int(i), []).append(float(t))
    rss.setdefault(int(i), []).append(int(m))
base = statistics.median(times[0])
print(f"{size_mib} MiB in {parts} parts, {rounds} rounds, medians")
print(f"{'command':<46} {'time s':>8} {'GB/s':>7} {'vs openssl':>11} {'peak RSS MiB':>13}")
for i, name in enumerate(names):
    t = statistics.median(times[i])
    gbs = int(size_mib) * 2**20 / t / 1e9
    print(f"{name:<46} {t:>8.3f} {gbs:>7.2f} {base / t:>10.2f}x {max(rss[i]) / 1024:>13.1f}")
PY
rm -f "$results"
