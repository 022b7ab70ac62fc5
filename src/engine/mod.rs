//! The public API: create, plan, put parts, complete, read back.
//!
//! [`Engine`] is synchronous and `Send + Sync`; a server shares one handle
//! between threads. The work of each step lives in its own file: upload
//! state and locks (`state`), ingest of parts (`ingest`), the chain check
//! and the stream verify of complete (`chain_check`, `stream`), the commit
//! itself (`complete`), background hashing of stream uploads (`eager`) and
//! the index of committed files for flash upload (`index`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::error::{Error, ParseError, Result};
use crate::id::{FileId, Owner, PartNumber};
use crate::plan::{self, PartPlan};
use crate::store::{self, FileRecord, Layout, Mode, UploadRecord, load_json};

mod chain_check;
mod complete;
mod eager;
mod events;
mod index;
mod ingest;
mod lifecycle;
mod state;
mod stream;
mod types;

pub use events::CommitEvent;
pub use lifecycle::{ExpiredUpload, FileReader, OpenUpload, SweepReport, UploadStatus};
pub use types::{
    Committed, Completion, Config, FileSpec, LinkCheck, MAX_LABEL_LEN, MAX_LABELS, PartInfo,
    PartReceipt, UploadMode, Verified,
};

use index::ContentIndex;
use lifecycle::Tombstones;
use state::{Phase, Upload, lock};

/// An open upload the engine knows of: recovered and in memory, or still on
/// disk only (after open, or after a long idle time), loaded on first use.
enum Slot {
    Unloaded,
    Loaded(Arc<Upload>),
}

struct Inner {
    layout: Layout,
    cfg: Config,
    uploads: Mutex<HashMap<FileId, Slot>>,
    committed: Mutex<ContentIndex>,
    aborted: Mutex<Tombstones>,
    /// The commit events' outbox, when `cfg.commit_events`.
    events: Option<events::Outbox>,
    /// Serialize loading (and expiring) unloaded uploads, striped by id.
    load_locks: Vec<Mutex<()>>,
    /// Declared before the lock: dropped (and joined) while the store is
    /// still locked.
    janitor: store::Janitor,
    _lock: store::StoreLock,
}

