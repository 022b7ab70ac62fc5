//! Fault injection: ENOSPC and EIO at each write, fsync, rename and
//! directory fsync of an upload's life. Each fault must give the caller a
//! clean error, leave the invariants intact (acknowledged parts and committed
//! files whole, nothing half-visible), and a retry after the fault clears must
//! succeed, both in the same engine and after reopening the store.

mod common;

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::*;
use partseal::faults::{Faults, Op};
use partseal::{Engine, Error, FileId, FileSpec, Owner};

fn owner() -> Owner {
    Owner::new("faulty").unwrap()
}

/// Fails the `target`-th operation of kind `op` (counting from 0) while armed.
struct Injector {
    op: Op,
    target: usize,
    seen: AtomicUsize,
    armed: AtomicBool,
    fired: AtomicBool,
    errno: i32,
}

impl Injector {
    fn faults(self: &Arc<Self>) -> Faults {
        let me = self.clone();
        Faults::new(move |op, _role| {
            if op != me.op || !me.armed.load(Ordering::SeqCst) {
                return None;
            }
            if me.seen.fetch_add(1, Ordering::SeqCst) == me.target {
                me.fired.store(true, Ordering::SeqCst);
                return Some(io::Error::from_raw_os_error(me.errno));
            }
            None
        })
    }
}

struct Outcome {
    id: FileId,
    bytes: Vec<u8>,
    acked: BTreeMap<u32, partseal::Sha256>,
    committed: bool,
}

/// One upload's life: create, put every part, verify. Stops at the first
/// error, which must be a clean I/O error naming a role.
/// How an upload's parts are declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// No plan: each part a file of its own, merged at complete.
    Stream,
    /// A plan of sizes without midstates: parts land at their places in the
    /// assembly, hashed in order at complete.
    Placed,
    /// A plan with offsets and midstates.
    Chain,
}

/// A plan of sizes only, as a KooDrive client without hashCtx sends it.
fn sized_plan(parts: &[&[u8]]) -> Vec<partseal::PartPlan> {
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| partseal::PartPlan::new(i as u64 + 1, p.len() as u64, None, None).unwrap())
        .collect()
}

fn scenario(engine: &Engine, kind: Kind, seed: u64) -> (Option<Outcome>, Option<Error>) {
    let bytes = data(5 * 4096 - 100, seed);
    let parts = split(&bytes, 4096, false);
    let spec = FileSpec::default().with_plan(match kind {
        Kind::Chain => chain_plan(&parts),
        Kind::Placed => sized_plan(&parts),
        Kind::Stream => Vec::new(),
    });
    let id = match engine.create(&owner(), spec) {
        Ok(id) => id,
        Err(e) => return (None, Some(e)),
    };
    let mut out = Outcome {
        id: id.clone(),
        bytes: bytes.clone(),
        acked: BTreeMap::new(),
        committed: false,
    };
    for (i, p) in parts.iter().enumerate() {
        match engine.put_part(&owner(), &id, pn(i as u64 + 1), *p, None) {
            Ok(r) => {
                out.acked.insert(i as u32 + 1, r.sha256);
            }
            Err(e) => return (Some(out), Some(e)),
        }
    }
    match engine.verify(&owner(), &id, Some(sha(&bytes))) {
        Ok(_) => out.committed = true,
        Err(e) => return (Some(out), Some(e)),
    }
    (Some(out), None)
}

/// After the fault: every acknowledged part is listed with its digest, or
/// the file is committed whole; then the upload can be finished.
fn check_and_finish(engine: &Engine, out: &Outcome) {
    let parts = split(&out.bytes, 4096, false);
    if let Ok(c) = engine.get(&owner(), &out.id) {
        assert_eq!(std::fs::read(&c.path).unwrap(), out.bytes);
        // The client retries its complete: same answer.
        let v = engine
            .verify(&owner(), &out.id, Some(sha(&out.bytes)))
            .unwrap();
        assert_eq!(v.sha256, sha(&out.bytes));
        return;
    }
    assert!(!out.committed, "a verified file is not committed");
    let listed: BTreeMap<u32, partseal::Sha256> = engine
        .parts(&owner(), &out.id)
        .unwrap()
        .into_iter()
        .map(|p| (p.number.get(), p.sha256))
        .collect();
    for (n, sha) in &out.acked {
        assert_eq!(listed.get(n), Some(sha), "acknowledged part {n} lost");
    }
    for (i, p) in parts.iter().enumerate() {
        if !listed.contains_key(&(i as u32 + 1)) {
            engine
                .put_part(&owner(), &out.id, pn(i as u64 + 1), *p, None)
                .unwrap();
        }
    }
    let v = engine
        .verify(&owner(), &out.id, Some(sha(&out.bytes)))
        .unwrap();
    assert_eq!(v.length, out.bytes.len() as u64);
    assert_eq!(
        std::fs::read(engine.get(&owner(), &out.id).unwrap().path).unwrap(),
        out.bytes
    );
}

