//! The operations surface: liveness and readiness probes (`/healthz`,
//! `/readyz`), Prometheus metrics (`/metrics`), request ids and CORS.
//!
//! These are partseal's own routes (neither upload API has them); they take
//! no API credentials, `/metrics` an optional Bearer token of its own.

pub mod metrics;
pub mod ready;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Request, State as AxState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::ct_eq;
use crate::{State, X_REQUEST_ID, request_id};

pub use metrics::Metrics;
pub use ready::{CheckResult, Readiness, ReadinessCheck};

/// Default of `--min-free-bytes`: 1 GiB, so that a store this close to full
/// is taken out of rotation before parts start failing with "no space".
pub const DEFAULT_MIN_FREE_BYTES: u64 = 1 << 30;

/// Longest request id taken from a client.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// How the operations surface is set up.
#[derive(Clone, Debug)]
pub struct OpsOptions {
    /// `/readyz` fails at or below this many free bytes on the store.
    pub min_free_bytes: u64,
    /// `/metrics` wants `Authorization: Bearer <token>` when set.
    pub metrics_token: Option<String>,
    /// Origins CORS answers allow (`*` for any); none: no CORS headers.
    pub cors_origins: Vec<String>,
}

impl Default for OpsOptions {
    fn default() -> OpsOptions {
        OpsOptions {
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            metrics_token: None,
            cors_origins: Vec::new(),
        }
    }
}

/// The state of the operations surface.
pub struct Ops {
    /// The metrics.
    pub metrics: Metrics,
    /// The backend's readiness checks.
    pub readiness: Readiness,
    options: OpsOptions,
    store_root: std::path::PathBuf,
    shutting_down: AtomicBool,
}

impl Ops {
    /// The surface over the local store at `root`, with the store's two
    /// readiness checks. A `probe/` directory that cannot be created makes
    /// the store check fail (and say why) rather than the start.
    pub fn new(root: &Path, options: OpsOptions) -> Ops {
        let store: Box<dyn ReadinessCheck> = match ready::StoreWritable::new(root) {
            Ok(c) => Box::new(c),
            Err(e) => Box::new(Failed {
                name: "store",
                message: format!(
                    "cannot create the store's {}/ directory: {e}",
                    ready::PROBE_DIR
                ),
            }),
        };
        let free = Box::new(ready::FreeSpace::new(root, options.min_free_bytes));
        Ops::with_checks(root, options, vec![store, free])
    }

    /// The surface with other backend checks than the local store's.
    pub fn with_checks(
        root: &Path,
        options: OpsOptions,
        checks: Vec<Box<dyn ReadinessCheck>>,
    ) -> Ops {
        Ops {
            metrics: Metrics::new(),
            readiness: Readiness::new(checks),
            options,
            store_root: root.to_path_buf(),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// From now on `/readyz` answers 503: the server is draining.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// Whether [`Ops::begin_shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// The CORS layer of `--cors-origin`, if any origin is given.
    pub fn cors_layer(&self) -> Option<CorsLayer> {
        cors_layer(&self.options.cors_origins)
    }
}

/// A check that fails with a fixed message (a check that could not be set
/// up).
struct Failed {
    name: &'static str,
    message: String,
}

impl ReadinessCheck for Failed {
    fn name(&self) -> &'static str {
        self.name
    }
    fn check(&self) -> CheckResult {
        CheckResult::fail(self.message.clone())
    }
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn routes() -> Router<State> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok", "checks": {"serving": {"ok": true}}})).into_response()
}

async fn readyz(AxState(state): AxState<State>) -> Response {
    let st = state.clone();
    let mut results = match tokio::task::spawn_blocking(move || st.ops.readiness.results()).await {
        Ok(r) => r,
        Err(e) => vec![("store", CheckResult::fail(format!("the check failed: {e}")))],
    };
    let shutdown = if state.ops.is_shutting_down() {
        CheckResult::fail("the server is shutting down")
    } else {
        CheckResult::pass()
    };
    results.push(("shutdown", shutdown));
    let (ok, body) = ready::report(&results);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics_handler(AxState(state): AxState<State>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.ops.options.metrics_token {
        let given = crate::header(&headers, "authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !ct_eq(given.as_bytes(), token.as_bytes()) {
            let body = json!({"status": "unauthorized",
                "message": "GET /metrics needs Authorization: Bearer <--metrics-token>"});
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(body),
            )
                .into_response();
        }
    }
    let st = state.clone();
    let free = tokio::task::spawn_blocking(move || ready::free_bytes(&st.ops.store_root).ok())
        .await
        .ok()
        .flatten();
    let open = state.backend.open_upload_count().await.unwrap_or(0);
    let text = state.ops.metrics.encode(open as usize, free);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The id of a request, for its log lines and its answer's `X-Request-Id`.
#[derive(Clone, Debug)]
pub struct RequestId(pub HeaderValue);

/// Whether a client's request id may be used as it is: 1 to
/// [`MAX_REQUEST_ID_LEN`] characters of `A-Z a-z 0-9 - _ . :`.
pub fn valid_request_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_REQUEST_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The request id of a request: the client's `X-Request-Id`, else its
/// `X-Traceid`, when valid ([`valid_request_id`]); else a fresh one.
pub fn pick_request_id(headers: &HeaderMap) -> HeaderValue {
    ["x-request-id", "x-traceid"]
        .iter()
        .filter_map(|h| headers.get(*h))
        .find(|v| v.to_str().is_ok_and(valid_request_id))
        .cloned()
        .unwrap_or_else(request_id)
}

/// Middleware giving every request its [`RequestId`] (in its extensions,
/// for the log span) and every answer the same id in `X-Request-Id`.
pub async fn with_request_id(mut req: Request, next: Next) -> Response {
    let id = pick_request_id(req.headers());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    resp.headers_mut().insert(X_REQUEST_ID.clone(), id);
    resp
}

/// Headers the clients of both APIs send.
const CORS_ALLOW_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "content-md5",
    "content-length",
    "range",
    "if-none-match",
    "x-user-id",
    "x-date",
    "x-traceid",
    "x-request-id",
    "x-hw-share-folder-id",
    "x-auth-token",
    "x-sdk-date",
    "x-sdk-content-sha256",
    "x-project-id",
    "x-security-token",
];

/// Headers of the answers scripts may read.
const CORS_EXPOSE_HEADERS: &[&str] = &[
    "etag",
    "content-range",
    "content-length",
    "accept-ranges",
    "x-request-id",
    "x-traceid",
    "x-partseal-committed",
    "retry-after",
];

/// The CORS layer allowing `origins` (`*` alone: any), or `None` for none.
/// Invalid origins are skipped (the flag parser refuses them first).
pub fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok()),
        )
    };
    let names = |l: &[&'static str]| {
        l.iter()
            .map(|h| header::HeaderName::from_static(h))
            .collect::<Vec<_>>()
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::PUT,
                Method::POST,
                Method::DELETE,
                Method::HEAD,
            ])
            .allow_headers(names(CORS_ALLOW_HEADERS))
            .expose_headers(names(CORS_EXPOSE_HEADERS))
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// Checks one `--cors-origin` value: `*`, or `scheme://host[:port]`.
pub fn parse_cors_origin(s: &str) -> Result<String, String> {
    if s == "*" {
        return Ok(s.to_owned());
    }
    let s = s.trim_end_matches('/');
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or_else(|| format!("{s:?} is not * or an origin like https://host:port"))?;
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ']) || HeaderValue::from_str(s).is_err() {
        return Err(format!(
            "{s:?} is not an origin (scheme://host[:port], no path)"
        ));
    }
    Ok(s.to_owned())
}
