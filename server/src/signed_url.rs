//! What upload and download URLs share: the signed query (`o`, `e`, `s`),
//! lossy decoding of path segments that are not UTF-8, and the answer to an
//! `{api}` the server does not speak.

use axum::Json;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use serde_json::json;

use crate::auth::AuthError;
use crate::error::{ApiError, mss};

/// The query of a signed URL: owner (hex), expiry (Unix seconds), signature.
#[derive(Debug, Deserialize)]
pub(crate) struct Signed {
    o: Option<String>,
    e: Option<i64>,
    s: Option<String>,
}

/// A signed query taken apart: the owner, the expiry and the signature.
pub(crate) struct SignedParts {
    pub(crate) owner: String,
    pub(crate) expires: i64,
    pub(crate) sig: String,
}

impl Signed {
    /// The parts of a query that has all three, with an owner that decodes;
    /// `bad` otherwise (also for no query at all).
    pub(crate) fn parts(signed: Option<Signed>, bad: AuthError) -> Result<SignedParts, ApiError> {
        let Some(Signed {
            o: Some(owner_hex),
            e: Some(expires),
            s: Some(sig),
        }) = signed
        else {
            return Err(bad.into());
        };
        match hex::decode(&owner_hex)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        {
            Some(owner) => Ok(SignedParts {
                owner,
                expires,
                sig,
            }),
            None => Err(bad.into()),
        }
    }
}

/// The `N` path segments after `prefix` of a path whose percent-decoding is
/// not UTF-8, decoded lossily (U+FFFD for bad bytes), so that such a URL is
/// judged like any other malformed one. `None` if the path does not have
/// the route's shape.
pub(crate) fn lossy_segments<const N: usize>(uri: &Uri, prefix: &str) -> Option<[String; N]> {
    let segments: Vec<String> = uri
        .path()
        .strip_prefix(prefix)?
        .split('/')
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    segments.try_into().ok()
}

/// The answer to a signed URL whose `{api}` is neither `koodrive` nor
/// `metastudio`: 404 `MSS.10001004`, the one 404 answer the document gives
/// for these URLs (there is no dialect to answer in). `what` is "upload" or
/// "download".
pub(crate) fn unknown_api(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "error_code": mss::NOT_FOUND,
            "error_msg": format!("no such {what} URL: the API must be koodrive or metastudio"),
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderValue, header};

    use super::*;

    #[test]
    fn undecodable_segments_are_decoded_lossily() {
        let uri: Uri = "/upload/%6Boodrive/%FF/1%2F?o=00".parse().unwrap();
        assert_eq!(
            lossy_segments::<3>(&uri, "/upload/"),
            Some(["koodrive".into(), "\u{FFFD}".into(), "1/".into()])
        );
        for bad in ["/upload/a/b", "/upload/a/b/c/d", "/other/a/b/c"] {
            assert_eq!(
                lossy_segments::<3>(&bad.parse().unwrap(), "/upload/"),
                None,
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn unknown_api_is_a_documented_json_404() {
        let resp = unknown_api("upload");
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            HeaderValue::from_static("application/json")
        );
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error_code"], mss::NOT_FOUND);
        assert!(v["error_msg"].is_string());
    }
}
