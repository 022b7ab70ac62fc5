//! The MetaStudio-style API over a real server on loopback, signed with
//! AK/SK the way the official SDK signs.

mod common;

use base64::Engine as _;
use common::*;
use md5::Digest;
use partseal_server::error::mss;
use serde_json::json;

fn md5_b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(b))
}

fn create_body(bytes: &[u8], md5: &str) -> serde_json::Value {
    json!({"file_name": "a.png", "file_md5": md5, "file_size": bytes.len(),
           "file_type": "PNG", "asset_id": "asset-1", "asset_file_category": "MAIN"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_put_confirm_and_delete() {
    let s = TestServer::start().await;
    let bytes = data(20_000, 1);
    let (status, v, h) = s
        .mss(
            "alice",
            "POST",
            "files",
            Some(create_body(&bytes, &md5_b64(&bytes))),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert!(h.contains_key("x-request-id"));
    let id = v["file_id"].as_str().unwrap().to_owned();
    let url = v["upload_url"].as_str().unwrap().to_owned();
    assert_eq!(s.put(&url, bytes.clone()).await.0, 200);
    let (status, v, h) = s
        .mss(
            "alice",
            "POST",
            &format!("files/{id}/complete"),
            Some(json!({"state": "CREATED"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert!(h.contains_key("x-request-id"));
    // Confirming again is harmless.
    let (status, _, _) = s
        .mss(
            "alice",
            "POST",
            &format!("files/{id}/complete"),
            Some(json!({"state": "CREATED"})),
        )
        .await;
    assert_eq!(status, 200);
    let stored = s.dir.path().join("files").join(&id).join("data");
    assert_eq!(std::fs::read(&stored).unwrap(), bytes);
    let (status, _, _) = s.mss("alice", "DELETE", &format!("files/{id}"), None).await;
    assert_eq!(status, 200);
    assert!(!stored.exists());
    let (status, v, _) = s.mss("alice", "DELETE", &format!("files/{id}"), None).await;
    assert_eq!(status, 404);
    assert_eq!(v["error_code"], "MSS.10001004");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_md5_is_rejected_at_confirm() {
    let s = TestServer::start().await;
    let bytes = data(1000, 2);
    let (_, v, _) = s
        .mss(
            "alice",
            "POST",
            "files",
            Some(create_body(&bytes, &md5_b64(b"other"))),
        )
        .await;
    let id = v["file_id"].as_str().unwrap().to_owned();
    assert_eq!(s.put(v["upload_url"].as_str().unwrap(), bytes).await.0, 200);
    let (status, v, _) = s
        .mss(
            "alice",
            "POST",
            &format!("files/{id}/complete"),
            Some(json!({"state": "CREATED"})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error_code"], "MSS.10001020");
    assert!(v["error_msg"].as_str().unwrap().contains("MD5"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelled_and_failed_end_the_upload() {
    let s = TestServer::start().await;
    let bytes = data(100, 3);
    for state in ["CANCELLED", "FAILED"] {
        let (_, v, _) = s
            .mss(
                "alice",
                "POST",
                "files",
                Some(create_body(&bytes, &md5_b64(&bytes))),
            )
            .await;
        let id = v["file_id"].as_str().unwrap().to_owned();
        assert_eq!(
            s.put(v["upload_url"].as_str().unwrap(), bytes.clone())
                .await
                .0,
            200
        );
        let (status, v, _) = s
            .mss(
                "alice",
                "POST",
                &format!("files/{id}/complete"),
                Some(json!({"state": state})),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        assert!(!s.dir.path().join("uploads").join(&id).exists());
        let (status, v, _) = s
            .mss(
                "alice",
                "POST",
                &format!("files/{id}/complete"),
                Some(json!({"state": "CREATED"})),
            )
            .await;
        assert_eq!(status, 404, "{v}");
    }
    let (_, v, _) = s
        .mss(
            "alice",
            "POST",
            "files",
            Some(create_body(&bytes, &md5_b64(&bytes))),
        )
        .await;
    let id = v["file_id"].as_str().unwrap().to_owned();
    let (status, v, _) = s
        .mss(
            "alice",
            "POST",
            &format!("files/{id}/complete"),
            Some(json!({"state": "DONE"})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(v["error_code"], "MSS.00000003");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_file_in_segments() {
    let s = TestServer::start().await;
    let bytes = data(3000, 4);
    let (status, v, _) = s
        .mss(
            "alice",
            "POST",
            "large-files",
            Some(
                json!({"file_name": "big.mp4", "file_size": 3000, "file_type": "MP4",
                        "asset_id": "a", "asset_file_category": "MAIN",
                        "file_multipart_count": 3}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let id = v["file_id"].as_str().unwrap().to_owned();
    let urls: Vec<String> = v["upload_urls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(urls.len(), 3);
    for (i, u) in urls.iter().enumerate().rev() {
        assert_eq!(
            s.put(u, bytes[i * 1000..(i + 1) * 1000].to_vec()).await.0,
            200
        );
    }
    let (status, v, _) = s
        .mss(
            "alice",
            "POST",
            &format!("files/{id}/complete"),
            Some(json!({"state": "CREATED"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let stored = s.dir.path().join("files").join(&id).join("data");
    assert_eq!(std::fs::read(stored).unwrap(), bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_signatures_tokens_and_projects_are_unauthorized() {
    let s = TestServer::start().await;
    let bytes = data(10, 5);
    let body = create_body(&bytes, &md5_b64(&bytes));
    let alice = s.user("alice").clone();
    for (ak, sk, project) in [
        (
            alice.access_key.as_str(),
            "wrong-secret-0123456789",
            alice.project_id.as_str(),
        ),
        (
            "NOSUCHKEY",
            alice.secret_key.as_str(),
            alice.project_id.as_str(),
        ),
        (
            alice.access_key.as_str(),
            alice.secret_key.as_str(),
            "project-bob",
        ),
    ] {
        let (status, v, h) = s
            .mss_signed(ak, sk, project, "POST", "files", Some(body.clone()))
            .await;
        assert_eq!(status, 401, "{v}");
        assert_eq!(v["error_code"], "MSS.00000001");
        assert!(h.contains_key("x-request-id"));
    }
    // A token works instead of a signature; a wrong one does not.
    let url = format!("{}/v1/{}/files", s.url, alice.project_id);
    let r = s
        .http
        .post(&url)
        .header("X-Auth-Token", &alice.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = s
        .http
        .post(&url)
        .header("X-Auth-Token", "not-a-token")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = s.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_parameters_answer_mss_00000003() {
    let s = TestServer::start().await;
    let good = create_body(b"abc", &md5_b64(b"abc"));
    let mut cases = Vec::new();
    for (k, v) in [
        ("file_md5", json!("short")),
        ("file_md5", json!(42)),
        ("file_size", json!(0)),
        ("file_size", json!(-5)),
        ("file_size", json!(6u64 << 30)),
        ("file_name", json!("")),
        ("file_name", json!("n".repeat(257))),
        ("asset_file_category", json!("NOPE")),
        ("asset_id", json!(null)),
    ] {
        let mut b = good.clone();
        b[k] = v;
        cases.push(b);
    }
    cases.push(json!("just a string"));
    for body in cases {
        let (status, v, _) = s.mss("alice", "POST", "files", Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["error_code"], "MSS.00000003", "{body}");
    }
    for id in ["..%2F..", "abc", "0123456789ABCDEF0123456789ABCDEF", "%00"] {
        let (status, v, _) = s
            .mss(
                "alice",
                "POST",
                &format!("files/{id}/complete"),
                Some(json!({"state": "CREATED"})),
            )
            .await;
        assert_eq!(status, 400, "{id}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_file_needs_every_declared_segment() {
    let s = TestServer::start().await;
    let (status, v, _) = s
        .mss(
            "alice",
            "POST",
            "large-files",
            Some(
                json!({"file_name": "seg.bin", "file_type": "BIN", "asset_id": "a",
                        "asset_file_category": "OTHER", "file_multipart_count": 3}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let id = v["file_id"].as_str().unwrap().to_owned();
    let url1 = v["upload_urls"][0].as_str().unwrap().to_owned();
    assert_eq!(s.put(&url1, b"hello".to_vec()).await.0, 200);
    let (status, v, _) = s
        .mss(
            "alice",
            "POST",
            &format!("files/{id}/complete"),
            Some(json!({"state": "CREATED"})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error_code"], "MSS.10001021");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn undecodable_path_parameters_get_a_json_error() {
    let s = TestServer::start().await;
    let alice = s.user("alice").clone();
    let r = s
        .http
        .delete(format!("{}/v1/{}/files/%FF", s.url, alice.project_id))
        .header("X-Auth-Token", &alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.headers().contains_key("x-request-id"));
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error_code"], "MSS.00000003");
    let (status, v) = s.koo("alice", "files/%FF/detail", json!({})).await;
    assert_eq!(status, 400);
    assert_eq!(v["code"], 13000102);
}

/// `--date-window-secs` bounds `X-Sdk-Date` as it bounds `X-Date`: back by the
/// window, ahead by the clock skew; APIG's fixed 15 minutes no longer apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sdk_date_outside_the_configured_window_is_refused() {
    let s = TestServer::start_opts(Options {
        date_window: std::time::Duration::from_secs(60),
        ..Options::default()
    })
    .await;
    let body = create_body(b"abc", &md5_b64(b"abc"));
    let now = time::OffsetDateTime::now_utc();
    let at =
        |secs: i64| partseal_server::auth::format_compact_date(now + time::Duration::seconds(secs));
    for (offset, what) in [(-120, "seconds before"), (600, "seconds after")] {
        let (status, v, _) = s
            .mss_at("alice", "POST", "files", Some(body.clone()), &at(offset))
            .await;
        assert_eq!(status, 401, "{offset}: {v}");
        assert_eq!(v["error_code"], "MSS.00000001", "{offset}: {v}");
        let msg = v["error_msg"].as_str().unwrap();
        assert!(msg.contains(&format!("60 {what}")), "{offset}: {msg}");
        assert!(!msg.contains("15 minutes"), "{offset}: {msg}");
    }
    // Inside the window it is accepted.
    let (status, v, _) = s
        .mss_at("alice", "POST", "files", Some(body), &at(-30))
        .await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_fifty_concurrent_confirms_exactly_one_commits() {
    let s = TestServer::start().await;
    let bytes = data(30_000, 78);
    let (status, v, _) = s
        .mss(
            "alice",
            "POST",
            "files",
            Some(create_body(&bytes, &md5_b64(&bytes))),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let id = v["file_id"].as_str().unwrap().to_owned();
    let url = v["upload_url"].as_str().unwrap().to_owned();
    assert_eq!(s.put(&url, bytes.clone()).await.0, 200);
    let path = format!("files/{id}/complete");
    let calls = (0..50).map(|_| s.mss("alice", "POST", &path, Some(json!({"state": "CREATED"}))));
    let answers = futures_util::future::join_all(calls).await;
    let mut committed = 0;
    for (status, v, h) in &answers {
        assert_eq!(*status, 200, "{v}");
        match h.get("x-partseal-committed").and_then(|v| v.to_str().ok()) {
            Some("true") => committed += 1,
            Some("false") => {}
            other => panic!("x-partseal-committed: {other:?}"),
        }
    }
    assert_eq!(committed, 1, "exactly one confirm commits");
}

/// DeleteFile deletes what is there: an open upload once (then it is gone,
/// 404 like any deleted file), and an upload already ended by a confirm is
/// nothing to delete (404), while GET still reports how it ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_answers_404_once_nothing_is_left_to_delete() {
    let s = TestServer::start().await;
    let bytes = data(100, 31);
    let create = || async {
        let (status, v, _) = s
            .mss(
                "alice",
                "POST",
                "files",
                Some(create_body(&bytes, &md5_b64(&bytes))),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        v["file_id"].as_str().unwrap().to_owned()
    };
    let id = create().await;
    let file = format!("files/{id}");
    assert_eq!(s.mss("alice", "DELETE", &file, None).await.0, 200);
    for (method, what) in [("DELETE", "a second delete"), ("GET", "a GET after it")] {
        let (status, v, _) = s.mss("alice", method, &file, None).await;
        assert_eq!(status, 404, "{what}: {v}");
        assert_eq!(v["error_code"], mss::NOT_FOUND, "{what}: {v}");
    }

    let id = create().await;
    let file = format!("files/{id}");
    let (status, v, _) = s
        .mss(
            "alice",
            "POST",
            &format!("{file}/complete"),
            Some(json!({"state": "CANCELLED"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    for _ in 0..2 {
        let (status, v, _) = s.mss("alice", "DELETE", &file, None).await;
        assert_eq!(status, 404, "{v}");
    }
    let (status, v, _) = s.mss("alice", "GET", &file, None).await;
    assert_eq!(
        (status, v["state"].as_str()),
        (200, Some("CANCELLED")),
        "{v}"
    );
}

/// CreateLargeFile refuses a size its segments could never add up to (every
/// segment but the last holds 64 bytes to 64 MiB on the test server).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_large_file_refuses_sizes_its_segments_cannot_hold() {
    let s = TestServer::start().await;
    let large = |size: u64, count: u32| {
        json!({"file_name": "big.mp4", "file_size": size, "file_type": "MP4",
               "asset_id": "a", "asset_file_category": "MAIN",
               "file_multipart_count": count})
    };
    for (size, count) in [(127, 3), ((3 << 26) + 1, 3), ((64 << 20) + 1, 1)] {
        let (status, v, _) = s
            .mss("alice", "POST", "large-files", Some(large(size, count)))
            .await;
        assert_eq!(status, 400, "{size} in {count}: {v}");
        assert_eq!(v["error_code"], mss::INVALID_PARAM, "{v}");
        assert!(
            v["error_msg"].as_str().unwrap().contains("cannot be sent"),
            "{v}"
        );
    }
    for (size, count) in [(128, 3), (3 << 26, 3)] {
        let (status, v, _) = s
            .mss("alice", "POST", "large-files", Some(large(size, count)))
            .await;
        assert_eq!(status, 200, "{size} in {count}: {v}");
    }
}
