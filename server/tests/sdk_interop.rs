//! Interop with the official Huawei Cloud Python SDK: `tests/sdk/metastudio_flow.py`
//! drives a server on loopback with `huaweicloudsdkmetastudio` 3.1.219 from
//! PyPI, which signs every call with AK/SK; then the stored file is checked
//! against the bytes the script uploaded.
//!
//! The Python is `$PARTSEAL_SDK_PYTHON` when set (`.ci/run` sets it), else a
//! virtualenv at `target/sdk-venv`, created and filled with pip when it does
//! not import the SDK yet. Without Python or PyPI the test fails and says so:
//! it never passes without having run the SDK.

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use common::{TestServer, sha_hex};
use serde_json::{Value, json};
use tokio::process::Command;

const SDK_PACKAGE: &str = "huaweicloudsdkmetastudio";
const SDK_VERSION: &str = "3.1.219";
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/metastudio_flow.py");
/// Checking that a Python imports the SDK.
const PROBE: Duration = Duration::from_secs(60);
/// Creating the virtualenv, and installing the SDK into it.
const INSTALL: Duration = Duration::from_secs(600);
/// The whole SDK flow.
const FLOW: Duration = Duration::from_secs(300);

/// Runs `cmd` to its end within `limit`; a timeout kills it and fails the
/// test, and so does a program that cannot be started.
async fn output(mut cmd: Command, limit: Duration, what: &str) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot run {:?}: {e}", cmd.as_std().get_program()));
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(out) => out.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => panic!("{what}: no end within {limit:?}"),
    }
}

fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether `python` imports the SDK in the pinned version.
async fn probe(python: &Path) -> Result<(), String> {
    let mut cmd = Command::new(python);
    cmd.args([
        "-c",
        "import importlib.metadata as m, huaweicloudsdkcore, huaweicloudsdkmetastudio; \
         print(m.version('huaweicloudsdkmetastudio'))",
    ]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    let out = tokio::time::timeout(PROBE, child.wait_with_output())
        .await
        .map_err(|_| format!("{} did not answer within {PROBE:?}", python.display()))?
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{} does not import the SDK: {}",
            python.display(),
            describe(&out)
        ));
    }
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if version != SDK_VERSION {
        return Err(format!(
            "{} has {SDK_PACKAGE} {version}, not {SDK_VERSION}",
            python.display()
        ));
    }
    Ok(())
}

/// A Python with the SDK: `$PARTSEAL_SDK_PYTHON`, or `target/sdk-venv`
/// (created and filled from PyPI when needed).
async fn sdk_python() -> PathBuf {
    if let Some(p) = std::env::var_os("PARTSEAL_SDK_PYTHON").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if let Err(e) = probe(&p).await {
            panic!(
                "PARTSEAL_SDK_PYTHON={} cannot be used: {e}\n\
                 (install the SDK into it with `pip install {SDK_PACKAGE}=={SDK_VERSION}`, \
                 or unset the variable to use target/sdk-venv)",
                p.display()
            );
        }
        return p;
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR has a parent")
        .join("sdk-venv");
    let python = venv.join("bin").join("python");
    if python.exists() && probe(&python).await.is_ok() {
        return python;
    }
    if !python.exists() {
        let mut cmd = Command::new("python3");
        cmd.args([OsString::from("-m"), "venv".into(), venv.clone().into()]);
        let out = output(cmd, INSTALL, "python3 -m venv (needs Python 3 with venv)").await;
        assert!(
            out.status.success(),
            "python3 -m venv {} failed (is python3-venv installed? or set \
             PARTSEAL_SDK_PYTHON to a Python with {SDK_PACKAGE}=={SDK_VERSION}): {}",
            venv.display(),
            describe(&out)
        );
    }
    let mut cmd = Command::new(&python);
    cmd.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--timeout",
        "60",
        &format!("{SDK_PACKAGE}=={SDK_VERSION}"),
    ]);
    let out = output(cmd, INSTALL, "pip install of the SDK").await;
    assert!(
        out.status.success(),
        "pip install {SDK_PACKAGE}=={SDK_VERSION} into {} failed (is PyPI reachable?): {}",
        venv.display(),
        describe(&out)
    );
    if let Err(e) = probe(&python).await {
        panic!("after pip install: {e}");
    }
    python
}

/// The JSON lines of the script's stdout, each checked to be an object.
fn json_lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"));
            assert!(v.is_object(), "stdout line is not an object: {l}");
            v
        })
        .collect()
}

