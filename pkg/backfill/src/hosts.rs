//! Politeness towards each PDS, and where each DID's repository lives.
//!
//! - At most `per_host` `getRepo` requests in flight to one host, however
//!   many workers run in this process.
//! - A 429/503 with a delay (`Retry-After`, `RateLimit-Reset`) pauses the
//!   whole host for that long, not only the repository that got it.
//! - A host the monitor last found down is skipped: its repositories go back
//!   to the end of the queue (see `worker::process`).
//! - DID → PDS (and claimed handle) answers, and handle → DID answers, are
//!   kept in Redis for a TTL, so every worker process (and the next run)
//!   shares them instead of asking the PLC directory, DNS or the handle's
//!   host again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::time::Instant as TokioInstant;

use skyhouse_identity::{
    claimed_handle, judge, unusable, HandleAnswer, HandleResolution, Identity, ResolveError,
    Resolver, Via,
};
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

/// What the backfill keeps of a DID document: the account's PDS, the
/// handle the document claims, and when it was fetched (Unix microseconds).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct DidInfo {
    /// The PDS URL, without a trailing `/`.
    pub(crate) pds: String,
    /// The first `at://` entry of `alsoKnownAs`, as written.
    #[serde(default)]
    pub(crate) handle: Option<String>,
    /// When the document was fetched.
    pub(crate) at: u64,
}

/// A cached handle resolution (see [`PdsCache::handle`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct CachedHandle {
    /// The DID the handle names; `None`: it names none.
    did: Option<String>,
    /// `dns` or `http`.
    via: String,
    /// When it was resolved.
    at: u64,
}

/// DID → PDS and claimed handle, and handle → DID, through a Redis cache
/// shared by every worker (and the next run).
#[derive(Debug)]
pub(crate) struct PdsCache {
    state: State,
    ttl: Duration,
}

fn cache_key(did: &str) -> String {
    format!("backfill:pds:{did}")
}

fn handle_key(handle: &str) -> String {
    format!("backfill:handle:{handle}")
}

/// What a document says, as kept: its PDS (required) and claimed handle.
async fn resolve(resolver: &Resolver, did: &str) -> Result<DidInfo, ResolveError> {
    let (doc, at) = resolver.resolve_timed(did).await?;
    let pds = doc
        .pds_endpoint()
        .map(|url| url.trim_end_matches('/').to_string())
        .ok_or_else(|| ResolveError::NoPds {
            did: did.to_string(),
        })?;
    Ok(DidInfo {
        pds,
        handle: doc.handle().map(str::to_owned),
        at,
    })
}

impl PdsCache {
    /// `ttl` zero turns the Redis cache off (the resolver's own memory cache
    /// still applies).
    pub(crate) fn new(state: State, ttl: Duration) -> PdsCache {
        PdsCache { state, ttl }
    }

    /// The PDS and claimed handle of `did`, and whether they came from the
    /// Redis cache. A Redis failure falls back to resolving (the cache is an
    /// optimisation); so does a value in the older form (the PDS URL alone).
    pub(crate) async fn get(
        &self,
        resolver: &Resolver,
        did: &str,
    ) -> Result<(DidInfo, bool), ResolveError> {
        if !self.ttl.is_zero() {
            match self.state.cache_get(&cache_key(did)).await {
                Ok(Some(text)) => match serde_json::from_str::<DidInfo>(&text) {
                    Ok(info) => {
                        crate::metrics::did_cache(true);
                        return Ok((info, true));
                    }
                    Err(_) => crate::metrics::did_cache(false),
                },
                Ok(None) => crate::metrics::did_cache(false),
                Err(error) => tracing::debug!(%error, "DID cache read failed"),
            }
        }
        let info = resolve(resolver, did).await?;
        self.store(did, &info).await;
        Ok((info, false))
    }

    /// Resolve `did` again, bypassing both caches (the account may have
    /// moved, or changed its handle), and keep the answer.
    pub(crate) async fn refresh(
        &self,
        resolver: &Resolver,
        did: &str,
    ) -> Result<DidInfo, ResolveError> {
        resolver.invalidate(did);
        let info = resolve(resolver, did).await?;
        self.store(did, &info).await;
        Ok(info)
    }

    async fn store(&self, did: &str, info: &DidInfo) {
        if self.ttl.is_zero() {
            return;
        }
        let Ok(text) = serde_json::to_string(info) else {
            return;
        };
        if let Err(error) = self.state.cache_set(&cache_key(did), &text, self.ttl).await {
            tracing::debug!(%error, "DID cache write failed");
        }
    }

    /// Where `handle` (normalized) points: from Redis unless `fresh`, else
    /// resolved (DNS, then HTTPS) and kept. Unknown answers are not kept.
    pub(crate) async fn handle(
        &self,
        resolver: &Resolver,
        handle: &str,
        fresh: bool,
    ) -> HandleResolution {
        if !fresh && !self.ttl.is_zero() {
            match self.state.cache_get(&handle_key(handle)).await {
                Ok(Some(text)) => {
                    if let Ok(c) = serde_json::from_str::<CachedHandle>(&text) {
                        crate::metrics::handle_cache(true);
                        return HandleResolution {
                            answer: c.did.map_or(HandleAnswer::NoDid, HandleAnswer::Did),
                            via: if c.via == "dns" { Via::Dns } else { Via::Http },
                            at_us: c.at,
                        };
                    }
                    crate::metrics::handle_cache(false);
                }
                Ok(None) => crate::metrics::handle_cache(false),
                Err(error) => tracing::debug!(%error, "handle cache read failed"),
            }
        }
        let found = resolver.resolve_handle(handle, fresh).await;
        let did = match &found.answer {
            HandleAnswer::Did(d) => Some(d.clone()),
            HandleAnswer::NoDid => None,
            HandleAnswer::Unknown(_) => return found,
        };
        if !self.ttl.is_zero() {
            let cached = CachedHandle {
                did,
                via: found.via.as_str().to_string(),
                at: found.at_us,
            };
            if let Ok(text) = serde_json::to_string(&cached) {
                if let Err(error) = self
                    .state
                    .cache_set(&handle_key(handle), &text, self.ttl)
                    .await
                {
                    tracing::debug!(%error, "handle cache write failed");
                }
            }
        }
        found
    }

    /// The identity of `did` whose document says `info`: its claimed
    /// handle checked ([`handle`](Self::handle)). The identity is as old as
    /// the older of the document and the resolution.
    pub(crate) async fn identity(
        &self,
        resolver: &Resolver,
        did: &str,
        info: &DidInfo,
        fresh: bool,
    ) -> Identity {
        match claimed_handle(info.handle.as_deref()) {
            Err(reason) => unusable(did, reason, info.at),
            Ok(handle) => {
                let found = self.handle(resolver, &handle, fresh).await;
                judge(did, &handle, info.at, &found)
            }
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
