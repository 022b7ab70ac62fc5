//! In-order hashing pipelined with the merge.
//!
//! For uploads without midstates the file's SHA-256 is one sequential chain,
//! so it runs on one core; everything else moves to other threads so that it
//! costs no wall time: a reader maps the next window (populated up front, so
//! the hasher never faults) while the hasher works, a writer hands each
//! window to the output file, and, when an MD5 is asked for, a third stage
//! folds the same windows into it. The stages are joined by bounded
//! `crossbeam-channel`s carrying shared, reference-counted windows, so memory
//! stays bounded by about `(channels × depth + stages) × window` plus the
//! writer's 1 MiB bounce buffer whatever the file size, and every byte is
//! read once.
//!
//! The writer ([`OutputWriter`]) writes with `O_DIRECT` straight from the
//! mapped windows where the file system takes it: the merged file does not
//! pass through the page cache, so it costs neither a copy nor fresh pages
//! (which, on virtual machines that hand idle memory back to the host, made
//! buffered writes the bottleneck). The output space is reserved up front.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{Receiver, bounded};
use md5::{Digest, Md5};

use crate::error::{Error, Result};
use crate::io::{Chunk, OutputWriter, WriteMode, drop_cache, read_window};
use crate::midstate::Hasher;

/// One input of the pipeline: a whole file, read front to back.
pub(crate) struct Segment<'a> {
    /// The file to read.
    pub(crate) file: &'a File,
    /// Bytes to read from offset 0.
    pub(crate) len: u64,
    /// Whether its bytes go to the hash stages (false for a prefix already
    /// folded into a checkpoint, which only needs copying).
    pub(crate) hash: bool,
}

/// Tuning of the pipeline.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PipelineOptions {
    /// Bytes per mapped window.
    pub(crate) window: usize,
    /// Windows in flight per channel.
    pub(crate) depth: usize,
    /// How the output is written: [`WriteMode::Direct`] (the default) where
    /// the file system takes it, else buffered.
    pub(crate) write_mode: WriteMode,
    /// Drop each input from the page cache once every stage is done with
    /// it (on the reader's thread, off the hasher's core), for inputs that
    /// are deleted next: it halves the cost of unlinking them later.
    pub(crate) drop_behind: bool,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            window: 4 << 20,
            depth: 4,
            write_mode: WriteMode::Direct,
            drop_behind: false,
        }
    }
}

/// What the pipeline produced.
pub(crate) struct PipelineResult {
    /// The SHA-256 state after all hashed segments.
    pub(crate) sha: Hasher,
    /// The MD5 state, when one was passed in.
    pub md5: Option<Md5>,
    /// Bytes written to the output.
    pub(crate) written: u64,
}

type Msg = (Arc<Chunk>, bool);

