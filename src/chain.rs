//! Parallel verification of a SHA-256 chain of parts.
//!
//! Each part of a KooDrive concurrent upload comes with the midstate of all
//! bytes before it. A part is a *link*: folding its bytes into its own
//! starting state must give the next part's starting state, and the last part
//! must finalize to the file's digest. Links are independent, so they are
//! computed on all cores at once (rayon) and then compared in order; the
//! first comparison that fails names the part whose bytes are wrong.

use std::fs::File;

use rayon::prelude::*;

use crate::error::{Error, LinkEnd, Result};
use crate::io::{map_window, read_exact_at};
use crate::midstate::{HashCtx, Midstate, Sha256};

/// Bytes read per `pread` while computing a link with [`compute_link`].
///
/// 1 MiB, so that the buffer stays in the core's cache between the copy and
/// the hash; reading through a buffer keeps RSS flat and turns a part
/// truncated meanwhile into an I/O error instead of `SIGBUS`.
const LINK_READ: u64 = 1 << 20;

/// Bytes mapped at a time by [`compute_link_mapped`]: a multiple of 2 MiB,
/// so that every window starts on a huge-page boundary of the file and
/// page-cache folios of that size are mapped with one fault each.
const LINK_MAP: u64 = 4 << 20;

/// Parts below this length are read by [`compute_link_mapped`] through the
/// buffer: each mapping ends in an `munmap` that flushes the TLB of every
/// core running the check, which costs more than the copy for small parts
/// (measured: 64 parts of 1 MiB checked 10% slower mapped, 8 of 8 MiB 3–8%
/// faster).
const LINK_MAP_MIN: u64 = LINK_MAP;

/// What a link computes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkValue {
    /// The state after a part that is not the last.
    State(HashCtx),
    /// The file digest, for the last part.
    Digest(Sha256),
}

/// One part of a chain to check.
pub struct LinkInput<'a> {
    /// The part number, for error messages.
    pub part: u32,
    /// The state before the part (for part 1: the initial value).
    pub start: Midstate,
    /// The part's bytes, read from offset 0.
    pub file: &'a File,
    /// The part's length.
    pub len: u64,
}

/// A link being folded, chunk by chunk.
struct LinkFold {
    mid: Midstate,
    last: bool,
}

impl LinkFold {
    /// Folds a chunk that is not the link's final one (whole blocks).
    fn middle(&mut self, chunk: &[u8]) {
        self.mid.fold(chunk);
    }

    /// Folds the link's final chunk (possibly empty) and gives its value.
    fn end(mut self, chunk: &[u8]) -> Result<LinkValue> {
        if self.last {
            return Ok(LinkValue::Digest(self.mid.finalize(chunk)));
        }
        if !self.mid.fold_prefix(chunk).is_empty() {
            return Err(Error::BadPlan(
                "every part but the last must be a multiple of 64 bytes".into(),
            ));
        }
        Ok(LinkValue::State(self.mid.ctx()))
    }
}

/// Folds `len` bytes of `file` into `start`; finalizes when `last`.
///
/// The bytes are read with `pread` through one reused 1 MiB buffer, so
/// memory stays flat and a file that is shorter than `len`, or is truncated
/// meanwhile, is an [`Error::Io`]. [`compute_link_mapped`] avoids the copy.
///
/// A part that is not the last must be a whole number of 64-byte blocks.
///
/// # Errors
/// [`Error::BadPlan`] for a part that is not the last and not whole blocks,
/// [`Error::Io`] when the file cannot be read.
pub fn compute_link(start: Midstate, file: &File, len: u64, last: bool) -> Result<LinkValue> {
    let mut link = LinkFold { mid: start, last };
    let mut buf = vec![0u8; len.min(LINK_READ) as usize];
    let mut off = 0u64;
    loop {
        let n = (len - off).min(LINK_READ);
        let chunk = &mut buf[..n as usize];
        read_exact_at(file, chunk, off).map_err(Error::io("part data"))?;
        off += n;
        if off == len {
            return link.end(chunk);
        }
        // LINK_READ is a multiple of 64, so only the final read has a tail.
        link.middle(chunk);
    }
}

