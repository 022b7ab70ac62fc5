//! CORS in a real browser: headless Chromium loads a page from another
//! origin (another port on 127.0.0.1) whose script runs a KooDrive upload
//! against the real binary with fetch(): create, PUT of the part to its
//! upload URL, complete, detail, ranged GET of the download URL, reading
//! the exposed headers. It succeeds with `--cors-origin` naming the page's
//! origin and fails, as the browser's CORS check refuses it, without.
//! Needs `PARTSEAL_BROWSER_PYTHON` (a Python with Selenium, from
//! `scripts/install-browser.sh`); skips, saying so, without it.

mod ops_support;

use std::process::Command;

use ops_support::{Bin, free_port};
use serde_json::Value;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/cors_page.py");

/// Runs the page against a server started with `flags`; the page's outcome.
async fn page_outcome(python: &str, chromedriver: &str, page_port: u16, flags: &[&str]) -> Value {
    let mut bin = Bin::start(0, flags).await;
    let (python, chromedriver) = (python.to_owned(), chromedriver.to_owned());
    let (url, user, token) = (bin.url.clone(), bin.user.id.clone(), bin.user.token.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(SCRIPT)
            .arg(page_port.to_string())
            .args([&url, &user, &token, &chromedriver])
            .env("SE_OFFLINE", "true")
            .output()
            .expect("run the browser script")
    })
    .await
    .unwrap();
    bin.stop().await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser script failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_another_origin_uploads_only_when_its_origin_is_allowed() {
    let Ok(python) = std::env::var("PARTSEAL_BROWSER_PYTHON") else {
        eprintln!(
            "skipped: PARTSEAL_BROWSER_PYTHON is not set \
             (eval \"$(bash scripts/install-browser.sh)\" sets it)"
        );
        return;
    };
    let chromedriver =
        std::env::var("PARTSEAL_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    let page_port = free_port();
    let origin = format!("http://127.0.0.1:{page_port}");

    let v = page_outcome(
        &python,
        &chromedriver,
        page_port,
        &["--cors-origin", &origin],
    )
    .await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["sha256"], v["expected_sha256"], "{v}");
    // Exposed headers are readable by the script.
    assert_eq!(v["create_request_id"], "browser-files-create", "{v}");
    assert!(v["etag"].as_str().is_some_and(|e| e.len() == 66), "{v}");
    assert_eq!(v["range_status"], 206, "{v}");
    assert_eq!(v["content_range"], "bytes 0-4/36", "{v}");
    assert_eq!(v["first_bytes"], "bytes", "{v}");

    let v = page_outcome(&python, &chromedriver, page_port, &[]).await;
    assert_eq!(v["ok"], false, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("Failed to fetch"),
        "the browser refused the call: {v}"
    );
}
