//! Load: many concurrent uploads of many parts each, in both KooDrive modes
//! and through MetaStudio, against one server on loopback. Every upload must
//! succeed and verify; the latency distribution of complete is printed.
//!
//! `PARTSEAL_LOAD_UPLOADS` (default 64) and `PARTSEAL_LOAD_PART_KIB`
//! (default 64) scale it.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use md5::Digest;
use serde_json::json;

const PARTS: usize = 16;
/// Part uploads in flight at once, over all uploads.
const MAX_CONNECTIONS: usize = 128;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn one_upload(
    s: Arc<TestServer>,
    gate: Arc<tokio::sync::Semaphore>,
    i: usize,
    part_size: usize,
) -> Duration {
    let bytes = data(part_size * PARTS - 100, i as u64 + 1000);
    let chunks: Vec<Vec<u8>> = bytes.chunks(part_size).map(<[u8]>::to_vec).collect();
    let (id, urls, complete_as_koo) = match i % 3 {
        // KooDrive concurrent upload with hashCtx.
        0 => {
            let parts = chain_parts(&bytes, part_size);
            let (id, urls) = s
                .koo_create(
                    "alice",
                    json!({"fileName": format!("load-{i}"), "fileType": "45",
                           "length": bytes.len(), "sha256": sha_hex(&bytes),
                           "uploadMode": "multipart", "multiParts": parts}),
                )
                .await;
            (id, urls, true)
        }
        // KooDrive multipart without midstates.
        1 => {
            let parts: Vec<_> = chunks
                .iter()
                .enumerate()
                .map(|(n, c)| json!({"partNumber": n + 1, "partSize": c.len()}))
                .collect();
            let (id, urls) = s
                .koo_create(
                    "bob",
                    json!({"fileName": format!("load-{i}"), "fileType": "45",
                           "length": bytes.len(), "uploadMode": "multipart",
                           "multiParts": parts}),
                )
                .await;
            (id, urls, true)
        }
        // MetaStudio large file in segments.
        _ => {
            let (status, v, _) = s
                .mss(
                    "carol",
                    "POST",
                    "large-files",
                    Some(
                        json!({"file_name": format!("load-{i}"), "file_size": bytes.len(),
                                "file_type": "BIN", "asset_id": "a",
                                "asset_file_category": "OTHER",
                                "file_multipart_count": PARTS}),
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
            (v["file_id"].as_str().unwrap().to_owned(), urls, false)
        }
    };
    assert_eq!(urls.len(), PARTS);
    let mut puts = Vec::new();
    for (url, chunk) in urls.into_iter().zip(chunks).rev() {
        let http = s.http.clone();
        let gate = gate.clone();
        puts.push(tokio::spawn(async move {
            // Bounded connections: one process holds both ends of every one,
            // and the default limit of open files is 1024.
            let _permit = gate.acquire().await.unwrap();
            let r = http.put(url).body(chunk).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
        }));
    }
    for p in puts {
        p.await.unwrap();
    }
    let started = Instant::now();
    if complete_as_koo {
        let user = if i.is_multiple_of(3) { "alice" } else { "bob" };
        let (status, v) = s
            .koo(
                user,
                "files/complete",
                json!({"fileId": id, "sha256": sha_hex(&bytes)}),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["sha256"], sha_hex(&bytes));
    } else {
        let (status, v, _) = s
            .mss(
                "carol",
                "POST",
                &format!("files/{id}/complete"),
                Some(json!({"state": "CREATED"})),
            )
            .await;
        assert_eq!(status, 200, "{v}");
    }
    let took = started.elapsed();
    let stored = std::fs::read(s.dir.path().join("files").join(&id).join("data")).unwrap();
    assert_eq!(stored.len(), bytes.len());
    assert_eq!(
        md5::Md5::digest(&stored),
        md5::Md5::digest(&bytes),
        "upload {i}"
    );
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uploads_all_verify() {
    let uploads = env_or("PARTSEAL_LOAD_UPLOADS", 64);
    let part_size = env_or("PARTSEAL_LOAD_PART_KIB", 64) * 1024;
    let s = Arc::new(
        TestServer::start_custom(|_, settings| {
            // Every part this test sends at once is received at once: the bound
            // of part bodies in flight is not what it measures.
            settings.max_parts_in_flight = MAX_CONNECTIONS as u32;
        })
        .await,
    );
    let gate = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let started = Instant::now();
    let tasks: Vec<_> = (0..uploads)
        .map(|i| tokio::spawn(one_upload(s.clone(), gate.clone(), i, part_size)))
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.push(t.await.expect("an upload failed"));
    }
    let wall = started.elapsed();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    let total = (part_size * PARTS - 100) * uploads;
    eprintln!(
        "load: {uploads} uploads x {PARTS} parts of {} KiB ({:.1} MiB) in {:.2} s, 0 errors; \
         complete latency p50 {:?} p90 {:?} p99 {:?} max {:?}",
        part_size / 1024,
        total as f64 / (1 << 20) as f64,
        wall.as_secs_f64(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        lat[lat.len() - 1]
    );
    assert_eq!(lat.len(), uploads);
}
