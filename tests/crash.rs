//! Crash consistency: a child process uploads and completes files against a
//! store and is killed with SIGKILL at a random moment; the parent reopens the
//! store and checks the invariants:
//!
//! - every part acknowledged before the kill is present with its bytes;
//! - no committed file is partial or wrong;
//! - no temporary file survives recovery;
//! - every open upload can be continued and completed to the right digest.
//!
//! CI runs a bounded number of kills; `PARTSEAL_CRASH_ITERS=500 cargo test
//! --release --test crash` runs more.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use partseal::{Engine, Error, FileId, FileSpec, Owner};

const CHILD_ENV: &str = "PARTSEAL_CRASH_CHILD_DIR";
const PART: usize = 64 * 1024;

/// The harness's engines keep the commit-event outbox.
fn events_config() -> partseal::Config {
    let mut cfg = config();
    cfg.commit_events = true;
    cfg
}

fn owner() -> Owner {
    Owner::new("crash").unwrap()
}

/// What an upload in the journal is: its bytes follow from the seed.
#[derive(Clone, Debug)]
struct Planned {
    chain: bool,
    seed: u64,
    parts: usize,
}

impl Planned {
    fn bytes(&self) -> Vec<u8> {
        // The last part is shorter, so the file length is not a part multiple.
        data(self.parts * PART - 1000, self.seed)
    }
}

/// The child: runs uploads until killed, journaling each acknowledgement
/// after the engine returned it.
#[test]
#[ignore = "run by the crash harness in a child process"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let engine = Engine::open(dir.join("store"), events_config()).unwrap();
    let mut journal = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("journal"))
        .unwrap();
    let mut rng = std::process::id() as u64 ^ 0x5eed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    loop {
        let p = Planned {
            chain: next() % 2 == 0,
            seed: next(),
            parts: 2 + (next() % 5) as usize,
        };
        let bytes = p.bytes();
        let parts = split(&bytes, PART, false);
        let spec = FileSpec::default().with_plan(if p.chain {
            chain_plan(&parts)
        } else {
            Vec::new()
        });
        let id = engine.create(&owner(), spec).unwrap();
        writeln!(journal, "create {id} {} {} {}", p.chain, p.seed, p.parts).unwrap();
        // Send the parts in a scrambled order, some twice (a replacement).
        let mut order: Vec<usize> = (0..parts.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, (next() % (i as u64 + 1)) as usize);
        }
        if next() % 3 == 0 {
            order.push(order[0]);
        }
        for i in order {
            let r = engine
                .put_part(&owner(), &id, pn(i as u64 + 1), parts[i], None)
                .unwrap();
            writeln!(journal, "part {id} {} {}", i + 1, r.sha256).unwrap();
        }
        if next() % 4 != 0 {
            let v = engine.verify(&owner(), &id, None).unwrap();
            writeln!(journal, "commit {id} {}", v.sha256).unwrap();
        }
    }
}

fn run_child(dir: &Path, kill_after: Duration) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--ignored", "--exact", "crash_child", "--nocapture"])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(kill_after);
    // SAFETY: plain FFI call with a pid we own; SIGKILL is the point.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    child.wait().unwrap();
}

struct Journal {
    uploads: BTreeMap<String, Planned>,
    parts: BTreeMap<(String, u32), String>,
    commits: BTreeMap<String, String>,
}

fn read_journal(dir: &Path) -> Journal {
    let text = fs::read_to_string(dir.join("journal")).unwrap_or_default();
    let mut j = Journal {
        uploads: BTreeMap::new(),
        parts: BTreeMap::new(),
        commits: BTreeMap::new(),
    };
    // A line cut by the kill is incomplete and ignored.
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        match f.as_slice() {
            ["create", id, chain, seed, parts] => {
                if let (Ok(chain), Ok(seed), Ok(parts)) =
                    (chain.parse(), seed.parse(), parts.parse())
                {
                    j.uploads
                        .insert(id.to_string(), Planned { chain, seed, parts });
                }
            }
            ["part", id, n, sha] if sha.len() == 64 => {
                if let Ok(n) = n.parse() {
                    j.parts.insert((id.to_string(), n), sha.to_string());
                }
            }
            ["commit", id, sha] if sha.len() == 64 => {
                j.commits.insert(id.to_string(), sha.to_string());
            }
            _ => {}
        }
    }
    j
}

fn temp_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.contains(".tmp-") {
            out.push(e.path());
        }
        if e.file_type().unwrap().is_dir() {
            temp_files(&e.path(), out);
        }
    }
}

