//! Commit events to a webhook: `--on-commit-url` gets one signed JSON POST
//! per committed file, read from the engine's durable outbox.
//!
//! Delivery is at least once. The task reads the outbox from the last
//! acknowledged position, POSTs each event until the receiver answers 2xx
//! (retrying with exponential backoff and jitter, up to five minutes
//! between attempts, for as long as it takes), and acknowledges each batch
//! in the store, so a restart resends at most the batch that was in flight.
//! It never delays a complete: the complete's only part in it is the
//! outbox append the engine does before its commit.
//!
//! The body is signed: `X-Partseal-Signature: sha256=<hex>` is
//! HMAC-SHA256 under `--on-commit-secret` over `<X-Partseal-Timestamp>.<body>`,
//! where the timestamp is the Unix time of the attempt, in seconds.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use partseal::{CommitEvent, Engine};

/// Events read from the outbox at a time.
const BATCH: usize = 64;
/// The first retry's delay; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How often an idle task looks for new events.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// Where and how events are sent.
#[derive(Clone)]
pub struct Webhook {
    /// The receiver (`http://...`).
    pub url: String,
    /// The HMAC key.
    pub secret: String,
    /// Per-attempt timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Checks the flags: both or neither, an `http://` URL, a secret of at least
/// 16 bytes.
///
/// # Errors
/// A message for the operator naming what is wrong.
pub fn webhook(url: Option<&str>, secret: Option<&str>) -> Result<Option<Webhook>, String> {
    match (url, secret) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(
            "--on-commit-url needs --on-commit-secret: events are signed, so that receivers can \
             tell them from forgeries"
                .into(),
        ),
        (None, Some(_)) => Err("--on-commit-secret is set but --on-commit-url is not".into()),
        (Some(url), Some(secret)) => {
            let rest = url.strip_prefix("http://").ok_or_else(|| {
                format!(
                    "--on-commit-url must be an http:// URL (got {url:?}); for https, put a TLS \
                     proxy in front of the receiver"
                )
            })?;
            if rest.is_empty() || rest.starts_with('/') {
                return Err(format!("--on-commit-url has no host: {url:?}"));
            }
            if secret.len() < 16 {
                return Err("--on-commit-secret must be at least 16 bytes".into());
            }
            Ok(Some(Webhook {
                url: url.to_owned(),
                secret: secret.to_owned(),
                timeout: Duration::from_secs(30),
            }))
        }
    }
}

/// The JSON body of one event.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    /// `commit:<fileId>`: one event per committed file, so receivers can
    /// drop repeats by it.
    pub id: String,
    /// Always `commit`.
    pub event: &'static str,
    /// The outbox position.
    pub sequence: u64,
    /// `koodrive` or `metastudio`.
    pub api: &'static str,
    /// The owner: `user:<id>` or `folder:<id>`.
    pub owner: String,
    /// The committed file.
    pub file_id: String,
    /// The file name given at create, when there was one.
    pub file_name: Option<String>,
    /// Lowercase hex.
    pub sha256: String,
    /// Lowercase hex, when the upload declared an MD5.
    pub md5: Option<String>,
    /// Bytes.
    pub length: u64,
    /// Parts it was made of.
    pub parts: u32,
    /// RFC 3339, UTC.
    pub committed: String,
}

impl Payload {
    /// The body of `e`.
    pub fn of(e: &CommitEvent) -> Payload {
        // MetaStudio uploads carry their asset's id; KooDrive uploads do not.
        let api = if e.labels.contains_key("assetId") {
            "metastudio"
        } else {
            "koodrive"
        };
        let committed = OffsetDateTime::from(e.committed)
            .format(&Rfc3339)
            .unwrap_or_default();
        Payload {
            id: format!("commit:{}", e.file_id),
            event: "commit",
            sequence: e.sequence,
            api,
            owner: e.owner.as_str().to_owned(),
            file_id: e.file_id.as_str().to_owned(),
            file_name: e.labels.get("fileName").cloned(),
            sha256: e.sha256.to_hex(),
            md5: e.md5.map(hex::encode),
            length: e.length,
            parts: e.parts,
            committed,
        }
    }
}

