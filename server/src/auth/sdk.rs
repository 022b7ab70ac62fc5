//! MetaStudio's scheme: `SDK-HMAC-SHA256` request signatures.
//!
//! The check reproduces `SDK-HMAC-SHA256` exactly as the official Huawei
//! Cloud Python SDK (`huaweicloudsdkcore` 3.1.219, `signer/signer.py`) signs;
//! `../shared/API.md` section 3 walks through it. The unit tests replay
//! requests that the SDK itself built, signed and sent
//! (`tests/sdk/sign_vectors.json`, made by `tests/sdk/sign_vectors.py`), so the
//! check is held to code no one here wrote.

use axum::http::HeaderMap;
use hmac::Mac;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};

use super::{AuthError, DateWindow, hmac_with, parse_compact_date};

/// The only AK/SK algorithm accepted (the SDK's default).
pub const SDK_ALGORITHM: &str = "SDK-HMAC-SHA256";

/// Payload hash of an empty body: hex SHA-256 of no bytes.
pub const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The `X-Sdk-Content-Sha256` value the SDK sends for non-JSON bodies.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Longest `Authorization` value looked at; the SDK's are about 200 bytes.
pub const MAX_AUTHORIZATION_LEN: usize = 4096;

/// Longest access key accepted.
pub const MAX_ACCESS_KEY_LEN: usize = 128;

/// Most names accepted in `SignedHeaders` (the SDK signs five to eight).
pub const MAX_SIGNED_HEADERS: usize = 64;

/// Longest header name accepted in `SignedHeaders`.
pub const MAX_SIGNED_HEADER_NAME_LEN: usize = 128;

/// Checks that the `{project_id}` of the path is the caller's project, and
/// that `X-Project-Id`, when sent, names it too.
pub fn check_project(
    path_project: &str,
    credential_project: &str,
    header_project: Option<&str>,
) -> Result<(), AuthError> {
    if path_project != credential_project {
        return Err(AuthError::ProjectMismatch);
    }
    match header_project {
        Some(h) if h.trim() != path_project => Err(AuthError::ProjectMismatch),
        _ => Ok(()),
    }
}

/// The parts of an `SDK-HMAC-SHA256` `Authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub struct SdkAuthorization {
    /// `Access=`: the access key (AK).
    pub access_key: String,
    /// `SignedHeaders=`: lower-case header names, in the order signed.
    pub signed_headers: Vec<String>,
    /// `Signature=`: the HMAC-SHA256, decoded from hex.
    pub signature: [u8; 32],
}

impl std::fmt::Debug for SdkAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SdkAuthorization")
            .field("access_key", &self.access_key)
            .field("signed_headers", &self.signed_headers)
            .finish_non_exhaustive()
    }
}

/// Parses `SDK-HMAC-SHA256 Access=<AK>, SignedHeaders=<h1;h2>, Signature=<64
/// hex>`. Spaces around the separators are tolerated and the three fields may
/// come in any order; each must appear once. Signed header names must be
/// lower-case HTTP tokens, without repeats.
pub fn parse_sdk_authorization(value: &str) -> Result<SdkAuthorization, AuthError> {
    use AuthError::MalformedSdkAuthorization as Bad;
    if value.len() > MAX_AUTHORIZATION_LEN {
        return Err(Bad("too long"));
    }
    let value = value.trim();
    let (algorithm, params) = match value.find([' ', '\t']) {
        Some(i) => (&value[..i], &value[i..]),
        None => (value, ""),
    };
    if algorithm.is_empty() {
        return Err(Bad("empty"));
    }
    if !algorithm.eq_ignore_ascii_case(SDK_ALGORITHM) {
        let shown: String = algorithm.chars().take(40).collect();
        return Err(AuthError::UnsupportedAlgorithm(shown));
    }
    let (mut access, mut signed, mut signature) = (None, None, None);
    for field in params.split(',') {
        let field = field.trim();
        if field.is_empty() {
            return Err(Bad("empty field"));
        }
        let Some((key, val)) = field.split_once('=') else {
            return Err(Bad("a field has no `=`"));
        };
        let (key, val) = (key.trim(), val.trim());
        let slot = if key.eq_ignore_ascii_case("Access") {
            &mut access
        } else if key.eq_ignore_ascii_case("SignedHeaders") {
            &mut signed
        } else if key.eq_ignore_ascii_case("Signature") {
            &mut signature
        } else {
            return Err(Bad(
                "unknown field (expected Access, SignedHeaders, Signature)",
            ));
        };
        if slot.replace(val).is_some() {
            return Err(Bad("a field is repeated"));
        }
    }
    let access = access.ok_or(Bad("no Access field"))?;
    let signed = signed.ok_or(Bad("no SignedHeaders field"))?;
    let signature = signature.ok_or(Bad("no Signature field"))?;

    if access.is_empty()
        || access.len() > MAX_ACCESS_KEY_LEN
        || !access.bytes().all(|c| c.is_ascii_graphic())
    {
        return Err(Bad("Access must be 1 to 128 visible ASCII characters"));
    }

    let mut signed_headers: Vec<String> = Vec::new();
    for name in signed.split(';') {
        let name = name.trim();
        if name.is_empty() || name.len() > MAX_SIGNED_HEADER_NAME_LEN {
            return Err(Bad("SignedHeaders has an empty or overlong name"));
        }
        if !name.bytes().all(is_lower_tchar) {
            return Err(Bad("SignedHeaders names must be lower-case header names"));
        }
        if signed_headers.iter().any(|h| h == name) {
            return Err(Bad("SignedHeaders repeats a name"));
        }
        if signed_headers.len() == MAX_SIGNED_HEADERS {
            return Err(Bad("SignedHeaders lists too many names"));
        }
        signed_headers.push(name.to_owned());
    }

    let mut sig = [0u8; 32];
    if signature.len() != 64 || hex::decode_to_slice(signature, &mut sig).is_err() {
        return Err(Bad("Signature must be 64 hex digits"));
    }
    Ok(SdkAuthorization {
        access_key: access.to_owned(),
        signed_headers,
        signature: sig,
    })
}

