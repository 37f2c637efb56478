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

pub mod cleanup;
pub mod migrate;
pub mod queries;
pub use queries::literal;
pub mod writer;

pub use clickhouse;

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
    pub cluster: Option<String>,
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
        }
    }

    /// Check the settings before any I/O; the error names the setting.
    pub fn validate(&self) -> Result<(), StoreError> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(StoreError::Config(format!(
                "ClickHouse address {:?} must be an http:// or https:// URL",
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
        Ok(())
    }
}

/// A handle on skyhouse's ClickHouse database.
#[derive(Clone)]
pub struct ClickHouse {
    client: clickhouse::Client,
    in_db: clickhouse::Client,
    config: ClickHouseConfig,
}

impl std::fmt::Debug for ClickHouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("ClickHouse")
            .field("url", &self.config.url)
            .field("database", &self.config.database)
            .field("cluster", &self.config.cluster)
            .finish()
    }
}

impl ClickHouse {
    /// Connect lazily (no I/O here) after validating the settings.
    pub fn new(config: ClickHouseConfig) -> Result<Self, StoreError> {
        config.validate()?;
        let mut client = clickhouse::Client::default()
            .with_url(&config.url)
            .with_validation(false);
        if !config.user.is_empty() {
            client = client.with_user(&config.user);
        }
        if !config.password.is_empty() {
            client = client.with_password(&config.password);
        }
        let in_db = client.clone().with_database(&config.database);
        Ok(ClickHouse {
            client,
            in_db,
            config,
        })
    }

    /// The underlying client (no default database: queries name it).
    pub fn client(&self) -> &clickhouse::Client {
        &self.client
    }

    /// A client whose default database is skyhouse's (for inserts, which
    /// take a bare table name).
    pub fn in_database(&self) -> &clickhouse::Client {
        &self.in_db
    }

    /// The database name.
    pub fn database(&self) -> &str {
        &self.config.database
    }

    /// The cluster name, if any.
    pub fn cluster(&self) -> Option<&str> {
        self.config.cluster.as_deref()
    }

    /// Run a statement that returns nothing.
    pub async fn execute(&self, sql: &str) -> Result<(), StoreError> {
        self.client
            .query(sql)
            .execute()
            .await
            .map_err(|e| StoreError::classify(e, first_words(sql)))
    }

    /// The server's version.
    pub async fn server_version(&self) -> Result<migrate::ServerVersion, StoreError> {
        let v: String = self
            .client
            .query("SELECT version()")
            .fetch_one()
            .await
            .map_err(|e| StoreError::classify(e, "SELECT version()"))?;
        migrate::ServerVersion::parse(&v)
            .ok_or_else(|| StoreError::Permanent(format!("unparseable server version {v:?}")))
    }
}

fn first_words(sql: &str) -> &str {
    let end = sql.char_indices().nth(60).map_or(sql.len(), |(i, _)| i);
    sql[..end].lines().next().unwrap_or("")
}

/// Store failures, classified so callers know whether to retry.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A setting is invalid (names it).
    #[error("{0}")]
    Config(String),
    /// Worth retrying: the network, a timeout, an overloaded server.
    #[error("ClickHouse (transient): {0}")]
    Transient(String),
    /// Not worth retrying: bad SQL, a schema or type mismatch.
    #[error("ClickHouse: {0}")]
    Permanent(String),
    /// A migration problem (names the migration or file).
    #[error("{0}")]
    Migration(String),
}

impl StoreError {
    /// Whether retrying could help.
    pub fn is_retriable(&self) -> bool {
        matches!(self, StoreError::Transient(_))
    }

    /// Sort a client error into transient or permanent, with context.
    pub fn classify(e: clickhouse::error::Error, context: &str) -> StoreError {
        use clickhouse::error::Error as E;
        let msg = format!("{context}: {e}");
        match &e {
            E::Network(_) | E::TimedOut => StoreError::Transient(msg),
            E::BadResponse(text) => {
                // Server-side codes that mean "try again": too many parts, memory
                // limit, timeouts, network between replicas, table is read-only.
                const TRANSIENT: &[&str] = &[
                    "Code: 252",
                    "Code: 241",
                    "Code: 159",
                    "Code: 209",
                    "Code: 210",
                    "Code: 242",
                    "Code: 202",
                    "Code: 425",
                    "Code: 999",
                ];
                if TRANSIENT.iter().any(|c| text.contains(c)) {
                    StoreError::Transient(msg)
                } else {
                    StoreError::Permanent(msg)
                }
            }
            _ => StoreError::Permanent(msg),
        }
    }
}

/// `SHOW CREATE TABLE` of every table in the database, `;`-terminated, in name order.
pub async fn dump_schema(ch: &ClickHouse) -> Result<String, StoreError> {
    let db = ch.database();
    let tables: Vec<String> = ch
        .client()
        .query(&format!(
            "SELECT name FROM system.tables WHERE database = '{db}' ORDER BY name"
        ))
        .fetch_all()
        .await
        .map_err(|e| StoreError::classify(e, "listing tables"))?;
    let mut out = String::new();
    for t in tables {
        let create: String = ch
            .client()
            .query(&format!("SHOW CREATE TABLE {db}.{t}"))
            .fetch_one()
            .await
            .map_err(|e| StoreError::classify(e, "SHOW CREATE TABLE"))?;
        out.push_str(&create);
        out.push_str(";\n\n");
    }
    Ok(out)
}
