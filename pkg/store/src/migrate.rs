//! Numbered up/down SQL migrations, recorded in `schema_migrations`.
//!
//! Files are `NNNN_name.up.sql` and `NNNN_name.down.sql`. Statements end with
//! `;` at the end of a line; `{db}` stands for the target database. A file may
//! start with `-- min_server_version: X.Y` to need a newer ClickHouse: on an
//! older server it is recorded as `skipped` (and `migrate version` says so),
//! so one migration set serves ClickHouse 18.16 and current releases.
//!
//! `schema_migrations` keeps each migration's sha2-256 checksum; changing a
//! file after it was applied is an error, not a silent drift. `up` is
//! idempotent (every statement is `IF NOT EXISTS`-safe and applied versions
//! are skipped).
//!
//! With a cluster name, every table of the files becomes a replicated
//! `<name>_local` table on every server (`ON CLUSTER`, ZooKeeper path
//! `/clickhouse/tables/{shard}/<db>/<name>_local`, replica `{replica}`)
//! behind a `Distributed` table named as in the files, sharded by
//! `cityHash64` of the first sorting-key column: every version and tombstone
//! of a key lands on the same shard, so `FINAL` through the `Distributed`
//! table sees them together. `schema_migrations` is then replicated on every
//! server of the cluster, so `migrate` may talk to any of them.
//!
//! A plain `VIEW` is created `ON CLUSTER` on every server and reads the
//! `Distributed` tables (the whole cluster's rows); one that filters with
//! another table uses `GLOBAL IN` (a plain `IN` over a second `Distributed`
//! table is refused: `distributed_product_mode = deny`).
//!
//! An `ALTER` that changes columns runs on the local tables and then
//! re-creates the `Distributed` table (dropped and created `ON CLUSTER` with
//! the local tables' columns and its old engine): ClickHouse 18.16 refuses
//! `ALTER … ON CLUSTER` of a table that is not replicated when the cluster's
//! shards replicate internally. A `Distributed` table dropped this way loses
//! the blocks it had not yet sent to the shards (asynchronous inserts
//! through it), so column migrations are applied while nothing inserts
//! through the `Distributed` tables asynchronously. Before ClickHouse 20.1 a
//! `MATERIALIZED` column of the `Distributed` table breaks inserts through
//! it (the server sends the computed column and the shard refuses it), so
//! there the `Distributed` table declares it `ALIAS` instead: inserts skip
//! it, and reads are forwarded to the shards, which return the stored value.

use std::fmt;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::{ClickHouse, StoreError};

include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// One migration: its up and down SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// The number (`0002`).
    pub version: u32,
    /// The name after the number (`typed_tables`).
    pub name: String,
    /// The up SQL, as written.
    pub up: String,
    /// The down SQL, as written.
    pub down: String,
    /// Oldest server the migration runs on, if gated.
    pub min_server_version: Option<ServerVersion>,
    /// sha2-256 of the up file, hex.
    pub checksum: String,
}

/// A ClickHouse version `major.minor[.patch]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion(pub u32, pub u32, pub u32);

impl ServerVersion {
    /// Parse `18.16.1` or `26.1.2.3` (parts after the third are ignored).
    pub fn parse(s: &str) -> Option<ServerVersion> {
        let mut parts = s.trim().split('.').map(|p| p.parse::<u32>());
        let major = parts.next()?.ok()?;
        let minor = parts.next().unwrap_or(Ok(0)).ok()?;
        let patch = parts.next().unwrap_or(Ok(0)).ok()?;
        Some(ServerVersion(major, minor, patch))
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The embedded migrations (the `migrations/` folder at build time).
pub fn embedded() -> Result<Vec<Migration>, StoreError> {
    embedded_files()
}

/// Apply every pending embedded migration to `ch`'s database (what
/// `skyhouse migrate up` does): a fresh database for tests and benches.
pub async fn up_embedded(ch: &ClickHouse) -> Result<Vec<Status>, StoreError> {
    Migrator::new(ch, embedded()?).up().await
}

fn embedded_files() -> Result<Vec<Migration>, StoreError> {
    parse_files(
        EMBEDDED
            .iter()
            .map(|(n, c)| (n.to_string(), c.to_string()))
            .collect(),
    )
}

/// The migrations in a folder (for `migrate create` and development).
pub fn load_dir(dir: &Path) -> Result<Vec<Migration>, StoreError> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| StoreError::Migration(format!("{}: {e}", dir.display())))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".sql") {
            let text = std::fs::read_to_string(e.path())
                .map_err(|err| StoreError::Migration(format!("{}: {err}", e.path().display())))?;
            files.push((name, text));
        }
    }
    parse_files(files)
}

fn parse_files(files: Vec<(String, String)>) -> Result<Vec<Migration>, StoreError> {
    use std::collections::BTreeMap;
    let bad =
        |name: &str, why: &str| StoreError::Migration(format!("migration file {name}: {why}"));
    let mut by_version: BTreeMap<u32, (String, Option<String>, Option<String>)> = BTreeMap::new();
    for (file, text) in files {
        let (stem, up) = if let Some(s) = file.strip_suffix(".up.sql") {
            (s, true)
        } else if let Some(s) = file.strip_suffix(".down.sql") {
            (s, false)
        } else {
            return Err(bad(&file, "name must end in .up.sql or .down.sql"));
        };
        let (num, name) = stem
            .split_once('_')
            .ok_or_else(|| bad(&file, "name must be NNNN_name"))?;
        let version: u32 = num
            .parse()
            .map_err(|_| bad(&file, "must start with a number"))?;
        let entry = by_version
            .entry(version)
            .or_insert_with(|| (name.to_string(), None, None));
        if entry.0 != name {
            return Err(bad(
                &file,
                &format!("number {version} is also used by {:?}", entry.0),
            ));
        }
        let slot = if up { &mut entry.1 } else { &mut entry.2 };
        *slot = Some(text);
    }
    let mut out = Vec::new();
    for (version, (name, up, down)) in by_version {
        let label = format!("{version:04}_{name}");
        let up = up.ok_or_else(|| bad(&label, "has no .up.sql"))?;
        let down = down.ok_or_else(|| bad(&label, "has no .down.sql"))?;
        let min_server_version = match gate(&up) {
            None => None,
            Some(v) => {
                Some(ServerVersion::parse(v).ok_or_else(|| bad(&label, "bad min_server_version"))?)
            }
        };
        let checksum = hex(&Sha256::digest(up.as_bytes()));
        out.push(Migration {
            version,
            name,
            up,
            down,
            min_server_version,
            checksum,
        });
    }
    Ok(out)
}

