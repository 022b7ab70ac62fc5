//! The public API: create, plan, put parts, verify and commit, read back.
//!
//! [`Engine`] is synchronous and `Send + Sync`; a server shares one handle
//! between threads. Per upload, a gate lets part uploads run in parallel
//! while a verify excludes them, and a lock per part number serializes two
//! uploads of the same part.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use md5::{Digest, Md5};

use crate::error::{DigestKind, Error, Result};
use crate::faults::{Faults, Op};
use crate::id::{FileId, Owner, PartNumber};
use crate::io::{random_suffix, read_window, write_all_at};
use crate::midstate::{HashCtx, Hasher, Midstate, Sha256};
use crate::pipeline::{self, PipelineOptions, Segment};
use crate::plan::{self, Limits, PartPlan};
use crate::store::{
    self, FileRecord, Layout, Mode, PartRecord, UploadRecord, load_json, remove_any, save_part,
    to_json,
};

/// Engine settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Part and file size limits.
    pub limits: Limits,
    /// Window size and channel depth of the in-order pipeline.
    pub pipeline: PipelineOptions,
    /// Hash contiguous prefixes of stream-mode uploads in the background as
    /// parts arrive, so that verify only hashes what came last.
    pub eager_hashing: bool,
    /// Bytes read from a part body at a time.
    pub ingest_buffer: usize,
    /// Faults to inject into file operations (tests only; none by default).
    pub faults: Faults,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: Limits::default(),
            pipeline: PipelineOptions::default(),
            eager_hashing: true,
            ingest_buffer: 1 << 20,
            faults: Faults::none(),
        }
    }
}

/// What a client declares when it starts an upload.
#[derive(Clone, Debug, Default)]
pub struct FileSpec {
    /// The total length, if known.
    pub length: Option<u64>,
    /// The whole file's SHA-256, if known.
    pub sha256: Option<Sha256>,
    /// The whole file's MD5, if known; verify then computes and checks it.
    pub md5: Option<[u8; 16]>,
    /// Parts declared up front (more may follow with [`Engine::plan_parts`]).
    pub plan: Vec<PartPlan>,
    /// Labels of the embedding service (file name, folder, ...), stored with
    /// the upload and the committed file and returned by [`Engine::get`].
    /// The engine does not interpret them; at most [`MAX_LABELS`] labels of at
    /// most [`MAX_LABEL_LEN`] bytes each.
    pub labels: BTreeMap<String, String>,
    /// How many parts the upload will have, for clients that say so without
    /// giving sizes (MetaStudio's `file_multipart_count`): parts beyond it
    /// are refused and verify requires all of `1..=count`.
    pub part_count: Option<u32>,
}

/// Most labels an upload may carry.
pub const MAX_LABELS: usize = 32;
/// Longest label key or value, in bytes.
pub const MAX_LABEL_LEN: usize = 4096;

/// Whether a part's link in the SHA-256 chain was checked on arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkCheck {
    /// The upload has no midstates; the file is hashed in order at verify.
    NotApplicable,
    /// The part leads exactly to the next part's `hashCtx` (or to the file's
    /// declared digest, for the last part).
    Holds,
    /// The next part's `hashCtx` (or the file digest) is not known yet; the
    /// link is checked when it is, at verify at the latest.
    Pending,
}

/// The answer to a stored part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartReceipt {
    /// The part number.
    pub number: u32,
    /// Bytes stored.
    pub len: u64,
    /// The part's own SHA-256 (usable as its ETag).
    pub sha256: Sha256,
    /// The state of its link.
    pub link: LinkCheck,
}

/// A part as listed by [`Engine::parts`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartInfo {
    /// The part number.
    pub number: u32,
    /// Its length.
    pub len: u64,
    /// Its own SHA-256.
    pub sha256: Sha256,
}

/// The result of a successful verify.
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// A committed file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// Where its bytes are (read-only to callers).
    pub path: PathBuf,
    /// Its length.
    pub length: u64,
    /// Its SHA-256.
    pub sha256: Sha256,
    /// Its MD5, when computed at verify.
    pub md5: Option<[u8; 16]>,
    /// The labels given at create.
    pub labels: BTreeMap<String, String>,
}

/// A checkpoint of eager hashing: the state after parts `1..=n`.
#[derive(Clone)]
struct Checkpoint {
    sha: Hasher,
    md5: Option<Md5>,
    /// The data file of part `n` that was hashed; a replaced part has another.
    version: String,
}

struct UploadState {
    record: UploadRecord,
    parts: BTreeMap<u32, PartRecord>,
    /// `checkpoints[i]` is the state after parts `1..=i+1`.
    checkpoints: Vec<Checkpoint>,
    /// Committed or aborted: the upload no longer exists.
    finished: bool,
}

struct Upload {
    id: FileId,
    /// Part uploads hold it shared; verify and abort hold it exclusively.
    gate: RwLock<()>,
    part_locks: Mutex<HashMap<u32, Arc<Mutex<()>>>>,
    state: Mutex<UploadState>,
    eager_running: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not wedge every later request on this upload.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Upload {
    fn state(&self) -> MutexGuard<'_, UploadState> {
        lock(&self.state)
    }

