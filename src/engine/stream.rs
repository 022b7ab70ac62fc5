//! The stream verify of a complete without midstates, from the last valid
//! checkpoint of eager hashing: parts placed in the assembly (a plan of
//! sizes) are hashed there in order and the assembly becomes the file;
//! parts without a place are hashed in order, pipelined with their merge
//! into the committed file.

use std::fs::{File, OpenOptions};
use std::path::Path;

use md5::{Digest, Md5};

use crate::error::{Error, Result};
use crate::faults::Op;
use crate::io::{prefetch, read_window};
use crate::midstate::{Hasher, Sha256};
use crate::pipeline::{self, PipelineOptions, Segment};
use crate::store::{self, PartRecord, UploadRecord};

use super::chain_check::{check_md5, missing_parts};
use super::eager::part_version;
use super::ingest::placed_offset;
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
            .take_while(|(i, c)| part_version(&parts[&(*i as u32 + 1)]) == c.version)
            .count();
        let (sha, md5) = match valid.checked_sub(1).map(|i| &checkpoints[i]) {
            Some(c) => (c.sha.clone(), c.md5.clone()),
            None => (Hasher::new(), record.md5.as_ref().map(|_| Md5::new())),
        };
        if placed_offset(record, last).is_some() {
            return self.verify_placed(up, record, expected, data, (valid, sha, md5), total, last);
        }
        let parts_dir = self.inner.layout.parts_dir(&up.id);
        let files = parts
            .values()
            .map(|p| {
                match p.data.as_deref() {
                Some(name) => File::open(parts_dir.join(name)).map_err(Error::io("part data")),
                // Placed parts exist only where every part has a place.
                None => Err(Error::BadPlan(
                    "a part was stored at its planned place, but the plan does not place every part"
                        .into(),
                )),
            }
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

    /// A stream upload whose every part has a planned place: the parts that
    /// are files of their own (replacements) are settled into the assembly,
    /// the assembly is hashed in order from the last valid checkpoint, and
    /// it becomes the file, as in chain mode (no merge).
    #[allow(clippy::too_many_arguments)]
    fn verify_placed(
        &self,
        up: &Upload,
        record: &UploadRecord,
        expected: Option<&Sha256>,
        data: &Path,
        (valid, mut sha, mut md5): (usize, Hasher, Option<Md5>),
        total: u64,
        last: u32,
    ) -> Result<Verified> {
        let layout = &self.inner.layout;
        // A part stored before its plan entry arrived may differ from it.
        for (n, rec) in &up.state().parts {
            if let Some(p) = record.plan.get(n)
                && p.size != rec.len
            {
                return Err(Error::BadPlan(format!(
                    "part {n} is {} bytes but was planned as {} bytes; upload it again",
                    rec.len, p.size
                )));
            }
        }
        let files: Vec<(u32, PartRecord)> = up
            .state()
            .parts
            .iter()
            .filter(|(_, r)| r.data.is_some())
            .map(|(n, r)| (*n, r.clone()))
            .collect();
        for (n, rec) in files {
            let offset = placed_offset(record, n).ok_or_else(|| {
                Error::BadPlan(format!("part {n} has no place in the planned file"))
            })?;
            let settled = store::settle_staged(layout, &up.id, n, offset, &rec)?;
            let (before, after) = (part_version(&rec), part_version(&settled));
            let mut st = up.state();
            st.parts.insert(n, settled);
            // A checkpoint of these bytes stays valid where they moved.
            if let Some(c) = st.checkpoints.get_mut(n as usize - 1)
                && c.version == before
            {
                c.version = after;
            }
        }
        let asm = store::open_assembly(layout, &up.id)?;
        let from = if valid == 0 {
            0
        } else {
            let n = valid as u32;
            placed_offset(record, n).unwrap_or(0) + up.state().parts[&n].len
        };
        let window = self.inner.cfg.pipeline().window as u64;
        prefetch(&asm, from, total - from);
        let mut off = from;
        while off < total {
            let n = (total - off).min(window) as usize;
            let chunk = read_window(&asm, off, n).map_err(Error::io("assembly file"))?;
            sha.update(&chunk);
            if let Some(m) = md5.as_mut() {
                m.update(&chunk[..]);
            }
            off += n as u64;
        }
        let digest = sha.finalize();
        if let Some(e) = expected
            && *e != digest
        {
            return Err(Error::sha256_mismatch(e, &digest));
        }
        let md5 = match (&record.md5, md5) {
            (Some(want), Some(m)) => Some(check_md5(want, m)?),
            _ => None,
        };
        asm.set_len(total).map_err(Error::io("assembly file"))?;
        layout.fault(Op::Fsync, "assembly file")?;
        asm.sync_all().map_err(Error::io("assembly file"))?;
        store::link_or_copy(layout, &layout.assembly(&up.id), data)?;
        Ok(Verified {
            sha256: digest,
            md5,
            length: total,
            parts: last,
        })
    }
}
