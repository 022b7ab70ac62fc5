//! The operations surface in-process: metrics move by exactly what a known
//! sequence of requests did (scraped and parsed as Prometheus text), the
//! readiness probe flips for each of its checks, the sweep's expiries are
//! counted, request ids are taken or made and echoed, and CORS answers only
//! when configured.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, chain_parts, data, sha_hex};
use partseal::{Config, Engine, Limits};
use partseal_server::auth::UrlSigner;
use partseal_server::config::Settings;
use partseal_server::ops::OpsOptions;
use partseal_server::{AppState, app};
use serde_json::{Value, json};

/// A server like [`TestServer::start`] with these operations options.
async fn start(ops: OpsOptions) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let credentials = common::Options::default().credentials;
    let users = credentials.users.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let settings = Settings {
        public_url: url.clone(),
        max_json_body: 1 << 20,
        body_timeout: Duration::from_secs(30),
        date_window: Duration::from_secs(900),
        url_ttl: Duration::from_secs(3600),
        max_parts_in_flight: 64,
        ui: true,
    };
    let config = Config::default().with_limits(Limits::new(64, 64 << 20, 1 << 30));
    let engine = Engine::open(dir.path(), config).unwrap();
    let state = Arc::new(
        AppState::new(engine, credentials, UrlSigner::new([7u8; 32]), settings).with_ops(ops),
    );
    let served = state.clone();
    tokio::spawn(async move {
        axum::serve(listener, app(served)).await.unwrap();
    });
    TestServer {
        url,
        http: reqwest::Client::new(),
        dir,
        users,
        state,
    }
}

/// A scrape, parsed by a strict OpenMetrics parser: every sample by family
/// name (counters without `_total`), sorted labels and value (a histogram's
/// value is its count).
/// Sorted label pairs of a sample, and its value.
type Samples = Vec<(Vec<(String, String)>, f64)>;

struct Scrape(HashMap<String, Samples>);

impl Scrape {
    async fn of(s: &TestServer) -> Scrape {
        let resp = s
            .http
            .get(format!("{}/metrics", s.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let text = resp.text().await.unwrap();
        let parsed = openmetrics_parser::openmetrics::parse_openmetrics(&text)
            .unwrap_or_else(|e| panic!("the scrape does not parse: {e:?}\n{text}"));
        let mut by_name: HashMap<String, Samples> = HashMap::new();
        for (name, family) in &parsed.families {
            for sample in family.iter_samples() {
                let set = sample.get_labelset().unwrap();
                let mut labels: Vec<(String, String)> =
                    set.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                labels.sort();
                use openmetrics_parser::OpenMetricsValue as V;
                let value = match &sample.value {
                    V::Counter(c) => c.value.as_f64(),
                    V::Gauge(n) | V::Unknown(n) => n.as_f64(),
                    V::Histogram(h) => h.count.unwrap_or(0) as f64,
                    other => panic!("{name}: unexpected value {other:?}"),
                };
                by_name
                    .entry(name.clone())
                    .or_default()
                    .push((labels, value));
            }
        }
        Scrape(by_name)
    }

    /// The value of family `name` with exactly `labels`, 0 when absent.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut want: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        want.sort();
        self.0
            .get(name)
            .and_then(|v| v.iter().find(|(l, _)| *l == want))
            .map_or(0.0, |(_, v)| *v)
    }

    fn all_label_values(&self) -> Vec<String> {
        self.0
            .values()
            .flatten()
            .flat_map(|(l, _)| l.iter().map(|(_, v)| v.clone()))
            .collect()
    }
}

const PART: usize = 6400;
const PART_ROUTE: &str = "/upload/{api}/{file_id}/{part}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_by_what_the_requests_did() {
    let s = start(OpsOptions::default()).await;
    let bytes = data(PART * 4, 11);
    let (id, urls) = s
        .koo_create(
            "alice",
            json!({"fileName": "m.bin", "fileType": "45", "length": bytes.len(),
                   "sha256": sha_hex(&bytes), "uploadMode": "multipart",
                   "multiParts": chain_parts(&bytes, PART)}),
        )
        .await;
    let before = Scrape::of(&s).await;
    assert_eq!(before.get("partseal_open_uploads", &[]), 1.0);
    assert_eq!(before.get("partseal_parts", &[("outcome", "stored")]), 0.0);

