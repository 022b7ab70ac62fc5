//! KooDrive's scheme: `Authorization: Bearer <token>` and the compact UTC
//! timestamp of `X-Date` (also `X-Sdk-Date`'s format), with the window a
//! request date must fall in.

use std::time::Duration;

use time::OffsetDateTime;
use time::macros::format_description;

use super::AuthError;

/// The token of a KooDrive `Authorization` value: `Bearer <token>` (one or
/// more spaces) or `Bearer+<token>`, the scheme in any case. `None` for other
/// schemes, an empty token, or a token containing whitespace.
pub fn bearer_token(value: &str) -> Option<&str> {
    let value = value.trim();
    let scheme = value.get(..6)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let rest = &value[6..];
    let token = if let Some(t) = rest.strip_prefix('+') {
        t
    } else if rest.starts_with([' ', '\t']) {
        rest.trim_start_matches([' ', '\t'])
    } else {
        return None;
    };
    if token.is_empty() || token.chars().any(char::is_whitespace) {
        return None;
    }
    Some(token)
}

/// Parses the compact UTC timestamp of `X-Date` and `X-Sdk-Date`:
/// `yyyyMMdd'T'HHmmss'Z'`, exactly 16 characters (e.g. `20251103T070140Z`).
pub fn parse_compact_date(s: &str) -> Result<OffsetDateTime, AuthError> {
    let b = s.as_bytes();
    let shape_ok = b.len() == 16
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z';
    if !shape_ok {
        return Err(AuthError::DateMalformed);
    }
    let fmt = format_description!("[year][month][day]T[hour][minute][second]Z");
    time::PrimitiveDateTime::parse(s, &fmt)
        .map(time::PrimitiveDateTime::assume_utc)
        .map_err(|_| AuthError::DateMalformed)
}

/// Formats `t` (taken as UTC) the way [`parse_compact_date`] reads it; for
/// clients and tests.
pub fn format_compact_date(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Checks a request time against the server's clock: `t` may be at most
/// `max_age` before `now` and at most `allow_future` after it (both bounds
/// inclusive).
///
/// KooDrive's `X-Date`: `max_age` 15 min, `allow_future` a small clock skew
/// (e.g. 60 s). MetaStudio's `X-Sdk-Date`: both [`SDK_DATE_WINDOW`].
pub fn check_window(
    t: OffsetDateTime,
    now: OffsetDateTime,
    max_age: Duration,
    allow_future: Duration,
) -> Result<(), AuthError> {
    let age = now - t;
    if age.is_negative() {
        if age.unsigned_abs() > allow_future {
            return Err(AuthError::DateInFuture);
        }
    } else if age.unsigned_abs() > max_age {
        return Err(AuthError::DateTooOld);
    }
    Ok(())
}
