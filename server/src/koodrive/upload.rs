//! The upload flow of the KooDrive API: `files/create` (with flash upload),
//! `files/multipart/uploadUrl` (with `hashCtx` for the parallel chain mode)
//! and `files/complete`.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::State as AxState;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use partseal::{FileId, FileSpec, HashCtx, Owner, PartPlan, Sha256};

use super::{
    Caller, FORBIDDEN_NAME_CHARS, MAX_FILE_NAME, MAX_LABEL_BYTES, MAX_PUT_LENGTH, success,
};
use crate::error::{ApiError, KooError};
use crate::upload::{Api, upload_url};
use crate::{State, parse_json, read_body};

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

pub(super) async fn create(
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
        if value.as_deref().is_some_and(|v| v.len() > MAX_LABEL_BYTES) {
            return Err(ApiError::bad(format!(
                "{field} is longer than {MAX_LABEL_BYTES} bytes of UTF-8"
            ))
            .into());
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
        state.backend.limits().max_file_size
    } else {
        MAX_PUT_LENGTH.min(state.backend.limits().max_part_size)
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
    let plan = plans(&parts, state.backend.limits().max_part_size)?;
    // A request that would be refused without a flash hit is refused with
    // it: when a flash upload could answer, the plan is checked first (else
    // the create below checks it; no part planned yet is nothing to check).
    if sha256.is_some() && !plan.is_empty() {
        partseal::plan::merge(
            &BTreeMap::new(),
            &plan,
            Some(req.length),
            &state.backend.limits(),
        )?;
    }

    // Flash upload: the same bytes are already stored for this owner.
    if let Some(sha) = sha256 {
        let hit = state
            .backend
            .flash_copy(&owner, sha, req.length, labels.clone())
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

    let mut spec = FileSpec::default()
        .with_length(req.length)
        .with_plan(plan)
        .with_labels(labels);
    spec.sha256 = sha256;
    let id = state.backend.create(&owner, spec).await?;
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

pub(super) async fn upload_urls(
    AxState(state): AxState<State>,
    caller: Caller,
    body: Body,
) -> Result<Response, KooError> {
    let bytes = read_body(body, state.settings.max_json_body).await?;
    let req: UploadUrlRequest = parse_json(&bytes)?;
    let id: FileId = req.file_id.parse()?;
    let plan = plans(&req.multi_parts, state.backend.limits().max_part_size)?;
    state.backend.plan_parts(&caller.owner, &id, plan).await?;
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

pub(super) async fn complete(
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
    let done = crate::ops::metrics::complete(&state, o, i, expected).await?;
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
