//! Download URLs over HTTP: byte-exact whole and ranged answers (first,
//! middle and last bytes, open and suffix ranges, past the end), `ETag` and
//! `If-None-Match`, `HEAD`, refused URLs (tampered, expired, another owner's,
//! an upload URL's signature), and a delete racing a download.

mod common;

use base64::Engine as _;
use common::*;
use md5::Digest;
use partseal_server::auth::{DownloadGrant, UrlSigner};
use partseal_server::error::{koo, mss};
use serde_json::{Value, json};

/// Length of the test file: several chunks of the server's body stream,
/// and not a multiple of one.
const LEN: usize = 700_001;

/// A committed KooDrive file of `alice`: its id, bytes and download URL.
async fn committed(s: &TestServer, len: usize, seed: u64) -> (String, Vec<u8>, String) {
    let bytes = data(len, seed);
    let id = s.koo_commit("alice", "d.bin", &bytes).await;
    let (status, v) = s
        .koo("alice", &format!("files/{id}/detail"), json!({}))
        .await;
    assert_eq!(status, 200, "{v}");
    let url = v["downloadUrl"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!("{}/download/koodrive/{id}?", s.url)),
        "{url}"
    );
    (id, bytes, url)
}

/// GET `url` with `headers`: status, response headers and body.
async fn get(
    s: &TestServer,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = s.http.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    (status, h, resp.bytes().await.unwrap().to_vec())
}

