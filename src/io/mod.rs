//! File I/O helpers: durable writes, directory fsync, reading files through
//! bounded memory-mapped windows, and writing a merged file with `O_DIRECT`.
//!
//! Mapping a whole file makes the process's RSS grow with the file (mapped
//! file pages count), so files are mapped one window at a time and each
//! window is unmapped as soon as every pipeline stage is done with it.
//!
//! The merged output is written by [`OutputWriter`]: straight from the
//! mapped windows to the device with `O_DIRECT` where the file system allows
//! it (no page-cache copy, no fresh pages to fault in), through a small
//! aligned bounce buffer for bytes that are not block-aligned, and with
//! ordinary buffered writes where `O_DIRECT` is refused.

use std::fs::File;
use std::io::{self, Read};
use std::ops::Deref;
use std::path::Path;

use memmap2::{Mmap, MmapOptions};

use crate::error::{Error, Result};

/// Files (or window remainders) below this size are read into a buffer
/// rather than mapped: mapping costs more than it saves for them.
pub(crate) const MAP_THRESHOLD: u64 = 256 * 1024;

/// Bytes of a file window, mapped or read.
pub(crate) enum Chunk {
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
/// The caller guarantees that no one truncates or rewrites the file while
/// the chunk lives (the engine holds the upload's lock, and part files are
/// never rewritten in place once written).
pub(crate) fn read_window(file: &File, offset: u64, len: usize) -> io::Result<Chunk> {
    if (len as u64) < MAP_THRESHOLD {
        let mut buf = vec![0u8; len];
        read_exact_at(file, &mut buf, offset)?;
        return Ok(Chunk::Owned(buf));
    }
    Ok(Chunk::Mapped(map_window(file, offset, len, true)?))
}

/// Maps `len` bytes of `file` from `offset`, read-only, with sequential
/// advice; `populate` faults every page in now (`MAP_POPULATE`), else each
/// page is mapped on first touch (with the kernel's fault-around, and one
/// fault per folio of 2 MiB where the window starts on such a boundary).
///
/// A window that reaches past the end of the file is an `UnexpectedEof`
/// error, not a mapping whose touch would raise `SIGBUS`. The caller
/// guarantees that no one truncates the file while the map lives.
pub(crate) fn map_window(file: &File, offset: u64, len: usize, populate: bool) -> io::Result<Mmap> {
    let size = file.metadata()?.len();
    if size < offset + len as u64 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the file holds {size} bytes, fewer than the {} the read needs",
                offset + len as u64
            ),
        ));
    }
    let mut opts = MmapOptions::new();
    opts.offset(offset).len(len);
    if populate {
        opts.populate();
    }
    // SAFETY: mapping is sound as long as the mapped range is not truncated or
    // modified while the map lives. The range lies inside the file (checked
    // above); engine files are written once, then only read under the
    // upload's lock (a replaced part gets a new file), and command-line inputs
    // are the user's own files; see the callers' contracts.
    let map = unsafe { opts.map(file)? };
    #[cfg(unix)]
    {
        let _ = map.advise(memmap2::Advice::Sequential);
    }
    Ok(map)
}

/// Drops the first `len` bytes of `file` from the page cache where they are
/// clean and not mapped by anyone (`POSIX_FADV_DONTNEED`): a hint for files
/// that were read once and are about to be deleted. Failures are ignored.
pub(crate) fn drop_cache(file: &File, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let Ok(len) = i64::try_from(len) else {
            return;
        };
        // SAFETY: posix_fadvise on a file descriptor owned by `file`, which
        // outlives the call; no memory is passed.
        let _ = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, len, libc::POSIX_FADV_DONTNEED) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, len);
}

/// Asks the kernel to start reading `len` bytes of `file` from `offset` into
/// the page cache now (`POSIX_FADV_WILLNEED`), so that a sequential pass
/// over bytes written with `O_DIRECT` finds them arriving instead of waiting
/// for each window in turn. Failures are ignored.
pub(crate) fn prefetch(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(off), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: posix_fadvise on a file descriptor owned by `file`, which
        // outlives the call; no memory is passed.
        let _ =
            unsafe { libc::posix_fadvise(file.as_raw_fd(), off, len, libc::POSIX_FADV_WILLNEED) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Allocates `len` bytes of `file` from `start` (`fallocate`): keeping the
/// file's size when `keep_size`, else growing the file to cover them.
/// `Ok(false)` where the file system cannot (callers then write without);
/// only "no space" (`ENOSPC`, `EFBIG`) is an error.
pub(crate) fn fallocate(file: &File, keep_size: bool, start: u64, len: u64) -> io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(off), Ok(len)) = (i64::try_from(start), i64::try_from(len)) else {
            return Ok(false);
        };
        if len == 0 {
            return Ok(false);
        }
        let mode = if keep_size {
            libc::FALLOC_FL_KEEP_SIZE
        } else {
            0
        };
        // SAFETY: fallocate on a file descriptor owned by `file`, which
        // outlives the call; no memory is passed.
        if unsafe { libc::fallocate(file.as_raw_fd(), mode, off, len) } < 0 {
            let e = io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EFBIG)) {
                return Err(e);
            }
            return Ok(false);
        }
        Ok(true)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, keep_size, start, len);
        Ok(false)
    }
}

/// `pread` until `buf` is full; a short file is an `UnexpectedEof` error.
pub(crate) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
}

/// `pwrite` all of `buf` at `offset`.
pub(crate) fn write_all_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(buf, offset)
}

/// Fsyncs a directory so that entries created, renamed or removed in it are
/// durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("store directory"))
}

/// Reads a small record file whole.
pub(crate) fn read_small(path: &Path, role: &'static str) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut v))
        .map_err(Error::io(role))?;
    Ok(v)
}

/// `bytes` random bytes from the operating system's generator, as hex: the
/// one source of ids and temporary names.
pub(crate) fn random_hex(bytes: usize) -> Result<String> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| Error::Io {
        role: "random source",
        source: io::Error::other(e.to_string()),
    })?;
    Ok(hex::encode(b))
}

mod direct;
mod output;

pub(crate) use direct::{AlignedBuf, RangeWriter};
pub(crate) use output::{DIRECT_ALIGN, OutputWriter, WriteMode};
