//! Tests of part plans: `plan::merge` accepts exactly the plans that keep
//! the chain invariants and the size limits, and `PartPlan::new` checks part
//! numbers.

use std::collections::BTreeMap;

use partseal::hazmat::{BLOCK, Midstate};
use partseal::plan::merge;
use partseal::{Error, HashCtx, Limits, PartPlan};
use proptest::prelude::*;

const LIMITS: Limits = Limits::new(64, 1 << 20, 1 << 24);

type Plan = BTreeMap<u32, PartPlan>;

fn empty() -> Plan {
    BTreeMap::new()
}

/// A distinct, non-initial context for part `n` (merge does not check the
/// values, only their presence and part 1's).
fn ctx_for(n: u32) -> HashCtx {
    HashCtx([n.wrapping_mul(0x9e37_79b9) ^ 0x5555_5555; 8])
}

fn chain_part(number: u32, size: u64, offset: u64) -> PartPlan {
    let ctx = if number == 1 {
        None
    } else {
        Some(ctx_for(number))
    };
    PartPlan::new(u64::from(number), size, Some(offset), ctx).unwrap()
}

fn plain_part(number: u32, size: u64) -> PartPlan {
    PartPlan::new(u64::from(number), size, None, None).unwrap()
}

/// A contiguous chain plan over `sizes` (part 1 first).
fn chain_plan(sizes: &[u64]) -> Vec<PartPlan> {
    let mut off = 0;
    sizes
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let p = chain_part(i as u32 + 1, s, off);
            off += s;
            p
        })
        .collect()
}

fn merge_new(new: &[PartPlan], declared: Option<u64>) -> partseal::Result<Plan> {
    merge(&empty(), new, declared, &LIMITS)
}

/// Asserts a `BadPlan` whose message contains every one of `needles`.
#[track_caller]
fn assert_bad_plan(r: partseal::Result<Plan>, needles: &[&str]) {
    match r {
        Err(Error::BadPlan(msg)) => {
            for n in needles {
                assert!(msg.contains(n), "message {msg:?} lacks {n:?}");
            }
        }
        other => panic!("expected BadPlan mentioning {needles:?}, got {other:?}"),
    }
}

// ---- accepted plans -------------------------------------------------------

#[test]
fn accepts_valid_chain_plan() {
    let sizes = [128, 64, 1 << 20, 4096, 10];
    let parts = chain_plan(&sizes);
    let total: u64 = sizes.iter().sum();
    // A last planned part that leaves declared bytes after it would have to
    // be a middle part, and 10 bytes cannot be one: such a plan could never
    // complete.
    assert_bad_plan(
        merge_new(&parts, Some(total + 1000)),
        &["after part 5", "not the last part"],
    );
    for declared in [None, Some(total)] {
        let out = merge_new(&parts, declared).unwrap();
        assert_eq!(out.len(), sizes.len());
        for p in &parts {
            assert_eq!(out[&p.number], *p);
        }
    }
    // Part 1 may give the initial value explicitly.
    let mut parts = parts;
    parts[0].ctx = Some(HashCtx::INITIAL);
    merge_new(&parts, None).unwrap();
    // The last part may be empty or any size up to the maximum.
    merge_new(&chain_plan(&[64, 0]), None).unwrap();
    merge_new(&chain_plan(&[64, 1 << 20]), None).unwrap();
    merge_new(&chain_plan(&[1]), Some(1)).unwrap();
    merge_new(&chain_plan(&[0]), Some(0)).unwrap();
}

#[test]
fn accepts_real_contexts() {
    // Contexts computed from real data, as a client would send them.
    let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
    let cuts = [0usize, 128, 512, 1000];
    let mut parts = Vec::new();
    let mut m = Midstate::new();
    for (i, w) in cuts.windows(2).enumerate() {
        let n = i as u64 + 1;
        parts.push(
            PartPlan::new(n, (w[1] - w[0]) as u64, Some(w[0] as u64), Some(m.ctx())).unwrap(),
        );
        if w[1] < data.len() {
            m.fold(&data[w[0]..w[1]]);
        }
    }
    let out = merge_new(&parts, Some(1000)).unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(out[&1].start_ctx(), Some(HashCtx::INITIAL));
    assert_eq!(out[&3].start_ctx(), Some(m.ctx()));
}

