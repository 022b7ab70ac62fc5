//! Chain verification equals hashing front to back.
//!
//! Random data (up to 64 KiB) is cut at random 64-byte-aligned points into
//! parts, the last of any length. Each part's starting midstate is computed
//! by folding everything before it; every part is written to its own file
//! (on tmpfs when there is one) and `chain::verify_chain` runs over them.
//!
//! Laws:
//! - folding in parts and finalizing gives `sha2::Sha256::digest` of the
//!   whole, as does a streaming `Hasher` fed in random chunks; midstates
//!   survive the `hashCtx` round trip (`Midstate::resume(ctx, offset)`);
//! - the true chain is accepted, and returns that digest;
//! - one byte flipped in part k is refused naming part k (`LinkMismatch`)
//!   for every part but the last, and as a `DigestMismatch` with the right
//!   digests for the last (accepted with the new digest when no digest is
//!   expected); a wrong `hashCtx` for part k+1 is refused naming part k; a
//!   last part one byte longer or shorter gives a `DigestMismatch`;
//! - a link that is not the last must be whole blocks (`BadPlan`).
#![no_main]

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Mutex;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use partseal::hazmat::{Hasher, Midstate};
use partseal::hazmat::{LinkInput, LinkValue, compute_link, verify_chain};
use partseal::{DigestKind, Error, HashCtx, Sha256};

const BLOCK: usize = 64;
const MAX_LEN: usize = 64 << 10;
const MAX_PARTS: usize = 17;

#[derive(Arbitrary, Debug)]
enum Mutation {
    None,
    Flip { part: u8, at: u16, mask: u8 },
    Ctx { part: u8, words: [u32; 8] },
    ExtendLast(u8),
    TruncateLast,
}

#[derive(Arbitrary, Debug)]
struct Input {
    data: Vec<u8>,
    /// Bytes appended to `data` from a counter pattern, so that large inputs
    /// need no large fuzzer inputs.
    fill: u16,
    /// Cut points, in 64-byte blocks from the start.
    cuts: Vec<u16>,
    /// Chunk sizes for the streaming hasher.
    chunks: Vec<u16>,
    mutation: Mutation,
}

/// Part files, opened once and unlinked at once, so nothing is left behind
/// whatever way the fuzzer exits.
static FILES: Mutex<Vec<File>> = Mutex::new(Vec::new());

fn scratch_dir() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

fn ensure_files(files: &mut Vec<File>, n: usize) {
    while files.len() < n {
        let path = scratch_dir().join(format!(
            "partseal-fuzz-{}-{}.part",
            std::process::id(),
            files.len()
        ));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("scratch file");
        std::fs::remove_file(&path).expect("unlink scratch file");
        files.push(f);
    }
}

fn write_part(f: &File, bytes: &[u8]) {
    f.set_len(0).expect("truncate");
    f.write_all_at(bytes, 0).expect("write part");
}

/// Runs `verify_chain` over the first `starts.len()` files.
fn verify(
    files: &[File],
    starts: &[Midstate],
    lens: &[u64],
    expected: Option<&Sha256>,
) -> Result<Sha256, Error> {
    let links: Vec<LinkInput<'_>> = starts
        .iter()
        .enumerate()
        .map(|(i, s)| LinkInput {
            part: i as u32 + 1,
            start: *s,
            file: &files[i],
            len: lens[i],
        })
        .collect();
    verify_chain(&links, expected)
}

fn assert_link_mismatch(r: Result<Sha256, Error>, part: usize, what: &str) {
    match r {
        Err(Error::LinkMismatch { part: p, .. }) if p as usize == part + 1 => {}
        other => panic!(
            "{what}: expected LinkMismatch for part {}, got {other:?}",
            part + 1
        ),
    }
}

fn assert_digest_mismatch(
    r: Result<Sha256, Error>,
    expected: &Sha256,
    actual: &Sha256,
    what: &str,
) {
    match r {
        Err(Error::DigestMismatch {
            kind: DigestKind::Sha256,
            expected: e,
            actual: a,
        }) if e == expected.to_hex() && a == actual.to_hex() => {}
        other => panic!("{what}: expected DigestMismatch {expected} vs {actual}, got {other:?}"),
    }
}

fn assert_ok(r: Result<Sha256, Error>, want: &Sha256, what: &str) {
    match r {
        Ok(d) if d == *want => {}
        other => panic!("{what}: expected Ok({want}), got {other:?}"),
    }
}

