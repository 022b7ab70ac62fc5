//! The real `partseal-server` binary, run as a child process: start-up on an
//! ephemeral port, the development credentials written on first start and
//! reused after, a KooDrive upload through it, graceful shutdown on SIGTERM
//! and SIGINT with an upload in flight (and right after start-up), the
//! shutdown grace period cutting clients that never finish, the header
//! timeout and the connection limit, `--help`, start-up failures, the parts
//! of an upload listed after a restart, and `--upload-ttl-secs` expiry.
//!
//! Every wait is bounded, so a server that hangs fails the test instead of
//! blocking CI; the child is killed when its handle is dropped.

use std::future::Future;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use partseal_server::auth::format_compact_date;
use partseal_server::config::Credentials;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_partseal-server");
/// From spawn to the `listening on` line.
const START: Duration = Duration::from_secs(30);
/// One HTTP exchange.
const HTTP: Duration = Duration::from_secs(30);
/// From a signal (or a failed start) to the exit of the process.
const EXIT: Duration = Duration::from_secs(10);
/// Flags of the test that bounds the shutdown.
const GRACE_ARGS: &[&str] = &["--shutdown-grace-secs", "2"];
const LISTENING: &str = "partseal-server: listening on http://";

/// Awaits `fut`, failing the test if it takes longer than `limit`.
async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// The lines a child writes to one of its pipes, read as they come.
#[derive(Clone, Default)]
struct Lines(Arc<LinesInner>);

#[derive(Default)]
struct LinesInner {
    lines: Mutex<Vec<String>>,
    eof: AtomicBool,
}

