//! Start-up settings and the credentials file.
//!
//! The credentials file is plain JSON that operators edit by hand:
//!
//! ```json
//! {"users": [{"id": "dev", "token": "...", "access_key": "...", "secret_key": "...",
//!             "project_id": "..."}],
//!  "shared_folders": [{"id": "team", "members": ["dev"]}]}
//! ```
//!
//! On first start, when the file does not exist, one development user with a
//! random token and AK/SK pair is written to it (mode 0600).

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Serialize};

use partseal::{Limits, Owner};

use crate::auth::ct_eq;
use crate::serve::ServeOptions;

/// Command-line flags (each also read from a `PARTSEAL_*` variable).
#[derive(Clone, Debug, Parser)]
#[command(
    name = "partseal-server",
    version,
    about = "KooDrive- and MetaStudio-compatible upload APIs over the partseal engine"
)]
pub struct Args {
    /// Address and port to listen on.
    #[arg(long, env = "PARTSEAL_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory of the store (uploads, committed files, credentials).
    #[arg(long, env = "PARTSEAL_DATA", default_value = "./data")]
    pub data: PathBuf,
    /// The credentials file [default: DATA/credentials.json].
    #[arg(long, env = "PARTSEAL_CREDENTIALS")]
    pub credentials: Option<PathBuf>,
    /// Base URL that upload URLs are built on [default: http://LISTEN].
    #[arg(long, env = "PARTSEAL_PUBLIC_URL", value_parser = parse_public_url)]
    pub public_url: Option<String>,
    /// Smallest part but the last, in bytes.
    #[arg(long, env = "PARTSEAL_MIN_PART_SIZE", default_value_t = 5 << 20)]
    pub min_part_size: u64,
    /// Largest part, in bytes.
    #[arg(long, env = "PARTSEAL_MAX_PART_SIZE", default_value_t = 5 << 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_part_size: u64,
    /// Largest file, in bytes.
    #[arg(long, env = "PARTSEAL_MAX_FILE_SIZE", default_value_t = 200 << 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_file_size: u64,
    /// Largest JSON request body, in bytes.
    #[arg(long, env = "PARTSEAL_MAX_JSON_BODY", default_value_t = 1 << 20,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_json_body: usize,
    /// Seconds a request body may stall before the request is cut off.
    #[arg(long, env = "PARTSEAL_BODY_TIMEOUT", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=MAX_SECS))]
    pub body_timeout_secs: u64,
    /// Seconds an X-Date or X-Sdk-Date may be behind the server's clock (either
    /// may be ahead by 60 s, or by this if less).
    #[arg(long, env = "PARTSEAL_DATE_WINDOW", default_value_t = 900,
          value_parser = clap::value_parser!(u64).range(..=MAX_SECS))]
    pub date_window_secs: u64,
    /// Seconds an upload URL or a download URL stays valid.
    #[arg(long, env = "PARTSEAL_URL_TTL", default_value_t = 24 * 3600,
          value_parser = clap::value_parser!(u64).range(1..=MAX_SECS))]
    pub url_ttl_secs: u64,
    /// Seconds an open upload may go without activity (create, plan, part,
    /// complete attempt) before a background sweep aborts it and removes its
    /// bytes; 0 keeps open uploads for ever. Committed files never expire.
    #[arg(long, env = "PARTSEAL_UPLOAD_TTL_SECS", default_value_t = 7 * 24 * 3600,
          value_parser = clap::value_parser!(u64).range(..=MAX_SECS))]
    pub upload_ttl_secs: u64,
    /// Seconds to wait after SIGINT or SIGTERM for requests in flight before
    /// stopping anyway (a client that never finishes its request would
    /// otherwise hold the shutdown up for ever).
    #[arg(long, env = "PARTSEAL_SHUTDOWN_GRACE", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(..=MAX_SECS))]
    pub shutdown_grace_secs: u64,
    /// Seconds a client has to send a request's head (request line and
    /// headers) from when the server waits for it; a connection that takes
    /// longer, or stays idle between requests that long, is closed.
    #[arg(
        long,
        env = "PARTSEAL_HEADER_TIMEOUT_SECS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=MAX_SECS)
    )]
    pub header_timeout_secs: u64,
    /// Most connections open at once; a connection over it gets its request
    /// answered 503 with Retry-After and is closed.
    #[arg(
        long,
        env = "PARTSEAL_MAX_CONNECTIONS",
        default_value_t = 1024,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_connections: u32,
    /// Most part bodies received at once (each holds a thread while it
    /// streams to disk); a part upload over it is answered 503 with
    /// Retry-After before its body is read.
    #[arg(
        long,
        env = "PARTSEAL_MAX_PARTS_IN_FLIGHT",
        default_value_t = 64,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_parts_in_flight: u32,
    /// Do not serve the browser upload page at /ui/.
    #[arg(long, env = "PARTSEAL_NO_UI",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub no_ui: bool,
    /// Bytes free on the store's file system at or below which /readyz
    /// answers 503 (1 GiB by default).
    #[arg(long, env = "PARTSEAL_MIN_FREE_BYTES", default_value_t = crate::ops::DEFAULT_MIN_FREE_BYTES)]
    pub min_free_bytes: u64,
    /// Bearer token GET /metrics requires; without it /metrics is open.
    #[arg(long, env = "PARTSEAL_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Format of the log lines on stderr.
    #[arg(long, env = "PARTSEAL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Origin allowed to call the server from a browser (CORS), e.g.
    /// https://app.example.com, or * for any; repeatable (the variable takes
    /// a comma-separated list). Without it, no CORS headers.
    #[arg(long, env = "PARTSEAL_CORS_ORIGIN", value_delimiter = ',',
          value_parser = crate::ops::parse_cors_origin)]
    pub cors_origin: Vec<String>,
    /// URL (http://) that gets a signed JSON POST for every committed file,
    /// delivered at least once from a durable outbox in the store.
    #[arg(long, env = "PARTSEAL_ON_COMMIT_URL")]
    pub on_commit_url: Option<String>,
    /// Key of the HMAC-SHA256 signature of commit events (at least 16
    /// bytes); required with --on-commit-url.
    #[arg(long, env = "PARTSEAL_ON_COMMIT_SECRET", hide_env_values = true)]
    pub on_commit_secret: Option<String>,
    /// Cluster mode: PostgreSQL URL of the records, claims and checkpoints
    /// every node shares (postgres://user@host:port/db). With it, part and
    /// file bytes go to the S3 bucket of --s3-bucket instead of --data;
    /// S3 credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
    #[arg(long, env = "PARTSEAL_DATABASE_URL", hide_env_values = true,
          requires_all = ["s3_endpoint", "s3_bucket"])]
    pub database_url: Option<String>,
    /// Cluster mode: the S3 endpoint URL (e.g. https://s3.eu-west-1.amazonaws.com).
    #[arg(long, env = "PARTSEAL_S3_ENDPOINT", requires = "database_url")]
    pub s3_endpoint: Option<String>,
    /// Cluster mode: the bucket of all part and file bytes.
    #[arg(long, env = "PARTSEAL_S3_BUCKET", requires = "database_url")]
    pub s3_bucket: Option<String>,
    /// Cluster mode: the region the endpoint signs for.
    #[arg(long, env = "PARTSEAL_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Cluster mode: seconds a complete's claim holds before another node
    /// may take it over (renewed while the complete works).
    #[arg(long, env = "PARTSEAL_CLAIM_LEASE_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub claim_lease_secs: u64,
    /// Cluster mode: seconds a multipart upload or object with no record
    /// must be old before the sweep removes it as an orphan.
    #[arg(long, env = "PARTSEAL_ORPHAN_GRACE_SECS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=MAX_SECS))]
    pub orphan_grace_secs: u64,
}

