//! Politeness towards each PDS, and where each DID's repository lives.
//!
//! - At most `per_host` `getRepo` requests in flight to one host, however
//!   many workers run in this process.
//! - A 429/503 with a delay (`Retry-After`, `RateLimit-Reset`) pauses the
//!   whole host for that long, not only the repository that got it.
//! - A host the monitor last found down is skipped: its repositories go back
//!   to the end of the queue (see `worker::process`).
//! - DID → PDS answers are kept in Redis for a TTL, so every worker process
//!   (and the next run) shares them instead of asking the PLC directory again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::time::Instant as TokioInstant;

use skyhouse_identity::{ResolveError, Resolver};
use skyhouse_state::State;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One host's request slots and pause.
#[derive(Debug)]
struct Slot {
    requests: Arc<Semaphore>,
    paused_until: Mutex<Option<TokioInstant>>,
}

/// Every host this process has fetched from.
#[derive(Debug)]
pub(crate) struct Hosts {
    per_host: usize,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

/// The normalised key of a PDS URL: scheme and authority, lower case.
pub(crate) fn host_key(pds: &str) -> String {
    let (scheme, rest) = pds.split_once("://").unwrap_or(("https", pds));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    format!("{scheme}://{authority}").to_ascii_lowercase()
}

impl Hosts {
    pub(crate) fn new(per_host: usize) -> Hosts {
        Hosts {
            per_host: per_host.max(1),
            slots: Mutex::default(),
        }
    }

    fn slot(&self, pds: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().expect("backfill: host slots lock");
        slots
            .entry(host_key(pds))
            .or_insert_with(|| {
                Arc::new(Slot {
                    requests: Arc::new(Semaphore::new(self.per_host)),
                    paused_until: Mutex::new(None),
                })
            })
            .clone()
    }

    /// Wait for a request slot on `pds`'s host, then for its pause (if any)
    /// to end. The request may go out while the permit is held.
    pub(crate) async fn acquire(&self, pds: &str) -> OwnedSemaphorePermit {
        let slot = self.slot(pds);
        let started = Instant::now();
        let permit = slot
            .requests
            .clone()
            .acquire_owned()
            .await
            .expect("backfill: host semaphore is never closed");
        loop {
            let until = *slot.paused_until.lock().expect("backfill: pause lock");
            match until {
                Some(t) if t > TokioInstant::now() => tokio::time::sleep_until(t).await,
                _ => break,
            }
        }
        crate::metrics::host_wait(started.elapsed().as_secs_f64());
        permit
    }

    /// Pause every request to `pds`'s host for `delay` (a later pause wins).
    pub(crate) fn pause(&self, pds: &str, delay: Duration) {
        let slot = self.slot(pds);
        let until = TokioInstant::now() + delay;
        let mut p = slot.paused_until.lock().expect("backfill: pause lock");
        if p.is_none_or(|t| t < until) {
            *p = Some(until);
            crate::metrics::host_paused();
            tracing::info!(host = %host_key(pds), ?delay, "host asked us to wait; pausing it");
        }
    }
}

/// DID → PDS endpoint through a Redis cache shared by every worker.
#[derive(Debug)]
pub(crate) struct PdsCache {
    state: State,
    ttl: Duration,
}

fn cache_key(did: &str) -> String {
    format!("backfill:pds:{did}")
}

impl PdsCache {
    /// `ttl` zero turns the Redis cache off (the resolver's own memory cache
    /// still applies).
    pub(crate) fn new(state: State, ttl: Duration) -> PdsCache {
        PdsCache { state, ttl }
    }

    /// The PDS of `did`, and whether it came from the Redis cache. A Redis
    /// failure falls back to resolving (the cache is an optimisation).
    pub(crate) async fn get(
        &self,
        resolver: &Resolver,
        did: &str,
    ) -> Result<(String, bool), ResolveError> {
        if !self.ttl.is_zero() {
            match self.state.cache_get(&cache_key(did)).await {
                Ok(Some(pds)) => {
                    crate::metrics::did_cache(true);
                    return Ok((pds, true));
                }
                Ok(None) => crate::metrics::did_cache(false),
                Err(error) => tracing::debug!(%error, "DID cache read failed"),
            }
        }
        let pds = resolver.pds_endpoint(did).await?;
        self.store(did, &pds).await;
        Ok((pds, false))
    }

    /// Resolve `did` again, bypassing both caches (the account may have
    /// moved), and keep the answer.
    pub(crate) async fn refresh(
        &self,
        resolver: &Resolver,
        did: &str,
    ) -> Result<String, ResolveError> {
        resolver.invalidate(did);
        let pds = resolver.pds_endpoint(did).await?;
        self.store(did, &pds).await;
        Ok(pds)
    }

    async fn store(&self, did: &str, pds: &str) {
        if self.ttl.is_zero() {
            return;
        }
        if let Err(error) = self.state.cache_set(&cache_key(did), pds, self.ttl).await {
            tracing::debug!(%error, "DID cache write failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys_ignore_path_and_case() {
        assert_eq!(
            host_key("https://PDS.example.com/"),
            "https://pds.example.com"
        );
        assert_eq!(
            host_key("http://127.0.0.1:2583/xrpc/x?y"),
            "http://127.0.0.1:2583"
        );
        assert_eq!(host_key("pds.example.com"), "https://pds.example.com");
    }

    #[tokio::test(start_paused = true)]
    async fn a_host_admits_per_host_requests_and_honours_its_pause() {
        let hosts = Hosts::new(2);
        let a = hosts.acquire("https://a.example").await;
        let _b = hosts.acquire("https://a.example/").await;
        // A third request to the same host waits; another host does not.
        let third =
            tokio::time::timeout(Duration::from_secs(1), hosts.acquire("https://a.example"));
        assert!(third.await.is_err(), "a third request got a slot");
        let _other = hosts.acquire("https://b.example").await;
        drop(a);
        let _c = hosts.acquire("https://a.example").await;

        hosts.pause("https://b.example", Duration::from_secs(30));
        let start = tokio::time::Instant::now();
        let _d = hosts.acquire("https://b.example").await;
        assert!(
            start.elapsed() >= Duration::from_secs(30),
            "the pause was not honoured"
        );
    }
}
