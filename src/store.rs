//! The on-disk layout of uploads, parts and committed files, and recovery.
//!
//! ```text
//! ROOT/uploads/ID/upload.json       the upload record (owner, declared facts, plan)
//! ROOT/uploads/ID/assembly          chain mode: the file being assembled, parts at their offsets
//! ROOT/uploads/ID/parts/N.json      part N's record; its existence acknowledges the part
//! ROOT/uploads/ID/parts/N.R.data    part N's bytes (stream mode; chain mode while replacing)
//! ROOT/files/ID/data                a committed file
//! ROOT/files/ID/meta.json           its record (owner, length, digests)
//! ROOT/tmp/                         work in progress; emptied at open
//! ```
//!
//! Every record is written to a temporary name, fsynced, renamed and its
//! directory fsynced. An upload is created, and a file committed, by renaming
//! a complete directory out of `tmp/`, so each appears whole or not at all.
//! The commit point of a verify is the rename into `files/`; an upload
//! directory left beside its committed file is removed by recovery.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::faults::{Faults, Op};
use crate::id::FileId;
use crate::io::{fsync_dir, is_temp_name, random_suffix, read_small, read_window, write_all_at};
use crate::plan::PartPlan;

/// How an upload's parts are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Nothing planned or put yet.
    Unset,
    /// Parts carry midstates; each is a link checked on arrival and written
    /// at its offset in the assembly file.
    Chain,
    /// Parts without midstates, stored as separate files and hashed in order.
    Stream,
}

/// The record of an open upload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UploadRecord {
    /// Who may act on it.
    pub owner: String,
    /// Declared total length.
    pub length: Option<u64>,
    /// Declared SHA-256, hex.
    pub sha256: Option<String>,
    /// Declared MD5, hex.
    pub md5: Option<String>,
    /// How parts are checked.
    pub mode: Mode,
    /// The plan, by part number.
    pub plan: BTreeMap<u32, PartPlan>,
    /// Labels of the embedding service (a name, a folder, ...), kept as given.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// How many parts the upload will have, when declared without sizes.
    #[serde(default)]
    pub part_count: Option<u32>,
}

/// The record of a received part; its existence acknowledges the part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    /// Length in bytes.
    pub len: u64,
    /// The part's own SHA-256, hex.
    pub sha256: String,
    /// File (in `parts/`) holding the bytes; in chain mode only while a
    /// replacement is being copied into the assembly.
    pub data: Option<String>,
    /// Chain mode: the state after the part (hex), when it is whole blocks.
    pub state_out: Option<String>,
    /// Chain mode: the file digest if this part is the last one (hex).
    pub digest_if_last: Option<String>,
}

/// The record of a committed file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileRecord {
    /// Its owner.
    pub owner: String,
    /// Its length.
    pub length: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// Its MD5, hex, when computed.
    pub md5: Option<String>,
    /// How many parts it was made of.
    pub parts: u32,
    /// Labels given when the upload was created.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Paths of the store under one root.
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
    faults: Faults,
}

impl Layout {
    /// The layout under `root`.
    pub fn new(root: &Path) -> Layout {
        Layout::with_faults(root, Faults::none())
    }

    /// The layout under `root`, its durable operations passing through
    /// `faults` (see [`crate::faults`]).
    pub fn with_faults(root: &Path, faults: Faults) -> Layout {
        Layout {
            root: root.to_path_buf(),
            faults,
        }
    }

    /// The fault seam.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Fails if a fault is injected for `op` on a file of `role`.
    pub fn fault(&self, op: Op, role: &'static str) -> Result<()> {
        self.faults.check(op, role).map_err(Error::io(role))
    }

    /// Fsyncs a directory.
    pub fn fsync_dir(&self, dir: &Path) -> Result<()> {
        self.fault(Op::DirFsync, "store directory")?;
        fsync_dir(dir)
    }

    /// Renames `from` to `to`.
    pub fn rename(&self, from: &Path, to: &Path, role: &'static str) -> Result<()> {
        self.fault(Op::Rename, role)?;
        fs::rename(from, to).map_err(Error::io(role))
    }

