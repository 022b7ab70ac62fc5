//! `scale`: how a store behaves with many open uploads.
//!
//! `cargo run --release --example scale -- create STORE N [PARTS]` creates
//! `N` open uploads (each with `PARTS` small parts, default 1) through the
//! engine and prints the uploads per second; `cargo run --release --example scale -- open STORE`
//! times `Engine::open` of the store and prints the resident memory it added.
//! `bench/reopen.sh` runs both and the server's time to "listening".

use std::process::ExitCode;
use std::time::Instant;

use partseal::{Config, Engine, FileSpec, Owner, PartNumber};

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
        _ => return Err("usage: scale create STORE N [PARTS] | scale open STORE".into()),
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
