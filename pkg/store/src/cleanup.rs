//! Cleanup jobs: tombstone every stored row of a DID.
//!
//! An account deletion arrives as an `#account` event (status `deleted`);
//! the indexer writes it to `accounts` in the same batch as the records
//! before it, so the `accounts` table itself is the durable job queue:
//! [`pending_account_cleanups`] lists deleted accounts without a finished
//! job, [`run_account_cleanups`] tombstones all their rows with one
//! statement per table and records the jobs in `repo_cleanup_jobs`. A crash
//! between the two only means the jobs run again (tombstoning is
//! idempotent). [`cleanup_did`] does the same for one DID on request.
//!
//! A tombstone takes the same key as the row it replaces and a version above
//! both the row's and the present time as a TID (`now_micros << 10`): any
//! later commit of the same key (a newer rev) still wins, any replay of an
//! older one loses.

use skyhouse_transform::Table;

use crate::sql::{self, literal, render, Db, Rendered};
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
/// then record the job (`id`, `reason`) as done. Counts the live rows first
/// (one query per table) so the answer can say how many there were: what an
/// admin request reports. Account deletions go through
/// [`run_account_cleanups`], which does not count.
pub async fn cleanup_did(
    ch: &ClickHouse,
    did: &str,
    id: &str,
    reason: &str,
) -> Result<Cleanup, StoreError> {
    let version = now_version();
    let requested = now_secs();
    let dids = literal(did);
    let mut tombstoned = 0;
    for (table, key) in keyed_tables() {
        let args = [("table", table), ("key", key), ("dids", dids.as_str())];
        let live = render(ch.db(), "cleanup_live_rows", &args)?;
        let n: u64 = ch
            .fetch_one(&format!("cleanup {table} of {did}"), &live)
            .await?;
        if n > 0 {
            tombstone(ch, table, key, &dids, version, requested).await?;
            tombstoned += n;
        }
    }
    let job = Job {
        id,
        did,
        reason,
        rows: tombstoned,
    };
    jobs_done(ch, &[job], version, requested).await?;
    Ok(Cleanup {
        rows_tombstoned: tombstoned,
        version,
    })
}

/// Tombstone every live row of the DIDs `dids` (quoted, comma-separated) in
/// `table`: one `INSERT … SELECT`.
async fn tombstone(
    ch: &ClickHouse,
    table: &str,
    key: &str,
    dids: &str,
    version: u64,
    requested: u64,
) -> Result<(), StoreError> {
    let typed = table != "records";
    let insert = render(
        ch.db(),
        "cleanup_tombstone",
        &[
            ("table", table),
            ("key", key),
            ("dids", dids),
            ("version", &version.to_string()),
            ("requested", &requested.to_string()),
            ("action_column", if typed { ", action" } else { "" }),
            (
                "action_value",
                if typed { ", toUInt8(3) AS action" } else { "" },
            ),
        ],
    )?;
    ch.execute(&format!("cleanup {table}"), &insert).await
}

/// A finished job, as [`jobs_done`] records it.
struct Job<'a> {
    id: &'a str,
    did: &'a str,
    reason: &'a str,
    rows: u64,
}

/// Record `jobs` as done, in one insert.
async fn jobs_done(
    ch: &ClickHouse,
    jobs: &[Job<'_>],
    version: u64,
    requested: u64,
) -> Result<(), StoreError> {
    let finished = now_secs();
    let values = jobs
        .iter()
        .map(|j| {
            format!(
                "({}, {}, 'done', {}, {}, toDateTime({requested}), toDateTime({finished}), {version})",
                literal(j.id),
                literal(j.did),
                literal(j.reason),
                j.rows
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let done = render(ch.db(), "cleanup_jobs_done", &[("jobs", &values)])?;
    ch.execute("cleanup jobs", &done).await
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
    let sql = render(ch.db(), "pending_account_cleanups", &[])?;
    ch.fetch_all("pending account cleanups", &sql).await
}

/// Run the pending account cleanups (up to 1,000, oldest first) together:
/// one `INSERT … SELECT` per table tombstones the live rows of all their
/// DIDs, then one insert records the jobs. Nothing is counted first (a
/// count per DID and table cost as much server CPU as the tombstones), so
/// these jobs record `rows_tombstoned` 0. Returns how many ran.
pub async fn run_account_cleanups(ch: &ClickHouse) -> Result<usize, StoreError> {
    let pending = pending_account_cleanups(ch).await?;
    if pending.is_empty() {
        return Ok(0);
    }
    let version = now_version();
    let requested = now_secs();
    let mut dids: Vec<&str> = pending.iter().map(|(d, _)| d.as_str()).collect();
    dids.sort_unstable();
    dids.dedup();
    let list = dids
        .iter()
        .map(|d| literal(d))
        .collect::<Vec<_>>()
        .join(", ");
    for (table, key) in keyed_tables() {
        tombstone(ch, table, key, &list, version, requested).await?;
    }
    let ids: Vec<String> = pending
        .iter()
        .map(|(did, v)| account_job_id(did, *v))
        .collect();
    let jobs: Vec<Job<'_>> = pending
        .iter()
        .zip(&ids)
        .map(|((did, _), id)| Job {
            id,
            did,
            reason: "account deleted",
            rows: 0,
        })
        .collect();
    jobs_done(ch, &jobs, version, requested).await?;
    tracing::info!(accounts = dids.len(), "Deleted accounts' rows tombstoned.");
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
    let sql = render(ch.db(), "cleanup_job", &[("id", &literal(id))])?;
    let jobs: Vec<CleanupJob> = ch.fetch_all("cleanup job", &sql).await?;
    Ok(jobs.into_iter().next())
}

/// This module's statements with sample values (see [`sql::catalog`]).
pub(crate) fn samples(db: Db<'_>, out: &mut Vec<Rendered>) -> Result<(), StoreError> {
    let dids = format!("{}, {}", literal("did:plc:alice"), literal("did:plc:bob"));
    for (table, key) in keyed_tables() {
        let args = [("table", table), ("key", key), ("dids", dids.as_str())];
        out.push(Rendered {
            name: format!("cleanup_live_rows#{table}"),
            sql: render(db, "cleanup_live_rows", &args)?,
        });
        let typed = table != "records";
        out.push(Rendered {
            name: format!("cleanup_tombstone#{table}"),
            sql: render(
                db,
                "cleanup_tombstone",
                &[
                    ("table", table),
                    ("key", key),
                    ("dids", &dids),
                    ("version", "5"),
                    ("requested", "1714521600"),
                    ("action_column", if typed { ", action" } else { "" }),
                    (
                        "action_value",
                        if typed { ", toUInt8(3) AS action" } else { "" },
                    ),
                ],
            )?,
        });
    }
    sql::sample(
        out,
        db,
        "cleanup_jobs_done",
        &[(
            "jobs",
            "('account-deleted:did:plc:alice:5', 'did:plc:alice', 'done', 'account deleted', 0, \
             toDateTime(1714521600), toDateTime(1714521601), 5), ('admin-x', 'did:plc:bob', \
             'done', 'admin request', 3, toDateTime(1714521600), toDateTime(1714521601), 5)",
        )],
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
