//! Snapshots in ClickHouse (`host_checks`, migration 0007) and the queries
//! other services read them with.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use skyhouse_store::{ClickHouse, StoreError};

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

const TABLE: &str = "host_checks";

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
    let err = |e| StoreError::classify(e, TABLE);
    let mut insert = ch
        .in_database()
        .insert::<HostCheckRow>(TABLE)
        .await
        .map_err(err)?;
    for s in snapshots {
        insert
            .write(&HostCheckRow::new(s, interval))
            .await
            .map_err(err)?;
    }
    insert.end().await.map_err(err)
}

/// Hosts checked before (any time), at most `max`: a restarted monitor
/// keeps checking what it discovered earlier.
pub async fn known_hosts(ch: &ClickHouse, max: usize) -> Result<Vec<Host>, StoreError> {
    let sql = format!(
        "SELECT host, any(kind) FROM {}.{TABLE} GROUP BY host ORDER BY host LIMIT {max}",
        ch.database()
    );
    let rows: Vec<(String, String)> = ch
        .client()
        .query(&sql)
        .fetch_all()
        .await
        .map_err(|e| StoreError::classify(e, TABLE))?;
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
    let sql = format!(
        "SELECT host FROM {}.{TABLE} FINAL WHERE observed_at >= toDateTime({since}) \
         GROUP BY host HAVING argMax(up, observed_at) = 0 ORDER BY host",
        ch.database()
    );
    ch.client()
        .query(&sql)
        .fetch_all()
        .await
        .map_err(|e| StoreError::classify(e, TABLE))
}

/// The hosts [`unhealthy_hosts`] names, as a backfill worker asks about
/// them: one lookup per repository, from a set refreshed from ClickHouse at
/// most once per `refresh` (the callers share one refresh). A failed
/// refresh keeps the previous set (logged): a down ClickHouse must not
/// stop the backfill.
#[derive(Debug, Clone)]
pub struct UnhealthyHosts {
    ch: ClickHouse,
    max_age: Duration,
    refresh: Duration,
    set: Arc<tokio::sync::Mutex<(Option<Instant>, HashSet<String>)>>,
}

impl UnhealthyHosts {
    /// Hosts down at their newest check within `max_age` (e.g. three check
    /// intervals), re-read every `refresh` (e.g. one check interval).
    pub fn new(ch: ClickHouse, max_age: Duration, refresh: Duration) -> UnhealthyHosts {
        UnhealthyHosts {
            ch,
            max_age,
            refresh,
            set: Arc::default(),
        }
    }

    /// Whether the monitor found `endpoint` (a PDS URL as a DID document
    /// gives it, e.g. `https://pds.example.com/`) down. Unknown hosts and
    /// unparseable URLs are not down.
    pub async fn is_down(&self, endpoint: &str) -> bool {
        let Ok(host) = Host::parse(endpoint, HostKind::Pds) else {
            return false;
        };
        let mut guard = self.set.lock().await;
        let (refreshed, set) = &mut *guard;
        if refreshed.is_none_or(|t| t.elapsed() >= self.refresh) {
            match unhealthy_hosts(&self.ch, self.max_age).await {
                Ok(hosts) => *set = hosts.into_iter().collect(),
                Err(error) => warn!(%error, "Unhealthy hosts not refreshed; keeping the last set."),
            }
            *refreshed = Some(Instant::now());
        }
        set.contains(&host.url)
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