/// `sha256=<hex>`: HMAC-SHA256 under `secret` over `<timestamp>.<body>`.
pub fn signature(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Delivers events until `stop` completes. Started only with a webhook
/// (the engine then keeps its outbox).
pub async fn run(engine: Engine, hook: Webhook, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let client = match reqwest::Client::builder()
        .timeout(hook.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "commit events: cannot build the HTTP client; no events are sent");
            return;
        }
    };
    let mut cursor = match blocking(&engine, |e| e.commit_cursor()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "commit events: cannot read the outbox position; no events are sent");
            return;
        }
    };
    tracing::info!(url = %hook.url, cursor, "commit events: delivering");
    loop {
        let batch = blocking(&engine, move |e| e.commits_since(cursor, BATCH)).await;
        let (events, next) = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "commit events: cannot read the outbox; retrying");
                if sleep_or_stop(Duration::from_secs(5), &mut stop).await {
                    return;
                }
                continue;
            }
        };
        for e in &events {
            if !deliver(&client, &hook, e, &mut stop).await {
                return;
            }
        }
        if next != cursor {
            match blocking(&engine, move |e| e.ack_commits(next)).await {
                Ok(()) => cursor = next,
                Err(e) => {
                    // Delivered but not recorded: a restart may send them again
                    // (at least once); this run goes on from where it is.
                    tracing::warn!(error = %e, "commit events: cannot record the delivered position");
                    cursor = next;
                }
            }
        }
        if events.is_empty() && sleep_or_stop(IDLE_POLL, &mut stop).await {
            return;
        }
    }
}

/// Sends one event until it is taken; `false` when stopped first.
async fn deliver(
    client: &reqwest::Client,
    hook: &Webhook,
    e: &CommitEvent,
    stop: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> bool {
    let body = match serde_json::to_vec(&Payload::of(e)) {
        Ok(b) => b,
        Err(err) => {
            tracing::error!(error = %err, sequence = e.sequence, "commit events: cannot encode an event; skipped");
            return true;
        }
    };
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1u32;
    loop {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let sent = client
            .post(&hook.url)
            .header("content-type", "application/json")
            .header("x-partseal-event", "commit")
            .header("x-partseal-timestamp", ts.to_string())
            .header("x-partseal-signature", signature(&hook.secret, ts, &body))
            .body(body.clone())
            .send();
        let outcome = tokio::select! {
            r = sent => r,
            () = stop.as_mut() => return false,
        };
        match outcome {
            Ok(r) if r.status().is_success() => {
                tracing::info!(sequence = e.sequence, file_id = %e.file_id, attempt, "commit event delivered");
                return true;
            }
            Ok(r) => tracing::warn!(
                sequence = e.sequence,
                status = r.status().as_u16(),
                attempt,
                retry_in_secs = backoff.as_secs_f64(),
                "commit event refused; retrying"
            ),
            Err(err) => tracing::warn!(
                sequence = e.sequence, error = %err, attempt,
                retry_in_secs = backoff.as_secs_f64(), "commit event not delivered; retrying"
            ),
        }
        if sleep_or_stop(jitter(backoff), stop).await {
            return false;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        attempt = attempt.saturating_add(1);
    }
}

/// `d` give or take a quarter, so that many servers do not retry in step.
fn jitter(d: Duration) -> Duration {
    let r = getrandom::u32().unwrap_or(0) as f64 / u32::MAX as f64;
    d.mul_f64(0.75 + r / 2.0)
}

/// Sleeps `d`; `true` when `stop` completed first.
async fn sleep_or_stop(
    d: Duration,
    stop: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        () = stop.as_mut() => true,
    }
}

async fn blocking<T: Send + 'static>(
    engine: &Engine,
    f: impl FnOnce(&Engine) -> partseal::Result<T> + Send + 'static,
) -> partseal::Result<T> {
    let engine = engine.clone();
    match tokio::task::spawn_blocking(move || f(&engine)).await {
        Ok(r) => r,
        Err(e) => Err(partseal::Error::Io {
            role: "event task",
            source: std::io::Error::other(e.to_string()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_both_or_neither_and_http() {
        assert!(webhook(None, None).unwrap().is_none());
        assert!(webhook(Some("http://h/x"), None).is_err());
        assert!(webhook(None, Some("0123456789abcdef")).is_err());
        assert!(webhook(Some("https://h/x"), Some("0123456789abcdef")).is_err());
        assert!(webhook(Some("http:///x"), Some("0123456789abcdef")).is_err());
        assert!(webhook(Some("http://h/x"), Some("short")).is_err());
        let w = webhook(Some("http://h:1/x"), Some("0123456789abcdef"))
            .unwrap()
            .unwrap();
        assert!(
            !format!("{w:?}").contains("0123"),
            "the secret stays out of logs"
        );
    }

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_and_body() {
        // Python: hmac.new(b"key", b"42.{}", hashlib.sha256).hexdigest()
        let s = signature("key", 42, b"{}");
        assert_eq!(
            s,
            "sha256=479f5fabf373d659ed01b17cee79df2e457070f7b1795243f56bb889e667bdf7"
        );
        assert_ne!(signature("key", 43, b"{}"), s);
    }
}
