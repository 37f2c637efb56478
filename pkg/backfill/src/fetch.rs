//! `com.atproto.sync.getRepo` from the account's own PDS, under a size cap.
//! Small repositories are read whole (then indexed in place); large ones
//! (or of unknown size) are parsed as they arrive, so a worker never holds a
//! large CAR twice: their blocks stay in memory up to the reader's cap and
//! spill to a temporary file beyond it.

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest::header::HeaderMap;
use tokio::sync::mpsc;

use crate::BackfillError;

/// Body chunks buffered between the download and the parser.
const STREAM_CHUNKS: usize = 16;

/// What `getRepo` answered.
#[derive(Debug)]
pub enum Fetched {
    /// The repository CAR, read whole.
    Car(Vec<u8>),
    /// The repository CAR, still arriving: read it on a blocking thread.
    Stream(BodyReader),
    /// The host does not serve the repository: the status to record
    /// (`not_found`, `deactivated`, `takendown`, `suspended`).
    Unavailable(&'static str),
}

/// An HTTP client for repository exports.
#[derive(Debug, Clone)]
pub struct Fetcher {
    http: reqwest::Client,
    max_bytes: u64,
}

/// The delay a 429/503 asks for: `Retry-After` (seconds or an HTTP date is
/// not parsed: seconds only), else `RateLimit-Reset` (Unix seconds, as the
/// reference PDS sends it), capped at 10 minutes.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let num = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let secs = num("retry-after").or_else(|| {
        let reset = num("ratelimit-reset")?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        // Some hosts send a delta, others an epoch time.
        Some(if reset > 1_000_000_000 {
            reset.saturating_sub(now)
        } else {
            reset
        })
    })?;
    Some(Duration::from_secs(secs.min(600)))
}

impl Fetcher {
    /// A client with `timeout` per request and a cap of `max_bytes` per CAR.
    pub fn new(timeout: Duration, max_bytes: u64) -> Result<Fetcher, BackfillError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("skyhouse-backfill/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| BackfillError::Config(format!("HTTP client: {e}")))?;
        Ok(Fetcher { http, max_bytes })
    }

    /// The underlying client (listRepos uses it too).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Fetch `did`'s repository from `pds`. The body is read in chunks and
    /// refused as soon as it passes the cap (also when `Content-Length` says
    /// so). A body larger than `stream_above` bytes, or without a
    /// `Content-Length`, comes back as [`Fetched::Stream`]; `guard` (e.g. the
    /// host's request slot) is held until the whole body is read.
    pub async fn get_repo<G: Send + 'static>(
        &self,
        pds: &str,
        did: &str,
        stream_above: u64,
        guard: G,
    ) -> Result<Fetched, BackfillError> {
        let url = format!(
            "{}/xrpc/com.atproto.sync.getRepo",
            pds.trim_end_matches('/')
        );
        let transport = |e: reqwest::Error| BackfillError::Transport {
            url: url.clone(),
            reason: e.to_string(),
        };
        let mut resp = self
            .http
            .get(&url)
            .query(&[("did", did)])
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status().as_u16();
        if status != 200 {
            let after = retry_after(resp.headers());
            let body = resp.text().await.unwrap_or_default();
            let error = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| body.chars().take(200).collect());
            let unavailable = match error.as_str() {
                "RepoNotFound" => Some("not_found"),
                "RepoDeactivated" => Some("deactivated"),
                "RepoTakendown" => Some("takendown"),
                "RepoSuspended" => Some("suspended"),
                _ if status == 404 => Some("not_found"),
                _ => None,
            };
            if let (Some(s), 400..=499) = (unavailable, status) {
                return Ok(Fetched::Unavailable(s));
            }
            return Err(BackfillError::Http {
                url,
                status,
                error,
                retry_after: after,
            });
        }
        if resp.content_length().is_some_and(|n| n > self.max_bytes) {
            return Err(BackfillError::TooLarge {
                max: self.max_bytes,
            });
        }
        if resp.content_length().is_none_or(|n| n > stream_above) {
            return Ok(Fetched::Stream(BodyReader::pump(
                resp,
                url,
                self.max_bytes,
                guard,
            )));
        }
        let mut car = Vec::with_capacity(
            resp.content_length()
                .map_or(64 << 10, |n| n.min(self.max_bytes) as usize),
        );
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if car.len() as u64 + chunk.len() as u64 > self.max_bytes {
                return Err(BackfillError::TooLarge {
                    max: self.max_bytes,
                });
            }
            car.extend_from_slice(&chunk);
        }
        crate::metrics::bytes(car.len());
        Ok(Fetched::Car(car))
    }
}

