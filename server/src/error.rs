//! Errors of the HTTP layer and their answers in each API's dialect.
//!
//! Every handler fails with [`ApiError`]; [`KooError`] and [`MssError`] turn it
//! into the KooDrive `{code, msg}` or the MetaStudio `{error_code, error_msg}`
//! body with the right status. Engine errors are mapped here, in one place.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::AuthError;

/// What went wrong with a request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Authentication failed.
    #[error("{0}")]
    Auth(#[from] AuthError),
    /// A parameter is missing, malformed or out of range.
    #[error("{0}")]
    BadRequest(String),
    /// A part or the file is larger than the limits allow (checked before
    /// the engine is called, with a message naming the limit).
    #[error("{0}")]
    TooLarge(String),
    /// A part's bytes do not match its `Content-MD5`; it was not stored.
    #[error(
        "Content-MD5 mismatch: the header says {expected}, the body's MD5 is {actual}; the part is not stored"
    )]
    ContentMd5Mismatch {
        /// From the header, base64.
        expected: String,
        /// Of the bytes received, base64.
        actual: String,
    },
    /// The user may not act in this shared folder.
    #[error("no permission on this shared folder")]
    Forbidden,
    /// From the engine.
    #[error("{0}")]
    Engine(#[from] partseal::Error),
    /// The server is at one of its limits (connections, part bodies in
    /// flight); answered 503 with `Retry-After`.
    #[error("the server is busy: {0}")]
    Busy(String),
    /// A failure of the server itself.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Seconds a client answered 503 is asked to wait (`Retry-After`).
pub const RETRY_AFTER_SECS: u64 = 2;

impl ApiError {
    /// A bad-request error with a message.
    pub fn bad(msg: impl Into<String>) -> ApiError {
        ApiError::BadRequest(msg.into())
    }
}

/// KooDrive codes (HTTP 400 unless noted). The 13000xxx codes up to 13000414
/// are the documented ones; 13000420 and above are partseal's own.
pub mod koo {
    /// Success.
    pub const OK: i64 = 0;
    /// Authentication failed (HTTP 401).
    pub const AUTH_FAILED: i64 = 13000001;
    /// X-Date missing, malformed, too old or in the future (HTTP 401).
    pub const DATE_INVALID: i64 = 13000002;
    /// Parameter validation failed.
    pub const BAD_PARAM: i64 = 13000102;
    /// Not enough space.
    pub const NO_SPACE: i64 = 13000311;
    /// The upload task does not exist (also: belongs to someone else).
    pub const NO_TASK: i64 = 13000401;
    /// The integrity check failed: the file's SHA-256, or a part's
    /// `Content-MD5`, does not match.
    pub const INTEGRITY: i64 = 13000402;
    /// The user has no permission on this space (shared folder).
    pub const NO_PERMISSION: i64 = 13000410;
    /// A part's bytes do not match its hashCtx chain (message names the part).
    pub const BROKEN_LINK: i64 = 13000420;
    /// Parts are missing at complete (message lists the first few).
    pub const MISSING_PARTS: i64 = 13000421;
    /// The upload is busy (a complete is running) or already completed.
    pub const CONFLICT: i64 = 13000422;
    /// A part is too small, too large or outside the plan, or the file is
    /// too large.
    pub const BAD_PART: i64 = 13000423;
    /// The server is busy: too many connections or part uploads at once
    /// (HTTP 503, with `Retry-After`).
    pub const BUSY: i64 = 13000424;
    /// Internal error (HTTP 500).
    pub const INTERNAL: i64 = 13000500;
}

/// MetaStudio codes.
pub mod mss {
    /// Unauthorized (HTTP 401).
    pub const UNAUTHORIZED: &str = "MSS.00000001";
    /// Invalid parameter (HTTP 400).
    pub const INVALID_PARAM: &str = "MSS.00000003";
    /// Internal error (HTTP 500).
    pub const INTERNAL: &str = "MSS.00000004";
    /// Request JSON exception (HTTP 400).
    pub const BAD_JSON: &str = "MSS.10000002";
    /// The file was not found (HTTP 404).
    pub const NOT_FOUND: &str = "MSS.10001004";
    /// The uploaded bytes do not match `file_md5` or a part's `Content-MD5`
    /// (HTTP 400).
    pub const MD5_MISMATCH: &str = "MSS.10001020";
    /// Segments are missing at confirm (HTTP 400).
    pub const MISSING_PARTS: &str = "MSS.10001021";
    /// The file is busy or already confirmed (HTTP 409).
    pub const CONFLICT: &str = "MSS.10001022";
    /// Not enough space on the server's disk (HTTP 507).
    pub const NO_SPACE: &str = "MSS.10001023";
    /// The server is busy: too many connections or part uploads at once
    /// (HTTP 503, with `Retry-After`).
    pub const BUSY: &str = "MSS.10001024";
}

/// ENOSPC, and a quota reached (EDQUOT), which leaves the writer just as
/// stuck.
fn is_no_space(e: &partseal::Error) -> bool {
    matches!(e, partseal::Error::Io { source, .. }
        if matches!(source.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded))
}

/// `resp` with `status`, and for a 503 the `Retry-After` that says when to
/// come back.
fn with_retry_after(status: StatusCode, mut resp: Response) -> Response {
    *resp.status_mut() = status;
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    resp
}

/// A KooDrive-style error answer.
pub struct KooError(pub ApiError);

impl<E: Into<ApiError>> From<E> for KooError {
    fn from(e: E) -> Self {
        KooError(e.into())
    }
}

impl IntoResponse for KooError {
    fn into_response(self) -> Response {
        use partseal::Error as E;
        let msg = self.0.to_string();
        let (status, code) = match &self.0 {
            ApiError::Auth(AuthError::DateMissing)
            | ApiError::Auth(AuthError::DateMalformed)
            | ApiError::Auth(AuthError::DateTooOld { .. })
            | ApiError::Auth(AuthError::DateInFuture { .. }) => {
                (StatusCode::UNAUTHORIZED, koo::DATE_INVALID)
            }
            ApiError::Auth(_) => (StatusCode::UNAUTHORIZED, koo::AUTH_FAILED),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, koo::BAD_PARAM),
            ApiError::TooLarge(_) => (StatusCode::BAD_REQUEST, koo::BAD_PART),
            ApiError::ContentMd5Mismatch { .. } => (StatusCode::BAD_REQUEST, koo::INTEGRITY),
            ApiError::Forbidden => (StatusCode::BAD_REQUEST, koo::NO_PERMISSION),
            ApiError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, koo::BUSY),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, koo::INTERNAL),
            ApiError::Engine(e) => match e {
                E::NotFound | E::NotOwner => (StatusCode::BAD_REQUEST, koo::NO_TASK),
                E::BadId(_) | E::BadInput(_) | E::BadPlan(_) | E::ConflictingExpected { .. } => {
                    (StatusCode::BAD_REQUEST, koo::BAD_PARAM)
                }
                E::PartOutOfRange { .. }
                | E::PartTooSmall { .. }
                | E::PartTooLarge { .. }
                | E::FileTooLarge { .. }
                | E::LengthMismatch { .. } => (StatusCode::BAD_REQUEST, koo::BAD_PART),
                E::MissingParts { .. } => (StatusCode::BAD_REQUEST, koo::MISSING_PARTS),
                E::LinkMismatch { .. } => (StatusCode::BAD_REQUEST, koo::BROKEN_LINK),
                E::DigestMismatch { .. } => (StatusCode::BAD_REQUEST, koo::INTEGRITY),
                E::Conflict(_) => (StatusCode::BAD_REQUEST, koo::CONFLICT),
                E::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, koo::BUSY),
                E::Io { role, .. } if *role == "request body" => {
                    (StatusCode::BAD_REQUEST, koo::BAD_PARAM)
                }
                e if is_no_space(e) => (StatusCode::BAD_REQUEST, koo::NO_SPACE),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, koo::INTERNAL),
            },
        };
        let msg = match &self.0 {
            // Someone else's upload reads exactly like a missing one.
            ApiError::Engine(E::NotOwner) => E::NotFound.to_string(),
            _ if status == StatusCode::INTERNAL_SERVER_ERROR => {
                tracing::error!(error = %msg, "internal error");
                "internal error".to_owned()
            }
            _ => msg,
        };
        with_retry_after(
            status,
            Json(json!({"code": code, "msg": msg})).into_response(),
        )
    }
}

