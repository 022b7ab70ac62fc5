//! The upload lifecycle around create and complete: expiry of abandoned
//! uploads, the memory of aborts, the status of an id, and reading a
//! committed file back.
//!
//! Expiry removes an upload the way abort does, by one rename into `tmp/`
//! (emptied at open), so a crash mid-sweep leaves each upload whole or gone.
//! Committed files never expire.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::id::{FileId, Owner};
use crate::midstate::Sha256;
use crate::store::{self, UploadRecord, load_json};

use super::state::{Phase, Upload, lock};
use super::{Committed, Engine, PartInfo, Slot};

/// Most aborts remembered; the oldest are forgotten first.
const MAX_TOMBSTONES: usize = 100_000;

/// An upload removed by expiry.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExpiredUpload {
    /// Its id.
    pub id: FileId,
    /// Its owner.
    pub owner: Owner,
    /// How long it had been idle.
    pub idle: Duration,
}

impl ExpiredUpload {
    /// An expired upload, for backends other than the local engine.
    pub fn new(id: FileId, owner: Owner, idle: Duration) -> ExpiredUpload {
        ExpiredUpload { id, owner, idle }
    }
}

/// What one run of [`Engine::expire_idle_uploads`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct SweepReport {
    /// The uploads it removed.
    pub expired: Vec<ExpiredUpload>,
    /// Uploads it could not look at or remove, with the error; the next
    /// sweep tries again.
    pub failed: Vec<(FileId, Error)>,
}

/// An open upload as [`Engine::status`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenUpload {
    /// The declared length, if any.
    pub length: Option<u64>,
    /// The declared SHA-256, if any.
    pub sha256: Option<Sha256>,
    /// The declared MD5, if any.
    pub md5: Option<[u8; 16]>,
    /// The declared part count, if any.
    pub part_count: Option<u32>,
    /// The parts received, by number.
    pub parts: Vec<PartInfo>,
    /// The labels given at create.
    pub labels: BTreeMap<String, String>,
}

impl OpenUpload {
    /// An open upload's facts, for backends other than the local engine.
    pub fn new(
        length: Option<u64>,
        sha256: Option<Sha256>,
        md5: Option<[u8; 16]>,
        part_count: Option<u32>,
        parts: Vec<PartInfo>,
        labels: BTreeMap<String, String>,
    ) -> OpenUpload {
        OpenUpload {
            length,
            sha256,
            md5,
            part_count,
            parts,
            labels,
        }
    }
}

/// Where an id of an owner stands.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UploadStatus {
    /// Still taking parts.
    Open(OpenUpload),
    /// Committed.
    Committed(Committed),
    /// Aborted since the engine was opened, with the note given to
    /// [`Engine::abort_with_note`].
    Aborted {
        /// The note, if any.
        note: Option<String>,
    },
}

/// Aborts remembered since open, so that a repeated abort succeeds and a
/// status can say "aborted" rather than "unknown".
#[derive(Default)]
pub(super) struct Tombstones {
    by_id: HashMap<FileId, (Owner, Option<String>)>,
    order: VecDeque<FileId>,
}

impl Tombstones {
    pub(super) fn insert(&mut self, id: &FileId, owner: &Owner, note: Option<&str>) {
        if self
            .by_id
            .insert(id.clone(), (owner.clone(), note.map(str::to_owned)))
            .is_none()
        {
            self.order.push_back(id.clone());
        }
        while self.order.len() > MAX_TOMBSTONES {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
    }

    /// The note of `owner`'s abort of `id`, if remembered.
    pub(super) fn get(&self, id: &FileId, owner: &Owner) -> Option<Option<String>> {
        self.by_id
            .get(id)
            .filter(|(o, _)| o == owner)
            .map(|(_, note)| note.clone())
    }
}

/// A committed file opened for reading: `Read + Seek` over its bytes, which
/// never change. A file deleted while a reader is open stays readable, whole,
/// through that reader.
#[derive(Debug)]
pub struct FileReader {
    file: File,
    length: u64,
    sha256: Sha256,
    md5: Option<[u8; 16]>,
}

impl FileReader {
    /// The file's length.
    pub fn len(&self) -> u64 {
        self.length
    }
    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }
    /// The file's SHA-256.
    pub fn sha256(&self) -> Sha256 {
        self.sha256
    }
    /// The file's MD5, when it was computed at complete.
    pub fn md5(&self) -> Option<[u8; 16]> {
        self.md5
    }
}

