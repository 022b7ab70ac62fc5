//! End-to-end behaviour of the engine on real files in temporary stores.

mod common;

use std::sync::Arc;
use std::thread;

use common::*;
use partseal::{Error, FileSpec, LinkCheck, Owner, PartNumber, PartPlan};

fn owner() -> Owner {
    Owner::new("alice").unwrap()
}

fn read_committed(engine: &partseal::Engine, id: &partseal::FileId) -> Vec<u8> {
    std::fs::read(engine.get(&owner(), id).unwrap().path).unwrap()
}

fn stream_round_trip(len: usize, part: usize) {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let bytes = data(len, len as u64);
    let parts = split(&bytes, part, false);
    let id = engine.create(&owner(), FileSpec::default()).unwrap();
    // Out of order: last first.
    for (i, p) in parts.iter().enumerate().rev() {
        let r = engine
            .put_part(&owner(), &id, pn(i as u64 + 1), *p, Some(p.len() as u64))
            .unwrap();
        assert_eq!(r.sha256, sha(p));
        assert_eq!(r.link, LinkCheck::NotApplicable);
    }
    let v = engine.verify(&owner(), &id, Some(sha(&bytes))).unwrap();
    assert_eq!(v.sha256, sha(&bytes));
    assert_eq!(v.length, len as u64);
    assert_eq!(v.parts as usize, parts.len());
    assert_eq!(read_committed(&engine, &id), bytes);
}

#[test]
fn stream_mode_round_trips_with_one_two_and_many_parts() {
    stream_round_trip(1000, 4096);
    stream_round_trip(5000, 4000);
    stream_round_trip(300_000, 1000);
    stream_round_trip(0, 64);
}

fn chain_round_trip(len: usize, part: usize, empty_last: bool) {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let bytes = data(len, 7 + len as u64);
    let parts = split(&bytes, part, empty_last);
    let plan = chain_plan(&parts);
    let spec = FileSpec::default().with_length(len as u64).with_plan(plan);
    let id = engine.create(&owner(), spec).unwrap();
    for (i, p) in parts.iter().enumerate().rev() {
        let r = engine
            .put_part(&owner(), &id, pn(i as u64 + 1), *p, Some(p.len() as u64))
            .unwrap();
        let last = i + 1 == parts.len();
        // The last part's link needs the file digest, which was not declared.
        let want = if last {
            LinkCheck::Pending
        } else {
            LinkCheck::Holds
        };
        assert_eq!(r.link, want, "part {}", i + 1);
        // Chain mode: the fingerprint is the digest of the file through the
        // part's end.
        let end: usize = parts[..=i].iter().map(|p| p.len()).sum();
        assert_eq!(r.sha256, sha(&bytes[..end]), "part {}", i + 1);
    }
    let v = engine.verify(&owner(), &id, Some(sha(&bytes))).unwrap();
    assert_eq!(v.sha256, sha(&bytes));
    assert_eq!(v.length, len as u64);
    assert_eq!(v.parts as usize, parts.len());
    assert_eq!(read_committed(&engine, &id), bytes);
}

#[test]
fn chain_mode_round_trips_with_one_two_and_many_parts() {
    chain_round_trip(100, 1024, false);
    chain_round_trip(1500, 1024, false);
    chain_round_trip(100_000, 1024, false);
    chain_round_trip(64 * 100, 640, false);
}

#[test]
fn chain_mode_accepts_an_empty_last_part() {
    chain_round_trip(4096, 1024, true);
    chain_round_trip(0, 64, true);
}

#[test]
fn declared_digest_checks_the_last_link_on_arrival() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let bytes = data(3000, 1);
    let parts = split(&bytes, 1024, false);
    let spec = FileSpec::default()
        .with_length(3000)
        .with_sha256(sha(&bytes))
        .with_plan(chain_plan(&parts));
    let id = engine.create(&owner(), spec).unwrap();
    let mut bad = parts[2].to_vec();
    bad[0] ^= 1;
    match engine.put_part(&owner(), &id, pn(3), &bad[..], None) {
        Err(Error::LinkMismatch { part: 3, .. }) => {}
        other => panic!("expected link mismatch of part 3, got {other:?}"),
    }
    let r = engine
        .put_part(&owner(), &id, pn(3), parts[2], None)
        .unwrap();
    assert_eq!(r.link, LinkCheck::Holds);
}

