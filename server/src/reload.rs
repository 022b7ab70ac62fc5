//! Reloading the credentials file while the server runs (on SIGHUP).
//!
//! The file is read, parsed and validated as at start (see
//! [`Credentials::load`]), and only a file that passes replaces the users and
//! shared folders, whole and at once: a request holds the set it started with
//! (see [`AppState::credentials_now`]), so one in flight is unaffected. A file
//! that is missing, unreadable, not JSON or not valid changes nothing; the
//! previous set stays in force. A reload never creates the file.

use std::path::Path;
#[cfg(unix)]
use std::path::PathBuf;
use std::sync::Arc;

use crate::AppState;
#[cfg(unix)]
use crate::State;
use crate::config::{ConfigError, Credentials};

/// What a successful reload put in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reloaded {
    /// The number of users.
    pub users: usize,
    /// The number of shared folders.
    pub shared_folders: usize,
}

/// Reads the credentials file at `path` and, if it is valid, makes it the
/// set in force. On an error the previous set stays. Blocking (it reads the
/// file): call it off the async runtime.
pub fn reload(state: &AppState, path: &Path) -> Result<Reloaded, ConfigError> {
    let creds = Credentials::load(path)?;
    let done = Reloaded {
        users: creds.users.len(),
        shared_folders: creds.shared_folders.len(),
    };
    state.credentials.store(Arc::new(creds));
    Ok(done)
}

/// [`reload`], with its outcome logged: `info` with the counts on success,
/// `error` with the path and the reason otherwise.
pub fn reload_and_log(state: &AppState, path: &Path) -> Result<Reloaded, ConfigError> {
    let res = reload(state, path);
    match &res {
        Ok(r) => tracing::info!(
            path = %path.display(),
            users = r.users,
            shared_folders = r.shared_folders,
            "credentials reloaded"
        ),
        // The error names the file and the reason.
        Err(e) => tracing::error!(
            "credentials not reloaded, the previous users and shared folders stay: {e}"
        ),
    }
    res
}

/// The SIGHUP handler, installed by [`Hangups::install`]; from then on a
/// SIGHUP no longer terminates the process (its default action) but waits
/// for [`Hangups::reload_on_each`].
#[cfg(unix)]
pub struct Hangups(tokio::signal::unix::Signal);

#[cfg(unix)]
impl Hangups {
    /// Installs the handler now. Must be called on the tokio runtime.
    pub fn install() -> std::io::Result<Hangups> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Hangups(signal(SignalKind::hangup())?))
    }

    /// Reloads the credentials file at `path` into `state` on each SIGHUP,
    /// one reload at a time (signals that come during one are merged into
    /// the next), logging each outcome. Runs until the runtime stops.
    pub async fn reload_on_each(mut self, state: State, path: PathBuf) {
        while self.0.recv().await.is_some() {
            let (st, p) = (state.clone(), path.clone());
            if let Err(e) = tokio::task::spawn_blocking(move || reload_and_log(&st, &p)).await {
                tracing::error!(
                    path = %path.display(),
                    "credentials not reloaded, the previous users and shared folders stay: \
                     the reload task failed: {e}"
                );
            }
        }
    }
}
