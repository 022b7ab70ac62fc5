//! Authentication, split by scheme: KooDrive Bearer tokens and `X-Date`
//! ([`bearer`]), MetaStudio AK/SK request signatures ([`sdk`]), and the
//! server's own signed upload and download URLs ([`url`]). What they share
//! lives here: the error type, constant-time comparison, and the keyed HMAC.
//!
//! Secrets (tokens, secret keys, URL keys) are compared in constant time and
//! never appear in an error message or a `Debug` output. Nothing here panics on
//! any input.

mod bearer;
mod sdk;
mod url;

#[cfg(test)]
mod tests;

use ctutils::CtEq;
use hmac::KeyInit;
use sha2::Sha256;

pub use bearer::{
    APIG_DATE_WINDOW, CLOCK_SKEW, DateWindow, bearer_token, format_compact_date, parse_compact_date,
};
pub(crate) use sdk::single_header;
pub use sdk::{
    EMPTY_PAYLOAD_SHA256, MAX_ACCESS_KEY_LEN, MAX_AUTHORIZATION_LEN, MAX_SIGNED_HEADER_NAME_LEN,
    MAX_SIGNED_HEADERS, SDK_ALGORITHM, SdkAuthorization, UNSIGNED_PAYLOAD, canonical_request,
    check_project, parse_sdk_authorization, sdk_authorization_header, sdk_signature,
    string_to_sign, verify_sdk_request,
};
pub use url::{DownloadGrant, UploadGrant, UrlSigner};

type HmacSha256 = hmac::Hmac<Sha256>;

/// Why a request or an upload URL was not accepted.
///
/// Messages name the header or rule that failed and never contain a token, a
/// secret key or a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A required header is absent.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// `Authorization` is not `Bearer <token>` / `Bearer+<token>`.
    #[error("malformed Authorization header: expected `Bearer <token>`")]
    MalformedAuthorization,
    /// An `SDK-HMAC-SHA256` `Authorization` header that does not parse.
    #[error("malformed Authorization header: {0}")]
    MalformedSdkAuthorization(&'static str),
    /// `Authorization` names a signing algorithm other than `SDK-HMAC-SHA256`.
    #[error("unsupported signing algorithm {0:?}: only SDK-HMAC-SHA256 is accepted")]
    UnsupportedAlgorithm(String),
    /// No user has this token or access key, or the token does not belong to
    /// the claimed user.
    #[error("unknown access key or token")]
    UnknownCredentials,
    /// A header listed in `SignedHeaders` is not in the request.
    #[error("signed header {0:?} is absent from the request")]
    MissingSignedHeader(String),
    /// A header that takes part in authentication is repeated or not text.
    #[error("header {0:?} is repeated or is not valid UTF-8")]
    InvalidHeader(String),
    /// The request signature does not match.
    #[error("the request signature does not match")]
    BadSignature,
    /// `X-Sdk-Content-Sha256` gives a digest that the body does not have.
    #[error("the body does not match X-Sdk-Content-Sha256")]
    PayloadHashMismatch,
    /// The date header (`X-Date` or `X-Sdk-Date`) is absent.
    #[error("missing date header: X-Date for the KooDrive API, X-Sdk-Date for MetaStudio")]
    DateMissing,
    /// The date header is not `yyyyMMdd'T'HHmmss'Z'` or not a real UTC time.
    #[error("malformed date header: expected yyyyMMdd'T'HHmmss'Z' in UTC, e.g. 20251103T070140Z")]
    DateMalformed,
    /// The date header is older than the configured window allows.
    #[error(
        "the request date is too old: more than {max_age_secs} seconds before the server's clock"
    )]
    DateTooOld {
        /// The window's age bound, in seconds.
        max_age_secs: u64,
    },
    /// The date header is later than the server's clock allows.
    #[error(
        "the request date is in the future: more than {max_ahead_secs} seconds after the server's clock"
    )]
    DateInFuture {
        /// How far ahead a date may be, in seconds.
        max_ahead_secs: u64,
    },
    /// The project in the path, the credentials and `X-Project-Id` differ.
    #[error("the project id does not match the credentials")]
    ProjectMismatch,
    /// An upload URL lacks its signature fields or they do not parse.
    #[error("the upload URL is malformed or incomplete")]
    BadUploadUrl,
    /// An upload URL whose signature holds but whose time is up.
    #[error("the upload URL has expired")]
    UploadUrlExpired,
    /// An upload URL whose signature does not hold for this API, file, part,
    /// owner and expiry.
    #[error("the upload URL signature is not valid for this file and part")]
    UploadUrlForged,
    /// A download URL lacks its signature fields or they do not parse.
    #[error("the download URL is malformed or incomplete")]
    BadDownloadUrl,
    /// A download URL whose signature holds but whose time is up.
    #[error("the download URL has expired; ask for the file's details again for a fresh one")]
    DownloadUrlExpired,
    /// A download URL whose signature does not hold for this API, file,
    /// owner and expiry (an upload URL's signature never does).
    #[error("the download URL signature is not valid for this file")]
    DownloadUrlForged,
}

/// Compares two byte strings in constant time (for equal lengths; the length
/// itself is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).to_bool()
}

/// A keyed HMAC-SHA256. HMAC takes keys of any length (longer ones are hashed
/// first), so `new_from_slice` cannot fail for it, whatever the key.
pub(crate) fn hmac_with(key: &[u8]) -> HmacSha256 {
    <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length")
}