/// The most seconds any duration flag takes (ten years): a time that far
/// ahead still fits every clock and timestamp the server adds it to.
pub const MAX_SECS: u64 = 10 * 365 * 24 * 3600;

/// Checks `--public-url`: an absolute `http` or `https` URL with a host and
/// nothing after the path (upload URLs are built by appending to it).
fn parse_public_url(s: &str) -> Result<String, String> {
    let uri: axum::http::Uri = s.parse().map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{s:?} must start with http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{s:?} names no host"));
    }
    if uri.query().is_some() || s.contains('#') {
        return Err(format!("{s:?} must not have a query or a fragment"));
    }
    Ok(s.to_owned())
}

/// Format of the log lines (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line (tracing-subscriber's JSON format).
    Json,
}

impl Args {
    /// The engine limits these flags give.
    pub fn limits(&self) -> Limits {
        Limits::new(self.min_part_size, self.max_part_size, self.max_file_size)
    }

    /// The idle time after which open uploads expire; `None` (flag 0) for
    /// never.
    pub fn upload_ttl(&self) -> Option<Duration> {
        (self.upload_ttl_secs > 0).then(|| Duration::from_secs(self.upload_ttl_secs))
    }

    /// The cluster backend's settings, when --database-url is given.
    ///
    /// # Errors
    /// A message when the S3 credentials are missing from the environment.
    pub fn cluster(&self) -> Result<Option<partseal_cluster::ClusterConfig>, String> {
        let Some(db) = &self.database_url else {
            return Ok(None);
        };
        let env = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("--database-url needs the S3 credentials in {name}"))
        };
        let mut cfg = partseal_cluster::ClusterConfig::new(
            db.clone(),
            self.s3_endpoint.clone().unwrap_or_default(),
            self.s3_bucket.clone().unwrap_or_default(),
            self.s3_region.clone(),
            env("AWS_ACCESS_KEY_ID")?,
            env("AWS_SECRET_ACCESS_KEY")?,
        );
        cfg.limits = self.limits();
        cfg.upload_ttl = self.upload_ttl();
        cfg.claim_lease = Duration::from_secs(self.claim_lease_secs);
        cfg.orphan_grace = Duration::from_secs(self.orphan_grace_secs);
        cfg.max_connections = (self.max_parts_in_flight as usize / 2).clamp(8, 64);
        cfg.node = format!("{}@{}", std::process::id(), self.listen);
        Ok(Some(cfg))
    }

    /// The credentials file path.
    pub fn credentials_path(&self) -> PathBuf {
        self.credentials
            .clone()
            .unwrap_or_else(|| self.data.join("credentials.json"))
    }

    /// Settings the request handlers need.
    pub fn settings(&self, public_url: String) -> Settings {
        Settings {
            public_url,
            max_json_body: self.max_json_body,
            body_timeout: Duration::from_secs(self.body_timeout_secs),
            date_window: Duration::from_secs(self.date_window_secs),
            url_ttl: Duration::from_secs(self.url_ttl_secs),
            max_parts_in_flight: self.max_parts_in_flight,
            ui: !self.no_ui,
        }
    }

    /// The probes', metrics' and CORS options these flags give.
    pub fn ops_options(&self) -> crate::ops::OpsOptions {
        crate::ops::OpsOptions {
            min_free_bytes: self.min_free_bytes,
            metrics_token: self.metrics_token.clone(),
            cors_origins: self.cors_origin.clone(),
        }
    }

    /// The connection limits these flags give.
    pub fn serve_options(&self) -> ServeOptions {
        ServeOptions {
            header_timeout: Duration::from_secs(self.header_timeout_secs),
            max_connections: self.max_connections,
        }
    }
}

