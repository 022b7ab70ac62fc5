"""The client side of bench/cluster.sh: one upload of FILE, timed, printed as
one line of `key=value`.

    cluster.py koo NODES CREDENTIALS PLAN FILE CLIENTS
    cluster.py s3 ENDPOINT BUCKET REGION FILE PART_SIZE CLIENTS

koo: KooDrive chain mode (every part with partOffset and hashCtx from PLAN,
the output of `partseal ctx`). NODES is a comma-separated list of base URLs:
files/create goes to the first, the PUTs go round-robin over all of them
(part k to node k mod N, by rewriting the uploadUrl's scheme and authority:
the signature does not cover them), files/complete to the last.

s3: boto3 straight to the object store: CreateMultipartUpload with
ChecksumAlgorithm SHA256, UploadPart of every part with its ChecksumSHA256
(base64 of the part's SHA-256, computed by the client before the part is
sent, inside the timed ingest), CompleteMultipartUpload with every part's
ETag and ChecksumSHA256, then a HEAD to check the size; the object is deleted
afterwards (not timed). Credentials come from AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY.

Both print create_s, ingest_s (first PUT sent to last answer), complete_s
and total_s (first request to the complete's answer).
"""

import base64
import hashlib
import os
import queue
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ingest  # noqa: E402 - the shared KooDrive client of bench/ingest.py


def on_node(url, base):
    rest = url.split("://", 1)[1].split("/", 1)[1]
    return f"{base}/{rest}"


def koo(nodes, creds_path, plan_path, path, clients):
    import requests  # noqa: F401 - imported before the clock starts

    nodes = nodes.split(",")
    t0 = time.monotonic()
    _, plan, created = ingest.create_upload("chain", nodes[0], creds_path, plan_path, path)
    t1 = time.monotonic()
    offsets = {p["partNumber"]: p["partOffset"] for p in plan["parts"]}
    jobs = [
        (on_node(p["uploadUrl"], nodes[k % len(nodes)]), offsets[p["partNumber"]], p["partSize"])
        for k, p in enumerate(created["multiParts"])
    ]
    ingest_s = ingest.put_all(jobs, clients, path)
    t2 = time.monotonic()
    # The complete goes to the last node: not the one that created the upload.
    done = complete_on(nodes[-1], creds_path, created["fileId"], plan["sha256"])
    t3 = time.monotonic()
    if done.get("sha256") != plan["sha256"] or done.get("length") != plan["length"]:
        sys.exit(f"files/complete answered {done}, expected sha256 {plan['sha256']}")
    print(f"create_s={t1 - t0:.4f} ingest_s={ingest_s:.4f} complete_s={t3 - t2:.4f}"
          f" total_s={t1 - t0 + ingest_s + (t3 - t2):.4f}")


def complete_on(base, creds_path, file_id, sha256):
    """files/complete on the node at `base`."""
    import json

    import requests

    with open(creds_path) as f:
        user = json.load(f)["users"][0]
    headers = {
        "Authorization": f"Bearer {user['token']}",
        "X-User-Id": user["id"],
        "X-Date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
        "Content-Type": "application/json",
    }
    r = requests.post(f"{base}/koodrive/ose/v1/files/complete",
                      json={"fileId": file_id, "sha256": sha256}, headers=headers)
    doc = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    if r.status_code != 200 or doc.get("code") not in (0, "0"):
        sys.exit(f"files/complete on {base}: HTTP {r.status_code} {r.text[:500]}")
    return doc


def s3(endpoint, bucket, region, path, part_size, clients):
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        config=Config(
            s3={"addressing_style": "path"},
            max_pool_connections=clients,
            # The checksum is the one the client sends, SHA-256; no CRC on top.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 1},
        ),
    )
    size = os.path.getsize(path)
    key = f"bench/{os.path.basename(path)}.{os.getpid()}"
    jobs = queue.Queue()
    for n, off in enumerate(range(0, size, part_size), start=1):
        jobs.put((n, off, min(part_size, size - off)))
    count = jobs.qsize()

    t0 = time.monotonic()
    upload_id = client.create_multipart_upload(
        Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256")["UploadId"]
    t1 = time.monotonic()
    done, errors = {}, []
    fd = os.open(path, os.O_RDONLY)

    def worker():
        while not errors:
            try:
                n, off, length = jobs.get_nowait()
            except queue.Empty:
                return
            data = os.pread(fd, length, off)
            checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
            try:
                r = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n,
                                       Body=data, ChecksumSHA256=checksum)
            except Exception as e:  # noqa: BLE001 - reported, then the leg fails
                errors.append(f"UploadPart {n}: {e}")
                return
            done[n] = {"PartNumber": n, "ETag": r["ETag"], "ChecksumSHA256": checksum}

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    t2 = time.monotonic()
    os.close(fd)
    if errors:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        sys.exit("\n".join(errors))
    client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id,
        MultipartUpload={"Parts": [done[n] for n in range(1, count + 1)]})
    t3 = time.monotonic()
    head = client.head_object(Bucket=bucket, Key=key)
    client.delete_object(Bucket=bucket, Key=key)
    if head["ContentLength"] != size:
        sys.exit(f"the object holds {head['ContentLength']} bytes, expected {size}")
    print(f"create_s={t1 - t0:.4f} ingest_s={t2 - t1:.4f} complete_s={t3 - t2:.4f}"
          f" total_s={t3 - t0:.4f}")


def main(argv):
    cmd = argv[1]
    if cmd == "koo":
        koo(argv[2], argv[3], argv[4], argv[5], int(argv[6]))
    elif cmd == "s3":
        s3(argv[2], argv[3], argv[4], argv[5], int(argv[6]), int(argv[7]))
    else:
        sys.exit(f"unknown command {cmd!r}")


if __name__ == "__main__":
    main(sys.argv)
