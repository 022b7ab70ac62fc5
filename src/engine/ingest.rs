//! Ingest: a part body streamed to disk while it is hashed, checked against
//! the plan and, in chain mode, against its neighbours' `hashCtx`, then
//! acknowledged by a durable record.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::sync::Arc;

use crate::error::{Error, LinkEnd, Result};
use crate::faults::Op;
use crate::id::{FileId, Owner, PartNumber};
use crate::io::{AlignedBuf, DIRECT_ALIGN, RangeWriter};
use crate::midstate::{Hasher, Midstate, Sha256};
use crate::plan::PartPlan;
use crate::store::{self, Mode, PartRecord, UploadRecord};

use super::state::{Upload, lock};
use super::{Engine, LinkCheck, PartReceipt};

impl Engine {
    /// Stores part `number` from `body`, hashing it while it is written.
    ///
    /// `expected_len` (e.g. a `Content-Length`) is checked against the bytes
    /// received: a short body is rejected and nothing is kept. A part already
    /// present is replaced atomically. In chain mode the part is checked
    /// against its neighbours' `hashCtx` on arrival and rejected, naming the
    /// part, when its link does not hold. A refused part changes nothing:
    /// not the upload's mode, not an earlier version of the part.
    ///
    /// ```no_run
    /// # use partseal::{Config, Engine, FileSpec, Owner, PartNumber};
    /// # let engine = Engine::open("./data", Config::default())?;
    /// # let owner = Owner::new("alice")?;
    /// let id = engine.create(&owner, FileSpec::default())?;
    /// let receipt = engine.put_part(&owner, &id, PartNumber::new(1)?, &b"hello"[..], Some(5))?;
    /// println!("ETag {}", receipt.sha256);
    /// # Ok::<(), partseal::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::PartOutOfRange`] for a part outside the plan or the declared
    /// count, [`Error::PartTooLarge`] / [`Error::PartTooSmall`] for a body
    /// over or under its bounds, [`Error::LinkMismatch`] when a chain link
    /// does not hold, [`Error::NotFound`] / [`Error::NotOwner`] for an
    /// unknown or foreign upload, [`Error::Conflict`] when the upload is
    /// complete or a complete is running, [`Error::Io`] when the body cannot
    /// be read (role "request body") or the part cannot be stored.
    pub fn put_part(
        &self,
        owner: &Owner,
        id: &FileId,
        number: PartNumber,
        body: impl Read,
        expected_len: Option<u64>,
    ) -> Result<PartReceipt> {
        let n = number.get();
        let up = self.open_upload(owner, id)?;
        let _gate = up.enter()?;
        up.touch();
        let part_lock = up.part_lock(n);
        let _part = lock(&part_lock);
        let (record, existing) = {
            let mut st = up.state();
            st.check_open()?;
            if st.record.mode == Mode::Unset {
                // Counted in the same critical section that reads the mode:
                // a chain plan arriving from here on sees a stream part
                // coming and is refused.
                st.unset_puts += 1;
            }
            (PartView::of(&st.record, n), st.parts.get(&n).cloned())
        };
        let _unset = UnsetPut {
            up: &up,
            counted: record.mode == Mode::Unset,
        };
        // Open, and the gate keeps abort and expiry out from here on.
        self.make_durable(&up)?;
        let limits = &self.inner.cfg.limits;
        let planned = record.planned;
        if planned.is_none() && (record.mode == Mode::Chain || record.has_plan) {
            return Err(Error::PartOutOfRange {
                part: u64::from(n),
                reason: "the part is not in the upload's plan".into(),
            });
        }
        if let Some(count) = record.part_count
            && n > count
        {
            return Err(Error::PartOutOfRange {
                part: u64::from(n),
                reason: format!("the upload was declared with {count} parts"),
            });
        }
        let bound = planned.map_or(limits.max_part_size, |p| p.size);
        // Never take more than the plan, the limit or the announced length.
        let max = bound.min(expected_len.unwrap_or(u64::MAX));
        if let Some(len) = expected_len {
            if len > bound {
                return Err(Error::PartTooLarge {
                    part: n,
                    max: bound,
                });
            }
            if let Some(p) = planned
                && len < p.size
            {
                return Err(Error::PartTooSmall {
                    part: n,
                    len,
                    min: p.size,
                });
            }
        }
        let min_len = planned.map(|p| p.size).or(expected_len);
        let res = match (record.mode, planned) {
            (Mode::Chain, Some(p)) => {
                self.put_chain_part(&up, &record, p, existing, body, expected_len)
            }
            (Mode::Unset, _) => {
                // The first part without a plan makes this a stream upload,
                // but only once it is acknowledged: a refused part leaves the
                // upload as it was, open to a chain plan.
                let res = self.put_stream_part(&up, n, max, min_len, existing, body);
                let mut st = up.state();
                if res.is_ok() && st.record.mode == Mode::Unset {
                    let mut rec = st.record.clone();
                    rec.mode = Mode::Stream;
                    // The part is durable; were this write lost, recovery
                    // infers the mode from the part.
                    store::save_upload(&self.inner.layout, id, &rec)?;
                    st.record = rec;
                }
                res
            }
            _ => match (record.placed, &existing) {
                // A first upload of a planned stream part goes to its place in
                // the assembly, so that complete has nothing to merge; a
                // replacement is a part file, settled at complete.
                (Some(offset), None) => self.put_placed_part(&up, n, offset, max, min_len, body),
                _ => self.put_stream_part(&up, n, max, min_len, existing, body),
            },
        };
        // A long body is activity until its end.
        up.touch();
        res
    }

