"""The client side of bench/ingest.sh: uploads one file over HTTP with a few
concurrent clients (threads, one `requests.Session` each) and prints one line
of `key=value` timings.

    ingest.py gen FILE SIZE                  deterministic bytes (seeded PRNG)
    ingest.py nginx URL FILE PART_SIZE CLIENTS
    ingest.py partseal chain|stream URL CREDENTIALS PLAN FILE CLIENTS
    ingest.py inflight chain|stream URL CREDENTIALS PLAN FILE SERVER_PID

nginx: PUT of every part to URL/part.NNNNN (WebDAV), then sync.
partseal: KooDrive files/create (chain: every part with partOffset and
hashCtx from PLAN, the output of `partseal ctx`; stream: partNumber and
partSize only), PUT of every part to its uploadUrl, files/complete with the
whole file's sha256, then sync. Every leg ends with `sync` and includes it in
its total, so that bytes nginx left in the page cache are paid for too.

inflight: the server's memory with every part body in flight at once. One
connection per part (64 for the 1 GiB file) sends its request head and the
first half of its body; once all have, the server's VmRSS is read from
/proc; then the rest is sent, every answer read and the upload completed.
Prints the resident set then and the server's peak (VmHWM) after.
"""

import json
import os
import queue
import random
import sys
import threading
import time


def gen(path, size):
    # random.Random is a Mersenne Twister: the same bytes on every Python >= 3.9.
    rng = random.Random(20261202)
    chunk = 16 << 20
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(chunk, left)
            f.write(rng.randbytes(n))
            left -= n


def put_all(jobs, clients, path):
    """PUTs (url, offset, size) jobs with `clients` threads; returns seconds."""
    import requests

    q = queue.Queue()
    for j in jobs:
        q.put(j)
    errors = []
    fd = os.open(path, os.O_RDONLY)

    def worker():
        s = requests.Session()
        while not errors:
            try:
                url, off, size = q.get_nowait()
            except queue.Empty:
                return
            data = os.pread(fd, size, off)
            try:
                r = s.put(url, data=data, headers={"Content-Type": "application/octet-stream"})
            except Exception as e:  # noqa: BLE001 - reported, then the leg fails
                errors.append(f"PUT {url}: {e}")
                return
            if r.status_code not in (200, 201, 204):
                errors.append(f"PUT {url}: HTTP {r.status_code} {r.text[:300]}")
                return

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    t1 = time.monotonic()
    os.close(fd)
    if errors:
        sys.exit("\n".join(errors))
    return t1 - t0


def timed_sync():
    t0 = time.monotonic()
    os.sync()
    return time.monotonic() - t0


def nginx(url, path, part_size, clients):
    size = os.path.getsize(path)
    jobs = [
        (f"{url}/part.{i:05d}", off, min(part_size, size - off))
        for i, off in enumerate(range(0, size, part_size))
    ]
    upload = put_all(jobs, clients, path)
    sync = timed_sync()
    print(f"leg=nginx create_s=0 upload_s={upload:.4f} complete_s=0 sync_s={sync:.4f}"
          f" total_s={upload + sync:.4f}")


def create_upload(mode, url, creds_path, plan_path, path):
    """KooDrive files/create of the file; returns (call, plan, created)."""
    import requests

    with open(creds_path) as f:
        user = json.load(f)["users"][0]
    with open(plan_path) as f:
        plan = json.load(f)

    def headers():
        return {
            "Authorization": f"Bearer {user['token']}",
            "X-User-Id": user["id"],
            "X-Date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
            "Content-Type": "application/json",
        }

    parts = []
    for p in plan["parts"]:
        part = {"partNumber": p["partNumber"], "partSize": p["partSize"]}
        if mode == "chain":
            part["partOffset"] = p["partOffset"]
            part["hashCtx"] = p["hashCtx"]
        parts.append(part)
    body = {
        "fileName": os.path.basename(path),
        "fileType": 45,
        "parentFolder": ["root"],
        "length": plan["length"],
        "sha256": plan["sha256"],
        "uploadMode": "multipart",
        "multiParts": parts,
    }
    api = f"{url}/koodrive/ose/v1/files"
    s = requests.Session()

    def call(name, payload):
        r = s.post(f"{api}/{name}", json=payload, headers=headers())
        doc = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        if r.status_code != 200 or doc.get("code") not in (0, "0"):
            sys.exit(f"files/{name}: HTTP {r.status_code} {r.text[:500]}")
        return doc

    created = call("create", body)
    if created.get("rapidUpload"):
        sys.exit("files/create answered a flash upload: the store was not fresh")
    return call, plan, created


