//! The merged-file writer: `O_DIRECT` straight from mapped windows where the
//! file system takes it, through an aligned bounce buffer for unaligned
//! tails, buffered writes where `O_DIRECT` is refused.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};

use super::write_all_at;

/// Alignment of file offsets, lengths and memory for `O_DIRECT` writes (a
/// page: a multiple of every logical block size in use).
pub(crate) const DIRECT_ALIGN: usize = 4096;

/// Size of the aligned bounce buffer of an [`OutputWriter`]: its only
/// allocation, whatever the size of the output.
pub(crate) const BOUNCE_SIZE: usize = 1 << 20;

/// How an [`OutputWriter`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteMode {
    /// `O_DIRECT` from the caller's (aligned) buffers, the rest through the
    /// bounce buffer; falls back to [`WriteMode::Buffered`] where refused.
    Direct,
    /// Ordinary writes through the page cache.
    #[cfg_attr(not(test), allow(dead_code))] // the tests compare both modes
    Buffered,
}

/// Appends a stream of bytes to a file, with `O_DIRECT` where possible.
///
/// Bytes go to the file from its position at [`OutputWriter::new`] on.
/// Aligned runs of the caller's buffers (memory-mapped windows are page
/// aligned) are written from where they are; everything else is gathered in
/// one aligned bounce buffer of [`BOUNCE_SIZE`] bytes. The last partial
/// block is written after `O_DIRECT` has been switched off again, so the
/// file ends exactly at the last byte. Where the file system refuses
/// `O_DIRECT` (at `fcntl`, or with `EINVAL` at a write), or the start
/// position is not aligned, every write is buffered.
///
/// [`OutputWriter::finish`] leaves the file's flags as they were and its
/// position after the last byte; the caller fsyncs.
pub(crate) struct OutputWriter<'a> {
    file: &'a File,
    /// File offset of the first byte of the stream.
    start: u64,
    /// Bytes of the stream already handed to the file.
    written: u64,
    /// The file's status flags before `O_DIRECT` was switched on; `None`
    /// while writing buffered.
    saved_flags: Option<i32>,
    /// Holds `bounce_len` bytes that follow `written`, at `bounce_at`.
    bounce: Vec<u8>,
    /// Index of the first aligned byte of `bounce`.
    bounce_at: usize,
    bounce_len: usize,
}

impl<'a> OutputWriter<'a> {
    /// Starts writing at `file`'s current position. `expected_len`, when
    /// known, reserves the space up front (`fallocate`, where supported), so
    /// that the file system allocates the output in one go.
    pub(crate) fn new(
        file: &'a File,
        expected_len: Option<u64>,
        mode: WriteMode,
    ) -> io::Result<Self> {
        // `&File` is `Seek`; a `&mut` of a copy of the reference moves the file's own position.
        let mut at = file;
        let start = at.stream_position()?;
        if let Some(len) = expected_len {
            preallocate(file, start, len)?;
        }
        let saved_flags = if mode == WriteMode::Direct && start.is_multiple_of(DIRECT_ALIGN as u64)
        {
            enable_direct(file)
        } else {
            None
        };
        Ok(OutputWriter {
            file,
            start,
            written: 0,
            saved_flags,
            bounce: Vec::new(),
            bounce_at: 0,
            bounce_len: 0,
        })
    }

    /// Whether writes currently bypass the page cache.
    #[cfg(test)]
    pub(crate) fn is_direct(&self) -> bool {
        self.saved_flags.is_some()
    }