    /// Creates `path` with `bytes` and fsyncs it (the caller fsyncs the
    /// directory).
    pub fn write_new(&self, path: &Path, bytes: &[u8], role: &'static str) -> Result<()> {
        let res = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).open(path)?;
            self.faults.check(Op::Write, role)?;
            f.write_all(bytes)?;
            self.faults.check(Op::Fsync, role)?;
            f.sync_all()
        })();
        res.map_err(Error::io(role))
    }

    /// Writes `bytes` to `path` so that after a crash the file holds either
    /// the old content or all of the new: write a temporary sibling, fsync
    /// it, rename over, fsync the directory.
    pub fn write_atomic(&self, path: &Path, bytes: &[u8], role: &'static str) -> Result<()> {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(Error::io(role)(io::Error::other("not a file path")));
        };
        let tmp = dir.join(format!(
            "{}.tmp-{}",
            name.to_string_lossy(),
            random_suffix()?
        ));
        let res = self
            .write_new(&tmp, bytes, role)
            .and_then(|()| self.rename(&tmp, path, role));
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res?;
        self.fsync_dir(dir)
    }

    /// Creates the top directories.
    pub fn create_dirs(&self) -> Result<()> {
        for d in [self.uploads_dir(), self.files_dir(), self.tmp_dir()] {
            fs::create_dir_all(&d).map_err(Error::io("store directory"))?;
        }
        self.fsync_dir(&self.root)
    }

    /// `ROOT/uploads`.
    pub fn uploads_dir(&self) -> PathBuf {
        self.root.join("uploads")
    }
    /// `ROOT/files`.
    pub fn files_dir(&self) -> PathBuf {
        self.root.join("files")
    }
    /// `ROOT/tmp`.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
    /// The directory of an open upload.
    pub fn upload_dir(&self, id: &FileId) -> PathBuf {
        self.uploads_dir().join(id.as_str())
    }
    /// Its record.
    pub fn upload_record(&self, id: &FileId) -> PathBuf {
        self.upload_dir(id).join("upload.json")
    }
    /// Its assembly file (chain mode).
    pub fn assembly(&self, id: &FileId) -> PathBuf {
        self.upload_dir(id).join("assembly")
    }
    /// Its parts directory.
    pub fn parts_dir(&self, id: &FileId) -> PathBuf {
        self.upload_dir(id).join("parts")
    }
    /// A part's record.
    pub fn part_record(&self, id: &FileId, n: u32) -> PathBuf {
        self.parts_dir(id).join(format!("{n}.json"))
    }
    /// The directory of a committed file.
    pub fn file_dir(&self, id: &FileId) -> PathBuf {
        self.files_dir().join(id.as_str())
    }
    /// A committed file's data.
    pub fn file_data(&self, id: &FileId) -> PathBuf {
        self.file_dir(id).join("data")
    }
    /// A committed file's record.
    pub fn file_record(&self, id: &FileId) -> PathBuf {
        self.file_dir(id).join("meta.json")
    }
}

/// An exclusive lock on a store directory, held for the life of an engine:
/// two processes recovering and writing one store would destroy each
/// other's work in progress. The kernel releases it when the process dies.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

impl StoreLock {
    /// Takes the lock on `ROOT/store.lock`, creating the root if needed.
    pub fn acquire(root: &Path) -> Result<StoreLock> {
        use std::os::fd::AsRawFd;
        fs::create_dir_all(root).map_err(Error::io("store directory"))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(root.join("store.lock"))
            .map_err(Error::io("store lock"))?;
        // SAFETY: flock on a descriptor this function owns; no memory is shared.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(if e.kind() == io::ErrorKind::WouldBlock {
                Error::Conflict("the store is in use by another engine".into())
            } else {
                Error::io("store lock")(e)
            });
        }
        Ok(StoreLock { _file: file })
    }
}

/// Serializes a record as JSON.
pub fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Records are plain structs of strings and numbers: serializing cannot fail.
    serde_json::to_vec_pretty(v).unwrap_or_default()
}

/// Reads and parses a record.
pub fn load_json<T: for<'de> Deserialize<'de>>(path: &Path, role: &'static str) -> Result<T> {
    let bytes = read_small(path, role)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::io(role)(io::Error::new(io::ErrorKind::InvalidData, e)))
}

/// Writes a part record durably.
pub fn save_part(layout: &Layout, id: &FileId, n: u32, rec: &PartRecord) -> Result<()> {
    layout.write_atomic(&layout.part_record(id, n), &to_json(rec), "part record")
}

/// Opens (creating if needed) an upload's assembly file for writing.
pub fn open_assembly(layout: &Layout, id: &FileId) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(layout.assembly(id))
        .map_err(Error::io("assembly file"))
}

/// Copies a staged replacement part into the assembly at `offset`, fsyncs it,
/// then rewrites the part's record to point at the assembly and removes the
/// staged file. Idempotent, so recovery can redo it after a crash.
pub fn settle_staged(
    layout: &Layout,
    id: &FileId,
    n: u32,
    offset: u64,
    rec: &PartRecord,
) -> Result<PartRecord> {
    let Some(name) = &rec.data else {
        return Ok(rec.clone());
    };
    let staged_path = layout.parts_dir(id).join(name);
    let staged = File::open(&staged_path).map_err(Error::io("staged part"))?;
    let asm = open_assembly(layout, id)?;
    let mut done = 0u64;
    while done < rec.len {
        let n = (rec.len - done).min(8 << 20) as usize;
        let chunk = read_window(&staged, done, n).map_err(Error::io("staged part"))?;
        layout.fault(Op::Write, "assembly file")?;
        write_all_at(&asm, &chunk, offset + done).map_err(Error::io("assembly file"))?;
        done += n as u64;
    }
    layout.fault(Op::Fsync, "assembly file")?;
    asm.sync_data().map_err(Error::io("assembly file"))?;
    let settled = PartRecord {
        data: None,
        ..rec.clone()
    };
    save_part(layout, id, n, &settled)?;
    fs::remove_file(&staged_path).map_err(Error::io("staged part"))?;
    layout.fsync_dir(&layout.parts_dir(id))?;
    Ok(settled)
}

