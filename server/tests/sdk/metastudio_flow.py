#!/usr/bin/env python3
"""Drive a running partseal-server with the official MetaStudio Python SDK.

Interop test of the MetaStudio API: the SDK (``huaweicloudsdkmetastudio`` /
``huaweicloudsdkcore`` 3.1.219 from PyPI) signs every call with AK/SK, so a
pass proves the server's signature check against code no one here wrote.

Steps (each must give exactly the expected answer, else exit status 1):

1. CreateFile for random bytes with the right base64 MD5, PUT the bytes to
   ``upload_url`` (``Content-MD5``, ``Content-Type``), ConfirmFileUpload
   CREATED: success. Done twice: the first file is kept for the caller to
   check, the second is the one deleted in step 4.
2. CreateFile with a wrong ``file_md5``, PUT the bytes, confirm CREATED:
   ``ClientRequestException`` with status 400 and an ``error_code``. (The PUT
   itself may already be refused with 400 for the Content-MD5 mismatch, as OBS
   does; both are accepted.)
3. CreateFile, then confirm CANCELLED: success.
4. DeleteFile on the second file of step 1: success.
5. A client with a wrong SK: 401 with ``error_code`` ``MSS.00000001``.

stdout carries JSON only, one object per line: one per step, then a summary
``{"ok": true, "kept": {...}, "deleted": ..., "bad_md5": ..., "cancelled":
...}``. The bytes of every uploaded file are written to ``DATA_DIR/<file_id>.bin``
so the caller can compare them with what the server stored (the kept file must
match; the deleted, cancelled and bad-MD5 ones must not be stored as files).
Diagnostics go to stderr.

Usage::

    python metastudio_flow.py --endpoint http://127.0.0.1:8080 \\
        --ak AK --sk SK --project PROJECT --data-dir DIR [--size BYTES]
"""

import argparse
import base64
import hashlib
import json
import os
import secrets
import sys
import urllib.error
import urllib.request

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions import exceptions
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkmetastudio.v1 import (
    ConfirmFileUploadRequest,
    ConfirmFileUploadRequestBody,
    CreateFileRequest,
    DeleteFileRequest,
    FilesCreateReq,
    MetaStudioClient,
)

UNAUTHORIZED = "MSS.00000001"


class FlowError(Exception):
    """An answer other than the expected one."""


