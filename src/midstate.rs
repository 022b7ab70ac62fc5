//! SHA-256 midstates: the chaining value between 64-byte blocks.
//!
//! This is the low-level ("hazmat") layer the whole engine stands on. A
//! [`Midstate`] is the eight-word SHA-256 state after folding a whole number of
//! 64-byte blocks, together with how many bytes were folded. Folding in pieces
//! and finalizing with the tail gives exactly the digest of hashing the bytes
//! front to back, which is what lets each uploaded part be checked on its own.
//!
//! The compression itself is `sha2::block_api::compress256` (with SHA-NI
//! dispatch); nothing here reimplements SHA-256, only the padding.

use std::fmt;
use std::str::FromStr;

use crate::error::ParseError;

/// Size of a SHA-256 block in bytes.
pub const BLOCK: usize = 64;

/// The SHA-256 initial value (FIPS 180-4, 5.3.3).
pub const INITIAL_WORDS: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// A SHA-256 digest (32 bytes); displays and parses as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    /// Hashes `data` in one go (a convenience over `sha2`).
    pub fn digest(data: &[u8]) -> Sha256 {
        use sha2::Digest;
        Sha256(sha2::Sha256::digest(data).into())
    }

    /// Lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl FromStr for Sha256 {
    type Err = ParseError;

    /// Parses 64 hex digits, upper or lower case.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let mut out = [0u8; 32];
        if s.len() != 64 {
            return Err(ParseError::new(format!(
                "a SHA-256 digest is 64 hex digits, got {} characters",
                s.len()
            )));
        }
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| ParseError::new("a SHA-256 digest must be hex digits only"))?;
        Ok(Sha256(out))
    }
}

impl serde::Serialize for Sha256 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Sha256 {
    /// Reads the 64 hex digits written by `Serialize`.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Sha256, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({})", self.to_hex())
    }
}

/// The API form of a midstate: the eight state words `h0..h7` of all bytes
/// before a part (KooDrive's `hashCtx`). It carries no length; the length is
/// the part's offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HashCtx(pub [u32; 8]);

impl HashCtx {
    /// The context of the empty prefix: the SHA-256 initial value.
    pub const INITIAL: HashCtx = HashCtx(INITIAL_WORDS);

    /// Builds a context from integers as they arrive in JSON, rejecting any
    /// that is not an unsigned 32-bit value or a list that is not eight long.
    ///
    /// # Errors
    /// A [`ParseError`] naming the bad word or the wrong count.
    pub fn from_ints(words: &[i128]) -> Result<HashCtx, ParseError> {
        if words.len() != 8 {
            return Err(ParseError::new(format!(
                "hashCtx has eight words, got {}",
                words.len()
            )));
        }
        let mut out = [0u32; 8];
        for (i, (slot, &w)) in out.iter_mut().zip(words).enumerate() {
            *slot = u32::try_from(w).map_err(|_| {
                ParseError::new(format!("hashCtx word {i} is {w}, not in 0..=4294967295"))
            })?;
        }
        Ok(HashCtx(out))
    }

    /// The words as unsigned integers, as the API sends them.
    pub fn to_ints(self) -> [u64; 8] {
        self.0.map(u64::from)
    }

    /// The eight words as one hex string (64 digits, big-endian words), a
    /// compact form for records and messages.
    pub fn to_hex(self) -> String {
        let mut bytes = [0u8; 32];
        for (chunk, w) in bytes.chunks_exact_mut(4).zip(self.0) {
            chunk.copy_from_slice(&w.to_be_bytes());
        }
        hex::encode(bytes)
    }

    /// Parses the form written by [`HashCtx::to_hex`].
    ///
    /// # Errors
    /// A [`ParseError`] unless `s` is 64 hex digits.
    pub fn from_hex(s: &str) -> Result<HashCtx, ParseError> {
        let digest: Sha256 = s.parse()?;
        let mut out = [0u32; 8];
        for (w, chunk) in out.iter_mut().zip(digest.0.chunks_exact(4)) {
            *w = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        Ok(HashCtx(out))
    }
}

impl serde::Serialize for HashCtx {
    /// The hex form of [`HashCtx::to_hex`].
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for HashCtx {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<HashCtx, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        HashCtx::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// The SHA-256 state after a whole number of 64-byte blocks.
///
/// `Midstate` values exist only at block boundaries: [`Midstate::fold`]
/// takes whole blocks, and [`Midstate::finalize`] takes the tail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Midstate {
    state: [u32; 8],
    len: u64,
}

impl Default for Midstate {
    fn default() -> Self {
        Midstate::new()
    }
}

impl Midstate {
    /// The state of the empty prefix.
    pub const fn new() -> Midstate {
        Midstate {
            state: INITIAL_WORDS,
            len: 0,
        }
    }