/// An open upload as found on disk.
pub struct Recovered {
    /// Its id.
    pub id: FileId,
    /// Its record.
    pub record: UploadRecord,
    /// Its acknowledged parts.
    pub parts: BTreeMap<u32, PartRecord>,
}

/// Empties `tmp/`, finishes or undoes whatever a crash interrupted, and
/// returns the open uploads.
pub fn recover(layout: &Layout) -> Result<Vec<Recovered>> {
    layout.create_dirs()?;
    clear_dir(&layout.tmp_dir())?;
    layout.fsync_dir(&layout.tmp_dir())?;

    // Committed files: a leftover temporary inside one is removed; a directory
    // without its record cannot come from the commit protocol and is left for
    // an operator rather than deleted.
    for entry in read_dir(&layout.files_dir())? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_temp_name(&name) {
            remove_any(&entry.path())?;
        }
    }

    let mut out = Vec::new();
    for entry in read_dir(&layout.uploads_dir())? {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(id) = name.parse::<FileId>() else {
            if is_temp_name(&name) {
                remove_any(&entry.path())?;
            }
            continue;
        };
        if layout.file_record(&id).exists() {
            // Committed before the crash; only the cleanup was missing.
            remove_any(&layout.upload_dir(&id))?;
            continue;
        }
        out.push(recover_upload(layout, id)?);
    }
    layout.fsync_dir(&layout.uploads_dir())?;
    Ok(out)
}

/// The committed files in the store with their records.
pub fn committed(layout: &Layout) -> Result<Vec<(FileId, FileRecord)>> {
    let mut out = Vec::new();
    for entry in read_dir(&layout.files_dir())? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Ok(id) = name.parse::<FileId>() {
            let path = layout.file_record(&id);
            if path.exists() {
                out.push((id, load_json(&path, "file record")?));
            }
        }
    }
    Ok(out)
}

fn recover_upload(layout: &Layout, id: FileId) -> Result<Recovered> {
    let record: UploadRecord = load_json(&layout.upload_record(&id), "upload record")?;
    let dir = layout.upload_dir(&id);
    for entry in read_dir(&dir)? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_temp_name(&name) {
            remove_any(&entry.path())?;
        }
    }
    let parts_dir = layout.parts_dir(&id);
    let mut parts = BTreeMap::new();
    let mut data_files = Vec::new();
    for entry in read_dir(&parts_dir)? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_temp_name(&name) {
            remove_any(&entry.path())?;
        } else if let Some(n) = name
            .strip_suffix(".json")
            .and_then(|n| n.parse::<u32>().ok())
        {
            let rec: PartRecord = load_json(&entry.path(), "part record")?;
            parts.insert(n, rec);
        } else {
            data_files.push(name);
        }
    }
    // Bytes of a part whose record was never written were never acknowledged.
    let referenced: BTreeSet<&str> = parts.values().filter_map(|p| p.data.as_deref()).collect();
    for name in &data_files {
        if !referenced.contains(name.as_str()) {
            remove_any(&parts_dir.join(name))?;
        }
    }
    layout.fsync_dir(&parts_dir)?;
    if record.mode == Mode::Chain {
        for (n, rec) in parts.iter_mut() {
            if rec.data.is_some() {
                let offset = record.plan.get(n).and_then(|p| p.offset).ok_or_else(|| {
                    Error::io("part record")(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a staged part has no planned offset",
                    ))
                })?;
                *rec = settle_staged(layout, &id, *n, offset, rec)?;
            }
        }
    }
    Ok(Recovered { id, record, parts })
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    match fs::read_dir(dir) {
        Ok(rd) => rd
            .collect::<io::Result<Vec<_>>>()
            .map_err(Error::io("store directory")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io("store directory")(e)),
    }
}

fn clear_dir(dir: &Path) -> Result<()> {
    for entry in read_dir(dir)? {
        remove_any(&entry.path())?;
    }
    Ok(())
}

/// Removes a file or a directory tree; a missing path is not an error.
pub fn remove_any(path: &Path) -> Result<()> {
    let res = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match res {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("store directory")(e)),
    }
}
