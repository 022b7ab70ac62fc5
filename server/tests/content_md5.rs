//! `Content-MD5` on part uploads, over a real server on loopback, for the
//! upload URLs of both APIs: a right one is taken, a wrong one refuses the
//! part and keeps nothing of it, a malformed one is refused before the body
//! is read.

mod common;

use base64::Engine as _;
use common::*;
use md5::Digest;
use partseal_server::error::{koo, mss};
use serde_json::{Value, json};

fn md5_b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(b))
}

/// PUTs `bytes` with a `Content-MD5` header; returns status and ETag or body.
async fn put_md5(s: &TestServer, url: &str, bytes: Vec<u8>, md5: &str) -> (u16, String) {
    let resp = s
        .http
        .put(url)
        .header("content-md5", md5)
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let etag = resp
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().trim_matches('"').to_owned());
    let text = resp.text().await.unwrap();
    (status, etag.unwrap_or(text))
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A KooDrive put-mode upload of `len` bytes: (file id, upload URL).
async fn koo_upload(s: &TestServer, len: usize) -> (String, String) {
    let (id, urls) = s
        .koo_create(
            "alice",
            json!({"fileName": "a.bin", "fileType": "45", "length": len, "uploadMode": "put"}),
        )
        .await;
    (id, urls[0].clone())
}

