//! The KooDrive-style API under `/koodrive/ose/v1/`: create (with flash
//! upload), upload URLs for parts (with `hashCtx` for the parallel chain
//! mode), complete, and file details.
//!
//! Every call carries `Authorization: Bearer <token>` matching `X-User-Id`
//! and a fresh `X-Date`; `x-hw-share-folder-id` moves the call into a shared
//! folder; `X-Traceid` is echoed. Errors answer `{code, msg}` (see
//! [`crate::error::koo`]).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, Request, State as AxState};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use partseal::{FileId, FileSpec, HashCtx, Owner, PartPlan, Sha256};

use crate::auth::{self, AuthError};
use crate::error::{ApiError, KooError};
use crate::upload::{Api, upload_url};
use crate::{State, header, parse_json, read_body};

/// Largest file in `put` mode (5 GiB).
pub const MAX_PUT_LENGTH: u64 = 5 << 30;
/// Longest file name, in characters.
pub const MAX_FILE_NAME: usize = 250;
/// Characters a file name may not contain.
pub const FORBIDDEN_NAME_CHARS: &[char] = &['<', '>', '|', ':', '"', '*', '?', '/', '\\'];

/// The KooDrive routes.
pub fn routes() -> Router<State> {
    Router::new()
        .route("/koodrive/ose/v1/files/create", post(create))
        .route(
            "/koodrive/ose/v1/files/multipart/uploadUrl",
            post(upload_urls),
        )
        .route("/koodrive/ose/v1/files/complete", post(complete))
        .route("/koodrive/ose/v1/files/{file_id}/detail", post(detail))
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
    let token = header(headers, "authorization")
        .ok_or(AuthError::MissingHeader("Authorization"))
        .and_then(|v| auth::bearer_token(v).ok_or(AuthError::MalformedAuthorization))?;
    let user = state
        .user_by_token(token)
        .ok_or(AuthError::UnknownCredentials)?;
    let claimed = header(headers, "x-user-id").ok_or(AuthError::MissingHeader("X-User-Id"))?;
    if !auth::ct_eq(claimed.as_bytes(), user.id.as_bytes()) {
        return Err(AuthError::UnknownCredentials.into());
    }
    let date = header(headers, "x-date").ok_or(AuthError::DateMissing)?;
    let date = auth::parse_compact_date(date)?;
    auth::DateWindow::around(time::OffsetDateTime::now_utc(), state.settings.date_window)
        .check(date)?;
    let owner = match header(headers, "x-hw-share-folder-id").filter(|s| !s.is_empty()) {
        None => user.owner()?,
        Some(folder) => {
            let shared = state
                .credentials
                .shared_folders
                .iter()
                .find(|f| f.id == folder)
                .filter(|f| f.members.contains(&user.id))
                .ok_or(ApiError::Forbidden)?;
            shared.owner()?
        }
    };
    Ok(Caller {
        user: user.id.clone(),
        owner,
    })
}

/// A part as the API describes it (`MultiPartInfo`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartInfo {
    part_number: u64,
    part_size: u64,
    #[serde(default)]
    part_offset: Option<u64>,
    #[serde(default)]
    hash_ctx: Option<Vec<i128>>,
}

impl PartInfo {
    fn plan(&self) -> Result<PartPlan, ApiError> {
        let ctx = self
            .hash_ctx
            .as_deref()
            .map(HashCtx::from_ints)
            .transpose()
            .map_err(|e| ApiError::bad(format!("part {}: {e}", self.part_number)))?;
        Ok(PartPlan::new(
            self.part_number,
            self.part_size,
            self.part_offset,
            ctx,
        )?)
    }

    fn echo(&self, state: &State, id: &FileId, owner: &Owner) -> Result<PartEcho<'_>, ApiError> {
        // The plan was accepted before any echo, so this holds; an error
        // rather than a truncating cast all the same.
        let part = u32::try_from(self.part_number)
            .map_err(|_| ApiError::bad(format!("part {}: out of range", self.part_number)))?;
        Ok(PartEcho {
            part_number: self.part_number,
            part_size: self.part_size,
            part_offset: self.part_offset,
            hash_ctx: self.hash_ctx.as_deref(),
            upload_url: upload_url(state, Api::KooDrive, id, part, owner)?,
            part_id: format!("{id}-{}", self.part_number),
        })
    }
}

