//! Tests of the SHA-256 midstate layer: known vectors, padding edge lengths,
//! piecewise folding, resuming, and the hex / integer forms of contexts.

use partseal::hazmat::{BLOCK, INITIAL_WORDS};
use partseal::hazmat::{Hasher, Midstate};
use partseal::{HashCtx, Sha256};
use proptest::prelude::*;

/// The reference digest, straight from `sha2`.
fn reference(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

/// Deterministic, non-repeating test bytes.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(131) ^ (i >> 8).wrapping_mul(7)) as u8)
        .collect()
}

const EMPTY_HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const ABC_HEX: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
const MIB_ZEROS_HEX: &str = "30e14955ebf1352266dc2ff8067e68104607e750abb9d3b36582b8af909fcb58";
/// FIPS 180-2 two-block message (56 bytes: the padding spills into a second block).
const TWO_BLOCK_MSG: &[u8] = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
const TWO_BLOCK_HEX: &str = "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1";

/// Checks every way of hashing `data` against `hex` and against `sha2`.
fn check_vector(data: &[u8], hex: &str) {
    let expected: Sha256 = hex.parse().unwrap();
    assert_eq!(
        expected.0,
        reference(data),
        "hard-coded vector disagrees with sha2"
    );

    let via_finalize = Midstate::new().finalize(data);
    assert_eq!(via_finalize, expected, "Midstate::finalize");
    assert_eq!(via_finalize.to_hex(), hex);
    assert_eq!(via_finalize.to_string(), hex);

    let mut h = Hasher::new();
    h.update(data);
    assert_eq!(h.len(), data.len() as u64);
    assert_eq!(h.finalize(), expected, "Hasher");

    assert_eq!(Sha256::digest(data), expected, "Sha256::digest");

    // Folding the whole-block prefix first, then the tail.
    let mut m = Midstate::new();
    let tail = m.fold_prefix(data);
    assert_eq!(m.len() as usize + tail.len(), data.len());
    assert!(tail.len() < BLOCK);
    assert_eq!(m.finalize(tail), expected, "fold_prefix + finalize");
}

#[test]
fn vector_empty() {
    check_vector(b"", EMPTY_HEX);
    assert!(Midstate::new().is_empty());
    assert!(Hasher::new().is_empty());
}

#[test]
fn vector_abc() {
    check_vector(b"abc", ABC_HEX);
}

#[test]
fn vector_two_block_padding() {
    check_vector(TWO_BLOCK_MSG, TWO_BLOCK_HEX);
}

#[test]
fn vector_mib_of_zeros() {
    let data = vec![0u8; 1 << 20];
    check_vector(&data, MIB_ZEROS_HEX);

    // And folded in 64 KiB pieces.
    let mut m = Midstate::new();
    for piece in data.chunks(64 << 10) {
        m.fold(piece);
    }
    assert_eq!(m.len(), 1 << 20);
    assert_eq!(m.finalize(&[]).to_hex(), MIB_ZEROS_HEX);
}

const EDGE_LENGTHS: &[usize] = &[0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 129, 1000];

#[test]
fn edge_lengths_finalize() {
    for &len in EDGE_LENGTHS {
        let data = pattern(len);
        let expected = reference(&data);
        assert_eq!(
            Midstate::new().finalize(&data).0,
            expected,
            "finalize, length {len}"
        );
        // Same bytes after a folded prefix of whole blocks.
        for prefix_blocks in 0..=len / BLOCK {
            let cut = prefix_blocks * BLOCK;
            let mut m = Midstate::new();
            m.fold(&data[..cut]);
            assert_eq!(
                m.finalize(&data[cut..]).0,
                expected,
                "fold {cut} then finalize, length {len}"
            );
        }
    }
}

