//! Unit tests of every scheme, including replays of requests the official
//! SDK signed.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::macros::datetime;

use super::sdk::{canonical_query, canonical_uri, payload_hash};
use super::*;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).expect("test header name"),
            HeaderValue::from_bytes(v.as_bytes()).expect("test header value"),
        );
    }
    h
}

// ------------------------------------------------------------ ct_eq ---

#[test]
fn ct_eq_compares_content_and_length() {
    assert!(ct_eq(b"", b""));
    assert!(ct_eq(b"abc", b"abc"));
    assert!(!ct_eq(b"abc", b"abd"));
    assert!(!ct_eq(b"abc", b"ab"));
    assert!(!ct_eq(b"", b"a"));
}

// ------------------------------------------------------ bearer_token ---

#[test]
fn bearer_accepts_space_and_plus_forms_in_any_case() {
    assert_eq!(bearer_token("Bearer abc.def"), Some("abc.def"));
    assert_eq!(bearer_token("Bearer+10f88abc"), Some("10f88abc"));
    assert_eq!(bearer_token("bearer abc"), Some("abc"));
    assert_eq!(bearer_token("BEARER+abc"), Some("abc"));
    assert_eq!(bearer_token("  Bearer   abc  "), Some("abc"));
    assert_eq!(bearer_token("Bearer\tabc"), Some("abc"));
}

#[test]
fn bearer_rejects_other_schemes_and_empty_or_spaced_tokens() {
    for bad in [
        "",
        "Bearer",
        "Bearer ",
        "Bearer+",
        "Bearer+ ",
        "Bearerabc",
        "Basic abc",
        "Token abc",
        "Bearer a b",
        "Bearer+a b",
        "Beare",
        "Beäre abc",
        "SDK-HMAC-SHA256 Access=x",
    ] {
        assert_eq!(bearer_token(bad), None, "{bad:?}");
    }
}

// ----------------------------------------------------------- dates ---

#[test]
fn compact_date_parses_utc() {
    assert_eq!(
        parse_compact_date("20251103T070140Z"),
        Ok(datetime!(2025-11-03 07:01:40 UTC))
    );
    assert_eq!(
        parse_compact_date("20240229T235959Z"),
        Ok(datetime!(2024-02-29 23:59:59 UTC))
    );
    let t = datetime!(2026-01-02 03:04:05 UTC);
    assert_eq!(format_compact_date(t), "20260102T030405Z");
    assert_eq!(parse_compact_date(&format_compact_date(t)), Ok(t));
}

#[test]
fn compact_date_rejects_wrong_shapes_and_impossible_times() {
    for bad in [
        "",
        "20251103T070140",
        "20251103T070140z",
        "20251103t070140Z",
        "2025-11-03T07:01:40Z",
        "20251103T0701400Z",
        "2025110T070140Z",
        "+2025103T070140Z",
        "20251303T070140Z",
        "20251100T070140Z",
        "20230229T070140Z",
        "20251103T240140Z",
        "20251103T076040Z",
        "20251103T070160Z",
        "2025110３T070140Z",
        "20251103 070140Z",
    ] {
        assert_eq!(
            parse_compact_date(bad),
            Err(AuthError::DateMalformed),
            "{bad:?}"
        );
    }
}

#[test]
fn window_bounds_are_inclusive() {
    let now = datetime!(2026-05-01 12:00:00 UTC);
    let sec = time::Duration::seconds;
    let w = DateWindow::around(now, Duration::from_secs(900));
    let old = Err(AuthError::DateTooOld { max_age_secs: 900 });
    let ahead = Err(AuthError::DateInFuture { max_ahead_secs: 60 });
    assert_eq!(w.check(now), Ok(()));
    assert_eq!(w.check(now - sec(900)), Ok(()));
    assert_eq!(w.check(now - sec(901)), old);
    assert_eq!(w.check(now + sec(60)), Ok(()));
    assert_eq!(w.check(now + sec(61)), ahead);
    // A window shorter than the skew bounds the future too.
    let short = DateWindow::around(now, Duration::from_secs(30));
    assert_eq!(short.check(now + sec(30)), Ok(()));
    assert_eq!(
        short.check(now + sec(31)),
        Err(AuthError::DateInFuture { max_ahead_secs: 30 })
    );
    let zero = DateWindow::around(now, Duration::ZERO);
    assert_eq!(
        zero.check(now + sec(1)),
        Err(AuthError::DateInFuture { max_ahead_secs: 0 })
    );
    // APIG: 15 minutes either way.
    let w = DateWindow::apig(now);
    assert_eq!(w.check(now + sec(900)), Ok(()));
    assert_eq!(
        w.check(now + sec(901)),
        Err(AuthError::DateInFuture {
            max_ahead_secs: 900
        })
    );
    // Far-apart dates do not overflow.
    let far = datetime!(9999-12-31 23:59:59 UTC);
    let early = datetime!(0001-01-01 00:00:00 UTC);
    assert!(matches!(
        DateWindow::apig(far).check(early),
        Err(AuthError::DateTooOld { .. })
    ));
    assert!(matches!(
        DateWindow::apig(early).check(far),
        Err(AuthError::DateInFuture { .. })
    ));
}

