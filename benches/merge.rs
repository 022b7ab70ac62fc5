//! The in-order path for uploads without midstates: hashing 64 parts (64 MiB)
//! in order while merging them into one output file (written and fsynced,
//! `O_DIRECT` where the file system takes it), against hashing the same
//! parts without an output. The difference is what the merge costs on top
//! of the single-core hash; the design hides it on the other core.

use std::fs::{self, File, OpenOptions};
use std::hint::black_box;
use std::path::PathBuf;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use partseal::offline;

#[path = "common/mod.rs"]
mod common;

const TOTAL: usize = 64 << 20;
const PARTS: usize = 64;

/// A fresh output file, removed when dropped (outside the timing).
struct Out {
    path: PathBuf,
    file: File,
}

impl Drop for Out {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn merge(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, paths) = common::write_parts(dir.path(), TOTAL, PARTS, 64);
    let files = common::open_all(&paths);
    let inputs: Vec<(&std::fs::File, u64)> = files.iter().map(|(f, len)| (f, *len)).collect();

    let mut g = c.benchmark_group("in_order_64_parts");
    g.throughput(Throughput::Bytes(TOTAL as u64));
    g.bench_function("hash_only", |b| {
        b.iter(|| {
            let r = offline::merge(&inputs, None, &|_| {}).unwrap();
            black_box(r.sha256)
        })
    });
    let mut k = 0u64;
    g.bench_function("merge_and_hash_fsync", |b| {
        b.iter_batched(
            || {
                k += 1;
                let path = dir.path().join(format!("out.{k}"));
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .expect("create output");
                Out { path, file }
            },
            |out| {
                let r = offline::merge(&inputs, Some(&out.file), &|_| {}).unwrap();
                assert_eq!(r.written, TOTAL as u64);
                out.file.sync_all().unwrap();
                black_box(r.sha256);
                out
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = merge
}
criterion_main!(benches);
