//! ClickHouse for skyhouse: the connection, the migrations, the batch writer
//! and the queries the services read with.
//!
//! Data flows in from `skyhouse-transform` rows; the writer acknowledges each
//! batch with the highest source position it holds, and only then may the
//! pipeline move its cursor. Works against ClickHouse 18.16 (what Debian
//! ships, what the tests use) and current releases: no server-side query
//! parameters, no settings 18.16 does not know, and the client's schema
//! validation off (18.16 lacks `RowBinaryWithNamesAndTypes`).
#![deny(missing_docs)]

use std::time::Duration;

pub mod admin;
pub mod aggregates;
pub mod cleanup;
pub mod counts;
mod error;
pub mod explorer;
pub mod feeds;
pub mod hosts;
pub mod identities;
pub mod keys;
pub mod migrate;
pub mod queries;
pub mod repos;
pub mod retry;
pub mod search;
pub mod sql;
pub mod stats;
pub use sql::{literal, literal_array};
pub mod writer;

pub use clickhouse;
pub use error::{
    code_kind, one_line, parse_code, CodeKind, RetryReason, StoreError, CODES, OUTAGE_CODES,
};
pub use retry::{Retry, WriteProgress};

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ClickHouseConfig {
    /// HTTP endpoint, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    /// User name (`default` if empty).
    pub user: String,
    /// Password (never logged).
    pub password: String,
    /// Database holding skyhouse's tables.
    pub database: String,
    /// Cluster name for `ON CLUSTER` DDL and `Distributed` tables, if any.
    /// With one, every insert (and `INSERT … SELECT`) through a
    /// `Distributed` table is synchronous (`insert_distributed_sync = 1`):
    /// it returns once each shard it touches has stored its rows, so an
    /// acknowledged batch is on its shards, never only in a queue of the
    /// server that received it.
    pub cluster: Option<String>,
    /// How many replicas of a shard must have an inserted block before the
    /// insert returns (ClickHouse's `insert_quorum`); `None`: the one replica
    /// that received it (the others copy it within moments). Needs a cluster.
    pub insert_quorum: Option<u32>,
    /// Connect, send and receive timeouts of every statement.
    pub timeouts: Timeouts,
}

/// How long any one exchange with ClickHouse may take. A stalled socket
/// becomes a [`RetryReason::Timeout`] error the caller retries, never a hang.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing a TCP connection. Default 5 s.
    pub connect: Duration,
    /// Handing one chunk of an INSERT body to the socket (a server that
    /// stops reading). Default 30 s.
    pub send: Duration,
    /// The whole answer to a statement, or to an INSERT once its body is
    /// sent. Default 60 s; maintenance statements that read a window of a
    /// large table may need more (`--clickhouse-receive-timeout-secs`).
    pub receive: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            send: Duration::from_secs(30),
            receive: Duration::from_secs(60),
        }
    }
}

impl ClickHouseConfig {
    /// A server without authentication and no cluster: the local servers of
    /// `just up`, tests and benches.
    pub fn local(url: &str, database: &str) -> ClickHouseConfig {
        ClickHouseConfig {
            url: url.to_owned(),
            user: String::new(),
            password: String::new(),
            database: database.to_owned(),
            cluster: None,
            insert_quorum: None,
            timeouts: Timeouts::default(),
        }
    }

    /// Check the settings before any I/O; the error names the setting.
    pub fn validate(&self) -> Result<(), StoreError> {
        if !self.url.starts_with("http://") {
            return Err(StoreError::Config(format!(
                "ClickHouse address {:?} must be an http:// URL (use a TLS-terminating proxy for https)",
                self.url
            )));
        }
        let ident =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident(&self.database) {
            return Err(StoreError::Config(format!(
                "database name {:?} must be letters, digits and _",
                self.database
            )));
        }
        if let Some(c) = &self.cluster {
            if !ident(c) {
                return Err(StoreError::Config(format!(
                    "cluster name {c:?} must be letters, digits and _"
                )));
            }
        }
        match (self.insert_quorum, &self.cluster) {
            (Some(0), _) => {
                return Err(StoreError::Config(
                    "insert quorum must be at least 1 (replicas per shard)".into(),
                ))
            }
            (Some(q), None) => {
                return Err(StoreError::Config(format!(
                "insert quorum {q} needs a cluster (replicated tables): set the cluster name too"
            )))
            }
            _ => {}
        }
        let t = &self.timeouts;
        for (name, d) in [
            ("connect", t.connect),
            ("send", t.send),
            ("receive", t.receive),
        ] {
            if d.is_zero() {
                return Err(StoreError::Config(format!(
                    "ClickHouse {name} timeout must be > 0"
                )));
            }
        }
        Ok(())
    }
}

