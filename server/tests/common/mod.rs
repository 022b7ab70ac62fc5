//! A server on an ephemeral loopback port over a temporary store, with two
//! users and a shared folder, and helpers to call both APIs.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use partseal::{Config, Engine, Limits};
use partseal_server::auth::{UrlSigner, format_compact_date, sdk_authorization_header};
use partseal_server::config::{Credentials, Settings, SharedFolder, User};
use partseal_server::{AppState, app};
use serde_json::{Value, json};

pub struct TestServer {
    pub url: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    pub users: Vec<User>,
    pub state: Arc<AppState>,
}

pub fn user(id: &str) -> User {
    User {
        id: id.into(),
        token: format!("token-of-{id}-0123456789"),
        access_key: format!("AK{}", id.to_uppercase()),
        secret_key: format!("secret-of-{id}-0123456789"),
        project_id: format!("project-{id}"),
    }
}

/// The users, shared folders and settings of a test server.
pub struct Options {
    pub credentials: Credentials,
    pub body_timeout: Duration,
    pub date_window: Duration,
}

impl Default for Options {
    /// Users alice, bob and carol; folder `team` of alice and bob; a 30 s
    /// body timeout and a 15 min date window.
    fn default() -> Options {
        Options {
            credentials: Credentials {
                users: vec![user("alice"), user("bob"), user("carol")],
                shared_folders: vec![SharedFolder {
                    id: "team".into(),
                    members: vec!["alice".into(), "bob".into()],
                }],
            },
            body_timeout: Duration::from_secs(30),
            date_window: Duration::from_secs(900),
        }
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_opts(Options::default()).await
    }

    pub async fn start_with(body_timeout: Duration) -> TestServer {
        Self::start_opts(Options {
            body_timeout,
            ..Options::default()
        })
        .await
    }

    pub async fn start_opts(opts: Options) -> TestServer {
        Self::start_full(opts, |_, _| {}).await
    }

    /// A server whose engine configuration and settings `tweak` changes
    /// from the defaults of [`TestServer::start`].
    pub async fn start_custom(tweak: impl FnOnce(&mut Config, &mut Settings)) -> TestServer {
        Self::start_full(Options::default(), tweak).await
    }

    async fn start_full(
        opts: Options,
        tweak: impl FnOnce(&mut Config, &mut Settings),
    ) -> TestServer {
        let Options {
            credentials,
            body_timeout,
            date_window,
        } = opts;
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default().with_limits(Limits::new(64, 64 << 20, 1 << 30));
        let users = credentials.users.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut settings = Settings {
            public_url: url.clone(),
            max_json_body: 1 << 20,
            body_timeout,
            date_window,
            url_ttl: Duration::from_secs(3600),
            max_parts_in_flight: 64,
            ui: true,
        };
        tweak(&mut config, &mut settings);
        let engine = Engine::open(dir.path(), config).unwrap();
        let state = Arc::new(AppState::new(
            engine,
            credentials,
            UrlSigner::new([7u8; 32]),
            settings,
        ));
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

    pub fn user(&self, id: &str) -> &User {
        self.users.iter().find(|u| u.id == id).unwrap()
    }

    /// A KooDrive call as `user`, with a fresh X-Date.
    pub async fn koo(&self, user: &str, path: &str, body: Value) -> (u16, Value) {
        self.koo_with(user, path, body, &[]).await
    }

    /// A KooDrive call whose headers `extra` add to or replace the defaults.
    pub async fn koo_with(
        &self,
        user: &str,
        path: &str,
        body: Value,
        extra: &[(&str, String)],
    ) -> (u16, Value) {
        let u = self.user(user);
        let mut headers = vec![
            ("authorization", format!("Bearer {}", u.token)),
            ("x-user-id", u.id.clone()),
            ("x-date", now_compact()),
        ];
        for (k, v) in extra {
            headers.retain(|(h, _)| !h.eq_ignore_ascii_case(k));
            headers.push((k, v.clone()));
        }
        let mut req = self
            .http
            .post(format!("{}/koodrive/ose/v1/{path}", self.url))
            .json(&body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let v = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, v)
    }

    /// PUTs bytes to an upload URL; returns the status and ETag or body.
    pub async fn put(&self, url: &str, bytes: Vec<u8>) -> (u16, String) {
        let resp = self.http.put(url).body(bytes).send().await.unwrap();
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().trim_matches('"').to_owned());
        let text = resp.text().await.unwrap();
        (status, etag.unwrap_or(text))
    }

    /// A MetaStudio call signed with `user`'s AK/SK as the SDK signs it.
    pub async fn mss(
        &self,
        user: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value, HeaderMap) {
        let u = self.user(user).clone();
        self.mss_signed(
            &u.access_key,
            &u.secret_key,
            &u.project_id,
            method,
            path,
            body,
        )
        .await
    }

