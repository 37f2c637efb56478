//! Administration of a whole database: what benches, tools and tests that
//! own a database do to it (create, drop, empty, merge, count parts), and
//! the server diagnostics a bench reads (storage per table, running merges
//! and queries, tracked memory, the query log). The services never call
//! these.

use serde::Deserialize;

use crate::sql::{self, literal, literal_array, render, Db, Rendered};
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

/// Rows of `table` as a query reads them (on a cluster: through its
/// `Distributed` table), replays and duplicates included.
pub async fn table_count(ch: &ClickHouse, table: &str) -> Result<u64, StoreError> {
    let sql = render(ch.db(), "table_count", &[("table", table_name(table)?)])?;
    ch.fetch_one("table count", &sql).await
}

/// `(name, engine_full)` of the database's `Distributed` tables, by name.
pub async fn distributed_tables(ch: &ClickHouse) -> Result<Vec<(String, String)>, StoreError> {
    let sql = render(ch.db(), "distributed_tables", &[])?;
    ch.fetch_all("distributed tables", &sql).await
}

/// The shards of `cluster` when every one has weight 1; 0 when the cluster
/// is unknown or weighted unevenly.
pub async fn even_shards(ch: &ClickHouse, cluster: &str) -> Result<u64, StoreError> {
    let sql = render(ch.db(), "even_shards", &[("cluster", &literal(cluster))])?;
    ch.fetch_one("even shards", &sql).await
}

/// For each of `keys`, in order, the shard (0-based) a `Distributed` table
/// sharded by `cityHash64(<key>)` over `shards` equal shards sends it to, as
/// ClickHouse computes it.
pub async fn shards_of_keys(
    ch: &ClickHouse,
    keys: &[&str],
    shards: u64,
) -> Result<Vec<u64>, StoreError> {
    if shards == 0 {
        return Err(StoreError::Config("shards_of_keys: 0 shards".to_owned()));
    }
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let sql = render(
        ch.db(),
        "shards_of_keys",
        &[
            ("keys", &literal_array(keys)),
            ("shards", &shards.to_string()),
        ],
    )?;
    ch.fetch_all("shards of keys", &sql).await
}

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

/// What one table takes: its active parts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, clickhouse::Row)]
pub struct TableStorage {
    /// The table's name.
    pub table: String,
    /// Active parts (what merges have not joined yet).
    pub parts: u64,
    /// Rows in them (before deduplication).
    pub rows: u64,
    /// Bytes on disk: column data, marks, indexes, checksums.
    pub bytes_on_disk: u64,
    /// Compressed column data, bytes.
    pub compressed: u64,
    /// The same data uncompressed, bytes.
    pub uncompressed: u64,
}

/// Storage of every table of the database that has data, by name.
pub async fn table_storage(ch: &ClickHouse) -> Result<Vec<TableStorage>, StoreError> {
    let sql = render(ch.db(), "table_storage", &[])?;
    ch.fetch_all("table storage", &sql).await
}

/// Merges running on the database's tables (0 once they have settled).
pub async fn running_merges(ch: &ClickHouse) -> Result<u64, StoreError> {
    let sql = render(ch.db(), "running_merges", &[])?;
    ch.fetch_one("running merges", &sql).await
}

/// Queries of `user` the server is running, besides this one.
pub async fn running_queries(ch: &ClickHouse, user: &str) -> Result<u64, StoreError> {
    let sql = render(ch.db(), "running_queries", &[("user", &literal(user))])?;
    ch.fetch_one("running queries", &sql).await
}

/// Memory the server's allocator tracks now, bytes (`MemoryTracking`).
pub async fn tracked_memory(ch: &ClickHouse) -> Result<u64, StoreError> {
    let sql = render(ch.db(), "tracked_memory", &[])?;
    ch.fetch_one("tracked memory", &sql).await
}

