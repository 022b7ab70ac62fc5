//! MetaStudio AK/SK request signatures (`SDK-HMAC-SHA256`), in
//! `partseal_server::auth`.
//!
//! Laws:
//! - `parse_sdk_authorization` never panics; what it accepts obeys the
//!   documented shape and prints back to a header that parses the same;
//! - `canonical_request` never panics on any method, path, query, headers
//!   and signed-header list; its URI and query lines use only unreserved
//!   characters and escapes, and rebuilding from them gives them back
//!   (canonical forms are fixed points);
//! - for any request made of arbitrary method, path segments, query pairs,
//!   header values and body, `sdk_authorization_header` followed by
//!   `verify_sdk_request` with the same secret at the signed `X-Sdk-Date`
//!   accepts (unless the access key or header list is outside the parser's
//!   documented bounds, which are then refused as malformed); one changed
//!   body byte is refused unless the payload was signed as
//!   `UNSIGNED-PAYLOAD`; another secret is refused; APIG's date window is
//!   15 minutes either way, inclusive.
#![no_main]

use arbitrary::Arbitrary;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use partseal_server::auth::{
    AuthError, DateWindow, MAX_ACCESS_KEY_LEN, MAX_AUTHORIZATION_LEN, MAX_SIGNED_HEADER_NAME_LEN,
    MAX_SIGNED_HEADERS, SDK_ALGORITHM, UNSIGNED_PAYLOAD, canonical_request, format_compact_date,
    parse_sdk_authorization, sdk_authorization_header, verify_sdk_request,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

#[derive(Arbitrary, Debug)]
enum Input {
    Parse(String),
    Canonical(Canonical),
    Sign(Box<Signed>),
}

#[derive(Arbitrary, Debug)]
struct Canonical {
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, Vec<u8>)>,
    signed: Vec<String>,
    payload: String,
}

#[derive(Arbitrary, Debug)]
enum Method {
    Get,
    Post,
    Put,
    Delete,
    Other(String),
}

#[derive(Arbitrary, Debug)]
struct Segment {
    text: String,
    /// Percent-encode it on the request line (as clients do), or send raw.
    encode: bool,
}

#[derive(Arbitrary, Debug)]
enum ContentType {
    None,
    Json,
    JsonCharset,
    OctetStream,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum PayloadHeader {
    None,
    Unsigned,
    Lower,
    Upper,
    Wrong([u8; 32]),
    Garbage(String),
}

#[derive(Arbitrary, Debug)]
struct Signed {
    access_key: String,
    secret_key: String,
    method: Method,
    segments: Vec<Segment>,
    trailing_slash: bool,
    query: Option<Vec<(String, String, bool)>>,
    host: String,
    date: u64,
    content_type: ContentType,
    payload_header: PayloadHeader,
    extra: Vec<(String, Vec<u8>)>,
    flip_at: u16,
    flip_mask: u8,
    /// Last, so that it takes the rest of the input.
    body: Vec<u8>,
}

/// Percent-encodes everything but unreserved characters.
fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn check_parse(s: &str) {
    let Ok(a) = parse_sdk_authorization(s) else {
        return;
    };
    assert!(s.len() <= MAX_AUTHORIZATION_LEN);
    assert!(
        s.trim()
            .get(..SDK_ALGORITHM.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(SDK_ALGORITHM))
    );
    assert!(!a.access_key.is_empty() && a.access_key.len() <= MAX_ACCESS_KEY_LEN);
    assert!(
        a.access_key
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b',')
    );
    assert!(!a.signed_headers.is_empty() && a.signed_headers.len() <= MAX_SIGNED_HEADERS);
    for (i, h) in a.signed_headers.iter().enumerate() {
        assert!(!h.is_empty() && h.len() <= MAX_SIGNED_HEADER_NAME_LEN);
        assert!(
            HeaderName::from_bytes(h.as_bytes()).is_ok_and(|n| n.as_str() == h),
            "{h:?}"
        );
        assert!(!a.signed_headers[..i].contains(h), "repeated {h:?}");
    }
    // Printed in the SDK's own form, it parses to the same thing.
    let printed = format!(
        "{SDK_ALGORITHM} Access={}, SignedHeaders={}, Signature={}",
        a.access_key,
        a.signed_headers.join(";"),
        hex::encode(a.signature)
    );
    assert_eq!(parse_sdk_authorization(&printed).as_ref(), Ok(&a));
}