    fn part_lock(&self, n: u32) -> Arc<Mutex<()>> {
        lock(&self.part_locks).entry(n).or_default().clone()
    }
}

/// Committed files by owner, SHA-256 (hex) and length, for flash upload.
type ContentIndex = HashMap<(String, String, u64), Vec<FileId>>;

struct Inner {
    layout: Layout,
    cfg: Config,
    uploads: Mutex<HashMap<FileId, Arc<Upload>>>,
    committed: Mutex<ContentIndex>,
    _lock: store::StoreLock,
}

/// The upload engine over one store directory.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

fn parse_hex_digest(s: &str, role: &'static str) -> Result<Sha256> {
    s.parse::<Sha256>()
        .map_err(|e| Error::io(role)(io::Error::new(io::ErrorKind::InvalidData, e.to_string())))
}

fn parse_md5(s: &str) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    hex::decode_to_slice(s, &mut out).ok().map(|_| out)
}

impl Engine {
    /// Opens the store at `root` (creating it if needed), locks it against
    /// other engines (a second one gets [`Error::Conflict`]) and recovers it:
    /// temporary files and unacknowledged part bytes are removed, interrupted
    /// replacements and commits are finished, and every open upload can
    /// continue.
    pub fn open(root: impl AsRef<Path>, cfg: Config) -> Result<Engine> {
        let lock = store::StoreLock::acquire(root.as_ref())?;
        let layout = Layout::with_faults(root.as_ref(), cfg.faults.clone());
        let mut uploads = HashMap::new();
        for r in store::recover(&layout)? {
            let up = Upload {
                id: r.id.clone(),
                gate: RwLock::new(()),
                part_locks: Mutex::new(HashMap::new()),
                state: Mutex::new(UploadState {
                    record: r.record,
                    parts: r.parts,
                    checkpoints: Vec::new(),
                    finished: false,
                }),
                eager_running: AtomicBool::new(false),
            };
            uploads.insert(r.id, Arc::new(up));
        }
        let mut committed = ContentIndex::new();
        for (id, rec) in store::committed(&layout)? {
            committed
                .entry((rec.owner, rec.sha256, rec.length))
                .or_default()
                .push(id);
        }
        Ok(Engine {
            inner: Arc::new(Inner {
                layout,
                cfg,
                uploads: Mutex::new(uploads),
                committed: Mutex::new(committed),
                _lock: lock,
            }),
        })
    }

    /// The engine's configuration.
    pub fn config(&self) -> &Config {
        &self.inner.cfg
    }