#[test]
fn date_errors_name_the_window_they_passed() {
    let now = datetime!(2026-05-01 12:00:00 UTC);
    let w = DateWindow::around(now, Duration::from_secs(60));
    let old = w
        .check(now - time::Duration::seconds(120))
        .expect_err("old");
    assert!(old.to_string().contains("60 seconds"), "{old}");
    assert!(!old.to_string().contains("15 minutes"), "{old}");
    let ahead = w
        .check(now + time::Duration::seconds(600))
        .expect_err("ahead");
    assert!(ahead.to_string().contains("60 seconds"), "{ahead}");
}

#[test]
fn project_must_match_credentials_and_header() {
    assert_eq!(check_project("p1", "p1", None), Ok(()));
    assert_eq!(check_project("p1", "p1", Some("p1")), Ok(()));
    assert_eq!(
        check_project("p1", "p2", None),
        Err(AuthError::ProjectMismatch)
    );
    assert_eq!(
        check_project("p1", "p1", Some("p2")),
        Err(AuthError::ProjectMismatch)
    );
}

// --------------------------------------------------- Authorization ---

const SIG: &str = "cfcdf215e060e3cfad25910ce13200bc6023053708ff48ca11b6fd92aed70bed";

#[test]
fn sdk_authorization_parses_the_sdk_form() {
    let a = parse_sdk_authorization(&format!(
        "SDK-HMAC-SHA256 Access=AK1, SignedHeaders=content-type;host;x-sdk-date, Signature={SIG}"
    ))
    .expect("parses");
    assert_eq!(a.access_key, "AK1");
    assert_eq!(a.signed_headers, s(&["content-type", "host", "x-sdk-date"]));
    assert_eq!(hex::encode(a.signature), SIG);
    // Debug never shows the signature.
    assert!(!format!("{a:?}").contains(&SIG[..16]));
}

#[test]
fn sdk_authorization_tolerates_spacing_order_and_hex_case() {
    let v = format!(
        "  SDK-HMAC-SHA256   Signature = {} ,SignedHeaders= host ; x-sdk-date ,  Access=AK1  ",
        SIG.to_uppercase()
    );
    let a = parse_sdk_authorization(&v).expect("parses");
    assert_eq!(a.access_key, "AK1");
    assert_eq!(a.signed_headers, s(&["host", "x-sdk-date"]));
    assert_eq!(hex::encode(a.signature), SIG);
}

#[test]
fn sdk_authorization_rejects_other_algorithms_clearly() {
    for alg in [
        "SDK-HMAC-SM3",
        "SDK-ECDSA-P256-SHA256",
        "V11-HMAC-SHA256",
        "Bearer",
    ] {
        let v = format!("{alg} Access=AK, SignedHeaders=host, Signature={SIG}");
        match parse_sdk_authorization(&v) {
            Err(e @ AuthError::UnsupportedAlgorithm(_)) => {
                assert!(e.to_string().contains(alg), "{e}");
                assert!(e.to_string().contains("SDK-HMAC-SHA256"), "{e}");
            }
            other => panic!("{alg}: {other:?}"),
        }
    }
    let long = "X".repeat(1000);
    match parse_sdk_authorization(&long) {
        Err(AuthError::UnsupportedAlgorithm(shown)) => assert!(shown.len() <= 40),
        other => panic!("{other:?}"),
    }
}

#[test]
fn sdk_authorization_rejects_malformed_values() {
    let ok_sig = format!("Signature={SIG}");
    let cases = [
        String::new(),
        "SDK-HMAC-SHA256".to_owned(),
        "SDK-HMAC-SHA256 ".to_owned(),
        format!("SDK-HMAC-SHA256 SignedHeaders=host, {ok_sig}"),
        format!("SDK-HMAC-SHA256 Access=AK, {ok_sig}"),
        "SDK-HMAC-SHA256 Access=AK, SignedHeaders=host".to_owned(),
        format!("SDK-HMAC-SHA256 Access=, SignedHeaders=host, {ok_sig}"),
        format!("SDK-HMAC-SHA256 Access=A K, SignedHeaders=host, {ok_sig}"),
        format!("SDK-HMAC-SHA256 Access=AKé, SignedHeaders=host, {ok_sig}"),
        format!(
            "SDK-HMAC-SHA256 Access={}, SignedHeaders=host, {ok_sig}",
            "A".repeat(129)
        ),
        format!("SDK-HMAC-SHA256 Access=AK, Access=AK, SignedHeaders=host, {ok_sig}"),
        format!("SDK-HMAC-SHA256 Access=AK, SignedHeaders=host, {ok_sig}, Extra=1"),
        format!("SDK-HMAC-SHA256 Access=AK, SignedHeaders=host, {ok_sig},"),
        format!("SDK-HMAC-SHA256 Access=AK,, SignedHeaders=host, {ok_sig}"),
        format!("SDK-HMAC-SHA256 Access=AK SignedHeaders=host {ok_sig}"),
        format!("SDK-HMAC-SHA256 Access=AK, SignedHeaders=, {ok_sig}"),
        format!("SDK-HMAC-SHA256 Access=AK, SignedHeaders=host;;x-sdk-date, {ok_sig}"),
        format!("SDK-HMAC-SHA256 Access=AK, SignedHeaders=Host, {ok_sig}"),
        format!("SDK-HMAC-SHA256 Access=AK, SignedHeaders=host;host, {ok_sig}"),
        format!("SDK-HMAC-SHA256 Access=AK, SignedHeaders=ho st, {ok_sig}"),
        format!("SDK-HMAC-SHA256 Access=AK, SignedHeaders=hôst, {ok_sig}"),
        "SDK-HMAC-SHA256 Access=AK, SignedHeaders=host, Signature=abc".to_owned(),
        format!(
            "SDK-HMAC-SHA256 Access=AK, SignedHeaders=host, Signature={}",
            &SIG[..63]
        ),
        format!("SDK-HMAC-SHA256 Access=AK, SignedHeaders=host, Signature={SIG}00"),
        format!(
            "SDK-HMAC-SHA256 Access=AK, SignedHeaders=host, Signature={}g",
            &SIG[..63]
        ),
        format!(
            "SDK-HMAC-SHA256 Access=AK, SignedHeaders=host, Signature={}é",
            &SIG[..62]
        ),
        format!(
            "SDK-HMAC-SHA256 Access=AK, SignedHeaders={}, {ok_sig}",
            (0..65)
                .map(|i| format!("h{i}"))
                .collect::<Vec<_>>()
                .join(";")
        ),
        format!(
            "SDK-HMAC-SHA256 Access=AK, SignedHeaders={}, {ok_sig}",
            "h".repeat(129)
        ),
        format!(
            "SDK-HMAC-SHA256 Access=AK, SignedHeaders=host, {ok_sig}{}",
            " ".repeat(MAX_AUTHORIZATION_LEN)
        ),
    ];
    for v in cases {
        match parse_sdk_authorization(&v) {
            Err(AuthError::MalformedSdkAuthorization(_)) => {}
            other => panic!("{v:?}: {other:?}"),
        }
    }
    // The limits themselves are accepted.
    let names = (0..64).map(|i| format!("h{i}")).collect::<Vec<_>>();
    let v = format!(
        "SDK-HMAC-SHA256 Access={}, SignedHeaders={}, {ok_sig}",
        "A".repeat(128),
        names.join(";")
    );
    assert_eq!(
        parse_sdk_authorization(&v).map(|a| a.signed_headers),
        Ok(names)
    );
}