    /// Appends `data`.
    pub(crate) fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.saved_flags.is_none() {
                self.flush_bounce_buffered()?;
                write_all_at(self.file, data, self.start + self.written)?;
                self.written += data.len() as u64;
                return Ok(());
            }
            let aligned = (data.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN);
            if aligned && data.len() >= DIRECT_ALIGN && self.bounce_len.is_multiple_of(DIRECT_ALIGN)
            {
                // The stream position is aligned once the bounce buffer is out.
                self.flush_bounce_whole()?;
                let n = data.len() - data.len() % DIRECT_ALIGN;
                self.write_direct_from(&data[..n])?;
                data = &data[n..];
                continue;
            }
            if self.bounce.is_empty() {
                self.bounce = vec![0u8; BOUNCE_SIZE + DIRECT_ALIGN];
                self.bounce_at = self.bounce.as_ptr().align_offset(DIRECT_ALIGN);
            }
            let take = (BOUNCE_SIZE - self.bounce_len).min(data.len());
            let at = self.bounce_at + self.bounce_len;
            self.bounce[at..at + take].copy_from_slice(&data[..take]);
            self.bounce_len += take;
            data = &data[take..];
            if self.bounce_len == BOUNCE_SIZE {
                self.flush_bounce_whole()?;
            }
        }
        Ok(())
    }

    /// Writes what is left (the last partial block buffered), restores the
    /// file's flags and leaves its position after the last byte. Returns the
    /// bytes written.
    pub(crate) fn finish(mut self) -> io::Result<u64> {
        self.flush_bounce_whole()?;
        if self.bounce_len > 0 {
            self.disable_direct()?;
            self.flush_bounce_buffered()?;
        }
        self.disable_direct()?;
        let mut file = self.file;
        file.seek(SeekFrom::Start(self.start + self.written))?;
        Ok(self.written)
    }

    /// Writes the whole blocks at the front of the bounce buffer with
    /// `O_DIRECT` and keeps the partial block (moved to the front).
    fn flush_bounce_whole(&mut self) -> io::Result<()> {
        let whole = self.bounce_len - self.bounce_len % DIRECT_ALIGN;
        if whole == 0 {
            return Ok(());
        }
        let (at, len) = (self.bounce_at, self.bounce_len);
        let bounce = std::mem::take(&mut self.bounce);
        let res = self.write_direct_from(&bounce[at..at + whole]);
        self.bounce = bounce;
        res?;
        self.bounce.copy_within(at + whole..at + len, at);
        self.bounce_len = len - whole;
        Ok(())
    }

    /// Writes whatever the bounce buffer holds without `O_DIRECT`.
    fn flush_bounce_buffered(&mut self) -> io::Result<()> {
        if self.bounce_len == 0 {
            return Ok(());
        }
        let at = self.bounce_at;
        write_all_at(
            self.file,
            &self.bounce[at..at + self.bounce_len],
            self.start + self.written,
        )?;
        self.written += self.bounce_len as u64;
        self.bounce_len = 0;
        Ok(())
    }

    /// Writes `data` (aligned in memory and length, at an aligned offset)
    /// with `O_DIRECT`; where the file system refuses it, switches to
    /// buffered writes for good and writes `data` that way.
    fn write_direct_from(&mut self, mut data: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        while !data.is_empty() {
            let off = self.start + self.written;
            let res = if self.saved_flags.is_some() {
                self.file.write_at(data, off)
            } else {
                write_all_at(self.file, data, off).map(|()| data.len())
            };
            match res {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n as u64;
                    data = &data[n..];
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // `EINVAL`: the file system (or a short write that left the
                // rest unaligned) does not take this write directly.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && self.saved_flags.is_some() => {
                    self.disable_direct()?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn disable_direct(&mut self) -> io::Result<()> {
        if let Some(flags) = self.saved_flags.take() {
            set_flags(self.file, flags)?;
        }
        Ok(())
    }
}

impl Drop for OutputWriter<'_> {
    fn drop(&mut self) {
        // On an error path: leave the caller's file as it was given.
        let _ = self.disable_direct();
    }
}

/// Switches `O_DIRECT` on for `file` and returns the previous flags, or
/// `None` where the file system refuses it.
#[cfg(target_os = "linux")]
fn enable_direct(file: &File) -> Option<i32> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL on a file descriptor owned by `file`, which outlives
    // the call; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return None;
    }
    set_flags(file, flags | libc::O_DIRECT).ok().map(|()| flags)
}

#[cfg(not(target_os = "linux"))]
fn enable_direct(_file: &File) -> Option<i32> {
    None
}