#[test]
fn edge_lengths_hasher() {
    for &len in EDGE_LENGTHS {
        let data = pattern(len);
        let expected = reference(&data);
        let mut h = Hasher::new();
        h.update(&data);
        assert_eq!(h.finalize().0, expected, "one update, length {len}");
        assert_eq!(h.len(), len as u64);
        assert_eq!(h.midstate().is_some(), len % BLOCK == 0);

        // Byte by byte.
        let mut h = Hasher::new();
        for b in &data {
            h.update(std::slice::from_ref(b));
        }
        assert_eq!(h.finalize().0, expected, "byte by byte, length {len}");

        // Every single split point, with an empty update in between.
        for cut in 0..=len {
            let mut h = Hasher::new();
            h.update(&data[..cut]);
            h.update(&[]);
            h.update(&data[cut..]);
            assert_eq!(h.finalize().0, expected, "split at {cut}, length {len}");
        }
    }
}

#[test]
fn hasher_finalize_does_not_consume() {
    let data = pattern(200);
    let mut h = Hasher::new();
    h.update(&data[..100]);
    assert_eq!(h.finalize().0, reference(&data[..100]));
    h.update(&data[100..]);
    assert_eq!(h.finalize().0, reference(&data));
}

#[test]
fn hasher_midstate_matches_fold() {
    let data = pattern(640);
    let mut h = Hasher::new();
    h.update(&data[..10]);
    assert!(h.midstate().is_none());
    h.update(&data[10..320]);
    let mid = h.midstate().expect("320 is a block boundary");
    let mut m = Midstate::new();
    m.fold(&data[..320]);
    assert_eq!(mid, m);
    assert_eq!(mid.len(), 320);

    // Continue from the midstate in a fresh hasher.
    let mut h2 = Hasher::from_midstate(mid);
    h2.update(&data[320..]);
    assert_eq!(h2.len(), 640);
    assert_eq!(h2.finalize().0, reference(&data));
}

#[test]
#[should_panic(expected = "whole 64-byte blocks")]
fn fold_rejects_partial_block() {
    Midstate::new().fold(&[0u8; 65]);
}

#[test]
fn initial_ctx() {
    assert_eq!(Midstate::new().ctx(), HashCtx::INITIAL);
    assert_eq!(HashCtx::INITIAL.0, INITIAL_WORDS);
    assert_eq!(Midstate::default(), Midstate::new());
    assert_eq!(
        HashCtx::INITIAL.to_hex(),
        "6a09e667bb67ae853c6ef372a54ff53a510e527f9b05688c1f83d9ab5be0cd19"
    );
}

#[test]
fn resume_continues_identically() {
    let data = pattern(1000);
    let mut m = Midstate::new();
    m.fold(&data[..512]);
    let r = Midstate::resume(m.ctx(), m.len()).unwrap();
    assert_eq!(r, m);
    assert_eq!(r.finalize(&data[512..]).0, reference(&data));

    // Through the hex form too, as records store it.
    let ctx = HashCtx::from_hex(&m.ctx().to_hex()).unwrap();
    let r = Midstate::resume(ctx, 512).unwrap();
    assert_eq!(r.finalize(&data[512..]).0, reference(&data));
}

#[test]
fn resume_rejects_unaligned_offset() {
    for off in [1u64, 63, 65, 100, 127, 129, u64::MAX] {
        assert!(
            Midstate::resume(HashCtx::INITIAL, off).is_err(),
            "offset {off} accepted"
        );
    }
    for off in [0u64, 64, 128, 1 << 20, u64::MAX - 63] {
        let m = Midstate::resume(HashCtx::INITIAL, off).unwrap();
        assert_eq!(m.len(), off);
    }
    let e = Midstate::resume(HashCtx::INITIAL, 100).unwrap_err();
    assert!(e.to_string().contains("100"), "{e}");
}

#[test]
fn hash_ctx_from_ints() {
    let zeros = HashCtx::from_ints(&[0; 8]).unwrap();
    assert_eq!(zeros, HashCtx([0; 8]));
    let maxes = HashCtx::from_ints(&[4294967295; 8]).unwrap();
    assert_eq!(maxes, HashCtx([u32::MAX; 8]));
    assert_eq!(maxes.to_ints(), [4294967295u64; 8]);

    let initial: Vec<i128> = INITIAL_WORDS.iter().map(|&w| i128::from(w)).collect();
    assert_eq!(HashCtx::from_ints(&initial).unwrap(), HashCtx::INITIAL);
    assert_eq!(HashCtx::INITIAL.to_ints().map(i128::from).to_vec(), initial);

    for bad in [-1i128, 4294967296, i128::MIN, i128::MAX, -4294967295] {
        for pos in [0usize, 3, 7] {
            let mut words = [1i128; 8];
            words[pos] = bad;
            let e = HashCtx::from_ints(&words).unwrap_err();
            assert!(e.to_string().contains(&format!("word {pos}")), "{e}");
        }
    }
    for n in [0usize, 1, 7, 9, 16] {
        let words = vec![0i128; n];
        let e = HashCtx::from_ints(&words).unwrap_err();
        assert!(e.to_string().contains(&n.to_string()), "{e}");
    }
}

