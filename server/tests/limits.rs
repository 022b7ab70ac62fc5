//! Limits, over a real server on loopback: sizes over the configured
//! maximums answer the documented code, a full disk answers in each API's
//! dialect with a code that names it (never a bare 500), and part bodies
//! over the in-flight bound are refused with 503 before they are read.

mod common;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use md5::Digest;
use partseal::faults::{Faults, Op};
use partseal_server::error::{koo, mss};
use serde_json::json;

fn md5_b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(b))
}

/// A server whose disk is "full" (every write fails with ENOSPC) while the
/// returned flag is set.
async fn server_with_a_disk_that_fills() -> (TestServer, Arc<AtomicBool>) {
    let full = Arc::new(AtomicBool::new(false));
    let f = full.clone();
    let s = TestServer::start_custom(move |cfg, _| {
        cfg.faults = Faults::new(move |op, _role| {
            (f.load(Ordering::SeqCst) && op == Op::Write)
                .then(|| io::Error::from_raw_os_error(libc::ENOSPC))
        });
    })
    .await;
    (s, full)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_part_over_max_part_size_answers_13000423() {
    // The test server's largest part is 64 MiB.
    let s = TestServer::start().await;
    let too_big = (64u64 << 20) + 1;
    let (status, v) = s
        .koo(
            "alice",
            "files/create",
            json!({"fileName": "a.bin", "fileType": "45", "length": too_big + 10,
                   "uploadMode": "multipart",
                   "multiParts": [{"partNumber": 1, "partSize": too_big},
                                  {"partNumber": 2, "partSize": 10}]}),
        )
        .await;
    assert_eq!((status, &v["code"]), (400, &json!(koo::BAD_PART)), "{v}");
    assert!(v["msg"].as_str().unwrap().contains("part 1"), "{v}");

    // The same through files/multipart/uploadUrl, on an upload that exists
    // (whose part 1 can be at most the largest part).
    let (id, _) = s
        .koo_create(
            "alice",
            json!({"fileName": "b.bin", "fileType": "45", "length": (64u64 << 20) + 10,
                   "uploadMode": "multipart", "multiParts": [{"partNumber": 2, "partSize": 10}]}),
        )
        .await;
    let (status, v) = s
        .koo(
            "alice",
            "files/multipart/uploadUrl",
            json!({"fileId": id, "multiParts": [{"partNumber": 1, "partSize": too_big}]}),
        )
        .await;
    assert_eq!((status, &v["code"]), (400, &json!(koo::BAD_PART)), "{v}");
    // A part at the limit is fine.
    let (status, v) = s
        .koo(
            "alice",
            "files/multipart/uploadUrl",
            json!({"fileId": id, "multiParts": [{"partNumber": 1, "partSize": 64u64 << 20}]}),
        )
        .await;
    assert_eq!((status, &v["code"]), (200, &json!(0)), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_over_max_file_size_answers_13000423() {
    // The test server's largest file is 1 GiB, its largest part 64 MiB.
    let s = TestServer::start().await;
    for (mode, length) in [("multipart", (1u64 << 30) + 1), ("put", (64u64 << 20) + 1)] {
        let (status, v) = s
            .koo(
                "alice",
                "files/create",
                json!({"fileName": "a.bin", "fileType": "45", "length": length,
                       "uploadMode": mode}),
            )
            .await;
        assert_eq!(
            (status, &v["code"]),
            (400, &json!(koo::BAD_PART)),
            "{mode}: {v}"
        );
        assert!(v["msg"].as_str().unwrap().contains(mode), "{mode}: {v}");
    }
    // A plan adding up past the file limit.
    let parts: Vec<_> = (1..=17)
        .map(|n| json!({"partNumber": n, "partSize": 64u64 << 20}))
        .collect();
    let (status, v) = s
        .koo(
            "alice",
            "files/create",
            json!({"fileName": "a.bin", "fileType": "45", "length": 1u64 << 30,
                   "uploadMode": "multipart", "multiParts": parts}),
        )
        .await;
    assert_eq!((status, &v["code"]), (400, &json!(koo::BAD_PART)), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metastudio_no_space_is_not_a_500() {
    let (s, full) = server_with_a_disk_that_fills().await;
    let bytes = data(5000, 1);
    let (status, v, _) = s
        .mss(
            "alice",
            "POST",
            "files",
            Some(json!({"file_name": "a.png", "file_md5": md5_b64(&bytes),
                        "file_size": bytes.len(), "file_type": "PNG",
                        "asset_id": "asset-1", "asset_file_category": "MAIN"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let id = v["file_id"].as_str().unwrap().to_owned();
    let url = v["upload_url"].as_str().unwrap().to_owned();

    // At PUT.
    full.store(true, Ordering::SeqCst);
    let (status, text) = s.put(&url, bytes.clone()).await;
    assert_eq!(status, 507, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error_code"], mss::NO_SPACE, "{v}");
    assert!(v["error_msg"].as_str().unwrap().contains("space"), "{v}");

    // At confirm.
    full.store(false, Ordering::SeqCst);
    assert_eq!(s.put(&url, bytes.clone()).await.0, 200);
    full.store(true, Ordering::SeqCst);
    let confirm = format!("files/{id}/complete");
    let (status, v, _) = s
        .mss("alice", "POST", &confirm, Some(json!({"state": "CREATED"})))
        .await;
    assert_eq!(
        (status, &v["error_code"]),
        (507, &json!(mss::NO_SPACE)),
        "{v}"
    );

    // Space again: the same confirm succeeds.
    full.store(false, Ordering::SeqCst);
    let (status, v, _) = s
        .mss("alice", "POST", &confirm, Some(json!({"state": "CREATED"})))
        .await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn koodrive_no_space_answers_13000311() {
    let (s, full) = server_with_a_disk_that_fills().await;
    let bytes = data(5000, 2);
    let (id, urls) = s
        .koo_create(
            "alice",
            json!({"fileName": "a.bin", "fileType": "45", "length": bytes.len(),
                   "uploadMode": "put"}),
        )
        .await;
    full.store(true, Ordering::SeqCst);
    let (status, text) = s.put(&urls[0], bytes.clone()).await;
    assert_eq!(status, 400, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["code"], koo::NO_SPACE, "{v}");
    full.store(false, Ordering::SeqCst);
    assert_eq!(s.put(&urls[0], bytes.clone()).await.0, 200);
    full.store(true, Ordering::SeqCst);
    let body = json!({"fileId": id, "sha256": sha_hex(&bytes)});
    let (status, v) = s.koo("alice", "files/complete", body.clone()).await;
    assert_eq!((status, &v["code"]), (400, &json!(koo::NO_SPACE)), "{v}");
    full.store(false, Ordering::SeqCst);
    let (status, v) = s.koo("alice", "files/complete", body).await;
    assert_eq!((status, &v["code"]), (200, &json!(0)), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_bodies_over_the_limit_answer_503_with_retry_after() {
    let s = TestServer::start_custom(|_, settings| settings.max_parts_in_flight = 1).await;
    let bytes = data(4000, 3);
    let mut urls = Vec::new();
    for _ in 0..2 {
        let (_, u) = s
            .koo_create(
                "alice",
                json!({"fileName": "a.bin", "fileType": "45", "length": bytes.len(),
                       "uploadMode": "put"}),
            )
            .await;
        urls.push(u[0].clone());
    }
    let (status, v, _) = s
        .mss(
            "alice",
            "POST",
            "large-files",
            Some(
                json!({"file_name": "a.bin", "file_size": bytes.len(), "file_type": "BIN",
                        "asset_id": "asset-1", "asset_file_category": "MAIN"}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let mss_url = v["upload_urls"][0].as_str().unwrap().to_owned();

    // A slow body takes the one place: its first bytes, then nothing until
    // the test lets it finish.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, io::Error>>(4);
    tx.send(Ok(bytes[..1000].to_vec())).await.unwrap();
    let slow = tokio::spawn(
        s.http
            .put(&urls[0])
            .header("content-length", bytes.len())
            .body(reqwest::Body::wrap_stream(tokio_stream_from(rx)))
            .send(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.state.parts_in_flight.available_permits() > 0 {
        assert!(Instant::now() < deadline, "the slow part never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Others are refused at once, before their body is read, in their
    // API's dialect.
    for (url, field, code) in [
        (&urls[1], "code", json!(koo::BUSY)),
        (&mss_url, "error_code", json!(mss::BUSY)),
    ] {
        let url = url.clone();
        let (status, head, v) =
            tokio::task::spawn_blocking(move || answer_before_the_body(&url, "", 4000))
                .await
                .unwrap();
        assert_eq!((status, &v[field]), (503, &code), "{head}\n{v}");
        assert!(
            head.to_ascii_lowercase().contains("\r\nretry-after: 2"),
            "no Retry-After: {head}"
        );
    }

    // The slow one finishes and is stored; then there is room again.
    tx.send(Ok(bytes[1000..].to_vec())).await.unwrap();
    drop(tx);
    let resp = slow.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.state.parts_in_flight.available_permits() == 0 {
        assert!(Instant::now() < deadline, "the place was never given back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s.put(&urls[1], bytes.clone()).await.0, 200);
    assert_eq!(s.put(&mss_url, bytes.clone()).await.0, 200);
}

/// The items of `rx` as a stream.
fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
}
