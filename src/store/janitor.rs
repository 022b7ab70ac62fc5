//! Removal of what was buried in `tmp/`, off the caller's thread.
//!
//! A buried directory is already gone from the store as far as any reader or
//! a crash is concerned (it was renamed into `tmp/`, which open empties), so
//! deleting its files is only housekeeping: a complete of 10,000 parts need
//! not wait for 10,000 unlinks. Dropping the janitor waits for the work in
//! hand, so a store reopened after its engine is dropped never races it.

use std::path::PathBuf;
use std::sync::mpsc::{Sender, channel};
use std::thread::JoinHandle;

use super::remove_any;

/// A thread that deletes buried paths in the order they come.
pub(crate) struct Janitor {
    tx: Option<Sender<PathBuf>>,
    thread: Option<JoinHandle<()>>,
}

impl Janitor {
    /// Starts the thread; without one (the system refused it), paths are
    /// deleted on the caller's thread.
    pub(crate) fn start() -> Janitor {
        let (tx, rx) = channel::<PathBuf>();
        let thread = std::thread::Builder::new()
            .name("partseal-janitor".into())
            .spawn(move || {
                for path in rx {
                    // Whatever is left is removed at the next open.
                    let _ = remove_any(&path);
                }
            })
            .ok();
        Janitor {
            tx: thread.is_some().then_some(tx),
            thread,
        }
    }

    /// Deletes `path` (already buried) soon.
    pub(crate) fn remove(&self, path: PathBuf) {
        let unsent = match &self.tx {
            Some(tx) => tx.send(path).err().map(|e| e.0),
            None => Some(path),
        };
        if let Some(path) = unsent {
            let _ = remove_any(&path);
        }
    }
}

impl Drop for Janitor {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
