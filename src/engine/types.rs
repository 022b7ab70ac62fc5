//! The values callers hand to the engine and get back from it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::id::PartNumber;
use crate::midstate::Sha256;
use crate::pipeline::PipelineOptions;
use crate::plan::{Limits, PartPlan};

/// Engine settings. Start from [`Config::default`] and change fields.
///
/// ```
/// let mut cfg = partseal::Config::default();
/// cfg.limits.max_file_size = 1 << 30;
/// cfg.eager_hashing = false;
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Part and file size limits.
    pub limits: Limits,
    /// Bytes per mapped window of the in-order merge (default 4 MiB).
    pub merge_window: usize,
    /// Windows in flight between the merge's stages (default 4).
    pub merge_depth: usize,
    /// Hash contiguous prefixes of stream-mode uploads in the background as
    /// parts arrive, so that complete only hashes what came last.
    pub eager_hashing: bool,
    /// Bytes read from a part body at a time (default 512 KiB, at least
    /// 64 KiB): one buffer per part being received, so 64 parts in flight
    /// hold 32 MiB. Parts with a place in the assembly (chain mode, planned
    /// stream parts) are written from it with `O_DIRECT`.
    pub ingest_buffer: usize,
    /// Open uploads without activity (create, plan, part, complete attempt)
    /// for this long are aborted by
    /// [`Engine::expire_idle_uploads`](crate::Engine::expire_idle_uploads);
    /// `None` keeps them for ever. Default 7 days.
    pub upload_ttl: Option<std::time::Duration>,
    /// Open uploads idle this long are dropped from memory by
    /// [`Engine::expire_idle_uploads`](crate::Engine::expire_idle_uploads)
    /// and loaded again from their records on their next use. Default
    /// 5 minutes.
    pub unload_after: std::time::Duration,
    /// Keep an outbox of commit events in the store (`ROOT/events/`), read
    /// with [`Engine::commits_since`](crate::Engine::commits_since). Off by
    /// default: once on, events are kept until acknowledged with
    /// [`Engine::ack_commits`](crate::Engine::ack_commits).
    pub commit_events: bool,
    /// Faults to inject into durable file operations; none by default.
    #[cfg(feature = "fault-injection")]
    pub faults: crate::faults::Faults,
}

impl Default for Config {
    fn default() -> Self {
        let pipeline = PipelineOptions::default();
        Config {
            limits: Limits::default(),
            merge_window: pipeline.window,
            merge_depth: pipeline.depth,
            eager_hashing: true,
            ingest_buffer: 512 << 10,
            upload_ttl: Some(std::time::Duration::from_secs(7 * 24 * 3600)),
            unload_after: std::time::Duration::from_secs(300),
            commit_events: false,
            #[cfg(feature = "fault-injection")]
            faults: crate::faults::Faults::none(),
        }
    }
}

impl Config {
    /// The same settings with other limits.
    pub fn with_limits(mut self, limits: Limits) -> Config {
        self.limits = limits;
        self
    }

    pub(crate) fn pipeline(&self) -> PipelineOptions {
        PipelineOptions {
            window: self.merge_window.max(64 * 1024),
            depth: self.merge_depth.max(1),
            ..PipelineOptions::default()
        }
    }
}

/// What a client declares when it starts an upload; everything is optional.
///
/// ```
/// # use partseal::{FileSpec, Sha256};
/// let spec = FileSpec::default()
///     .with_length(12)
///     .with_sha256(Sha256::digest(b"hello, world"));
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct FileSpec {
    /// The total length, if known.
    pub length: Option<u64>,
    /// The whole file's SHA-256, if known.
    pub sha256: Option<Sha256>,
    /// The whole file's MD5, if known; complete then computes and checks it.
    pub md5: Option<[u8; 16]>,
    /// Parts declared up front (more may follow with
    /// [`Engine::plan_parts`](crate::Engine::plan_parts)).
    pub plan: Vec<PartPlan>,
    /// Labels of the embedding service (file name, folder, ...), stored with
    /// the upload and the committed file and returned by
    /// [`Engine::get`](crate::Engine::get). The engine does not interpret
    /// them; at most [`MAX_LABELS`] labels of at most [`MAX_LABEL_LEN`] bytes
    /// each.
    pub labels: BTreeMap<String, String>,
    /// How many parts the upload will have, for clients that say so without
    /// giving sizes (MetaStudio's `file_multipart_count`): parts beyond it
    /// are refused and complete requires all of `1..=count`. At least 1.
    pub part_count: Option<u32>,
}

impl FileSpec {
    /// Declares the total length.
    pub fn with_length(mut self, length: u64) -> FileSpec {
        self.length = Some(length);
        self
    }
    /// Declares the file's SHA-256.
    pub fn with_sha256(mut self, sha256: Sha256) -> FileSpec {
        self.sha256 = Some(sha256);
        self
    }
    /// Declares the file's MD5.
    pub fn with_md5(mut self, md5: [u8; 16]) -> FileSpec {
        self.md5 = Some(md5);
        self
    }
    /// Declares parts up front.
    pub fn with_plan(mut self, plan: Vec<PartPlan>) -> FileSpec {
        self.plan = plan;
        self
    }
    /// Attaches labels.
    pub fn with_labels(mut self, labels: BTreeMap<String, String>) -> FileSpec {
        self.labels = labels;
        self
    }
    /// Declares how many parts there will be.
    pub fn with_part_count(mut self, count: u32) -> FileSpec {
        self.part_count = Some(count);
        self
    }
}

