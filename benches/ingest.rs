//! Ingest of one 16 MiB part: `Engine::put_part` (the body hashed while it
//! is written, fsynced, its record made durable) in stream mode (a file of
//! its own), in chain mode (one hash pass that checks the link and gives the
//! fingerprint; written with `O_DIRECT` into the assembly) and as a planned
//! stream part (its own SHA-256; `O_DIRECT` into the assembly), against a
//! plain write + fsync of the same bytes to a new file.

use std::fs::{self, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::path::PathBuf;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use partseal::{Config, Engine, FileId, FileSpec, HashCtx, Owner, PartNumber, PartPlan, Sha256};

#[path = "common/mod.rs"]
mod common;

const PART: usize = 16 << 20;

/// An upload that is aborted when dropped (outside the timing).
struct Upload<'a> {
    engine: &'a Engine,
    owner: &'a Owner,
    id: FileId,
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        let _ = self.engine.abort(self.owner, &self.id);
    }
}

/// A file removed when dropped (outside the timing).
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn ingest(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = Config::default();
    // Background hashing of arrived prefixes would run during the next
    // sample and blur it; it is measured by the merge bench instead.
    cfg.eager_hashing = false;
    let engine = Engine::open(dir.path().join("store"), cfg).expect("open store");
    let owner = Owner::new("bench").expect("owner");
    let bytes = common::data(PART, 9);
    let digest = Sha256::digest(&bytes);

    let mut g = c.benchmark_group("ingest_16MiB");
    g.throughput(Throughput::Bytes(PART as u64));
    g.bench_function("put_part_stream", |b| {
        b.iter_batched(
            || Upload {
                engine: &engine,
                owner: &owner,
                id: engine.create(&owner, FileSpec::default()).expect("create"),
            },
            |up| {
                let r = engine
                    .put_part(
                        &owner,
                        &up.id,
                        PartNumber::MIN,
                        &bytes[..],
                        Some(PART as u64),
                    )
                    .unwrap();
                black_box(r);
                up
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("put_part_chain", |b| {
        b.iter_batched(
            || {
                let plan = vec![
                    PartPlan::new(1, PART as u64, Some(0), Some(HashCtx::INITIAL)).expect("plan"),
                ];
                let spec = FileSpec::default()
                    .with_length(PART as u64)
                    .with_sha256(digest)
                    .with_plan(plan);
                Upload {
                    engine: &engine,
                    owner: &owner,
                    id: engine.create(&owner, spec).expect("create"),
                }
            },
            |up| {
                let r = engine
                    .put_part(
                        &owner,
                        &up.id,
                        PartNumber::MIN,
                        &bytes[..],
                        Some(PART as u64),
                    )
                    .unwrap();
                black_box(r);
                up
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("put_part_placed", |b| {
        b.iter_batched(
            || {
                // A plan of sizes only: the part goes to its place in the
                // assembly (O_DIRECT), hashed for its own SHA-256.
                let plan = vec![PartPlan::new(1, PART as u64, None, None).expect("plan")];
                Upload {
                    engine: &engine,
                    owner: &owner,
                    id: engine
                        .create(&owner, FileSpec::default().with_plan(plan))
                        .expect("create"),
                }
            },
            |up| {
                let r = engine
                    .put_part(
                        &owner,
                        &up.id,
                        PartNumber::MIN,
                        &bytes[..],
                        Some(PART as u64),
                    )
                    .unwrap();
                black_box(r);
                up
            },
            BatchSize::PerIteration,
        )
    });
    let mut k = 0u64;
    g.bench_function("plain_write_fsync", |b| {
        b.iter_batched(
            || {
                k += 1;
                dir.path().join(format!("plain.{k}"))
            },
            |path| {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .unwrap();
                f.write_all(&bytes).unwrap();
                f.sync_data().unwrap();
                Removed(path)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = ingest
}
criterion_main!(benches);
