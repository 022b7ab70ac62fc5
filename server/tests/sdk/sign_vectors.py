#!/usr/bin/env python3
"""Produce AK/SK signing test vectors with the official Huawei Cloud Python SDK.

The vectors in ``sign_vectors.json`` (next to this script) were made by this
script and are loaded by the unit tests of ``server/src/auth.rs``. Nothing in
them was computed by partseal code: every request is built, signed and sent by
``huaweicloudsdkcore`` / ``huaweicloudsdkmetastudio`` 3.1.219 (the SDK's own
``Signer``, the one ``BasicCredentials.sign_request`` uses), and recorded as a
tiny local HTTP server received it (request target, header lines, body bytes).
The SDK's canonical request and string to sign are recorded too, by wrapping
the two ``Signer`` methods that build them, so a mismatch in Rust can be
pinpointed.

Usage (regenerate only on purpose; the Rust tests pin the committed output)::

    python3 -m venv target/sdk-venv
    target/sdk-venv/bin/pip install huaweicloudsdkcore==3.1.219 huaweicloudsdkmetastudio==3.1.219
    target/sdk-venv/bin/python server/tests/sdk/sign_vectors.py > server/tests/sdk/sign_vectors.json
"""

import base64
import json
import os
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The SDK stores a random application id under $HOME/.huaweicloud and puts it
# in User-Agent; keep that out of the caller's home directory.
os.environ["HOME"] = tempfile.mkdtemp(prefix="partseal-sdk-home-")

import huaweicloudsdkcore  # noqa: E402
from huaweicloudsdkcore.auth.credentials import BasicCredentials  # noqa: E402
from huaweicloudsdkcore.http.http_config import HttpConfig  # noqa: E402
from huaweicloudsdkcore.signer.signer import Signer  # noqa: E402
from huaweicloudsdkmetastudio.v1 import (  # noqa: E402
    ConfirmFileUploadRequest,
    ConfirmFileUploadRequestBody,
    CreateFileRequest,
    DeleteFileRequest,
    FilesCreateReq,
    MetaStudioClient,
)

SDK_VERSION = "3.1.219"

# ---------------------------------------------------------------- capture ---

_captured = []


class _Capture(BaseHTTPRequestHandler):
    """Records each request exactly as received and answers 200 ``{}``."""

    protocol_version = "HTTP/1.1"

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        target = self.path
        path, _, query = target.partition("?")
        # http.server decodes header bytes as latin-1; undo that to get the
        # UTF-8 text the SDK put there.
        headers = [
            [k, v.encode("latin-1").decode("utf-8")] for k, v in self.headers.items()
        ]
        _captured.append(
            {
                "method": self.command,
                "path": path,
                "query": query if "?" in target else None,
                "headers": headers,
                "body_b64": base64.b64encode(body).decode(),
            }
        )
        out = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.send_header("X-Request-Id", "capture")
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = _handle

    def log_message(self, *args):  # keep stdout clean for the JSON
        pass


# ----------------------------------------------- hooks on the SDK's signer ---

_signer_trace = []
_orig_canonical = Signer._process_canonical_request
_orig_sts = Signer._process_string_to_sign


def _canonical(self, request, signed_headers):
    out = _orig_canonical(self, request, signed_headers)
    _signer_trace.append(("canonical", out))
    return out


def _sts(self, canonical_request, t):
    out = _orig_sts(self, canonical_request, t)
    _signer_trace.append(("string_to_sign", out))
    return out


Signer._process_canonical_request = _canonical
Signer._process_string_to_sign = _sts


def _client(endpoint, ak, sk, project):
    cfg = HttpConfig.get_default_config()
    cfg.ignore_ssl_verification = True
    return (
        MetaStudioClient.new_builder()
        .with_http_config(cfg)
        .with_credentials(BasicCredentials(ak, sk, project))
        .with_endpoints([endpoint])
        .build()
    )