    /// Starts an upload for `owner` and returns its new id.
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
            return Err(Error::BadInput(crate::ParseError::new(format!(
                "at most {MAX_LABELS} labels of at most {MAX_LABEL_LEN} bytes each"
            ))));
        }
        let record = UploadRecord {
            owner: owner.as_str().to_owned(),
            length: spec.length,
            sha256: spec.sha256.map(|d| d.to_hex()),
            md5: spec.md5.map(hex::encode),
            mode,
            plan,
            labels: spec.labels,
            part_count: spec.part_count,
        };
        let id = FileId::generate()?;
        let layout = &self.inner.layout;
        let staging = layout
            .tmp_dir()
            .join(format!("{id}.tmp-{}", random_suffix()?));
        let res = (|| {
            fs::create_dir(&staging).map_err(Error::io("upload directory"))?;
            fs::create_dir(staging.join("parts")).map_err(Error::io("upload directory"))?;
            layout.write_new(
                &staging.join("upload.json"),
                &to_json(&record),
                "upload record",
            )?;
            layout.fsync_dir(&staging.join("parts"))?;
            layout.fsync_dir(&staging)?;
            layout.rename(&staging, &layout.upload_dir(&id), "upload directory")?;
            layout.fsync_dir(&layout.uploads_dir())?;
            layout.fsync_dir(&layout.tmp_dir())
        })();
        if let Err(e) = res {
            let _ = remove_any(&staging);
            return Err(e);
        }
        let up = Upload {
            id: id.clone(),
            gate: RwLock::new(()),
            part_locks: Mutex::new(HashMap::new()),
            state: Mutex::new(UploadState {
                record,
                parts: BTreeMap::new(),
                checkpoints: Vec::new(),
                finished: false,
            }),
            eager_running: AtomicBool::new(false),
        };
        lock(&self.inner.uploads).insert(id.clone(), Arc::new(up));
        Ok(id)
    }

    /// Adds parts to an upload's plan (KooDrive's `multipart/uploadUrl`).
    /// Entries with `offset` and `ctx` put the upload in chain mode. An entry
    /// may be repeated only with the same values.
    pub fn plan_parts(&self, owner: &Owner, id: &FileId, parts: &[PartPlan]) -> Result<()> {
        let up = self.open_upload(owner, id)?;
        let _gate = enter(&up)?;
        let mut st = up.state();
        if st.finished {
            return Err(Error::Conflict("the upload is complete".into()));
        }
        let merged = plan::merge(
            &st.record.plan,
            parts,
            st.record.length,
            &self.inner.cfg.limits,
        )?;
        let mode = plan_mode(&merged);
        if st.record.mode != Mode::Unset && st.record.mode != mode {
            return Err(Error::BadPlan(
                "the upload already has parts of the other kind (with or without hashCtx)".into(),
            ));
        }
        let mut record = st.record.clone();
        record.plan = merged;
        record.mode = mode;
        self.save_record(id, &record)?;
        st.record = record;
        Ok(())
    }

    /// Stores part `number` from `body`, hashing it while it is written.
    ///
    /// `expected_len` (e.g. a `Content-Length`) is checked against the bytes
    /// received: a short body is rejected and nothing is kept. A part already
    /// present is replaced atomically. In chain mode the part is checked
    /// against its neighbours' `hashCtx` on arrival and rejected, naming the
    /// part, when its link does not hold.
    pub fn put_part(
        &self,
        owner: &Owner,
        id: &FileId,
        number: u64,
        body: impl Read,
        expected_len: Option<u64>,
    ) -> Result<PartReceipt> {
        let n = PartNumber::new(number)?.get();
        let up = self.open_upload(owner, id)?;
        let _gate = enter(&up)?;
        let part_lock = up.part_lock(n);
        let _part = lock(&part_lock);
        let (record, existing) = {
            let mut st = up.state();
            if st.finished {
                return Err(Error::Conflict("the upload is complete".into()));
            }
            if st.record.mode == Mode::Unset {
                let mut record = st.record.clone();
                record.mode = Mode::Stream;
                self.save_record(id, &record)?;
                st.record = record;
            }
            (st.record.clone(), st.parts.get(&n).cloned())
        };
        let limits = &self.inner.cfg.limits;
        let planned = record.plan.get(&n).copied();
        if planned.is_none() && (record.mode == Mode::Chain || !record.plan.is_empty()) {
            return Err(Error::PartOutOfRange {
                part: u64::from(n),
                reason: "the part is not in the upload's plan".into(),
            });
        }
        if let Some(count) = record.part_count
            && n > count
        {
            return Err(Error::PartOutOfRange {
                part: u64::from(n),
                reason: format!("the upload was declared with {count} parts"),
            });
        }
        let bound = planned.map_or(limits.max_part_size, |p| p.size);
        // Never take more than the plan, the limit or the announced length.
        let max = bound.min(expected_len.unwrap_or(u64::MAX));
        if let Some(len) = expected_len {
            if len > bound {
                return Err(Error::PartTooLarge {
                    part: n,
                    max: bound,
                });
            }
            if let Some(p) = planned
                && len < p.size
            {
                return Err(Error::PartTooSmall {
                    part: n,
                    len,
                    min: p.size,
                });
            }
        }
        let min_len = planned.map(|p| p.size).or(expected_len);
        match (record.mode, planned) {
            (Mode::Chain, Some(p)) => {
                self.put_chain_part(&up, &record, p, existing, body, expected_len)
            }
            _ => self.put_stream_part(&up, n, max, min_len, existing, body),
        }
    }

    fn put_stream_part(
        &self,
        up: &Arc<Upload>,
        n: u32,
        max: u64,
        min_len: Option<u64>,
        existing: Option<PartRecord>,
        body: impl Read,
    ) -> Result<PartReceipt> {
        let layout = &self.inner.layout;
        let faults = layout.faults();
        let parts_dir = layout.parts_dir(&up.id);
        let name = format!("{n}.{}.data", random_suffix()?);
        let path = parts_dir.join(&name);
        let res = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(Error::io("part data"))?;
            let mut own = Hasher::new();
            let len = ingest(body, n, max, self.inner.cfg.ingest_buffer, |buf, _| {
                own.update(buf);
                faults.check(Op::Write, "part data")?;
                file.write_all(buf)
            })?;
            check_min(n, len, min_len)?;
            layout.fault(Op::Fsync, "part data")?;
            file.sync_data().map_err(Error::io("part data"))?;
            let rec = PartRecord {
                len,
                sha256: own.finalize().to_hex(),
                data: Some(name.clone()),
                state_out: None,
                digest_if_last: None,
            };
            save_part(layout, &up.id, n, &rec)?;
            Ok(rec)
        })();
        let rec = match res {
            Ok(rec) => rec,
            Err(e) => {
                let _ = fs::remove_file(&path);
                return Err(e);
            }
        };
        if let Some(old) = existing.and_then(|o| o.data) {
            // The new record is durable; the old bytes are garbage now.
            let _ = fs::remove_file(parts_dir.join(old));
        }
        {
            let mut st = up.state();
            st.checkpoints.truncate(n as usize - 1);
            st.parts.insert(n, rec.clone());
        }
        self.kick_eager(up);
        Ok(PartReceipt {
            number: n,
            len: rec.len,
            sha256: parse_hex_digest(&rec.sha256, "part record")?,
            link: LinkCheck::NotApplicable,
        })
    }

    fn put_chain_part(
        &self,
        up: &Arc<Upload>,
        record: &UploadRecord,
        p: PartPlan,
        existing: Option<PartRecord>,
        body: impl Read,
        expected_len: Option<u64>,
    ) -> Result<PartReceipt> {
        let n = p.number;
        let layout = &self.inner.layout;
        let faults = layout.faults();
        let offset = p.offset.unwrap_or(0);
        let start = p
            .start_ctx()
            .ok_or_else(|| Error::BadPlan(format!("part {n} needs a hashCtx")))?;
        let mut chain = Hasher::from_midstate(Midstate::resume(start, offset)?);
        let mut own = Hasher::new();
        // A first upload of the part goes straight to its offset in the
        // assembly; a replacement is staged first so that the acknowledged
        // bytes stay intact until the new ones are proven.
        let staged = existing
            .is_some()
            .then(|| random_suffix().map(|r| format!("{n}.{r}.data")))
            .transpose()?;
        let staged_path = staged.as_ref().map(|s| layout.parts_dir(&up.id).join(s));
        let res = (|| {
            let (file, base) = match &staged_path {
                Some(path) => (
                    OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(path)
                        .map_err(Error::io("part data"))?,
                    0,
                ),
                None => (store::open_assembly(layout, &up.id)?, offset),
            };
            let len = ingest(body, n, p.size, self.inner.cfg.ingest_buffer, |buf, at| {
                own.update(buf);
                chain.update(buf);
                faults.check(Op::Write, "part data")?;
                write_all_at(&file, buf, base + at)
            })?;
            check_min(n, len, Some(p.size).max(expected_len))?;
            let state_out = chain.midstate().map(|m| m.ctx());
            let digest_if_last = chain.finalize();
            let mut checked = false;
            if let Some(next) = record.plan.get(&(n + 1)) {
                if state_out.is_none() || state_out != next.ctx {
                    return Err(Error::LinkMismatch { part: n });
                }
                checked = true;
            }
            let is_last = record.length == Some(offset + p.size)
                && record.plan.keys().next_back() == Some(&n);
            if is_last && let Some(expected) = &record.sha256 {
                if *expected != digest_if_last.to_hex() {
                    return Err(Error::LinkMismatch { part: n });
                }
                checked = true;
            }
            layout.fault(Op::Fsync, "part data")?;
            file.sync_data().map_err(Error::io("part data"))?;
            let rec = PartRecord {
                len,
                sha256: own.finalize().to_hex(),
                data: staged.clone(),
                state_out: state_out.map(HashCtx::to_hex),
                digest_if_last: Some(digest_if_last.to_hex()),
            };
            save_part(layout, &up.id, n, &rec)?;
            Ok((rec, checked))
        })();
        let (rec, checked) = match res {
            Ok(v) => v,
            Err(e) => {
                if let Some(path) = &staged_path {
                    let _ = fs::remove_file(path);
                }
                return Err(e);
            }
        };
        // The new part is acknowledged once its record is durable; moving a
        // staged replacement into place is redone by recovery if interrupted.
        let rec = store::settle_staged(layout, &up.id, n, offset, &rec)?;
        up.state().parts.insert(n, rec.clone());
        Ok(PartReceipt {
            number: n,
            len: rec.len,
            sha256: parse_hex_digest(&rec.sha256, "part record")?,
            link: if checked {
                LinkCheck::Holds
            } else {
                LinkCheck::Pending
            },
        })
    }

    /// Lists the parts received so far, by number.
    pub fn parts(&self, owner: &Owner, id: &FileId) -> Result<Vec<PartInfo>> {
        let up = self.open_upload(owner, id)?;
        let st = up.state();
        st.parts
            .iter()
            .map(|(n, r)| {
                Ok(PartInfo {
                    number: *n,
                    len: r.len,
                    sha256: parse_hex_digest(&r.sha256, "part record")?,
                })
            })
            .collect()
    }

    /// Removes an open upload and everything of it. Waits for part uploads in
    /// progress.
    pub fn abort(&self, owner: &Owner, id: &FileId) -> Result<()> {
        let up = self.open_upload(owner, id)?;
        let _gate = up.gate.write().unwrap_or_else(|e| e.into_inner());
        let mut st = up.state();
        if st.finished {
            return Err(Error::NotFound);
        }
        let layout = &self.inner.layout;
        if layout.upload_dir(id).exists() {
            self.discard(&layout.upload_dir(id), &layout.uploads_dir())?;
        } else {
            // An earlier abort moved it away but could not make that durable.
            layout.fsync_dir(&layout.uploads_dir())?;
        }
        st.finished = true;
        lock(&self.inner.uploads).remove(id);
        Ok(())
    }

    /// Deletes a committed file.
    pub fn delete(&self, owner: &Owner, id: &FileId) -> Result<()> {
        let rec = self.file_record(owner, id)?;
        let layout = &self.inner.layout;
        self.discard(&layout.file_dir(id), &layout.files_dir())?;
        let key = (rec.owner, rec.sha256, rec.length);
        let mut index = lock(&self.inner.committed);
        if let Some(ids) = index.get_mut(&key) {
            ids.retain(|i| i != id);
            if ids.is_empty() {
                index.remove(&key);
            }
        }
        Ok(())
    }

    /// A committed file's location and digests.
    pub fn get(&self, owner: &Owner, id: &FileId) -> Result<Committed> {
        let rec = self.file_record(owner, id)?;
        Ok(Committed {
            path: self.inner.layout.file_data(id),
            length: rec.length,
            sha256: parse_hex_digest(&rec.sha256, "file record")?,
            md5: rec.md5.as_deref().and_then(parse_md5),
            labels: rec.labels,
        })
    }

    /// Verifies an upload and commits it: the seeds' "complete".
    ///
    /// All parts must be present. Chain-mode uploads were checked link by
    /// link on arrival, so this only compares recorded states; other uploads
    /// are hashed in order while being merged into the final file. The digest
    /// must equal `expected` and the one declared at create, when given.
    /// On success the file is fsynced and committed atomically; on failure
    /// nothing changes and the error says what failed. Verifying a committed
    /// file again returns the same result.
    pub fn verify(&self, owner: &Owner, id: &FileId, expected: Option<Sha256>) -> Result<Verified> {
        let up = match self.lookup(id) {
            Some(up) => up,
            None => return self.committed_verified(owner, id, expected.as_ref()),
        };
        if up.state().record.owner != owner.as_str() {
            return Err(Error::NotOwner);
        }
        let _gate = up.gate.write().unwrap_or_else(|e| e.into_inner());
        let record = {
            let st = up.state();
            if st.finished {
                drop(st);
                return self.committed_verified(owner, id, expected.as_ref());
            }
            st.record.clone()
        };
        let layout = &self.inner.layout;
        if layout.file_record(id).exists() {
            // An earlier verify got past the commit point and then failed (a
            // directory fsync): make the commit durable and finish its cleanup.
            layout.fsync_dir(&layout.files_dir())?;
            remove_any(&layout.upload_dir(id))?;
            layout.fsync_dir(&layout.uploads_dir())?;
            up.state().finished = true;
            lock(&self.inner.uploads).remove(id);
            return self.committed_verified(owner, id, expected.as_ref());
        }
        let declared = record
            .sha256
            .as_deref()
            .map(|s| parse_hex_digest(s, "upload record"))
            .transpose()?;
        if let (Some(d), Some(e)) = (&declared, &expected)
            && d != e
        {
            return Err(Error::ConflictingExpected {
                declared: d.to_hex(),
                given: e.to_hex(),
            });
        }
        let expected = expected.or(declared);
        let staging = self
            .inner
            .layout
            .tmp_dir()
            .join(format!("{id}.tmp-{}", random_suffix()?));
        let res = (|| {
            fs::create_dir(&staging).map_err(Error::io("commit directory"))?;
            let verified = match record.mode {
                Mode::Chain => self.verify_chain(&up, &record, expected.as_ref(), &staging)?,
                Mode::Stream | Mode::Unset => {
                    self.verify_stream(&up, &record, expected.as_ref(), &staging)?
                }
            };
            self.commit(id, &record, &verified, &staging)?;
            Ok(verified)
        })();
        match res {
            Ok(v) => {
                up.state().finished = true;
                lock(&self.inner.uploads).remove(id);
                // The commit is durable; a failure to tidy up is finished by recovery.
                let layout = &self.inner.layout;
                let _ = remove_any(&layout.upload_dir(id))
                    .and_then(|_| layout.fsync_dir(&layout.uploads_dir()));
                Ok(v)
            }
            Err(e) => {
                let _ = remove_any(&staging);
                Err(e)
            }
        }
    }

    fn verify_chain(
        &self,
        up: &Upload,
        record: &UploadRecord,
        expected: Option<&Sha256>,
        staging: &Path,
    ) -> Result<Verified> {
        let parts = up.state().parts.clone();
        let last = record.plan.keys().next_back().copied().unwrap_or(0);
        let missing: Vec<u32> = (1..=last.max(1))
            .filter(|n| !parts.contains_key(n))
            .collect();
        if !missing.is_empty() {
            return Err(missing_parts(missing));
        }
        let last_plan = record.plan[&last];
        let total = last_plan.offset.unwrap_or(0) + last_plan.size;
        if let Some(declared) = record.length
            && declared != total
        {
            return Err(Error::LengthMismatch {
                declared,
                actual: total,
            });
        }
        for n in 1..last {
            let next_ctx = record.plan[&(n + 1)].ctx.map(HashCtx::to_hex);
            if parts[&n].state_out.is_none() || parts[&n].state_out != next_ctx {
                return Err(Error::LinkMismatch { part: n });
            }
        }
        let digest = parts[&last]
            .digest_if_last
            .as_deref()
            .ok_or(Error::LinkMismatch { part: last })
            .and_then(|s| parse_hex_digest(s, "part record"))?;
        if let Some(e) = expected
            && *e != digest
        {
            return Err(Error::sha256_mismatch(e, &digest));
        }
        let layout = &self.inner.layout;
        let asm = store::open_assembly(layout, &up.id)?;
        asm.set_len(total).map_err(Error::io("assembly file"))?;
        layout.fault(Op::Fsync, "assembly file")?;
        asm.sync_all().map_err(Error::io("assembly file"))?;
        let md5 = match &record.md5 {
            Some(want) => {
                let mut m = Md5::new();
                let mut off = 0u64;
                while off < total {
                    let len = (total - off).min(self.inner.cfg.pipeline.window as u64) as usize;
                    let chunk = read_window(&asm, off, len).map_err(Error::io("assembly file"))?;
                    m.update(&chunk[..]);
                    off += len as u64;
                }
                Some(check_md5(want, m)?)
            }
            None => None,
        };
        link_or_copy(layout, &layout.assembly(&up.id), &staging.join("data"))?;
        Ok(Verified {
            sha256: digest,
            md5,
            length: total,
            parts: last,
        })
    }

    fn verify_stream(
        &self,
        up: &Upload,
        record: &UploadRecord,
        expected: Option<&Sha256>,
        staging: &Path,
    ) -> Result<Verified> {
        let (parts, checkpoints) = {
            let st = up.state();
            (st.parts.clone(), st.checkpoints.clone())
        };
        let last = parts
            .keys()
            .next_back()
            .copied()
            .max(record.plan.keys().next_back().copied())
            .max(record.part_count)
            .unwrap_or(0);
        let missing: Vec<u32> = (1..=last.max(1))
            .filter(|n| !parts.contains_key(n))
            .collect();
        if !missing.is_empty() {
            return Err(missing_parts(missing));
        }
        let limits = &self.inner.cfg.limits;
        let mut total = 0u64;
        for (n, p) in &parts {
            if *n < last && p.len < limits.min_part_size {
                return Err(Error::PartTooSmall {
                    part: *n,
                    len: p.len,
                    min: limits.min_part_size,
                });
            }
            total += p.len;
        }
        if total > limits.max_file_size {
            return Err(Error::FileTooLarge {
                len: total,
                max: limits.max_file_size,
            });
        }
        if let Some(declared) = record.length
            && declared != total
        {
            return Err(Error::LengthMismatch {
                declared,
                actual: total,
            });
        }
        // The checkpoints are valid for the prefix whose part versions match.
        let valid = checkpoints
            .iter()
            .enumerate()
            .take_while(|(i, c)| parts[&(*i as u32 + 1)].data.as_deref() == Some(&c.version))
            .count();
        let (sha, md5) = match valid.checked_sub(1).map(|i| &checkpoints[i]) {
            Some(c) => (c.sha.clone(), c.md5.clone()),
            None => (Hasher::new(), record.md5.as_ref().map(|_| Md5::new())),
        };
        let parts_dir = self.inner.layout.parts_dir(&up.id);
        let files = parts
            .values()
            .map(|p| {
                let name = p.data.as_deref().unwrap_or_default();
                File::open(parts_dir.join(name)).map_err(Error::io("part data"))
            })
            .collect::<Result<Vec<_>>>()?;
        let segments: Vec<Segment<'_>> = files
            .iter()
            .zip(parts.values())
            .enumerate()
            .map(|(i, (file, p))| Segment {
                file,
                len: p.len,
                hash: i >= valid,
            })
            .collect();
        let data = staging.join("data");
        let out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&data)
            .map_err(Error::io("committed file"))?;
        self.inner.layout.fault(Op::Write, "committed file")?;
        // The parts are deleted right after the commit; dropping them from
        // the page cache as the pipeline goes (on the reader's core, off the
        // hasher's) halves the cost of unlinking them.
        let opts = PipelineOptions {
            drop_behind: true,
            ..self.inner.cfg.pipeline
        };
        let result = pipeline::run(&segments, sha, md5, Some(&out), opts, &|_| {})?;
        let digest = result.sha.finalize();
        if let Some(e) = expected
            && *e != digest
        {
            return Err(Error::sha256_mismatch(e, &digest));
        }
        let md5 = match (&record.md5, result.md5) {
            (Some(want), Some(m)) => Some(check_md5(want, m)?),
            _ => None,
        };
        self.inner.layout.fault(Op::Fsync, "committed file")?;
        out.sync_all().map_err(Error::io("committed file"))?;
        Ok(Verified {
            sha256: digest,
            md5,
            length: total,
            parts: last,
        })
    }

    /// Writes the file record beside the data in `staging`, then renames the
    /// directory into `files/`: the commit point.
    fn commit(
        &self,
        id: &FileId,
        record: &UploadRecord,
        v: &Verified,
        staging: &Path,
    ) -> Result<()> {
        let layout = &self.inner.layout;
        let meta = FileRecord {
            owner: record.owner.clone(),
            length: v.length,
            sha256: v.sha256.to_hex(),
            md5: v.md5.map(hex::encode),
            parts: v.parts,
            labels: record.labels.clone(),
        };
        layout.write_new(&staging.join("meta.json"), &to_json(&meta), "file record")?;
        layout.fsync_dir(staging)?;
        layout.rename(staging, &layout.file_dir(id), "committed file")?;
        layout.fsync_dir(&layout.files_dir())?;
        lock(&self.inner.committed)
            .entry((meta.owner, meta.sha256, meta.length))
            .or_default()
            .push(id.clone());
        Ok(())
    }

    /// A committed file of `owner` with this SHA-256 and length, if any: the
    /// test for a flash upload.
    pub fn find_committed(&self, owner: &Owner, sha256: &Sha256, length: u64) -> Option<FileId> {
        let key = (owner.as_str().to_owned(), sha256.to_hex(), length);
        lock(&self.inner.committed)
            .get(&key)
            .and_then(|ids| ids.first().cloned())
    }

    /// Commits a new file of `owner` with the bytes of the committed file
    /// `source` (a flash upload): no bytes move, the new file shares the
    /// source's data (a hard link, or a copy where links are impossible).
    /// The new file carries `labels` (e.g. its own name).
    pub fn create_from(
        &self,
        owner: &Owner,
        source: &FileId,
        labels: BTreeMap<String, String>,
    ) -> Result<(FileId, Verified)> {
        let rec = self.file_record(owner, source)?;
        let id = FileId::generate()?;
        let layout = &self.inner.layout;
        let staging = layout
            .tmp_dir()
            .join(format!("{id}.tmp-{}", random_suffix()?));
        let res = (|| {
            fs::create_dir(&staging).map_err(Error::io("commit directory"))?;
            link_or_copy(layout, &layout.file_data(source), &staging.join("data"))?;
            let record = UploadRecord {
                owner: rec.owner.clone(),
                length: Some(rec.length),
                sha256: Some(rec.sha256.clone()),
                md5: rec.md5.clone(),
                mode: Mode::Unset,
                plan: BTreeMap::new(),
                labels,
                part_count: None,
            };
            let verified = Verified {
                sha256: parse_hex_digest(&rec.sha256, "file record")?,
                md5: rec.md5.as_deref().and_then(parse_md5),
                length: rec.length,
                parts: rec.parts,
            };
            self.commit(&id, &record, &verified, &staging)?;
            Ok(verified)
        })();
        match res {
            Ok(v) => Ok((id, v)),
            Err(e) => {
                let _ = remove_any(&staging);
                Err(e)
            }
        }
    }

    fn committed_verified(
        &self,
        owner: &Owner,
        id: &FileId,
        expected: Option<&Sha256>,
    ) -> Result<Verified> {
        let rec = self.file_record(owner, id)?;
        let sha256 = parse_hex_digest(&rec.sha256, "file record")?;
        if let Some(e) = expected
            && *e != sha256
        {
            return Err(Error::sha256_mismatch(e, &sha256));
        }
        Ok(Verified {
            sha256,
            md5: rec.md5.as_deref().and_then(parse_md5),
            length: rec.length,
            parts: rec.parts,
        })
    }

    fn file_record(&self, owner: &Owner, id: &FileId) -> Result<FileRecord> {
        let path = self.inner.layout.file_record(id);
        if !path.exists() {
            return Err(Error::NotFound);
        }
        let rec: FileRecord = load_json(&path, "file record")?;
        if rec.owner != owner.as_str() {
            return Err(Error::NotOwner);
        }
        Ok(rec)
    }

    fn lookup(&self, id: &FileId) -> Option<Arc<Upload>> {
        lock(&self.inner.uploads).get(id).cloned()
    }

    /// The open upload `id` of `owner`; a committed one is a conflict.
    fn open_upload(&self, owner: &Owner, id: &FileId) -> Result<Arc<Upload>> {
        let Some(up) = self.lookup(id) else {
            return match self.file_record(owner, id) {
                Ok(_) => Err(Error::Conflict("the upload is complete".into())),
                Err(e) => Err(e),
            };
        };
        if up.state().record.owner != owner.as_str() {
            return Err(Error::NotOwner);
        }
        Ok(up)
    }

    fn save_record(&self, id: &FileId, record: &UploadRecord) -> Result<()> {
        self.inner.layout.write_atomic(
            &self.inner.layout.upload_record(id),
            &to_json(record),
            "upload record",
        )
    }

    /// Moves `path` into `tmp/` (one atomic step), then deletes it.
    fn discard(&self, path: &Path, parent: &Path) -> Result<()> {
        let layout = &self.inner.layout;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let grave = layout
            .tmp_dir()
            .join(format!("{name}.tmp-{}", random_suffix()?));
        layout.rename(path, &grave, "upload directory")?;
        layout.fsync_dir(parent)?;
        remove_any(&grave)
    }

    fn kick_eager(&self, up: &Arc<Upload>) {
        if !self.inner.cfg.eager_hashing || up.eager_running.swap(true, Ordering::AcqRel) {
            return;
        }
        // The task holds the upload and the paths, not the engine: dropping
        // the last engine handle releases the store at once.
        let parts_dir = self.inner.layout.parts_dir(&up.id);
        let window = self.inner.cfg.pipeline.window;
        let up = up.clone();
        rayon::spawn(move || {
            loop {
                eager_hash(&parts_dir, window, &up);
                up.eager_running.store(false, Ordering::Release);
                // A part may have arrived after the last look and before the
                // flag was cleared; look once more unless another task took over.
                if !next_part_ready(&up) || up.eager_running.swap(true, Ordering::AcqRel) {
                    break;
                }
            }
        });
    }
}

