//! In-order hashing pipelined with the merge.
//!
//! For uploads without midstates the file's SHA-256 is one sequential chain,
//! so it runs on one core; everything else moves to other threads so that it
//! costs no wall time: a reader maps the next window while the hasher works,
//! a writer copies each window into the output file, and, when an MD5 is
//! asked for, a third stage folds the same windows into it. The stages are
//! joined by bounded `crossbeam-channel`s carrying shared, reference-counted
//! windows, so memory stays bounded by `depth × window` whatever the file
//! size, and every byte is read once.

use std::fs::File;
use std::io::Write;
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{Receiver, bounded};
use md5::{Digest, Md5};

use crate::error::{Error, Result};
use crate::io::{Chunk, read_window};
use crate::midstate::Hasher;

/// One input of the pipeline: a whole file, read front to back.
pub struct Segment<'a> {
    /// The file to read.
    pub file: &'a File,
    /// Bytes to read from offset 0.
    pub len: u64,
    /// Whether its bytes go to the hash stages (false for a prefix already
    /// folded into a checkpoint, which only needs copying).
    pub hash: bool,
}

/// Tuning of the pipeline.
#[derive(Clone, Copy, Debug)]
pub struct PipelineOptions {
    /// Bytes per mapped window.
    pub window: usize,
    /// Windows in flight per channel.
    pub depth: usize,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            window: 4 << 20,
            depth: 4,
        }
    }
}

/// What the pipeline produced.
pub struct PipelineResult {
    /// The SHA-256 state after all hashed segments.
    pub sha: Hasher,
    /// The MD5 state, when one was passed in.
    pub md5: Option<Md5>,
    /// Bytes written to the output.
    pub written: u64,
}

type Msg = (Arc<Chunk>, bool);

/// Runs `segments` in order through the hash stages (continuing `sha` and
/// `md5`) and, when `out` is given, appends every byte to `out` (from its
/// current position). `progress` is called with the bytes each window adds.
pub fn run(
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

        let writer = out.map(|mut f| {
            let rx: Receiver<Msg> = out_rx.expect("output channel exists when output is given");
            s.spawn(move || -> Result<u64> {
                let mut written = 0u64;
                for (chunk, _) in rx {
                    f.write_all(&chunk).map_err(Error::io("merged file"))?;
                    written += chunk.len() as u64;
                }
                Ok(written)
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