/// An RFC 7230 token character, upper-case letters excluded.
fn is_lower_tchar(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// What Python's `urllib.parse.quote(s, safe='~')` leaves alone: RFC 3986
/// unreserved characters.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes as the SDK's `_url_encode` does (UTF-8, upper-case hex).
fn encode(s: &str) -> String {
    utf8_percent_encode(s, RFC3986).to_string()
}

/// Percent-decodes as Python's `unquote` does: bad escapes stay as they are,
/// invalid UTF-8 becomes U+FFFD. A `+` stays a `+`.
fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// The canonical URI: the path decoded once, split on `/`, each segment
/// encoded again, and a `/` added at the end if there is none. So a `%2F`
/// inside a segment becomes a plain `/` here, as in the SDK.
pub(super) fn canonical_uri(raw_path: &str) -> String {
    let decoded = decode(raw_path);
    let mut out = decoded.split('/').map(encode).collect::<Vec<_>>().join("/");
    if !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// The canonical query: every `key=value` pair decoded, sorted by decoded key
/// then value (as the SDK sorts its parameters before encoding them),
/// encoded, joined with `&`. A pair without `=` counts as an empty value;
/// empty pairs are skipped.
pub(super) fn canonical_query(raw_query: Option<&str>) -> String {
    let Some(q) = raw_query else {
        return String::new();
    };
    let mut pairs: Vec<(String, String)> = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The one value of a header, as trimmed UTF-8 text. `Ok(None)` if absent; an
/// error if repeated or not UTF-8.
pub(crate) fn single_header<'a>(
    headers: &'a HeaderMap,
    name: &str,
) -> Result<Option<&'a str>, AuthError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthError::InvalidHeader(name.to_owned()));
    }
    std::str::from_utf8(first.as_bytes())
        .map(|v| Some(v.trim()))
        .map_err(|_| AuthError::InvalidHeader(name.to_owned()))
}

