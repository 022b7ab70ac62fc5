//! File ids, owners and part numbers: the values from the network that end up
//! in paths (DESIGN.md invariant 7).
//!
//! Laws, for any string:
//! - `FileId::from_str` accepts exactly 32 lowercase hex digits, and an
//!   accepted id displays as the input;
//! - `Owner::new` accepts exactly 1..=128 bytes of `A-Z a-z 0-9 . _ - @ :`
//!   not starting with `.`, and agrees with `Owner::from_str`;
//! - nothing accepted holds `/`, `\`, NUL, is `.`/`..` or is unbounded;
//! - a refusal is `BadId` with a short, non-empty message that does not echo
//!   the input;
//! - `PartNumber::new` accepts exactly 1..=10000.
#![no_main]

use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use partseal::{Error, FileId, Owner, PartNumber};
use partseal::{FILE_ID_LEN, MAX_OWNER_LEN, MAX_PARTS};

/// What every accepted id must be to be safe as one path component.
fn assert_path_safe(s: &str, max: usize) {
    assert!(!s.is_empty() && s.len() <= max, "length {}", s.len());
    assert!(!s.contains(['/', '\\', '\0']), "{s:?}");
    assert!(s != "." && s != "..", "{s:?}");
    assert!(!s.starts_with('.'), "{s:?}");
    assert!(s.chars().all(|c| c.is_ascii_graphic()), "{s:?}");
}

/// A refusal is `BadId` with a short message that says what is wrong
/// without echoing the input: it is the message of a neutral input of the
/// same length and kind of fault.
fn assert_refusal(e: Error, neutral: Result<(), Error>) {
    let (Error::BadId(msg), Err(Error::BadId(want))) = (e, neutral) else {
        panic!("a refusal is not BadId");
    };
    assert!(!msg.is_empty());
    assert!(msg.len() < 200, "overlong message: {msg:?}");
    assert_eq!(msg, want, "the message depends on more than the length");
}

fn check(s: &str) {
    let is_id = s.len() == FILE_ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match FileId::from_str(s) {
        Ok(id) => {
            assert!(is_id, "accepted a bad file id {s:?}");
            assert_eq!(id.as_str(), s);
            assert_eq!(id.to_string(), s);
            assert_path_safe(id.as_str(), FILE_ID_LEN);
            assert_eq!(FileId::from_str(id.as_str()).ok().as_ref(), Some(&id));
        }
        Err(e) => {
            assert!(!is_id, "refused a good file id {s:?}");
            let neutral = if s.len() == FILE_ID_LEN {
                "g".repeat(FILE_ID_LEN)
            } else {
                "0".repeat(s.len())
            };
            assert_refusal(e, FileId::from_str(&neutral).map(drop));
        }
    }

    let is_owner = (1..=MAX_OWNER_LEN).contains(&s.len())
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@:".contains(&b));
    let parsed = Owner::new(s);
    match (&parsed, Owner::from_str(s)) {
        (Ok(a), Ok(b)) => assert_eq!(a, &b),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("Owner::new and from_str disagree: {a:?} vs {b:?}"),
    }
    match parsed {
        Ok(o) => {
            assert!(is_owner, "accepted a bad owner {s:?}");
            assert_eq!(o.as_str(), s);
            assert_eq!(o.to_string(), s);
            assert_path_safe(o.as_str(), MAX_OWNER_LEN);
        }
        Err(e) => {
            assert!(!is_owner, "refused a good owner {s:?}");
            let neutral = if (1..=MAX_OWNER_LEN).contains(&s.len()) {
                ".".to_owned()
            } else {
                "a".repeat(s.len())
            };
            assert_refusal(e, Owner::new(&neutral).map(drop));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // Part numbers from the first eight bytes (little-endian, zero-padded).
    let mut word = [0u8; 8];
    let n = data.len().min(8);
    word[..n].copy_from_slice(&data[..n]);
    for v in [
        u64::from_le_bytes(word),
        u64::from(word[0]),
        u64::from(u16::from_le_bytes([word[0], word[1]])),
    ] {
        match PartNumber::new(v) {
            Ok(p) => {
                assert!((1..=u64::from(MAX_PARTS)).contains(&v));
                assert_eq!(u64::from(p.get()), v);
            }
            Err(Error::PartOutOfRange { part, reason }) => {
                assert!(v == 0 || v > u64::from(MAX_PARTS));
                assert_eq!(part, v);
                assert!(!reason.is_empty());
            }
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }

    match std::str::from_utf8(data) {
        Ok(s) => {
            check(s);
            // Ids arrive percent-decoded or with surrounding noise; the
            // trimmed and the lower-case forms are judged on their own.
            check(s.trim());
            check(&s.to_ascii_lowercase());
        }
        Err(_) => check(&String::from_utf8_lossy(data)),
    }

    if data.first() == Some(&0xff) {
        // A generated id is always one the parser accepts.
        let id = FileId::generate().expect("random source");
        assert_eq!(FileId::from_str(id.as_str()).ok(), Some(id));
    }
});