#[test]
fn hash_ctx_hex() {
    let ctx = HashCtx([
        0x01234567,
        0x89abcdef,
        0,
        u32::MAX,
        1,
        0x80000000,
        0xdeadbeef,
        0x00c0ffee,
    ]);
    let hex = ctx.to_hex();
    assert_eq!(
        hex,
        "0123456789abcdef00000000ffffffff0000000180000000deadbeef00c0ffee"
    );
    assert_eq!(HashCtx::from_hex(&hex).unwrap(), ctx);
    assert_eq!(HashCtx::from_hex(&hex.to_uppercase()).unwrap(), ctx);
    assert!(HashCtx::from_hex(&hex[..63]).is_err());
    assert!(HashCtx::from_hex(&format!("{hex}0")).is_err());
    assert!(HashCtx::from_hex("").is_err());
    assert!(HashCtx::from_hex(&hex.replace('d', "g")).is_err());
}

#[test]
fn sha256_parse() {
    let lower: Sha256 = ABC_HEX.parse().unwrap();
    let upper: Sha256 = ABC_HEX.to_uppercase().parse().unwrap();
    assert_eq!(lower, upper);
    assert_eq!(upper.to_hex(), ABC_HEX, "display is lowercase");
    assert_eq!(format!("{upper:?}"), format!("Sha256({ABC_HEX})"));

    let mixed: String = ABC_HEX
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    assert_eq!(mixed.parse::<Sha256>().unwrap(), lower);

    let e = ABC_HEX[..63].parse::<Sha256>().unwrap_err();
    assert!(e.to_string().contains("63"), "{e}");
    let e = format!("{ABC_HEX}a").parse::<Sha256>().unwrap_err();
    assert!(e.to_string().contains("65"), "{e}");
    assert!("".parse::<Sha256>().is_err());
    assert!(format!("{}g", &ABC_HEX[..63]).parse::<Sha256>().is_err());
    assert!(format!("{} ", &ABC_HEX[..63]).parse::<Sha256>().is_err());
    assert!(format!("0x{}", &ABC_HEX[..62]).parse::<Sha256>().is_err());
    assert!(format!("-{}", &ABC_HEX[..63]).parse::<Sha256>().is_err());
    // 64 bytes, but not 64 hex digits: multi-byte characters.
    let multibyte = format!("é{}", &ABC_HEX[..62]);
    assert_eq!(multibyte.len(), 64);
    assert!(multibyte.parse::<Sha256>().is_err());
    // Padding and signs are not digits either.
    assert!("+".repeat(64).parse::<Sha256>().is_err());
}

