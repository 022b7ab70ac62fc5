//! partseal's cluster backend: stateless server nodes over one PostgreSQL
//! database and one S3-compatible bucket.
//!
//! The database holds every upload, plan, part and file record, the claims
//! that make a complete happen exactly once, and the hash checkpoints of
//! stream uploads. The object store holds the bytes: the parts of an open
//! upload as the parts of one multipart upload, and each committed file as
//! one object. Any node serves any request for any upload; nothing of an
//! upload lives in a node's memory between requests.
//!
//! The engine's core holds here as on a local store:
//! - every part is checked on arrival by the node that receives it: in chain
//!   mode its SHA-256 link is folded from its `hashCtx` while it streams to
//!   the object store, and the part's last bytes are held back until the
//!   link holds, so a refused part never replaces an acknowledged one;
//! - a part is acknowledged only once the object store answered 200 and its
//!   row is committed;
//! - a chain-mode complete does no data pass: it checks the links from the
//!   rows and asks the store to join the parts;
//! - a stream-mode upload is hashed in order as its parts arrive, where the
//!   prefix allows it, from a checkpoint kept in the database, so complete
//!   hashes only what is left.
//!
//! Only standard S3 calls are used. Exactly-once comes from the database
//! (a claim with a lease and a fencing number), never from conditional
//! writes, which some stores ignore.

mod body;
mod complete;
mod db;
mod ingest;
mod lifecycle;
mod s3;
mod sweep;

use std::collections::BTreeMap;
use std::time::Duration;

use partseal::{Error, FileId, Limits, Owner, PartPlan, Result, Sha256};

pub use lifecycle::ObjectReader;
pub use sweep::OrphanReport;

/// How to reach the database and the object store, and the limits every
/// node enforces alike.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// PostgreSQL connection URL (`postgres://user@host:port/db`).
    pub database_url: String,
    /// S3 endpoint URL (`https://s3.eu-west-1.amazonaws.com`,
    /// `http://127.0.0.1:3900`).
    pub s3_endpoint: String,
    /// Bucket of all part and file bytes.
    pub s3_bucket: String,
    /// Region the bucket's endpoint signs for.
    pub s3_region: String,
    /// S3 access key id.
    pub s3_access_key_id: String,
    /// S3 secret access key.
    pub s3_secret_access_key: String,
    /// Part and file size limits.
    pub limits: Limits,
    /// Open uploads idle this long are aborted by the sweep; `None` keeps
    /// them for ever.
    pub upload_ttl: Option<Duration>,
    /// How long a complete's claim holds before another node may take it
    /// over (renewed while the complete works). Default 30 s.
    pub claim_lease: Duration,
    /// Multipart uploads and objects with no record are removed by the
    /// sweep only once they are this old, so that a create or complete in
    /// progress is never taken for an orphan. Default 1 hour.
    pub orphan_grace: Duration,
    /// Most database connections this node holds. Default 32.
    pub max_connections: usize,
    /// How long a request waits for the database or the object store to
    /// answer before it fails with [`Error::Unavailable`]. Default 10 s.
    pub timeout: Duration,
    /// This node's name in claims (for logs and diagnosis).
    pub node: String,
}

impl ClusterConfig {
    /// Settings with the defaults above, for this database and bucket.
    pub fn new(
        database_url: impl Into<String>,
        s3_endpoint: impl Into<String>,
        s3_bucket: impl Into<String>,
        s3_region: impl Into<String>,
        s3_access_key_id: impl Into<String>,
        s3_secret_access_key: impl Into<String>,
    ) -> ClusterConfig {
        ClusterConfig {
            database_url: database_url.into(),
            s3_endpoint: s3_endpoint.into(),
            s3_bucket: s3_bucket.into(),
            s3_region: s3_region.into(),
            s3_access_key_id: s3_access_key_id.into(),
            s3_secret_access_key: s3_secret_access_key.into(),
            limits: Limits::default(),
            upload_ttl: Some(Duration::from_secs(7 * 24 * 3600)),
            claim_lease: Duration::from_secs(30),
            orphan_grace: Duration::from_secs(3600),
            max_connections: 32,
            timeout: Duration::from_secs(10),
            node: format!("node-{}", std::process::id()),
        }
    }
}

/// A handle on the cluster backend; cheap to clone, shared by all requests
/// of a node.
#[derive(Clone)]
pub struct Cluster {
    inner: std::sync::Arc<Inner>,
}