#[test]
fn accepts_plan_in_several_calls_and_out_of_order() {
    let parts = chain_plan(&[128, 192, 64, 1000]);
    let first = merge_new(&[parts[3], parts[1]], Some(1384)).unwrap();
    assert_eq!(first.len(), 2);
    let second = merge(&first, &[parts[2], parts[0]], Some(1384), &LIMITS).unwrap();
    assert_eq!(second, merge_new(&parts, Some(1384)).unwrap());
}

#[test]
fn accepts_identical_replan() {
    let parts = chain_plan(&[128, 64, 10]);
    let plan = merge_new(&parts, None).unwrap();
    let again = merge(&plan, &parts, None, &LIMITS).unwrap();
    assert_eq!(again, plan);
    let again = merge(&plan, &parts[1..2], None, &LIMITS).unwrap();
    assert_eq!(again, plan);
}

#[test]
fn accepts_valid_plain_plan() {
    // Without chain fields, sizes need not be multiples of 64.
    let parts = [plain_part(1, 100), plain_part(2, 65), plain_part(3, 1)];
    let out = merge_new(&parts, Some(166)).unwrap();
    assert_eq!(out.len(), 3);
    assert!(out.values().all(|p| !p.is_chain()));
}

#[test]
fn gaps_in_numbering_are_left_for_verify() {
    // Part 2 is not planned yet: parts 1 and 3 have no neighbour to agree with.
    let parts = [chain_part(1, 128, 0), chain_part(3, 64, 4096)];
    merge_new(&parts, None).unwrap();
}

// ---- refused plans --------------------------------------------------------

#[test]
fn rejects_empty_plan() {
    assert_bad_plan(merge_new(&[], None), &[]);
}

#[test]
fn rejects_duplicate_part_numbers() {
    let parts = chain_plan(&[128, 64]);
    assert_bad_plan(
        merge_new(&[parts[0], parts[1], parts[1]], None),
        &["part 2", "twice"],
    );
    // Even when the duplicates are identical, within one call.
    assert_bad_plan(merge_new(&[parts[0], parts[0]], None), &["part 1"]);
    let plain = [plain_part(3, 100), plain_part(3, 200)];
    assert_bad_plan(merge_new(&plain, None), &["part 3"]);
}

#[test]
fn rejects_gapped_offsets() {
    let parts = [chain_part(1, 128, 0), chain_part(2, 64, 192)];
    assert_bad_plan(merge_new(&parts, None), &["part 2", "part 1", "192", "128"]);
}

#[test]
fn rejects_overlapping_offsets() {
    let parts = [chain_part(1, 128, 0), chain_part(2, 64, 64)];
    assert_bad_plan(merge_new(&parts, None), &["part 2", "part 1"]);
    let parts = [
        chain_part(1, 128, 0),
        chain_part(2, 128, 128),
        chain_part(3, 64, 128),
    ];
    assert_bad_plan(merge_new(&parts, None), &["part 3", "part 2"]);
}

#[test]
fn rejects_part_one_ctx_not_initial() {
    let mut parts = chain_plan(&[128, 64]);
    parts[0].ctx = Some(ctx_for(7));
    assert_bad_plan(merge_new(&parts, None), &["part 1", "hashCtx"]);
    // Alone, too.
    assert_bad_plan(merge_new(&parts[..1], None), &["part 1"]);
}

#[test]
fn rejects_part_one_offset_not_zero() {
    for off in [64, 128, 1 << 20] {
        let parts = [chain_part(1, 128, off)];
        assert_bad_plan(merge_new(&parts, None), &["part 1", &off.to_string()]);
    }
    // An unaligned offset is refused as such.
    assert_bad_plan(merge_new(&[chain_part(1, 128, 10)], None), &["part 1"]);
}

#[test]
fn rejects_unaligned_offset() {
    let parts = [chain_part(1, 100, 0), chain_part(2, 64, 100)];
    assert_bad_plan(merge_new(&parts, None), &["part 1", "multiple of 64"]);
    // Part 2 alone at an unaligned offset.
    assert_bad_plan(
        merge_new(&[chain_part(2, 64, 100)], None),
        &["part 2", "100"],
    );
}

