#!/usr/bin/env bash
# How the store scales with open uploads: creates N open uploads (one small
# part each) through the engine, then measures, on the same store,
#  * Engine::open: time and the resident memory it adds (examples/scale.rs),
#  * partseal-server: time from exec to its "listening on" line, and its RSS
#    then, against the same figures on an empty store (the baseline).
#
#   bench/reopen.sh [N...]        (default: 10000 100000)
#
# Needs about 20 KiB of disk per upload. BENCH_DIR keeps the stores.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(10000 100000)

cargo build --release --quiet --manifest-path "$here/Cargo.toml" \
  -p partseal --example scale -p partseal-server --bin partseal-server
scale="$here/target/release/examples/scale"
server="$here/target/release/partseal-server"
dir=${BENCH_DIR:-$(mktemp -d)}
echo "stores in $dir"

rss_of() { awk '/VmRSS/ {print $2 * 1024}' "/proc/$1/status"; }

# Starts the server on STORE, prints "seconds_to_listening rss_bytes", stops it.
listen_time() {
  local store=$1 out="$dir/server.out" start end pid rss
  : > "$out"
  start=$(date +%s.%N)
  "$server" --data "$store" --listen 127.0.0.1:0 > "$out" 2>/dev/null &
  pid=$!
  until grep -q "listening on" "$out"; do
    kill -0 "$pid" 2>/dev/null || { echo "server exited" >&2; return 1; }
    sleep 0.01
  done
  end=$(date +%s.%N)
  rss=$(rss_of "$pid")
  kill -TERM "$pid"
  wait "$pid" || true
  echo "$(awk "BEGIN {printf \"%.3f\", $end - $start}") $rss"
}

mkdir -p "$dir/empty"
read -r base_s base_rss < <(listen_time "$dir/empty")
echo "empty store: listening after ${base_s}s, RSS $base_rss bytes"
for n in "${counts[@]}"; do
  store="$dir/store-$n"
  if [ ! -d "$store/uploads" ]; then
    "$scale" create "$store" "$n"
  fi
  # Rounds alternate with the empty store, as the machine is noisy.
  for round in 1 2 3; do
    "$scale" open "$store"
    read -r s rss < <(listen_time "$store")
    read -r e_s e_rss < <(listen_time "$dir/empty")
    echo "n=$n round=$round listening_s=$s empty_listening_s=$e_s rss=$rss empty_rss=$e_rss" \
         "bytes_per_upload=$(( (rss - e_rss) / n ))"
  done
done
