//! Complete, exactly once across nodes: a claim with a lease and a fencing
//! number in the database decides who completes; the object store joins
//! the parts; one transaction fenced by the claim commits.

use std::collections::BTreeMap;
use std::time::Duration;

use md5::Digest as _;

use partseal::{
    Completion, DigestKind, Error, FileId, LinkEnd, Owner, PartPlan, Result, Sha256, Verified,
};

use crate::db::{self, PartRow, db_err};
use crate::ingest::Fold;
use crate::s3::Joined;
use crate::{Cluster, Mode, State, UploadRow};

/// How often a caller that found a complete in progress looks again.
const POLL: Duration = Duration::from_millis(50);

/// Bytes hashed between renewals of the claim's lease.
const RENEW_EVERY: u64 = 256 << 20;

impl Cluster {
    /// Completes an upload: checks that it is whole and proven, has the
    /// object store join its parts into the file's object, and commits it.
    ///
    /// Of any number of completes of one upload, on any nodes, concurrent
    /// or not, exactly one commits and answers `committed_now: true`; the
    /// others wait for it and answer with the same facts. A complete whose
    /// node dies holds its claim only until the lease runs out; the next
    /// complete then takes it over and finishes or rolls back the work.
    ///
    /// # Errors
    /// As [`partseal::Engine::complete`], plus [`Error::Unavailable`] when
    /// the database or the object store does not answer.
    pub async fn complete(
        &self,
        owner: &Owner,
        id: &FileId,
        expected: Option<Sha256>,
    ) -> Result<Completion> {
        let lease = self.inner.cfg.claim_lease;
        let deadline = tokio::time::Instant::now() + lease * 2 + Duration::from_secs(5);
        loop {
            let up = {
                let c = self.inner.db.client().await?;
                db::load_upload(&c, id, false)
                    .await?
                    .ok_or(Error::NotFound)?
            };
            if up.owner != *owner {
                return Err(Error::NotOwner);
            }
            match up.state {
                State::Committed => return self.already_committed(owner, id, expected).await,
                State::Aborted => return Err(Error::NotFound),
                State::Completing if up.claim_live => {
                    if tokio::time::Instant::now() > deadline {
                        return Err(Error::Conflict(
                            "a complete of this upload is still running on another node".into(),
                        ));
                    }
                    tokio::time::sleep(POLL).await;
                    continue;
                }
                State::Open | State::Completing => {}
            }
            let Some(fence) = self.claim(id, up.claim_fence).await? else {
                // Another node claimed it first: wait for its outcome.
                continue;
            };
            let up = UploadRow {
                claim_fence: fence,
                ..up
            };
            match self.complete_claimed(&up, expected).await {
                Ok(Some(file)) => return Ok(Completion::new(file, true)),
                // The claim was lost to a takeover: its holder finishes.
                Ok(None) => continue,
                Err(e) => {
                    self.release(id, fence).await;
                    return Err(e);
                }
            }
        }
    }