#[test]
fn rejects_missing_ctx_on_part_two() {
    let mut parts = chain_plan(&[128, 64]);
    parts[1].ctx = None;
    assert_bad_plan(merge_new(&parts, None), &["part 2", "hashCtx"]);
    // A context without an offset.
    let mut parts = chain_plan(&[128, 64]);
    parts[1].offset = None;
    assert_bad_plan(merge_new(&parts[1..], None), &["part 2", "partOffset"]);
}

#[test]
fn rejects_non_block_size_on_non_last_part() {
    let parts = [
        chain_part(1, 128, 0),
        chain_part(2, 100, 128),
        chain_part(3, 64, 228),
    ];
    assert_bad_plan(merge_new(&parts, None), &["part 2", "100", "64"]);
    // The same part was fine while it was the last one planned...
    let plan = merge_new(&parts[..2], None).unwrap();
    // ...but not once a later part is added.
    assert_bad_plan(merge(&plan, &parts[2..], None, &LIMITS), &["part 2"]);
}

#[test]
fn rejects_mixed_chain_and_plain_entries() {
    let parts = [chain_part(1, 128, 0), plain_part(2, 64)];
    assert_bad_plan(merge_new(&parts, None), &["partOffset", "hashCtx"]);
    let parts = [plain_part(1, 128), chain_part(2, 64, 128)];
    assert_bad_plan(merge_new(&parts, None), &["partOffset", "hashCtx"]);
    // Across calls.
    let plan = merge_new(&[plain_part(1, 128)], None).unwrap();
    assert_bad_plan(
        merge(&plan, &[chain_part(2, 64, 128)], None, &LIMITS),
        &["hashCtx"],
    );
    let plan = merge_new(&[chain_part(1, 128, 0)], None).unwrap();
    assert_bad_plan(
        merge(&plan, &[plain_part(2, 64)], None, &LIMITS),
        &["hashCtx"],
    );
}

#[test]
fn rejects_replanning_differently() {
    let parts = chain_plan(&[128, 64, 10]);
    let plan = merge_new(&parts, None).unwrap();
    let mut changed = parts[1];
    changed.size = 128;
    assert_bad_plan(
        merge(&plan, &[changed], None, &LIMITS),
        &["part 2", "already"],
    );
    let mut changed = parts[2];
    changed.ctx = Some(ctx_for(99));
    assert_bad_plan(merge(&plan, &[changed], None, &LIMITS), &["part 3"]);
    let mut changed = parts[0];
    changed.ctx = Some(HashCtx::INITIAL); // Same meaning, different entry.
    assert_bad_plan(merge(&plan, &[changed], None, &LIMITS), &["part 1"]);
    let plain = merge_new(&[plain_part(1, 100)], None).unwrap();
    assert_bad_plan(
        merge(&plain, &[plain_part(1, 101)], None, &LIMITS),
        &["part 1"],
    );
}

#[test]
fn rejects_small_non_last_parts() {
    let parts = [plain_part(1, 63), plain_part(2, 64)];
    assert_bad_plan(merge_new(&parts, None), &["part 1", "63", "64"]);
    let parts = chain_plan(&[64, 0, 64]);
    assert_bad_plan(merge_new(&parts, None), &["part 2", "at least 64"]);
    // Small or empty last parts are fine.
    merge_new(&[plain_part(1, 64), plain_part(2, 0)], None).unwrap();
    merge_new(&chain_plan(&[64, 1]), None).unwrap();
    // Part 1 alone may be small (a one-part file).
    merge_new(&[plain_part(1, 5)], None).unwrap();
}

#[test]
fn rejects_part_above_max_part_size() {
    let big = LIMITS.max_part_size + 64;
    let parts = chain_plan(&[128, big, 64]);
    assert_bad_plan(merge_new(&parts, None), &["part 2", &big.to_string()]);
    // The last part too.
    let parts = chain_plan(&[128, LIMITS.max_part_size + 1]);
    assert_bad_plan(merge_new(&parts, None), &["part 2"]);
    assert_bad_plan(merge_new(&[plain_part(1, u64::MAX)], None), &["part 1"]);
}