fn gate(sql: &str) -> Option<&str> {
    sql.lines()
        .map(str::trim)
        .take_while(|l| l.starts_with("--") || l.is_empty())
        .find_map(|l| {
            l.trim_start_matches('-')
                .trim()
                .strip_prefix("min_server_version:")
        })
        .map(str::trim)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One step of applying a migration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Run this statement.
    Sql(String),
    /// Create the `Distributed` table `table` `ON CLUSTER` (unless it
    /// exists) over `<table>_local`, with the local tables' columns, sharded
    /// by `cityHash64(sharding_key)`.
    CreateDistributed {
        /// The table's name in the migration files.
        table: String,
        /// The first column of the table's sorting key (or `rand()`).
        sharding_key: String,
    },
    /// Drop and create again the `Distributed` table `table` `ON CLUSTER`,
    /// keeping its engine (and so its sharding key), with the columns
    /// `<table>_local` has now: after an `ALTER` of the local tables' columns.
    RecreateDistributed {
        /// The table's name in the migration files.
        table: String,
    },
}

/// Split a file into statements (ending with `;` at the end of a line),
/// without `--` comment lines, with `{db}` replaced, rewritten for a cluster
/// when one is named (see the module documentation).
pub fn render(sql: &str, db: &str, cluster: Option<&str>) -> Vec<Step> {
    let mut statements = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            statements.push(
                current
                    .trim()
                    .trim_end_matches(';')
                    .trim()
                    .replace("{db}", db),
            );
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        statements.push(current.trim().replace("{db}", db));
    }
    match cluster {
        None => statements.into_iter().map(Step::Sql).collect(),
        Some(c) => {
            let fed = view_targets(&statements, db);
            statements
                .iter()
                .flat_map(|stmt| for_cluster(stmt, db, c, &fed))
                .collect()
        }
    }
}

/// The tables a materialized view of these statements writes to (`TO
/// {db}.<table>`).
fn view_targets(statements: &[String], db: &str) -> Vec<String> {
    let view = format!("CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.");
    let to = format!(" TO {db}.");
    statements
        .iter()
        .filter(|s| s.starts_with(&view))
        .filter_map(|s| s.find(&to).map(|i| table_name(&s[i + to.len()..])))
        .collect()
}

/// Rewrite one statement for a cluster: replicated `_local` tables created
/// `ON CLUSTER`, with a `Distributed` table under the original name.
///
/// A table a materialized view feeds (`fed`) is sharded by `did` when it has
/// that column: the views run on each shard's local tables, whose rows are
/// sharded by `did`, so the rows they write sit on their account's shard; an
/// insert through the `Distributed` table (a migration's seeding copy) must
/// put its rows there too, or a key's versions would sit on two shards and
/// `FINAL` would keep one per shard.
fn for_cluster(stmt: &str, db: &str, cluster: &str, fed: &[String]) -> Vec<Step> {
    let create = format!("CREATE TABLE IF NOT EXISTS {db}.");
    let drop = format!("DROP TABLE IF EXISTS {db}.");
    let alter = format!("ALTER TABLE {db}.");
    if let Some(rest) = stmt.strip_prefix(&create) {
        let name = table_name(rest);
        let after = &rest[name.len()..];
        let local = format!("{name}_local");
        let zk = format!("'/clickhouse/tables/{{shard}}/{db}/{local}', '{{replica}}'");
        let body = after
            .replacen(
                "ENGINE = ReplacingMergeTree(",
                &format!("ENGINE = ReplicatedReplacingMergeTree({zk}, "),
                1,
            )
            .replacen(
                "ENGINE = MergeTree()",
                &format!("ENGINE = ReplicatedMergeTree({zk})"),
                1,
            );
        let has_did = after
            .split([',', '(', '\n'])
            .any(|col| col.trim_start().starts_with("did String"));
        let sharding_key = if fed.contains(&name) && has_did {
            "did".to_owned()
        } else {
            sharding_column(after).unwrap_or_else(|| "rand()".into())
        };
        return vec![
            Step::Sql(format!(
                "CREATE TABLE IF NOT EXISTS {db}.{local} ON CLUSTER {cluster}{body}"
            )),
            Step::CreateDistributed {
                table: name,
                sharding_key,
            },
        ];
    }
    let view = format!("CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.");
    if let Some(rest) = stmt.strip_prefix(&view) {
        // Created on every node, feeding the shard's local target from the
        // shard's local source: an insert on a replica triggers it there,
        // and the target's own replication copies the result.
        let name = table_name(rest);
        let body = to_local_tables(&rest[name.len()..], db);
        return vec![Step::Sql(format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{name} ON CLUSTER {cluster}{body}"
        ))];
    }
    let plain_view = format!("CREATE VIEW IF NOT EXISTS {db}.");
    if let Some(rest) = stmt.strip_prefix(&plain_view) {
        // A (plain) view reads the whole cluster: created on every server,
        // naming the `Distributed` tables as the file does.
        let name = table_name(rest);
        let body = &rest[name.len()..];
        return vec![Step::Sql(format!(
            "CREATE VIEW IF NOT EXISTS {db}.{name} ON CLUSTER {cluster}{body}"
        ))];
    }
    if let Some(name) = stmt.strip_prefix(&drop) {
        let name = name.trim();
        return vec![
            Step::Sql(format!(
                "DROP TABLE IF EXISTS {db}.{name} ON CLUSTER {cluster}"
            )),
            Step::Sql(format!(
                "DROP TABLE IF EXISTS {db}.{name}_local ON CLUSTER {cluster}"
            )),
        ];
    }
    if let Some(rest) = stmt.strip_prefix(&alter) {
        let name = table_name(rest);
        let change = &rest[name.len()..];
        let local = Step::Sql(format!(
            "ALTER TABLE {db}.{name}_local ON CLUSTER {cluster}{change}"
        ));
        // The Distributed table must have the local tables' columns, or
        // reads through it cannot name a new one; indexes, settings and
        // mutations concern the local tables only.
        const COLUMN_CHANGES: [&str; 4] = [
            "ADD COLUMN",
            "DROP COLUMN",
            "MODIFY COLUMN",
            "RENAME COLUMN",
        ];
        if COLUMN_CHANGES.iter().any(|c| change.contains(c)) && !codecs_only(change) {
            return vec![local, Step::RecreateDistributed { table: name }];
        }
        return vec![local];
    }
    vec![Step::Sql(stmt.to_string())]
}

