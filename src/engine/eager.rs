//! Eager hashing of stream uploads: while parts arrive, a background task
//! folds the contiguous prefix of parts into checkpoints, so that complete
//! only hashes what came last. A replaced part invalidates the checkpoints
//! from its number on.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use md5::{Digest, Md5};

use crate::io::{prefetch, read_window};
use crate::midstate::Hasher;
use crate::store::PartRecord;

use super::Engine;
use super::ingest::placed_offset;
use super::state::{Checkpoint, Phase, Upload};

impl Engine {
    pub(super) fn kick_eager(&self, up: &Arc<Upload>) {
        if !self.inner.cfg.eager_hashing || up.eager_running.swap(true, Ordering::AcqRel) {
            return;
        }
        // The task holds the upload and the paths, not the engine: dropping
        // the last engine handle releases the store at once.
        let parts_dir = self.inner.layout.parts_dir(&up.id);
        let assembly = self.inner.layout.assembly(&up.id);
        let window = self.inner.cfg.pipeline().window;
        let up = up.clone();
        rayon::spawn(move || {
            loop {
                eager_hash(&parts_dir, &assembly, window, &up);
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

/// Which version of a stream part was hashed: its data file, or for a part
/// placed in the assembly its SHA-256 (a replacement of a placed part is a
/// data file, so either way a replaced part has another version).
pub(super) fn part_version(rec: &PartRecord) -> String {
    match &rec.data {
        Some(name) => name.clone(),
        None => format!("@{}", rec.sha256),
    }
}

/// Folds parts into checkpoints for as long as the next one is present.
fn eager_hash(parts_dir: &Path, assembly: &Path, window: usize, up: &Upload) {
    loop {
        let (k, version, source, len, mut sha, mut md5) = {
            let st = up.state();
            if st.phase != Phase::Open {
                return;
            }
            let k = st.checkpoints.len();
            let Some(rec) = st.parts.get(&(k as u32 + 1)) else {
                return;
            };
            let source = match &rec.data {
                Some(name) => (parts_dir.join(name), 0),
                None => match placed_offset(&st.record, k as u32 + 1) {
                    Some(offset) => (assembly.to_path_buf(), offset),
                    None => return,
                },
            };
            let (sha, md5) = match st.checkpoints.last() {
                Some(c) => (c.sha.clone(), c.md5.clone()),
                None => (Hasher::new(), st.record.md5.map(|_| Md5::new())),
            };
            (k, part_version(rec), source, rec.len, sha, md5)
        };
        // A part replaced or an upload finished meanwhile makes the open or
        // the read fail, or the result stale; either way nothing is recorded.
        let (path, base) = source;
        let Ok(file) = File::open(&path) else {
            return;
        };
        prefetch(&file, base, len);
        let mut off = 0u64;
        while off < len {
            let n = (len - off).min(window as u64) as usize;
            let Ok(chunk) = read_window(&file, base + off, n) else {
                return;
            };
            sha.update(&chunk);
            if let Some(m) = md5.as_mut() {
                m.update(&chunk[..]);
            }
            off += n as u64;
        }
        let mut st = up.state();
        let current = st.parts.get(&(k as u32 + 1)).map(part_version);
        if st.checkpoints.len() != k || current.as_deref() != Some(version.as_str()) {
            continue;
        }
        st.checkpoints.push(Checkpoint { sha, md5, version });
    }
}
