//! The upload page (`/ui/`) of the real `partseal-server` binary.
//!
//! Over plain HTTP: the page, its files and the vendored hash library are
//! served with their content types and a strict Content-Security-Policy
//! that allows WebAssembly, `/ui` redirects to `/ui/`, unknown files are
//! 404, and `--no-ui` (or `PARTSEAL_NO_UI`) leaves all of it out, banner
//! line included.
//!
//! In a real browser (headless Chromium, driven by
//! `tests/browser/upload_page.py` with Selenium): a random file whose length
//! is not a multiple of 64, uploaded in the page's default 8 MiB parts, must
//! end "verified" with the file's SHA-256 and the server must then hold
//! exactly those bytes; a wrong token must fail with the server's message in
//! sight; and the page's hash worker must give the midstates the engine
//! gives (the plan `partseal ctx` prints) at the edge lengths. These need
//! `PARTSEAL_BROWSER_PYTHON` (a Python with Selenium) and Chromium with
//! ChromeDriver (`PARTSEAL_CHROMEDRIVER`); `.ci/run` sets them up with
//! `scripts/install-browser.sh`. Without the variable each says it is
//! skipped. Screenshots of the verified page go to `target/ui-verified.png`
//! (1280×800) and `target/ui-verified-phone.png` (390 px wide, whole page),
//! of the refused part to `target/ui-failed.png` and
//! `target/ui-failed-phone.png`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime};

use partseal::offline::chain_plan;
use partseal_server::auth::format_compact_date;
use partseal_server::config::Credentials;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_partseal-server");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/upload_page.py");
/// From spawn to the banner's last line.
const START: Duration = Duration::from_secs(30);
/// One run of the browser script, Chromium's start included.
const BROWSER: Duration = Duration::from_secs(300);
const MIB: usize = 1 << 20;
/// The page's default part size.
const PART_SIZE: usize = 8 * MIB;

/// The Python that has Selenium, or `None` (the test is then skipped).
fn browser_python(test: &str) -> Option<String> {
    match std::env::var("PARTSEAL_BROWSER_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            eprintln!(
                "skipped: {test}: PARTSEAL_BROWSER_PYTHON is not set \
                 (eval \"$(bash scripts/install-browser.sh)\" sets it)"
            );
            None
        }
    }
}

/// A running `partseal-server` over a temporary store; killed on drop.
struct Server {
    child: Child,
    url: String,
    /// stdout up to and including the `listening on` line.
    banner: Vec<String>,
    dir: tempfile::TempDir,
}

impl Server {
    /// The binary with the default flags (the page on).
    fn start() -> Server {
        let s = Server::start_with(&[], &[]);
        let page = format!("partseal-server: upload page at {}/ui/", s.url);
        assert!(s.banner.contains(&page), "no {page:?} in {:?}", s.banner);
        s
    }