/// Runs `segments` in order through the hash stages (continuing `sha` and
/// `md5`) and, when `out` is given, appends every byte to `out` (from its
/// current position). `progress` is called with the bytes each window adds.
pub(crate) fn run(
    segments: &[Segment<'_>],
    sha: Hasher,
    md5: Option<Md5>,
    out: Option<&File>,
    opts: PipelineOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PipelineResult> {
    let window = opts.window.max(4096);
    let depth = opts.depth.max(1);
    thread::scope(|s| {
        let (sha_tx, sha_rx) = bounded::<Msg>(depth);
        let (md5_tx, md5_rx) = if md5.is_some() {
            let (t, r) = bounded::<Msg>(depth);
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        let (out_tx, out_rx) = if out.is_some() {
            let (t, r) = bounded::<Msg>(depth);
            (Some(t), Some(r))
        } else {
            (None, None)
        };

        let producer = s.spawn(move || -> Result<()> {
            // Windows sent so far, and, with drop-behind, the segments read
            // to the end with the number of windows sent up to their end.
            let mut sent = 0usize;
            let mut finished: VecDeque<(usize, &File, u64)> = VecDeque::new();
            for seg in segments {
                let mut off = 0u64;
                while off < seg.len {
                    let len = (seg.len - off).min(window as u64) as usize;
                    let chunk =
                        Arc::new(read_window(seg.file, off, len).map_err(Error::io("part data"))?);
                    off += len as u64;
                    // A closed channel means that stage failed; it reports why.
                    if let Some(t) = &out_tx
                        && t.send((chunk.clone(), seg.hash)).is_err()
                    {
                        return Ok(());
                    }
                    if seg.hash {
                        if let Some(t) = &md5_tx
                            && t.send((chunk.clone(), true)).is_err()
                        {
                            return Ok(());
                        }
                        if sha_tx.send((chunk, true)).is_err() {
                            return Ok(());
                        }
                    } else {
                        progress(len as u64);
                    }
                    sent += 1;
                    // A send returns once its channel has room, so every
                    // stage has taken all but `depth` windows and works on
                    // at most one: windows `depth + 2` back are released.
                    while let Some(&(end, file, len)) = finished.front()
                        && end + depth + 2 <= sent
                    {
                        drop_cache(file, len);
                        finished.pop_front();
                    }
                }
                if opts.drop_behind && seg.len > 0 {
                    finished.push_back((sent, seg.file, seg.len));
                }
            }
            Ok(())
        });

        let md5_stage = md5.map(|mut m| {
            let rx: Receiver<Msg> = md5_rx.expect("md5 channel exists when md5 is asked");
            s.spawn(move || {
                for (chunk, _) in rx {
                    m.update(&chunk[..]);
                }
                m
            })
        });

        let total: u64 = segments.iter().map(|seg| seg.len).sum();
        let writer = out.map(|f| {
            let rx: Receiver<Msg> = out_rx.expect("output channel exists when output is given");
            s.spawn(move || -> Result<u64> {
                let mut w = OutputWriter::new(f, Some(total), opts.write_mode)
                    .map_err(Error::io("merged file"))?;
                for (chunk, _) in rx {
                    w.write(&chunk).map_err(Error::io("merged file"))?;
                }
                w.finish().map_err(Error::io("merged file"))
            })
        });

        let mut sha = sha;
        for (chunk, _) in sha_rx {
            sha.update(&chunk);
            progress(chunk.len() as u64);
        }

        let join_err = || Error::io("pipeline")(std::io::Error::other("a pipeline stage panicked"));
        producer.join().map_err(|_| join_err())??;
        let md5 = match md5_stage {
            Some(h) => Some(h.join().map_err(|_| join_err())?),
            None => None,
        };
        let written = match writer {
            Some(h) => h.join().map_err(|_| join_err())??,
            None => 0,
        };
        Ok(PipelineResult { sha, md5, written })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::midstate::Sha256;
    use std::fs::{self, OpenOptions};
    use std::io::Write;

    fn pattern(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 11) as u8
            })
            .collect()
    }

    /// Merges parts of awkward sizes (so that later parts start at
    /// unaligned output offsets) through windows smaller than the parts, and
    /// checks the merged file and the digest against the plain concatenation.
    #[test]
    fn merge_of_odd_parts_is_the_concatenation_in_every_write_mode() {
        let sizes = [
            0usize,
            1,
            4095,
            4096,
            4097,
            300_000,
            (3 << 20) + 17,
            2 << 20,
        ];
        let mut dirs = vec![tempfile::tempdir().unwrap()];
        if let Ok(d) = tempfile::tempdir_in("/dev/shm") {
            dirs.push(d);
        }
        for dir in &dirs {
            let mut all = Vec::new();
            let mut files = Vec::new();
            for (i, &len) in sizes.iter().enumerate() {
                let bytes = pattern(len, i as u64 + 11);
                let path = dir.path().join(format!("part{i}"));
                fs::write(&path, &bytes).unwrap();
                all.extend_from_slice(&bytes);
                files.push((File::open(&path).unwrap(), len as u64));
            }
            let segments: Vec<Segment<'_>> = files
                .iter()
                .enumerate()
                .map(|(i, (file, len))| Segment {
                    file,
                    len: *len,
                    // A prefix already folded into a checkpoint is only copied.
                    hash: i >= 2,
                })
                .collect();
            let hashed_prefix: usize = sizes[..2].iter().sum();
            for write_mode in [WriteMode::Direct, WriteMode::Buffered] {
                for depth in [1, 4] {
                    let path = dir.path().join("merged");
                    let mut out = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&path)
                        .unwrap();
                    let mut sha = Hasher::new();
                    sha.update(&all[..hashed_prefix]);
                    let opts = PipelineOptions {
                        window: 1 << 20,
                        depth,
                        write_mode,
                        drop_behind: depth == 1,
                    };
                    let res =
                        run(&segments, sha, Some(Md5::new()), Some(&out), opts, &|_| {}).unwrap();
                    out.flush().unwrap();
                    out.sync_all().unwrap();
                    assert_eq!(res.written, all.len() as u64);
                    assert_eq!(res.sha.finalize(), Sha256::digest(&all));
                    let md5: [u8; 16] = res.md5.unwrap().finalize().into();
                    let hashed_md5: [u8; 16] = Md5::digest(&all[hashed_prefix..]).into();
                    assert_eq!(md5, hashed_md5);
                    assert!(fs::read(&path).unwrap() == all, "merged file differs");
                    fs::remove_file(&path).unwrap();
                }
            }
        }
    }
}
