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

/// How far ahead of the server's clock a request date may be: clocks drift
/// a little, but a date far ahead would keep a captured request valid for
/// longer than the window says.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// APIG's own rule for `X-Sdk-Date`: at most 15 minutes from the server's
/// clock, either way (for clients that want to match the real gateway; the
/// server applies its configured window instead).
pub const APIG_DATE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// The request dates accepted at one moment: from `max_age` before `now` to
/// `max_ahead` after it, both bounds inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateWindow {
    /// The server's clock.
    pub now: OffsetDateTime,
    /// Oldest a date may be.
    pub max_age: Duration,
    /// Furthest ahead a date may be.
    pub max_ahead: Duration,
}

impl DateWindow {
    /// The one rule both APIs apply (`X-Date` and `X-Sdk-Date` alike): back
    /// by the configured `max_age`, ahead by [`CLOCK_SKEW`], or by `max_age`
    /// if that is shorter (a skew wider than the window would make it
    /// meaningless).
    pub fn around(now: OffsetDateTime, max_age: Duration) -> DateWindow {
        DateWindow {
            now,
            max_age,
            max_ahead: CLOCK_SKEW.min(max_age),
        }
    }

    /// [`APIG_DATE_WINDOW`] either way around `now`.
    pub fn apig(now: OffsetDateTime) -> DateWindow {
        DateWindow {
            now,
            max_age: APIG_DATE_WINDOW,
            max_ahead: APIG_DATE_WINDOW,
        }
    }

    /// Checks a request date; the error names the bound that was passed.
    pub fn check(&self, t: OffsetDateTime) -> Result<(), AuthError> {
        let age = self.now - t;
        if age.is_negative() {
            if age.unsigned_abs() > self.max_ahead {
                return Err(AuthError::DateInFuture {
                    max_ahead_secs: self.max_ahead.as_secs(),
                });
            }
        } else if age.unsigned_abs() > self.max_age {
            return Err(AuthError::DateTooOld {
                max_age_secs: self.max_age.as_secs(),
            });
        }
        Ok(())
    }
}
