#!/usr/bin/env bash
# Cluster ingest side by side: the same 1 GiB, in 64 parts of 16 MiB, sent by
# 4 concurrent client threads (Python, bench/cluster.py) to
#
#   cluster  3 partseal-server nodes over PostgreSQL and one Garage node
#            (scripts/cluster.sh up DIR 3): KooDrive chain mode, files/create
#            on node 1, the parts round-robin over the 3 nodes, files/complete
#            on node 3;
#   garage   the same Garage, straight, with boto3: multipart upload with a
#            client-computed x-amz-checksum-sha256 per part
#            (scripts/cluster.sh up DIR 0: PostgreSQL and Garage only);
#   local    one partseal-server on its local store, the same client as the
#            cluster leg, every request to the one node.
#
#   bench/cluster.sh                       BENCH_ROUNDS=3 CLIENTS=4 by default
#
# Every leg gets fresh processes and a fresh store on the same disk; rounds
# alternate the legs (cluster, garage, local, cluster, ...). Before each leg
# the previous store is removed and synced and the test file read into the
# page cache; after it, `sync` is timed and added to the leg's durable total.
# Garage runs with data_fsync and metadata_fsync on (it answers only once the
# bytes are on disk, as partseal does); BENCH_GARAGE_FSYNC=0 runs it with its
# defaults instead. Prints the medians, the ratios measured in the same run
# and the load average before and after.
#
# Needs the Garage binary (scripts/install-garage.sh builds it once, ~25
# CPU-minutes, and caches it) and PostgreSQL (scripts/install-postgres.sh);
# installs requests and boto3 into a venv in target/bench-venv. Environment:
# BENCH_ROUNDS, CLIENTS, BENCH_GARAGE_FSYNC; BENCH_DIR keeps the test file
# between runs.
set -euo pipefail
rounds=${BENCH_ROUNDS:-3}
clients=${CLIENTS:-4}
garage_fsync=${BENCH_GARAGE_FSYNC:-1}
size=$((1 << 30))
part_size=$((16 << 20))
here=$(cd "$(dirname "$0")/.." && pwd)

# --- tools ---------------------------------------------------------------
venv="$here/target/bench-venv"
if ! "$venv/bin/python" -c 'import requests, boto3' 2> /dev/null; then
  echo "installing requests and boto3 into $venv..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet requests boto3
fi
py="$venv/bin/python"
client="$here/bench/cluster.py"
bash "$here/scripts/install-postgres.sh" > /dev/null
bash "$here/scripts/install-garage.sh" > /dev/null
cargo build --release --quiet --manifest-path "$here/Cargo.toml" -p partseal-server
cargo build --release --quiet --manifest-path "$here/Cargo.toml" -p partseal --features cli --bin partseal
server="$here/target/release/partseal-server"
partseal="$here/target/release/partseal"
cluster="$here/scripts/cluster.sh"

# --- scratch -------------------------------------------------------------
dir=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$dir"
# PostgreSQL runs as its own user (when started as root): it must reach DIR/leg.
chmod 755 "$dir"
need_mib=4096
[ -f "$dir/file.bin" ] && need_mib=$((need_mib - 1024))
avail_mib=$(df -Pm "$dir" | awk 'NR == 2 { print $4 }')
if [ "$avail_mib" -lt "$need_mib" ]; then
  echo "not enough disk in $dir: ${avail_mib} MiB free, ${need_mib} MiB needed; nothing done" >&2
  exit 2
fi

