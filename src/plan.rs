//! Part plans: what a client declares about its parts before sending them,
//! and the limits every upload is held to.
//!
//! A plan entry with an offset or a `hashCtx` puts the upload in *chain*
//! mode (KooDrive's concurrent upload): every part is then a link checked on
//! arrival. Plans may arrive in several calls; each call is validated against
//! what was planned before, and completeness is checked at verify.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::PartNumber;
use crate::midstate::{BLOCK, HashCtx};

/// Size limits of parts and files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Smallest part but the last (default 5 MiB).
    pub min_part_size: u64,
    /// Largest part (default 5 GiB).
    pub max_part_size: u64,
    /// Largest file (default 200 GiB).
    pub max_file_size: u64,
}

impl Limits {
    /// Limits with these bounds: the smallest part but the last, the
    /// largest part, the largest file.
    pub const fn new(min_part_size: u64, max_part_size: u64, max_file_size: u64) -> Limits {
        Limits {
            min_part_size,
            max_part_size,
            max_file_size,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            min_part_size: 5 << 20,
            max_part_size: 5 << 30,
            max_file_size: 200 << 30,
        }
    }
}

/// One declared part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartPlan {
    /// Its number, 1..=10000.
    pub number: u32,
    /// Its exact size in bytes.
    pub size: u64,
    /// Bytes in all earlier parts (chain mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// SHA-256 state of all earlier bytes (chain mode; part 1 may omit it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctx: Option<HashCtx>,
}

impl PartPlan {
    /// A plan entry, with the part number validated.
    ///
    /// # Errors
    /// [`Error::PartOutOfRange`] for a part number outside `1..=10000`.
    pub fn new(
        number: u64,
        size: u64,
        offset: Option<u64>,
        ctx: Option<HashCtx>,
    ) -> Result<PartPlan> {
        Ok(PartPlan {
            number: PartNumber::new(number)?.get(),
            size,
            offset,
            ctx,
        })
    }

    /// Whether this entry asks for chain mode.
    pub fn is_chain(&self) -> bool {
        self.offset.is_some() || self.ctx.is_some()
    }

    /// The state before this part: the initial value for part 1.
    pub fn start_ctx(&self) -> Option<HashCtx> {
        if self.number == 1 {
            Some(HashCtx::INITIAL)
        } else {
            self.ctx
        }
    }
}