fn is_unreserved(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~".contains(c)
}

/// Checks that `s` is made of unreserved characters, `extra` and well-formed
/// upper-case `%XX` escapes.
fn assert_encoded(s: &str, extra: &str) {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = char::from(b[i]);
        if c == '%' {
            assert!(
                i + 2 < b.len()
                    && matches!(b[i + 1], b'0'..=b'9' | b'A'..=b'F')
                    && matches!(b[i + 2], b'0'..=b'9' | b'A'..=b'F'),
                "bad escape in {s:?}"
            );
            i += 3;
        } else {
            assert!(is_unreserved(c) || extra.contains(c), "{c:?} in {s:?}");
            i += 1;
        }
    }
}

fn check_canonical(c: &Canonical) {
    let mut headers = HeaderMap::new();
    for (k, v) in c.headers.iter().take(16) {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_bytes(v),
        ) {
            headers.append(k, v);
        }
    }
    let signed: Vec<String> = c.signed.iter().take(16).cloned().collect();
    let res = canonical_request(
        &c.method,
        &c.path,
        c.query.as_deref(),
        &headers,
        &signed,
        &c.payload,
    );
    let out = match res {
        Ok(out) => out,
        Err(AuthError::MissingSignedHeader(h)) => {
            assert!(signed.contains(&h) && headers.get(h.as_str()).is_none());
            return;
        }
        Err(AuthError::InvalidHeader(h)) => {
            assert!(signed.contains(&h));
            let n = headers.get_all(h.as_str()).iter().count();
            let utf8 = headers
                .get(h.as_str())
                .is_some_and(|v| std::str::from_utf8(v.as_bytes()).is_ok());
            assert!(n > 1 || !utf8, "{h:?} refused but is single and UTF-8");
            return;
        }
        Err(e) => panic!("unexpected error {e:?}"),
    };
    let method = c.method.to_ascii_uppercase();
    let rest = out
        .strip_prefix(&method)
        .and_then(|r| r.strip_prefix('\n'))
        .expect("starts with the method");
    let mut lines = rest.splitn(3, '\n');
    let uri = lines.next().expect("uri line");
    let query = lines.next().expect("query line");
    let tail = lines.next().expect("headers");
    assert!(uri.ends_with('/'), "{uri:?}");
    assert_encoded(uri, "/");
    assert_encoded(query, "=&");
    let suffix = format!("\n{}\n{}", signed.join(";"), c.payload);
    assert!(tail.ends_with(&suffix), "{tail:?}");

    // Canonical forms are fixed points.
    let again = canonical_request(&c.method, uri, Some(query), &headers, &signed, &c.payload)
        .expect("rebuilding from the canonical forms");
    assert_eq!(again, out);
}