/// A handle on skyhouse's ClickHouse database: the one way every crate
/// reaches ClickHouse. Each call has the configured timeouts and comes back
/// classified ([`StoreError`]): retry, dead-letter or stop.
#[derive(Clone)]
pub struct ClickHouse {
    client: clickhouse::Client,
    in_db: clickhouse::Client,
    config: ClickHouseConfig,
    /// Settings of every insert and every statement that may write (see
    /// [`ClickHouseConfig::cluster`] and [`ClickHouseConfig::insert_quorum`]).
    write_settings: Vec<(&'static str, String)>,
}

impl std::fmt::Debug for ClickHouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("ClickHouse")
            .field("url", &self.config.url)
            .field("database", &self.config.database)
            .field("cluster", &self.config.cluster)
            .field("insert_quorum", &self.config.insert_quorum)
            .field("timeouts", &self.config.timeouts)
            .finish()
    }
}

/// Idle pooled connections are dropped after this long: below ClickHouse's
/// own keep-alive timeout (3 s on 18.16), so the client never sends on a
/// socket the server is closing.
const POOL_IDLE: Duration = Duration::from_millis(2_500);

impl ClickHouse {
    /// Connect lazily (no I/O here) after validating the settings.
    pub fn new(config: ClickHouseConfig) -> Result<Self, StoreError> {
        config.validate()?;
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_connect_timeout(Some(config.timeouts.connect));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        connector.set_nodelay(true);
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(POOL_IDLE)
                .build(connector);
        let mut client = clickhouse::Client::with_http_client(http)
            .with_url(&config.url)
            .with_validation(false);
        if !config.user.is_empty() {
            client = client.with_user(&config.user);
        }
        if !config.password.is_empty() {
            client = client.with_password(&config.password);
        }
        if config.cluster.is_some() {
            // Every statement, reads included, goes to the first healthy
            // replica of each shard (the local one for the shard of the
            // server we talk to): what a refresh reads right after the
            // writer wrote it is there. The default (a random replica per
            // statement) may read the replica that has not fetched the
            // block yet, and a refresh would keep what it decided from it
            // (a reply's gate verdict, a subject's count).
            client = client.with_setting("load_balancing", "in_order");
        }
        let in_db = client.clone().with_database(&config.database);
        let mut write_settings = Vec::new();
        if config.cluster.is_some() {
            write_settings.push(("insert_distributed_sync", "1".to_owned()));
        }
        if let Some(q) = config.insert_quorum {
            write_settings.push(("insert_quorum", q.to_string()));
        }
        Ok(ClickHouse {
            client,
            in_db,
            config,
            write_settings,
        })
    }

    /// The same handle with another receive timeout (a maintenance job that
    /// reads a large window, or a probe that must answer fast).
    pub fn with_receive_timeout(&self, receive: Duration) -> ClickHouse {
        let mut ch = self.clone();
        ch.config.timeouts.receive = receive;
        ch
    }

    /// The same handle with one more setting sent with every statement
    /// [`execute`](Self::execute) runs (the migrator's DDL timeout).
    pub(crate) fn with_statement_setting(&self, name: &'static str, value: String) -> ClickHouse {
        let mut ch = self.clone();
        ch.write_settings.push((name, value));
        ch
    }

    /// The underlying client (no default database). Being retired: every
    /// statement moves into a typed function of this crate.
    #[doc(hidden)]
    pub fn client(&self) -> &clickhouse::Client {
        &self.client
    }

    /// The underlying client in the database. Being retired, as [`Self::client`].
    #[doc(hidden)]
    pub fn in_database(&self) -> &clickhouse::Client {
        &self.in_db
    }

    /// The database name.
    pub fn database(&self) -> &str {
        &self.config.database
    }