// ------------------------------------------------- canonical request ---

#[test]
fn canonical_request_of_the_api_md_create_file_example() {
    let ua = "huaweicloud-usdk-python/3.0; os/Linux python/3.11.7 impl/CPython; app/x";
    let h = headers(&[
        ("Content-Type", "application/json"),
        ("Host", "127.0.0.1:33019"),
        ("User-Agent", ua),
        ("X-Project-Id", "proj123"),
        ("X-Sdk-Date", "20261122T163806Z"),
        ("Accept", "*/*"),
        ("Content-Length", "2"),
    ]);
    let signed = s(&[
        "content-type",
        "host",
        "user-agent",
        "x-project-id",
        "x-sdk-date",
    ]);
    let body_hash = hex::encode(Sha256::digest(b"{}"));
    let c = canonical_request("post", "/v1/proj123/files", None, &h, &signed, &body_hash)
        .expect("canonical");
    let expected = format!(
        "POST\n/v1/proj123/files/\n\ncontent-type:application/json\nhost:127.0.0.1:33019\n\
         user-agent:{ua}\nx-project-id:proj123\nx-sdk-date:20261122T163806Z\n\n\
         content-type;host;user-agent;x-project-id;x-sdk-date\n{body_hash}"
    );
    assert_eq!(c, expected);
    assert_eq!(
        string_to_sign("20261122T163806Z", &c),
        format!(
            "SDK-HMAC-SHA256\n20261122T163806Z\n{}",
            hex::encode(Sha256::digest(expected.as_bytes()))
        )
    );
}

#[test]
fn canonical_headers_are_trimmed_and_only_the_signed_ones() {
    let h = headers(&[("host", "h:1"), ("x-a", "  v  a  "), ("x-b", "not signed")]);
    let c = canonical_request("GET", "/", None, &h, &s(&["host", "x-a"]), "H").expect("canonical");
    assert_eq!(c, "GET\n/\n\nhost:h:1\nx-a:v  a\n\nhost;x-a\nH");
}

#[test]
fn canonical_request_errors_on_absent_repeated_or_non_utf8_signed_header() {
    let h = headers(&[("host", "h"), ("x-a", "1"), ("x-a", "2")]);
    assert_eq!(
        canonical_request("GET", "/", None, &h, &s(&["host", "x-gone"]), "H"),
        Err(AuthError::MissingSignedHeader("x-gone".to_owned()))
    );
    assert_eq!(
        canonical_request("GET", "/", None, &h, &s(&["x-a"]), "H"),
        Err(AuthError::InvalidHeader("x-a".to_owned()))
    );
    let mut h = HeaderMap::new();
    h.insert(
        "x-bin",
        HeaderValue::from_bytes(b"\xff\xfe").expect("obs-text is a valid header value"),
    );
    assert_eq!(
        canonical_request("GET", "/", None, &h, &s(&["x-bin"]), "H"),
        Err(AuthError::InvalidHeader("x-bin".to_owned()))
    );
}

