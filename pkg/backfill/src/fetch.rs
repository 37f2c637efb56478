//! `com.atproto.sync.getRepo` from the account's own PDS, under a size cap.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;

use crate::BackfillError;

/// What `getRepo` answered.
#[derive(Debug)]
pub enum Fetched {
    /// The repository CAR.
    Car(Vec<u8>),
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
    /// refused as soon as it passes the cap (also when `Content-Length` says so).
    pub async fn get_repo(&self, pds: &str, did: &str) -> Result<Fetched, BackfillError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

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
