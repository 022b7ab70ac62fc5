//! Upload URLs: where clients of both APIs `PUT` the bytes of a part.
//!
//! An upload URL is `/upload/{api}/{file_id}/{part}?o=<owner hex>&e=<expiry>&s=<signature>`.
//! The signature is an HMAC (the server's key) over file id, part number,
//! owner and expiry, so a URL needs no other credentials, expires, and cannot
//! be turned into a URL for another file, part or owner. The body streams
//! into the engine, which hashes it while writing and answers with the part's
//! SHA-256 as the `ETag`.

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use serde::Deserialize;

use partseal::{FileId, Owner};

use crate::auth::AuthError;
use crate::error::{ApiError, KooError, MssError};
use crate::{State, body_reader};

/// Which API issued an upload URL (it decides the dialect of errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// KooDrive-style.
    KooDrive,
    /// MetaStudio-style.
    MetaStudio,
}

impl Api {
    fn as_str(self) -> &'static str {
        match self {
            Api::KooDrive => "koodrive",
            Api::MetaStudio => "metastudio",
        }
    }
}

/// The upload route.
pub fn routes() -> Router<State> {
    Router::new().route("/upload/{api}/{file_id}/{part}", put(put_part))
}

/// Builds a signed upload URL for part `part` of `id`.
pub fn upload_url(
    state: &State,
    api: Api,
    id: &FileId,
    part: u32,
    owner: &Owner,
) -> Result<String, ApiError> {
    let expires =
        time::OffsetDateTime::now_utc().unix_timestamp() + state.settings.url_ttl.as_secs() as i64;
    let sig = state
        .signer
        .sign(id.as_str(), part, owner.as_str(), expires);
    Ok(format!(
        "{}/upload/{}/{}/{}?o={}&e={}&s={}",
        state.settings.public_url,
        api.as_str(),
        id,
        part,
        hex::encode(owner.as_str()),
        expires,
        sig
    ))
}

#[derive(Debug, Deserialize)]
struct Signed {
    o: Option<String>,
    e: Option<i64>,
    s: Option<String>,
}

async fn put_part(
    AxState(state): AxState<State>,
    params: Result<Path<(String, String, String)>, PathRejection>,
    query: Result<Query<Signed>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(Path((api, file_id, part))) = params else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let api = match api.as_str() {
        "koodrive" => Api::KooDrive,
        "metastudio" => Api::MetaStudio,
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let res = receive(
        &state,
        &file_id,
        &part,
        query.ok().map(|q| q.0),
        &headers,
        body,
    )
    .await;
    match (res, api) {
        (Ok(etag), _) => {
            let mut resp = StatusCode::OK.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
                resp.headers_mut().insert(header::ETAG, v);
            }
            resp
        }
        (Err(e), Api::KooDrive) => KooError(e).into_response(),
        (Err(e), Api::MetaStudio) => MssError(e).into_response(),
    }
}

async fn receive(
    state: &State,
    file_id: &str,
    part: &str,
    signed: Option<Signed>,
    headers: &HeaderMap,
    body: Body,
) -> Result<String, ApiError> {
    let Some(Signed {
        o: Some(owner_hex),
        e: Some(expires),
        s: Some(sig),
    }) = signed
    else {
        return Err(AuthError::BadUploadUrl.into());
    };
    let part: u64 = part
        .parse()
        .map_err(|_| ApiError::bad("the part number in the upload URL is not a number"))?;
    let part32 = u32::try_from(part).map_err(|_| ApiError::bad("part number out of range"))?;
    let owner = hex::decode(&owner_hex)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or(AuthError::BadUploadUrl)?;
    state.signer.verify(
        file_id,
        part32,
        &owner,
        expires,
        &sig,
        time::OffsetDateTime::now_utc().unix_timestamp(),
    )?;
    let owner = Owner::new(&owner)?;
    let id: FileId = file_id.parse()?;
    let expected_len = match headers.get(header::CONTENT_LENGTH) {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad("Content-Length is not a number"))?,
        ),
        None => None,
    };
    let reader = body_reader(body);
    let receipt = state
        .blocking(move |e| e.put_part(&owner, &id, part, reader, expected_len))
        .await?;
    tracing::info!(file_id, part, len = receipt.len, link = ?receipt.link, "part stored");
    Ok(receipt.sha256.to_hex())
}