#[test]
fn corrupt_part_is_named_and_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let bytes = data(5 * 1024, 2);
    let parts = split(&bytes, 1024, false);
    let id = engine
        .create(&owner(), FileSpec::default().with_plan(chain_plan(&parts)))
        .unwrap();
    let mut bad = parts[2].to_vec();
    bad[500] ^= 0x40;
    match engine.put_part(&owner(), &id, pn(3), &bad[..], None) {
        Err(Error::LinkMismatch { part: 3, .. }) => {}
        other => panic!("expected link mismatch of part 3, got {other:?}"),
    }
    assert!(engine.parts(&owner(), &id).unwrap().is_empty());
    for (i, p) in parts.iter().enumerate() {
        engine
            .put_part(&owner(), &id, pn(i as u64 + 1), *p, None)
            .unwrap();
    }
    engine.verify(&owner(), &id, Some(sha(&bytes))).unwrap();
    assert_eq!(read_committed(&engine, &id), bytes);
}

#[test]
fn link_unchecked_on_arrival_is_named_at_verify() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let bytes = data(4 * 1024, 3);
    let parts = split(&bytes, 1024, false);
    let plan = chain_plan(&parts);
    let id = engine.create(&owner(), FileSpec::default()).unwrap();
    // Plan part 2 alone first: its link to part 3 is unknown when it arrives.
    engine.plan_parts(&owner(), &id, &plan[..2]).unwrap();
    let mut bad = parts[1].to_vec();
    bad[10] ^= 1;
    engine
        .put_part(&owner(), &id, pn(1), parts[0], None)
        .unwrap();
    let r = engine
        .put_part(&owner(), &id, pn(2), &bad[..], None)
        .unwrap();
    assert_eq!(r.link, LinkCheck::Pending);
    engine.plan_parts(&owner(), &id, &plan[2..]).unwrap();
    engine
        .put_part(&owner(), &id, pn(3), parts[2], None)
        .unwrap();
    engine
        .put_part(&owner(), &id, pn(4), parts[3], None)
        .unwrap();
    match engine.verify(&owner(), &id, None) {
        Err(Error::LinkMismatch { part: 2, .. }) => {}
        other => panic!("expected link mismatch of part 2, got {other:?}"),
    }
    // Replace the bad part (staged, then moved into place) and complete.
    let r = engine
        .put_part(&owner(), &id, pn(2), parts[1], None)
        .unwrap();
    assert_eq!(r.link, LinkCheck::Holds);
    let v = engine.verify(&owner(), &id, None).unwrap();
    assert_eq!(v.sha256, sha(&bytes));
    assert_eq!(read_committed(&engine, &id), bytes);
}

#[test]
fn rejected_replacement_leaves_the_acknowledged_part_intact() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let bytes = data(3 * 1024, 4);
    let parts = split(&bytes, 1024, false);
    let id = engine
        .create(&owner(), FileSpec::default().with_plan(chain_plan(&parts)))
        .unwrap();
    for (i, p) in parts.iter().enumerate() {
        engine
            .put_part(&owner(), &id, pn(i as u64 + 1), *p, None)
            .unwrap();
    }
    let mut bad = parts[0].to_vec();
    bad[0] ^= 1;
    assert!(matches!(
        engine.put_part(&owner(), &id, pn(1), &bad[..], None),
        Err(Error::LinkMismatch { part: 1, .. })
    ));
    // A good replacement goes through the staged path.
    engine
        .put_part(&owner(), &id, pn(2), parts[1], None)
        .unwrap();
    let v = engine.verify(&owner(), &id, None).unwrap();
    assert_eq!(v.sha256, sha(&bytes));
    assert_eq!(read_committed(&engine, &id), bytes);
}

