//! One part, arriving at any node: checked while it streams to the object
//! store, its last bytes held back until it is proven, acknowledged only
//! once the store has it and its row is committed.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use md5::Digest as _;
use sha2::digest::common::hazmat::SerializableState;

use partseal::hazmat::{Hasher, Midstate};
use partseal::{
    DigestKind, Error, FileId, LinkCheck, LinkEnd, Owner, PartNumber, PartReceipt, Result, Sha256,
};

use crate::body;
use crate::db::{self, ctx_to_bytes, db_err};
use crate::{Cluster, Mode};

/// The in-order hash of a stream upload, resumed from a checkpoint.
pub(crate) struct Fold {
    pub(crate) sha: sha2::Sha256,
    pub(crate) md5: Option<md5::Md5>,
}

impl Fold {
    pub(crate) fn fresh(with_md5: bool) -> Fold {
        Fold {
            sha: sha2::Sha256::default(),
            md5: with_md5.then(md5::Md5::default),
        }
    }

    /// The state stored on part `through`'s row.
    pub(crate) fn resume(sha: Option<&[u8]>, md5: Option<&[u8]>, with_md5: bool) -> Option<Fold> {
        let sha = sha2::Sha256::deserialize(sha?.try_into().ok()?).ok()?;
        let md5 = match (with_md5, md5) {
            (false, _) => None,
            (true, Some(m)) => Some(md5::Md5::deserialize(m.try_into().ok()?).ok()?),
            (true, None) => return None,
        };
        Some(Fold { sha, md5 })
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        self.sha.update(data);
        if let Some(m) = &mut self.md5 {
            m.update(data);
        }
    }

    pub(crate) fn saved(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        (
            self.sha.serialize().to_vec(),
            self.md5.as_ref().map(|m| m.serialize().to_vec()),
        )
    }
}

impl Cluster {
    /// Stores part `number` of an upload from `body`.
    ///
    /// The body streams to the object store as it arrives and is hashed on
    /// the way; its last chunk is held back until the part is proven (in
    /// chain mode its link to the next part's `hashCtx` or to the declared
    /// digest; its `Content-MD5` when `content_md5` is given; its length
    /// always). A part that fails is cut off before its last byte, so the
    /// store keeps the part it held before. The answer comes only once the
    /// store stored the bytes and the part's row is committed.
    ///
    /// A part without a planned size needs `expected_len` (the request's
    /// `Content-Length`): S3 takes parts of a declared length only.
    ///
    /// # Errors
    /// As [`partseal::Engine::put_part`], plus [`Error::Unavailable`] when
    /// the database or the object store does not answer, and
    /// [`Error::DigestMismatch`] (MD5) when the body does not have the
    /// `Content-MD5` given.
    pub async fn put_part<S, E>(
        &self,
        owner: &Owner,
        id: &FileId,
        number: PartNumber,
        mut body: S,
        expected_len: Option<u64>,
        content_md5: Option<[u8; 16]>,
    ) -> Result<PartReceipt>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let n = number.get();
        let inner = &self.inner;
        let limits = inner.cfg.limits;
        let c = inner.db.client().await?;
        let up = db::open_upload(&c, owner, id, false).await?;
        let (planned, next, last_planned, has_plan) = db::plan_pair(&c, id, n).await?;
        if planned.is_none() && (up.mode == Mode::Chain || has_plan) {
            return Err(Error::PartOutOfRange {
                part: u64::from(n),
                reason: "the part is not in the upload's plan".into(),
            });
        }
        if let Some(count) = up.part_count
            && n > count
        {
            return Err(Error::PartOutOfRange {
                part: u64::from(n),
                reason: format!("the upload was declared with {count} parts"),
            });
        }
        let bound = planned.map_or(limits.max_part_size, |p| p.size);
        if let Some(len) = expected_len {
            if len > bound {
                return Err(Error::PartTooLarge {
                    part: n,
                    max: bound,
                });
            }
            if let Some(p) = planned
                && len < p.size
            {
                return Err(Error::PartTooSmall {
                    part: n,
                    len,
                    min: p.size,
                });
            }
        }
        let size = match (planned, expected_len) {
            (Some(p), _) => p.size,
            (None, Some(len)) => len,
            (None, None) => {
                return Err(Error::BadInput(partseal::ParseError::new(
                    "a part without a planned size needs a Content-Length: the object store \
                     takes parts of a declared length only",
                )));
            }
        };
        let chain = up.mode == Mode::Chain;
        // Chain mode: the link hasher from the part's own hashCtx.
        let mut link = match (chain, planned) {
            (true, Some(p)) => {
                let start = p
                    .start_ctx()
                    .ok_or_else(|| Error::BadPlan(format!("part {n} needs a hashCtx")))?;
                Some(Hasher::from_midstate(Midstate::resume(
                    start,
                    p.offset.unwrap_or(0),
                )?))
            }
            _ => None,
        };
        // Stream mode: the part's own SHA-256 (its fingerprint), and the
        // in-order fold when every earlier part is folded already.
        let mut own = (!chain).then(sha2::Sha256::default);
        let with_md5 = up.md5.is_some();
        let ckpt_from = up.ckpt_through;
        let mut resumed_from = None;
        let mut fold = if !chain && ckpt_from + 1 == n {
            if n == 1 {
                Some(Fold::fresh(with_md5))
            } else {
                let prev = db::load_part(&c, id, n - 1).await?;
                prev.and_then(|p| {
                    resumed_from = p.ckpt_sha.clone();
                    Fold::resume(p.ckpt_sha.as_deref(), p.ckpt_md5.as_deref(), with_md5)
                })
            }
        } else {
            None
        };
        drop(c);
        let mut md5 = content_md5.map(|_| md5::Md5::default());

