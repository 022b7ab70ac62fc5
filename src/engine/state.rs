//! The in-memory state of an open upload, and its locks.
//!
//! Per upload, a gate lets part uploads and plans run in parallel while a
//! complete or an abort excludes them, and a lock per part number
//! serializes two uploads of the same part. The state mutex is held only
//! for short bookkeeping, never across I/O.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use md5::Md5;

use crate::error::{Error, Result};
use crate::id::FileId;
use crate::midstate::Hasher;
use crate::store::{PartRecord, UploadRecord};

/// A checkpoint of eager hashing: the state after parts `1..=n`.
#[derive(Clone)]
pub(super) struct Checkpoint {
    pub(super) sha: Hasher,
    pub(super) md5: Option<Md5>,
    /// The data file of part `n` that was hashed; a replaced part has another.
    pub(super) version: String,
}

/// Where an upload is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Parts and plans are taken.
    Open,
    /// The commit rename happened but making it durable failed: the file
    /// is immutable, and the next complete finishes the job.
    CommitNotDurable,
    /// Committed and cleaned up; the upload no longer exists.
    Committed,
    /// Aborted; the upload no longer exists.
    Aborted,
    /// Removed by expiry; the upload no longer exists.
    Expired,
}

pub(super) struct UploadState {
    pub(super) record: UploadRecord,
    pub(super) parts: BTreeMap<u32, PartRecord>,
    /// `checkpoints[i]` is the state after parts `1..=i+1`.
    pub(super) checkpoints: Vec<Checkpoint>,
    pub(super) phase: Phase,
    /// Part uploads in progress on an upload still without a mode: they
    /// will make it a stream upload, so a chain plan must wait.
    pub(super) unset_puts: u32,
}

impl UploadState {
    /// Refuses writes unless the upload is open.
    pub(super) fn check_open(&self) -> Result<()> {
        match self.phase {
            Phase::Open => Ok(()),
            Phase::CommitNotDurable | Phase::Committed => Err(complete_error()),
            Phase::Aborted | Phase::Expired => Err(Error::NotFound),
        }
    }
}

/// The answer to a write on an upload that was committed.
pub(super) fn complete_error() -> Error {
    Error::Conflict("the upload is complete".into())
}

pub(super) struct Upload {
    pub(super) id: FileId,
    /// Part uploads hold it shared; complete and abort hold it exclusively.
    gate: RwLock<()>,
    part_locks: Mutex<HashMap<u32, Arc<Mutex<()>>>>,
    state: Mutex<UploadState>,
    pub(super) eager_running: AtomicBool,
    /// When it was last active, in milliseconds since the Unix epoch.
    activity: AtomicU64,
    /// Its creation is durable (see `store::create_upload`).
    pub(super) durable: AtomicBool,
}

/// Milliseconds since the Unix epoch of `t` (0 before it).
pub(super) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Locks a mutex; a panic elsewhere must not wedge every later request.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Upload {
    pub(super) fn new(
        id: FileId,
        record: UploadRecord,
        parts: BTreeMap<u32, PartRecord>,
        activity: SystemTime,
    ) -> Upload {
        Upload {
            id,
            gate: RwLock::new(()),
            part_locks: Mutex::new(HashMap::new()),
            state: Mutex::new(UploadState {
                record,
                parts,
                checkpoints: Vec::new(),
                phase: Phase::Open,
                unset_puts: 0,
            }),
            eager_running: AtomicBool::new(false),
            activity: AtomicU64::new(unix_ms(activity)),
            durable: AtomicBool::new(true),
        }
    }

    /// Records activity now: expiry counts idle time from the last one.
    pub(super) fn touch(&self) {
        self.activity
            .fetch_max(unix_ms(SystemTime::now()), Ordering::Relaxed);
    }

    /// How long the upload has been idle at `now`.
    pub(super) fn idle(&self, now: SystemTime) -> Duration {
        Duration::from_millis(unix_ms(now).saturating_sub(self.activity.load(Ordering::Relaxed)))
    }

    pub(super) fn state(&self) -> MutexGuard<'_, UploadState> {
        lock(&self.state)
    }

    pub(super) fn part_lock(&self, n: u32) -> Arc<Mutex<()>> {
        lock(&self.part_locks).entry(n).or_default().clone()
    }

    /// Enters for a part upload or a plan; refused while a complete runs,
    /// so that a client never waits on another's complete.
    pub(super) fn enter(&self) -> Result<RwLockReadGuard<'_, ()>> {
        match self.gate.try_read() {
            Ok(g) => Ok(g),
            Err(TryLockError::Poisoned(e)) => Ok(e.into_inner()),
            Err(TryLockError::WouldBlock) => Err(Error::Conflict(
                "a complete of this upload is in progress".into(),
            )),
        }
    }

    /// Excludes every part upload and plan if none is in progress.
    pub(super) fn try_exclusive(&self) -> Option<RwLockWriteGuard<'_, ()>> {
        match self.gate.try_write() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Excludes every part upload and plan; waits for those in progress.
    pub(super) fn exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.gate.write().unwrap_or_else(|e| e.into_inner())
    }
}
