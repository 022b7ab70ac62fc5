//! Positional writes of a part into a shared file: whole aligned blocks with
//! `O_DIRECT`, the rest through the page cache.
//!
//! Chain-mode parts land at their offsets in one assembly file, several at a
//! time. Buffered writes to one inode take its lock exclusively while they
//! copy into the page cache (and fault in fresh pages, which is slow on
//! virtual machines that hand idle memory back to the host), so parallel
//! parts queue behind each other. An `O_DIRECT` write within the file's size
//! into allocated blocks takes the lock shared on Linux file systems such as
//! ext4 and XFS, and copies nothing: the range is allocated first
//! (`fallocate`), then every whole block goes straight from the aligned
//! ingest buffer to the device. Bytes of a block shared with a neighbouring
//! part (a part's unaligned head and tail) are written buffered; a direct
//! write only ever covers blocks wholly inside its own part, so the two never
//! touch the same block. The caller fsyncs as before.

use std::fs::File;
use std::io;
use std::path::Path;

use super::output::DIRECT_ALIGN;
use super::write_all_at;

/// A heap buffer whose start is aligned to [`DIRECT_ALIGN`] and whose length
/// is a multiple of it, as `O_DIRECT` wants of memory.
pub(crate) struct AlignedBuf {
    raw: Vec<u8>,
    at: usize,
    len: usize,
}

impl AlignedBuf {
    /// A zeroed buffer of at least `len` bytes (rounded up to whole blocks).
    pub(crate) fn new(len: usize) -> AlignedBuf {
        let len = len.max(DIRECT_ALIGN).next_multiple_of(DIRECT_ALIGN);
        let raw = vec![0u8; len + DIRECT_ALIGN];
        let at = raw.as_ptr().align_offset(DIRECT_ALIGN);
        AlignedBuf { raw, at, len }
    }

    /// The aligned bytes.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.at..self.at + self.len]
    }
}

/// Writes one part's byte range of a file; see the module documentation.
pub(crate) struct RangeWriter<'a> {
    buffered: &'a File,
    /// A second descriptor of the same file opened with `O_DIRECT`; `None`
    /// where the file system refuses it (then every write is buffered).
    direct: Option<File>,
}

impl<'a> RangeWriter<'a> {
    /// Writes through `file` only.
    pub(crate) fn buffered(file: &'a File) -> RangeWriter<'a> {
        RangeWriter {
            buffered: file,
            direct: None,
        }
    }

    /// Prepares writes of `len` bytes from `start` into `file` (at `path`):
    /// allocates the range, extending the file where it ends later, and opens
    /// a direct descriptor. A file system that cannot allocate or open
    /// `O_DIRECT` is written buffered; only "no space" is an error.
    pub(crate) fn for_range(
        path: &Path,
        file: &'a File,
        start: u64,
        len: u64,
    ) -> io::Result<RangeWriter<'a>> {
        let direct = if super::fallocate(file, false, start, len)? {
            open_direct(path)
        } else {
            None
        };
        Ok(RangeWriter {
            buffered: file,
            direct,
        })
    }

    /// Whether whole blocks currently bypass the page cache.
    #[cfg(test)]
    pub(crate) fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Writes `buf` at `offset`: its whole aligned blocks directly when both
    /// the offset and the memory are aligned, everything else buffered.
    pub(crate) fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let aligned = offset.is_multiple_of(DIRECT_ALIGN as u64)
            && (buf.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN);
        let whole = if aligned {
            buf.len() / DIRECT_ALIGN * DIRECT_ALIGN
        } else {
            0
        };
        let mut done = 0;
        if whole > 0
            && let Some(d) = &self.direct
        {
            match write_all_at(d, &buf[..whole], offset) {
                Ok(()) => done = whole,
                // Refused after all (an odd device or file system): the rest
                // of the part goes through the page cache.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.direct = None,
                Err(e) => return Err(e),
            }
        }
        if done < buf.len() {
            write_all_at(self.buffered, &buf[done..], offset + done as u64)?;
        }
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> Option<File> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    fn pattern(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Parts of odd sizes at odd offsets, written concurrently in chunks
    /// from aligned buffers, give exactly the input, on the disk's file
    /// system (where `O_DIRECT` is taken) and on tmpfs where present.
    #[test]
    fn parts_at_odd_offsets_give_the_input() {
        let mut dirs = vec![tempfile::tempdir().unwrap()];
        if Path::new("/dev/shm").is_dir()
            && let Ok(d) = tempfile::tempdir_in("/dev/shm")
        {
            dirs.push(d);
        }
        for dir in dirs {
            let path = dir.path().join("asm");
            let bounds = [
                0usize,
                64,
                4096,
                4160,
                1 << 20,
                (1 << 20) + 8192 + 64,
                3 << 20,
            ];
            let data = pattern(*bounds.last().unwrap(), 7);
            File::create(&path).unwrap();
            std::thread::scope(|s| {
                for w in bounds.windows(2).rev() {
                    let (a, b) = (w[0], w[1]);
                    let (path, data) = (&path, &data);
                    s.spawn(move || {
                        let file = OpenOptions::new().write(true).open(path).unwrap();
                        let mut wr =
                            RangeWriter::for_range(path, &file, a as u64, (b - a) as u64).unwrap();
                        let mut buf = AlignedBuf::new(64 * 1024);
                        let buf = buf.as_mut_slice();
                        // The head up to the first block boundary, then whole buffers.
                        let mut at = a;
                        let mut want = (DIRECT_ALIGN - a % DIRECT_ALIGN) % DIRECT_ALIGN;
                        while at < b {
                            if want == 0 {
                                want = buf.len();
                            }
                            let n = want.min(b - at);
                            buf[..n].copy_from_slice(&data[at..at + n]);
                            wr.write_at(&buf[..n], at as u64).unwrap();
                            at += n;
                            want = 0;
                        }
                        file.sync_data().unwrap();
                    });
                }
            });
            assert_eq!(std::fs::read(&path).unwrap(), data);
        }
    }

    #[test]
    fn aligned_buffers_are_aligned_whole_blocks() {
        for len in [1, 4095, 4096, 4097, 1 << 20] {
            let mut b = AlignedBuf::new(len);
            let s = b.as_mut_slice();
            assert!(s.len() >= len && s.len().is_multiple_of(DIRECT_ALIGN));
            assert!((s.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN));
        }
    }

    #[test]
    fn a_direct_range_is_allocated_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        let wr = RangeWriter::for_range(&path, &file, 4096, 1 << 20).unwrap();
        // Direct writes only go where the range is allocated within the
        // file's size (tmpfs before Linux 6.6 and some file systems refuse
        // O_DIRECT; then nothing is required of the size).
        if wr.is_direct() {
            assert_eq!(file.metadata().unwrap().len(), 4096 + (1 << 20));
        } else {
            eprintln!("O_DIRECT refused in the temporary directory: writes are buffered");
        }
    }
}
