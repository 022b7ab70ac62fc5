//! partseal finishes file uploads.
//!
//! It stores a file uploaded as parts (in parallel, in any order), proves
//! that the bytes it holds are exactly the bytes the client hashed, puts them
//! together into one file, and commits it atomically.
//!
//! When clients send, with every part, the SHA-256 midstate of everything
//! before it (KooDrive's `hashCtx`), every part is a link that is checked on
//! its own as it arrives, on all cores at once; completing the upload then
//! has almost nothing left to do. Uploads without midstates are hashed in
//! order, pipelined with the merge and, as parts arrive, in the background.
//!
//! ```no_run
//! use partseal::{Config, Engine, FileSpec, Owner, PartNumber};
//!
//! # fn main() -> partseal::Result<()> {
//! let engine = Engine::open("./data", Config::default())?;
//! let owner = Owner::new("alice")?;
//! let id = engine.create(&owner, FileSpec::default())?;
//! engine.put_part(&owner, &id, PartNumber::new(1)?, &b"hello, "[..], None)?;
//! engine.put_part(&owner, &id, PartNumber::new(2)?, &b"world"[..], None)?;
//! let done = engine.complete(&owner, &id, None)?;
//! println!("{}  {}", done.file.sha256, done.file.length);
//! # Ok(())
//! # }
//! ```
//!
//! The crate's surface: [`Engine`] and the types it takes and returns,
//! [`Error`], [`offline`] for work on files the caller holds (what the
//! `partseal` command runs), and [`hazmat`] for the midstate and chain-link
//! primitives underneath. Features: `cli` builds the `partseal` command;
//! `fault-injection` compiles the test seam that makes chosen file
//! operations fail (never in production builds).
#![warn(missing_docs, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod chain;
mod engine;
mod error;
#[cfg(feature = "fault-injection")]
pub mod faults;
#[cfg(not(feature = "fault-injection"))]
mod faults;
pub mod hazmat;
mod id;
mod io;
mod midstate;
pub mod offline;
mod pipeline;
pub mod plan;
mod store;

pub use engine::{
    CommitEvent, Committed, Completion, Config, Engine, ExpiredUpload, FileReader, FileSpec,
    LinkCheck, MAX_LABEL_LEN, MAX_LABELS, OpenUpload, PartInfo, PartReceipt, SweepReport,
    UploadMode, UploadStatus, Verified,
};
pub use error::{DigestKind, Error, LinkEnd, ParseError, Result};
pub use id::{FILE_ID_LEN, FileId, MAX_OWNER_LEN, MAX_PARTS, Owner, PartNumber};
pub use midstate::{HashCtx, Sha256};
pub use plan::{Limits, PartPlan};

/// Compiles the examples in README.md so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
