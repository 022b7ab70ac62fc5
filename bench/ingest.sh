#!/usr/bin/env bash
# HTTP ingest side by side: the same 1 GiB, in 64 parts of 16 MiB, sent by 4
# concurrent clients (Python `requests`, threads) to
#
#   nginx    WebDAV PUT of each part into a directory, then `sync` (the
#            baseline: the fastest plain way to land bytes over HTTP);
#   chain    partseal-server, KooDrive files/create with partOffset and
#            hashCtx for every part, the PUTs, files/complete, then `sync`;
#   stream   the same without partOffset/hashCtx (complete hashes in order).
#
#   bench/ingest.sh                          ROUNDS=3 CLIENTS=4 by default
#
# Each leg's time runs from its first request to the end of the `sync` after
# it (nginx does not fsync, partseal fsyncs every part before acknowledging;
# the `sync` makes both pay for durability). Rounds alternate the legs; every
# leg gets a fresh server and a fresh store, the previous store is removed
# and synced first. Prints the medians, GB/s, the ratios chain/nginx and
# stream/nginx measured in the same run, the servers' CPU time and peak RSS
# (VmHWM) and the load average before and after.
#
# Installs what is missing: nginx with apt-get (nginx-light where the
# distribution has it), `requests` into a venv in target/bench-venv.
# Environment: ROUNDS, CLIENTS; BENCH_DIR keeps the test file (and nothing
# else) between runs; BENCH_DROP_CACHES=1 (root only) drops the page cache
# before every leg and reads the test file back in; BENCH_PERF=FILE records
# the server with `perf record -g` during the first chain leg;
# GARAGE=1 (or GARAGE_BIN=PATH) adds a Garage leg: one Garage node started
# by scripts/cluster.sh with data_fsync and metadata_fsync on, the same
# parts sent with boto3 as a multipart upload with a client-computed
# x-amz-checksum-sha256 per part (bench/cluster.py s3), then `sync`;
# BENCH_PERF_LEG=stream profiles the stream leg instead; BENCH_INFLIGHT=0
# skips the memory legs (64 part bodies in flight at once, chain and stream).
set -euo pipefail
rounds=${ROUNDS:-3}
clients=${CLIENTS:-4}
drop=${BENCH_DROP_CACHES:-0}
perf_out=${BENCH_PERF:-}
size=$((1 << 30))
part_size=$((16 << 20))
here=$(cd "$(dirname "$0")/.." && pwd)

