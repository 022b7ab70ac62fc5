//! The sweep, run by every node: idle uploads expire, and what the object
//! store and the database disagree on is cleaned up.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use partseal::{ExpiredUpload, FileId, Owner, Result, SweepReport};

use crate::Cluster;
use crate::db::db_err;

/// Names the orphan scan among the database's advisory locks: one node
/// scans at a time.
const ORPHAN_LOCK: i64 = 0x7073_6f72_7068_616e;

/// Most idle uploads one sweep expires; the next sweep takes the rest.
const EXPIRE_BATCH: i64 = 256;

/// What one orphan scan found and removed.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct OrphanReport {
    /// Multipart uploads no open upload's record names, aborted.
    pub multipart_uploads: Vec<String>,
    /// Objects no file's or upload's record names, deleted.
    pub objects: Vec<String>,
    /// Records whose bytes the store no longer has: files removed, open
    /// uploads aborted.
    pub lost_records: Vec<FileId>,
    /// Whether another node was scanning, so this one did not.
    pub skipped: bool,
}

impl Cluster {
    /// Aborts every open upload idle for longer than the upload TTL (and
    /// uploads whose complete's claim lapsed as long ago). Rows are taken
    /// with `SKIP LOCKED`, so nodes sweeping together share the work.
    ///
    /// # Errors
    /// [`partseal::Error::Unavailable`] when the database cannot be reached;
    /// a failure on one upload is reported in the [`SweepReport`].
    pub async fn expire_idle_uploads(&self) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        let Some(ttl) = self.inner.cfg.upload_ttl else {
            return Ok(report);
        };
        let mut c = self.inner.db.client().await?;
        let tx = c.transaction().await.map_err(db_err)?;
        let rows = tx
            .query(
                "SELECT id, owner, s3_key, s3_upload_id,
                        extract(epoch FROM now() - last_activity)::float8
                 FROM uploads
                 WHERE (state = 'open' OR (state = 'completing' AND claim_until < now()))
                   AND last_activity < now() - $1 * interval '1 millisecond'
                 ORDER BY last_activity LIMIT $2
                 FOR UPDATE SKIP LOCKED",
                &[&(ttl.as_millis() as f64), &EXPIRE_BATCH],
            )
            .await
            .map_err(db_err)?;
        let mut gone = Vec::new();
        for r in &rows {
            let id: String = r.get(0);
            tx.execute("DELETE FROM uploads WHERE id = $1", &[&id])
                .await
                .map_err(db_err)?;
            gone.push((
                id,
                r.get::<_, String>(1),
                r.get::<_, String>(2),
                r.get::<_, String>(3),
                r.get::<_, f64>(4),
            ));
        }
        tx.commit().await.map_err(db_err)?;
        drop(c);
        for (id, owner, key, upload_id, idle) in gone {
            let (Ok(fid), Ok(owner)) = (id.parse::<FileId>(), Owner::new(&owner)) else {
                continue;
            };
            // The rows are gone: a failure here leaves an orphan for the
            // orphan scan, never a record without bytes.
            if let Err(e) = self.inner.s3.abort(&key, &upload_id).await {
                tracing::warn!(file_id = %id, error = %e, "expiry: the multipart upload stays for the orphan scan");
            }
            if let Err(e) = self.remove_unshared_object(&key).await {
                tracing::warn!(file_id = %id, error = %e, "expiry: the object stays for the orphan scan");
            }
            tracing::info!(file_id = %id, idle_secs = idle as u64, "expired an idle upload");
            report.expired.push(ExpiredUpload::new(
                fid,
                owner,
                Duration::from_secs_f64(idle.max(0.0)),
            ));
        }
        Ok(report)
    }

    /// Compares the object store with the records, and cleans up:
    /// multipart uploads and objects under the partseal prefix that no
    /// record names (once older than the orphan grace) are removed; files
    /// whose objects are gone are removed from the records, and open
    /// uploads whose multipart upload is gone are aborted. One node scans
    /// at a time.
    ///
    /// # Errors
    /// [`partseal::Error::Unavailable`] when the database or the store
    /// cannot be reached.
    pub async fn sweep_orphans(&self) -> Result<OrphanReport> {
        let mut report = OrphanReport::default();
        let mut c = self.inner.db.client().await?;
        let tx = c.transaction().await.map_err(db_err)?;
        let locked: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&ORPHAN_LOCK])
            .await
            .map_err(db_err)?
            .get(0);
        if !locked {
            report.skipped = true;
            return Ok(report);
        }
        let s3 = &self.inner.s3;
        let grace = self.inner.cfg.orphan_grace;
        let old = |t: Option<SystemTime>| {
            t.and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age >= grace)
        };
        // Listed first, compared with rows read after: anything made
        // between the two is young, and the grace keeps it.
        let multipart = s3.list_multipart("files/").await?;
        let objects = s3.list_objects("files/").await?;
        let open: HashSet<String> = tx
            .query(
                "SELECT s3_upload_id FROM uploads WHERE state IN ('open', 'completing')",
                &[],
            )
            .await
            .map_err(db_err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let named: HashSet<String> = tx
            .query(
                "SELECT s3_key FROM files
                 UNION SELECT s3_key FROM uploads WHERE state IN ('open', 'completing')",
                &[],
            )
            .await
            .map_err(db_err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for (key, upload_id, when) in &multipart {
            if !open.contains(upload_id) && old(*when) {
                s3.abort(key, upload_id).await?;
                tracing::info!(key = %key, "removed an orphaned multipart upload");
                report.multipart_uploads.push(upload_id.clone());
            }
        }
        for (key, when) in &objects {
            if !named.contains(key) && old(*when) {
                s3.delete(key).await?;
                tracing::info!(key = %key, "removed an orphaned object");
                report.objects.push(key.clone());
            }
        }
        // Records whose bytes are gone: files older than the grace with no
        // object, open uploads older than it with no multipart upload.
        let present: HashSet<&str> = objects.iter().map(|(k, _)| k.as_str()).collect();
        let live: HashSet<&str> = multipart.iter().map(|(_, u, _)| u.as_str()).collect();
        let grace_ms = grace.as_millis() as f64;
        let files = tx
            .query(
                "SELECT id, s3_key FROM files
                 WHERE committed_at < now() - $1 * interval '1 millisecond'",
                &[&grace_ms],
            )
            .await
            .map_err(db_err)?;
        for r in files {
            let (id, key): (String, String) = (r.get(0), r.get(1));
            if !present.contains(key.as_str()) && s3.head(&key).await?.is_none() {
                tx.execute("DELETE FROM files WHERE id = $1", &[&id])
                    .await
                    .map_err(db_err)?;
                tx.execute("DELETE FROM uploads WHERE id = $1", &[&id])
                    .await
                    .map_err(db_err)?;
                tracing::error!(file_id = %id, key = %key, "a committed file's object is gone from the store; its record is removed");
                if let Ok(id) = id.parse() {
                    report.lost_records.push(id);
                }
            }
        }
        let uploads = tx
            .query(
                "SELECT id, s3_upload_id FROM uploads WHERE state = 'open'
                   AND created_at < now() - $1 * interval '1 millisecond'",
                &[&grace_ms],
            )
            .await
            .map_err(db_err)?;
        for r in uploads {
            let (id, upload_id): (String, String) = (r.get(0), r.get(1));
            if !live.contains(upload_id.as_str()) {
                tx.execute(
                    "UPDATE uploads SET state = 'aborted',
                         note = 'the object store lost the upload''s parts'
                     WHERE id = $1 AND state = 'open'",
                    &[&id],
                )
                .await
                .map_err(db_err)?;
                tx.execute("DELETE FROM parts WHERE upload_id = $1", &[&id])
                    .await
                    .map_err(db_err)?;
                tracing::error!(file_id = %id, "an open upload's multipart upload is gone from the store; the upload is aborted");
                if let Ok(id) = id.parse() {
                    report.lost_records.push(id);
                }
            }
        }
        tx.commit().await.map_err(db_err)?;
        Ok(report)
    }
}