    /// The database as statements are rendered for it ([`sql::render`]):
    /// its name, and whether it is a cluster's.
    pub fn db(&self) -> sql::Db<'_> {
        match self.config.cluster {
            Some(_) => sql::Db::cluster(&self.config.database),
            None => sql::Db::single(&self.config.database),
        }
    }

    /// The cluster name, if any.
    pub fn cluster(&self) -> Option<&str> {
        self.config.cluster.as_deref()
    }

    /// The insert quorum, if any ([`ClickHouseConfig::insert_quorum`]).
    pub fn insert_quorum(&self) -> Option<u32> {
        self.config.insert_quorum
    }

    /// The timeouts every call uses.
    pub fn timeouts(&self) -> Timeouts {
        self.config.timeouts
    }

    /// `fut` within the receive timeout, its error classified with `what`.
    async fn timed<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = clickhouse::error::Result<T>>,
    ) -> Result<T, StoreError> {
        let limit = self.config.timeouts.receive;
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => r.map_err(|e| StoreError::classify(e, what)),
            Err(_) => Err(StoreError::timed_out(what, limit)),
        }
    }

    /// A query with the server told to give up when the client does.
    fn query(&self, sql: &str) -> clickhouse::query::Query {
        // query_raw: `?` in quoted user text is data, not a bind placeholder.
        self.client.query_raw(sql).with_setting(
            "max_execution_time",
            self.config.timeouts.receive.as_secs().max(1).to_string(),
        )
    }

    /// Run a statement that returns nothing (`what` names it in errors),
    /// with the write settings: an `INSERT … SELECT` through `Distributed`
    /// tables is on its shards when this returns.
    pub(crate) async fn execute(&self, what: &str, sql: &str) -> Result<(), StoreError> {
        let mut q = self.query(sql);
        for (k, v) in &self.write_settings {
            q = q.with_setting(*k, v.clone());
        }
        self.timed(what, q.execute()).await
    }

    /// All rows of a statement.
    pub(crate) async fn fetch_all<T>(&self, what: &str, sql: &str) -> Result<Vec<T>, StoreError>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        self.timed(what, self.query(sql).fetch_all::<T>()).await
    }

    /// The one row of a statement.
    pub(crate) async fn fetch_one<T>(&self, what: &str, sql: &str) -> Result<T, StoreError>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        self.timed(what, self.query(sql).fetch_one::<T>()).await
    }

    /// The answer of a statement as JSON objects (one per row), in the
    /// database, with extra `settings`. For answers whose columns vary (the
    /// analytics).
    pub(crate) async fn fetch_json(
        &self,
        what: &str,
        sql: &str,
        settings: &[(&str, String)],
    ) -> Result<Vec<JsonRow>, StoreError> {
        let bytes = self.fetch_json_bytes(what, sql, settings).await?;
        parse_json_rows(&bytes)
            .map_err(|e| StoreError::transient(RetryReason::Garbled, format!("{what}: {e}")))
    }

    /// The raw JSONEachRow answer of a statement, in the database (so a
    /// statement may name tables without `{db}.`), with extra `settings`
    /// (e.g. `readonly`; a `max_execution_time` among them replaces the
    /// receive timeout's).
    pub(crate) async fn fetch_json_bytes(
        &self,
        what: &str,
        sql: &str,
        settings: &[(&str, String)],
    ) -> Result<bytes::Bytes, StoreError> {
        let mut q = self
            .in_db
            .query_raw(sql)
            .with_setting("output_format_json_quote_64bit_integers", "0");
        let mut has_limit = false;
        for (k, v) in settings {
            has_limit |= *k == "max_execution_time";
            q = q.with_setting(*k, v.clone());
        }
        if !has_limit {
            q = q.with_setting(
                "max_execution_time",
                self.config.timeouts.receive.as_secs().max(1).to_string(),
            );
        }
        self.timed(what, async move {
            q.fetch_bytes("JSONEachRow")?.collect().await
        })
        .await
    }

    /// Insert `rows` into `table` (a bare name, in the database) as one
    /// INSERT with the send and receive timeouts. One attempt: the caller
    /// decides what a failure means (the writer retries or bisects). On a
    /// cluster `table` is the `Distributed` one and the insert returns once
    /// every shard stored its rows (and, with an insert quorum, that many
    /// replicas of each).
    pub async fn insert<R>(&self, table: &str, rows: &[R]) -> Result<(), StoreError>
    where
        R: clickhouse::RowOwned + clickhouse::RowWrite + serde::Serialize,
    {
        let what = format!("insert into {}.{table}", self.database());
        let t = self.config.timeouts;
        let attempt = async {
            let mut insert = self
                .in_db
                .insert::<R>(table)
                .await?
                .with_timeouts(Some(t.send), Some(t.receive));
            for (k, v) in &self.write_settings {
                insert = insert.with_setting(*k, v.clone());
            }
            for r in rows {
                insert.write(r).await?;
            }
            insert.end().await
        };
        // The client's own timeouts cover each write and the end; this one
        // also covers a connection that opens and then never reads.
        let limit = t.send.saturating_mul(2).saturating_add(t.receive);
        match tokio::time::timeout(limit, attempt).await {
            Ok(r) => r.map_err(|e| StoreError::classify(e, &what)),
            Err(_) => Err(StoreError::timed_out(&what, limit)),
        }
    }

    /// Insert `data`, rows of `table` (a bare name, in the database) already
    /// encoded as `RowBinary` with the table's columns in order, as one
    /// INSERT with the send and receive timeouts. One attempt, as
    /// [`Self::insert`]: nothing is serialized here, so the caller can
    /// encode on another thread and bisect by row boundaries it kept.
    pub async fn insert_row_binary(
        &self,
        table: &str,
        data: bytes::Bytes,
    ) -> Result<(), StoreError> {
        self.send_row_binary(table, table, data).await
    }

    /// As [`Self::insert_row_binary`], into `<table>_local` of the server
    /// the handle talks to: a cluster's shard-local table, skipping the
    /// `Distributed` one (the cluster benchmark's other write path; the
    /// caller routes each row to its shard's server).
    pub async fn insert_row_binary_local(
        &self,
        table: &str,
        data: bytes::Bytes,
    ) -> Result<(), StoreError> {
        self.send_row_binary(table, &format!("{table}_local"), data)
            .await
    }

    /// `data`, rows of `table` in RowBinary, inserted into `target`.
    async fn send_row_binary(
        &self,
        table: &str,
        target: &str,
        data: bytes::Bytes,
    ) -> Result<(), StoreError> {
        let what = format!("insert into {}.{target}", self.database());
        let sql = insert_statement(self.db(), table, target)?;
        let t = self.config.timeouts;
        let attempt = async {
            let mut insert = self
                .client
                .insert_formatted_with(sql)
                .with_timeouts(Some(t.send), Some(t.receive));
            // As in `insert`: on a cluster, on its shards when it returns.
            for (k, v) in &self.write_settings {
                insert = insert.with_setting(*k, v.clone());
            }
            insert.send(data).await?;
            insert.end().await
        };
        let limit = t.send.saturating_mul(2).saturating_add(t.receive);
        match tokio::time::timeout(limit, attempt).await {
            Ok(r) => r.map_err(|e| StoreError::classify(e, &what)),
            Err(_) => Err(StoreError::timed_out(&what, limit)),
        }
    }

    /// The server's version.
    pub async fn server_version(&self) -> Result<migrate::ServerVersion, StoreError> {
        let v: String = self
            .fetch_one("SELECT version()", "SELECT version()")
            .await?;
        migrate::ServerVersion::parse(&v)
            .ok_or_else(|| StoreError::Internal(format!("unparseable server version {v:?}")))
    }
}

