//! Helpers shared by the engine tests: deterministic data, small limits,
//! plans with midstates the way a KooDrive client computes them.
#![allow(dead_code)]

use std::path::Path;

use partseal::hazmat::Midstate;
use partseal::{Config, Engine, HashCtx, Limits, PartNumber, PartPlan, Sha256};

/// Deterministic pseudo-random bytes (splitmix64).
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_add(0x9e3779b97f4a7c15);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s = s.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Small limits so that tests can use small parts.
pub fn config() -> Config {
    let mut cfg = Config::default().with_limits(Limits::new(64, 64 << 20, 1 << 30));
    cfg.merge_window = 64 * 1024;
    cfg
}

pub fn open(root: &Path) -> Engine {
    Engine::open(root, config()).expect("open store")
}

/// A part number the test knows is valid.
pub fn pn(n: u64) -> PartNumber {
    PartNumber::new(n).expect("valid part number")
}

pub fn sha(data: &[u8]) -> Sha256 {
    Sha256::digest(data)
}

/// Splits `data` into parts of `part_size` (the last one the remainder, or
/// an empty last part when `empty_last` and the length divides evenly).
pub fn split(data: &[u8], part_size: usize, empty_last: bool) -> Vec<&[u8]> {
    let mut parts: Vec<&[u8]> = data.chunks(part_size).collect();
    if parts.is_empty() || (empty_last && data.len().is_multiple_of(part_size)) {
        parts.push(&data[data.len()..]);
    }
    parts
}

/// The plan a KooDrive client sends for `parts`: offsets and midstates.
pub fn chain_plan(parts: &[&[u8]]) -> Vec<PartPlan> {
    let mut mid = Midstate::new();
    let mut plan = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let ctx = (i > 0).then(|| mid.ctx());
        plan.push(
            PartPlan::new(i as u64 + 1, p.len() as u64, Some(mid.len()), ctx).expect("valid part"),
        );
        if i + 1 < parts.len() {
            mid.fold(p);
        }
    }
    plan
}

pub fn initial() -> HashCtx {
    HashCtx::INITIAL
}

/// Entries left in `ROOT/tmp` once the engine's janitor has had up to ten
/// seconds to delete what aborts, expiry and commits buried there.
pub fn tmp_entries_after_cleanup(root: &Path) -> usize {
    let count = || std::fs::read_dir(root.join("tmp")).map_or(0, |d| d.count());
    for _ in 0..1000 {
        if count() == 0 {
            return 0;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    count()
}