    /// The binary with `args` and `envs` and no other `PARTSEAL_*`
    /// variable, on an ephemeral port; returns once the banner's last line
    /// (`listening on`) is out.
    fn start_with(args: &[&str], envs: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("temporary directory");
        let data = dir.path().join("data");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let mut cmd = Command::new(BIN);
        cmd.args(["--listen", "127.0.0.1:0", "--data"])
            .arg(&data)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("PARTSEAL_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(envs.iter().copied());
        let mut child = cmd.spawn().expect("spawn partseal-server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + START;
        let mut banner = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "no `listening on` line within {START:?}; stdout:\n{}",
                    banner.join("\n")
                );
            };
            banner.push(line.clone());
            if let Some(rest) = line.strip_prefix("partseal-server: listening on ") {
                let url = rest
                    .split_once(',')
                    .map(|(u, _)| u.to_owned())
                    .unwrap_or_else(|| panic!("unexpected listening line: {line}"));
                return Server {
                    child,
                    url,
                    banner,
                    dir,
                };
            }
        }
    }

    fn credentials(&self) -> Credentials {
        let path = self.dir.path().join("data/credentials.json");
        let text = std::fs::read(&path).expect("credentials written at first start");
        serde_json::from_slice(&text).expect("credentials are JSON")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser at a time: Chromium is heavy, and the machines have few cores.
static ONE_BROWSER: Mutex<()> = Mutex::new(());

/// Runs the browser script on `job`; returns its JSON answer.
fn run_browser(python: &str, server: &Server, job: Value) -> Value {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let work = server.dir.path();
    let job_path = work.join(format!("job-{}.json", job["mode"].as_str().unwrap()));
    std::fs::write(&job_path, serde_json::to_vec(&job).unwrap()).unwrap();
    let out_path = job_path.with_extension("out");
    let err_path = job_path.with_extension("err");
    let mut child = Command::new(python)
        .arg(SCRIPT)
        .arg(&job_path)
        .env("SE_OFFLINE", "true")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let deadline = Instant::now() + BROWSER;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the browser script") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the browser script ran longer than {BROWSER:?}\nstderr:\n{}\nserver log:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default(),
                server.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    // Diagnostics of the script (timings), for the test log.
    eprint!("{stderr}");
    assert!(
        status.success(),
        "the browser script failed ({status})\nstdout:\n{stdout}\nstderr:\n{stderr}\nserver log:\n{}",
        server.log()
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("the browser script's answer is not JSON ({e}): {stdout}"))
}

/// `len` bytes that differ from run to run (seeded from the clock).
fn random_bytes(len: usize) -> Vec<u8> {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut s = nanos | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        // xorshift64*
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        out.extend_from_slice(&s.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn sha_hex(b: &[u8]) -> String {
    partseal::Sha256::digest(b).to_hex()
}

/// The target directory (`target/`), where the screenshots go.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is under the target directory")
        .to_path_buf()
}

/// The page's order of calls, from the answer's trace: every part is
/// registered before it is sent, part k only once part k+1 is registered
/// (so the server checks its link on arrival), the last part whenever it
/// is registered; and never more than four part PUTs at once.
fn assert_registered_before_sent(out: &Value, parts: usize) {
    let trace = &out["trace"];
    let mut registered = std::collections::BTreeSet::new();
    let mut sent = std::collections::BTreeSet::new();
    for e in trace["events"].as_array().expect("trace events") {
        if let Some(r) = e.get("registered") {
            registered.extend(r.as_array().unwrap().iter().map(|n| n.as_u64().unwrap()));
        } else {
            let k = e["put"].as_u64().expect("a PUT event");
            assert!(
                registered.contains(&k),
                "part {k} sent unregistered: {trace}"
            );
            let last = k == parts as u64;
            assert!(
                last || registered.contains(&(k + 1)),
                "part {k} sent before part {} was registered: {trace}",
                k + 1
            );
            sent.insert(k);
        }
    }
    assert_eq!(
        sent,
        (1..=parts as u64).collect(),
        "every part was sent: {trace}"
    );
    let most = trace["maxInFlight"].as_u64().unwrap();
    assert!((1..=4).contains(&most), "{most} PUTs at once: {trace}");
}

/// A KooDrive call as the development user.
async fn koo(server: &Server, creds: &Credentials, path: &str, body: Value) -> Value {
    let u = &creds.users[0];
    let resp = reqwest::Client::new()
        .post(format!("{}/koodrive/ose/v1/{path}", server.url))
        .header("authorization", format!("Bearer {}", u.token))
        .header("x-user-id", &u.id)
        .header(
            "x-date",
            format_compact_date(time::OffsetDateTime::now_utc()),
        )
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.expect("a JSON answer");
    assert_eq!((status, &v["code"]), (200, &json!(0)), "{path}: {v}");
    v
}

/// A client that does not follow redirects.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_and_its_files_are_served_with_types_and_policy() {
    let server = Server::start();
    let http = http();

    let resp = http.get(format!("{}/ui", server.url)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 308);
    assert_eq!(header(&resp, "location"), "ui/");

    let vendored: &[u8] = include_bytes!("../ui/vendor/hash-wasm-4.13.0/sha256.umd.min.js");
    let files: &[(&str, &str, Option<&[u8]>)] = &[
        ("", "text/html; charset=utf-8", None),
        ("app.js", "text/javascript; charset=utf-8", None),
        ("hash-worker.js", "text/javascript; charset=utf-8", None),
        ("style.css", "text/css; charset=utf-8", None),
        (
            "hash-wasm-sha256.js",
            "text/javascript; charset=utf-8",
            Some(vendored),
        ),
        ("hash-wasm-LICENSE.txt", "text/plain; charset=utf-8", None),
    ];
    for &(name, content_type, body) in files {
        let url = format!("{}/ui/{name}", server.url);
        let resp = http.get(&url).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{url}");
        assert_eq!(header(&resp, "content-type"), content_type, "{url}");
        assert_eq!(header(&resp, "x-content-type-options"), "nosniff", "{url}");
        let csp = header(&resp, "content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self' 'wasm-unsafe-eval';",
            "worker-src 'self'",
            "connect-src 'self'",
            "style-src 'self';",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{url}: {directive:?} not in {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{url}: {csp}");
        let got = resp.bytes().await.unwrap();
        assert!(!got.is_empty(), "{url}");
        if let Some(want) = body {
            assert!(got[..] == want[..], "{url}: not the vendored file");
        }
        if name.is_empty() {
            let html = std::str::from_utf8(&got).unwrap();
            for hook in [
                "name=\"user\"",
                "name=\"token\"",
                "type=\"file\"",
                "data-action=\"upload\"",
                "id=\"result\" class=\"result\" data-state=\"idle\"",
            ] {
                assert!(html.contains(hook), "the page lacks {hook}");
            }
            // No inline script or style for the policy to block.
            assert!(!html.contains("<script>") && !html.contains("style="));
        }
    }
    for name in ["xyz", "index.html", "..%2Fopenapi.json", "app.js.map"] {
        let url = format!("{}/ui/{name}", server.url);
        let resp = http.get(&url).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 404, "{url}");
    }
    let resp = http
        .post(format!("{}/ui/app.js", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ui_leaves_the_page_out() {
    for (args, envs) in [
        (&["--no-ui"][..], &[][..]),
        (&[][..], &[("PARTSEAL_NO_UI", "true")][..]),
    ] {
        let server = Server::start_with(args, envs);
        assert!(
            !server.banner.iter().any(|l| l.contains("upload page")),
            "{args:?} {envs:?}: {:?}",
            server.banner
        );
        for path in ["/ui", "/ui/", "/ui/app.js", "/ui/hash-wasm-sha256.js"] {
            let resp = http()
                .get(format!("{}{path}", server.url))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 404, "{args:?} {envs:?}: {path}");
        }
        // The APIs are there all the same.
        let resp = http()
            .get(format!("{}/openapi.json", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_page_verifies_a_file_and_the_server_holds_its_bytes() {
    let Some(python) = browser_python("upload_page_verifies_a_file_and_the_server_holds_its_bytes")
    else {
        return;
    };
    let server = Server::start();
    let creds = server.credentials();
    // Three whole 8 MiB parts and a last one of 5 MiB + 37 bytes.
    let len = 29 * MIB + 37;
    assert_ne!(len % 64, 0);
    let bytes = random_bytes(len);
    let file = server.dir.path().join("upload.bin");
    std::fs::write(&file, &bytes).unwrap();
    let target = target_dir();

    let out = run_browser(
        &python,
        &server,
        json!({
            "mode": "upload",
            "url": format!("{}/ui/", server.url),
            "user": creds.users[0].id,
            "token": creds.users[0].token,
            "file": file,
            "screenshots": target,
        }),
    );
    assert_eq!(
        out["state"],
        "verified",
        "{out}\nserver log:\n{}",
        server.log()
    );
    assert_eq!(out["sha256"], sha_hex(&bytes), "{out}");
    assert_eq!(out["title"], "Verified", "{out}");
    assert!(
        out["text"].as_str().unwrap().contains(&sha_hex(&bytes)),
        "the digest is not shown: {out}"
    );
    // It went through the phases (hashing from the moment the file was
    // chosen, so perhaps done before the click), and nothing in the page
    // failed (a script or WebAssembly blocked by the Content-Security-Policy
    // would be logged here).
    let seen = out["states_seen"].as_array().unwrap();
    for state in ["hashing", "uploading", "verified"] {
        assert!(seen.contains(&json!(state)), "{out}");
    }
    assert!(!seen.contains(&json!("failed")), "{out}");
    assert_eq!(out["severe_logs"], json!([]), "{out}");
    assert_registered_before_sent(&out, len.div_ceil(PART_SIZE));
    assert!(target.join("ui-verified.png").is_file());
    assert!(target.join("ui-verified-phone.png").is_file());

    // The committed file: the same bytes, every part's link checked.
    let id = out["fileId"].as_str().expect("data-file-id");
    let detail = koo(&server, &creds, &format!("files/{id}/detail"), json!({})).await;
    assert_eq!(detail["size"], len, "{detail}");
    assert_eq!(detail["sha256"], sha_hex(&bytes), "{detail}");
    assert_eq!(detail["fileName"], "upload.bin", "{detail}");
    let url = detail["downloadUrl"].as_str().expect("downloadUrl");
    let resp = reqwest::get(url).await.expect("download");
    assert_eq!(resp.status().as_u16(), 200);
    let got = resp.bytes().await.expect("the file's bytes");
    assert!(
        got.len() == bytes.len() && got[..] == bytes[..],
        "the server holds other bytes"
    );
    let log = server.log();
    assert!(
        !log.contains(" WARN ") && !log.contains(" ERROR "),
        "server log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_page_shows_why_a_wrong_token_is_refused() {
    let Some(python) = browser_python("upload_page_shows_why_a_wrong_token_is_refused") else {
        return;
    };
    let server = Server::start();
    let creds = server.credentials();
    let bytes = random_bytes(100_003);
    let file = server.dir.path().join("small.bin");
    std::fs::write(&file, &bytes).unwrap();
    let out = run_browser(
        &python,
        &server,
        json!({
            "mode": "upload",
            "url": format!("{}/ui/", server.url),
            "user": creds.users[0].id,
            "token": "not-the-token-0123456789",
            "file": file,
        }),
    );
    assert_eq!(out["state"], "failed", "{out}");
    assert_eq!(out["title"], "Upload failed", "{out}");
    // What was typed is kept for this tab only.
    assert_eq!(
        out["session_storage"],
        json!({"user": creds.users[0].id, "token": "not-the-token-0123456789"}),
        "{out}"
    );
    assert_eq!(out["local_storage_keys"], 0, "{out}");
    assert_eq!(out["sha256"], Value::Null, "{out}");
    let message = out["message"].as_str().unwrap();
    // The server's own words and code, and which step they answer.
    assert!(
        message.contains("Creating the upload")
            && message.contains("unknown access key or token")
            && message.contains("13000001"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_worker_midstates_are_the_engines() {
    let Some(python) = browser_python("hash_worker_midstates_are_the_engines") else {
        return;
    };
    let server = Server::start();
    let bytes = random_bytes(PART_SIZE + 1);
    let file = server.dir.path().join("prefixes.bin");
    std::fs::write(&file, &bytes).unwrap();
    // (length, part size): the edge lengths around one 64-byte block, parts
    // of one block, reads that end before a part does (the worker reads
    // 4 MiB at a time), and one 8 MiB part plus one byte.
    let cases: Vec<(usize, usize)> = vec![
        (0, 64),
        (1, 64),
        (63, 64),
        (64, 64),
        (65, 64),
        (0, PART_SIZE),
        (1, PART_SIZE),
        (63, PART_SIZE),
        (64, PART_SIZE),
        (65, PART_SIZE),
        (64 * 5 + 17, 128),
        (5 * MIB + 3, MIB),
        (PART_SIZE, PART_SIZE),
        (PART_SIZE + 1, PART_SIZE),
    ];
    let job_cases: Vec<Value> = cases
        .iter()
        .map(|&(length, part_size)| json!({"length": length, "partSize": part_size}))
        .collect();
    let out = run_browser(
        &python,
        &server,
        json!({
            "mode": "midstates",
            "url": format!("{}/ui/", server.url),
            "file": file,
            "cases": job_cases,
        }),
    );
    let results = out["results"].as_array().expect("results");
    assert_eq!(results.len(), cases.len(), "{out}");
    for (&(length, part_size), got) in cases.iter().zip(results) {
        let at = format!("length {length}, part size {part_size}");
        assert!(got.get("error").is_none(), "{at}: {got}");
        let plan = chain_plan(&bytes[..length], part_size as u64, |_| {}).expect("plan");
        assert_eq!(got["sha256"], plan.sha256.to_hex(), "{at}");
        assert_eq!(got["length"], length, "{at}");
        let parts = got["parts"].as_array().expect("parts");
        assert_eq!(parts.len(), plan.parts.len(), "{at}: {got}");
        for (p, want) in parts.iter().zip(&plan.parts) {
            let n = want.number;
            assert_eq!(p["partNumber"], n, "{at}");
            assert_eq!(p["partOffset"], want.offset.unwrap_or(0), "{at}, part {n}");
            assert_eq!(p["partSize"], want.size, "{at}, part {n}");
            let ctx = want.start_ctx().expect("a chain plan has hashCtx");
            assert_eq!(p["hashCtx"], json!(ctx.to_ints()), "{at}, part {n}");
        }
    }
    assert_eq!(out["severe_logs"], json!([]), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_page_retries_a_part_the_network_lost() {
    let Some(python) = browser_python("upload_page_retries_a_part_the_network_lost") else {
        return;
    };
    let server = Server::start();
    let creds = server.credentials();
    let bytes = random_bytes(17 * MIB + 5);
    let file = server.dir.path().join("retried.bin");
    std::fs::write(&file, &bytes).unwrap();
    let out = run_browser(
        &python,
        &server,
        json!({
            "mode": "upload",
            "url": format!("{}/ui/", server.url),
            "user": creds.users[0].id,
            "token": creds.users[0].token,
            "file": file,
            "faults": {"networkErrorOnce": 2},
        }),
    );
    assert_eq!(out["faults"]["failed"], json!([2]), "{out}");
    assert_registered_before_sent(&out, 3);
    assert_eq!(
        out["state"],
        "verified",
        "{out}\nserver log:\n{}",
        server.log()
    );
    assert_eq!(out["sha256"], sha_hex(&bytes), "{out}");
    let id = out["fileId"].as_str().expect("data-file-id");
    let detail = koo(&server, &creds, &format!("files/{id}/detail"), json!({})).await;
    assert_eq!(detail["sha256"], sha_hex(&bytes), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_page_names_a_refused_part_and_does_not_retry_it() {
    let Some(python) = browser_python("upload_page_names_a_refused_part_and_does_not_retry_it")
    else {
        return;
    };
    let server = Server::start();
    let creds = server.credentials();
    let bytes = random_bytes(17 * MIB + 5);
    let file = server.dir.path().join("corrupted.bin");
    std::fs::write(&file, &bytes).unwrap();
    let out = run_browser(
        &python,
        &server,
        json!({
            "mode": "upload",
            "url": format!("{}/ui/", server.url),
            "user": creds.users[0].id,
            "token": creds.users[0].token,
            "file": file,
            "faults": {"corrupt": 2},
            "screenshots": target_dir(),
        }),
    );
    assert_eq!(out["state"], "failed", "{out}");
    // Sent once: a link mismatch is refused for good, not retried.
    assert_eq!(out["faults"]["corrupted"], json!([2]), "{out}");
    let message = out["message"].as_str().unwrap();
    assert!(
        message.starts_with("Part 2 was refused: ") && message.contains("13000420"),
        "{message}"
    );
    assert_eq!(out["sha256"], Value::Null, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_page_corrects_its_date_for_a_skewed_clock() {
    let Some(python) = browser_python("upload_page_corrects_its_date_for_a_skewed_clock") else {
        return;
    };
    let server = Server::start();
    let creds = server.credentials();
    let bytes = random_bytes(3 * MIB + 1);
    let file = server.dir.path().join("skewed.bin");
    std::fs::write(&file, &bytes).unwrap();
    // An hour behind: far outside the 15 min X-Date window, so only a date
    // corrected by the server's `Date` gets through.
    let out = run_browser(
        &python,
        &server,
        json!({
            "mode": "upload",
            "url": format!("{}/ui/", server.url),
            "user": creds.users[0].id,
            "token": creds.users[0].token,
            "file": file,
            "faults": {"clockOffsetSecs": -3600},
        }),
    );
    assert_eq!(
        out["state"],
        "verified",
        "{out}\nserver log:\n{}",
        server.log()
    );
    assert_eq!(out["sha256"], sha_hex(&bytes), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_page_refuses_a_part_size_that_is_not_whole_blocks() {
    let Some(python) = browser_python("upload_page_refuses_a_part_size_that_is_not_whole_blocks")
    else {
        return;
    };
    let server = Server::start();
    let file = server.dir.path().join("any.bin");
    std::fs::write(&file, random_bytes(1000)).unwrap();
    let bad = ["1000", "0", "8 MiB", "-64", "8388609"];
    let out = run_browser(
        &python,
        &server,
        json!({
            "mode": "part-size",
            "url": format!("{}/ui/", server.url),
            "file": file,
            "partSizes": bad,
        }),
    );
    let results = out["results"].as_array().expect("results");
    assert_eq!(results.len(), bad.len(), "{out}");
    for (bad, got) in bad.iter().zip(results) {
        // Nothing started; the field and the form say why.
        assert_eq!(got["state"], "idle", "{bad}: {got}");
        assert_eq!(got["invalid"], "true", "{bad}: {got}");
        let error = got["error"].as_str().unwrap();
        assert!(
            error.starts_with("The part size must be") && error.contains("8388608"),
            "{bad}: {error}"
        );
        assert_eq!(got["hint"], got["error"], "{bad}: {got}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_page_verifies_an_empty_file_and_reports_parts_below_the_server_minimum() {
    let Some(python) = browser_python(
        "upload_page_verifies_an_empty_file_and_reports_parts_below_the_server_minimum",
    ) else {
        return;
    };
    let server = Server::start();
    let creds = server.credentials();
    let empty = server.dir.path().join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    let job = |file: &Path, part_size: usize| {
        json!({
            "mode": "upload",
            "url": format!("{}/ui/", server.url),
            "user": creds.users[0].id,
            "token": creds.users[0].token,
            "file": file,
            "partSize": part_size,
        })
    };
    // One empty part.
    let out = run_browser(&python, &server, job(&empty, PART_SIZE));
    assert_eq!(out["state"], "verified", "{out}");
    assert_eq!(out["sha256"], sha_hex(b""), "{out}");

    // 1 MiB parts, under the server's 5 MiB minimum: refused when the
    // upload is created (its first part, planned with the file's length,
    // cannot be the last), in the server's words.
    let small = server.dir.path().join("small-parts.bin");
    std::fs::write(&small, random_bytes(3 * MIB + 1)).unwrap();
    let out = run_browser(&python, &server, job(&small, MIB));
    assert_eq!(out["state"], "failed", "{out}");
    let message = out["message"].as_str().unwrap();
    assert!(
        message.starts_with("Creating the upload") && message.contains("5242880"),
        "{message}"
    );
}
