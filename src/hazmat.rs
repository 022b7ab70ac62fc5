//! Low-level SHA-256 midstate and chain-link primitives.
//!
//! These are the building blocks of partseal's parallel verification: the
//! raw state after whole 64-byte blocks ([`Midstate`]), an incremental
//! hasher that exposes it ([`Hasher`]), and the check of a chain of parts
//! against their starting states ([`compute_link`], [`verify_chain`], and
//! their mapped forms [`compute_link_mapped`], [`verify_chain_mapped`]).
//!
//! They are sharp: a midstate is not a digest, resuming from a midstate a
//! client sent proves nothing about the bytes before it, and only a chain
//! that starts at the SHA-256 initial value and ends in a finalized digest
//! proves a file's SHA-256. The [`Engine`](crate::Engine) uses them
//! correctly; use them directly only to build something like it.

pub use crate::chain::{
    LinkInput, LinkValue, compute_link, compute_link_mapped, verify_chain, verify_chain_mapped,
};
pub use crate::midstate::{BLOCK, Hasher, INITIAL_WORDS, Midstate};
