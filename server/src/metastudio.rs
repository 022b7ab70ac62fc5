//! The MetaStudio-style API under `/v1/{project_id}/`: CreateFile,
//! CreateLargeFile, ConfirmFileUpload and DeleteFile, and the partseal
//! extension `GET /v1/{project_id}/files/{file_id}`: a file's state, its
//! segments received with fresh upload URLs while it is open (so a client
//! whose 24 h URLs ran out can go on), and a download URL once it is
//! `CREATED`.
//!
//! Requests authenticate with `X-Auth-Token` or with AK/SK request signing as
//! the official Huawei Cloud SDK does it (see [`crate::auth`]); the signature
//! covers the body, so it is read whole (bounded) before anything else.
//! Every response carries `X-Request-Id`; errors answer
//! `{error_code, error_msg}` (see [`crate::error::mss`]).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Path, Request, State as AxState};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use partseal::{FileId, FileSpec, Owner, PartPlan, UploadStatus};

use crate::auth::{self, AuthError};
use crate::download::download_url;
use crate::error::{ApiError, MssError};
use crate::upload::{Api, upload_url};
use crate::{State, X_REQUEST_ID, header, parse_json, read_body, request_id};

/// Largest file of CreateFile (5 GiB).
pub const MAX_FILE_SIZE: u64 = 5 << 30;
/// Largest file of CreateLargeFile (500 GiB; the engine's limit may be lower).
pub const MAX_LARGE_FILE_SIZE: u64 = 500 << 30;
/// Asset file categories CreateFile accepts.
pub const CATEGORIES: &[&str] = &[
    "MAIN",
    "COVER",
    "PAGE",
    "SAMPLE",
    "OTHER",
    "TEMPORARY",
    "PACKAGE",
];
/// Asset file categories CreateLargeFile accepts.
pub const LARGE_CATEGORIES: &[&str] = &["MAIN", "OTHER", "PACKAGE"];

/// The MetaStudio routes.
pub fn routes() -> Router<State> {
    Router::new()
        .route("/v1/{project_id}/files", post(create_file))
        .route("/v1/{project_id}/large-files", post(create_large_file))
        .route("/v1/{project_id}/files/{file_id}/complete", post(confirm))
        .route(
            "/v1/{project_id}/files/{file_id}",
            get(get_file).delete(delete_file),
        )
        .layer(middleware::from_fn(add_request_id))
}

async fn add_request_id(req: Request, next: Next) -> Response {
    // The request's own id (the one its log lines carry), when the app's
    // request-id layer gave it one.
    let id = req
        .extensions()
        .get::<crate::ops::RequestId>()
        .map_or_else(request_id, |r| r.0.clone());
    let mut resp = next.run(req).await;
    resp.headers_mut().insert(X_REQUEST_ID.clone(), id);
    resp
}

/// An authenticated MetaStudio request, as an extractor: the owner it acts
/// for, and its body, read whole (bounded) because the AK/SK signature
/// covers it. A refusal answers in MetaStudio's `{error_code, error_msg}`.
pub struct Caller {
    /// The owner of the files acted on.
    pub owner: Owner,
    /// The request body as received, for the handler to parse.
    pub body: Bytes,
}

/// The `{project_id}` every MetaStudio route has (other parameters ignored).
#[derive(Deserialize)]
struct ProjectParam {
    project_id: String,
}

impl FromRequest<State> for Caller {
    type Rejection = MssError;

    async fn from_request(req: Request, state: &State) -> Result<Caller, MssError> {
        let (mut parts, body) = req.into_parts();
        // In this order, as the answers have always come: an unreadable
        // body or path is a 400 before any authentication.
        let body = read_body(body, state.settings.max_json_body).await?;
        let Path(ProjectParam { project_id }) =
            Path::<ProjectParam>::from_request_parts(&mut parts, state)
                .await
                .map_err(crate::path_error)?;
        // The signature is over the request line as sent, not one a nested
        // router may have stripped.
        let uri = parts
            .extensions
            .get::<OriginalUri>()
            .map_or(&parts.uri, |o| &o.0);
        let owner = authenticate(
            state,
            &parts.method,
            uri,
            &parts.headers,
            &body,
            &project_id,
        )?;
        Ok(Caller { owner, body })
    }
}

