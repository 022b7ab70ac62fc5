//! The staging and commit protocol: uploads and committed files are built
//! in `tmp/` and appear under their final names by one rename, so each is
//! whole or absent; removals go the other way, renamed into `tmp/` first.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::faults::Op;
use crate::id::FileId;

use super::layout::{Layout, temp_name};
use super::records::{FileRecord, Mode, UploadRecord, to_json};
use super::remove_any;

/// Creates the directory of a new upload with its record: built in `tmp/`,
/// then renamed into `uploads/`, so it appears whole or not at all.
///
/// Nothing is fsynced yet: an upload that holds no acknowledged part loses
/// nothing if a crash takes it (its client is told "no such upload" and
/// starts again), so creating one costs no disk flush. [`make_durable`] runs
/// before the first part or plan is acknowledged, and recovery removes an
/// upload whose creation never became durable.
pub(crate) fn create_upload(layout: &Layout, id: &FileId, record: &UploadRecord) -> Result<()> {
    let staging = layout.staging_path(id)?;
    let res = (|| {
        fs::create_dir(&staging).map_err(Error::io("upload directory"))?;
        fs::create_dir(staging.join("parts")).map_err(Error::io("upload directory"))?;
        let mut f =
            File::create_new(staging.join("upload.json")).map_err(Error::io("upload record"))?;
        layout.fault(Op::Write, "upload record")?;
        f.write_all(&to_json(record))
            .map_err(Error::io("upload record"))?;
        if record.mode == Mode::Chain {
            // Parts go straight into it; it exists before any is taken.
            File::create_new(staging.join("assembly")).map_err(Error::io("assembly file"))?;
        }
        layout.rename(&staging, &layout.upload_dir(id), "upload directory")
    })();
    if res.is_err() {
        let _ = remove_any(&staging);
    }
    res
}

/// Makes a created upload durable: its record, its directories and its
/// entry in `uploads/`. Idempotent.
pub(crate) fn make_durable(layout: &Layout, id: &FileId) -> Result<()> {
    layout.fault(Op::Fsync, "upload record")?;
    File::open(layout.upload_record(id))
        .and_then(|f| f.sync_all())
        .map_err(Error::io("upload record"))?;
    layout.fsync_dir(&layout.parts_dir(id))?;
    layout.fsync_dir(&layout.upload_dir(id))?;
    layout.fsync_dir(&layout.uploads_dir())
}

/// Why a commit failed: before its rename nothing happened; after it, the
/// file exists under its final name and must be treated as committed.
#[derive(Debug)]
pub(crate) enum CommitFailure {
    /// Nothing was committed; the staging directory is gone.
    Before(Error),
    /// The rename into `files/` happened, but making it durable failed.
    After(Error),
}

/// A committed file being built in `tmp/`. Dropped without
/// [`Staging::commit`], it is removed.
pub(crate) struct Staging<'a> {
    layout: &'a Layout,
    path: PathBuf,
    done: bool,
}

impl<'a> Staging<'a> {
    /// A new, empty staging directory for the file `id`.
    pub(crate) fn new(layout: &'a Layout, id: &FileId) -> Result<Staging<'a>> {
        let path = layout.staging_path(id)?;
        fs::create_dir(&path).map_err(Error::io("commit directory"))?;
        Ok(Staging {
            layout,
            path,
            done: false,
        })
    }

    /// Where the file's bytes go.
    pub(crate) fn data_path(&self) -> PathBuf {
        self.path.join("data")
    }

    /// Writes the file record beside the data, then renames the directory
    /// into `files/`: the commit point.
    pub(crate) fn commit(mut self, id: &FileId, meta: &FileRecord) -> Result<(), CommitFailure> {
        let layout = self.layout;
        layout
            .write_new(&self.path.join("meta.json"), &to_json(meta), "file record")
            .and_then(|()| layout.fsync_dir(&self.path))
            .and_then(|()| layout.rename(&self.path, &layout.file_dir(id), "committed file"))
            .map_err(CommitFailure::Before)?;
        self.done = true;
        layout
            .fsync_dir(&layout.files_dir())
            .map_err(CommitFailure::After)
    }
}

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = remove_any(&self.path);
        }
    }
}

/// Moves `path` (an entry of `parent`) into `tmp/` in one atomic step and
/// makes that durable: after a crash it is whole or gone. What it held waits
/// in `tmp/` (emptied at open) at the returned path, for the janitor to
/// delete off the caller's thread.
pub(crate) fn bury(layout: &Layout, path: &Path, parent: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let grave = layout.tmp_dir().join(temp_name(&name)?);
    layout.rename(path, &grave, "upload directory")?;
    layout.fsync_dir(parent)?;
    Ok(grave)
}

/// Gives `to` the bytes of `from` without moving them: a hard link, or on
/// file systems without hard links a copy (slower, equally safe), fsynced.
pub(crate) fn link_or_copy(layout: &Layout, from: &Path, to: &Path) -> Result<()> {
    layout.fault(Op::Write, "committed file")?;
    if fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    fs::copy(from, to).map_err(Error::io("committed file"))?;
    File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(Error::io("committed file"))
}
