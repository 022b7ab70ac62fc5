//! Throughput of the raw SHA-256 fold (`Midstate::fold`, SHA-NI where the
//! CPU has it) over in-memory inputs: the single-core bound of every
//! in-order path.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use partseal::hazmat::Midstate;

#[path = "common/mod.rs"]
mod common;

fn fold(c: &mut Criterion) {
    let mut g = c.benchmark_group("midstate_fold");
    for (label, len) in [("64KiB", 64 << 10), ("1MiB", 1 << 20), ("16MiB", 16 << 20)] {
        let bytes = common::data(len, 1);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::from_parameter(label), &bytes, |b, bytes| {
            b.iter(|| {
                let mut m = Midstate::new();
                m.fold(black_box(bytes));
                black_box(m.ctx())
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = fold
}
criterion_main!(benches);