/// Builds the canonical request (API.md 3.1 step 5) from what was received:
///
/// ```text
/// METHOD\nCANONICAL_URI\nCANONICAL_QUERY\nname:value\n...\n\nsigned;headers\nPAYLOAD_HASH
/// ```
///
/// `raw_path` and `raw_query` are exactly as on the request line (still
/// percent-encoded; the query without `?`). Only the `signed_headers` are
/// used, with trimmed values; one that is absent from `headers` is an error,
/// and so is one that is repeated or not UTF-8.
pub fn canonical_request(
    method: &str,
    raw_path: &str,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    signed_headers: &[String],
    payload_hash: &str,
) -> Result<String, AuthError> {
    let mut out = String::with_capacity(512);
    out.push_str(&method.to_ascii_uppercase());
    out.push('\n');
    out.push_str(&canonical_uri(raw_path));
    out.push('\n');
    out.push_str(&canonical_query(raw_query));
    out.push('\n');
    for name in signed_headers {
        let value = single_header(headers, name)?
            .ok_or_else(|| AuthError::MissingSignedHeader(name.clone()))?;
        out.push_str(name);
        out.push(':');
        out.push_str(value);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(payload_hash);
    Ok(out)
}

/// `SDK-HMAC-SHA256\n<date>\n<hex sha256 of the canonical request>`.
pub fn string_to_sign(date: &str, canonical: &str) -> String {
    format!(
        "{SDK_ALGORITHM}\n{date}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    )
}

/// `HMAC-SHA256(key = SK as UTF-8, string_to_sign)`: the SK is used as it is,
/// with no key derivation.
pub fn sdk_signature(secret_key: &str, string_to_sign: &str) -> [u8; 32] {
    let mut mac = hmac_with(secret_key.as_bytes());
    mac.update(string_to_sign.as_bytes());
    mac.finalize().into_bytes().into()
}

/// The payload hash the client signed: the empty-body constant for an empty
/// body, else `X-Sdk-Content-Sha256` when sent (`UNSIGNED-PAYLOAD`, or a hex
/// digest that must then match the body), else the hex SHA-256 of the body.
pub(super) fn payload_hash(headers: &HeaderMap, body: &[u8]) -> Result<String, AuthError> {
    if body.is_empty() {
        return Ok(EMPTY_PAYLOAD_SHA256.to_owned());
    }
    let actual = hex::encode(Sha256::digest(body));
    match single_header(headers, "x-sdk-content-sha256")? {
        None => Ok(actual),
        Some(UNSIGNED_PAYLOAD) => Ok(UNSIGNED_PAYLOAD.to_owned()),
        Some(v) if v.len() == 64 && v.bytes().all(|c| c.is_ascii_hexdigit()) => {
            if v.eq_ignore_ascii_case(&actual) {
                Ok(v.to_owned())
            } else {
                Err(AuthError::PayloadHashMismatch)
            }
        }
        Some(_) => Err(AuthError::InvalidHeader("x-sdk-content-sha256".to_owned())),
    }
}

/// Checks an AK/SK-signed request the way APIG does, returning the access key
/// on success.
///
/// `raw_path` and `raw_query` are the request line's, undecoded (use the
/// original URI, not one a nested router has stripped); `body` is the exact
/// bytes received, before any JSON parsing. `lookup_secret` maps an access key
/// to its secret key. Steps: parse `Authorization`; require `host` and
/// `x-sdk-date` among the signed headers; `X-Sdk-Date` inside `window` (the
/// server's configured one, not APIG's fixed 15 minutes); rebuild the
/// canonical request from the signed headers only; compare signatures in
/// constant time.
pub fn verify_sdk_request(
    method: &str,
    raw_path: &str,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    lookup_secret: impl Fn(&str) -> Option<String>,
    window: &DateWindow,
) -> Result<String, AuthError> {
    let auth = single_header(headers, "authorization")?
        .ok_or(AuthError::MissingHeader("Authorization"))?;
    let auth = parse_sdk_authorization(auth)?;
    for required in ["host", "x-sdk-date"] {
        if !auth.signed_headers.iter().any(|h| h == required) {
            return Err(AuthError::MalformedSdkAuthorization(
                "SignedHeaders must include host and x-sdk-date",
            ));
        }
    }
    let date = single_header(headers, "x-sdk-date")?.ok_or(AuthError::DateMissing)?;
    let t = parse_compact_date(date)?;
    window.check(t)?;

    let hash = payload_hash(headers, body)?;
    let canonical = canonical_request(
        method,
        raw_path,
        raw_query,
        headers,
        &auth.signed_headers,
        &hash,
    )?;
    let secret = lookup_secret(&auth.access_key).ok_or(AuthError::UnknownCredentials)?;
    let mut mac = hmac_with(secret.as_bytes());
    mac.update(string_to_sign(date, &canonical).as_bytes());
    mac.verify_slice(&auth.signature)
        .map_err(|_| AuthError::BadSignature)?;
    Ok(auth.access_key)
}

/// Signs a request as the SDK would and returns the `Authorization` value;
/// for Rust clients and tests. Like the SDK, it signs every header in
/// `headers` whose name has no `_`, so put there exactly what is to be signed:
/// at least `Host` and `X-Sdk-Date`, and `X-Sdk-Content-Sha256:
/// UNSIGNED-PAYLOAD` if the body is not to be hashed.
pub fn sdk_authorization_header(
    access_key: &str,
    secret_key: &str,
    method: &str,
    raw_path: &str,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, AuthError> {
    let mut signed_headers: Vec<String> = headers
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| !k.contains('_'))
        .collect();
    signed_headers.sort();
    let date = single_header(headers, "x-sdk-date")?.ok_or(AuthError::DateMissing)?;
    let hash = payload_hash(headers, body)?;
    let canonical =
        canonical_request(method, raw_path, raw_query, headers, &signed_headers, &hash)?;
    let sig = sdk_signature(secret_key, &string_to_sign(date, &canonical));
    Ok(format!(
        "{SDK_ALGORITHM} Access={access_key}, SignedHeaders={}, Signature={}",
        signed_headers.join(";"),
        hex::encode(sig)
    ))
}
