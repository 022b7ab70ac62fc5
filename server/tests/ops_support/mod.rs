//! The real binary for the operations tests: started over a temporary
//! store with extra flags, its stderr captured line by line, stopped by
//! SIGTERM to its own PID; and a whole KooDrive upload, complete and
//! download through any base URL (the server's, or a proxy's in front).
#![allow(dead_code)]

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use partseal_server::auth::format_compact_date;
use partseal_server::config::{Credentials, User};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_partseal-server");
const LISTENING: &str = "partseal-server: listening on ";

/// A running `partseal-server`.
pub struct Bin {
    child: Child,
    /// Its own URL (`http://127.0.0.1:PORT`).
    pub url: String,
    /// The store.
    pub data: tempfile::TempDir,
    /// Every line it wrote to stderr so far.
    pub stderr: Arc<Mutex<Vec<String>>>,
    /// Its development user.
    pub user: User,
}

/// A free loopback port (bound and released; good enough for a test).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Bin {
    /// Starts the binary on `port` (0: any) with `extra` flags and waits for
    /// its `listening on` line.
    pub async fn start(port: u16, extra: &[&str]) -> Bin {
        let data = tempfile::tempdir().unwrap();
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(BIN);
        cmd.args(["--listen", &listen, "--data", data.path().to_str().unwrap()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("RUST_LOG", "info,tower_http=debug")
            .kill_on_drop(true);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("PARTSEAL_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd.spawn().expect("spawn partseal-server");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(l)) = err.next_line().await {
                sink.lock().unwrap().push(l);
            }
        });
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(l)) = out.next_line().await {
                if let Some(rest) = l.strip_prefix(LISTENING) {
                    return rest.split(", store in ").next().map(str::to_owned);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no `listening on` line; stderr: {:?}", stderr.lock()));
        // Keep draining stdout so the child never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
        let creds: Credentials =
            serde_json::from_slice(&std::fs::read(data.path().join("credentials.json")).unwrap())
                .unwrap();
        let user = creds.users[0].clone();
        // With --public-url the banner names the proxy; the server itself
        // listens on `listen`.
        let url = if port == 0 {
            url
        } else {
            format!("http://{listen}")
        };
        Bin {
            child,
            url,
            data,
            stderr,
            user,
        }
    }

    /// Everything on stderr so far.
    pub fn log(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// The child's PID.
    pub fn pid(&self) -> libc::pid_t {
        self.child.id().expect("the server is running") as libc::pid_t
    }

    /// SIGTERM to the child's PID; waits (bounded) for it to exit.
    pub async fn stop(&mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on the PID of our own child.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        self.wait_exit().await;
    }

    /// Waits (bounded) for the child to exit successfully.
    pub async fn wait_exit(&mut self) {
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the server exits after SIGTERM")
            .unwrap();
        assert!(status.success(), "{status:?}");
        // Let the stderr reader take the last lines.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What [`roundtrip`] saw.
pub struct Roundtrip {
    /// The signed upload URL it used.
    pub upload_url: String,
    /// The signed download URL it used.
    pub download_url: String,
    /// The answers' `X-Request-Id`, by step.
    pub request_ids: Vec<(String, String)>,
}

/// A KooDrive upload of `bytes` as one part through `base`: create, PUT to
/// the upload URL, complete with the SHA-256, detail, download; each step
/// with `X-Request-Id: {rid}-{step}`. Panics on any unexpected answer.
pub async fn roundtrip(
    http: &reqwest::Client,
    base: &str,
    user: &User,
    bytes: &[u8],
    rid: &str,
) -> Roundtrip {
    let mut ids = Vec::new();
    let koo = |path: &str, body: Value, step: &str| {
        http.post(format!("{base}/koodrive/ose/v1/{path}"))
            .header("authorization", format!("Bearer {}", user.token))
            .header("x-user-id", &user.id)
            .header(
                "x-date",
                format_compact_date(time::OffsetDateTime::now_utc()),
            )
            .header("x-request-id", format!("{rid}-{step}"))
            .json(&body)
            .send()
    };
    let sha = partseal::Sha256::digest(bytes).to_hex();
    let r = koo(
        "files/create",
        json!({"fileName": "ops.bin", "fileType": "45", "length": bytes.len(),
               "uploadMode": "multipart",
               "multiParts": [{"partNumber": 1, "partSize": bytes.len()}]}),
        "create",
    )
    .await
    .unwrap();
    ids.push(("create".into(), rid_of(&r)));
    let v: Value = r.json().await.unwrap();
    let id = v["fileId"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_owned();
    let upload_url = v["multiParts"][0]["uploadUrl"].as_str().unwrap().to_owned();
    let r = http
        .put(&upload_url)
        .header("x-request-id", format!("{rid}-put"))
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    ids.push(("put".into(), rid_of(&r)));
    let r = koo(
        "files/complete",
        json!({"fileId": id, "sha256": sha}),
        "complete",
    )
    .await
    .unwrap();
    ids.push(("complete".into(), rid_of(&r)));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["sha256"], sha, "{v}");
    let r = koo(&format!("files/{id}/detail"), json!({}), "detail")
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let download_url = v["downloadUrl"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_owned();
    let r = http
        .get(&download_url)
        .header("x-request-id", format!("{rid}-download"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    ids.push(("download".into(), rid_of(&r)));
    assert_eq!(r.bytes().await.unwrap().as_ref(), bytes);
    Roundtrip {
        upload_url,
        download_url,
        request_ids: ids,
    }
}

fn rid_of(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The value of query parameter `name` of `url`.
pub fn query_param(url: &str, name: &str) -> String {
    let q = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    q.split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {url}"))
        .to_owned()
}