/// Settings the request handlers need.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Base URL of upload URLs, without a trailing slash.
    pub public_url: String,
    /// Largest JSON body.
    pub max_json_body: usize,
    /// Longest stall of a request body.
    pub body_timeout: Duration,
    /// Age window of request dates.
    pub date_window: Duration,
    /// Lifetime of upload URLs.
    pub url_ttl: Duration,
    /// Most part bodies received at once.
    pub max_parts_in_flight: u32,
    /// Whether the browser upload page is served at `/ui/`.
    pub ui: bool,
}

/// One user of the server.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct User {
    /// The user id (KooDrive's `X-User-Id`); its files belong to the owner
    /// `user:{id}` (see [`OwnerKind`]).
    pub id: String,
    /// Bearer token (KooDrive) and `X-Auth-Token` (MetaStudio).
    pub token: String,
    /// Access key of the AK/SK pair (MetaStudio request signing).
    pub access_key: String,
    /// Secret key of the AK/SK pair.
    pub secret_key: String,
    /// MetaStudio project id the user's requests must name.
    pub project_id: String,
}

/// A folder shared by several users (`x-hw-share-folder-id`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SharedFolder {
    /// The folder id.
    pub id: String,
    /// User ids that may act in it.
    pub members: Vec<String>,
}