impl Lines {
    /// Reads `r` to its end in the background (so the child never blocks
    /// on a full pipe).
    fn drain(r: impl AsyncRead + Unpin + Send + 'static) -> Lines {
        let lines = Lines::default();
        let l = lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(r).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                l.0.lines.lock().unwrap().push(line);
            }
            l.0.eof.store(true, Ordering::SeqCst);
        });
        lines
    }

    fn all(&self) -> Vec<String> {
        self.0.lines.lock().unwrap().clone()
    }

    fn text(&self) -> String {
        self.all().join("\n")
    }

    fn find(&self, pred: &impl Fn(&str) -> bool) -> Option<usize> {
        self.0.lines.lock().unwrap().iter().position(|l| pred(l))
    }

    /// The index of the first line that `pred` accepts, waiting up to
    /// `limit` for it; `None` when the pipe closes or time runs out first.
    async fn wait_for(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> Option<usize> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(i) = self.find(&pred) {
                return Some(i);
            }
            // Look once more after the end: the last lines may have come
            // in between.
            if self.0.eof.load(Ordering::SeqCst) {
                return self.find(&pred);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A running `partseal-server`.
struct Server {
    child: Child,
    addr: SocketAddr,
    url: String,
    /// stdout up to and including the `listening on` line.
    banner: Vec<String>,
    stdout: Lines,
    stderr: Lines,
}

/// The binary with `args`, no `PARTSEAL_*` variables from the caller's
/// environment, and the request and connection log on (to see when a
/// connection is accepted and a request is in a handler).
fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env(
            "RUST_LOG",
            "info,tower_http=debug,partseal_server::serve=debug",
        )
        .kill_on_drop(true);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PARTSEAL_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

impl Server {
    /// Starts the binary on an ephemeral loopback port over `data` and waits
    /// for its `listening on` line.
    async fn start(data: &Path, extra: &[&str]) -> Server {
        let data = data.to_str().unwrap();
        let mut args = vec!["--listen", "127.0.0.1:0", "--data", data];
        args.extend_from_slice(extra);
        let mut child = command(&args).spawn().expect("spawn partseal-server");
        let stdout = Lines::drain(child.stdout.take().unwrap());
        let stderr = Lines::drain(child.stderr.take().unwrap());
        let Some(i) = stdout.wait_for(START, |l| l.starts_with(LISTENING)).await else {
            let status = child.try_wait().ok().flatten();
            panic!(
                "no `listening on` line within {START:?} (exit status {status:?})\n\
                 stdout:\n{}\nstderr:\n{}",
                stdout.text(),
                stderr.text()
            );
        };
        let banner: Vec<String> = stdout.all()[..=i].to_vec();
        // "partseal-server: listening on http://127.0.0.1:PORT, store in DIR"
        let line = &banner[i];
        let rest = &line[LISTENING.len()..];
        let (hostport, store) = rest
            .split_once(", store in ")
            .unwrap_or_else(|| panic!("unexpected listening line: {line}"));
        assert_eq!(store, data, "{line}");
        let addr: SocketAddr = hostport
            .parse()
            .unwrap_or_else(|e| panic!("no address in {line:?}: {e}"));
        assert!(addr.ip().is_loopback() && addr.port() != 0, "{line}");
        Server {
            child,
            addr,
            url: format!("http://{addr}"),
            banner,
            stdout,
            stderr,
        }
    }

    fn pid(&self) -> libc::pid_t {
        self.child.id().expect("the server is still running") as libc::pid_t
    }

    /// Sends `sig` to the server.
    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on the pid of our own child, which has not been
        // reaped yet (`id()` returns None after that), so the pid is its own.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Waits for the process to exit on its own.
    async fn wait_exit(&mut self, what: &str) -> ExitStatus {
        let status = tokio::time::timeout(EXIT, self.child.wait()).await;
        match status {
            Ok(s) => s.expect("wait for partseal-server"),
            Err(_) => panic!(
                "partseal-server did not exit within {EXIT:?} ({what})\nstderr:\n{}",
                self.stderr.text()
            ),
        }
    }

    /// Sends `sig` and waits for an exit with status 0.
    async fn stop(&mut self, sig: libc::c_int) {
        self.signal(sig);
        let status = self.wait_exit("after a signal").await;
        assert_eq!(
            status.code(),
            Some(0),
            "exit status {status:?}\nstderr:\n{}",
            self.stderr.text()
        );
        assert_refused(self.addr);
    }

    /// Waits until a PUT to an upload URL is in its handler.
    async fn wait_for_upload_handler(&self) {
        let in_handler = self
            .stderr
            .wait_for(HTTP, |l| {
                l.contains("started processing request") && l.contains("path=/upload/")
            })
            .await;
        assert!(
            in_handler.is_some(),
            "the PUT never reached a handler:\n{}",
            self.stderr.text()
        );
    }

    fn koo(&self, creds: &Credentials) -> Koo {
        let u = &creds.users[0];
        Koo {
            base: format!("{}/koodrive/ose/v1", self.url),
            http: client(),
            user: u.id.clone(),
            token: u.token.clone(),
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(HTTP).build().unwrap()
}

/// A TCP connection to `addr` must be refused.
fn assert_refused(addr: SocketAddr) {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(_) => panic!("{addr} still accepts connections"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
    }
}

/// A KooDrive client for one user.
struct Koo {
    base: String,
    http: reqwest::Client,
    user: String,
    token: String,
}

impl Koo {
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let req = self
            .http
            .post(format!("{}/{path}", self.base))
            .header("authorization", format!("Bearer {}", self.token))
            .header("x-user-id", &self.user)
            .header(
                "x-date",
                format_compact_date(time::OffsetDateTime::now_utc()),
            )
            .json(&body);
        let resp = within(HTTP, path, req.send())
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = resp.status().as_u16();
        let v = within(HTTP, path, resp.json::<Value>())
            .await
            .unwrap_or_else(|e| panic!("POST {path}: the answer is not JSON: {e}"));
        (status, v)
    }

    /// `files/create` in put mode; returns the file id and the upload URL.
    async fn create_put(&self, name: &str, bytes: &[u8]) -> (String, String) {
        let (status, v) = self
            .post(
                "files/create",
                json!({"fileName": name, "fileType": "45", "length": bytes.len(),
                       "sha256": sha_hex(bytes), "uploadMode": "put"}),
            )
            .await;
        assert_eq!((status, &v["code"]), (200, &json!(0)), "{v}");
        assert_eq!(v["rapidUpload"], false, "{v}");
        let id = v["fileId"].as_str().expect("fileId").to_owned();
        let url = v["uploadUrl"].as_str().expect("uploadUrl").to_owned();
        (id, url)
    }

    /// `files/complete` with the SHA-256; it must succeed.
    async fn complete(&self, id: &str, bytes: &[u8]) -> Value {
        let (status, v) = self
            .post(
                "files/complete",
                json!({"fileId": id, "sha256": sha_hex(bytes)}),
            )
            .await;
        assert_eq!((status, &v["code"]), (200, &json!(0)), "{v}");
        assert_eq!(v["msg"], "success.", "{v}");
        assert_eq!(v["sha256"], sha_hex(bytes), "{v}");
        assert_eq!(v["length"], bytes.len(), "{v}");
        v
    }

    /// `files/{id}/detail` must show the committed file with these bytes.
    async fn assert_stored(&self, id: &str, name: &str, bytes: &[u8]) {
        let (status, v) = self.post(&format!("files/{id}/detail"), json!({})).await;
        assert_eq!((status, &v["code"]), (200, &json!(0)), "{v}");
        assert_eq!(v["id"], id, "{v}");
        assert_eq!(v["fileName"], name, "{v}");
        assert_eq!(v["size"], bytes.len(), "{v}");
        assert_eq!(v["sha256"], sha_hex(bytes), "{v}");
    }
}

/// PUTs `bytes` to an upload URL in one piece; returns the status and ETag.
async fn put(http: &reqwest::Client, url: &str, bytes: Vec<u8>) -> (u16, String) {
    let resp = within(HTTP, "PUT", http.put(url).body(bytes).send())
        .await
        .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
    let status = resp.status().as_u16();
    let etag = resp
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().trim_matches('"').to_owned());
    let text = within(HTTP, "PUT body", resp.text()).await.unwrap();
    (status, etag.unwrap_or(text))
}

type PutResult = Result<(u16, Option<String>, String), reqwest::Error>;

/// Starts a PUT of `bytes` to `url` that sends a `chunk`-byte piece every
/// `delay`; returns the count of pieces sent so far and the request's task.
fn slow_put(
    url: &str,
    bytes: &[u8],
    chunk: usize,
    delay: Duration,
) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<PutResult>) {
    let sent = Arc::new(AtomicUsize::new(0));
    let chunks: Vec<Vec<u8>> = bytes.chunks(chunk).map(<[u8]>::to_vec).collect();
    let counter = sent.clone();
    let body = futures_util::stream::iter(chunks).then(move |c| {
        let counter = counter.clone();
        async move {
            tokio::time::sleep(delay).await;
            counter.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(c)
        }
    });
    let req = reqwest::Client::new()
        .put(url)
        .header("content-length", bytes.len())
        .body(reqwest::Body::wrap_stream(body));
    let task = tokio::spawn(async move {
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_matches('"').to_owned());
        let text = resp.text().await?;
        Ok((status, etag, text))
    });
    (sent, task)
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

fn sha_hex(b: &[u8]) -> String {
    partseal::Sha256::digest(b).to_hex()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Checks the credentials file against the documented shape and returns it.
fn read_credentials(path: &Path) -> (Vec<u8>, Credentials) {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: Value = serde_json::from_slice(&raw).expect("the credentials file is JSON");
    let obj = v.as_object().expect("a JSON object");
    for k in obj.keys() {
        assert!(
            k == "users" || k == "shared_folders",
            "unexpected key {k:?}: {v}"
        );
    }
    let users = v["users"].as_array().expect("users is an array");
    assert_eq!(users.len(), 1, "one development user: {v}");
    let u = users[0].as_object().expect("a user is an object");
    let mut keys: Vec<&str> = u.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["access_key", "id", "project_id", "secret_key", "token"],
        "{v}"
    );
    for (k, val) in u {
        let s = val
            .as_str()
            .unwrap_or_else(|| panic!("{k} is a string: {v}"));
        assert!(!s.is_empty(), "{k} is empty: {v}");
    }
    assert!(u["token"].as_str().unwrap().len() >= 16, "{v}");
    assert!(u["secret_key"].as_str().unwrap().len() >= 16, "{v}");
    if let Some(f) = v.get("shared_folders") {
        assert!(f.as_array().is_some(), "shared_folders is an array: {v}");
    }
    let creds: Credentials = serde_json::from_value(v.clone()).unwrap();
    creds.validate().unwrap();
    (raw, creds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_writes_dev_credentials_and_a_restart_reuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let cred_path = dir.path().join("credentials.json");
    let mut s = Server::start(dir.path(), &[]).await;

    // The file: documented shape, one user, readable by the owner only.
    let (raw, creds) = read_credentials(&cred_path);
    assert_eq!(mode(&cred_path), 0o600);
    assert_eq!(mode(&dir.path().join("url-signing.key")), 0o600);
    let u = creds.users[0].clone();

    // The banner says where the user is and how to use it, but keeps the
    // secrets in the file.
    let banner = s.banner.join("\n");
    assert!(
        banner.contains(&format!(
            "created a development user in {}",
            cred_path.display()
        )),
        "{banner}"
    );
    assert!(banner.contains(&format!("X-User-Id: {}", u.id)), "{banner}");
    assert!(banner.contains(&u.access_key), "{banner}");
    assert!(banner.contains(&u.project_id), "{banner}");
    assert!(
        banner.contains(&format!("curl -X POST {}/", s.url)),
        "{banner}"
    );

    // A put-mode upload and complete through the binary.
    let koo = s.koo(&creds);
    let bytes = data(300_000, 1);
    let (id, url) = koo.create_put("first.bin", &bytes).await;
    let (status, etag) = put(&koo.http, &url, bytes.clone()).await;
    assert_eq!((status, etag.as_str()), (200, sha_hex(&bytes).as_str()));
    koo.complete(&id, &bytes).await;
    koo.assert_stored(&id, "first.bin", &bytes).await;
    // An upload left open over the restart; its URL must still work after.
    let later = data(70_000, 2);
    let (later_id, later_url) = koo.create_put("later.bin", &later).await;

    // SIGINT stops it like SIGTERM.
    s.stop(libc::SIGINT).await;
    let out = s.stdout.text() + "\n" + &s.stderr.text();
    assert!(!out.contains(&u.token), "the token was printed:\n{out}");
    assert!(!out.contains(&u.secret_key), "the SK was printed:\n{out}");

    // A second start reuses the file: same bytes, no new user, no secrets.
    let mut s = Server::start(dir.path(), &[]).await;
    let banner = s.banner.join("\n");
    assert!(
        banner.contains(&format!("1 user(s) from {}", cred_path.display())),
        "{banner}"
    );
    assert!(!banner.contains("created"), "{banner}");
    for secret in [&u.token, &u.secret_key, &u.access_key] {
        assert!(!banner.contains(secret.as_str()), "{banner}");
    }
    assert_eq!(std::fs::read(&cred_path).unwrap(), raw);
    assert_eq!(mode(&cred_path), 0o600);

    let koo = s.koo(&creds);
    koo.assert_stored(&id, "first.bin", &bytes).await;
    // The URL names the old port (the public URL defaults to the listening
    // address); its path and signature are what must survive.
    let path = &later_url[later_url.find("/upload/").unwrap()..];
    let later_url = format!("{}{path}", s.url);
    let (status, etag) = put(&koo.http, &later_url, later.clone()).await;
    assert_eq!((status, etag.as_str()), (200, sha_hex(&later).as_str()));
    koo.complete(&later_id, &later).await;
    koo.assert_stored(&later_id, "later.bin", &later).await;
    // Someone without the token gets nothing.
    let stranger = Koo {
        token: "not-the-token-0123456789".into(),
        ..s.koo(&creds)
    };
    let (status, v) = stranger
        .post(&format!("files/{id}/detail"), json!({}))
        .await;
    assert_eq!(status, 401, "{v}");

    s.stop(libc::SIGTERM).await;
    let out = s.stdout.text() + "\n" + &s.stderr.text();
    assert!(!out.contains(&u.token) && !out.contains(&u.secret_key));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_upload_in_flight_finish_then_exits() {
    const CHUNK: usize = 32 << 10;
    const CHUNKS: usize = 40;
    const DELAY: Duration = Duration::from_millis(75);

    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &[]).await;
    let (_, creds) = read_credentials(&dir.path().join("credentials.json"));
    let koo = s.koo(&creds);
    let bytes = data(CHUNK * CHUNKS, 3);
    let (id, url) = koo.create_put("slow.bin", &bytes).await;
    // `koo.http` now holds an idle keep-alive connection; a connection that
    // never sends a byte is open too. Neither may hold the shutdown up.
    let _silent = TcpStream::connect(s.addr).unwrap();

    // A slow PUT: one chunk every DELAY, about three seconds in all.
    let (sent, upload) = slow_put(&url, &bytes, CHUNK, DELAY);

    // Signal once the server is in the handler of the PUT.
    s.wait_for_upload_handler().await;
    s.signal(libc::SIGTERM);
    assert!(
        s.stderr
            .wait_for(EXIT, |l| l.contains("shutting down"))
            .await
            .is_some(),
        "no shutdown message:\n{}",
        s.stderr.text()
    );

    // It stops accepting at once, while the upload goes on.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match TcpStream::connect_timeout(&s.addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "still accepting after SIGTERM: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert!(
        sent.load(Ordering::SeqCst) < CHUNKS,
        "the upload ended before the listener closed; the test proves nothing"
    );
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "exited with a request in flight"
    );

    // The upload in flight finishes and is acknowledged.
    let (status, etag, text) = within(HTTP, "the PUT in flight", upload)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("the PUT in flight failed: {e}"));
    assert_eq!(sent.load(Ordering::SeqCst), CHUNKS);
    assert_eq!(status, 200, "{text}");
    assert_eq!(etag.as_deref(), Some(sha_hex(&bytes).as_str()));

    // Then the process exits, 0, soon.
    let finished = Instant::now();
    let status = s.wait_exit("after the PUT in flight finished").await;
    assert_eq!(
        status.code(),
        Some(0),
        "{status:?}\nstderr:\n{}",
        s.stderr.text()
    );
    assert!(
        finished.elapsed() < Duration::from_secs(5),
        "{:?} from the last response to the exit",
        finished.elapsed()
    );
    assert_refused(s.addr);
    assert!(s.stderr.text().contains("stopped"), "{}", s.stderr.text());
    // Nothing half-written is left behind.
    let tmp: Vec<_> = std::fs::read_dir(dir.path().join("tmp"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(tmp.is_empty(), "left in tmp/: {tmp:?}");

    // After a restart on the same store the part is there: complete works.
    let mut s = Server::start(dir.path(), &[]).await;
    let koo = s.koo(&creds);
    koo.complete(&id, &bytes).await;
    koo.assert_stored(&id, "slow.bin", &bytes).await;
    s.stop(libc::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_in_bounded_time_despite_a_half_sent_request() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), GRACE_ARGS).await;
    // A client that sends half a request head and then nothing (gone
    // without a FIN, or malicious) must not keep the server up for ever.
    let mut half = TcpStream::connect(s.addr).unwrap();
    half.write_all(b"PUT /upload/koodrive/x/1 HTTP/1.1\r\n")
        .unwrap();
    assert!(
        s.stderr
            .wait_for(HTTP, |l| l.contains("accepted"))
            .await
            .is_some(),
        "the connection was never accepted:\n{}",
        s.stderr.text()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let signalled = Instant::now();
    s.signal(libc::SIGTERM);
    let status = s.wait_exit("with a half-sent request open").await;
    assert_eq!(status.code(), Some(0), "{}", s.stderr.text());
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(7),
        "{took:?} from SIGTERM to the exit; the grace is 2 s"
    );
    assert!(
        s.stderr.text().contains("grace period"),
        "{}",
        s.stderr.text()
    );
    assert_refused(s.addr);
    drop(half);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_cuts_a_never_ending_upload_after_the_grace_and_keeps_none_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), GRACE_ARGS).await;
    let (_, creds) = read_credentials(&dir.path().join("credentials.json"));
    let koo = s.koo(&creds);
    let bytes = data(100 << 10, 4);
    let (id, url) = koo.create_put("trickle.bin", &bytes).await;
    // 1 KiB every 300 ms: 30 s in all, never stalling long enough for the
    // body timeout.
    let (sent, upload) = slow_put(&url, &bytes, 1 << 10, Duration::from_millis(300));
    s.wait_for_upload_handler().await;
    let signalled = Instant::now();
    s.signal(libc::SIGTERM);
    let status = s.wait_exit("with an upload trickling in").await;
    assert_eq!(status.code(), Some(0), "{}", s.stderr.text());
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_secs(7),
        "{took:?} from SIGTERM to the exit; the grace is 2 s"
    );
    assert!(sent.load(Ordering::SeqCst) < 100);
    let cut = within(HTTP, "the cut PUT", upload).await.unwrap();
    assert!(cut.is_err(), "the cut PUT got an answer: {cut:?}");

    // Nothing of the cut part is kept: complete finds it missing, and the
    // whole part sent again is taken.
    let mut s = Server::start(dir.path(), GRACE_ARGS).await;
    let koo = s.koo(&creds);
    let (status, v) = koo
        .post(
            "files/complete",
            json!({"fileId": id, "sha256": sha_hex(&bytes)}),
        )
        .await;
    assert_eq!((status, &v["code"]), (400, &json!(13000421)), "{v}");
    let tmp = std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
    assert_eq!(tmp, 0, "tmp/ is not empty after recovery");
    let path = &url[url.find("/upload/").unwrap()..];
    let (status, etag) = put(&koo.http, &format!("{}{path}", s.url), bytes.clone()).await;
    assert_eq!((status, etag.as_str()), (200, sha_hex(&bytes).as_str()));
    koo.complete(&id, &bytes).await;
    koo.assert_stored(&id, "trickle.bin", &bytes).await;
    s.stop(libc::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_right_after_the_listening_line_is_graceful() {
    // From the `listening on` line on, SIGTERM must be the graceful stop,
    // never the default action (death by signal).
    for i in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Server::start(dir.path(), &[]).await;
        s.signal(libc::SIGTERM);
        let status = s.wait_exit("SIGTERM right after the start").await;
        assert_eq!(
            status.code(),
            Some(0),
            "start {i}: {status:?}\nstderr:\n{}",
            s.stderr.text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_lists_the_flags() {
    let out = within(EXIT, "--help", command(&["--help"]).output())
        .await
        .unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--listen",
        "--data",
        "--credentials",
        "--public-url",
        "--min-part-size",
        "--max-part-size",
        "--max-file-size",
        "--max-json-body",
        "--body-timeout-secs",
        "--date-window-secs",
        "--url-ttl-secs",
        "--shutdown-grace-secs",
        "--header-timeout-secs",
        "--max-connections",
        "--max-parts-in-flight",
        "PARTSEAL_HEADER_TIMEOUT_SECS",
        "PARTSEAL_MAX_CONNECTIONS",
        "PARTSEAL_MAX_PARTS_IN_FLIGHT",
        "--help",
        "--version",
        "PARTSEAL_LISTEN",
        "PARTSEAL_DATA",
        "PARTSEAL_CREDENTIALS",
        "127.0.0.1:8080",
    ] {
        assert!(
            help.contains(flag),
            "--help does not mention {flag}:\n{help}"
        );
    }
}

/// Runs the binary until it exits on its own; returns status, stdout, stderr.
async fn run_to_exit(args: &[&str]) -> (ExitStatus, String, String) {
    let out = within(EXIT, "a start that must fail", command(args).output())
        .await
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_credentials_file_stops_the_start_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let good_user = json!({"id": "ops", "token": "0123456789abcdef0123",
        "access_key": "AKOPS", "secret_key": "fedcba9876543210fedc", "project_id": "p1"});
    let mut short_token = good_user.clone();
    short_token["token"] = json!("short");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not-json.json", b"{\"users\": [".to_vec()),
        ("wrong-shape.json", br#"{"users": 5}"#.to_vec()),
        (
            "missing-field.json",
            br#"{"users": [{"id": "ops"}]}"#.to_vec(),
        ),
        (
            "short-token.json",
            serde_json::to_vec(&json!({"users": [short_token]})).unwrap(),
        ),
        (
            "twice.json",
            serde_json::to_vec(&json!({"users": [good_user, good_user]})).unwrap(),
        ),
        ("empty.json", Vec::new()),
        (
            "user-is-folder.json",
            serde_json::to_vec(&json!({"users": [good_user],
                "shared_folders": [{"id": "ops", "members": ["ops"]}]}))
            .unwrap(),
        ),
    ];
    for (name, content) in &cases {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let store = dir.path().join(format!("store-{name}"));
        let (status, stdout, stderr) = run_to_exit(&[
            "--listen",
            "127.0.0.1:0",
            "--data",
            store.to_str().unwrap(),
            "--credentials",
            path.to_str().unwrap(),
        ])
        .await;
        assert!(!status.success(), "{name}: started anyway\n{stdout}");
        assert!(
            stderr.contains(&format!("credentials file {}", path.display())),
            "{name}: the message does not name the file:\n{stderr}"
        );
        assert!(!stdout.contains("listening"), "{name}: {stdout}");
        if *name == "user-is-folder.json" {
            assert!(
                stderr.contains("\"ops\" is both a user id and a shared folder id"),
                "{name}: the id is not named:\n{stderr}"
            );
        }
        assert_eq!(&std::fs::read(&path).unwrap(), content, "{name}: rewritten");
    }

    // At the default place, DATA/credentials.json, too.
    let store = dir.path().join("store-default");
    std::fs::create_dir(&store).unwrap();
    let path = store.join("credentials.json");
    std::fs::write(&path, b"[]").unwrap();
    let (status, _, stderr) =
        run_to_exit(&["--listen", "127.0.0.1:0", "--data", store.to_str().unwrap()]).await;
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("credentials file {}", path.display())),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"[]");

    // A file that cannot be read at all (a directory).
    let path = dir.path().join("a-directory.json");
    std::fs::create_dir(&path).unwrap();
    let (status, _, stderr) = run_to_exit(&[
        "--listen",
        "127.0.0.1:0",
        "--data",
        store.to_str().unwrap(),
        "--credentials",
        path.to_str().unwrap(),
    ])
    .await;
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("credentials file {}", path.display())),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, stdout, stderr) =
        run_to_exit(&["--listen", &addr, "--data", dir.path().to_str().unwrap()]).await;
    assert!(!status.success(), "{stdout}");
    assert!(!stdout.contains("listening"), "{stdout}");
    assert!(stderr.contains("partseal-server: "), "{stderr}");
    drop(taken);
}