impl Read for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl Seek for FileReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

impl Engine {
    /// Aborts every open upload idle for longer than
    /// [`Config::upload_ttl`](crate::Config::upload_ttl), and drops long idle
    /// uploads from memory. An upload with a part upload or a complete in
    /// progress is not idle. Run it every [`Engine::sweep_interval`]; the
    /// server does.
    ///
    /// # Errors
    /// None as a whole: an upload that cannot be examined or removed is
    /// listed in [`SweepReport::failed`] and tried again next time.
    pub fn expire_idle_uploads(&self) -> SweepReport {
        let mut report = SweepReport::default();
        let now = SystemTime::now();
        let snapshot: Vec<(FileId, Option<Arc<Upload>>)> = lock(&self.inner.uploads)
            .iter()
            .map(|(id, slot)| {
                let up = match slot {
                    Slot::Loaded(up) => Some(up.clone()),
                    Slot::Unloaded => None,
                };
                (id.clone(), up)
            })
            .collect();
        let ttl = self.inner.cfg.upload_ttl;
        for (id, up) in snapshot {
            let res = match (up, ttl) {
                (Some(up), Some(ttl)) if up.idle(now) > ttl => self.expire_loaded(&up, ttl, now),
                (Some(up), _) => {
                    let long_idle = up.idle(now) > self.inner.cfg.unload_after;
                    // Our handle must go first: unload drops only uploads
                    // that nobody else holds.
                    drop(up);
                    if long_idle {
                        self.unload(&id);
                    }
                    Ok(None)
                }
                (None, Some(ttl)) => self.expire_unloaded(&id, ttl, now),
                (None, None) => Ok(None),
            };
            match res {
                Ok(Some(e)) => report.expired.push(e),
                Ok(None) => {}
                Err(e) => report.failed.push((id, e)),
            }
        }
        report
    }

    /// How often [`Engine::expire_idle_uploads`] should run: a quarter of
    /// the TTL, at most an hour (at least a second); `None` without a TTL.
    pub fn sweep_interval(&self) -> Option<Duration> {
        self.inner.cfg.upload_ttl.map(|ttl| {
            (ttl / 4)
                .min(Duration::from_secs(3600))
                .max(Duration::from_secs(1))
        })
    }

