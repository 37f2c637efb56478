//! skyhouse's state in Redis: source cursors, the resync queue, short-lived caches and the
//! backfill work queue ([`WorkQueue`]).
//!
//! Records never travel through Redis; only positions and DIDs do. Every key
//! starts with a prefix (default `skyhouse:`) so several deployments or tests
//! can share one server.
//!
//! Commands time out after [`COMMAND_TIMEOUT`] instead of waiting for a down
//! server: callers that must not stop (the indexer's cursor keeper) hold the
//! value in memory and try again later.
#![deny(missing_docs)]

use std::time::Duration;

use fred::prelude::*;
use fred::types::streams::XCap;

mod cache;
pub use cache::{CACHE_RETRY_AFTER, CACHE_TIMEOUT};
mod queue;
pub use queue::{parse_id, WorkEntry, WorkQueue};

/// How long one Redis command may take (including waiting for a reconnect)
/// before it fails with [`StateError::Unavailable`].
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// The resync stream keeps about this many entries (`XADD MAXLEN ~`): at
/// ~100 bytes each, ~100 MB of Redis memory at most.
pub const RESYNC_STREAM_MAX: i64 = 1_000_000;

/// The skipped-ranges stream keeps about this many entries (~150 bytes
/// each, ~1.5 MB): one per firehose `FutureCursor`, rare.
pub const SKIPPED_STREAM_MAX: i64 = 10_000;

/// What went wrong talking to Redis.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The `--redis` URL is not usable.
    #[error("invalid Redis URL {url:?}: {reason}")]
    Config {
        /// The URL as given, without a password.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server did not answer (down, unreachable, timed out). Retry later.
    #[error("Redis unavailable: {0}")]
    Unavailable(String),
    /// A stored value is not what skyhouse writes there.
    #[error("Redis key {key}: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong with its value.
        reason: String,
    },
}

impl StateError {
    /// Whether trying again later can succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, StateError::Unavailable(_))
    }
}

impl From<fred::error::Error> for StateError {
    fn from(e: fred::error::Error) -> Self {
        StateError::Unavailable(e.to_string())
    }
}

