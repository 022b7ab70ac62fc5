//! Helpers shared by the benches: deterministic data, parts in temporary
//! files, and short criterion settings so that `cargo bench` takes minutes.
#![allow(dead_code)]

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::Criterion;

/// Deterministic, incompressible bytes (splitmix64).
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `total` bytes written as `n` equal part files (`part.000`, ...) in `dir`;
/// returns the bytes and the paths.
pub fn write_parts(dir: &Path, total: usize, n: usize, seed: u64) -> (Vec<u8>, Vec<PathBuf>) {
    let bytes = data(total, seed);
    let size = total / n;
    assert_eq!(size * n, total, "parts of equal size");
    let paths = bytes
        .chunks(size)
        .enumerate()
        .map(|(i, chunk)| {
            let p = dir.join(format!("part.{i:03}"));
            fs::write(&p, chunk).expect("write part");
            p
        })
        .collect();
    (bytes, paths)
}

/// Opens every path, with its length.
pub fn open_all(paths: &[PathBuf]) -> Vec<(File, u64)> {
    paths
        .iter()
        .map(|p| {
            let f = File::open(p).expect("open part");
            let len = f.metadata().expect("stat part").len();
            (f, len)
        })
        .collect()
}

/// Criterion settings for I/O-sized work: few samples, short windows.
pub fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args()
}
