//! A real `clickhouse-server` per test process.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use crate::http;
use crate::process::{self, ServerSpec, Started};

/// How long one test query may run.
const QUERY_TIMEOUT: Duration = Duration::from_secs(120);

/// A `clickhouse-server` child process listening on spare loopback ports,
/// shared by every test of a test binary (see [`ClickHouse::shared`]).
///
/// It runs with a generated, self-contained configuration (nothing is read
/// from `/etc/clickhouse-server`), data and logs in a temporary directory,
/// the time zone UTC and a `default` user without password and with full
/// access.
#[derive(Debug)]
pub struct ClickHouse {
    started: Started,
    version: String,
}

static SHARED: OnceLock<Result<ClickHouse, String>> = OnceLock::new();

impl ClickHouse {
    /// The server of this test process, started on first use (in about a
    /// quarter of a second) and killed when the process exits (see the
    /// crate documentation).
    ///
    /// # Panics
    ///
    /// If `clickhouse-server` is not installed, or does not start and answer
    /// `GET /ping` within 60 s (the message has the tail of its logs). The
    /// failure is remembered: every later call panics with the same message
    /// rather than trying again.
    pub fn shared() -> &'static ClickHouse {
        match SHARED.get_or_init(ClickHouse::start) {
            Ok(server) => server,
            Err(message) => panic!("{message}"),
        }
    }

    fn start() -> Result<ClickHouse, String> {
        let started = process::start(&ServerSpec {
            binary: "clickhouse-server",
            kind: "clickhouse",
            ports: 2,
            prepare: &|dir, ports| write_config(dir, ports[0], ports[1]),
            ready: &|ports| ping(ports[0]),
            probe: "GET /ping",
            logs: &["log/clickhouse-server.err.log", "stdout.log"],
            timeout: None,
            run_as: None,
            stop_signal: None,
        })?;
        let port = started.ports[0];
        let version = run(port, None, "SELECT version()")?.trim().to_owned();
        Ok(ClickHouse { started, version })
    }

    /// The HTTP interface, e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port())
    }

    /// The HTTP interface's port.
    pub fn http_port(&self) -> u16 {
        self.started.ports[0]
    }

    /// The native protocol's port (what `clickhouse-client --port` takes).
    pub fn tcp_port(&self) -> u16 {
        self.started.ports[1]
    }

    /// The server's version, from `SELECT version()` (e.g. `18.16.1`).
    pub fn version(&self) -> String {
        self.version.clone()
    }

    /// The server process's id (what the benches read CPU seconds of), from
    /// the watchdog's pid file; `None` if it cannot be read.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.started.dir.join(process::PID_FILE))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The server's temporary directory (configuration in `config.xml` and
    /// `users.xml`, data in `data/`, logs in `log/`); removed when the test
    /// process exits.
    pub fn dir(&self) -> &Path {
        &self.started.dir
    }

    /// Runs `sql` over HTTP in the `default` database and returns the raw
    /// response body (`TabSeparated` unless the query says `FORMAT …`; a
    /// single value comes back as `"value\n"`, a statement as `""`).
    ///
    /// # Panics
    ///
    /// If the server cannot be reached or answers with a status other than
    /// 200; the message has the server's error text and the query.
    pub fn query(&self, sql: &str) -> String {
        self.try_query(sql)
            .unwrap_or_else(|message| panic!("{message}"))
    }

    /// Like [`query`](Self::query), but a failure is returned (the message
    /// has the HTTP status, the server's error text and the query), for tests
    /// that expect an error.
    pub fn try_query(&self, sql: &str) -> Result<String, String> {
        run(self.http_port(), None, sql)
    }

    /// Creates a fresh, empty database for one test, named after `name_hint`
    /// (lowercased, anything outside `[a-z0-9_]` turned into `_`, at most 40
    /// characters) plus `_<pid>_<counter>`, so that every call gives a new
    /// database. It is dropped when the [`TestDatabase`] is dropped.
    ///
    /// # Panics
    ///
    /// If `CREATE DATABASE` fails.
    pub fn database(&self, name_hint: &str) -> TestDatabase {
        let name = format!(
            "{}_{}",
            process::sanitize(name_hint),
            process::unique_suffix('_')
        );
        self.query(&format!("CREATE DATABASE {name}"));
        TestDatabase {
            name,
            http_port: self.http_port(),
        }
    }
}

/// A database of the shared server owned by one test; dropped (best effort)
/// on `Drop`. Made by [`ClickHouse::database`].
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    http_port: u16,
}

impl TestDatabase {
    /// The database's name (only `[a-z0-9_]`, so it needs no quoting).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's HTTP interface, e.g. `http://127.0.0.1:41234`, the same
    /// as [`ClickHouse::http_url`]. A client library takes this as its URL
    /// and [`name`](Self::name) as its database.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Runs `sql` with this database as the default one, like
    /// [`ClickHouse::query`].
    ///
    /// # Panics
    ///
    /// As [`ClickHouse::query`].
    pub fn query(&self, sql: &str) -> String {
        self.try_query(sql)
            .unwrap_or_else(|message| panic!("{message}"))
    }