    /// Resumes from a client-supplied context at byte `offset`, which must be
    /// a multiple of 64 (a block boundary).
    ///
    /// # Errors
    /// A [`ParseError`] when `offset` is not a multiple of 64.
    pub fn resume(ctx: HashCtx, offset: u64) -> Result<Midstate, ParseError> {
        if !offset.is_multiple_of(BLOCK as u64) {
            return Err(ParseError::new(format!(
                "offset {offset} is not a multiple of 64 bytes"
            )));
        }
        Ok(Midstate {
            state: ctx.0,
            len: offset,
        })
    }

    /// The state words in API form.
    pub fn ctx(&self) -> HashCtx {
        HashCtx(self.state)
    }

    /// Bytes folded so far (always a multiple of 64).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True before anything was folded.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Folds whole blocks.
    ///
    /// # Panics
    /// If `blocks.len()` is not a multiple of 64: callers split their data
    /// with [`Midstate::fold_prefix`] or [`Hasher`] instead.
    pub fn fold(&mut self, blocks: &[u8]) {
        let (chunks, rest) = blocks.as_chunks::<BLOCK>();
        assert!(rest.is_empty(), "fold takes whole 64-byte blocks");
        sha2::block_api::compress256(&mut self.state, chunks);
        self.len += blocks.len() as u64;
    }

    /// Folds the longest whole-block prefix of `data` and returns the rest
    /// (fewer than 64 bytes).
    pub fn fold_prefix<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        let whole = data.len() - data.len() % BLOCK;
        self.fold(&data[..whole]);
        &data[whole..]
    }

    /// Finishes the hash with the remaining bytes (any length) and the
    /// standard padding over the total length `self.len() + tail.len()`.
    pub fn finalize(mut self, tail: &[u8]) -> Sha256 {
        let tail = self.fold_prefix(tail);
        let total_bits = (self.len + tail.len() as u64).wrapping_mul(8);
        let mut last = [0u8; 2 * BLOCK];
        last[..tail.len()].copy_from_slice(tail);
        last[tail.len()] = 0x80;
        let blocks = if tail.len() + 1 + 8 <= BLOCK { 1 } else { 2 };
        let end = blocks * BLOCK;
        last[end - 8..end].copy_from_slice(&total_bits.to_be_bytes());
        let (chunks, _) = last[..end].as_chunks::<BLOCK>();
        sha2::block_api::compress256(&mut self.state, chunks);
        let mut out = [0u8; 32];
        for (chunk, w) in out.chunks_exact_mut(4).zip(self.state) {
            chunk.copy_from_slice(&w.to_be_bytes());
        }
        Sha256(out)
    }
}

/// A streaming hasher over a [`Midstate`] that accepts data of any length
/// and keeps the partial block (at most 63 bytes) itself.
#[derive(Clone, Debug)]
pub struct Hasher {
    mid: Midstate,
    buf: [u8; BLOCK],
    buffered: usize,
}

impl Default for Hasher {
    fn default() -> Self {
        Hasher::new()
    }
}

impl Hasher {
    /// Starts at `mid` with nothing buffered.
    pub fn from_midstate(mid: Midstate) -> Hasher {
        Hasher {
            mid,
            buf: [0; BLOCK],
            buffered: 0,
        }
    }

    /// Starts from the initial value.
    pub fn new() -> Hasher {
        Hasher::from_midstate(Midstate::new())
    }

    /// Total bytes taken so far.
    pub fn len(&self) -> u64 {
        self.mid.len() + self.buffered as u64
    }

    /// True before any byte was taken.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes more bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        if self.buffered > 0 {
            let take = (BLOCK - self.buffered).min(data.len());
            self.buf[self.buffered..self.buffered + take].copy_from_slice(&data[..take]);
            self.buffered += take;
            data = &data[take..];
            if self.buffered < BLOCK {
                return;
            }
            let block = self.buf;
            self.mid.fold(&block);
            self.buffered = 0;
        }
        let rest = self.mid.fold_prefix(data);
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buffered = rest.len();
    }

    /// The midstate if the bytes taken end on a block boundary.
    pub fn midstate(&self) -> Option<Midstate> {
        (self.buffered == 0).then_some(self.mid)
    }

    /// The digest of everything taken.
    pub fn finalize(&self) -> Sha256 {
        self.mid.finalize(&self.buf[..self.buffered])
    }
}
