//! The KooDrive-style API under `/koodrive/ose/v1/`: the upload flow
//! ([`upload`]: create with flash upload, upload URLs for parts with
//! `hashCtx` for the parallel chain mode, complete) and what comes after it
//! ([`files`]: file details with a download URL, and the partseal
//! extensions abort and list).
//!
//! Every call carries `Authorization: Bearer <token>` matching `X-User-Id`
//! and a fresh `X-Date`; `x-hw-share-folder-id` moves the call into a shared
//! folder; `X-Traceid` is echoed. Errors answer `{code, msg}` (see
//! [`crate::error::koo`]).

mod files;
mod upload;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;

use partseal::Owner;

use crate::State;
use crate::auth::{self, AuthError};
use crate::error::{ApiError, KooError};

/// Largest file in `put` mode (5 GiB).
pub const MAX_PUT_LENGTH: u64 = 5 << 30;
/// Longest file name, in characters.
pub const MAX_FILE_NAME: usize = 250;
/// Most bytes of UTF-8 in a text field stored with a file (its labels).
pub const MAX_LABEL_BYTES: usize = 1024;
/// Characters a file name may not contain.
pub const FORBIDDEN_NAME_CHARS: &[char] = &['<', '>', '|', ':', '"', '*', '?', '/', '\\'];

/// The KooDrive routes.
pub fn routes() -> Router<State> {
    Router::new()
        .route("/koodrive/ose/v1/files/create", post(upload::create))
        .route(
            "/koodrive/ose/v1/files/multipart/uploadUrl",
            post(upload::upload_urls),
        )
        .route("/koodrive/ose/v1/files/complete", post(upload::complete))
        .route(
            "/koodrive/ose/v1/files/{file_id}/detail",
            post(files::detail),
        )
        .route("/koodrive/ose/v1/files/multipart/abort", post(files::abort))
        .route("/koodrive/ose/v1/files/multipart/list", post(files::list))
        .layer(middleware::from_fn(echo_trace_id))
}

async fn echo_trace_id(req: Request, next: Next) -> Response {
    let trace = req.headers().get("x-traceid").cloned();
    let mut resp = next.run(req).await;
    if let Some(t) = trace {
        resp.headers_mut()
            .insert(HeaderName::from_static("x-traceid"), t);
    }
    resp
}

/// Who is calling, and whose files they act on: the KooDrive
/// authentication of a request, as an extractor. A refusal answers in
/// KooDrive's `{code, msg}`.
pub struct Caller {
    /// The authenticated user id.
    pub user: String,
    /// The owner of the files acted on: the user, or a shared folder.
    pub owner: Owner,
}

impl FromRequestParts<State> for Caller {
    type Rejection = KooError;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Caller, KooError> {
        Ok(authenticate(state, &parts.headers)?)
    }
}

/// Checks the Bearer token, `X-User-Id`, `X-Date` and the shared folder.
fn authenticate(state: &State, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let token = auth::single_header(headers, "authorization")?
        .ok_or(AuthError::MissingHeader("Authorization"))
        .and_then(|v| auth::bearer_token(v).ok_or(AuthError::MalformedAuthorization))?;
    let credentials = state.credentials_now();
    let user = credentials
        .user_by_token(token)
        .ok_or(AuthError::UnknownCredentials)?;
    let claimed =
        auth::single_header(headers, "x-user-id")?.ok_or(AuthError::MissingHeader("X-User-Id"))?;
    if !auth::ct_eq(claimed.as_bytes(), user.id.as_bytes()) {
        return Err(AuthError::UnknownCredentials.into());
    }
    let date = auth::single_header(headers, "x-date")?.ok_or(AuthError::DateMissing)?;
    let date = auth::parse_compact_date(date)?;
    auth::DateWindow::around(time::OffsetDateTime::now_utc(), state.settings.date_window)
        .check(date)?;
    // A folder id that is not text names no shared folder of the caller's:
    // refused, never read as no header (which would act in the caller's
    // own space).
    let folder =
        auth::single_header(headers, "x-hw-share-folder-id").map_err(|_| ApiError::Forbidden)?;
    let owner = match folder.filter(|s| !s.is_empty()) {
        None => user.owner()?,
        Some(folder) => {
            let shared = credentials
                .shared_folder_of(folder, &user.id)
                .ok_or(ApiError::Forbidden)?;
            shared.owner()?
        }
    };
    Ok(Caller {
        user: user.id.clone(),
        owner,
    })
}

/// Every KooDrive success: `code` 0 and `msg`, beside the endpoint's fields.
#[derive(Serialize)]
struct Success<T> {
    code: i64,
    msg: &'static str,
    #[serde(flatten)]
    body: T,
}

fn success<T: Serialize>(body: T) -> Json<Success<T>> {
    Json(Success {
        code: crate::error::koo::OK,
        msg: "success.",
        body,
    })
}
