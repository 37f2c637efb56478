//! The read queries the services use, with their SQL in
//! `queries/store.sql` (checked on ClickHouse 18.16 and on current
//! ClickHouse). Current state is always read with `FINAL` and `deleted = 0`;
//! hidden accounts (`accounts.active = 0`) are left out of aggregates.

use serde::Deserialize;

use crate::sql::{self, literal, render, Db, Rendered};
use crate::{ClickHouse, StoreError};

/// Live records per collection, all time (the sums of the daily stats, every
/// stored account included), most first.
pub async fn collection_counts(ch: &ClickHouse) -> Result<Vec<(String, u64)>, StoreError> {
    let sql = render(ch.db(), "collection_counts", &[])?;
    ch.fetch_all("collection_counts", &sql).await
}

/// Whether `did`'s account is hidden (`accounts.active = 0`: deactivated,
/// taken down, suspended, deleted): nothing of it may be shown.
pub async fn account_hidden(ch: &ClickHouse, did: &str) -> Result<bool, StoreError> {
    let sql = render(ch.db(), "account_hidden", &[("did", &literal(did))])?;
    let n: u64 = ch.fetch_one("account_hidden", &sql).await?;
    Ok(n > 0)
}

/// On a cluster ([`ClickHouse::cluster`]): how many of the database's
/// replicated tables are read-only (their server lost its ZooKeeper
/// session) on one server of each shard; an error (ClickHouse's code 279,
/// "All connection tries failed") when a shard has no server answering.
/// On one server: the same count on that server.
pub async fn read_only_replicas(ch: &ClickHouse) -> Result<u64, StoreError> {
    let replicas = match ch.cluster() {
        Some(c) => format!("cluster({}, system, replicas)", literal(c)),
        None => "system.replicas".to_owned(),
    };
    let sql = render(ch.db(), "read_only_replicas", &[("replicas", &replicas)])?;
    ch.fetch_one("read_only_replicas", &sql).await
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
    let sql = render(
        ch.db(),
        "records_of",
        &[("did", &literal(did)), ("limit", &limit.to_string())],
    )?;
    ch.fetch_all("records_of", &sql).await
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
    let sql = render(ch.db(), "daily_stats", &[("since", &literal(since))])?;
    ch.fetch_all("daily_stats", &sql).await
}

pub use crate::counts::{
    post_counts, refresh_interactions, refresh_interactions_in_windows, PostCounts, RefreshedUpto,
    MAX_COUNT_URIS, REFRESH_MARGIN_SECS, REFRESH_WINDOW_ROWS,
};

/// This module's statements with sample values (see [`sql::catalog`]).
pub(crate) fn samples(db: Db<'_>, out: &mut Vec<Rendered>) -> Result<(), StoreError> {
    let alice = literal("did:plc:alice");
    sql::sample(out, db, "collection_counts", &[])?;
    sql::sample(out, db, "account_hidden", &[("did", &alice)])?;
    sql::sample(out, db, "records_of", &[("did", &alice), ("limit", "100")])?;
    sql::sample(out, db, "daily_stats", &[("since", "'2024-01-01'")])?;
    sql::sample(
        out,
        db,
        "read_only_replicas",
        &[("replicas", "system.replicas")],
    )?;
    for table in skyhouse_transform::table_names() {
        out.push(Rendered {
            name: format!("insert_row_binary#{table}"),
            sql: crate::insert_statement(db, table, table)?,
        });
    }
    Ok(())
}