#[test]
fn rejects_total_above_max_file_size() {
    let parts_needed = LIMITS.max_file_size / LIMITS.max_part_size;
    // Exactly the maximum is fine.
    let sizes = vec![LIMITS.max_part_size; parts_needed as usize];
    merge_new(&chain_plan(&sizes), None).unwrap();
    // One byte more is not.
    let mut sizes = sizes;
    sizes.push(1);
    match merge_new(&chain_plan(&sizes), None) {
        Err(Error::FileTooLarge { len, max }) => {
            assert_eq!(len, LIMITS.max_file_size + 1);
            assert_eq!(max, LIMITS.max_file_size);
        }
        other => panic!("{other:?}"),
    }
    let plain: Vec<PartPlan> = sizes
        .iter()
        .enumerate()
        .map(|(i, &s)| plain_part(i as u32 + 1, s))
        .collect();
    assert!(matches!(
        merge_new(&plain, None),
        Err(Error::FileTooLarge { .. })
    ));
}

#[test]
fn rejects_part_ending_past_declared_length() {
    let parts = chain_plan(&[128, 128]);
    assert_bad_plan(merge_new(&parts, Some(200)), &["part 2", "256", "200"]);
    merge_new(&parts, Some(256)).unwrap();
    // A later part alone that ends past the declared length.
    let p = chain_part(3, 64, 4096);
    assert_bad_plan(merge_new(&[p], Some(4096)), &["part 3"]);
    // Plain plans: the total counts.
    let plain = [plain_part(1, 100), plain_part(2, 100)];
    assert_bad_plan(merge_new(&plain, Some(199)), &["200", "199"]);
    merge_new(&plain, Some(200)).unwrap();
}

#[test]
fn rejects_part_ending_past_max_file_size() {
    // A part planned far beyond the largest file: it could never be part of
    // a valid upload, and its offset is where its bytes would be written.
    let far = LIMITS.max_file_size;
    let parts = [chain_part(1, 128, 0), chain_part(20, 64, far)];
    match merge_new(&parts, None) {
        Err(Error::FileTooLarge { len, max }) => {
            assert_eq!(len, far + 64);
            assert_eq!(max, LIMITS.max_file_size);
        }
        other => panic!("{other:?}"),
    }
    // Ending exactly at the maximum is fine.
    // (Parts 2 to 19, planned later, can fill the bytes before it.)
    let parts = [chain_part(1, 128, 0), chain_part(20, 64, far - 64)];
    merge_new(&parts, None).unwrap();
}

#[test]
fn rejects_overflowing_part_end() {
    // offset + size overflows u64: must not slip past the length checks.
    let top = u64::MAX - (BLOCK as u64 - 1);
    assert_eq!(top % 64, 0);
    let parts = [chain_part(1, 128, 0), chain_part(2, 128, top)];
    for declared in [None, Some(1000)] {
        assert!(
            merge_new(&parts, declared).is_err(),
            "accepted an end past u64::MAX with declared length {declared:?}"
        );
    }
    // Alone (no neighbour to disagree with), it used to be accepted.
    let parts = [chain_part(2, 128, top)];
    for declared in [None, Some(1000)] {
        assert!(
            matches!(merge_new(&parts, declared), Err(Error::FileTooLarge { .. })),
            "declared length {declared:?}"
        );
    }
}

#[test]
fn part_numbers_out_of_range() {
    for n in [0u64, 10_001, u64::from(u32::MAX) + 1, u64::MAX] {
        match PartPlan::new(n, 64, None, None) {
            Err(Error::PartOutOfRange { part, .. }) => assert_eq!(part, n),
            other => panic!("{n}: {other:?}"),
        }
    }
    assert_eq!(
        PartPlan::new(10_000, 64, None, None).unwrap().number,
        10_000
    );
    assert_eq!(PartPlan::new(1, 64, None, None).unwrap().number, 1);
    // Entries built directly are checked by merge too.
    for number in [0u32, 10_001, u32::MAX] {
        let p = PartPlan {
            number,
            size: 64,
            offset: None,
            ctx: None,
        };
        assert!(matches!(
            merge_new(&[p], None),
            Err(Error::PartOutOfRange { .. })
        ));
    }
}

#[test]
fn start_ctx_and_is_chain() {
    let p1 = PartPlan::new(1, 64, Some(0), None).unwrap();
    assert!(p1.is_chain());
    assert_eq!(p1.start_ctx(), Some(HashCtx::INITIAL));
    let p2 = chain_part(2, 64, 64);
    assert_eq!(p2.start_ctx(), Some(ctx_for(2)));
    let plain = plain_part(2, 64);
    assert!(!plain.is_chain());
    assert_eq!(plain.start_ctx(), None);
    assert!(
        PartPlan::new(2, 64, None, Some(ctx_for(2)))
            .unwrap()
            .is_chain()
    );
}

