//! Recovery at open after simulated crashes: the store is left as a crash at
//! various points would leave it, then reopened.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use partseal::{Error, FileSpec, Owner};

fn owner() -> Owner {
    Owner::new("alice").unwrap()
}

fn count(dir: &Path) -> usize {
    fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn leftover_temp_files_and_half_written_parts_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(30_000, 1);
    let id = {
        let engine = open(dir.path());
        let id = engine.create(&owner(), FileSpec::default()).unwrap();
        for (i, p) in bytes.chunks(10_000).enumerate().take(2) {
            engine
                .put_part(&owner(), &id, pn(i as u64 + 1), p, None)
                .unwrap();
        }
        id
    };
    let up = dir.path().join("uploads").join(id.as_str());
    // What a crash can leave: bytes of a part whose record was never written,
    // a record being replaced, a half-created upload and commit in tmp/.
    fs::write(
        up.join("parts").join("3.00ff00ff00ff00ff.data"),
        b"half a part",
    )
    .unwrap();
    fs::write(up.join("parts").join("2.json.tmp-0123456789abcdef"), b"{").unwrap();
    fs::write(up.join("upload.json.tmp-0123456789abcdef"), b"{").unwrap();
    fs::create_dir_all(dir.path().join("tmp").join("x.tmp-1").join("parts")).unwrap();
    fs::write(dir.path().join("tmp").join("data"), b"partial merge").unwrap();

    let engine = open(dir.path());
    assert_eq!(count(&dir.path().join("tmp")), 0);
    // Each upload is recovered on its first use.
    let parts = engine.parts(&owner(), &id).unwrap();
    assert!(!up.join("parts").join("3.00ff00ff00ff00ff.data").exists());
    assert!(
        !up.join("parts")
            .join("2.json.tmp-0123456789abcdef")
            .exists()
    );
    assert!(!up.join("upload.json.tmp-0123456789abcdef").exists());
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[1].sha256, sha(&bytes[10_000..20_000]));
    // The upload continues where it was.
    engine
        .put_part(&owner(), &id, pn(3), &bytes[20_000..], None)
        .unwrap();
    let v = engine.verify(&owner(), &id, Some(sha(&bytes))).unwrap();
    assert_eq!(v.length, 30_000);
    assert_eq!(
        fs::read(engine.get(&owner(), &id).unwrap().path).unwrap(),
        bytes
    );
}

#[test]
fn crash_between_commit_and_cleanup_keeps_the_committed_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(50_000, 2);
    let backup = dir.path().join("backup");
    let (id, verified) = {
        let engine = open(dir.path());
        let id = engine.create(&owner(), FileSpec::default()).unwrap();
        for (i, p) in bytes.chunks(20_000).enumerate() {
            engine
                .put_part(&owner(), &id, pn(i as u64 + 1), p, None)
                .unwrap();
        }
        let up = dir.path().join("uploads").join(id.as_str());
        copy_tree(&up, &backup);
        let v = engine.verify(&owner(), &id, None).unwrap();
        // The upload directory survives as if the crash came right after the rename.
        copy_tree(&backup, &up);
        (id, v)
    };
    let engine = open(dir.path());
    assert_eq!(engine.verify(&owner(), &id, None).unwrap(), verified);
    assert!(!dir.path().join("uploads").join(id.as_str()).exists());
    assert_eq!(
        fs::read(engine.get(&owner(), &id).unwrap().path).unwrap(),
        bytes
    );
}

#[test]
fn crash_before_commit_rename_leaves_the_upload_open() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(50_000, 3);
    let id = {
        let engine = open(dir.path());
        let id = engine.create(&owner(), FileSpec::default()).unwrap();
        for (i, p) in bytes.chunks(20_000).enumerate() {
            engine
                .put_part(&owner(), &id, pn(i as u64 + 1), p, None)
                .unwrap();
        }
        id
    };
    // A merge that was written but not yet renamed into files/.
    let staging = dir.path().join("tmp").join(format!("{id}.tmp-00"));
    fs::create_dir_all(&staging).unwrap();
    fs::write(staging.join("data"), &bytes[..1000]).unwrap();
    let engine = open(dir.path());
    assert_eq!(count(&dir.path().join("tmp")), 0);
    assert!(matches!(engine.get(&owner(), &id), Err(Error::NotFound)));
    assert_eq!(engine.parts(&owner(), &id).unwrap().len(), 3);
    engine.verify(&owner(), &id, Some(sha(&bytes))).unwrap();
}

