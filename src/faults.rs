//! Fault injection: a seam in front of every durable file operation of the
//! store (data writes, fsyncs, renames, directory fsyncs).
//!
//! The seam is compiled only with the `fault-injection` feature: a production
//! build carries no hook and its checks compile to nothing. Tests enable the
//! feature, set a [`Faults`] with `Config::with_faults` to make a chosen
//! operation fail with, say, `ENOSPC` or `EIO`, and check that the caller gets
//! a clean error, the invariants hold, and a retry succeeds.

use std::io;
#[cfg(feature = "fault-injection")]
use std::{fmt, sync::Arc};

/// A kind of durable file operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[cfg_attr(not(feature = "fault-injection"), allow(unreachable_pub))]
pub enum Op {
    /// Writing bytes to a file (part data, records, the merged file).
    Write,
    /// Flushing a file to stable storage.
    Fsync,
    /// Renaming a file or directory into place.
    Rename,
    /// Flushing a directory, making entries created or renamed in it durable.
    DirFsync,
}

#[cfg(feature = "fault-injection")]
type Hook = dyn Fn(Op, &'static str) -> Option<io::Error> + Send + Sync;

/// Decides, per operation, whether it fails; no faults by default.
#[cfg(feature = "fault-injection")]
#[derive(Clone, Default)]
pub struct Faults(Option<Arc<Hook>>);

/// Without the `fault-injection` feature nothing ever fails on purpose.
#[cfg(not(feature = "fault-injection"))]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Faults;

#[cfg(not(feature = "fault-injection"))]
impl Faults {
    #[inline(always)]
    pub(crate) fn check(&self, _op: Op, _role: &'static str) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(feature = "fault-injection")]
impl Faults {
    /// No faults.
    pub fn none() -> Faults {
        Faults(None)
    }

    /// Faults chosen by `hook`, which sees each operation and the role of the
    /// file involved and returns the error to fail it with, if any.
    pub fn new(
        hook: impl Fn(Op, &'static str) -> Option<io::Error> + Send + Sync + 'static,
    ) -> Faults {
        Faults(Some(Arc::new(hook)))
    }

    /// Fails when the hook says so.
    pub fn check(&self, op: Op, role: &'static str) -> io::Result<()> {
        match &self.0 {
            Some(hook) => hook(op, role).map_or(Ok(()), Err),
            None => Ok(()),
        }
    }
}

#[cfg(feature = "fault-injection")]
impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Faults(injected)"
        } else {
            "Faults(none)"
        })
    }
}
