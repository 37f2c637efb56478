//! The read queries the services use, with their SQL in
//! `queries/store.sql` (checked on ClickHouse 18.16 and on current
//! ClickHouse). Current state is always read with `FINAL` and `deleted = 0`;
//! hidden accounts (`accounts.active = 0`) are left out of aggregates.

use serde::Deserialize;

use crate::{ClickHouse, StoreError};

const SQL: &str = include_str!("../queries/store.sql");

/// The statement named `name` in queries/store.sql, with `{db}` filled in.
fn statement(ch: &ClickHouse, name: &str) -> String {
    let marker = format!("-- name: {name}\n");
    let start = SQL
        .find(&marker)
        .map(|i| i + marker.len())
        .unwrap_or(SQL.len());
    let body: String = SQL[start..]
        .lines()
        .take_while(|l| !l.starts_with("-- name:"))
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    body.trim()
        .trim_end_matches(';')
        .replace("{db}", ch.database())
}

/// A string literal for SQL: quotes and backslashes escaped.
pub(crate) fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Live records per collection (hidden accounts left out), most first.
pub async fn collection_counts(ch: &ClickHouse) -> Result<Vec<(String, u64)>, StoreError> {
    ch.client()
        .query(&statement(ch, "collection_counts"))
        .fetch_all::<(String, u64)>()
        .await
        .map_err(|e| StoreError::classify(e, "collection_counts"))
}

/// One live record, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, clickhouse::Row)]
pub struct StoredRecord {
    /// Collection NSID.
    pub collection: String,
    /// Record key.
    pub rkey: String,
    /// Record CID.
    pub cid: String,
    /// The version (rev as an integer) that wrote it.
    pub version: u64,
    /// The record, lex-JSON.
    pub record: String,
}

/// A DID's live records in key order, at most `limit`.
pub async fn records_of(
    ch: &ClickHouse,
    did: &str,
    limit: u32,
) -> Result<Vec<StoredRecord>, StoreError> {
    if !skyhouse_atproto::syntax::Did::is_valid(did) {
        return Err(StoreError::Config(format!("invalid DID {did:?}")));
    }
    let sql = statement(ch, "records_of")
        .replace("{did}", &literal(did))
        .replace("{limit}", &limit.to_string());
    ch.client()
        .query(&sql)
        .fetch_all()
        .await
        .map_err(|e| StoreError::classify(e, "records_of"))
}

/// Recompute `daily_stats` for every day from `since` (a `YYYY-MM-DD` date) on,
/// from `records FINAL`: replays change nothing and deletes are subtracted,
/// down to zero for a day that lost all its records.
pub async fn refresh_daily_stats(ch: &ClickHouse, since: &str) -> Result<(), StoreError> {
    let valid = since.len() == 10
        && since.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !valid {
        return Err(StoreError::Config(format!(
            "since {since:?} must be a YYYY-MM-DD date"
        )));
    }
    // Each refresh writes newer versions than any before it: microseconds
    // since the epoch, doubled so the zeroing pass sits just below the
    // recomputation of the same refresh.
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let version = (micros * 2).to_string();
    for name in ["zero_daily_stats", "refresh_daily_stats"] {
        let sql = statement(ch, name)
            .replace("{since}", &literal(since))
            .replace("{version}", &version);
        ch.execute(&sql).await?;
    }
    Ok(())
}

/// One row of daily stats.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, clickhouse::Row)]
pub struct DailyStat {
    /// The day, `YYYY-MM-DD` (on `sort_at`).
    pub day: String,
    /// Collection NSID.
    pub collection: String,
    /// Live records created that day.
    pub records: u64,
    /// Distinct accounts behind them.
    pub actors: u64,
}

/// Daily stats from `since` (`YYYY-MM-DD`) on, by day then collection.
pub async fn daily_stats(ch: &ClickHouse, since: &str) -> Result<Vec<DailyStat>, StoreError> {
    let sql = statement(ch, "daily_stats").replace("{since}", &literal(since));
    ch.client()
        .query(&sql)
        .fetch_all()
        .await
        .map_err(|e| StoreError::classify(e, "daily_stats"))
}
