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
//! are skipped). With a cluster name, tables are created `ON CLUSTER` as
//! replicated `<name>_local` tables behind `Distributed` tables named as in
//! the files, sharded by their first sorting-key column.

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

/// Split a file into statements (ending with `;` at the end of a line),
/// without `--` comment lines, with `{db}` replaced, rewritten for a cluster
/// when one is named.
pub fn render(sql: &str, db: &str, cluster: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            let stmt = current
                .trim()
                .trim_end_matches(';')
                .trim()
                .replace("{db}", db);
            current.clear();
            match cluster {
                None => out.push(stmt),
                Some(c) => out.extend(for_cluster(&stmt, db, c)),
            }
        }
    }
    if !current.trim().is_empty() {
        let stmt = current.trim().replace("{db}", db);
        match cluster {
            None => out.push(stmt),
            Some(c) => out.extend(for_cluster(&stmt, db, c)),
        }
    }
    out
}

/// Rewrite one statement for a cluster: replicated `_local` tables created
/// `ON CLUSTER`, with a `Distributed` table under the original name.
fn for_cluster(stmt: &str, db: &str, cluster: &str) -> Vec<String> {
    let create = format!("CREATE TABLE IF NOT EXISTS {db}.");
    let drop = format!("DROP TABLE IF EXISTS {db}.");
    let alter = format!("ALTER TABLE {db}.");
    if let Some(rest) = stmt.strip_prefix(&create) {
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
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
        let shard_key = sharding_column(after).unwrap_or_else(|| "rand()".into());
        return vec![
            format!("CREATE TABLE IF NOT EXISTS {db}.{local} ON CLUSTER {cluster}{body}"),
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.{name} ON CLUSTER {cluster} AS {db}.{local} \
                 ENGINE = Distributed({cluster}, {db}, {local}, cityHash64({shard_key}))"
            ),
        ];
    }
    if let Some(name) = stmt.strip_prefix(&drop) {
        let name = name.trim();
        return vec![
            format!("DROP TABLE IF EXISTS {db}.{name} ON CLUSTER {cluster}"),
            format!("DROP TABLE IF EXISTS {db}.{name}_local ON CLUSTER {cluster}"),
        ];
    }
    if let Some(rest) = stmt.strip_prefix(&alter) {
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let change = &rest[name.len()..];
        let local = format!("ALTER TABLE {db}.{name}_local ON CLUSTER {cluster}{change}");
        // A column must also be added to (dropped from) the Distributed
        // table, or reads through it cannot name it; indexes and the like
        // exist on the local tables only.
        let trimmed = change.trim_start();
        if trimmed.starts_with("ADD COLUMN") || trimmed.starts_with("DROP COLUMN") {
            let distributed = format!("ALTER TABLE {db}.{name} ON CLUSTER {cluster}{change}");
            // Add to the local tables first; drop from the Distributed one first.
            return if trimmed.starts_with("ADD") {
                vec![local, distributed]
            } else {
                vec![distributed, local]
            };
        }
        return vec![local];
    }
    vec![stmt.to_string()]
}

/// The first column of a table's `ORDER BY`, to shard on.
fn sharding_column(body: &str) -> Option<String> {
    let i = body.find("ORDER BY")?;
    let rest = body[i + "ORDER BY".len()..]
        .trim_start()
        .trim_start_matches('(');
    let col: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!col.is_empty()).then_some(col)
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

#[derive(Debug, Deserialize, clickhouse::Row)]
struct Recorded {
    version: u32,
    name: String,
    checksum: String,
    state: String,
}

/// Shortest receive timeout of a migration statement.
const MIGRATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

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

    async fn exec(&self, sql: &str) -> Result<(), StoreError> {
        // DDL ON CLUSTER waits for every replica (up to the server's
        // distributed_ddl_task_timeout, 180 s): give it at least that long.
        let ch = self
            .ch
            .with_receive_timeout(self.ch.timeouts().receive.max(MIGRATION_TIMEOUT));
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
        let on_cluster = self
            .ch
            .cluster()
            .map(|c| format!(" ON CLUSTER {c}"))
            .unwrap_or_default();
        self.exec(&format!("CREATE DATABASE IF NOT EXISTS {db}{on_cluster}"))
            .await?;
        self.exec(&format!(
            "CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, name String, \
             checksum String, state String, server_version String, applied_at DateTime, seq UInt64) \
             ENGINE = ReplacingMergeTree(seq) ORDER BY version"
        ))
        .await
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
            for stmt in render(&m.up, self.ch.database(), self.ch.cluster()) {
                self.exec(&stmt).await.map_err(|e| {
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
                for stmt in render(&m.down, self.ch.database(), self.ch.cluster()) {
                    self.exec(&stmt).await.map_err(|e| {
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

    #[test]
    fn render_splits_and_substitutes() {
        let sql = "-- comment\nCREATE TABLE IF NOT EXISTS {db}.t (\n  did String\n) ENGINE = ReplacingMergeTree(version)\nORDER BY (did, rkey);\n\nDROP TABLE IF EXISTS {db}.u;\n";
        let stmts = render(sql, "sky", None);
        assert_eq!(stmts.len(), 2);
        assert!(stmts[0].starts_with("CREATE TABLE IF NOT EXISTS sky.t ("));
        assert_eq!(stmts[1], "DROP TABLE IF EXISTS sky.u");
    }

    #[test]
    fn cluster_mode_creates_local_and_distributed_tables() {
        let sql = "CREATE TABLE IF NOT EXISTS {db}.t (\n  did String, version UInt64\n) ENGINE = ReplacingMergeTree(version)\nORDER BY (did, rkey);\nDROP TABLE IF EXISTS {db}.t;\nALTER TABLE {db}.t ADD COLUMN x String;\nALTER TABLE {db}.t ADD INDEX i x TYPE minmax GRANULARITY 1;\nALTER TABLE {db}.t DROP COLUMN x;";
        let s = render(sql, "sky", Some("main"));
        assert_eq!(s.len(), 9, "{s:#?}");
        assert!(
            s[0].starts_with("CREATE TABLE IF NOT EXISTS sky.t_local ON CLUSTER main ("),
            "{}",
            s[0]
        );
        assert!(
            s[0].contains("ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/sky/t_local', '{replica}', version)"),
            "{}",
            s[0]
        );
        assert_eq!(
            s[1],
            "CREATE TABLE IF NOT EXISTS sky.t ON CLUSTER main AS sky.t_local ENGINE = Distributed(main, sky, t_local, cityHash64(did))"
        );
        assert_eq!(s[2], "DROP TABLE IF EXISTS sky.t ON CLUSTER main");
        assert_eq!(s[3], "DROP TABLE IF EXISTS sky.t_local ON CLUSTER main");
        assert_eq!(
            s[4..],
            [
                "ALTER TABLE sky.t_local ON CLUSTER main ADD COLUMN x String",
                "ALTER TABLE sky.t ON CLUSTER main ADD COLUMN x String",
                "ALTER TABLE sky.t_local ON CLUSTER main ADD INDEX i x TYPE minmax GRANULARITY 1",
                "ALTER TABLE sky.t ON CLUSTER main DROP COLUMN x",
                "ALTER TABLE sky.t_local ON CLUSTER main DROP COLUMN x",
            ]
        );
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