// ---- properties -----------------------------------------------------------

/// Checks every invariant an accepted plan must hold.
fn check_invariants(out: &Plan, declared: Option<u64>) -> Result<(), TestCaseError> {
    prop_assert!(!out.is_empty());
    let last = *out.keys().next_back().unwrap();
    let chain = out.values().next().unwrap().is_chain();
    let mut total = 0u64;
    for (&n, p) in out {
        prop_assert_eq!(n, p.number);
        prop_assert!((1..=10_000).contains(&n));
        prop_assert!(p.size <= LIMITS.max_part_size);
        if n != last {
            prop_assert!(p.size >= LIMITS.min_part_size, "small non-last part {}", n);
        }
        prop_assert_eq!(p.is_chain(), chain, "mixed plan");
        total = total.checked_add(p.size).unwrap();
        if !chain {
            continue;
        }
        let off = p.offset.expect("chain part without offset");
        prop_assert_eq!(off % 64, 0);
        if n != last {
            prop_assert_eq!(p.size % 64, 0, "part {} not whole blocks", n);
        }
        if n == 1 {
            prop_assert_eq!(off, 0);
            prop_assert!(p.ctx.is_none() || p.ctx == Some(HashCtx::INITIAL));
        } else {
            prop_assert!(p.ctx.is_some());
        }
        let end = off.checked_add(p.size);
        prop_assert!(end.is_some(), "part {} ends past u64::MAX", n);
        let end = end.unwrap();
        prop_assert!(end <= LIMITS.max_file_size, "part {} ends at {}", n, end);
        if let Some(len) = declared {
            prop_assert!(end <= len, "part {} ends at {} past {}", n, end, len);
        }
        if let Some(next) = out.get(&(n + 1)) {
            prop_assert_eq!(next.offset, Some(end), "gap or overlap after part {}", n);
        }
        if let Some(prev) = n.checked_sub(1).and_then(|m| out.get(&m)) {
            prop_assert_eq!(prev.offset.unwrap() + prev.size, off);
        }
    }
    prop_assert!(total <= LIMITS.max_file_size);
    if let Some(len) = declared {
        prop_assert!(total <= len);
    }
    Ok(())
}

fn any_size() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(10),
        Just(64),
        Just(100),
        Just(128),
        Just(1 << 20),
        Just((1 << 20) + 64),
        0u64..4096,
        (0u64..=(1 << 14)).prop_map(|b| b * 64),
        any::<u64>(),
    ]
}

fn any_offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        (0u64..64).prop_map(|b| b * 64),
        0u64..8192,
        (0u64..=(1 << 18)).prop_map(|b| b * 64),
        Just(u64::MAX - 63),
        Just(u64::MAX),
        any::<u64>().prop_map(|x| x & !63),
        any::<u64>(),
    ]
}

fn any_ctx() -> impl Strategy<Value = Option<HashCtx>> {
    prop_oneof![
        Just(None),
        Just(Some(HashCtx::INITIAL)),
        any::<[u32; 8]>().prop_map(|w| Some(HashCtx(w))),
    ]
}

fn any_number() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => 1u32..=8,
        1 => Just(0u32),
        1 => 9_998u32..=10_002,
        1 => any::<u32>(),
    ]
}

/// Entirely random entries.
fn wild_plan() -> impl Strategy<Value = Vec<PartPlan>> {
    proptest::collection::vec(
        (
            any_number(),
            any_size(),
            proptest::option::of(any_offset()),
            any_ctx(),
        )
            .prop_map(|(number, size, offset, ctx)| PartPlan {
                number,
                size,
                offset,
                ctx,
            }),
        0..8,
    )
}

