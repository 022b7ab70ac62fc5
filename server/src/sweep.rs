//! The background sweep that expires idle uploads: it runs
//! [`Engine::expire_idle_uploads`] every [`Engine::sweep_interval`] on the
//! blocking pool (the sweep touches the disk) and logs what it removed.
//!
//! Expiry itself is the engine's (crash-safe, never while a part streams
//! in); the server only decides when, and says so in the log.

use std::future::Future;

use partseal::{Engine, SweepReport};
use prometheus_client::metrics::counter::Counter;

/// Runs the sweep until `stop` completes. Returns at once when the engine
/// has no upload TTL. A sweep in progress when `stop` fires finishes on its
/// blocking thread (each removal is one rename, whole or not at all); the
/// loop just does not start another.
pub async fn run(engine: Engine, stop: impl Future<Output = ()>) {
    run_counted(engine, None, stop).await;
}

/// [`run`], adding every expired upload to `expired` (the metrics' counter).
pub async fn run_counted(engine: Engine, expired: Option<Counter>, stop: impl Future<Output = ()>) {
    let Some(every) = engine.sweep_interval() else {
        tracing::info!("upload expiry is off (--upload-ttl-secs 0)");
        return;
    };
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(every);
    // A sweep that took longer than the interval is not worth catching up
    // with a burst of sweeps.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => {}
        }
        let e = engine.clone();
        match tokio::task::spawn_blocking(move || e.expire_idle_uploads()).await {
            Ok(report) => {
                if let Some(c) = &expired {
                    c.inc_by(report.expired.len() as u64);
                }
                log(&report);
            }
            Err(e) => tracing::error!(error = %e, "the upload expiry sweep failed"),
        }
    }
}

/// One line per expired upload (info) and per upload the sweep could not
/// handle (warn). Ids and owners only: nothing secret is in either.
fn log(report: &SweepReport) {
    for x in &report.expired {
        tracing::info!(
            file_id = %x.id,
            owner = %x.owner,
            idle_secs = x.idle.as_secs(),
            "upload expired: aborted after no activity for longer than the upload TTL"
        );
    }
    for (id, e) in &report.failed {
        tracing::warn!(file_id = %id, error = %e, "upload expiry failed; retried next sweep");
    }
}