// Expected values below were printed by the SDK's own
// `Signer._process_canonical_uri` / `_process_canonical_query_string`.
#[test]
fn canonical_uri_matches_the_sdk() {
    for (raw, want) in [
        ("/v1/proj123/files", "/v1/proj123/files/"),
        ("/v1/p/files/a%2Fb", "/v1/p/files/a/b/"),
        ("/v1/p/%E4%B8%AD/x%20y/", "/v1/p/%E4%B8%AD/x%20y/"),
        ("/a%zz", "/a%25zz/"),
        ("/a%C3", "/a%EF%BF%BD/"),
        ("/", "/"),
        ("", "/"),
        ("/a+b~c", "/a%2Bb~c/"),
        ("/a//b", "/a//b/"),
        ("/%7e%41%2f%2F", "/~A//"),
        ("/a%C3%28b", "/a%EF%BF%BD%28b/"),
        ("/a%F0%9F%98%80b", "/a%F0%9F%98%80b/"),
        ("/a%ED%A0%80", "/a%EF%BF%BD%EF%BF%BD%EF%BF%BD/"),
        (
            "/v1/p/files/dir%2F%C3%A4%20b%252F~x/complete",
            "/v1/p/files/dir/%C3%A4%20b%252F~x/complete/",
        ),
    ] {
        assert_eq!(canonical_uri(raw), want, "{raw:?}");
    }
}

#[test]
fn canonical_query_sorts_decoded_pairs_and_reencodes() {
    // SDK: [('b','2'),('a','中 x'),('a','1'),('c',''),('d','~'),('e','a+b'),
    //       ('f','%zz'),('g','é/?&=#')]
    let want = "a=1&a=%E4%B8%AD%20x&b=2&c=&d=~&e=a%2Bb&f=%25zz&g=%C3%A9%2F%3F%26%3D%23";
    for raw in [
        "b=2&a=%E4%B8%AD%20x&a=1&c=&d=~&e=a%2Bb&f=%25zz&g=%C3%A9%2F%3F%26%3D%23",
        // Lax encodings a non-SDK client might send canonicalize the same.
        "g=%c3%a9%2f?%26%3d%23&f=%25zz&e=a%2bb&d=%7E&c&a=1&b=2&a=%E4%B8%AD%20x&&",
    ] {
        assert_eq!(canonical_query(Some(raw)), want, "{raw:?}");
    }
    assert_eq!(canonical_query(None), "");
    assert_eq!(canonical_query(Some("")), "");
    // '+' is a plus, not a space (the SDK encodes a space as %20).
    assert_eq!(canonical_query(Some("q=a+b")), "q=a%2Bb");
    // Order is by decoded text: 'k}' sorts after 'ka' although "%7D" < "a".
    assert_eq!(canonical_query(Some("k%7D=1&ka=2")), "ka=2&k%7D=1");
    // Repeated keys: values sorted.
    assert_eq!(
        canonical_query(Some("t=z&t=A&t=a~&t=%C3%A9")),
        "t=A&t=a~&t=z&t=%C3%A9"
    );
}

#[test]
fn canonical_request_with_query_and_encoded_path() {
    let h = headers(&[("host", "h")]);
    let c = canonical_request(
        "GET",
        "/v1/p/files/a%2Fb%20c",
        Some("z=1&a=%E4%B8%AD"),
        &h,
        &s(&["host"]),
        EMPTY_PAYLOAD_SHA256,
    )
    .expect("canonical");
    assert_eq!(
        c,
        format!(
            "GET\n/v1/p/files/a/b%20c/\na=%E4%B8%AD&z=1\nhost:h\n\nhost\n{EMPTY_PAYLOAD_SHA256}"
        )
    );
}

// ------------------------------------------- verify_sdk_request basics ---

const AK: &str = "AK-TEST";
const SK: &str = "sk-test";

fn lookup(ak: &str) -> Option<String> {
    (ak == AK).then(|| SK.to_owned())
}

fn signed_request(body: &[u8], extra: &[(&str, &str)]) -> HeaderMap {
    let mut h = headers(&[
        ("content-type", "application/json"),
        ("host", "127.0.0.1:8080"),
        ("x-project-id", "p1"),
        ("x-sdk-date", "20260501T120000Z"),
    ]);
    for (k, v) in extra {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_bytes(v.as_bytes()).expect("value"),
        );
    }
    let auth =
        sdk_authorization_header(AK, SK, "POST", "/v1/p1/files", None, &h, body).expect("sign");
    h.insert(
        "authorization",
        HeaderValue::from_str(&auth).expect("auth value"),
    );
    h
}

const NOW: OffsetDateTime = datetime!(2026-05-01 12:00:00 UTC);

fn verify(h: &HeaderMap, body: &[u8], now: OffsetDateTime) -> Result<String, AuthError> {
    verify_sdk_request(
        "POST",
        "/v1/p1/files",
        None,
        h,
        body,
        lookup,
        &DateWindow::apig(now),
    )
}

