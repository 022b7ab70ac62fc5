//! `scale`: how a store behaves with many open uploads.
//!
//! `cargo run --release --example scale -- create STORE N [PARTS]` creates
//! `N` open uploads (each with `PARTS` small parts, default 1) through the
//! engine and prints the uploads per second; `cargo run --release --example scale -- open STORE`
//! times `Engine::open` of the store and prints the resident memory it added.
//! `bench/reopen.sh` runs both and the server's time to "listening".

use std::process::ExitCode;
use std::time::Instant;

use partseal::{Config, Engine, FileSpec, Limits, Owner, PartNumber, Sha256, offline};

fn rss_bytes() -> u64 {
    // VmRSS of this process, from procfs (Linux).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    match args {
        [cmd, store, n, rest @ ..] if cmd == "create" && rest.len() <= 1 => {
            let n: u64 = n.parse()?;
            let parts: u64 = rest.first().map_or(Ok(1), |p| p.parse())?;
            let engine = Engine::open(store, Config::default())?;
            let owner = Owner::new("bench")?;
            let start = Instant::now();
            for i in 0..n {
                let id = engine.create(&owner, FileSpec::default())?;
                for p in 1..=parts {
                    let body = (i * parts + p).to_le_bytes();
                    engine.put_part(&owner, &id, PartNumber::new(p)?, &body[..], None)?;
                }
            }
            let s = start.elapsed().as_secs_f64();
            println!(
                "uploads={n} parts_each={parts} s={s:.3} uploads_per_s={:.0}",
                n as f64 / s
            );
        }
        [cmd, store] if cmd == "open" => {
            let before = rss_bytes();
            let start = Instant::now();
            let engine = Engine::open(store, Config::default())?;
            let s = start.elapsed().as_secs_f64();
            let after = rss_bytes();
            println!(
                "open_s={s:.3} rss_before={before} rss_after={after} added={}",
                after.saturating_sub(before)
            );
            drop(engine);
        }
        [cmd, store, parts, mode] if cmd == "complete" => {
            let parts: u64 = parts.parse()?;
            let chain = match mode.as_str() {
                "chain" => true,
                "stream" => false,
                _ => return Err("the mode is chain or stream".into()),
            };
            // Parts of 64 bytes (chain) or 100 bytes (stream), as small as
            // the limits allow, so that the per-part work is what is timed.
            let size: u64 = if chain { 64 } else { 100 };
            let mut cfg = Config::default().with_limits(Limits::new(64, 1 << 20, 1 << 30));
            cfg.eager_hashing = true;
            let engine = Engine::open(store, cfg)?;
            let owner = Owner::new("bench")?;
            let bytes: Vec<u8> = (0..parts * size).map(|i| (i * 31 % 251) as u8).collect();
            let digest = Sha256::digest(&bytes);
            let spec = if chain {
                FileSpec::default().with_plan(offline::chain_plan(&bytes[..], size, |_| {})?.parts)
            } else {
                FileSpec::default()
            };
            let id = engine.create(&owner, spec)?;
            let put = Instant::now();
            for (i, part) in bytes.chunks(size as usize).enumerate() {
                engine.put_part(&owner, &id, PartNumber::new(i as u64 + 1)?, part, None)?;
            }
            let put_s = put.elapsed().as_secs_f64();
            // Let eager hashing catch up, as it would while a client is slow.
            std::thread::sleep(std::time::Duration::from_secs(1));
            let start = Instant::now();
            let done = engine.complete(&owner, &id, Some(digest))?;
            let s = start.elapsed().as_secs_f64();
            println!(
                "mode={mode} parts={parts} complete_s={s:.3} put_s={put_s:.3} sha256={}",
                done.file.sha256
            );
        }
        _ => {
            return Err(
                "usage: scale create STORE N [PARTS] | scale open STORE | scale complete STORE PARTS chain|stream"
                    .into(),
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scale: {e}");
            ExitCode::from(2)
        }
    }
}