fuzz_target!(|input: Input| {
    let mut data = input.data;
    data.truncate(MAX_LEN);
    let fill = usize::from(input.fill).min(MAX_LEN - data.len());
    data.extend((0..fill).map(|i| (i as u8) ^ ((i >> 8) as u8).wrapping_mul(31)));
    let whole = {
        use sha2::Digest;
        Sha256(sha2::Sha256::digest(&data).into())
    };

    // Cut points in blocks; repeated cuts give empty parts, legal links too.
    let blocks = data.len() / BLOCK;
    let mut bounds: Vec<usize> = input
        .cuts
        .iter()
        .take(MAX_PARTS - 1)
        .map(|&c| usize::from(c) % (blocks + 1) * BLOCK)
        .collect();
    bounds.push(0);
    bounds.sort_unstable();
    bounds.push(data.len());
    let parts: Vec<&[u8]> = bounds.windows(2).map(|w| &data[w[0]..w[1]]).collect();
    let last = parts.len() - 1;

    // Starting midstates, by folding everything before each part.
    let mut starts = Vec::with_capacity(parts.len());
    let mut mid = Midstate::new();
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(mid.len(), bounds[i] as u64);
        assert_eq!(Midstate::resume(mid.ctx(), mid.len()), Ok(mid));
        assert_eq!(HashCtx::from_hex(&mid.ctx().to_hex()), Ok(mid.ctx()));
        assert!(Midstate::resume(mid.ctx(), mid.len() + 1 + u64::from(input.fill % 63)).is_err());
        starts.push(mid);
        if i < last {
            mid.fold(p);
        }
    }
    assert_eq!(mid.finalize(parts[last]), whole, "fold + finalize != sha2");

    // A streaming hasher fed in random chunks agrees, and its midstates at
    // part boundaries are the folded ones.
    let mut h = Hasher::new();
    let mut at = 0;
    let mut sizes = input
        .chunks
        .iter()
        .map(|&c| usize::from(c) % 4097 + 1)
        .cycle();
    while at < data.len() {
        let n = sizes.next().unwrap_or(data.len());
        let end = (at + n).min(data.len());
        h.update(&data[at..end]);
        at = end;
        assert_eq!(h.len(), at as u64);
        if let Some(m) = h.midstate() {
            assert_eq!(m.len() as usize, at);
            if let Some(i) = bounds[..=last].iter().rposition(|&b| b == at) {
                assert_eq!(m, starts[i], "Hasher midstate at byte {at}");
            }
        }
    }
    assert_eq!(h.finalize(), whole, "Hasher != sha2");

    // The chain over real files.
    let mut files = FILES.lock().unwrap_or_else(|e| e.into_inner());
    ensure_files(&mut files, parts.len());
    for (f, p) in files.iter().zip(&parts) {
        write_part(f, p);
    }
    let mut lens: Vec<u64> = parts.iter().map(|p| p.len() as u64).collect();
    assert_ok(
        verify(&files, &starts, &lens, Some(&whole)),
        &whole,
        "true chain",
    );
    assert_ok(
        verify(&files, &starts, &lens, None),
        &whole,
        "true chain, no digest",
    );
    for (i, p) in parts.iter().enumerate() {
        let v = compute_link(starts[i], &files[i], lens[i], i == last).expect("link");
        if i < last {
            assert_eq!(v, LinkValue::State(starts[i + 1].ctx()));
        } else {
            assert_eq!(v, LinkValue::Digest(whole));
            if p.len() % BLOCK != 0 {
                match compute_link(starts[i], &files[i], lens[i], false) {
                    Err(Error::BadPlan(m)) => assert!(!m.is_empty()),
                    other => panic!("a ragged middle link was not refused: {other:?}"),
                }
            }
        }
    }

    match input.mutation {
        Mutation::None => {}
        Mutation::Flip { part, at, mask } => {
            // Only parts with bytes can have one flipped.
            let nonempty: Vec<usize> = (0..parts.len()).filter(|&i| !parts[i].is_empty()).collect();
            let Some(&k) = nonempty.get(usize::from(part) % nonempty.len().max(1)) else {
                return;
            };
            let mut bad = parts[k].to_vec();
            let at = usize::from(at) % bad.len();
            bad[at] ^= mask.max(1);
            write_part(&files[k], &bad);
            let r = verify(&files, &starts, &lens, Some(&whole));
            if k < last {
                assert_link_mismatch(r, k, "flipped byte");
                assert_link_mismatch(
                    verify(&files, &starts, &lens, None),
                    k,
                    "flipped byte, no digest",
                );
            } else {
                let mut all = data[..bounds[k]].to_vec();
                all.extend_from_slice(&bad);
                let actual = Sha256::digest(&all);
                assert_ne!(actual, whole);
                assert_digest_mismatch(r, &whole, &actual, "flipped byte in the last part");
                assert_ok(
                    verify(&files, &starts, &lens, None),
                    &actual,
                    "flipped last, no digest",
                );
            }
            // Putting the byte back restores the chain.
            write_part(&files[k], parts[k]);
            assert_ok(
                verify(&files, &starts, &lens, Some(&whole)),
                &whole,
                "restored chain",
            );
        }
        Mutation::Ctx { part, words } => {
            if last == 0 {
                return;
            }
            // A wrong hashCtx for part k+1 (k+1 >= 2) breaks the link of part k.
            let k = usize::from(part) % last;
            let ctx = HashCtx(words);
            if ctx == starts[k + 1].ctx() {
                return;
            }
            let mut bad = starts.clone();
            bad[k + 1] = Midstate::resume(ctx, bounds[k + 1] as u64).expect("aligned");
            let r = verify(&files, &bad, &lens, Some(&whole));
            assert_link_mismatch(r, k, "wrong hashCtx");
        }
        Mutation::ExtendLast(b) => {
            let mut longer = parts[last].to_vec();
            longer.push(b);
            write_part(&files[last], &longer);
            lens[last] += 1;
            let mut all = data.clone();
            all.push(b);
            let actual = Sha256::digest(&all);
            assert_digest_mismatch(
                verify(&files, &starts, &lens, Some(&whole)),
                &whole,
                &actual,
                "longer last part",
            );
            assert_ok(
                verify(&files, &starts, &lens, None),
                &actual,
                "longer last part, no digest",
            );
        }
        Mutation::TruncateLast => {
            if parts[last].is_empty() {
                return;
            }
            lens[last] -= 1;
            let actual = Sha256::digest(&data[..data.len() - 1]);
            assert_digest_mismatch(
                verify(&files, &starts, &lens, Some(&whole)),
                &whole,
                &actual,
                "shorter last part",
            );
        }
    }
});
