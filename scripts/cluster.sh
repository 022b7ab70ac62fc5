#!/usr/bin/env bash
# A local test cluster: one private PostgreSQL, a Garage S3 store (one node,
# or three with GARAGE_NODES=3) and N partseal-server nodes sharing both.
#
#   scripts/cluster.sh up DIR [NODES]   start everything under DIR (NODES
#                                       defaults to 3; 0 = only PostgreSQL and
#                                       Garage); prints one JSON line
#   scripts/cluster.sh down DIR         stop whatever DIR/pids/*.pid names
#
# Environment:
#   GARAGE_NODES         Garage nodes (default 1); the replication factor equals
#                        it, so 3 gives replication_factor = 3
#   GARAGE_BIN           the Garage binary (default: scripts/install-garage.sh's,
#                        built once and cached)
#   GARAGE_FSYNC         1: Garage fsyncs data and metadata before answering
#                        (data_fsync, metadata_fsync); default 0, Garage's own
#                        default, which leaves durability to replication
#   PARTSEAL_SERVER_BIN  partseal-server binary (default target/release/
#                        partseal-server of this repository, built if missing)
#   PARTSEAL_NODE_ARGS   extra flags for every node, split on whitespace
#
# Layout of DIR (all paths absolute in the output):
#   pg/  pg.log                    PostgreSQL data directory, socket and log
#   garage-K/garage.toml           Garage node K: config, meta/, data/
#   garage-K.log  garage-setup.log
#   node-i/  node-i.log            partseal-server node i: data and log
#   node-i.cmd                     `bash DIR/node-i.cmd` runs node i again in
#                                  the foreground (same port, environment and
#                                  log; it records its PID in pids/node-i.pid)
#   credentials.json               written by node 1
#   pids/*.pid                     one PID per process, used by `down`
#   cluster.json                   the JSON line printed by `up`
#
# Only processes listed in DIR/pids are ever signalled, and only when their
# command line names DIR (so a recycled PID is left alone).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"

log() { echo "cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  echo "usage: $0 up DIR [NODES] | down DIR" >&2
  exit 2
}

# ---------------------------------------------------------------------------
# Helpers

# N distinct free TCP ports on 127.0.0.1, one per line. All sockets are held
# open until every port is chosen, so the ports differ from each other.
# The ports come from below the kernel's ephemeral range: a process started
# again on its old port would otherwise find it taken, now and then, by some
# outgoing connection the kernel gave that port as its source.
free_ports() {
  python3 - "$1" <<'EOF'
import random, socket, sys
want = int(sys.argv[1])
try:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
except (OSError, ValueError, IndexError):
    low = 32768
candidates = list(range(10000, low)) if low > 11000 else []
random.shuffle(candidates)
socks = []
for port in candidates:
    if len(socks) == want:
        break
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        continue
    socks.append(s)
while len(socks) < want:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
EOF
}

# Random lowercase hex of $1 bytes.
rand_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

# Whether PID $1 is a live (not zombie) process whose command line mentions
# a path under the directory $2.
owned_pid() {
  local pid="$1" dir="$2" state
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/stat" ]] || return 1
  # The state is the first field after the parenthesised command name.
  state="$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$pid/stat" 2>/dev/null)" || return 1
  [[ "$state" != Z && "$state" != X ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/"
}

# Waits until URL answers over HTTP. With want=200 only a 200 counts, with
# want=any every HTTP answer does (even 403). Fails after TIMEOUT seconds, or
# as soon as process PID (if not empty) has exited.
wait_http() {
  local url="$1" want="$2" timeout="$3" pid="${4:-}"
  python3 - "$url" "$want" "$timeout" "$pid" <<'EOF'
import sys, time, urllib.request, urllib.error

url, want, timeout, pid = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]

def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except OSError:
        return False

deadline = time.monotonic() + timeout
last = "no answer"
while time.monotonic() < deadline:
    if pid and not alive(pid):
        sys.exit(f"process {pid} exited while waiting for {url}")
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            code = r.status
    except urllib.error.HTTPError as e:
        code = e.code
    except Exception as e:  # refused, reset, timeout: not up yet
        last = str(e)
        time.sleep(0.2)
        continue
    if want == "any" or code == int(want):
        sys.exit(0)
    last = f"HTTP {code}"
    time.sleep(0.2)
sys.exit(f"no {'answer' if want == 'any' else want} from {url} within {timeout:.0f} s (last: {last})")
EOF
}

