//! `Engine::open_upload_count`, `Engine::upload_mode` and `Engine::root`.

use partseal::{Config, Engine, FileSpec, Owner, PartNumber, PartPlan, UploadMode};

#[test]
fn open_upload_count_and_mode_follow_the_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), Config::default()).unwrap();
    let alice = Owner::new("alice").unwrap();
    let bob = Owner::new("bob").unwrap();
    assert_eq!(engine.open_upload_count(), 0);

    let stream = engine.create(&alice, FileSpec::default()).unwrap();
    let plan = vec![PartPlan::new(1, 5, Some(0), None).unwrap()];
    let chain = engine
        .create(&alice, FileSpec::default().with_plan(plan))
        .unwrap();
    assert_eq!(engine.open_upload_count(), 2);
    assert_eq!(
        engine.upload_mode(&alice, &stream).unwrap(),
        Some(UploadMode::Stream)
    );
    assert_eq!(
        engine.upload_mode(&alice, &chain).unwrap(),
        Some(UploadMode::Chain)
    );
    // Another owner's upload is none of bob's.
    assert_eq!(engine.upload_mode(&bob, &chain).unwrap(), None);

    engine
        .put_part(&alice, &stream, PartNumber::MIN, &b"hello"[..], None)
        .unwrap();
    engine.complete(&alice, &stream, None).unwrap();
    assert_eq!(engine.upload_mode(&alice, &stream).unwrap(), None);
    assert_eq!(engine.open_upload_count(), 1);
    engine.abort(&alice, &chain).unwrap();
    assert_eq!(engine.upload_mode(&alice, &chain).unwrap(), None);
    assert_eq!(engine.open_upload_count(), 0);
}

#[test]
fn root_is_the_directory_opened() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), Config::default()).unwrap();
    assert_eq!(engine.root(), dir.path());
}
