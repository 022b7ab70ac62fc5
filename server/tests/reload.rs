//! Reloading the credentials file: in process through
//! [`partseal_server::reload::reload`], and on SIGHUP to the real binary
//! (a file that is not JSON, one that does not validate and a missing one
//! keep the previous set; a valid one replaces it whole; a part upload in
//! flight across a reload completes).
//!
//! Every wait is bounded; the child is killed when its handle is dropped.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TestServer, data, now_compact, sha_hex, user};
use futures_util::StreamExt;
use partseal_server::config::{ConfigError, Credentials, SharedFolder, User};
use partseal_server::reload::{Reloaded, reload};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_partseal-server");
/// From spawn to the `listening on` line; from a signal to its log line.
const WAIT: Duration = Duration::from_secs(30);
/// One HTTP exchange.
const HTTP: Duration = Duration::from_secs(30);
const LISTENING: &str = "partseal-server: listening on http://";
/// KooDrive's code for refused credentials.
const AUTH_FAILED: i64 = 13000001;
/// The start of the log line of a refused reload.
const NOT_RELOADED: &str = "credentials not reloaded";
/// The log line of a successful reload.
const RELOADED: &str = "credentials reloaded";

fn creds(users: Vec<User>, shared_folders: Vec<SharedFolder>) -> Credentials {
    Credentials {
        users,
        shared_folders,
    }
}

fn with_token(id: &str, token: &str) -> User {
    User {
        token: token.into(),
        ..user(id)
    }
}

/// Writes `bytes` to `path` the way an operator should: whole, then renamed
/// over the old file.
fn write_file(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn write_creds(path: &Path, c: &Credentials) {
    write_file(path, &serde_json::to_vec_pretty(c).unwrap());
}

/// Two users with the same id: valid JSON that `validate` refuses.
fn duplicate_ids() -> Credentials {
    let mut twin = user("alice");
    twin.token = "another-token-0123456789".into();
    twin.access_key = "AKTWIN".into();
    creds(vec![user("alice"), twin], vec![])
}

// In process.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_replaces_the_set_whole_and_refuses_bad_files() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("credentials.json");
    let before = s.state.credentials_now();

    // Missing: an I/O error naming the file; nothing is created.
    match reload(&s.state, &path) {
        Err(ConfigError::Io { path: p, source }) => {
            assert_eq!(p, path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("a missing file: {other:?}"),
    }
    assert!(!path.exists(), "a reload created the file");

    // Not JSON, and JSON that does not validate: refused, naming the file.
    write_file(&path, b"{\"users\": [");
    let e = reload(&s.state, &path).expect_err("not JSON");
    assert!(matches!(e, ConfigError::Invalid { .. }), "{e:?}");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    write_creds(&path, &duplicate_ids());
    let e = reload(&s.state, &path).expect_err("duplicate ids");
    assert!(
        e.to_string().contains("user id \"alice\" appears twice"),
        "{e}"
    );
    assert!(
        Arc::ptr_eq(&before, &s.state.credentials_now()),
        "a refused file changed the set"
    );
    let (status, v) = s
        .koo_with(
            "bob",
            "files/create",
            small_file(),
            &[("x-hw-share-folder-id", "team".into())],
        )
        .await;
    assert_eq!((status, &v["code"]), (200, &json!(0)), "{v}");

    // Valid: alice's token changes, bob leaves the team folder, carol goes.
    let alice = with_token("alice", "alice-new-token-0123456789");
    write_creds(
        &path,
        &creds(
            vec![alice.clone(), user("bob"), user("dave")],
            vec![SharedFolder {
                id: "team".into(),
                members: vec!["alice".into(), "dave".into()],
            }],
        ),
    );
    assert_eq!(
        reload(&s.state, &path).expect("valid"),
        Reloaded {
            users: 3,
            shared_folders: 1
        }
    );
    // A snapshot taken before is the old set, whole.
    assert_eq!(before.users.len(), 3);
    assert!(before.user_by_token(&user("carol").token).is_some());
    assert!(before.shared_folder_of("team", "bob").is_some());

    let bearer = |t: &str| ("authorization", format!("Bearer {t}"));
    let old = s.koo_with("alice", "files/create", small_file(), &[]).await;
    assert_eq!(
        (old.0, &old.1["code"]),
        (401, &json!(AUTH_FAILED)),
        "{old:?}"
    );
    let new = s
        .koo_with(
            "alice",
            "files/create",
            small_file(),
            &[bearer(&alice.token)],
        )
        .await;
    assert_eq!((new.0, &new.1["code"]), (200, &json!(0)), "{new:?}");
    let gone = s.koo("carol", "files/create", small_file()).await;
    assert_eq!(
        (gone.0, &gone.1["code"]),
        (401, &json!(AUTH_FAILED)),
        "{gone:?}"
    );
    let dave = user("dave");
    let dave_call = s
        .koo_with(
            "bob",
            "files/create",
            small_file(),
            &[
                bearer(&dave.token),
                ("x-user-id", "dave".into()),
                ("x-hw-share-folder-id", "team".into()),
            ],
        )
        .await;
    assert_eq!(
        (dave_call.0, &dave_call.1["code"]),
        (200, &json!(0)),
        "{dave_call:?}"
    );
    let (status, v) = s
        .koo_with(
            "bob",
            "files/create",
            small_file(),
            &[("x-hw-share-folder-id", "team".into())],
        )
        .await;
    assert_eq!(
        (status, &v["code"]),
        (400, &json!(13000410)),
        "bob left the team folder: {v}"
    );
    // MetaStudio follows the same set: carol's AK/SK is gone, bob's works.
    let mss_create = || {
        use base64::Engine as _;
        use md5::Digest as _;
        let bytes = data(1000, 5);
        json!({"file_name": "a.png", "file_size": bytes.len(), "file_type": "PNG",
               "file_md5": base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&bytes)),
               "asset_id": "asset-1", "asset_file_category": "MAIN"})
    };
    let (status, v, _) = s.mss("carol", "POST", "files", Some(mss_create())).await;
    assert_eq!(status, 401, "{v}");
    let (status, v, _) = s.mss("bob", "POST", "files", Some(mss_create())).await;
    assert_eq!(status, 200, "{v}");
}