/// What `com.atproto.sync.getRepoStatus` says of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostedStatus {
    /// Whether the host serves the account.
    pub active: bool,
    /// Why not (`deactivated`, `takendown`, `suspended`, `deleted`, …), as
    /// the host says it; `None` when active or not said.
    pub status: Option<String>,
}

impl Fetcher {
    /// `com.atproto.sync.getRepoStatus` of `did` on `pds`: the precise
    /// status when `getRepo` refused the repository. `Ok(None)`: the host
    /// does not know the account (`RepoNotFound`, 404).
    pub async fn get_repo_status(
        &self,
        pds: &str,
        did: &str,
    ) -> Result<Option<HostedStatus>, BackfillError> {
        let url = format!(
            "{}/xrpc/com.atproto.sync.getRepoStatus",
            pds.trim_end_matches('/')
        );
        let transport = |e: reqwest::Error| BackfillError::Transport {
            url: url.clone(),
            reason: e.to_string(),
        };
        let resp = self
            .http
            .get(&url)
            .query(&[("did", did)])
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status().as_u16();
        let after = retry_after(resp.headers());
        // A status answer is small: a few hundred bytes.
        let body = resp.bytes().await.map_err(transport)?;
        let body = &body[..body.len().min(64 << 10)];
        let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        if status != 200 {
            let error = json
                .as_ref()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect());
            if error == "RepoNotFound" || status == 404 {
                return Ok(None);
            }
            return Err(BackfillError::Http {
                url,
                status,
                error,
                retry_after: after,
            });
        }
        let json = json.ok_or_else(|| BackfillError::Repo(format!("{url}: not JSON")))?;
        let active = json
            .get("active")
            .and_then(serde_json::Value::as_bool)
            .ok_or_else(|| BackfillError::Repo(format!("{url}: no boolean `active`")))?;
        let status = json
            .get("status")
            .and_then(serde_json::Value::as_str)
            .map(account_status);
        Ok(Some(HostedStatus { active, status }))
    }
}

/// A host's status word as stored: lower-case letters and `_`, at most 32
/// characters (anything else is `unknown`, so a hostile host cannot write
/// arbitrary text into `accounts.status`).
pub(crate) fn account_status(s: &str) -> String {
    if !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        s.to_string()
    } else {
        "unknown".to_string()
    }
}

/// A response body as a blocking [`Read`], fed by a download task. A
/// transport failure or the size cap ends it with an error; ask
/// [`BodyReader::failure`] for the real cause (retriable or not).
#[derive(Debug)]
pub struct BodyReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
    failed: Arc<Mutex<Option<BackfillError>>>,
}

impl BodyReader {
    fn pump<G: Send + 'static>(
        mut resp: reqwest::Response,
        url: String,
        max: u64,
        guard: G,
    ) -> BodyReader {
        let (tx, rx) = mpsc::channel(STREAM_CHUNKS);
        let failed = Arc::new(Mutex::new(None));
        let slot = failed.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let mut total = 0u64;
            let error = loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        total += chunk.len() as u64;
                        crate::metrics::bytes(chunk.len());
                        if total > max {
                            break Some(BackfillError::TooLarge { max });
                        }
                        if tx.send(chunk).await.is_err() {
                            break None; // the parser gave up first
                        }
                    }
                    Ok(None) => break None,
                    Err(e) => {
                        break Some(BackfillError::Transport {
                            url,
                            reason: e.to_string(),
                        })
                    }
                }
            };
            if let Some(e) = error {
                *slot.lock().expect("backfill: body failure lock") = Some(e);
            }
        });
        BodyReader {
            rx,
            current: Bytes::new(),
            failed,
        }
    }

    /// Why the body ended early, if it did (the download's own error).
    pub fn failure(&self) -> Option<BackfillError> {
        self.failed
            .lock()
            .expect("backfill: body failure lock")
            .take()
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => {
                    let failed = self.failed.lock().map(|f| f.is_some()).unwrap_or(true);
                    return if failed {
                        Err(std::io::Error::other("the download failed"))
                    } else {
                        Ok(0)
                    };
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn host_status_words_are_kept_only_when_plain() {
        assert_eq!(account_status("takendown"), "takendown");
        assert_eq!(account_status("desynchronized"), "desynchronized");
        for bad in ["", "Deactivated", "x y", "a'b", &"a".repeat(33)] {
            assert_eq!(account_status(bad), "unknown", "{bad}");
        }
    }

    #[test]
    fn retry_after_prefers_the_header_and_caps() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("ratelimit-reset", HeaderValue::from_static("30"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(30)));
        h.insert("retry-after", HeaderValue::from_static("5"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(5)));
        h.insert("retry-after", HeaderValue::from_static("99999"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(600)));
    }
}
