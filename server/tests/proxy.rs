//! `contrib/nginx.conf` in front of the real binary: nginx (Debian's, run
//! unprivileged in a temporary prefix on a free port, stopped by its PID)
//! with that snippet, TLS lines aside, proxies a real KooDrive upload of a
//! part larger than nginx's default body limit, its complete and its
//! download; the server hands out URLs on `--public-url`, the proxy.
//! Skips, saying so, when nginx is not installed.

mod ops_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use ops_support::{Bin, free_port, roundtrip};

const SNIPPET: &str = include_str!("../../contrib/nginx.conf");

fn nginx() -> Option<String> {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(str::to_owned)
}

/// The snippet on `listen` in plain HTTP, proxying to `upstream`.
fn snippet_for_test(listen: u16, upstream: u16) -> String {
    let mut out = String::new();
    for line in SNIPPET.lines() {
        let t = line.trim_start();
        if t.starts_with("ssl_") {
            continue;
        }
        let line = line
            .replace("listen 443 ssl;", &format!("listen 127.0.0.1:{listen};"))
            .replace(
                "server 127.0.0.1:8080;",
                &format!("server 127.0.0.1:{upstream};"),
            );
        out.push_str(&line);
        out.push('\n');
    }
    assert!(out.contains(&format!("listen 127.0.0.1:{listen};")));
    assert!(out.contains(&format!("server 127.0.0.1:{upstream};")));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_complete_and_download_through_nginx() {
    let Some(nginx) = nginx() else {
        eprintln!("skipped: nginx is not installed (apt-get install nginx-light)");
        return;
    };
    let prefix = tempfile::tempdir().unwrap();
    let p = prefix.path();
    for d in ["logs", "body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        std::fs::create_dir_all(p.join(d)).unwrap();
    }
    let nginx_port = free_port();
    let server_port = free_port();
    let public = format!("http://127.0.0.1:{nginx_port}");
    let mut bin = Bin::start(server_port, &["--public-url", &public]).await;

    // As root the workers would become nobody; keep them this user.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root root;".to_owned()
    } else {
        String::new()
    };
    let d = p.display();
    let conf = format!(
        "{user}\ndaemon off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/logs/error.log warn;\nevents {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  \
         proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
         uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n{}\n}}\n",
        snippet_for_test(nginx_port, server_port)
    );
    std::fs::write(p.join("nginx.conf"), conf).unwrap();
    let mut child = Command::new(&nginx)
        .arg("-p")
        .arg(p)
        .arg("-c")
        .arg(p.join("nginx.conf"))
        .arg("-e")
        .arg(p.join("logs/error.log"))
        .stdin(Stdio::null())
        .spawn()
        .expect("start nginx");
    let pid = child.id() as libc::pid_t;
    // Bounded wait for its port.
    let mut up = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", nginx_port)).is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let errors = || std::fs::read_to_string(p.join("logs/error.log")).unwrap_or_default();
    assert!(up, "nginx did not listen: {}", errors());

    let http = reqwest::Client::new();
    // Over nginx's default 1 MiB body limit.
    let bytes: Vec<u8> = (0..3u32 << 20).map(|i| (i * 7 + i / 4096) as u8).collect();
    let rt = roundtrip(&http, &public, &bin.user, &bytes, "via-nginx").await;
    assert!(rt.upload_url.starts_with(&public), "{}", rt.upload_url);
    assert!(rt.download_url.starts_with(&public), "{}", rt.download_url);
    for (step, id) in &rt.request_ids {
        assert_eq!(id, &format!("via-nginx-{step}"));
    }
    // The requests reached the server through the proxy.
    let log = bin.log().join("\n");
    assert!(log.contains("via-nginx-put"), "{log}");

    // SAFETY: kill(2) on the PID of our own child (nginx's master).
    unsafe {
        libc::kill(pid, libc::SIGQUIT);
    }
    let _ = child.wait();
    bin.stop().await;
}