def _record(name, note, ak, sk, project, call):
    """Runs one SDK call and returns the vector for it."""
    _captured.clear()
    _signer_trace.clear()
    try:
        call()
    except Exception as e:  # the capture server's `{}` may not parse as every response type
        if not _captured:
            raise RuntimeError(f"{name}: request never reached the capture server: {e!r}")
    if len(_captured) != 1:
        raise RuntimeError(f"{name}: expected one request, captured {len(_captured)}")
    req = _captured[0]
    trace = dict(_signer_trace)
    auth = [v for k, v in req["headers"] if k.lower() == "authorization"]
    date = [v for k, v in req["headers"] if k.lower() == "x-sdk-date"]
    if len(auth) != 1 or len(date) != 1:
        raise RuntimeError(f"{name}: expected one Authorization and one X-Sdk-Date header")
    return {
        "name": name,
        "note": note,
        "access_key": ak,
        "secret_key": sk,
        "project_id": project,
        **req,
        "x_sdk_date": date[0],
        "authorization": auth[0],
        "sdk_canonical_request": trace["canonical"],
        "sdk_string_to_sign": trace["string_to_sign"],
    }


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = "http://127.0.0.1:%d" % server.server_address[1]

    ak, sk, project = "PSVECTORAK0000000001", "vector-secret-KEY+/=0123456789abcdef", "proj123"
    client = _client(endpoint, ak, sk, project)

    body = b"The quick brown fox\n"
    md5 = base64.b64encode(__import__("hashlib").md5(body).digest()).decode()
    vectors = []

    vectors.append(
        _record(
            "create_file_json_post",
            "CreateFile: JSON body hashed as sent (simplejson separators, \\u escapes)",
            ak, sk, project,
            lambda: client.create_file(
                CreateFileRequest(
                    body=FilesCreateReq(
                        file_name="résumé café.png",
                        file_md5=md5,
                        file_size=len(body),
                        file_type="PNG",
                        asset_id="asset-1",
                        asset_file_category="MAIN",
                    )
                )
            ),
        )
    )

    vectors.append(
        _record(
            "delete_file_empty_body",
            "DeleteFile: no body, Content-Type application/json still signed, empty-payload hash",
            ak, sk, project,
            lambda: client.delete_file(DeleteFileRequest(file_id="f-0123456789abcdef")),
        )
    )

    vectors.append(
        _record(
            "confirm_percent_encoded_segment",
            "ConfirmFileUpload with file_id 'dir/ä b%2F~x': the SDK quotes it with safe='' "
            "so '/' travels as %2F; the canonical URI decodes once and splits on it",
            ak, sk, project,
            lambda: client.confirm_file_upload(
                ConfirmFileUploadRequest(
                    file_id="dir/ä b%2F~x",
                    x_app_user_id="app-user-7",
                    body=ConfirmFileUploadRequestBody(state="CREATED"),
                )
            ),
        )
    )

    vectors.append(
        _record(
            "get_query_needs_encoding",
            "GET with query values needing encoding (space, +, /, &, =, ?, unicode), an int, "
            "a bool, an empty value, a list (repeated key, values sorted) and keys whose "
            "order differs between decoded and encoded form ('k}' vs 'ka')",
            ak, sk, project,
            lambda: client.do_http_request(
                method="GET",
                resource_path="/v1/{project_id}/files",
                query_params=[
                    ("name", "a b+c/ü&=?*'()!"),
                    ("limit", 10),
                    ("tag", ["z", "a~", "é", "A"]),
                    ("flag", True),
                    ("empty", ""),
                    ("k}", "1"),
                    ("ka", "2"),
                    ("Zed", "%41"),
                ],
                header_params={"Content-Type": "application/json"},
                response_type="SdkResponse",
            ),
        )
    )

    vectors.append(
        _record(
            "text_plain_unsigned_payload",
            "POST with a non-JSON Content-Type: the SDK adds and signs "
            "X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD instead of hashing the body; also a "
            "UTF-8 header value",
            ak, sk, project,
            lambda: client.do_http_request(
                method="POST",
                resource_path="/v1/{project_id}/notes",
                header_params={"Content-Type": "text/plain; charset=utf-8", "X-Note": "  café au lait  "},
                body="hello, unsigned world\n",
                response_type="SdkResponse",
            ),
        )
    )

    sk2 = "Z" * 40
    client2 = _client(endpoint, "PSVECTORAK0000000002", sk2, "another-project")
    vectors.append(
        _record(
            "create_file_second_credentials",
            "CreateFile with a second AK/SK/project, to check the right secret is looked up",
            "PSVECTORAK0000000002", sk2, "another-project",
            lambda: client2.create_file(
                CreateFileRequest(
                    body=FilesCreateReq(
                        file_name="b.mp4",
                        file_md5=md5,
                        file_size=len(body),
                        file_type="MP4",
                        asset_id="asset-2",
                        asset_file_category="MAIN",
                    )
                )
            ),
        )
    )

    server.shutdown()
    json.dump(
        {
            "about": "AK/SK signed requests produced by huaweicloudsdkcore's Signer; "
            "made by sign_vectors.py, checked by server/src/auth.rs tests",
            "sdk": "huaweicloudsdkcore==%s huaweicloudsdkmetastudio==%s"
            % (getattr(huaweicloudsdkcore, "__version__", SDK_VERSION), SDK_VERSION),
            "vectors": vectors,
        },
        sys.stdout,
        indent=2,
        ensure_ascii=False,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
