//! Cleanup jobs: tombstone every stored row of a DID.
//!
//! An account deletion arrives as an `#account` event (status `deleted`);
//! the indexer writes it to `accounts` in the same batch as the records
//! before it, so the `accounts` table itself is the durable job queue:
//! [`pending_account_cleanups`] lists deleted accounts without a finished
//! job, [`cleanup_did`] tombstones their rows and records the job in
//! `repo_cleanup_jobs`. A crash between the two only means the job runs
//! again (tombstoning is idempotent).
//!
//! A tombstone takes the same key as the row it replaces and a version above
//! both the row's and the present time as a TID (`now_micros << 10`): any
//! later commit of the same key (a newer rev) still wins, any replay of an
//! older one loses.

use skyhouse_transform::Table;

use crate::queries::literal;
use crate::{ClickHouse, StoreError};

/// What a cleanup did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cleanup {
    /// Live rows (all tables) that were tombstoned.
    pub rows_tombstoned: u64,
    /// The tombstones' minimum version (a TID integer of the cleanup time).
    pub version: u64,
}

/// The present time as a TID integer: microseconds << 10.
pub fn now_version() -> u64 {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    micros << 10
}

fn now_secs() -> u64 {
    (now_version() >> 10) / 1_000_000
}

/// Tombstone every live row of `did` in `records` and every typed table,
/// then record the job (`id`, `reason`) as done.
pub async fn cleanup_did(
    ch: &ClickHouse,
    did: &str,
    id: &str,
    reason: &str,
) -> Result<Cleanup, StoreError> {
    let version = now_version();
    let requested = now_secs();
    let mut tombstoned = 0;
    let mut tables: Vec<(&str, &str)> = vec![("records", "did, collection, rkey")];
    tables.extend(Table::ALL.iter().map(|t| (t.name(), "did, rkey")));
    let db = ch.database();
    let did_lit = literal(did);
    for (table, key) in tables {
        let live = format!(
            "SELECT count() FROM (SELECT {key}, argMax(deleted, version) AS d \
             FROM {db}.{table} WHERE did = {did_lit} GROUP BY {key}) WHERE d = 0"
        );
        let n: u64 = ch
            .client()
            .query(&live)
            .fetch_one()
            .await
            .map_err(|e| StoreError::classify(e, &format!("cleanup {table} of {did}")))?;
        if n == 0 {
            continue;
        }
        // The aggregates sit in a subquery under other names: an outer
        // `AS version` would shadow the column inside `argMax(deleted,
        // version)` (ClickHouse then rejects an aggregate inside an aggregate).
        let insert = format!(
            "INSERT INTO {db}.{table} ({key}, cid, version, deleted, created_at, indexed_at, sort_at) \
             SELECT {key}, '' AS cid, greatest(newest + 1, toUInt64({version})) AS version, \
             toUInt8(1) AS deleted, toDateTime({requested}) AS created_at, \
             toDateTime({requested}) AS indexed_at, toDateTime({requested}) AS sort_at \
             FROM (SELECT {key}, max(version) AS newest, argMax(deleted, version) AS gone \
             FROM {db}.{table} WHERE did = {did_lit} GROUP BY {key}) WHERE gone = 0"
        );
        ch.execute(&insert).await?;
        tombstoned += n;
    }
    let finished = now_secs();
    ch.execute(&format!(
        "INSERT INTO {db}.repo_cleanup_jobs (id, did, status, reason, rows_tombstoned, \
         requested_at, finished_at, version) VALUES ({}, {did_lit}, 'done', {}, {tombstoned}, \
         toDateTime({requested}), toDateTime({finished}), {version})",
        literal(id),
        literal(reason),
    ))
    .await?;
    Ok(Cleanup {
        rows_tombstoned: tombstoned,
        version,
    })
}

/// The job id of an account deletion seen at `version` (its event position).
pub fn account_job_id(did: &str, version: u64) -> String {
    format!("account-deleted:{did}:{version}")
}

/// Deleted accounts whose cleanup has not finished: `(did, version)`.
pub async fn pending_account_cleanups(ch: &ClickHouse) -> Result<Vec<(String, u64)>, StoreError> {
    let db = ch.database();
    let sql = format!(
        "SELECT did, version FROM {db}.accounts FINAL WHERE status = 'deleted' \
         AND concat('account-deleted:', did, ':', toString(version)) NOT IN \
         (SELECT id FROM {db}.repo_cleanup_jobs FINAL WHERE status = 'done') \
         ORDER BY version LIMIT 1000"
    );
    ch.client()
        .query(&sql)
        .fetch_all::<(String, u64)>()
        .await
        .map_err(|e| StoreError::classify(e, "pending account cleanups"))
}

/// Run every pending account cleanup; returns how many ran.
pub async fn run_account_cleanups(ch: &ClickHouse) -> Result<usize, StoreError> {
    let pending = pending_account_cleanups(ch).await?;
    for (did, version) in &pending {
        let id = account_job_id(did, *version);
        let done = cleanup_did(ch, did, &id, "account deleted").await?;
        tracing::info!(
            did,
            rows = done.rows_tombstoned,
            "Deleted account's rows tombstoned."
        );
    }
    Ok(pending.len())
}
