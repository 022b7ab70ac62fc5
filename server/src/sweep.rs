//! The background sweep that expires idle uploads: it runs
//! [`Engine::expire_idle_uploads`] every [`Engine::sweep_interval`] on the
//! blocking pool (the sweep touches the disk) and logs what it removed.
//!
//! Expiry itself is the engine's (crash-safe, never while a part streams
//! in); the server only decides when, and says so in the log.

use std::future::Future;

use std::time::Duration;

use partseal::{Engine, SweepReport};

use crate::backend::Backend;
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

/// The sweep of whichever backend the server runs on: [`run_counted`]
/// for the local engine; for the cluster, expiry at the same pace (a
/// quarter of the TTL, at most an hour) and the orphan scan every quarter
/// of the orphan grace (at most an hour).
pub async fn run_backend(
    backend: Backend,
    expired: Option<Counter>,
    stop: impl Future<Output = ()>,
) {
    let cluster = match backend {
        Backend::Local(engine) => return run_counted(engine, expired, stop).await,
        Backend::Cluster(c) => c,
    };
    let pace = |d: Duration| (d / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    let cfg = cluster.config();
    let mut expiry = cfg.upload_ttl.map(|ttl| tokio::time::interval(pace(ttl)));
    let mut orphans = tokio::time::interval(pace(cfg.orphan_grace));
    for t in expiry.iter_mut().chain(std::iter::once(&mut orphans)) {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    if expiry.is_none() {
        tracing::info!("upload expiry is off (--upload-ttl-secs 0)");
    }
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = async { expiry.as_mut().expect("checked").tick().await }, if expiry.is_some() => {
                match cluster.expire_idle_uploads().await {
                    Ok(report) => {
                        if let Some(c) = &expired {
                            c.inc_by(report.expired.len() as u64);
                        }
                        log(&report);
                    }
                    Err(e) => tracing::warn!(error = %e, "the upload expiry sweep failed; retried next sweep"),
                }
            }
            _ = orphans.tick() => {
                match cluster.sweep_orphans().await {
                    Ok(r) if !r.skipped => tracing::debug!(
                        multipart_uploads = r.multipart_uploads.len(),
                        objects = r.objects.len(),
                        lost_records = r.lost_records.len(),
                        "orphan scan done"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "the orphan scan failed; retried next scan"),
                }
            }
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
