//! The upload lifecycle over HTTP: idle uploads expire (bytes gone, then "no
//! such upload" in both APIs) while an upload with a part streaming in does
//! not; KooDrive abort (repeatable, owner-bound) and list; MetaStudio `GET`
//! of a file in each state, with fresh upload URLs that work.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use md5::Digest;
use partseal::Config;
use partseal_server::error::{koo, mss};
use serde_json::{Value, json};

/// A server whose open uploads expire after one idle second, with the sweep
/// running as the binary runs it.
async fn expiring_server() -> TestServer {
    let s = TestServer::start_custom(|c: &mut Config, _| {
        c.upload_ttl = Some(Duration::from_secs(1));
    })
    .await;
    tokio::spawn(partseal_server::sweep::run(
        s.state.backend.local().unwrap().clone(),
        std::future::pending(),
    ));
    s
}

fn put_body(len: usize) -> Value {
    json!({"fileName": "a.bin", "fileType": "45", "length": len})
}

fn md5_b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(b))
}

/// Waits (at most 15 s) until `path` no longer exists.
async fn wait_gone(path: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while path.exists() {
        assert!(Instant::now() < deadline, "{} still exists", path.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_uploads_expire_their_bytes_go_and_both_apis_say_no_such_upload() {
    let s = expiring_server().await;
    let bytes = data(1000, 1);
    let (koo_id, urls) = s.koo_create("alice", put_body(bytes.len())).await;
    assert_eq!(s.put(&urls[0], bytes.clone()).await.0, 200);
    let (status, v, _) = s
        .mss(
            "bob",
            "POST",
            "files",
            Some(json!({"file_name": "a.png", "file_md5": md5_b64(&bytes),
                "file_size": bytes.len(), "file_type": "PNG", "asset_id": "a",
                "asset_file_category": "MAIN"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let mss_id = v["file_id"].as_str().unwrap().to_owned();
    let mss_url = v["upload_url"].as_str().unwrap().to_owned();

    let uploads = s.dir.path().join("uploads");
    assert!(uploads.join(&koo_id).exists());
    wait_gone(&uploads.join(&koo_id)).await;
    wait_gone(&uploads.join(&mss_id)).await;

    for path in [
        "files/multipart/list",
        "files/complete",
        "files/multipart/abort",
    ] {
        let (status, v) = s.koo("alice", path, json!({"fileId": koo_id})).await;
        assert_eq!(
            (status, &v["code"]),
            (400, &json!(koo::NO_TASK)),
            "{path}: {v}"
        );
    }
    let (status, v) = s.koo("alice", "files/create", put_body(5)).await;
    assert_eq!(status, 200, "new uploads are still taken: {v}");
    let (status, text) = s.put(&urls[0], bytes.clone()).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains(&koo::NO_TASK.to_string()), "{text}");

    let (status, v, _) = s.mss("bob", "GET", &format!("files/{mss_id}"), None).await;
    assert_eq!(
        (status, &v["error_code"]),
        (404, &json!(mss::NOT_FOUND)),
        "{v}"
    );
    let (status, v, _) = s
        .mss(
            "bob",
            "POST",
            &format!("files/{mss_id}/complete"),
            Some(json!({"state": "CREATED"})),
        )
        .await;
    assert_eq!(
        (status, &v["error_code"]),
        (404, &json!(mss::NOT_FOUND)),
        "{v}"
    );
    let (status, text) = s.put(&mss_url, bytes).await;
    assert_eq!(status, 404, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_files_never_expire() {
    let s = expiring_server().await;
    let bytes = data(300, 2);
    let (id, urls) = s.koo_create("alice", put_body(bytes.len())).await;
    assert_eq!(s.put(&urls[0], bytes.clone()).await.0, 200);
    let (status, v) = s
        .koo("alice", "files/complete", json!({"fileId": id}))
        .await;
    assert_eq!(status, 200, "{v}");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (status, v) = s
        .koo("alice", &format!("files/{id}/detail"), json!({}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["size"], bytes.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_streaming_in_keeps_its_upload_from_expiring() {
    let s = expiring_server().await;
    let (id, urls) = s.koo_create("alice", put_body(4000)).await;
    // 4000 bytes over about 3.5 s: longer than the TTL, with sweeps running.
    let chunks = data(4000, 3)
        .chunks(500)
        .map(<[u8]>::to_vec)
        .collect::<Vec<_>>();
    let stream = futures_util::stream::iter(chunks).then(|c| async move {
        tokio::time::sleep(Duration::from_millis(450)).await;
        Ok::<_, std::io::Error>(c)
    });
    use futures_util::StreamExt as _;
    let resp = s
        .http
        .put(&urls[0])
        .header("content-length", "4000")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert_eq!(status, 200, "{}", resp.text().await.unwrap_or_default());
    // The part is activity: right after it, the upload is there and whole.
    let (status, v) = s
        .koo("alice", "files/complete", json!({"fileId": id}))
        .await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_then_abort_again_succeeds_and_the_upload_is_gone() {
    let s = TestServer::start().await;
    let (id, urls) = s.koo_create("alice", put_body(100)).await;
    assert_eq!(s.put(&urls[0], data(100, 4)).await.0, 200);
    for round in 0..2 {
        let (status, v) = s
            .koo("alice", "files/multipart/abort", json!({"fileId": id}))
            .await;
        assert_eq!(status, 200, "abort {round}: {v}");
        assert_eq!(v["code"], 0, "{v}");
        assert!(v["msg"].is_string(), "{v}");
    }
    assert!(!s.dir.path().join("uploads").join(&id).exists());
    let (status, v) = s
        .koo("alice", "files/complete", json!({"fileId": id}))
        .await;
    assert_eq!((status, &v["code"]), (400, &json!(koo::NO_TASK)), "{v}");
    let (status, v) = s
        .koo("alice", "files/multipart/list", json!({"fileId": id}))
        .await;
    assert_eq!((status, &v["code"]), (400, &json!(koo::NO_TASK)), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_owners_upload_aborts_and_lists_like_an_unknown_one() {
    let s = TestServer::start().await;
    let (id, _) = s.koo_create("alice", put_body(100)).await;
    let unknown = "0123456789abcdef0123456789abcdef";
    let mut answers = Vec::new();
    for (user, file) in [("carol", id.as_str()), ("alice", unknown)] {
        for path in ["files/multipart/abort", "files/multipart/list"] {
            let (status, v) = s.koo(user, path, json!({"fileId": file})).await;
            assert_eq!((status, &v["code"]), (400, &json!(koo::NO_TASK)), "{v}");
            answers.push((path, v["msg"].clone()));
        }
    }
    assert_eq!(answers[0].1, answers[2].1, "same message as unknown");
    // Alice's upload is untouched.
    let (status, v) = s
        .koo("alice", "files/multipart/list", json!({"fileId": id}))
        .await;
    assert_eq!(status, 200, "{v}");
    // A malformed id is a parameter error, not "no such upload".
    let (status, v) = s
        .koo("alice", "files/multipart/abort", json!({"fileId": "nope"}))
        .await;
    assert_eq!((status, &v["code"]), (400, &json!(koo::BAD_PARAM)), "{v}");
    let (status, v) = s.koo("alice", "files/multipart/abort", json!({})).await;
    assert_eq!((status, &v["code"]), (400, &json!(koo::BAD_PARAM)), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_gives_every_acknowledged_part_in_order_with_link_checks() {
    let s = TestServer::start().await;
    let bytes = data(64 * 5, 5);
    let parts = chain_parts(&bytes, 64);
    let (id, urls) = s
        .koo_create(
            "alice",
            json!({"fileName": "c.bin", "fileType": "45", "length": bytes.len(),
                   "sha256": sha_hex(&bytes), "multiParts": parts}),
        )
        .await;
    // Parts 4, 1 and 2 land, out of order.
    for n in [4usize, 1, 2] {
        let chunk = bytes[(n - 1) * 64..n * 64].to_vec();
        assert_eq!(s.put(&urls[n - 1], chunk).await.0, 200, "part {n}");
    }
    let (status, v) = s
        .koo("alice", "files/multipart/list", json!({"fileId": id}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["code"].clone(), v["fileId"].clone()),
        (json!(0), json!(id))
    );
    let listed = v["multiParts"].as_array().unwrap();
    let numbers: Vec<u64> = listed
        .iter()
        .map(|p| p["partNumber"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 4], "{v}");
    for p in listed {
        let n = p["partNumber"].as_u64().unwrap() as usize;
        assert_eq!(p["partSize"], 64, "{p}");
        // Chain mode: the digest of the file through the part's end.
        assert_eq!(p["sha256"], sha_hex(&bytes[..n * 64]), "{p}");
    }
    // Every hashCtx was planned up front: each part's link is checked on
    // arrival.
    let checked: Vec<bool> = listed
        .iter()
        .map(|p| p["linkChecked"].as_bool().unwrap())
        .collect();
    assert_eq!(checked, [true, true, true], "{v}");

    // Stream mode (no hashCtx): nothing is checked before complete.
    let plan: Vec<Value> = (1..=2)
        .map(|n| json!({"partNumber": n, "partSize": 64}))
        .collect();
    let (id, urls) = s
        .koo_create(
            "alice",
            json!({"fileName": "s.bin", "fileType": "45", "length": 128, "multiParts": plan}),
        )
        .await;
    assert_eq!(s.put(&urls[1], bytes[..64].to_vec()).await.0, 200);
    let (status, v) = s
        .koo("alice", "files/multipart/list", json!({"fileId": id}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["multiParts"],
        json!([{"partNumber": 2, "partSize": 64, "sha256": sha_hex(&bytes[..64]),
                "linkChecked": false}])
    );
}

/// A MetaStudio large file of `count` segments of 100 bytes for `user`.
async fn mss_large(s: &TestServer, user: &str, count: u32) -> (String, Vec<String>) {
    let (status, v, _) = s
        .mss(
            user,
            "POST",
            "large-files",
            Some(
                json!({"file_name": "big.mp4", "file_size": 100 * count, "file_type": "MP4",
                "asset_id": "a", "asset_file_category": "MAIN",
                "file_multipart_count": count}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let urls = v["upload_urls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_owned())
        .collect();
    (v["file_id"].as_str().unwrap().to_owned(), urls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metastudio_get_shows_each_state_with_fresh_urls_that_work() {
    let s = TestServer::start().await;
    let bytes = data(300, 6);
    let (id, urls) = mss_large(&s, "alice", 3).await;
    assert_eq!(s.put(&urls[1], bytes[100..200].to_vec()).await.0, 200);

    // CREATING: segment 2 received, a fresh URL per segment.
    let (status, v, h) = s.mss("alice", "GET", &format!("files/{id}"), None).await;
    assert_eq!(status, 200, "{v}");
    assert!(h.contains_key("x-request-id"));
    assert_eq!(v["file_id"], id);
    assert_eq!(v["state"], "CREATING", "{v}");
    assert_eq!(v["file_name"], "big.mp4");
    assert_eq!(v["file_size"], 300);
    assert_eq!(
        v["segments"],
        json!([{"segment_number": 2, "segment_size": 100,
                "sha256": sha_hex(&bytes[100..200])}])
    );
    assert!(v.get("download_url").is_none(), "{v}");
    let fresh: Vec<String> = v["upload_urls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(fresh.len(), 3, "{v}");
    for (n, url) in fresh.iter().enumerate() {
        assert!(
            url.contains(&format!("/upload/metastudio/{id}/{}?", n + 1)),
            "{url}"
        );
    }
    // The fresh URLs take the missing segments.
    assert_eq!(s.put(&fresh[0], bytes[..100].to_vec()).await.0, 200);
    assert_eq!(s.put(&fresh[2], bytes[200..].to_vec()).await.0, 200);
    let (status, v, _) = s
        .mss(
            "alice",
            "POST",
            &format!("files/{id}/complete"),
            Some(json!({"state": "CREATED"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");

    // CREATED: size and a download URL that serves the bytes.
    let (status, v, _) = s.mss("alice", "GET", &format!("files/{id}"), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["state"], "CREATED", "{v}");
    assert_eq!(v["file_size"], 300);
    assert!(
        v.get("upload_urls").is_none() && v.get("segments").is_none(),
        "{v}"
    );
    let dl = v["download_url"].as_str().unwrap();
    assert!(dl.contains(&format!("/download/metastudio/{id}?")), "{dl}");
    let got = s.http.get(dl).send().await.unwrap();
    assert_eq!(got.status().as_u16(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), &bytes[..]);

    // Another user, and an unknown id: MetaStudio's not-found.
    for (user, file) in [
        ("bob", id.as_str()),
        ("alice", "0123456789abcdef0123456789abcdef"),
    ] {
        let (status, v, _) = s.mss(user, "GET", &format!("files/{file}"), None).await;
        assert_eq!(
            (status, &v["error_code"]),
            (404, &json!(mss::NOT_FOUND)),
            "{v}"
        );
    }
    let (status, v, _) = s.mss("alice", "GET", "files/not-an-id", None).await;
    assert_eq!(
        (status, &v["error_code"]),
        (400, &json!(mss::INVALID_PARAM)),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metastudio_get_of_a_created_file_gives_its_md5() {
    let s = TestServer::start().await;
    let bytes = data(200, 7);
    let (status, v, _) = s
        .mss(
            "alice",
            "POST",
            "files",
            Some(json!({"file_name": "a.png", "file_md5": md5_b64(&bytes),
                "file_size": bytes.len(), "file_type": "PNG", "asset_id": "a",
                "asset_file_category": "MAIN"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let id = v["file_id"].as_str().unwrap().to_owned();
    let (status, v, _) = s.mss("alice", "GET", &format!("files/{id}"), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["state"].clone(), v["file_md5"].clone()),
        (json!("CREATING"), json!(md5_b64(&bytes)))
    );
    assert_eq!(v["segments"], json!([]));
    let url = v["upload_urls"][0].as_str().unwrap().to_owned();
    assert_eq!(s.put(&url, bytes.clone()).await.0, 200);
    let (status, v, _) = s
        .mss(
            "alice",
            "POST",
            &format!("files/{id}/complete"),
            Some(json!({"state": "CREATED"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v, _) = s.mss("alice", "GET", &format!("files/{id}"), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["state"], "CREATED");
    assert_eq!(v["file_md5"], md5_b64(&bytes), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metastudio_get_after_failed_or_cancelled_says_which() {
    let s = TestServer::start().await;
    for state in ["FAILED", "CANCELLED"] {
        let (id, urls) = mss_large(&s, "alice", 2).await;
        assert_eq!(s.put(&urls[0], data(100, 8)).await.0, 200);
        let (status, v, _) = s
            .mss(
                "alice",
                "POST",
                &format!("files/{id}/complete"),
                Some(json!({"state": state})),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        let (status, v, _) = s.mss("alice", "GET", &format!("files/{id}"), None).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["state"], state, "{v}");
        assert!(
            v.get("upload_urls").is_none() && v.get("download_url").is_none(),
            "{v}"
        );
        // The bytes are gone, and the old URLs no longer take any.
        assert!(!s.dir.path().join("uploads").join(&id).exists());
        assert_eq!(s.put(&urls[1], data(100, 9)).await.0, 404);
    }
    // A file deleted (DeleteFile of an open upload) is gone: 404, as for
    // any deleted resource.
    let (id, _) = mss_large(&s, "alice", 1).await;
    let (status, _, _) = s.mss("alice", "DELETE", &format!("files/{id}"), None).await;
    assert_eq!(status, 200);
    let (status, v, _) = s.mss("alice", "GET", &format!("files/{id}"), None).await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error_code"], "MSS.10001004", "{v}");
}
