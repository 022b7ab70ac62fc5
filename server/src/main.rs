//! `partseal-server`: runs the upload APIs on the embedded default store.
//!
//! `cargo run --release -p partseal-server` listens on 127.0.0.1:8080, keeps
//! everything under `./data`, and on first start writes a development user to
//! `./data/credentials.json` and prints how to use it.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use partseal::{Config, Engine};
use partseal_cluster::Cluster;
use partseal_server::auth::UrlSigner;
use partseal_server::backend::Backend;
use partseal_server::config::{Args, Credentials, LogFormat, url_key};
use partseal_server::serve::serve;
use partseal_server::{AppState, app};
use partseal_server::{events, sweep};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match args.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // Span fields (the request id) on every line, flattened.
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("partseal-server: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if args.min_part_size > args.max_part_size {
        return Err(format!(
            "--min-part-size ({}) is more than --max-part-size ({}): no part could be both",
            args.min_part_size, args.max_part_size
        )
        .into());
    }
    let hook = events::webhook(
        args.on_commit_url.as_deref(),
        args.on_commit_secret.as_deref(),
    )?;
    // Bind first: a start that cannot listen must not create credentials
    // that no banner ever announced.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let cred_path = args.credentials_path();
    let (credentials, created) = Credentials::load_or_create(&cred_path)?;
    let (backend, key) = match args.cluster()? {
        Some(cfg) => {
            if hook.is_some() {
                return Err("--on-commit-url is not available with --database-url: \
                            commit events come from the local store's outbox"
                    .into());
            }
            std::fs::create_dir_all(&args.data)
                .map_err(|e| format!("cannot create {}: {e}", args.data.display()))?;
            let cluster = Cluster::connect(cfg)
                .await
                .map_err(|e| format!("cannot start in cluster mode: {e}"))?;
            let key = cluster.url_key().await?;
            (Backend::Cluster(cluster), key)
        }
        None => {
            let mut engine_cfg = Config::default().with_limits(args.limits());
            engine_cfg.upload_ttl = args.upload_ttl();
            // The outbox is kept only for a receiver to read it.
            engine_cfg.commit_events = hook.is_some();
            let data = args.data.clone();
            let engine =
                tokio::task::spawn_blocking(move || Engine::open(&data, engine_cfg)).await??;
            (Backend::Local(engine), url_key(&args.data)?)
        }
    };
    let addr = listener.local_addr()?;
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"))
        .trim_end_matches('/')
        .to_owned();
    if args.public_url.is_none() && addr.ip().is_unspecified() {
        tracing::warn!(
            %addr,
            "listening on all interfaces without --public-url: upload URLs will name {public_url}, \
             which clients elsewhere cannot reach; set --public-url"
        );
    }
    // Handlers in place before the banner: from `listening on` on, SIGINT
    // and SIGTERM stop gracefully and SIGHUP reloads the credentials,
    // instead of killing the process.
    let stop = shutdown_signal()?;
    #[cfg(unix)]
    let hangups = partseal_server::reload::Hangups::install()?;
    if created {
        print_dev_credentials(&cred_path, &credentials, &public_url);
    } else {
        println!(
            "partseal-server: {} user(s) from {}",
            credentials.users.len(),
            cred_path.display()
        );
    }
    let mode = match &backend {
        Backend::Local(_) => "store in",
        Backend::Cluster(_) => "cluster node, local files in",
    };
    let state = AppState::with_backend(
        backend.clone(),
        &args.data,
        credentials,
        UrlSigner::new(key),
        args.settings(public_url.clone()),
    );
    let state = Arc::new(match &backend {
        Backend::Local(_) => state.with_ops(args.ops_options()),
        Backend::Cluster(c) => {
            let ops = partseal_server::ops::Ops::with_checks(
                &args.data,
                args.ops_options(),
                partseal_server::ops::ready::cluster_checks(c),
            );
            AppState { ops, ..state }
        }
    });
    #[cfg(unix)]
    tokio::spawn(hangups.reload_on_each(state.clone(), cred_path.clone()));
    if !args.no_ui {
        println!("partseal-server: upload page at {public_url}/ui/");
    }
    // The last line of the banner (scripts and tests wait for it).
    println!(
        "partseal-server: listening on {public_url}, {mode} {}",
        args.data.display()
    );
    tracing::info!(%addr, "listening");
    // After the signal, requests in flight get `grace` to finish; then the
    // server stops anyway (the store keeps only acknowledged parts, so a cut
    // request loses nothing the client was told is stored).
    let grace = std::time::Duration::from_secs(args.shutdown_grace_secs);
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let (sweep_stop_tx, sweep_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sweeper = tokio::spawn(sweep::run_backend(
        backend.clone(),
        Some(state.ops.metrics.uploads_expired()),
        async move {
            // A dropped sender (the server ended on an error) stops it too.
            let _ = sweep_stop_rx.await;
        },
    ));
    let (events_stop_tx, events_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let notifier = match (hook, backend.local()) {
        (Some(hook), Some(engine)) => Some(tokio::spawn(events::run(
            engine.clone(),
            hook,
            async move {
                let _ = events_stop_rx.await;
            },
        ))),
        _ => None,
    };
    let draining = state.clone();
    let server = serve(listener, app(state), args.serve_options(), async move {
        stop.await;
        draining.ops.begin_shutdown();
        let _ = sweep_stop_tx.send(());
        // Undelivered events wait in the outbox for the next start.
        let _ = events_stop_tx.send(());
        let _ = stopping_tx.send(());
    });
    let deadline = async move {
        match stopping_rx.await {
            Ok(()) => tokio::time::sleep(grace).await,
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        done = server => {
            done?;
            tracing::info!("stopped; in-flight requests finished");
        }
        () = deadline => {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "stopped with connections still open after the grace period"
            );
        }
    }
    // The sweep was told to stop with the server; a sweep still running
    // finishes its current removal (each is all or nothing) and is then
    // cut with the runtime.
    sweeper.abort();
    if let Some(n) = notifier {
        n.abort();
    }
    Ok(())
}

fn print_dev_credentials(path: &std::path::Path, c: &Credentials, url: &str) {
    let Some(u) = c.users.first() else { return };
    println!(
        "partseal-server: created a development user in {}",
        path.display()
    );
    println!(
        "  KooDrive:   Authorization: Bearer <token>   X-User-Id: {}",
        u.id
    );
    println!("              (token, access and secret key are in that file)");
    println!(
        "  MetaStudio: project id {}  access key {}",
        u.project_id, u.access_key
    );
    println!("  e.g. curl -X POST {url}/koodrive/ose/v1/files/create \\");
    println!(
        "         -H \"Authorization: Bearer $TOKEN\" -H \"X-User-Id: {}\" \\",
        u.id
    );
    println!(
        "         -H \"X-Date: $(date -u +%Y%m%dT%H%M%SZ)\" -H 'Content-Type: application/json' \\"
    );
    println!("         -d '{{\"fileName\":\"a.txt\",\"fileType\":\"45\",\"length\":5}}'");
}

/// Installs the SIGINT and SIGTERM handlers now, not on the first poll of
/// the returned future (which completes on the first of them), so that a
/// signal right after the banner already stops gracefully.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        async move {
            tokio::select! {
                _ = int.recv() => {},
                _ = term.recv() => {},
            }
        }
    };
    #[cfg(not(unix))]
    let signals = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    Ok(async move {
        signals.await;
        tracing::info!("shutting down: no new connections, finishing requests in flight");
    })
}