fn no_leftovers(root: &std::path::Path) {
    fn walk(d: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            let n = e.file_name().to_string_lossy().into_owned();
            if n.contains(".tmp-") {
                out.push(e.path().display().to_string());
            }
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), out);
            }
        }
    }
    let mut found = Vec::new();
    walk(root, &mut found);
    assert!(
        found.is_empty(),
        "temporary files after recovery: {found:?}"
    );
    assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
}

#[test]
fn every_fault_is_clean_and_retry_succeeds() {
    let mut injected = 0;
    for op in [Op::Write, Op::Fsync, Op::Rename, Op::DirFsync] {
        for errno in [libc::ENOSPC, libc::EIO] {
            for kind in [Kind::Stream, Kind::Placed, Kind::Chain] {
                for target in 0.. {
                    let dir = tempfile::tempdir().unwrap();
                    let inj = Arc::new(Injector {
                        op,
                        target,
                        seen: AtomicUsize::new(0),
                        armed: AtomicBool::new(true),
                        fired: AtomicBool::new(false),
                        errno,
                    });
                    let mut cfg = config();
                    cfg.faults = inj.faults();
                    cfg.eager_hashing = false;
                    let (engine, out, err) = match Engine::open(dir.path(), cfg) {
                        Ok(engine) => {
                            let (out, err) = scenario(&engine, kind, target as u64);
                            (engine, out, err)
                        }
                        // The fault hit recovery at open: retried below.
                        Err(e) => {
                            inj.armed.store(false, Ordering::SeqCst);
                            (Engine::open(dir.path(), config()).unwrap(), None, Some(e))
                        }
                    };
                    if !inj.fired.load(Ordering::SeqCst) {
                        // Past the last operation of this kind: done with it.
                        assert!(err.is_none(), "{op:?} #{target}: {err:?}");
                        break;
                    }
                    injected += 1;
                    let ctx = format!("{op:?} #{target} errno {errno} {kind:?}");
                    match &err {
                        Some(Error::Io { source, .. }) => {
                            assert_eq!(source.raw_os_error(), Some(errno), "{ctx}");
                            assert!(
                                !err.as_ref()
                                    .unwrap()
                                    .to_string()
                                    .contains(dir.path().to_str().unwrap())
                            );
                        }
                        // Only tidying after the commit point may swallow a
                        // fault: recovery finishes it.
                        None => assert!(out.as_ref().is_some_and(|o| o.committed), "{ctx}"),
                        Some(other) => panic!("{ctx}: expected a clean I/O error, got {other:?}"),
                    }
                    // The fault clears; the same engine goes on.
                    inj.armed.store(false, Ordering::SeqCst);
                    if let Some(out) = &out {
                        check_and_finish(&engine, out);
                    }
                    drop(engine);
                    // And the store recovers cleanly.
                    let engine = Engine::open(dir.path(), config()).unwrap();
                    no_leftovers(dir.path());
                    if let Some(out) = &out {
                        check_and_finish(&engine, out);
                    }
                    let (_, err) = scenario(&engine, kind, 99);
                    assert!(err.is_none(), "{ctx}: after recovery: {err:?}");
                }
            }
        }
    }
    eprintln!("{injected} faults injected, every one clean and recovered");
    assert!(injected > 50);
}

/// Fails the first directory fsync after the commit rename, while armed.
fn fail_after_commit_rename(armed: &Arc<AtomicBool>) -> Faults {
    let armed = armed.clone();
    let renamed = Arc::new(AtomicBool::new(false));
    Faults::new(move |op, role| {
        if !armed.load(Ordering::SeqCst) {
            return None;
        }
        if op == Op::Rename && role == "committed file" {
            renamed.store(true, Ordering::SeqCst);
        } else if op == Op::DirFsync && renamed.swap(false, Ordering::SeqCst) {
            return Some(io::Error::from_raw_os_error(libc::EIO));
        }
        None
    })
}