#[test]
fn interrupted_chain_replacement_is_finished_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(3 * 1024, 4);
    let parts = split(&bytes, 1024, false);
    let id = {
        let engine = open(dir.path());
        let id = engine
            .create(&owner(), FileSpec::default().with_plan(chain_plan(&parts)))
            .unwrap();
        for (i, p) in parts.iter().enumerate() {
            engine
                .put_part(&owner(), &id, pn(i as u64 + 1), *p, None)
                .unwrap();
        }
        id
    };
    // A replacement of part 2 was acknowledged (its record names the staged
    // bytes) but the crash came while it was being copied into the assembly.
    let up = dir.path().join("uploads").join(id.as_str());
    let staged = "2.0011223344556677.data";
    fs::write(up.join("parts").join(staged), parts[1]).unwrap();
    let rec_path = up.join("parts").join("2.json");
    let mut rec: serde_json::Value = serde_json::from_slice(&fs::read(&rec_path).unwrap()).unwrap();
    rec["data"] = serde_json::Value::String(staged.into());
    fs::write(&rec_path, serde_json::to_vec(&rec).unwrap()).unwrap();
    let mut asm = fs::read(up.join("assembly")).unwrap();
    asm[1024..1500].fill(0);
    fs::write(up.join("assembly"), &asm).unwrap();

    let engine = open(dir.path());
    assert_eq!(engine.parts(&owner(), &id).unwrap().len(), 3);
    assert!(!up.join("parts").join(staged).exists());
    let v = engine.verify(&owner(), &id, Some(sha(&bytes))).unwrap();
    assert_eq!(v.length, bytes.len() as u64);
    assert_eq!(
        fs::read(engine.get(&owner(), &id).unwrap().path).unwrap(),
        bytes
    );
}

#[test]
fn half_written_chain_part_is_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(3 * 1024, 5);
    let parts = split(&bytes, 1024, false);
    let id = {
        let engine = open(dir.path());
        let id = engine
            .create(&owner(), FileSpec::default().with_plan(chain_plan(&parts)))
            .unwrap();
        engine
            .put_part(&owner(), &id, pn(1), parts[0], None)
            .unwrap();
        id
    };
    // Part 2 was being written at its offset when the process died.
    let up = dir.path().join("uploads").join(id.as_str());
    let mut asm = fs::read(up.join("assembly")).unwrap();
    asm.extend_from_slice(&parts[1][..300]);
    fs::write(up.join("assembly"), &asm).unwrap();

    let engine = open(dir.path());
    let listed = engine.parts(&owner(), &id).unwrap();
    assert_eq!(listed.len(), 1);
    assert!(matches!(
        engine.verify(&owner(), &id, None),
        Err(Error::MissingParts { .. })
    ));
    engine
        .put_part(&owner(), &id, pn(2), parts[1], None)
        .unwrap();
    engine
        .put_part(&owner(), &id, pn(3), parts[2], None)
        .unwrap();
    engine.verify(&owner(), &id, Some(sha(&bytes))).unwrap();
    assert_eq!(
        fs::read(engine.get(&owner(), &id).unwrap().path).unwrap(),
        bytes
    );
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn a_store_is_used_by_one_engine_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    assert!(matches!(
        partseal::Engine::open(dir.path(), config()),
        Err(Error::Conflict(_))
    ));
    drop(first);
    open(dir.path());
}

#[test]
fn a_creation_that_never_became_durable_is_removed_on_first_use() {
    // Creates flush nothing until the first part or plan; a crash before
    // that may leave the renamed directory with a record not on disk.
    let dir = tempfile::tempdir().unwrap();
    let (empty, missing, kept) = {
        let engine = open(dir.path());
        let a = engine.create(&owner(), FileSpec::default()).unwrap();
        let b = engine.create(&owner(), FileSpec::default()).unwrap();
        let c = engine.create(&owner(), FileSpec::default()).unwrap();
        engine
            .put_part(&owner(), &c, pn(1), &b"acknowledged"[..], None)
            .unwrap();
        (a, b, c)
    };
    let up = |id: &partseal::FileId| dir.path().join("uploads").join(id.as_str());
    fs::write(up(&empty).join("upload.json"), b"").unwrap();
    fs::remove_file(up(&missing).join("upload.json")).unwrap();
    let engine = open(dir.path());
    for id in [&empty, &missing] {
        assert!(matches!(engine.parts(&owner(), id), Err(Error::NotFound)));
        assert!(!up(id).exists());
    }
    assert_eq!(engine.parts(&owner(), &kept).unwrap().len(), 1);
    // A record that does not parse beside acknowledged parts is not taken
    // for an unfinished create: it is reported, and nothing is removed.
    drop(engine);
    fs::write(up(&kept).join("upload.json"), b"{").unwrap();
    let engine = open(dir.path());
    assert!(matches!(
        engine.parts(&owner(), &kept),
        Err(Error::Io {
            role: "upload record",
            ..
        })
    ));
    assert!(up(&kept).join("parts").join("1.json").exists());
}
