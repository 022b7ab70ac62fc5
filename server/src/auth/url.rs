//! The server's own upload URLs: an HMAC over the fields that select what a
//! `PUT` does, so such a URL needs no other credentials.

use hmac::Mac;

use super::{AuthError, HmacSha256, hmac_with};

/// Signs and checks the server's upload URLs: HMAC-SHA256 over the file id,
/// part number, owner and expiry, so a URL needs no other credentials, cannot
/// be forged, and holds for that one part of that one file only.
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
    /// key.
    const TAG: &'static [u8] = b"partseal upload url v1\0";

    /// A signer keyed with `key` (keep it across restarts, or earlier URLs
    /// stop working).
    pub fn new(key: [u8; 32]) -> UrlSigner {
        UrlSigner {
            mac: hmac_with(&key),
        }
    }

    /// A fresh random key from the operating system.
    pub fn try_generate_key() -> Result<[u8; 32], getrandom::Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)?;
        Ok(key)
    }

    /// A fresh random key from the operating system.
    ///
    /// # Panics
    /// If the operating system has no randomness to give (see
    /// [`UrlSigner::try_generate_key`] to handle that instead).
    pub fn generate_key() -> [u8; 32] {
        Self::try_generate_key().expect("the operating system's random source failed")
    }

    /// The MAC state after an unambiguous encoding of the fields: each string
    /// with its length in front, numbers fixed-width big-endian.
    fn keyed(&self, file_id: &str, part: u32, owner: &str, expires_unix: i64) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(Self::TAG);
        mac.update(&(file_id.len() as u64).to_be_bytes());
        mac.update(file_id.as_bytes());
        mac.update(&part.to_be_bytes());
        mac.update(&(owner.len() as u64).to_be_bytes());
        mac.update(owner.as_bytes());
        mac.update(&expires_unix.to_be_bytes());
        mac
    }

    /// The signature (64 lower-case hex digits) for part `part` of `file_id`
    /// owned by `owner`, valid until `expires_unix` (seconds since the epoch).
    pub fn sign(&self, file_id: &str, part: u32, owner: &str, expires_unix: i64) -> String {
        hex::encode(
            self.keyed(file_id, part, owner, expires_unix)
                .finalize()
                .into_bytes(),
        )
    }

    /// Checks `sig_hex` for these fields in constant time, then the expiry
    /// (`now_unix` after `expires_unix` fails). A signature made for another
    /// file, part, owner or expiry fails as forged.
    pub fn verify(
        &self,
        file_id: &str,
        part: u32,
        owner: &str,
        expires_unix: i64,
        sig_hex: &str,
        now_unix: i64,
    ) -> Result<(), AuthError> {
        let mut sig = [0u8; 32];
        if sig_hex.len() != 64 || hex::decode_to_slice(sig_hex, &mut sig).is_err() {
            return Err(AuthError::UploadUrlForged);
        }
        self.keyed(file_id, part, owner, expires_unix)
            .verify_slice(&sig)
            .map_err(|_| AuthError::UploadUrlForged)?;
        if now_unix > expires_unix {
            return Err(AuthError::UploadUrlExpired);
        }
        Ok(())
    }
}