/// The two kinds of owner of files, each with its own namespace of engine
/// owner ids: a user's files belong to `user:{id}`, a shared folder's to
/// `folder:{id}`. The prefixes differ before the first `:`, so no user id
/// and no folder id, whatever their text, can name the same owner; both
/// APIs build owners here and nowhere else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerKind {
    /// A user (KooDrive `X-User-Id`, a MetaStudio AK/SK or token holder).
    User,
    /// A shared folder (`x-hw-share-folder-id`).
    Folder,
}

impl OwnerKind {
    /// The engine owner for `id` of this kind. Fails for an empty id, and
    /// for one the engine refuses once prefixed.
    pub fn owner(self, id: &str) -> Result<Owner, partseal::Error> {
        let kind = match self {
            OwnerKind::User => "user",
            OwnerKind::Folder => "folder",
        };
        if id.is_empty() {
            return Err(partseal::Error::BadId(format!(
                "a {kind} id must not be empty"
            )));
        }
        Owner::new(&format!("{kind}:{id}"))
    }
}

impl User {
    /// The owner of this user's own files.
    pub fn owner(&self) -> Result<Owner, partseal::Error> {
        OwnerKind::User.owner(&self.id)
    }
}

impl SharedFolder {
    /// The owner of the folder's files.
    pub fn owner(&self) -> Result<Owner, partseal::Error> {
        OwnerKind::Folder.owner(&self.id)
    }
}

/// The credentials file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Credentials {
    /// The users.
    pub users: Vec<User>,
    /// The shared folders.
    #[serde(default)]
    pub shared_folders: Vec<SharedFolder>,
}

/// Why the credentials file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading or writing it failed.
    #[error("credentials file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// It is not valid.
    #[error("credentials file {path}: {msg}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
}

