//! Files and uploads after create: the details of a committed file (with
//! its download URL), and the partseal extensions `files/multipart/abort`
//! and `files/multipart/list`, which the KooDrive documents lack: a client
//! can give an upload up, and one that restarted can ask which parts
//! landed.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State as AxState};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use partseal::FileId;

use super::{Caller, success};
use crate::download::download_url;
use crate::error::KooError;
use crate::upload::Api;
use crate::{State, parse_json, read_body};

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
    /// partseal extension: a signed `GET` URL of the bytes, valid for
    /// `--url-ttl-secs`.
    download_url: String,
}

pub(super) async fn detail(
    AxState(state): AxState<State>,
    file_id: Result<Path<String>, PathRejection>,
    caller: Caller,
    body: Body,
) -> Result<Response, KooError> {
    // The body (containerId, imageProcess) is optional here.
    let _ = read_body(body, state.settings.max_json_body).await?;
    let Path(file_id) = file_id.map_err(crate::path_error)?;
    let id: FileId = file_id.parse()?;
    let c = state.backend.get(&caller.owner, &id).await?;
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
        download_url: download_url(&state, Api::KooDrive, &id, &caller.owner),
    })
    .into_response())
}

/// The body of `abort` and `list`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileIdRequest {
    file_id: String,
}

/// Reads the `{"fileId"}` body of `abort` and `list`.
async fn file_id_of(state: &State, body: Body) -> Result<FileId, KooError> {
    let bytes = read_body(body, state.settings.max_json_body).await?;
    let req: FileIdRequest = parse_json(&bytes)?;
    Ok(req.file_id.parse()?)
}

/// The answer of `files/multipart/abort`: `code` and `msg` only.
#[derive(Serialize)]
struct Empty {}

pub(super) async fn abort(
    AxState(state): AxState<State>,
    caller: Caller,
    body: Body,
) -> Result<Response, KooError> {
    let id = file_id_of(&state, body).await?;
    // A repeated abort by the same owner succeeds (the backend remembers
    // it); another owner's upload reads as unknown (13000401).
    state.backend.abort(&caller.owner, &id, None).await?;
    tracing::info!(file_id = %id, "upload aborted");
    Ok(success(Empty {}).into_response())
}

/// A received part, as `files/multipart/list` answers it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListedPart {
    part_number: u32,
    part_size: u64,
    sha256: String,
    link_checked: bool,
}

/// The answer of `files/multipart/list`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListResponse<'a> {
    file_id: &'a str,
    multi_parts: Vec<ListedPart>,
}

pub(super) async fn list(
    AxState(state): AxState<State>,
    caller: Caller,
    body: Body,
) -> Result<Response, KooError> {
    let id = file_id_of(&state, body).await?;
    let parts = state.backend.parts(&caller.owner, &id).await?;
    let multi_parts = parts
        .into_iter()
        .map(|p| ListedPart {
            part_number: p.number.get(),
            part_size: p.len,
            sha256: p.sha256.to_hex(),
            link_checked: p.link_checked,
        })
        .collect();
    Ok(success(ListResponse {
        file_id: id.as_str(),
        multi_parts,
    })
    .into_response())
}
