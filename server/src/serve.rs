//! Serving the application on a TCP listener, with the limits `axum::serve`
//! has no settings for: a deadline for each request head, a bound on open
//! connections, and a graceful stop.
//!
//! A client that trickles the bytes of a request head is cut off when the
//! header timeout passes (hyper's `header_read_timeout`, which also closes a
//! keep-alive connection left idle that long). Connections over the bound are
//! not left waiting in the accept queue: up to [`MAX_REFUSING`] of them at a
//! time get their request answered `503` with `Retry-After` in the dialect of
//! the API they called and are closed; beyond that they are closed at once.
//! HTTP/1.1 only, as `axum::serve` served it with axum's default features.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::Uri;
use axum::response::Response;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::error::ApiError;
use crate::upload::Api;
use crate::{X_REQUEST_ID, request_id};

/// Connections over the bound that are answered `503` at the same time, at
/// most; each holds a task and a socket until its request head is in (or the
/// header timeout passes), so they are bounded too.
pub const MAX_REFUSING: usize = 64;

/// Limits of [`serve`].
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// Longest time to receive a request head, from when the server starts
    /// waiting for it.
    pub header_timeout: Duration,
    /// Most connections served at once.
    pub max_connections: u32,
}

/// Serves `app` on `listener` until `shutdown` completes; then stops
/// accepting, lets requests in flight finish and returns when every
/// connection is closed (bound that wait from outside if it must end).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(opts.max_connections as usize));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let busy = Router::new().fallback(too_many_connections);
    let (stop_tx, stop_rx) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let (tcp, remote) = match accepted {
            Ok(c) => c,
            // The peer gave up before we took it: nothing to do.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors or memory: retrying at once would
                // spin; the connections open now will free some.
                tracing::error!(error = %e, "accept failed; retrying in 1 s");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if let Ok(slot) = slots.clone().try_acquire_owned() {
            tracing::debug!(%remote, "connection accepted");
            let conn = connection(tcp, app.clone(), opts.header_timeout, true);
            tokio::spawn(run(conn, stop_rx.clone(), slot));
        } else if let Ok(slot) = refusing.clone().try_acquire_owned() {
            tracing::warn!(%remote, max = opts.max_connections, "too many connections: answering 503");
            let conn = connection(tcp, busy.clone(), opts.header_timeout, false);
            tokio::spawn(run(conn, stop_rx.clone(), slot));
        } else {
            tracing::warn!(%remote, "too many connections, and too many refused already: closing");
        }
    }
    // No new connections from here on.
    drop(listener);
    tracing::debug!("stopping: closing idle connections, finishing requests in flight");
    drop(stop_tx);
    // Each connection holds its slot until it ends, so having every slot
    // back means none is open.
    let _ = slots.acquire_many(opts.max_connections).await;
    Ok(())
}

type Connection = http1::Connection<TokioIo<TcpStream>, TowerToHyperService<Router>>;

fn connection(
    tcp: TcpStream,
    app: Router,
    header_timeout: Duration,
    keep_alive: bool,
) -> Connection {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        // A client that shuts down its side after the body still gets its
        // answer, instead of a request cancelled halfway through its work.
        .half_close(true)
        .keep_alive(keep_alive);
    builder.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(app))
}

/// Drives one connection; on the stop signal, lets its request in flight
/// finish and then closes it (an idle one at once).
async fn run(conn: Connection, mut stop: watch::Receiver<()>, _slot: OwnedSemaphorePermit) {
    let mut conn = pin!(conn);
    let res = tokio::select! {
        res = conn.as_mut() => res,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = res {
        // A header timeout, a reset, a malformed request: the client's
        // business, and no concern of the server's.
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The answer on a connection over the bound, in the dialect of the path.
async fn too_many_connections(uri: Uri) -> Response {
    let e = ApiError::Busy("too many connections; retry later".into());
    let path = uri.path();
    // Outside both APIs (the operations routes), MetaStudio's shape.
    let mut resp = Api::of_path(path).unwrap_or(Api::MetaStudio).error(e);
    // Every API answer carries one (upload URLs' answers do not).
    if !path.starts_with("/upload/") {
        resp.headers_mut()
            .insert(X_REQUEST_ID.clone(), request_id());
    }
    resp
}
