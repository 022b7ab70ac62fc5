//! How long "complete" (`Engine::verify`) takes on an upload of a given file.
//!
//! ```sh
//! cargo run --release --example complete -- FILE [--parts 64] [--store DIR] [--mode chain|stream]
//! ```
//!
//! Opens an engine store in `DIR` (default: a new directory beside `FILE`),
//! uploads `FILE` in `--parts` parts through `Engine::put_part`, then times
//! `Engine::verify` alone: the "complete" call.
//!
//! * `--mode chain` (default): a KooDrive-style concurrent upload with the
//!   `hashCtx` of every part in the plan, so each part's link is checked as
//!   it streams in; complete has no data pass left.
//! * `--mode stream`: parts without midstates, with background hashing of
//!   arrived prefixes switched off, so complete hashes every byte in order
//!   while merging the parts into the committed file (written and fsynced):
//!   the engine's worst case for uploads without midstates.
//!
//! Prints one line of `key=value` pairs for `bench/compare.sh`:
//!
//! ```text
//! mode=chain complete_s=0.007 put_s=3.020 bytes=1073741824 parts=64 sha256=...
//! ```
//!
//! The store directory is removed at the end.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use partseal::hazmat::BLOCK;
use partseal::{Config, Engine, FileSpec, LinkCheck, Owner, PartNumber, PartPlan, Sha256, offline};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Parts with hashCtx, checked on arrival.
    Chain,
    /// Parts without midstates, hashed and merged at complete.
    Stream,
}

#[derive(Parser)]
#[command(about = "Time Engine::verify (complete) of an upload of FILE")]
struct Args {
    /// The file to upload.
    file: PathBuf,
    /// Number of parts (all but the last of equal size, a multiple of 64).
    #[arg(long, default_value_t = 64)]
    parts: u64,
    /// Store directory (created, and removed at the end).
    #[arg(long)]
    store: Option<PathBuf>,
    /// Upload kind.
    #[arg(long, value_enum, default_value_t = Mode::Chain)]
    mode: Mode,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("complete: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let file = File::open(&args.file)?;
    let len = file.metadata()?.len();
    let store = args.store.clone().unwrap_or_else(|| {
        let parent = args
            .file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), PathBuf::from);
        parent.join(format!("complete-store-{}", std::process::id()))
    });
    if args.parts == 0 || len == 0 {
        return Err("need a non-empty file and at least one part".into());
    }
    // Parts of equal size, a multiple of 64 bytes; the last takes the rest.
    let part_size = len.div_ceil(args.parts).next_multiple_of(BLOCK as u64);
    let plan = offline::chain_plan(std::io::BufReader::new(&file), part_size, |_| {})?;
    let (plan, digest) = (plan.parts, plan.sha256);
    let res = upload_and_complete(&args, &store, &plan, len, digest);
    let _ = fs::remove_dir_all(&store);
    println!("{}", res?);
    Ok(())
}

fn upload_and_complete(
    args: &Args,
    store: &std::path::Path,
    plan: &[PartPlan],
    len: u64,
    digest: Sha256,
) -> Result<String, Box<dyn std::error::Error>> {
    let chain = args.mode == Mode::Chain;
    let mut cfg = Config::default();
    // Stream mode measures complete hashing everything itself.
    cfg.eager_hashing = chain;
    let engine = Engine::open(store, cfg)?;
    let owner = Owner::new("bench")?;
    let spec = FileSpec::default()
        .with_length(len)
        .with_sha256(digest)
        .with_plan(if chain { plan.to_vec() } else { Vec::new() });
    let id = engine.create(&owner, spec)?;
    let put_start = Instant::now();
    let mut body = File::open(&args.file)?;
    for p in plan {
        body.seek(SeekFrom::Start(p.offset.unwrap_or(0)))?;
        let receipt = engine.put_part(
            &owner,
            &id,
            PartNumber::new(u64::from(p.number))?,
            (&body).take(p.size),
            Some(p.size),
        )?;
        if chain && receipt.link != LinkCheck::Holds {
            return Err(format!("part {}: link not checked on arrival", p.number).into());
        }
    }
    let put_s = put_start.elapsed().as_secs_f64();

    let start = Instant::now();
    let verified = engine.verify(&owner, &id, Some(digest))?;
    let complete_s = start.elapsed().as_secs_f64();
    if verified.sha256 != digest || verified.length != len {
        return Err("verify returned another digest or length".into());
    }
    engine.delete(&owner, &id)?;
    Ok(format!(
        "mode={} complete_s={complete_s:.6} put_s={put_s:.3} bytes={len} parts={} sha256={digest}",
        if chain { "chain" } else { "stream" },
        plan.len()
    ))
}
