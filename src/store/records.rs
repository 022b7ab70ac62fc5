//! The records the store keeps beside the bytes: one per open upload, one
//! per acknowledged part, one per committed file.
//!
//! Records hold typed values (digests, midstates, owners); their JSON form
//! spells digests and midstates as hex, so a record stays readable with
//! `cat`, and a record that does not parse or validate is an I/O error on
//! load, never a value that slips through.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::Owner;
use crate::io::read_small;
use crate::midstate::{HashCtx, Sha256};
use crate::plan::PartPlan;

/// How an upload's parts are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// Nothing planned or acknowledged yet.
    Unset,
    /// Parts carry midstates; each is a link checked on arrival and written
    /// at its offset in the assembly file.
    Chain,
    /// Parts without midstates, stored as separate files and hashed in order.
    Stream,
}

/// The record of an open upload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct UploadRecord {
    /// Who may act on it.
    pub owner: Owner,
    /// Declared total length.
    pub length: Option<u64>,
    /// Declared SHA-256.
    pub sha256: Option<Sha256>,
    /// Declared MD5.
    #[serde(with = "md5_hex")]
    pub md5: Option<[u8; 16]>,
    /// How parts are checked.
    pub mode: Mode,
    /// The plan, by part number.
    pub plan: BTreeMap<u32, PartPlan>,
    /// Labels of the embedding service (a name, a folder, ...), kept as given.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// How many parts the upload will have, when declared without sizes.
    #[serde(default)]
    pub part_count: Option<u32>,
}

/// The record of a received part; its existence acknowledges the part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PartRecord {
    /// Length in bytes.
    pub len: u64,
    /// The part's fingerprint: in stream mode its own SHA-256, in chain mode
    /// the SHA-256 of the file through the part's end (see
    /// [`PartReceipt::sha256`](crate::PartReceipt::sha256)).
    pub sha256: Sha256,
    /// File (in `parts/`) holding the bytes; `None` for a part at its place
    /// in the assembly (chain mode, or a stream part whose place the plan
    /// gives: the sum of the planned sizes before it). A replacement is a
    /// file until it is settled into the assembly.
    pub data: Option<String>,
    /// Chain mode: the state after the part, when it is whole blocks.
    pub state_out: Option<HashCtx>,
    /// Chain mode: the file digest if this part is the last one.
    pub digest_if_last: Option<Sha256>,
}

/// The record of a committed file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct FileRecord {
    /// Its owner.
    pub owner: Owner,
    /// Its length.
    pub length: u64,
    /// Its SHA-256.
    pub sha256: Sha256,
    /// Its MD5, when computed.
    #[serde(with = "md5_hex")]
    pub md5: Option<[u8; 16]>,
    /// How many parts it was made of.
    pub parts: u32,
    /// Labels given when the upload was created.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The nonce of the commit event that committed it (`events/log`),
    /// when commit events are on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_nonce: Option<String>,
}

mod md5_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<[u8; 16]>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(m) => s.serialize_some(&hex::encode(m)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<[u8; 16]>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| {
            let mut out = [0u8; 16];
            hex::decode_to_slice(&s, &mut out)
                .map(|()| out)
                .map_err(|_| serde::de::Error::custom("an MD5 is 32 hex digits"))
        })
        .transpose()
    }
}

/// Serializes a record as JSON.
pub(crate) fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Records are plain structs of strings and numbers: serializing cannot fail.
    serde_json::to_vec_pretty(v).unwrap_or_default()
}

/// Reads and parses a record.
pub(crate) fn load_json<T: for<'de> Deserialize<'de>>(
    path: &Path,
    role: &'static str,
) -> Result<T> {
    let bytes = read_small(path, role)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::io(role)(io::Error::new(io::ErrorKind::InvalidData, e)))
}