/// Whether an `ALTER`'s change only sets or removes column codecs (`MODIFY
/// COLUMN c T CODEC(…)` with the column's type restated, or `MODIFY COLUMN c
/// REMOVE CODEC`): how the local tables store the columns, nothing the
/// `Distributed` table declares, so it is not re-created (which would lose
/// the blocks it has not sent yet).
fn codecs_only(change: &str) -> bool {
    let mut clauses = change.split("MODIFY COLUMN").skip(1).peekable();
    clauses.peek().is_some()
        && !["ADD COLUMN", "DROP COLUMN", "RENAME COLUMN"]
            .iter()
            .any(|c| change.contains(c))
        && clauses.all(|c| c.contains("CODEC"))
}

/// `(table, adds, column)` of `ALTER TABLE <db>.<table> [ON CLUSTER c]
/// ADD|DROP COLUMN [IF [NOT] EXISTS] <column> …`, `adds` true for `ADD`;
/// `None` for any other statement.
fn column_change(sql: &str, db: &str) -> Option<(String, bool, String)> {
    let rest = sql
        .strip_prefix("ALTER TABLE ")?
        .strip_prefix(db)?
        .strip_prefix('.')?;
    let table = table_name(rest);
    let mut rest = rest[table.len()..].trim_start();
    if let Some(r) = rest.strip_prefix("ON CLUSTER ") {
        rest = r.trim_start().split_once(' ')?.1.trim_start();
    }
    let (adds, rest) = if let Some(r) = rest.strip_prefix("ADD COLUMN ") {
        (true, r)
    } else {
        (false, rest.strip_prefix("DROP COLUMN ")?)
    };
    let rest = rest.trim_start();
    let rest = rest
        .strip_prefix("IF NOT EXISTS ")
        .or_else(|| rest.strip_prefix("IF EXISTS "))
        .unwrap_or(rest)
        .trim_start();
    // A column's name is made of the same characters as a table's.
    let column = table_name(rest);
    (!table.is_empty() && !column.is_empty()).then_some((table, adds, column))
}

/// The table name at the start of `rest` (letters, digits, `_`).
fn table_name(rest: &str) -> String {
    rest.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The first column of a table's `ORDER BY`, to shard on.
fn sharding_column(body: &str) -> Option<String> {
    let i = body.find("ORDER BY")?;
    let mut rest = body[i + "ORDER BY".len()..]
        .trim_start()
        .trim_start_matches('(');
    // The first plain column: a time bucket like `toStartOfHour(t)` would
    // send every row of an hour to one shard.
    loop {
        let col: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if col.is_empty() {
            return None;
        }
        let after = &rest[col.len()..];
        if !after.starts_with('(') {
            return Some(col);
        }
        // Skip the call and the comma after it.
        let mut depth = 0usize;
        let mut end = None;
        for (j, c) in after.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(j + 1);
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = after[end?..]
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
    }
}

/// `{db}.<name>` → `{db}.<name>_local` everywhere in `text` (a
/// materialized view on a cluster reads and writes the shard's own tables).
fn to_local_tables(text: &str, db: &str) -> String {
    let prefix = format!("{db}.");
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    while let Some(i) = rest.find(&prefix) {
        let (before, after) = rest.split_at(i + prefix.len());
        out.push_str(before);
        let name = table_name(after);
        out.push_str(&name);
        if !name.is_empty() {
            out.push_str("_local");
        }
        rest = &after[name.len()..];
    }
    out.push_str(rest);
    out
}

/// The oldest server whose `Distributed` tables may declare a
/// `MATERIALIZED` column: older ones send the computed value to the shards,
/// which refuse it (`Cannot insert column …, because it is MATERIALIZED
/// column`; fixed in ClickHouse 19.x, and 20.1 is the oldest newer release
/// skyhouse's gates name).
const DISTRIBUTED_MATERIALIZED_SINCE: ServerVersion = ServerVersion(20, 1, 0);

/// A column of a local table, from `system.columns`.
#[derive(Debug, Deserialize, clickhouse::Row)]
struct Column {
    name: String,
    #[serde(rename = "type")]
    type_: String,
    default_kind: String,
    default_expression: String,
}

/// The `Distributed` table's definition of a local table's column: as in the
/// local table, except that a `MATERIALIZED` column becomes `ALIAS` on
/// servers older than [`DISTRIBUTED_MATERIALIZED_SINCE`] (see the module
/// documentation).
fn distributed_column(c: &Column, server: ServerVersion) -> String {
    let name = format!("`{}`", c.name.replace('\\', "\\\\").replace('`', "\\`"));
    match c.default_kind.as_str() {
        "" => format!("{name} {}", c.type_),
        "MATERIALIZED" if server < DISTRIBUTED_MATERIALIZED_SINCE => {
            format!("{name} {} ALIAS {}", c.type_, c.default_expression)
        }
        kind => format!("{name} {} {kind} {}", c.type_, c.default_expression),
    }
}

/// What happened to a migration on this database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not applied.
    Pending,
    /// Applied.
    Applied,
    /// Recorded as skipped: the server is older than the migration needs.
    Skipped,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Pending => "pending",
            State::Applied => "applied",
            State::Skipped => "skipped",
        })
    }
}