#[test]
fn faults_after_the_commit_point_still_complete_on_retry() {
    // The directory fsync after the commit rename fails. The file exists
    // under its final name from the rename on, so it is immutable: further
    // parts and plans answer "complete", nothing reaches its bytes through
    // the assembly's hard link, and a retried complete finishes the commit.
    for chain in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let armed = Arc::new(AtomicBool::new(false));
        let mut cfg = config();
        cfg.faults = fail_after_commit_rename(&armed);
        let engine = Engine::open(dir.path(), cfg).unwrap();
        let bytes = data(4096, 1);
        let parts = split(&bytes, 1024, false);
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
        armed.store(true, Ordering::SeqCst);
        let err = engine.complete(&owner(), &id, None).unwrap_err();
        armed.store(false, Ordering::SeqCst);
        assert!(matches!(err, Error::Io { .. }), "chain={chain}: {err}");
        let data_path = dir.path().join("files").join(id.as_str()).join("data");
        assert_eq!(std::fs::read(&data_path).unwrap(), bytes, "chain={chain}");

        // The same part again, with other bytes of the right length.
        let other = data(1024, 99);
        match engine.put_part(&owner(), &id, pn(2), &other[..], None) {
            Err(Error::Conflict(m)) => assert!(m.contains("complete"), "{m}"),
            r => panic!("chain={chain}: a part after the commit point: {r:?}"),
        }
        match engine.plan_parts(&owner(), &id, &chain_plan(&parts)) {
            Err(Error::Conflict(m)) => assert!(m.contains("complete"), "{m}"),
            r => panic!("chain={chain}: a plan after the commit point: {r:?}"),
        }
        assert_eq!(std::fs::read(&data_path).unwrap(), bytes, "chain={chain}");

        // The retry is the call that commits; later ones find it committed.
        let done = engine.complete(&owner(), &id, None).unwrap();
        assert!(done.committed_now, "chain={chain}");
        assert_eq!(done.file.sha256, sha(&bytes));
        let again = engine.complete(&owner(), &id, None).unwrap();
        assert!(!again.committed_now, "chain={chain}");
        assert_eq!(std::fs::read(&data_path).unwrap(), bytes, "chain={chain}");
        drop(engine);
        let engine = open(dir.path());
        assert_eq!(engine.get(&owner(), &id).unwrap().sha256, sha(&bytes));
    }
}

#[test]
fn abort_whose_directory_fsync_fails_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let armed = Arc::new(AtomicBool::new(false));
    let a = armed.clone();
    let mut cfg = config();
    cfg.faults = Faults::new(move |op, _| {
        (a.load(Ordering::SeqCst) && op == Op::DirFsync)
            .then(|| io::Error::from_raw_os_error(libc::EIO))
    });
    let engine = Engine::open(dir.path(), cfg).unwrap();
    let id = engine.create(&owner(), FileSpec::default()).unwrap();
    armed.store(true, Ordering::SeqCst);
    assert!(engine.abort(&owner(), &id).is_err());
    armed.store(false, Ordering::SeqCst);
    match engine.abort(&owner(), &id) {
        Ok(()) | Err(Error::NotFound) => {}
        Err(e) => panic!("abort retry: {e}"),
    }
    assert!(matches!(engine.parts(&owner(), &id), Err(Error::NotFound)));
}

#[test]
fn a_chain_plan_racing_the_first_unplanned_part_never_mixes_the_modes() {
    // The first part's flush of the new upload is slowed down; a chain plan
    // arrives meanwhile. One of the two is refused, and the upload stays
    // usable across a reopen.
    let dir = tempfile::tempdir().unwrap();
    let slow = Arc::new(AtomicBool::new(true));
    let s = slow.clone();
    let mut cfg = config();
    cfg.faults = Faults::new(move |op, role| {
        if op == Op::Fsync && role == "upload record" && s.swap(false, Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(400));
        }
        None
    });
    let engine = Arc::new(Engine::open(dir.path(), cfg).unwrap());
    let id = engine.create(&owner(), FileSpec::default()).unwrap();
    let bytes = data(2048, 9);
    let parts = split(&bytes, 1024, false);
    let put = {
        let (engine, id) = (engine.clone(), id.clone());
        std::thread::spawn(move || engine.put_part(&owner(), &id, pn(3), &b"unplanned"[..], None))
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    let planned = engine.plan_parts(&owner(), &id, &chain_plan(&parts));
    let put = put.join().unwrap();
    assert!(
        put.is_ok() != planned.is_ok(),
        "exactly one of the part ({put:?}) and the plan ({planned:?}) is taken"
    );
    drop(engine);
    let engine = open(dir.path());
    let listed = engine.parts(&owner(), &id).expect("the upload loads");
    assert_eq!(listed.len(), usize::from(put.is_ok()));
}