#[test]
fn verify_accepts_own_signature_and_checks_the_window() {
    let h = signed_request(b"{}", &[]);
    assert_eq!(verify(&h, b"{}", NOW), Ok(AK.to_owned()));
    let min = time::Duration::minutes;
    assert_eq!(verify(&h, b"{}", NOW + min(15)), Ok(AK.to_owned()));
    assert_eq!(verify(&h, b"{}", NOW - min(15)), Ok(AK.to_owned()));
    assert_eq!(
        verify(&h, b"{}", NOW + min(16)),
        Err(AuthError::DateTooOld { max_age_secs: 900 })
    );
    assert_eq!(
        verify(&h, b"{}", NOW - min(16)),
        Err(AuthError::DateInFuture {
            max_ahead_secs: 900
        })
    );
    assert_eq!(verify(&h, b"{ }", NOW), Err(AuthError::BadSignature));
    assert_eq!(
        verify_sdk_request(
            "POST",
            "/v1/p1/files",
            None,
            &h,
            b"{}",
            |_| Some("x".into()),
            &DateWindow::apig(NOW)
        ),
        Err(AuthError::BadSignature)
    );
    assert_eq!(
        verify_sdk_request(
            "POST",
            "/v1/p1/files",
            None,
            &h,
            b"{}",
            |_| None,
            &DateWindow::apig(NOW)
        ),
        Err(AuthError::UnknownCredentials)
    );
    assert_eq!(
        verify_sdk_request(
            "PUT",
            "/v1/p1/files",
            None,
            &h,
            b"{}",
            lookup,
            &DateWindow::apig(NOW)
        ),
        Err(AuthError::BadSignature)
    );
    assert_eq!(
        verify_sdk_request(
            "POST",
            "/v1/p2/files",
            None,
            &h,
            b"{}",
            lookup,
            &DateWindow::apig(NOW)
        ),
        Err(AuthError::BadSignature)
    );
    assert_eq!(
        verify_sdk_request(
            "POST",
            "/v1/p1/files",
            Some("a=1"),
            &h,
            b"{}",
            lookup,
            &DateWindow::apig(NOW)
        ),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn verify_requires_authorization_date_host_and_single_headers() {
    let mut h = signed_request(b"{}", &[]);
    h.remove("authorization");
    assert_eq!(
        verify(&h, b"{}", NOW),
        Err(AuthError::MissingHeader("Authorization"))
    );

    let mut h = signed_request(b"{}", &[]);
    h.remove("x-sdk-date");
    assert_eq!(verify(&h, b"{}", NOW), Err(AuthError::DateMissing));

    let mut h = signed_request(b"{}", &[]);
    h.insert(
        "x-sdk-date",
        HeaderValue::from_static("2026-05-01T12:00:00Z"),
    );
    assert_eq!(verify(&h, b"{}", NOW), Err(AuthError::DateMalformed));

    let mut h = signed_request(b"{}", &[]);
    h.append("authorization", HeaderValue::from_static("Bearer x"));
    assert_eq!(
        verify(&h, b"{}", NOW),
        Err(AuthError::InvalidHeader("authorization".to_owned()))
    );

    let mut h = signed_request(b"{}", &[]);
    h.append("x-project-id", HeaderValue::from_static("p2"));
    assert_eq!(
        verify(&h, b"{}", NOW),
        Err(AuthError::InvalidHeader("x-project-id".to_owned()))
    );

    // Signed without host or without x-sdk-date: refused even if the
    // signature itself holds.
    for drop in ["host", "x-sdk-date"] {
        let h = headers(&[("host", "h"), ("x-sdk-date", "20260501T120000Z")]);
        let signed: Vec<String> = ["host", "x-sdk-date"]
            .into_iter()
            .filter(|n| *n != drop)
            .map(str::to_owned)
            .collect();
        let c =
            canonical_request("POST", "/v1/p1/files", None, &h, &signed, "").expect("canonical");
        let sig = sdk_signature(SK, &string_to_sign("20260501T120000Z", &c));
        let auth = format!(
            "SDK-HMAC-SHA256 Access={AK}, SignedHeaders={}, Signature={}",
            signed.join(";"),
            hex::encode(sig)
        );
        let mut h = h;
        h.insert("authorization", HeaderValue::from_str(&auth).expect("v"));
        assert!(
            matches!(
                verify(&h, b"", NOW),
                Err(AuthError::MalformedSdkAuthorization(_))
            ),
            "{drop}"
        );
    }
}

#[test]
fn payload_header_is_used_as_the_sdk_uses_it() {
    // UNSIGNED-PAYLOAD: the body is not covered (as with the SDK).
    let h = signed_request(b"abc", &[("x-sdk-content-sha256", UNSIGNED_PAYLOAD)]);
    assert_eq!(verify(&h, b"abc", NOW), Ok(AK.to_owned()));
    assert_eq!(verify(&h, b"abd", NOW), Ok(AK.to_owned()));
    // ... but the marker itself is: a JSON-signed request cannot be
    // turned into an unsigned one.
    let mut h = signed_request(b"abc", &[]);
    h.insert(
        "x-sdk-content-sha256",
        HeaderValue::from_static(UNSIGNED_PAYLOAD),
    );
    assert_eq!(verify(&h, b"abd", NOW), Err(AuthError::BadSignature));
    // A digest in the header must be the body's.
    let digest = hex::encode(Sha256::digest(b"abc"));
    let h = signed_request(b"abc", &[("x-sdk-content-sha256", &digest)]);
    assert_eq!(verify(&h, b"abc", NOW), Ok(AK.to_owned()));
    assert_eq!(verify(&h, b"abd", NOW), Err(AuthError::PayloadHashMismatch));
    let mut h = signed_request(b"abc", &[]);
    h.insert("x-sdk-content-sha256", HeaderValue::from_static("nonsense"));
    assert_eq!(
        verify(&h, b"abc", NOW),
        Err(AuthError::InvalidHeader("x-sdk-content-sha256".to_owned()))
    );
    // An empty body always hashes to the empty constant.
    let h = signed_request(b"", &[("x-sdk-content-sha256", UNSIGNED_PAYLOAD)]);
    assert_eq!(verify(&h, b"", NOW), Ok(AK.to_owned()));
    assert_eq!(verify(&h, b"x", NOW), Err(AuthError::BadSignature));
    let h = signed_request(b"", &[]);
    assert_eq!(verify(&h, b"x", NOW), Err(AuthError::BadSignature));
}

#[test]
fn error_messages_never_carry_secrets() {
    let h = signed_request(b"{}", &[]);
    let auth = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let sig = auth.rsplit('=').next().unwrap_or_default().to_owned();
    let errs = [
        verify(&h, b"{ }", NOW),
        verify_sdk_request(
            "POST",
            "/v1/p1/files",
            None,
            &h,
            b"{}",
            |_| None,
            &DateWindow::apig(NOW),
        ),
        verify(&h, b"{}", NOW + time::Duration::hours(1)),
    ];
    for e in errs {
        let e = e.expect_err("must fail");
        let (msg, dbg) = (e.to_string(), format!("{e:?}"));
        for secret in [SK, sig.as_str()] {
            assert!(!msg.contains(secret) && !dbg.contains(secret), "{msg}");
        }
    }
}

// ------------------------------------------- vectors from the real SDK ---

/// One request as the SDK signed and sent it (see `sign_vectors.py`).
struct Vector {
    name: String,
    access_key: String,
    secret_key: String,
    date: OffsetDateTime,
    authorization: String,
    canonical: String,
    string_to_sign: String,
    request: Case,
}

/// What the server sees of a request, and its clock.
#[derive(Clone)]
struct Case {
    method: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Vec<u8>,
    now: OffsetDateTime,
}

static VECTORS: std::sync::LazyLock<Vec<Vector>> = std::sync::LazyLock::new(|| {
    let doc: serde_json::Value =
        serde_json::from_str(include_str!("../../tests/sdk/sign_vectors.json"))
            .expect("sign_vectors.json is JSON");
    let text = |v: &serde_json::Value, k: &str| -> String {
        v[k].as_str()
            .unwrap_or_else(|| panic!("vector field {k} is not a string"))
            .to_owned()
    };
    let list = doc["vectors"].as_array().expect("vectors array");
    assert!(list.len() >= 5, "expected at least five vectors");
    list.iter()
        .map(|v| {
            let mut headers = HeaderMap::new();
            for pair in v["headers"].as_array().expect("headers array") {
                let (k, val) = (
                    pair[0].as_str().expect("header name"),
                    pair[1].as_str().expect("header value"),
                );
                headers.append(
                    HeaderName::from_bytes(k.as_bytes()).expect("header name"),
                    HeaderValue::from_bytes(val.as_bytes()).expect("header value"),
                );
            }
            let date = parse_compact_date(&text(v, "x_sdk_date")).expect("x_sdk_date");
            Vector {
                name: text(v, "name"),
                access_key: text(v, "access_key"),
                secret_key: text(v, "secret_key"),
                date,
                authorization: text(v, "authorization"),
                canonical: text(v, "sdk_canonical_request"),
                string_to_sign: text(v, "sdk_string_to_sign"),
                request: Case {
                    method: text(v, "method"),
                    path: text(v, "path"),
                    query: v["query"].as_str().map(str::to_owned),
                    headers,
                    body: base64::engine::general_purpose::STANDARD
                        .decode(text(v, "body_b64"))
                        .expect("body_b64"),
                    now: date,
                },
            }
        })
        .collect()
});

/// Verifies a case, with the secrets of every vector's access key known.
fn run(c: &Case) -> Result<String, AuthError> {
    verify_sdk_request(
        &c.method,
        &c.path,
        c.query.as_deref(),
        &c.headers,
        &c.body,
        |ak| {
            VECTORS
                .iter()
                .find(|v| v.access_key == ak)
                .map(|v| v.secret_key.clone())
        },
        &DateWindow::apig(c.now),
    )
}

/// The vector's request after `change`.
fn changed(v: &Vector, change: impl FnOnce(&mut Case)) -> Case {
    let mut c = v.request.clone();
    change(&mut c);
    c
}

fn is_unsigned_payload(v: &Vector) -> bool {
    v.canonical.ends_with(UNSIGNED_PAYLOAD)
}

#[test]
fn sdk_vectors_cover_the_required_cases() {
    let has = |f: &dyn Fn(&Vector) -> bool| VECTORS.iter().any(f);
    assert!(has(&|v| {
        let r = &v.request;
        r.method == "POST"
            && r.headers
                .get("content-type")
                .is_some_and(|c| c == "application/json")
            && v.canonical.ends_with(&hex::encode(Sha256::digest(&r.body)))
    }));
    assert!(has(
        &|v| v.request.method == "DELETE" && v.request.body.is_empty()
    ));
    assert!(has(&|v| {
        v.request.method == "GET" && v.request.query.as_deref().is_some_and(|q| q.contains('%'))
    }));
    assert!(has(&is_unsigned_payload));
    assert!(has(&|v| v.request.path.contains("%2F")));
    assert!(
        VECTORS
            .iter()
            .any(|v| v.access_key != VECTORS[0].access_key)
    );
}

#[test]
fn sdk_vectors_rebuild_the_sdks_canonical_request_exactly() {
    for v in VECTORS.iter() {
        let r = &v.request;
        let auth = parse_sdk_authorization(&v.authorization).expect("sdk authorization");
        let hash = payload_hash(&r.headers, &r.body).expect("payload hash");
        let c = canonical_request(
            &r.method,
            &r.path,
            r.query.as_deref(),
            &r.headers,
            &auth.signed_headers,
            &hash,
        )
        .expect("canonical");
        assert_eq!(c, v.canonical, "{}", v.name);
        let date = r
            .headers
            .get("x-sdk-date")
            .and_then(|d| d.to_str().ok())
            .expect("date");
        assert_eq!(string_to_sign(date, &c), v.string_to_sign, "{}", v.name);
        // Our client-side signer gives the SDK's header, byte for byte.
        let mut only_signed = HeaderMap::new();
        for name in &auth.signed_headers {
            for value in r.headers.get_all(name.as_str()) {
                only_signed.append(
                    HeaderName::from_bytes(name.as_bytes()).expect("name"),
                    value.clone(),
                );
            }
        }
        let ours = sdk_authorization_header(
            &v.access_key,
            &v.secret_key,
            &r.method,
            &r.path,
            r.query.as_deref(),
            &only_signed,
            &r.body,
        )
        .expect("sign");
        assert_eq!(ours, v.authorization, "{}", v.name);
    }
}

#[test]
fn sdk_vectors_verify() {
    for v in VECTORS.iter() {
        assert_eq!(run(&v.request), Ok(v.access_key.clone()), "{}", v.name);
    }
}

#[test]
fn sdk_vectors_fail_with_one_body_byte_changed() {
    for v in VECTORS.iter() {
        let c = changed(v, |c| match c.body.first_mut() {
            Some(b) => *b ^= 0x01,
            None => c.body.push(b'{'),
        });
        if is_unsigned_payload(v) {
            // UNSIGNED-PAYLOAD leaves the body out of the signature, in
            // the SDK as here.
            assert_eq!(run(&c), Ok(v.access_key.clone()), "{}", v.name);
        } else {
            assert_eq!(run(&c), Err(AuthError::BadSignature), "{}", v.name);
        }
    }
}

#[test]
fn sdk_vectors_fail_with_any_signed_header_changed_or_dropped() {
    for v in VECTORS.iter() {
        let auth = parse_sdk_authorization(&v.authorization).expect("sdk authorization");
        for name in &auth.signed_headers {
            let c = changed(v, |c| {
                let old = c.headers.get(name.as_str()).expect("signed header present");
                let mut bytes = old.as_bytes().to_vec();
                // One byte; for the date, one that keeps it valid and
                // within the window (the seconds digit before the 'Z').
                let last = bytes.len() - 1;
                let i = if name == "x-sdk-date" { last - 1 } else { last };
                bytes[i] = if bytes[i] == b'1' { b'2' } else { b'1' };
                c.headers.insert(
                    HeaderName::from_bytes(name.as_bytes()).expect("name"),
                    HeaderValue::from_bytes(&bytes).expect("value"),
                );
            });
            // A payload marker that is neither UNSIGNED-PAYLOAD nor a
            // digest is refused before the signature is looked at.
            let want = if name == "x-sdk-content-sha256" {
                AuthError::InvalidHeader(name.clone())
            } else {
                AuthError::BadSignature
            };
            assert_eq!(run(&c), Err(want), "{}: {name}", v.name);

            let c = changed(v, |c| {
                c.headers.remove(name.as_str());
            });
            let want = if name == "x-sdk-date" {
                AuthError::DateMissing
            } else {
                AuthError::MissingSignedHeader(name.clone())
            };
            assert_eq!(run(&c), Err(want), "{}: dropping {name}", v.name);
        }
        // Unsigned headers may change freely.
        let c = changed(v, |c| {
            c.headers
                .insert("accept", HeaderValue::from_static("text/html"));
            c.headers
                .insert("x-unsigned-extra", HeaderValue::from_static("1"));
        });
        assert_eq!(run(&c), Ok(v.access_key.clone()), "{}", v.name);
    }
}

#[test]
fn sdk_vectors_fail_with_path_query_method_key_or_time_changed() {
    for v in VECTORS.iter() {
        let bad = Err(AuthError::BadSignature);
        let c = changed(v, |c| c.path.push('x'));
        assert_eq!(run(&c), bad, "{}: path", v.name);
        let c = changed(v, |c| {
            c.query = Some(match c.query.take() {
                Some(q) => format!("{q}&zz=1"),
                None => "zz=1".to_owned(),
            })
        });
        assert_eq!(run(&c), bad, "{}: query", v.name);
        let c = changed(v, |c| c.method = "PATCH".to_owned());
        assert_eq!(run(&c), bad, "{}: method", v.name);
        // Another vector's access key, with its own secret: no match.
        let other = VECTORS
            .iter()
            .find(|o| o.access_key != v.access_key)
            .expect("a second access key");
        let auth = v
            .authorization
            .replacen(&v.access_key, &other.access_key, 1);
        let c = changed(v, |c| {
            c.headers.insert(
                "authorization",
                HeaderValue::from_str(&auth).expect("value"),
            );
        });
        assert_eq!(run(&c), bad, "{}: access key", v.name);
        let c = changed(v, |c| c.now = v.date + time::Duration::minutes(16));
        assert_eq!(
            run(&c),
            Err(AuthError::DateTooOld { max_age_secs: 900 }),
            "{}: late",
            v.name
        );
        let c = changed(v, |c| c.now = v.date - time::Duration::minutes(16));
        assert_eq!(
            run(&c),
            Err(AuthError::DateInFuture {
                max_ahead_secs: 900
            }),
            "{}: early",
            v.name
        );
    }
}

// ------------------------------------------------------- UrlSigner ---

fn grant<'a>(
    api: &'a str,
    file_id: &'a str,
    part: u32,
    owner: &'a str,
    exp: i64,
) -> UploadGrant<'a> {
    UploadGrant {
        api,
        file_id,
        part,
        owner,
        expires_unix: exp,
    }
}