fn check_signed(s: &Signed) {
    let method = match &s.method {
        Method::Get => "GET".to_owned(),
        Method::Post => "POST".to_owned(),
        Method::Put => "PUT".to_owned(),
        Method::Delete => "DELETE".to_owned(),
        Method::Other(m) => m.clone(),
    };
    let mut path = String::new();
    for seg in s.segments.iter().take(8) {
        path.push('/');
        if seg.encode {
            path.push_str(&pct(&seg.text));
        } else {
            path.push_str(&seg.text);
        }
    }
    if s.trailing_slash || path.is_empty() {
        path.push('/');
    }
    let query = s.query.as_ref().map(|pairs| {
        pairs
            .iter()
            .take(8)
            .map(|(k, v, enc)| {
                if *enc {
                    format!("{}={}", pct(k), pct(v))
                } else {
                    format!("{k}={v}")
                }
            })
            .collect::<Vec<_>>()
            .join("&")
    });

    // 1970 .. 9999 less a margin, so that date ± 16 minutes stays valid.
    let secs = (s.date % 253_402_000_000) as i64;
    let when = OffsetDateTime::from_unix_timestamp(secs).expect("in range");
    let date = format_compact_date(when);

    let mut headers = HeaderMap::new();
    let host = HeaderValue::from_str(&s.host).unwrap_or(HeaderValue::from_static("h"));
    headers.insert("host", host);
    headers.insert("x-sdk-date", HeaderValue::from_str(&date).expect("date"));
    let ctype = match &s.content_type {
        ContentType::None => None,
        ContentType::Json => Some("application/json".to_owned()),
        ContentType::JsonCharset => Some("application/json;charset=UTF-8".to_owned()),
        ContentType::OctetStream => Some("application/octet-stream".to_owned()),
        ContentType::Other(o) => Some(o.clone()),
    };
    if let Some(v) = ctype.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert("content-type", v);
    }
    let actual = hex::encode(Sha256::digest(&s.body));
    let marker = match &s.payload_header {
        PayloadHeader::None => None,
        PayloadHeader::Unsigned => Some(UNSIGNED_PAYLOAD.to_owned()),
        PayloadHeader::Lower => Some(actual.clone()),
        PayloadHeader::Upper => Some(actual.to_ascii_uppercase()),
        PayloadHeader::Wrong(d) => Some(hex::encode(d)),
        PayloadHeader::Garbage(g) => Some(g.clone()),
    }
    .and_then(|m| HeaderValue::from_str(&m).ok());
    // How the marker reads once trimmed: the rules of API.md section 3.
    #[derive(PartialEq)]
    enum Marker {
        Absent,
        Unsigned,
        Digest(String),
        Invalid,
    }
    let marker_kind = match &marker {
        None => Marker::Absent,
        Some(v) => {
            let t = std::str::from_utf8(v.as_bytes())
                .expect("made from a str")
                .trim();
            if t == UNSIGNED_PAYLOAD {
                Marker::Unsigned
            } else if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
                Marker::Digest(t.to_ascii_lowercase())
            } else {
                Marker::Invalid
            }
        }
    };
    if let Some(m) = marker {
        headers.insert("x-sdk-content-sha256", m);
    }
    let reserved = [
        "authorization",
        "host",
        "x-sdk-date",
        "x-sdk-content-sha256",
        "content-type",
    ];
    for (k, v) in s.extra.iter().take(8) {
        let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_bytes(v),
        ) else {
            continue;
        };
        if !reserved.contains(&k.as_str()) {
            headers.append(k, v);
        }
    }

    // When signing must work: every header that gets signed (names without
    // `_`) is single and UTF-8, and the marker is usable for this body.
    let headers_ok = headers
        .keys()
        .filter(|k| !k.as_str().contains('_'))
        .all(|k| {
            let mut all = headers.get_all(k).iter();
            let one = all.next().expect("present");
            all.next().is_none() && std::str::from_utf8(one.as_bytes()).is_ok()
        });
    let marker_ok = s.body.is_empty()
        || match &marker_kind {
            Marker::Absent | Marker::Unsigned => true,
            Marker::Digest(d) => *d == actual,
            Marker::Invalid => false,
        };

    let signed = sdk_authorization_header(
        &s.access_key,
        &s.secret_key,
        &method,
        &path,
        query.as_deref(),
        &headers,
        &s.body,
    );
    let auth = match signed {
        Ok(a) => {
            assert!(headers_ok && marker_ok, "signed what should not sign");
            a
        }
        Err(e) => {
            assert!(!(headers_ok && marker_ok), "could not sign: {e:?}");
            assert!(
                matches!(
                    e,
                    AuthError::InvalidHeader(_) | AuthError::PayloadHashMismatch
                ),
                "{e:?}"
            );
            return;
        }
    };
    let Ok(auth_value) = HeaderValue::from_bytes(auth.as_bytes()) else {
        // Only control characters in the access key can make it so.
        assert!(s.access_key.bytes().any(|b| b.is_ascii_control()));
        return;
    };
    headers.insert("authorization", auth_value);

    let signed_names = headers_signed_count(&headers);
    // The parser trims around each field value, so that is the key it
    // looks up.
    let ak = s.access_key.trim().to_owned();
    let parsable = !ak.is_empty()
        && ak.len() <= MAX_ACCESS_KEY_LEN
        && ak.bytes().all(|b| b.is_ascii_graphic() && b != b',')
        && auth.len() <= MAX_AUTHORIZATION_LEN
        && signed_names.0 <= MAX_SIGNED_HEADERS
        && signed_names.1 <= MAX_SIGNED_HEADER_NAME_LEN;

    let verify = |headers: &HeaderMap, body: &[u8], secret: &str, now: OffsetDateTime| {
        verify_sdk_request(
            &method,
            &path,
            query.as_deref(),
            headers,
            body,
            |k| (k == ak).then(|| secret.to_owned()),
            &DateWindow::apig(now),
        )
    };
    let res = verify(&headers, &s.body, &s.secret_key, when);
    if !parsable {
        assert!(
            matches!(res, Err(AuthError::MalformedSdkAuthorization(_))),
            "{res:?}"
        );
        return;
    }
    assert_eq!(
        res,
        Ok(ak.clone()),
        "a correctly signed request was refused"
    );

    // APIG's window: 15 minutes either way, inclusive.
    let minutes = |m: i64| time::Duration::minutes(m);
    let sec = time::Duration::seconds(1);
    assert_eq!(
        verify(&headers, &s.body, &s.secret_key, when + minutes(15)),
        Ok(ak.clone())
    );
    assert_eq!(
        verify(&headers, &s.body, &s.secret_key, when - minutes(15)),
        Ok(ak.clone())
    );
    assert_eq!(
        verify(&headers, &s.body, &s.secret_key, when + minutes(15) + sec),
        Err(AuthError::DateTooOld { max_age_secs: 900 })
    );
    assert_eq!(
        verify(&headers, &s.body, &s.secret_key, when - minutes(15) - sec),
        Err(AuthError::DateInFuture {
            max_ahead_secs: 900
        })
    );

    // Another secret.
    let other = format!("{}x", s.secret_key);
    assert_eq!(
        verify(&headers, &s.body, &other, when),
        Err(AuthError::BadSignature)
    );

    // One body byte changed (or one added to an empty body).
    let mut body = s.body.clone();
    if body.is_empty() {
        body.push(b'{');
    } else {
        let i = usize::from(s.flip_at) % body.len();
        body[i] ^= s.flip_mask.max(1);
    }
    let want = match &marker_kind {
        Marker::Unsigned if !s.body.is_empty() => Ok(ak.clone()),
        Marker::Unsigned | Marker::Absent => Err(AuthError::BadSignature),
        Marker::Digest(_) => Err(AuthError::PayloadHashMismatch),
        Marker::Invalid => Err(AuthError::InvalidHeader("x-sdk-content-sha256".to_owned())),
    };
    assert_eq!(
        verify(&headers, &body, &s.secret_key, when),
        want,
        "body changed"
    );
}

/// How many headers the signer signs, and the longest such name.
fn headers_signed_count(h: &HeaderMap) -> (usize, usize) {
    let names: Vec<&str> = h
        .keys()
        .map(HeaderName::as_str)
        .filter(|k| !k.contains('_') && *k != "authorization")
        .collect();
    (
        names.len(),
        names.iter().map(|n| n.len()).max().unwrap_or(0),
    )
}

fuzz_target!(|input: Input| {
    match input {
        Input::Parse(s) => check_parse(&s),
        Input::Canonical(c) => check_canonical(&c),
        Input::Sign(s) => check_signed(&s),
    }
});
