//! End-to-end tests of the `partseal` command line: `verify` against
//! `sha2`, `--out` merging, exit statuses, and the `ctx` / `verify --plan`
//! round trip.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use proptest::prelude::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

const SHA256_IV: [u64; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

fn partseal(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_partseal"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the partseal binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn sha_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn expected_line(data: &[u8]) -> String {
    format!("{}  {}\n", sha_hex(data), data.len())
}

/// Deterministic pseudo-random bytes (splitmix64).
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s = s.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `data` cut at `cuts` (sorted offsets, repeats give empty parts)
/// as `part-1`, `part-2`, ... in `dir`; returns the file names.
fn write_parts(dir: &Path, data: &[u8], cuts: &[usize]) -> Vec<String> {
    let mut bounds = vec![0];
    bounds.extend(cuts.iter().copied());
    bounds.push(data.len());
    bounds
        .windows(2)
        .enumerate()
        .map(|(i, w)| {
            let name = format!("part-{}", i + 1);
            fs::write(dir.join(&name), &data[w[0]..w[1]]).unwrap();
            name
        })
        .collect()
}

/// Writes `data` split into `part_size`-byte parts (as `ctx` plans them).
fn write_even_parts(dir: &Path, data: &[u8], part_size: usize) -> Vec<String> {
    let cuts: Vec<usize> = (1..)
        .map(|k| k * part_size)
        .take_while(|&c| c < data.len())
        .collect();
    write_parts(dir, data, &cuts)
}

fn verify_args<'a>(extra: &[&'a str], parts: &'a [String]) -> Vec<&'a str> {
    let mut args = vec!["verify"];
    args.extend_from_slice(extra);
    args.extend(parts.iter().map(String::as_str));
    args
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Runs `ctx` on `data` and returns the plan JSON.
fn ctx_plan(dir: &Path, data: &[u8], part_size: usize) -> Value {
    fs::write(dir.join("whole"), data).unwrap();
    let o = partseal(
        &["ctx", "--part-size", &part_size.to_string(), "whole"],
        dir,
    );
    assert!(o.status.success(), "ctx failed: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("ctx prints JSON")
}

fn write_plan(dir: &Path, plan: &Value) -> String {
    fs::write(dir.join("plan.json"), serde_json::to_vec(plan).unwrap()).unwrap();
    "plan.json".into()
}

#[test]
fn verify_prints_sha256_and_length_for_edge_lengths_split_at_random() {
    let dir = TempDir::new().unwrap();
    let lengths = [0usize, 1, 63, 64, 65, 127, 128, 129, 4096, (3 << 20) + 17];
    for (i, &len) in lengths.iter().enumerate() {
        let data = bytes(len, i as u64);
        // Cuts from a seeded stream, with an empty part at the front, at the
        // end and (repeated cut) in the middle.
        let r = bytes(16, 100 + i as u64);
        let mut cuts: Vec<usize> = r
            .chunks(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize % (len + 1))
            .collect();
        cuts.push(cuts[0]);
        cuts.push(0);
        cuts.push(len);
        cuts.sort();
        let parts = write_parts(dir.path(), &data, &cuts);
        let o = partseal(&verify_args(&[], &parts), dir.path());
        assert!(o.status.success(), "len {len}: {}", stderr(&o));
        assert_eq!(stdout(&o), expected_line(&data), "len {len}, cuts {cuts:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn verify_matches_sha2_on_random_data_and_random_parts(
        data in prop::collection::vec(any::<u8>(), 0..1500),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let dir = TempDir::new().unwrap();
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
        cuts.sort();
        let parts = write_parts(dir.path(), &data, &cuts);
        let o = partseal(&verify_args(&["--out", "merged"], &parts), dir.path());
        prop_assert!(o.status.success(), "{}", stderr(&o));
        prop_assert_eq!(stdout(&o), expected_line(&data));
        prop_assert_eq!(fs::read(dir.path().join("merged")).unwrap(), data);
    }

    #[test]
    fn ctx_then_verify_plan_round_trips(
        data in prop::collection::vec(any::<u8>(), 0..1200),
        k in 1usize..4,
    ) {
        let dir = TempDir::new().unwrap();
        let part_size = 64 * k;
        let plan = ctx_plan(dir.path(), &data, part_size);
        let parts = write_even_parts(dir.path(), &data, part_size);
        let plan_file = write_plan(dir.path(), &plan);
        let o = partseal(&verify_args(&["--plan", &plan_file], &parts), dir.path());
        prop_assert!(o.status.success(), "{}", stderr(&o));
        prop_assert_eq!(stdout(&o), expected_line(&data));
    }
}

#[test]
fn verify_out_writes_byte_identical_concatenation() {
    let dir = TempDir::new().unwrap();
    let data = bytes((1 << 20) + 333, 7);
    let parts = write_parts(dir.path(), &data, &[10, 10, 70_000, 600_000]);
    let o = partseal(&verify_args(&["--out", "merged.bin"], &parts), dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), expected_line(&data));
    assert_eq!(fs::read(dir.path().join("merged.bin")).unwrap(), data);
    // Nothing but the parts and the output: no temporary left behind.
    let mut want = parts.clone();
    want.push("merged.bin".into());
    want.sort();
    assert_eq!(files_in(dir.path()), want);
}

#[test]
fn verify_out_replaces_an_existing_file() {
    let dir = TempDir::new().unwrap();
    let data = bytes(300, 8);
    let parts = write_parts(dir.path(), &data, &[100]);
    fs::write(dir.path().join("merged"), vec![1u8; 5000]).unwrap();
    let o = partseal(&verify_args(&["--out", "merged"], &parts), dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(dir.path().join("merged")).unwrap(), data);
}

#[test]
fn sha256_mismatch_exits_1_names_both_digests_and_leaves_no_output() {
    let dir = TempDir::new().unwrap();
    let data = bytes(5000, 9);
    let parts = write_parts(dir.path(), &data, &[1000, 4000]);
    let wrong = sha_hex(b"something else");
    let o = partseal(
        &verify_args(&["--sha256", &wrong, "--out", "merged"], &parts),
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains(&wrong), "expected digest missing: {err}");
    assert!(
        err.contains(&sha_hex(&data)),
        "actual digest missing: {err}"
    );
    assert!(o.stdout.is_empty());
    assert_eq!(files_in(dir.path()), parts, "no output or temporary file");
}

#[test]
fn matching_sha256_in_upper_case_is_accepted() {
    let dir = TempDir::new().unwrap();
    let data = bytes(777, 10);
    let parts = write_parts(dir.path(), &data, &[64]);
    let upper = sha_hex(&data).to_uppercase();
    let o = partseal(&verify_args(&["--sha256", &upper], &parts), dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), expected_line(&data));
}

#[test]
fn missing_part_file_exits_2_naming_it_and_writes_nothing() {
    let dir = TempDir::new().unwrap();
    let parts = write_parts(dir.path(), &bytes(100, 11), &[]);
    let o = partseal(
        &["verify", "--out", "merged", &parts[0], "no-such-part"],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no-such-part"), "{}", stderr(&o));
    assert_eq!(files_in(dir.path()), parts);
}

#[test]
fn bad_hex_or_no_parts_exit_2() {
    let dir = TempDir::new().unwrap();
    let parts = write_parts(dir.path(), &bytes(100, 12), &[]);
    let not_hex = "g".repeat(64);
    for args in [
        verify_args(&["--sha256", "abc"], &parts),
        verify_args(&["--sha256", &not_hex], &parts),
        vec!["verify"],
        vec!["verify", "--sha256", "00"],
    ] {
        let o = partseal(&args, dir.path());
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(!stderr(&o).is_empty(), "{args:?}");
    }
}

#[test]
fn ctx_plans_consecutive_parts_with_their_midstates() {
    let dir = TempDir::new().unwrap();
    let data = bytes(64 * 10 + 5, 13);
    let plan = ctx_plan(dir.path(), &data, 192);
    assert_eq!(plan["sha256"], sha_hex(&data));
    assert_eq!(plan["length"], data.len());
    let parts = plan["parts"].as_array().unwrap();
    let sizes: Vec<u64> = parts
        .iter()
        .map(|p| p["partSize"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [192, 192, 192, 69]);
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p["partNumber"], i + 1);
        assert_eq!(p["partOffset"], i * 192);
        // The state before the part, computed independently of the CLI.
        let mut mid = partseal::hazmat::Midstate::new();
        mid.fold(&data[..i * 192]);
        let want = serde_json::to_value(mid.ctx().to_ints()).unwrap();
        assert_eq!(p["hashCtx"], want, "part {}", i + 1);
    }
    assert_eq!(
        parts[0]["hashCtx"],
        serde_json::to_value(SHA256_IV).unwrap()
    );
}

#[test]
fn ctx_of_exactly_divisible_file_has_no_empty_trailing_part() {
    let dir = TempDir::new().unwrap();
    let data = bytes(128 * 3, 14);
    let plan = ctx_plan(dir.path(), &data, 128);
    let parts = plan["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    assert!(parts.iter().all(|p| p["partSize"] == 128));
}

#[test]
fn ctx_of_empty_file_is_one_empty_part() {
    let dir = TempDir::new().unwrap();
    let plan = ctx_plan(dir.path(), b"", 64);
    assert_eq!(plan["sha256"], sha_hex(b""));
    assert_eq!(plan["length"], 0);
    let parts = plan["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0]["partSize"], 0);
    assert_eq!(
        parts[0]["hashCtx"],
        serde_json::to_value(SHA256_IV).unwrap()
    );
}

#[test]
fn ctx_then_verify_plan_round_trips_at_several_part_counts() {
    let dir = TempDir::new().unwrap();
    // (length, part size): one part, exactly divisible, final partial part,
    // and a file of a few MiB spanning several read windows per part.
    for (len, part_size) in [
        (50, 64),
        (64 * 6, 128),
        (64 * 6 + 1, 128),
        (1000, 64),
        ((9 << 20) + 100, 3 << 20),
        // Parts of 5 MiB: checked through mapped windows (the last, shorter
        // one through the read buffer).
        ((13 << 20) + 100, 5 << 20),
    ] {
        let data = bytes(len, len as u64);
        let plan = ctx_plan(dir.path(), &data, part_size);
        let parts = write_even_parts(dir.path(), &data, part_size);
        assert_eq!(plan["parts"].as_array().unwrap().len(), parts.len());
        let plan_file = write_plan(dir.path(), &plan);
        let o = partseal(&verify_args(&["--plan", &plan_file], &parts), dir.path());
        assert!(o.status.success(), "len {len}: {}", stderr(&o));
        assert_eq!(stdout(&o), expected_line(&data), "len {len}");
        for p in parts {
            fs::remove_file(dir.path().join(p)).unwrap();
        }
    }
}

/// Data of 5 parts of 256 bytes (the last one partial), its plan and parts.
fn five_parts(dir: &Path) -> (Vec<u8>, Value, Vec<String>) {
    let data = bytes(256 * 4 + 100, 15);
    let plan = ctx_plan(dir, &data, 256);
    let parts = write_even_parts(dir, &data, 256);
    assert_eq!(parts.len(), 5);
    (data, plan, parts)
}

fn flip_byte(path: &Path, at: usize) {
    let mut b = fs::read(path).unwrap();
    b[at] ^= 0x01;
    fs::write(path, b).unwrap();
}

#[test]
fn corrupted_part_exits_1_naming_that_part() {
    let dir = TempDir::new().unwrap();
    let (_, plan, parts) = five_parts(dir.path());
    flip_byte(&dir.path().join(&parts[2]), 17);
    let plan_file = write_plan(dir.path(), &plan);
    let o = partseal(
        &verify_args(&["--plan", &plan_file, "--out", "merged"], &parts),
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("part 3 does not lead to part 4's declared hashCtx"),
        "stderr: {err}"
    );
    assert!(o.stdout.is_empty());
    assert!(!dir.path().join("merged").exists());
}

/// A byte changed deep in a part that is checked through mapped windows
/// (past the first window) is found and the part named.
#[test]
fn corrupted_mapped_part_exits_1_naming_that_part() {
    let dir = TempDir::new().unwrap();
    let data = bytes(3 * (10 << 20), 21);
    let plan = ctx_plan(dir.path(), &data, 10 << 20);
    let parts = write_even_parts(dir.path(), &data, 10 << 20);
    flip_byte(&dir.path().join(&parts[1]), (5 << 20) + 3);
    let plan_file = write_plan(dir.path(), &plan);
    let o = partseal(&verify_args(&["--plan", &plan_file], &parts), dir.path());
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("part 2 does not lead to part 3's declared hashCtx"),
        "stderr: {err}"
    );
}

#[test]
fn corrupted_last_part_exits_1_with_digest_mismatch() {
    let dir = TempDir::new().unwrap();
    let (data, plan, parts) = five_parts(dir.path());
    flip_byte(&dir.path().join(&parts[4]), 99);
    let plan_file = write_plan(dir.path(), &plan);
    let o = partseal(&verify_args(&["--plan", &plan_file], &parts), dir.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(&sha_hex(&data)), "{}", stderr(&o));
}

#[test]
fn verify_plan_accepts_a_bare_array_with_sha256_flag() {
    let dir = TempDir::new().unwrap();
    let (data, plan, parts) = five_parts(dir.path());
    let plan_file = write_plan(dir.path(), &plan["parts"]);
    let good = sha_hex(&data);
    let o = partseal(
        &verify_args(&["--plan", &plan_file, "--sha256", &good], &parts),
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), expected_line(&data));

    let wrong = sha_hex(b"x");
    let o = partseal(
        &verify_args(&["--plan", &plan_file, "--sha256", &wrong], &parts),
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(&wrong));
}

#[test]
fn verify_plan_with_out_writes_the_concatenation() {
    let dir = TempDir::new().unwrap();
    let (data, plan, parts) = five_parts(dir.path());
    let plan_file = write_plan(dir.path(), &plan);
    let o = partseal(
        &verify_args(&["--plan", &plan_file, "--out", "merged"], &parts),
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), expected_line(&data));
    assert_eq!(fs::read(dir.path().join("merged")).unwrap(), data);
}