struct Inner {
    cfg: ClusterConfig,
    db: db::Db,
    s3: s3::Store,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("s3_endpoint", &self.inner.cfg.s3_endpoint)
            .field("s3_bucket", &self.inner.cfg.s3_bucket)
            .field("node", &self.inner.cfg.node)
            .finish()
    }
}

impl Cluster {
    /// Connects to the database (applying the schema migrations that are
    /// missing) and to the object store (checking that the bucket answers).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when either cannot be reached, [`Error::Io`]
    /// when a migration fails or the bucket refuses access.
    pub async fn connect(cfg: ClusterConfig) -> Result<Cluster> {
        let db = db::Db::connect(&cfg).await?;
        db.migrate().await?;
        let s3 = s3::Store::new(&cfg);
        s3.check_bucket().await?;
        Ok(Cluster {
            inner: std::sync::Arc::new(Inner { cfg, db, s3 }),
        })
    }

    /// The settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.inner.cfg
    }

    /// The key that signs upload and download URLs, shared by every node:
    /// made by the first node that asks and kept in the database.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the database cannot be reached.
    pub async fn url_key(&self) -> Result<[u8; 32]> {
        self.inner.db.url_key().await
    }

    /// Whether the database answers a query now.
    ///
    /// # Errors
    /// [`Error::Unavailable`] with the reason.
    pub async fn check_database(&self) -> Result<()> {
        self.inner.db.ping().await
    }

    /// Whether the bucket answers now.
    ///
    /// # Errors
    /// [`Error::Unavailable`] or [`Error::Io`] with the reason.
    pub async fn check_object_store(&self) -> Result<()> {
        self.inner.s3.check_bucket().await
    }

    /// Open uploads (open or being completed), across the cluster.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the database cannot be reached.
    pub async fn open_upload_count(&self) -> Result<u64> {
        self.inner.db.open_upload_count().await
    }
}

/// The object key of a file's bytes (and of its upload's multipart upload).
fn file_key(id: &FileId) -> String {
    format!("files/{}", id.as_str())
}

/// An upload's row, as loaded.
#[derive(Clone, Debug)]
struct UploadRow {
    id: FileId,
    owner: Owner,
    state: State,
    mode: Mode,
    length: Option<u64>,
    sha256: Option<Sha256>,
    md5: Option<[u8; 16]>,
    part_count: Option<u32>,
    labels: BTreeMap<String, String>,
    s3_key: String,
    s3_upload_id: String,
    claim_fence: i64,
    claim_live: bool,
    ckpt_through: u32,
    note: Option<String>,
}

impl UploadRow {
    /// Ownership and openness, as the local engine answers them.
    fn check(&self, owner: &Owner) -> Result<()> {
        if self.owner != *owner {
            return Err(Error::NotOwner);
        }
        match self.state {
            State::Open => Ok(()),
            State::Completing => Err(Error::Conflict(
                "a complete of this upload is running".into(),
            )),
            State::Committed => Err(Error::Conflict("the upload is complete".into())),
            State::Aborted => Err(Error::NotFound),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Open,
    Completing,
    Committed,
    Aborted,
}

impl State {
    fn parse(s: &str) -> Result<State> {
        Ok(match s {
            "open" => State::Open,
            "completing" => State::Completing,
            "committed" => State::Committed,
            "aborted" => State::Aborted,
            other => return Err(corrupt(format!("unknown upload state {other:?}"))),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Unset,
    Chain,
    Stream,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Unset => "unset",
            Mode::Chain => "chain",
            Mode::Stream => "stream",
        }
    }
    fn parse(s: &str) -> Result<Mode> {
        Ok(match s {
            "unset" => Mode::Unset,
            "chain" => Mode::Chain,
            "stream" => Mode::Stream,
            other => return Err(corrupt(format!("unknown upload mode {other:?}"))),
        })
    }
    fn of_plan(plan: &BTreeMap<u32, PartPlan>) -> Mode {
        match plan.values().next() {
            None => Mode::Unset,
            Some(p) if p.is_chain() => Mode::Chain,
            Some(_) => Mode::Stream,
        }
    }
}

/// A record that does not read back as written.
fn corrupt(msg: String) -> Error {
    Error::Io {
        role: "database record",
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, msg),
    }
}