    fn expire_loaded(
        &self,
        up: &Arc<Upload>,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Option<ExpiredUpload>> {
        // A part upload or a complete holds the gate: the upload is active.
        let Some(_gate) = up.try_exclusive() else {
            return Ok(None);
        };
        let mut st = up.state();
        let idle = up.idle(now);
        if st.phase != Phase::Open || idle <= ttl {
            return Ok(None);
        }
        let layout = &self.inner.layout;
        let grave = match store::bury(layout, &layout.upload_dir(&up.id), &layout.uploads_dir()) {
            Ok(g) => Some(g),
            // Renamed away, but not durably: it is gone for every caller; a
            // crash may bring it back whole, never half.
            Err(_) if !layout.upload_dir(&up.id).exists() => None,
            Err(e) => return Err(e),
        };
        st.phase = Phase::Expired;
        let owner = st.record.owner.clone();
        drop(st);
        lock(&self.inner.uploads).remove(&up.id);
        // Gone already; the bytes in `tmp/` go soon or at next open.
        if let Some(grave) = grave {
            self.inner.janitor.remove(grave);
        }
        Ok(Some(ExpiredUpload {
            id: up.id.clone(),
            owner,
            idle,
        }))
    }

    fn expire_unloaded(
        &self,
        id: &FileId,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Option<ExpiredUpload>> {
        let layout = &self.inner.layout;
        // Nobody loads it while this runs; the disk work runs outside the
        // map's lock.
        let _loading = self.load_lock(id);
        if !matches!(lock(&self.inner.uploads).get(id), Some(Slot::Unloaded)) {
            return Ok(None);
        }
        let idle = store::activity_stamp(layout, id)
            .and_then(|t| now.duration_since(t).ok())
            .unwrap_or_default();
        if idle <= ttl {
            return Ok(None);
        }
        if layout.file_record(id).exists() || !layout.upload_record(id).exists() {
            // Committed before a crash, or a creation never made durable:
            // recovering it is all that is left to do.
            if store::load_upload(layout, id)?.is_none() {
                lock(&self.inner.uploads).remove(id);
            }
            return Ok(None);
        }
        let record: UploadRecord = load_json(&layout.upload_record(id), "upload record")?;
        let grave = store::bury(layout, &layout.upload_dir(id), &layout.uploads_dir())?;
        lock(&self.inner.uploads).remove(id);
        self.inner.janitor.remove(grave);
        Ok(Some(ExpiredUpload {
            id: id.clone(),
            owner: record.owner,
            idle,
        }))
    }

    /// Drops a loaded, idle upload from memory if nobody holds it.
    fn unload(&self, id: &FileId) {
        let mut map = lock(&self.inner.uploads);
        if let Some(Slot::Loaded(up)) = map.get(id) {
            // Handles are only taken under this lock: a count of one is the
            // map's own.
            let idle = Arc::strong_count(up) == 1
                && up.state().phase == Phase::Open
                && !up.eager_running.load(std::sync::atomic::Ordering::Acquire);
            if idle {
                map.insert(id.clone(), Slot::Unloaded);
            }
        }
    }

    /// Where `id` of `owner` stands: open (with its parts), committed, or
    /// aborted since the engine was opened.
    ///
    /// # Errors
    /// [`Error::NotFound`] / [`Error::NotOwner`] for an id unknown to the
    /// engine or of another owner (an expired upload is unknown),
    /// [`Error::Io`] when its records cannot be read.
    pub fn status(&self, owner: &Owner, id: &FileId) -> Result<UploadStatus> {
        if let Some(up) = self.lookup(id)? {
            let st = up.state();
            if st.record.owner != *owner {
                return Err(Error::NotOwner);
            }
            if st.phase == Phase::Open {
                let record = st.record.clone();
                drop(st);
                return Ok(UploadStatus::Open(OpenUpload {
                    length: record.length,
                    sha256: record.sha256,
                    md5: record.md5,
                    part_count: record.part_count,
                    parts: self.parts(owner, id)?,
                    labels: record.labels,
                }));
            }
        }
        match self.get(owner, id) {
            Ok(c) => Ok(UploadStatus::Committed(c)),
            Err(Error::NotFound) => match lock(&self.inner.aborted).get(id, owner) {
                Some(note) => Ok(UploadStatus::Aborted { note }),
                None => Err(Error::NotFound),
            },
            Err(e) => Err(e),
        }
    }

    /// Opens a committed file for reading, without exposing where it lives.
    ///
    /// ```no_run
    /// # use partseal::{Config, Engine, FileSpec, Owner, PartNumber};
    /// # let engine = Engine::open("./data", Config::default())?;
    /// # let owner = Owner::new("alice")?;
    /// # let id = engine.create(&owner, FileSpec::default())?;
    /// # engine.put_part(&owner, &id, PartNumber::MIN, &b"hello"[..], None)?;
    /// # engine.complete(&owner, &id, None)?;
    /// let mut reader = engine.open_file(&owner, &id)?;
    /// let mut out = Vec::new();
    /// std::io::copy(&mut reader, &mut out)?;
    /// assert_eq!(partseal::Sha256::digest(&out), reader.sha256());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::NotFound`] / [`Error::NotOwner`] for an unknown or foreign
    /// file (or one deleted meanwhile), [`Error::Io`] when it cannot be
    /// opened.
    pub fn open_file(&self, owner: &Owner, id: &FileId) -> Result<FileReader> {
        let c = self.get(owner, id)?;
        let file = match File::open(&c.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::NotFound),
            Err(e) => return Err(Error::io("committed file")(e)),
        };
        Ok(FileReader {
            file,
            length: c.length,
            sha256: c.sha256,
            md5: c.md5,
        })
    }
}