#[test]
fn upload_url_signature_round_trips_and_expires() {
    let s = UrlSigner::new([7u8; 32]);
    let g = grant("koodrive", "file-1", 3, "alice", 1_000);
    let sig = s.sign(&g);
    assert_eq!(sig.len(), 64);
    assert_eq!(s.verify(&g, &sig, 999), Ok(()));
    assert_eq!(s.verify(&g, &sig, 1_000), Ok(()));
    assert_eq!(s.verify(&g, &sig.to_uppercase(), 1_000), Ok(()));
    assert_eq!(s.verify(&g, &sig, 1_001), Err(AuthError::UploadUrlExpired));
    assert!(!format!("{s:?}").contains("7"));
}

#[test]
fn upload_url_signature_is_bound_to_every_field_and_key() {
    let s = UrlSigner::new([7u8; 32]);
    let g = grant("koodrive", "file-1", 3, "alice", 1_000);
    let sig = s.sign(&g);
    let forged = Err(AuthError::UploadUrlForged);
    for other in [
        grant("metastudio", "file-1", 3, "alice", 1_000),
        grant("koodrive", "file-2", 3, "alice", 1_000),
        grant("koodrive", "file-1", 4, "alice", 1_000),
        grant("koodrive", "file-1", 3, "bob", 1_000),
        grant("koodrive", "file-1", 3, "alice", 2_000),
    ] {
        assert_eq!(s.verify(&other, &sig, 0), forged, "{other:?}");
    }
    // Field boundaries cannot be shifted.
    let a = s.sign(&grant("k", "ab", 1, "c", 5));
    assert_eq!(s.verify(&grant("k", "a", 1, "bc", 5), &a, 0), forged);
    assert_eq!(s.verify(&grant("ka", "b", 1, "c", 5), &a, 0), forged);
    let other = UrlSigner::new([8u8; 32]);
    assert_eq!(other.verify(&g, &sig, 0), forged);
    for bad in [
        "",
        "zz",
        &sig[..63],
        &format!("{sig}0"),
        &format!("{}g", &sig[..63]),
        &format!("{}é", &sig[..62]),
    ] {
        assert_eq!(s.verify(&g, bad, 0), forged, "{bad:?}");
    }
    // Expired and forged: forged wins (says nothing about the real one).
    let g2 = grant("koodrive", "file-2", 3, "alice", 1_000);
    assert_eq!(s.verify(&g2, &sig, 5_000), forged);
}