#[cfg(unix)]
fn set_flags(file: &File, flags: i32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: F_SETFL on a file descriptor owned by `file`, which outlives
    // the call; no memory is passed.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reserves `len` bytes from `start` without changing the file's length, so
/// that the file system allocates the output in one piece and a full disk
/// shows before any byte is hashed. A file system that cannot reserve is
/// simply written without; only "no space" (`ENOSPC`, `EFBIG`) is an error.
fn preallocate(file: &File, start: u64, len: u64) -> io::Result<()> {
    super::fallocate(file, true, start, len).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::read_window;
    use std::fs::{self, OpenOptions};
    use std::io::Write;
    use std::path::Path;
    use std::path::PathBuf;

    /// Deterministic, incompressible test bytes.
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

    /// Directories to write in: the default temporary directory (a disk
    /// file system here, where `O_DIRECT` is taken) and tmpfs when present.
    fn dirs() -> Vec<tempfile::TempDir> {
        let mut v = vec![tempfile::tempdir().unwrap()];
        if Path::new("/dev/shm").is_dir()
            && let Ok(d) = tempfile::tempdir_in("/dev/shm")
        {
            v.push(d);
        }
        v
    }

    #[cfg(target_os = "linux")]
    fn has_direct(file: &File) -> bool {
        use std::os::fd::AsRawFd;
        // SAFETY: F_GETFL on a descriptor owned by `file`; no memory passed.
        let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
        flags & libc::O_DIRECT != 0
    }

    #[cfg(not(target_os = "linux"))]
    fn has_direct(_file: &File) -> bool {
        false
    }

    /// Writes `data` in pieces of `piece` bytes (the last shorter) from
    /// `source`, which either is `data` or holds it at an unaligned address,
    /// and checks the file, its position and its flags afterwards.
    fn roundtrip(path: &Path, data: &[u8], piece: usize, mode: WriteMode, prefix: &[u8]) {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .unwrap();
        f.write_all(prefix).unwrap();
        let mut w = OutputWriter::new(&f, Some(data.len() as u64), mode).unwrap();
        if !prefix.len().is_multiple_of(DIRECT_ALIGN) || mode == WriteMode::Buffered {
            assert!(
                !w.is_direct(),
                "an unaligned start or Buffered writes buffered"
            );
        }
        for p in data.chunks(piece.max(1)) {
            w.write(p).unwrap();
        }
        assert_eq!(w.finish().unwrap(), data.len() as u64);
        assert!(!has_direct(&f), "finish restores the file's flags");
        let end = (prefix.len() + data.len()) as u64;
        assert_eq!((&f).stream_position().unwrap(), end);
        f.sync_all().unwrap();
        let back = fs::read(path).unwrap();
        assert_eq!(back.len() as u64, end, "the file ends at the last byte");
        assert!(
            back[..prefix.len()] == *prefix,
            "bytes before the start stay"
        );
        assert!(back[prefix.len()..] == *data, "output identical to input");
        fs::remove_file(path).unwrap();
    }

    const SIZES: [usize; 8] = [
        0,
        1,
        4095,
        4096,
        4097,
        BOUNCE_SIZE,
        // Several bounce buffers and windows, then a tail.
        3 * BOUNCE_SIZE + 4097,
        5 * BOUNCE_SIZE + 3 * 4096,
    ];

    #[test]
    fn writer_output_is_identical_to_input_for_odd_sizes() {
        for dir in dirs() {
            for (i, &len) in SIZES.iter().enumerate() {
                // One extra page so that the data can sit at an aligned or
                // at an unaligned address.
                let backing = pattern(len + 2 * DIRECT_ALIGN, i as u64 + 1);
                let lead = backing.as_ptr().align_offset(DIRECT_ALIGN);
                let aligned = &backing[lead..lead + len];
                let unaligned = &backing[lead + 1..lead + 1 + len];
                for data in [aligned, unaligned] {
                    for piece in [usize::MAX, 4096, 4097, 1000, 3 * BOUNCE_SIZE / 2] {
                        for mode in [WriteMode::Direct, WriteMode::Buffered] {
                            let path = dir.path().join("out");
                            roundtrip(&path, data, piece, mode, &[]);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn writer_takes_mapped_windows_directly() {
        for dir in dirs() {
            let len = 3 * BOUNCE_SIZE + 4097;
            let data = pattern(len, 7);
            let src_path = dir.path().join("src");
            fs::write(&src_path, &data).unwrap();
            let src = File::open(&src_path).unwrap();
            let out_path = dir.path().join("out");
            let out = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&out_path)
                .unwrap();
            let mut w = OutputWriter::new(&out, Some(len as u64), WriteMode::Direct).unwrap();
            let direct = w.is_direct();
            // Windows of 1 MiB + 1 page put every later window at an aligned
            // address and offset; a 100-byte window then misaligns the rest.
            let mut off = 0usize;
            for win in [BOUNCE_SIZE + 4096, 100, BOUNCE_SIZE, usize::MAX] {
                let n = win.min(len - off);
                let chunk = read_window(&src, off as u64, n).unwrap();
                w.write(&chunk).unwrap();
                off += n;
            }
            // Where the file system took O_DIRECT, no write fell back.
            assert_eq!(w.is_direct(), direct);
            assert_eq!(w.finish().unwrap(), len as u64);
            out.sync_all().unwrap();
            assert!(fs::read(&out_path).unwrap() == data);
        }
    }

    /// Whether `dir` is on ext4 or XFS, which refuse misaligned direct
    /// writes with EINVAL (tmpfs takes them, btrfs quietly buffers them).
    #[cfg(target_os = "linux")]
    fn refuses_misaligned_direct(dir: &Path) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
        // SAFETY: an all-zero statfs is a valid value of this plain C struct.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a NUL-terminated path and `st` a writable statfs;
        // both outlive the call.
        let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
        rc == 0 && (st.f_type == libc::EXT4_SUPER_MAGIC || st.f_type == libc::XFS_SUPER_MAGIC)
    }

    #[cfg(not(target_os = "linux"))]
    fn refuses_misaligned_direct(_dir: &Path) -> bool {
        false
    }

    #[test]
    fn writer_falls_back_to_buffered_when_a_direct_write_is_refused() {
        for dir in dirs() {
            let path = dir.path().join("out");
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .unwrap();
            let mut w = OutputWriter::new(&f, None, WriteMode::Direct).unwrap();
            if !w.is_direct() {
                continue; // refused at fcntl already: the other fallback
            }
            let data = pattern(3 * DIRECT_ALIGN, 6);
            // A buffer one byte off alignment makes ext4 or XFS refuse the
            // direct write (EINVAL), as a file system without O_DIRECT
            // support would.
            let lead = data.as_ptr().align_offset(DIRECT_ALIGN);
            let odd = &data[lead + 1..lead + 1 + DIRECT_ALIGN];
            w.write_direct_from(odd).unwrap();
            if refuses_misaligned_direct(dir.path()) {
                assert!(!w.is_direct(), "an EINVAL switches to buffered writes");
            }
            w.write(&data[..5000]).unwrap();
            assert_eq!(w.finish().unwrap(), (DIRECT_ALIGN + 5000) as u64);
            let back = fs::read(&path).unwrap();
            assert!(back[..DIRECT_ALIGN] == *odd && back[DIRECT_ALIGN..] == data[..5000]);
        }
    }

    #[test]
    fn writer_at_unaligned_position_writes_buffered_after_existing_bytes() {
        for dir in dirs() {
            for prefix_len in [100usize, 4096] {
                let prefix = pattern(prefix_len, 3);
                let data = pattern(2 * BOUNCE_SIZE + 5, 4);
                let path: PathBuf = dir.path().join("out");
                roundtrip(&path, &data, 65536, WriteMode::Direct, &prefix);
            }
        }
    }

    #[test]
    fn writer_error_leaves_flags_restored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        fs::write(&path, b"").unwrap();
        // A read-only descriptor: every write fails.
        let f = File::open(&path).unwrap();
        {
            let mut w = OutputWriter::new(&f, None, WriteMode::Direct).unwrap();
            let data = pattern(2 * DIRECT_ALIGN, 5);
            let lead = data.as_ptr().align_offset(DIRECT_ALIGN);
            assert!(w.write(&data[lead..lead + DIRECT_ALIGN]).is_err());
        }
        assert!(!has_direct(&f));
    }
}
