//! Download URLs (a partseal extension of both APIs): where clients `GET` the
//! bytes of a committed file.
//!
//! A download URL is `/download/{api}/{file_id}?o=<owner hex>&e=<expiry>&s=<signature>`,
//! signed like an upload URL but for another purpose (see
//! [`crate::auth::UrlSigner::sign_download`]), so neither kind passes for the
//! other. KooDrive's `files/{fileId}/detail` and MetaStudio's `GET` of a
//! `CREATED` file hand them out.
//!
//! The answer streams the file in bounded chunks read on the blocking pool,
//! so memory stays the same whatever the file size. The engine's reader is
//! opened before any header is sent and reads an immutable file, which a
//! concurrent delete cannot change: a download is the whole file or fails,
//! never a mix. One byte range is served (206); several are answered with
//! the whole file (200), which RFC 9110 allows and which saves building a
//! multipart body nobody here asks for.

use std::io::{self, Read, Seek, SeekFrom};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::get;

use futures_util::TryStreamExt;

use partseal::{FileId, FileReader, Owner};

use crate::backend::Download;

use crate::State;
use crate::auth::{AuthError, DownloadGrant};
use crate::error::ApiError;
use crate::signed_url::{Signed, SignedParts, lossy_segments, unknown_api};
use crate::upload::Api;

/// Bytes read from the file per chunk of the body: large enough that the
/// hop to the blocking pool is cheap per byte, small enough that a slow
/// client holds little memory.
const CHUNK: usize = 256 << 10;

/// The download route (`GET`, and `HEAD` through it).
pub fn routes() -> Router<State> {
    Router::new().route("/download/{api}/{file_id}", get(download))
}

/// A signed download URL of `id` of `owner`, valid for `--url-ttl-secs`.
pub fn download_url(state: &State, api: Api, id: &FileId, owner: &Owner) -> String {
    let expires =
        time::OffsetDateTime::now_utc().unix_timestamp() + state.settings.url_ttl.as_secs() as i64;
    let sig = state.signer.sign_download(&DownloadGrant {
        api: api.as_str(),
        file_id: id.as_str(),
        owner: owner.as_str(),
        expires_unix: expires,
    });
    format!(
        "{}/download/{}/{}?o={}&e={}&s={}",
        state.settings.public_url,
        api.as_str(),
        id,
        hex::encode(owner.as_str()),
        expires,
        sig
    )
}

/// Which bytes a request asks for, after `Range` and `If-Range`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Selection {
    /// The whole file (no range, an ignored one, or several).
    Whole,
    /// Bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// No byte of the file is in the range.
    Unsatisfiable,
}

/// Interprets a `Range` header for a file of `len` bytes. A header that is
/// malformed, of another unit, or asks for several ranges is ignored (the
/// whole file is served), as RFC 9110 allows.
fn select(range: Option<&str>, len: u64) -> Selection {
    let Some(spec) = range.and_then(|r| {
        let (unit, set) = r.trim().split_once('=')?;
        unit.trim()
            .eq_ignore_ascii_case("bytes")
            .then_some(set.trim())
    }) else {
        return Selection::Whole;
    };
    if spec.contains(',') {
        return Selection::Whole;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Selection::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        // Digits only: `u64::from_str` would take a leading `+`. A number
        // past u64 is still a number, beyond any file's end.
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().unwrap_or(u64::MAX))
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // `-N`: the last N bytes.
        (true, false) => match num(last) {
            Some(0) => Selection::Unsatisfiable,
            Some(_) if len == 0 => Selection::Unsatisfiable,
            Some(n) => Selection::Part {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            None => Selection::Whole,
        },
        // `N-`: from N to the end.
        (false, true) => match num(first) {
            Some(s) if s >= len => Selection::Unsatisfiable,
            Some(s) => Selection::Part {
                start: s,
                end: len - 1,
            },
            None => Selection::Whole,
        },
        (false, false) => match (num(first), num(last)) {
            (Some(s), Some(e)) if e < s => Selection::Whole,
            (Some(s), Some(_)) if s >= len => Selection::Unsatisfiable,
            (Some(s), Some(e)) => Selection::Part {
                start: s,
                end: e.min(len - 1),
            },
            _ => Selection::Whole,
        },
        (true, true) => Selection::Whole,
    }
}