fn hv<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .unwrap_or_else(|| panic!("no {name} header in {h:?}"))
        .to_str()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_is_byte_exact_whole_and_by_range() {
    let s = TestServer::start().await;
    let (_, bytes, url) = committed(&s, LEN, 1).await;
    let (status, h, body) = get(&s, &url, &[]).await;
    assert_eq!(status, 200);
    assert!(body == bytes, "the whole file, byte for byte");
    assert_eq!(hv(&h, "content-length"), LEN.to_string());
    assert_eq!(hv(&h, "etag"), format!("\"{}\"", sha_hex(&bytes)));
    assert_eq!(hv(&h, "accept-ranges"), "bytes");

    let last = LEN - 1;
    let mid = LEN / 2;
    for (range, start, end) in [
        ("bytes=0-0".to_owned(), 0, 0),
        ("bytes=0-99".to_owned(), 0, 99),
        (format!("bytes={mid}-{}", mid + 300_000), mid, mid + 300_000),
        (format!("bytes={last}-{last}"), last, last),
        (format!("bytes={last}-"), last, last),
        (format!("bytes={mid}-"), mid, last),
        (format!("bytes=10-{}", LEN + 50), 10, last),
        ("bytes=-1".to_owned(), last, last),
        ("bytes=-300000".to_owned(), LEN - 300_000, last),
        (format!("bytes=-{}", LEN * 2), 0, last),
    ] {
        let (status, h, body) = get(&s, &url, &[("range", &range)]).await;
        assert_eq!(status, 206, "{range}");
        assert_eq!(
            hv(&h, "content-range"),
            format!("bytes {start}-{end}/{LEN}"),
            "{range}"
        );
        assert_eq!(
            hv(&h, "content-length"),
            (end - start + 1).to_string(),
            "{range}"
        );
        assert!(
            body == bytes[start..=end],
            "{range}: the bytes of the range"
        );
    }
    for range in [
        format!("bytes={LEN}-"),
        format!("bytes={LEN}-{}", LEN + 9),
        "bytes=-0".into(),
    ] {
        let (status, h, body) = get(&s, &url, &[("range", &range)]).await;
        assert_eq!(status, 416, "{range}");
        assert_eq!(hv(&h, "content-range"), format!("bytes */{LEN}"), "{range}");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], koo::BAD_PARAM, "{range}: {v}");
    }
    // Several ranges, a malformed one, or an If-Range for another version:
    // the whole file.
    for headers in [
        vec![("range", "bytes=0-1,5-6")],
        vec![("range", "bytes=9-2")],
        vec![("range", "lines=1-2")],
        vec![("range", "bytes=0-1"), ("if-range", "\"other\"")],
    ] {
        let (status, _, body) = get(&s, &url, &headers).await;
        assert_eq!(status, 200, "{headers:?}");
        assert!(body == bytes, "{headers:?}");
    }
    let etag = format!("\"{}\"", sha_hex(&bytes));
    let (status, _, body) = get(&s, &url, &[("range", "bytes=1-2"), ("if-range", &etag)]).await;
    assert_eq!((status, body), (206, bytes[1..=2].to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_none_match_answers_304_and_head_gives_the_headers_alone() {
    let s = TestServer::start().await;
    let (_, bytes, url) = committed(&s, 1000, 2).await;
    let etag = format!("\"{}\"", sha_hex(&bytes));
    for inm in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"x\", {etag}"),
        "*".into(),
    ] {
        let (status, h, body) = get(&s, &url, &[("if-none-match", &inm)]).await;
        assert_eq!(status, 304, "{inm}");
        assert_eq!(hv(&h, "etag"), etag);
        assert!(body.is_empty());
    }
    let (status, _, body) = get(&s, &url, &[("if-none-match", "\"other\"")]).await;
    assert_eq!((status, body.len()), (200, 1000));

    let resp = s.http.head(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(hv(resp.headers(), "content-length"), "1000");
    assert_eq!(hv(resp.headers(), "etag"), etag);
    assert_eq!(hv(resp.headers(), "accept-ranges"), "bytes");
    assert!(resp.bytes().await.unwrap().is_empty());
    let resp = s
        .http
        .head(&url)
        .header("range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 206);
    assert_eq!(hv(resp.headers(), "content-range"), "bytes 990-999/1000");
    assert_eq!(hv(resp.headers(), "content-length"), "10");
    assert!(resp.bytes().await.unwrap().is_empty());
}

/// `url` with query parameter `key` set to `value`.
fn with_param(url: &str, key: &str, value: &str) -> String {
    let mut u = reqwest::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == key {
                value.to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    u.query_pairs_mut().clear().extend_pairs(pairs);
    u.to_string()
}

fn param(url: &str, key: &str) -> String {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == key)
        .unwrap()
        .1
        .into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_expired_and_other_owner_download_urls_are_401() {
    let s = TestServer::start().await;
    let (id, _, url) = committed(&s, 500, 3).await;
    let (other, _, _) = committed(&s, 500, 4).await;
    let sig = param(&url, "s");
    let flipped = format!(
        "{}{}",
        if sig.starts_with('0') { "1" } else { "0" },
        &sig[1..]
    );
    let expires: i64 = param(&url, "e").parse().unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    // The server's signer in these tests (see `common`).
    let signer = UrlSigner::new([7u8; 32]);
    let expired = signer.sign_download(&DownloadGrant {
        api: "koodrive",
        file_id: &id,
        owner: "user:alice",
        expires_unix: now - 10,
    });
    let expired_url = with_param(
        &with_param(&url, "e", &(now - 10).to_string()),
        "s",
        &expired,
    );
    let cases = [
        ("signature changed", with_param(&url, "s", &flipped)),
        ("signature cut", with_param(&url, "s", &sig[..10])),
        (
            "expiry moved",
            with_param(&url, "e", &(expires + 3600).to_string()),
        ),
        ("expired", expired_url),
        (
            "another owner",
            with_param(&url, "o", &hex::encode("user:bob")),
        ),
        ("owner not hex", with_param(&url, "o", "zz")),
        ("another file", url.replace(&id, &other)),
        ("no query", url.split('?').next().unwrap().to_owned()),
    ];
    for (what, bad) in &cases {
        let (status, _, body) = get(&s, bad, &[]).await;
        assert_eq!(status, 401, "{what}: {bad}");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], koo::AUTH_FAILED, "{what}: {v}");
        assert!(
            v["msg"].as_str().unwrap().contains("download URL"),
            "{what}: {v}"
        );
    }
    // Through the other API's path: MetaStudio's error body.
    let (status, _, body) = get(
        &s,
        &url.replace("/download/koodrive/", "/download/metastudio/"),
        &[],
    )
    .await;
    assert_eq!(status, 401);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error_code"], mss::UNAUTHORIZED, "{v}");

    // An upload URL's signature is no download URL's.
    let (up_id, urls) = s
        .koo_create(
            "alice",
            json!({"fileName": "u", "fileType": "45", "length": 100}),
        )
        .await;
    let upload = &urls[0];
    let as_download = format!(
        "{}/download/koodrive/{up_id}?o={}&e={}&s={}",
        s.url,
        param(upload, "o"),
        param(upload, "e"),
        param(upload, "s")
    );
    let (status, _, _) = get(&s, &as_download, &[]).await;
    assert_eq!(status, 401, "an upload URL used for download");
    // And a download URL's signature takes no part.
    let as_upload = format!(
        "{}/upload/koodrive/{id}/1?o={}&e={}&s={}",
        s.url,
        param(&url, "o"),
        param(&url, "e"),
        param(&url, "s")
    );
    assert_eq!(s.put(&as_upload, vec![0; 500]).await.0, 401);

    // A validly signed URL for bob (which the server never hands out for
    // alice's file) finds no such file of bob's.
    let bobs = signer.sign_download(&DownloadGrant {
        api: "koodrive",
        file_id: &id,
        owner: "user:bob",
        expires_unix: expires,
    });
    let bob_url = with_param(&with_param(&url, "o", &hex::encode("user:bob")), "s", &bobs);
    let (status, _, body) = get(&s, &bob_url, &[]).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, &v["code"]), (400, &json!(koo::NO_TASK)), "{v}");
    // The untouched URL still works.
    assert_eq!(get(&s, &url, &[]).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_during_delete_is_the_whole_file_or_fails_never_mixed() {
    let s = TestServer::start().await;
    for round in 0..4u64 {
        let bytes = data(3 << 20, 10 + round);
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&bytes));
        let (status, v, _) = s
            .mss(
                "alice",
                "POST",
                "files",
                Some(
                    json!({"file_name": "v.mp4", "file_md5": md5, "file_size": bytes.len(),
                    "file_type": "MP4", "asset_id": "a", "asset_file_category": "MAIN"}),
                ),
            )
            .await;
        assert_eq!(status, 200, "{v}");
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
                Some(json!({"state": "CREATED"})),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        let (_, v, _) = s.mss("alice", "GET", &format!("files/{id}"), None).await;
        let url = v["download_url"].as_str().unwrap().to_owned();

        let mut resp = s.http.get(&url).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let mut got = Vec::new();
        // Delete after a different amount has been read each round.
        let before = round as usize * (1 << 20);
        while got.len() < before {
            match resp.chunk().await.unwrap() {
                Some(c) => got.extend_from_slice(&c),
                None => break,
            }
        }
        let (status, _, _) = s.mss("alice", "DELETE", &format!("files/{id}"), None).await;
        assert_eq!(status, 200);
        // A new file in the meantime must not leak into the download.
        let (_, _, _other) = committed(&s, 1 << 20, 99 + round).await;
        let rest = async {
            while let Some(c) = resp.chunk().await? {
                got.extend_from_slice(&c);
            }
            Ok::<_, reqwest::Error>(())
        }
        .await;
        match rest {
            Ok(()) => assert!(got == bytes, "round {round}: a whole download is the file"),
            Err(_) => assert!(
                bytes.starts_with(&got),
                "round {round}: a failed download is a prefix of the file"
            ),
        }
        let (status, _, body) = get(&s, &url, &[]).await;
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (status, &v["error_code"]),
            (404, &json!(mss::NOT_FOUND)),
            "{v}"
        );
    }
}