/// Data up to ~64 KiB and sorted cut points at multiples of 64 within it.
fn data_and_cuts() -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
    proptest::collection::vec(any::<u8>(), 0..=65_600).prop_flat_map(|data| {
        let blocks = data.len() / BLOCK;
        let cuts = proptest::collection::vec(0..=blocks, 0..8);
        (Just(data), cuts)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn fold_piecewise_then_finalize((data, cuts) in data_and_cuts(), tail_blocks in 0usize..3) {
        let expected = reference(&data);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c * BLOCK).collect();
        cuts.sort_unstable();
        cuts.dedup();
        // The last cut ends folding; the rest of the data (possibly whole
        // blocks too) is the finalize tail.
        let fold_end = cuts.last().copied().unwrap_or(0);
        let mut m = Midstate::new();
        let mut at = 0;
        for &c in &cuts {
            m.fold(&data[at..c]);
            prop_assert_eq!(m.len(), c as u64);
            at = c;
        }
        prop_assert_eq!(at, fold_end);
        prop_assert_eq!(m.finalize(&data[fold_end..]).0, expected);

        // Resuming from the API form at every cut continues identically.
        let mut m = Midstate::new();
        let mut at = 0;
        for &c in &cuts {
            m.fold(&data[at..c]);
            at = c;
            m = Midstate::resume(m.ctx(), m.len()).unwrap();
        }
        // Fold a few more whole blocks if there are any, then finalize.
        let more = (tail_blocks * BLOCK).min((data.len() - at) / BLOCK * BLOCK);
        m.fold(&data[at..at + more]);
        let resumed = Midstate::resume(HashCtx::from_hex(&m.ctx().to_hex()).unwrap(), m.len())
            .unwrap();
        prop_assert_eq!(resumed, m);
        prop_assert_eq!(resumed.finalize(&data[at + more..]).0, expected);
    }

    #[test]
    fn hasher_random_chunks(
        data in proptest::collection::vec(any::<u8>(), 0..=65_600),
        sizes in proptest::collection::vec(0usize..300, 1..64),
    ) {
        let expected = reference(&data);
        let mut h = Hasher::new();
        let mut at = 0;
        let mut i = 0;
        while at < data.len() {
            // Cycle through the sizes; a big stride now and then. A zero
            // size is an empty update.
            let s = sizes[i % sizes.len()];
            let s = if i % 7 == 6 { s * 37 } else { s };
            if s == 0 {
                h.update(&[]);
            }
            let end = (at + s.max(1)).min(data.len());
            h.update(&data[at..end]);
            at = end;
            i += 1;
            prop_assert_eq!(h.len(), at as u64);
            prop_assert_eq!(h.midstate().is_some(), at % BLOCK == 0);
        }
        prop_assert_eq!(h.len(), data.len() as u64);
        prop_assert_eq!(h.finalize().0, expected);
    }

    #[test]
    fn hasher_midstate_resumes(
        data in proptest::collection::vec(any::<u8>(), 0..=8_192),
        cut_blocks in 0usize..=128,
    ) {
        let cut = (cut_blocks * BLOCK).min(data.len() / BLOCK * BLOCK);
        let mut h = Hasher::new();
        h.update(&data[..cut]);
        let mid = h.midstate().unwrap();
        let resumed = Midstate::resume(mid.ctx(), mid.len()).unwrap();
        let mut h2 = Hasher::from_midstate(resumed);
        h2.update(&data[cut..]);
        prop_assert_eq!(h2.finalize().0, reference(&data));
    }

    #[test]
    fn hash_ctx_round_trips(words in any::<[u32; 8]>()) {
        let ctx = HashCtx(words);
        prop_assert_eq!(HashCtx::from_hex(&ctx.to_hex()).unwrap(), ctx);
        prop_assert_eq!(HashCtx::from_hex(&ctx.to_hex().to_uppercase()).unwrap(), ctx);
        let ints: Vec<i128> = ctx.to_ints().iter().map(|&w| i128::from(w)).collect();
        prop_assert_eq!(HashCtx::from_ints(&ints).unwrap(), ctx);
    }

    #[test]
    fn hash_ctx_from_ints_range(words in proptest::collection::vec(any::<i64>(), 8)) {
        let ints: Vec<i128> = words.iter().map(|&w| i128::from(w)).collect();
        let ok = words.iter().all(|&w| (0..=i64::from(u32::MAX)).contains(&w));
        prop_assert_eq!(HashCtx::from_ints(&ints).is_ok(), ok);
    }

    #[test]
    fn sha256_parse_any_string(s in "\\PC{0,70}") {
        // Never panics; accepts exactly 64 hex digits.
        let ok = s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        prop_assert_eq!(s.parse::<Sha256>().is_ok(), ok);
    }

    #[test]
    fn sha256_display_round_trips(bytes in any::<[u8; 32]>()) {
        let d = Sha256(bytes);
        prop_assert_eq!(d.to_string().parse::<Sha256>().unwrap(), d);
    }
}