/// A part as answered: what was asked for, with its upload URL.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PartEcho<'a> {
    part_number: u64,
    part_size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    part_offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash_ctx: Option<&'a [i128]>,
    upload_url: String,
    part_id: String,
}

/// Every KooDrive success: `code` 0 and `msg`, beside the endpoint's fields.
#[derive(Serialize)]
struct Success<T> {
    code: i64,
    msg: &'static str,
    #[serde(flatten)]
    body: T,
}

/// The answer of `files/create`, flash upload or not.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateResponse<'a> {
    file_id: &'a str,
    rapid_upload: bool,
    file_name: &'a str,
    upload_id: &'a str,
    container_id: &'a str,
    parent_folder: [&'a str; 1],
    exist: bool,
    /// Absent for a flash upload (nothing is left to send).
    #[serde(skip_serializing_if = "Option::is_none")]
    multi_parts: Option<Vec<PartEcho<'a>>>,
    /// In `put` mode, the one part's URL again.
    #[serde(skip_serializing_if = "Option::is_none")]
    upload_url: Option<String>,
}

/// The answer of `files/multipart/uploadUrl`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UploadUrlResponse<'a> {
    multi_parts: Vec<PartEcho<'a>>,
}

/// The answer of `files/complete`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CompleteResponse<'a> {
    file_id: &'a str,
    sha256: String,
    length: u64,
    already_completed: bool,
}

/// The answer of `files/{fileId}/detail`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DetailResponse<'a> {
    id: &'a str,
    file_name: String,
    file_type: String,
    mime_type: String,
    parent_folder: [String; 1],
    size: u64,
    sha256: String,
    recycled: bool,
    container_id: &'a str,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateRequest {
    file_name: String,
    file_type: Value,
    #[serde(default)]
    parent_folder: Option<Vec<String>>,
    #[serde(default)]
    sha256: Option<String>,
    length: u64,
    #[serde(default)]
    upload_mode: Option<String>,
    #[serde(default)]
    multi_parts: Option<Vec<PartInfo>>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    mime_type: Option<String>,
    #[serde(default)]
    created_time: Option<String>,
}

fn check_file_name(name: &str) -> Result<(), ApiError> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed == "." || trimmed == ".." {
        return Err(ApiError::bad(
            "fileName must not be empty, blank, '.' or '..'",
        ));
    }
    if name.chars().count() > MAX_FILE_NAME {
        return Err(ApiError::bad(format!(
            "fileName is longer than {MAX_FILE_NAME} characters"
        )));
    }
    if name
        .chars()
        .any(|c| FORBIDDEN_NAME_CHARS.contains(&c) || c.is_control())
    {
        return Err(ApiError::bad(
            "fileName must not contain < > | : \" * ? / \\ or control characters",
        ));
    }
    Ok(())
}

/// An optional whole-file digest from a request field.
fn optional_sha256(field: Option<&str>) -> Result<Option<Sha256>, ApiError> {
    field
        .map(str::parse::<Sha256>)
        .transpose()
        .map_err(|e| ApiError::bad(format!("sha256: {e}")))
}

/// The engine's plan for the `multiParts` of a request. A part over the
/// largest part size is refused here: the engine calls it a bad plan, but the
/// API documents it as a part too large (13000423).
fn plans(parts: &[PartInfo], max_part_size: u64) -> Result<Vec<PartPlan>, ApiError> {
    if let Some(p) = parts.iter().find(|p| p.part_size > max_part_size) {
        return Err(ApiError::TooLarge(format!(
            "part {} is {} bytes, more than the largest part size {max_part_size}",
            p.part_number, p.part_size
        )));
    }
    parts.iter().map(PartInfo::plan).collect()
}

