//! Tests of the validated identifiers: file ids, owners and part numbers.

use std::collections::HashSet;

use partseal::{Error, FileId, Owner, PartNumber};
use partseal::{FILE_ID_LEN, MAX_OWNER_LEN, MAX_PARTS};
use proptest::prelude::*;

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[test]
fn generated_ids_are_lowercase_hex_and_unique() {
    let mut seen = HashSet::new();
    for _ in 0..1000 {
        let id = FileId::generate().unwrap();
        let s = id.as_str();
        assert_eq!(s.len(), 32);
        assert_eq!(FILE_ID_LEN, 32);
        assert!(is_lower_hex(s), "{s}");
        assert_eq!(id.to_string(), s);
        assert_eq!(format!("{id:?}"), format!("FileId({s})"));
        // A generated id parses back to itself.
        assert_eq!(s.parse::<FileId>().unwrap(), id);
        assert!(seen.insert(s.to_owned()), "duplicate id {s}");
    }
    assert_eq!(seen.len(), 1000);
}

#[test]
fn file_id_accepts_lowercase_hex() {
    for s in [
        "0123456789abcdef0123456789abcdef",
        "00000000000000000000000000000000",
        "ffffffffffffffffffffffffffffffff",
    ] {
        let id: FileId = s.parse().unwrap();
        assert_eq!(id.as_str(), s);
    }
}

fn assert_bad_id(s: &str) {
    match s.parse::<FileId>() {
        Err(Error::BadId(msg)) => {
            // The message never echoes the raw value back.
            if s.len() > 4 {
                assert!(!msg.contains(s), "message echoes input: {msg}");
            }
        }
        other => panic!("{s:?} (len {}) gave {other:?}", s.len()),
    }
}

#[test]
fn file_id_rejects_bad_values() {
    let good = "0123456789abcdef0123456789abcdef";
    assert_bad_id("");
    assert_bad_id("..");
    assert_bad_id("../");
    assert_bad_id("a/b");
    assert_bad_id("%2F");
    assert_bad_id("\0");
    // Path tricks padded to the right length.
    assert_bad_id(&format!("../{}", &good[3..]));
    assert_bad_id(&format!("{}/b", &good[..30]));
    assert_bad_id(&format!("{}..", &good[..30]));
    assert_bad_id(&format!("%2F{}", &good[3..]));
    assert_bad_id(&format!("{}%2f", &good[..29]));
    assert_bad_id(&format!("{}\0", &good[..31]));
    assert_bad_id(&format!("\\{}", &good[1..]));
    assert_bad_id(&format!(" {}", &good[1..]));
    // Uppercase hex.
    assert_bad_id(&good.to_uppercase());
    assert_bad_id(&format!("A{}", &good[1..]));
    // Non-hex letters.
    assert_bad_id(&format!("g{}", &good[1..]));
    // Wrong lengths.
    assert_bad_id(&good[..31]);
    assert_bad_id(&format!("{good}0"));
    assert_bad_id(&"a".repeat(10_000));
    assert_bad_id(&"/".repeat(10_240));
    // 32 bytes of multi-byte characters.
    assert_bad_id(&"é".repeat(16));
    let e = good[..31].parse::<FileId>().unwrap_err();
    assert!(e.to_string().contains("31"), "{e}");
}

#[test]
fn owner_accepts_valid_ids() {
    for s in [
        "alice",
        "user-1@x.y",
        "a",
        "A_b.c-d@e:f",
        "folder:1234",
        "0",
        "a.",
        "a..b",
    ] {
        let o = Owner::new(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        assert_eq!(o.as_str(), s);
        assert_eq!(o.to_string(), s);
        assert_eq!(s.parse::<Owner>().unwrap(), o);
    }
    let longest = "x".repeat(MAX_OWNER_LEN);
    assert_eq!(MAX_OWNER_LEN, 128);
    assert!(Owner::new(&longest).is_ok());
}

fn assert_bad_owner(s: &str) {
    match Owner::new(s) {
        Err(Error::BadId(_)) => {}
        other => panic!("{s:?} gave {other:?}"),
    }
    assert!(s.parse::<Owner>().is_err());
}

#[test]
fn owner_rejects_bad_ids() {
    assert_bad_owner("");
    assert_bad_owner(".hidden");
    assert_bad_owner(".");
    assert_bad_owner("..");
    assert_bad_owner("../x");
    assert_bad_owner("a/b");
    assert_bad_owner("/");
    assert_bad_owner("a\\b");
    assert_bad_owner(&"x".repeat(129));
    assert_bad_owner(&"x".repeat(10_000));
    assert_bad_owner("\0");
    assert_bad_owner("alice\0");
    assert_bad_owner("al ice");
    assert_bad_owner(" alice");
    assert_bad_owner("alice ");
    assert_bad_owner("alice\n");
    assert_bad_owner("alice\t");
    assert_bad_owner("%2F");
    assert_bad_owner("ålice");
    assert_bad_owner("a*b");
}

#[test]
fn part_numbers() {
    assert_eq!(MAX_PARTS, 10_000);
    assert_eq!(PartNumber::new(1).unwrap().get(), 1);
    assert_eq!(PartNumber::new(10_000).unwrap().get(), 10_000);
    assert_eq!(PartNumber::new(42).unwrap().to_string(), "42");
    for bad in [
        0u64,
        10_001,
        u64::from(u32::MAX),
        u64::from(u32::MAX) + 1,
        u64::MAX,
    ] {
        match PartNumber::new(bad) {
            Err(Error::PartOutOfRange { part, .. }) => assert_eq!(part, bad),
            other => panic!("{bad} gave {other:?}"),
        }
    }
    assert!(PartNumber::new(1).unwrap() < PartNumber::new(2).unwrap());
}

proptest! {
    #[test]
    fn part_number_range(n in any::<u64>()) {
        let r = PartNumber::new(n);
        prop_assert_eq!(r.is_ok(), (1..=10_000).contains(&n));
        if let Ok(p) = r {
            prop_assert_eq!(u64::from(p.get()), n);
        }
    }

    #[test]
    fn part_number_small(n in 0u64..=10_002) {
        prop_assert_eq!(PartNumber::new(n).is_ok(), (1..=10_000).contains(&n));
    }

    #[test]
    fn file_id_parse_any(s in "\\PC{0,40}") {
        let ok = s.len() == 32 && is_lower_hex(&s);
        prop_assert_eq!(s.parse::<FileId>().is_ok(), ok);
    }

    #[test]
    fn file_id_parse_hexish(s in "[0-9a-fA-F./%]{30,34}") {
        let ok = s.len() == 32 && is_lower_hex(&s);
        prop_assert_eq!(s.parse::<FileId>().is_ok(), ok);
    }

    #[test]
    fn owner_parse_any(s in "\\PC{0,140}") {
        let ok = !s.is_empty()
            && s.len() <= 128
            && !s.starts_with('.')
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-@:".contains(&b));
        let r = Owner::new(&s);
        prop_assert_eq!(r.is_ok(), ok);
        if let Ok(o) = r {
            // Never a path component that escapes or nests.
            prop_assert!(!o.as_str().contains('/'));
            prop_assert!(o.as_str() != ".." && o.as_str() != ".");
        }
    }

    #[test]
    fn owner_parse_charset(s in "[a-zA-Z0-9._@:/ -]{0,130}") {
        let ok = !s.is_empty()
            && s.len() <= 128
            && !s.starts_with('.')
            && !s.contains('/')
            && !s.contains(' ');
        prop_assert_eq!(Owner::new(&s).is_ok(), ok);
    }
}