/// A connection to skyhouse's Redis state.
#[derive(Clone)]
pub struct State {
    client: Client,
    prefix: String,
    /// Until when the caches are skipped ([`cache`]'s breaker), in
    /// milliseconds since `since`; shared by every clone.
    cache_skipped_until: std::sync::Arc<std::sync::atomic::AtomicU64>,
    since: std::time::Instant,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The URL with any password replaced by `***` (for errors and logs).
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Check a Redis URL without connecting (`redis://`, `rediss://`, `unix://`).
pub fn validate_url(url: &str) -> Result<(), StateError> {
    let scheme = url.split_once("://").map(|(s, _)| s);
    if !matches!(
        scheme,
        Some("redis" | "rediss" | "redis-cluster" | "redis-sentinel")
    ) {
        return Err(StateError::Config {
            url: redact_url(url),
            reason: "expected redis://host:port[/db] (or rediss://, redis-cluster://, redis-sentinel://)".into(),
        });
    }
    Config::from_url(url)
        .map(|_| ())
        .map_err(|e| StateError::Config {
            url: redact_url(url),
            reason: e.details().to_string(),
        })
}

impl State {
    /// Connect to Redis at `url`, keys under `prefix`. Returns once the client
    /// is set up; a server that is down now is retried in the background
    /// (commands meanwhile fail after [`COMMAND_TIMEOUT`]).
    pub async fn connect(url: &str, prefix: &str) -> Result<State, StateError> {
        validate_url(url)?;
        let mut config = Config::from_url(url).map_err(|e| StateError::Config {
            url: redact_url(url),
            reason: e.details().to_string(),
        })?;
        config.fail_fast = false;
        let client = Builder::from_config(config)
            .with_performance_config(|p| p.default_command_timeout = COMMAND_TIMEOUT)
            .with_connection_config(|c| {
                c.connection_timeout = COMMAND_TIMEOUT;
                c.internal_command_timeout = COMMAND_TIMEOUT;
                // Commands queued while disconnected are bounded.
                c.max_command_buffer_len = 10_000;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .build()
            .map_err(|e| StateError::Config {
                url: redact_url(url),
                reason: e.details().to_string(),
            })?;
        // The connection (and its reconnects) runs in the background; wait a
        // little for the first one so the first command does not race it.
        let _task = client.connect();
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, client.wait_for_connect()).await;
        Ok(State {
            client,
            prefix: prefix.to_string(),
            cache_skipped_until: Default::default(),
            since: std::time::Instant::now(),
        })
    }

    /// The full key of a name under this state's prefix.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The stored cursor `name` (see [`cursor_key`]), if any.
    pub async fn cursor(&self, name: &str) -> Result<Option<i64>, StateError> {
        let key = self.key(name);
        let v: Option<String> = self.client.get(&key).await?;
        v.map(|s| {
            s.parse::<i64>().map_err(|_| StateError::Corrupt {
                key: key.clone(),
                reason: format!("cursor {s:?} is not an integer"),
            })
        })
        .transpose()
    }

    /// Store cursor `name`.
    pub async fn set_cursor(&self, name: &str, value: i64) -> Result<(), StateError> {
        let _: () = self
            .client
            .set(self.key(name), value.to_string(), None, None, false)
            .await?;
        Ok(())
    }

    /// Forget cursor `name` (the next start begins at the live tip).
    pub async fn reset_cursor(&self, name: &str) -> Result<bool, StateError> {
        let n: i64 = self.client.del(self.key(name)).await?;
        Ok(n > 0)
    }

    /// Queue `did` for a resync (gap, `#sync`, broken chain, `tooBig`); the
    /// backfill workers consume the stream [`RESYNC_STREAM`].
    pub async fn queue_resync(&self, did: &str, reason: &str, at: i64) -> Result<(), StateError> {
        let _: String = self
            .client
            .xadd(
                self.key(RESYNC_STREAM),
                false,
                XCap::try_from(("MAXLEN", "~", RESYNC_STREAM_MAX))?,
                "*",
                vec![("did", did), ("reason", reason), ("at", &at.to_string())],
            )
            .await?;
        Ok(())
    }

    /// Entries in the resync stream.
    pub async fn resync_len(&self) -> Result<u64, StateError> {
        Ok(self.client.xlen(self.key(RESYNC_STREAM)).await?)
    }

    /// Record that the source of cursor `cursor` skipped events (see
    /// [`SKIPPED_STREAM`]).
    pub async fn record_skip(&self, skip: &Skipped) -> Result<(), StateError> {
        let after = skip.after.map(|a| a.to_string()).unwrap_or_default();
        let _: String = self
            .client
            .xadd(
                self.key(SKIPPED_STREAM),
                false,
                XCap::try_from(("MAXLEN", "~", SKIPPED_STREAM_MAX))?,
                "*",
                vec![
                    ("cursor", skip.cursor.as_str()),
                    ("reason", skip.reason.as_str()),
                    ("after", after.as_str()),
                    ("resumed_at", &skip.resumed_at.to_string()),
                    ("time", &skip.time.to_string()),
                ],
            )
            .await?;
        Ok(())
    }

    /// The oldest `count` skipped ranges recorded (see [`SKIPPED_STREAM`]).
    pub async fn skips(&self, count: u64) -> Result<Vec<Skipped>, StateError> {
        let v: Value = self
            .client
            .xrange(self.key(SKIPPED_STREAM), "-", "+", Some(count))
            .await?;
        Ok(queue::stream_entries(v)
            .into_iter()
            .map(|(_, mut m)| Skipped {
                cursor: m.remove("cursor").unwrap_or_default(),
                reason: m.remove("reason").unwrap_or_default(),
                after: m.get("after").and_then(|a| a.parse().ok()),
                resumed_at: m
                    .get("resumed_at")
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(-1),
                time: m.get("time").and_then(|a| a.parse().ok()).unwrap_or(0),
            })
            .collect())
    }

    /// Whether the server answers now.
    pub async fn ping(&self) -> bool {
        self.client.ping::<String>(None).await.is_ok()
    }
}

/// Name (under the prefix) of the Redis Stream of DIDs to resync; fields
/// `did`, `reason`, `at` (the source position that revealed it).
pub const RESYNC_STREAM: &str = "resync";

/// Name (under the prefix) of the Redis Stream of ranges a live source
/// skipped: after a firehose `FutureCursor` the indexer goes on from the
/// live tip, and the events between its cursor and the tip are never read.
/// Fields as in [`Skipped`]; for operators (`XRANGE <prefix>skipped - +`),
/// nothing consumes it.
pub const SKIPPED_STREAM: &str = "skipped";

/// One entry of [`SKIPPED_STREAM`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The cursor name of the source (`cursor:firehose:<host>`).
    pub cursor: String,
    /// Why (`future_cursor`).
    pub reason: String,
    /// Our position before the skip (the cursor we connected with), if any.
    pub after: Option<i64>,
    /// The first position read after the skip, in the server's numbering
    /// (lower than `after` when the server's sequence was reset).
    pub resumed_at: i64,
    /// When it was recorded, Unix seconds.
    pub time: u64,
}

/// The cursor name of a live source: `cursor:<kind>:<endpoint>` where the
/// endpoint is the first URL without scheme, query or trailing slash (so
/// `wss://bsky.network` and `wss://bsky.network/` share one cursor).
pub fn cursor_key(kind: &str, url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    format!("cursor:{kind}:{}", rest.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_keys_ignore_scheme_query_and_slash() {
        assert_eq!(
            cursor_key("firehose", "wss://bsky.network/"),
            "cursor:firehose:bsky.network"
        );
        assert_eq!(
            cursor_key("jetstream", "wss://j.example/subscribe?wantedCollections=x"),
            "cursor:jetstream:j.example/subscribe"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://user:secret@h:6379/0"),
            "redis://user:***@h:6379/0"
        );
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn bad_urls_are_named() {
        let e = validate_url("http://nope").unwrap_err().to_string();
        assert!(e.starts_with("invalid Redis URL \"http://nope\""), "{e}");
    }
}
