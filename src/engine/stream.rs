//! The stream verify of a complete without midstates: the parts are hashed
//! in order, pipelined with their merge into the committed file, starting
//! from the last valid checkpoint of eager hashing.

use std::fs::{File, OpenOptions};
use std::path::Path;

use md5::{Digest, Md5};

use crate::error::{Error, Result};
use crate::faults::Op;
use crate::midstate::{Hasher, Sha256};
use crate::pipeline::{self, PipelineOptions, Segment};
use crate::store::UploadRecord;

use super::chain_check::{check_md5, missing_parts};
use super::state::Upload;
use super::{Engine, Verified};

impl Engine {
    /// Hashes and merges a stream-mode upload into `data`.
    pub(super) fn verify_stream(
        &self,
        up: &Upload,
        record: &UploadRecord,
        expected: Option<&Sha256>,
        data: &Path,
    ) -> Result<Verified> {
        let (parts, checkpoints) = {
            let st = up.state();
            (st.parts.clone(), st.checkpoints.clone())
        };
        let last = parts
            .keys()
            .next_back()
            .copied()
            .max(record.plan.keys().next_back().copied())
            .max(record.part_count)
            .unwrap_or(0);
        let missing: Vec<u32> = (1..=last.max(1))
            .filter(|n| !parts.contains_key(n))
            .collect();
        if !missing.is_empty() {
            return Err(missing_parts(missing));
        }
        let limits = &self.inner.cfg.limits;
        let mut total = 0u64;
        for (n, p) in &parts {
            if *n < last && p.len < limits.min_part_size {
                return Err(Error::PartTooSmall {
                    part: *n,
                    len: p.len,
                    min: limits.min_part_size,
                });
            }
            total += p.len;
        }
        if total > limits.max_file_size {
            return Err(Error::FileTooLarge {
                len: total,
                max: limits.max_file_size,
            });
        }
        if let Some(declared) = record.length
            && declared != total
        {
            return Err(Error::LengthMismatch {
                declared,
                actual: total,
            });
        }
        // The checkpoints are valid for the prefix whose part versions match.
        let valid = checkpoints
            .iter()
            .enumerate()
            .take_while(|(i, c)| parts[&(*i as u32 + 1)].data.as_deref() == Some(&c.version))
            .count();
        let (sha, md5) = match valid.checked_sub(1).map(|i| &checkpoints[i]) {
            Some(c) => (c.sha.clone(), c.md5.clone()),
            None => (Hasher::new(), record.md5.as_ref().map(|_| Md5::new())),
        };
        let parts_dir = self.inner.layout.parts_dir(&up.id);
        let files = parts
            .values()
            .map(|p| {
                let name = p.data.as_deref().unwrap_or_default();
                File::open(parts_dir.join(name)).map_err(Error::io("part data"))
            })
            .collect::<Result<Vec<_>>>()?;
        let segments: Vec<Segment<'_>> = files
            .iter()
            .zip(parts.values())
            .enumerate()
            .map(|(i, (file, p))| Segment {
                file,
                len: p.len,
                hash: i >= valid,
            })
            .collect();
        let out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(data)
            .map_err(Error::io("committed file"))?;
        self.inner.layout.fault(Op::Write, "committed file")?;
        // The parts are deleted right after the commit; dropping them from
        // the page cache as the pipeline goes (on the reader's core, off the
        // hasher's) halves the cost of unlinking them.
        let opts = PipelineOptions {
            drop_behind: true,
            ..self.inner.cfg.pipeline()
        };
        let result = pipeline::run(&segments, sha, md5, Some(&out), opts, &|_| {})?;
        let digest = result.sha.finalize();
        if let Some(e) = expected
            && *e != digest
        {
            return Err(Error::sha256_mismatch(e, &digest));
        }
        let md5 = match (&record.md5, result.md5) {
            (Some(want), Some(m)) => Some(check_md5(want, m)?),
            _ => None,
        };
        self.inner.layout.fault(Op::Fsync, "committed file")?;
        out.sync_all().map_err(Error::io("committed file"))?;
        Ok(Verified {
            sha256: digest,
            md5,
            length: total,
            parts: last,
        })
    }
}
