//! Create, plan, list, abort, delete, read: the rest of an upload's life.

use std::collections::BTreeMap;
use std::path::PathBuf;

use partseal::{
    Committed, Error, FileId, FileSpec, MAX_LABEL_LEN, MAX_LABELS, MAX_PARTS, OpenUpload, Owner,
    ParseError, PartInfo, PartNumber, PartPlan, Result, Sha256, UploadMode, UploadStatus, Verified,
};

use crate::db::{self, db_err};
use crate::{Cluster, Mode, State, file_key};

/// A committed file opened for reading: its facts, and ranged reads of its
/// object.
#[derive(Clone)]
pub struct ObjectReader {
    cluster: Cluster,
    key: String,
    length: u64,
    sha256: Sha256,
    md5: Option<[u8; 16]>,
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader")
            .field("key", &self.key)
            .field("length", &self.length)
            .finish()
    }
}

impl ObjectReader {
    /// The file's length.
    pub fn len(&self) -> u64 {
        self.length
    }
    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }
    /// The file's SHA-256.
    pub fn sha256(&self) -> Sha256 {
        self.sha256
    }
    /// The file's MD5, when it was computed at complete.
    pub fn md5(&self) -> Option<[u8; 16]> {
        self.md5
    }
    /// Bytes `start..start + len` of the file, streamed from the store.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the store does not answer.
    pub async fn range(
        &self,
        start: u64,
        len: u64,
    ) -> Result<impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + use<>>
    {
        let body = self
            .cluster
            .inner
            .s3
            .get_range(&self.key, start, len)
            .await?;
        Ok(futures_util::stream::unfold(body, |mut body| async move {
            body.next()
                .await
                .map(|chunk| (chunk.map_err(std::io::Error::other), body))
        }))
    }
}

