//! The server's own signed URLs: upload URLs (`PUT` a part) and download
//! URLs (`GET` a committed file). Each is an HMAC over the fields that select
//! what the request does, so such a URL needs no other credentials. The two
//! purposes have their own domain tags: an upload URL's signature never
//! verifies as a download URL's, nor the other way round.

use hmac::Mac;

use super::{AuthError, HmacSha256, hmac_with};

/// What an upload URL grants: every part of the URL that selects what a
/// `PUT` to it does. All of it is signed, so none of it can be changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadGrant<'a> {
    /// The `{api}` segment, which picks the dialect of the answer (and
    /// whatever else may come to differ between the APIs).
    pub api: &'a str,
    /// The upload.
    pub file_id: &'a str,
    /// The part number.
    pub part: u32,
    /// The owner the bytes are stored for.
    pub owner: &'a str,
    /// End of validity, in seconds since the epoch.
    pub expires_unix: i64,
}

/// What a download URL grants: reading one committed file of one owner,
/// through one API (which picks the dialect of errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DownloadGrant<'a> {
    /// The `{api}` segment.
    pub api: &'a str,
    /// The file.
    pub file_id: &'a str,
    /// The owner of the file.
    pub owner: &'a str,
    /// End of validity, in seconds since the epoch.
    pub expires_unix: i64,
}

/// Signs and checks the server's upload and download URLs: HMAC-SHA256 over every field
/// of an [`UploadGrant`], so a URL needs no other credentials, cannot be
/// forged, and holds for that one part of that one file, through that one
/// API, only.
#[derive(Clone)]
pub struct UrlSigner {
    mac: HmacSha256,
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UrlSigner { .. }")
    }
}

impl UrlSigner {
    /// Domain tag, so these MACs cannot be mistaken for any other use of the
    /// key. v2 added the API; v1 signatures (which lacked it) no longer
    /// verify.
    const TAG: &'static [u8] = b"partseal upload url v2\0";
    /// Domain tag of download URLs.
    const DOWNLOAD_TAG: &'static [u8] = b"partseal download url v1\0";

    /// A signer keyed with `key` (keep it across restarts, or earlier URLs
    /// stop working; `config::url_key` does).
    pub fn new(key: [u8; 32]) -> UrlSigner {
        UrlSigner {
            mac: hmac_with(&key),
        }
    }

    /// The MAC state after an unambiguous encoding of the fields: each string
    /// with its length in front, numbers fixed-width big-endian.
    fn keyed(&self, g: &UploadGrant<'_>) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(Self::TAG);
        for s in [g.api, g.file_id] {
            mac.update(&(s.len() as u64).to_be_bytes());
            mac.update(s.as_bytes());
        }
        mac.update(&g.part.to_be_bytes());
        mac.update(&(g.owner.len() as u64).to_be_bytes());
        mac.update(g.owner.as_bytes());
        mac.update(&g.expires_unix.to_be_bytes());
        mac
    }

    /// The signature (64 lower-case hex digits) of `grant`.
    pub fn sign(&self, grant: &UploadGrant<'_>) -> String {
        hex::encode(self.keyed(grant).finalize().into_bytes())
    }

    /// The MAC state of a download grant, encoded as [`Self::keyed`] does.
    fn keyed_download(&self, g: &DownloadGrant<'_>) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(Self::DOWNLOAD_TAG);
        for s in [g.api, g.file_id, g.owner] {
            mac.update(&(s.len() as u64).to_be_bytes());
            mac.update(s.as_bytes());
        }
        mac.update(&g.expires_unix.to_be_bytes());
        mac
    }

    /// The signature (64 lower-case hex digits) of a download grant.
    pub fn sign_download(&self, grant: &DownloadGrant<'_>) -> String {
        hex::encode(self.keyed_download(grant).finalize().into_bytes())
    }

    /// Checks a download URL's `sig_hex` for `grant` in constant time, then
    /// its expiry, as [`Self::verify`] does for upload URLs.
    pub fn verify_download(
        &self,
        grant: &DownloadGrant<'_>,
        sig_hex: &str,
        now_unix: i64,
    ) -> Result<(), AuthError> {
        let sig = parse_sig(sig_hex).ok_or(AuthError::DownloadUrlForged)?;
        self.keyed_download(grant)
            .verify_slice(&sig)
            .map_err(|_| AuthError::DownloadUrlForged)?;
        if now_unix > grant.expires_unix {
            return Err(AuthError::DownloadUrlExpired);
        }
        Ok(())
    }

    /// Checks `sig_hex` for `grant` in constant time, then the expiry
    /// (`now_unix` after `expires_unix` fails). A signature made for any other
    /// grant fails as forged.
    pub fn verify(
        &self,
        grant: &UploadGrant<'_>,
        sig_hex: &str,
        now_unix: i64,
    ) -> Result<(), AuthError> {
        let sig = parse_sig(sig_hex).ok_or(AuthError::UploadUrlForged)?;
        self.keyed(grant)
            .verify_slice(&sig)
            .map_err(|_| AuthError::UploadUrlForged)?;
        if now_unix > grant.expires_unix {
            return Err(AuthError::UploadUrlExpired);
        }
        Ok(())
    }
}

/// A signature as 32 bytes, if it is 64 hex digits.
fn parse_sig(sig_hex: &str) -> Option<[u8; 32]> {
    let mut sig = [0u8; 32];
    (sig_hex.len() == 64 && hex::decode_to_slice(sig_hex, &mut sig).is_ok()).then_some(sig)
}
