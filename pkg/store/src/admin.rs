//! Administration of a whole database: what benches, tools and tests that
//! own a database do to it (create, drop, empty, merge, count parts). The
//! services never call these.

use crate::sql::{self, literal_array, render, Db, Rendered};
use crate::{ClickHouse, StoreError};

/// ` ON CLUSTER <name>` on a cluster, else nothing.
pub(crate) fn on_cluster(ch: &ClickHouse) -> String {
    ch.cluster()
        .map(|c| format!(" ON CLUSTER {c}"))
        .unwrap_or_default()
}

/// Create the database if it does not exist (on every node of the cluster).
pub async fn create_database(ch: &ClickHouse) -> Result<(), StoreError> {
    let sql = render(
        ch.db(),
        "create_database",
        &[("on_cluster", &on_cluster(ch))],
    )?;
    ch.execute("create database", &sql).await
}

/// Drop the database and everything in it.
pub async fn drop_database(ch: &ClickHouse) -> Result<(), StoreError> {
    let sql = render(ch.db(), "drop_database", &[("on_cluster", &on_cluster(ch))])?;
    ch.execute("drop database", &sql).await
}

fn table_name(table: &str) -> Result<&str, StoreError> {
    if table.is_empty() || !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(StoreError::Config(format!(
            "table name {table:?} must be letters, digits and _"
        )));
    }
    Ok(table)
}

/// Empty `table` (on a cluster: its `<table>_local` on every server).
pub async fn truncate(ch: &ClickHouse, table: &str) -> Result<(), StoreError> {
    let sql = render(
        ch.db(),
        "truncate_table",
        &[
            ("table", table_name(table)?),
            ("on_cluster", &on_cluster(ch)),
        ],
    )?;
    ch.execute("truncate", &sql).await
}

/// Merge `table` into one part per partition (`OPTIMIZE … FINAL`): what
/// `FINAL` reads then is what merges produce (on a cluster: every server's
/// `<table>_local`).
///
/// ClickHouse 18.16 refuses `OPTIMIZE … FINAL` of a replicated table with
/// no parts ("Unknown log entry type: 0", its empty merge entry): on a
/// cluster a shard that holds none of the table's rows answers that, and
/// it is taken as what it means, nothing to merge there.
pub async fn optimize_final(ch: &ClickHouse, table: &str) -> Result<(), StoreError> {
    let sql = render(
        ch.db(),
        "optimize_table_final",
        &[
            ("table", table_name(table)?),
            ("on_cluster", &on_cluster(ch)),
        ],
    )?;
    match ch.execute("optimize", &sql).await {
        Err(e) if ch.cluster().is_some() && is_empty_merge(&e) => Ok(()),
        other => other,
    }
}

/// Whether `e` is 18.16's refusal to merge a replicated table with no parts.
pub fn is_empty_merge(e: &StoreError) -> bool {
    e.to_string().contains(EMPTY_MERGE)
}

/// What ClickHouse 18.16 answers to `OPTIMIZE … FINAL` of a replicated
/// table with no parts.
pub const EMPTY_MERGE: &str = "Unknown log entry type: 0";

/// Rows in the active parts of `tables` (before deduplication), on the
/// server the handle talks to (on a cluster, its shard's `<table>_local`).
pub async fn stored_rows(ch: &ClickHouse, tables: &[&str]) -> Result<u64, StoreError> {
    let sql = render(
        ch.db(),
        "stored_rows",
        &[("tables", &literal_array(tables))],
    )?;
    ch.fetch_one("stored rows", &sql).await
}

/// Active parts of `tables`, on the server the handle talks to.
pub async fn active_parts(ch: &ClickHouse, tables: &[&str]) -> Result<u64, StoreError> {
    let sql = render(
        ch.db(),
        "active_parts",
        &[("tables", &literal_array(tables))],
    )?;
    ch.fetch_one("active parts", &sql).await
}

/// This module's statements with sample values (see [`sql::catalog`]).
/// The destructive ones are rendered for another database: the catalog
/// runs in order on one database.
pub(crate) fn samples(db: Db<'_>, out: &mut Vec<Rendered>) -> Result<(), StoreError> {
    let scratch = format!("{}_scratch", db.name());
    let scratch = if db.is_cluster() {
        Db::cluster(&scratch)
    } else {
        Db::single(&scratch)
    };
    sql::sample(out, scratch, "create_database", &[("on_cluster", "")])?;
    sql::sample(
        out,
        db,
        "optimize_table_final",
        &[("table", "records"), ("on_cluster", "")],
    )?;
    let tables = literal_array(&["records", "likes"]);
    sql::sample(out, db, "stored_rows", &[("tables", &tables)])?;
    sql::sample(out, db, "active_parts", &[("tables", &tables)])?;
    sql::sample(
        out,
        db,
        "truncate_table",
        &[("table", "dead_letters"), ("on_cluster", "")],
    )?;
    sql::sample(out, scratch, "drop_database", &[("on_cluster", "")])?;
    Ok(())
}
