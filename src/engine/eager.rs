//! Eager hashing of stream uploads: while parts arrive, a background task
//! folds the contiguous prefix of parts into checkpoints, so that complete
//! only hashes what came last. A replaced part invalidates the checkpoints
//! from its number on.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use md5::{Digest, Md5};

use crate::io::read_window;
use crate::midstate::Hasher;

use super::Engine;
use super::state::{Checkpoint, Phase, Upload};

impl Engine {
    pub(super) fn kick_eager(&self, up: &Arc<Upload>) {
        if !self.inner.cfg.eager_hashing || up.eager_running.swap(true, Ordering::AcqRel) {
            return;
        }
        // The task holds the upload and the paths, not the engine: dropping
        // the last engine handle releases the store at once.
        let parts_dir = self.inner.layout.parts_dir(&up.id);
        let window = self.inner.cfg.pipeline().window;
        let up = up.clone();
        rayon::spawn(move || {
            loop {
                eager_hash(&parts_dir, window, &up);
                up.eager_running.store(false, Ordering::Release);
                // A part may have arrived after the last look and before the
                // flag was cleared; look once more unless another task took over.
                if !next_part_ready(&up) || up.eager_running.swap(true, Ordering::AcqRel) {
                    break;
                }
            }
        });
    }
}

fn next_part_ready(up: &Upload) -> bool {
    let st = up.state();
    st.phase == Phase::Open && st.parts.contains_key(&(st.checkpoints.len() as u32 + 1))
}

/// Folds parts into checkpoints for as long as the next one is present.
fn eager_hash(parts_dir: &Path, window: usize, up: &Upload) {
    loop {
        let (k, version, len, mut sha, mut md5) = {
            let st = up.state();
            if st.phase != Phase::Open {
                return;
            }
            let k = st.checkpoints.len();
            let Some(rec) = st.parts.get(&(k as u32 + 1)) else {
                return;
            };
            let Some(version) = rec.data.clone() else {
                return;
            };
            let (sha, md5) = match st.checkpoints.last() {
                Some(c) => (c.sha.clone(), c.md5.clone()),
                None => (Hasher::new(), st.record.md5.map(|_| Md5::new())),
            };
            (k, version, rec.len, sha, md5)
        };
        // A part replaced or an upload finished meanwhile makes the open or
        // the read fail, or the result stale; either way nothing is recorded.
        let Ok(file) = File::open(parts_dir.join(&version)) else {
            return;
        };
        let mut off = 0u64;
        while off < len {
            let n = (len - off).min(window as u64) as usize;
            let Ok(chunk) = read_window(&file, off, n) else {
                return;
            };
            sha.update(&chunk);
            if let Some(m) = md5.as_mut() {
                m.update(&chunk[..]);
            }
            off += n as u64;
        }
        let mut st = up.state();
        let current = st
            .parts
            .get(&(k as u32 + 1))
            .and_then(|r| r.data.as_deref());
        if st.checkpoints.len() != k || current != Some(version.as_str()) {
            continue;
        }
        st.checkpoints.push(Checkpoint { sha, md5, version });
    }
}