local_pid=""
cluster_up=""
results=$(mktemp)
cleanup() {
  if [ -n "$local_pid" ]; then
    kill -TERM "$local_pid" 2> /dev/null || true
    wait "$local_pid" 2> /dev/null || true
  fi
  [ -n "$cluster_up" ] && bash "$cluster" down "$cluster_up" 2> /dev/null || true
  rm -f "$results"
  if [ -n "${BENCH_DIR:-}" ]; then
    rm -rf "$dir/leg"
  else
    rm -rf "$dir"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# CPU time (user + system, all threads) a process has used, in seconds.
hz=$(getconf CLK_TCK)
cpu_s() { awk -v hz="$hz" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
# The sum of cpu_s over the PIDs in the files named.
cpu_of() {
  local total=0 f
  for f in "$@"; do total=$(awk -v a="$total" -v b="$(cpu_s "$(cat "$f")")" 'BEGIN { print a + b }'); done
  echo "$total"
}
now() { date +%s.%N; }
timed_sync() {
  local t0
  t0=$(now)
  sync
  awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.4f", b - a }'
}
# A key of the JSON object on stdin (dotted for nested keys; lists joined by ",").
json() {
  "$py" -c 'import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v = v[k]
print(",".join(v) if isinstance(v, list) else v)' "$1"
}

if [ ! -f "$dir/file.bin" ] || [ "$(stat -c %s "$dir/file.bin")" -ne "$size" ]; then
  echo "creating 1 GiB of deterministic bytes in $dir/file.bin..." >&2
  "$py" "$here/bench/ingest.py" gen "$dir/file.bin" "$size"
fi
echo "computing the chain plan (partseal ctx, not timed)..." >&2
"$partseal" ctx --part-size "$part_size" "$dir/file.bin" > "$dir/plan.json"

settle() {
  rm -rf "$dir/leg"
  sync
  cat "$dir/file.bin" > /dev/null
}

run_cluster() {
  local round=$1 line up nodes creds sync_s cpu_nodes cpu_garage
  up=$(GARAGE_FSYNC=$garage_fsync PARTSEAL_SERVER_BIN="$server" bash "$cluster" up "$dir/leg" 3 2> "$dir/up.log") ||
    { cat "$dir/up.log" >&2; exit 1; }
  cluster_up="$dir/leg"
  nodes=$(json nodes <<< "$up")
  creds=$(json credentials <<< "$up")
  line=$("$py" "$client" koo "$nodes" "$creds" "$dir/plan.json" "$dir/file.bin" "$clients") ||
    { tail -n 20 "$dir"/leg/node-*.log >&2; exit 1; }
  sync_s=$(timed_sync)
  cpu_nodes=$(cpu_of "$dir"/leg/pids/node-*.pid)
  cpu_garage=$(cpu_of "$dir"/leg/pids/garage-*.pid)
  bash "$cluster" down "$dir/leg" 2> /dev/null
  cluster_up=""
  echo "round=$round leg=cluster $line sync_s=$sync_s partseal_cpu_s=$cpu_nodes garage_cpu_s=$cpu_garage" |
    tee -a "$results" >&2
}

run_garage() {
  local round=$1 line up sync_s cpu_garage
  up=$(GARAGE_FSYNC=$garage_fsync bash "$cluster" up "$dir/leg" 0 2> "$dir/up.log") ||
    { cat "$dir/up.log" >&2; exit 1; }
  cluster_up="$dir/leg"
  line=$(AWS_ACCESS_KEY_ID=$(json s3.access_key_id <<< "$up") \
    AWS_SECRET_ACCESS_KEY=$(json s3.secret_access_key <<< "$up") \
    "$py" "$client" s3 "$(json s3.endpoint <<< "$up")" "$(json s3.bucket <<< "$up")" \
    "$(json s3.region <<< "$up")" "$dir/file.bin" "$part_size" "$clients") ||
    { tail -n 20 "$dir"/leg/garage-*.log >&2; exit 1; }
  sync_s=$(timed_sync)
  cpu_garage=$(cpu_of "$dir"/leg/pids/garage-*.pid)
  bash "$cluster" down "$dir/leg" 2> /dev/null
  cluster_up=""
  echo "round=$round leg=garage $line sync_s=$sync_s partseal_cpu_s=0 garage_cpu_s=$cpu_garage" |
    tee -a "$results" >&2
}

run_local() {
  local round=$1 line port out="$dir/leg/server.out" sync_s cpu
  mkdir -p "$dir/leg/local"
  "$server" --data "$dir/leg/local" --listen 127.0.0.1:0 > "$out" 2> "$dir/leg/server.err" &
  local_pid=$!
  for _ in $(seq 500); do
    grep -q "listening on" "$out" && break
    kill -0 "$local_pid" 2> /dev/null || { cat "$dir/leg/server.err" >&2; exit 1; }
    sleep 0.02
  done
  port=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$out" | head -n 1)
  [ -n "$port" ] || { echo "no port in the server's banner:" >&2; cat "$out" >&2; exit 1; }
  line=$("$py" "$client" koo "http://127.0.0.1:$port" "$dir/leg/local/credentials.json" \
    "$dir/plan.json" "$dir/file.bin" "$clients")
  sync_s=$(timed_sync)
  cpu=$(cpu_s "$local_pid")
  kill -TERM "$local_pid"
  wait "$local_pid" 2> /dev/null || true
  local_pid=""
  echo "round=$round leg=local $line sync_s=$sync_s partseal_cpu_s=$cpu garage_cpu_s=0" |
    tee -a "$results" >&2
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq "$rounds"); do
  echo "round $r of $rounds..." >&2
  settle; run_cluster "$r"
  settle; run_garage "$r"
  settle; run_local "$r"
done
rm -rf "$dir/leg"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

"$py" - "$results" "$size" "$part_size" "$rounds" "$clients" "$garage_fsync" "$load_before" "$load_after" <<'PY'
import statistics, sys
path, size, part_size, rounds, clients, fsync, load_before, load_after = sys.argv[1:]
size, part_size = int(size), int(part_size)
legs = {}
for line in open(path):
    kv = dict(x.split("=", 1) for x in line.split())
    kv["durable_s"] = str(float(kv["total_s"]) + float(kv["sync_s"]))
    legs.setdefault(kv["leg"], []).append(kv)

def med(leg, key):
    return statistics.median(float(k[key]) for k in legs[leg])

print(f"{size >> 20} MiB in {size // part_size} parts of {part_size >> 20} MiB, {clients} concurrent clients,"
      f" {rounds} rounds alternating, medians; Garage data_fsync={'true' if fsync == '1' else 'false'}")
print(f"load average before: {load_before}, after: {load_after}")
print(f"{'leg':<8} {'total s':>8} {'GB/s':>6} {'ingest s':>9} {'complete s':>11} {'sync s':>7}"
      f" {'durable s':>10} {'partseal CPU s':>15} {'Garage CPU s':>13}")
for leg in ("cluster", "garage", "local"):
    t = med(leg, "durable_s")
    print(f"{leg:<8} {med(leg, 'total_s'):>8.3f} {size / t / 1e9:>6.2f} {med(leg, 'ingest_s'):>9.3f}"
          f" {med(leg, 'complete_s'):>11.3f} {med(leg, 'sync_s'):>7.3f} {t:>10.3f}"
          f" {med(leg, 'partseal_cpu_s'):>15.2f} {med(leg, 'garage_cpu_s'):>13.2f}")
print("(GB/s = 1 GiB / durable s; durable = total + the sync after it; CPU = user + system of the"
      " partseal nodes and of Garage)")
print()
for a, b in (("cluster", "garage"), ("cluster", "local"), ("local", "garage")):
    per = [float(y["durable_s"]) / float(x["durable_s"]) for x, y in zip(legs[a], legs[b])]
    print(f"{a}/{b} speed: {med(b, 'durable_s') / med(a, 'durable_s'):.2f}x"
          f" (per round {', '.join(f'{p:.2f}' for p in per)})")
PY