    fn put_stream_part(
        &self,
        up: &Arc<Upload>,
        n: u32,
        max: u64,
        min_len: Option<u64>,
        existing: Option<PartRecord>,
        body: impl Read,
    ) -> Result<PartReceipt> {
        let layout = &self.inner.layout;
        let parts_dir = layout.parts_dir(&up.id);
        let name = store::part_data_name(n)?;
        let path = parts_dir.join(&name);
        let res = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(Error::io("part data"))?;
            let mut own = Hasher::new();
            let mut buf = vec![0u8; self.inner.cfg.ingest_buffer.max(MIN_BUFFER)];
            let len = ingest(body, n, max, &mut buf, 0, |buf, _| {
                own.update(buf);
                layout.fault_io(Op::Write, "part data")?;
                file.write_all(buf)
            })?;
            check_min(n, len, min_len)?;
            layout.fault(Op::Fsync, "part data")?;
            file.sync_data().map_err(Error::io("part data"))?;
            let rec = PartRecord {
                len,
                sha256: own.finalize(),
                data: Some(name.clone()),
                state_out: None,
                digest_if_last: None,
            };
            store::save_part(layout, &up.id, n, &rec)?;
            Ok(rec)
        })();
        let rec = match res {
            Ok(rec) => rec,
            Err(e) => {
                let _ = fs::remove_file(&path);
                return Err(e);
            }
        };
        if let Some(old) = existing.and_then(|o| o.data) {
            // The new record is durable; the old bytes are garbage now.
            let _ = fs::remove_file(parts_dir.join(old));
        }
        self.acknowledge_stream_part(up, n, rec)
    }

    /// A stream part's record is durable: memory follows, the checkpoints
    /// from it on are stale, and the background hasher may go on.
    fn acknowledge_stream_part(
        &self,
        up: &Arc<Upload>,
        n: u32,
        rec: PartRecord,
    ) -> Result<PartReceipt> {
        let receipt = PartReceipt {
            number: PartNumber::new(u64::from(n))?,
            len: rec.len,
            sha256: rec.sha256,
            link: LinkCheck::NotApplicable,
        };
        {
            let mut st = up.state();
            st.checkpoints.truncate(n as usize - 1);
            st.parts.insert(n, rec);
        }
        self.kick_eager(up);
        Ok(receipt)
    }

    /// A stream part written at `offset` in the assembly (its record has no
    /// data file): hashed for its own SHA-256 as it streams in.
    fn put_placed_part(
        &self,
        up: &Arc<Upload>,
        n: u32,
        offset: u64,
        max: u64,
        min_len: Option<u64>,
        body: impl Read,
    ) -> Result<PartReceipt> {
        let layout = &self.inner.layout;
        let file = store::open_assembly(layout, &up.id)?;
        let mut out = RangeWriter::for_range(&layout.assembly(&up.id), &file, offset, max)
            .map_err(Error::io("part data"))?;
        let mut own = Hasher::new();
        let mut buf = AlignedBuf::new(self.inner.cfg.ingest_buffer.max(MIN_BUFFER));
        let len = ingest(
            body,
            n,
            max,
            buf.as_mut_slice(),
            head_len(offset),
            |buf, at| {
                own.update(buf);
                layout.fault_io(Op::Write, "part data")?;
                out.write_at(buf, offset + at)
            },
        )?;
        check_min(n, len, min_len)?;
        layout.fault(Op::Fsync, "part data")?;
        file.sync_data().map_err(Error::io("part data"))?;
        let rec = PartRecord {
            len,
            sha256: own.finalize(),
            data: None,
            state_out: None,
            digest_if_last: None,
        };
        store::save_part(layout, &up.id, n, &rec)?;
        self.acknowledge_stream_part(up, n, rec)
    }

    fn put_chain_part(
        &self,
        up: &Arc<Upload>,
        record: &PartView,
        p: PartPlan,
        existing: Option<PartRecord>,
        body: impl Read,
        expected_len: Option<u64>,
    ) -> Result<PartReceipt> {
        let n = p.number;
        let layout = &self.inner.layout;
        let offset = p.offset.unwrap_or(0);
        let start = p
            .start_ctx()
            .ok_or_else(|| Error::BadPlan(format!("part {n} needs a hashCtx")))?;
        // One pass: the link's hash is also the part's fingerprint (the
        // SHA-256 of the file through the part's end), so no second hash of
        // the part's bytes is needed.
        let mut chain = Hasher::from_midstate(Midstate::resume(start, offset)?);
        // A first upload of the part goes straight to its offset in the
        // assembly; a replacement is staged first so that the acknowledged
        // bytes stay intact until the new ones are proven.
        let staged = existing
            .is_some()
            .then(|| store::part_data_name(n))
            .transpose()?;
        let staged_path = staged.as_ref().map(|s| layout.parts_dir(&up.id).join(s));
        let res = (|| {
            let (file, base) = match &staged_path {
                Some(path) => (
                    OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(path)
                        .map_err(Error::io("part data"))?,
                    0,
                ),
                None => (store::open_assembly(layout, &up.id)?, offset),
            };
            // A first upload goes to the shared assembly: whole blocks with
            // O_DIRECT into the part's allocated range (see `io::direct`).
            let mut out = match &staged_path {
                Some(_) => RangeWriter::buffered(&file),
                None => RangeWriter::for_range(&layout.assembly(&up.id), &file, offset, p.size)
                    .map_err(Error::io("part data"))?,
            };
            let mut buf = AlignedBuf::new(self.inner.cfg.ingest_buffer.max(MIN_BUFFER));
            let len = ingest(
                body,
                n,
                p.size,
                buf.as_mut_slice(),
                head_len(base),
                |buf, at| {
                    chain.update(buf);
                    layout.fault_io(Op::Write, "part data")?;
                    out.write_at(buf, base + at)
                },
            )?;
            check_min(n, len, Some(p.size).max(expected_len))?;
            let state_out = chain.midstate().map(|m| m.ctx());
            let digest_if_last = chain.finalize();
            let mut checked = false;
            if let Some(next) = record.next {
                if state_out.is_none() || state_out != next.ctx {
                    return Err(Error::LinkMismatch {
                        part: n,
                        to: LinkEnd::Part(n + 1),
                    });
                }
                checked = true;
            }
            let is_last = record.length == Some(offset + p.size) && record.last_planned == Some(n);
            if is_last && let Some(expected) = &record.sha256 {
                if *expected != digest_if_last {
                    return Err(Error::LinkMismatch {
                        part: n,
                        to: LinkEnd::FileDigest,
                    });
                }
                checked = true;
            }
            layout.fault(Op::Fsync, "part data")?;
            file.sync_data().map_err(Error::io("part data"))?;
            let rec = PartRecord {
                len,
                sha256: digest_if_last,
                data: staged.clone(),
                state_out,
                digest_if_last: Some(digest_if_last),
            };
            store::save_part(layout, &up.id, n, &rec)?;
            Ok((rec, checked))
        })();
        let (rec, checked) = match res {
            Ok(v) => v,
            Err(e) => {
                if let Some(path) = &staged_path {
                    let _ = fs::remove_file(path);
                }
                return Err(e);
            }
        };
        // The new part is acknowledged once its record is durable: memory
        // follows at once (a failed settle below leaves the staged record,
        // which complete settles before it commits). Moving a staged
        // replacement into place is redone by recovery if interrupted.
        up.state().parts.insert(n, rec.clone());
        let rec = store::settle_staged(layout, &up.id, n, offset, &rec)?;
        up.state().parts.insert(n, rec.clone());
        Ok(PartReceipt {
            number: PartNumber::new(u64::from(n))?,
            len: rec.len,
            sha256: rec.sha256,
            link: if checked {
                LinkCheck::Holds
            } else {
                LinkCheck::Pending
            },
        })
    }
}