# Runs a command as the PostgreSQL owner: the `postgres` system user when we
# are root (initdb and postgres refuse to run as root), else ourselves. From
# /, so the other user is not refused our working directory.
as_pg() {
  if [[ $EUID -eq 0 ]]; then
    (cd / && runuser -u postgres -- "$@")
  else
    (cd / && "$@")
  fi
}

# Prints the last lines of a log file to stderr.
log_tail() {
  if [[ -f "$1" ]]; then
    echo "----- last lines of $1 -----" >&2
    tail -n 40 "$1" >&2 || true
    echo "-----" >&2
  fi
}

# Sends signal $1 to every PID named by the pid files $3... that belongs to
# DIR $2, then waits up to 10 s for them to exit and SIGKILLs what is left.
# Removes the pid files.
stop_pids() {
  local sig="$1" dir="$2" file pid i
  shift 2
  local pids=()
  for file in "$@"; do
    [[ -f "$file" ]] || continue
    pid="$(head -n1 "$file" 2>/dev/null || true)"
    if owned_pid "$pid" "$dir"; then
      log "stopping $(basename "$file" .pid) (pid $pid)"
      kill "-$sig" "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  for ((i = 0; i < 100 && ${#pids[@]} > 0; i++)); do
    local left=()
    for pid in "${pids[@]}"; do
      if owned_pid "$pid" "$dir"; then left+=("$pid"); fi
    done
    pids=("${left[@]+"${left[@]}"}")
    if ((${#pids[@]} > 0)); then sleep 0.1; fi
  done
  for pid in "${pids[@]+"${pids[@]}"}"; do
    log "pid $pid still running after 10 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  done
  for file in "$@"; do rm -f "$file"; done
}

# Stops everything of the cluster in DIR: nodes, then Garage, then PostgreSQL.
stop_all() {
  local dir="$1"
  local pids="$dir/pids"
  [[ -d "$pids" ]] || return 0
  shopt -s nullglob
  stop_pids TERM "$dir" "$pids"/node-*.pid
  stop_pids TERM "$dir" "$pids"/garage-*.pid

  if [[ -f "$pids/postgres.pid" ]]; then
    local pid
    pid="$(head -n1 "$pids/postgres.pid" 2>/dev/null || true)"
    if owned_pid "$pid" "$dir"; then
      log "stopping postgres (pid $pid)"
      local pg_bin
      pg_bin="$(cat "$dir/pg_bin" 2>/dev/null || true)"
      # A fast shutdown through pg_ctl; if that is not possible, SIGINT is
      # the same fast shutdown sent directly to the postmaster.
      if [[ -x "$pg_bin/pg_ctl" ]] &&
        as_pg "$pg_bin/pg_ctl" -D "$dir/pg" -m fast -w -t 20 stop >&2; then
        :
      else
        stop_pids INT "$dir" "$pids/postgres.pid"
      fi
    fi
    rm -f "$pids/postgres.pid"
  fi
  shopt -u nullglob
}

# ---------------------------------------------------------------------------
# up

# Set once something may have been started: a failure then stops it again.
cleanup_dir=""
on_exit() {
  local rc=$?
  if [[ $rc -ne 0 && -n "$cleanup_dir" ]]; then
    log "start failed (exit $rc): stopping what was started"
    stop_all "$cleanup_dir" || true
  fi
  exit "$rc"
}

up_postgres() {
  local dir="$1" port="$2"
  echo "$pg_bin" >"$dir/pg_bin"
  local pgdata="$dir/pg"

  # The server socket lives in pg/; a unix socket path has at most 107 bytes.
  local sock="$pgdata/.s.PGSQL.$port"
  ((${#sock} <= 107)) || die "DIR is too long for a unix socket path ($sock)"

  mkdir -p "$pgdata"
  : >"$dir/pg.log"
  if [[ $EUID -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "there is no 'postgres' system user to run PostgreSQL as"
    chown postgres: "$pgdata" "$dir/pg.log"
    # The postgres user must be able to reach DIR/pg.
    chmod o+x "$dir"
    runuser -u postgres -- test -w "$pgdata" ||
      die "the postgres user cannot reach $pgdata (a parent directory of DIR is not searchable by others)"
  fi
  chmod 700 "$pgdata"

  log "postgres: initdb $pgdata"
  as_pg "$pg_bin/initdb" -D "$pgdata" -U postgres --auth=trust \
    --encoding=UTF8 --locale=C --no-instructions >"$dir/initdb.log" 2>&1 ||
    { log_tail "$dir/initdb.log"; die "initdb failed"; }

  # Loopback only. initdb --auth=trust already trusts local sockets and
  # 127.0.0.1/::1 connections; fsync stays at its default (on).
  cat >>"$pgdata/postgresql.conf" <<EOF

# private test cluster (scripts/cluster.sh)
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$pgdata'
max_connections = 200
EOF

  log "postgres: starting on 127.0.0.1:$port"
  as_pg "$pg_bin/pg_ctl" -D "$pgdata" -l "$dir/pg.log" -w -t 60 start >&2 ||
    { log_tail "$dir/pg.log"; die "PostgreSQL did not start"; }
  pg_pid="$(head -n1 "$pgdata/postmaster.pid")"
  echo "$pg_pid" >"$dir/pids/postgres.pid"

  "$pg_bin/createdb" -h 127.0.0.1 -p "$port" -U postgres partseal ||
    die "createdb partseal failed"
  pg_url="postgres://postgres@127.0.0.1:$port/partseal"
}

up_garage() {
  local dir="$1" count="$2"
  shift 2
  # The remaining arguments: 3 free ports per node (rpc, s3, admin).
  local ports=("$@")
  local secret admin_token k
  secret="$(rand_hex 32)"
  admin_token="$(rand_hex 32)"
  garage_pids=()
  garage_endpoints=()
  local confs=() logs=()
  local fsync=false
  [[ "${GARAGE_FSYNC:-0}" == 1 ]] && fsync=true

  for ((k = 1; k <= count; k++)); do
    local gdir="$dir/garage-$k"
    local rpc="${ports[(k - 1) * 3]}" s3="${ports[(k - 1) * 3 + 1]}" admin="${ports[(k - 1) * 3 + 2]}"
    mkdir -p "$gdir/meta" "$gdir/data"
    cat >"$gdir/garage.toml" <<EOF
metadata_dir = "$gdir/meta"
data_dir = "$gdir/data"
db_engine = "lmdb"
replication_factor = $count
data_fsync = $fsync
metadata_fsync = $fsync

rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$secret"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin"
admin_token = "$admin_token"
EOF
    chmod 600 "$gdir/garage.toml"
    confs+=("$gdir/garage.toml")
    logs+=("$dir/garage-$k.log")
    garage_endpoints+=("http://127.0.0.1:$s3")

    log "garage-$k: starting (rpc $rpc, s3 $s3, admin $admin)"
    "$garage_bin" -c "$gdir/garage.toml" server </dev/null >"$dir/garage-$k.log" 2>&1 &
    garage_pids+=("$!")
    echo "$!" >"$dir/pids/garage-$k.pid"
  done

  # g K ARGS...: the Garage CLI against node K.
  g() {
    local n="$1"
    shift
    "$garage_bin" -c "${confs[n - 1]}" "$@"
  }

  # Each node's id (its key is created when the server first starts) and an
  # answering RPC endpoint.
  local ids=() id i
  for ((k = 1; k <= count; k++)); do
    id=""
    for ((i = 0; i < 300; i++)); do
      owned_pid "${garage_pids[k - 1]}" "$dir" ||
        { log_tail "${logs[k - 1]}"; die "garage-$k exited"; }
      if id="$(g "$k" node id -q 2>/dev/null)" && g "$k" status >/dev/null 2>&1; then
        break
      fi
      id=""
      sleep 0.2
    done
    [[ -n "$id" ]] || { log_tail "${logs[k - 1]}"; die "garage-$k did not come up within 60 s"; }
    ids+=("$id")
  done

  # setup ARGS...: a Garage CLI command against node 1, its output kept in
  # DIR/garage-setup.log (and shown if it fails).
  local setup_log="$dir/garage-setup.log"
  setup() {
    echo "\$ garage $*" >>"$setup_log"
    if ! g 1 "$@" >>"$setup_log" 2>&1; then
      log_tail "$setup_log"
      die "garage $1 $2 failed"
    fi
  }

  # Connect node 1 to the others (they then learn about each other).
  for ((k = 2; k <= count; k++)); do
    setup node connect "${ids[k - 1]}"
  done

  # One zone, 1 GB each; the full ids (without @addr) name the nodes.
  local short=()
  for id in "${ids[@]}"; do short+=("${id%%@*}"); done
  setup layout assign -z dc1 -c 1G "${short[@]}"
  setup layout apply --version 1

  # Healthy = every node sees all storage nodes for all partitions.
  log "garage: waiting for the cluster to be healthy"
  local status
  for ((k = 1; k <= count; k++)); do
    status=""
    for ((i = 0; i < 300; i++)); do
      status="$(g "$k" json-api GetClusterHealth 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])' 2>/dev/null || true)"
      [[ "$status" == healthy ]] && break
      sleep 0.2
    done
    [[ "$status" == healthy ]] || { g "$k" status >&2 || true; die "garage-$k not healthy within 60 s (status: ${status:-none})"; }
  done

  # A key of Garage's own format (GK + 12 bytes hex, 32 bytes hex secret).
  s3_key_id="GK$(rand_hex 12)"
  s3_secret="$(rand_hex 32)"
  setup bucket create partseal
  setup key import --yes -n partseal "$s3_key_id" "$s3_secret"
  setup bucket allow --read --write --owner partseal --key "$s3_key_id"

  local url
  for url in "${garage_endpoints[@]}"; do
    wait_http "$url/" any 60 || die "Garage S3 API $url does not answer"
  done
}

# The partseal-server binary, built if needed.
server_binary() {
  if [[ -n "${PARTSEAL_SERVER_BIN:-}" ]]; then
    [[ -x "$PARTSEAL_SERVER_BIN" ]] || die "PARTSEAL_SERVER_BIN=$PARTSEAL_SERVER_BIN is not executable"
    realpath "$PARTSEAL_SERVER_BIN"
    return
  fi
  local target="${CARGO_TARGET_DIR:-target}"
  [[ "$target" == /* ]] || target="$repo/$target"
  local bin="$target/release/partseal-server"
  if [[ ! -x "$bin" ]]; then
    log "building partseal-server (release)"
    (cd "$repo" && cargo build --release --locked -p partseal-server) >&2 ||
      die "cargo build of partseal-server failed"
  fi
  echo "$bin"
}

up_nodes() {
  local dir="$1" count="$2" s3_endpoint="$3" bin="$4"
  shift 4
  local ports=("$@") i
  node_urls=()
  node_pids=()

  # Extra flags, split on whitespace (no globbing).
  local extra=()
  read -r -a extra <<<"${PARTSEAL_NODE_ARGS:-}"

  for ((i = 1; i <= count; i++)); do
    local port="${ports[i - 1]}"
    local vars=("AWS_ACCESS_KEY_ID=$s3_key_id" "AWS_SECRET_ACCESS_KEY=$s3_secret")
    if [[ -n "${RUST_LOG:-}" ]]; then vars+=("RUST_LOG=$RUST_LOG"); fi
    local cmd=(env "${vars[@]}" "$bin"
      --listen "127.0.0.1:$port" --data "$dir/node-$i" --credentials "$dir/credentials.json"
      --database-url "$pg_url" --s3-endpoint "$s3_endpoint"
      --s3-bucket partseal --s3-region garage "${extra[@]+"${extra[@]}"}")
    mkdir -p "$dir/node-$i"

    # The restart script: records its PID (exec keeps it) and runs the node
    # in the foreground, appending to the same log.
    {
      printf 'cd %q && echo $$ >%q && exec' "$dir" "$dir/pids/node-$i.pid"
      printf ' %q' "${cmd[@]}"
      printf ' </dev/null >>%q 2>&1\n' "$dir/node-$i.log"
    } >"$dir/node-$i.cmd"

    log "node-$i: starting on 127.0.0.1:$port"
    (cd "$dir" && exec "${cmd[@]}") </dev/null >"$dir/node-$i.log" 2>&1 &
    local pid="$!"
    echo "$pid" >"$dir/pids/node-$i.pid"
    node_pids+=("$pid")
    node_urls+=("http://127.0.0.1:$port")

    # Node 1 creates credentials.json, so it must be ready before the others.
    if ! wait_http "http://127.0.0.1:$port/readyz" 200 60 "$pid"; then
      log_tail "$dir/node-$i.log"
      die "node-$i did not become ready"
    fi
  done
}

cmd_up() {
  local dir="$1" nodes="${2:-3}"
  local gnodes="${GARAGE_NODES:-1}"
  [[ "$nodes" =~ ^[0-9]+$ ]] || die "NODES must be a number >= 0, not '$nodes'"
  [[ "$gnodes" =~ ^[1-9][0-9]*$ ]] || die "GARAGE_NODES must be a number >= 1, not '$gnodes'"
  command -v python3 >/dev/null || die "python3 is needed"

  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd -P)"
  if [[ -e "$dir/pg" || -e "$dir/garage-1" ]]; then
    die "$dir already holds a cluster: stop it with 'down' and use a fresh directory"
  fi
  mkdir -p "$dir/pids"
  cleanup_dir="$dir"
  trap on_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  # Every port at once, so none is handed out twice.
  local ports=()
  mapfile -t ports < <(free_ports $((1 + 3 * gnodes + nodes)))
  ((${#ports[@]} == 1 + 3 * gnodes + nodes)) || die "could not find free ports"

  # Binaries first: an install or build should not keep services waiting.
  pg_bin="$(bash "$here/install-postgres.sh")"
  garage_bin="${GARAGE_BIN:-$(bash "$here/install-garage.sh")}"
  local server_bin=""
  if ((nodes > 0)); then server_bin="$(server_binary)"; fi

  local t0=$SECONDS
  up_postgres "$dir" "${ports[0]}"
  log "postgres: up in $((SECONDS - t0)) s"

  t0=$SECONDS
  up_garage "$dir" "$gnodes" "${ports[@]:1:3*gnodes}"
  log "garage: up in $((SECONDS - t0)) s ($gnodes node(s))"

  t0=$SECONDS
  up_nodes "$dir" "$nodes" "${garage_endpoints[0]}" "$server_bin" "${ports[@]:1+3*gnodes}"
  ((nodes == 0)) || log "nodes: $nodes up in $((SECONDS - t0)) s"

  # The JSON line: built by python3 so that every string is quoted properly.
  local json
  json="$(python3 - "$dir" "$pg_url" "$pg_pid" "$pg_bin" "${garage_endpoints[0]}" \
    "$s3_key_id" "$s3_secret" \
    "${garage_pids[*]}" "${garage_endpoints[*]}" \
    "${node_urls[*]+"${node_urls[*]}"}" "${node_pids[*]+"${node_pids[*]}"}" <<'EOF'
import json, sys
(d, pg_url, pg_pid, pg_bin, s3, key_id, secret,
 garage_pids, garage_endpoints, node_urls, node_pids) = sys.argv[1:]
print(json.dumps({
    "nodes": node_urls.split(),
    "credentials": f"{d}/credentials.json",
    "postgres": pg_url,
    "s3": {"endpoint": s3, "bucket": "partseal", "region": "garage",
           "access_key_id": key_id, "secret_access_key": secret},
    "pids": {"postgres": int(pg_pid),
             "garage": [int(p) for p in garage_pids.split()],
             "nodes": [int(p) for p in node_pids.split()]},
    "garage_endpoints": garage_endpoints.split(),
    "pg_bin": pg_bin,
    "pgdata": f"{d}/pg",
}))
EOF
  )"
  echo "$json" >"$dir/cluster.json"
  cleanup_dir=""
  echo "$json"
}

# ---------------------------------------------------------------------------
# down

cmd_down() {
  local dir="$1"
  if [[ ! -d "$dir" ]]; then
    log "$dir does not exist: nothing to stop"
    return 0
  fi
  dir="$(cd "$dir" && pwd -P)"
  stop_all "$dir"
  log "stopped"
}

# ---------------------------------------------------------------------------

case "${1:-}" in
  up)
    [[ $# -ge 2 && $# -le 3 ]] || usage
    cmd_up "$2" "${3:-3}"
    ;;
  down)
    [[ $# -eq 2 ]] || usage
    cmd_down "$2"
    ;;
  *) usage ;;
esac
