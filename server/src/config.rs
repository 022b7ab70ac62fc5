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
    #[arg(long, env = "PARTSEAL_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Smallest part but the last, in bytes.
    #[arg(long, env = "PARTSEAL_MIN_PART_SIZE", default_value_t = 5 << 20)]
    pub min_part_size: u64,
    /// Largest part, in bytes.
    #[arg(long, env = "PARTSEAL_MAX_PART_SIZE", default_value_t = 5 << 30)]
    pub max_part_size: u64,
    /// Largest file, in bytes.
    #[arg(long, env = "PARTSEAL_MAX_FILE_SIZE", default_value_t = 200 << 30)]
    pub max_file_size: u64,
    /// Largest JSON request body, in bytes.
    #[arg(long, env = "PARTSEAL_MAX_JSON_BODY", default_value_t = 1 << 20)]
    pub max_json_body: usize,
    /// Seconds a request body may stall before the request is cut off.
    #[arg(long, env = "PARTSEAL_BODY_TIMEOUT", default_value_t = 30)]
    pub body_timeout_secs: u64,
    /// Seconds an X-Date or X-Sdk-Date may be old (and, for X-Sdk-Date, early).
    #[arg(long, env = "PARTSEAL_DATE_WINDOW", default_value_t = 900)]
    pub date_window_secs: u64,
    /// Seconds an upload URL stays valid.
    #[arg(long, env = "PARTSEAL_URL_TTL", default_value_t = 24 * 3600)]
    pub url_ttl_secs: u64,
    /// Seconds to wait after SIGINT or SIGTERM for requests in flight before
    /// stopping anyway (a client that never finishes its request would
    /// otherwise hold the shutdown up for ever).
    #[arg(long, env = "PARTSEAL_SHUTDOWN_GRACE", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
    /// Seconds a client has to send a request's head (request line and
    /// headers) from when the server waits for it; a connection that takes
    /// longer, or stays idle between requests that long, is closed.
    #[arg(
        long,
        env = "PARTSEAL_HEADER_TIMEOUT_SECS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..)
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
}

impl Args {
    /// The engine limits these flags give.
    pub fn limits(&self) -> Limits {
        Limits {
            min_part_size: self.min_part_size,
            max_part_size: self.max_part_size,
            max_file_size: self.max_file_size,
        }
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
}

/// One user of the server.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct User {
    /// The user id (KooDrive's `X-User-Id`; the owner of the user's files).
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
        match fs::read(path) {
            Ok(bytes) => {
                let creds: Credentials =
                    serde_json::from_slice(&bytes).map_err(|e| ConfigError::Invalid {
                        path: path.to_path_buf(),
                        msg: e.to_string(),
                    })?;
                creds.validate().map_err(|msg| ConfigError::Invalid {
                    path: path.to_path_buf(),
                    msg,
                })?;
                Ok((creds, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
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
            Err(e) => Err(io(e)),
        }
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

    /// Checks ids and secrets: ids valid as owners, no duplicates, secrets
    /// long enough to resist guessing.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for u in &self.users {
            Owner::new(&u.id).map_err(|e| format!("user id {:?}: {e}", u.id))?;
            if !seen.insert(("id", u.id.as_str()))
                || !seen.insert(("token", u.token.as_str()))
                || !seen.insert(("ak", u.access_key.as_str()))
            {
                return Err(format!(
                    "user {:?}: id, token or access key used twice",
                    u.id
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
        for f in &self.shared_folders {
            Owner::new(&f.id).map_err(|e| format!("shared folder {:?}: {e}", f.id))?;
        }
        Ok(())
    }
}

fn random_hex(bytes: usize) -> std::io::Result<String> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
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
            let mut k = [0u8; 32];
            getrandom::fill(&mut k).map_err(|e| std::io::Error::other(e.to_string()))?;
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
/// go to a temporary sibling that is fsynced and then hard-linked to `path`,
/// which never replaces an existing file. Returns false if `path` existed.
fn create_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        random_hex(8)?
    ));
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let res = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        match fs::hard_link(&tmp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    })();
    let _ = fs::remove_file(&tmp);
    fs::File::open(dir)?.sync_all()?;
    res
}
