//! `partseal`: the offline command line of the partseal engine.
//!
//! * `partseal verify [--sha256 HEX] [--out FILE] PART...` hashes the parts
//!   in order (pipelined with writing them, merged, into `FILE`) and prints
//!   `<sha256-hex>  <total-length>`.
//! * `partseal ctx --part-size N FILE` prints, as JSON, the part plan a
//!   KooDrive client would send for `FILE`: every part with its `hashCtx`
//!   (the SHA-256 midstate of all bytes before it).
//! * `partseal verify --plan PLAN.json [--sha256 HEX] [--out FILE] PART...`
//!   checks every part against its `hashCtx` on all cores at once and names
//!   the first part whose bytes break the chain.
//!
//! Exit status: 0 on success, 1 when the bytes do not match (a digest or a
//! chain link), 2 on bad input (usage, unreadable files, a bad plan, I/O).
//! The merged `FILE` is written to a temporary sibling, fsynced and renamed
//! into place only once everything matched, so a failed run never leaves a
//! partial or unverified `FILE` behind (an existing `FILE` is left as it was).
//!
//! A progress bar is drawn on stderr when stderr is a terminal and the work
//! lasts more than about a second.

use std::fs::{self, File};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use partseal::hazmat::{BLOCK, LinkInput, Midstate, verify_chain_mapped};
use partseal::{Error, HashCtx, Sha256, offline};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Exit status when bytes do not match what was expected.
const EXIT_MISMATCH: u8 = 1;
/// Exit status for bad input and every other failure.
const EXIT_BAD_INPUT: u8 = 2;
/// How long work runs before a progress bar appears.
const PROGRESS_DELAY: Duration = Duration::from_secs(1);

#[derive(Parser)]
#[command(
    name = "partseal",
    version,
    about = "Verify and merge uploaded file parts offline"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Hash PART files in order (optionally merging them into FILE) and print
    /// `<sha256-hex>  <total-length>`; with --plan, check each part against
    /// its hashCtx in parallel.
    Verify {
        /// Expected SHA-256 of the whole file (64 hex digits, any case).
        #[arg(long, value_name = "HEX")]
        sha256: Option<Sha256>,
        /// Write the concatenated parts to FILE (only once they verified).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// A part plan with hashCtx values, as printed by `partseal ctx`.
        #[arg(long, value_name = "PLAN.json")]
        plan: Option<PathBuf>,
        /// The part files, in order.
        #[arg(required = true, value_name = "PART")]
        parts: Vec<PathBuf>,
    },
    /// Print the part plan (offsets, sizes, hashCtx) a KooDrive client would
    /// send for FILE, as JSON.
    Ctx {
        /// Bytes per part: a positive multiple of 64.
        #[arg(long, value_name = "N", value_parser = parse_part_size)]
        part_size: u64,
        /// The file to plan.
        file: PathBuf,
    },
}

fn parse_part_size(s: &str) -> Result<u64, String> {
    let n: u64 = s.parse().map_err(|e| format!("not a byte count: {e}"))?;
    if n == 0 || !n.is_multiple_of(BLOCK as u64) {
        return Err(format!("{n} is not a positive multiple of 64"));
    }
    Ok(n)
}

/// Why the command failed, with its exit status.
struct Fail {
    code: u8,
    msg: String,
}