/// A MetaStudio-style error answer.
pub struct MssError(pub ApiError);

impl<E: Into<ApiError>> From<E> for MssError {
    fn from(e: E) -> Self {
        MssError(e.into())
    }
}

impl IntoResponse for MssError {
    fn into_response(self) -> Response {
        use partseal::Error as E;
        let msg = self.0.to_string();
        let (status, code) = match &self.0 {
            ApiError::Auth(_) | ApiError::Forbidden => {
                (StatusCode::UNAUTHORIZED, mss::UNAUTHORIZED)
            }
            ApiError::BadRequest(_) | ApiError::TooLarge(_) => {
                (StatusCode::BAD_REQUEST, mss::INVALID_PARAM)
            }
            ApiError::ContentMd5Mismatch { .. } => (StatusCode::BAD_REQUEST, mss::MD5_MISMATCH),
            ApiError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, mss::BUSY),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, mss::INTERNAL),
            ApiError::Engine(e) => match e {
                E::NotFound | E::NotOwner => (StatusCode::NOT_FOUND, mss::NOT_FOUND),
                E::DigestMismatch { .. } | E::LinkMismatch { .. } => {
                    (StatusCode::BAD_REQUEST, mss::MD5_MISMATCH)
                }
                E::MissingParts { .. } => (StatusCode::BAD_REQUEST, mss::MISSING_PARTS),
                E::Conflict(_) => (StatusCode::CONFLICT, mss::CONFLICT),
                E::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, mss::BUSY),
                E::Io { role, .. } if *role == "request body" => {
                    (StatusCode::BAD_REQUEST, mss::INVALID_PARAM)
                }
                // A full disk is the operator's to fix, not a server bug: say
                // so (as KooDrive's 13000311 does) rather than hide it in a 500.
                e if is_no_space(e) => (StatusCode::INSUFFICIENT_STORAGE, mss::NO_SPACE),
                E::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, mss::INTERNAL),
                _ => (StatusCode::BAD_REQUEST, mss::INVALID_PARAM),
            },
        };
        let msg = match &self.0 {
            ApiError::Engine(E::NotOwner) => E::NotFound.to_string(),
            ApiError::Forbidden => "Unauthorized".to_owned(),
            // The error's own text names the file role and the errno, which
            // tells a client nothing it can act on.
            _ if code == mss::NO_SPACE => {
                tracing::error!(error = %msg, "no space left for an upload");
                "not enough space on the server to store the upload; retry later".to_owned()
            }
            _ if status == StatusCode::INTERNAL_SERVER_ERROR => {
                tracing::error!(error = %msg, "internal error");
                "Internal Error".to_owned()
            }
            _ => msg,
        };
        with_retry_after(
            status,
            Json(json!({"error_code": code, "error_msg": msg})).into_response(),
        )
    }
}