#[test]
fn replaced_stream_part_wins_even_after_eager_hashing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let mut bytes = data(8 * 4096, 5);
    let id = engine.create(&owner(), FileSpec::default()).unwrap();
    for (i, p) in bytes.chunks(4096).enumerate() {
        engine
            .put_part(&owner(), &id, pn(i as u64 + 1), p, None)
            .unwrap();
    }
    // Give the background hasher time to fold the prefix in.
    thread::sleep(std::time::Duration::from_millis(200));
    bytes[4096 + 17] ^= 0xff;
    engine
        .put_part(&owner(), &id, pn(2), &bytes[4096..8192], None)
        .unwrap();
    let v = engine.verify(&owner(), &id, None).unwrap();
    assert_eq!(v.sha256, sha(&bytes));
    assert_eq!(read_committed(&engine, &id), bytes);
}

#[test]
fn concurrent_part_uploads_in_both_modes() {
    for chain in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(open(dir.path()));
        let bytes = Arc::new(data(64 * 1024, 6));
        let parts: Vec<Vec<u8>> = bytes.chunks(1024).map(<[u8]>::to_vec).collect();
        let slices: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let spec = FileSpec::default().with_plan(if chain {
            chain_plan(&slices)
        } else {
            Vec::new()
        });
        let id = engine.create(&owner(), spec).unwrap();
        let parts = Arc::new(parts);
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let (engine, parts, id) = (engine.clone(), parts.clone(), id.clone());
                thread::spawn(move || {
                    for i in (t..parts.len()).step_by(8) {
                        engine
                            .put_part(&owner(), &id, pn(i as u64 + 1), &parts[i][..], None)
                            .unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(engine.parts(&owner(), &id).unwrap().len(), 64);
        let v = engine.verify(&owner(), &id, Some(sha(&bytes))).unwrap();
        assert_eq!(v.parts, 64);
        assert_eq!(read_committed(&engine, &id), *bytes);
    }
}

#[test]
fn wrong_expected_digest_leaves_upload_completable() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let bytes = data(10_000, 8);
    let id = engine.create(&owner(), FileSpec::default()).unwrap();
    for (i, p) in bytes.chunks(3000).enumerate() {
        engine
            .put_part(&owner(), &id, pn(i as u64 + 1), p, None)
            .unwrap();
    }
    let wrong = sha(b"something else");
    match engine.verify(&owner(), &id, Some(wrong)) {
        Err(Error::DigestMismatch {
            expected, actual, ..
        }) => {
            assert_eq!(expected, wrong.to_hex());
            assert_eq!(actual, sha(&bytes).to_hex());
        }
        other => panic!("expected digest mismatch, got {other:?}"),
    }
    assert_eq!(engine.parts(&owner(), &id).unwrap().len(), 4);
    assert!(matches!(engine.get(&owner(), &id), Err(Error::NotFound)));
    let v = engine.verify(&owner(), &id, Some(sha(&bytes))).unwrap();
    assert_eq!(v.sha256, sha(&bytes));
}

#[test]
fn repeated_and_concurrent_verify_return_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(open(dir.path()));
    let bytes = data(200_000, 9);
    let id = engine.create(&owner(), FileSpec::default()).unwrap();
    for (i, p) in bytes.chunks(50_000).enumerate() {
        engine
            .put_part(&owner(), &id, pn(i as u64 + 1), p, None)
            .unwrap();
    }
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (engine, id) = (engine.clone(), id.clone());
            thread::spawn(move || engine.verify(&owner(), &id, None).unwrap())
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for r in &results {
        assert_eq!(r, &results[0]);
    }
    assert_eq!(engine.verify(&owner(), &id, None).unwrap(), results[0]);
    assert!(matches!(
        engine.verify(&owner(), &id, Some(sha(b"x"))),
        Err(Error::DigestMismatch { .. })
    ));
    // Parts can no longer be sent.
    assert!(matches!(
        engine.put_part(&owner(), &id, pn(1), &b"x"[..], None),
        Err(Error::Conflict(_))
    ));
}

