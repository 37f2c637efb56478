//! Short-lived caches (the feed generator's pages and ranking snapshots):
//! plain values and lists that expire on their own, so Redis memory stays
//! bounded by what was written within one TTL.

use std::time::Duration;

use fred::prelude::*;
use fred::types::Expiration;

use crate::{State, StateError};

/// Longest TTL a cache entry may get (a guard against a unit mix-up).
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

fn ttl_secs(ttl: Duration) -> i64 {
    ttl.clamp(Duration::from_secs(1), MAX_TTL).as_secs() as i64
}

impl State {
    /// The cached value `name`, if present and not expired.
    pub async fn cache_get(&self, name: &str) -> Result<Option<String>, StateError> {
        Ok(self.client.get(self.key(name)).await?)
    }

    /// Cache `value` under `name` for `ttl` (at least 1 s).
    pub async fn cache_set(
        &self,
        name: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), StateError> {
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
    }

    /// Store `items` as the list `name` (replacing any list there), expiring
    /// after `ttl`. An empty `items` stores nothing.
    pub async fn cache_set_list(
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