/// Authenticates a request (token or AK/SK signature over `body`) for
/// `project_id` and returns the owner of the files it acts on.
fn authenticate(
    state: &State,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    project_id: &str,
) -> Result<Owner, ApiError> {
    let credentials = state.credentials_now();
    let user = if let Some(token) = header(headers, "x-auth-token") {
        credentials
            .user_by_token(token)
            .ok_or(AuthError::UnknownCredentials)?
    } else {
        let ak = auth::verify_sdk_request(
            method.as_str(),
            uri.path(),
            uri.query(),
            headers,
            body,
            |ak| {
                credentials
                    .user_by_access_key(ak)
                    .map(|u| u.secret_key.clone())
            },
            &auth::DateWindow::around(time::OffsetDateTime::now_utc(), state.settings.date_window),
        )?;
        credentials
            .user_by_access_key(&ak)
            .ok_or(AuthError::UnknownCredentials)?
    };
    auth::check_project(
        project_id,
        &user.project_id,
        header(headers, "x-project-id"),
    )?;
    Ok(user.owner()?)
}

/// The answer of CreateFile.
#[derive(Serialize)]
struct CreateFileResponse {
    file_id: String,
    upload_url: String,
}

/// The answer of CreateLargeFile: one URL per segment, in order.
#[derive(Serialize)]
struct CreateLargeFileResponse {
    file_id: String,
    upload_urls: Vec<String>,
}

/// The answer of ConfirmFileUpload: an empty object.
#[derive(Serialize)]
struct ConfirmResponse {}