#[test]
fn missing_parts_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let id = engine.create(&owner(), FileSpec::default()).unwrap();
    for n in [1u64, 3, 6] {
        engine
            .put_part(&owner(), &id, pn(n), &data(100, n)[..], None)
            .unwrap();
    }
    match engine.verify(&owner(), &id, None) {
        Err(Error::MissingParts { first, count }) => {
            assert_eq!(first, vec![2, 4, 5]);
            assert_eq!(count, 3);
        }
        other => panic!("expected missing parts, got {other:?}"),
    }
    let empty = engine.create(&owner(), FileSpec::default()).unwrap();
    assert!(matches!(
        engine.verify(&owner(), &empty, None),
        Err(Error::MissingParts { .. })
    ));
}

#[test]
fn md5_is_computed_in_the_same_pass_and_checked() {
    use md5::Digest;
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let bytes = data(300_000, 10);
    let want: [u8; 16] = md5::Md5::digest(&bytes).into();
    for chain in [false, true] {
        for good in [false, true] {
            let parts = split(&bytes, 64 * 1000, false);
            let mut wrong = want;
            wrong[0] ^= 1;
            let spec = FileSpec::default()
                .with_md5(if good { want } else { wrong })
                .with_plan(if chain {
                    chain_plan(&parts)
                } else {
                    Vec::new()
                });
            let id = engine.create(&owner(), spec).unwrap();
            for (i, p) in parts.iter().enumerate() {
                engine
                    .put_part(&owner(), &id, pn(i as u64 + 1), *p, None)
                    .unwrap();
            }
            match engine.verify(&owner(), &id, None) {
                Ok(v) if good => assert_eq!(v.md5, Some(want)),
                Err(Error::DigestMismatch {
                    kind: partseal::DigestKind::Md5,
                    actual,
                    ..
                }) if !good => {
                    assert_eq!(actual, hex::encode(want));
                    assert_eq!(engine.parts(&owner(), &id).unwrap().len(), parts.len());
                }
                other => panic!("chain={chain} good={good}: {other:?}"),
            }
        }
    }
}

#[test]
fn abort_removes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let id = engine.create(&owner(), FileSpec::default()).unwrap();
    engine
        .put_part(&owner(), &id, pn(1), &data(5000, 1)[..], None)
        .unwrap();
    engine.abort(&owner(), &id).unwrap();
    assert!(!dir.path().join("uploads").join(id.as_str()).exists());
    assert!(matches!(engine.parts(&owner(), &id), Err(Error::NotFound)));
    assert!(matches!(
        engine.put_part(&owner(), &id, pn(1), &b"x"[..], None),
        Err(Error::NotFound)
    ));
    assert!(matches!(
        engine.verify(&owner(), &id, None),
        Err(Error::NotFound)
    ));
    assert_eq!(tmp_entries_after_cleanup(dir.path()), 0);
}

#[test]
fn another_owner_cannot_touch_an_upload() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let mallory = Owner::new("mallory").unwrap();
    let id = engine.create(&owner(), FileSpec::default()).unwrap();
    engine
        .put_part(&owner(), &id, pn(1), &b"mine"[..], None)
        .unwrap();
    assert!(matches!(
        engine.put_part(&mallory, &id, pn(1), &b"theirs"[..], None),
        Err(Error::NotOwner)
    ));
    assert!(matches!(engine.parts(&mallory, &id), Err(Error::NotOwner)));
    assert!(matches!(
        engine.verify(&mallory, &id, None),
        Err(Error::NotOwner)
    ));
    assert!(matches!(engine.abort(&mallory, &id), Err(Error::NotOwner)));
    engine.verify(&owner(), &id, None).unwrap();
    assert!(matches!(engine.get(&mallory, &id), Err(Error::NotOwner)));
    assert!(matches!(engine.delete(&mallory, &id), Err(Error::NotOwner)));
    engine.delete(&owner(), &id).unwrap();
    assert!(matches!(engine.get(&owner(), &id), Err(Error::NotFound)));
}