/// A `304` has no `Content-Length`, for `HEAD` as for `GET` (a `0` would
/// tell a cache the file is empty).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn not_modified_has_no_length_for_head_or_get() {
    let s = TestServer::start().await;
    let (_, bytes, url) = committed(&s, 1000, 21).await;
    let etag = format!("\"{}\"", sha_hex(&bytes));
    let (status, h, body) = get(&s, &url, &[("if-none-match", &etag)]).await;
    assert_eq!((status, body.len()), (304, 0));
    assert!(!h.contains_key("content-length"), "{h:?}");
    let resp = s
        .http
        .head(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 304);
    assert!(!resp.headers().contains_key("content-length"), "{resp:?}");
}

/// Range numbers too large for 64 bits are numbers still: an end past the
/// file is clamped, a start past it is unsatisfiable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn range_numbers_past_64_bits_are_past_the_end() {
    let s = TestServer::start().await;
    let (_, bytes, url) = committed(&s, 1000, 22).await;
    let huge = "99999999999999999999999";
    for range in [format!("bytes=0-{huge}"), format!("bytes=-{huge}")] {
        let (status, h, body) = get(&s, &url, &[("range", &range)]).await;
        assert_eq!(status, 206, "{range}");
        assert_eq!(hv(&h, "content-range"), "bytes 0-999/1000", "{range}");
        assert_eq!(body, bytes, "{range}");
    }
    let (status, h, _) = get(&s, &url, &[("range", &format!("bytes={huge}-"))]).await;
    assert_eq!(status, 416);
    assert_eq!(hv(&h, "content-range"), "bytes */1000");
}

/// A download URL whose file id is malformed is a bad request (13000102),
/// whatever its signature.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_malformed_file_id_in_a_download_url_is_a_bad_request() {
    let s = TestServer::start().await;
    let (id, _, url) = committed(&s, 100, 23).await;
    let bad = url.replace(&id, "xyz");
    let (status, _, body) = get(&s, &bad, &[]).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["code"], koo::BAD_PARAM, "{v}");
}
