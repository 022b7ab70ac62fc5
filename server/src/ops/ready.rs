//! Readiness: whether this server should be sent traffic (`GET /readyz`).
//!
//! A backend contributes [`ReadinessCheck`]s; the local store contributes
//! two: [`StoreWritable`] (a real file created, written and removed in the
//! store's `probe/` directory) and [`FreeSpace`] (`statvfs` of the store
//! against `--min-free-bytes`). The server adds its own: not shutting down.
//! Results of the backend checks are cached for [`CACHE_FOR`], so frequent
//! probes do not hammer the disk.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

/// How long the results of the backend checks are reused.
pub const CACHE_FOR: Duration = Duration::from_secs(1);

/// The store's directory the writability probe writes into. It is created
/// at start and never re-created by the probe: when it is missing or not a
/// directory, the store is not the one the server opened, and the server is
/// not ready.
pub const PROBE_DIR: &str = "probe";

/// The result of one check.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckResult {
    /// Whether it passed.
    pub ok: bool,
    /// Facts for the operator (numbers, a message when it failed).
    pub details: Map<String, Value>,
}

impl CheckResult {
    /// A check that passed.
    pub fn pass() -> CheckResult {
        CheckResult {
            ok: true,
            details: Map::new(),
        }
    }

    /// A check that failed, with what went wrong.
    pub fn fail(message: impl Into<String>) -> CheckResult {
        CheckResult::pass()
            .ok(false)
            .with("message", message.into())
    }

    fn ok(mut self, ok: bool) -> CheckResult {
        self.ok = ok;
        self
    }

    /// This result with one more fact.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> CheckResult {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// `{"ok": .., facts..}`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("ok".into(), Value::Bool(self.ok));
        m.extend(self.details.clone());
        Value::Object(m)
    }
}

/// A condition of the storage backend the server needs to serve: the local
/// store implements it here; a cluster backend adds its own (quorum,
/// replication lag, ...).
pub trait ReadinessCheck: Send + Sync {
    /// The key of the check in the `/readyz` answer.
    fn name(&self) -> &'static str;
    /// Runs the check; may block on I/O (it runs on the blocking pool).
    fn check(&self) -> CheckResult;
}

/// The store accepts new files: one is created in `DATA/probe/`, written,
/// and removed.
pub struct StoreWritable {
    dir: PathBuf,
}

impl StoreWritable {
    /// The check for the store at `root`; creates `root/probe/` if needed.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn new(root: &Path) -> std::io::Result<StoreWritable> {
        let dir = root.join(PROBE_DIR);
        fs::create_dir_all(&dir)?;
        Ok(StoreWritable { dir })
    }
}

impl ReadinessCheck for StoreWritable {
    fn name(&self) -> &'static str {
        "store"
    }

    fn check(&self) -> CheckResult {
        let id = crate::config::random_hex(8).unwrap_or_else(|_| "probe".into());
        let path = self.dir.join(format!("readyz-{id}"));
        let res = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"partseal readiness probe\n"));
        let removed = fs::remove_file(&path);
        match (res, removed) {
            (Ok(()), Ok(())) => CheckResult::pass(),
            (Err(e), _) => CheckResult::fail(format!(
                "cannot write a file into the store's {PROBE_DIR}/ directory: {e}"
            )),
            (Ok(()), Err(e)) => CheckResult::fail(format!(
                "cannot remove a file from the store's {PROBE_DIR}/ directory: {e}"
            )),
        }
    }
}

/// Bytes available to unprivileged writers on the file system of `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// The store's file system has more than a minimum free.
pub struct FreeSpace {
    root: PathBuf,
    min: u64,
}

impl FreeSpace {
    /// At least `min` bytes free on the file system of `root`.
    pub fn new(root: &Path, min: u64) -> FreeSpace {
        FreeSpace {
            root: root.to_path_buf(),
            min,
        }
    }
}

impl ReadinessCheck for FreeSpace {
    fn name(&self) -> &'static str {
        "free_space"
    }

    fn check(&self) -> CheckResult {
        match free_bytes(&self.root) {
            Ok(free) if free > self.min => CheckResult::pass()
                .with("free_bytes", free)
                .with("min_free_bytes", self.min),
            Ok(free) => CheckResult::fail(format!(
                "{free} bytes free on the store's file system, not more than --min-free-bytes"
            ))
            .with("free_bytes", free)
            .with("min_free_bytes", self.min),
            Err(e) => CheckResult::fail(format!("cannot read the store's free space: {e}"))
                .with("min_free_bytes", self.min),
        }
    }
}

/// Named results of the checks.
pub type Results = Vec<(&'static str, CheckResult)>;

/// The backend checks and their cached results.
pub struct Readiness {
    checks: Vec<Box<dyn ReadinessCheck>>,
    cache: Mutex<Option<(Instant, Results)>>,
}

impl Readiness {
    /// Readiness from these checks.
    pub fn new(checks: Vec<Box<dyn ReadinessCheck>>) -> Readiness {
        Readiness {
            checks,
            cache: Mutex::new(None),
        }
    }

    /// The checks' results, from the cache when younger than [`CACHE_FOR`].
    /// Blocks on I/O: call it on the blocking pool.
    pub fn results(&self) -> Results {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, r)) = cache.as_ref()
            && at.elapsed() < CACHE_FOR
        {
            return r.clone();
        }
        let r: Vec<_> = self.checks.iter().map(|c| (c.name(), c.check())).collect();
        *cache = Some((Instant::now(), r.clone()));
        r
    }
}

/// The `/readyz` body of these results and whether all passed.
pub fn report(results: &[(&'static str, CheckResult)]) -> (bool, Value) {
    let ok = results.iter().all(|(_, r)| r.ok);
    let checks: Map<String, Value> = results
        .iter()
        .map(|(n, r)| ((*n).to_owned(), r.to_json()))
        .collect();
    let body = json!({"status": if ok { "ok" } else { "fail" }, "checks": checks});
    (ok, body)
}

/// The cluster backend's readiness checks: the database answers a query,
/// the bucket answers a HEAD. Each waits at most [`CLUSTER_CHECK_TIMEOUT`].
pub fn cluster_checks(cluster: &partseal_cluster::Cluster) -> Vec<Box<dyn ReadinessCheck>> {
    vec![
        Box::new(ClusterCheck {
            cluster: cluster.clone(),
            database: true,
        }),
        Box::new(ClusterCheck {
            cluster: cluster.clone(),
            database: false,
        }),
    ]
}

/// Longest a cluster readiness check waits for an answer.
pub const CLUSTER_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

struct ClusterCheck {
    cluster: partseal_cluster::Cluster,
    database: bool,
}

impl ReadinessCheck for ClusterCheck {
    fn name(&self) -> &'static str {
        if self.database {
            "database"
        } else {
            "object_store"
        }
    }

    fn check(&self) -> CheckResult {
        // Checks run on the blocking pool, inside the runtime.
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return CheckResult::fail("no runtime to run the check on");
        };
        let res = handle.block_on(async {
            let check = async {
                if self.database {
                    self.cluster.check_database().await
                } else {
                    self.cluster.check_object_store().await
                }
            };
            tokio::time::timeout(CLUSTER_CHECK_TIMEOUT, check).await
        });
        match res {
            Ok(Ok(())) => CheckResult::pass(),
            Ok(Err(e)) => CheckResult::fail(e.to_string()),
            Err(_) => CheckResult::fail(format!(
                "no answer within {} s",
                CLUSTER_CHECK_TIMEOUT.as_secs()
            )),
        }
    }
}