#[test]
fn bad_bodies_are_refused_and_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let bytes = data(2048, 11);
    let parts = split(&bytes, 1024, false);
    let id = engine
        .create(&owner(), FileSpec::default().with_plan(chain_plan(&parts)))
        .unwrap();
    // Truncated: fewer bytes than planned.
    assert!(matches!(
        engine.put_part(&owner(), &id, pn(1), &parts[0][..500], None),
        Err(Error::PartTooSmall { part: 1, .. })
    ));
    // Longer than planned.
    let long = data(1500, 12);
    assert!(matches!(
        engine.put_part(&owner(), &id, pn(1), &long[..], None),
        Err(Error::PartTooLarge { part: 1, .. })
    ));
    // Not planned.
    assert!(matches!(
        engine.put_part(&owner(), &id, pn(3), parts[0], None),
        Err(Error::PartOutOfRange { part: 3, .. })
    ));
    assert!(matches!(
        PartNumber::new(0),
        Err(Error::PartOutOfRange { .. })
    ));
    assert!(matches!(
        PartNumber::new(10_001),
        Err(Error::PartOutOfRange { .. })
    ));
    assert!(engine.parts(&owner(), &id).unwrap().is_empty());

    // Stream mode: a body shorter than its Content-Length is not kept.
    let id = engine.create(&owner(), FileSpec::default()).unwrap();
    assert!(matches!(
        engine.put_part(&owner(), &id, pn(1), &bytes[..100], Some(200)),
        Err(Error::PartTooSmall {
            part: 1,
            len: 100,
            min: 200
        })
    ));
    assert!(engine.parts(&owner(), &id).unwrap().is_empty());
    let parts_dir = dir.path().join("uploads").join(id.as_str()).join("parts");
    assert_eq!(std::fs::read_dir(parts_dir).unwrap().count(), 0);
}

#[test]
fn small_middle_part_and_length_mismatch_fail_verify() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config();
    cfg.limits.min_part_size = 1000;
    let engine = partseal::Engine::open(dir.path(), cfg).unwrap();
    let id = engine.create(&owner(), FileSpec::default()).unwrap();
    engine
        .put_part(&owner(), &id, pn(1), &data(500, 1)[..], None)
        .unwrap();
    engine
        .put_part(&owner(), &id, pn(2), &data(500, 2)[..], None)
        .unwrap();
    assert!(matches!(
        engine.verify(&owner(), &id, None),
        Err(Error::PartTooSmall {
            part: 1,
            len: 500,
            min: 1000
        })
    ));
    let id = engine
        .create(&owner(), FileSpec::default().with_length(2000))
        .unwrap();
    engine
        .put_part(&owner(), &id, pn(1), &data(1500, 1)[..], None)
        .unwrap();
    assert!(matches!(
        engine.verify(&owner(), &id, None),
        Err(Error::LengthMismatch {
            declared: 2000,
            actual: 1500
        })
    ));
}

#[test]
fn digest_given_at_verify_must_agree_with_the_declared_one() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let bytes = data(1000, 13);
    let id = engine
        .create(&owner(), FileSpec::default().with_sha256(sha(&bytes)))
        .unwrap();
    engine
        .put_part(&owner(), &id, pn(1), &bytes[..], None)
        .unwrap();
    assert!(matches!(
        engine.verify(&owner(), &id, Some(sha(b"other"))),
        Err(Error::ConflictingExpected { .. })
    ));
    engine.verify(&owner(), &id, Some(sha(&bytes))).unwrap();
}

