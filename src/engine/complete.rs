//! Complete: check that the upload is whole and proven, build the file in
//! `tmp/`, and commit it by one rename. Exactly one call commits; every
//! other, concurrent or later, gets the committed file's facts.

use crate::error::{Error, Result};
use crate::id::{FileId, Owner};
use crate::midstate::Sha256;
use crate::store::{self, CommitFailure, FileRecord, Mode, Staging};

use super::state::{Phase, Upload, lock};
use super::{Completion, Engine, Verified};

impl Engine {
    /// Verifies an upload and commits it: the seeds' "complete".
    ///
    /// All parts must be present. Chain-mode uploads were checked link by
    /// link on arrival, so this only compares recorded states; other uploads
    /// are hashed in order while being merged into the final file. The digest
    /// must equal `expected` and the one declared at create, when given.
    /// On success the file is fsynced and committed atomically; on failure
    /// before the commit point nothing changes and the error says what
    /// failed. Completing a committed file again returns its facts with
    /// [`Completion::committed_now`] false.
    ///
    /// ```no_run
    /// # use partseal::{Config, Engine, FileSpec, Owner, PartNumber, Sha256};
    /// # let engine = Engine::open("./data", Config::default())?;
    /// # let owner = Owner::new("alice")?;
    /// let id = engine.create(&owner, FileSpec::default())?;
    /// engine.put_part(&owner, &id, PartNumber::new(1)?, &b"hello, world"[..], None)?;
    /// let done = engine.complete(&owner, &id, Some(Sha256::digest(b"hello, world")))?;
    /// assert!(done.committed_now);
    /// assert_eq!(done.file.length, 12);
    /// # Ok::<(), partseal::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::MissingParts`] naming the first missing parts,
    /// [`Error::LinkMismatch`] naming the part whose link breaks,
    /// [`Error::DigestMismatch`] for a SHA-256 or MD5 other than expected,
    /// [`Error::ConflictingExpected`] when `expected` differs from the
    /// digest declared at create, [`Error::LengthMismatch`],
    /// [`Error::PartTooSmall`] / [`Error::FileTooLarge`] for parts that break
    /// the limits, [`Error::NotFound`] / [`Error::NotOwner`] for an unknown
    /// or foreign upload, [`Error::Io`] when the file cannot be written or
    /// committed. An I/O error after the commit point (the directory fsync)
    /// leaves the file committed and immutable; the next call finishes it.
    pub fn complete(
        &self,
        owner: &Owner,
        id: &FileId,
        expected: Option<Sha256>,
    ) -> Result<Completion> {
        let Some(up) = self.lookup(id)? else {
            return self.already_committed(owner, id, expected.as_ref());
        };
        if up.state().record.owner != *owner {
            return Err(Error::NotOwner);
        }
        let _gate = up.exclusive();
        // A complete attempt is activity, even one that fails and so writes
        // nothing else.
        up.touch();
        store::touch(&self.inner.layout, id);
        let (record, phase) = {
            let st = up.state();
            (st.record.clone(), st.phase)
        };
        match phase {
            Phase::Open => {}
            Phase::Committed => return self.already_committed(owner, id, expected.as_ref()),
            Phase::Aborted | Phase::Expired => return Err(Error::NotFound),
            Phase::CommitNotDurable => {
                // An earlier call got past the commit point and then failed:
                // this call makes the commit durable, so it is the one that
                // commits.
                self.inner
                    .layout
                    .fsync_dir(&self.inner.layout.files_dir())?;
                self.finish_commit(&up)?;
                let file = self.committed_verified(owner, id, expected.as_ref())?;
                return Ok(Completion {
                    file,
                    committed_now: true,
                });
            }
        }
        if let (Some(d), Some(e)) = (&record.sha256, &expected)
            && d != e
        {
            return Err(Error::ConflictingExpected {
                declared: d.to_hex(),
                given: e.to_hex(),
            });
        }
        let expected = expected.or(record.sha256);
        let layout = &self.inner.layout;
        let staging = Staging::new(layout, id)?;
        let data = staging.data_path();
        let verified = match record.mode {
            Mode::Chain => self.check_chain(&up, &record, expected.as_ref(), &data)?,
            Mode::Stream | Mode::Unset => {
                self.verify_stream(&up, &record, expected.as_ref(), &data)?
            }
        };
        let mut meta = FileRecord {
            owner: record.owner.clone(),
            length: verified.length,
            sha256: verified.sha256,
            md5: verified.md5,
            parts: verified.parts,
            labels: record.labels.clone(),
            commit_nonce: None,
        };
        match self.commit_with_event(staging, id, &mut meta) {
            Ok(()) => {}
            Err(CommitFailure::Before(e)) => return Err(e),
            Err(CommitFailure::After(e)) => {
                // The rename happened: the file is immutable from here on,
                // whatever the caller does next.
                up.state().phase = Phase::CommitNotDurable;
                return Err(e);
            }
        }
        self.finish_commit(&up)?;
        Ok(Completion {
            file: verified,
            committed_now: true,
        })
    }

    /// Verifies and commits an upload, as [`Engine::complete`] does, and
    /// returns the committed file's facts (whether or not this call
    /// committed it).
    ///
    /// # Errors
    /// As [`Engine::complete`].
    pub fn verify(&self, owner: &Owner, id: &FileId, expected: Option<Sha256>) -> Result<Verified> {
        self.complete(owner, id, expected).map(|c| c.file)
    }

    /// After a durable commit: the upload no longer exists, the file is in
    /// the content index, and the upload's directory goes.
    fn finish_commit(&self, up: &Upload) -> Result<()> {
        let layout = &self.inner.layout;
        let rec: FileRecord = store::load_json(&layout.file_record(&up.id), "file record")?;
        up.state().phase = Phase::Committed;
        lock(&self.inner.uploads).remove(&up.id);
        lock(&self.inner.committed).insert(&rec, &up.id);
        // The commit is durable; the upload's files go off this thread (a
        // failure to tidy up is finished by recovery).
        if let Ok(grave) = store::bury(layout, &layout.upload_dir(&up.id), &layout.uploads_dir()) {
            self.inner.janitor.remove(grave);
        }
        Ok(())
    }

    fn already_committed(
        &self,
        owner: &Owner,
        id: &FileId,
        expected: Option<&Sha256>,
    ) -> Result<Completion> {
        Ok(Completion {
            file: self.committed_verified(owner, id, expected)?,
            committed_now: false,
        })
    }

    fn committed_verified(
        &self,
        owner: &Owner,
        id: &FileId,
        expected: Option<&Sha256>,
    ) -> Result<Verified> {
        let rec = self.file_record(owner, id)?;
        if let Some(e) = expected
            && *e != rec.sha256
        {
            return Err(Error::sha256_mismatch(e, &rec.sha256));
        }
        Ok(Verified {
            sha256: rec.sha256,
            md5: rec.md5,
            length: rec.length,
            parts: rec.parts,
        })
    }
}
