//! Commit events: a durable outbox of the files committed, read by cursor.
//!
//! `ROOT/events/log` holds one JSON line per entry, in sequence order. A
//! commit appends its event, with a random commit nonce, and fsyncs the log
//! *before* the rename that commits the file; the same nonce is written into
//! the file's record. An event therefore exists for every file that was
//! ever committed, crash or not, and it counts only if its commit happened:
//! when it is read, the file's record must carry its nonce (or a later
//! `delete` entry of the log must name it, for a file deleted since). An
//! event of a commit that failed, or that a crash cut off before its
//! rename, never matches and is skipped; so is a repeated attempt's, because
//! only one attempt's nonce ends up in the record. Events are thus given
//! exactly once each, and never one of a file that was not committed.
//!
//! A reader holds a cursor (a sequence number) and reads on from it; a
//! commit still between its append and its rename holds readers at its
//! event, so none is skipped for being read too early. `ROOT/events/acked`
//! records the position up to which every event is delivered: entries
//! before it are dropped from the log by compaction.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::faults::Op;
use crate::id::{FileId, Owner};
use crate::midstate::Sha256;
use crate::store::{FileRecord, Layout, load_json};

use super::Engine;
use super::state::lock;

/// Entries appended before an acknowledgement rewrites the log without the
/// acknowledged ones.
const COMPACT_AFTER: u64 = 1024;

/// One committed file, as [`Engine::commits_since`] gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommitEvent {
    /// Its position in the outbox: increasing, not necessarily contiguous.
    /// Read on from `sequence + 1`.
    pub sequence: u64,
    /// The committed file.
    pub file_id: FileId,
    /// Its owner.
    pub owner: Owner,
    /// Its SHA-256.
    pub sha256: Sha256,
    /// Its MD5, when the upload declared one.
    pub md5: Option<[u8; 16]>,
    /// Its length.
    pub length: u64,
    /// How many parts it was made of.
    pub parts: u32,
    /// The labels given at create.
    pub labels: std::collections::BTreeMap<String, String>,
    /// When it was committed.
    pub committed: SystemTime,
}

/// A line of the log.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Entry {
    Commit {
        seq: u64,
        id: String,
        nonce: String,
        /// Milliseconds since the Unix epoch.
        at_ms: u64,
        file: FileRecord,
    },
    Delete {
        seq: u64,
        id: String,
        nonce: String,
    },
}