/// Write the server's buffered logs (the query log) to their tables now.
pub async fn flush_logs(ch: &ClickHouse) -> Result<(), StoreError> {
    let sql = render(ch.db(), "flush_logs", &[])?;
    ch.execute("flush logs", &sql).await
}

/// Empty the server's mark and uncompressed-block caches, so the next
/// query reads marks and blocks again (a cold start without touching the
/// operating system's page cache).
pub async fn drop_caches(ch: &ClickHouse) -> Result<(), StoreError> {
    for name in ["drop_mark_cache", "drop_uncompressed_cache"] {
        let sql = render(ch.db(), name, &[])?;
        ch.execute(name, &sql).await?;
    }
    Ok(())
}

/// Whether the server keeps a query log (`system.query_log`: its config
/// has a `<query_log>` section).
pub async fn has_query_log(ch: &ClickHouse) -> Result<bool, StoreError> {
    let sql = render(ch.db(), "has_query_log", &[])?;
    let n: u64 = ch.fetch_one("query log", &sql).await?;
    Ok(n > 0)
}

/// A finished or failed query from the query log.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, clickhouse::Row)]
pub struct LoggedQuery {
    /// When it started, Unix seconds.
    pub started: u32,
    /// How long it ran, milliseconds.
    pub duration_ms: u64,
    /// Its peak memory, bytes.
    pub memory: u64,
    /// Rows it read.
    pub read_rows: u64,
    /// The error, `""` when it finished.
    pub exception: String,
    /// Its first 200 characters.
    pub query: String,
}

/// The logged queries of `user` started from `from` to `to` (Unix seconds,
/// inclusive), oldest first. Only users whose profile sets `log_queries`
/// are logged; call [`flush_logs`] first to see the last seconds.
pub async fn query_log_between(
    ch: &ClickHouse,
    user: &str,
    from: u32,
    to: u32,
) -> Result<Vec<LoggedQuery>, StoreError> {
    let sql = render(
        ch.db(),
        "query_log_between",
        &[
            ("user", &literal(user)),
            ("from", &from.to_string()),
            ("to", &to.to_string()),
        ],
    )?;
    ch.fetch_all("query log", &sql).await
}

/// Statements that read the server's own logs: servers without a
/// `<query_log>` config section (chdb, the test cluster's servers) have no
/// such table, so the chdb check and the cluster's catalog test leave them
/// out; the 18.16 catalog test runs them. Only the scale benchmark sends
/// them, to one server.
pub const SERVER_LOG_STATEMENTS: &[&str] = &["query_log_between"];

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
    sql::sample(out, db, "table_count", &[("table", "records")])?;
    sql::sample(out, db, "distributed_tables", &[])?;
    sql::sample(out, db, "even_shards", &[("cluster", &literal("skyhouse"))])?;
    sql::sample(
        out,
        db,
        "shards_of_keys",
        &[
            ("keys", &literal_array(&["did:plc:a", "did:plc:b"])),
            ("shards", "2"),
        ],
    )?;
    sql::sample(out, db, "active_parts", &[("tables", &tables)])?;
    sql::sample(
        out,
        db,
        "truncate_table",
        &[("table", "dead_letters"), ("on_cluster", "")],
    )?;
    sql::sample(out, scratch, "drop_database", &[("on_cluster", "")])?;
    sql::sample(out, db, "table_storage", &[])?;
    sql::sample(out, db, "running_merges", &[])?;
    let user = literal("default");
    sql::sample(out, db, "running_queries", &[("user", &user)])?;
    sql::sample(out, db, "tracked_memory", &[])?;
    sql::sample(out, db, "flush_logs", &[])?;
    sql::sample(out, db, "drop_mark_cache", &[])?;
    sql::sample(out, db, "drop_uncompressed_cache", &[])?;
    sql::sample(out, db, "has_query_log", &[])?;
    sql::sample(
        out,
        db,
        "query_log_between",
        &[
            ("user", &user),
            ("from", "1700000000"),
            ("to", "1700000060"),
        ],
    )?;
    Ok(())
}