fn step<'a>(lines: &'a [Value], name: &str) -> &'a Value {
    lines
        .iter()
        .find(|v| v["step"] == name)
        .unwrap_or_else(|| panic!("no step {name:?} in {lines:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_official_python_sdk_uploads_confirms_and_deletes() {
    let python = sdk_python().await;
    let s = TestServer::start().await;
    let alice = s.user("alice").clone();
    let out_dir = tempfile::tempdir().unwrap();

    let mut cmd = Command::new(&python);
    cmd.arg(SCRIPT)
        .args(["--endpoint", &s.url])
        .args(["--ak", &alice.access_key])
        .args(["--sk", &alice.secret_key])
        .args(["--project", &alice.project_id])
        .arg("--data-dir")
        .arg(out_dir.path())
        // Loopback must not go through a proxy of the environment.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let out = output(cmd, FLOW, "metastudio_flow.py").await;
    assert!(
        out.status.success(),
        "metastudio_flow.py failed: {}",
        describe(&out)
    );
    let lines = json_lines(&out.stdout);
    let summary = lines.last().expect("the script printed nothing");
    assert_eq!(summary["ok"], true, "{}", describe(&out));

    // The kept file: what the server stored is what the SDK client sent.
    let kept = &summary["kept"];
    let id = kept["file_id"].as_str().expect("kept.file_id").to_owned();
    let sent = std::fs::read(out_dir.path().join(format!("{id}.bin")))
        .expect("the script writes the bytes it uploaded to DATA_DIR/<file_id>.bin");
    assert!(!sent.is_empty());
    assert_eq!(kept["size"], sent.len(), "{kept}");
    assert_eq!(kept["sha256"], sha_hex(&sent), "{kept}");
    assert_eq!(step(&lines, "created-kept")["file_id"], id.as_str());
    // Through the API, as the same user...
    let (status, v) = s
        .koo("alice", &format!("files/{id}/detail"), json!({}))
        .await;
    assert_eq!((status, &v["code"]), (200, &json!(0)), "{v}");
    assert_eq!(v["size"], sent.len(), "{v}");
    assert_eq!(v["sha256"], sha_hex(&sent), "{v}");
    assert_eq!(v["fileType"], "PNG", "{v}");
    // ...and on disk, byte for byte.
    let stored = std::fs::read(s.dir.path().join("files").join(&id).join("data")).unwrap();
    assert!(
        stored == sent,
        "the stored bytes differ from the uploaded ones"
    );
    // Another user does not see it.
    let (status, v) = s.koo("bob", &format!("files/{id}/detail"), json!({})).await;
    assert_eq!(status, 400, "{v}");

    // The SDK sends the wrong file_md5 as the PUT's Content-MD5 too, so the
    // PUT is refused (and keeps nothing), and confirm finds the segment
    // missing; nothing was committed for it.
    let bad = step(&lines, "bad-md5-rejected");
    assert_eq!(bad["put_status"], 400, "{bad}");
    assert_eq!(bad["status"], 400, "{bad}");
    assert_eq!(bad["error_code"], "MSS.10001021", "{bad}");
    assert_eq!(summary["bad_md5"], bad["file_id"]);
    let bad_id = bad["file_id"].as_str().unwrap();
    assert!(out_dir.path().join(format!("{bad_id}.bin")).exists());

    // The wrong SK was refused.
    let wrong_sk = step(&lines, "wrong-sk-rejected");
    assert_eq!(wrong_sk["status"], 401, "{wrong_sk}");
    assert_eq!(wrong_sk["error_code"], "MSS.00000001", "{wrong_sk}");

    // Refused, cancelled and deleted files are not stored.
    let deleted = summary["deleted"].as_str().expect("deleted");
    let cancelled = summary["cancelled"].as_str().expect("cancelled");
    assert_eq!(step(&lines, "deleted")["file_id"], deleted);
    assert_eq!(step(&lines, "cancelled")["file_id"], cancelled);
    for gone in [bad_id, deleted, cancelled] {
        assert_ne!(gone, id);
        let (status, v) = s
            .koo("alice", &format!("files/{gone}/detail"), json!({}))
            .await;
        assert_eq!((status, &v["code"]), (400, &json!(13000401)), "{gone}: {v}");
        assert!(!s.dir.path().join("files").join(gone).exists(), "{gone}");
    }
}