fn check_len(field: &str, v: &str, min: usize, max: usize) -> Result<(), ApiError> {
    let n = v.chars().count();
    if n < min || n > max {
        return Err(ApiError::bad(format!(
            "{field} must be {min} to {max} characters"
        )));
    }
    if v.chars().any(char::is_control) {
        return Err(ApiError::bad(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

fn check_category(v: &str, allowed: &[&str]) -> Result<(), ApiError> {
    if !allowed.contains(&v) {
        return Err(ApiError::bad(format!(
            "asset_file_category must be one of {}",
            allowed.join(", ")
        )));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
struct CreateFileRequest {
    file_name: String,
    file_md5: String,
    file_size: u64,
    file_type: String,
    asset_id: String,
    asset_file_category: String,
}

async fn create_file(
    AxState(state): AxState<State>,
    Caller { owner, body }: Caller,
) -> Result<Json<CreateFileResponse>, MssError> {
    let req: CreateFileRequest = parse_json(&body)?;
    let labels = asset_labels(
        &req.file_name,
        &req.file_type,
        &req.asset_id,
        &req.asset_file_category,
        CATEGORIES,
    )?;
    if req.file_size == 0 || req.file_size > MAX_FILE_SIZE {
        return Err(ApiError::bad(format!("file_size must be 1 to {MAX_FILE_SIZE}")).into());
    }
    let md5: [u8; 16] = base64::engine::general_purpose::STANDARD
        .decode(req.file_md5.as_bytes())
        .ok()
        .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| {
            ApiError::bad("file_md5 must be the base64 of a 16-byte MD5 (24 characters)")
        })?;
    let spec = FileSpec::default()
        .with_length(req.file_size)
        .with_md5(md5)
        .with_plan(vec![PartPlan::new(1, req.file_size, None, None)?])
        .with_labels(labels);
    let id = state.backend.create(&owner, spec).await?;
    tracing::info!(file_id = %id, size = req.file_size, "file created");
    Ok(Json(CreateFileResponse {
        upload_url: upload_url(&state, Api::MetaStudio, &id, 1, &owner)?,
        file_id: id.to_string(),
    }))
}

/// Checks the fields every MetaStudio file has and returns them as the
/// upload's labels.
fn asset_labels(
    name: &str,
    ty: &str,
    asset: &str,
    category: &str,
    allowed: &[&str],
) -> Result<BTreeMap<String, String>, ApiError> {
    check_len("file_name", name, 1, 256)?;
    check_len("file_type", ty, 1, 64)?;
    check_len("asset_id", asset, 1, 64)?;
    check_category(category, allowed)?;
    Ok(BTreeMap::from([
        ("fileName".to_owned(), name.to_owned()),
        ("fileType".to_owned(), ty.to_owned()),
        ("assetId".to_owned(), asset.to_owned()),
        ("assetFileCategory".to_owned(), category.to_owned()),
    ]))
}

#[derive(Debug, Deserialize)]
struct CreateLargeFileRequest {
    file_name: String,
    #[serde(default)]
    file_size: Option<u64>,
    file_type: String,
    asset_id: String,
    asset_file_category: String,
    #[serde(default)]
    file_multipart_count: Option<u32>,
}

async fn create_large_file(
    AxState(state): AxState<State>,
    Caller { owner, body }: Caller,
) -> Result<Json<CreateLargeFileResponse>, MssError> {
    let req: CreateLargeFileRequest = parse_json(&body)?;
    let labels = asset_labels(
        &req.file_name,
        &req.file_type,
        &req.asset_id,
        &req.asset_file_category,
        LARGE_CATEGORIES,
    )?;
    let max = MAX_LARGE_FILE_SIZE.min(state.backend.limits().max_file_size);
    if let Some(size) = req.file_size
        && (size == 0 || size > max)
    {
        return Err(ApiError::bad(format!("file_size must be 1 to {max}")).into());
    }
    let count = req.file_multipart_count.unwrap_or(1);
    if !(1..=partseal::MAX_PARTS).contains(&count) {
        return Err(ApiError::bad(format!(
            "file_multipart_count must be 1 to {}",
            partseal::MAX_PARTS
        ))
        .into());
    }
    // A size the segments can never add up to is refused now, not at the
    // confirm: every segment but the last holds at least the smallest part
    // size, and none more than the largest.
    let limits = state.backend.limits();
    if let Some(size) = req.file_size {
        let least = u64::from(count - 1).saturating_mul(limits.min_part_size);
        let most = u64::from(count).saturating_mul(limits.max_part_size);
        if size < least || size > most {
            return Err(ApiError::bad(format!(
                "file_size {size} cannot be sent in {count} segment(s): every segment but the \
                 last holds {} to {} bytes and the last at most {}, so {count} segment(s) hold \
                 {least} to {most} bytes",
                limits.min_part_size, limits.max_part_size, limits.max_part_size
            ))
            .into());
        }
    }
    let mut spec = FileSpec::default()
        .with_labels(labels)
        .with_part_count(count);
    spec.length = req.file_size;
    let id = state.backend.create(&owner, spec).await?;
    tracing::info!(file_id = %id, segments = count, "large file created");
    let urls = (1..=count)
        .map(|n| upload_url(&state, Api::MetaStudio, &id, n, &owner))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(CreateLargeFileResponse {
        file_id: id.to_string(),
        upload_urls: urls,
    }))
}

#[derive(Debug, Deserialize)]
struct ConfirmRequest {
    state: String,
    #[serde(default)]
    #[allow(dead_code)]
    auto_meta_analysis: Option<bool>,
}

async fn confirm(
    AxState(state): AxState<State>,
    ids: Result<Path<(String, String)>, PathRejection>,
    Caller { owner, body }: Caller,
) -> Result<Response, MssError> {
    // The caller's extraction has already refused an undecodable path.
    let Path((_, file_id)) = ids.map_err(crate::path_error)?;
    let req: ConfirmRequest = parse_json(&body)?;
    let id: FileId = file_id.parse()?;
    let mut committed_now = None;
    match req.state.as_str() {
        "CREATED" => {
            let done = crate::ops::metrics::complete(&state, owner, id, None).await?;
            let v = &done.file;
            tracing::info!(%file_id, sha256 = %v.sha256, length = v.length,
                committed_now = done.committed_now, "file confirmed");
            committed_now = Some(done.committed_now);
        }
        "FAILED" | "CANCELLED" => {
            // The note is what a later GET of the file answers as its state.
            let note = req.state.clone();
            state.backend.abort(&owner, &id, Some(note)).await?;
            tracing::info!(%file_id, state = %req.state, "upload ended");
        }
        other => {
            return Err(ApiError::bad(format!(
                "state must be CREATED, FAILED or CANCELLED, not {other:?}"
            ))
            .into());
        }
    }
    let mut res = Json(ConfirmResponse {}).into_response();
    // The API's answer is an empty object; a partseal extension header says
    // whether this confirm committed the file (exactly one of any number of
    // concurrent confirms does).
    if let Some(now) = committed_now {
        res.headers_mut().insert(
            X_PARTSEAL_COMMITTED.clone(),
            HeaderValue::from_static(if now { "true" } else { "false" }),
        );
    }
    Ok(res)
}

/// `X-Partseal-Committed` on a `CREATED` confirm: `true` for the one call
/// that committed the file, `false` for every other.
pub static X_PARTSEAL_COMMITTED: HeaderName = HeaderName::from_static("x-partseal-committed");

async fn delete_file(
    AxState(state): AxState<State>,
    ids: Result<Path<(String, String)>, PathRejection>,
    Caller { owner, .. }: Caller,
) -> Result<Response, MssError> {
    // The caller's extraction has already refused an undecodable path.
    let Path((_, file_id)) = ids.map_err(crate::path_error)?;
    let id: FileId = file_id.parse()?;
    match state.backend.delete(&owner, &id).await {
        // Not a committed file: an open upload is discarded; one that has
        // ended already (FAILED, CANCELLED, deleted) is nothing to delete.
        Err(partseal::Error::NotFound) => match state.backend.status(&owner, &id).await? {
            UploadStatus::Open(_) => state.backend.abort(&owner, &id, None).await?,
            // Committed since the delete looked.
            UploadStatus::Committed(_) => state.backend.delete(&owner, &id).await?,
            _ => return Err(ApiError::from(partseal::Error::NotFound).into()),
        },
        other => other?,
    }
    tracing::info!(%file_id, "file deleted");
    Ok(StatusCode::OK.into_response())
}

/// A segment received, as `GET /v1/{project_id}/files/{file_id}` lists it.
#[derive(Serialize)]
struct Segment {
    segment_number: u32,
    segment_size: u64,
    sha256: String,
}

/// The answer of `GET /v1/{project_id}/files/{file_id}`.
#[derive(Serialize)]
struct FileStatusResponse {
    file_id: String,
    /// `CREATING`, `CREATED`, `FAILED` or `CANCELLED`.
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_size: Option<u64>,
    /// Base64 of the MD5, as `file_md5` of CreateFile.
    #[serde(skip_serializing_if = "Option::is_none")]
    file_md5: Option<String>,
    /// `CREATING`: the segments received, by number.
    #[serde(skip_serializing_if = "Option::is_none")]
    segments: Option<Vec<Segment>>,
    /// `CREATING`: a fresh URL per segment, in order, as CreateLargeFile
    /// gives them.
    #[serde(skip_serializing_if = "Option::is_none")]
    upload_urls: Option<Vec<String>>,
    /// `CREATED`: a signed `GET` URL of the bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    download_url: Option<String>,
}

fn base64_md5(md5: Option<[u8; 16]>) -> Option<String> {
    md5.map(|m| base64::engine::general_purpose::STANDARD.encode(m))
}

async fn get_file(
    AxState(state): AxState<State>,
    ids: Result<Path<(String, String)>, PathRejection>,
    Caller { owner, .. }: Caller,
) -> Result<Json<FileStatusResponse>, MssError> {
    // The caller's extraction has already refused an undecodable path.
    let Path((_, file_id)) = ids.map_err(crate::path_error)?;
    let id: FileId = file_id.parse()?;
    let status = state.backend.status(&owner, &id).await?;
    let mut answer = FileStatusResponse {
        file_id: id.to_string(),
        state: "CREATING",
        file_name: None,
        file_size: None,
        file_md5: None,
        segments: None,
        upload_urls: None,
        download_url: None,
    };
    match status {
        UploadStatus::Open(u) => {
            // One URL per segment of the plan: CreateLargeFile's count, or
            // the one part of CreateFile (and never fewer than the parts
            // already received).
            let received = u.parts.last().map_or(0, |p| p.number.get());
            let count = u.part_count.unwrap_or(1).max(received);
            answer.upload_urls = Some(
                (1..=count)
                    .map(|n| upload_url(&state, Api::MetaStudio, &id, n, &owner))
                    .collect::<Result<_, _>>()?,
            );
            answer.segments = Some(
                u.parts
                    .iter()
                    .map(|p| Segment {
                        segment_number: p.number.get(),
                        segment_size: p.len,
                        sha256: p.sha256.to_hex(),
                    })
                    .collect(),
            );
            answer.file_name = u.labels.get("fileName").cloned();
            answer.file_size = u.length;
            answer.file_md5 = base64_md5(u.md5);
        }
        UploadStatus::Committed(c) => {
            answer.state = "CREATED";
            answer.file_name = c.labels.get("fileName").cloned();
            answer.file_size = Some(c.length);
            answer.file_md5 = base64_md5(c.md5);
            answer.download_url = Some(download_url(&state, Api::MetaStudio, &id, &owner));
        }
        UploadStatus::Aborted { note } => {
            // ConfirmFileUpload's FAILED or CANCELLED is kept as such; a file
            // deleted (DeleteFile, a KooDrive abort) is gone like any
            // deleted resource.
            answer.state = match note.as_deref() {
                Some("FAILED") => "FAILED",
                Some("CANCELLED") => "CANCELLED",
                _ => return Err(ApiError::from(partseal::Error::NotFound).into()),
            };
        }
        other => {
            return Err(
                ApiError::Internal(format!("an upload status unknown here: {other:?}")).into(),
            );
        }
    }
    Ok(Json(answer))
}