fn next_part_ready(up: &Upload) -> bool {
    let st = up.state();
    !st.finished && st.parts.contains_key(&(st.checkpoints.len() as u32 + 1))
}

/// Folds parts into checkpoints for as long as the next one is present.
fn eager_hash(parts_dir: &Path, window: usize, up: &Upload) {
    loop {
        let (k, version, len, mut sha, mut md5) = {
            let st = up.state();
            if st.finished {
                return;
            }
            let k = st.checkpoints.len();
            let Some(rec) = st.parts.get(&(k as u32 + 1)) else {
                return;
            };
            let Some(version) = rec.data.clone() else {
                return;
            };
            let (sha, md5) = match st.checkpoints.last() {
                Some(c) => (c.sha.clone(), c.md5.clone()),
                None => (Hasher::new(), st.record.md5.as_ref().map(|_| Md5::new())),
            };
            (k, version, rec.len, sha, md5)
        };
        // A part replaced or an upload finished meanwhile makes the open or
        // the read fail, or the result stale; either way nothing is recorded.
        let Ok(file) = File::open(parts_dir.join(&version)) else {
            return;
        };
        let mut off = 0u64;
        while off < len {
            let n = (len - off).min(window as u64) as usize;
            let Ok(chunk) = read_window(&file, off, n) else {
                return;
            };
            sha.update(&chunk);
            if let Some(m) = md5.as_mut() {
                m.update(&chunk[..]);
            }
            off += n as u64;
        }
        let mut st = up.state();
        let current = st
            .parts
            .get(&(k as u32 + 1))
            .and_then(|r| r.data.as_deref());
        if st.checkpoints.len() != k || current != Some(version.as_str()) {
            continue;
        }
        st.checkpoints.push(Checkpoint { sha, md5, version });
    }
}