/// The INSERT of `table`'s rows in RowBinary, with the columns skyhouse
/// writes ([`skyhouse_transform::table_columns`]).
pub(crate) fn insert_statement(
    db: sql::Db<'_>,
    table: &str,
    target: &str,
) -> Result<String, StoreError> {
    let columns = skyhouse_transform::table_columns(table)
        .ok_or_else(|| StoreError::Internal(format!("{table:?} is not a table skyhouse writes")))?;
    let list = columns
        .iter()
        .map(|(c, _)| *c)
        .collect::<Vec<_>>()
        .join(", ");
    sql::render(
        db,
        "insert_row_binary",
        &[("table", target), ("columns", &list)],
    )
}

/// One row of a JSON answer.
pub type JsonRow = serde_json::Map<String, serde_json::Value>;

/// JSONEachRow lines to rows.
fn parse_json_rows(bytes: &[u8]) -> Result<Vec<JsonRow>, String> {
    let mut out = Vec::new();
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice(line) {
            Ok(serde_json::Value::Object(m)) => out.push(m),
            Ok(other) => {
                return Err(format!(
                    "not a row: {}",
                    error::one_line(&other.to_string())
                ))
            }
            Err(e) => return Err(format!("bad JSON row: {e}")),
        }
    }
    Ok(out)
}

/// `SHOW CREATE TABLE` of every table in the database, `;`-terminated, in name order.
pub async fn dump_schema(ch: &ClickHouse) -> Result<String, StoreError> {
    let db = ch.db();
    let tables: Vec<String> = ch
        .fetch_all("listing tables", &sql::render(db, "list_tables", &[])?)
        .await?;
    let mut out = String::new();
    for t in tables {
        // Table names come from the server; quote them as identifiers.
        let table = format!("`{}`", t.replace('`', "\\`"));
        let sql = sql::render(db, "show_create_table", &[("table", &table)])?;
        let create: String = ch.fetch_one("SHOW CREATE TABLE", &sql).await?;
        out.push_str(&create);
        out.push_str(";\n\n");
    }
    Ok(out)
}