fn small_file() -> Value {
    json!({"fileName": "a.txt", "fileType": "45", "length": 5, "uploadMode": "put"})
}

// The binary.

/// The lines a child writes to one of its pipes, read as they come.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    /// Reads `r` to its end in the background.
    fn drain(r: impl AsyncRead + Unpin + Send + 'static) -> Lines {
        let lines = Lines::default();
        let l = lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(r).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                l.0.lock().unwrap().push(line);
            }
        });
        lines
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }

    fn count(&self, pred: &impl Fn(&str) -> bool) -> usize {
        self.0.lock().unwrap().iter().filter(|l| pred(l)).count()
    }

    /// Waits up to [`WAIT`] for the `n`th line that `pred` accepts; returns
    /// that line.
    async fn wait_nth(&self, n: usize, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(l) = self.0.lock().unwrap().iter().filter(|l| pred(l)).nth(n - 1) {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no line #{n} of its kind within {WAIT:?}:\n{}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A running `partseal-server` over a store whose credentials file is
/// written by the test.
struct Server {
    child: Child,
    url: String,
    stderr: Lines,
    creds_path: PathBuf,
    http: reqwest::Client,
}

impl Server {
    /// Writes `c` to `DATA/credentials.json`, starts the binary on an
    /// ephemeral loopback port and waits for its `listening on` line.
    async fn start(data: &Path, c: &Credentials) -> Server {
        let creds_path = data.join("credentials.json");
        write_creds(&creds_path, c);
        let mut cmd = Command::new(BIN);
        cmd.args(["--listen", "127.0.0.1:0", "--data"])
            .arg(data)
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
        let stdout = Lines::drain(child.stdout.take().unwrap());
        let stderr = Lines::drain(child.stderr.take().unwrap());
        let line = stdout.wait_nth(1, |l| l.starts_with(LISTENING)).await;
        let hostport = line[LISTENING.len()..]
            .split_once(", store in ")
            .unwrap_or_else(|| panic!("unexpected listening line: {line}"))
            .0;
        let addr: SocketAddr = hostport.parse().unwrap();
        Server {
            child,
            url: format!("http://{addr}"),
            stderr,
            creds_path,
            http: reqwest::Client::builder().timeout(HTTP).build().unwrap(),
        }
    }

    /// Sends `sig` to the server, by its pid.
    fn signal(&self, sig: libc::c_int) {
        let pid = self.child.id().expect("the server is still running") as libc::pid_t;
        // SAFETY: kill(2) on the pid of our own child, which has not been
        // reaped yet (`id()` returns None after that), so the pid is its own.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the server exited:\n{}",
            self.stderr.text()
        );
    }

    /// Sends SIGHUP and waits for the `n`th log line of a reload, successful
    /// or not, which it returns.
    async fn hangup(&mut self, n: usize) -> String {
        self.signal(libc::SIGHUP);
        let line = self
            .stderr
            .wait_nth(n, |l| l.contains(RELOADED) || l.contains(NOT_RELOADED))
            .await;
        self.assert_alive();
        line
    }

    /// A KooDrive POST as `user` with `token`.
    async fn koo(&self, user: &str, token: &str, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/koodrive/ose/v1/{path}", self.url))
            .header("authorization", format!("Bearer {token}"))
            .header("x-user-id", user)
            .header("x-date", now_compact())
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = resp.status().as_u16();
        let v = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, v)
    }

    /// A cheap authenticated call must succeed.
    async fn assert_accepted(&self, user: &str, token: &str) {
        let (status, v) = self.koo(user, token, "files/create", small_file()).await;
        assert_eq!(
            (status, &v["code"]),
            (200, &json!(0)),
            "{user} with token {token}: {v}"
        );
    }

    /// A cheap authenticated call must be refused as unknown credentials.
    async fn assert_refused(&self, user: &str, token: &str) {
        let (status, v) = self.koo(user, token, "files/create", small_file()).await;
        assert_eq!(
            (status, &v["code"]),
            (401, &json!(AUTH_FAILED)),
            "{user} with token {token}: {v}"
        );
    }

    /// Stops the server with SIGTERM; it must exit 0.
    async fn stop(mut self) {
        self.signal(libc::SIGTERM);
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("exit after SIGTERM")
            .unwrap();
        assert_eq!(status.code(), Some(0), "{status:?}\n{}", self.stderr.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_valid_file_and_keeps_the_set_on_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let alice = user("alice");
    let mut s = Server::start(dir.path(), &creds(vec![alice.clone()], vec![])).await;
    let path = s.creds_path.clone();
    let shown = path.display().to_string();
    s.assert_accepted("alice", &alice.token).await;

    // 1. Not JSON: the old token still works; the error names file and reason.
    write_file(&path, b"this is not JSON");
    let line = s.hangup(1).await;
    assert!(line.contains(NOT_RELOADED), "{line}");
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains(&shown), "{line}");
    assert!(line.contains("expected"), "no reason given: {line}");
    s.assert_accepted("alice", &alice.token).await;

    // 2. A second user, and a new token for the first.
    let alice2 = with_token("alice", "alice-second-token-0123456789");
    let bob = user("bob");
    write_creds(&path, &creds(vec![alice2.clone(), bob.clone()], vec![]));
    let line = s.hangup(2).await;
    assert!(
        line.contains(RELOADED) && !line.contains(NOT_RELOADED),
        "{line}"
    );
    assert!(line.contains("users=2"), "{line}");
    assert!(line.contains("shared_folders=0"), "{line}");
    s.assert_accepted("bob", &bob.token).await;
    s.assert_refused("alice", &alice.token).await;
    s.assert_accepted("alice", &alice2.token).await;

    // 3. Valid JSON that does not validate: the previous set stays.
    write_creds(&path, &duplicate_ids());
    let line = s.hangup(3).await;
    assert!(line.contains(NOT_RELOADED), "{line}");
    assert!(line.contains("appears twice"), "{line}");
    s.assert_accepted("bob", &bob.token).await;
    s.assert_accepted("alice", &alice2.token).await;
    s.assert_refused("alice", &alice.token).await;

    // 4. A missing file: kept too, and not created.
    std::fs::remove_file(&path).unwrap();
    let line = s.hangup(4).await;
    assert!(
        line.contains(NOT_RELOADED) && line.contains(&shown),
        "{line}"
    );
    assert!(!path.exists(), "a reload created the credentials file");
    s.assert_accepted("alice", &alice2.token).await;

    // Back to one user, with a shared folder.
    let team = SharedFolder {
        id: "team".into(),
        members: vec!["alice".into()],
    };
    write_creds(&path, &creds(vec![alice.clone()], vec![team]));
    let line = s.hangup(5).await;
    assert!(
        line.contains("users=1") && line.contains("shared_folders=1"),
        "{line}"
    );
    s.assert_accepted("alice", &alice.token).await;
    s.assert_refused("bob", &bob.token).await;
    assert_eq!(
        s.stderr.count(&|l: &str| l.contains(NOT_RELOADED)),
        3,
        "{}",
        s.stderr.text()
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_upload_in_flight_across_a_reload_completes() {
    let dir = tempfile::tempdir().unwrap();
    let alice = user("alice");
    let mut s = Server::start(dir.path(), &creds(vec![alice.clone()], vec![])).await;
    let bytes = data(256 << 10, 9);
    let (status, v) = s
        .koo(
            "alice",
            &alice.token,
            "files/create",
            json!({"fileName": "slow.bin", "fileType": "45", "length": bytes.len(),
                   "sha256": sha_hex(&bytes), "uploadMode": "put"}),
        )
        .await;
    assert_eq!((status, &v["code"]), (200, &json!(0)), "{v}");
    let id = v["fileId"].as_str().expect("fileId").to_owned();
    let url = v["uploadUrl"].as_str().expect("uploadUrl").to_owned();

    // The first half now, the second once the reload is done.
    let (first, second) = bytes.split_at(bytes.len() / 2);
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let halves = vec![first.to_vec(), second.to_vec()];
    let mut go = Some(go_rx);
    let body = futures_util::stream::iter(halves.into_iter().enumerate()).then(move |(i, h)| {
        let wait = if i == 1 { go.take() } else { None };
        async move {
            if let Some(w) = wait {
                let _ = w.await;
            }
            Ok::<_, std::io::Error>(h)
        }
    });
    let put = s
        .http
        .put(&url)
        .header("content-length", bytes.len())
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let upload = tokio::spawn(async move {
        let resp = put.await?;
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_matches('"').to_owned());
        let text = resp.text().await?;
        Ok::<_, reqwest::Error>((status, etag, text))
    });
    s.stderr
        .wait_nth(1, |l| {
            l.contains("started processing request") && l.contains("path=/upload/")
        })
        .await;

    // Alice's token changes while the part is half sent.
    let alice2 = with_token("alice", "alice-second-token-0123456789");
    write_creds(&s.creds_path, &creds(vec![alice2.clone()], vec![]));
    let line = s.hangup(1).await;
    assert!(
        line.contains(RELOADED) && !line.contains(NOT_RELOADED),
        "{line}"
    );
    assert!(!upload.is_finished(), "the PUT ended before the reload");
    go_tx.send(()).unwrap();

    let (status, etag, text) = tokio::time::timeout(HTTP, upload)
        .await
        .expect("the PUT in flight answers")
        .unwrap()
        .unwrap_or_else(|e| panic!("the PUT in flight failed: {e}"));
    assert_eq!(status, 200, "{text}");
    assert_eq!(etag.as_deref(), Some(sha_hex(&bytes).as_str()));

    // Completed with the new token; the old one is refused.
    s.assert_refused("alice", &alice.token).await;
    let (status, v) = s
        .koo(
            "alice",
            &alice2.token,
            "files/complete",
            json!({"fileId": id, "sha256": sha_hex(&bytes)}),
        )
        .await;
    assert_eq!((status, &v["code"]), (200, &json!(0)), "{v}");
    assert_eq!(v["length"], bytes.len(), "{v}");
    s.stop().await;
}