impl Credentials {
    /// Loads the file, or creates it with one random development user when it
    /// does not exist. Returns the credentials and whether they were created.
    pub fn load_or_create(path: &Path) -> Result<(Credentials, bool), ConfigError> {
        let io = |source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        };
        match Credentials::load(path) {
            Ok(creds) => Ok((creds, false)),
            Err(ConfigError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                let creds = Credentials::generate_dev().map_err(io)?;
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir).map_err(io)?;
                }
                let text = serde_json::to_vec_pretty(&creds).unwrap_or_default();
                if !create_private_file(path, &text).map_err(io)? {
                    // Another process created it first: use theirs.
                    return Credentials::load_or_create(path);
                }
                Ok((creds, true))
            }
            Err(e) => Err(e),
        }
    }

    /// Loads the file, parsed and validated (see [`Credentials::validate`]);
    /// a missing file is an error, and nothing is created.
    pub fn load(path: &Path) -> Result<Credentials, ConfigError> {
        let bytes = fs::read(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |msg| ConfigError::Invalid {
            path: path.to_path_buf(),
            msg,
        };
        let creds: Credentials =
            serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
        creds.validate().map_err(invalid)?;
        Ok(creds)
    }

    /// The user holding this token (compared in constant time with every
    /// user's token, so the time taken says nothing about near misses).
    pub fn user_by_token(&self, token: &str) -> Option<&User> {
        let mut found = None;
        for u in &self.users {
            if ct_eq(u.token.as_bytes(), token.as_bytes()) {
                found = Some(u);
            }
        }
        found
    }

    /// The user with this access key.
    pub fn user_by_access_key(&self, ak: &str) -> Option<&User> {
        self.users
            .iter()
            .find(|u| ct_eq(u.access_key.as_bytes(), ak.as_bytes()))
    }

    /// The shared folder `id`, if `user` is one of its members.
    pub fn shared_folder_of(&self, id: &str, user: &str) -> Option<&SharedFolder> {
        self.shared_folders
            .iter()
            .find(|f| f.id == id)
            .filter(|f| f.members.iter().any(|m| m == user))
    }

    /// One development user with random secrets.
    pub fn generate_dev() -> std::io::Result<Credentials> {
        Ok(Credentials {
            users: vec![User {
                id: "dev".into(),
                token: random_hex(20)?,
                access_key: random_hex(10)?.to_uppercase(),
                secret_key: random_hex(20)?,
                project_id: random_hex(16)?,
            }],
            shared_folders: Vec::new(),
        })
    }

    /// Checks ids and secrets, naming the offending value (a token or secret
    /// key by the users holding it, never by its text): every id valid as
    /// an owner of its kind; user ids, folder ids, tokens and access keys
    /// each unique; no id both a user's and a folder's (the owners would
    /// differ, but an operator reading either would not know which was
    /// meant); folder members existing users; secrets long enough to resist
    /// guessing.
    pub fn validate(&self) -> Result<(), String> {
        use std::collections::{HashMap, HashSet};
        let mut ids: HashSet<&str> = HashSet::new();
        let mut tokens: HashMap<&str, &str> = HashMap::new();
        let mut keys: HashMap<&str, &str> = HashMap::new();
        for u in &self.users {
            u.owner().map_err(|e| format!("user id {:?}: {e}", u.id))?;
            if !ids.insert(&u.id) {
                return Err(format!("user id {:?} appears twice", u.id));
            }
            if let Some(other) = tokens.insert(&u.token, &u.id) {
                return Err(format!(
                    "users {other:?} and {:?} have the same token",
                    u.id
                ));
            }
            if let Some(other) = keys.insert(&u.access_key, &u.id) {
                return Err(format!(
                    "users {other:?} and {:?} have the same access key {:?}",
                    u.id, u.access_key
                ));
            }
            if u.token.len() < 16 || u.secret_key.len() < 16 {
                return Err(format!(
                    "user {:?}: token and secret key need at least 16 characters",
                    u.id
                ));
            }
            if u.access_key.is_empty() || u.project_id.is_empty() {
                return Err(format!(
                    "user {:?}: access key and project id are required",
                    u.id
                ));
            }
        }
        let mut folders = HashSet::new();
        for f in &self.shared_folders {
            f.owner()
                .map_err(|e| format!("shared folder id {:?}: {e}", f.id))?;
            if !folders.insert(f.id.as_str()) {
                return Err(format!("shared folder id {:?} appears twice", f.id));
            }
            if ids.contains(f.id.as_str()) {
                return Err(format!(
                    "{:?} is both a user id and a shared folder id",
                    f.id
                ));
            }
            if let Some(m) = f.members.iter().find(|m| !ids.contains(m.as_str())) {
                return Err(format!(
                    "shared folder {:?}: member {m:?} is not a user",
                    f.id
                ));
            }
        }
        Ok(())
    }
}

/// Fills `b` from the operating system's random source: the server's one
/// source of secrets, keys and ids.
fn fill_random(b: &mut [u8]) -> std::io::Result<()> {
    getrandom::fill(b).map_err(|e| std::io::Error::other(e.to_string()))
}

/// `N` random bytes (a key).
pub fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut b = [0u8; N];
    fill_random(&mut b)?;
    Ok(b)
}

/// `bytes` random bytes as lower-case hex (a token, an id).
pub fn random_hex(bytes: usize) -> std::io::Result<String> {
    let mut b = vec![0u8; bytes];
    fill_random(&mut b)?;
    Ok(hex::encode(b))
}