/// A migration and its state, for `migrate version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The migration's number.
    pub version: u32,
    /// Its name.
    pub name: String,
    /// What happened to it.
    pub state: State,
    /// Why it was skipped, if it was.
    pub note: String,
}

/// The columns of `schema_migrations`.
const BOOKKEEPING_COLUMNS: &str = "version UInt32, name String, checksum String, state String, \
     server_version String, applied_at DateTime, seq UInt64";

#[derive(Debug, Deserialize, clickhouse::Row)]
struct Recorded {
    version: u32,
    name: String,
    checksum: String,
    state: String,
}

/// Shortest receive timeout of a migration statement.
const MIGRATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(960);

/// How long a DDL statement ON CLUSTER may wait for every server, seconds
/// (`distributed_ddl_task_timeout`; the server's default is 180). Each
/// server runs the cluster's DDL queue one task at a time, and an `ALTER` of
/// a replicated table waits for both replicas: with other migrations or
/// merges in the queue on a busy machine a task has waited past 180 s while
/// every server was up, and the migration then failed half-way.
const CLUSTER_DDL_TIMEOUT_SECS: u64 = 900;

/// Applies migrations to one database.
#[derive(Debug)]
pub struct Migrator<'a> {
    ch: &'a ClickHouse,
    migrations: Vec<Migration>,
}

impl<'a> Migrator<'a> {
    /// A migrator for `ch`'s database with the given migration set.
    pub fn new(ch: &'a ClickHouse, migrations: Vec<Migration>) -> Self {
        Migrator { ch, migrations }
    }

    /// Whether `sql`, an `ALTER TABLE … ADD COLUMN c` (or `DROP COLUMN c`),
    /// was already made: the table has (has no) column `c`. A migration
    /// interrupted after such a statement (the server restarted, the
    /// connection dropped, ^C) is run again from its first statement, and
    /// ClickHouse 18.16 has no `ADD COLUMN IF NOT EXISTS`: without this, the
    /// second run failed on the column it had added. On a cluster the
    /// statement went into the `ON CLUSTER` queue once and every server runs
    /// it from there, some maybe later (a restarted one): one shard's replica
    /// that has (has no longer) the column is enough, or the statement would
    /// be queued twice and its second run fail everywhere.
    async fn column_change_done(&self, sql: &str) -> Result<bool, StoreError> {
        let Some((table, adds, column)) = column_change(sql, self.ch.database()) else {
            return Ok(false);
        };
        let (columns, shards) = match self.ch.cluster() {
            None => ("system.columns".to_owned(), 1),
            Some(c) => {
                let shards: u64 = self
                    .ch
                    .fetch_one(
                        "reading system.clusters",
                        &format!(
                            "SELECT count(DISTINCT shard_num) FROM system.clusters WHERE cluster = {}",
                            crate::literal(c)
                        ),
                    )
                    .await?;
                (
                    format!("cluster({}, system, columns)", crate::literal(c)),
                    shards,
                )
            }
        };
        // One row per shard (a replica of each) whose table has the column.
        let with: u64 = self
            .ch
            .fetch_one(
                "reading system.columns",
                &format!(
                    "SELECT count() FROM {columns} WHERE database = {} AND table = {} AND name = {}",
                    crate::literal(self.ch.database()),
                    crate::literal(&table),
                    crate::literal(&column)
                ),
            )
            .await?;
        Ok(if adds { with > 0 } else { with < shards })
    }

    async fn exec(&self, sql: &str) -> Result<(), StoreError> {
        // DDL ON CLUSTER waits for every replica (up to
        // distributed_ddl_task_timeout): give it at least that long.
        let mut ch = self
            .ch
            .with_receive_timeout(self.ch.timeouts().receive.max(MIGRATION_TIMEOUT));
        if self.ch.cluster().is_some() {
            ch = ch.with_statement_setting(
                "distributed_ddl_task_timeout",
                CLUSTER_DDL_TIMEOUT_SECS.to_string(),
            );
        }
        ch.execute(
            crate::one_line(sql)
                .get(..80)
                .unwrap_or("migration statement"),
            sql,
        )
        .await
    }

