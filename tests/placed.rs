//! Stream uploads with a plan of sizes (no midstates): each part lands at its
//! place in the assembly as it arrives, so complete hashes in order from the
//! last checkpoint and merges nothing. Replacements, parts stored before
//! their plan entry, reopening the store and MD5 all keep the bytes exact.

mod common;

use std::path::Path;

use common::*;
use md5::{Digest, Md5};
use partseal::{Config, Engine, Error, FileId, FileSpec, Owner, PartPlan};

fn owner() -> Owner {
    Owner::new("placer").unwrap()
}

fn sized_plan(parts: &[&[u8]]) -> Vec<PartPlan> {
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| PartPlan::new(i as u64 + 1, p.len() as u64, None, None).unwrap())
        .collect()
}

fn open_with(root: &Path, eager: bool) -> Engine {
    let mut cfg: Config = config();
    cfg.eager_hashing = eager;
    Engine::open(root, cfg).unwrap()
}

/// Part data files of an open upload (placed parts have none).
fn part_files(root: &Path, id: &FileId) -> usize {
    let dir = root.join("uploads").join(id.as_str()).join("parts");
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".data"))
            })
            .count()
        })
        .unwrap_or(0)
}

fn committed_bytes(engine: &Engine, id: &FileId) -> Vec<u8> {
    std::fs::read(engine.get(&owner(), id).unwrap().path).unwrap()
}

#[test]
fn planned_stream_parts_are_placed_and_complete_merges_nothing() {
    for eager in [false, true] {
        // Sizes that are not multiples of the block or the page.
        for (len, part) in [(5000 * 7 + 777, 5000), (4096 * 3, 4096), (100, 64)] {
            let dir = tempfile::tempdir().unwrap();
            let engine = open_with(dir.path(), eager);
            let bytes = data(len, len as u64);
            let parts = split(&bytes, part, false);
            let spec = FileSpec::default().with_plan(sized_plan(&parts));
            let id = engine.create(&owner(), spec).unwrap();
            // Out of order: the middle, then the rest backwards.
            let mut order: Vec<usize> = (0..parts.len()).rev().collect();
            order.rotate_left(parts.len() / 2);
            for i in order {
                let r = engine
                    .put_part(&owner(), &id, pn(i as u64 + 1), parts[i], None)
                    .unwrap();
                assert_eq!(
                    r.sha256,
                    sha(parts[i]),
                    "stream parts keep their own SHA-256"
                );
            }
            assert_eq!(part_files(dir.path(), &id), 0, "every part was placed");
            let done = engine.complete(&owner(), &id, Some(sha(&bytes))).unwrap();
            assert!(done.committed_now);
            assert_eq!(done.file.length, len as u64);
            assert_eq!(done.file.parts as usize, parts.len());
            assert_eq!(
                committed_bytes(&engine, &id),
                bytes,
                "eager {eager} len {len}"
            );
        }
    }
}

#[test]
fn a_wrong_digest_leaves_a_placed_upload_completable() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_with(dir.path(), true);
    let bytes = data(3 * 4000 + 1, 3);
    let parts = split(&bytes, 4000, false);
    let id = engine
        .create(&owner(), FileSpec::default().with_plan(sized_plan(&parts)))
        .unwrap();
    for (i, p) in parts.iter().enumerate() {
        engine
            .put_part(&owner(), &id, pn(i as u64 + 1), *p, None)
            .unwrap();
    }
    let err = engine
        .complete(&owner(), &id, Some(sha(b"something else")))
        .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    let done = engine.complete(&owner(), &id, Some(sha(&bytes))).unwrap();
    assert!(done.committed_now);
    assert_eq!(committed_bytes(&engine, &id), bytes);
}

#[test]
fn a_replaced_placed_part_wins_after_eager_hashing() {
    for eager in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let engine = open_with(dir.path(), eager);
        let bytes = data(4 * 5000, 11);
        let parts = split(&bytes, 5000, false);
        let id = engine
            .create(&owner(), FileSpec::default().with_plan(sized_plan(&parts)))
            .unwrap();
        // Part 2 first arrives with the wrong bytes (same size), and is
        // hashed eagerly with its neighbours, then replaced.
        let wrong = data(5000, 99);
        for (i, p) in parts.iter().enumerate() {
            let body: &[u8] = if i == 1 { &wrong } else { p };
            engine
                .put_part(&owner(), &id, pn(i as u64 + 1), body, None)
                .unwrap();
        }
        let r = engine
            .put_part(&owner(), &id, pn(2), parts[1], None)
            .unwrap();
        assert_eq!(r.sha256, sha(parts[1]));
        // The replacement is a file of its own until complete settles it.
        assert_eq!(part_files(dir.path(), &id), 1);
        let done = engine.complete(&owner(), &id, Some(sha(&bytes))).unwrap();
        assert!(done.committed_now);
        assert_eq!(committed_bytes(&engine, &id), bytes, "eager {eager}");
    }
}

