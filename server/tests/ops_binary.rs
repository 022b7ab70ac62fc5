//! The real binary's logs: with `--log-format json` every line is a JSON
//! object and a request's lines carry the request id the client gave; in
//! both formats nothing secret (the Bearer token, the metrics token, the
//! signatures of upload and download URLs, their query strings) is ever
//! logged, after a real upload, complete and download.

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