# --- tools ---------------------------------------------------------------
if ! command -v nginx > /dev/null; then
  [ "$(id -u)" = 0 ] || { echo "nginx is missing; install it (apt-get install nginx-light) or run as root" >&2; exit 2; }
  pkg=nginx
  if apt-cache policy nginx-light 2> /dev/null | grep -q 'Candidate: [0-9]'; then pkg=nginx-light; fi
  echo "installing $pkg with apt-get..." >&2
  install_nginx() { DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$pkg" > /dev/null; }
  # Stale package lists name versions the mirror no longer has: refresh once.
  install_nginx || { apt-get update > /dev/null && install_nginx; }
fi
nginx_bin=$(command -v nginx)
if ! "$nginx_bin" -V 2>&1 | grep -q -- --with-http_dav_module; then
  echo "$nginx_bin was built without the WebDAV module (http_dav_module)" >&2
  exit 2
fi
venv="$here/target/bench-venv"
garage=0
[ "${GARAGE:-0}" = 1 ] || [ -n "${GARAGE_BIN:-}" ] && garage=1
if ! "$venv/bin/python" -c 'import requests' 2> /dev/null; then
  echo "installing requests into $venv..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet requests
fi
if [ "$garage" = 1 ] && ! "$venv/bin/python" -c 'import boto3' 2> /dev/null; then
  echo "installing boto3 into $venv..." >&2
  "$venv/bin/pip" install --quiet boto3
fi
py="$venv/bin/python"
client="$here/bench/ingest.py"

cargo build --release --quiet --manifest-path "$here/Cargo.toml" -p partseal-server
cargo build --release --quiet --manifest-path "$here/Cargo.toml" -p partseal --features cli --bin partseal
server="$here/target/release/partseal-server"
partseal="$here/target/release/partseal"

# --- scratch -------------------------------------------------------------
dir=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$dir"
# PostgreSQL (started with Garage by scripts/cluster.sh) runs as its own user.
[ "$garage" = 1 ] && chmod 755 "$dir"
# The test file, one store (nginx's, or partseal's parts plus the merged
# file in stream mode), and room to spare.
need_mib=4096
[ -f "$dir/file.bin" ] && need_mib=$((need_mib - 1024))
avail_mib=$(df -Pm "$dir" | awk 'NR == 2 { print $4 }')
if [ "$avail_mib" -lt "$need_mib" ]; then
  echo "not enough disk in $dir: ${avail_mib} MiB free, ${need_mib} MiB needed; nothing done" >&2
  exit 2
fi

pids=()
results=$(mktemp)
garage_up=""
cleanup() {
  local pid
  [ -n "$garage_up" ] && bash "$here/scripts/cluster.sh" down "$garage_up" 2> /dev/null || true
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2> /dev/null || true
    wait "$pid" 2> /dev/null || true
  done
  rm -f "$results"
  if [ -n "${BENCH_DIR:-}" ]; then
    rm -rf "$dir/leg"
  else
    rm -rf "$dir"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Stops a process this script started and forgets it.
stop() {
  local pid=$1 sig=${2:-TERM} keep=() p
  kill "-$sig" "$pid" 2> /dev/null || true
  wait "$pid" 2> /dev/null || true
  for p in "${pids[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  pids=("${keep[@]+"${keep[@]}"}")
}

free_port() {
  "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() {
  local port=$1 pid=$2 i
  for i in $(seq 500); do
    kill -0 "$pid" 2> /dev/null || { echo "server $pid exited before listening" >&2; return 1; }
    if (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null; then return 0; fi
    sleep 0.02
  done
  echo "server $pid not listening on $port after 10 s" >&2
  return 1
}

# Peak resident set of a process, in KiB.
hwm() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status"; }
# CPU time (user + system, all threads) a process has used, in clock ticks.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

if [ ! -f "$dir/file.bin" ] || [ "$(stat -c %s "$dir/file.bin")" -ne "$size" ]; then
  echo "creating 1 GiB of deterministic bytes in $dir/file.bin..." >&2
  "$py" "$client" gen "$dir/file.bin" "$size"
fi
echo "computing the chain plan (partseal ctx, not timed)..." >&2
"$partseal" ctx --part-size "$part_size" "$dir/file.bin" > "$dir/plan.json"

# Before every leg: the previous store gone and on disk, the source cached.
settle() {
  rm -rf "$dir/leg"
  sync
  if [ "$drop" = 1 ]; then echo 3 > /proc/sys/vm/drop_caches; fi
  cat "$dir/file.bin" > /dev/null
  mkdir -p "$dir/leg"
}

run_nginx() {
  local round=$1 prefix="$dir/leg/nginx" port pid rss=0 w user_line=""
  mkdir -p "$prefix/root" "$prefix/body-temp" "$prefix/logs"
  port=$(free_port)
  # As root the workers would become nobody; keep them the current user.
  [ "$(id -u)" = 0 ] && user_line="user $(id -un) $(id -gn);"
  cat > "$prefix/nginx.conf" <<EOF
$user_line
daemon off;
worker_processes auto;
pid $prefix/nginx.pid;
error_log $prefix/logs/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $prefix/body-temp;
  client_max_body_size 0;
  client_body_buffer_size 1m;
  server {
    listen 127.0.0.1:$port;
    root $prefix/root;
    location / {
      dav_methods PUT;
      dav_access user:rw;
      create_full_put_path on;
    }
  }
}
EOF
  "$nginx_bin" -e "$prefix/logs/error.log" -c "$prefix/nginx.conf" -p "$prefix" &
  pid=$!
  pids+=("$pid")
  wait_port "$port" "$pid"
  line=$("$py" "$client" nginx "http://127.0.0.1:$port" "$dir/file.bin" "$part_size" "$clients")
  local cpu=0
  for w in $(ps --ppid "$pid" -o pid=); do
    rss=$((rss + $(hwm "$w")))
    cpu=$((cpu + $(ticks "$w")))
  done
  stop "$pid" QUIT
  local stored
  stored=$(cat "$prefix"/root/part.* | cmp - "$dir/file.bin" && echo ok || echo DIFFERENT)
  [ "$stored" = ok ] || { echo "nginx stored different bytes" >&2; exit 1; }
  echo "round=$round $line rss_kib=$rss cpu_s=$(awk "BEGIN { print $cpu / $hz }")" | tee -a "$results" >&2
}

# Starts partseal-server on a fresh store in the leg's directory; sets
# server_pid and server_port once it is listening.
start_partseal() {
  local data="$dir/leg/partseal" out="$dir/leg/server.out"
  mkdir -p "$data"
  "$server" --data "$data" --listen 127.0.0.1:0 > "$out" 2> "$dir/leg/server.err" &
  server_pid=$!
  pids+=("$server_pid")
  for _ in $(seq 500); do
    grep -q "listening on" "$out" && break
    kill -0 "$server_pid" 2> /dev/null || { echo "partseal-server exited:" >&2; cat "$dir/leg/server.err" >&2; exit 1; }
    sleep 0.02
  done
  server_port=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$out" | head -n 1)
  [ -n "$server_port" ] || { echo "no port in the server's banner:" >&2; cat "$out" >&2; exit 1; }
}

run_partseal() {
  local round=$1 mode=$2 data="$dir/leg/partseal" pid port line rss cpu perf_pid=""
  start_partseal
  pid=$server_pid port=$server_port
  if [ -n "$perf_out" ] && [ "$mode" = "${BENCH_PERF_LEG:-chain}" ] && [ "$round" = 1 ]; then
    perf record -q -e cpu-clock -g -o "$perf_out" -p "$pid" 2> /dev/null &
    perf_pid=$!
    pids+=("$perf_pid")
    sleep 0.5
  fi
  line=$("$py" "$client" partseal "$mode" "http://127.0.0.1:$port" "$data/credentials.json" \
    "$dir/plan.json" "$dir/file.bin" "$clients")
  [ -n "$perf_pid" ] && stop "$perf_pid" INT
  rss=$(hwm "$pid")
  cpu=$(ticks "$pid")
  stop "$pid" TERM
  echo "round=$round $line rss_kib=$rss cpu_s=$(awk "BEGIN { print $cpu / $hz }")" | tee -a "$results" >&2
}

# Memory with every part body in flight at once (64 connections, each half
# sent, held while the server's VmRSS is read).
run_inflight() {
  local mode=$1 data="$dir/leg/partseal" pid port line
  start_partseal
  pid=$server_pid port=$server_port
  line=$("$py" "$client" inflight "$mode" "http://127.0.0.1:$port" "$data/credentials.json" \
    "$dir/plan.json" "$dir/file.bin" "$pid")
  stop "$pid" TERM
  echo "$line" >&2
  inflight_lines+=("$line")
}

# One Garage node (and the PostgreSQL cluster.sh starts beside it, unused),
# fsyncing before it answers; boto3 straight to it.
run_garage() {
  local round=$1 up line cpu rss sync_s t0
  up=$(GARAGE_FSYNC=1 bash "$here/scripts/cluster.sh" up "$dir/leg/garage" 0 2> "$dir/leg/garage-up.log") ||
    { cat "$dir/leg/garage-up.log" >&2; exit 1; }
  garage_up="$dir/leg/garage"
  field() { "$py" -c 'import json, sys; print(json.load(sys.stdin)["s3"][sys.argv[1]])' "$1" <<< "$up"; }
  line=$(AWS_ACCESS_KEY_ID=$(field access_key_id) AWS_SECRET_ACCESS_KEY=$(field secret_access_key) \
    "$py" "$here/bench/cluster.py" s3 "$(field endpoint)" "$(field bucket)" "$(field region)" \
    "$dir/file.bin" "$part_size" "$clients")
  t0=$(date +%s.%N)
  sync
  sync_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.4f", b - a }')
  cpu=$(ticks "$(cat "$dir/leg/garage/pids/garage-1.pid")")
  rss=$(hwm "$(cat "$dir/leg/garage/pids/garage-1.pid")")
  bash "$here/scripts/cluster.sh" down "$dir/leg/garage" 2> /dev/null
  garage_up=""
  line=$(awk -v s="$sync_s" '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    printf "create_s=%s upload_s=%s complete_s=%s sync_s=%s total_s=%.4f", v["create_s"], v["ingest_s"],
      v["complete_s"], s, v["total_s"] + s }' <<< "$line")
  echo "round=$round leg=garage $line rss_kib=$rss cpu_s=$(awk "BEGIN { print $cpu / $hz }")" | tee -a "$results" >&2
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "uptime before: $(uptime)" >&2
for r in $(seq "$rounds"); do
  echo "round $r of $rounds..." >&2
  settle; run_nginx "$r"
  settle; run_partseal "$r" chain
  settle; run_partseal "$r" stream
  if [ "$garage" = 1 ]; then settle; run_garage "$r"; fi
done
inflight_lines=()
if [ "${BENCH_INFLIGHT:-1}" = 1 ]; then
  settle; run_inflight chain
  settle; run_inflight stream
fi
rm -rf "$dir/leg"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
echo "uptime after: $(uptime)" >&2

"$py" - "$results" "$size" "$part_size" "$rounds" "$clients" "$drop" "$load_before" "$load_after" <<'PY'
import statistics, sys
path, size, part_size, rounds, clients, drop, load_before, load_after = sys.argv[1:]
size, part_size = int(size), int(part_size)
legs = {}
for line in open(path):
    kv = dict(x.split("=", 1) for x in line.split())
    legs.setdefault(kv["leg"], []).append(kv)

def med(leg, key):
    return statistics.median(float(k[key]) for k in legs[leg])

cache = ("page cache dropped before every leg (echo 3 > /proc/sys/vm/drop_caches), test file read back in"
         if drop == "1" else "page cache not dropped; the previous store removed and synced, the test file cached")
print(f"{size >> 20} MiB in {size // part_size} parts of {part_size >> 20} MiB, {clients} concurrent clients,"
      f" {rounds} rounds alternating, medians; {cache}")
print(f"load average before: {load_before}, after: {load_after} (other work on the machine skews times)")
print(f"{'leg':<8} {'total s':>8} {'GB/s':>6} {'vs nginx':>9} {'create s':>9} {'upload s':>9}"
      f" {'complete s':>11} {'sync s':>7} {'server CPU s':>13} {'peak RSS MiB':>13}")
base = med("nginx", "total_s")

for leg in ("nginx", "chain", "stream", "garage"):
    if leg not in legs:
        continue
    t = med(leg, "total_s")
    rss = max(int(k["rss_kib"]) for k in legs[leg]) / 1024
    print(f"{leg:<8} {t:>8.3f} {size / t / 1e9:>6.2f} {base / t:>8.2f}x {med(leg, 'create_s'):>9.3f}"
          f" {med(leg, 'upload_s'):>9.3f} {med(leg, 'complete_s'):>11.3f} {med(leg, 'sync_s'):>7.3f} {med(leg, 'cpu_s'):>13.2f} {rss:>13.1f}")
print("(server CPU = user + system time; nginx: its workers' sum; peak RSS: nginx = sum of its workers'"
      " VmHWM, partseal = the server's VmHWM, largest of the rounds)")
print()
for leg, target in (("chain", 0.8), ("stream", 0.7)):
    ratio = base / med(leg, "total_s")
    per_round = [float(n["total_s"]) / float(k["total_s"]) for n, k in zip(legs["nginx"], legs[leg])]
    print(f"{leg}/nginx: {ratio:.2f}x (per round {', '.join(f'{x:.2f}' for x in per_round)})"
          f"   [target >= {target}x: {'met' if ratio >= target else 'MISSED'}]")
if "garage" in legs:
    for leg in ("chain", "stream"):
        ratio = med("garage", "total_s") / med(leg, "total_s")
        per_round = [float(g["total_s"]) / float(k["total_s"]) for g, k in zip(legs["garage"], legs[leg])]
        print(f"{leg}/garage (data_fsync=true): {ratio:.2f}x (per round {', '.join(f'{x:.2f}' for x in per_round)})"
              f"   [target >= 2x: {'met' if ratio >= 2 else 'MISSED'}]")
PY
for line in "${inflight_lines[@]+"${inflight_lines[@]}"}"; do
  "$py" - "$line" <<'PY'
import sys
kv = dict(x.split("=", 1) for x in sys.argv[1].split())
rss, hwm = int(kv["rss_inflight_kib"]) / 1024, int(kv["hwm_kib"]) / 1024
print(f"{kv['leg']}: {kv['bodies']} part bodies of 16 MiB in flight at once: server RSS {rss:.1f} MiB"
      f" then, peak {hwm:.1f} MiB   [target <= 128 MiB: {'met' if max(rss, hwm) <= 128 else 'MISSED'}]")
PY
done
[ "$garage" = 1 ] || echo "Garage: skipped (GARAGE=1 adds it; the Garage binary is built once by scripts/install-garage.sh)"
[ -n "$perf_out" ] && echo "perf profile of the first chain leg's server: $perf_out"
exit 0
