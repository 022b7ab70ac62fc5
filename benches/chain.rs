//! Parallel chain verification (`chain::verify_chain`, every part a link
//! checked on its own, on all cores; `parallel_mapped` is
//! `verify_chain_mapped`, which hashes the parts straight from the page
//! cache) against one-stream hashing of the same part files in order on one
//! thread, for 1, 2, 8 and 64 parts of one 64 MiB file. With N ≥ cores the parallel check should approach cores × the
//! one-stream speed; with one part there is nothing to spread.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use partseal::Sha256;
use partseal::hazmat::{
    LinkInput, LinkValue, Midstate, compute_link, verify_chain, verify_chain_mapped,
};

#[path = "common/mod.rs"]
mod common;

const TOTAL: usize = 64 << 20;

fn chain(c: &mut Criterion) {
    let mut g = c.benchmark_group("chain_verify");
    g.throughput(Throughput::Bytes(TOTAL as u64));
    for n in [1usize, 2, 8, 64] {
        let dir = tempfile::tempdir().expect("temp dir");
        let (bytes, paths) = common::write_parts(dir.path(), TOTAL, n, n as u64);
        let digest = Sha256::digest(&bytes);
        let files = common::open_all(&paths);
        // The hashCtx of each part, as a KooDrive client sends it.
        let mut mid = Midstate::new();
        let mut starts = Vec::with_capacity(n);
        for chunk in bytes.chunks(TOTAL / n) {
            starts.push(mid);
            mid.fold(chunk);
        }
        drop(bytes);
        let links: Vec<LinkInput<'_>> = files
            .iter()
            .zip(&starts)
            .enumerate()
            .map(|(i, ((file, len), start))| LinkInput {
                part: i as u32 + 1,
                start: *start,
                file,
                len: *len,
            })
            .collect();
        assert_eq!(verify_chain(&links, Some(&digest)).unwrap(), digest);

        g.bench_function(BenchmarkId::new("parallel", n), |b| {
            b.iter(|| black_box(verify_chain(&links, Some(&digest)).unwrap()))
        });
        // SAFETY: the bench's own temporary part files, never truncated.
        g.bench_function(BenchmarkId::new("parallel_mapped", n), |b| {
            b.iter(|| black_box(unsafe { verify_chain_mapped(&links, Some(&digest)) }.unwrap()))
        });
        g.bench_function(BenchmarkId::new("one_stream", n), |b| {
            b.iter(|| {
                let mut mid = Midstate::new();
                let last = files.len() - 1;
                for (i, (file, len)) in files.iter().enumerate() {
                    match compute_link(mid, file, *len, i == last).unwrap() {
                        LinkValue::State(ctx) => {
                            mid = Midstate::resume(ctx, mid.len() + len).unwrap()
                        }
                        LinkValue::Digest(d) => return black_box(d),
                    }
                }
                unreachable!("the last part finalizes")
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = chain
}
criterion_main!(benches);