/// Loads the key that signs upload URLs from `DIR/url-signing.key`, creating
/// it on first start so that URLs survive restarts.
pub fn url_key(data: &Path) -> std::io::Result<[u8; 32]> {
    let path = data.join("url-signing.key");
    match fs::read(&path) {
        Ok(b) if b.len() == 32 => {
            let mut k = [0u8; 32];
            k.copy_from_slice(&b);
            Ok(k)
        }
        Ok(_) => Err(std::io::Error::other(format!(
            "{} must hold 32 bytes",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let k = random_bytes::<32>()?;
            fs::create_dir_all(data)?;
            if !create_private_file(&path, &k)? {
                return url_key(data);
            }
            Ok(k)
        }
        Err(e) => Err(e),
    }
}

/// Creates `path` (mode 0600) holding `bytes`, whole or not at all: the bytes
/// go to a temporary sibling that is fsynced and then moved to `path` without
/// ever replacing an existing file. Returns false if `path` existed.
fn create_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // tempfile creates its files with mode 0600.
    let mut tmp = tempfile::Builder::new()
        .prefix(".partseal-new.")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    let res = match tmp.persist_noclobber(path) {
        Ok(_) => Ok(true),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e.error),
    };
    fs::File::open(dir)?.sync_all()?;
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> User {
        User {
            id: id.into(),
            token: format!("token-of-{id}-0123456789"),
            access_key: format!("AK-{id}"),
            secret_key: format!("secret-of-{id}-0123456789"),
            project_id: format!("project-{id}"),
        }
    }

    fn folder(id: &str, members: &[&str]) -> SharedFolder {
        SharedFolder {
            id: id.into(),
            members: members.iter().map(|m| (*m).to_owned()).collect(),
        }
    }

    fn creds(users: Vec<User>, shared_folders: Vec<SharedFolder>) -> Credentials {
        Credentials {
            users,
            shared_folders,
        }
    }

    #[test]
    fn random_values_differ_and_have_their_length() {
        let (a, b) = (
            random_hex(16).expect("random"),
            random_hex(16).expect("random"),
        );
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
        assert_ne!(
            random_bytes::<32>().expect("random"),
            random_bytes::<32>().expect("random")
        );
    }

    #[test]
    fn owners_of_users_and_folders_never_coincide() {
        // The ids that used to collide: a user named like the old folder
        // owner, and one named like the new.
        for id in ["team", "share:team", "folder:team", "user:team"] {
            let as_user = OwnerKind::User.owner(id).expect("valid");
            for folder in ["team", "share:team", "folder:team", "user:team"] {
                let as_folder = OwnerKind::Folder.owner(folder).expect("valid");
                assert_ne!(as_user, as_folder, "user {id:?} vs folder {folder:?}");
            }
        }
        assert_eq!(user("alice").owner().expect("valid").as_str(), "user:alice");
        assert_eq!(
            folder("team", &[]).owner().expect("valid").as_str(),
            "folder:team"
        );
        assert!(OwnerKind::User.owner("").is_err());
    }

    #[test]
    fn credentials_with_colliding_ids_are_refused() {
        let ok = creds(
            vec![user("alice"), user("bob")],
            vec![folder("team", &["alice", "bob"])],
        );
        assert_eq!(ok.validate(), Ok(()));

        let mut same_token = user("bob");
        same_token.token = user("alice").token;
        let mut same_key = user("bob");
        same_key.access_key = "AK-alice".into();
        let cases = [
            (
                creds(vec![user("alice"), user("alice")], vec![]),
                "user id \"alice\" appears twice",
            ),
            (
                creds(
                    vec![user("alice")],
                    vec![folder("team", &[]), folder("team", &[])],
                ),
                "shared folder id \"team\" appears twice",
            ),
            (
                creds(vec![user("alice"), user("team")], vec![folder("team", &[])]),
                "\"team\" is both a user id and a shared folder id",
            ),
            (
                creds(vec![user("alice"), same_token], vec![]),
                "users \"alice\" and \"bob\" have the same token",
            ),
            (
                creds(vec![user("alice"), same_key], vec![]),
                "users \"alice\" and \"bob\" have the same access key \"AK-alice\"",
            ),
            (
                creds(vec![user("alice")], vec![folder("team", &["alice", "zed"])]),
                "shared folder \"team\": member \"zed\" is not a user",
            ),
            (creds(vec![user("")], vec![]), "user id \"\""),
            (creds(vec![user("a/b")], vec![]), "user id \"a/b\""),
            (
                creds(vec![user(&"u".repeat(500))], vec![]),
                "user id \"uuuu",
            ),
            (
                creds(vec![user("alice")], vec![folder("a b", &[])]),
                "shared folder id \"a b\"",
            ),
        ];
        for (c, want) in cases {
            match c.validate() {
                Err(msg) => assert!(msg.contains(want), "{msg:?} does not name {want:?}"),
                Ok(()) => panic!("accepted: {want}"),
            }
        }
        // A token is named by its holders, never shown.
        let mut same_token = user("bob");
        same_token.token = user("alice").token;
        let msg = creds(vec![user("alice"), same_token], vec![])
            .validate()
            .expect_err("refused");
        assert!(!msg.contains(&user("alice").token), "{msg}");
    }
}