/// Merges `new` entries into `plan` after checking them, returning the new
/// plan. `declared_len` is the file length given at create, if any. Nothing
/// changes on error. This is the validator the engine runs on every plan.
///
/// # Errors
/// [`Error::BadPlan`] with the reason (a changed entry, overlapping or
/// non-contiguous offsets, a part that is not whole blocks, a missing
/// `hashCtx`, a plan longer than declared), [`Error::PartOutOfRange`],
/// [`Error::PartTooLarge`] / [`Error::PartTooSmall`] /
/// [`Error::FileTooLarge`] against `limits`.
pub fn merge(
    plan: &BTreeMap<u32, PartPlan>,
    new: &[PartPlan],
    declared_len: Option<u64>,
    limits: &Limits,
) -> Result<BTreeMap<u32, PartPlan>> {
    let bad = |m: String| Err(Error::BadPlan(m));
    if new.is_empty() {
        return bad("the plan lists no parts".into());
    }
    let mut out = plan.clone();
    let mut seen = std::collections::BTreeSet::new();
    for p in new {
        PartNumber::new(u64::from(p.number))?;
        if !seen.insert(p.number) {
            return bad(format!("part {} is listed twice", p.number));
        }
        if let Some(old) = plan.get(&p.number)
            && old != p
        {
            return bad(format!("part {} was already planned differently", p.number));
        }
        out.insert(p.number, *p);
    }
    let chain = out.values().next().is_some_and(PartPlan::is_chain);
    if out.values().any(|p| p.is_chain() != chain) {
        return bad(
            "either every part gives partOffset and hashCtx (concurrent upload) or none does"
                .into(),
        );
    }
    let last = out.keys().next_back().copied().unwrap_or(0);
    // Declared bytes that must come after the last planned part (beyond
    // what the gaps below it can hold): then it is not the file's last part,
    // and is held to the rules of a middle part.
    let room_after = match (declared_len, out.get(&last)) {
        (Some(len), Some(lastp)) if chain => {
            len.saturating_sub(lastp.offset.unwrap_or(0).saturating_add(lastp.size))
        }
        (Some(len), Some(_)) => {
            let planned = out.values().fold(0u64, |t, p| t.saturating_add(p.size));
            let missing = u64::from(last) - out.len() as u64;
            len.saturating_sub(planned)
                .saturating_sub(missing.saturating_mul(limits.max_part_size))
        }
        _ => 0,
    };
    let why_middle = |n: u32| {
        if n == last {
            format!(
                " (the planned parts leave {room_after} declared bytes after part {n}, so it is \
                 not the last part)"
            )
        } else {
            String::new()
        }
    };
    let mut total = 0u64;
    // In chain mode: where the previous planned part (by number) ends.
    let mut prev_end: Option<(u32, u64)> = None;
    for p in out.values() {
        if p.size > limits.max_part_size {
            return bad(format!(
                "part {} is {} bytes, more than the largest part size {}",
                p.number, p.size, limits.max_part_size
            ));
        }
        let may_be_last = p.number == last && room_after == 0;
        if !may_be_last && p.size < limits.min_part_size {
            return bad(format!(
                "part {} is {} bytes; every part but the last needs at least {}{}",
                p.number,
                p.size,
                limits.min_part_size,
                why_middle(p.number)
            ));
        }
        total = total.saturating_add(p.size);
        if !chain {
            continue;
        }
        if p.size % BLOCK as u64 != 0 && !may_be_last {
            return bad(format!(
                "part {} is {} bytes; every part but the last must be a multiple of 64 bytes{}",
                p.number,
                p.size,
                why_middle(p.number)
            ));
        }
        let Some(offset) = p.offset else {
            return bad(format!("part {} has a hashCtx but no partOffset", p.number));
        };
        if offset % BLOCK as u64 != 0 {
            return bad(format!(
                "part {} starts at offset {offset}, not a multiple of 64 bytes",
                p.number
            ));
        }
        // Parts are written at their offsets: a part that starts inside an
        // earlier-numbered one would overwrite its bytes, and no plan could
        // ever complete around it.
        if let Some((q, q_end)) = prev_end
            && offset < q_end
        {
            return bad(format!(
                "part {} starts at offset {offset}, inside part {q}, which ends at {q_end}",
                p.number
            ));
        }
        // Parts numbered between two planned ones (or before the first)
        // are planned later, into the bytes the offsets leave between
        // (checked last, once the part itself is known to be in bounds).
        let (gap_from, gap_start) = prev_end.map_or((1, 0), |(q, q_end)| (q + 1, q_end));
        prev_end = Some((p.number, offset.saturating_add(p.size)));
        if p.number == 1 {
            if offset != 0 {
                return bad(format!("part 1 must start at offset 0, not {offset}"));
            }
            if p.ctx.is_some_and(|c| c != HashCtx::INITIAL) {
                return bad("the hashCtx of part 1 must be the SHA-256 initial value".into());
            }
        } else if p.ctx.is_none() {
            return bad(format!("part {} needs a hashCtx", p.number));
        }
        if let Some(next) = out.get(&(p.number + 1)) {
            let end = offset.checked_add(p.size);
            if next.offset != end {
                return bad(format!(
                    "part {} starts at offset {}, but part {} ends at {}",
                    next.number,
                    next.offset.unwrap_or(0),
                    p.number,
                    end.map_or("an overflowing offset".into(), |e| e.to_string())
                ));
            }
        }
        // A part must end within the largest file, and an end past u64::MAX
        // must not slip past the declared-length check.
        let end = offset.saturating_add(p.size);
        if end > limits.max_file_size {
            return Err(Error::FileTooLarge {
                len: end,
                max: limits.max_file_size,
            });
        }
        if let Some(len) = declared_len
            && end > len
        {
            return bad(format!(
                "part {} ends at byte {end}, past the declared length {len}",
                p.number
            ));
        }
        if p.number > gap_from {
            gap_fits(gap_from, p.number - 1, offset - gap_start, limits)?;
        }
    }
    if total > limits.max_file_size {
        return Err(Error::FileTooLarge {
            len: total,
            max: limits.max_file_size,
        });
    }
    if let Some(len) = declared_len
        && total > len
    {
        return bad(format!(
            "the planned parts hold {total} bytes, more than the declared length {len}"
        ));
    }
    // A plan that could never be completed is refused now, not at complete:
    // the parts it skips must fit in the bytes the declared length leaves
    // them (in chain mode their offsets were checked above).
    if let Some(len) = declared_len
        && !chain
    {
        // Numbers below the last planned one that are not planned yet:
        // middle parts, each of at least the smallest part size.
        let missing = u64::from(last) - out.len() as u64;
        let room = len - total;
        if room < missing.saturating_mul(limits.min_part_size) {
            let first = (1..last).find(|k| !out.contains_key(k)).unwrap_or(1);
            return bad(format!(
                "{missing} part(s) below part {last} are not planned (the first is part \
                 {first}), and the {room} bytes the declared length {len} leaves cannot hold \
                 them at {} bytes or more each; number the parts without gaps",
                limits.min_part_size
            ));
        }
    }
    Ok(out)
}

/// Whether the unplanned chain parts `first..=last` (all of them middle
/// parts) can ever fill the `room` bytes their neighbours' offsets leave
/// them: each needs at least the smallest part size, rounded up to whole
/// 64-byte blocks, and at most the largest.
fn gap_fits(first: u32, last: u32, room: u64, limits: &Limits) -> Result<()> {
    let count = u64::from(last - first + 1);
    let least = limits
        .min_part_size
        .checked_next_multiple_of(BLOCK as u64)
        .unwrap_or(u64::MAX);
    let parts = if first == last {
        format!("part {first} is")
    } else {
        format!("parts {first} to {last} are")
    };
    if room < count.saturating_mul(least) {
        return Err(Error::BadPlan(format!(
            "{parts} not planned, and the {room} bytes the plan leaves for them cannot hold \
             {count} part(s) of at least {least} bytes; number the parts without gaps"
        )));
    }
    if room > count.saturating_mul(limits.max_part_size) {
        return Err(Error::BadPlan(format!(
            "{parts} not planned, and the {room} bytes the plan leaves for them are more than \
             {count} part(s) of at most {} bytes can hold",
            limits.max_part_size
        )));
    }
    Ok(())
}