/// A data directory that does not exist yet is created, credentials and all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_data_directory_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let data: PathBuf = dir.path().join("a").join("b");
    let mut s = Server::start(&data, &[]).await;
    let (_, creds) = read_credentials(&data.join("credentials.json"));
    assert_eq!(creds.users.len(), 1);
    s.stop(libc::SIGTERM).await;
}

/// Reads from `tcp` until the server closes it (EOF or reset); `None` if it
/// is still open after `limit`. Sends one more header byte every 200 ms in
/// the meantime, as a slow client would.
async fn trickle_until_closed(mut tcp: tokio::net::TcpStream, limit: Duration) -> Option<Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let start = Instant::now();
    if tcp
        .write_all(b"PUT /upload/koodrive/x/1 HTTP/1.1\r\nHost: x\r\n")
        .await
        .is_err()
    {
        return Some(start.elapsed());
    }
    let mut buf = [0u8; 1024];
    while start.elapsed() < limit {
        tokio::select! {
            r = tcp.read(&mut buf) => match r {
                Ok(0) | Err(_) => return Some(start.elapsed()),
                // A 408 or the like before the close is fine too.
                Ok(_) => {}
            },
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                if tcp.write_all(b"X").await.is_err() {
                    return Some(start.elapsed());
                }
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_headers_are_cut_off_after_the_header_timeout() {
    const CLIENTS: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &["--header-timeout-secs", "1"]).await;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        clients.push(tokio::spawn(trickle_until_closed(
            tcp,
            Duration::from_secs(20),
        )));
    }
    let mut open = 0;
    for c in clients {
        match within(HTTP, "a trickling client", c).await.unwrap() {
            // Cut by the timeout, not by anything sooner.
            Some(after) => assert!(after >= Duration::from_millis(500), "cut after {after:?}"),
            None => open += 1,
        }
    }
    assert_eq!(
        open, 0,
        "{open} of {CLIENTS} trickling connections still open after 20 s"
    );
    // The server still answers.
    let resp = within(
        HTTP,
        "GET /openapi.json",
        client().get(format!("{}/openapi.json", s.url)).send(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    s.stop(libc::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_refused_with_503() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &["--max-connections", "2"]).await;
    // Two connections that send nothing hold both places.
    let idle: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(s.addr).unwrap())
        .collect();
    let accepted = |l: &str| l.contains("connection accepted");
    let deadline = Instant::now() + HTTP;
    while s.stderr.all().iter().filter(|l| accepted(l)).count() < 2 {
        assert!(
            Instant::now() < deadline,
            "not accepted:\n{}",
            s.stderr.text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A third gets a 503 in the dialect of the API it calls, and is closed.
    for (path, field, code) in [
        ("/koodrive/ose/v1/files/create", "code", json!(13000424)),
        ("/v1/p/files", "error_code", json!("MSS.10001024")),
        (
            "/upload/metastudio/x/1",
            "error_code",
            json!("MSS.10001024"),
        ),
    ] {
        let resp = within(
            HTTP,
            path,
            client().post(format!("{}{path}", s.url)).body("{}").send(),
        )
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(resp.status(), 503, "{path}");
        assert_eq!(resp.headers()["retry-after"], "2", "{path}");
        assert_eq!(resp.headers()["connection"], "close", "{path}");
        // As every API answer (an upload URL's are not).
        assert_eq!(
            resp.headers().contains_key("x-request-id"),
            !path.starts_with("/upload/"),
            "{path}"
        );
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v[field], code, "{path}: {v}");
    }

    // Once the idle ones go, there is room again.
    drop(idle);
    let deadline = Instant::now() + HTTP;
    loop {
        let resp = within(
            HTTP,
            "GET /openapi.json",
            client().get(format!("{}/openapi.json", s.url)).send(),
        )
        .await
        .unwrap();
        if resp.status() == 200 {
            break;
        }
        assert_eq!(resp.status(), 503);
        assert!(
            Instant::now() < deadline,
            "no room after the idle connections closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.stop(libc::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_after_a_restart_gives_the_parts_acknowledged_before_it() {
    const PART: usize = 4096;
    let dir = tempfile::tempdir().unwrap();
    let args = ["--min-part-size", "1024"];
    let mut s = Server::start(dir.path(), &args).await;
    let (_, creds) = read_credentials(&dir.path().join("credentials.json"));
    let koo = s.koo(&creds);
    let bytes = data(PART * 3, 7);
    let plan: Vec<Value> = (1..=3)
        .map(|n| json!({"partNumber": n, "partSize": PART}))
        .collect();
    let (status, v) = koo
        .post(
            "files/create",
            json!({"fileName": "r.bin", "fileType": "45", "length": bytes.len(),
                   "multiParts": plan}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let id = v["fileId"].as_str().unwrap().to_owned();
    let urls: Vec<String> = v["multiParts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["uploadUrl"].as_str().unwrap().to_owned())
        .collect();
    for n in [3, 1] {
        let chunk = bytes[(n - 1) * PART..n * PART].to_vec();
        assert_eq!(put(&koo.http, &urls[n - 1], chunk).await.0, 200, "part {n}");
    }
    s.stop(libc::SIGTERM).await;

    let mut s = Server::start(dir.path(), &args).await;
    let koo = s.koo(&creds);
    let (status, v) = koo
        .post("files/multipart/list", json!({"fileId": id}))
        .await;
    assert_eq!((status, &v["code"]), (200, &json!(0)), "{v}");
    let listed: Vec<(u64, u64, String)> = v["multiParts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["partNumber"].as_u64().unwrap(),
                p["partSize"].as_u64().unwrap(),
                p["sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<(u64, u64, String)> = [1usize, 3]
        .iter()
        .map(|&n| {
            let chunk = &bytes[(n - 1) * PART..n * PART];
            (n as u64, PART as u64, sha_hex(chunk))
        })
        .collect();
    assert_eq!(listed, want, "{v}");

    // The client sends what is missing (its URL names the old port) and
    // completes; the new server's download URL gives the file back.
    let path = &urls[1][urls[1].find("/upload/").unwrap()..];
    let chunk = bytes[PART..2 * PART].to_vec();
    assert_eq!(
        put(&koo.http, &format!("{}{path}", s.url), chunk).await.0,
        200
    );
    koo.complete(&id, &bytes).await;
    let (status, v) = koo.post(&format!("files/{id}/detail"), json!({})).await;
    assert_eq!(status, 200, "{v}");
    let url = v["downloadUrl"].as_str().unwrap();
    assert!(url.starts_with(&s.url), "{url}");
    let resp = within(HTTP, "download", koo.http.get(url).send())
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let got = within(HTTP, "download body", resp.bytes()).await.unwrap();
    assert!(
        got.as_ref() == bytes.as_slice(),
        "the downloaded bytes are the file"
    );
    s.stop(libc::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_ttl_secs_expires_idle_uploads_and_logs_each() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &["--upload-ttl-secs", "1"]).await;
    let (_, creds) = read_credentials(&dir.path().join("credentials.json"));
    let koo = s.koo(&creds);
    let bytes = data(2000, 8);
    let (id, url) = koo.create_put("idle.bin", &bytes).await;
    assert_eq!(put(&koo.http, &url, bytes.clone()).await.0, 200);
    let logged = s
        .stderr
        .wait_for(Duration::from_secs(15), |l| {
            l.contains("upload expired") && l.contains(&id)
        })
        .await;
    let Some(i) = logged else {
        panic!("no expiry logged for {id}:\n{}", s.stderr.text());
    };
    let line = &s.stderr.all()[i];
    assert!(
        line.contains("owner=user:dev") && line.contains("idle_secs="),
        "{line}"
    );
    assert!(
        !dir.path().join("uploads").join(&id).exists(),
        "the bytes are gone"
    );
    let (status, v) = koo
        .post(
            "files/complete",
            json!({"fileId": id, "sha256": sha_hex(&bytes)}),
        )
        .await;
    assert_eq!((status, &v["code"]), (400, &json!(13000401)), "{v}");
    s.stop(libc::SIGTERM).await;
    let out = s.stdout.text() + "\n" + &s.stderr.text();
    assert!(!out.contains(&creds.users[0].token), "the token was logged");
}

/// Flag values the server could not run with stop the start with a message
/// naming the flag, instead of a server that starts and then fails every
/// request (a timeout past the clock's end) or hands out URLs dead on
/// arrival (a TTL that overflows the expiry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flag_values_it_cannot_run_with_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let data = data.to_str().unwrap();
    let huge = "18446744073709551615";
    let cases: &[(&[&str], &str)] = &[
        (&["--header-timeout-secs", huge], "--header-timeout-secs"),
        (&["--url-ttl-secs", "9223372036854775807"], "--url-ttl-secs"),
        (&["--body-timeout-secs", huge], "--body-timeout-secs"),
        (&["--shutdown-grace-secs", huge], "--shutdown-grace-secs"),
        (&["--body-timeout-secs", "0"], "--body-timeout-secs"),
        (&["--max-part-size", "0"], "--max-part-size"),
        (&["--max-file-size", "0"], "--max-file-size"),
        (&["--max-json-body", "0"], "--max-json-body"),
        (&["--public-url", "abc"], "--public-url"),
        (&["--public-url", "ftp://x"], "--public-url"),
        (&["--public-url", "http://h/?q=1"], "--public-url"),
        (
            &["--min-part-size", "10", "--max-part-size", "5"],
            "--min-part-size",
        ),
    ];
    for (flags, named) in cases {
        let mut args = vec!["--listen", "127.0.0.1:0", "--data", data];
        args.extend_from_slice(flags);
        let (status, stdout, stderr) = run_to_exit(&args).await;
        assert!(!status.success(), "{flags:?}: started anyway\n{stdout}");
        assert!(stderr.contains(named), "{flags:?}: {stderr}");
        assert!(!stdout.contains("listening"), "{flags:?}: {stdout}");
    }
}

/// A client that shuts down its side of the connection once its part is
/// sent still gets its answer, and the part is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_half_closes_after_its_body_gets_its_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &["--min-part-size", "1024"]).await;
    let (_, creds) = read_credentials(&dir.path().join("credentials.json"));
    let koo = s.koo(&creds);
    let bytes = data(4096, 77);
    let (status, v) = koo
        .post(
            "files/create",
            json!({"fileName": "h", "fileType": "45", "length": 4096, "sha256": sha_hex(&bytes),
                   "multiParts": [{"partNumber": 1, "partSize": 2048},
                                  {"partNumber": 2, "partSize": 2048}]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let id = v["fileId"].as_str().unwrap().to_owned();
    for (i, chunked) in [(0usize, false), (1, true)] {
        let url = v["multiParts"][i]["uploadUrl"].as_str().unwrap();
        let target = url.strip_prefix(&s.url).unwrap();
        let part = &bytes[i * 2048..(i + 1) * 2048];
        let mut req = format!("PUT {target} HTTP/1.1\r\nHost: {}\r\n", s.addr).into_bytes();
        if chunked {
            req.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n800\r\n");
            req.extend_from_slice(part);
            req.extend_from_slice(b"\r\n0\r\n\r\n");
        } else {
            req.extend_from_slice(b"Content-Length: 2048\r\n\r\n");
            req.extend_from_slice(part);
        }
        let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        tcp.write_all(&req).await.unwrap();
        tcp.shutdown().await.unwrap();
        let mut answer = Vec::new();
        within(HTTP, "the answer", tcp.read_to_end(&mut answer))
            .await
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "chunked {chunked}: {answer}"
        );
    }
    let (status, v) = koo
        .post("files/multipart/list", json!({"fileId": id}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["multiParts"].as_array().map(Vec::len), Some(2), "{v}");
    koo.complete(&id, &bytes).await;
    s.stop(libc::SIGTERM).await;
}