/// [`compute_link`] without the copy: the part is mapped 4 MiB at a time
/// and hashed straight from the page cache.
///
/// Measured on `partseal verify --plan` of 1 GiB in 64 cached parts, this
/// is 6–9% faster than reading through a buffer when the page cache holds
/// the parts in large folios (as it does for files written in large writes,
/// which are then mapped with one fault per 2 MiB), and within a few percent
/// of it when they are in small ones. Parts below 4 MiB are read through
/// the buffer. The file's length is checked before each window is mapped,
/// so a file shorter than `len` is an [`Error::Io`].
///
/// # Safety
/// No part file may be truncated while it is being checked: touching a
/// mapped page beyond the end of a file raises `SIGBUS`. Bytes changed
/// meanwhile make the result meaningless (as they would for a read).
///
/// # Errors
/// As [`compute_link`].
pub unsafe fn compute_link_mapped(
    start: Midstate,
    file: &File,
    len: u64,
    last: bool,
) -> Result<LinkValue> {
    if len < LINK_MAP_MIN {
        return compute_link(start, file, len, last);
    }
    let mut link = LinkFold { mid: start, last };
    let mut off = 0u64;
    loop {
        let n = (len - off).min(LINK_MAP);
        // The window is checked against the file's length before it is
        // mapped; the caller guarantees that the file is not truncated while
        // it is mapped.
        let map = map_window(file, off, n as usize, false).map_err(Error::io("part data"))?;
        off += n;
        if off == len {
            return link.end(&map);
        }
        // LINK_MAP is a multiple of 64, so only the final window has a tail.
        link.middle(&map);
    }
}

