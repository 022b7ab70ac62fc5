//! The part-plan validator, `plan::merge`.
//!
//! Plans are drawn around a consistent layout (parts 1..=k with sizes and
//! prefix-sum offsets, in chain mode or not) with a few perturbations, so
//! that both accepted and rejected plans are common. Small custom `Limits`
//! and a random declared length make every bound reachable.
//!
//! Laws:
//! - `merge` never panics;
//! - an accepted plan holds the earlier plan and the new entries exactly,
//!   and satisfies every invariant below (`check_accepted`);
//! - a refusal is `BadPlan`, `FileTooLarge` or `PartOutOfRange`, with a
//!   non-empty message;
//! - merging A then B agrees with merging A ++ B in one call when A and B
//!   name different parts, and re-merging entries already planned is a no-op
//!   while changing one is refused.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use partseal::plan::{self, Limits, PartPlan};
use partseal::{Error, HashCtx};

const BLOCK: u64 = 64;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Size {
    Blocks(u8),
    Bytes(u16),
    Raw(u64),
}

impl Size {
    fn get(self) -> u64 {
        match self {
            Size::Blocks(b) => u64::from(b) * BLOCK,
            Size::Bytes(b) => u64::from(b),
            Size::Raw(r) => r,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Perturb {
    None,
    Number(u32),
    NumberNear(i8),
    Size(Size),
    Offset(u64),
    OffsetBy(i16),
    DropOffset,
    DropCtx,
    Ctx([u32; 8]),
    InitialCtx,
    /// A second entry for the same part (the same, or one byte longer).
    Repeat(bool),
}

#[derive(Arbitrary, Debug)]
struct Entry {
    /// Which of the layout's parts not listed yet this entry is.
    which: u8,
    /// Perturbed when below 40 (about one entry in six).
    chance: u8,
    perturb: Perturb,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Declared {
    None,
    /// The layout's total.
    Total,
    /// The layout's total plus or minus a little.
    Near(i16),
    Raw(Size),
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Custom limits (min part, max part, max file), or small defaults.
    limits: Option<(u16, u32, u32)>,
    declared: Declared,
    chain: bool,
    /// Whether part 1 sends the initial hashCtx or none.
    first_ctx: bool,
    layout: Vec<Size>,
    entries: Vec<Entry>,
    /// Where the entries are cut into two calls.
    split: u8,
}

fn limits(input: &Input) -> Limits {
    match input.limits {
        Some((min, max_part, max_file)) => Limits::new(
            u64::from(min % 2048),
            u64::from(max_part % (1 << 16)),
            u64::from(max_file % (1 << 20)),
        ),
        None => Limits::new(64, 1 << 16, 1 << 20),
    }
}

/// The entries of both calls, and the declared length.
fn entries(input: &Input) -> (Vec<PartPlan>, Option<u64>) {
    let sizes: Vec<u64> = input.layout.iter().take(24).map(|s| s.get()).collect();
    let mut offsets = Vec::with_capacity(sizes.len());
    let mut at = 0u64;
    for s in &sizes {
        offsets.push(at);
        at = at.saturating_add(*s);
    }
    let declared = match input.declared {
        Declared::None => None,
        Declared::Total => Some(at),
        Declared::Near(d) => Some(at.saturating_add_signed(i64::from(d))),
        Declared::Raw(s) => Some(s.get()),
    };
    let mut unlisted: Vec<usize> = (0..sizes.len()).collect();
    let mut out = Vec::new();
    for e in input.entries.iter().take(20) {
        let idx = if unlisted.is_empty() {
            // Past the layout: a part number of its own.
            sizes.len() + usize::from(e.which)
        } else {
            unlisted.remove(usize::from(e.which) % unlisted.len())
        };
        let number = idx as u32 + 1;
        let size = sizes.get(idx).copied().unwrap_or(BLOCK);
        let offset = offsets.get(idx).copied().unwrap_or(at);
        let ctx = if number == 1 {
            input.first_ctx.then_some(HashCtx::INITIAL)
        } else {
            // Any value: the validator cannot know midstates, only shapes.
            Some(HashCtx([number; 8]))
        };
        let mut p = PartPlan {
            number,
            size,
            offset: input.chain.then_some(offset),
            ctx: if input.chain { ctx } else { None },
        };
        let perturb = if e.chance < 40 {
            e.perturb
        } else {
            Perturb::None
        };
        match perturb {
            Perturb::None => {}
            Perturb::Number(n) => p.number = n,
            Perturb::NumberNear(d) => p.number = p.number.wrapping_add_signed(i32::from(d)),
            Perturb::Size(s) => p.size = s.get(),
            Perturb::Offset(o) => p.offset = Some(o),
            Perturb::OffsetBy(d) => {
                p.offset = Some(p.offset.unwrap_or(offset).wrapping_add_signed(i64::from(d)))
            }
            Perturb::DropOffset => p.offset = None,
            Perturb::DropCtx => p.ctx = None,
            Perturb::Ctx(w) => p.ctx = Some(HashCtx(w)),
            Perturb::InitialCtx => p.ctx = Some(HashCtx::INITIAL),
            Perturb::Repeat(same) => {
                out.push(p);
                if !same {
                    p.size = p.size.wrapping_add(1);
                }
            }
        }
        out.push(p);
    }
    (out, declared)
}

/// Every invariant an accepted plan must satisfy.
fn check_accepted(
    old: &BTreeMap<u32, PartPlan>,
    new: &[PartPlan],
    out: &BTreeMap<u32, PartPlan>,
    declared: Option<u64>,
    limits: &Limits,
) {
    for (k, p) in old {
        assert_eq!(out.get(k), Some(p), "an earlier entry changed");
    }
    for p in new {
        assert_eq!(out.get(&p.number), Some(p), "a new entry is not as given");
    }
    assert_eq!(
        out.len(),
        old.keys()
            .chain(new.iter().map(|p| &p.number))
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        "the plan holds parts that were never given"
    );
    let last = *out
        .keys()
        .next_back()
        .expect("an accepted plan is not empty");
    let chain = out[&last].is_chain();
    let mut total = 0u64;
    for (&k, p) in out {
        assert_eq!(k, p.number);
        assert!((1..=10_000).contains(&k), "part number {k}");
        assert_eq!(p.is_chain(), chain, "mixed modes");
        assert!(
            p.size <= limits.max_part_size,
            "part {k} over max_part_size"
        );
        if k != last {
            assert!(
                p.size >= limits.min_part_size,
                "part {k} under min_part_size"
            );
        }
        total = total.checked_add(p.size).expect("total overflows");
        if !chain {
            continue;
        }
        let offset = p.offset.expect("chain part without offset");
        assert_eq!(offset % BLOCK, 0, "part {k} offset unaligned");
        if k != last {
            assert_eq!(p.size % BLOCK, 0, "part {k} size unaligned");
        }
        if k == 1 {
            assert_eq!(offset, 0, "part 1 offset");
            assert!(p.ctx.is_none_or(|c| c == HashCtx::INITIAL), "part 1 ctx");
        } else {
            assert!(p.ctx.is_some(), "part {k} without ctx");
        }
        let end = offset.checked_add(p.size).expect("part end overflows");
        assert!(
            end <= limits.max_file_size,
            "part {k} ends past max_file_size"
        );
        if let Some(len) = declared {
            assert!(end <= len, "part {k} ends past the declared length");
        }
        if let Some(next) = out.get(&(k + 1)) {
            assert_eq!(
                next.offset,
                Some(end),
                "parts {k} and {} not contiguous",
                k + 1
            );
        }
        // No planned part may overlap an earlier-numbered one: the engine
        // writes each chain part straight to its offset in the assembly, so
        // an overlap would overwrite acknowledged bytes of another part,
        // and such a plan can never be completed.
        for (&j, q) in out.range(k + 1..) {
            let qo = q.offset.expect("chain part without offset");
            assert!(
                qo >= end,
                "part {j} (offset {qo}) starts before part {k} (offset {offset}, {} bytes) ends",
                p.size
            );
        }
    }
    assert!(total <= limits.max_file_size, "total over max_file_size");
    if let Some(len) = declared {
        assert!(total <= len, "total over the declared length");
    }
}

fn check_refused(e: &Error) {
    match e {
        Error::BadPlan(m) => assert!(!m.is_empty()),
        Error::PartOutOfRange { reason, .. } => assert!(!reason.is_empty()),
        Error::FileTooLarge { len, max } => assert!(len > max),
        other => panic!("unexpected refusal {other:?}"),
    }
    assert!(!e.to_string().is_empty());
}

fn merge_checked(
    old: &BTreeMap<u32, PartPlan>,
    new: &[PartPlan],
    declared: Option<u64>,
    limits: &Limits,
) -> Option<BTreeMap<u32, PartPlan>> {
    match plan::merge(old, new, declared, limits) {
        Ok(out) => {
            assert!(!new.is_empty(), "an empty call was accepted");
            check_accepted(old, new, &out, declared, limits);
            Some(out)
        }
        Err(e) => {
            check_refused(&e);
            None
        }
    }
}

fuzz_target!(|input: Input| {
    let limits = limits(&input);
    let (all, declared) = entries(&input);
    let empty = BTreeMap::new();

    let whole = merge_checked(&empty, &all, declared, &limits);

    let cut = if all.is_empty() {
        0
    } else {
        usize::from(input.split) % (all.len() + 1)
    };
    let (a, b) = all.split_at(cut);
    let first = merge_checked(&empty, a, declared, &limits);
    let second = first
        .as_ref()
        .and_then(|f| merge_checked(f, b, declared, &limits));

    let numbers_a: std::collections::BTreeSet<u32> = a.iter().map(|p| p.number).collect();
    let disjoint = b.iter().all(|p| !numbers_a.contains(&p.number));
    if !a.is_empty() && !b.is_empty() && disjoint {
        assert_eq!(
            whole.is_some(),
            second.is_some(),
            "one call and two calls disagree: {whole:?} vs {first:?} then {second:?}"
        );
        if let (Some(w), Some(s)) = (&whole, &second) {
            assert_eq!(w, s);
        }
    }

    if let Some(w) = &whole {
        // Re-planning what is planned changes nothing, in any grouping.
        let again: Vec<PartPlan> = all.iter().copied().take(cut.max(1)).collect();
        assert_eq!(
            plan::merge(w, &again, declared, &limits).ok().as_ref(),
            Some(w)
        );
        // Planning a part again with other values is refused.
        let mut changed = all[0];
        changed.size = changed.size.wrapping_add(64);
        match plan::merge(w, &[changed], declared, &limits) {
            Err(Error::BadPlan(m)) => assert!(!m.is_empty()),
            other => panic!("a changed entry was not refused: {other:?}"),
        }
    }
});
