//! Commit events through the real binary: a receiver that is down while
//! files commit gets every event, signed, once it is up; a server killed
//! with SIGKILL before delivering sends them after its restart; the flags
//! are checked at start.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener as StdListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use partseal_server::auth::format_compact_date;
use partseal_server::events::signature;
use serde_json::{Value, json};
use sha2::Digest;

const BIN: &str = env!("CARGO_BIN_EXE_partseal-server");
const SECRET: &str = "a-test-secret-of-some-length";

/// A server child, killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &Path, hook_port: u16) -> Server {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args([
            "--on-commit-url",
            &format!("http://127.0.0.1:{hook_port}/hook"),
        ])
        .args(["--on-commit-secret", SECRET])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("partseal-server: listening on ") {
                let url = rest.split(',').next().unwrap_or_default().to_owned();
                let _ = tx.send(url);
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the listening line");
    Server { child, base }
}

/// A port nothing listens on yet (the receiver comes up on it later).
fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Value>>>);

async fn hook(State(got): State<Received>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let ts: u64 = h("x-partseal-timestamp").parse().unwrap_or(0);
    if h("x-partseal-signature") != signature(SECRET, ts, &body)
        || h("content-type") != "application/json"
        || h("x-partseal-event") != "commit"
    {
        return StatusCode::UNAUTHORIZED;
    }
    got.0
        .lock()
        .unwrap()
        .push(serde_json::from_slice(&body).unwrap());
    StatusCode::NO_CONTENT
}

async fn receiver(port: u16) -> Received {
    let got = Received::default();
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the receiver's port is still free");
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    got
}

async fn wait_for(got: &Received, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = got.0.lock().unwrap().clone();
        if now.len() >= n || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sha_hex(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

/// Uploads `bytes` through KooDrive (put mode) and completes it; the file id.
async fn upload(base: &str, data: &Path, name: &str, bytes: &[u8]) -> String {
    let creds: Value =
        serde_json::from_slice(&std::fs::read(data.join("credentials.json")).unwrap()).unwrap();
    let (user, token) = (
        creds["users"][0]["id"].as_str().unwrap().to_owned(),
        creds["users"][0]["token"].as_str().unwrap().to_owned(),
    );
    let http = reqwest::Client::new();
    let call = |path: &str, body: Value| {
        http.post(format!("{base}/koodrive/ose/v1/files/{path}"))
            .header("authorization", format!("Bearer {token}"))
            .header("x-user-id", &user)
            .header(
                "x-date",
                format_compact_date(time::OffsetDateTime::now_utc()),
            )
            .json(&body)
            .send()
    };
    let v: Value = call(
        "create",
        json!({"fileName": name, "fileType": "45", "length": bytes.len(), "uploadMode": "put"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(v["code"], 0, "{v}");
    let id = v["fileId"].as_str().unwrap().to_owned();
    let url = v["uploadUrl"].as_str().unwrap();
    let put = http.put(url).body(bytes.to_vec()).send().await.unwrap();
    assert_eq!(put.status(), 200);
    let done: Value = call("complete", json!({"fileId": id, "sha256": sha_hex(bytes)}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(done["code"], 0, "{done}");
    id
}

fn by_file(events: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut m: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for e in events {
        m.entry(e["fileId"].as_str().unwrap().to_owned())
            .or_default()
            .push(e.clone());
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_while_files_commit_gets_every_event_once_it_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = start(dir.path(), port);
    let mut want = BTreeMap::new();
    for k in 0..3u8 {
        let bytes = vec![k; 1000 + usize::from(k)];
        let id = upload(&server.base, dir.path(), &format!("f{k}.bin"), &bytes).await;
        want.insert(id, bytes);
    }
    // Down for a while: the server retries with backoff.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = receiver(port).await;
    let events = wait_for(&got, 3).await;
    // Nothing more comes (no crash: exactly once).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events_after = got.0.lock().unwrap().clone();
    assert_eq!(events_after.len(), 3, "{events_after:?}");
    let files = by_file(&events);
    assert_eq!(files.len(), 3);
    for (id, bytes) in &want {
        let e = &files[id][0];
        assert_eq!(e["id"], format!("commit:{id}"));
        assert_eq!(e["event"], "commit");
        assert_eq!(e["api"], "koodrive");
        assert_eq!(e["sha256"], sha_hex(bytes));
        assert_eq!(e["length"], bytes.len());
        assert_eq!(e["parts"], 1);
        assert!(e["owner"].as_str().unwrap().starts_with("user:"), "{e}");
        assert!(e["fileName"].as_str().unwrap().ends_with(".bin"), "{e}");
        assert!(
            time::OffsetDateTime::parse(
                e["committed"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339
            )
            .is_ok()
        );
    }
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["sequence"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_not_yet_delivered_survive_a_kill_and_go_out_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut ids = Vec::new();
    {
        let mut server = start(dir.path(), port);
        for k in 0..2u8 {
            ids.push(upload(&server.base, dir.path(), &format!("k{k}"), &[k; 500]).await);
        }
        // SIGKILL: no shutdown of any kind.
        server.child.kill().unwrap();
        server.child.wait().unwrap();
    }
    let got = receiver(port).await;
    let server = start(dir.path(), port);
    let events = wait_for(&got, 2).await;
    let files = by_file(&events);
    for id in &ids {
        assert!(
            files.contains_key(id),
            "{id} delivered after the restart: {events:?}"
        );
    }
    // A new commit after the restart follows.
    let id = upload(&server.base, dir.path(), "later", b"later bytes").await;
    let events = wait_for(&got, 3).await;
    assert!(by_file(&events).contains_key(&id));
}

#[test]
fn the_webhook_flags_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["--on-commit-url", "http://127.0.0.1:9/hook"],
        vec!["--on-commit-secret", SECRET],
        vec![
            "--on-commit-url",
            "https://example.com/hook",
            "--on-commit-secret",
            SECRET,
        ],
        vec![
            "--on-commit-url",
            "http://127.0.0.1:9/hook",
            "--on-commit-secret",
            "short",
        ],
    ] {
        let out = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path())
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--on-commit"), "{args:?}: {err}");
        // Refused before anything was written.
        assert!(!dir.path().join("credentials.json").exists(), "{args:?}");
    }
}