    async fn ensure_bookkeeping(&self) -> Result<(), StoreError> {
        let db = self.ch.database();
        let Some(cluster) = self.ch.cluster() else {
            self.exec(&format!("CREATE DATABASE IF NOT EXISTS {db}"))
                .await?;
            return self
                .exec(&format!(
                    "CREATE TABLE IF NOT EXISTS {db}.schema_migrations ({BOOKKEEPING_COLUMNS}) \
                     ENGINE = ReplacingMergeTree(seq) ORDER BY version"
                ))
                .await;
        };
        self.exec(&format!(
            "CREATE DATABASE IF NOT EXISTS {db} ON CLUSTER {cluster}"
        ))
        .await?;
        // One replicated table on every server (one ZooKeeper path; replica
        // names made unique with the shard, should {replica} repeat across
        // shards), so that any server knows what was applied.
        self.exec(&format!(
            "CREATE TABLE IF NOT EXISTS {db}.schema_migrations ON CLUSTER {cluster} \
             ({BOOKKEEPING_COLUMNS}) ENGINE = ReplicatedReplacingMergeTree(\
             '/clickhouse/tables/all/{db}/schema_migrations', '{{shard}}-{{replica}}', seq) \
             ORDER BY version"
        ))
        .await?;
        // A table made before the cluster was named (or by a skyhouse that
        // kept it on one server) would hide what other servers know.
        let engine: String = self
            .ch
            .fetch_one(
                "reading schema_migrations' engine",
                &format!(
                    "SELECT engine FROM system.tables WHERE database = '{db}' AND name = 'schema_migrations'"
                ),
            )
            .await?;
        if !engine.starts_with("Replicated") {
            return Err(StoreError::Migration(format!(
                "{db}.schema_migrations is a {engine} table, not replicated on cluster {cluster}: \
                 it was made without --clickhouse-cluster (see \"Running on a cluster\" in the README)"
            )));
        }
        Ok(())
    }

    async fn recorded(&self) -> Result<Vec<Recorded>, StoreError> {
        let db = self.ch.database();
        self.ch
            .fetch_all::<Recorded>(
                "reading schema_migrations",
                &format!(
                    "SELECT version, name, checksum, state FROM {db}.schema_migrations FINAL \
                     WHERE state != 'rolled_back' ORDER BY version"
                ),
            )
            .await
    }

    async fn record(
        &self,
        m: &Migration,
        state: &str,
        server: ServerVersion,
    ) -> Result<(), StoreError> {
        let db = self.ch.database();
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        self.exec(&format!(
            "INSERT INTO {db}.schema_migrations (version, name, checksum, state, server_version, applied_at, seq) \
             VALUES ({}, '{}', '{}', '{state}', '{server}', now(), {seq})",
            m.version,
            m.name.replace('\'', ""),
            m.checksum
        ))
        .await
    }

    /// Check every applied migration still has its recorded checksum.
    fn check_checksums(&self, recorded: &[Recorded]) -> Result<(), StoreError> {
        for r in recorded.iter().filter(|r| r.state == "applied") {
            if let Some(m) = self.migrations.iter().find(|m| m.version == r.version) {
                if m.checksum != r.checksum {
                    return Err(StoreError::Migration(format!(
                        "migration {:04}_{} was applied with checksum {} but its file now has {}; \
                         add a new migration instead of editing an applied one",
                        m.version,
                        m.name,
                        &r.checksum[..12.min(r.checksum.len())],
                        &m.checksum[..12]
                    )));
                }
            }
        }
        Ok(())
    }

    /// Carry out one rendered step.
    async fn apply(&self, step: &Step, server: ServerVersion) -> Result<(), StoreError> {
        match step {
            Step::Sql(sql) => {
                if self.column_change_done(sql).await? {
                    tracing::info!(statement = %crate::one_line(sql), "Column change already made; skipped.");
                    return Ok(());
                }
                self.exec(sql).await
            }
            Step::CreateDistributed {
                table,
                sharding_key,
            } => {
                // Refuses another kind of table of that name; an existing
                // Distributed one stays as it is (IF NOT EXISTS, on every server).
                self.distributed_engine(table).await?;
                let (db, cluster) = (self.ch.database(), self.cluster()?);
                let engine = format!(
                    "Distributed({cluster}, {db}, {table}_local, cityHash64({sharding_key}))"
                );
                self.create_distributed(table, &engine, server).await
            }
            Step::RecreateDistributed { table } => {
                let db = self.ch.database();
                let engine = self.distributed_engine(table).await?.ok_or_else(|| {
                    StoreError::Migration(format!(
                        "{db}.{table} is not a Distributed table: cannot give it the new columns of {db}.{table}_local"
                    ))
                })?;
                let cluster = self.cluster()?;
                self.exec(&format!(
                    "DROP TABLE IF EXISTS {db}.{table} ON CLUSTER {cluster}"
                ))
                .await?;
                self.create_distributed(table, &engine, server).await
            }
        }
    }

    fn cluster(&self) -> Result<&str, StoreError> {
        self.ch.cluster().ok_or_else(|| {
            StoreError::Migration("a Distributed table needs --clickhouse-cluster".into())
        })
    }

    /// The full engine of the `Distributed` table `table` (`Distributed(…)`),
    /// or `None` if there is no table of that name.
    async fn distributed_engine(&self, table: &str) -> Result<Option<String>, StoreError> {
        let db = self.ch.database();
        let found: Vec<(String, String)> = self
            .ch
            .fetch_all(
                "reading system.tables",
                &format!(
                    "SELECT engine, engine_full FROM system.tables WHERE database = '{db}' AND name = '{table}'"
                ),
            )
            .await?;
        match found.into_iter().next() {
            None => Ok(None),
            Some((engine, full)) if engine == "Distributed" => Ok(Some(full)),
            Some((engine, _)) => Err(StoreError::Migration(format!(
                "{db}.{table} is a {engine} table, where cluster {} needs a Distributed one",
                self.ch.cluster().unwrap_or_default()
            ))),
        }
    }