impl Entry {
    fn seq(&self) -> u64 {
        match self {
            Entry::Commit { seq, .. } | Entry::Delete { seq, .. } => *seq,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Acked {
    next: u64,
}

struct State {
    log: File,
    /// Sequence number of the next entry.
    next_seq: u64,
    /// Every event before it is delivered (`acked`).
    acked: u64,
    /// Commits between their append and their rename.
    in_flight: BTreeSet<u64>,
    /// Entries appended since the log was last compacted (or opened).
    appended: u64,
}

/// The outbox of one store.
pub(super) struct Outbox {
    dir: PathBuf,
    state: Mutex<State>,
}

/// A commit's event appended and waiting for its rename.
pub(super) struct Pending<'a> {
    outbox: &'a Outbox,
    seq: u64,
    /// The nonce the file's record must carry.
    pub(super) nonce: String,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        lock(&self.outbox.state).in_flight.remove(&self.seq);
    }
}

impl Outbox {
    /// Opens (creating) the outbox of the store, dropping a torn last line
    /// (an append a crash cut short was never fsynced, so no commit
    /// followed it).
    pub(super) fn open(layout: &Layout) -> Result<Outbox> {
        let dir = layout.root().join("events");
        fs::create_dir_all(&dir).map_err(Error::io("event log"))?;
        let path = dir.join("log");
        let mut log = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(Error::io("event log"))?;
        let mut next_seq = 0;
        let mut good = 0u64;
        let mut count = 0u64;
        {
            let mut r = BufReader::new(&log);
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = r
                    .read_until(b'\n', &mut line)
                    .map_err(Error::io("event log"))?;
                if n == 0 || line.last() != Some(&b'\n') {
                    break;
                }
                match serde_json::from_slice::<Entry>(&line) {
                    Ok(e) => next_seq = e.seq() + 1,
                    Err(e) => {
                        return Err(Error::io("event log")(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("entry {count} does not parse: {e}"),
                        )));
                    }
                }
                good += n as u64;
                count += 1;
            }
        }
        if log.metadata().map_err(Error::io("event log"))?.len() > good {
            log.set_len(good).map_err(Error::io("event log"))?;
            log.sync_all().map_err(Error::io("event log"))?;
        }
        log.seek(SeekFrom::End(0)).map_err(Error::io("event log"))?;
        let acked_path = dir.join("acked");
        let acked = if acked_path.exists() {
            load_json::<Acked>(&acked_path, "event position")?.next
        } else {
            0
        };
        layout.fsync_dir(&dir)?;
        layout.fsync_dir(layout.root())?;
        Ok(Outbox {
            dir,
            state: Mutex::new(State {
                log,
                next_seq: next_seq.max(acked),
                acked,
                in_flight: BTreeSet::new(),
                appended: count,
            }),
        })
    }

    fn append(&self, layout: &Layout, st: &mut State, entry: &Entry) -> Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(|e| Error::io("event log")(e.into()))?;
        line.push(b'\n');
        let start = st.log.metadata().map_err(Error::io("event log"))?.len();
        let res = (|| {
            layout.fault_io(Op::Write, "event log")?;
            st.log.write_all(&line)?;
            layout.fault_io(Op::Fsync, "event log")?;
            st.log.sync_data()
        })();
        if let Err(e) = res {
            // Leave no partial line for the next append to follow.
            let _ = st.log.set_len(start);
            return Err(Error::io("event log")(e));
        }
        st.appended += 1;
        Ok(())
    }

    /// Appends the event of a commit about to happen (durably), before its
    /// rename.
    pub(super) fn begin_commit(
        &self,
        layout: &Layout,
        id: &FileId,
        file: &FileRecord,
    ) -> Result<Pending<'_>> {
        let nonce = crate::io::random_hex(16)?;
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut st = lock(&self.state);
        let seq = st.next_seq;
        let mut file = file.clone();
        file.commit_nonce = Some(nonce.clone());
        let entry = Entry::Commit {
            seq,
            id: id.as_str().to_owned(),
            nonce: nonce.clone(),
            at_ms,
            file,
        };
        self.append(layout, &mut st, &entry)?;
        st.next_seq = seq + 1;
        st.in_flight.insert(seq);
        Ok(Pending {
            outbox: self,
            seq,
            nonce,
        })
    }

    /// Records that a committed file (with this nonce) is deleted, so that
    /// its event still counts after its record is gone.
    pub(super) fn record_delete(&self, layout: &Layout, id: &FileId, nonce: &str) -> Result<()> {
        let mut st = lock(&self.state);
        let seq = st.next_seq;
        let entry = Entry::Delete {
            seq,
            id: id.as_str().to_owned(),
            nonce: nonce.to_owned(),
        };
        self.append(layout, &mut st, &entry)?;
        st.next_seq = seq + 1;
        Ok(())
    }

    /// Entries from `from` on, up to `max` events, stopping at a commit in
    /// flight. Returns the events and the cursor to read on from.
    fn read(&self, layout: &Layout, from: u64, max: usize) -> Result<(Vec<CommitEvent>, u64)> {
        let (path, stop, end) = {
            let st = lock(&self.state);
            let stop = st.in_flight.first().copied().unwrap_or(u64::MAX);
            (self.dir.join("log"), stop, st.next_seq)
        };
        let file = File::open(&path).map_err(Error::io("event log"))?;
        let mut entries = Vec::new();
        for line in BufReader::new(file).lines() {
            let line = line.map_err(Error::io("event log"))?;
            let Ok(e) = serde_json::from_str::<Entry>(&line) else {
                // A line being appended right now.
                break;
            };
            if e.seq() >= end {
                break;
            }
            entries.push(e);
        }
        let mut out = Vec::new();
        let mut cursor = from;
        for (i, e) in entries.iter().enumerate() {
            let seq = e.seq();
            if seq < from {
                continue;
            }
            if seq >= stop || out.len() >= max {
                break;
            }
            cursor = seq + 1;
            let Entry::Commit {
                id,
                nonce,
                at_ms,
                file,
                ..
            } = e
            else {
                continue;
            };
            let Ok(file_id) = id.parse::<FileId>() else {
                continue;
            };
            if !committed_with(layout, &file_id, nonce, &entries[i + 1..])? {
                continue;
            }
            out.push(CommitEvent {
                sequence: seq,
                file_id,
                owner: file.owner.clone(),
                sha256: file.sha256,
                md5: file.md5,
                length: file.length,
                parts: file.parts,
                labels: file.labels.clone(),
                committed: UNIX_EPOCH + Duration::from_millis(*at_ms),
            });
        }
        Ok((out, cursor))
    }

    /// Records that every event before `next` is delivered; the log drops
    /// them once enough have gathered.
    fn ack(&self, layout: &Layout, next: u64) -> Result<()> {
        let mut st = lock(&self.state);
        if next <= st.acked {
            return Ok(());
        }
        let next = next.min(st.next_seq);
        let bytes = serde_json::to_vec(&Acked { next })
            .map_err(|e| Error::io("event position")(e.into()))?;
        layout.write_atomic(&self.dir.join("acked"), &bytes, "event position")?;
        st.acked = next;
        if st.appended >= COMPACT_AFTER {
            self.compact(layout, &mut st)?;
        }
        Ok(())
    }

    /// Rewrites the log without the entries before the acknowledged
    /// position (atomically: a crash leaves the old log or the new).
    fn compact(&self, layout: &Layout, st: &mut State) -> Result<()> {
        let path = self.dir.join("log");
        let mut kept = Vec::new();
        let file = File::open(&path).map_err(Error::io("event log"))?;
        for line in BufReader::new(file).lines() {
            let line = line.map_err(Error::io("event log"))?;
            let Ok(e) = serde_json::from_str::<Entry>(&line) else {
                continue;
            };
            if e.seq() >= st.acked {
                kept.extend_from_slice(line.as_bytes());
                kept.push(b'\n');
            }
        }
        layout.write_atomic(&path, &kept, "event log")?;
        st.log = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(Error::io("event log"))?;
        st.appended = 0;
        Ok(())
    }
}

