//! Offline work on files the caller holds, as the `partseal` command does
//! it: the part plan a KooDrive client would send for a file, and the
//! in-order hash and merge of parts into one file.

use std::fs::File;
use std::io::{self, Read};

use crate::error::{Error, Result};
use crate::midstate::{BLOCK, HashCtx, Hasher, Midstate, Sha256};
use crate::pipeline::{self, PipelineOptions, Segment};
use crate::plan::PartPlan;

/// The plan of a file cut into parts of one size, each with the midstate of
/// all bytes before it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChainPlan {
    /// Every part, numbered from 1, with its offset and `hashCtx` (part 1's
    /// is the SHA-256 initial value). An empty file is one empty part.
    pub parts: Vec<PartPlan>,
    /// The file's SHA-256.
    pub sha256: Sha256,
    /// The file's length.
    pub length: u64,
}

/// Reads `reader` to its end once and returns its plan for parts of
/// `part_size` bytes. `progress` is called with the bytes each read adds.
///
/// ```
/// let plan = partseal::offline::chain_plan(&[7u8; 200][..], 128, |_| {})?;
/// assert_eq!(plan.parts.len(), 2);
/// assert_eq!(plan.parts[1].offset, Some(128));
/// assert_eq!(plan.sha256, partseal::Sha256::digest(&[7u8; 200]));
/// # Ok::<(), partseal::Error>(())
/// ```
///
/// # Errors
/// [`Error::BadPlan`] when `part_size` is not a positive multiple of 64,
/// [`Error::Io`] (role "input file") when reading fails,
/// [`Error::PartOutOfRange`] when the file needs more than 10,000 parts.
pub fn chain_plan(
    mut reader: impl Read,
    part_size: u64,
    mut progress: impl FnMut(u64),
) -> Result<ChainPlan> {
    if part_size == 0 || !part_size.is_multiple_of(BLOCK as u64) {
        return Err(Error::BadPlan(format!(
            "a part size is a positive multiple of {BLOCK} bytes, not {part_size}"
        )));
    }
    // A multiple of the block size: only the read that meets the end of the
    // input leaves a tail.
    let mut buf = vec![0u8; 1 << 20];
    let mut mid = Midstate::new();
    let mut starts: Vec<(u64, HashCtx)> = Vec::new();
    let mut at = 0u64;
    let digest = loop {
        let filled = read_full(&mut reader, &mut buf).map_err(Error::io("input file"))?;
        let eof = filled < buf.len();
        let whole = if eof { filled - filled % BLOCK } else { filled };
        let mut p = 0usize;
        while p < filled {
            let pos = at + p as u64;
            if pos.is_multiple_of(part_size) {
                starts.push((pos, mid.ctx()));
            }
            let to_boundary = (part_size - pos % part_size) as usize;
            let end = p.saturating_add(to_boundary).min(whole);
            if end == p {
                break; // the tail of the input, folded by finalize
            }
            mid.fold(&buf[p..end]);
            p = end;
        }
        at += filled as u64;
        progress(filled as u64);
        if eof {
            break mid.finalize(&buf[whole..filled]);
        }
    };
    if starts.is_empty() {
        starts.push((0, HashCtx::INITIAL));
    }
    let ends = starts.iter().skip(1).map(|(o, _)| *o).chain([at]);
    let parts = starts
        .iter()
        .zip(ends)
        .enumerate()
        .map(|(i, ((offset, ctx), end))| {
            PartPlan::new(i as u64 + 1, end - offset, Some(*offset), Some(*ctx))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ChainPlan {
        parts,
        sha256: digest,
        length: at,
    })
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The result of [`merge`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Merged {
    /// The SHA-256 of all inputs in order.
    pub sha256: Sha256,
    /// Bytes written to the output (0 without one).
    pub written: u64,
}

/// Hashes `inputs` (each a file and the bytes to read from its start) in
/// order, on one core, pipelined with appending them to `out` when given
/// (with `O_DIRECT` where the file system allows it). The caller fsyncs and
/// names `out`. `progress` is called with the bytes each window adds.
///
/// # Errors
/// [`Error::Io`] when an input cannot be read or the output written.
pub fn merge(
    inputs: &[(&File, u64)],
    out: Option<&File>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Merged> {
    let segments: Vec<Segment<'_>> = inputs
        .iter()
        .map(|(file, len)| Segment {
            file,
            len: *len,
            hash: true,
        })
        .collect();
    let res = pipeline::run(
        &segments,
        Hasher::new(),
        None,
        out,
        PipelineOptions::default(),
        progress,
    )?;
    Ok(Merged {
        sha256: res.sha.finalize(),
        written: res.written,
    })
}
