//! Commit events: one per committed file, in order, by cursor; none for
//! failed, aborted or repeated completes; kept across reopen, deletes,
//! faults around the commit point and torn appends.

mod common;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use common::*;
use partseal::faults::{Faults, Op};
use partseal::{CommitEvent, Config, Engine, Error, FileId, FileSpec, Owner};

fn owner() -> Owner {
    Owner::new("events").unwrap()
}

fn events_config() -> Config {
    let mut cfg = config();
    cfg.commit_events = true;
    cfg
}

fn upload(engine: &Engine, bytes: &[u8]) -> FileId {
    let id = engine.create(&owner(), FileSpec::default()).unwrap();
    for (i, p) in split(bytes, 100, false).iter().enumerate() {
        engine
            .put_part(&owner(), &id, pn(i as u64 + 1), *p, None)
            .unwrap();
    }
    id
}

fn all_events(engine: &Engine) -> Vec<CommitEvent> {
    let mut out = Vec::new();
    let mut cursor = 0;
    loop {
        let (batch, next) = engine.commits_since(cursor, 2).unwrap();
        if batch.is_empty() && next == cursor {
            return out;
        }
        out.extend(batch);
        cursor = next;
    }
}

#[test]
fn every_commit_gives_one_event_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), events_config()).unwrap();
    let mut ids = Vec::new();
    for k in 0..5u64 {
        let bytes = data(250 + k as usize, k);
        let id = upload(&engine, &bytes);
        let done = engine.complete(&owner(), &id, Some(sha(&bytes))).unwrap();
        assert!(done.committed_now);
        // A repeated complete commits nothing new.
        assert!(!engine.complete(&owner(), &id, None).unwrap().committed_now);
        ids.push((id, bytes));
    }
    // A failed complete, an aborted upload: no events.
    let failed = upload(&engine, &data(300, 77));
    assert!(engine.complete(&owner(), &failed, Some(sha(b"x"))).is_err());
    let aborted = upload(&engine, &data(300, 78));
    engine.abort(&owner(), &aborted).unwrap();

    let events = all_events(&engine);
    assert_eq!(events.len(), 5, "{events:?}");
    for (e, (id, bytes)) in events.iter().zip(&ids) {
        assert_eq!(&e.file_id, id);
        assert_eq!(e.owner, owner());
        assert_eq!(e.sha256, sha(bytes));
        assert_eq!(e.length, bytes.len() as u64);
        assert_eq!(e.parts as usize, bytes.len().div_ceil(100));
    }
    assert!(events.windows(2).all(|w| w[0].sequence < w[1].sequence));
    // The failed upload completes later: its event comes then, once.
    engine
        .complete(&owner(), &failed, Some(sha(&data(300, 77))))
        .unwrap();
    let after = all_events(&engine);
    assert_eq!(after.len(), 6);
    assert_eq!(after[5].file_id, failed);
}

#[test]
fn a_flash_upload_and_a_deleted_file_keep_their_events() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), events_config()).unwrap();
    let bytes = data(500, 3);
    let id = upload(&engine, &bytes);
    engine.complete(&owner(), &id, None).unwrap();
    let (copy, _) = engine
        .create_from(&owner(), &id, Default::default())
        .unwrap();
    engine.delete(&owner(), &id).unwrap();
    let events = all_events(&engine);
    let ids: Vec<&FileId> = events.iter().map(|e| &e.file_id).collect();
    assert_eq!(ids, [&id, &copy]);
    assert!(events.iter().all(|e| e.sha256 == sha(&bytes)));
}

#[test]
fn the_cursor_and_the_acknowledged_position_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    {
        let engine = Engine::open(dir.path(), events_config()).unwrap();
        assert_eq!(engine.commit_cursor().unwrap(), 0);
        for k in 0..3u64 {
            let id = upload(&engine, &data(150, k));
            engine.complete(&owner(), &id, None).unwrap();
            ids.push(id);
        }
        let (first, next) = engine.commits_since(0, 1).unwrap();
        assert_eq!(first[0].file_id, ids[0]);
        engine.ack_commits(next).unwrap();
    }
    let engine = Engine::open(dir.path(), events_config()).unwrap();
    let cursor = engine.commit_cursor().unwrap();
    assert!(cursor > 0);
    let (rest, _) = engine.commits_since(cursor, 10).unwrap();
    let rest: Vec<&FileId> = rest.iter().map(|e| &e.file_id).collect();
    assert_eq!(rest, [&ids[1], &ids[2]]);
    // New commits continue the sequence.
    let id = upload(&engine, &data(150, 9));
    engine.complete(&owner(), &id, None).unwrap();
    let (more, _) = engine.commits_since(cursor, 10).unwrap();
    assert_eq!(more.last().unwrap().file_id, id);
    assert!(more.windows(2).all(|w| w[0].sequence < w[1].sequence));
}

#[test]
fn events_are_off_unless_configured() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    assert!(matches!(
        engine.commits_since(0, 1),
        Err(Error::Conflict(_))
    ));
    assert!(!dir.path().join("events").exists());
}