/// Whether the commit of `id` with `nonce` happened: the file's record
/// carries the nonce, or a later entry records its deletion.
fn committed_with(layout: &Layout, id: &FileId, nonce: &str, later: &[Entry]) -> Result<bool> {
    let path = layout.file_record(id);
    match fs::read(&path) {
        Ok(bytes) => {
            let rec: FileRecord = serde_json::from_slice(&bytes).map_err(|e| {
                Error::io("file record")(io::Error::new(io::ErrorKind::InvalidData, e))
            })?;
            Ok(rec.commit_nonce.as_deref() == Some(nonce))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(later.iter().any(|e| {
            matches!(e, Entry::Delete { id: d, nonce: n, .. } if d == id.as_str() && n == nonce)
        })),
        Err(e) => Err(Error::io("file record")(e)),
    }
}

impl Engine {
    /// Commit events from position `cursor` on, at most `max` of them, in
    /// commit order, and the cursor to read on from (pass it to the next
    /// call, and to [`Engine::ack_commits`] once the events are handled).
    ///
    /// Every committed file gives exactly one event, also across crashes;
    /// a complete that failed, or that a crash cut off before its commit,
    /// gives none. An event stays readable until it is acknowledged, also
    /// after its file is deleted. A commit running right now holds readers
    /// at its position until it ends. Events are kept only with
    /// [`Config::commit_events`](crate::Config::commit_events) on.
    ///
    /// ```no_run
    /// # let engine = partseal::Engine::open("./data", partseal::Config::default())?;
    /// let mut cursor = 0;
    /// let (events, next) = engine.commits_since(cursor, 100)?;
    /// for e in &events {
    ///     println!("{} {} {}", e.sequence, e.file_id, e.sha256);
    /// }
    /// engine.ack_commits(next)?;
    /// cursor = next;
    /// # let _ = cursor;
    /// # Ok::<(), partseal::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Conflict`] when commit events are off, [`Error::Io`] when
    /// the outbox cannot be read.
    pub fn commits_since(&self, cursor: u64, max: usize) -> Result<(Vec<CommitEvent>, u64)> {
        let outbox = self.outbox()?;
        outbox.read(&self.inner.layout, cursor, max.max(1))
    }

    /// Records that every event before `cursor` is handled: the position
    /// survives restarts ([`Engine::commit_cursor`] gives it back), and the
    /// outbox drops those events.
    ///
    /// # Errors
    /// [`Error::Conflict`] when commit events are off, [`Error::Io`] when
    /// the position cannot be stored.
    pub fn ack_commits(&self, cursor: u64) -> Result<()> {
        let outbox = self.outbox()?;
        outbox.ack(&self.inner.layout, cursor)
    }

    /// The position acknowledged last with [`Engine::ack_commits`] (0 for
    /// a new store): where a consumer resumes after a restart.
    ///
    /// # Errors
    /// [`Error::Conflict`] when commit events are off.
    pub fn commit_cursor(&self) -> Result<u64> {
        Ok(lock(&self.outbox()?.state).acked)
    }

    fn outbox(&self) -> Result<&Outbox> {
        self.inner
            .events
            .as_ref()
            .ok_or_else(|| Error::Conflict("commit events are off (Config::commit_events)".into()))
    }

    /// Commits a staged file with its event (when events are on): the event
    /// is durable before the rename, and the record carries its nonce.
    pub(super) fn commit_with_event(
        &self,
        staging: crate::store::Staging<'_>,
        id: &FileId,
        meta: &mut FileRecord,
    ) -> std::result::Result<(), crate::store::CommitFailure> {
        let layout = &self.inner.layout;
        let pending = match &self.inner.events {
            Some(outbox) => {
                let p = outbox
                    .begin_commit(layout, id, meta)
                    .map_err(crate::store::CommitFailure::Before)?;
                meta.commit_nonce = Some(p.nonce.clone());
                Some(p)
            }
            None => None,
        };
        let res = staging.commit(id, meta);
        drop(pending);
        res
    }

    /// Before a committed file is deleted: its event keeps counting.
    pub(super) fn note_delete(&self, id: &FileId, rec: &FileRecord) -> Result<()> {
        if let (Some(outbox), Some(nonce)) = (&self.inner.events, &rec.commit_nonce) {
            outbox.record_delete(&self.inner.layout, id, nonce)?;
        }
        Ok(())
    }
}
