//! Parsing of what clients send about digests and plans: hex SHA-256 digests,
//! `hashCtx` (as eight JSON integers and as hex), and KooDrive's `multiParts`
//! JSON, converted to `PartPlan`s the way the server does.
//!
//! Laws:
//! - `Sha256::from_str` / `HashCtx::from_hex` accept exactly 64 hex digits
//!   (either case), and `parse(to_hex(x)) == x`, `to_hex(parse(s)) ==
//!   lowercase(s)`;
//! - `HashCtx::from_ints` accepts exactly eight integers in 0..=u32::MAX and
//!   `to_ints(from_ints(w)) == w`;
//! - a `multiParts` entry deserialized as the server does gives a `PartPlan`
//!   exactly when 1 <= partNumber <= 10000 and the hashCtx (if any) is eight
//!   u32 words; the plan carries the entry's values and survives the record
//!   format (serde JSON) unchanged; `plan::merge` of the entries never panics
//!   and only accepts entries that parsed.
#![no_main]

use std::collections::BTreeMap;
use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use partseal::plan::{self, Limits, PartPlan};
use partseal::{Error, HashCtx, Sha256};
use serde::Deserialize;
use serde_json::Value;

/// The server's `MultiPartInfo` (server/src/koodrive.rs `PartInfo`), field
/// for field: that type is private, so it is restated here.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartInfo {
    part_number: u64,
    part_size: u64,
    #[serde(default)]
    part_offset: Option<u64>,
    #[serde(default)]
    hash_ctx: Option<Vec<i128>>,
}

