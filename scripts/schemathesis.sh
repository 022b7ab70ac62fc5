#!/usr/bin/env bash
# API fuzzing of partseal-server with schemathesis against its own document.
#
#   scripts/schemathesis.sh [MAX_EXAMPLES]      (default 25 per operation)
#
# Builds the server, starts it on a free loopback port with a throw-away
# store, and runs schemathesis (pinned, in target/schemathesis-venv) against
# the served /openapi.json with the development user's credentials and a
# fixed seed. Passes exactly when no answer is a 5xx or breaks the document
# (undocumented status, content type, header or body) and every request is
# refused or accepted as the document says (see the checks below). Prints
# one summary line last; exits non-zero on any failure, error or missing
# authentication. Needs Rust, Python 3 with venv and pip, and PyPI (the
# first time). schemathesis leaves out `GET /openapi.json` itself, the
# document it loads: every operation but one is tested (the upload page
# under `/ui/` among them).
#
# Environment: PYTHON (default python3); SCHEMATHESIS_SEED (default
# 20251103); SCHEMATHESIS_REPORT_DIR: keep the JUnit and NDJSON reports and
# the server log there (for `st replay`); SCHEMATHESIS_CHECKS: run these
# checks instead (comma-separated); SCHEMATHESIS_SERVER_ARGS: more server
# flags, split on spaces (the cluster flags, say, to fuzz a cluster node
# started against `scripts/cluster.sh up DIR 0`; the S3 keys then come from
# AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY as for any node).
set -euo pipefail

ST_VERSION=4.32.5
MAX_EXAMPLES=${1:-25}
SEED=${SCHEMATHESIS_SEED:-20251103}
PYTHON=${PYTHON:-python3}

case $MAX_EXAMPLES in
'' | *[!0-9]* | 0)
    echo "usage: $0 [MAX_EXAMPLES]   (a positive integer, default 25)" >&2
    exit 2
    ;;
esac

cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/target/schemathesis-venv
START=$(date +%s)