/// Reopens the store and checks every invariant; returns how many uploads
/// were found open and completed by the parent.
fn check_store(dir: &Path) -> usize {
    let store = dir.join("store");
    let engine = Engine::open(&store, events_config()).unwrap();
    // Open recovers the top of the store at once; each upload is recovered
    // when it is first used (checked at the end, once all were used).
    assert_eq!(fs::read_dir(store.join("tmp")).unwrap().count(), 0);

    let j = read_journal(dir);
    let mut continued = 0;
    for (id_text, planned) in &j.uploads {
        let id: FileId = id_text.parse().unwrap();
        let bytes = planned.bytes();
        let parts = split(&bytes, PART, false);
        match engine.get(&owner(), &id) {
            Ok(c) => {
                // Committed (maybe by a verify the kill interrupted after
                // the commit point): whole and right.
                let on_disk = fs::read(&c.path).unwrap();
                assert_eq!(on_disk.len(), bytes.len(), "{id} is partial");
                assert_eq!(Sha256::digest(&on_disk), sha(&bytes), "{id} is wrong");
                assert_eq!(c.sha256, sha(&bytes));
            }
            Err(e) if j.commits.contains_key(id_text) => {
                panic!("{id} was committed but get fails: {e}")
            }
            Err(Error::NotFound) if engine.parts(&owner(), &id).is_err() => {
                panic!("upload {id} vanished")
            }
            Err(_) => {
                // Open: every acknowledged part is there with its bytes.
                let listed: BTreeMap<u32, String> = engine
                    .parts(&owner(), &id)
                    .unwrap()
                    .into_iter()
                    .map(|p| (p.number.get(), p.sha256.to_hex()))
                    .collect();
                for ((pid, n), sha_hex) in &j.parts {
                    if pid == id_text {
                        assert_eq!(listed.get(n), Some(sha_hex), "{id} lost part {n}");
                    }
                }
                // And the upload can be continued to the right digest.
                for (i, p) in parts.iter().enumerate() {
                    let n = i as u32 + 1;
                    if !listed.contains_key(&n) {
                        engine
                            .put_part(&owner(), &id, pn(n as u64), *p, None)
                            .unwrap();
                    }
                }
                let v = engine.verify(&owner(), &id, Some(sha(&bytes))).unwrap();
                assert_eq!(v.length, bytes.len() as u64);
                continued += 1;
            }
        }
    }
    // Uploads the journal never heard of (killed right after create): their
    // first use recovers them too.
    for e in fs::read_dir(store.join("uploads")).unwrap() {
        if let Ok(id) = e.unwrap().file_name().to_string_lossy().parse::<FileId>() {
            let _ = engine.status(&owner(), &id);
        }
    }
    // Every committed file has exactly one commit event, whatever the kill
    // interrupted (the append, the rename, the fsyncs after it), and no
    // event names a file that is not committed.
    let mut events: Vec<String> = engine
        .commits_since(0, usize::MAX)
        .unwrap()
        .0
        .into_iter()
        .map(|e| e.file_id.as_str().to_owned())
        .collect();
    events.sort();
    let mut files: Vec<String> = fs::read_dir(store.join("files"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.parse::<FileId>().ok().map(|_| name)
        })
        .collect();
    files.sort();
    assert_eq!(
        events, files,
        "commit events are not one per committed file"
    );
    // Dropping the engine waits for its janitor, which deletes what was
    // buried in tmp/.
    drop(engine);
    let mut leftovers = Vec::new();
    temp_files(&store, &mut leftovers);
    assert!(
        leftovers.is_empty(),
        "temporary files survived recovery: {leftovers:?}"
    );
    continued
}

use partseal::Sha256;

#[test]
fn kill_at_random_moments_loses_nothing_acknowledged() {
    let iters: u64 = std::env::var("PARTSEAL_CRASH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let mut rng = 0x2545f4914f6cdd1du64;
    let mut continued = 0;
    let mut uploads = 0;
    for i in 0..iters {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let dir = tempfile::tempdir().unwrap();
        // Several kills against the same store, each followed by recovery.
        for round in 0..3 {
            let delay = Duration::from_millis(20 + (rng >> (round * 8)) % 300);
            run_child(dir.path(), delay);
            continued += check_store(dir.path());
        }
        uploads += read_journal(dir.path()).uploads.len();
        eprintln!("iteration {i}: ok");
    }
    eprintln!(
        "{iters} stores, {} kills, {uploads} uploads, {continued} open uploads continued after recovery",
        iters * 3
    );
    assert!(uploads > 0, "the child never got to create an upload");
}