    /// `CREATE TABLE … ON CLUSTER` the `Distributed` table `table` with the
    /// columns of `<table>_local` on this server.
    async fn create_distributed(
        &self,
        table: &str,
        engine: &str,
        server: ServerVersion,
    ) -> Result<(), StoreError> {
        let (db, cluster) = (self.ch.database(), self.cluster()?);
        let columns: Vec<Column> = self
            .ch
            .fetch_all(
                "reading system.columns",
                &format!(
                    "SELECT name, type, default_kind, default_expression FROM system.columns \
                     WHERE database = '{db}' AND table = '{table}_local'"
                ),
            )
            .await?;
        if columns.is_empty() {
            return Err(StoreError::Migration(format!(
                "{db}.{table}_local has no columns on this server: cannot make {db}.{table}"
            )));
        }
        let columns: Vec<String> = columns
            .iter()
            .map(|c| distributed_column(c, server))
            .collect();
        self.exec(&format!(
            "CREATE TABLE IF NOT EXISTS {db}.{table} ON CLUSTER {cluster} ({}) ENGINE = {engine}",
            columns.join(", ")
        ))
        .await
    }

    /// Apply every pending migration in order. Returns the statuses after.
    pub async fn up(&self) -> Result<Vec<Status>, StoreError> {
        self.ensure_bookkeeping().await?;
        let server = self.ch.server_version().await?;
        let recorded = self.recorded().await?;
        self.check_checksums(&recorded)?;
        for m in &self.migrations {
            if recorded.iter().any(|r| r.version == m.version) {
                continue;
            }
            if let Some(min) = m.min_server_version {
                if server < min {
                    tracing::info!(version = m.version, name = %m.name, %min, %server, "Skipping migration: server too old.");
                    self.record(m, "skipped", server).await?;
                    continue;
                }
            }
            for step in render(&m.up, self.ch.database(), self.ch.cluster()) {
                self.apply(&step, server).await.map_err(|e| {
                    StoreError::Migration(format!("migration {:04}_{} up: {e}", m.version, m.name))
                })?;
            }
            self.record(m, "applied", server).await?;
            tracing::info!(version = m.version, name = %m.name, "Applied migration.");
        }
        self.status().await
    }

    /// Roll back the last `n` applied migrations, newest first.
    pub async fn down(&self, n: usize) -> Result<Vec<Status>, StoreError> {
        self.ensure_bookkeeping().await?;
        let server = self.ch.server_version().await?;
        let recorded = self.recorded().await?;
        self.check_checksums(&recorded)?;
        // Skipped migrations above the ones rolled back are reset too (they
        // count for nothing: nothing of theirs was applied).
        let mut rolled = 0;
        for r in recorded.iter().rev() {
            if rolled == n {
                break;
            }
            let m = self
                .migrations
                .iter()
                .find(|m| m.version == r.version)
                .ok_or_else(|| {
                    StoreError::Migration(format!(
                        "migration {:04}_{} is applied but its files are gone; cannot roll it back",
                        r.version, r.name
                    ))
                })?;
            if r.state == "applied" {
                for step in render(&m.down, self.ch.database(), self.ch.cluster()) {
                    self.apply(&step, server).await.map_err(|e| {
                        StoreError::Migration(format!(
                            "migration {:04}_{} down: {e}",
                            m.version, m.name
                        ))
                    })?;
                }
                rolled += 1;
            }
            self.record(m, "rolled_back", server).await?;
            tracing::info!(version = m.version, name = %m.name, "Rolled back migration.");
        }
        self.status().await
    }

    /// Each known migration and its state.
    pub async fn status(&self) -> Result<Vec<Status>, StoreError> {
        self.ensure_bookkeeping().await?;
        let recorded = self.recorded().await?;
        let mut out: Vec<Status> = self
            .migrations
            .iter()
            .map(|m| {
                let r = recorded.iter().find(|r| r.version == m.version);
                let state = match r.map(|r| r.state.as_str()) {
                    Some("applied") => State::Applied,
                    Some("skipped") => State::Skipped,
                    _ => State::Pending,
                };
                let note = match (state, m.min_server_version) {
                    (State::Skipped, Some(v)) => format!("needs ClickHouse >= {v}"),
                    _ => String::new(),
                };
                Status {
                    version: m.version,
                    name: m.name.clone(),
                    state,
                    note,
                }
            })
            .collect();
        // Applied versions whose files are gone are reported too.
        for r in recorded
            .iter()
            .filter(|r| !self.migrations.iter().any(|m| m.version == r.version))
        {
            out.push(Status {
                version: r.version,
                name: r.name.clone(),
                state: State::Applied,
                note: "file missing".into(),
            });
        }
        out.sort_by_key(|s| s.version);
        Ok(out)
    }
}