/// A valid plan, chain or plain, with a few random mutations.
fn near_valid_plan() -> impl Strategy<Value = Vec<PartPlan>> {
    let block_size = prop_oneof![
        (1u64..=64).prop_map(|b| b * 64),
        Just(1u64 << 20),
        Just(64u64),
    ];
    (
        proptest::collection::vec(block_size, 0..7),
        0u64..5000,
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec((0usize..8, 0u8..12, any::<u64>()), 0..3),
        any::<bool>(),
    )
        .prop_map(|(mut sizes, last, chain, initial, mutations, reverse)| {
            sizes.push(last);
            let mut parts = if chain {
                let mut v = chain_plan(&sizes);
                if initial {
                    v[0].ctx = Some(HashCtx::INITIAL);
                }
                v
            } else {
                sizes
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| plain_part(i as u32 + 1, s))
                    .collect()
            };
            for (i, kind, x) in mutations {
                if parts.is_empty() {
                    break;
                }
                let i = i % parts.len();
                if kind == 0 {
                    parts.remove(i);
                    continue;
                }
                let p = &mut parts[i];
                match kind {
                    1 => p.offset = p.offset.map(|o| o.wrapping_add(64)),
                    2 => p.offset = p.offset.map(|o| o.saturating_sub(64)),
                    3 => p.ctx = None,
                    4 => p.offset = None,
                    5 => {
                        p.offset = None;
                        p.ctx = None;
                    }
                    6 => p.size += 1,
                    7 => p.number = (x % 9) as u32,
                    8 => p.size = x % (3 << 20),
                    9 => p.offset = Some(x & !63),
                    10 => p.ctx = Some(HashCtx([x as u32; 8])),
                    _ => p.offset = p.offset.map(|o| o.wrapping_add(x % 64)),
                }
            }
            if reverse {
                parts.reverse();
            }
            parts
        })
}

fn declared_for(parts: &[PartPlan]) -> BoxedStrategy<Option<u64>> {
    let total = parts.iter().fold(0u64, |acc, p| acc.saturating_add(p.size));
    prop_oneof![
        Just(None),
        Just(Some(total)),
        (0u64..=4096).prop_map(move |d| Some(total.saturating_sub(d))),
        (0u64..=4096).prop_map(move |d| Some(total.saturating_add(d))),
        any::<u64>().prop_map(Some),
    ]
    .boxed()
}

fn plan_case() -> impl Strategy<Value = (Vec<PartPlan>, Option<u64>, usize)> {
    prop_oneof![wild_plan(), near_valid_plan()].prop_flat_map(|parts| {
        let n = parts.len();
        let declared = declared_for(&parts);
        (Just(parts), declared, 0..=n)
    })
}

