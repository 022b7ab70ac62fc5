//! The index of committed files by owner, SHA-256 and length, and flash
//! upload: a file the owner already has is committed again without moving
//! a byte.

use std::collections::{BTreeMap, HashMap};

use crate::error::Result;
use crate::id::{FileId, Owner};
use crate::midstate::Sha256;
use crate::store::{self, CommitFailure, FileRecord, Layout, Staging};

use super::state::lock;
use super::{Engine, Verified};

/// Committed files by owner, SHA-256 and length.
#[derive(Default)]
pub(super) struct ContentIndex(HashMap<(Owner, Sha256, u64), Vec<FileId>>);

impl ContentIndex {
    /// The index of every committed file in the store.
    pub(super) fn load(layout: &Layout) -> Result<ContentIndex> {
        let mut index = ContentIndex::default();
        for (id, rec) in store::committed(layout)? {
            index.insert(&rec, &id);
        }
        Ok(index)
    }

    pub(super) fn insert(&mut self, rec: &FileRecord, id: &FileId) {
        let ids = self
            .0
            .entry((rec.owner.clone(), rec.sha256, rec.length))
            .or_default();
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }

    pub(super) fn remove(&mut self, rec: &FileRecord, id: &FileId) {
        let key = (rec.owner.clone(), rec.sha256, rec.length);
        if let Some(ids) = self.0.get_mut(&key) {
            ids.retain(|i| i != id);
            if ids.is_empty() {
                self.0.remove(&key);
            }
        }
    }
}

impl Engine {
    /// A committed file of `owner` with this SHA-256 and length, if any: the
    /// test for a flash upload.
    pub fn find_committed(&self, owner: &Owner, sha256: &Sha256, length: u64) -> Option<FileId> {
        lock(&self.inner.committed)
            .0
            .get(&(owner.clone(), *sha256, length))
            .and_then(|ids| ids.first().cloned())
    }

    /// Commits a new file of `owner` with the bytes of the committed file
    /// `source` (a flash upload): no bytes move, the new file shares the
    /// source's data (a hard link, or a copy where links are impossible).
    /// The new file carries `labels` (e.g. its own name).
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound) /
    /// [`Error::NotOwner`](crate::Error::NotOwner) for an unknown or foreign
    /// source, [`Error::Io`](crate::Error::Io) when the new file cannot be
    /// committed (nothing is left behind).
    pub fn create_from(
        &self,
        owner: &Owner,
        source: &FileId,
        labels: BTreeMap<String, String>,
    ) -> Result<(FileId, Verified)> {
        let rec = self.file_record(owner, source)?;
        let id = FileId::generate()?;
        let layout = &self.inner.layout;
        let staging = Staging::new(layout, &id)?;
        store::link_or_copy(layout, &layout.file_data(source), &staging.data_path())?;
        let mut meta = FileRecord {
            labels,
            commit_nonce: None,
            ..rec
        };
        match self.commit_with_event(staging, &id, &mut meta) {
            Ok(()) => lock(&self.inner.committed).insert(&meta, &id),
            Err(CommitFailure::Before(e)) => return Err(e),
            Err(CommitFailure::After(e)) => {
                // Past the rename the new file exists: keep the index true to
                // what is on disk, and report the failed fsync.
                lock(&self.inner.committed).insert(&meta, &id);
                return Err(e);
            }
        }
        Ok((
            id,
            Verified {
                sha256: meta.sha256,
                md5: meta.md5,
                length: meta.length,
                parts: meta.parts,
            },
        ))
    }
}
