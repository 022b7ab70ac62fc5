//! The database: a connection pool, the versioned schema, and the queries
//! every module shares.

use std::collections::BTreeMap;
use std::time::Duration;

use deadpool_postgres::GenericClient;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{NoTls, Row};

use partseal::{Error, FileId, HashCtx, Owner, PartPlan, Result, Sha256};

use crate::{ClusterConfig, Mode, State, UploadRow, corrupt};

/// The schema, version by version; applied in order at start, each once.
const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("../migrations/0001_initial.sql"))];

/// Any number that names the migration lock among a database's advisory
/// locks.
const MIGRATION_LOCK: i64 = 0x7061_7274_7365_616c; // "partseal"

pub(crate) struct Db {
    pool: Pool,
    timeout: Duration,
}

/// A database error as the engine reports it: a lost or refused connection
/// is [`Error::Unavailable`] (retry later); an error the server reported for
/// a statement is an internal one.
pub(crate) fn db_err(e: tokio_postgres::Error) -> Error {
    match e.as_db_error() {
        // The server is going down or refuses connections for now.
        Some(d) if d.code().code().starts_with("57") || d.code().code().starts_with("08") => {
            Error::Unavailable(format!("database: {d}"))
        }
        Some(_) => Error::Io {
            role: "database",
            source: std::io::Error::other(e),
        },
        None => Error::Unavailable(format!("database: {e}")),
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> Error {
    match e {
        deadpool_postgres::PoolError::Backend(e) => db_err(e),
        other => Error::Unavailable(format!("database: {other}")),
    }
}

pub(crate) type Client = deadpool_postgres::Object;

impl Db {
    pub(crate) async fn connect(cfg: &ClusterConfig) -> Result<Db> {
        let mut pg: tokio_postgres::Config = cfg.database_url.parse().map_err(|e| {
            Error::BadInput(partseal::ParseError::new(format!(
                "the database URL does not parse: {e}"
            )))
        })?;
        pg.connect_timeout(cfg.timeout);
        pg.application_name("partseal");
        let mgr = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(cfg.max_connections.max(2))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(cfg.timeout))
            .create_timeout(Some(cfg.timeout))
            .recycle_timeout(Some(cfg.timeout))
            .build()
            .map_err(|e| Error::Unavailable(format!("database pool: {e}")))?;
        let db = Db {
            pool,
            timeout: cfg.timeout,
        };
        db.ping().await?;
        Ok(db)
    }

    /// A pooled connection.
    pub(crate) async fn client(&self) -> Result<Client> {
        self.pool.get().await.map_err(pool_err)
    }

    pub(crate) async fn ping(&self) -> Result<()> {
        let c = self.client().await?;
        tokio::time::timeout(self.timeout, c.simple_query("SELECT 1"))
            .await
            .map_err(|_| Error::Unavailable("database: no answer to SELECT 1".into()))?
            .map_err(db_err)?;
        Ok(())
    }

    /// Applies the migrations the database lacks, one transaction each,
    /// under an advisory lock so that nodes starting together apply each
    /// once.
    pub(crate) async fn migrate(&self) -> Result<()> {
        let mut c = self.client().await?;
        c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(db_err)?;
        let res = async {
            c.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                    version integer PRIMARY KEY,
                    applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .await
            .map_err(db_err)?;
            for (version, sql) in MIGRATIONS {
                let tx = c.transaction().await.map_err(db_err)?;
                let done = tx
                    .query_opt(
                        "SELECT 1 FROM schema_migrations WHERE version = $1",
                        &[version],
                    )
                    .await
                    .map_err(db_err)?;
                if done.is_none() {
                    tx.batch_execute(sql).await.map_err(db_err)?;
                    tx.execute(
                        "INSERT INTO schema_migrations (version) VALUES ($1)",
                        &[version],
                    )
                    .await
                    .map_err(db_err)?;
                    tracing::info!(version, "applied schema migration");
                }
                tx.commit().await.map_err(db_err)?;
            }
            Ok(())
        }
        .await;
        let unlock = c
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await;
        res.and(unlock.map(drop).map_err(db_err))
    }

    pub(crate) async fn url_key(&self) -> Result<[u8; 32]> {
        let c = self.client().await?;
        let mut fresh = [0u8; 32];
        getrandom_fill(&mut fresh)?;
        c.execute(
            "INSERT INTO settings (name, value) VALUES ('url-signing-key', $1)
             ON CONFLICT (name) DO NOTHING",
            &[&&fresh[..]],
        )
        .await
        .map_err(db_err)?;
        let row = c
            .query_one(
                "SELECT value FROM settings WHERE name = 'url-signing-key'",
                &[],
            )
            .await
            .map_err(db_err)?;
        let v: Vec<u8> = row.get(0);
        v.try_into()
            .map_err(|_| corrupt("the URL signing key is not 32 bytes".into()))
    }

    pub(crate) async fn open_upload_count(&self) -> Result<u64> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "SELECT count(*) FROM uploads WHERE state IN ('open', 'completing')",
                &[],
            )
            .await
            .map_err(db_err)?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }
}