/// Computes every link in parallel, then checks the chain in order: each
/// part must lead to the next part's start, and the last must finalize to
/// `expected` (when given). Returns the file's digest.
///
/// # Errors
/// [`Error::LinkMismatch`] naming the first part whose link breaks,
/// [`Error::DigestMismatch`] when only the final digest differs from
/// `expected`, [`Error::MissingParts`] for an empty chain, and the errors of
/// [`compute_link`].
pub fn verify_chain(links: &[LinkInput<'_>], expected: Option<&Sha256>) -> Result<Sha256> {
    check_chain(links, expected, |l, last| {
        compute_link(l.start, l.file, l.len, last)
    })
}

/// [`verify_chain`] with every link computed by [`compute_link_mapped`]:
/// the parts are hashed straight from the page cache, without a copy.
///
/// # Safety
/// As [`compute_link_mapped`]: no part file may be truncated while the
/// chain is checked.
///
/// # Errors
/// As [`verify_chain`].
pub unsafe fn verify_chain_mapped(
    links: &[LinkInput<'_>],
    expected: Option<&Sha256>,
) -> Result<Sha256> {
    check_chain(links, expected, |l, last| {
        // SAFETY: the caller's guarantee, passed on.
        unsafe { compute_link_mapped(l.start, l.file, l.len, last) }
    })
}

/// Computes every link with `compute` (on all cores), then checks the chain.
fn check_chain(
    links: &[LinkInput<'_>],
    expected: Option<&Sha256>,
    compute: impl Fn(&LinkInput<'_>, bool) -> Result<LinkValue> + Sync,
) -> Result<Sha256> {
    let Some(last_index) = links.len().checked_sub(1) else {
        return Err(Error::MissingParts {
            first: vec![1],
            count: 1,
        });
    };
    let values = links
        .par_iter()
        .enumerate()
        .with_max_len(1)
        .map(|(i, l)| compute(l, i == last_index))
        .collect::<Result<Vec<_>>>()?;
    for (i, v) in values.iter().enumerate() {
        match v {
            LinkValue::State(s) => {
                if *s != links[i + 1].start.ctx() {
                    return Err(Error::LinkMismatch {
                        part: links[i].part,
                        to: LinkEnd::Part(links[i + 1].part),
                    });
                }
            }
            LinkValue::Digest(d) => {
                if let Some(e) = expected
                    && d != e
                {
                    return Err(Error::sha256_mismatch(e, d));
                }
                return Ok(*d);
            }
        }
    }
    unreachable!("the last link finalizes to a digest")
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn file_of(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    /// Parts longer than one read, and a last part with a tail, chain to the
    /// digest of the whole.
    #[test]
    fn links_spanning_several_reads_chain_to_the_digest() {
        let data: Vec<u8> = (0..(5 * LINK_READ + 1000))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let cut = (3 * LINK_READ + 64 * 7) as usize;
        let (a, b) = data.split_at(cut);
        let (fa, fb) = (file_of(a), file_of(b));
        let mut mid = Midstate::new();
        mid.fold(a);
        let links = [
            LinkInput {
                part: 1,
                start: Midstate::new(),
                file: &fa,
                len: a.len() as u64,
            },
            LinkInput {
                part: 2,
                start: mid,
                file: &fb,
                len: b.len() as u64,
            },
        ];
        let want = Sha256::digest(&data);
        assert_eq!(verify_chain(&links, Some(&want)).unwrap(), want);
        assert_eq!(
            compute_link(Midstate::new(), &fa, a.len() as u64, false).unwrap(),
            LinkValue::State(mid.ctx())
        );
    }

    /// A part file shorter than its claimed length is an I/O error, not a
    /// digest of whatever was there.
    #[test]
    fn a_part_shorter_than_its_length_is_an_io_error() {
        let f = file_of(&[7u8; 4096]);
        let err = compute_link(Midstate::new(), &f, LINK_READ + 64, false).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
    }

    /// A part that is not the last must be whole blocks.
    #[test]
    fn a_middle_part_with_a_tail_is_a_bad_plan() {
        let f = file_of(&[1u8; 100]);
        let err = compute_link(Midstate::new(), &f, 100, false).unwrap_err();
        assert!(matches!(err, Error::BadPlan(_)), "{err:?}");
    }

    /// The mapped form gives the same links as the buffered one, over parts
    /// spanning several windows, a last part with a tail and a small part
    /// that is read through the buffer.
    #[test]
    fn mapped_links_equal_buffered_links() {
        let data: Vec<u8> = (0..(3 * LINK_MAP + 3 * LINK_READ + 1000))
            .map(|i| (i * 17 % 253) as u8)
            .collect();
        let cuts = [
            0,
            (LINK_MAP + 64 * 5) as usize,
            (data.len() - 70_000) / 64 * 64,
            data.len(),
        ];
        let files: Vec<File> = cuts
            .windows(2)
            .map(|w| file_of(&data[w[0]..w[1]]))
            .collect();
        let mut links = Vec::new();
        let mut mid = Midstate::new();
        for (i, f) in files.iter().enumerate() {
            let part = &data[cuts[i]..cuts[i + 1]];
            links.push(LinkInput {
                part: i as u32 + 1,
                start: mid,
                file: f,
                len: part.len() as u64,
            });
            mid.fold_prefix(part);
        }
        let want = Sha256::digest(&data);
        // SAFETY: the test's own temporary files, never truncated.
        unsafe {
            assert_eq!(verify_chain_mapped(&links, Some(&want)).unwrap(), want);
            for (i, l) in links.iter().enumerate() {
                let last = i == links.len() - 1;
                assert_eq!(
                    compute_link_mapped(l.start, l.file, l.len, last).unwrap(),
                    compute_link(l.start, l.file, l.len, last).unwrap(),
                    "part {}",
                    l.part
                );
            }
            let mut wrong = links[1].start;
            wrong.fold(&[0u8; 64]);
            links[1].start = wrong;
            let err = verify_chain_mapped(&links, Some(&want)).unwrap_err();
            assert!(
                matches!(err, Error::LinkMismatch { part: 1, .. }),
                "{err:?}"
            );
        }
    }

    /// A mapped part file shorter than its claimed length is an I/O error,
    /// never a mapping past the end of the file.
    #[test]
    fn a_mapped_part_shorter_than_its_length_is_an_io_error() {
        let f = file_of(&vec![7u8; (LINK_MAP + 4096) as usize]);
        // SAFETY: the test's own temporary file, never truncated.
        let err = unsafe { compute_link_mapped(Midstate::new(), &f, 2 * LINK_MAP, false) };
        assert!(matches!(err, Err(Error::Io { .. })), "{err:?}");
    }

    /// A mapped middle part must be whole blocks too.
    #[test]
    fn a_mapped_middle_part_with_a_tail_is_a_bad_plan() {
        let f = file_of(&vec![1u8; (LINK_MAP + 100) as usize]);
        // SAFETY: the test's own temporary file, never truncated.
        let err = unsafe { compute_link_mapped(Midstate::new(), &f, LINK_MAP + 100, false) };
        assert!(matches!(err, Err(Error::BadPlan(_))), "{err:?}");
    }
}