fn success<T: Serialize>(body: T) -> Json<Success<T>> {
    Json(Success {
        code: crate::error::koo::OK,
        msg: "success.",
        body,
    })
}

async fn create(
    AxState(state): AxState<State>,
    caller: Caller,
    body: Body,
) -> Result<Response, KooError> {
    let bytes = read_body(body, state.settings.max_json_body).await?;
    let req: CreateRequest = parse_json(&bytes)?;
    check_file_name(&req.file_name)?;
    let file_type = match &req.file_type {
        Value::String(s) if (1..=64).contains(&s.chars().count()) => s.clone(),
        Value::Number(n) if n.is_u64() => n.to_string(),
        _ => {
            return Err(ApiError::bad(
                "fileType must be a string of 1 to 64 characters or a non-negative integer",
            )
            .into());
        }
    };
    for (field, value, max) in [
        ("description", &req.description, 512),
        ("mimeType", &req.mime_type, 128),
        ("createdTime", &req.created_time, 64),
    ] {
        if value.as_deref().is_some_and(|v| v.chars().count() > max) {
            return Err(ApiError::bad(format!("{field} is longer than {max} characters")).into());
        }
    }
    if let Some(p) = req.parent_folder.as_ref().and_then(|p| p.first())
        && p.chars().count() > 256
    {
        return Err(ApiError::bad("parentFolder ids are at most 256 characters").into());
    }
    let multipart = match req.upload_mode.as_deref() {
        Some("put") => false,
        Some("multipart") => true,
        None => req.multi_parts.is_some(),
        Some(other) => {
            return Err(ApiError::bad(format!(
                "uploadMode must be \"put\" or \"multipart\", not {other:?}"
            ))
            .into());
        }
    };
    let max = if multipart {
        state.engine.config().limits.max_file_size
    } else {
        MAX_PUT_LENGTH.min(state.engine.config().limits.max_part_size)
    };
    if req.length > max {
        return Err(ApiError::TooLarge(format!(
            "length {} is more than the {} bytes allowed in {} mode",
            req.length,
            max,
            if multipart { "multipart" } else { "put" }
        ))
        .into());
    }
    if !multipart && req.multi_parts.is_some() {
        return Err(ApiError::bad("multiParts is only for uploadMode \"multipart\"").into());
    }
    let sha256 = optional_sha256(req.sha256.as_deref())?;
    let parent = req
        .parent_folder
        .as_ref()
        .and_then(|p| p.first().cloned())
        .unwrap_or_else(|| "root".to_owned());
    let mut labels = BTreeMap::from([
        ("fileName".to_owned(), req.file_name.clone()),
        ("fileType".to_owned(), file_type),
        ("parentFolder".to_owned(), parent.clone()),
        ("createdBy".to_owned(), caller.user.clone()),
    ]);
    for (k, v) in [
        ("description", &req.description),
        ("mimeType", &req.mime_type),
        ("createdTime", &req.created_time),
    ] {
        if let Some(v) = v {
            labels.insert(k.to_owned(), v.clone());
        }
    }
    let owner = caller.owner.clone();

    // Flash upload: the same bytes are already stored for this owner.
    if let Some(sha) = sha256 {
        let (o, l, length) = (owner.clone(), labels.clone(), req.length);
        let hit = state
            .blocking(move |e| match e.find_committed(&o, &sha, length) {
                Some(src) => e.create_from(&o, &src, l).map(|(id, _)| Some(id)),
                None => Ok(None),
            })
            .await?;
        if let Some(id) = hit {
            tracing::info!(file_id = %id, "flash upload");
            return Ok(success(CreateResponse {
                file_id: id.as_str(),
                rapid_upload: true,
                file_name: &req.file_name,
                upload_id: id.as_str(),
                container_id: owner.as_str(),
                parent_folder: [&parent],
                exist: false,
                multi_parts: None,
                upload_url: None,
            })
            .into_response());
        }
    }

    let parts: Vec<PartInfo> = if multipart {
        req.multi_parts.unwrap_or_default()
    } else {
        vec![PartInfo {
            part_number: 1,
            part_size: req.length,
            part_offset: None,
            hash_ctx: None,
        }]
    };
    let plan = plans(&parts, state.engine.config().limits.max_part_size)?;
    let mut spec = FileSpec::default()
        .with_length(req.length)
        .with_plan(plan)
        .with_labels(labels);
    spec.sha256 = sha256;
    let o = owner.clone();
    let id = state.blocking(move |e| e.create(&o, spec)).await?;
    tracing::info!(file_id = %id, length = req.length, multipart, "upload created");
    let echoed = parts
        .iter()
        .map(|p| p.echo(&state, &id, &owner))
        .collect::<Result<Vec<_>, _>>()?;
    let upload_url = match (multipart, echoed.first()) {
        (false, Some(p)) => Some(p.upload_url.clone()),
        _ => None,
    };
    Ok(success(CreateResponse {
        file_id: id.as_str(),
        rapid_upload: false,
        file_name: &req.file_name,
        upload_id: id.as_str(),
        container_id: owner.as_str(),
        parent_folder: [&parent],
        exist: false,
        multi_parts: Some(echoed),
        upload_url,
    })
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UploadUrlRequest {
    file_id: String,
    multi_parts: Vec<PartInfo>,
}

async fn upload_urls(
    AxState(state): AxState<State>,
    caller: Caller,
    body: Body,
) -> Result<Response, KooError> {
    let bytes = read_body(body, state.settings.max_json_body).await?;
    let req: UploadUrlRequest = parse_json(&bytes)?;
    let id: FileId = req.file_id.parse()?;
    let plan = plans(&req.multi_parts, state.engine.config().limits.max_part_size)?;
    let (o, i) = (caller.owner.clone(), id.clone());
    state.blocking(move |e| e.plan_parts(&o, &i, &plan)).await?;
    let echoed = req
        .multi_parts
        .iter()
        .map(|p| p.echo(&state, &id, &caller.owner))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(success(UploadUrlResponse {
        multi_parts: echoed,
    })
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CompleteRequest {
    file_id: String,
    #[serde(default)]
    sha256: Option<String>,
}

async fn complete(
    AxState(state): AxState<State>,
    caller: Caller,
    body: Body,
) -> Result<Response, KooError> {
    let bytes = read_body(body, state.settings.max_json_body).await?;
    let req: CompleteRequest = parse_json(&bytes)?;
    let id: FileId = req.file_id.parse()?;
    let expected = optional_sha256(req.sha256.as_deref())?;
    let (o, i) = (caller.owner.clone(), id.clone());
    // The engine says whether this call committed: of any number of
    // concurrent completes exactly one did.
    let done = state
        .blocking(move |e| e.complete(&o, &i, expected))
        .await?;
    let (already, v) = (!done.committed_now, done.file);
    tracing::info!(file_id = %id, sha256 = %v.sha256, length = v.length, already, "upload completed");
    Ok(success(CompleteResponse {
        file_id: id.as_str(),
        sha256: v.sha256.to_hex(),
        length: v.length,
        already_completed: already,
    })
    .into_response())
}

async fn detail(
    AxState(state): AxState<State>,
    file_id: Result<Path<String>, PathRejection>,
    caller: Caller,
    body: Body,
) -> Result<Response, KooError> {
    // The body (containerId, imageProcess) is optional here.
    let _ = read_body(body, state.settings.max_json_body).await?;
    let Path(file_id) = file_id.map_err(crate::path_error)?;
    let id: FileId = file_id.parse()?;
    let (o, i) = (caller.owner.clone(), id.clone());
    let c = state.blocking(move |e| e.get(&o, &i)).await?;
    let label = |k: &str| c.labels.get(k).cloned().unwrap_or_default();
    Ok(success(DetailResponse {
        id: id.as_str(),
        file_name: label("fileName"),
        file_type: label("fileType"),
        mime_type: label("mimeType"),
        parent_folder: [label("parentFolder")],
        size: c.length,
        sha256: c.sha256.to_hex(),
        recycled: false,
        container_id: caller.owner.as_str(),
    })
    .into_response())
}