impl Fail {
    fn input(msg: impl Into<String>) -> Fail {
        Fail {
            code: EXIT_BAD_INPUT,
            msg: msg.into(),
        }
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        let code = match e {
            Error::DigestMismatch { .. } | Error::LinkMismatch { .. } => EXIT_MISMATCH,
            _ => EXIT_BAD_INPUT,
        };
        Fail {
            code,
            msg: e.to_string(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Verify {
            sha256,
            out,
            plan: None,
            parts,
        } => verify(&parts, sha256, out.as_deref()),
        Command::Verify {
            sha256,
            out,
            plan: Some(plan),
            parts,
        } => verify_plan(&plan, &parts, sha256, out.as_deref()),
        Command::Ctx { part_size, file } => ctx(&file, part_size),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("partseal: {}", f.msg);
            ExitCode::from(f.code)
        }
    }
}

/// `verify` without a plan: one in-order hash, pipelined with the merge.
fn verify(parts: &[PathBuf], expected: Option<Sha256>, out: Option<&Path>) -> Result<(), Fail> {
    let inputs = open_parts(parts)?;
    let total = inputs.iter().map(|(_, len)| len).sum();
    let tmp = out.map(TempOut::create).transpose()?;
    let digest = merge(&inputs, tmp.as_ref(), total)?;
    if let Some(e) = expected
        && e != digest
    {
        // `tmp` drops here and removes the unverified output.
        return Err(Error::sha256_mismatch(&e, &digest).into());
    }
    if let (Some(tmp), Some(dest)) = (tmp, out) {
        tmp.commit(dest)?;
    }
    print_result(&digest, total)
}

/// `verify --plan`: every link checked in parallel, then (optionally) merged.
fn verify_plan(
    plan_path: &Path,
    parts: &[PathBuf],
    flag_sha: Option<Sha256>,
    out: Option<&Path>,
) -> Result<(), Fail> {
    let plan = load_plan(plan_path)?;
    let expected = match (plan.sha256, flag_sha) {
        (Some(p), Some(f)) if p != f => {
            return Err(Fail::input(format!(
                "the plan's sha256 {p} differs from --sha256 {f}"
            )));
        }
        (p, f) => p.or(f),
    };
    if parts.len() != plan.entries.len() {
        return Err(Fail::input(format!(
            "the plan has {} parts but {} part files were given",
            plan.entries.len(),
            parts.len()
        )));
    }
    let inputs = open_parts(parts)?;
    for (e, ((_, len), path)) in plan.entries.iter().zip(inputs.iter().zip(parts)) {
        if *len != e.size {
            return Err(Fail::input(format!(
                "part {} ({}) is {len} bytes, but the plan says partSize {}",
                e.number,
                path.display(),
                e.size
            )));
        }
    }
    let total: u64 = plan.entries.iter().map(|e| e.size).sum();
    let links = plan
        .entries
        .iter()
        .zip(&inputs)
        .map(|(e, (file, len))| LinkInput {
            part: e.number,
            start: e.start,
            file,
            len: *len,
        })
        .collect::<Vec<_>>();
    let tmp = out.map(TempOut::create).transpose()?;

    let spinner = hidden_bar(None, "{spinner} checking {msg} [{elapsed}]");
    spinner.set_message(format!("{} parts", links.len()));
    // The parts are hashed straight from the page cache (no copy).
    // SAFETY: the parts are regular files the user named, checked at rest;
    // the merge below maps them under the same contract.
    let checked = with_progress(&spinner, || unsafe {
        verify_chain_mapped(&links, expected.as_ref())
    });
    let digest = match checked {
        Ok(d) => d,
        Err(e @ Error::DigestMismatch { .. }) if links.len() > 1 => {
            let last = links.len();
            return Err(Fail {
                code: EXIT_MISMATCH,
                msg: format!(
                    "{e}\n(every part before part {last} matches its hashCtx chain, \
                     so part {last} or the expected digest is wrong)"
                ),
            });
        }
        Err(e) => return Err(e.into()),
    };

    if let (Some(tmp), Some(dest)) = (tmp, out) {
        // The copy is hashed again so that what lands in FILE is exactly the
        // verified bytes even if a part changed after the check.
        let copied = merge(&inputs, Some(&tmp), total)?;
        if copied != digest {
            return Err(Fail {
                code: EXIT_MISMATCH,
                msg: format!(
                    "the parts changed while being merged: {}",
                    Error::sha256_mismatch(&digest, &copied)
                ),
            });
        }
        tmp.commit(dest)?;
    }
    print_result(&digest, total)
}

/// `ctx`: the midstate at every part boundary, in one bounded-memory pass.
fn ctx(path: &Path, part_size: u64) -> Result<(), Fail> {
    let (file, len) = open_input(path, "file")?;
    let bar = bytes_bar(len);
    let plan = with_progress(&bar, || {
        offline::chain_plan(std::io::BufReader::new(&file), part_size, |n| bar.inc(n))
    })?;
    let parts = plan
        .parts
        .iter()
        .map(|p| PlanPartOut {
            part_number: u64::from(p.number),
            part_offset: p.offset.unwrap_or(0),
            part_size: p.size,
            hash_ctx: p.start_ctx().unwrap_or(HashCtx::INITIAL).to_ints(),
        })
        .collect();
    let plan = PlanOut {
        sha256: plan.sha256.to_hex(),
        length: plan.length,
        parts,
    };
    let json = serde_json::to_string(&plan)
        .map_err(|e| Fail::input(format!("cannot encode the plan: {e}")))?;
    write_stdout(&json)
}

#[derive(Serialize)]
struct PlanOut {
    sha256: String,
    length: u64,
    parts: Vec<PlanPartOut>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PlanPartOut {
    part_number: u64,
    part_offset: u64,
    part_size: u64,
    hash_ctx: [u64; 8],
}

/// The top-level object form of a plan file.
#[derive(Deserialize)]
struct PlanDoc {
    sha256: Option<String>,
    length: Option<u64>,
    parts: Vec<Value>,
}

/// One entry of a plan file as written.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PlanPartIn {
    part_number: Option<u64>,
    part_offset: Option<u64>,
    part_size: u64,
    hash_ctx: Option<Vec<Value>>,
}

/// A validated plan.
struct Plan {
    sha256: Option<Sha256>,
    entries: Vec<Entry>,
}

/// A validated plan entry: numbers are 1..=n in order, offsets contiguous.
struct Entry {
    number: u32,
    size: u64,
    start: Midstate,
}

/// Reads and validates a plan: either `{"sha256", "length", "parts": [...]}`
/// or a bare array of part entries.
fn load_plan(path: &Path) -> Result<Plan, Fail> {
    let bad = |msg: String| Fail::input(format!("bad plan {}: {msg}", path.display()));
    let text = fs::read(path)
        .map_err(|e| Fail::input(format!("cannot read plan {}: {e}", path.display())))?;
    let doc: Value = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let (sha256, length, raw) = match doc {
        Value::Array(parts) => (None, None, parts),
        obj @ Value::Object(_) => {
            let d: PlanDoc = serde_json::from_value(obj).map_err(|e| bad(e.to_string()))?;
            (d.sha256, d.length, d.parts)
        }
        _ => return Err(bad("expected an object or an array of parts".into())),
    };
    let sha256 = sha256
        .map(|s| s.parse::<Sha256>())
        .transpose()
        .map_err(|e| bad(format!("sha256: {e}")))?;
    if raw.is_empty() {
        return Err(bad("it lists no parts".into()));
    }

    let mut parts = Vec::with_capacity(raw.len());
    for (i, v) in raw.into_iter().enumerate() {
        let p: PlanPartIn =
            serde_json::from_value(v).map_err(|e| bad(format!("entry {}: {e}", i + 1)))?;
        parts.push((p.part_number.unwrap_or(i as u64 + 1), p));
    }
    parts.sort_by_key(|(n, _)| *n);

    let count = parts.len();
    let mut entries = Vec::with_capacity(count);
    let mut offset = 0u64;
    for (i, (number, p)) in parts.into_iter().enumerate() {
        let want = i as u64 + 1;
        if number != want {
            return Err(bad(format!(
                "part numbers must be 1 to {} without gaps or repeats; found {number} where {want} belongs",
                count
            )));
        }
        let part = format!("part {number}");
        let number = u32::try_from(number).map_err(|_| bad(format!("{part}: too many parts")))?;
        if let Some(o) = p.part_offset
            && o != offset
        {
            return Err(bad(format!(
                "{part}: partOffset is {o}, but the parts before it hold {offset} bytes"
            )));
        }
        let ctx = match p.hash_ctx {
            Some(words) => {
                let ints = words
                    .iter()
                    .enumerate()
                    .map(|(w, v)| {
                        v.as_i64()
                            .map(i128::from)
                            .or_else(|| v.as_u64().map(i128::from))
                            .ok_or_else(|| {
                                bad(format!("{part}: hashCtx word {w} is not an integer: {v}"))
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                HashCtx::from_ints(&ints).map_err(|e| bad(format!("{part}: {e}")))?
            }
            None if number == 1 => HashCtx::INITIAL,
            None => return Err(bad(format!("{part}: hashCtx is missing"))),
        };
        if number == 1 && ctx != HashCtx::INITIAL {
            return Err(bad(format!(
                "{part}: hashCtx must be the SHA-256 initial value"
            )));
        }
        let start = Midstate::resume(ctx, offset).map_err(|e| bad(format!("{part}: {e}")))?;
        entries.push(Entry {
            number,
            size: p.part_size,
            start,
        });
        offset = offset
            .checked_add(p.part_size)
            .ok_or_else(|| bad(format!("{part}: sizes overflow")))?;
    }
    if let Some(l) = length
        && l != offset
    {
        return Err(bad(format!(
            "length is {l}, but the parts add up to {offset} bytes"
        )));
    }
    Ok(Plan { sha256, entries })
}

/// Hashes `inputs` in order, writing them to `out` when given; returns the
/// digest.
fn merge(inputs: &[(File, u64)], out: Option<&TempOut>, total: u64) -> Result<Sha256, Fail> {
    let inputs: Vec<(&File, u64)> = inputs.iter().map(|(f, len)| (f, *len)).collect();
    let bar = bytes_bar(total);
    let res = with_progress(&bar, || {
        offline::merge(&inputs, out.map(|t| t.file.as_file()), &|n| bar.inc(n))
    })?;
    if out.is_some() && res.written != total {
        return Err(Fail::input(format!(
            "wrote {} bytes of {total} to the output",
            res.written
        )));
    }
    Ok(res.sha256)
}

/// Opens every part, naming it (number and path) on failure.
fn open_parts(parts: &[PathBuf]) -> Result<Vec<(File, u64)>, Fail> {
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| open_input(p, &format!("part {}", i + 1)))
        .collect()
}

/// Opens a regular file for reading and returns it with its length.
fn open_input(path: &Path, what: &str) -> Result<(File, u64), Fail> {
    let fail =
        |e: std::io::Error| Fail::input(format!("cannot read {what} ({}): {e}", path.display()));
    let file = File::open(path).map_err(fail)?;
    let meta = file.metadata().map_err(fail)?;
    if !meta.is_file() {
        return Err(Fail::input(format!(
            "{what} ({}) is not a regular file",
            path.display()
        )));
    }
    Ok((file, meta.len()))
}

/// The output being written: a temporary sibling of the destination,
/// removed on drop unless committed.
struct TempOut {
    file: tempfile::NamedTempFile,
}

impl TempOut {
    fn create(dest: &Path) -> Result<TempOut, Fail> {
        let name = dest
            .file_name()
            .ok_or_else(|| Fail::input(format!("--out {} names no file", dest.display())))?;
        if dest.is_dir() {
            return Err(Fail::input(format!(
                "--out {} is a directory",
                dest.display()
            )));
        }
        let file = tempfile::Builder::new()
            .prefix(&format!(".{}.", name.to_string_lossy()))
            .suffix(".partial")
            .tempfile_in(parent_dir(dest))
            .map_err(|e| Fail::input(format!("cannot create output {}: {e}", dest.display())))?;
        Ok(TempOut { file })
    }

    /// Fsyncs the data, renames it to `dest` and fsyncs the directory.
    fn commit(self, dest: &Path) -> Result<(), Fail> {
        let fail = |e: std::io::Error| Fail::input(format!("cannot write {}: {e}", dest.display()));
        self.file.as_file().sync_all().map_err(fail)?;
        self.file.persist(dest).map_err(|e| fail(e.error))?;
        File::open(parent_dir(dest))
            .and_then(|d| d.sync_all())
            .map_err(fail)
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn print_result(digest: &Sha256, total: u64) -> Result<(), Fail> {
    write_stdout(&format!("{digest}  {total}"))
}

fn write_stdout(line: &str) -> Result<(), Fail> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| Fail::input(format!("cannot write to stdout: {e}")))
}

/// A hidden bar counting `total` bytes.
fn bytes_bar(total: u64) -> ProgressBar {
    hidden_bar(
        Some(total),
        "{bar:40} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
}

fn hidden_bar(len: Option<u64>, template: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::hidden());
    let style = match len {
        Some(_) => ProgressStyle::default_bar(),
        None => ProgressStyle::default_spinner(),
    };
    bar.set_style(style.clone().template(template).unwrap_or(style));
    bar
}

/// Runs `work`; if stderr is a terminal and the work is still running after
/// [`PROGRESS_DELAY`], `bar` is drawn on stderr until it ends.
fn with_progress<T>(bar: &ProgressBar, work: impl FnOnce() -> T) -> T {
    if !std::io::stderr().is_terminal() {
        return work();
    }
    let out = thread::scope(|s| {
        let (done, wait) = mpsc::channel::<()>();
        s.spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(PROGRESS_DELAY) {
                bar.set_draw_target(ProgressDrawTarget::stderr());
                bar.enable_steady_tick(Duration::from_millis(200));
                // Returns when `done` is dropped.
                let _ = wait.recv();
            }
        });
        let out = work();
        drop(done);
        out
    });
    bar.finish_and_clear();
    out
}