fn getrandom_fill(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| Error::Io {
        role: "random source",
        source: std::io::Error::other(e.to_string()),
    })
}

/// The columns [`upload_from_row`] reads.
pub(crate) const UPLOAD_COLUMNS: &str = "id, owner, state, mode, length, sha256, md5, part_count, \
     labels, s3_key, s3_upload_id, claim_fence, \
     (claim_until IS NOT NULL AND claim_until > now()) AS claim_live, ckpt_through, note";

pub(crate) fn upload_from_row(row: &Row) -> Result<UploadRow> {
    let id: String = row.get("id");
    let owner: String = row.get("owner");
    let labels: serde_json::Value = row.get("labels");
    Ok(UploadRow {
        id: id.parse()?,
        owner: Owner::new(&owner)?,
        state: State::parse(row.get("state"))?,
        mode: Mode::parse(row.get("mode"))?,
        length: row.get::<_, Option<i64>>("length").map(|v| v as u64),
        sha256: opt_sha(row.get("sha256"))?,
        md5: opt_md5(row.get("md5"))?,
        part_count: row.get::<_, Option<i32>>("part_count").map(|v| v as u32),
        labels: serde_json::from_value(labels)
            .map_err(|e| corrupt(format!("labels do not read back: {e}")))?,
        s3_key: row.get("s3_key"),
        s3_upload_id: row.get("s3_upload_id"),
        claim_fence: row.get("claim_fence"),
        claim_live: row.get("claim_live"),
        ckpt_through: row.get::<_, i32>("ckpt_through") as u32,
        note: row.get("note"),
    })
}

