//! The local store: the on-disk layout of uploads, parts and committed
//! files, the staging and commit protocol, and recovery.
//!
//! ```text
//! ROOT/uploads/ID/upload.json       the upload record (owner, declared facts, plan)
//! ROOT/uploads/ID/assembly          the file being assembled, parts at their offsets (chain
//!                                   mode, and stream parts whose place the plan gives)
//! ROOT/uploads/ID/parts/N.json      part N's record; its existence acknowledges the part
//! ROOT/uploads/ID/parts/N.R.data    part N's bytes (stream parts without a planned place;
//!                                   replacements until they are settled into the assembly)
//! ROOT/files/ID/data                a committed file
//! ROOT/files/ID/meta.json           its record (owner, length, digests)
//! ROOT/tmp/                         work in progress; emptied at open
//! ```
//!
//! Every record is written to a temporary name, fsynced, renamed and its
//! directory fsynced. An upload is created, and a file committed, by renaming
//! a complete directory out of `tmp/`, so each appears whole or not at all.
//! The commit point of a complete is the rename into `files/`; an upload
//! directory left beside its committed file is removed by recovery.
//!
//! Recovery is in two steps, so that a store with many open uploads opens in
//! the time of a directory listing: at open, `tmp/` is emptied and the open
//! uploads are listed; each upload is recovered (unacknowledged bytes
//! removed, interrupted replacements finished, records read) when it is
//! first used, and expiry removes the ones never used again.
//!
//! Once the rename into `files/` has happened the file is immutable, whatever
//! fails afterwards: the engine marks the upload complete before it looks at
//! the directory fsync's result, and no path under `uploads/ID` is written
//! again (the assembly shares its inode with `files/ID/data`).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;

use crate::error::{Error, Result};
use crate::faults::Op;
use crate::id::FileId;
use crate::io::{read_window, write_all_at};

mod janitor;
mod layout;
mod records;
mod recover;
mod staging;

pub(crate) use janitor::Janitor;
pub(crate) use layout::{Layout, part_data_name};
pub(crate) use records::{FileRecord, Mode, PartRecord, UploadRecord, load_json, to_json};
pub(crate) use recover::{committed, load_upload, recover};
pub(crate) use staging::{CommitFailure, Staging, bury, create_upload, link_or_copy, make_durable};

/// An exclusive lock on a store directory, held for the life of an engine:
/// two processes recovering and writing one store would destroy each
/// other's work in progress. The kernel releases it when the process dies.
#[derive(Debug)]
pub(crate) struct StoreLock {
    _file: File,
}

impl StoreLock {
    /// Takes the lock on `ROOT/store.lock`, creating the root if needed.
    pub(crate) fn acquire(root: &Path) -> Result<StoreLock> {
        fs::create_dir_all(root).map_err(Error::io("store directory"))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(root.join("store.lock"))
            .map_err(Error::io("store lock"))?;
        match file.try_lock() {
            Ok(()) => Ok(StoreLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(Error::Conflict(
                "the store is in use by another engine".into(),
            )),
            // A file system that cannot lock (NFS without locking, ENOTSUP)
            // is said, not silently shared.
            Err(fs::TryLockError::Error(e)) => Err(Error::io("store lock")(e)),
        }
    }
}

/// Writes the upload record durably over the old one.
pub(crate) fn save_upload(layout: &Layout, id: &FileId, rec: &UploadRecord) -> Result<()> {
    layout.write_atomic(&layout.upload_record(id), &to_json(rec), "upload record")
}

/// Writes a part record durably: the acknowledgement of the part.
pub(crate) fn save_part(layout: &Layout, id: &FileId, n: u32, rec: &PartRecord) -> Result<()> {
    layout.write_atomic(&layout.part_record(id, n), &to_json(rec), "part record")
}

/// Opens (creating if needed) an upload's assembly file for writing. A new
/// assembly's directory entry is made durable at once: part records that
/// acknowledge bytes in it must never outlive it.
pub(crate) fn open_assembly(layout: &Layout, id: &FileId) -> Result<File> {
    let path = layout.assembly(id);
    let open = |create: bool| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(create)
            .open(&path)
    };
    match open(false) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let f = match open(true) {
                Ok(f) => f,
                // Created meanwhile by a part of another number.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return open(false).map_err(Error::io("assembly file"));
                }
                Err(e) => return Err(Error::io("assembly file")(e)),
            };
            layout.fsync_dir(&layout.upload_dir(id))?;
            Ok(f)
        }
        Err(e) => Err(Error::io("assembly file")(e)),
    }
}

/// Copies a staged replacement part into the assembly at `offset`, fsyncs it,
/// then rewrites the part's record to point at the assembly and removes the
/// staged file. Idempotent, so recovery can redo it after a crash.
pub(crate) fn settle_staged(
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

/// When an open upload was last active, as the store shows it: the newest
/// change of its directory, its parts directory or its record (a record
/// write, a part acknowledged, a complete attempt touching the record).
pub(crate) fn activity_stamp(layout: &Layout, id: &FileId) -> Option<std::time::SystemTime> {
    [
        layout.upload_dir(id),
        layout.parts_dir(id),
        layout.upload_record(id),
    ]
    .iter()
    .filter_map(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
    .max()
}

/// Marks the upload's record as touched now (a complete attempt, which
/// writes nothing else). Best effort: a lost touch only makes the upload
/// look idle for longer.
pub(crate) fn touch(layout: &Layout, id: &FileId) {
    if let Ok(f) = File::options().write(true).open(layout.upload_record(id)) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// Removes a file or a directory tree; a missing path is not an error.
pub(crate) fn remove_any(path: &Path) -> Result<()> {
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