work=$(mktemp -d "${TMPDIR:-/tmp}/partseal-schemathesis.XXXXXX")
server_pid=
st_pid=
cleanup() {
    local rc=$?
    if [ -n "$st_pid" ]; then
        kill -TERM "$st_pid" 2>/dev/null || true
        { wait "$st_pid"; } 2>/dev/null || true
    fi
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        # Graceful stop first; SIGKILL if it is still there after 5 s.
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL "$server_pid" 2>/dev/null || true
        { wait "$server_pid"; } 2>/dev/null || true
    fi
    if [ -n "${SCHEMATHESIS_REPORT_DIR:-}" ] && [ -s "$work/server.err" ]; then
        mkdir -p "$SCHEMATHESIS_REPORT_DIR"
        cp "$work/server.err" "$SCHEMATHESIS_REPORT_DIR/server.log"
    fi
    if [ "$rc" -ne 0 ] && grep -qE ' (WARN|ERROR) ' "$work/server.err" 2>/dev/null; then
        echo "--- warnings and errors in the server log ---" >&2
        grep -E ' (WARN|ERROR) ' "$work/server.err" | tail -n 40 >&2
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. schemathesis, pinned, in its own venv. hypothesis is pinned too: it makes
# the cases, so a new release would change what a fixed seed generates.
REQUIREMENTS="schemathesis==$ST_VERSION hypothesis==6.170.17"
if [ "$(cat "$VENV/.partseal-requirements" 2>/dev/null)" != "$REQUIREMENTS" ] ||
    ! "$VENV/bin/schemathesis" --version >/dev/null 2>&1; then
    echo "schemathesis.sh: installing $REQUIREMENTS into $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    # shellcheck disable=SC2086 # one word per requirement
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $REQUIREMENTS
    echo "$REQUIREMENTS" >"$VENV/.partseal-requirements"
fi

# 2. The server.
cargo build --quiet -p partseal-server --locked
TARGET=$(cargo metadata --format-version 1 --no-deps --locked |
    "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
BIN=$TARGET/debug/partseal-server

# 3. Start it on a free port (the kernel picks it) with a fresh store.
: >"$work/server.out"
read -r -a SERVER_ARGS <<<"${SCHEMATHESIS_SERVER_ARGS:-}"
"$BIN" --listen 127.0.0.1:0 --data "$work/data" "${SERVER_ARGS[@]+"${SERVER_ARGS[@]}"}" \
    >>"$work/server.out" 2>"$work/server.err" &
server_pid=$!
URL=
for _ in $(seq 1 300); do
    URL=$(sed -n 's/^partseal-server: listening on \(http:\/\/[^,]*\),.*/\1/p' "$work/server.out")
    [ -n "$URL" ] && break
    kill -0 "$server_pid" 2>/dev/null || {
        echo "schemathesis.sh: the server exited at start" >&2
        exit 1
    }
    sleep 0.1
done
[ -n "$URL" ] || {
    echo "schemathesis.sh: the server did not print its address within 30 s" >&2
    exit 1
}

# 4. Hooks, written next to the config (they are part of this script).
cat >"$work/partseal_hooks.py" <<'PY'
"""schemathesis hooks for partseal-server (written by scripts/schemathesis.sh).

Values the document allows but this server cannot accept from this user (any
`X-User-Id` but the token's user, any `X-Date` but now, any project id but
the user's) are replaced right before each request, so that positive cases
get past authentication; values that break the schema (negative cases) are
left as generated. Positive cases of operations on an existing file, and of
`PUT /upload`, mostly get a real resource created for them just before, so
that those operations are exercised beyond "not found" and "bad signature".
The choice depends only on the generated value, so replays behave the same.
"""

import base64
import datetime
import hashlib
import json
import os
import re
import urllib.parse

import requests
import schemathesis
from schemathesis.core import NOT_SET
from schemathesis.core.parameters import ParameterLocation as Loc
from schemathesis.transport.serialization import serialize_binary

URL = os.environ["PARTSEAL_URL"]
with open(os.environ["PARTSEAL_CREDENTIALS"], encoding="utf-8") as f:
    USER = json.load(f)["users"][0]
DATE_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z$")
FILE_ID_RE = re.compile(r"^[0-9a-f]{32}$")
DATA = b"schemathesis"
MIN_PART = 5 << 20  # the server's default --min-part-size
SESSION = requests.Session()


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def call(method, url, **kw):
    r = SESSION.request(method, url, timeout=30, **kw)
    r.raise_for_status()
    return r.json() if r.content else None


def koo(path, body):
    headers = {"Authorization": "Bearer " + USER["token"], "X-User-Id": USER["id"], "X-Date": now()}
    return call("POST", f"{URL}/koodrive/ose/v1/{path}", json=body, headers=headers)


def mss(path, body):
    headers = {"X-Auth-Token": USER["token"]}
    return call("POST", f"{URL}/v1/{USER['project_id']}/{path}", json=body, headers=headers)


def pick(value, n):
    return hashlib.sha256(repr(value).encode()).digest()[0] % n


def koo_file(kind):
    """0: put-mode upload, nothing stored; 1: its part stored; 2: completed;
    3: multipart upload of 10 GiB with no part planned yet."""
    if kind == 3:
        body = {"fileName": "st.bin", "fileType": "45", "length": 10 << 30, "uploadMode": "multipart"}
        return koo("files/create", body)["fileId"]
    v = koo("files/create", {"fileName": "st.bin", "fileType": 45, "length": len(DATA)})
    if kind >= 1:
        call("PUT", v["uploadUrl"], data=DATA)
    if kind == 2:
        koo("files/complete", {"fileId": v["fileId"], "sha256": hashlib.sha256(DATA).hexdigest()})
    return v["fileId"]


def mss_file(kind):
    """0: created; 1: content stored; 2: confirmed."""
    md5 = base64.b64encode(hashlib.md5(DATA).digest()).decode()
    v = mss("files", {"file_name": "st.bin", "file_md5": md5, "file_size": len(DATA), "file_type": "BIN",
                      "asset_id": "st", "asset_file_category": "MAIN"})
    if kind >= 1:
        call("PUT", v["upload_url"], data=DATA)
    if kind == 2:
        mss(f"files/{v['file_id']}/complete", {"state": "CREATED"})
    return v["file_id"]


def positive(case, *locations):
    return case.meta is None or not any(case.meta.is_negative_at(loc) for loc in locations)


def fix_credentials(case):
    for name, value in list((case.headers or {}).items()):
        low = name.lower()
        if low == "x-date" and isinstance(value, str) and DATE_RE.match(value):
            case.headers[name] = now()
        elif low == "x-user-id" and isinstance(value, str) and value:
            case.headers[name] = USER["id"]
        elif low == "x-project-id" and isinstance(value, str):
            case.headers[name] = USER["project_id"]
    p = case.path_parameters
    if p and isinstance(p.get("project_id"), str) and p["project_id"]:
        p["project_id"] = USER["project_id"]


def real_file_id(case, op):
    body = case.body if isinstance(case.body, dict) else None
    if op in ("kooUploadUrls", "kooCompleteFile", "kooAbortUpload", "kooListParts") \
            and body is not None and positive(case, Loc.BODY):
        fid = body.get("fileId")
        if isinstance(fid, str) and FILE_ID_RE.match(fid) and (k := pick(fid, 5)) < 4:
            body["fileId"] = koo_file(3 if op == "kooUploadUrls" and k % 2 else k)
    elif op == "kooFileDetail" and positive(case, Loc.PATH):
        fid = case.path_parameters.get("fileId")
        if isinstance(fid, str) and FILE_ID_RE.match(fid) and (k := pick(fid, 4)) < 3:
            case.path_parameters["fileId"] = koo_file(2 if k else 1)
    elif op in ("mssConfirmFileUpload", "mssDeleteFile", "mssShowFile") and positive(case, Loc.PATH):
        fid = case.path_parameters.get("file_id")
        if isinstance(fid, str) and FILE_ID_RE.match(fid) and (k := pick(fid, 4)) < 3:
            case.path_parameters["file_id"] = mss_file(k)


def real_upload_url(case):
    """A URL signed for the generated part number, planned for the body's size."""
    if not positive(case, Loc.PATH, Loc.QUERY, Loc.BODY):
        return
    api, part = case.path_parameters.get("api"), case.path_parameters.get("part")
    if case.body is NOT_SET or case.body is None or not isinstance(part, int) or not 1 <= part <= 10000:
        return
    body = serialize_binary(case.body)  # the bytes that will be sent
    if api == "koodrive":
        # The parts before it, planned later, need their bytes in the length:
        # at least the server's (default) smallest part each.
        plan = [{"partNumber": part, "partSize": len(body)}]
        length = (part - 1) * MIN_PART + len(body)
        v = koo("files/create", {"fileName": "st.bin", "fileType": "45", "length": length,
                                 "uploadMode": "multipart", "multiParts": plan})
        url = v["multiParts"][0]["uploadUrl"]
    elif api == "metastudio":
        part = part if part <= 100 else 1
        v = mss("large-files", {"file_name": "st.bin", "file_type": "BIN", "asset_id": "st",
                                "asset_file_category": "MAIN", "file_multipart_count": part})
        url = v["upload_urls"][part - 1]
    else:
        return
    u = urllib.parse.urlsplit(url)
    _, _, _, file_id, part_s = u.path.split("/")
    q = dict(urllib.parse.parse_qsl(u.query))
    case.path_parameters["file_id"] = file_id
    case.path_parameters["part"] = int(part_s)
    case.query = {"o": q["o"], "e": int(q["e"]), "s": q["s"]}
    # A generated Content-MD5 is a random digest that the body never has:
    # give most positive cases the body's own, so they are stored.
    for name in list(case.headers or {}):
        if name.lower() == "content-md5" and pick(case.headers[name], 4) < 3:
            case.headers[name] = base64.b64encode(hashlib.md5(body).digest()).decode()


def real_download_url(case):
    """Most positive cases get the signed URL of a real committed file."""
    if not positive(case, Loc.PATH, Loc.QUERY):
        return
    api = case.path_parameters.get("api")
    if pick(repr(case.query), 4) == 3:
        return
    if api == "koodrive":
        fid = koo_file(2)
        url = koo(f"files/{fid}/detail", {})["downloadUrl"]
    elif api == "metastudio":
        fid = mss_file(2)
        headers = {"X-Auth-Token": USER["token"]}
        r = SESSION.get(f"{URL}/v1/{USER['project_id']}/files/{fid}", headers=headers, timeout=30)
        r.raise_for_status()
        url = r.json()["download_url"]
    else:
        return
    u = urllib.parse.urlsplit(url)
    case.path_parameters["file_id"] = u.path.split("/")[-1]
    q = dict(urllib.parse.parse_qsl(u.query))
    case.query = {"o": q["o"], "e": int(q["e"]), "s": q["s"]}


@schemathesis.hook
def before_call(context, case, kwargs):
    op = case.operation.definition.raw.get("operationId")
    fix_credentials(case)
    real_file_id(case, op)
    if op == "putPart":
        real_upload_url(case)
    elif op in ("downloadFile", "headFile"):
        real_download_url(case)
PY

CREDS=$work/data/credentials.json
PARTSEAL_TOKEN=$("$VENV/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["users"][0]["token"])' "$CREDS")
export PARTSEAL_TOKEN PARTSEAL_URL=$URL PARTSEAL_CREDENTIALS=$CREDS

# 5. Checks: all of them but one, so a run passes exactly when every
# response is documented and every request is judged as the document says:
#   not_a_server_error            no 5xx (and no connection failure)
#   status_code_conformance       the status is documented for the operation
#                                 (the document lists every status it sends)
#   content_type_conformance      the content type is a documented one
#   response_headers_conformance  required headers (X-Request-Id, ETag) are
#                                 present and match their schema
#   response_schema_conformance   the body matches the documented schema
#   negative_data_rejection       schema-breaking requests are refused (4xx)
#   missing_required_header       a request without X-User-Id / X-Date is
#                                 refused
#   ignored_auth                  operations that declare security refuse
#                                 requests without or with wrong credentials
#   unsupported_method, allow_header_conformance  undocumented methods get
#                                 405 with a correct Allow
#   use_after_free, ensure_resource_availability  after DeleteFile the file
#                                 is gone; after a create it is there
#   object_level_authorization    (needs a second user: a no-op here)
# Left out: positive_data_acceptance. It wants a 2xx for every schema-valid
# request, but a schema cannot say that a file id must exist and be in the
# right state, that all parts must be stored before complete, or that
# `multiParts` is only for `uploadMode: multipart`; the server answers those
# with documented 400s (13000401, 13000421, 13000102, MSS.10001021), which
# is the behaviour the document describes, not a breach of it.
CHECKS=${SCHEMATHESIS_CHECKS:-all}
EXCLUDE=positive_data_acceptance
[ -z "${SCHEMATHESIS_CHECKS:-}" ] || EXCLUDE=

# 6. Configuration. The token comes from the environment, not the file.
cat >"$work/schemathesis.toml" <<EOF
hooks = "$work/partseal_hooks.py"

[generation]
database = "none"

[auth.openapi.kooBearer]
bearer = "\${PARTSEAL_TOKEN}"

[auth.openapi.mssToken]
api_key = "\${PARTSEAL_TOKEN}"

[warnings]
# All-401 answers mean the credentials were not applied: fail, do not pass
# quietly having tested nothing but authentication.
fail-on = ["missing_auth"]
EOF

report=${SCHEMATHESIS_REPORT_DIR:-$work/report}
mkdir -p "$report"
# One worker: hypothesis is not thread-safe on CPython 3.11 (4 workers gave
# "AST constructor recursion depth mismatch" runtime errors from ast.parse).
echo "schemathesis.sh: server at $URL; schemathesis $ST_VERSION, $MAX_EXAMPLES examples per operation, seed $SEED"
# In the background, so that a signal to this script stops it at once.
mkfifo "$work/st.fifo"
tee "$work/st.log" <"$work/st.fifo" &
tee_pid=$!
(
    cd "$work"
    exec "$VENV/bin/schemathesis" --config-file "$work/schemathesis.toml" run \
        --checks "$CHECKS" ${EXCLUDE:+--exclude-checks "$EXCLUDE"} \
        --max-examples "$MAX_EXAMPLES" --seed "$SEED" \
        --workers 1 --no-color --report junit,ndjson --report-dir "$report" \
        "$URL/openapi.json"
) >"$work/st.fifo" 2>&1 &
st_pid=$!
st_rc=0
wait "$st_pid" || st_rc=$?
st_pid=
wait "$tee_pid" || true

# 7. One line for the CI log (from the closing "=== N failures, ... ===").
ops=$(sed -n 's/^  Tested: \([0-9]*\).*/\1/p' "$work/st.log" | tail -n 1)
cases=$(sed -n 's/^  \([0-9]*\) generated.*/\1/p' "$work/st.log" | tail -n 1)
last=$(grep -E '^=+ .* in [0-9.]+s =+$' "$work/st.log" | tail -n 1 || true)
fails=$(grep -oE '[0-9]+ failures?' <<<"$last" | grep -oE '[0-9]+' || echo 0)
errors=$(grep -oE '[0-9]+ errors?' <<<"$last" | grep -oE '[0-9]+' || echo 0)
verdict=PASS
if [ "$st_rc" -ne 0 ]; then
    # e.g. "Warnings fail the run", when it is not failures or errors.
    why=$(sed -E 's/^=+ (.*) in [0-9.]+s =+$/\1/' <<<"$last")
    verdict="FAIL (${why:-schemathesis did not finish})"
fi
echo "schemathesis.sh: $verdict: operations ${ops:-?}, cases ${cases:-?}, failures $fails, errors $errors (exit $st_rc, $(($(date +%s) - START)) s)"
exit "$st_rc"