/// Write `NNNN_name.up.sql` / `.down.sql` for the next number into `dir`.
pub fn create(dir: &Path, name: &str) -> Result<(String, String), StoreError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(StoreError::Migration(format!(
            "migration name {name:?} must be lower-case letters, digits and _"
        )));
    }
    let next = load_dir(dir)?.iter().map(|m| m.version).max().unwrap_or(0) + 1;
    let up = dir.join(format!("{next:04}_{name}.up.sql"));
    let down = dir.join(format!("{next:04}_{name}.down.sql"));
    let write = |p: &Path, text: &str| {
        std::fs::write(p, text).map_err(|e| StoreError::Migration(format!("{}: {e}", p.display())))
    };
    write(&up, "-- Statements end with ; at the end of a line. {db} is the database.\n-- min_server_version: (optional)\n")?;
    write(&down, "-- Undo the up file, statement by statement.\n")?;
    Ok((up.display().to_string(), down.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_migrations_parse_and_pair() {
        let all = embedded().expect("embedded");
        assert!(all.len() >= 2, "{all:?}");
        assert!(all.windows(2).all(|w| w[0].version < w[1].version));
        assert_eq!(all[0].version, 1);
    }

    fn sql(s: &str) -> Step {
        Step::Sql(s.to_string())
    }

    #[test]
    fn render_splits_and_substitutes() {
        let text = "-- comment\nCREATE TABLE IF NOT EXISTS {db}.t (\n  did String\n) ENGINE = ReplacingMergeTree(version)\nORDER BY (did, rkey);\n\nDROP TABLE IF EXISTS {db}.u;\n";
        let stmts = render(text, "sky", None);
        assert_eq!(stmts.len(), 2);
        assert!(
            matches!(&stmts[0], Step::Sql(s) if s.starts_with("CREATE TABLE IF NOT EXISTS sky.t (")),
            "{stmts:?}"
        );
        assert_eq!(stmts[1], sql("DROP TABLE IF EXISTS sky.u"));
    }

    #[test]
    fn cluster_mode_points_views_at_local_tables_and_shards_on_a_column() {
        let text = "CREATE TABLE IF NOT EXISTS {db}.r (t DateTime, did String, rkey String) ENGINE = MergeTree()\nORDER BY (toStartOfHour(t), did, rkey);\nCREATE MATERIALIZED VIEW IF NOT EXISTS {db}.v TO {db}.r AS SELECT now() AS t, did, rkey FROM {db}.likes WHERE did != '';";
        let s = render(text, "sky", Some("main"));
        assert_eq!(
            s[1],
            Step::CreateDistributed {
                table: "r".into(),
                sharding_key: "did".into()
            }
        );
        assert_eq!(
            s[2],
            sql("CREATE MATERIALIZED VIEW IF NOT EXISTS sky.v ON CLUSTER main TO sky.r_local AS SELECT now() AS t, did, rkey FROM sky.likes_local WHERE did != ''")
        );
        assert_eq!(
            sharding_column("ORDER BY (toStartOfHour(toDate(t)), x)"),
            Some("x".into())
        );
        assert_eq!(sharding_column("ORDER BY did"), Some("did".into()));
        // A plain view reads the Distributed tables, on every server.
        let s = render(
            "CREATE VIEW IF NOT EXISTS {db}.posts_live AS SELECT * FROM {db}.posts FINAL WHERE deleted = 0;",
            "sky",
            Some("main"),
        );
        assert_eq!(
            s,
            [sql("CREATE VIEW IF NOT EXISTS sky.posts_live ON CLUSTER main AS SELECT * FROM sky.posts FINAL WHERE deleted = 0")]
        );
    }

    #[test]
    fn cluster_mode_shards_a_view_target_by_did_like_its_source() {
        // Ordered by collection first: a table a view feeds is still
        // sharded by did (where the view's rows are), one no view feeds on
        // its first column.
        let table = |name: &str| {
            format!("CREATE TABLE IF NOT EXISTS {{db}}.{name} (\n    collection String,\n    did String,\n    rkey String\n) ENGINE = MergeTree()\nORDER BY (collection, did, rkey);\n")
        };
        let text = format!(
            "{}{}CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.v TO {{db}}.fed AS SELECT collection, did, rkey FROM {{db}}.records;",
            table("fed"),
            table("plain")
        );
        let s = render(&text, "sky", Some("main"));
        let keys: Vec<(String, String)> = s
            .iter()
            .filter_map(|step| match step {
                Step::CreateDistributed {
                    table,
                    sharding_key,
                } => Some((table.clone(), sharding_key.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            keys,
            [
                ("fed".to_owned(), "did".to_owned()),
                ("plain".to_owned(), "collection".to_owned())
            ]
        );
    }

    #[test]
    fn cluster_mode_creates_local_and_distributed_tables() {
        let text = "CREATE TABLE IF NOT EXISTS {db}.t (\n  did String, version UInt64\n) ENGINE = ReplacingMergeTree(version)\nORDER BY (did, rkey);\nDROP TABLE IF EXISTS {db}.t;\nALTER TABLE {db}.t ADD COLUMN x String;\nALTER TABLE {db}.t ADD INDEX i x TYPE minmax GRANULARITY 1;\nALTER TABLE {db}.t DROP COLUMN x;\nCREATE TABLE IF NOT EXISTS {db}.d (at DateTime, did String) ENGINE = MergeTree()\nORDER BY (at, did);";
        let s = render(text, "sky", Some("main"));
        assert_eq!(s.len(), 11, "{s:#?}");
        let Step::Sql(local) = &s[0] else {
            panic!("{s:?}")
        };
        assert!(
            local.starts_with("CREATE TABLE IF NOT EXISTS sky.t_local ON CLUSTER main ("),
            "{local}"
        );
        assert!(
            local.contains("ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/sky/t_local', '{replica}', version)"),
            "{local}"
        );
        // Sharded on the first sorting-key column only: every version of a
        // key (same did) lands on the same shard.
        assert_eq!(
            s[1],
            Step::CreateDistributed {
                table: "t".into(),
                sharding_key: "did".into()
            }
        );
        assert_eq!(s[2], sql("DROP TABLE IF EXISTS sky.t ON CLUSTER main"));
        assert_eq!(
            s[3],
            sql("DROP TABLE IF EXISTS sky.t_local ON CLUSTER main")
        );
        let recreate = Step::RecreateDistributed { table: "t".into() };
        assert_eq!(
            s[4..8],
            [
                sql("ALTER TABLE sky.t_local ON CLUSTER main ADD COLUMN x String"),
                recreate.clone(),
                sql("ALTER TABLE sky.t_local ON CLUSTER main ADD INDEX i x TYPE minmax GRANULARITY 1"),
                sql("ALTER TABLE sky.t_local ON CLUSTER main DROP COLUMN x"),
            ]
        );
        assert_eq!(s[8], recreate);
        let Step::Sql(append_only) = &s[9] else {
            panic!("{s:?}")
        };
        assert!(
            append_only.contains("ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/sky/d_local', '{replica}')"),
            "{append_only}"
        );
        assert_eq!(
            s[10],
            Step::CreateDistributed {
                table: "d".into(),
                sharding_key: "at".into()
            }
        );
    }

    #[test]
    fn codec_changes_alter_the_local_tables_only() {
        let steps = |stmt: &str| for_cluster(stmt, "sky", "main", &[]);
        let sql = |s: &str| Step::Sql(s.into());
        assert_eq!(
            steps("ALTER TABLE sky.t MODIFY COLUMN did String CODEC(ZSTD(3)), MODIFY COLUMN version UInt64 CODEC(Delta(8), ZSTD(3))"),
            [sql("ALTER TABLE sky.t_local ON CLUSTER main MODIFY COLUMN did String CODEC(ZSTD(3)), MODIFY COLUMN version UInt64 CODEC(Delta(8), ZSTD(3))")]
        );
        assert_eq!(
            steps("ALTER TABLE sky.t MODIFY COLUMN did REMOVE CODEC"),
            [sql(
                "ALTER TABLE sky.t_local ON CLUSTER main MODIFY COLUMN did REMOVE CODEC"
            )]
        );
        // A type change, or a codec beside another column change, still
        // re-creates the Distributed table.
        let recreate = Step::RecreateDistributed { table: "t".into() };
        for stmt in [
            "ALTER TABLE sky.t MODIFY COLUMN x UInt64",
            "ALTER TABLE sky.t MODIFY COLUMN did String CODEC(ZSTD(3)), MODIFY COLUMN x UInt64",
            "ALTER TABLE sky.t MODIFY COLUMN did String CODEC(ZSTD(3)), ADD COLUMN y String",
        ] {
            assert_eq!(steps(stmt).last(), Some(&recreate), "{stmt}");
        }
    }

    #[test]
    fn distributed_columns_keep_defaults_and_hide_materialized_from_old_servers() {
        let column = |name: &str, kind: &str, expression: &str| Column {
            name: name.into(),
            type_: "DateTime".into(),
            default_kind: kind.into(),
            default_expression: expression.into(),
        };
        let old = ServerVersion(18, 16, 1);
        let new = ServerVersion(24, 8, 0);
        assert_eq!(
            distributed_column(&column("at", "", ""), old),
            "`at` DateTime"
        );
        let materialized = column("inserted_at", "MATERIALIZED", "now()");
        assert_eq!(
            distributed_column(&materialized, old),
            "`inserted_at` DateTime ALIAS now()"
        );
        assert_eq!(
            distributed_column(&materialized, new),
            "`inserted_at` DateTime MATERIALIZED now()"
        );
        assert_eq!(
            distributed_column(&column("d", "DEFAULT", "now()"), old),
            "`d` DateTime DEFAULT now()"
        );
        assert_eq!(
            distributed_column(&column("we`ird", "", ""), old),
            "`we\\`ird` DateTime"
        );
    }

    #[test]
    fn column_changes_are_recognised_with_and_without_a_cluster() {
        assert_eq!(
            column_change(
                "ALTER TABLE sky.posts ADD COLUMN action UInt8 DEFAULT 0",
                "sky"
            ),
            Some(("posts".into(), true, "action".into()))
        );
        assert_eq!(
            column_change(
                "ALTER TABLE sky.threadgates_local ON CLUSTER main DROP COLUMN action",
                "sky"
            ),
            Some(("threadgates_local".into(), false, "action".into()))
        );
        assert_eq!(
            column_change("ALTER TABLE sky.t ADD COLUMN IF NOT EXISTS x String", "sky"),
            Some(("t".into(), true, "x".into()))
        );
        for other in [
            "ALTER TABLE sky.t ADD INDEX i x TYPE minmax GRANULARITY 1",
            "ALTER TABLE other.t ADD COLUMN x String",
            "CREATE TABLE IF NOT EXISTS sky.t (x String) ENGINE = Log",
            "ALTER TABLE sky.t MODIFY COLUMN x UInt8",
        ] {
            assert_eq!(column_change(other, "sky"), None, "{other}");
        }
    }

    #[test]
    fn gates_and_bad_files() {
        let files = vec![
            (
                "0001_a.up.sql".to_string(),
                "-- min_server_version: 20.1\nSELECT 1;".to_string(),
            ),
            ("0001_a.down.sql".to_string(), "SELECT 1;".to_string()),
        ];
        let m = parse_files(files).expect("parse");
        assert_eq!(m[0].min_server_version, Some(ServerVersion(20, 1, 0)));
        let missing_down = vec![("0002_b.up.sql".to_string(), String::new())];
        let e = parse_files(missing_down).expect_err("no down");
        assert!(
            e.to_string().contains("0002_b") && e.to_string().contains(".down.sql"),
            "{e}"
        );
        let clash = vec![
            ("0003_x.up.sql".to_string(), String::new()),
            ("0003_y.up.sql".to_string(), String::new()),
        ];
        assert!(parse_files(clash).is_err());
        assert!(ServerVersion::parse("18.16.1").expect("v") < ServerVersion(20, 1, 0));
        assert_eq!(
            ServerVersion::parse("26.1.2.5"),
            Some(ServerVersion(26, 1, 2))
        );
    }
}
