//! Cluster mode against real PostgreSQL and Garage processes and real
//! `partseal-server` nodes, each test on its own cluster started by
//! `scripts/cluster.sh`. Faults are real: kill -9 of nodes and Garage
//! processes, a PostgreSQL stop and start.
//!
//! These tests need PostgreSQL (the Debian package) and a Garage binary;
//! they run when `PARTSEAL_CLUSTER_TESTS=1` (`.ci/run` installs both and
//! sets it) and otherwise skip, saying so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use axum::http::{HeaderMap, HeaderValue};
use partseal_server::auth::{format_compact_date, sdk_authorization_header};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_partseal-server");

fn enabled(test: &str) -> bool {
    if std::env::var("PARTSEAL_CLUSTER_TESTS").as_deref() == Ok("1") {
        return true;
    }
    // Straight to stderr, past the test harness's capture: a skipped test
    // says so even when it "passes".
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED cluster test {test}: set PARTSEAL_CLUSTER_TESTS=1 with PostgreSQL and Garage \
         installed (bash .ci/run does) to run it"
    );
    false
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A cluster started by `scripts/cluster.sh up`, stopped when dropped.
struct TestCluster {
    dir: tempfile::TempDir,
    info: Value,
    http: reqwest::Client,
    user: Value,
    /// Processes restarted by the test: `down` stops them (their PIDs are
    /// in `pids/`), and they are waited for after.
    restarted: std::sync::Mutex<Vec<Child>>,
}

struct Setup<'a> {
    nodes: usize,
    garage_nodes: usize,
    node_args: &'a str,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            nodes: 3,
            garage_nodes: 1,
            node_args: "",
        }
    }
}

