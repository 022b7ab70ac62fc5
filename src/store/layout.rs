//! Paths under a store root, and the durable file operations every record
//! and directory change goes through (each passes the fault seam).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::faults::{Faults, Op};
use crate::id::FileId;
use crate::io::{fsync_dir, random_hex};

/// Paths of the store under one root, and the durable operations on them.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    root: PathBuf,
    faults: Faults,
}

impl Layout {
    /// The layout under `root`, its durable operations passing through
    /// `faults`.
    pub(crate) fn new(root: &Path, faults: Faults) -> Layout {
        Layout {
            root: root.to_path_buf(),
            faults,
        }
    }

    /// The store's root directory.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Fails if a fault is injected for `op` on a file of `role`, as an
    /// `io::Error` for code that works in `io::Result`.
    pub(crate) fn fault_io(&self, op: Op, role: &'static str) -> io::Result<()> {
        self.faults.check(op, role)
    }

    /// Fails if a fault is injected for `op` on a file of `role`.
    pub(crate) fn fault(&self, op: Op, role: &'static str) -> Result<()> {
        self.fault_io(op, role).map_err(Error::io(role))
    }

    /// Fsyncs a directory.
    pub(crate) fn fsync_dir(&self, dir: &Path) -> Result<()> {
        self.fault(Op::DirFsync, "store directory")?;
        fsync_dir(dir)
    }

    /// Renames `from` to `to`.
    pub(crate) fn rename(&self, from: &Path, to: &Path, role: &'static str) -> Result<()> {
        self.fault(Op::Rename, role)?;
        fs::rename(from, to).map_err(Error::io(role))
    }

    /// Creates `path` with `bytes` and fsyncs it (the caller fsyncs the
    /// directory).
    pub(crate) fn write_new(&self, path: &Path, bytes: &[u8], role: &'static str) -> Result<()> {
        let res = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).open(path)?;
            self.fault_io(Op::Write, role)?;
            f.write_all(bytes)?;
            self.fault_io(Op::Fsync, role)?;
            f.sync_all()
        })();
        res.map_err(Error::io(role))
    }

    /// Writes `bytes` to `path` so that after a crash the file holds either
    /// the old content or all of the new: write a temporary sibling, fsync
    /// it, rename over, fsync the directory.
    pub(crate) fn write_atomic(&self, path: &Path, bytes: &[u8], role: &'static str) -> Result<()> {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(Error::io(role)(io::Error::other("not a file path")));
        };
        let tmp = dir.join(temp_name(&name.to_string_lossy())?);
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
    pub(crate) fn create_dirs(&self) -> Result<()> {
        for d in [self.uploads_dir(), self.files_dir(), self.tmp_dir()] {
            fs::create_dir_all(&d).map_err(Error::io("store directory"))?;
        }
        self.fsync_dir(&self.root)
    }

    /// `ROOT/uploads`.
    pub(crate) fn uploads_dir(&self) -> PathBuf {
        self.root.join("uploads")
    }
    /// `ROOT/files`.
    pub(crate) fn files_dir(&self) -> PathBuf {
        self.root.join("files")
    }
    /// `ROOT/tmp`.
    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
    /// A fresh path in `ROOT/tmp` for work on `id`.
    pub(crate) fn staging_path(&self, id: &FileId) -> Result<PathBuf> {
        Ok(self.tmp_dir().join(temp_name(id.as_str())?))
    }
    /// The directory of an open upload.
    pub(crate) fn upload_dir(&self, id: &FileId) -> PathBuf {
        self.uploads_dir().join(id.as_str())
    }
    /// Its record.
    pub(crate) fn upload_record(&self, id: &FileId) -> PathBuf {
        self.upload_dir(id).join("upload.json")
    }
    /// Its assembly file (chain mode).
    pub(crate) fn assembly(&self, id: &FileId) -> PathBuf {
        self.upload_dir(id).join("assembly")
    }
    /// Its parts directory.
    pub(crate) fn parts_dir(&self, id: &FileId) -> PathBuf {
        self.upload_dir(id).join("parts")
    }
    /// A part's record.
    pub(crate) fn part_record(&self, id: &FileId, n: u32) -> PathBuf {
        self.parts_dir(id).join(format!("{n}.json"))
    }
    /// The directory of a committed file.
    pub(crate) fn file_dir(&self, id: &FileId) -> PathBuf {
        self.files_dir().join(id.as_str())
    }
    /// A committed file's data.
    pub(crate) fn file_data(&self, id: &FileId) -> PathBuf {
        self.file_dir(id).join("data")
    }
    /// A committed file's record.
    pub(crate) fn file_record(&self, id: &FileId) -> PathBuf {
        self.file_dir(id).join("meta.json")
    }
}

/// `base` with a random temporary suffix, which recovery recognises.
pub(crate) fn temp_name(base: &str) -> Result<String> {
    Ok(format!("{base}{TEMP_MARK}{}", random_hex(8)?))
}

/// A fresh name for a version of part `n`'s bytes in `parts/`: a replaced
/// part gets a new file, so a reader of the old one never sees it change.
pub(crate) fn part_data_name(n: u32) -> Result<String> {
    Ok(format!("{n}.{}.data", random_hex(8)?))
}

const TEMP_MARK: &str = ".tmp-";

/// Whether `name` was made by [`temp_name`]: recovery removes such entries.
pub(crate) fn is_temp_name(name: &str) -> bool {
    name.contains(TEMP_MARK)
}
