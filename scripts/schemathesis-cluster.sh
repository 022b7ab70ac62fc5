#!/usr/bin/env bash
# API fuzzing of a cluster node: `scripts/cluster.sh up DIR 0` starts
# PostgreSQL and Garage, and `scripts/schemathesis.sh` then fuzzes a
# partseal-server node started over them with the cluster flags (the same
# checks as for the local store). Everything is stopped by PID at the end.
#
#   scripts/schemathesis-cluster.sh [MAX_EXAMPLES]    (default 25 per operation)
#
# Needs what scripts/cluster.sh needs (PostgreSQL, a Garage binary; see
# scripts/install-postgres.sh and scripts/install-garage.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

dir=$(mktemp -d "${TMPDIR:-/tmp}/partseal-st-cluster.XXXXXX")
cleanup() {
    local rc=$?
    bash scripts/cluster.sh down "$dir" > /dev/null 2>&1 || true
    rm -rf "$dir"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bash scripts/cluster.sh up "$dir" 0 > "$dir/cluster.json" 2> "$dir/cluster.err" || {
    cat "$dir/cluster.err" >&2
    echo "schemathesis-cluster.sh: the cluster did not start" >&2
    exit 1
}
eval "$(python3 - "$dir/cluster.json" <<'PY'
import json, shlex, sys
d = json.load(open(sys.argv[1]))
s3 = d["s3"]
args = (f"--database-url {d['postgres']} --s3-endpoint {s3['endpoint']} "
        f"--s3-bucket {s3['bucket']} --s3-region {s3['region']}")
print(f"export AWS_ACCESS_KEY_ID={shlex.quote(s3['access_key_id'])}")
print(f"export AWS_SECRET_ACCESS_KEY={shlex.quote(s3['secret_access_key'])}")
print(f"export SCHEMATHESIS_SERVER_ARGS={shlex.quote(args)}")
PY
)"
bash scripts/schemathesis.sh "${1:-25}"
