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

use crate::sql::{self, literal, render, Rendered};
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
    let requested = now_secs().to_string();
    let mut tombstoned = 0;
    let did_lit = literal(did);
    let db = ch.database();
    for (table, key) in keyed_tables() {
        let args = [("table", table), ("key", key), ("did", did_lit.as_str())];
        let live = render(db, "cleanup_live_rows", &args)?;
        let what = format!("cleanup {table} of {did}");
        let n: u64 = ch.fetch_one(&what, &live).await?;
        if n == 0 {
            continue;
        }
        let insert = render(
            db,
            "cleanup_tombstone",
            &[
                ("table", table),
                ("key", key),
                ("did", &did_lit),
                ("version", &version.to_string()),
                ("requested", &requested),
            ],
        )?;
        ch.execute(&what, &insert).await?;
        tombstoned += n;
    }
    let done = render(
        db,
        "cleanup_job_done",
        &[
            ("id", &literal(id)),
            ("did", &did_lit),
            ("reason", &literal(reason)),
            ("rows", &tombstoned.to_string()),
            ("requested", &requested),
            ("finished", &now_secs().to_string()),
            ("version", &version.to_string()),
        ],
    )?;
    ch.execute("cleanup job", &done).await?;
    Ok(Cleanup {
        rows_tombstoned: tombstoned,
        version,
    })
}

/// `records` and every typed table, with their key columns.
fn keyed_tables() -> Vec<(&'static str, &'static str)> {
    let mut tables = vec![("records", "did, collection, rkey")];
    tables.extend(Table::ALL.iter().map(|t| (t.name(), "did, rkey")));
    tables
}

/// The job id of an account deletion seen at `version` (its event position).
pub fn account_job_id(did: &str, version: u64) -> String {
    format!("account-deleted:{did}:{version}")
}

/// Deleted accounts whose cleanup has not finished: `(did, version)`.
pub async fn pending_account_cleanups(ch: &ClickHouse) -> Result<Vec<(String, u64)>, StoreError> {
    let sql = render(ch.database(), "pending_account_cleanups", &[])?;
    ch.fetch_all("pending account cleanups", &sql).await
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

/// A cleanup job as recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, clickhouse::Row)]
pub struct CleanupJob {
    /// The job's id.
    pub id: String,
    /// The DID whose rows it tombstoned.
    pub did: String,
    /// `done` once finished.
    pub status: String,
    /// Why it ran (`account deleted`, `admin request`).
    pub reason: String,
    /// Live rows it tombstoned.
    pub rows_tombstoned: u64,
    /// When it was asked for, Unix seconds.
    pub requested_at: u32,
    /// When it finished, Unix seconds.
    pub finished_at: u32,
}

/// The job `id`, if one was recorded.
pub async fn cleanup_job(ch: &ClickHouse, id: &str) -> Result<Option<CleanupJob>, StoreError> {
    let sql = render(ch.database(), "cleanup_job", &[("id", &literal(id))])?;
    let jobs: Vec<CleanupJob> = ch.fetch_all("cleanup job", &sql).await?;
    Ok(jobs.into_iter().next())
}

/// This module's statements with sample values (see [`sql::catalog`]).
pub(crate) fn samples(db: &str, out: &mut Vec<Rendered>) -> Result<(), StoreError> {
    let did = literal("did:plc:alice");
    for (table, key) in keyed_tables() {
        let args = [("table", table), ("key", key), ("did", did.as_str())];
        out.push(Rendered {
            name: format!("cleanup_live_rows#{table}"),
            sql: render(db, "cleanup_live_rows", &args)?,
        });
        out.push(Rendered {
            name: format!("cleanup_tombstone#{table}"),
            sql: render(
                db,
                "cleanup_tombstone",
                &[
                    ("table", table),
                    ("key", key),
                    ("did", &did),
                    ("version", "5"),
                    ("requested", "1714521600"),
                ],
            )?,
        });
    }
    sql::sample(
        out,
        db,
        "cleanup_job_done",
        &[
            ("id", "'account-deleted:did:plc:alice:5'"),
            ("did", &did),
            ("reason", "'account deleted'"),
            ("rows", "3"),
            ("requested", "1714521600"),
            ("finished", "1714521601"),
            ("version", "5"),
        ],
    )?;
    sql::sample(out, db, "pending_account_cleanups", &[])?;
    sql::sample(
        out,
        db,
        "cleanup_job",
        &[("id", "'account-deleted:did:plc:alice:5'")],
    )?;
    Ok(())
}
