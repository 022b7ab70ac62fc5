//! Validated identifiers: file ids, owners and part numbers.
//!
//! Values that come from the network become these types before they touch
//! anything else, so a value that exists is a valid one (invariant 7: no
//! `..`, no separators, bounded length).

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// Highest part number (as in S3 and both seed APIs).
pub const MAX_PARTS: u32 = 10_000;

/// Length of a file id in characters.
pub const FILE_ID_LEN: usize = 32;

/// An engine-generated file id: 32 lowercase hex digits (128 random bits),
/// safe in URLs and as a file name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(String);

impl FileId {
    /// A new random id from the operating system's generator.
    ///
    /// # Errors
    /// [`Error::Io`] (role "random source") when the generator fails.
    pub fn generate() -> Result<FileId, Error> {
        crate::io::random_hex(FILE_ID_LEN / 2).map(FileId)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for FileId {
    type Err = Error;

    fn from_str(s: &str) -> Result<FileId, Error> {
        if s.len() != FILE_ID_LEN {
            return Err(Error::BadId(format!(
                "a file id is {FILE_ID_LEN} characters, got {}",
                s.len().min(100_000)
            )));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(Error::BadId(
                "a file id holds lowercase hex digits only".into(),
            ));
        }
        Ok(FileId(s.to_owned()))
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileId({})", self.0)
    }
}

/// Longest owner id accepted.
pub const MAX_OWNER_LEN: usize = 128;

/// Who an upload belongs to: a user or shared-folder id chosen by the
/// embedding service. 1..=128 characters of `A-Z a-z 0-9 . _ - @ :`, not
/// starting with a dot.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner(String);

impl Owner {
    /// Validates an owner id.
    ///
    /// ```
    /// assert!(partseal::Owner::new("alice@example").is_ok());
    /// assert!(partseal::Owner::new("../etc").is_err());
    /// ```
    ///
    /// # Errors
    /// [`Error::BadId`] for an empty or too long id, a character outside
    /// the set above, or a leading dot.
    pub fn new(s: &str) -> Result<Owner, Error> {
        if s.is_empty() || s.len() > MAX_OWNER_LEN {
            return Err(Error::BadId(format!(
                "an owner id is 1 to {MAX_OWNER_LEN} characters"
            )));
        }
        if s.starts_with('.')
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-@:".contains(&b))
        {
            return Err(Error::BadId(
                "an owner id holds letters, digits and . _ - @ : only, and does not start with a dot"
                    .into(),
            ));
        }
        Ok(Owner(s.to_owned()))
    }

    /// The owner as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Owner {
    type Err = Error;
    fn from_str(s: &str) -> Result<Owner, Error> {
        Owner::new(s)
    }
}

impl serde::Serialize for Owner {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Owner {
    /// Validates as [`Owner::new`] does: a record cannot smuggle in an id the
    /// network could not.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Owner, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Owner::new(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Owner({})", self.0)
    }
}

/// A part number in 1..=10000.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartNumber(u32);

impl PartNumber {
    /// Part 1.
    pub const MIN: PartNumber = PartNumber(1);
    /// The highest part number, [`MAX_PARTS`].
    pub const MAX: PartNumber = PartNumber(MAX_PARTS);

    /// Validates a part number as given by a client.
    ///
    /// # Errors
    /// [`Error::PartOutOfRange`] outside `1..=`[`MAX_PARTS`].
    pub fn new(n: u64) -> Result<PartNumber, Error> {
        if n == 0 || n > u64::from(MAX_PARTS) {
            return Err(Error::PartOutOfRange {
                part: n,
                reason: format!("part numbers run from 1 to {MAX_PARTS}"),
            });
        }
        Ok(PartNumber(n as u32))
    }

    /// The number.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for PartNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