#[test]
fn verify_plan_with_wrong_part_count_exits_2() {
    let dir = TempDir::new().unwrap();
    let (_, plan, parts) = five_parts(dir.path());
    let plan_file = write_plan(dir.path(), &plan);
    let o = partseal(
        &verify_args(&["--plan", &plan_file], &parts[..4]),
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    let mut six = parts.clone();
    six.push(parts[0].clone());
    let o = partseal(&verify_args(&["--plan", &plan_file], &six), dir.path());
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn verify_plan_with_part_of_wrong_length_exits_2_naming_it() {
    let dir = TempDir::new().unwrap();
    let (_, plan, mut parts) = five_parts(dir.path());
    let plan_file = write_plan(dir.path(), &plan);
    // Part 5 (100 bytes) where part 4 (256 bytes) belongs, and vice versa.
    parts.swap(3, 4);
    let o = partseal(&verify_args(&["--plan", &plan_file], &parts), dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("part 4"), "{}", stderr(&o));
}

#[test]
fn verify_plan_refuses_inconsistent_plans_with_exit_2() {
    let dir = TempDir::new().unwrap();
    let (_, plan, parts) = five_parts(dir.path());
    let mut bad_plans = Vec::new();
    let mut p = plan.clone();
    p["parts"][2]["partOffset"] = 500.into();
    bad_plans.push((p, "part 3"));
    let mut p = plan.clone();
    p["parts"][1]["hashCtx"][0] = (1u64 << 32).into();
    bad_plans.push((p, "part 2"));
    let mut p = plan.clone();
    p["parts"][3].as_object_mut().unwrap().remove("hashCtx");
    bad_plans.push((p, "part 4"));
    let mut p = plan.clone();
    p["parts"][0]["hashCtx"] = plan["parts"][1]["hashCtx"].clone();
    bad_plans.push((p, "part 1"));
    let mut p = plan.clone();
    p["length"] = 5.into();
    bad_plans.push((p, "length"));
    let mut p = plan.clone();
    p["parts"] = Value::Array(vec![]);
    bad_plans.push((p, "no parts"));
    for (p, needle) in bad_plans {
        let plan_file = write_plan(dir.path(), &p);
        let o = partseal(&verify_args(&["--plan", &plan_file], &parts), dir.path());
        assert_eq!(o.status.code(), Some(2), "{needle}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{needle}: {}", stderr(&o));
    }
}

#[test]
fn ctx_refuses_part_size_not_a_positive_multiple_of_64() {
    let dir = TempDir::new().unwrap();
    fs::write(dir.path().join("f"), bytes(1000, 16)).unwrap();
    for n in ["0", "63", "100", "-64", "lots"] {
        let o = partseal(&["ctx", "--part-size", n, "f"], dir.path());
        assert_eq!(o.status.code(), Some(2), "part size {n}");
        assert!(o.stdout.is_empty());
    }
}

#[test]
fn ctx_of_missing_file_exits_2() {
    let dir = TempDir::new().unwrap();
    let o = partseal(&["ctx", "--part-size", "64", "absent"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("absent"));
}