/// The upload `id`, locked for the rest of the transaction when `lock`.
pub(crate) async fn load_upload(
    c: &impl GenericClient,
    id: &FileId,
    lock: bool,
) -> Result<Option<UploadRow>> {
    let sql = format!(
        "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row = c.query_opt(&sql, &[&id.as_str()]).await.map_err(db_err)?;
    row.as_ref().map(upload_from_row).transpose()
}

/// The upload `id` of `owner`, open.
pub(crate) async fn open_upload(
    c: &impl GenericClient,
    owner: &Owner,
    id: &FileId,
    lock: bool,
) -> Result<UploadRow> {
    let up = load_upload(c, id, lock).await?.ok_or(Error::NotFound)?;
    up.check(owner)?;
    Ok(up)
}

pub(crate) async fn load_plan(
    c: &impl GenericClient,
    id: &FileId,
) -> Result<BTreeMap<u32, PartPlan>> {
    let rows = c
        .query(
            "SELECT n, size, part_offset, hash_ctx FROM plan WHERE upload_id = $1 ORDER BY n",
            &[&id.as_str()],
        )
        .await
        .map_err(db_err)?;
    let mut plan = BTreeMap::new();
    for r in rows {
        let n = r.get::<_, i32>(0) as u32;
        let ctx: Option<Vec<u8>> = r.get(3);
        plan.insert(
            n,
            PartPlan {
                number: n,
                size: r.get::<_, i64>(1) as u64,
                offset: r.get::<_, Option<i64>>(2).map(|v| v as u64),
                ctx: ctx.map(|b| ctx_from_bytes(&b)).transpose()?,
            },
        );
    }
    Ok(plan)
}

/// Plan entries `n` and `n + 1`.
pub(crate) async fn plan_pair(
    c: &impl GenericClient,
    id: &FileId,
    n: u32,
) -> Result<(Option<PartPlan>, Option<PartPlan>, Option<u32>, bool)> {
    let rows = c
        .query(
            "SELECT n, size, part_offset, hash_ctx FROM plan
             WHERE upload_id = $1 AND (n = $2 OR n = $2 + 1)
             UNION ALL
             SELECT max(n), NULL, NULL, NULL FROM plan WHERE upload_id = $1",
            &[&id.as_str(), &(n as i32)],
        )
        .await
        .map_err(db_err)?;
    let (mut this, mut next, mut last) = (None, None, None);
    for r in rows {
        let Some(k) = r.get::<_, Option<i32>>(0) else {
            continue;
        };
        let k = k as u32;
        let size: Option<i64> = r.get(1);
        let Some(size) = size else {
            last = Some(k);
            continue;
        };
        let ctx: Option<Vec<u8>> = r.get(3);
        let p = PartPlan {
            number: k,
            size: size as u64,
            offset: r.get::<_, Option<i64>>(2).map(|v| v as u64),
            ctx: ctx.map(|b| ctx_from_bytes(&b)).transpose()?,
        };
        if k == n {
            this = Some(p);
        } else {
            next = Some(p);
        }
    }
    Ok((this, next, last, last.is_some()))
}

pub(crate) async fn insert_plan(
    c: &impl GenericClient,
    id: &FileId,
    parts: &[PartPlan],
) -> Result<()> {
    for p in parts {
        c.execute(
            "INSERT INTO plan (upload_id, n, size, part_offset, hash_ctx)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (upload_id, n) DO NOTHING",
            &[
                &id.as_str(),
                &(p.number as i32),
                &(p.size as i64),
                &p.offset.map(|o| o as i64),
                &p.ctx.map(ctx_to_bytes),
            ],
        )
        .await
        .map_err(db_err)?;
    }
    Ok(())
}

/// A part's row.
#[derive(Clone, Debug)]
pub(crate) struct PartRow {
    pub(crate) n: u32,
    pub(crate) len: u64,
    pub(crate) sha256: Sha256,
    pub(crate) etag: String,
    pub(crate) state_out: Option<HashCtx>,
    pub(crate) digest_if_last: Option<Sha256>,
    pub(crate) ckpt_sha: Option<Vec<u8>>,
    pub(crate) ckpt_md5: Option<Vec<u8>>,
}

pub(crate) async fn load_parts(
    c: &impl GenericClient,
    id: &FileId,
) -> Result<BTreeMap<u32, PartRow>> {
    let rows = c
        .query(
            "SELECT n, len, sha256, etag, state_out, digest_if_last, ckpt_sha, ckpt_md5
             FROM parts WHERE upload_id = $1 ORDER BY n",
            &[&id.as_str()],
        )
        .await
        .map_err(db_err)?;
    let mut out = BTreeMap::new();
    for r in rows {
        let p = part_from_row(&r)?;
        out.insert(p.n, p);
    }
    Ok(out)
}

pub(crate) async fn load_part(
    c: &impl GenericClient,
    id: &FileId,
    n: u32,
) -> Result<Option<PartRow>> {
    let r = c
        .query_opt(
            "SELECT n, len, sha256, etag, state_out, digest_if_last, ckpt_sha, ckpt_md5
             FROM parts WHERE upload_id = $1 AND n = $2",
            &[&id.as_str(), &(n as i32)],
        )
        .await
        .map_err(db_err)?;
    r.as_ref().map(part_from_row).transpose()
}

fn part_from_row(r: &Row) -> Result<PartRow> {
    let state_out: Option<Vec<u8>> = r.get(4);
    Ok(PartRow {
        n: r.get::<_, i32>(0) as u32,
        len: r.get::<_, i64>(1) as u64,
        sha256: sha_from(r.get(2))?,
        etag: r.get(3),
        state_out: state_out.map(|b| ctx_from_bytes(&b)).transpose()?,
        digest_if_last: opt_sha(r.get(5))?,
        ckpt_sha: r.get(6),
        ckpt_md5: r.get(7),
    })
}

pub(crate) fn ctx_to_bytes(ctx: HashCtx) -> Vec<u8> {
    ctx.0.iter().flat_map(|w| w.to_be_bytes()).collect()
}

pub(crate) fn ctx_from_bytes(b: &[u8]) -> Result<HashCtx> {
    if b.len() != 32 {
        return Err(corrupt(format!(
            "a hash state is {} bytes, not 32",
            b.len()
        )));
    }
    let mut words = [0u32; 8];
    for (i, w) in words.iter_mut().enumerate() {
        *w = u32::from_be_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
    }
    Ok(HashCtx(words))
}

pub(crate) fn sha_from(b: Vec<u8>) -> Result<Sha256> {
    b.try_into()
        .map(Sha256)
        .map_err(|_| corrupt("a SHA-256 is not 32 bytes".into()))
}

pub(crate) fn opt_sha(b: Option<Vec<u8>>) -> Result<Option<Sha256>> {
    b.map(sha_from).transpose()
}

pub(crate) fn opt_md5(b: Option<Vec<u8>>) -> Result<Option<[u8; 16]>> {
    b.map(|b| {
        b.try_into()
            .map_err(|_| corrupt("an MD5 is not 16 bytes".into()))
    })
    .transpose()
}

pub(crate) fn labels_json(labels: &BTreeMap<String, String>) -> serde_json::Value {
    serde_json::to_value(labels).unwrap_or_else(|_| serde_json::json!({}))
}