/// A MetaStudio one-segment large file: (file id, upload URL).
async fn mss_upload(s: &TestServer, len: usize) -> (String, String) {
    let (status, v, _) = s
        .mss(
            "alice",
            "POST",
            "large-files",
            Some(
                json!({"file_name": "a.bin", "file_size": len, "file_type": "BIN",
                        "asset_id": "asset-1", "asset_file_category": "MAIN"}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    (
        v["file_id"].as_str().unwrap().to_owned(),
        v["upload_urls"][0].as_str().unwrap().to_owned(),
    )
}

async fn mss_confirm(s: &TestServer, id: &str) -> (u16, Value) {
    let (status, v, _) = s
        .mss(
            "alice",
            "POST",
            &format!("files/{id}/complete"),
            Some(json!({"state": "CREATED"})),
        )
        .await;
    (status, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_content_md5_is_accepted() {
    let s = TestServer::start().await;
    let bytes = data(300_000, 1);

    let (id, url) = koo_upload(&s, bytes.len()).await;
    let (status, etag) = put_md5(&s, &url, bytes.clone(), &md5_b64(&bytes)).await;
    assert_eq!((status, etag.as_str()), (200, sha_hex(&bytes).as_str()));
    let (status, v) = s
        .koo(
            "alice",
            "files/complete",
            json!({"fileId": id, "sha256": sha_hex(&bytes)}),
        )
        .await;
    assert_eq!((status, &v["code"]), (200, &json!(0)), "{v}");

    let (id, url) = mss_upload(&s, bytes.len()).await;
    let (status, etag) = put_md5(&s, &url, bytes.clone(), &md5_b64(&bytes)).await;
    assert_eq!((status, etag.as_str()), (200, sha_hex(&bytes).as_str()));
    let (status, v) = mss_confirm(&s, &id).await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_with_wrong_content_md5_is_refused_and_not_kept() {
    let s = TestServer::start().await;
    let bytes = data(300_000, 2);
    let wrong = md5_b64(b"some other bytes");

    // KooDrive: 13000402, and complete finds the part missing.
    let (id, url) = koo_upload(&s, bytes.len()).await;
    let (status, text) = put_md5(&s, &url, bytes.clone(), &wrong).await;
    let v = json_of(&text);
    assert_eq!((status, &v["code"]), (400, &json!(koo::INTEGRITY)), "{v}");
    let msg = v["msg"].as_str().unwrap();
    assert!(msg.contains("Content-MD5") && msg.contains(&wrong), "{v}");
    let complete = json!({"fileId": id, "sha256": sha_hex(&bytes)});
    let (status, v) = s.koo("alice", "files/complete", complete.clone()).await;
    assert_eq!(
        (status, &v["code"]),
        (400, &json!(koo::MISSING_PARTS)),
        "{v}"
    );
    // The same part with the right digest is then taken.
    let (status, _) = put_md5(&s, &url, bytes.clone(), &md5_b64(&bytes)).await;
    assert_eq!(status, 200);
    let (status, v) = s.koo("alice", "files/complete", complete).await;
    assert_eq!((status, &v["code"]), (200, &json!(0)), "{v}");

    // A wrong digest does not replace a part already stored either.
    let (id, url) = koo_upload(&s, bytes.len()).await;
    assert_eq!(s.put(&url, bytes.clone()).await.0, 200);
    let mut other = bytes.clone();
    other[0] ^= 1;
    let (status, text) = put_md5(&s, &url, other, &md5_b64(&bytes)).await;
    assert_eq!(
        (status, &json_of(&text)["code"]),
        (400, &json!(koo::INTEGRITY))
    );
    let (status, v) = s
        .koo(
            "alice",
            "files/complete",
            json!({"fileId": id, "sha256": sha_hex(&bytes)}),
        )
        .await;
    assert_eq!((status, &v["code"]), (200, &json!(0)), "{v}");

    // KooDrive chain mode (parts written in place): the part is not kept.
    let chain = chain_parts(&bytes, 128 << 10);
    let (id, urls) = s
        .koo_create(
            "alice",
            json!({"fileName": "c.bin", "fileType": "45", "length": bytes.len(),
                   "uploadMode": "multipart", "multiParts": chain}),
        )
        .await;
    let pieces: Vec<&[u8]> = bytes.chunks(128 << 10).collect();
    let (status, text) = put_md5(&s, &urls[1], pieces[1].to_vec(), &wrong).await;
    assert_eq!(
        (status, &json_of(&text)["code"]),
        (400, &json!(koo::INTEGRITY))
    );
    for (url, piece) in urls.iter().zip(&pieces).filter(|(u, _)| *u != &urls[1]) {
        assert_eq!(s.put(url, piece.to_vec()).await.0, 200);
    }
    let complete = json!({"fileId": id, "sha256": sha_hex(&bytes)});
    let (status, v) = s.koo("alice", "files/complete", complete.clone()).await;
    assert_eq!(
        (status, &v["code"]),
        (400, &json!(koo::MISSING_PARTS)),
        "{v}"
    );
    assert!(v["msg"].as_str().unwrap().contains('2'), "{v}");
    assert_eq!(s.put(&urls[1], pieces[1].to_vec()).await.0, 200);
    let (status, v) = s.koo("alice", "files/complete", complete).await;
    assert_eq!((status, &v["code"]), (200, &json!(0)), "{v}");

    // MetaStudio: MSS.10001020, and confirm finds the segment missing.
    let (id, url) = mss_upload(&s, bytes.len()).await;
    let (status, text) = put_md5(&s, &url, bytes.clone(), &wrong).await;
    let v = json_of(&text);
    assert_eq!(
        (status, &v["error_code"]),
        (400, &json!(mss::MD5_MISMATCH)),
        "{v}"
    );
    assert!(
        v["error_msg"].as_str().unwrap().contains("Content-MD5"),
        "{v}"
    );
    let (status, v) = mss_confirm(&s, &id).await;
    assert_eq!(
        (status, &v["error_code"]),
        (400, &json!(mss::MISSING_PARTS)),
        "{v}"
    );
    let (status, _) = put_md5(&s, &url, bytes.clone(), &md5_b64(&bytes)).await;
    assert_eq!(status, 200);
    let (status, v) = mss_confirm(&s, &id).await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_content_md5_is_refused() {
    let s = TestServer::start().await;
    let len = 1000;
    let (koo_id, koo_url) = koo_upload(&s, len).await;
    let (_, mss_url) = mss_upload(&s, len).await;
    let hex_md5 = hex::encode(md5::Md5::digest(b"x"));
    for bad in ["xyz", "!!!!!!!!!!!!!!!!!!!!!!!!", hex_md5.as_str(), "AAAA"] {
        let (koo_url, mss_url) = (koo_url.clone(), mss_url.clone());
        let bad = bad.to_owned();
        let (a, b) = tokio::task::spawn_blocking(move || {
            (
                answer_before_the_body(&koo_url, &format!("Content-MD5: {bad}\r\n"), len),
                answer_before_the_body(&mss_url, &format!("Content-MD5: {bad}\r\n"), len),
            )
        })
        .await
        .unwrap();
        assert_eq!(
            (a.0, &a.2["code"]),
            (400, &json!(koo::BAD_PARAM)),
            "{}",
            a.2
        );
        assert!(
            a.2["msg"].as_str().unwrap().contains("Content-MD5"),
            "{}",
            a.2
        );
        assert_eq!(
            (b.0, &b.2["error_code"]),
            (400, &json!(mss::INVALID_PARAM)),
            "{}",
            b.2
        );
    }
    // Nothing was stored.
    let (status, v) = s
        .koo(
            "alice",
            "files/complete",
            json!({"fileId": koo_id, "sha256": sha_hex(&[0; 1000])}),
        )
        .await;
    assert_eq!(
        (status, &v["code"]),
        (400, &json!(koo::MISSING_PARTS)),
        "{v}"
    );
}
