//! The engine's one error type.
//!
//! Variants carry facts (part numbers, digests, reasons) so that a server can
//! map each one to its API's codes in one place. Messages never contain a raw
//! path that came from the network: I/O errors name the role of the file.

use std::fmt;
use std::io;

use crate::midstate::Sha256;

/// A value from outside the process did not parse (hex, hashCtx, an id, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError(String);

impl ParseError {
    /// A parse error with a message for the user.
    pub fn new(msg: impl Into<String>) -> ParseError {
        ParseError(msg.into())
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

/// Which algorithm a [`Error::DigestMismatch`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DigestKind {
    /// Whole-file SHA-256.
    Sha256,
    /// Whole-file MD5.
    Md5,
}

impl fmt::Display for DigestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DigestKind::Sha256 => "SHA-256",
            DigestKind::Md5 => "MD5",
        })
    }
}

/// What a part of a chain upload must lead to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkEnd {
    /// The declared `hashCtx` of this (the next) part.
    Part(u32),
    /// The file's expected SHA-256 (the part is the last one).
    FileDigest,
}

fn link_message(part: u32, to: &LinkEnd) -> String {
    match to {
        LinkEnd::Part(next) => format!(
            "part {part} does not lead to part {next}'s declared hashCtx: \
             part {part}'s bytes or part {next}'s hashCtx is wrong"
        ),
        LinkEnd::FileDigest => format!(
            "part {part}, the last, does not lead to the file's expected SHA-256: \
             part {part}'s bytes or the expected digest is wrong"
        ),
    }
}

/// Everything the engine can refuse or fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No upload or committed file with this id.
    #[error("no upload or file with this id")]
    NotFound,
    /// The id exists but belongs to another owner. Servers should answer as
    /// for [`Error::NotFound`] so that ids of others cannot be probed.
    #[error("the upload belongs to another owner")]
    NotOwner,
    /// A file id or owner that is not well formed.
    #[error("bad id: {0}")]
    BadId(String),
    /// A value that did not parse (hex digest, hashCtx, ...).
    #[error("bad input: {0}")]
    BadInput(#[from] ParseError),
    /// A part plan that was refused, with the reason.
    #[error("bad part plan: {0}")]
    BadPlan(String),
    /// A part number outside 1..=10000 or outside the plan.
    #[error("part {part} is out of range: {reason}")]
    PartOutOfRange {
        /// The part number as given.
        part: u64,
        /// Why it is out of range.
        reason: String,
    },
    /// A part smaller than allowed (or than planned, or a truncated body).
    #[error("part {part} is too small: {len} bytes, at least {min} expected")]
    PartTooSmall {
        /// The part number.
        part: u32,
        /// Bytes received.
        len: u64,
        /// The bound.
        min: u64,
    },
    /// A part larger than allowed (or than planned).
    #[error("part {part} is too large: more than {max} bytes")]
    PartTooLarge {
        /// The part number.
        part: u32,
        /// The bound.
        max: u64,
    },
    /// The file is larger than the configured or declared total.
    #[error("the file is too large: {len} bytes, at most {max} allowed")]
    FileTooLarge {
        /// The length reached or declared.
        len: u64,
        /// The bound.
        max: u64,
    },
    /// Verify found parts missing.
    #[error("missing parts: {}{}", list_parts(.first), if *.count > .first.len() { format!(" and {} more", .count - .first.len()) } else { String::new() })]
    MissingParts {
        /// The first few missing part numbers.
        first: Vec<u32>,
        /// How many are missing in all.
        count: usize,
    },
    /// The SHA-256 chain breaks after this part: its bytes, folded from its
    /// own `hashCtx`, do not lead to `to` (the next part's declared
    /// `hashCtx`, or for the last part the file's digest). Either the part's
    /// bytes or the value it should lead to is wrong; the engine cannot tell
    /// which.
    #[error("{}", link_message(*.part, .to))]
    LinkMismatch {
        /// The part whose bytes were folded.
        part: u32,
        /// What they should have led to.
        to: LinkEnd,
    },
    /// The whole-file digest is not the expected one.
    #[error("{kind} mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Which digest.
        kind: DigestKind,
        /// Expected, hex.
        expected: String,
        /// Computed, hex.
        actual: String,
    },
    /// The digest given at verify differs from the one declared at create.
    #[error(
        "the SHA-256 given at complete ({given}) differs from the one declared at create ({declared})"
    )]
    ConflictingExpected {
        /// Declared at create, hex.
        declared: String,
        /// Given at verify, hex.
        given: String,
    },
    /// The file's declared length disagrees with the parts.
    #[error("length mismatch: declared {declared} bytes, parts hold {actual}")]
    LengthMismatch {
        /// Declared at create.
        declared: u64,
        /// Sum of the parts.
        actual: u64,
    },
    /// The operation conflicts with another in progress (a verify, or a
    /// completed upload).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A service the store depends on (a database, an object store) did not
    /// answer or failed; nothing was acknowledged, and the call may be
    /// retried. The local engine never returns it.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// An operating-system error, with the role of the file involved.
    #[error("I/O error on {role}: {source}")]
    Io {
        /// What the file is (e.g. "part data", "upload record").
        role: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

fn list_parts(parts: &[u32]) -> String {
    parts
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Error {
    /// Wraps an I/O error with the role of the file involved.
    pub fn io(role: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { role, source }
    }

    /// A digest mismatch for SHA-256.
    pub fn sha256_mismatch(expected: &Sha256, actual: &Sha256) -> Error {
        Error::DigestMismatch {
            kind: DigestKind::Sha256,
            expected: expected.to_hex(),
            actual: actual.to_hex(),
        }
    }
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