#[test]
fn plans_of_both_kinds_cannot_be_mixed() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let id = engine.create(&owner(), FileSpec::default()).unwrap();
    engine
        .put_part(&owner(), &id, pn(1), &data(100, 1)[..], None)
        .unwrap();
    let plan = vec![PartPlan::new(2, 64, Some(64), Some(initial())).unwrap()];
    assert!(matches!(
        engine.plan_parts(&owner(), &id, &plan),
        Err(Error::BadPlan(_))
    ));
}

#[test]
fn body_longer_than_announced_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let id = engine.create(&owner(), FileSpec::default()).unwrap();
    assert!(matches!(
        engine.put_part(&owner(), &id, pn(1), &data(300, 1)[..], Some(200)),
        Err(Error::PartTooLarge { part: 1, max: 200 })
    ));
    assert!(engine.parts(&owner(), &id).unwrap().is_empty());
}

#[test]
fn flash_upload_shares_a_committed_file_of_the_same_owner() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(70_000, 14);
    let source = {
        let engine = open(dir.path());
        let id = engine.create(&owner(), FileSpec::default()).unwrap();
        engine
            .put_part(&owner(), &id, pn(1), &bytes[..], None)
            .unwrap();
        engine.verify(&owner(), &id, None).unwrap();
        id
    };
    // The index of committed files is rebuilt when the store is opened.
    let engine = open(dir.path());
    let mallory = Owner::new("mallory").unwrap();
    assert_eq!(engine.find_committed(&mallory, &sha(&bytes), 70_000), None);
    assert_eq!(engine.find_committed(&owner(), &sha(&bytes), 69_999), None);
    let found = engine
        .find_committed(&owner(), &sha(&bytes), 70_000)
        .unwrap();
    assert_eq!(found, source);
    assert!(matches!(
        engine.create_from(&mallory, &found, Default::default()),
        Err(Error::NotOwner)
    ));
    let (copy, v) = engine
        .create_from(&owner(), &found, Default::default())
        .unwrap();
    assert_ne!(copy, source);
    assert_eq!(v.sha256, sha(&bytes));
    assert_eq!(engine.verify(&owner(), &copy, None).unwrap(), v);
    engine.delete(&owner(), &source).unwrap();
    assert_eq!(read_committed(&engine, &copy), bytes);
    assert_eq!(
        engine.find_committed(&owner(), &sha(&bytes), 70_000),
        Some(copy.clone())
    );
    engine.delete(&owner(), &copy).unwrap();
    assert_eq!(engine.find_committed(&owner(), &sha(&bytes), 70_000), None);
}

#[test]
fn a_refused_part_leaves_the_upload_open_to_a_chain_plan() {
    // A part without a plan would make the upload a stream upload, but only
    // once it is acknowledged: refused parts change nothing, not even after
    // a reopen.
    struct Broken;
    impl std::io::Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("connection reset"))
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(2048, 3);
    let parts = split(&bytes, 1024, false);
    let id = {
        let engine = open(dir.path());
        let id = engine.create(&owner(), FileSpec::default()).unwrap();
        let too_large = engine.config().limits.max_part_size + 1;
        assert!(matches!(
            engine.put_part(&owner(), &id, pn(1), &b"x"[..], Some(too_large)),
            Err(Error::PartTooLarge { .. })
        ));
        assert!(matches!(
            engine.put_part(&owner(), &id, pn(1), Broken, None),
            Err(Error::Io {
                role: "request body",
                ..
            })
        ));
        assert!(matches!(
            engine.put_part(&owner(), &id, pn(1), &bytes[..100], Some(200)),
            Err(Error::PartTooSmall { .. })
        ));
        assert!(engine.parts(&owner(), &id).unwrap().is_empty());
        id
    };
    let engine = open(dir.path());
    engine
        .plan_parts(&owner(), &id, &chain_plan(&parts))
        .expect("a chain plan after refused parts");
    for (i, p) in parts.iter().enumerate() {
        let r = engine
            .put_part(&owner(), &id, pn(i as u64 + 1), *p, None)
            .unwrap();
        assert_ne!(r.link, LinkCheck::NotApplicable);
    }
    assert_eq!(
        engine.verify(&owner(), &id, None).unwrap().sha256,
        sha(&bytes)
    );
}

