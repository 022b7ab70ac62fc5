//! partseal-server: the KooDrive-style and MetaStudio-style upload APIs over
//! the partseal engine.
//!
//! The server parses, authenticates and answers; every byte of upload data
//! goes into the engine, which owns all file I/O and hashing. Engine calls run
//! on tokio's blocking pool so the async runtime never waits on disk or hash.

pub mod auth;
pub mod backend;
pub mod config;
pub mod content_md5;
pub mod download;
pub mod error;
pub mod events;
pub mod koodrive;
pub mod metastudio;
pub mod openapi;
pub mod ops;
pub mod reload;
pub mod serve;
mod signed_url;
pub mod sweep;
pub mod ui;
pub mod upload;

use std::io;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request};
use futures_util::TryStreamExt;
use tokio::sync::Semaphore;
use tokio_util::io::{StreamReader, SyncIoBridge};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

use partseal::Engine;

use crate::auth::UrlSigner;
use crate::backend::Backend;
use crate::config::{Credentials, Settings};
use crate::error::ApiError;

/// Everything the handlers share.
pub struct AppState {
    /// The storage backend: the local engine or the cluster.
    pub backend: Backend,
    /// Users and shared folders, swapped whole by a reload (see
    /// [`reload`]); a request takes one snapshot with
    /// [`AppState::credentials_now`].
    pub credentials: ArcSwap<Credentials>,
    /// Signs and checks upload URLs.
    pub signer: UrlSigner,
    /// Limits and URLs.
    pub settings: Settings,
    /// One permit per part body being received (`settings.max_parts_in_flight`).
    pub parts_in_flight: Arc<Semaphore>,
    /// Probes, metrics and CORS.
    pub ops: ops::Ops,
    /// The directory of the node's local files.
    pub root: std::path::PathBuf,
}

/// Shared handle to [`AppState`].
pub type State = Arc<AppState>;

impl AppState {
    /// The state of a server with these parts.
    pub fn new(
        engine: Engine,
        credentials: Credentials,
        signer: UrlSigner,
        settings: Settings,
    ) -> AppState {
        let root = engine.root().to_path_buf();
        AppState::with_backend(Backend::Local(engine), &root, credentials, signer, settings)
    }

    /// The state of a server over `backend`, with `root` the directory of
    /// its local files (credentials, probes).
    pub fn with_backend(
        backend: Backend,
        root: &std::path::Path,
        credentials: Credentials,
        signer: UrlSigner,
        settings: Settings,
    ) -> AppState {
        AppState {
            parts_in_flight: Arc::new(Semaphore::new(settings.max_parts_in_flight as usize)),
            ops: ops::Ops::new(root, ops::OpsOptions::default()),
            backend,
            root: root.to_path_buf(),
            credentials: ArcSwap::from_pointee(credentials),
            signer,
            settings,
        }
    }

    /// This state with the operations surface set up by `options`.
    pub fn with_ops(mut self, options: ops::OpsOptions) -> AppState {
        self.ops = ops::Ops::new(&self.root, options);
        self
    }

    /// The users and shared folders now in force, for one request: a
    /// reload while the request runs (see [`reload`]) does not change the
    /// set it holds.
    pub fn credentials_now(&self) -> Arc<Credentials> {
        self.credentials.load_full()
    }
}

/// Reads a JSON request body whole, refusing more than `limit` bytes.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        ApiError::bad(format!(
            "the request body could not be read or is larger than {limit} bytes: {e}"
        ))
    })
}

/// Parses JSON into `T` with a message naming what is wrong.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad(
            "the request body is empty; a JSON object is expected",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad(format!("invalid JSON body: {e}")))
}

/// The answer to a path parameter that does not decode (e.g. invalid UTF-8).
pub fn path_error(e: axum::extract::rejection::PathRejection) -> ApiError {
    ApiError::bad(format!("invalid path parameter: {}", e.body_text()))
}

/// Turns a streamed request body into a blocking reader for the engine.
/// Must be called on the runtime; the reader is used on a blocking thread.
pub fn body_reader(body: Body) -> impl io::Read + Send + 'static {
    let stream = body.into_data_stream().map_err(io::Error::other);
    SyncIoBridge::new(StreamReader::new(stream))
}

/// A header as text, if present and valid.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The whole application: both APIs, upload and download URLs, the
/// OpenAPI document and (unless `settings.ui` is off) the upload page.
pub fn app(state: State) -> Router {
    let body_timeout = state.settings.body_timeout;
    let cors = state.ops.cors_layer();
    let router = Router::new()
        .merge(koodrive::routes())
        .merge(metastudio::routes())
        .merge(upload::routes())
        .merge(download::routes())
        .merge(openapi::routes())
        .merge(ui::routes(state.settings.ui))
        .merge(ops::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ops::metrics::track,
        ))
        .with_state(state)
        .layer(axum::middleware::from_fn(error::unrouted_in_api_shape))
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<Body>| {
                // The path only: query strings of upload URLs carry signatures.
                let id = req.extensions().get::<ops::RequestId>();
                tracing::info_span!(
                    "request",
                    method = %req.method(),
                    path = %req.uri().path(),
                    request_id = id.and_then(|v| v.0.to_str().ok()).unwrap_or(""),
                    trace_id = req
                        .headers()
                        .get("x-traceid")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or(""),
                )
            }),
        )
        .layer(axum::middleware::from_fn(ops::with_request_id));
    // Outside everything else: preflights are answered before routing.
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.layer(CatchPanicLayer::new())
}

/// A fresh random request id (32 hex digits).
pub fn request_id() -> HeaderValue {
    let id = config::random_hex(16).unwrap_or_else(|_| "0".repeat(32));
    HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("0"))
}

/// `X-Request-Id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