def partseal(mode, url, creds_path, plan_path, path, clients):
    import requests  # noqa: F401 - imported before the clock starts

    t0 = time.monotonic()
    call, plan, created = create_upload(mode, url, creds_path, plan_path, path)
    t1 = time.monotonic()
    offsets = {p["partNumber"]: p["partOffset"] for p in plan["parts"]}
    jobs = [(p["uploadUrl"], offsets[p["partNumber"]], p["partSize"]) for p in created["multiParts"]]
    upload = put_all(jobs, clients, path)
    t2 = time.monotonic()
    done = call("complete", {"fileId": created["fileId"], "sha256": plan["sha256"]})
    t3 = time.monotonic()
    if done.get("sha256") != plan["sha256"] or done.get("length") != plan["length"]:
        sys.exit(f"files/complete answered {done}, expected sha256 {plan['sha256']}")
    sync = timed_sync()
    create_s, complete_s = t1 - t0, t3 - t2
    print(f"leg={mode} create_s={create_s:.4f} upload_s={upload:.4f} complete_s={complete_s:.4f}"
          f" sync_s={sync:.4f} total_s={t3 - t0 + sync:.4f}")


def vm(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def inflight(mode, url, creds_path, plan_path, path, server_pid):
    import socket
    from urllib.parse import urlsplit

    call, plan, created = create_upload(mode, url, creds_path, plan_path, path)
    offsets = {p["partNumber"]: p["partOffset"] for p in plan["parts"]}
    jobs = [(p["uploadUrl"], offsets[p["partNumber"]], p["partSize"]) for p in created["multiParts"]]
    half_sent = threading.Barrier(len(jobs) + 1)
    go_on = threading.Barrier(len(jobs) + 1)
    errors = []
    fd = os.open(path, os.O_RDONLY)

    def worker(job):
        u, off, size = job
        parts = urlsplit(u)
        data = os.pread(fd, size, off)
        try:
            with socket.create_connection((parts.hostname, parts.port)) as c:
                target = parts.path + ("?" + parts.query if parts.query else "")
                head = (f"PUT {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                        f"Content-Length: {size}\r\nContent-Type: application/octet-stream\r\n"
                        "Connection: close\r\n\r\n")
                c.sendall(head.encode())
                c.sendall(data[: size // 2])
                half_sent.wait()
                go_on.wait()
                c.sendall(data[size // 2:])
                answer = b""
                while chunk := c.recv(65536):
                    answer += chunk
            status = answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/1.1 ") else b"?"
            if status != b"200":
                errors.append(f"PUT {parts.path}: {answer[:300]!r}")
        except Exception as e:  # noqa: BLE001 - reported, then the leg fails
            errors.append(f"PUT {parts.path}: {e}")
            half_sent.abort()
            go_on.abort()

    threads = [threading.Thread(target=worker, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    try:
        half_sent.wait()
        # Let the server drain what the sockets buffered.
        time.sleep(1.0)
        rss = vm(server_pid, "VmRSS")
        go_on.wait()
    except threading.BrokenBarrierError:
        rss = 0
    for t in threads:
        t.join()
    os.close(fd)
    if errors:
        sys.exit("\n".join(errors[:5]))
    done = call("complete", {"fileId": created["fileId"], "sha256": plan["sha256"]})
    if done.get("sha256") != plan["sha256"]:
        sys.exit(f"files/complete answered {done}, expected sha256 {plan['sha256']}")
    print(f"leg=inflight-{mode} bodies={len(jobs)} rss_inflight_kib={rss} hwm_kib={vm(server_pid, 'VmHWM')}")


def main(argv):
    cmd = argv[1]
    if cmd == "gen":
        gen(argv[2], int(argv[3]))
    elif cmd == "nginx":
        nginx(argv[2], argv[3], int(argv[4]), int(argv[5]))
    elif cmd == "partseal":
        partseal(argv[2], argv[3], argv[4], argv[5], argv[6], int(argv[7]))
    elif cmd == "inflight":
        inflight(argv[2], argv[3], argv[4], argv[5], argv[6], int(argv[7]))
    else:
        sys.exit(f"unknown command {cmd!r}")


if __name__ == "__main__":
    main(sys.argv)