/// What a part upload needs of its upload's record: copied under the state
/// lock without the whole plan (a part of a 10,000-part upload must not copy
/// 10,000 plan entries).
struct PartView {
    mode: Mode,
    planned: Option<PartPlan>,
    next: Option<PartPlan>,
    last_planned: Option<u32>,
    has_plan: bool,
    length: Option<u64>,
    sha256: Option<Sha256>,
    part_count: Option<u32>,
    /// Stream mode: where the part goes in the assembly, when every part
    /// before it is planned (see [`placed_offset`]).
    placed: Option<u64>,
}

impl PartView {
    fn of(record: &UploadRecord, n: u32) -> PartView {
        PartView {
            placed: (record.mode != Mode::Chain)
                .then(|| placed_offset(record, n))
                .flatten(),
            mode: record.mode,
            planned: record.plan.get(&n).copied(),
            next: record.plan.get(&(n + 1)).copied(),
            last_planned: record.plan.keys().next_back().copied(),
            has_plan: !record.plan.is_empty(),
            length: record.length,
            sha256: record.sha256,
            part_count: record.part_count,
        }
    }
}

/// Where stream part `n` sits in the assembly: the sum of the planned sizes
/// of parts 1 to `n - 1`, when all of them and `n` itself are planned.
/// Planned entries never change, so neither does the offset. `None` for an
/// unplanned part or a plan with a gap before it: such parts are files of
/// their own and are merged at complete.
pub(super) fn placed_offset(record: &UploadRecord, n: u32) -> Option<u64> {
    if record.mode == Mode::Chain || !record.plan.contains_key(&n) {
        return None;
    }
    let mut offset = 0u64;
    let mut expect = 1u32;
    for (k, p) in record.plan.range(..n) {
        if *k != expect {
            return None;
        }
        offset = offset.checked_add(p.size)?;
        expect += 1;
    }
    (expect == n).then_some(offset)
}