#[test]
fn placed_parts_survive_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(5 * 4096 + 33, 5);
    let parts = split(&bytes, 4096, false);
    let id = {
        let engine = open_with(dir.path(), true);
        let id = engine
            .create(&owner(), FileSpec::default().with_plan(sized_plan(&parts)))
            .unwrap();
        for i in [4usize, 0, 2] {
            engine
                .put_part(&owner(), &id, pn(i as u64 + 1), parts[i], None)
                .unwrap();
        }
        // A replacement left as a file of its own at the reopen.
        engine
            .put_part(&owner(), &id, pn(3), parts[2], None)
            .unwrap();
        id
    };
    let engine = open_with(dir.path(), true);
    let listed: Vec<u32> = engine
        .parts(&owner(), &id)
        .unwrap()
        .iter()
        .map(|p| p.number.get())
        .collect();
    assert_eq!(listed, [1, 3, 5]);
    for i in [1usize, 3, 5] {
        engine
            .put_part(&owner(), &id, pn(i as u64 + 1), parts[i], None)
            .unwrap();
    }
    let done = engine.complete(&owner(), &id, Some(sha(&bytes))).unwrap();
    assert!(done.committed_now);
    assert_eq!(committed_bytes(&engine, &id), bytes);
}

#[test]
fn a_part_stored_before_its_plan_entry_must_match_it() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_with(dir.path(), true);
    let bytes = data(3 * 4096, 8);
    let parts = split(&bytes, 4096, false);
    let id = engine.create(&owner(), FileSpec::default()).unwrap();
    // Part 1 arrives before any plan, 100 bytes short of what is planned
    // for it afterwards.
    engine
        .put_part(&owner(), &id, pn(1), &parts[0][..3996], None)
        .unwrap();
    engine
        .plan_parts(&owner(), &id, &sized_plan(&parts))
        .unwrap();
    for (i, p) in parts.iter().enumerate().skip(1) {
        engine
            .put_part(&owner(), &id, pn(i as u64 + 1), *p, None)
            .unwrap();
    }
    let err = engine
        .complete(&owner(), &id, Some(sha(&bytes)))
        .unwrap_err();
    assert!(
        matches!(&err, Error::BadPlan(m) if m.contains("part 1")),
        "{err}"
    );
    // Sent again at its planned size, it fits, and the file is exact.
    engine
        .put_part(&owner(), &id, pn(1), parts[0], None)
        .unwrap();
    let done = engine.complete(&owner(), &id, Some(sha(&bytes))).unwrap();
    assert!(done.committed_now);
    assert_eq!(committed_bytes(&engine, &id), bytes);
}

#[test]
fn md5_of_a_placed_upload_is_computed_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_with(dir.path(), true);
    let bytes = data(6 * 3000 + 5, 13);
    let parts = split(&bytes, 3000, false);
    let md5: [u8; 16] = Md5::digest(&bytes).into();
    let spec = FileSpec::default()
        .with_md5(md5)
        .with_plan(sized_plan(&parts));
    let id = engine.create(&owner(), spec).unwrap();
    for (i, p) in parts.iter().enumerate().rev() {
        engine
            .put_part(&owner(), &id, pn(i as u64 + 1), *p, None)
            .unwrap();
    }
    let done = engine.complete(&owner(), &id, None).unwrap();
    assert_eq!(done.file.md5, Some(md5));
    assert_eq!(done.file.sha256, sha(&bytes));

    // A wrong declared MD5 is named, and nothing is committed.
    let id = engine
        .create(
            &owner(),
            FileSpec::default()
                .with_md5([0; 16])
                .with_plan(sized_plan(&parts)),
        )
        .unwrap();
    for (i, p) in parts.iter().enumerate() {
        engine
            .put_part(&owner(), &id, pn(i as u64 + 1), *p, None)
            .unwrap();
    }
    let err = engine.complete(&owner(), &id, None).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(engine.get(&owner(), &id).is_err());
}
