//! The real binary's logs: with `--log-format json` every line is a JSON
//! object and a request's lines carry the request id the client gave; in
//! both formats nothing secret (the Bearer token, the metrics token, the
//! signatures of upload and download URLs, their query strings) is ever
//! logged, after a real upload, complete and download. And SIGTERM with an
//! upload in flight: not ready while it drains, the upload still finishes.

mod ops_support;

use ops_support::{Bin, query_param, roundtrip};
use serde_json::Value;

const METRICS_TOKEN: &str = "metrics-token-7f3a9c";

fn secrets(bin: &Bin, upload_url: &str, download_url: &str) -> Vec<String> {
    vec![
        bin.user.token.clone(),
        bin.user.secret_key.clone(),
        METRICS_TOKEN.to_owned(),
        query_param(upload_url, "s"),
        query_param(download_url, "s"),
        upload_url.split_once('?').unwrap().1.to_owned(),
        download_url.split_once('?').unwrap().1.to_owned(),
    ]
}

async fn run(format: &str) -> (Bin, Vec<String>) {
    let mut bin = Bin::start(
        0,
        &["--log-format", format, "--metrics-token", METRICS_TOKEN],
    )
    .await;
    let http = reqwest::Client::new();
    let bytes = b"the bytes of a part, logged by nobody".to_vec();
    let rt = roundtrip(&http, &bin.url, &bin.user, &bytes, "ops-rid").await;
    for (step, id) in &rt.request_ids {
        assert_eq!(id, &format!("ops-rid-{step}"), "the answer echoes the id");
    }
    let r = http
        .get(format!("{}/metrics", bin.url))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    bin.stop().await;
    let secrets = secrets(&bin, &rt.upload_url, &rt.download_url);
    let log = bin.log();
    for line in &log {
        for s in &secrets {
            assert!(!line.contains(s.as_str()), "a secret in the log: {line}");
        }
    }
    (bin, log)
}

/// The `request_id` of a JSON log line: its span's field.
fn request_id(v: &Value) -> Option<&str> {
    v["span"]["request_id"].as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_parse_and_carry_the_clients_request_id() {
    let (_bin, log) = run("json").await;
    let lines: Vec<Value> = log
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 5, "{log:?}");
    for v in &lines {
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{v}");
    }
    // The part's "part stored" line and the complete's line carry the ids
    // the client sent.
    let with =
        |id: &str| -> Vec<&Value> { lines.iter().filter(|v| request_id(v) == Some(id)).collect() };
    let put = with("ops-rid-put");
    assert!(
        put.iter().any(|v| v["fields"]["message"] == "part stored"),
        "{put:?}"
    );
    let complete = with("ops-rid-complete");
    assert!(
        complete
            .iter()
            .any(|v| v["fields"]["message"] == "upload completed"),
        "{complete:?}"
    );
    assert!(!with("ops-rid-download").is_empty());
    // The request span names the path, never the query.
    for v in put {
        let path = v["span"]["path"].as_str().unwrap();
        assert!(path.starts_with("/upload/koodrive/") && !path.contains('?'));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_log_lines_carry_the_request_id_and_no_secret() {
    let (_bin, log) = run("text").await;
    assert!(
        log.iter()
            .any(|l| l.contains("request_id=\"ops-rid-put\"") && l.contains("part stored")),
        "{log:?}"
    );
}

/// SIGTERM with a part upload in flight: from the signal on the server is
/// not ready (its listener is closed, so a probe cannot even connect; an
/// in-process test shows `/readyz` answering 503 once shutdown begins), the
/// upload in flight still finishes, and the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_while_draining_an_upload_in_flight() {
    use std::io::{Read, Write};
    let mut bin = Bin::start(0, &[]).await;
    let http = reqwest::Client::new();
    let ready = http
        .get(format!("{}/readyz", bin.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let body = vec![7u8; 4096];
    let r = http
        .post(format!("{}/koodrive/ose/v1/files/create", bin.url))
        .header("authorization", format!("Bearer {}", bin.user.token))
        .header("x-user-id", &bin.user.id)
        .header(
            "x-date",
            partseal_server::auth::format_compact_date(time::OffsetDateTime::now_utc()),
        )
        .json(&serde_json::json!({"fileName": "d.bin", "fileType": "45",
            "length": body.len(), "uploadMode": "multipart",
            "multiParts": [{"partNumber": 1, "partSize": body.len()}]}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let url = v["multiParts"][0]["uploadUrl"].as_str().unwrap().to_owned();
    let rest = url.strip_prefix("http://").unwrap();
    let (hostport, path) = rest.split_at(rest.find('/').unwrap());
    let mut tcp = std::net::TcpStream::connect(hostport).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    write!(
        tcp,
        "PUT {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    tcp.write_all(&body[..1000]).unwrap();
    // The handler has the request once its span logged it.
    let has = |what: &str| bin.log().iter().any(|l| l.contains(what));
    let put_started = || {
        bin.log()
            .iter()
            .any(|l| l.contains("method=PUT") && l.contains("started processing request"))
    };
    for _ in 0..200 {
        if put_started() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(put_started(), "{:?}", bin.log());
    let pid = bin.pid();
    // SAFETY: kill(2) on the PID of our own child.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    for _ in 0..200 {
        if has("shutting down") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(has("shutting down"), "{:?}", bin.log());
    // Draining: no probe gets a 200.
    let probe = http.get(format!("{}/readyz", bin.url)).send().await;
    match probe {
        Err(e) => assert!(e.is_connect(), "{e}"),
        Ok(r) => assert_eq!(r.status().as_u16(), 503),
    }
    // The upload in flight finishes.
    tcp.write_all(&body[1000..]).unwrap();
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    bin.wait_exit().await;
}
