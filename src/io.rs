//! File I/O helpers: durable writes, directory fsync, and reading files
//! through bounded memory-mapped windows.
//!
//! Mapping a whole file makes the process's RSS grow with the file (mapped
//! file pages count), so files are mapped one window at a time and each
//! window is unmapped as soon as every pipeline stage is done with it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::Deref;
use std::path::Path;

use memmap2::{Mmap, MmapOptions};

use crate::error::{Error, Result};

/// Files (or window remainders) below this size are read into a buffer
/// rather than mapped: mapping costs more than it saves for them.
pub const MAP_THRESHOLD: u64 = 256 * 1024;

/// Bytes of a file window, mapped or read.
pub enum Chunk {
    /// A mapped window.
    Mapped(Mmap),
    /// A small window read into memory.
    Owned(Vec<u8>),
}

impl Deref for Chunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Chunk::Mapped(m) => m,
            Chunk::Owned(v) => v,
        }
    }
}

/// Reads `len` bytes of `file` from `offset` as one [`Chunk`].
///
/// The caller guarantees that the range lies inside the file and that no one
/// truncates or rewrites the file while the chunk lives (the engine holds the
/// upload's lock, and part files are never rewritten in place once written).
pub fn read_window(file: &File, offset: u64, len: usize) -> io::Result<Chunk> {
    if (len as u64) < MAP_THRESHOLD {
        let mut buf = vec![0u8; len];
        read_exact_at(file, &mut buf, offset)?;
        return Ok(Chunk::Owned(buf));
    }
    // SAFETY: mapping is sound as long as the mapped range is not truncated or
    // modified while the map lives. Engine files are written once, then only
    // read under the upload's lock (a replaced part gets a new file), and
    // command-line inputs are the user's own files; see the caller's contract.
    let map = unsafe {
        MmapOptions::new()
            .offset(offset)
            .len(len)
            .populate()
            .map(file)?
    };
    #[cfg(unix)]
    {
        let _ = map.advise(memmap2::Advice::Sequential);
    }
    Ok(Chunk::Mapped(map))
}

/// `pread` until `buf` is full; a short file is an `UnexpectedEof` error.
pub fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
}

/// `pwrite` all of `buf` at `offset`.
pub fn write_all_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(buf, offset)
}

/// Fsyncs a directory so that entries created, renamed or removed in it are
/// durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("store directory"))
}

/// Writes `bytes` to `path` so that after a crash the file holds either the
/// old content or all of the new: write a temporary sibling, fsync it,
/// rename over, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8], role: &'static str) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::io(role)(io::Error::other("no parent directory")))?;
    let name = path
        .file_name()
        .ok_or_else(|| Error::io(role)(io::Error::other("no file name")))?;
    let tmp = dir.join(format!(
        "{}.tmp-{}",
        name.to_string_lossy(),
        random_suffix()?
    ));
    let res = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(role)(e));
    }
    fsync_dir(dir)
}

/// Reads a small record file whole.
pub fn read_small(path: &Path, role: &'static str) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut v))
        .map_err(Error::io(role))?;
    Ok(v)
}

/// A short random hex suffix for temporary and versioned names.
pub fn random_suffix() -> Result<String> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| Error::Io {
        role: "random source",
        source: io::Error::other(e.to_string()),
    })?;
    Ok(hex::encode(b))
}

/// Name of temporary files, recognised and removed by recovery.
pub fn is_temp_name(name: &str) -> bool {
    name.contains(".tmp-")
}
