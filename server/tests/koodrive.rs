//! The KooDrive-style API over a real server on loopback.

mod common;

use common::*;
use partseal_server::error::koo;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_mode_round_trip_and_idempotent_complete() {
    let s = TestServer::start().await;
    let bytes = data(10_000, 1);
    let (id, urls) = s
        .koo_create(
            "alice",
            json!({"fileName": "a.bin", "fileType": "45", "length": bytes.len(),
                   "parentFolder": ["root"], "uploadMode": "put"}),
        )
        .await;
    assert_eq!(urls.len(), 1);
    let (status, etag) = s.put(&urls[0], bytes.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(etag, sha_hex(&bytes));
    let (status, v) = s
        .koo(
            "alice",
            "files/complete",
            json!({"fileId": id, "sha256": sha_hex(&bytes)}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["code"], 0);
    assert_eq!(v["msg"], "success.");
    assert_eq!(v["alreadyCompleted"], false);
    // Again: the same answer, marked as already done.
    let (status, v) = s
        .koo("alice", "files/complete", json!({"fileId": id}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["code"], 0);
    assert_eq!(v["alreadyCompleted"], true);
    assert_eq!(v["sha256"], sha_hex(&bytes));
    let (status, v) = s
        .koo("alice", &format!("files/{id}/detail"), json!({}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["size"], 10_000);
    assert_eq!(v["fileName"], "a.bin");
    assert_eq!(v["sha256"], sha_hex(&bytes));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_parts_with_hash_ctx_are_checked_on_arrival() {
    let s = TestServer::start().await;
    let bytes = data(64 * 1024 * 8 + 1000, 2);
    let parts = chain_parts(&bytes, 64 * 1024);
    let (id, urls) = s
        .koo_create(
            "alice",
            json!({"fileName": "big.bin", "fileType": "45", "length": bytes.len(),
                   "sha256": sha_hex(&bytes), "uploadMode": "multipart",
                   "multiParts": parts}),
        )
        .await;
    assert_eq!(urls.len(), 9);
    let mut tasks = Vec::new();
    for (i, url) in urls.into_iter().enumerate().rev() {
        let chunk = bytes[i * 65536..((i + 1) * 65536).min(bytes.len())].to_vec();
        let http = s.http.clone();
        tasks.push(tokio::spawn(async move {
            let r = http.put(url).body(chunk).send().await.unwrap();
            r.status().as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let (status, v) = s
        .koo("alice", "files/complete", json!({"fileId": id}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["sha256"], sha_hex(&bytes));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupted_part_is_refused_naming_the_part() {
    let s = TestServer::start().await;
    let bytes = data(64 * 100 * 4, 3);
    let parts = chain_parts(&bytes, 64 * 100);
    let (id, urls) = s
        .koo_create(
            "alice",
            json!({"fileName": "c.bin", "fileType": "45", "length": bytes.len(),
                   "uploadMode": "multipart", "multiParts": parts}),
        )
        .await;
    let mut bad = bytes[6400..12800].to_vec();
    bad[100] ^= 1;
    let resp = s.http.put(&urls[1]).body(bad).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["code"], 13000420);
    assert!(v["msg"].as_str().unwrap().contains("part 2"), "{v}");
    // Complete now lists the missing part.
    for (i, url) in urls.iter().enumerate() {
        if i != 1 {
            assert_eq!(
                s.put(url, bytes[i * 6400..(i + 1) * 6400].to_vec()).await.0,
                200
            );
        }
    }
    let (status, v) = s
        .koo("alice", "files/complete", json!({"fileId": id}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(v["code"], 13000421, "{v}");
    assert!(v["msg"].as_str().unwrap().contains('2'));
    assert_eq!(s.put(&urls[1], bytes[6400..12800].to_vec()).await.0, 200);
    let (status, v) = s
        .koo("alice", "files/complete", json!({"fileId": id}))
        .await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_sha256_at_complete_keeps_the_upload() {
    let s = TestServer::start().await;
    let bytes = data(5000, 4);
    let (id, urls) = s
        .koo_create(
            "alice",
            json!({"fileName": "d.bin", "fileType": "45", "length": 5000}),
        )
        .await;
    assert_eq!(s.put(&urls[0], bytes.clone()).await.0, 200);
    let wrong = sha_hex(b"nope");
    let (status, v) = s
        .koo(
            "alice",
            "files/complete",
            json!({"fileId": id, "sha256": wrong}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(v["code"], 13000402, "{v}");
    assert!(v["msg"].as_str().unwrap().contains(&wrong));
    let (status, _) = s
        .koo(
            "alice",
            "files/complete",
            json!({"fileId": id, "sha256": sha_hex(&bytes)}),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flash_upload_completes_at_once_for_the_same_owner_only() {
    let s = TestServer::start().await;
    let bytes = data(3000, 5);
    let body = json!({"fileName": "e.bin", "fileType": "45", "length": 3000,
                      "sha256": sha_hex(&bytes)});
    let (id, urls) = s.koo_create("alice", body.clone()).await;
    assert_eq!(s.put(&urls[0], bytes.clone()).await.0, 200);
    assert_eq!(
        s.koo("alice", "files/complete", json!({"fileId": id}))
            .await
            .0,
        200
    );
    let (status, v) = s.koo("alice", "files/create", body.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(v["rapidUpload"], true, "{v}");
    let copy = v["fileId"].as_str().unwrap();
    assert_ne!(copy, id);
    let (_, v) = s
        .koo("alice", &format!("files/{copy}/detail"), json!({}))
        .await;
    assert_eq!(v["sha256"], sha_hex(&bytes));
    // Another user has no such file: a normal upload starts.
    let (status, v) = s.koo("bob", "files/create", body).await;
    assert_eq!(status, 200);
    assert_eq!(v["rapidUpload"], false, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_user_sees_the_same_answer_as_for_an_unknown_file() {
    let s = TestServer::start().await;
    let (id, urls) = s
        .koo_create(
            "alice",
            json!({"fileName": "f", "fileType": "45", "length": 4}),
        )
        .await;
    assert_eq!(s.put(&urls[0], b"abcd".to_vec()).await.0, 200);
    let (status_b, vb) = s.koo("bob", "files/complete", json!({"fileId": id})).await;
    let unknown = "0123456789abcdef0123456789abcdef";
    let (status_u, vu) = s
        .koo("bob", "files/complete", json!({"fileId": unknown}))
        .await;
    assert_eq!(status_b, 400);
    assert_eq!((status_b, &vb), (status_u, &vu));
    assert_eq!(vb["code"], 13000401);
    let (status, _) = s.koo("bob", &format!("files/{id}/detail"), json!({})).await;
    assert_eq!(status, 400);
    assert_eq!(
        s.koo("alice", "files/complete", json!({"fileId": id}))
            .await
            .0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_folder_members_share_uploads() {
    let s = TestServer::start().await;
    let share = &[("x-hw-share-folder-id", "team".to_owned())];
    let (status, v) = s
        .koo_with(
            "alice",
            "files/create",
            json!({"fileName": "g", "fileType": "45", "length": 3}),
            share,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let id = v["fileId"].as_str().unwrap().to_owned();
    let url = v["uploadUrl"].as_str().unwrap().to_owned();
    assert_eq!(s.put(&url, b"xyz".to_vec()).await.0, 200);
    // Bob is a member and completes it; outside the folder he cannot see it.
    assert_eq!(
        s.koo("bob", "files/complete", json!({"fileId": id}))
            .await
            .0,
        400
    );
    let (status, v) = s
        .koo_with("bob", "files/complete", json!({"fileId": id}), share)
        .await;
    assert_eq!(status, 200, "{v}");
    // Carol is not a member.
    let (status, v) = s
        .koo_with("carol", "files/complete", json!({"fileId": id}), share)
        .await;
    assert_eq!(status, 400);
    assert_eq!(v["code"], 13000410);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_future_and_missing_dates_and_bad_tokens_are_refused() {
    let s = TestServer::start().await;
    let body = json!({"fileName": "h", "fileType": "45", "length": 1});
    let now = time::OffsetDateTime::now_utc();
    let fmt = partseal_server::auth::format_compact_date;
    for (date, code) in [
        (fmt(now - time::Duration::minutes(16)), 13000002),
        (fmt(now + time::Duration::minutes(5)), 13000002),
        ("2026-11-30 10:00:00".to_owned(), 13000002),
    ] {
        let (status, v) = s
            .koo_with(
                "alice",
                "files/create",
                body.clone(),
                &[("x-date", date.clone())],
            )
            .await;
        assert_eq!(status, 401, "{date}: {v}");
        assert_eq!(v["code"], code);
    }
    // Still fresh at 14 minutes.
    let date = fmt(now - time::Duration::minutes(14));
    let (status, _) = s
        .koo_with("alice", "files/create", body.clone(), &[("x-date", date)])
        .await;
    assert_eq!(status, 200);
    // A token that does not match X-User-Id.
    let bob = s.user("bob").token.clone();
    let (status, v) = s
        .koo_with(
            "alice",
            "files/create",
            body.clone(),
            &[("authorization", format!("Bearer+{bob}"))],
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(v["code"], 13000001);
    let resp = s
        .http
        .post(format!("{}/koodrive/ose/v1/files/create", s.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_parameters_get_the_invalid_parameter_answer() {
    let s = TestServer::start().await;
    let cases = [
        json!({"fileName": "a/b", "fileType": "45", "length": 1}),
        json!({"fileName": "..", "fileType": "45", "length": 1}),
        json!({"fileName": "x".repeat(251), "fileType": "45", "length": 1}),
        json!({"fileName": "a", "fileType": "45", "length": -1}),
        json!({"fileName": "a", "fileType": "45", "length": 1e30}),
        json!({"fileName": "a", "fileType": "45", "length": "12"}),
        json!({"fileName": "a", "fileType": "45"}),
        json!({"fileName": "a", "fileType": "45", "length": 6u64 << 30}),
        json!({"fileName": "a", "fileType": "45", "length": 1, "uploadMode": "zip"}),
        json!({"fileName": "a", "fileType": "45", "length": 1, "sha256": "xyz"}),
        json!({"fileName": "a", "fileType": "45", "length": 128, "uploadMode": "multipart",
               "multiParts": [{"partNumber": 1, "partSize": 64, "partOffset": 0},
                              {"partNumber": 1, "partSize": 64, "partOffset": 64,
                               "hashCtx": [1,2,3,4,5,6,7,8]}]}),
        json!({"fileName": "a", "fileType": "45", "length": 128, "uploadMode": "multipart",
               "multiParts": [{"partNumber": 2, "partSize": 64, "partOffset": 64,
                               "hashCtx": [1,2,3,4,5,6,7,4294967296u64]}]}),
        json!({"fileName": "a", "fileType": "45", "length": 128, "uploadMode": "multipart",
               "multiParts": [{"partNumber": 1, "partSize": 64, "partOffset": 0,
                               "hashCtx": [1,2,3,4,5,6,7,8]}]}),
        json!([1, 2, 3]),
    ];
    for body in cases {
        let (status, v) = s.koo("alice", "files/create", body.clone()).await;
        assert_eq!(status, 400, "{body}: {v}");
        let code = v["code"].as_i64().unwrap();
        assert!(code == 13000102 || code == 13000423, "{body}: {v}");
    }
    for id in [
        "../../etc/passwd",
        "..",
        "0123456789abcdef0123456789abcde/",
        "%2F",
        "\u{0}",
        &"a".repeat(10_000),
    ] {
        let (status, v) = s
            .koo("alice", "files/complete", json!({"fileId": id}))
            .await;
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["code"], 13000102);
    }
    let resp = s
        .http
        .post(format!("{}/koodrive/ose/v1/files/complete", s.url))
        .header("Authorization", format!("Bearer {}", s.user("alice").token))
        .header("X-User-Id", "alice")
        .header("X-Date", now_compact())
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let big = "x".repeat(2 << 20);
    let (status, _) = s
        .koo("alice", "files/complete", json!({"fileId": big}))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upload_urls_cannot_be_forged_or_reused_for_another_file() {
    let s = TestServer::start().await;
    let (id1, urls1) = s
        .koo_create(
            "alice",
            json!({"fileName": "i", "fileType": "45", "length": 4}),
        )
        .await;
    let (id2, _) = s
        .koo_create(
            "alice",
            json!({"fileName": "j", "fileType": "45", "length": 4}),
        )
        .await;
    let other = urls1[0].replace(&id1, &id2);
    assert_eq!(s.put(&other, b"abcd".to_vec()).await.0, 401);
    let mut forged = urls1[0].clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    assert_eq!(s.put(&forged, b"abcd".to_vec()).await.0, 401);
    let part2 = urls1[0].replace(&format!("{id1}/1?"), &format!("{id1}/2?"));
    assert_eq!(s.put(&part2, b"abcd".to_vec()).await.0, 401);
    let bare = urls1[0].split('?').next().unwrap().to_owned();
    assert_eq!(s.put(&bare, b"abcd".to_vec()).await.0, 401);
    // Too long a body for the declared length is refused and not kept.
    let (status, body) = s.put(&urls1[0], b"abcdef".to_vec()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(s.put(&urls1[0], b"abcd".to_vec()).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn more_upload_urls_extend_the_plan() {
    let s = TestServer::start().await;
    let bytes = data(64 * 10 * 3, 6);
    let parts = chain_parts(&bytes, 640);
    let (id, urls) = s
        .koo_create(
            "alice",
            json!({"fileName": "k", "fileType": "45", "length": bytes.len(),
                   "uploadMode": "multipart", "multiParts": [parts[0].clone()]}),
        )
        .await;
    assert_eq!(urls.len(), 1);
    let (status, v) = s
        .koo(
            "alice",
            "files/multipart/uploadUrl",
            json!({"fileId": id, "multiParts": [parts[1].clone(), parts[2].clone()]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let more: Vec<String> = v["multiParts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["uploadUrl"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(v["multiParts"][1]["hashCtx"], parts[2]["hashCtx"]);
    for (i, url) in urls.iter().chain(more.iter()).enumerate() {
        assert_eq!(
            s.put(url, bytes[i * 640..(i + 1) * 640].to_vec()).await.0,
            200
        );
    }
    let (status, v) = s
        .koo("alice", "files/complete", json!({"fileId": id}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["sha256"], sha_hex(&bytes));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_and_truncated_bodies_are_not_kept() {
    let s = TestServer::start_with(std::time::Duration::from_millis(300)).await;
    let (id, urls) = s
        .koo_create(
            "alice",
            json!({"fileName": "slow", "fileType": "45", "length": 10}),
        )
        .await;
    let chunks = futures_util::stream::iter(vec![
        Ok::<_, std::io::Error>(b"hello".to_vec()),
        Err(std::io::Error::other("never sent")),
    ]);
    // The first half arrives, then the body stalls past the timeout.
    let stalled = futures_util::StreamExt::then(chunks, |c| async move {
        if c.is_err() {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
        c
    });
    let resp = s
        .http
        .put(&urls[0])
        .header("content-length", "10")
        .body(reqwest::Body::wrap_stream(stalled))
        .send()
        .await;
    if let Ok(r) = resp {
        assert_eq!(r.status().as_u16(), 400);
    }
    let (status, v) = s
        .koo("alice", "files/complete", json!({"fileId": id}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        v["code"], 13000421,
        "the stalled part must not be kept: {v}"
    );
    // A whole body afterwards is accepted.
    assert_eq!(s.put(&urls[0], b"helloworld".to_vec()).await.0, 200);
    assert_eq!(
        s.koo("alice", "files/complete", json!({"fileId": id}))
            .await
            .0,
        200
    );
}

/// The refusal names the configured window, not a fixed 15 minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn x_date_errors_name_the_configured_window() {
    let s = TestServer::start_opts(Options {
        date_window: std::time::Duration::from_secs(60),
        ..Options::default()
    })
    .await;
    let body = json!({"fileName": "w", "fileType": "45", "length": 1});
    let now = time::OffsetDateTime::now_utc();
    let fmt = partseal_server::auth::format_compact_date;
    for (date, what) in [
        (fmt(now - time::Duration::seconds(120)), "60 seconds before"),
        (fmt(now + time::Duration::seconds(600)), "60 seconds after"),
    ] {
        let (status, v) = s
            .koo_with("alice", "files/create", body.clone(), &[("x-date", date)])
            .await;
        assert_eq!(status, 401, "{v}");
        assert_eq!(v["code"], 13000002, "{v}");
        let msg = v["msg"].as_str().unwrap();
        assert!(msg.contains(what), "{msg}");
    }
    let date = fmt(now - time::Duration::seconds(30));
    let (status, v) = s
        .koo_with("alice", "files/create", body, &[("x-date", date)])
        .await;
    assert_eq!(status, 200, "{v}");
}

/// The `{api}` segment is signed: a URL one API issued does not work through
/// the other (it would answer in the other dialect, and whatever else comes
/// to differ between them).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upload_url_signature_covers_the_api_segment() {
    let s = TestServer::start().await;
    let (_, urls) = s
        .koo_create(
            "alice",
            json!({"fileName": "api", "fileType": "45", "length": 4}),
        )
        .await;
    let koo_url = urls[0].clone();
    assert!(koo_url.contains("/upload/koodrive/"), "{koo_url}");
    let swapped = koo_url.replace("/upload/koodrive/", "/upload/metastudio/");
    let resp = s.http.put(&swapped).body("abcd").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error_code"], "MSS.00000001", "{v}");

    let md5 = {
        use base64::Engine as _;
        use md5::Digest;
        base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(b"wxyz"))
    };
    let (status, v, _) = s
        .mss(
            "alice",
            "POST",
            "files",
            Some(
                json!({"file_name": "a.png", "file_md5": md5, "file_size": 4,
                        "file_type": "PNG", "asset_id": "asset-1",
                        "asset_file_category": "MAIN"}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let mss_url = v["upload_url"].as_str().unwrap().to_owned();
    assert!(mss_url.contains("/upload/metastudio/"), "{mss_url}");
    let swapped = mss_url.replace("/upload/metastudio/", "/upload/koodrive/");
    let resp = s.http.put(&swapped).body("wxyz").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["code"], 13000001, "{v}");

    // The URLs as issued still work.
    assert_eq!(s.put(&koo_url, b"abcd".to_vec()).await.0, 200);
    assert_eq!(s.put(&mss_url, b"wxyz".to_vec()).await.0, 200);
}

/// Owners of users and of shared folders are disjoint by construction: a
/// user whose id spells a folder's owner (the old `share:{id}`, or the new
/// `folder:{id}`) reaches none of its files, through either API.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_named_like_a_shared_folder_cannot_reach_its_files() {
    let mut opts = Options::default();
    let impostors = ["share:team", "folder:team"];
    for id in impostors {
        opts.credentials.users.push(user(id));
    }
    opts.credentials.validate().unwrap();
    let s = TestServer::start_opts(opts).await;
    let share = &[("x-hw-share-folder-id", "team".to_owned())];
    let bytes = b"team data".to_vec();
    let body = json!({"fileName": "t", "fileType": "45", "length": bytes.len(),
                      "sha256": sha_hex(&bytes)});
    let (status, v) = s
        .koo_with("alice", "files/create", body.clone(), share)
        .await;
    assert_eq!(status, 200, "{v}");
    let id = v["fileId"].as_str().unwrap().to_owned();
    let url = v["uploadUrl"].as_str().unwrap().to_owned();
    assert_eq!(s.put(&url, bytes.clone()).await.0, 200);
    let (status, v) = s
        .koo_with("alice", "files/complete", json!({"fileId": id}), share)
        .await;
    assert_eq!(status, 200, "{v}");

    for who in impostors {
        // As themselves: the folder's file reads like an unknown one.
        let (status, v) = s.koo(who, &format!("files/{id}/detail"), json!({})).await;
        assert_eq!(
            (status, v["code"].as_i64()),
            (400, Some(13000401)),
            "{who}: {v}"
        );
        let (status, v) = s.koo(who, "files/complete", json!({"fileId": id})).await;
        assert_eq!(
            (status, v["code"].as_i64()),
            (400, Some(13000401)),
            "{who}: {v}"
        );
        // Flash upload does not find the folder's bytes either.
        let (status, v) = s.koo(who, "files/create", body.clone()).await;
        assert_eq!(status, 200, "{who}: {v}");
        assert_eq!(v["rapidUpload"], false, "{who}: {v}");
        // Naming the folder: not a member.
        let (status, v) = s
            .koo_with(who, &format!("files/{id}/detail"), json!({}), share)
            .await;
        assert_eq!(
            (status, v["code"].as_i64()),
            (400, Some(13000410)),
            "{who}: {v}"
        );
        // MetaStudio: the same owner as KooDrive for a user, so no way in.
        let (status, v, _) = s.mss(who, "DELETE", &format!("files/{id}"), None).await;
        assert_eq!(status, 404, "{who}: {v}");
    }
    // The file is intact for members.
    let (status, v) = s
        .koo_with("bob", &format!("files/{id}/detail"), json!({}), share)
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["sha256"], sha_hex(&bytes));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_fifty_concurrent_completes_exactly_one_commits() {
    let s = TestServer::start().await;
    let bytes = data(50_000, 77);
    let (id, urls) = s
        .koo_create(
            "alice",
            json!({"fileName": "c.bin", "fileType": "45", "length": bytes.len(),
                   "parentFolder": ["root"], "uploadMode": "put"}),
        )
        .await;
    assert_eq!(s.put(&urls[0], bytes.clone()).await.0, 200);
    let calls = (0..50).map(|_| s.koo("alice", "files/complete", json!({"fileId": id})));
    let answers = futures_util::future::join_all(calls).await;
    for (status, v) in &answers {
        assert_eq!(*status, 200, "{v}");
        assert_eq!(v["code"], 0, "{v}");
        assert_eq!(v["sha256"], sha_hex(&bytes), "{v}");
    }
    let committed = answers
        .iter()
        .filter(|(_, v)| v["alreadyCompleted"] == false)
        .count();
    assert_eq!(committed, 1, "exactly one complete commits");
}

/// A plan whose part numbers skip a part that no byte is left for could
/// never complete: it is refused at create, naming the part.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plan_with_a_gap_that_can_never_be_filled_is_refused_at_create() {
    let s = TestServer::start().await;
    let (status, v) = s
        .koo(
            "alice",
            "files/create",
            json!({"fileName": "a", "fileType": "45", "length": 4096, "multiParts": [
                {"partNumber": 1, "partSize": 2048}, {"partNumber": 3, "partSize": 2048}]}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["code"], koo::BAD_PARAM, "{v}");
    assert!(v["msg"].as_str().unwrap().contains("part"), "{v}");
    // No part planned yet is no gap: the parts come with uploadUrl.
    let (status, v) = s
        .koo(
            "alice",
            "files/create",
            json!({"fileName": "a", "fileType": "45", "length": 4096, "uploadMode": "multipart"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    // Room for part 2: it can be planned later, and the upload completes.
    let bytes = data(5120, 41);
    let (id, urls) = s
        .koo_create(
            "alice",
            json!({"fileName": "a", "fileType": "45", "length": 5120, "multiParts": [
                {"partNumber": 1, "partSize": 2048}, {"partNumber": 3, "partSize": 2048}]}),
        )
        .await;
    let (status, v) = s
        .koo(
            "alice",
            "files/multipart/uploadUrl",
            json!({"fileId": id, "multiParts": [{"partNumber": 2, "partSize": 1024}]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let url2 = v["multiParts"][0]["uploadUrl"].as_str().unwrap().to_owned();
    assert_eq!(s.put(&urls[0], bytes[..2048].to_vec()).await.0, 200);
    assert_eq!(s.put(&url2, bytes[2048..3072].to_vec()).await.0, 200);
    assert_eq!(s.put(&urls[1], bytes[3072..].to_vec()).await.0, 200);
    let (status, v) = s
        .koo(
            "alice",
            "files/complete",
            json!({"fileId": id, "sha256": sha_hex(&bytes)}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
}

/// A flash upload answers only a request that would be valid without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flash_upload_checks_the_plan_first() {
    let s = TestServer::start().await;
    let bytes = b"hello".to_vec();
    let body = json!({"fileName": "h", "fileType": "45", "length": 5, "sha256": sha_hex(&bytes)});
    s.koo_commit("alice", "h", &bytes).await;
    let mut bad_number = body.clone();
    bad_number["multiParts"] = json!([{"partNumber": 0, "partSize": 5}]);
    let mut bad_ctx = body.clone();
    bad_ctx["multiParts"] = json!([{"partNumber": 1, "partSize": 5, "partOffset": 0,
                                    "hashCtx": [0, 0, 0, 0, 0, 0, 0, 0]}]);
    for (req, code) in [(bad_number, koo::BAD_PART), (bad_ctx, koo::BAD_PARAM)] {
        let (status, v) = s.koo("alice", "files/create", req).await;
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["code"], code, "{v}");
    }
    let (status, v) = s.koo("alice", "files/create", body).await;
    assert_eq!((status, &v["rapidUpload"]), (200, &json!(true)), "{v}");
}

/// Text fields stored with a file are held to 1024 bytes of UTF-8 as well
/// as to their character counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn text_fields_are_bounded_in_bytes_too() {
    let s = TestServer::start().await;
    let create = |description: String| json!({"fileName": "t", "fileType": "45", "length": 1, "description": description});
    let (status, v) = s
        .koo("alice", "files/create", create("😀".repeat(300)))
        .await;
    assert_eq!((status, &v["code"]), (400, &json!(koo::BAD_PARAM)), "{v}");
    assert!(v["msg"].as_str().unwrap().contains("1024 bytes"), "{v}");
    let (status, v) = s
        .koo("alice", "files/create", create("😀".repeat(256)))
        .await;
    assert_eq!(status, 200, "{v}");
}

/// A header of the authentication that is not text is refused, never read
/// as absent: a shared folder id so sent would otherwise act in the
/// caller's own space.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auth_headers_that_are_not_text_are_refused_not_ignored() {
    let s = TestServer::start().await;
    let u = s.user("alice").clone();
    let call = |name: &'static str, value: &'static [u8]| {
        let mut req = s
            .http
            .post(format!("{}/koodrive/ose/v1/files/create", s.url))
            .json(&json!({"fileName": "n", "fileType": "45", "length": 1}));
        for (k, v) in [
            ("authorization", format!("Bearer {}", u.token)),
            ("x-user-id", u.id.clone()),
            ("x-date", now_compact()),
        ] {
            if k != name {
                req = req.header(k, v);
            }
        }
        req = req.header(
            name,
            reqwest::header::HeaderValue::from_bytes(value).unwrap(),
        );
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let (status, v) = call("x-hw-share-folder-id", b"te\xffam").await;
    assert_eq!(
        (status, &v["code"]),
        (400, &json!(koo::NO_PERMISSION)),
        "{v}"
    );
    let (status, v) = call("x-user-id", b"ali\xffce").await;
    assert_eq!((status, &v["code"]), (401, &json!(koo::AUTH_FAILED)), "{v}");
    assert!(v["msg"].as_str().unwrap().contains("UTF-8"), "{v}");
}

/// `files/multipart/list` of a completed upload is a conflict (13000422),
/// as its failures list.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listing_the_parts_of_a_completed_upload_is_a_conflict() {
    let s = TestServer::start().await;
    let id = s.koo_commit("alice", "l", b"abc").await;
    let (status, v) = s
        .koo("alice", "files/multipart/list", json!({"fileId": id}))
        .await;
    assert_eq!((status, &v["code"]), (400, &json!(koo::CONFLICT)), "{v}");
}