fn enter(up: &Upload) -> Result<std::sync::RwLockReadGuard<'_, ()>> {
    match up.gate.try_read() {
        Ok(g) => Ok(g),
        Err(std::sync::TryLockError::Poisoned(e)) => Ok(e.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => Err(Error::Conflict(
            "a verify of this upload is in progress".into(),
        )),
    }
}

fn plan_mode(plan: &BTreeMap<u32, PartPlan>) -> Mode {
    if plan.values().any(PartPlan::is_chain) {
        Mode::Chain
    } else {
        Mode::Stream
    }
}

fn missing_parts(missing: Vec<u32>) -> Error {
    Error::MissingParts {
        count: missing.len(),
        first: missing.into_iter().take(10).collect(),
    }
}

fn check_min(n: u32, len: u64, min: Option<u64>) -> Result<()> {
    match min {
        Some(min) if len < min => Err(Error::PartTooSmall { part: n, len, min }),
        _ => Ok(()),
    }
}

fn check_md5(want_hex: &str, m: Md5) -> Result<[u8; 16]> {
    let got: [u8; 16] = m.finalize().into();
    if hex::encode(got) != want_hex {
        return Err(Error::DigestMismatch {
            kind: DigestKind::Md5,
            expected: want_hex.to_owned(),
            actual: hex::encode(got),
        });
    }
    Ok(got)
}

/// Gives `to` the bytes of `from` without moving them: a hard link, or on
/// file systems without hard links a copy (slower, equally safe), fsynced.
fn link_or_copy(layout: &Layout, from: &Path, to: &Path) -> Result<()> {
    layout.fault(Op::Write, "committed file")?;
    if fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    fs::copy(from, to).map_err(Error::io("committed file"))?;
    File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(Error::io("committed file"))
}

/// Reads `body` to its end in buffers of `buf_size`, handing each buffer and
/// its offset to `sink`. More than `max` bytes is an error for part `n`.
fn ingest(
    mut body: impl Read,
    n: u32,
    max: u64,
    buf_size: usize,
    mut sink: impl FnMut(&[u8], u64) -> io::Result<()>,
) -> Result<u64> {
    let mut buf = vec![0u8; buf_size.max(64 * 1024)];
    let mut total = 0u64;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match body.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(k) => filled += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("request body")(e)),
            }
        }
        if filled == 0 {
            return Ok(total);
        }
        if total + filled as u64 > max {
            return Err(Error::PartTooLarge { part: n, max });
        }
        sink(&buf[..filled], total).map_err(Error::io("part data"))?;
        total += filled as u64;
    }
}
