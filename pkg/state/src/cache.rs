//! Short-lived caches (the feed generator's pages and ranking snapshots,
//! the API's stats): plain values and lists that expire on their own, so
//! Redis memory stays bounded by what was written within one TTL.
//!
//! A cache is worth only what it saves: each cache command gets
//! [`CACHE_TIMEOUT`], not [`COMMAND_TIMEOUT`](crate::COMMAND_TIMEOUT), and
//! once one fails or times out every cache command of this [`State`] (and
//! its clones) fails at once with [`StateError::Unavailable`] for
//! [`CACHE_RETRY_AFTER`]: with Redis down a cached route answers from
//! ClickHouse as fast as without a cache, instead of waiting out a timeout
//! for its read and again for its write.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fred::prelude::*;
use fred::types::Expiration;

use crate::{State, StateError};

/// Longest TTL a cache entry may get (a guard against a unit mix-up).
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long one cache command may take.
pub const CACHE_TIMEOUT: Duration = Duration::from_millis(250);

/// How long the caches are skipped after a cache command failed or timed
/// out; the first command after that tries Redis again.
pub const CACHE_RETRY_AFTER: Duration = Duration::from_secs(5);

fn ttl_secs(ttl: Duration) -> i64 {
    ttl.clamp(Duration::from_secs(1), MAX_TTL).as_secs() as i64
}

impl State {
    fn millis(&self) -> u64 {
        u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether the caches are skipped now (a cache command failed less than
    /// [`CACHE_RETRY_AFTER`] ago).
    pub fn cache_skipped(&self) -> bool {
        self.millis() < self.cache_skipped_until.load(Ordering::Relaxed)
    }

    /// Run one cache command under the breaker (see the module docs),
    /// stopped after `timeout` if given (only where stopping half-way leaves
    /// nothing behind).
    async fn cache_command<T>(
        &self,
        timeout: Option<Duration>,
        command: impl Future<Output = Result<T, StateError>>,
    ) -> Result<T, StateError> {
        if self.cache_skipped() {
            return Err(StateError::Unavailable(
                "cache skipped after a failed command".into(),
            ));
        }
        let result = match timeout {
            None => command.await,
            Some(t) => match tokio::time::timeout(t, command).await {
                Ok(r) => r,
                Err(_) => Err(StateError::Unavailable(format!(
                    "cache command took over {} ms",
                    t.as_millis()
                ))),
            },
        };
        if let Some(e) = result.as_ref().err().filter(|e| e.is_retriable()) {
            let now = self.millis();
            let until = now + CACHE_RETRY_AFTER.as_millis() as u64;
            let before = self.cache_skipped_until.fetch_max(until, Ordering::Relaxed);
            if before <= now {
                tracing::warn!(
                    error = %e,
                    retry_after_secs = CACHE_RETRY_AFTER.as_secs(),
                    "Redis caches skipped for a while: answers come from their sources."
                );
            }
        }
        result
    }

    /// The cached value `name`, if present and not expired.
    pub async fn cache_get(&self, name: &str) -> Result<Option<String>, StateError> {
        self.cache_command(Some(CACHE_TIMEOUT), async {
            Ok(self.client.get(self.key(name)).await?)
        })
        .await
    }

    /// Cache `value` under `name` for `ttl` (at least 1 s).
    pub async fn cache_set(
        &self,
        name: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), StateError> {
        self.cache_command(Some(CACHE_TIMEOUT), async {
            let _: () = self
                .client
                .set(
                    self.key(name),
                    value,
                    Some(Expiration::EX(ttl_secs(ttl))),
                    None,
                    false,
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// Store `items` as the list `name` (replacing any list there), expiring
    /// after `ttl`. An empty `items` stores nothing. Not stopped after
    /// [`CACHE_TIMEOUT`] (a list stopped between its items and its TTL would
    /// stay for ever); each command has [`COMMAND_TIMEOUT`](crate::COMMAND_TIMEOUT).
    pub async fn cache_set_list(
        &self,
        name: &str,
        items: &[String],
        ttl: Duration,
    ) -> Result<(), StateError> {
        self.cache_command(None, self.set_list(name, items, ttl))
            .await
    }

    async fn set_list(
        &self,
        name: &str,
        items: &[String],
        ttl: Duration,
    ) -> Result<(), StateError> {
        let key = self.key(name);
        let _: i64 = self.client.del(&key).await?;
        if items.is_empty() {
            return Ok(());
        }
        let _: i64 = self.client.rpush(&key, items.to_vec()).await?;
        let expired: Result<bool, _> = self.client.expire(&key, ttl_secs(ttl), None).await;
        if let Err(e) = expired {
            // A list without a TTL would stay forever: drop it (best effort).
            let _: Result<i64, _> = self.client.del(&key).await;
            return Err(e.into());
        }
        Ok(())
    }

    /// Items `start..start + count` of the cached list `name`, and whether
    /// the list exists at all (an expired list reads as `None`).
    pub async fn cache_list_range(
        &self,
        name: &str,
        start: usize,
        count: usize,
    ) -> Result<Option<(Vec<String>, usize)>, StateError> {
        self.cache_command(Some(CACHE_TIMEOUT), self.list_range(name, start, count))
            .await
    }

    async fn list_range(
        &self,
        name: &str,
        start: usize,
        count: usize,
    ) -> Result<Option<(Vec<String>, usize)>, StateError> {
        let key = self.key(name);
        let len: i64 = self.client.llen(&key).await?;
        if len <= 0 {
            return Ok(None);
        }
        if count == 0 || start as i64 >= len {
            return Ok(Some((Vec::new(), len as usize)));
        }
        let stop = (start + count - 1) as i64;
        let items: Vec<String> = self.client.lrange(&key, start as i64, stop).await?;
        Ok(Some((items, len as usize)))
    }
}
