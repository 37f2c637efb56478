//! Backfill bookkeeping: `repo_state` (one row per repository and
//! snapshot) and what a resync reads of a DID's stored records.

use serde::{Deserialize, Serialize};

use crate::sql::{self, literal, render, Db, Rendered};
use crate::{ClickHouse, StoreError};

/// A row of `repo_state`: where the backfill of one repository got to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, clickhouse::Row)]
pub struct RepoStateRow {
    /// The repository's DID.
    pub did: String,
    /// The snapshot's commit rev (empty when none was read).
    pub rev: String,
    /// The rev as an integer (the rows' version).
    pub rev_version: u64,
    /// `done`, `deactivated`, `takendown`, `not_found`, `failed`, …
    pub status: String,
    /// Records written from the snapshot.
    pub records: u64,
    /// Why it failed, if it did (one line).
    pub error: String,
    /// Unix seconds.
    pub updated_at: u32,
    /// Newest wins (ReplacingMergeTree).
    pub version: u64,
}

/// The table [`RepoStateRow`]s go to.
pub const REPO_STATE: &str = "repo_state";

/// Insert `rows` into `repo_state` (one attempt; the caller retries).
pub async fn write_repo_states(ch: &ClickHouse, rows: &[RepoStateRow]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    ch.insert(REPO_STATE, rows).await
}

/// Repositories per status, by status name.
pub async fn status_counts(ch: &ClickHouse) -> Result<Vec<(String, u64)>, StoreError> {
    let sql = render(ch.db(), "repo_status_counts", &[])?;
    ch.fetch_all("repo_state status counts", &sql).await
}

/// Repositories finished (any status) in the last `secs` seconds.
pub async fn finished_since(ch: &ClickHouse, secs: u32) -> Result<u64, StoreError> {
    let sql = render(
        ch.db(),
        "repos_finished_since",
        &[("secs", &secs.to_string())],
    )?;
    ch.fetch_one("repo_state rate", &sql).await
}

/// `(collection, rkey)` of `did`'s live records with a version below
/// `version` (what a resync at that snapshot checks against it).
pub async fn stored_live_keys(
    ch: &ClickHouse,
    did: &str,
    version: u64,
) -> Result<Vec<(String, String)>, StoreError> {
    if !skyhouse_atproto::syntax::Did::is_valid(did) {
        return Err(StoreError::Config(format!("invalid DID {did:?}")));
    }
    let sql = render(
        ch.db(),
        "stored_live_keys",
        &[("did", &literal(did)), ("version", &version.to_string())],
    )?;
    ch.fetch_all("resync: stored records", &sql).await
}

/// This module's statements with sample values (see [`sql::catalog`]).
pub(crate) fn samples(db: Db<'_>, out: &mut Vec<Rendered>) -> Result<(), StoreError> {
    sql::sample(out, db, "repo_status_counts", &[])?;
    sql::sample(out, db, "repos_finished_since", &[("secs", "60")])?;
    sql::sample(
        out,
        db,
        "stored_live_keys",
        &[("did", "'did:plc:alice'"), ("version", "12345")],
    )?;
    Ok(())
}