/// Most labels an upload may carry.
pub const MAX_LABELS: usize = 32;
/// Longest label key or value, in bytes.
pub const MAX_LABEL_LEN: usize = 4096;

/// Whether a part's link in the SHA-256 chain was checked on arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkCheck {
    /// The upload has no midstates; the file is hashed in order at complete.
    NotApplicable,
    /// The part leads exactly to the next part's `hashCtx` (or to the file's
    /// declared digest, for the last part).
    Holds,
    /// The next part's `hashCtx` (or the file digest) is not known yet; the
    /// link is checked when it is, at complete at the latest.
    Pending,
}

/// The answer to a stored part.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartReceipt {
    /// The part number.
    pub number: PartNumber,
    /// Bytes stored.
    pub len: u64,
    /// The part's fingerprint, usable as its ETag. In stream mode it is the
    /// SHA-256 of the part's bytes. In chain mode it is the SHA-256 of the
    /// file's bytes from the start through the end of this part, as the
    /// part's link computes it from its `hashCtx`: it pins the part's bytes
    /// as strongly (a different part with the same `hashCtx` and digest
    /// would be a SHA-256 collision) and costs no second pass over them.
    /// For the last part of a chain upload it is the file's SHA-256.
    pub sha256: Sha256,
    /// The state of its link.
    pub link: LinkCheck,
}

impl PartReceipt {
    /// A receipt, for backends other than the local [`Engine`](crate::Engine)
    /// that answer with the same facts.
    pub fn new(number: PartNumber, len: u64, sha256: Sha256, link: LinkCheck) -> PartReceipt {
        PartReceipt {
            number,
            len,
            sha256,
            link,
        }
    }
}

/// A part as listed by [`Engine::parts`](crate::Engine::parts).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartInfo {
    /// The part number.
    pub number: PartNumber,
    /// Its length.
    pub len: u64,
    /// Its fingerprint, as [`PartReceipt::sha256`] gives it: the part's own
    /// SHA-256 in stream mode, the SHA-256 of the file through the part's
    /// end in chain mode.
    pub sha256: Sha256,
    /// Chain mode: its link was checked and holds (it leads to the next
    /// part's `hashCtx`, or to the declared digest). False in stream mode,
    /// where nothing is checked before complete.
    pub link_checked: bool,
}

impl PartInfo {
    /// A listed part, for backends other than the local engine.
    pub fn new(number: PartNumber, len: u64, sha256: Sha256, link_checked: bool) -> PartInfo {
        PartInfo {
            number,
            len,
            sha256,
            link_checked,
        }
    }
}

/// The facts of a verified, committed file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// The file's SHA-256.
    pub sha256: Sha256,
    /// The file's MD5, when the upload declared one.
    pub md5: Option<[u8; 16]>,
    /// The file's length.
    pub length: u64,
    /// How many parts it was made of.
    pub parts: u32,
}

impl Verified {
    /// A verified file's facts, for backends other than the local engine.
    pub fn new(sha256: Sha256, md5: Option<[u8; 16]>, length: u64, parts: u32) -> Verified {
        Verified {
            sha256,
            md5,
            length,
            parts,
        }
    }
}

/// The answer to [`Engine::complete`](crate::Engine::complete).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Completion {
    /// The committed file's facts.
    pub file: Verified,
    /// Whether this call committed the file. Of any number of completes of
    /// one upload, concurrent or not, exactly one answers `true`; the others
    /// found it committed already.
    pub committed_now: bool,
}

impl Completion {
    /// A completion, for backends other than the local engine.
    pub fn new(file: Verified, committed_now: bool) -> Completion {
        Completion {
            file,
            committed_now,
        }
    }
}

/// A committed file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Committed {
    /// Where its bytes are (read-only to callers: a committed file never
    /// changes). For a backend that keeps files in an object store, the
    /// object's key.
    pub path: PathBuf,
    /// Its length.
    pub length: u64,
    /// Its SHA-256.
    pub sha256: Sha256,
    /// Its MD5, when computed at complete.
    pub md5: Option<[u8; 16]>,
    /// The labels given at create.
    pub labels: BTreeMap<String, String>,
}

impl Committed {
    /// A committed file's facts, for backends other than the local engine.
    pub fn new(
        path: PathBuf,
        length: u64,
        sha256: Sha256,
        md5: Option<[u8; 16]>,
        labels: BTreeMap<String, String>,
    ) -> Committed {
        Committed {
            path,
            length,
            sha256,
            md5,
            labels,
        }
    }
}

/// How an open upload is verified at complete
/// ([`Engine::upload_mode`](crate::Engine::upload_mode)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UploadMode {
    /// Parts carry midstates; each link was checked on arrival.
    Chain,
    /// Parts are hashed in order at complete.
    Stream,
}
