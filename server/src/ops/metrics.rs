//! Prometheus metrics (`GET /metrics`), built with `prometheus-client` and
//! served in its text exposition format (OpenMetrics 1.0, which Prometheus
//! scrapes natively).
//!
//! Every label value comes from a small fixed set (the API, the matched
//! route template, the status code, an outcome): no file id, owner or raw
//! path ever becomes a label, so the number of series stays bounded.

use std::io;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State as AxState};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use partseal::{Completion, FileId, Owner, Sha256, UploadMode};

use crate::State;
use crate::error::ApiError;

/// Labels of the HTTP request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    api: &'static str,
    route: String,
    status: u16,
}

/// Labels of the HTTP request duration histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    api: &'static str,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabel {
    api: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CompleteLabels {
    mode: &'static str,
    outcome: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Buckets of request durations: 1 ms to about 33 s.
fn request_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Buckets of complete durations: 1 ms to about 9 min (a stream-mode
/// complete hashes the whole file).
fn complete_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

/// The server's metrics and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: HistogramFamily<RouteLabels>,
    part_bytes: Family<ApiLabel, Counter>,
    parts: Family<OutcomeLabel, Counter>,
    completes: Family<CompleteLabels, Counter>,
    complete_duration: Histogram,
    open_uploads: Gauge,
    uploads_expired: Counter,
    store_free_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Every family registered, all at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "partseal_http_requests",
            "HTTP requests answered, by API, matched route template and status",
            http_requests.clone(),
        );
        let http_duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(request_buckets);
        registry.register(
            "partseal_http_request_duration_seconds",
            "Time from a request's head to its answer's head, by API and route",
            http_duration.clone(),
        );
        let part_bytes = Family::<ApiLabel, Counter>::default();
        registry.register(
            "partseal_part_bytes_received",
            "Bytes of part bodies received on upload URLs, stored or not, by API",
            part_bytes.clone(),
        );
        let parts = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "partseal_parts",
            "Part uploads by outcome: stored, link_mismatch, digest_mismatch, too_large, refused",
            parts.clone(),
        );
        let completes = Family::<CompleteLabels, Counter>::default();
        registry.register(
            "partseal_completes",
            "Completes by mode (chain, stream; none when the id was no open upload) and outcome",
            completes.clone(),
        );
        let complete_duration = complete_buckets();
        registry.register(
            "partseal_complete_duration_seconds",
            "Time the engine took to complete an upload, successful or not",
            complete_duration.clone(),
        );
        let open_uploads = Gauge::default();
        registry.register(
            "partseal_open_uploads",
            "Uploads open in the store (created, not yet committed, aborted or expired)",
            open_uploads.clone(),
        );
        let uploads_expired = Counter::default();
        registry.register(
            "partseal_uploads_expired",
            "Open uploads aborted by the idle-upload sweep",
            uploads_expired.clone(),
        );
        let store_free_bytes = Gauge::default();
        registry.register(
            "partseal_store_free_bytes",
            "Bytes free for the server on the store's file system",
            store_free_bytes.clone(),
        );
        Metrics {
            registry,
            http_requests,
            http_duration,
            part_bytes,
            parts,
            completes,
            complete_duration,
            open_uploads,
            uploads_expired,
            store_free_bytes,
        }
    }

    /// The counter the idle-upload sweep adds its expiries to.
    pub fn uploads_expired(&self) -> Counter {
        self.uploads_expired.clone()
    }

    /// Counts a part upload's outcome (see [`part_outcome`]).
    pub fn part(&self, outcome: &'static str) {
        self.parts.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// The counter of part body bytes received for `api`.
    pub fn part_bytes(&self, api: &'static str) -> Counter {
        self.part_bytes.get_or_create(&ApiLabel { api }).clone()
    }

    /// The text exposition, with the gauges read at scrape time set first.
    pub fn encode(&self, open_uploads: usize, free_bytes: Option<u64>) -> String {
        self.open_uploads
            .set(i64::try_from(open_uploads).unwrap_or(i64::MAX));
        if let Some(free) = free_bytes {
            self.store_free_bytes
                .set(i64::try_from(free).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The API a path belongs to, for the `api` label.
pub fn api_of(path: &str) -> &'static str {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "koodrive" => "koodrive",
        "v1" => "metastudio",
        "upload" => "upload",
        "download" => "download",
        "healthz" | "readyz" | "metrics" | "openapi.json" => "ops",
        "ui" => "ui",
        _ => "other",
    }
}

/// Middleware counting and timing every request by API, matched route
/// template (`unmatched` when no route matched) and status.
pub async fn track(AxState(state): AxState<State>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let api = api_of(&route);
    let start = Instant::now();
    let resp = next.run(req).await;
    let m = &state.ops.metrics;
    m.http_duration
        .get_or_create(&RouteLabels {
            api,
            route: route.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    m.http_requests
        .get_or_create(&HttpLabels {
            api,
            route,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

/// The `outcome` label of a part upload's result.
pub fn part_outcome<T>(res: &Result<T, ApiError>) -> &'static str {
    use partseal::Error as E;
    match res {
        Ok(_) => "stored",
        Err(ApiError::Engine(E::LinkMismatch { .. })) => "link_mismatch",
        Err(ApiError::ContentMd5Mismatch { .. } | ApiError::Engine(E::DigestMismatch { .. })) => {
            "digest_mismatch"
        }
        Err(
            ApiError::TooLarge(_)
            | ApiError::Engine(E::PartTooLarge { .. } | E::FileTooLarge { .. }),
        ) => "too_large",
        Err(_) => "refused",
    }
}

fn complete_outcome(res: &Result<Completion, partseal::Error>) -> &'static str {
    use partseal::Error as E;
    match res {
        Ok(c) if c.committed_now => "committed",
        Ok(_) => "already_committed",
        Err(E::DigestMismatch { .. } | E::ConflictingExpected { .. }) => "digest_mismatch",
        Err(E::MissingParts { .. }) => "missing_parts",
        Err(E::LinkMismatch { .. }) => "link_mismatch",
        Err(E::LengthMismatch { .. }) => "length_mismatch",
        Err(E::NotFound | E::NotOwner) => "not_found",
        Err(_) => "error",
    }
}

/// [`partseal::Engine::complete`] on the blocking pool, counted by mode and
/// outcome and timed.
pub async fn complete(
    state: &State,
    owner: Owner,
    id: FileId,
    expected: Option<Sha256>,
) -> Result<Completion, ApiError> {
    let mode = state.backend.upload_mode(&owner, &id).await;
    let start = Instant::now();
    let res = state.backend.complete(&owner, &id, expected).await;
    let took = start.elapsed();
    let m = &state.ops.metrics;
    let mode = match mode {
        Ok(Some(UploadMode::Chain)) => "chain",
        Ok(Some(_)) => "stream",
        Ok(None) | Err(_) => "none",
    };
    m.completes
        .get_or_create(&CompleteLabels {
            mode,
            outcome: complete_outcome(&res),
        })
        .inc();
    m.complete_duration.observe(took.as_secs_f64());
    res.map_err(ApiError::from)
}

/// A reader that adds every byte it passes on to a counter.
pub struct Counted<R> {
    inner: R,
    counter: Counter,
}

impl<R> Counted<R> {
    /// Counts what `inner` yields into `counter`.
    pub fn new(inner: R, counter: Counter) -> Counted<R> {
        Counted { inner, counter }
    }
}

impl<R: io::Read> io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.inc_by(n as u64);
        Ok(n)
    }
}