    // Part 2 corrupted: a link mismatch. Then all four parts right.
    let mut bad = bytes[PART..2 * PART].to_vec();
    bad[10] ^= 1;
    assert_eq!(s.put(&urls[1], bad).await.0, 400);
    for (i, url) in urls.iter().enumerate() {
        let (status, etag) = s.put(url, bytes[i * PART..(i + 1) * PART].to_vec()).await;
        assert_eq!(status, 200, "{etag}");
    }
    let (status, v) = s
        .koo("alice", "files/complete", json!({"fileId": id}))
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = s
        .koo("alice", "files/complete", json!({"fileId": id}))
        .await;
    assert_eq!((status, &v["alreadyCompleted"]), (200, &json!(true)), "{v}");

    // A second upload: complete with a part missing, then a part over its
    // planned size.
    let (id2, urls2) = s
        .koo_create(
            "alice",
            json!({"fileName": "n.bin", "fileType": "45", "length": bytes.len(),
                   "uploadMode": "multipart", "multiParts": chain_parts(&bytes, PART)}),
        )
        .await;
    let (status, v) = s
        .koo("alice", "files/complete", json!({"fileId": id2}))
        .await;
    assert_eq!(status, 400, "{v}");

    let m = Scrape::of(&s).await;
    assert_eq!(m.get("partseal_parts", &[("outcome", "stored")]), 4.0);
    assert_eq!(
        m.get("partseal_parts", &[("outcome", "link_mismatch")]),
        1.0
    );
    assert_eq!(
        m.get("partseal_part_bytes_received", &[("api", "koodrive")]),
        (5 * PART) as f64
    );
    assert_eq!(
        m.get(
            "partseal_completes",
            &[("mode", "chain"), ("outcome", "committed")]
        ),
        1.0
    );
    // The repeat found no open upload: it was committed already.
    assert_eq!(
        m.get(
            "partseal_completes",
            &[("mode", "none"), ("outcome", "already_committed")]
        ),
        1.0
    );
    assert_eq!(
        m.get(
            "partseal_completes",
            &[("mode", "chain"), ("outcome", "missing_parts")]
        ),
        1.0
    );
    assert_eq!(m.get("partseal_complete_duration_seconds", &[]), 3.0);
    assert_eq!(
        m.get(
            "partseal_http_requests",
            &[("api", "upload"), ("route", PART_ROUTE), ("status", "200")]
        ),
        4.0
    );
    assert_eq!(
        m.get(
            "partseal_http_requests",
            &[("api", "upload"), ("route", PART_ROUTE), ("status", "400")]
        ),
        1.0
    );
    assert_eq!(
        m.get(
            "partseal_http_requests",
            &[
                ("api", "koodrive"),
                ("route", "/koodrive/ose/v1/files/complete"),
                ("status", "200")
            ]
        ),
        2.0
    );
    assert_eq!(
        m.get(
            "partseal_http_request_duration_seconds",
            &[("api", "upload"), ("route", PART_ROUTE)]
        ),
        5.0
    );
    // The first scrape was counted before this one.
    assert_eq!(
        m.get(
            "partseal_http_requests",
            &[("api", "ops"), ("route", "/metrics"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(m.get("partseal_open_uploads", &[]), 1.0);
    assert!(m.get("partseal_store_free_bytes", &[]) > 0.0);
    assert_eq!(m.get("partseal_uploads_expired", &[]), 0.0);
    // No id, owner or raw path is a label value.
    for v in m.all_label_values() {
        assert!(!v.contains(&id) && !v.contains(&id2), "{v}");
        assert!(!v.contains("alice"), "{v}");
    }

    // A part longer than planned is too large.
    let long = data(PART + 100, 12);
    assert_eq!(s.put(&urls2[0], long).await.0, 400);
    let m = Scrape::of(&s).await;
    assert_eq!(m.get("partseal_parts", &[("outcome", "too_large")]), 1.0);
    assert_eq!(m.get("partseal_parts", &[("outcome", "stored")]), 4.0);
    // An unmatched path is counted under a fixed route, not its own.
    let r = s
        .http
        .get(format!("{}/no/such/{id}", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let m = Scrape::of(&s).await;
    assert_eq!(
        m.get(
            "partseal_http_requests",
            &[("api", "other"), ("route", "unmatched"), ("status", "404")]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_token_is_required_when_set() {
    let s = start(OpsOptions {
        metrics_token: Some("scrape-secret-0123".into()),
        ..OpsOptions::default()
    })
    .await;
    let url = format!("{}/metrics", s.url);
    let r = s.http.get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = s.http.get(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = s
        .http
        .get(&url)
        .bearer_auth("scrape-secret-0123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.unwrap().contains("partseal_open_uploads"));
}

async fn probe(s: &TestServer, path: &str) -> (u16, Value) {
    let r = s.http.get(format!("{}{path}", s.url)).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Polls `/readyz` until it answers `want` (the store's checks are cached
/// for a second); panics after 30 s.
async fn readyz_until(s: &TestServer, want: u16) -> Value {
    for _ in 0..300 {
        let (status, v) = probe(s, "/readyz").await;
        if status == want {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/readyz never answered {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_when_the_store_takes_no_file_and_recovers() {
    let s = start(OpsOptions::default()).await;
    let (status, v) = probe(&s, "/readyz").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "ok");
    for check in ["store", "free_space", "shutdown"] {
        assert_eq!(v["checks"][check]["ok"], true, "{v}");
    }
    // The probe directory replaced by a plain file: no file can be created
    // in it, for root as for anyone else.
    let probe_dir = s.dir.path().join("probe");
    std::fs::remove_dir(&probe_dir).unwrap();
    std::fs::write(&probe_dir, b"not a directory").unwrap();
    let v = readyz_until(&s, 503).await;
    assert_eq!(v["status"], "fail");
    assert_eq!(v["checks"]["store"]["ok"], false, "{v}");
    assert!(
        v["checks"]["store"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot write"),
        "{v}"
    );
    assert_eq!(v["checks"]["free_space"]["ok"], true, "{v}");
    // Liveness does not depend on it.
    assert_eq!(probe(&s, "/healthz").await.0, 200);
    std::fs::remove_file(&probe_dir).unwrap();
    std::fs::create_dir(&probe_dir).unwrap();
    readyz_until(&s, 200).await;
    // The probe leaves nothing behind.
    assert_eq!(std::fs::read_dir(&probe_dir).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_below_min_free_bytes() {
    let s = start(OpsOptions {
        min_free_bytes: u64::MAX,
        ..OpsOptions::default()
    })
    .await;
    let (status, v) = probe(&s, "/readyz").await;
    assert_eq!(status, 503, "{v}");
    let free = &v["checks"]["free_space"];
    assert_eq!(free["ok"], false, "{v}");
    assert_eq!(free["min_free_bytes"], u64::MAX);
    assert!(free["free_bytes"].as_u64().unwrap() > 0, "{v}");
    assert!(
        free["message"]
            .as_str()
            .unwrap()
            .contains("--min-free-bytes")
    );
    assert_eq!(v["checks"]["store"]["ok"], true, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_once_shutdown_begins_and_healthz_still_answers() {
    let s = start(OpsOptions::default()).await;
    assert_eq!(probe(&s, "/readyz").await.0, 200);
    s.state.ops.begin_shutdown();
    let (status, v) = probe(&s, "/readyz").await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["checks"]["shutdown"]["ok"], false, "{v}");
    assert_eq!(v["checks"]["store"]["ok"], true, "{v}");
    let (status, v) = probe(&s, "/healthz").await;
    assert_eq!((status, &v["status"]), (200, &json!("ok")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_taken_validated_or_made_and_echoed() {
    let s = start(OpsOptions::default()).await;
    let get = |h: Vec<(&'static str, String)>| {
        let mut req = s.http.get(format!("{}/healthz", s.url));
        for (k, v) in h {
            req = req.header(k, v);
        }
        async move {
            let r = req.send().await.unwrap();
            r.headers()
                .get("x-request-id")
                .expect("every answer has X-Request-Id")
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    assert_eq!(
        get(vec![("x-request-id", "req-1.a:b_c".into())]).await,
        "req-1.a:b_c"
    );
    assert_eq!(
        get(vec![("x-traceid", "trace-77".into())]).await,
        "trace-77"
    );
    assert_eq!(
        get(vec![
            ("x-request-id", "rid".into()),
            ("x-traceid", "tid".into())
        ])
        .await,
        "rid"
    );
    let is_fresh = |id: &str| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    for bad in ["a b".to_owned(), "x".repeat(129), "<script>".into()] {
        let id = get(vec![("x-request-id", bad.clone())]).await;
        assert!(is_fresh(&id), "{bad:?} gave {id:?}");
    }
    let a = get(vec![]).await;
    let b = get(vec![]).await;
    assert!(is_fresh(&a) && is_fresh(&b) && a != b);

    // MetaStudio answers carry the same id as every other answer.
    let alice = s.user("alice").clone();
    let r = s
        .http
        .post(format!("{}/v1/{}/files", s.url, alice.project_id))
        .header("x-auth-token", &alice.token)
        .header("x-request-id", "trace-mss-1")
        .json(&json!({"file_name": "a.txt"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-mss-1");
    let r = s
        .http
        .post(format!("{}/v1/{}/files", s.url, alice.project_id))
        .header("x-auth-token", &alice.token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(is_fresh(r.headers()["x-request-id"].to_str().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_only_when_an_origin_is_configured() {
    let origin = "http://127.0.0.1:9";
    let preflight = |s: &TestServer, path: &str| {
        s.http
            .request(reqwest::Method::OPTIONS, format!("{}{path}", s.url))
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .header(
                "access-control-request-headers",
                "content-type,content-md5,x-request-id",
            )
            .send()
    };
    let off = start(OpsOptions::default()).await;
    let r = preflight(&off, "/upload/koodrive/0123456789abcdef0123456789abcdef/1")
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());

    let on = start(OpsOptions {
        cors_origins: vec![origin.into()],
        ..OpsOptions::default()
    })
    .await;
    for path in [
        "/upload/koodrive/0123456789abcdef0123456789abcdef/1",
        "/koodrive/ose/v1/files/create",
        "/v1/p/files",
        "/download/koodrive/0123456789abcdef0123456789abcdef",
    ] {
        let r = preflight(&on, path).await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], origin, "{path}");
        let methods = h["access-control-allow-methods"].to_str().unwrap();
        for m in ["GET", "PUT", "POST", "DELETE", "HEAD"] {
            assert!(methods.contains(m), "{methods}");
        }
        let allowed = h["access-control-allow-headers"].to_str().unwrap();
        for name in [
            "authorization",
            "x-user-id",
            "x-date",
            "x-sdk-date",
            "content-md5",
        ] {
            assert!(allowed.contains(name), "{allowed}");
        }
    }
    // A simple request gets the exposed headers; another origin gets none.
    let r = on
        .http
        .get(format!("{}/healthz", on.url))
        .header("origin", origin)
        .send()
        .await
        .unwrap();
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    for name in [
        "etag",
        "content-range",
        "x-request-id",
        "x-traceid",
        "x-partseal-committed",
    ] {
        assert!(exposed.contains(name), "{exposed}");
    }
    let r = on
        .http
        .get(format!("{}/healthz", on.url))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[test]
fn cors_origins_are_checked() {
    use partseal_server::ops::parse_cors_origin;
    assert_eq!(parse_cors_origin("*").unwrap(), "*");
    assert_eq!(
        parse_cors_origin("https://app.example.com/").unwrap(),
        "https://app.example.com"
    );
    assert_eq!(
        parse_cors_origin("http://127.0.0.1:8000").unwrap(),
        "http://127.0.0.1:8000"
    );
    for bad in [
        "app.example.com",
        "https://",
        "https://a/b",
        "ftp://a",
        "https://a b",
    ] {
        assert!(parse_cors_origin(bad).is_err(), "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_uploads_are_counted_by_the_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.upload_ttl = Some(Duration::from_secs(1));
    let engine = Engine::open(dir.path(), config).unwrap();
    let owner = partseal::Owner::new("user:alice").unwrap();
    for _ in 0..2 {
        engine
            .create(&owner, partseal::FileSpec::default())
            .unwrap();
    }
    let metrics = partseal_server::ops::Metrics::new();
    let sweep = tokio::spawn(partseal_server::sweep::run_counted(
        engine.clone(),
        Some(metrics.uploads_expired()),
        std::future::pending(),
    ));
    let value = |text: &str| {
        let parsed = openmetrics_parser::openmetrics::parse_openmetrics(text).unwrap();
        match &parsed.families["partseal_uploads_expired"]
            .iter_samples()
            .next()
            .unwrap()
            .value
        {
            openmetrics_parser::OpenMetricsValue::Counter(c) => c.value.as_f64(),
            other => panic!("{other:?}"),
        }
    };
    let mut seen = 0.0;
    for _ in 0..300 {
        seen = value(&metrics.encode(engine.open_upload_count(), None));
        if seen >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sweep.abort();
    assert_eq!(seen, 2.0);
    assert_eq!(engine.open_upload_count(), 0);
    let text = metrics.encode(engine.open_upload_count(), None);
    assert!(text.contains("partseal_open_uploads 0"), "{text}");
}