#[test]
fn acknowledged_events_are_compacted_away() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), events_config()).unwrap();
    let bytes = data(64, 1);
    let id = upload(&engine, &bytes);
    engine.complete(&owner(), &id, None).unwrap();
    // Flash uploads of it: cheap commits.
    for _ in 0..1100 {
        engine
            .create_from(&owner(), &id, Default::default())
            .unwrap();
    }
    let log = dir.path().join("events").join("log");
    let before = std::fs::metadata(&log).unwrap().len();
    let (events, _) = engine.commits_since(0, 2000).unwrap();
    assert_eq!(events.len(), 1101);
    let last = events.last().unwrap().sequence;
    engine.ack_commits(last).unwrap();
    let after = std::fs::metadata(&log).unwrap().len();
    assert!(after < before / 100, "{before} -> {after}");
    let (left, _) = engine.commits_since(0, 10).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].sequence, last);
}

/// Once armed, fails the commit's rename (before the commit point), or the
/// second directory fsync of the complete: the one of `files/` right after
/// the rename (past the commit point; the first is the staging
/// directory's).
fn faulty(op: Op) -> (Faults, Arc<AtomicBool>) {
    let armed = Arc::new(AtomicBool::new(true));
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a = armed.clone();
    let faults = Faults::new(move |o, role| {
        if o != op || !a.load(Ordering::SeqCst) {
            return None;
        }
        let hit = match op {
            Op::Rename => role == "committed file",
            _ => seen.fetch_add(1, Ordering::SeqCst) == 1,
        };
        if hit {
            a.store(false, Ordering::SeqCst);
        }
        hit.then(|| io::Error::from_raw_os_error(libc::EIO))
    });
    (faults, armed)
}

#[test]
fn a_fault_around_the_commit_point_still_gives_exactly_one_event() {
    for op in [Op::Rename, Op::DirFsync] {
        let dir = tempfile::tempdir().unwrap();
        let (faults, armed) = faulty(op);
        armed.store(false, Ordering::SeqCst);
        let mut cfg = events_config();
        cfg.faults = faults;
        let engine = Engine::open(dir.path(), cfg).unwrap();
        let bytes = data(400, 5);
        let id = upload(&engine, &bytes);
        // Armed from here on: the fsyncs of the upload itself went by.
        armed.store(true, Ordering::SeqCst);
        let first = engine.complete(&owner(), &id, Some(sha(&bytes)));
        assert!(first.is_err(), "{op:?}: the fault fired");
        // Past the commit point the file is committed already.
        assert_eq!(
            engine.get(&owner(), &id).is_ok(),
            op == Op::DirFsync,
            "{op:?}"
        );
        let done = engine.complete(&owner(), &id, Some(sha(&bytes))).unwrap();
        assert!(done.committed_now, "{op:?}");
        let events = all_events(&engine);
        assert_eq!(events.len(), 1, "{op:?}: {events:?}");
        assert_eq!(events[0].file_id, id);
        drop(engine);
        // And after a reopen, still exactly one.
        let engine = Engine::open(dir.path(), events_config()).unwrap();
        assert_eq!(all_events(&engine).len(), 1, "{op:?}");
    }
}

#[test]
fn a_torn_append_is_dropped_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let engine = Engine::open(dir.path(), events_config()).unwrap();
        let id = upload(&engine, &data(120, 4));
        engine.complete(&owner(), &id, None).unwrap();
        id
    };
    // A crash in the middle of the next append.
    let log = dir.path().join("events").join("log");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.extend_from_slice(br#"{"kind":"commit","seq":1,"id":"#);
    std::fs::write(&log, bytes).unwrap();
    let engine = Engine::open(dir.path(), events_config()).unwrap();
    let events = all_events(&engine);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].file_id, id);
    let id2 = upload(&engine, &data(120, 5));
    engine.complete(&owner(), &id2, None).unwrap();
    assert_eq!(all_events(&engine).len(), 2);
}

#[test]
fn a_commit_in_flight_holds_readers_at_its_event() {
    let dir = tempfile::tempdir().unwrap();
    let (reached_tx, reached_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = std::sync::Mutex::new(go_rx);
    let reached_tx = std::sync::Mutex::new(reached_tx);
    let hold = Arc::new(AtomicBool::new(false));
    let h = hold.clone();
    let mut cfg = events_config();
    cfg.faults = Faults::new(move |op, role| {
        if op == Op::Rename && role == "committed file" && h.swap(false, Ordering::SeqCst) {
            let _ = reached_tx.lock().unwrap().send(());
            let _ = go_rx.lock().unwrap().recv_timeout(Duration::from_secs(10));
        }
        None
    });
    let engine = Engine::open(dir.path(), cfg).unwrap();
    let a = upload(&engine, &data(100, 1));
    let b = upload(&engine, &data(100, 2));
    let c = upload(&engine, &data(100, 3));
    engine.complete(&owner(), &a, None).unwrap();
    hold.store(true, Ordering::SeqCst);
    let (e2, b2) = (engine.clone(), b.clone());
    let slow = std::thread::spawn(move || e2.complete(&owner(), &b2, None).unwrap());
    reached_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    // b's event is appended, its rename not done: c commits meanwhile.
    engine.complete(&owner(), &c, None).unwrap();
    let (seen, next) = engine.commits_since(0, 10).unwrap();
    let ids: Vec<&FileId> = seen.iter().map(|e| &e.file_id).collect();
    assert_eq!(ids, [&a], "readers wait at b's event");
    go_tx.send(()).unwrap();
    slow.join().unwrap();
    let (rest, _) = engine.commits_since(next, 10).unwrap();
    let ids: Vec<&FileId> = rest.iter().map(|e| &e.file_id).collect();
    assert_eq!(ids, [&b, &c]);
}