    pub async fn mss_signed(
        &self,
        ak: &str,
        sk: &str,
        project: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value, HeaderMap) {
        let date = now_compact();
        self.mss_signed_at(ak, sk, project, method, path, body, &date)
            .await
    }

    /// A MetaStudio call as `user`, signed with `X-Sdk-Date: date`.
    pub async fn mss_at(
        &self,
        user: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
        date: &str,
    ) -> (u16, Value, HeaderMap) {
        let u = self.user(user).clone();
        self.mss_signed_at(
            &u.access_key,
            &u.secret_key,
            &u.project_id,
            method,
            path,
            body,
            date,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn mss_signed_at(
        &self,
        ak: &str,
        sk: &str,
        project: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
        date: &str,
    ) -> (u16, Value, HeaderMap) {
        let raw_path = format!("/v1/{project}/{path}");
        let bytes = body
            .map(|b| serde_json::to_vec(&b).unwrap())
            .unwrap_or_default();
        let host = self.url.trim_start_matches("http://").to_owned();
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("host", HeaderValue::from_str(&host).unwrap());
        headers.insert("x-project-id", HeaderValue::from_str(project).unwrap());
        headers.insert("x-sdk-date", HeaderValue::from_str(date).unwrap());
        let auth =
            sdk_authorization_header(ak, sk, method, &raw_path, None, &headers, &bytes).unwrap();
        headers.insert("authorization", HeaderValue::from_str(&auth).unwrap());
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("{}{raw_path}", self.url))
            .body(bytes);
        for (k, v) in headers.iter() {
            if k != "host" {
                req = req.header(k.as_str(), v.to_str().unwrap());
            }
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let h = resp.headers().clone();
        let v = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, v, h)
    }

    /// A request of `method` to `path` with no credentials.
    pub async fn request(&self, method: &str, path: &str) -> reqwest::Response {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        self.http
            .request(m, format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
    }

    /// A put-mode KooDrive file of `bytes` created, stored and completed by
    /// `user`; returns its id.
    pub async fn koo_commit(&self, user: &str, name: &str, bytes: &[u8]) -> String {
        let (id, urls) = self
            .koo_create(
                user,
                json!({"fileName": name, "fileType": "45", "length": bytes.len(),
                       "sha256": sha_hex(bytes)}),
            )
            .await;
        assert_eq!(self.put(&urls[0], bytes.to_vec()).await.0, 200);
        let (status, v) = self
            .koo(user, "files/complete", json!({"fileId": id}))
            .await;
        assert_eq!(status, 200, "{v}");
        id
    }

    /// Creates a KooDrive upload with `parts` planned as given; returns the
    /// file id and each part's upload URL.
    pub async fn koo_create(&self, user: &str, body: Value) -> (String, Vec<String>) {
        let (status, v) = self.koo(user, "files/create", body).await;
        assert_eq!(status, 200, "{v}");
        let id = v["fileId"].as_str().unwrap().to_owned();
        let urls = v["multiParts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| p["uploadUrl"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        (id, urls)
    }
}

pub fn now_compact() -> String {
    format_compact_date(time::OffsetDateTime::now_utc())
}

pub fn data(len: usize, seed: u64) -> Vec<u8> {
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

pub fn sha_hex(b: &[u8]) -> String {
    partseal::Sha256::digest(b).to_hex()
}

/// The KooDrive `multiParts` of a concurrent upload of `bytes` in parts of
/// `part_size`, with `hashCtx` computed by the engine's midstate code.
pub fn chain_parts(bytes: &[u8], part_size: usize) -> Vec<Value> {
    let mut mid = partseal::hazmat::Midstate::new();
    let chunks: Vec<&[u8]> = bytes.chunks(part_size).collect();
    let mut out = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let mut p = json!({
            "partNumber": i + 1,
            "partSize": c.len(),
            "partOffset": mid.len(),
        });
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

/// Sends a PUT head to `url` with `headers` (each `Name: value\r\n`)
/// announcing `len` body bytes, and only the first 10 of them; returns the
/// status, the head and the JSON body of the answer, which can therefore only
/// have come before the body was read.
pub fn answer_before_the_body(url: &str, headers: &str, len: usize) -> (u16, String, Value) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (hostport, path) = rest.split_at(rest.find('/').unwrap());
    let mut tcp = std::net::TcpStream::connect(hostport).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        tcp,
        "PUT {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Length: {len}\r\n{headers}\r\n0123456789"
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Until the end of the JSON body (the server may keep the connection).
    while !got.ends_with(b"}") {
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "no answer while the body is incomplete ({e}); got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let v = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, head.to_owned(), v)
}