        // The request to the store runs beside the loop that feeds it.
        let (feed, channel) = body::channel(size);
        let store = self.clone();
        let (key, upload_id) = (up.s3_key.clone(), up.s3_upload_id.clone());
        let upload = tokio::spawn(async move {
            if size == 0 {
                // An empty part (an empty file's, or an empty last part)
                // has no bytes to store, and stores refuse empty UploadParts
                // (Garage does): it lives in its row only, with no ETag, and
                // complete leaves it out of the store's part list.
                drop(channel);
                return Ok(String::new());
            }
            let stream = aws_sdk_s3::primitives::ByteStream::from_body_1_x(channel);
            store
                .inner
                .s3
                .upload_part(&key, &upload_id, n, size, stream)
                .await
        });

        let fed: Result<Fed> = async {
            let mut len = 0u64;
            let mut held: Option<Bytes> = None;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| Error::Io {
                    role: "request body",
                    source: std::io::Error::other(e.to_string()),
                })?;
                if chunk.is_empty() {
                    continue;
                }
                len += chunk.len() as u64;
                if len > size {
                    return Err(Error::PartTooLarge { part: n, max: size });
                }
                if let Some(h) = &mut link {
                    h.update(&chunk);
                }
                if let Some(h) = &mut own {
                    h.update(&chunk);
                }
                if let Some(f) = &mut fold {
                    f.update(&chunk);
                }
                if let Some(m) = &mut md5 {
                    m.update(&chunk);
                }
                if let Some(prev) = held.replace(chunk)
                    && !feed.send(prev).await
                {
                    return Ok(Fed::StoreGone);
                }
            }
            Ok(Fed::All { len, held })
        }
        .await;
        // The store's request ended before the body did (the store broke
        // the connection or answered early): its error is the answer, never
        // a short part the client did not send.
        let fed = match fed {
            Ok(Fed::StoreGone) => {
                return Err(match upload.await {
                    Ok(Err(e)) => e,
                    Ok(Ok(_)) => Error::Unavailable(format!(
                        "object store: part {n} was answered before its last byte"
                    )),
                    Err(e) => Error::Unavailable(format!("object store: part upload task: {e}")),
                });
            }
            Ok(Fed::All { len, held }) => Ok((len, held)),
            Err(e) => Err(e),
        };

        // Everything is in; prove the part before its last bytes go.
        let proof = fed.and_then(|(len, held)| {
            if len < size {
                return Err(Error::PartTooSmall {
                    part: n,
                    len,
                    min: size,
                });
            }
            if let (Some(want), Some(m)) = (content_md5, md5.take()) {
                let got: [u8; 16] = m.finalize().into();
                if got != want {
                    return Err(Error::DigestMismatch {
                        kind: DigestKind::Md5,
                        expected: hex::encode(want),
                        actual: hex::encode(got),
                    });
                }
            }
            let mut checked = false;
            let mut chain_facts = None;
            if let Some(h) = &link {
                let state_out = h.midstate().map(|m| m.ctx());
                let digest = h.finalize();
                if let Some(next) = next {
                    if state_out.is_none() || state_out != next.ctx {
                        return Err(Error::LinkMismatch {
                            part: n,
                            to: LinkEnd::Part(n + 1),
                        });
                    }
                    checked = true;
                }
                let offset = planned.and_then(|p| p.offset).unwrap_or(0);
                let is_last = up.length == Some(offset + size) && last_planned == Some(n);
                if is_last && let Some(expected) = &up.sha256 {
                    if *expected != digest {
                        return Err(Error::LinkMismatch {
                            part: n,
                            to: LinkEnd::FileDigest,
                        });
                    }
                    checked = true;
                }
                chain_facts = Some((state_out, digest));
            }
            Ok((len, held, checked, chain_facts))
        });
        let (len, held, checked, chain_facts) = match proof {
            Ok(v) => v,
            Err(e) => {
                feed.cut().await;
                // Wait for the request to end, so that nothing of it can
                // land after this answer.
                let _ = upload.await;
                return Err(e);
            }
        };
        if let Some(last) = held {
            feed.send(last).await;
        }
        drop(feed);
        let etag = upload
            .await
            .map_err(|e| Error::Unavailable(format!("object store: part upload task: {e}")))??;

        // Stored; now the row, and only then the answer.
        let fingerprint = match (&chain_facts, own) {
            (Some((_, digest)), _) => *digest,
            (None, Some(h)) => Sha256(h.finalize().into()),
            (None, None) => unreachable!("a part is hashed in one mode or the other"),
        };
        let saved = fold.as_ref().map(Fold::saved);
        let mut c = inner.db.client().await?;
        let tx = c.transaction().await.map_err(db_err)?;
        let now = db::open_upload(&tx, owner, id, true).await?;
        if now.mode == Mode::Chain && !chain {
            return Err(Error::BadPlan(
                "the upload got a plan with hashCtx while this part arrived without one".into(),
            ));
        }
        if now.mode == Mode::Unset {
            tx.execute(
                "UPDATE uploads SET mode = 'stream' WHERE id = $1",
                &[&id.as_str()],
            )
            .await
            .map_err(db_err)?;
        }
        // The checkpoint advances only from where this part's fold started;
        // a replaced earlier part moves it back.
        let mut advance = saved.is_some() && now.ckpt_through == ckpt_from;
        if advance && n > 1 {
            // The state it resumed from is still part n - 1's.
            let prev = db::load_part(&tx, id, n - 1).await?;
            advance = prev.is_some_and(|p| p.ckpt_sha == resumed_from);
        }
        let (ckpt_sha, ckpt_md5) = match (&saved, advance) {
            (Some((s, m)), true) => (Some(s.clone()), m.clone()),
            _ => (None, None),
        };
        let (state_out, digest_if_last) = match chain_facts {
            Some((s, d)) => (s.map(ctx_to_bytes), Some(d.0.to_vec())),
            None => (None, None),
        };
        tx.execute(
            "INSERT INTO parts (upload_id, n, len, sha256, etag, state_out, digest_if_last,
                                ckpt_sha, ckpt_md5, received_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())
             ON CONFLICT (upload_id, n) DO UPDATE SET
                len = EXCLUDED.len, sha256 = EXCLUDED.sha256, etag = EXCLUDED.etag,
                state_out = EXCLUDED.state_out, digest_if_last = EXCLUDED.digest_if_last,
                ckpt_sha = EXCLUDED.ckpt_sha, ckpt_md5 = EXCLUDED.ckpt_md5,
                received_at = now()",
            &[
                &id.as_str(),
                &(n as i32),
                &(len as i64),
                &&fingerprint.0[..],
                &etag,
                &state_out,
                &digest_if_last,
                &ckpt_sha,
                &ckpt_md5,
            ],
        )
        .await
        .map_err(db_err)?;
        let through = if advance {
            n
        } else if n <= now.ckpt_through {
            n - 1
        } else {
            now.ckpt_through
        };
        tx.execute(
            "UPDATE uploads SET ckpt_through = $2, last_activity = now() WHERE id = $1",
            &[&id.as_str(), &(through as i32)],
        )
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        tracing::debug!(file_id = %id.as_str(), part = n, len, "part stored in the object store");
        Ok(PartReceipt::new(
            number,
            len,
            fingerprint,
            if chain {
                if checked {
                    LinkCheck::Holds
                } else {
                    LinkCheck::Pending
                }
            } else {
                LinkCheck::NotApplicable
            },
        ))
    }
}

/// How feeding a part's body to the store ended.
enum Fed {
    /// The whole body was read: its length, and its last chunk held back.
    All { len: u64, held: Option<Bytes> },
    /// The store's request ended first.
    StoreGone,
}