/// Whether an `If-None-Match` list names `etag` (weakly, as RFC 9110 says
/// for this header) or is `*`.
fn none_match(list: &str, etag: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

async fn download(
    AxState(state): AxState<State>,
    params: Result<Path<(String, String)>, PathRejection>,
    uri: Uri,
    method: Method,
    query: Result<Query<Signed>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let segments = match params {
        Ok(Path(t)) => Some(t),
        Err(_) => lossy_segments::<2>(&uri, "/download/").map(|[a, f]| (a, f)),
    };
    let Some((api, file_id)) = segments else {
        return unknown_api("download");
    };
    let Some(api) = Api::parse(&api) else {
        return unknown_api("download");
    };
    match answer(
        &state,
        api,
        &file_id,
        query.ok().map(|q| q.0),
        &method,
        &headers,
    )
    .await
    {
        Ok(resp) => resp,
        Err(e) => api.error(e),
    }
}

/// Checks the signature, opens the file and builds the answer.
async fn answer(
    state: &State,
    api: Api,
    file_id: &str,
    signed: Option<Signed>,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let SignedParts {
        owner,
        expires,
        sig,
    } = Signed::parts(signed, AuthError::BadDownloadUrl)?;
    let grant = DownloadGrant {
        api: api.as_str(),
        file_id,
        owner: &owner,
        expires_unix: expires,
    };
    // A malformed id is a bad request whatever the signature says.
    let id: FileId = file_id.parse()?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    state.signer.verify_download(&grant, &sig, now)?;
    let owner = Owner::new(&owner)?;
    // Opened before anything is answered: from here on the bytes are those
    // of this one immutable file, whatever happens to its name.
    let reader = state.backend.open_file(&owner, &id).await?;
    let len = reader.len();
    let etag = format!("\"{}\"", reader.sha256().to_hex());
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };

    let mut resp = Response::new(Body::empty());
    let h = resp.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if text(header::IF_NONE_MATCH).is_some_and(|l| none_match(l, &etag)) {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        // No Content-Length, for HEAD as for GET: a body of no known size
        // keeps the router from adding `0` (RFC 9110 allows a 304 only the
        // length a 200 would have had), and a 304 has no body anyway.
        *resp.body_mut() = Body::from_stream(futures_util::stream::empty::<
            Result<axum::body::Bytes, std::io::Error>,
        >());
        return Ok(resp);
    }
    // `If-Range` names the one representation a range is good for; there
    // is no Last-Modified, so a date never matches.
    let range_applies = text(header::IF_RANGE).is_none_or(|v| v.trim() == etag);
    let selection = if range_applies {
        select(text(header::RANGE), len)
    } else {
        Selection::Whole
    };
    let (start, count) = match selection {
        Selection::Whole => (0, len),
        Selection::Part { start, end } => {
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            let range = format!("bytes {start}-{end}/{len}");
            if let Ok(v) = HeaderValue::from_str(&range) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            (start, end - start + 1)
        }
        Selection::Unsatisfiable => {
            let mut err = api.error(ApiError::bad(format!(
                "the Range {:?} has no byte in the file of {len} bytes",
                text(header::RANGE).unwrap_or_default()
            )));
            *err.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                err.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(err);
        }
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if method != Method::HEAD {
        tracing::info!(file_id, start, len = count, "download");
        *resp.body_mut() = match reader {
            Download::Local(r) => stream(r, start, count),
            Download::Object(r) => object_stream(r, start, count),
        };
    }
    Ok(resp)
}

/// `count` bytes of `reader` from `start`, as a body read one chunk at a
/// time on the blocking pool (so a slow client holds one chunk of memory and
/// no thread). A read that fails, or a file shorter than recorded, ends the
/// body early: the client sees fewer bytes than `Content-Length` said, never
/// other bytes.
fn stream(reader: FileReader, start: u64, count: u64) -> Body {
    let chunks = futures_util::stream::try_unfold(
        (reader, start, count, false),
        |(mut r, pos, left, positioned)| async move {
            if left == 0 {
                return Ok(None);
            }
            let n = left.min(CHUNK as u64) as usize;
            let read = tokio::task::spawn_blocking(move || {
                if !positioned {
                    r.seek(SeekFrom::Start(pos))?;
                }
                let mut buf = vec![0; n];
                r.read_exact(&mut buf)?;
                Ok::<_, io::Error>((r, buf))
            })
            .await
            .map_err(io::Error::other)
            .and_then(|r| r);
            match read {
                Ok((r, buf)) => Ok(Some((
                    Bytes::from(buf),
                    (r, pos + n as u64, left - n as u64, true),
                ))),
                Err(e) => {
                    tracing::warn!(error = %e, "download cut short: the file could not be read");
                    Err(e)
                }
            }
        },
    );
    Body::from_stream(chunks)
}

/// `count` bytes of an object from `start`, streamed from the store as it
/// answers. A store that fails mid-way ends the body early, as [`stream`]
/// does.
fn object_stream(reader: partseal_cluster::ObjectReader, start: u64, count: u64) -> Body {
    let chunks = futures_util::stream::once(async move { reader.range(start, count).await })
        .map_err(|e| {
            tracing::warn!(error = %e, "download failed: the object store did not answer");
            io::Error::other(e.to_string())
        })
        .map_ok(|body| {
            body.map_err(|e| {
                tracing::warn!(error = %e, "download cut short: the object could not be read");
                io::Error::other(e.to_string())
            })
        })
        .try_flatten();
    Body::from_stream(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Selection::*;

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        let cases: &[(&str, u64, Selection)] = &[
            ("bytes=0-0", 10, Part { start: 0, end: 0 }),
            ("bytes=0-", 10, Part { start: 0, end: 9 }),
            ("bytes=3-5", 10, Part { start: 3, end: 5 }),
            ("bytes=9-9", 10, Part { start: 9, end: 9 }),
            ("bytes=5-100", 10, Part { start: 5, end: 9 }),
            ("bytes=-1", 10, Part { start: 9, end: 9 }),
            ("bytes=-4", 10, Part { start: 6, end: 9 }),
            ("bytes=-100", 10, Part { start: 0, end: 9 }),
            ("BYTES = 2-3", 10, Part { start: 2, end: 3 }),
            ("bytes=10-", 10, Unsatisfiable),
            ("bytes=10-20", 10, Unsatisfiable),
            ("bytes=-0", 10, Unsatisfiable),
            ("bytes=0-", 0, Unsatisfiable),
            ("bytes=-5", 0, Unsatisfiable),
            ("bytes=5-3", 10, Whole),
            ("bytes=0-1,4-5", 10, Whole),
            ("bytes=x-3", 10, Whole),
            ("bytes=+1-3", 10, Whole),
            ("bytes=-", 10, Whole),
            ("bytes=", 10, Whole),
            ("items=0-1", 10, Whole),
            ("0-1", 10, Whole),
            // Numbers past u64 are numbers still: beyond every end.
            ("bytes=99999999999999999999-", 10, Unsatisfiable),
            (
                "bytes=0-99999999999999999999",
                10,
                Part { start: 0, end: 9 },
            ),
            ("bytes=-99999999999999999999", 10, Part { start: 0, end: 9 }),
        ];
        for (h, len, want) in cases {
            assert_eq!(select(Some(h), *len), *want, "{h} of {len}");
        }
        assert_eq!(select(None, 10), Whole);
    }

    #[test]
    fn if_none_match_compares_weakly_and_takes_star() {
        let e = "\"abc\"";
        for (list, want) in [
            ("\"abc\"", true),
            ("W/\"abc\"", true),
            ("\"x\", \"abc\"", true),
            ("*", true),
            ("\"abd\"", false),
            ("abc", false),
            ("", false),
        ] {
            assert_eq!(none_match(list, e), want, "{list}");
        }
    }
}