/// Gives the answers of the router itself (no route for the path: 404; a
/// route that takes other methods: 405, with its `Allow`) the error body of
/// the API whose paths they are under, as every other answer there has.
/// Answers that have a body already, and paths outside the APIs, pass as
/// they are.
pub async fn unrouted_in_api_shape(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let mut resp = next.run(req).await;
    let status = resp.status();
    if !matches!(
        status,
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
    ) || resp.headers().contains_key(header::CONTENT_TYPE)
    {
        return resp;
    }
    let Some(api) = crate::upload::Api::of_path(&path) else {
        return resp;
    };
    let msg = if status == StatusCode::NOT_FOUND {
        format!("no such route: {path}")
    } else {
        format!("{path} does not take {method}; the Allow header lists what it takes")
    };
    let body = match api {
        crate::upload::Api::KooDrive => json!({"code": koo::BAD_PARAM, "msg": msg}),
        crate::upload::Api::MetaStudio => {
            let code = if status == StatusCode::NOT_FOUND {
                mss::NOT_FOUND
            } else {
                mss::INVALID_PARAM
            };
            json!({"error_code": code, "error_msg": msg})
        }
    };
    let shaped = Json(body).into_response();
    let (parts, body) = shaped.into_parts();
    resp.headers_mut().remove(header::CONTENT_LENGTH);
    for (k, v) in &parts.headers {
        resp.headers_mut().insert(k.clone(), v.clone());
    }
    *resp.body_mut() = body;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(resp: Response) -> (StatusCode, serde_json::Value) {
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .expect("an error body");
        (
            status,
            serde_json::from_slice(&body).expect("a JSON error body"),
        )
    }

    fn no_space(role: &'static str) -> ApiError {
        ApiError::Engine(partseal::Error::Io {
            role,
            source: std::io::Error::from_raw_os_error(28),
        })
    }

    #[tokio::test]
    async fn no_space_is_13000311_in_koodrive() {
        for role in ["part data", "committed file", "upload record"] {
            let (status, v) = answer(KooError(no_space(role)).into_response()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{role}: {v}");
            assert_eq!(v["code"], koo::NO_SPACE, "{role}: {v}");
        }
    }

    #[tokio::test]
    async fn metastudio_no_space_is_not_a_500() {
        for role in ["part data", "committed file", "upload record"] {
            let (status, v) = answer(MssError(no_space(role)).into_response()).await;
            assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{role}: {v}");
            assert_eq!(v["error_code"], mss::NO_SPACE, "{role}: {v}");
            let msg = v["error_msg"].as_str().unwrap_or_default();
            assert!(
                msg.contains("space"),
                "{role}: the message names the cause: {v}"
            );
        }
        // Other I/O errors stay internal.
        let eio = ApiError::Engine(partseal::Error::Io {
            role: "part data",
            source: std::io::Error::from_raw_os_error(5),
        });
        let (status, v) = answer(MssError(eio).into_response()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
        assert_eq!(v["error_code"], mss::INTERNAL, "{v}");
    }

    #[tokio::test]
    async fn busy_is_503_with_retry_after_in_both_dialects() {
        let busy = || ApiError::Busy("64 part uploads in flight".into());
        for (resp, field, code) in [
            (KooError(busy()).into_response(), "code", json!(koo::BUSY)),
            (
                MssError(busy()).into_response(),
                "error_code",
                json!(mss::BUSY),
            ),
        ] {
            let retry = resp.headers().get(header::RETRY_AFTER).cloned();
            let (status, v) = answer(resp).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
            assert_eq!(retry, Some(HeaderValue::from(RETRY_AFTER_SECS)), "{v}");
            assert_eq!(v[field], code, "{v}");
        }
        let resp = KooError(ApiError::bad("x")).into_response();
        assert!(resp.headers().get(header::RETRY_AFTER).is_none());
    }

    #[tokio::test]
    async fn too_large_is_13000423_in_koodrive_and_invalid_param_in_metastudio() {
        let cases = [
            ApiError::TooLarge("length 9 is more than the 8 bytes allowed".into()),
            ApiError::Engine(partseal::Error::PartTooLarge { part: 2, max: 8 }),
            ApiError::Engine(partseal::Error::FileTooLarge { len: 9, max: 8 }),
        ];
        for e in cases {
            let text = e.to_string();
            let (status, v) = answer(KooError(e).into_response()).await;
            assert_eq!(
                (status, &v["code"]),
                (StatusCode::BAD_REQUEST, &koo::BAD_PART.into()),
                "{v}"
            );
            assert_eq!(v["msg"], text);
        }
        let (status, v) = answer(MssError(ApiError::TooLarge("x".into())).into_response()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error_code"], mss::INVALID_PARAM, "{v}");
    }
}