/// The upload engine over one store directory.
///
/// Cloning is cheap and shares the engine; the store stays locked until the
/// last clone is dropped.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Opens the store at `root` (creating it if needed), locks it against
    /// other engines and recovers it: temporary files and unacknowledged part
    /// bytes are removed, interrupted replacements and commits are finished,
    /// and every open upload can continue.
    ///
    /// ```no_run
    /// let engine = partseal::Engine::open("./data", partseal::Config::default())?;
    /// # Ok::<(), partseal::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Conflict`] when another engine holds the store, and
    /// [`Error::Io`] when the store cannot be created, locked or read (a
    /// record that does not parse is an I/O error naming its role).
    pub fn open(root: impl AsRef<Path>, cfg: Config) -> Result<Engine> {
        let lock = store::StoreLock::acquire(root.as_ref())?;
        #[cfg(feature = "fault-injection")]
        let faults = cfg.faults.clone();
        #[cfg(not(feature = "fault-injection"))]
        let faults = crate::faults::Faults;
        let layout = Layout::new(root.as_ref(), faults);
        let uploads = store::recover(&layout)?
            .into_iter()
            .map(|id| (id, Slot::Unloaded))
            .collect();
        let committed = ContentIndex::load(&layout)?;
        let events = if cfg.commit_events {
            Some(events::Outbox::open(&layout)?)
        } else {
            None
        };
        Ok(Engine {
            inner: Arc::new(Inner {
                layout,
                cfg,
                uploads: Mutex::new(uploads),
                committed: Mutex::new(committed),
                aborted: Mutex::new(Tombstones::default()),
                events,
                load_locks: (0..64).map(|_| Mutex::new(())).collect(),
                janitor: store::Janitor::start(),
                _lock: lock,
            }),
        })
    }

    /// The engine's configuration.
    pub fn config(&self) -> &Config {
        &self.inner.cfg
    }

    /// The store's root directory, as given to [`Engine::open`].
    pub fn root(&self) -> &Path {
        self.inner.layout.root()
    }

    /// How many uploads are open (created, neither committed nor aborted nor
    /// expired), whether in memory or still on disk only. Takes one lock
    /// and reads no disk: cheap enough for every metrics scrape.
    pub fn open_upload_count(&self) -> usize {
        lock(&self.inner.uploads).len()
    }

    /// How `complete` will verify the open upload `id` of `owner`: by the
    /// chain of checked links, or by hashing its parts in order (also for an
    /// upload with no part or plan yet). `None` when `id` is no open upload
    /// of `owner` (committed, aborted, expired, unknown or another's).
    ///
    /// # Errors
    /// [`Error::Io`] when the records of an upload not yet in memory cannot
    /// be read.
    pub fn upload_mode(&self, owner: &Owner, id: &FileId) -> Result<Option<UploadMode>> {
        let Some(up) = self.lookup(id)? else {
            return Ok(None);
        };
        let st = up.state();
        if st.record.owner != *owner || st.phase != Phase::Open {
            return Ok(None);
        }
        Ok(Some(match st.record.mode {
            Mode::Chain => UploadMode::Chain,
            Mode::Stream | Mode::Unset => UploadMode::Stream,
        }))
    }

    /// Starts an upload for `owner` and returns its new random id.
    ///
    /// ```no_run
    /// # use partseal::{Config, Engine, FileSpec, Owner};
    /// # let engine = Engine::open("./data", Config::default())?;
    /// let id = engine.create(&Owner::new("alice")?, FileSpec::default().with_length(12))?;
    /// # Ok::<(), partseal::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::FileTooLarge`] for a declared length over the limit,
    /// [`Error::BadPlan`] (and the other plan errors of
    /// [`Engine::plan_parts`]) for a refused plan, [`Error::BadInput`] for
    /// too many or too long labels or a part count of 0, [`Error::Io`] when
    /// the upload cannot be stored.
    pub fn create(&self, owner: &Owner, spec: FileSpec) -> Result<FileId> {
        let limits = &self.inner.cfg.limits;
        if let Some(len) = spec.length
            && len > limits.max_file_size
        {
            return Err(Error::FileTooLarge {
                len,
                max: limits.max_file_size,
            });
        }
        if let Some(count) = spec.part_count
            && (count == 0 || count > crate::id::MAX_PARTS)
        {
            return Err(Error::BadInput(ParseError::new(format!(
                "an upload has 1 to {} parts, not {count}",
                crate::id::MAX_PARTS
            ))));
        }
        let (mode, plan) = if spec.plan.is_empty() {
            (Mode::Unset, BTreeMap::new())
        } else {
            let plan = plan::merge(&BTreeMap::new(), &spec.plan, spec.length, limits)?;
            (plan_mode(&plan), plan)
        };
        if spec.labels.len() > MAX_LABELS
            || spec
                .labels
                .iter()
                .any(|(k, v)| k.len() > MAX_LABEL_LEN || v.len() > MAX_LABEL_LEN)
        {
            return Err(Error::BadInput(ParseError::new(format!(
                "at most {MAX_LABELS} labels of at most {MAX_LABEL_LEN} bytes each"
            ))));
        }
        let record = UploadRecord {
            owner: owner.clone(),
            length: spec.length,
            sha256: spec.sha256,
            md5: spec.md5,
            mode,
            plan,
            labels: spec.labels,
            part_count: spec.part_count,
        };
        let id = FileId::generate()?;
        store::create_upload(&self.inner.layout, &id, &record)?;
        let up = Upload::new(id.clone(), record, BTreeMap::new(), SystemTime::now());
        up.durable.store(false, Ordering::Release);
        lock(&self.inner.uploads).insert(id.clone(), Slot::Loaded(Arc::new(up)));
        Ok(id)
    }

    /// Adds parts to an upload's plan (KooDrive's `multipart/uploadUrl`).
    /// Entries with `offset` and `ctx` put the upload in chain mode. An entry
    /// may be repeated only with the same values. A refused plan changes
    /// nothing.
    ///
    /// # Errors
    /// [`Error::BadPlan`] with the reason (overlaps, gaps, sizes that are not
    /// whole blocks, a plan of the other mode), [`Error::PartOutOfRange`],
    /// [`Error::PartTooLarge`] / [`Error::FileTooLarge`] over the limits,
    /// [`Error::NotFound`] / [`Error::NotOwner`] for an unknown or foreign
    /// upload, [`Error::Conflict`] when the upload is complete or a complete
    /// is running, [`Error::Io`] when the plan cannot be stored.
    pub fn plan_parts(&self, owner: &Owner, id: &FileId, parts: &[PartPlan]) -> Result<()> {
        let up = self.open_upload(owner, id)?;
        let _gate = up.enter()?;
        up.touch();
        // The gate keeps abort and expiry out from here on.
        up.state().check_open()?;
        self.make_durable(&up)?;
        let mut st = up.state();
        st.check_open()?;
        let merged = plan::merge(
            &st.record.plan,
            parts,
            st.record.length,
            &self.inner.cfg.limits,
        )?;
        let mode = plan_mode(&merged);
        let current = if st.record.mode == Mode::Unset && st.unset_puts > 0 {
            // Parts without a plan are arriving: they make it a stream upload.
            Mode::Stream
        } else {
            st.record.mode
        };
        if current != Mode::Unset && current != mode {
            return Err(Error::BadPlan(
                "the upload already has parts of the other kind (with or without hashCtx)".into(),
            ));
        }
        let mut record = st.record.clone();
        record.plan = merged;
        record.mode = mode;
        if mode == Mode::Chain {
            // Created (and its entry made durable) before any part can see
            // the chain mode and write into it.
            store::open_assembly(&self.inner.layout, id)?;
        }
        store::save_upload(&self.inner.layout, id, &record)?;
        st.record = record;
        Ok(())
    }

    /// Lists the parts received so far, by number.
    ///
    /// # Errors
    /// [`Error::NotFound`] / [`Error::NotOwner`] for an unknown or foreign
    /// upload, [`Error::Conflict`] for a committed one.
    pub fn parts(&self, owner: &Owner, id: &FileId) -> Result<Vec<PartInfo>> {
        let up = self.open_upload(owner, id)?;
        let st = up.state();
        st.check_open()?;
        st.parts
            .iter()
            .map(|(n, r)| {
                Ok(PartInfo {
                    number: PartNumber::new(u64::from(*n))?,
                    len: r.len,
                    sha256: r.sha256,
                    link_checked: link_holds(&st.record, *n, r),
                })
            })
            .collect()
    }

    /// Removes an open upload and everything of it, crash-safely (after a
    /// crash it is whole or gone). Waits for part uploads in progress. An
    /// upload the same owner aborted before is aborted again at once (the
    /// engine remembers aborts since it was opened, see [`Engine::status`]).
    ///
    /// # Errors
    /// [`Error::NotFound`] / [`Error::NotOwner`] for an unknown or foreign
    /// upload, [`Error::Conflict`] for a committed one, [`Error::Io`] when
    /// the removal cannot be made durable (a retry finishes it).
    pub fn abort(&self, owner: &Owner, id: &FileId) -> Result<()> {
        self.abort_with_note(owner, id, None)
    }

    /// [`Engine::abort`], keeping `note` (e.g. why the client gave up) for
    /// [`Engine::status`] to report.
    ///
    /// # Errors
    /// As [`Engine::abort`].
    pub fn abort_with_note(&self, owner: &Owner, id: &FileId, note: Option<&str>) -> Result<()> {
        let up = match self.open_upload(owner, id) {
            Err(Error::NotFound) if lock(&self.inner.aborted).get(id, owner).is_some() => {
                return Ok(());
            }
            r => r?,
        };
        let _gate = up.exclusive();
        let mut st = up.state();
        st.check_open()?;
        let layout = &self.inner.layout;
        if layout.upload_dir(id).exists() {
            let grave = store::bury(layout, &layout.upload_dir(id), &layout.uploads_dir())?;
            self.inner.janitor.remove(grave);
        } else {
            // An earlier abort moved it away but could not make that durable.
            layout.fsync_dir(&layout.uploads_dir())?;
        }
        st.phase = Phase::Aborted;
        lock(&self.inner.uploads).remove(id);
        lock(&self.inner.aborted).insert(id, owner, note);
        Ok(())
    }

    /// Deletes a committed file, crash-safely.
    ///
    /// # Errors
    /// [`Error::NotFound`] / [`Error::NotOwner`] for an unknown or foreign
    /// file, [`Error::Io`] when the removal cannot be made durable.
    pub fn delete(&self, owner: &Owner, id: &FileId) -> Result<()> {
        let rec = self.file_record(owner, id)?;
        let layout = &self.inner.layout;
        self.note_delete(id, &rec)?;
        let grave = store::bury(layout, &layout.file_dir(id), &layout.files_dir())?;
        self.inner.janitor.remove(grave);
        lock(&self.inner.committed).remove(&rec, id);
        Ok(())
    }

    /// A committed file's location and digests.
    ///
    /// # Errors
    /// [`Error::NotFound`] / [`Error::NotOwner`] for an unknown or foreign
    /// file (an upload still open is not found either), [`Error::Io`] when
    /// its record cannot be read.
    pub fn get(&self, owner: &Owner, id: &FileId) -> Result<Committed> {
        let rec = self.file_record(owner, id)?;
        Ok(Committed {
            path: self.inner.layout.file_data(id),
            length: rec.length,
            sha256: rec.sha256,
            md5: rec.md5,
            labels: rec.labels,
        })
    }

    fn file_record(&self, owner: &Owner, id: &FileId) -> Result<FileRecord> {
        let path = self.inner.layout.file_record(id);
        if !path.exists() {
            return Err(Error::NotFound);
        }
        let rec: FileRecord = load_json(&path, "file record")?;
        if rec.owner != *owner {
            return Err(Error::NotOwner);
        }
        Ok(rec)
    }

    /// Makes the upload's creation durable before anything of it is
    /// acknowledged (creates flush nothing; see `store::create_upload`).
    fn make_durable(&self, up: &Upload) -> Result<()> {
        if !up.durable.load(Ordering::Acquire) {
            store::make_durable(&self.inner.layout, &up.id)?;
            up.durable.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// The open upload `id`, recovered from disk on its first use.
    fn lookup(&self, id: &FileId) -> Result<Option<Arc<Upload>>> {
        let known = |map: &HashMap<FileId, Slot>| match map.get(id) {
            None => Some(None),
            Some(Slot::Loaded(up)) => Some(Some(up.clone())),
            Some(Slot::Unloaded) => None,
        };
        if let Some(found) = known(&lock(&self.inner.uploads)) {
            return Ok(found);
        }
        // One loader per upload, and no expiry of it meanwhile; the disk
        // work runs outside the map's lock, so other uploads do not wait.
        let _loading = self.load_lock(id);
        if let Some(found) = known(&lock(&self.inner.uploads)) {
            return Ok(found);
        }
        let layout = &self.inner.layout;
        let loaded = store::load_upload(layout, id)?;
        let mut map = lock(&self.inner.uploads);
        let Some(r) = loaded else {
            map.remove(id);
            return Ok(None);
        };
        let activity = store::activity_stamp(layout, id).unwrap_or_else(SystemTime::now);
        let up = Arc::new(Upload::new(r.id, r.record, r.parts, activity));
        // Whether its creation was ever flushed is not known (it may have
        // been created just before a restart): flush it again before its
        // next acknowledgement.
        up.durable.store(false, Ordering::Release);
        map.insert(id.clone(), Slot::Loaded(up.clone()));
        Ok(Some(up))
    }

    /// The lock that serializes loading and expiring an unloaded upload.
    fn load_lock(&self, id: &FileId) -> std::sync::MutexGuard<'_, ()> {
        // Ids are random hex: their first two digits spread them evenly.
        let stripe = usize::from_str_radix(&id.as_str()[..2], 16).unwrap_or(0);
        lock(&self.inner.load_locks[stripe % self.inner.load_locks.len()])
    }

    /// The upload `id` of `owner`, as long as the engine tracks it; a
    /// committed one is a conflict ("the upload is complete").
    fn open_upload(&self, owner: &Owner, id: &FileId) -> Result<Arc<Upload>> {
        let Some(up) = self.lookup(id)? else {
            return match self.file_record(owner, id) {
                Ok(_) => Err(state::complete_error()),
                Err(e) => Err(e),
            };
        };
        if up.state().record.owner != *owner {
            return Err(Error::NotOwner);
        }
        Ok(up)
    }
}

/// Whether part `n`'s link was checked: it leads to the next part's declared
/// `hashCtx`, or, being the last, to the declared digest.
fn link_holds(record: &UploadRecord, n: u32, part: &store::PartRecord) -> bool {
    if record.mode != Mode::Chain {
        return false;
    }
    match record.plan.get(&(n + 1)) {
        Some(next) => part.state_out.is_some() && part.state_out == next.ctx,
        None => {
            let is_last = record.plan.keys().next_back() == Some(&n);
            is_last && record.sha256.is_some() && part.digest_if_last == record.sha256
        }
    }
}

fn plan_mode(plan: &BTreeMap<u32, PartPlan>) -> Mode {
    if plan.values().any(PartPlan::is_chain) {
        Mode::Chain
    } else {
        Mode::Stream
    }
}
