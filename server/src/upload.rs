//! Upload URLs: where clients of both APIs `PUT` the bytes of a part.
//!
//! An upload URL is `/upload/{api}/{file_id}/{part}?o=<owner hex>&e=<expiry>&s=<signature>`.
//! The signature is an HMAC (the server's key) over the API, file id, part
//! number, owner and expiry, so a URL needs no other credentials, expires, and
//! cannot be turned into a URL for another API, file, part or owner. The body streams
//! into the engine, which hashes it while writing and answers with the part's
//! fingerprint as the `ETag` (its SHA-256; in chain mode the SHA-256 of the
//! file through the part's end, see [`partseal::PartReceipt::sha256`]); a
//! `Content-MD5` is checked on the way (see [`crate::content_md5`]).

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::put;

use futures_util::TryStreamExt;
use partseal::{FileId, Owner, PartNumber};

use crate::auth::{AuthError, UploadGrant};
use crate::backend::Backend;
use crate::content_md5::{self, Md5Checked, Mismatch};
use crate::error::{ApiError, KooError, MssError};
use crate::ops::metrics::Counted;
use crate::signed_url::{Signed, SignedParts, lossy_segments, unknown_api};
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
    /// The `{api}` segment of upload and download URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::KooDrive => "koodrive",
            Api::MetaStudio => "metastudio",
        }
    }

    /// The API of an `{api}` segment, if it names one.
    pub fn parse(s: &str) -> Option<Api> {
        match s {
            "koodrive" => Some(Api::KooDrive),
            "metastudio" => Some(Api::MetaStudio),
            _ => None,
        }
    }

    /// The API whose paths `path` is under: its own prefix (`/koodrive/`,
    /// `/v1/`), or `/upload/` or `/download/` followed by its name.
    pub fn of_path(path: &str) -> Option<Api> {
        if path.starts_with("/koodrive/") {
            return Some(Api::KooDrive);
        }
        if path.starts_with("/v1/") {
            return Some(Api::MetaStudio);
        }
        let rest = path
            .strip_prefix("/upload/")
            .or_else(|| path.strip_prefix("/download/"))?;
        Api::parse(rest.split('/').next().unwrap_or_default())
    }

    /// `e` answered in this API's dialect.
    pub fn error(self, e: ApiError) -> Response {
        match self {
            Api::KooDrive => KooError(e).into_response(),
            Api::MetaStudio => MssError(e).into_response(),
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
    let sig = state.signer.sign(&UploadGrant {
        api: api.as_str(),
        file_id: id.as_str(),
        part,
        owner: owner.as_str(),
        expires_unix: expires,
    });
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

async fn put_part(
    AxState(state): AxState<State>,
    params: Result<Path<(String, String, String)>, PathRejection>,
    uri: Uri,
    query: Result<Query<Signed>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let segments = match params {
        Ok(Path(t)) => Some(t),
        Err(_) => lossy_segments::<3>(&uri, "/upload/").map(|[a, f, p]| (a, f, p)),
    };
    let Some((api, file_id, part)) = segments else {
        return unknown_api("upload");
    };
    let Some(api) = Api::parse(&api) else {
        return unknown_api("upload");
    };
    let res = receive(
        &state,
        api,
        &file_id,
        &part,
        query.ok().map(|q| q.0),
        &headers,
        body,
    )
    .await;
    state
        .ops
        .metrics
        .part(crate::ops::metrics::part_outcome(&res));
    match (res, api) {
        (Ok(etag), _) => {
            let mut resp = StatusCode::OK.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
                resp.headers_mut().insert(header::ETAG, v);
            }
            resp
        }
        (Err(e), api) => api.error(e),
    }
}

async fn receive(
    state: &State,
    api: Api,
    file_id: &str,
    part: &str,
    signed: Option<Signed>,
    headers: &HeaderMap,
    body: Body,
) -> Result<String, ApiError> {
    let SignedParts {
        owner,
        expires,
        sig,
    } = Signed::parts(signed, AuthError::BadUploadUrl)?;
    let part: u64 = part
        .parse()
        .map_err(|_| ApiError::bad("the part number in the upload URL is not a number"))?;
    let part32 = u32::try_from(part).map_err(|_| ApiError::bad("part number out of range"))?;
    let grant = UploadGrant {
        api: api.as_str(),
        file_id,
        part: part32,
        owner: &owner,
        expires_unix: expires,
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    state.signer.verify(&grant, &sig, now)?;
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
    let md5 = content_md5::parse(headers)?;
    // Each body in flight holds a blocking thread until it ends, however
    // slowly the client sends it: bound them, and refuse the rest before
    // reading a byte. The permit goes with the engine call, which runs on
    // even if this request is dropped.
    let permit = state
        .parts_in_flight
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::Busy(format!(
                "{} part uploads are in progress, the most this server takes at once",
                state.settings.max_parts_in_flight
            ))
        })?;
    let received = state.ops.metrics.part_bytes(api.as_str());
    let number = PartNumber::new(part)?;
    let receipt = match &state.backend {
        Backend::Local(engine) => {
            let mismatch = Mismatch::default();
            let reader = Md5Checked::new(
                Counted::new(body_reader(body), received),
                md5,
                mismatch.clone(),
            );
            let res = crate::backend::blocking(engine, move |e| {
                let _permit = permit;
                e.put_part(&owner, &id, number, reader, expected_len)
            })
            .await;
            // A body that ended with another MD5 failed the engine's read of
            // it; the engine kept nothing, and the reason is ours to tell.
            match (res, md5.and_then(|m| mismatch.error(&m))) {
                (Err(_), Some(e)) => return Err(e),
                (res, _) => res?,
            }
        }
        Backend::Cluster(cluster) => {
            let stream = body.into_data_stream().map_ok(move |b| {
                received.inc_by(b.len() as u64);
                b
            });
            let res = cluster
                .put_part(&owner, &id, number, stream, expected_len, md5)
                .await;
            drop(permit);
            match res {
                Err(partseal::Error::DigestMismatch {
                    kind: partseal::DigestKind::Md5,
                    expected,
                    actual,
                }) => return Err(content_md5::mismatch(&expected, &actual)),
                res => res?,
            }
        }
    };
    tracing::info!(file_id, part, len = receipt.len, link = ?receipt.link, "part stored");
    Ok(receipt.sha256.to_hex())
}