impl Cluster {
    /// Starts an upload: its multipart upload in the store, then its row.
    ///
    /// # Errors
    /// As [`partseal::Engine::create`], plus [`Error::Unavailable`].
    pub async fn create(&self, owner: &Owner, spec: FileSpec) -> Result<FileId> {
        let limits = &self.inner.cfg.limits;
        if let Some(len) = spec.length
            && len > limits.max_file_size
        {
            return Err(Error::FileTooLarge {
                len,
                max: limits.max_file_size,
            });
        }
        if let Some(count) = spec.part_count
            && (count == 0 || count > MAX_PARTS)
        {
            return Err(Error::BadInput(ParseError::new(format!(
                "an upload has 1 to {MAX_PARTS} parts, not {count}"
            ))));
        }
        let plan = if spec.plan.is_empty() {
            BTreeMap::new()
        } else {
            partseal::plan::merge(&BTreeMap::new(), &spec.plan, spec.length, limits)?
        };
        if spec.labels.len() > MAX_LABELS
            || spec
                .labels
                .iter()
                .any(|(k, v)| k.len() > MAX_LABEL_LEN || v.len() > MAX_LABEL_LEN)
        {
            return Err(Error::BadInput(ParseError::new(format!(
                "at most {MAX_LABELS} labels of at most {MAX_LABEL_LEN} bytes each"
            ))));
        }
        let id = FileId::generate()?;
        let key = file_key(&id);
        // A multipart upload with no row yet is an orphan the sweep removes
        // after its grace, should the row never come.
        let upload_id = self.inner.s3.create_multipart(&key).await?;
        let mut c = self.inner.db.client().await?;
        let tx = c.transaction().await.map_err(db_err)?;
        tx.execute(
            "INSERT INTO uploads (id, owner, state, mode, length, sha256, md5, part_count,
                                  labels, s3_key, s3_upload_id)
             VALUES ($1, $2, 'open', $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                &id.as_str(),
                &owner.as_str(),
                &Mode::of_plan(&plan).as_str(),
                &spec.length.map(|l| l as i64),
                &spec.sha256.map(|s| s.0.to_vec()),
                &spec.md5.map(|m| m.to_vec()),
                &spec.part_count.map(|c| c as i32),
                &db::labels_json(&spec.labels),
                &key,
                &upload_id,
            ],
        )
        .await
        .map_err(db_err)?;
        let entries: Vec<PartPlan> = plan.values().copied().collect();
        db::insert_plan(&tx, &id, &entries).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(id)
    }

    /// Declares more parts, validated against the plan so far as the local
    /// engine validates them.
    ///
    /// # Errors
    /// As [`partseal::Engine::plan_parts`], plus [`Error::Unavailable`].
    pub async fn plan_parts(&self, owner: &Owner, id: &FileId, parts: &[PartPlan]) -> Result<()> {
        let mut c = self.inner.db.client().await?;
        let tx = c.transaction().await.map_err(db_err)?;
        let up = db::open_upload(&tx, owner, id, true).await?;
        let old = db::load_plan(&tx, id).await?;
        let merged = partseal::plan::merge(&old, parts, up.length, &self.inner.cfg.limits)?;
        let mode = Mode::of_plan(&merged);
        let has_parts = tx
            .query_opt(
                "SELECT 1 FROM parts WHERE upload_id = $1 LIMIT 1",
                &[&id.as_str()],
            )
            .await
            .map_err(db_err)?
            .is_some();
        let current = if up.mode == Mode::Unset && has_parts {
            Mode::Stream
        } else {
            up.mode
        };
        if current != Mode::Unset && current != mode {
            return Err(Error::BadPlan(
                "the upload already has parts of the other kind (with or without hashCtx)".into(),
            ));
        }
        db::insert_plan(&tx, id, parts).await?;
        tx.execute(
            "UPDATE uploads SET mode = $2, last_activity = now() WHERE id = $1",
            &[&id.as_str(), &mode.as_str()],
        )
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }

    /// The parts received so far.
    ///
    /// # Errors
    /// As [`partseal::Engine::parts`], plus [`Error::Unavailable`].
    pub async fn parts(&self, owner: &Owner, id: &FileId) -> Result<Vec<PartInfo>> {
        let c = self.inner.db.client().await?;
        let up = db::open_upload(&c, owner, id, false).await?;
        let plan = db::load_plan(&c, id).await?;
        let parts = db::load_parts(&c, id).await?;
        part_infos(&up, &plan, &parts)
    }

    /// How the upload is verified at complete; `None` before its first part
    /// or plan says.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::NotOwner`], [`Error::Unavailable`].
    pub async fn upload_mode(&self, owner: &Owner, id: &FileId) -> Result<Option<UploadMode>> {
        let c = self.inner.db.client().await?;
        let up = db::load_upload(&c, id, false)
            .await?
            .ok_or(Error::NotFound)?;
        if up.owner != *owner {
            return Err(Error::NotOwner);
        }
        Ok(match up.mode {
            Mode::Chain => Some(UploadMode::Chain),
            Mode::Stream => Some(UploadMode::Stream),
            Mode::Unset => None,
        })
    }

    /// Where an id stands: open (with its parts), committed, or aborted.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::NotOwner`], [`Error::Unavailable`].
    pub async fn status(&self, owner: &Owner, id: &FileId) -> Result<UploadStatus> {
        let c = self.inner.db.client().await?;
        let Some(up) = db::load_upload(&c, id, false).await? else {
            drop(c);
            // A file made by a flash upload has no upload row.
            return self.get(owner, id).await.map(UploadStatus::Committed);
        };
        if up.owner != *owner {
            return Err(Error::NotOwner);
        }
        match up.state {
            State::Open | State::Completing => {
                let plan = db::load_plan(&c, id).await?;
                let parts = db::load_parts(&c, id).await?;
                Ok(UploadStatus::Open(OpenUpload::new(
                    up.length,
                    up.sha256,
                    up.md5,
                    up.part_count,
                    part_infos(&up, &plan, &parts)?,
                    up.labels.clone(),
                )))
            }
            State::Committed => {
                drop(c);
                self.get(owner, id).await.map(UploadStatus::Committed)
            }
            State::Aborted => Ok(UploadStatus::Aborted { note: up.note }),
        }
    }

    /// Aborts an open upload: its parts go, and a later complete finds
    /// nothing. Aborting an aborted upload succeeds.
    ///
    /// # Errors
    /// As [`partseal::Engine::abort`], plus [`Error::Unavailable`].
    pub async fn abort(&self, owner: &Owner, id: &FileId) -> Result<()> {
        self.abort_with_note(owner, id, None).await
    }

    /// [`Cluster::abort`], keeping `note` for [`Cluster::status`].
    ///
    /// # Errors
    /// As [`Cluster::abort`].
    pub async fn abort_with_note(
        &self,
        owner: &Owner,
        id: &FileId,
        note: Option<&str>,
    ) -> Result<()> {
        let mut c = self.inner.db.client().await?;
        let tx = c.transaction().await.map_err(db_err)?;
        let up = db::load_upload(&tx, id, true)
            .await?
            .ok_or(Error::NotFound)?;
        if up.owner != *owner {
            return Err(Error::NotOwner);
        }
        match up.state {
            State::Aborted => return Ok(()),
            State::Committed => return Err(Error::Conflict("the upload is complete".into())),
            State::Completing if up.claim_live => {
                return Err(Error::Conflict(
                    "a complete of this upload is running".into(),
                ));
            }
            State::Open | State::Completing => {}
        }
        tx.execute(
            "UPDATE uploads SET state = 'aborted', note = $2, claim_until = NULL,
                 claim_fence = claim_fence + 1
             WHERE id = $1",
            &[&id.as_str(), &note],
        )
        .await
        .map_err(db_err)?;
        tx.execute("DELETE FROM parts WHERE upload_id = $1", &[&id.as_str()])
            .await
            .map_err(db_err)?;
        tx.execute("DELETE FROM plan WHERE upload_id = $1", &[&id.as_str()])
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        // The record says aborted: from here on the bytes are no one's. A
        // failure leaves an orphan for the sweep.
        if let Err(e) = self.inner.s3.abort(&up.s3_key, &up.s3_upload_id).await {
            tracing::warn!(file_id = %id.as_str(), error = %e, "abort: the multipart upload stays for the sweep");
        }
        if up.state == State::Completing
            && let Err(e) = self.remove_unshared_object(&up.s3_key).await
        {
            tracing::warn!(file_id = %id.as_str(), error = %e, "abort: the object stays for the sweep");
        }
        Ok(())
    }

    /// Deletes a committed file. Its object goes once no other file (of a
    /// flash upload) shares it.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::NotOwner`], [`Error::Unavailable`].
    pub async fn delete(&self, owner: &Owner, id: &FileId) -> Result<()> {
        let mut c = self.inner.db.client().await?;
        let tx = c.transaction().await.map_err(db_err)?;
        let row = tx
            .query_opt(
                "SELECT owner, s3_key FROM files WHERE id = $1 FOR UPDATE",
                &[&id.as_str()],
            )
            .await
            .map_err(db_err)?
            .ok_or(Error::NotFound)?;
        let (o, key): (String, String) = (row.get(0), row.get(1));
        if o != owner.as_str() {
            return Err(Error::NotOwner);
        }
        tx.execute("DELETE FROM files WHERE id = $1", &[&id.as_str()])
            .await
            .map_err(db_err)?;
        tx.execute("DELETE FROM uploads WHERE id = $1", &[&id.as_str()])
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        if let Err(e) = self.remove_unshared_object(&key).await {
            tracing::warn!(file_id = %id.as_str(), error = %e, "delete: the object stays for the sweep");
        }
        Ok(())
    }

    /// Removes `key` unless a file row or an open upload still names it.
    pub(crate) async fn remove_unshared_object(&self, key: &str) -> Result<()> {
        let c = self.inner.db.client().await?;
        let used = c
            .query_opt(
                "SELECT 1 FROM files WHERE s3_key = $1
                 UNION ALL
                 SELECT 1 FROM uploads WHERE s3_key = $1 AND state IN ('open', 'completing')
                 LIMIT 1",
                &[&key],
            )
            .await
            .map_err(db_err)?
            .is_some();
        drop(c);
        if !used {
            self.inner.s3.delete(key).await?;
        }
        Ok(())
    }

    /// A committed file's facts.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::NotOwner`], [`Error::Unavailable`].
    pub async fn get(&self, owner: &Owner, id: &FileId) -> Result<Committed> {
        let f = self.file_row(owner, id).await?;
        Ok(Committed::new(
            PathBuf::from(f.s3_key),
            f.length,
            f.sha256,
            f.md5,
            f.labels,
        ))
    }

    /// Opens a committed file for ranged reads.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::NotOwner`], [`Error::Unavailable`].
    pub async fn open_file(&self, owner: &Owner, id: &FileId) -> Result<ObjectReader> {
        let f = self.file_row(owner, id).await?;
        Ok(ObjectReader {
            cluster: self.clone(),
            key: f.s3_key,
            length: f.length,
            sha256: f.sha256,
            md5: f.md5,
        })
    }

    /// A committed file of `owner` with these bytes, for a flash upload.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn find_committed(
        &self,
        owner: &Owner,
        sha256: &Sha256,
        length: u64,
    ) -> Result<Option<FileId>> {
        let c = self.inner.db.client().await?;
        let row = c
            .query_opt(
                "SELECT id FROM files WHERE owner = $1 AND sha256 = $2 AND length = $3
                 ORDER BY committed_at LIMIT 1",
                &[&owner.as_str(), &&sha256.0[..], &(length as i64)],
            )
            .await
            .map_err(db_err)?;
        row.map(|r| r.get::<_, String>(0).parse()).transpose()
    }

    /// A new committed file with the bytes of `source` (no copy: both rows
    /// name one object) and its own labels.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::NotOwner`], [`Error::Unavailable`].
    pub async fn create_from(
        &self,
        owner: &Owner,
        source: &FileId,
        labels: BTreeMap<String, String>,
    ) -> Result<(FileId, Verified)> {
        let f = self.file_row(owner, source).await?;
        let id = FileId::generate()?;
        let c = self.inner.db.client().await?;
        // Inserted only while the source still exists: a delete racing this
        // cannot remove the object the new row names.
        let n = c
            .execute(
                "INSERT INTO files (id, owner, sha256, length, md5, parts, s3_key, labels)
                 SELECT $1, owner, sha256, length, md5, parts, s3_key, $3
                 FROM files WHERE id = $2 FOR UPDATE",
                &[&id.as_str(), &source.as_str(), &db::labels_json(&labels)],
            )
            .await
            .map_err(db_err)?;
        if n == 0 {
            return Err(Error::NotFound);
        }
        Ok((id, Verified::new(f.sha256, f.md5, f.length, f.parts)))
    }
}

fn part_infos(
    up: &crate::UploadRow,
    plan: &BTreeMap<u32, PartPlan>,
    parts: &BTreeMap<u32, db::PartRow>,
) -> Result<Vec<PartInfo>> {
    parts
        .values()
        .map(|p| {
            let checked = up.mode == Mode::Chain && {
                match plan.get(&(p.n + 1)) {
                    Some(next) => p.state_out.is_some() && p.state_out == next.ctx,
                    None => {
                        let is_last = plan.keys().next_back() == Some(&p.n);
                        is_last
                            && up.sha256.is_some()
                            && p.digest_if_last == up.sha256
                            && plan
                                .get(&p.n)
                                .is_some_and(|q| up.length == Some(q.offset.unwrap_or(0) + q.size))
                    }
                }
            };
            Ok(PartInfo::new(
                PartNumber::new(u64::from(p.n))?,
                p.len,
                p.sha256,
                checked,
            ))
        })
        .collect()
}