/// A part upload counted in `unset_puts` while it runs, whichever way it ends.
struct UnsetPut<'a> {
    up: &'a Upload,
    counted: bool,
}

impl Drop for UnsetPut<'_> {
    fn drop(&mut self) {
        if self.counted {
            self.up.state().unset_puts -= 1;
        }
    }
}

fn check_min(n: u32, len: u64, min: Option<u64>) -> Result<()> {
    match min {
        Some(min) if len < min => Err(Error::PartTooSmall { part: n, len, min }),
        _ => Ok(()),
    }
}

/// Bytes from `offset` to the next block boundary of the file: the first
/// ingest buffer ends there, so that every later one starts at a boundary
/// (and its whole blocks can go out with `O_DIRECT`).
fn head_len(offset: u64) -> usize {
    (DIRECT_ALIGN - (offset % DIRECT_ALIGN as u64) as usize) % DIRECT_ALIGN
}

/// The smallest ingest buffer, whatever [`Config::ingest_buffer`](crate::Config) says.
const MIN_BUFFER: usize = 64 * 1024;

/// Reads `body` to its end, filling `buf` and handing each filled buffer and
/// its offset to `sink`; the first buffer holds only `first` bytes when that
/// is not 0. More than `max` bytes is an error for part `n`.
fn ingest(
    mut body: impl Read,
    n: u32,
    max: u64,
    buf: &mut [u8],
    first: usize,
    mut sink: impl FnMut(&[u8], u64) -> io::Result<()>,
) -> Result<u64> {
    let mut total = 0u64;
    let mut want = if first == 0 {
        buf.len()
    } else {
        first.min(buf.len())
    };
    loop {
        let mut filled = 0;
        while filled < want {
            match body.read(&mut buf[filled..want]) {
                Ok(0) => break,
                Ok(k) => filled += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("request body")(e)),
            }
        }
        if filled == 0 {
            return Ok(total);
        }
        if total + filled as u64 > max {
            return Err(Error::PartTooLarge { part: n, max });
        }
        sink(&buf[..filled], total).map_err(Error::io("part data"))?;
        total += filled as u64;
        want = buf.len();
    }
}
