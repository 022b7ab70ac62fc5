//! The chain check of a complete in chain mode: every link was checked as
//! its part arrived, so this compares recorded states (no data pass), then
//! gives the committed file the assembly's bytes.

use std::path::Path;

use md5::{Digest, Md5};

use crate::error::{Error, LinkEnd, Result};
use crate::faults::Op;
use crate::io::read_window;
use crate::midstate::Sha256;
use crate::store::{self, PartRecord, UploadRecord};

use super::state::Upload;
use super::{Engine, Verified};

impl Engine {
    /// Checks a chain-mode upload and links its assembly to `data`.
    pub(super) fn check_chain(
        &self,
        up: &Upload,
        record: &UploadRecord,
        expected: Option<&Sha256>,
        data: &Path,
    ) -> Result<Verified> {
        let layout = &self.inner.layout;
        // A replacement whose move into the assembly failed after it was
        // acknowledged: finish it now, so that the assembly holds exactly
        // the recorded bytes (complete holds the gate; nothing else writes).
        let staged: Vec<(u32, PartRecord)> = up
            .state()
            .parts
            .iter()
            .filter(|(_, r)| r.data.is_some())
            .map(|(n, r)| (*n, r.clone()))
            .collect();
        for (n, rec) in staged {
            let offset = record.plan.get(&n).and_then(|p| p.offset).unwrap_or(0);
            let settled = store::settle_staged(layout, &up.id, n, offset, &rec)?;
            up.state().parts.insert(n, settled);
        }
        let parts = up.state().parts.clone();
        let last = record.plan.keys().next_back().copied().unwrap_or(0);
        let missing: Vec<u32> = (1..=last.max(1))
            .filter(|n| !parts.contains_key(n))
            .collect();
        if !missing.is_empty() {
            return Err(missing_parts(missing));
        }
        let last_plan = record.plan[&last];
        let total = last_plan.offset.unwrap_or(0) + last_plan.size;
        if let Some(declared) = record.length
            && declared != total
        {
            return Err(Error::LengthMismatch {
                declared,
                actual: total,
            });
        }
        for n in 1..last {
            let next_ctx = record.plan[&(n + 1)].ctx;
            if parts[&n].state_out.is_none() || parts[&n].state_out != next_ctx {
                return Err(Error::LinkMismatch {
                    part: n,
                    to: LinkEnd::Part(n + 1),
                });
            }
        }
        let digest = parts[&last].digest_if_last.ok_or(Error::LinkMismatch {
            part: last,
            to: LinkEnd::FileDigest,
        })?;
        if let Some(e) = expected
            && *e != digest
        {
            return Err(Error::sha256_mismatch(e, &digest));
        }
        let asm = store::open_assembly(layout, &up.id)?;
        asm.set_len(total).map_err(Error::io("assembly file"))?;
        layout.fault(Op::Fsync, "assembly file")?;
        asm.sync_all().map_err(Error::io("assembly file"))?;
        let md5 = match &record.md5 {
            Some(want) => {
                let mut m = Md5::new();
                let window = self.inner.cfg.pipeline().window as u64;
                let mut off = 0u64;
                while off < total {
                    let len = (total - off).min(window) as usize;
                    let chunk = read_window(&asm, off, len).map_err(Error::io("assembly file"))?;
                    m.update(&chunk[..]);
                    off += len as u64;
                }
                Some(check_md5(want, m)?)
            }
            None => None,
        };
        store::link_or_copy(layout, &layout.assembly(&up.id), data)?;
        Ok(Verified {
            sha256: digest,
            md5,
            length: total,
            parts: last,
        })
    }
}

pub(super) fn missing_parts(missing: Vec<u32>) -> Error {
    Error::MissingParts {
        count: missing.len(),
        first: missing.into_iter().take(10).collect(),
    }
}

pub(super) fn check_md5(want: &[u8; 16], m: Md5) -> Result<[u8; 16]> {
    let got: [u8; 16] = m.finalize().into();
    if got != *want {
        return Err(Error::DigestMismatch {
            kind: crate::DigestKind::Md5,
            expected: hex::encode(want),
            actual: hex::encode(got),
        });
    }
    Ok(got)
}