fn has_duplicates(parts: &[PartPlan]) -> bool {
    let mut seen = std::collections::HashSet::new();
    !parts.iter().all(|p| seen.insert(p.number))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn merge_never_panics_and_keeps_invariants((parts, declared, split) in plan_case()) {
        let whole = merge_new(&parts, declared);
        match &whole {
            Ok(out) => {
                check_invariants(out, declared)?;
                prop_assert!(!has_duplicates(&parts));
                for p in &parts {
                    prop_assert_eq!(out.get(&p.number), Some(p));
                }
                prop_assert_eq!(out.len(), parts.len());
            }
            Err(Error::BadPlan(_) | Error::FileTooLarge { .. } | Error::PartOutOfRange { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected error kind {:?}", e),
        }

        // The same entries in two calls give the same verdict (when no
        // number repeats) and, when accepted, the same plan.
        if split > 0 && split < parts.len() && !has_duplicates(&parts) {
            let first = merge_new(&parts[..split], declared);
            if let Ok(f) = &first {
                check_invariants(f, declared)?;
            }
            let two = first.and_then(|f| merge(&f, &parts[split..], declared, &LIMITS));
            match (&whole, &two) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                _ => prop_assert!(false, "one call: {:?}; two calls: {:?}", whole, two),
            }
        }

        // Re-planning an accepted plan identically changes nothing.
        if let Ok(out) = &whole {
            let again = merge(out, &parts, declared, &LIMITS);
            prop_assert_eq!(again.as_ref().ok(), Some(out));
        }
    }

    #[test]
    fn valid_chain_plans_are_accepted(
        sizes in proptest::collection::vec((1u64..=256).prop_map(|b| b * 64), 0..10),
        last in 0u64..=(1 << 20),
    ) {
        let mut sizes = sizes;
        sizes.push(last);
        let parts = chain_plan(&sizes);
        let total: u64 = sizes.iter().sum();
        let out = merge_new(&parts, Some(total)).unwrap();
        check_invariants(&out, Some(total))?;
        prop_assert_eq!(out.len(), sizes.len());
    }
}

#[test]
fn chain_parts_that_overlap_or_run_backwards_are_refused() {
    let r = merge_new(&[chain_part(1, 128, 0), chain_part(3, 64, 0)], None);
    assert!(matches!(r, Err(Error::BadPlan(_))), "{r:?}");
    let r = merge_new(&[chain_part(2, 128, 64), chain_part(4, 64, 128)], None);
    assert!(matches!(r, Err(Error::BadPlan(_))), "{r:?}");
    let first = merge_new(&[chain_part(1, 128, 0)], None).unwrap();
    let r = merge(&first, &[chain_part(3, 64, 64)], None, &LIMITS);
    assert!(matches!(r, Err(Error::BadPlan(_))), "{r:?}");
    let first = merge_new(&[chain_part(1, 128, 0), chain_part(3, 64, 256)], None).unwrap();
    assert!(merge(&first, &[chain_part(2, 128, 128)], None, &LIMITS).is_ok());
}

// ---- plans that could never complete ---------------------------------------

/// Part numbers with a gap are fine while the gap can still be planned into
/// the bytes left for it, and refused at once when it never could be.
#[test]
fn a_gap_in_the_part_numbers_must_leave_room_for_its_parts() {
    // Plain parts: 1 and 3 hold every declared byte, so part 2 (a middle
    // part, at least 64 bytes) has nowhere to go.
    let plain = [plain_part(1, 2048), plain_part(3, 2048)];
    assert_bad_plan(merge_new(&plain, Some(4096)), &["part 2", "0 bytes"]);
    // With 1024 bytes left, part 2 can come later, and then completes it.
    let first = merge_new(&plain, Some(5120)).unwrap();
    let full = merge(&first, &[plain_part(2, 1024)], Some(5120), &LIMITS).unwrap();
    assert_eq!(full.len(), 3);
    // Many parts skipped: each needs its 64 bytes.
    let sparse = [plain_part(1, 64), plain_part(10, 64)];
    assert_bad_plan(merge_new(&sparse, Some(128 + 8 * 64 - 1)), &["8 part(s)"]);
    merge_new(&sparse, Some(128 + 8 * 64)).unwrap();

    // Chain parts: the offsets fix the gap's bytes.
    let chain = [chain_part(1, 2048, 0), chain_part(3, 2048, 2048)];
    assert_bad_plan(
        merge_new(&chain, Some(4096)),
        &["part 2 is not planned", "0 bytes"],
    );
    assert_bad_plan(merge_new(&chain, None), &["part 2 is not planned"]);
    let chain = [chain_part(1, 2048, 0), chain_part(3, 2048, 3072)];
    merge_new(&chain, Some(5120)).unwrap();
    // A gap wider than its parts can hold (at most 1 MiB each here).
    let wide = [chain_part(1, 64, 0), chain_part(3, 64, 64 + (2 << 20))];
    assert_bad_plan(
        merge_new(&wide, None),
        &["part 2 is not planned", "at most"],
    );
    // Before the first planned part too.
    assert_bad_plan(
        merge_new(&[chain_part(3, 64, 64)], None),
        &["parts 1 to 2 are not planned"],
    );
    merge_new(&[chain_part(3, 64, 128)], None).unwrap();
}

/// The last planned part of a plan that does not reach the declared length
/// is not the file's last part: it must be a valid middle part.
#[test]
fn a_plan_short_of_its_length_ends_with_a_middle_part() {
    assert_bad_plan(
        merge_new(&[plain_part(1, 10)], Some(1000)),
        &["after part 1", "at least 64"],
    );
    merge_new(&[plain_part(1, 64)], Some(1000)).unwrap();
    assert_bad_plan(
        merge_new(&chain_plan(&[128, 100]), Some(1000)),
        &["after part 2", "multiple of 64"],
    );
    merge_new(&chain_plan(&[128, 128]), Some(1000)).unwrap();
}

/// Limits at the top of the range (a smallest part of u64::MAX bytes) do not
/// overflow the gap check.
#[test]
fn a_gap_check_with_the_largest_limits_does_not_overflow() {
    let top = Limits::new(u64::MAX, u64::MAX, u64::MAX);
    let r = merge(&empty(), &[chain_part(3, 64, 128)], None, &top);
    assert!(matches!(r, Err(Error::BadPlan(_))), "{r:?}");
}