    /// Claims the upload for a complete. `seen` is the fence read with the
    /// row: a claim taken since then by another node makes this fail.
    async fn claim(&self, id: &FileId, seen: i64) -> Result<Option<i64>> {
        let c = self.inner.db.client().await?;
        let lease_ms = self.inner.cfg.claim_lease.as_millis() as f64;
        let row = c
            .query_opt(
                "UPDATE uploads SET state = 'completing', claim_fence = claim_fence + 1,
                    claim_node = $3, claim_until = now() + $4 * interval '1 millisecond',
                    last_activity = now()
                 WHERE id = $1 AND claim_fence = $2 AND (state = 'open'
                    OR (state = 'completing' AND claim_until < now()))
                 RETURNING claim_fence",
                &[&id.as_str(), &seen, &self.inner.cfg.node, &lease_ms],
            )
            .await
            .map_err(db_err)?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Extends the claim's lease; `false` when it is no longer ours.
    async fn renew(&self, id: &FileId, fence: i64) -> Result<bool> {
        let c = self.inner.db.client().await?;
        let lease_ms = self.inner.cfg.claim_lease.as_millis() as f64;
        let n = c
            .execute(
                "UPDATE uploads SET claim_until = now() + $3 * interval '1 millisecond'
                 WHERE id = $1 AND claim_fence = $2 AND state = 'completing'",
                &[&id.as_str(), &fence, &lease_ms],
            )
            .await
            .map_err(db_err)?;
        Ok(n == 1)
    }

    /// Gives a failed complete's claim back: the upload is open again.
    async fn release(&self, id: &FileId, fence: i64) {
        let res = async {
            let c = self.inner.db.client().await?;
            c.execute(
                "UPDATE uploads SET state = 'open', claim_until = NULL, claim_node = NULL
                 WHERE id = $1 AND claim_fence = $2 AND state = 'completing'",
                &[&id.as_str(), &fence],
            )
            .await
            .map_err(db_err)
        }
        .await;
        if let Err(e) = res {
            // The lease runs out on its own; the next complete takes over.
            tracing::warn!(file_id = %id.as_str(), error = %e, "could not release a complete's claim");
        }
    }

    /// The work of a complete under claim `up.claim_fence`. `None` when the
    /// claim was taken over meanwhile (this node then commits nothing).
    async fn complete_claimed(
        &self,
        up: &UploadRow,
        expected: Option<Sha256>,
    ) -> Result<Option<Verified>> {
        if let (Some(d), Some(e)) = (&up.sha256, &expected)
            && d != e
        {
            return Err(Error::ConflictingExpected {
                declared: d.to_hex(),
                given: e.to_hex(),
            });
        }
        let expected = expected.or(up.sha256);
        let (plan, parts) = {
            let c = self.inner.db.client().await?;
            (
                db::load_plan(&c, &up.id).await?,
                db::load_parts(&c, &up.id).await?,
            )
        };
        let (count, length) = whole(up, &plan, &parts)?;
        // Chain mode: every link was folded on arrival; what is left is to
        // compare each part's end state with the next part's start.
        let chain_digest = if up.mode == Mode::Chain {
            Some(check_links(&plan, &parts, count, expected.as_ref())?)
        } else {
            None
        };

        // Empty parts are not in the store (see `put_part`).
        let list: Vec<(u32, String)> = (1..=count)
            .filter(|n| parts[n].len > 0)
            .map(|n| (n, parts[&n].etag.clone()))
            .collect();
        let joined = if list.is_empty() {
            // An empty file: a multipart upload needs at least one part, so
            // the object is put empty and the multipart upload dropped
            // (both repeatable, should a takeover do them again).
            self.inner.s3.put_empty(&up.s3_key).await?;
            self.inner.s3.abort(&up.s3_key, &up.s3_upload_id).await?;
            Joined::Done
        } else {
            self.inner
                .s3
                .complete(&up.s3_key, &up.s3_upload_id, &list)
                .await?
        };
        match joined {
            Joined::Done => {}
            Joined::NoSuchUpload => {
                // An earlier claimant joined the parts and then died: the
                // object must be there, whole.
                match self.inner.s3.head(&up.s3_key).await? {
                    Some(len) if len == length => {}
                    _ => {
                        return Err(Error::Io {
                            role: "object store",
                            source: std::io::Error::other(
                                "the object store no longer has this upload's parts",
                            ),
                        });
                    }
                }
            }
            Joined::InvalidPart(msg) => {
                return Err(Error::Conflict(format!(
                    "a part changed in the object store while the upload was completed \
                     ({msg}); upload the parts sent last again"
                )));
            }
        }

        // What is not proven yet is hashed now, from the completed object.
        let (sha256, md5) = match chain_digest {
            Some(d) if up.md5.is_none() => (d, None),
            chained => {
                let (from_part, fold) = match chained {
                    // Chain mode with an MD5 to compute: one pass for it.
                    Some(_) => (0, Fold::fresh(true)),
                    None => resume_point(up, &parts),
                };
                let offset: u64 = (1..=from_part).map(|n| parts[&n].len).sum();
                let fold = self.hash_rest(up, offset, length - offset, fold).await?;
                let Some(fold) = fold else { return Ok(None) };
                let sha = Sha256(fold.sha.finalize().into());
                let md5: Option<[u8; 16]> = fold.md5.map(|m| m.finalize().into());
                let sha = chained.unwrap_or(sha);
                (sha, md5)
            }
        };
        let mismatch = match (&expected, up.md5, md5) {
            (Some(e), _, _) if *e != sha256 => Some(Error::sha256_mismatch(e, &sha256)),
            (_, Some(want), Some(got)) if want != got => Some(Error::DigestMismatch {
                kind: DigestKind::Md5,
                expected: hex::encode(want),
                actual: hex::encode(got),
            }),
            _ => None,
        };
        if let Some(e) = mismatch {
            self.reopen(up, &parts, count).await?;
            return Err(e);
        }
        let file = Verified::new(sha256, md5, length, count);
        if self.commit(up, &file).await? {
            tracing::info!(file_id = %up.id.as_str(), length, parts = count, "upload committed");
            Ok(Some(file))
        } else {
            Ok(None)
        }
    }

    /// Folds `len` bytes of the joined object from `offset` into `fold`,
    /// renewing the claim as it goes. `None` when the claim was lost.
    async fn hash_rest(
        &self,
        up: &UploadRow,
        offset: u64,
        len: u64,
        mut fold: Fold,
    ) -> Result<Option<Fold>> {
        let mut body = self.inner.s3.get_range(&up.s3_key, offset, len).await?;
        let mut since = 0u64;
        let mut got = 0u64;
        while let Some(chunk) = body.try_next().await.map_err(|e| {
            Error::Unavailable(format!("object store: reading the joined object: {e}"))
        })? {
            fold.update(&chunk);
            got += chunk.len() as u64;
            since += chunk.len() as u64;
            if since >= RENEW_EVERY {
                since = 0;
                if !self.renew(&up.id, up.claim_fence).await? {
                    return Ok(None);
                }
            }
        }
        if got != len {
            return Err(Error::Unavailable(format!(
                "object store: the joined object ended after {got} of {len} bytes"
            )));
        }
        Ok(Some(fold))
    }

    /// After a digest mismatch: the parts go back into a new multipart
    /// upload (copied inside the store from the joined object) and the
    /// object is removed, so that the upload is open as before and a
    /// client can replace the bad parts.
    async fn reopen(
        &self,
        up: &UploadRow,
        parts: &BTreeMap<u32, PartRow>,
        count: u32,
    ) -> Result<()> {
        let s3 = &self.inner.s3;
        // A new key: some stores (Garage) drop the multipart uploads of a
        // key when its object is deleted.
        let key = format!("{}.{}", crate::file_key(&up.id), up.claim_fence);
        let new_id = s3.create_multipart(&key).await?;
        let mut etags = Vec::with_capacity(count as usize);
        let mut at = 0u64;
        for n in 1..=count {
            let len = parts[&n].len;
            if len == 0 {
                // Empty parts stay out of the store.
                etags.push((n, String::new()));
                continue;
            }
            let etag = s3
                .upload_part_copy(&key, &new_id, n, &up.s3_key, at, len)
                .await?;
            etags.push((n, etag));
            at += len;
        }
        let mut c = self.inner.db.client().await?;
        let tx = c.transaction().await.map_err(db_err)?;
        let moved = tx
            .execute(
                "UPDATE uploads SET s3_key = $3, s3_upload_id = $4
                 WHERE id = $1 AND claim_fence = $2",
                &[&up.id.as_str(), &up.claim_fence, &key, &new_id],
            )
            .await
            .map_err(db_err)?;
        if moved == 0 {
            drop(tx);
            let _ = s3.abort(&key, &new_id).await;
            return Err(Error::Conflict(
                "another node took this complete over".into(),
            ));
        }
        for (n, etag) in &etags {
            tx.execute(
                "UPDATE parts SET etag = $3 WHERE upload_id = $1 AND n = $2",
                &[&up.id.as_str(), &(*n as i32), etag],
            )
            .await
            .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        // The record points at the new multipart upload: the joined object
        // is no one's now (the sweep removes it should this fail).
        if let Err(e) = s3.delete(&up.s3_key).await {
            tracing::warn!(file_id = %up.id.as_str(), error = %e, "could not remove a refused file's object");
        }
        Ok(())
    }

    /// Commits under the claim: the file's row, the upload's result, in one
    /// transaction. `false` when the fence is stale.
    async fn commit(&self, up: &UploadRow, file: &Verified) -> Result<bool> {
        let mut c = self.inner.db.client().await?;
        let tx = c.transaction().await.map_err(db_err)?;
        let won = tx
            .execute(
                "UPDATE uploads SET state = 'committed', claim_until = NULL
                 WHERE id = $1 AND claim_fence = $2 AND state = 'completing'",
                &[&up.id.as_str(), &up.claim_fence],
            )
            .await
            .map_err(db_err)?;
        if won == 0 {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO files (id, owner, sha256, length, md5, parts, s3_key, labels)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &up.id.as_str(),
                &up.owner.as_str(),
                &&file.sha256.0[..],
                &(file.length as i64),
                &file.md5.map(|m| m.to_vec()),
                &(file.parts as i32),
                &up.s3_key,
                &db::labels_json(&up.labels),
            ],
        )
        .await
        .map_err(db_err)?;
        tx.execute("DELETE FROM parts WHERE upload_id = $1", &[&up.id.as_str()])
            .await
            .map_err(db_err)?;
        tx.execute("DELETE FROM plan WHERE upload_id = $1", &[&up.id.as_str()])
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }

    async fn already_committed(
        &self,
        owner: &Owner,
        id: &FileId,
        expected: Option<Sha256>,
    ) -> Result<Completion> {
        let f = self.file_row(owner, id).await?;
        if let Some(e) = expected
            && e != f.sha256
        {
            return Err(Error::sha256_mismatch(&e, &f.sha256));
        }
        Ok(Completion::new(
            Verified::new(f.sha256, f.md5, f.length, f.parts),
            false,
        ))
    }
}

/// How many parts the upload has and how long it is, once every part is
/// there and agrees with the plan and the declared length.
fn whole(
    up: &UploadRow,
    plan: &BTreeMap<u32, PartPlan>,
    parts: &BTreeMap<u32, PartRow>,
) -> Result<(u32, u64)> {
    let count = match (up.mode, up.part_count) {
        (_, Some(c)) => c,
        (Mode::Chain, None) | (Mode::Stream, None) if !plan.is_empty() => {
            plan.keys().next_back().copied().unwrap_or(0)
        }
        _ => parts.keys().next_back().copied().unwrap_or(0),
    };
    let count = count.max(plan.keys().next_back().copied().unwrap_or(0));
    let missing: Vec<u32> = (1..=count).filter(|n| !parts.contains_key(n)).collect();
    if !missing.is_empty() {
        return Err(Error::MissingParts {
            first: missing.iter().take(10).copied().collect(),
            count: missing.len(),
        });
    }
    if count == 0 {
        return Err(Error::MissingParts {
            first: vec![1],
            count: 1,
        });
    }
    let missing_plan: Vec<u32> = if plan.is_empty() {
        Vec::new()
    } else {
        (1..=count).filter(|n| !plan.contains_key(n)).collect()
    };
    if !missing_plan.is_empty() {
        return Err(Error::MissingParts {
            first: missing_plan.iter().take(10).copied().collect(),
            count: missing_plan.len(),
        });
    }
    let length: u64 = (1..=count).map(|n| parts[&n].len).sum();
    if let Some(declared) = up.length
        && declared != length
    {
        return Err(Error::LengthMismatch {
            declared,
            actual: length,
        });
    }
    Ok((count, length))
}

/// Chain mode: every part's end state is the next part's `hashCtx`; the
/// last part's digest is the file's.
fn check_links(
    plan: &BTreeMap<u32, PartPlan>,
    parts: &BTreeMap<u32, PartRow>,
    count: u32,
    expected: Option<&Sha256>,
) -> Result<Sha256> {
    for n in 1..count {
        let next = plan.get(&(n + 1)).and_then(|p| p.ctx);
        if parts[&n].state_out.is_none() || parts[&n].state_out != next {
            return Err(Error::LinkMismatch {
                part: n,
                to: LinkEnd::Part(n + 1),
            });
        }
    }
    let digest = parts[&count].digest_if_last.ok_or(Error::LinkMismatch {
        part: count,
        to: LinkEnd::FileDigest,
    })?;
    if let Some(e) = expected
        && *e != digest
    {
        return Err(Error::LinkMismatch {
            part: count,
            to: LinkEnd::FileDigest,
        });
    }
    Ok(digest)
}

/// Stream mode: the last part folded in order, and the fold after it.
fn resume_point(up: &UploadRow, parts: &BTreeMap<u32, PartRow>) -> (u32, Fold) {
    let with_md5 = up.md5.is_some();
    let mut through = up.ckpt_through;
    while through > 0 {
        if let Some(p) = parts.get(&through)
            && let Some(f) = Fold::resume(p.ckpt_sha.as_deref(), p.ckpt_md5.as_deref(), with_md5)
        {
            return (through, f);
        }
        through -= 1;
    }
    (0, Fold::fresh(with_md5))
}

/// The committed file's facts, for already-committed answers.
pub(crate) struct FileFacts {
    pub(crate) sha256: Sha256,
    pub(crate) md5: Option<[u8; 16]>,
    pub(crate) length: u64,
    pub(crate) parts: u32,
    pub(crate) s3_key: String,
    pub(crate) labels: BTreeMap<String, String>,
}

impl Cluster {
    pub(crate) async fn file_row(&self, owner: &Owner, id: &FileId) -> Result<FileFacts> {
        let c = self.inner.db.client().await?;
        let row = c
            .query_opt(
                "SELECT owner, sha256, length, md5, parts, s3_key, labels FROM files WHERE id = $1",
                &[&id.as_str()],
            )
            .await
            .map_err(db_err)?
            .ok_or(Error::NotFound)?;
        let o: String = row.get(0);
        if o != owner.as_str() {
            return Err(Error::NotOwner);
        }
        let labels: serde_json::Value = row.get(6);
        Ok(FileFacts {
            sha256: db::sha_from(row.get(1))?,
            length: row.get::<_, i64>(2) as u64,
            md5: db::opt_md5(row.get(3))?,
            parts: row.get::<_, i32>(4) as u32,
            s3_key: row.get(5),
            labels: serde_json::from_value(labels).unwrap_or_default(),
        })
    }
}