#[test]
fn an_accepted_part_without_a_plan_makes_a_stream_upload() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(2048, 4);
    let parts = split(&bytes, 1024, false);
    let id = {
        let engine = open(dir.path());
        let id = engine.create(&owner(), FileSpec::default()).unwrap();
        engine
            .put_part(&owner(), &id, pn(1), parts[0], None)
            .unwrap();
        id
    };
    // Also after a reopen, a chain plan no longer fits.
    let engine = open(dir.path());
    assert!(matches!(
        engine.plan_parts(&owner(), &id, &chain_plan(&parts)),
        Err(Error::BadPlan(_))
    ));
}

#[test]
fn a_part_count_of_zero_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    assert!(matches!(
        engine.create(&owner(), FileSpec::default().with_part_count(0)),
        Err(Error::BadInput(_))
    ));
    assert!(matches!(
        engine.create(&owner(), FileSpec::default().with_part_count(10_001)),
        Err(Error::BadInput(_))
    ));
    engine
        .create(&owner(), FileSpec::default().with_part_count(1))
        .expect("one part");
}

#[test]
fn of_many_concurrent_completes_exactly_one_commits() {
    for chain in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(open(dir.path()));
        let bytes = data(64 * 1024, 5);
        let parts = split(&bytes, 8192, false);
        let spec = if chain {
            FileSpec::default().with_plan(chain_plan(&parts))
        } else {
            FileSpec::default()
        };
        let id = engine.create(&owner(), spec).unwrap();
        for (i, p) in parts.iter().enumerate() {
            engine
                .put_part(&owner(), &id, pn(i as u64 + 1), *p, None)
                .unwrap();
        }
        let barrier = Arc::new(std::sync::Barrier::new(50));
        let handles: Vec<_> = (0..50)
            .map(|_| {
                let (engine, id, barrier) = (engine.clone(), id.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    // A part upload is refused while a complete runs; a
                    // complete waits for the one in progress.
                    engine.complete(&owner(), &id, None).expect("complete")
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let committed = results.iter().filter(|c| c.committed_now).count();
        assert_eq!(committed, 1, "chain={chain}");
        assert!(results.iter().all(|c| c.file.sha256 == sha(&bytes)));
        assert_eq!(read_committed(&engine, &id), bytes);
    }
}

#[test]
fn a_wrong_hashctx_for_the_next_part_names_the_link_not_the_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let bytes = data(3072, 6);
    let parts = split(&bytes, 1024, false);
    let mut plan = chain_plan(&parts);
    // Part 2's declared hashCtx is wrong; part 1's bytes are right.
    let mut words = plan[1].ctx.unwrap().0;
    words[0] ^= 1;
    plan[1] = PartPlan::new(2, 1024, Some(1024), Some(partseal::HashCtx(words))).unwrap();
    let id = engine
        .create(&owner(), FileSpec::default().with_plan(plan))
        .unwrap();
    let err = engine
        .put_part(&owner(), &id, pn(1), parts[0], None)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::LinkMismatch {
                part: 1,
                to: partseal::LinkEnd::Part(2)
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("part 1 does not lead to part 2's declared hashCtx")
            && msg.contains("part 1's bytes or part 2's hashCtx is wrong"),
        "{msg}"
    );
    // The last part against a declared digest that is wrong.
    let id = engine
        .create(
            &owner(),
            FileSpec::default()
                .with_length(3072)
                .with_sha256(sha(b"another file"))
                .with_plan(chain_plan(&parts)),
        )
        .unwrap();
    let err = engine
        .put_part(&owner(), &id, pn(3), parts[2], None)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::LinkMismatch {
                part: 3,
                to: partseal::LinkEnd::FileDigest
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("expected digest is wrong"),
        "{err}"
    );
}
