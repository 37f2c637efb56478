//! Snapshots in ClickHouse (`host_checks`, migration 0007) and the queries
//! other services read them with.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use skyhouse_store::{hosts, ClickHouse, StoreError};

use crate::check::{now_secs, Snapshot};
use crate::hosts::{Host, HostKind};
use tracing::warn;

/// A row of `host_checks`.
#[derive(clickhouse::Row, serde::Serialize, Debug, Clone, PartialEq, Eq)]
struct HostCheckRow {
    host: String,
    kind: String,
    bucket: u32,
    observed_at: u32,
    up: u8,
    result: String,
    health_status: u16,
    health_version: String,
    describe_status: u16,
    describe_did: String,
    invite_code_required: u8,
    user_domains: Vec<String>,
    rtt_ms: u32,
    error: String,
}

/// The start of the check interval `observed_at` falls in: the second half
/// of the `host_checks` key, so the same check written twice (or checked
/// again within one interval) is one row after merges and under `FINAL`.
pub fn bucket(observed_at: u32, interval: Duration) -> u32 {
    let step = u32::try_from(interval.as_secs()).unwrap_or(u32::MAX).max(1);
    observed_at - observed_at % step
}

impl HostCheckRow {
    fn new(s: &Snapshot, interval: Duration) -> HostCheckRow {
        HostCheckRow {
            host: s.host.clone(),
            kind: s.kind.as_str().to_owned(),
            bucket: bucket(s.observed_at, interval),
            observed_at: s.observed_at,
            up: u8::from(s.up),
            result: s.result.as_str().to_owned(),
            health_status: s.health_status,
            health_version: s.health_version.clone(),
            describe_status: s.describe_status,
            describe_did: s.describe_did.clone(),
            invite_code_required: u8::from(s.invite_code_required),
            user_domains: s.user_domains.clone(),
            rtt_ms: s.rtt_ms,
            error: s.error.clone(),
        }
    }
}

/// Insert `snapshots` (one INSERT) into `host_checks`, each keyed by its
/// host and the `interval` bucket it was observed in.
pub async fn write_snapshots(
    ch: &ClickHouse,
    snapshots: &[Snapshot],
    interval: Duration,
) -> Result<(), StoreError> {
    if snapshots.is_empty() {
        return Ok(());
    }
    let rows: Vec<HostCheckRow> = snapshots
        .iter()
        .map(|s| HostCheckRow::new(s, interval))
        .collect();
    ch.insert(hosts::HOST_CHECKS, &rows).await
}

/// Hosts checked before (any time), at most `max`: a restarted monitor
/// keeps checking what it discovered earlier.
pub async fn known_hosts(ch: &ClickHouse, max: usize) -> Result<Vec<Host>, StoreError> {
    let rows = hosts::known_hosts(ch, max).await?;
    Ok(rows
        .into_iter()
        .filter_map(|(url, kind)| {
            Some(Host {
                url,
                kind: HostKind::parse(&kind)?,
            })
        })
        .collect())
}

/// Hosts whose newest check within the last `max_age` found them down, in
/// URL order: what a backfill worker should skip or slow down on. A host
/// not checked within `max_age` is not listed (no news is not bad news).
pub async fn unhealthy_hosts(
    ch: &ClickHouse,
    max_age: Duration,
) -> Result<Vec<String>, StoreError> {
    let since = now_secs().saturating_sub(u32::try_from(max_age.as_secs()).unwrap_or(u32::MAX));
    hosts::unhealthy_hosts(ch, since).await
}

/// The hosts [`unhealthy_hosts`] names, as a backfill worker asks about
/// them: one lookup per repository, from a set refreshed from ClickHouse at
/// most once per `refresh`. One caller at a time runs the refresh while the
/// others answer from the previous set, and no lock is held while the query
/// runs, so a stalled ClickHouse holds up at most the refreshing caller (for
/// at most the query's timeout). Before the first set is read, callers wait
/// for it. A failed refresh keeps the previous set (logged): a down
/// ClickHouse must not stop the backfill.
#[derive(Debug, Clone)]
pub struct UnhealthyHosts {
    ch: ClickHouse,
    max_age: Duration,
    refresh: Duration,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// When the last refresh started.
    started: std::sync::Mutex<Option<Instant>>,
    /// Set while one caller refreshes.
    refreshing: AtomicBool,
    /// The last set read; `None` until the first refresh ends.
    set: tokio::sync::watch::Sender<Option<Arc<HashSet<String>>>>,
}

impl UnhealthyHosts {
    /// Hosts down at their newest check within `max_age` (e.g. three check
    /// intervals), re-read every `refresh` (e.g. one check interval).
    pub fn new(ch: ClickHouse, max_age: Duration, refresh: Duration) -> UnhealthyHosts {
        UnhealthyHosts {
            ch,
            max_age,
            refresh,
            shared: Arc::new(Shared {
                started: std::sync::Mutex::new(None),
                refreshing: AtomicBool::new(false),
                set: tokio::sync::watch::channel(None).0,
            }),
        }
    }

    /// Whether the monitor found `endpoint` (a PDS URL as a DID document
    /// gives it, e.g. `https://pds.example.com/`) down. Unknown hosts and
    /// unparseable URLs are not down.
    pub async fn is_down(&self, endpoint: &str) -> bool {
        let Ok(host) = Host::parse(endpoint, HostKind::Pds) else {
            return false;
        };
        let due = {
            let mut started = self
                .shared
                .started
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let due = started.is_none_or(|t| t.elapsed() >= self.refresh);
            if due
                && self
                    .shared
                    .refreshing
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                *started = Some(Instant::now());
                true
            } else {
                false
            }
        };
        if due {
            // Cleared however this future ends (even dropped mid-query).
            let _refreshing = ClearOnDrop(&self.shared.refreshing);
            let read = unhealthy_hosts(&self.ch, self.max_age).await;
            let next = match read {
                Ok(hosts) => Arc::new(hosts.into_iter().collect()),
                Err(error) => {
                    warn!(%error, "Unhealthy hosts not refreshed; keeping the last set.");
                    self.shared.set.borrow().clone().unwrap_or_default()
                }
            };
            self.shared.set.send_replace(Some(next));
        }
        let mut rx = self.shared.set.subscribe();
        // The first refresh is under way elsewhere: wait for it (bounded by
        // its query's own timeouts, plus a margin).
        let limit =
            self.ch.timeouts().receive + self.ch.timeouts().connect + Duration::from_secs(1);
        let set = match tokio::time::timeout(limit, rx.wait_for(Option::is_some)).await {
            Ok(Ok(set)) => set.clone(),
            _ => None,
        };
        set.is_some_and(|s| s.contains(&host.url))
    }
}

/// Clears a flag when dropped.
struct ClearOnDrop<'a>(&'a AtomicBool);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_down_to_the_interval() {
        let m = Duration::from_secs(60);
        assert_eq!(bucket(120, m), 120);
        assert_eq!(bucket(179, m), 120);
        assert_eq!(bucket(180, m), 180);
        assert_eq!(bucket(7, Duration::ZERO), 7);
    }
}
