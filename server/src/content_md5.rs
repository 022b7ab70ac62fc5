//! `Content-MD5` on a part `PUT` (RFC 1864): the base64 of the 16-byte MD5
//! of the body, which the MetaStudio SDK sends and S3 clients know.
//!
//! The header is parsed before any byte of the body is read. The body then
//! reaches the engine through [`Md5Checked`], which hashes what passes and,
//! at the end, fails the read if the digest differs: the engine treats that
//! like a broken body, so the part is neither stored nor acknowledged, and
//! the handler finds the reason in the shared [`Mismatch`].

use std::io::{self, Read};
use std::sync::{Arc, OnceLock};

use axum::http::HeaderMap;
use base64::Engine as _;
use md5::{Digest, Md5};

use crate::error::ApiError;

/// The `Content-MD5` of a request, if it has one. More than one such header,
/// or one that is not the base64 of 16 bytes, is refused.
pub fn parse(headers: &HeaderMap) -> Result<Option<[u8; 16]>, ApiError> {
    let mut values = headers.get_all("content-md5").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad(
            "Content-MD5 must be the base64 of the 16-byte MD5 of the body (24 characters, RFC 1864)",
        )
    };
    if values.next().is_some() {
        return Err(ApiError::bad("Content-MD5 is given more than once"));
    }
    let text = value.to_str().map_err(|_| bad())?.trim();
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()
        .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
        .map(Some)
        .ok_or_else(bad)
}

/// The digest a body really had when it did not match its `Content-MD5`;
/// empty while the body matched (or has not ended yet).
#[derive(Clone, Debug, Default)]
pub struct Mismatch(Arc<OnceLock<[u8; 16]>>);

impl Mismatch {
    /// The error to answer if the body ended with another digest than
    /// `expected`.
    pub fn error(&self, expected: &[u8; 16]) -> Option<ApiError> {
        let b64 = |d: &[u8; 16]| base64::engine::general_purpose::STANDARD.encode(d);
        self.0.get().map(|actual| ApiError::ContentMd5Mismatch {
            expected: b64(expected),
            actual: b64(actual),
        })
    }
}

/// The answer to a body whose MD5 (hex `actual`) is not the `Content-MD5`
/// given (hex `expected`), as a backend that checked it itself reports it.
pub fn mismatch(expected: &str, actual: &str) -> ApiError {
    let b64 = |h: &str| match hex::decode(h) {
        Ok(b) => base64::engine::general_purpose::STANDARD.encode(b),
        Err(_) => h.to_owned(),
    };
    ApiError::ContentMd5Mismatch {
        expected: b64(expected),
        actual: b64(actual),
    }
}

/// A reader that passes `inner` through and, at its end, fails with
/// `InvalidData` unless the bytes had the expected MD5 (with none expected,
/// it only passes them through).
pub struct Md5Checked<R> {
    inner: R,
    /// The hash so far and the digest expected; `None` once judged.
    check: Option<(Md5, [u8; 16])>,
    mismatch: Mismatch,
}

impl<R> Md5Checked<R> {
    /// Checks `inner` against `expected`, recording a mismatch in `mismatch`.
    pub fn new(inner: R, expected: Option<[u8; 16]>, mismatch: Mismatch) -> Self {
        Md5Checked {
            inner,
            check: expected.map(|e| (Md5::new(), e)),
            mismatch,
        }
    }
}

fn mismatch_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "the body does not match its Content-MD5",
    )
}

impl<R: Read> Read for Md5Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.mismatch.0.get().is_some() {
            // The end was reached and judged before: say the same again.
            return Err(mismatch_error());
        }
        let n = self.inner.read(buf)?;
        match self.check.take() {
            Some((mut hasher, expected)) if n > 0 || buf.is_empty() => {
                hasher.update(&buf[..n]);
                self.check = Some((hasher, expected));
            }
            Some((hasher, expected)) => {
                let actual: [u8; 16] = hasher.finalize().into();
                if actual != expected {
                    let _ = self.mismatch.0.set(actual);
                    return Err(mismatch_error());
                }
            }
            None => {}
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("content-md5", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn md5(b: &[u8]) -> [u8; 16] {
        Md5::digest(b).into()
    }

    #[test]
    fn header_is_the_base64_of_16_bytes_once() {
        assert_eq!(parse(&headers(&[])).unwrap(), None);
        let d = md5(b"hello");
        let b64 = base64::engine::general_purpose::STANDARD.encode(d);
        assert_eq!(parse(&headers(&[&b64])).unwrap(), Some(d));
        assert_eq!(parse(&headers(&[&format!(" {b64} ")])).unwrap(), Some(d));
        let hex = hex::encode(d);
        for bad in [
            "",
            "abc",
            "!!!!",
            hex.as_str(),
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(parse(&headers(&[bad])).is_err(), "{bad:?}");
        }
        assert!(parse(&headers(&[&b64, &b64])).is_err());
    }

    #[test]
    fn matching_body_reads_through() {
        let body = vec![7u8; 100_000];
        let m = Mismatch::default();
        let mut r = Md5Checked::new(&body[..], Some(md5(&body)), m.clone());
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, body);
        assert!(m.error(&md5(&body)).is_none());
        assert_eq!(r.read(&mut [0u8; 8]).unwrap(), 0, "the end stays the end");
    }

    #[test]
    fn without_a_digest_the_body_reads_through() {
        let body = b"anything".to_vec();
        let m = Mismatch::default();
        let mut out = Vec::new();
        Md5Checked::new(&body[..], None, m.clone())
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, body);
        assert!(m.0.get().is_none());
    }

    #[test]
    fn differing_body_fails_at_its_end_and_is_recorded() {
        let body = b"the bytes that came".to_vec();
        let claimed = md5(b"the bytes that were meant");
        let m = Mismatch::default();
        let mut r = Md5Checked::new(&body[..], Some(claimed), m.clone());
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(out, body, "every byte passes before the verdict");
        assert!(r.read(&mut [0u8; 8]).is_err(), "and the verdict stays");
        match m.error(&claimed) {
            Some(ApiError::ContentMd5Mismatch { expected, actual }) => {
                let b64 = base64::engine::general_purpose::STANDARD;
                assert_eq!(expected, b64.encode(claimed));
                assert_eq!(actual, b64.encode(md5(&body)));
            }
            other => panic!("{other:?}"),
        }
    }
}
