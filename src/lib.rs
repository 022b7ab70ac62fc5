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
//! use partseal::{Config, Engine, FileSpec, Owner};
//!
//! # fn main() -> partseal::Result<()> {
//! let engine = Engine::open("./data", Config::default())?;
//! let owner = Owner::new("alice")?;
//! let id = engine.create(&owner, FileSpec::default())?;
//! engine.put_part(&owner, &id, 1, &b"hello, "[..], None)?;
//! engine.put_part(&owner, &id, 2, &b"world"[..], None)?;
//! let verified = engine.verify(&owner, &id, None)?;
//! println!("{}  {}", verified.sha256, verified.length);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod chain;
pub mod engine;
pub mod error;
pub mod faults;
pub mod id;
pub mod io;
pub mod midstate;
pub mod pipeline;
pub mod plan;
pub mod store;

pub use engine::{Committed, Config, Engine, FileSpec, LinkCheck, PartInfo, PartReceipt, Verified};
pub use error::{DigestKind, Error, ParseError, Result};
pub use id::{FileId, Owner, PartNumber};
pub use midstate::{HashCtx, Hasher, Midstate, Sha256};
pub use plan::{Limits, PartPlan};

/// Compiles the examples in README.md so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