impl TestCluster {
    fn up(setup: Setup<'_>) -> TestCluster {
        let dir = tempfile::Builder::new()
            .prefix("psc")
            .tempdir_in("/tmp")
            .unwrap();
        let args = format!("--min-part-size 65536 {}", setup.node_args);
        let out = Command::new("bash")
            .arg(repo().join("scripts/cluster.sh"))
            .arg("up")
            .arg(dir.path())
            .arg(setup.nodes.to_string())
            .env("PARTSEAL_SERVER_BIN", BIN)
            .env("PARTSEAL_NODE_ARGS", args)
            .env("GARAGE_NODES", setup.garage_nodes.to_string())
            .env("RUST_LOG", "info")
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/cluster.sh");
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            let _ = down(dir.path());
            panic!("scripts/cluster.sh up failed: {text}");
        }
        let info: Value = serde_json::from_str(text.trim()).expect("one JSON line");
        let creds: Value =
            serde_json::from_slice(&std::fs::read(info["credentials"].as_str().unwrap()).unwrap())
                .unwrap();
        TestCluster {
            dir,
            info,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
            user: creds["users"][0].clone(),
            restarted: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn node(&self, i: usize) -> String {
        self.info["nodes"][i].as_str().unwrap().to_owned()
    }

    fn node_count(&self) -> usize {
        self.info["nodes"].as_array().unwrap().len()
    }

    fn pid(&self, what: &str, i: usize) -> i32 {
        let file = self
            .dir
            .path()
            .join("pids")
            .join(format!("{what}-{}.pid", i + 1));
        std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .trim()
            .parse()
            .unwrap()
    }

    /// kill -9 of node `i`.
    fn kill_node(&self, i: usize) {
        kill9(self.pid("node", i));
    }

    /// Starts node `i` again with its command line, port and environment.
    fn restart_node(&self, i: usize) {
        // A killed process's leader turns zombie before its other threads
        // have exited and closed its sockets: wait until the port is free.
        let addr = self.node(i).trim_start_matches("http://").to_owned();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpListener::bind(&addr).is_err() {
            assert!(Instant::now() < deadline, "{addr} still taken");
            std::thread::sleep(Duration::from_millis(20));
        }
        let cmd = self.dir.path().join(format!("node-{}.cmd", i + 1));
        let child = Command::new("bash")
            .arg(cmd)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.restarted.lock().unwrap().push(child);
        self.wait_ready(i);
    }

    fn wait_ready(&self, i: usize) {
        let url = format!("{}/readyz", self.node(i));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if http_status(&url) == Some(200) {
                return;
            }
            assert!(Instant::now() < deadline, "node {i} not ready");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts Garage node `i` again from its configuration; its PID goes
    /// where `down` finds it.
    fn restart_garage(&self, i: usize) {
        let out = Command::new("bash")
            .arg(repo().join("scripts/install-garage.sh"))
            .stderr(Stdio::null())
            .output()
            .unwrap();
        let bin = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let toml = self
            .dir
            .path()
            .join(format!("garage-{}/garage.toml", i + 1));
        let child = Command::new(bin)
            .arg("-c")
            .arg(toml)
            .arg("server")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::fs::write(
            self.dir.path().join(format!("pids/garage-{}.pid", i + 1)),
            child.id().to_string(),
        )
        .unwrap();
        self.restarted.lock().unwrap().push(child);
    }

    fn psql(&self, sql: &str) -> String {
        let bin = Path::new(self.info["pg_bin"].as_str().unwrap()).join("psql");
        let out = Command::new(bin)
            .args([
                "-At",
                "-d",
                self.info["postgres"].as_str().unwrap(),
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn pg_ctl(&self, action: &str) {
        let bin = Path::new(self.info["pg_bin"].as_str().unwrap()).join("pg_ctl");
        let status = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin)
            .args([
                "-D",
                self.info["pgdata"].as_str().unwrap(),
                "-w",
                "-m",
                "fast",
            ])
            .arg("-l")
            .arg(self.dir.path().join("pg.log"))
            .arg(action)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl {action}");
        if action == "start" {
            // `down` stops the postmaster by the PID it recorded.
            let pid = std::fs::read_to_string(
                Path::new(self.info["pgdata"].as_str().unwrap()).join("postmaster.pid"),
            )
            .unwrap();
            std::fs::write(
                self.dir.path().join("pids/postgres.pid"),
                pid.lines().next().unwrap(),
            )
            .unwrap();
        }
    }

    fn s3(&self) -> aws_sdk_s3::Client {
        let s3 = &self.info["s3"];
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(s3["endpoint"].as_str().unwrap())
            .region(Region::new(s3["region"].as_str().unwrap().to_owned()))
            .credentials_provider(Credentials::new(
                s3["access_key_id"].as_str().unwrap(),
                s3["secret_access_key"].as_str().unwrap(),
                None,
                None,
                "test",
            ))
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    fn bucket(&self) -> String {
        self.info["s3"]["bucket"].as_str().unwrap().to_owned()
    }

    /// A KooDrive call on node `i`.
    async fn koo(&self, i: usize, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/koodrive/ose/v1/{path}", self.node(i)))
            .header(
                "authorization",
                format!("Bearer {}", self.user["token"].as_str().unwrap()),
            )
            .header("x-user-id", self.user["id"].as_str().unwrap())
            .header(
                "x-date",
                format_compact_date(time::OffsetDateTime::now_utc()),
            )
            .json(&body)
            .send()
            .await;
        // A node that is down answers nothing: status 0.
        let Ok(resp) = resp else {
            return (0, Value::Null);
        };
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// A MetaStudio call on node `i`, signed as the SDK signs.
    async fn mss(&self, i: usize, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let project = self.user["project_id"].as_str().unwrap();
        let raw_path = format!("/v1/{project}/{path}");
        let bytes = body
            .map(|b| serde_json::to_vec(&b).unwrap())
            .unwrap_or_default();
        let base = self.node(i);
        let host = base.trim_start_matches("http://");
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("host", HeaderValue::from_str(host).unwrap());
        headers.insert("x-project-id", HeaderValue::from_str(project).unwrap());
        let date = format_compact_date(time::OffsetDateTime::now_utc());
        headers.insert("x-sdk-date", HeaderValue::from_str(&date).unwrap());
        let auth = sdk_authorization_header(
            self.user["access_key"].as_str().unwrap(),
            self.user["secret_key"].as_str().unwrap(),
            method,
            &raw_path,
            None,
            &headers,
            &bytes,
        )
        .unwrap();
        headers.insert("authorization", HeaderValue::from_str(&auth).unwrap());
        let mut req = self
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{base}{raw_path}"),
            )
            .body(bytes);
        for (k, v) in headers.iter() {
            if k != "host" {
                req = req.header(k.as_str(), v.to_str().unwrap());
            }
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// PUTs a part to an upload URL, sent to node `i` whatever node made
    /// the URL; the status and the ETag (or the answer's body).
    async fn put(&self, url: &str, i: usize, bytes: Vec<u8>) -> (u16, String) {
        let resp = self
            .http
            .put(on_node(url, &self.node(i)))
            .body(bytes)
            .send()
            .await;
        let Ok(resp) = resp else {
            return (0, String::new());
        };
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().trim_matches('"').to_owned());
        let text = resp.text().await.unwrap();
        (status, etag.unwrap_or(text))
    }

    /// Sends `bytes` to `url` on node `i` again and again until it is
    /// taken (the service came back), for at most 30 s.
    async fn put_until_taken(&self, url: &str, i: usize, bytes: &[u8], what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.put(url, i, bytes.to_vec()).await.0 != 200 {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A PUT of a body of `len` bytes to `url` on node `i`, its bytes sent
    /// piece by piece through the returned sender; dropping the sender ends
    /// the body.
    fn put_streamed(&self, url: &str, i: usize, len: usize) -> (BodyTx, PendingPut) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let request = self
            .http
            .put(on_node(url, &self.node(i)))
            .header("content-length", len.to_string())
            .body(reqwest::Body::wrap_stream(stream));
        (tx, tokio::spawn(request.send()))
    }

    async fn get_bytes(&self, url: &str, i: usize) -> (u16, Vec<u8>) {
        let resp = self
            .http
            .get(on_node(url, &self.node(i)))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.bytes().await.unwrap().to_vec())
    }

    /// A KooDrive chain upload of `bytes` in parts of `part`: the file id
    /// and the part URLs.
    async fn koo_create(&self, i: usize, bytes: &[u8], part: usize) -> (String, Vec<String>) {
        self.koo_multipart(i, bytes, chain_parts(bytes, part)).await
    }

    /// A KooDrive multipart upload of `bytes` with the plan `parts`: the
    /// file id and the part URLs.
    async fn koo_multipart(
        &self,
        i: usize,
        bytes: &[u8],
        parts: Vec<Value>,
    ) -> (String, Vec<String>) {
        let (status, v) = self
            .koo(
                i,
                "files/create",
                json!({"fileName": "f.bin", "fileType": "45", "length": bytes.len(),
                       "sha256": sha_hex(bytes), "uploadMode": "multipart",
                       "multiParts": parts}),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        (v["fileId"].as_str().unwrap().to_owned(), part_urls(&v))
    }

    async fn complete(&self, i: usize, id: &str) -> (u16, Value) {
        self.koo(i, "files/complete", json!({"fileId": id})).await
    }

    /// The file's bytes, downloaded through node `i` by its detail's URL.
    async fn download(&self, i: usize, id: &str) -> Vec<u8> {
        let (status, v) = self.koo(i, &format!("files/{id}/detail"), json!({})).await;
        assert_eq!(status, 200, "{v}");
        let (status, body) = self.get_bytes(v["downloadUrl"].as_str().unwrap(), i).await;
        assert_eq!(status, 200);
        body
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What the nodes logged, for the failure's reader.
            for i in 0..self.node_count() {
                let log = self.dir.path().join(format!("node-{}.log", i + 1));
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                eprintln!("--- {} (last lines)", log.display());
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
        if let Err(e) = down(self.dir.path()) {
            eprintln!("scripts/cluster.sh down: {e}");
        }
        for mut child in self.restarted.lock().unwrap().drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn down(dir: &Path) -> Result<(), String> {
    let st = Command::new("bash")
        .arg(repo().join("scripts/cluster.sh"))
        .arg("down")
        .arg(dir)
        .status()
        .map_err(|e| e.to_string())?;
    st.success().then_some(()).ok_or_else(|| format!("{st}"))
}

/// The status of a plain HTTP GET of `url` (http://host:port/path), if
/// anything answers.
fn http_status(url: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Whether node `i`'s `/readyz` answers `status` within 10 s (its checks
/// are cached for a second).
async fn becomes(c: &TestCluster, i: usize, status: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let got = c
            .http
            .get(format!("{}/readyz", c.node(i)))
            .send()
            .await
            .map(|r| r.status().as_u16());
        if got.ok() == Some(status) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

fn kill9(pid: i32) {
    let st = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -9 {pid}");
    // The signal is delivered at once, the death comes a little later: wait
    // until the process is gone from /proc or a zombie.
    let stat = format!("/proc/{pid}/stat");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = std::fs::read_to_string(&stat)
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.chars().next()))
            .flatten();
        if matches!(state, None | Some('Z') | Some('X')) {
            return;
        }
        assert!(Instant::now() < deadline, "{pid} survived kill -9");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `url` with its scheme and authority replaced by `base`'s.
fn on_node(url: &str, base: &str) -> String {
    let rest = url
        .trim_start_matches("http://")
        .split_once('/')
        .map(|(_, r)| r)
        .unwrap_or("");
    format!("{base}/{rest}")
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9e3779b97f4a7c15).wrapping_add(1);
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect()
}

fn sha_hex(b: &[u8]) -> String {
    partseal::Sha256::digest(b).to_hex()
}

fn md5_b64(b: &[u8]) -> String {
    use base64::Engine as _;
    use md5::Digest as _;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(b))
}

fn chain_parts(bytes: &[u8], part_size: usize) -> Vec<Value> {
    let mut mid = partseal::hazmat::Midstate::new();
    let chunks: Vec<&[u8]> = bytes.chunks(part_size).collect();
    let mut out = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let mut p = json!({"partNumber": i + 1, "partSize": c.len(), "partOffset": mid.len()});
        if i > 0 {
            p["hashCtx"] = json!(mid.ctx().to_ints());
        }
        out.push(p);
        if i + 1 < chunks.len() {
            mid.fold(c);
        }
    }
    out
}

/// A plan of sizes only (a stream-mode upload) for `bytes` in parts of
/// `part_size`.
fn stream_parts(bytes: &[u8], part_size: usize) -> Vec<Value> {
    bytes
        .chunks(part_size)
        .enumerate()
        .map(|(i, p)| json!({"partNumber": i + 1, "partSize": p.len()}))
        .collect()
}

/// The part upload URLs of a multipart create's answer.
fn part_urls(v: &Value) -> Vec<String> {
    v["multiParts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["uploadUrl"].as_str().unwrap().to_owned())
        .collect()
}

const PART: usize = 64 << 10;

/// The sending side of a streamed request body.
type BodyTx = tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>;
/// A request in flight.
type PendingPut = tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_node_serves_any_request_of_either_api() {
    if !enabled("any_node_serves_any_request_of_either_api") {
        return;
    }
    let c = TestCluster::up(Setup::default());
    assert_eq!(c.node_count(), 3);

    // KooDrive, chain mode: create on node 1, parts to nodes 1..3 in any
    // order, complete on node 2, download on node 3.
    let bytes = data(5 * PART + 123, 1);
    let (id, urls) = c.koo_create(0, &bytes, PART).await;
    let chunks: Vec<&[u8]> = bytes.chunks(PART).collect();
    for k in [4usize, 1, 5, 0, 3, 2] {
        let (status, etag) = c.put(&urls[k], k % 3, chunks[k].to_vec()).await;
        assert_eq!(status, 200, "part {}: {etag}", k + 1);
    }
    let (status, v) = c
        .koo(2, "files/multipart/list", json!({"fileId": id}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["multiParts"].as_array().unwrap().len(), 6);
    assert!(
        v["multiParts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["linkChecked"] == true),
        "{v}"
    );
    let (status, v) = c.complete(1, &id).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["code"], 0);
    assert_eq!(v["sha256"], sha_hex(&bytes));
    assert_eq!(v["alreadyCompleted"], false);
    assert_eq!(c.download(2, &id).await, bytes);
    // The object is the file, byte for byte.
    let obj = c
        .s3()
        .get_object()
        .bucket(c.bucket())
        .key(format!("files/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        obj.body.collect().await.unwrap().into_bytes().to_vec(),
        bytes
    );

    // Flash upload on node 3: the same bytes are known.
    let (status, v) = c
        .koo(
            2,
            "files/create",
            json!({"fileName": "again.bin", "fileType": "45", "length": bytes.len(),
                   "sha256": sha_hex(&bytes), "uploadMode": "put"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["rapidUpload"], true, "{v}");
    let flash = v["fileId"].as_str().unwrap().to_owned();
    assert_eq!(c.download(0, &flash).await, bytes);

    // Abort on another node than the create's; list then refuses.
    let (id2, _) = c.koo_create(1, &data(2 * PART, 2), PART).await;
    let (status, v) = c
        .koo(2, "files/multipart/abort", json!({"fileId": id2}))
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = c
        .koo(0, "files/multipart/list", json!({"fileId": id2}))
        .await;
    assert_eq!((status, v["code"].as_i64()), (400, Some(13000401)), "{v}");

    // MetaStudio, stream mode with MD5: create on node 2, segments to nodes
    // 3 and 1, confirm on node 1, status and download on node 3.
    let seg = data(3 * PART, 3);
    let (status, v) = c
        .mss(
            1,
            "POST",
            "large-files",
            Some(
                json!({"file_name": "big.mp4", "file_size": seg.len(), "file_type": "MP4",
                        "asset_id": "a", "asset_file_category": "MAIN",
                        "file_multipart_count": 3}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let mid = v["file_id"].as_str().unwrap().to_owned();
    let urls: Vec<String> = v["upload_urls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_owned())
        .collect();
    for (k, node) in [(2usize, 2usize), (0, 0), (1, 2)] {
        let (status, e) = c
            .put(&urls[k], node, seg[k * PART..(k + 1) * PART].to_vec())
            .await;
        assert_eq!(status, 200, "{e}");
    }
    let (status, v) = c
        .mss(
            0,
            "POST",
            &format!("files/{mid}/complete"),
            Some(json!({"state": "CREATED"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = c.mss(2, "GET", &format!("files/{mid}"), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["state"], "CREATED", "{v}");
    let (status, body) = c.get_bytes(v["download_url"].as_str().unwrap(), 2).await;
    assert_eq!(status, 200);
    assert_eq!(body, seg);
    // DELETE on another node; the status then says not found.
    let (status, _) = c.mss(1, "DELETE", &format!("files/{mid}"), None).await;
    assert_eq!(status, 200);
    let (status, _) = c.mss(0, "GET", &format!("files/{mid}"), None).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_replacement_never_overwrites_an_acknowledged_part() {
    if !enabled("a_bad_replacement_never_overwrites_an_acknowledged_part") {
        return;
    }
    let c = TestCluster::up(Setup::default());
    let bytes = data(3 * PART, 4);
    let (id, urls) = c.koo_create(0, &bytes, PART).await;
    let chunks: Vec<&[u8]> = bytes.chunks(PART).collect();
    for k in 0..3 {
        assert_eq!(c.put(&urls[k], k, chunks[k].to_vec()).await.0, 200);
    }
    // A replacement of part 2 with other bytes: refused, naming the part.
    let mut bad = chunks[1].to_vec();
    bad[PART - 1] ^= 1;
    let (status, body) = c.put(&urls[1], 2, bad).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("13000420") && body.contains("part 2"),
        "{body}"
    );
    // A short replacement: refused too.
    let (status, body) = c.put(&urls[1], 1, chunks[1][..100].to_vec()).await;
    assert_eq!(status, 400, "{body}");
    let (status, v) = c.complete(1, &id).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(c.download(2, &id).await, bytes);
}

/// Empty parts have no bytes for the store, and stores refuse empty
/// UploadParts (Garage does): an empty file and an empty last part still
/// upload, complete and download as on one node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn empty_files_and_empty_last_parts_complete() {
    if !enabled("empty_files_and_empty_last_parts_complete") {
        return;
    }
    let c = TestCluster::up(Setup::default());

    // An empty file in put mode: create on node 1, its one empty part to
    // node 2, complete on node 3, download on node 1.
    let (status, v) = c
        .koo(
            0,
            "files/create",
            json!({"fileName": "empty.bin", "fileType": "45", "length": 0}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let id = v["fileId"].as_str().unwrap().to_owned();
    let url = v["uploadUrl"].as_str().unwrap().to_owned();
    let (status, body) = c.put(&url, 1, Vec::new()).await;
    assert_eq!(status, 200, "{body}");
    let (status, v) = c
        .koo(
            2,
            "files/complete",
            json!({"fileId": id, "sha256": sha_hex(b"")}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["sha256"].as_str(), v["length"].as_u64()),
        (Some(sha_hex(b"").as_str()), Some(0)),
        "{v}"
    );
    assert_eq!(v["alreadyCompleted"], false, "{v}");
    assert!(c.download(0, &id).await.is_empty());
    // A second complete on another node says so, with the same digest.
    let (status, v) = c.complete(1, &id).await;
    assert_eq!(
        (status, v["alreadyCompleted"].as_bool()),
        (200, Some(true)),
        "{v}"
    );

    // Chain mode whose last part is empty: two parts of bytes, then part 3
    // of 0 bytes starting from the state after both.
    let bytes = data(2 * PART, 9);
    let mut parts = chain_parts(&bytes, PART);
    let mut mid = partseal::hazmat::Midstate::new();
    mid.fold(&bytes);
    parts.push(
        json!({"partNumber": 3, "partSize": 0, "partOffset": bytes.len(),
                      "hashCtx": mid.ctx().to_ints()}),
    );
    let (id, urls) = c.koo_multipart(1, &bytes, parts).await;
    assert_eq!(urls.len(), 3, "{urls:?}");
    // The empty part first, then the others, each on another node.
    assert_eq!(c.put(&urls[2], 0, Vec::new()).await.0, 200);
    assert_eq!(c.put(&urls[1], 1, bytes[PART..].to_vec()).await.0, 200);
    assert_eq!(c.put(&urls[0], 2, bytes[..PART].to_vec()).await.0, 200);
    let (status, v) = c.complete(0, &id).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["sha256"], sha_hex(&bytes), "{v}");
    assert_eq!(c.download(1, &id).await, bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn eight_concurrent_completes_on_three_nodes_commit_once() {
    if !enabled("eight_concurrent_completes_on_three_nodes_commit_once") {
        return;
    }
    let c = std::sync::Arc::new(TestCluster::up(Setup::default()));
    for round in 0..3u64 {
        // Chain mode and stream mode (no hashCtx: complete hashes).
        let bytes = data(4 * PART + 17, 10 + round);
        let (id, urls) = if round == 1 {
            c.koo_multipart(0, &bytes, stream_parts(&bytes, PART)).await
        } else {
            c.koo_create(0, &bytes, PART).await
        };
        for (k, chunk) in bytes.chunks(PART).enumerate().rev() {
            assert_eq!(c.put(&urls[k], k % 3, chunk.to_vec()).await.0, 200);
        }
        let mut tasks = Vec::new();
        for i in 0..8 {
            let c = c.clone();
            let id = id.clone();
            tasks.push(tokio::spawn(async move { c.complete(i % 3, &id).await }));
        }
        let mut fresh = 0;
        for t in tasks {
            let (status, v) = t.await.unwrap();
            assert_eq!(status, 200, "{v}");
            assert_eq!(v["sha256"], sha_hex(&bytes), "{v}");
            if v["alreadyCompleted"] == false {
                fresh += 1;
            }
        }
        assert_eq!(fresh, 1, "round {round}: exactly one complete commits");
        assert_eq!(
            c.psql(&format!("SELECT count(*) FROM files WHERE id = '{id}'")),
            "1"
        );
        assert_eq!(c.download(round as usize % 3, &id).await, bytes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crashed_completers_claim_is_taken_over_after_its_lease() {
    if !enabled("a_crashed_completers_claim_is_taken_over_after_its_lease") {
        return;
    }
    let c = TestCluster::up(Setup {
        node_args: "--claim-lease-secs 2",
        ..Setup::default()
    });
    // A claim left by a completer that died before joining the parts.
    let bytes = data(3 * PART, 20);
    let (id, urls) = c.koo_create(0, &bytes, PART).await;
    for (k, chunk) in bytes.chunks(PART).enumerate() {
        assert_eq!(c.put(&urls[k], k, chunk.to_vec()).await.0, 200);
    }
    c.psql(&format!(
        "UPDATE uploads SET state = 'completing', claim_fence = claim_fence + 1, \
         claim_node = 'dead', claim_until = now() + interval '2 seconds' WHERE id = '{id}'"
    ));
    let start = Instant::now();
    let (status, v) = c.complete(1, &id).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["alreadyCompleted"], false);
    assert!(
        start.elapsed() >= Duration::from_millis(1500),
        "waited for the lease"
    );
    assert_eq!(c.download(2, &id).await, bytes);

    // A completer that died after the store joined the parts: the next
    // complete finds the object whole and commits it.
    let bytes = data(3 * PART + 5, 21);
    let (id, urls) = c.koo_create(0, &bytes, PART).await;
    for (k, chunk) in bytes.chunks(PART).enumerate() {
        assert_eq!(c.put(&urls[k], k % 3, chunk.to_vec()).await.0, 200);
    }
    let upload_id = c.psql(&format!(
        "SELECT s3_upload_id FROM uploads WHERE id = '{id}'"
    ));
    let etags: Vec<String> = c
        .psql(&format!(
            "SELECT etag FROM parts WHERE upload_id = '{id}' ORDER BY n"
        ))
        .lines()
        .map(str::to_owned)
        .collect();
    let parts = etags
        .iter()
        .enumerate()
        .map(|(i, e)| {
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(i as i32 + 1)
                .e_tag(e)
                .build()
        })
        .collect();
    c.psql(&format!(
        "UPDATE uploads SET state = 'completing', claim_fence = claim_fence + 1, \
         claim_node = 'dead', claim_until = now() + interval '1 second' WHERE id = '{id}'"
    ));
    c.s3()
        .complete_multipart_upload()
        .bucket(c.bucket())
        .key(format!("files/{id}"))
        .upload_id(upload_id)
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let (status, v) = c.complete(2, &id).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["alreadyCompleted"], false);
    assert_eq!(c.download(0, &id).await, bytes);

    // A real kill -9 of the node running a stream-mode complete, at
    // several moments: another node always finishes it, whole.
    for (round, delay_ms) in [5u64, 40, 150].into_iter().enumerate() {
        let bytes = data(6 * PART + 3, 30 + round as u64);
        let (id, urls) = c.koo_multipart(0, &bytes, stream_parts(&bytes, PART)).await;
        // Out of order, so complete has hashing to do.
        for (k, chunk) in bytes.chunks(PART).enumerate().rev() {
            assert_eq!(c.put(&urls[k], 1 + k % 2, chunk.to_vec()).await.0, 200);
        }
        let victim = c.node(0);
        let http = c.http.clone();
        let req = http
            .post(format!("{victim}/koodrive/ose/v1/files/complete"))
            .header(
                "authorization",
                format!("Bearer {}", c.user["token"].as_str().unwrap()),
            )
            .header("x-user-id", c.user["id"].as_str().unwrap())
            .header(
                "x-date",
                format_compact_date(time::OffsetDateTime::now_utc()),
            )
            .json(&json!({"fileId": id}));
        let pending = tokio::spawn(async move { req.send().await });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        c.kill_node(0);
        let _ = pending.await;
        let (status, v) = c.complete(1, &id).await;
        assert_eq!(status, 200, "round {round}: {v}");
        assert_eq!(v["sha256"], sha_hex(&bytes));
        assert_eq!(c.download(2, &id).await, bytes);
        c.restart_node(0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stream_mode_hashes_in_order_from_a_checkpoint_in_the_database() {
    if !enabled("stream_mode_hashes_in_order_from_a_checkpoint_in_the_database") {
        return;
    }
    let c = TestCluster::up(Setup::default());
    let create = |bytes: &[u8], declared: &str| {
        json!({"fileName": "s.bin", "fileType": "45", "length": bytes.len(),
               "sha256": declared, "uploadMode": "multipart",
               "multiParts": stream_parts(bytes, PART)})
    };
    // In order, each part to another node: the checkpoint follows.
    let bytes = data(4 * PART + 99, 40);
    let (status, v) = c
        .koo(0, "files/create", create(&bytes, &sha_hex(&bytes)))
        .await;
    assert_eq!(status, 200, "{v}");
    let id = v["fileId"].as_str().unwrap().to_owned();
    let urls = part_urls(&v);
    for (k, chunk) in bytes.chunks(PART).enumerate() {
        assert_eq!(c.put(&urls[k], k % 3, chunk.to_vec()).await.0, 200);
        assert_eq!(
            c.psql(&format!(
                "SELECT ckpt_through FROM uploads WHERE id = '{id}'"
            )),
            (k + 1).to_string(),
            "the checkpoint covers parts 1..={}",
            k + 1
        );
    }
    let (status, v) = c.complete(2, &id).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["sha256"], sha_hex(&bytes));
    assert_eq!(c.download(1, &id).await, bytes);

    // Out of order: the checkpoint covers the prefix that arrived in order;
    // complete hashes the rest from the joined object.
    let bytes = data(4 * PART, 41);
    let (status, v) = c
        .koo(1, "files/create", create(&bytes, &sha_hex(&bytes)))
        .await;
    assert_eq!(status, 200, "{v}");
    let id = v["fileId"].as_str().unwrap().to_owned();
    let urls = part_urls(&v);
    let chunks: Vec<&[u8]> = bytes.chunks(PART).collect();
    for k in [1usize, 0, 3, 2] {
        assert_eq!(c.put(&urls[k], k % 3, chunks[k].to_vec()).await.0, 200);
    }
    assert_eq!(
        c.psql(&format!(
            "SELECT ckpt_through FROM uploads WHERE id = '{id}'"
        )),
        "1"
    );
    // A replacement of part 1 moves the checkpoint back.
    assert_eq!(c.put(&urls[0], 2, chunks[0].to_vec()).await.0, 200);
    assert_eq!(
        c.psql(&format!(
            "SELECT ckpt_through FROM uploads WHERE id = '{id}'"
        )),
        "0"
    );
    let (status, v) = c.complete(0, &id).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["sha256"], sha_hex(&bytes));

    // A wrong part found at complete: refused, the upload stays open with
    // its parts, and the replaced part completes it.
    let bytes = data(3 * PART, 42);
    let (status, v) = c
        .koo(2, "files/create", create(&bytes, &sha_hex(&bytes)))
        .await;
    assert_eq!(status, 200, "{v}");
    let id = v["fileId"].as_str().unwrap().to_owned();
    let urls = part_urls(&v);
    let chunks: Vec<&[u8]> = bytes.chunks(PART).collect();
    let mut wrong = chunks[1].to_vec();
    wrong[7] ^= 0x80;
    assert_eq!(c.put(&urls[2], 0, chunks[2].to_vec()).await.0, 200);
    assert_eq!(c.put(&urls[1], 1, wrong).await.0, 200);
    assert_eq!(c.put(&urls[0], 2, chunks[0].to_vec()).await.0, 200);
    let (status, v) = c.complete(0, &id).await;
    assert_eq!((status, v["code"].as_i64()), (400, Some(13000402)), "{v}");
    let (status, v) = c
        .koo(1, "files/multipart/list", json!({"fileId": id}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["multiParts"].as_array().unwrap().len(), 3);
    assert_eq!(c.put(&urls[1], 2, chunks[1].to_vec()).await.0, 200);
    let (status, v) = c.complete(1, &id).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(c.download(2, &id).await, bytes);

    // MetaStudio's MD5 is checkpointed too: a wrong MD5 is refused.
    let seg = data(2 * PART, 43);
    let (status, v) = c
        .mss(
            0,
            "POST",
            "files",
            Some(
                json!({"file_name": "a.mp4", "file_size": seg.len(), "file_type": "MP4",
                        "asset_id": "a", "asset_file_category": "MAIN",
                        "file_md5": md5_b64(b"something else")}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let mid = v["file_id"].as_str().unwrap().to_owned();
    assert_eq!(
        c.put(v["upload_url"].as_str().unwrap(), 1, seg.clone())
            .await
            .0,
        200
    );
    let (status, v) = c
        .mss(
            2,
            "POST",
            &format!("files/{mid}/complete"),
            Some(json!({"state": "CREATED"})),
        )
        .await;
    assert_eq!(
        (status, v["error_code"].as_str()),
        (400, Some("MSS.10001020")),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_mid_part_loses_nothing_acknowledged() {
    if !enabled("a_node_killed_mid_part_loses_nothing_acknowledged") {
        return;
    }
    let c = TestCluster::up(Setup::default());
    let bytes = data(3 * PART, 50);
    let (id, urls) = c.koo_create(1, &bytes, PART).await;
    let chunks: Vec<&[u8]> = bytes.chunks(PART).collect();
    assert_eq!(c.put(&urls[0], 1, chunks[0].to_vec()).await.0, 200);
    // Part 2 half sent to node 1, which dies with it in flight.
    let (tx, pending) = c.put_streamed(&urls[1], 0, PART);
    tx.send(Ok(chunks[1][..PART / 2].to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.kill_node(0);
    drop(tx);
    // Whatever the cut request answered, if anything, it was not a 200.
    if let Ok(Ok(resp)) = pending.await {
        assert_ne!(resp.status().as_u16(), 200);
    }
    // Nothing of the cut part is recorded; the acknowledged part is intact.
    let (status, v) = c
        .koo(2, "files/multipart/list", json!({"fileId": id}))
        .await;
    assert_eq!(status, 200, "{v}");
    let listed: Vec<u64> = v["multiParts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["partNumber"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, vec![1]);
    assert_eq!(c.put(&urls[1], 2, chunks[1].to_vec()).await.0, 200);
    assert_eq!(c.put(&urls[2], 1, chunks[2].to_vec()).await.0, 200);
    let (status, v) = c.complete(2, &id).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(c.download(1, &id).await, bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgresql_restart_answers_503_and_service_resumes() {
    if !enabled("a_postgresql_restart_answers_503_and_service_resumes") {
        return;
    }
    let c = TestCluster::up(Setup::default());
    let bytes = data(2 * PART, 60);
    let (id, urls) = c.koo_create(0, &bytes, PART).await;
    assert_eq!(c.put(&urls[0], 1, bytes[..PART].to_vec()).await.0, 200);
    c.pg_ctl("stop");
    let (status, v) = c
        .koo(
            2,
            "files/create",
            json!({"fileName": "x", "fileType": "45", "length": 1, "uploadMode": "put"}),
        )
        .await;
    assert_eq!((status, v["code"].as_i64()), (503, Some(13000424)), "{v}");
    let (status, body) = c.put(&urls[1], 1, bytes[PART..].to_vec()).await;
    assert_eq!(status, 503, "{body}");
    let (status, v) = c.complete(0, &id).await;
    assert_eq!(status, 503, "{v}");
    assert!(
        becomes(&c, 0, 503).await,
        "/readyz says the database is down"
    );
    c.pg_ctl("start");
    // The same node processes, no restart: service resumes.
    c.put_until_taken(&urls[1], 1, &bytes[PART..], "service did not resume")
        .await;
    let (status, v) = c.complete(2, &id).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(c.download(0, &id).await, bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_object_store_answers_503_and_records_nothing() {
    if !enabled("an_unreachable_object_store_answers_503_and_records_nothing") {
        return;
    }
    let c = TestCluster::up(Setup::default());
    let bytes = data(2 * PART, 70);
    let (id, urls) = c.koo_create(0, &bytes, PART).await;
    assert_eq!(c.put(&urls[0], 1, bytes[..PART].to_vec()).await.0, 200);
    kill9(c.pid("garage", 0));
    std::thread::sleep(Duration::from_millis(200));
    let (status, body) = c.put(&urls[1], 2, bytes[PART..].to_vec()).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("13000424"), "{body}");
    let (status, v) = c
        .koo(1, "files/multipart/list", json!({"fileId": id}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["multiParts"].as_array().unwrap().len(),
        1,
        "no record of part 2"
    );
    let (status, v) = c
        .koo(
            1,
            "files/create",
            json!({"fileName": "x", "fileType": "45", "length": 1, "uploadMode": "put"}),
        )
        .await;
    assert_eq!(status, 503, "{v}");
    assert!(becomes(&c, 2, 503).await, "/readyz says the store is down");
    // The store comes back: the upload goes on.
    c.restart_garage(0);
    c.put_until_taken(&urls[1], 2, &bytes[PART..], "the upload did not go on")
        .await;
    let (status, v) = c.complete(0, &id).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(c.download(1, &id).await, bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_that_dies_mid_part_answers_503_not_a_client_error() {
    if !enabled("a_store_that_dies_mid_part_answers_503_not_a_client_error") {
        return;
    }
    let c = TestCluster::up(Setup::default());
    let bytes = data(2 * PART, 75);
    let (id, urls) = c.koo_create(0, &bytes, PART).await;
    assert_eq!(c.put(&urls[0], 1, bytes[..PART].to_vec()).await.0, 200);
    // Part 2 starts streaming to the store, which then dies while the body
    // still arrives: the answer is the store's error, not "too small".
    let (tx, pending) = c.put_streamed(&urls[1], 2, PART);
    let pieces: Vec<&[u8]> = bytes[PART..].chunks(PART / 8).collect();
    tx.send(Ok(pieces[0].to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    kill9(c.pid("garage", 0));
    // The rest trickles in, so the store's request is gone while the body
    // still arrives.
    for piece in &pieces[1..] {
        tokio::time::sleep(Duration::from_millis(150)).await;
        if tx.send(Ok(piece.to_vec())).await.is_err() {
            break; // answered already
        }
    }
    drop(tx);
    let resp = pending.await.unwrap().expect("an answer");
    let status = resp.status().as_u16();
    assert!(resp.headers().contains_key("retry-after"), "{resp:?}");
    let body = resp.text().await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("13000424"), "{body}");
    let (status, v) = c
        .koo(1, "files/multipart/list", json!({"fileId": id}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["multiParts"].as_array().unwrap().len(), 1, "{v}");
    // Back up, the part goes again and the file is whole.
    c.restart_garage(0);
    c.put_until_taken(&urls[1], 1, &bytes[PART..], "the upload did not go on")
        .await;
    let (status, v) = c.complete(1, &id).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(c.download(2, &id).await, bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_go_on_when_one_of_three_garage_nodes_dies() {
    if !enabled("uploads_go_on_when_one_of_three_garage_nodes_dies") {
        return;
    }
    let c = TestCluster::up(Setup {
        garage_nodes: 3,
        ..Setup::default()
    });
    let bytes = data(4 * PART, 80);
    let (id, urls) = c.koo_create(0, &bytes, PART).await;
    let chunks: Vec<&[u8]> = bytes.chunks(PART).collect();
    assert_eq!(c.put(&urls[0], 0, chunks[0].to_vec()).await.0, 200);
    // Not the node the partseal nodes talk to.
    kill9(c.pid("garage", 2));
    for k in 1..4 {
        let (status, e) = c.put(&urls[k], k % 3, chunks[k].to_vec()).await;
        assert_eq!(status, 200, "part {}: {e}", k + 1);
    }
    let (status, v) = c.complete(1, &id).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(c.download(2, &id).await, bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sweep_expires_idle_uploads_and_cleans_orphans() {
    if !enabled("the_sweep_expires_idle_uploads_and_cleans_orphans") {
        return;
    }
    let c = TestCluster::up(Setup {
        nodes: 2,
        node_args: "--upload-ttl-secs 4 --orphan-grace-secs 2",
        ..Setup::default()
    });
    let s3 = c.s3();
    let bucket = c.bucket();
    // Orphans the store has and no record names.
    let stray = s3
        .create_multipart_upload()
        .bucket(&bucket)
        .key("files/stray-upload")
        .send()
        .await
        .unwrap()
        .upload_id
        .unwrap();
    s3.put_object()
        .bucket(&bucket)
        .key("files/stray-object")
        .body(b"nobody's"[..].to_vec().into())
        .send()
        .await
        .unwrap();
    // A committed file whose object vanishes, and an open upload whose
    // multipart upload vanishes.
    let bytes = data(PART, 90);
    let (gone, urls) = c.koo_create(0, &bytes, PART).await;
    assert_eq!(c.put(&urls[0], 1, bytes.clone()).await.0, 200);
    assert_eq!(c.complete(0, &gone).await.0, 200);
    s3.delete_object()
        .bucket(&bucket)
        .key(format!("files/{gone}"))
        .send()
        .await
        .unwrap();
    let (lost, _) = c.koo_create(1, &data(PART, 91), PART).await;
    let lost_upload = c.psql(&format!(
        "SELECT s3_upload_id FROM uploads WHERE id = '{lost}'"
    ));
    s3.abort_multipart_upload()
        .bucket(&bucket)
        .key(format!("files/{lost}"))
        .upload_id(lost_upload)
        .send()
        .await
        .unwrap();
    // An idle upload with a part: expired after the TTL.
    let idle_bytes = data(2 * PART, 92);
    let (idle, urls) = c.koo_create(0, &idle_bytes, PART).await;
    assert_eq!(c.put(&urls[0], 1, idle_bytes[..PART].to_vec()).await.0, 200);
    // A busy upload that keeps being touched stays.
    let busy_bytes = data(2 * PART, 93);
    let (busy, burls) = c.koo_create(1, &busy_bytes, PART).await;

    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let _ = c
            .koo(0, "files/multipart/list", json!({"fileId": busy}))
            .await;
        let _ = c.put(&burls[0], 0, busy_bytes[..PART].to_vec()).await;
        let uploads = s3
            .list_multipart_uploads()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        let stray_alive = uploads
            .uploads()
            .iter()
            .any(|u| u.upload_id() == Some(&stray));
        let objects = s3
            .list_objects_v2()
            .bucket(&bucket)
            .prefix("files/stray")
            .send()
            .await
            .unwrap();
        let idle_row = c.psql(&format!("SELECT count(*) FROM uploads WHERE id = '{idle}'"));
        let gone_row = c.psql(&format!("SELECT count(*) FROM files WHERE id = '{gone}'"));
        let lost_state = c.psql(&format!("SELECT state FROM uploads WHERE id = '{lost}'"));
        if !stray_alive
            && objects.key_count() == Some(0)
            && idle_row == "0"
            && gone_row == "0"
            && lost_state == "aborted"
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sweep incomplete: stray upload {stray_alive}, stray objects {:?}, idle row {idle_row}, \
             gone row {gone_row}, lost state {lost_state}",
            objects.key_count()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // What the sweep left is answered as gone; the busy upload completes.
    let (status, v) = c
        .koo(1, "files/multipart/list", json!({"fileId": idle}))
        .await;
    assert_eq!((status, v["code"].as_i64()), (400, Some(13000401)), "{v}");
    let (status, v) = c.koo(0, &format!("files/{gone}/detail"), json!({})).await;
    assert_eq!((status, v["code"].as_i64()), (400, Some(13000401)), "{v}");
    assert_eq!(
        c.put(&burls[1], 1, busy_bytes[PART..].to_vec()).await.0,
        200
    );
    let (status, v) = c.complete(1, &busy).await;
    assert_eq!(status, 200, "{v}");
    // The idle upload's multipart upload is gone from the store too.
    let left = s3
        .list_multipart_uploads()
        .bucket(&bucket)
        .prefix(format!("files/{idle}"))
        .send()
        .await
        .unwrap();
    assert!(left.uploads().is_empty());
}

#[test]
fn cluster_flags_are_checked_before_anything_starts() {
    // No services needed: flags that cannot work are refused at start.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .args(["--database-url", "postgres://nobody@127.0.0.1:1/none"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--s3-endpoint") || err.contains("s3"), "{err}");

    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .args(["--database-url", "postgres://nobody@127.0.0.1:1/none"])
        .args(["--s3-endpoint", "http://127.0.0.1:1", "--s3-bucket", "b"])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");

    // An unreachable database: a clear error, not a hang or a panic.
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .args(["--database-url", "postgres://nobody@127.0.0.1:1/none"])
        .args(["--s3-endpoint", "http://127.0.0.1:1", "--s3-bucket", "b"])
        .env("AWS_ACCESS_KEY_ID", "GK0000")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cluster mode") && err.contains("database"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// Uploads through 3 nodes while a killer kill -9's a random node every few
/// hundred milliseconds and starts it again. Clients retry a failed call on
/// another node, as behind a load balancer. In the end every upload is
/// committed exactly once with its bytes, and no part a client was told is
/// stored went missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_survive_nodes_killed_at_random() {
    if !enabled("uploads_survive_nodes_killed_at_random") {
        return;
    }
    let uploads: usize = std::env::var("PARTSEAL_CLUSTER_SOAK_UPLOADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let c = std::sync::Arc::new(TestCluster::up(Setup {
        node_args: "--claim-lease-secs 2",
        ..Setup::default()
    }));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let kills = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let killer = {
        let (c, stop, kills) = (c.clone(), stop.clone(), kills.clone());
        tokio::task::spawn_blocking(move || {
            let mut seed = 7u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                std::thread::sleep(Duration::from_millis(200 + (seed >> 33) % 400));
                let victim = (seed >> 40) as usize % 3;
                c.kill_node(victim);
                kills.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                c.restart_node(victim);
            }
        })
    };
    let mut tasks = Vec::new();
    for u in 0..uploads {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let bytes = data(8 * PART + u * 1000, 100 + u as u64);
            let chain = u % 2 == 0;
            let plan = if chain {
                chain_parts(&bytes, PART)
            } else {
                stream_parts(&bytes, PART)
            };
            let body = json!({"fileName": "soak.bin", "fileType": "45", "length": bytes.len(),
                              "sha256": sha_hex(&bytes), "uploadMode": "multipart",
                              "multiParts": plan});
            let v = retry(|n| c.koo(n, "files/create", body.clone())).await;
            let id = v["fileId"].as_str().unwrap().to_owned();
            let urls = part_urls(&v);
            for (k, chunk) in bytes.chunks(PART).enumerate() {
                let mut n = u + k;
                loop {
                    let (status, _) = c.put(&urls[k], n % 3, chunk.to_vec()).await;
                    if status == 200 {
                        break;
                    }
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            let done = retry(|n| c.koo(n, "files/complete", json!({"fileId": id}))).await;
            assert_eq!(done["sha256"], sha_hex(&bytes), "{done}");
            (id, bytes)
        }));
    }
    let mut files = Vec::new();
    for t in tasks {
        files.push(t.await.unwrap());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    killer.await.unwrap();
    for i in 0..3 {
        c.wait_ready(i);
    }
    for (i, (id, bytes)) in files.iter().enumerate() {
        assert_eq!(&c.download(i % 3, id).await, bytes, "file {id}");
        // Exactly one commit: one file row, and a repeated complete says so.
        let (status, v) = c.complete((i + 1) % 3, id).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["alreadyCompleted"], true, "{v}");
    }
    assert_eq!(
        c.psql("SELECT count(*) FROM files"),
        uploads.to_string(),
        "one file per upload"
    );
    let _ = writeln_stderr(&format!(
        "soak: {uploads} uploads, {} node kills, every file committed once and intact",
        kills.load(std::sync::atomic::Ordering::Relaxed)
    ));
}

fn writeln_stderr(line: &str) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(std::io::stderr(), "{line}")
}

/// A call retried on the next node until it answers 200 (a killed node
/// answers nothing, a node whose complete's claim is held answers after).
async fn retry<F, Fut>(mut call: F) -> Value
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = (u16, Value)>,
{
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut n = 0;
    loop {
        let (status, v) = call(n % 3).await;
        if status == 200 {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no node answered 200: {status} {v}"
        );
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