/// What the server does with one entry (`PartInfo::plan`).
fn to_plan(p: &PartInfo) -> Result<PartPlan, Error> {
    let ctx = p.hash_ctx.as_deref().map(HashCtx::from_ints).transpose()?;
    PartPlan::new(p.part_number, p.part_size, p.part_offset, ctx)
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn check_hex(s: &str) {
    match Sha256::from_str(s) {
        Ok(d) => {
            assert!(is_hex64(s), "accepted {s:?}");
            assert_eq!(d.to_hex(), s.to_ascii_lowercase());
            assert_eq!(d.to_string(), d.to_hex());
            assert_eq!(Sha256::from_str(&d.to_hex()), Ok(d));
            assert_eq!(Sha256::from_str(&d.to_hex().to_ascii_uppercase()), Ok(d));
        }
        Err(e) => {
            assert!(!is_hex64(s), "refused {s:?}");
            assert!(!e.to_string().is_empty());
        }
    }
    match HashCtx::from_hex(s) {
        Ok(c) => {
            assert!(is_hex64(s), "accepted {s:?}");
            assert_eq!(c.to_hex(), s.to_ascii_lowercase());
            check_ctx_round_trips(c);
        }
        Err(e) => {
            assert!(!is_hex64(s), "refused {s:?}");
            assert!(!e.to_string().is_empty());
        }
    }
}

fn check_ctx_round_trips(c: HashCtx) {
    assert_eq!(HashCtx::from_hex(&c.to_hex()), Ok(c));
    let ints = c.to_ints().map(i128::from);
    assert_eq!(HashCtx::from_ints(&ints), Ok(c));
    // Its hex form is the big-endian words, i.e. a digest's bytes.
    let d = Sha256::from_str(&c.to_hex()).expect("ctx hex is a digest");
    for (i, w) in c.0.iter().enumerate() {
        assert_eq!(d.0[4 * i..4 * i + 4], w.to_be_bytes());
    }
}

fn check_ints(words: &[i128]) {
    let ok = words.len() == 8
        && words
            .iter()
            .all(|&w| (0..=i128::from(u32::MAX)).contains(&w));
    match HashCtx::from_ints(words) {
        Ok(c) => {
            assert!(ok, "accepted {words:?}");
            let back: Vec<i128> = c.to_ints().iter().map(|&w| i128::from(w)).collect();
            assert_eq!(back, words);
            check_ctx_round_trips(c);
        }
        Err(e) => {
            assert!(!ok, "refused {words:?}");
            assert!(!e.to_string().is_empty());
        }
    }
}

/// Integers that are likely near the edges of u32, taken from raw bytes.
fn words_from(data: &[u8]) -> Vec<i128> {
    data.chunks(5)
        .take(12)
        .map(|c| {
            let mut b = [0u8; 4];
            let n = c.len().min(5) - 1;
            b[..n.min(4)].copy_from_slice(&c[1..1 + n.min(4)]);
            let v = i128::from(u32::from_le_bytes(b));
            match c[0] % 6 {
                0 => v,
                1 => i128::from(u32::MAX) - (v & 0xff),
                2 => i128::from(u32::MAX) + 1 + (v & 0xff),
                3 => -v - 1,
                4 => v << 40,
                _ => v & 0xff,
            }
        })
        .collect()
}

/// The value as the server's serde derive sees it, checked against a
/// field-by-field reading of the same JSON value.
fn check_entry(entry: &Value) -> Option<PartPlan> {
    let parsed: Result<PartInfo, _> = serde_json::from_value(entry.clone());
    // serde's derive also takes a struct as a sequence of its fields in
    // order (`[1, 5242880]`), so the server does too.
    const FIELDS: [&str; 4] = ["partNumber", "partSize", "partOffset", "hashCtx"];
    let normalized = match entry {
        Value::Array(a) if (2..=4).contains(&a.len()) => Some(
            FIELDS
                .iter()
                .zip(a)
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect::<serde_json::Map<_, _>>(),
        ),
        Value::Object(o) => Some(o.clone()),
        _ => None,
    };
    let obj = normalized.as_ref();
    let field = |k: &str| obj.and_then(|o| o.get(k));
    let Ok(info) = parsed else {
        // serde refused: the entry is not an object with two u64 fields and
        // optional fields of the right types.
        let well_typed = obj.is_some()
            && field("partNumber").and_then(Value::as_u64).is_some()
            && field("partSize").and_then(Value::as_u64).is_some()
            && field("partOffset").is_none_or(|v| v.is_null() || v.as_u64().is_some())
            && field("hashCtx").is_none_or(|v| {
                v.is_null()
                    || v.as_array()
                        .is_some_and(|a| a.iter().all(|x| x.is_i64() || x.is_u64()))
            });
        assert!(!well_typed, "serde refused a well-typed entry {entry}");
        return None;
    };
    assert_eq!(
        field("partNumber").and_then(Value::as_u64),
        Some(info.part_number)
    );
    assert_eq!(
        field("partSize").and_then(Value::as_u64),
        Some(info.part_size)
    );
    assert_eq!(
        field("partOffset").and_then(Value::as_u64),
        info.part_offset
    );
    if let Some(words) = &info.hash_ctx {
        check_ints(words);
    }
    let ctx_ok = info
        .hash_ctx
        .as_deref()
        .is_none_or(|w| HashCtx::from_ints(w).is_ok());
    let number_ok = (1..=10_000).contains(&info.part_number);
    match to_plan(&info) {
        Ok(p) => {
            assert!(ctx_ok && number_ok, "accepted {info:?}");
            assert_eq!(u64::from(p.number), info.part_number);
            assert_eq!(p.size, info.part_size);
            assert_eq!(p.offset, info.part_offset);
            assert_eq!(
                p.ctx.map(|c| c.to_ints().map(i128::from).to_vec()),
                info.hash_ctx
            );
            assert_eq!(
                p.is_chain(),
                info.part_offset.is_some() || info.hash_ctx.is_some()
            );
            // The upload record stores plans as JSON (ctx as hex).
            let json = serde_json::to_string(&p).expect("plan serializes");
            let back: PartPlan = serde_json::from_str(&json).expect("plan deserializes");
            assert_eq!(back, p);
            Some(p)
        }
        Err(Error::BadInput(_)) => {
            assert!(!ctx_ok, "ctx refused: {info:?}");
            None
        }
        Err(Error::PartOutOfRange { part, reason }) => {
            assert!(ctx_ok && !number_ok, "number refused: {info:?}");
            assert_eq!(part, info.part_number);
            assert!(!reason.is_empty());
            None
        }
        Err(e) => panic!("unexpected error {e:?} for {info:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check_hex(&text);
    check_hex(text.trim());
    if data.len() >= 64 {
        check_hex(&String::from_utf8_lossy(&data[..64]));
    }
    if data.len() >= 32 {
        let mut raw = [0u8; 32];
        raw.copy_from_slice(&data[..32]);
        let d = Sha256(raw);
        assert_eq!(Sha256::from_str(&d.to_hex()), Ok(d));
        let mut words = [0u32; 8];
        for (w, c) in words.iter_mut().zip(raw.chunks_exact(4)) {
            *w = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        check_ctx_round_trips(HashCtx(words));
    }
    check_ints(&words_from(data));

    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    // Either a create/uploadUrl body with `multiParts`, or the list itself.
    let entries = match &value {
        Value::Array(a) => a.clone(),
        Value::Object(o) => match o.get("multiParts") {
            Some(Value::Array(a)) => a.clone(),
            Some(other) => vec![other.clone()],
            None => vec![value.clone()],
        },
        other => vec![other.clone()],
    };
    let length = value.get("length").and_then(Value::as_u64);
    let plans: Vec<Option<PartPlan>> = entries.iter().map(check_entry).collect();
    // The server refuses the whole call if any entry fails to convert;
    // otherwise the engine merges the plan, which must not panic.
    if let Some(plans) = plans.into_iter().collect::<Option<Vec<_>>>() {
        let limits = Limits::default();
        if let Ok(out) = plan::merge(&BTreeMap::new(), &plans, length, &limits) {
            assert_eq!(out.len(), plans.len());
            for p in &plans {
                assert_eq!(out.get(&p.number), Some(p));
            }
        }
    }
});