// ------------------------------------------------- no panics, ever ---

/// A small deterministic generator of awkward strings.
struct Gen(u64);
impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn string(&mut self, alphabet: &[&str]) -> String {
        let n = self.next() % 40;
        (0..n)
            .map(|_| alphabet[(self.next() as usize) % alphabet.len()])
            .collect()
    }
}

#[test]
fn parsers_never_panic() {
    let alphabet = [
        "a",
        "Z",
        "0",
        "9",
        " ",
        "\t",
        ",",
        ";",
        "=",
        "+",
        "/",
        "%",
        "%2",
        "%2F",
        "%C3",
        "%zz",
        "é",
        "中",
        "😀",
        "T",
        "Z",
        "Bearer",
        "SDK-HMAC-SHA256",
        "Access",
        "Signature",
        "SignedHeaders",
        "host",
        "x-sdk-date",
        "\u{0}",
        "-",
        "~",
        "?",
        "&",
    ];
    let mut g = Gen(42);
    let h = headers(&[("host", "h"), ("x-sdk-date", "20260501T120000Z")]);
    for _ in 0..20_000 {
        let a = g.string(&alphabet);
        let b = g.string(&alphabet);
        let _ = bearer_token(&a);
        let _ = parse_compact_date(&a);
        let _ = parse_sdk_authorization(&a);
        let _ = canonical_request(&a, &a, Some(&b), &h, std::slice::from_ref(&b), &a);
        let _ = string_to_sign(&a, &b);
        let _ = sdk_signature(&a, &b);
        let mut h2 = h.clone();
        if let Ok(v) = HeaderValue::from_str(&a) {
            h2.insert("authorization", v);
        }
        let _ = verify_sdk_request(
            &a,
            &b,
            Some(&a),
            &h2,
            b.as_bytes(),
            |_| Some(a.clone()),
            &DateWindow::apig(NOW),
        );
        let _ = UrlSigner::new([0; 32]).verify(&grant(&b, &a, 1, &b, i64::MAX), &a, i64::MIN);
    }
}