def emit(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def log(msg):
    sys.stderr.write(f"metastudio_flow: {msg}\n")
    sys.stderr.flush()


def make_client(endpoint, ak, sk, project):
    cfg = HttpConfig.get_default_config()
    cfg.ignore_ssl_verification = True
    cfg.timeout = (10, 120)
    return (
        MetaStudioClient.new_builder()
        .with_http_config(cfg)
        .with_credentials(BasicCredentials(ak, sk, project))
        .with_endpoints([endpoint])  # no with_region(): no IAM lookups
        .build()
    )


def md5_b64(data):
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def describe(e):
    return (
        f"HTTP {e.status_code} error_code={e.error_code!r} "
        f"error_msg={e.error_msg!r} request_id={e.request_id!r}"
    )


def expect_ok(what, call):
    """Runs an SDK call that must succeed (status < 300)."""
    try:
        resp = call()
    except exceptions.SdkException as e:
        detail = describe(e) if isinstance(e, exceptions.ServiceResponseException) else str(e)
        raise FlowError(f"{what}: expected success, got {detail}") from None
    status = getattr(resp, "status_code", None)
    if status is None or not 200 <= status < 300:
        raise FlowError(f"{what}: expected a 2xx status, got {status}")
    return resp


def expect_client_error(what, status, call, error_code=None):
    """Runs an SDK call that must fail with a ClientRequestException."""
    try:
        resp = call()
    except exceptions.ClientRequestException as e:
        if e.status_code != status:
            raise FlowError(f"{what}: expected HTTP {status}, got {describe(e)}") from None
        if not e.error_code or e.error_code == str(e.status_code):
            # The SDK falls back to the status when the body has no error_code.
            raise FlowError(f"{what}: the error body has no error_code ({describe(e)})") from None
        if error_code is not None and e.error_code != error_code:
            raise FlowError(f"{what}: expected error_code {error_code}, got {describe(e)}") from None
        return e
    except exceptions.SdkException as e:
        raise FlowError(f"{what}: expected HTTP {status}, got {e}") from None
    raise FlowError(
        f"{what}: expected HTTP {status}, got success (status {getattr(resp, 'status_code', '?')})"
    )


def create(client, label, data, file_md5):
    name = f"partseal-flow-{label}-{secrets.token_hex(4)}.png"
    req = CreateFileRequest(
        body=FilesCreateReq(
            file_name=name,
            file_md5=file_md5,
            file_size=len(data),
            file_type="PNG",
            asset_id=f"asset-{label}-{secrets.token_hex(4)}",
            asset_file_category="MAIN",
        )
    )
    resp = expect_ok(f"CreateFile ({label})", lambda: client.create_file(req))
    if not resp.file_id or not resp.upload_url:
        raise FlowError(f"CreateFile ({label}): file_id or upload_url missing in {resp}")
    if not resp.x_request_id:
        raise FlowError(f"CreateFile ({label}): the response has no X-Request-Id header")
    return resp.file_id, resp.upload_url


def put(url, data, content_md5):
    """PUTs the bytes as an OBS client would; returns the HTTP status."""
    req = urllib.request.Request(
        url,
        data=data,
        method="PUT",
        headers={
            "Content-MD5": content_md5,
            "Content-Type": "image/png",
            "Content-Length": str(len(data)),
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code


def confirm(client, file_id, state):
    return lambda: client.confirm_file_upload(
        ConfirmFileUploadRequest(
            file_id=file_id, body=ConfirmFileUploadRequestBody(state=state)
        )
    )


def save(data_dir, file_id, data):
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in file_id)
    path = os.path.join(data_dir, f"{safe}.bin")
    with open(path, "wb") as f:
        f.write(data)
    return path


def upload_good(client, label, size, data_dir):
    data = os.urandom(size)
    file_md5 = md5_b64(data)
    file_id, url = create(client, label, data, file_md5)
    path = save(data_dir, file_id, data)
    status = put(url, data, file_md5)
    if not 200 <= status < 300:
        raise FlowError(f"PUT upload_url ({label}): expected 2xx, got HTTP {status}")
    expect_ok(f"ConfirmFileUpload CREATED ({label})", confirm(client, file_id, "CREATED"))
    info = {
        "file_id": file_id,
        "size": size,
        "sha256": hashlib.sha256(data).hexdigest(),
        "file_md5": file_md5,
        "bytes_path": path,
    }
    emit({"step": f"created-{label}", **info})
    return info


def run(args):
    os.makedirs(args.data_dir, exist_ok=True)
    client = make_client(args.endpoint, args.ak, args.sk, args.project)

    # 1. Two good uploads: one kept, one deleted in step 4.
    kept = upload_good(client, "kept", args.size, args.data_dir)
    doomed = upload_good(client, "to-delete", max(1, args.size // 3), args.data_dir)

    # 2. A wrong file_md5 must fail at confirmation (or already at the PUT).
    data = os.urandom(max(1, args.size // 2))
    wrong_md5 = md5_b64(data + b"x")
    bad_id, url = create(client, "bad-md5", data, wrong_md5)
    save(args.data_dir, bad_id, data)
    put_status = put(url, data, wrong_md5)
    if not (200 <= put_status < 300 or put_status == 400):
        raise FlowError(f"PUT upload_url (bad-md5): expected 2xx or 400, got HTTP {put_status}")
    e = expect_client_error(
        "ConfirmFileUpload CREATED with a wrong file_md5", 400, confirm(client, bad_id, "CREATED")
    )
    emit(
        {
            "step": "bad-md5-rejected",
            "file_id": bad_id,
            "put_status": put_status,
            "status": e.status_code,
            "error_code": e.error_code,
            "error_msg": e.error_msg,
        }
    )

    # 3. CANCELLED ends an upload that never got its bytes.
    data = os.urandom(1024)
    cancel_id, _ = create(client, "cancelled", data, md5_b64(data))
    expect_ok("ConfirmFileUpload CANCELLED", confirm(client, cancel_id, "CANCELLED"))
    emit({"step": "cancelled", "file_id": cancel_id})

    # 4. DeleteFile.
    expect_ok(
        "DeleteFile",
        lambda: client.delete_file(DeleteFileRequest(file_id=doomed["file_id"])),
    )
    emit({"step": "deleted", "file_id": doomed["file_id"]})

    # 5. A wrong secret key: the signature cannot hold.
    wrong_sk = args.sk + "x" if args.sk else "x"
    bad_client = make_client(args.endpoint, args.ak, wrong_sk, args.project)
    data = os.urandom(16)
    e = expect_client_error(
        "CreateFile signed with a wrong SK",
        401,
        lambda: bad_client.create_file(
            CreateFileRequest(
                body=FilesCreateReq(
                    file_name="wrong-sk.png",
                    file_md5=md5_b64(data),
                    file_size=len(data),
                    file_type="PNG",
                    asset_id="asset-wrong-sk",
                    asset_file_category="MAIN",
                )
            )
        ),
        error_code=UNAUTHORIZED,
    )
    emit({"step": "wrong-sk-rejected", "status": e.status_code, "error_code": e.error_code})

    emit(
        {
            "ok": True,
            "kept": kept,
            "deleted": doomed["file_id"],
            "bad_md5": bad_id,
            "cancelled": cancel_id,
        }
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", required=True, help="e.g. http://127.0.0.1:8080")
    p.add_argument("--ak", required=True)
    p.add_argument("--sk", required=True)
    p.add_argument("--project", required=True)
    p.add_argument("--data-dir", required=True, help="where the uploaded bytes are written")
    p.add_argument("--size", type=int, default=1_048_699, help="bytes of the kept file")
    args = p.parse_args()
    if args.size < 1:
        p.error("--size must be at least 1")
    try:
        run(args)
    except FlowError as e:
        log(f"FAILED: {e}")
        return 1
    except Exception as e:  # an SDK or network failure nobody expected
        log(f"FAILED with an unexpected {type(e).__name__}: {e}")
        return 1
    log("all steps passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