#[test]
fn a_replacement_whose_settle_failed_is_committed_with_its_own_bytes() {
    // A chain part is replaced; the new bytes are acknowledged, then moving
    // them into the assembly fails. Complete must commit exactly the bytes
    // whose digest it records.
    let dir = tempfile::tempdir().unwrap();
    let armed = Arc::new(AtomicBool::new(false));
    let a = armed.clone();
    let mut cfg = config();
    cfg.faults = Faults::new(move |op, role| {
        (op == Op::Fsync && role == "assembly file" && a.swap(false, Ordering::SeqCst))
            .then(|| io::Error::from_raw_os_error(libc::EIO))
    });
    let engine = Engine::open(dir.path(), cfg).unwrap();
    let bytes = data(2048, 10);
    let parts = split(&bytes, 1024, false);
    let id = engine
        .create(&owner(), FileSpec::default().with_plan(chain_plan(&parts)))
        .unwrap();
    for (i, p) in parts.iter().enumerate() {
        engine
            .put_part(&owner(), &id, pn(i as u64 + 1), *p, None)
            .unwrap();
    }
    // The last part again, other bytes of the same size: no declared digest
    // checks it, so only complete's own bookkeeping keeps the file true.
    let other = data(1024, 11);
    armed.store(true, Ordering::SeqCst);
    assert!(
        engine
            .put_part(&owner(), &id, pn(2), &other[..], None)
            .is_err()
    );
    let done = engine.complete(&owner(), &id, None).unwrap();
    let stored = std::fs::read(engine.get(&owner(), &id).unwrap().path).unwrap();
    assert_eq!(
        sha(&stored),
        done.file.sha256,
        "the committed bytes are the recorded ones"
    );
    let mut want = parts[0].to_vec();
    want.extend_from_slice(&other);
    assert_eq!(
        stored, want,
        "the acknowledged replacement is what was committed"
    );
}

#[test]
fn an_upload_loaded_after_a_restart_is_flushed_before_its_next_part() {
    // Its creation may never have been flushed before the restart.
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let engine = open(dir.path());
        engine.create(&owner(), FileSpec::default()).unwrap()
    };
    let flushes = Arc::new(AtomicUsize::new(0));
    let f = flushes.clone();
    let mut cfg = config();
    cfg.faults = Faults::new(move |op, role| {
        if op == Op::Fsync && role == "upload record" {
            f.fetch_add(1, Ordering::SeqCst);
        }
        None
    });
    let engine = Engine::open(dir.path(), cfg).unwrap();
    engine
        .put_part(&owner(), &id, pn(1), &b"part"[..], None)
        .unwrap();
    // One flush of the creation before the part, one of the mode switch.
    assert_eq!(flushes.load(Ordering::SeqCst), 2);
}

#[test]
fn a_sweep_unloads_idle_uploads_and_their_next_use_loads_them_again() {
    let dir = tempfile::tempdir().unwrap();
    let flushes = Arc::new(AtomicUsize::new(0));
    let f = flushes.clone();
    let mut cfg = config();
    cfg.unload_after = std::time::Duration::ZERO;
    cfg.faults = Faults::new(move |op, role| {
        if op == Op::Fsync && role == "upload record" {
            f.fetch_add(1, Ordering::SeqCst);
        }
        None
    });
    let engine = Engine::open(dir.path(), cfg).unwrap();
    let id = engine.create(&owner(), FileSpec::default()).unwrap();
    engine
        .put_part(&owner(), &id, pn(1), &b"one"[..], None)
        .unwrap();
    let before = flushes.load(Ordering::SeqCst);
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(engine.expire_idle_uploads().expired.is_empty());
    // Loaded again from disk: its parts are there, and it is flushed anew
    // before the next acknowledgement, as any upload loaded from disk.
    assert_eq!(engine.parts(&owner(), &id).unwrap().len(), 1);
    engine
        .put_part(&owner(), &id, pn(2), &b"two"[..], None)
        .unwrap();
    assert_eq!(flushes.load(Ordering::SeqCst), before + 1);
}