    /// Like [`query`](Self::query), but a failure is returned, as
    /// [`ClickHouse::try_query`].
    pub fn try_query(&self, sql: &str) -> Result<String, String> {
        run(self.http_port, Some(&self.name), sql)
    }

    /// The number of rows in `table` of this database (`count()`, no
    /// `FINAL`), e.g. to check that `dead_letters` is empty.
    ///
    /// # Panics
    ///
    /// As [`ClickHouse::query`], or if the answer is not a number.
    pub fn rows(&self, table: &str) -> u64 {
        let answer = self.query(&format!("SELECT count() FROM {table}"));
        answer
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("count() of {table}: not a number: {answer}"))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Best effort: the server is gone at process exit anyway.
        let sql = format!("DROP DATABASE IF EXISTS {}", self.name);
        let _ = run(self.http_port, None, &sql);
    }
}

/// True when the server answers `GET /ping` with `Ok.`.
pub(crate) fn ping(http_port: u16) -> bool {
    http::request(http_port, "GET", "/ping", b"", Duration::from_secs(2))
        .is_ok_and(|r| r.status == 200 && r.text().trim() == "Ok.")
}

/// Runs one query over HTTP; the error is a complete message.
pub(crate) fn run(http_port: u16, database: Option<&str>, sql: &str) -> Result<String, String> {
    let path = match database {
        Some(db) => format!("/?database={db}"),
        None => "/".to_owned(),
    };
    run_at(http_port, &path, sql)
}

/// Runs one query over HTTP at `path` (`/` plus URL parameters: the
/// database, settings); the error is a complete message.
pub(crate) fn run_at(http_port: u16, path: &str, sql: &str) -> Result<String, String> {
    let response =
        http::request(http_port, "POST", path, sql.as_bytes(), QUERY_TIMEOUT).map_err(|e| {
            format!("ClickHouse on 127.0.0.1:{http_port} unreachable: {e}\nquery: {sql}")
        })?;
    if response.status != 200 {
        return Err(format!(
            "ClickHouse query failed (HTTP {}): {}\nquery: {sql}",
            response.status,
            response.text().trim_end()
        ));
    }
    Ok(response.text())
}

/// How parts are compressed (`scripts/clickhouse/compression.xml`: ZSTD for
/// parts of 10 MB and more), installed in every server's `config.d/` by the
/// test kit, `just up`, `just cluster-up` and Docker Compose alike.
pub const COMPRESSION_XML: &str = include_str!("../../../scripts/clickhouse/compression.xml");

/// Installs [`COMPRESSION_XML`] as `config.d/skyhouse-compression.xml` under
/// `dir`, the directory of the server's `config.xml`.
pub(crate) fn write_compression_config(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir.join("config.d"))?;
    fs::write(
        dir.join("config.d/skyhouse-compression.xml"),
        COMPRESSION_XML,
    )
}

/// Writes `config.xml` and `users.xml` into `dir` (and the compression
/// settings into `config.d/`) and returns the server's arguments. The
/// configuration is self-contained: no `incl=` substitutions, every path
/// inside `dir`.
fn write_config(dir: &Path, http_port: u16, tcp_port: u16) -> io::Result<Vec<String>> {
    for sub in ["data", "tmp", "user_files", "format_schemas", "log"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    write_compression_config(dir)?;
    let d = xml_escape(&dir.to_string_lossy());
    let config = format!(
        r#"<?xml version="1.0"?>
<!-- Generated by skyhouse-testkit; ClickHouse 18.x wants the <yandex> root. -->
<yandex>
    <logger>
        <level>warning</level>
        <log>{d}/log/clickhouse-server.log</log>
        <errorlog>{d}/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>1</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>{http_port}</http_port>
    <tcp_port>{tcp_port}</tcp_port>
    <path>{d}/data/</path>
    <tmp_path>{d}/tmp/</tmp_path>
    <user_files_path>{d}/user_files/</user_files_path>
    <format_schema_path>{d}/format_schemas/</format_schema_path>
    <users_config>{d}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <max_connections>1024</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
    <query_log>
        <database>system</database>
        <table>query_log</table>
        <flush_interval_milliseconds>7500</flush_interval_milliseconds>
    </query_log>
</yandex>
"#
    );
    fs::write(dir.join("config.xml"), config)?;
    fs::write(dir.join("users.xml"), USERS_XML)?;
    Ok(vec![format!("--config-file={}/config.xml", dir.display())])
}

/// The `default` user: no password, any address (the server only listens on
/// loopback), full access; profile `default` with a 4 GB memory cap per
/// query and no quota limits. The `bench` user is the same with every query
/// logged to `system.query_log` (the scale benchmark reads each query's
/// peak memory there); the default user's queries are not logged.
const USERS_XML: &str = r#"<?xml version="1.0"?>
<!-- Generated by skyhouse-testkit. -->
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <use_uncompressed_cache>0</use_uncompressed_cache>
            <load_balancing>random</load_balancing>
        </default>
        <bench>
            <profile>default</profile>
            <log_queries>1</log_queries>
        </bench>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>::/0</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
        <bench>
            <password></password>
            <networks>
                <ip>::/0</ip>
            </networks>
            <profile>bench</profile>
            <quota>default</quota>
        </bench>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
"#;

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
