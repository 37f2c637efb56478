//! A real ClickHouse cluster per test process: a standalone ZooKeeper and
//! four `clickhouse-server`s, 2 shards × 2 replicas, on spare loopback ports.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::clickhouse;
use crate::process::{self, Watched};

/// The cluster's name in every server's `<remote_servers>` (what
/// `CLICKHOUSE_CLUSTER` / `--clickhouse-cluster` take).
pub const CLUSTER_NAME: &str = "skyhouse";

/// The configuration templates `just cluster-up` uses too (every
/// `@NAME@` placeholder is replaced per server).
const CLICKHOUSE_XML: &str = include_str!("../../../scripts/cluster/clickhouse.xml");
const USERS_XML: &str = include_str!("../../../scripts/cluster/users.xml");
const ZOO_CFG: &str = include_str!("../../../scripts/cluster/zoo.cfg");

/// Debian's ZooKeeper (package `zookeeper`); its manifest names the jars it needs.
const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";
/// Sends ZooKeeper's log lines to its `stdout.log`, when installed.
const SLF4J_SIMPLE_JAR: &str = "/usr/share/java/slf4j-simple.jar";

/// The servers in the order of [`Cluster::nodes`]: name, shard, replica.
const NODES: [(&str, u32, u32); 4] = [
    ("s1r1", 1, 1),
    ("s1r2", 1, 2),
    ("s2r1", 2, 1),
    ("s2r2", 2, 2),
];

/// How long a stopped server may take to exit, and a killed one to be reaped.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// A ClickHouse cluster of real processes: ZooKeeper and four ClickHouse
/// servers (shards 1 and 2, replicas 1 and 2 of each, named `s1r1`, `s1r2`,
/// `s2r1`, `s2r2`), cluster [`CLUSTER_NAME`] with `internal_replication`, the
/// `{shard}` and `{replica}` macros set (replica names are unique in the
/// cluster), and the `ON CLUSTER` DDL queue in ZooKeeper. The configuration
/// comes from `scripts/cluster/`, the templates of `just cluster-up`.
///
/// Everything lives in one temporary directory, removed when the cluster is
/// dropped or the test process ends. Every server runs under the same
/// watchdog as [`ClickHouse`](crate::ClickHouse) (see the crate
/// documentation), so nothing outlives the test process; unlike a single
/// server, each one keeps its data when it is killed or stopped, so a test
/// can start it again ([`ClusterNode::start`], [`ZooKeeper::start`]) and see
/// it recover.
#[derive(Debug)]
pub struct Cluster {
    zookeeper: ZooKeeper,
    nodes: Vec<ClusterNode>,
    root: PathBuf,
    version: String,
    /// See [`Cluster::ddl_lock`].
    ddl: Mutex<()>,
    /// See [`Cluster::revive_ddl_workers`]: the dead-worker lines seen per
    /// server.
    ddl_deaths: Mutex<Vec<usize>>,
    /// Declared last: dropped after the servers' watchdogs were told to go.
    _janitor: Watched,
}

static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();

impl Cluster {
    /// The cluster of this test process, started on first use (in about a
    /// second) and killed when the process exits. Tests that stop or kill
    /// its servers must start them again before they end; a test that takes
    /// servers down for long, or concurrently with others, uses its own
    /// cluster ([`Cluster::start`]).
    ///
    /// # Panics
    ///
    /// If `clickhouse-server`, `java` or Debian's ZooKeeper is not
    /// installed, or a server does not start and answer within 60 s (the
    /// message has the tail of its logs). The failure is remembered: every
    /// later call panics with the same message.
    pub fn shared() -> &'static Cluster {
        match SHARED.get_or_init(Cluster::try_start) {
            Ok(cluster) => cluster,
            Err(message) => panic!("{message}"),
        }
    }

    /// A cluster of the calling test alone, killed (and its directory
    /// removed) when it is dropped or the test process exits: for tests
    /// that take servers down.
    ///
    /// # Panics
    ///
    /// As [`Cluster::shared`].
    pub fn start() -> Cluster {
        Cluster::try_start().unwrap_or_else(|message| panic!("{message}"))
    }

    fn try_start() -> Result<Cluster, String> {
        let java = process::find_binary("java")?;
        if !Path::new(ZOOKEEPER_JAR).is_file() {
            return Err(format!(
                "{ZOOKEEPER_JAR} not found: run `just deps` or `apt-get install -y zookeeper`"
            ));
        }
        let clickhouse = process::find_binary("clickhouse-server")?;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let kind = format!("cluster{}", COUNTER.fetch_add(1, Ordering::Relaxed));
        let mut last_error = String::new();
        for attempt in 1..=process::ATTEMPTS {
            let ports = process::free_ports(1 + 3 * NODES.len())
                .map_err(|e| format!("testkit: cannot find a spare loopback port: {e}"))?;
            match Cluster::start_once(&kind, attempt, &ports, &java, &clickhouse) {
                Ok(cluster) => return Ok(cluster),
                // Another process took one of the ports meanwhile: new ports.
                Err(message) if message.contains("Address already in use") => {
                    last_error = message;
                }
                Err(message) => return Err(message),
            }
        }
        Err(last_error)
    }

    fn start_once(
        kind: &str,
        attempt: u32,
        ports: &[u16],
        java: &Path,
        clickhouse: &Path,
    ) -> Result<Cluster, String> {
        let root = process::fresh_dir(kind, attempt)
            .map_err(|e| format!("testkit: cannot create a temporary directory: {e}"))?;
        let janitor = process::janitor(&root)
            .map_err(|e| format!("testkit: cannot start the cluster's janitor: {e}"))?;
        let zk_port = ports[0];
        let tcp_ports: Vec<u16> = (0..NODES.len()).map(|i| ports[1 + 3 * i + 1]).collect();
        let zookeeper = ZooKeeper {
            member: Member::new(
                "zookeeper",
                root.join("zookeeper"),
                vec![zk_port],
                java.to_path_buf(),
                Probe::ZooKeeper,
            ),
        };
        zookeeper
            .member
            .prepare(|dir| write_zookeeper_config(dir, zk_port))?;
        let nodes: Vec<ClusterNode> = NODES
            .iter()
            .enumerate()
            .map(|(i, &(name, shard, replica))| ClusterNode {
                shard,
                replica,
                member: Member::new(
                    name,
                    root.join(name),
                    ports[1 + 3 * i..4 + 3 * i].to_vec(),
                    clickhouse.to_path_buf(),
                    Probe::ClickHouse,
                ),
            })
            .collect();
        for node in &nodes {
            node.member
                .prepare(|dir| write_clickhouse_config(dir, node, zk_port, &tcp_ports))?;
        }
        // ZooKeeper first (the servers reach it at startup), then every
        // ClickHouse server at once.
        zookeeper.member.launch()?;
        let deadline = Instant::now() + process::START_TIMEOUT;
        zookeeper.member.wait_ready(deadline)?;
        for node in &nodes {
            node.member.launch()?;
        }
        for node in &nodes {
            node.member.wait_ready(deadline)?;
        }
        // Ready for ON CLUSTER DDL and replicated tables: every server has
        // its ZooKeeper session.
        for node in &nodes {
            wait_for(deadline, || {
                node.try_query("SELECT count() FROM system.zookeeper WHERE path = '/'")
                    .is_ok()
            })
            .map_err(|()| {
                format!(
                    "testkit: cluster server {} did not reach ZooKeeper on port {zk_port} within {} s; {}",
                    node.name(),
                    process::START_TIMEOUT.as_secs(),
                    process::log_tails(node.dir(), CLICKHOUSE_LOGS)
                )
            })?;
        }
        let version = clickhouse::run(nodes[0].http_port(), None, "SELECT version()")?
            .trim()
            .to_owned();
        let servers = nodes.len();
        Ok(Cluster {
            zookeeper,
            nodes,
            root,
            version,
            ddl: Mutex::new(()),
            ddl_deaths: Mutex::new(vec![0; servers]),
            _janitor: janitor,
        })
    }

    /// Held while a test migrates a database on this cluster, so that the
    /// tests of one process send their `ON CLUSTER` migrations one at a
    /// time: with several at once, a ClickHouse 18.16 server's DDL worker
    /// sometimes fails a replicated table's `ALTER … ADD COLUMN` with "Node
    /// exists …/shards/…/executed" and stops taking tasks, and every later
    /// `ON CLUSTER` statement waits out its timeout. [`database`](Self::database)
    /// takes it too: do not hold it when calling that.
    pub fn ddl_lock(&self) -> MutexGuard<'_, ()> {
        self.ddl.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Restarts every running server whose `ON CLUSTER` worker has stopped
    /// since the last call, and returns their names. A ClickHouse 18.16
    /// server runs a replicated table's `ALTER … ON CLUSTER` once per shard:
    /// the replicas race for a lock in ZooKeeper, and now and then the
    /// second one runs it again after the first, then fails to mark it done
    /// ("Node exists …/executed"), logs "DDLWorker: Unexpected ZooKeeper
    /// error" and takes no more tasks until restarted: every later `ON
    /// CLUSTER` statement would wait out its timeout. Restarted, it finds the
    /// task done and goes on. Call it while waiting on a migration.
    pub fn revive_ddl_workers(&self) -> Vec<String> {
        let mut seen = self.ddl_deaths.lock().unwrap_or_else(|p| p.into_inner());
        let mut revived = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let log = node.dir().join("log/clickhouse-server.err.log");
            let deaths = fs::read_to_string(&log)
                .unwrap_or_default()
                .matches("DDLWorker: Unexpected ZooKeeper error")
                .count();
            if deaths > seen[i] && node.is_running() {
                eprintln!(
                    "testkit: restarting {}: its ON CLUSTER worker stopped (ClickHouse 18.16's replicated ALTER race)",
                    node.name()
                );
                node.stop();
                node.start();
                revived.push(node.name().to_owned());
            }
            seen[i] = deaths;
        }
        revived
    }

    /// The cluster's name, [`CLUSTER_NAME`].
    pub fn name(&self) -> &str {
        CLUSTER_NAME
    }

    /// The four ClickHouse servers: `s1r1`, `s1r2`, `s2r1`, `s2r2`.
    pub fn nodes(&self) -> &[ClusterNode] {
        &self.nodes
    }

    /// The server of `shard` (1 or 2) and `replica` (1 or 2).
    ///
    /// # Panics
    ///
    /// If there is no such server.
    pub fn node(&self, shard: u32, replica: u32) -> &ClusterNode {
        self.nodes
            .iter()
            .find(|n| n.shard == shard && n.replica == replica)
            .unwrap_or_else(|| {
                panic!("testkit: the cluster has no shard {shard} replica {replica}")
            })
    }

    /// Brings every replica of every replicated table of `db` up to date:
    /// `SYSTEM SYNC REPLICA` on each server, which pulls the shared log into
    /// the replica's queue and waits for the queue to empty. A write through
    /// one replica is then visible on the other as of this call (a replica
    /// whose queue is empty may not have pulled the log yet: `queue_size` in
    /// `system.replicas` does not show it).
    ///
    /// # Panics
    ///
    /// If a server does not answer or a sync fails (ClickHouse gives up
    /// after its `receive_timeout`, 300 s).
    pub fn sync_replicas(&self, db: &str) {
        for node in &self.nodes {
            let tables = node.query(&format!(
                "SELECT table FROM system.replicas WHERE database = '{db}' ORDER BY table"
            ));
            for table in tables.lines() {
                node.query(&format!("SYSTEM SYNC REPLICA {db}.{table}"));
            }
        }
    }

    /// The ZooKeeper server.
    pub fn zookeeper(&self) -> &ZooKeeper {
        &self.zookeeper
    }

    /// The HTTP interface of the first server (`s1r1`), e.g.
    /// `http://127.0.0.1:41234`: what a service's `CLICKHOUSE_ADDRESS` takes
    /// (any server of the cluster would do).
    pub fn http_url(&self) -> String {
        self.nodes[0].http_url()
    }

    /// The servers' version, from `SELECT version()` (e.g. `18.16.1`).
    pub fn version(&self) -> String {
        self.version.clone()
    }

    /// The cluster's temporary directory: `zookeeper/`, `s1r1/` … `s2r2/`,
    /// each with its configuration, data, `log/` and `stdout.log`.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Runs `sql` on the first server, as [`ClickHouse::query`](crate::ClickHouse::query).
    ///
    /// # Panics
    ///
    /// As [`ClickHouse::query`](crate::ClickHouse::query).
    pub fn query(&self, sql: &str) -> String {
        self.nodes[0].query(sql)
    }

    /// Creates a fresh, empty database `ON CLUSTER` (on every server) for
    /// one test, named as [`ClickHouse::database`](crate::ClickHouse::database)
    /// names them; dropped `ON CLUSTER` when the [`ClusterDatabase`] is
    /// dropped.
    ///
    /// # Panics
    ///
    /// If `CREATE DATABASE … ON CLUSTER` fails (e.g. a server is down).
    /// Waits for [`ddl_lock`](Self::ddl_lock): another test's migration
    /// may be restarting a server (see
    /// [`revive_ddl_workers`](Self::revive_ddl_workers)).
    pub fn database(&self, name_hint: &str) -> ClusterDatabase {
        let name = format!(
            "{}_{}",
            process::sanitize(name_hint),
            process::unique_suffix('_')
        );
        let _ddl = self.ddl_lock();
        self.query(&format!("CREATE DATABASE {name} ON CLUSTER {CLUSTER_NAME}"));
        ClusterDatabase {
            name,
            http_port: self.nodes[0].http_port(),
            ports: self.nodes.iter().map(ClusterNode::http_port).collect(),
        }
    }
}

/// One ClickHouse server of a [`Cluster`].
#[derive(Debug)]
pub struct ClusterNode {
    shard: u32,
    replica: u32,
    /// Ports: HTTP, native, interserver.
    member: Member,
}

impl ClusterNode {
    /// Its name, e.g. `s1r2`: also its `{replica}` macro.
    pub fn name(&self) -> &str {
        &self.member.name
    }

    /// Its shard (1 or 2): its `{shard}` macro.
    pub fn shard(&self) -> u32 {
        self.shard
    }

    /// Which replica of its shard it is (1 or 2).
    pub fn replica(&self) -> u32 {
        self.replica
    }

    /// The HTTP interface, e.g. `http://127.0.0.1:41234` (the same across restarts).
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port())
    }

    /// The HTTP interface's port.
    pub fn http_port(&self) -> u16 {
        self.member.ports[0]
    }

    /// The native protocol's port (what `clickhouse-client --port` takes,
    /// and what the cluster definition names).
    pub fn tcp_port(&self) -> u16 {
        self.member.ports[1]
    }

    /// The port its replicas fetch parts from.
    pub fn interserver_port(&self) -> u16 {
        self.member.ports[2]
    }

    /// Its directory (`config.xml`, `data/`, `log/`, `stdout.log`).
    pub fn dir(&self) -> &Path {
        &self.member.dir
    }

    /// Runs `sql` on this server over HTTP, as
    /// [`ClickHouse::query`](crate::ClickHouse::query) (default database
    /// `default`: name tables with their database).
    ///
    /// # Panics
    ///
    /// As [`ClickHouse::query`](crate::ClickHouse::query).
    pub fn query(&self, sql: &str) -> String {
        self.try_query(sql)
            .unwrap_or_else(|message| panic!("{message}\n{}", self.member.state()))
    }

    /// Like [`query`](Self::query), but a failure is returned.
    pub fn try_query(&self, sql: &str) -> Result<String, String> {
        clickhouse::run(self.http_port(), None, sql)
    }

    /// Whether the server runs (it was not killed or stopped, or was
    /// started again, and did not exit by itself).
    pub fn is_running(&self) -> bool {
        self.member.is_running()
    }

    /// Kills the server with `SIGKILL` (a crash: no shutdown, parts being
    /// written are left as they are) and returns once it is gone. Nothing
    /// happens if it is not running.
    ///
    /// # Panics
    ///
    /// If the process is still there after 60 s.
    pub fn kill(&self) {
        self.member.signal_and_wait("KILL");
    }

    /// Stops the server with `SIGTERM` (a clean shutdown) and returns once
    /// it exited. Nothing happens if it is not running.
    ///
    /// # Panics
    ///
    /// If it has not exited after 60 s.
    pub fn stop(&self) {
        self.member.signal_and_wait("TERM");
    }

    /// Starts the server again on the same ports with the same data, and
    /// returns once it answers `GET /ping` (its replicated tables may still
    /// be read-only until its ZooKeeper session is up; wait on
    /// `system.replicas` for that). Nothing happens if it runs.
    ///
    /// # Panics
    ///
    /// If it does not answer within 60 s (the message has its logs).
    pub fn start(&self) {
        self.member.restart();
    }
}

/// The ZooKeeper server of a [`Cluster`] (standalone, Debian's package run
/// with `java` and a generated `zoo.cfg`, data on disk).
#[derive(Debug)]
pub struct ZooKeeper {
    member: Member,
}

impl ZooKeeper {
    /// Its client port (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.member.ports[0]
    }

    /// Its directory (`zoo.cfg`, `data/`, `stdout.log`).
    pub fn dir(&self) -> &Path {
        &self.member.dir
    }

    /// Whether ZooKeeper runs.
    pub fn is_running(&self) -> bool {
        self.member.is_running()
    }

    /// Kills ZooKeeper with `SIGKILL` and returns once it is gone.
    ///
    /// # Panics
    ///
    /// If the process is still there after 60 s.
    pub fn kill(&self) {
        self.member.signal_and_wait("KILL");
    }

    /// Stops ZooKeeper with `SIGTERM` and returns once it exited.
    ///
    /// # Panics
    ///
    /// If it has not exited after 60 s.
    pub fn stop(&self) {
        self.member.signal_and_wait("TERM");
    }

    /// Starts ZooKeeper again on the same port with the same data, and
    /// returns once it serves sessions. The ClickHouse servers reconnect by
    /// themselves.
    ///
    /// # Panics
    ///
    /// If it does not answer within 60 s (the message has its log).
    pub fn start(&self) {
        self.member.restart();
    }
}

/// A database created on every server of a [`Cluster`] for one test;
/// dropped `ON CLUSTER` (best effort) on `Drop`. Made by [`Cluster::database`].
#[derive(Debug)]
pub struct ClusterDatabase {
    name: String,
    http_port: u16,
    /// Every server's HTTP port.
    ports: Vec<u16>,
}

impl ClusterDatabase {
    /// The database's name (only `[a-z0-9_]`, so it needs no quoting).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The first server's HTTP interface, the same as [`Cluster::http_url`].
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Runs `sql` on the first server with this database as the default one.
    ///
    /// # Panics
    ///
    /// As [`ClickHouse::query`](crate::ClickHouse::query).
    pub fn query(&self, sql: &str) -> String {
        self.try_query(sql)
            .unwrap_or_else(|message| panic!("{message}"))
    }

    /// Like [`query`](Self::query), but a failure is returned.
    pub fn try_query(&self, sql: &str) -> Result<String, String> {
        clickhouse::run(self.http_port, Some(&self.name), sql)
    }

    /// Waits until every replica of every replicated table of the database
    /// has fetched what its shard's other replica received until now
    /// (`SYSTEM SYNC REPLICA` on each server): a read through a
    /// `Distributed` table then sees every acknowledged write, whichever
    /// replica it goes to.
    ///
    /// # Panics
    ///
    /// If a server does not answer (one that was killed, or ZooKeeper down).
    pub fn sync_replicas(&self) {
        for port in &self.ports {
            let tables = clickhouse::run(
                *port,
                None,
                &format!(
                    "SELECT table FROM system.replicas WHERE database = '{}' FORMAT TSV",
                    self.name
                ),
            )
            .unwrap_or_else(|message| panic!("{message}"));
            for table in tables.lines() {
                clickhouse::run(
                    *port,
                    None,
                    &format!("SYSTEM SYNC REPLICA {}.{table}", self.name),
                )
                .unwrap_or_else(|message| panic!("{message}"));
            }
        }
    }
}

impl Drop for ClusterDatabase {
    fn drop(&mut self) {
        // Best effort, and not for long if a server is down: the cluster is
        // gone at process exit anyway.
        let sql = format!(
            "DROP DATABASE IF EXISTS {} ON CLUSTER {CLUSTER_NAME}",
            self.name
        );
        let _ = clickhouse::run_at(self.http_port, "/?distributed_ddl_task_timeout=20", &sql);
    }
}

/// How a server shows it is ready.
#[derive(Debug, Clone, Copy)]
enum Probe {
    /// `GET /ping` answers `Ok.` on the first port.
    ClickHouse,
    /// `srvr` answers with a `Mode:` line on the first port: ZooKeeper
    /// serves sessions. (`ruok` says `imok` before that, and a ClickHouse
    /// 18.16 server whose `ON CLUSTER` worker finds no ZooKeeper at startup
    /// crashes on its first `ON CLUSTER` query.)
    ZooKeeper,
}

/// The log files worth showing when a ClickHouse server fails.
const CLICKHOUSE_LOGS: &[&str] = &["log/clickhouse-server.err.log", "stdout.log"];

/// One server process of the cluster, restartable with its data.
#[derive(Debug)]
struct Member {
    name: String,
    dir: PathBuf,
    ports: Vec<u16>,
    binary: PathBuf,
    probe: Probe,
    args: Vec<String>,
    /// The server's watchdog while it runs.
    running: Mutex<Option<Watched>>,
}

impl Member {
    fn new(name: &str, dir: PathBuf, ports: Vec<u16>, binary: PathBuf, probe: Probe) -> Member {
        let args = match probe {
            Probe::ClickHouse => vec![format!("--config-file={}/config.xml", dir.display())],
            Probe::ZooKeeper => {
                let mut classpath = ZOOKEEPER_JAR.to_owned();
                if Path::new(SLF4J_SIMPLE_JAR).is_file() {
                    classpath = format!("{classpath}:{SLF4J_SIMPLE_JAR}");
                }
                vec![
                    "-Xmx256m".into(),
                    "-XX:+UseSerialGC".into(),
                    "-XX:TieredStopAtLevel=1".into(),
                    "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn".into(),
                    "-Dzookeeper.jmx.log4j.disable=true".into(),
                    "-cp".into(),
                    classpath,
                    "org.apache.zookeeper.server.ZooKeeperServerMain".into(),
                    format!("{}/zoo.cfg", dir.display()),
                ]
            }
        };
        Member {
            name: name.to_owned(),
            dir,
            ports,
            binary,
            probe,
            args,
            running: Mutex::new(None),
        }
    }

    fn logs(&self) -> &'static [&'static str] {
        match self.probe {
            Probe::ClickHouse => CLICKHOUSE_LOGS,
            Probe::ZooKeeper => &["stdout.log"],
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Watched>> {
        // A test that panicked while holding it leaves a usable state.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates the directory and writes the configuration.
    fn prepare(&self, write: impl FnOnce(&Path) -> io::Result<()>) -> Result<(), String> {
        fs::create_dir_all(&self.dir)
            .and_then(|()| write(&self.dir))
            .map_err(|e| format!("testkit: cannot write the {} configuration: {e}", self.name))
    }

    /// Starts the process under its watchdog (not waiting for it).
    fn launch(&self) -> Result<(), String> {
        let mut running = self.lock();
        if running.is_some() {
            return Ok(());
        }
        // What the last run left: its exit status would read as "exited".
        for file in [process::EXIT_FILE, process::PID_FILE] {
            let _ = fs::remove_file(self.dir.join(file));
        }
        let watched = process::spawn(&self.dir, &self.binary, &self.args, false)
            .map_err(|e| format!("testkit: cannot start {}: {e}", self.binary.display()))?;
        *running = Some(watched);
        Ok(())
    }

    /// Waits until the process answers its probe; an error (with its logs)
    /// if it exits first or the deadline passes.
    fn wait_ready(&self, deadline: Instant) -> Result<(), String> {
        loop {
            if self.answers() {
                return Ok(());
            }
            let exited = {
                let mut running = self.lock();
                match running.as_mut() {
                    None => Some("it was stopped".to_owned()),
                    Some(watched) => watched.exited(&self.dir),
                }
            };
            if let Some(how) = exited {
                let logs = process::log_tails(&self.dir, self.logs());
                if let Some(watched) = self.lock().take() {
                    watched.finish();
                }
                return Err(format!(
                    "testkit: cluster server {} exited during startup ({how}) on ports {:?}; {logs}",
                    self.name, self.ports
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "testkit: cluster server {} did not answer on 127.0.0.1 ports {:?} within {} s; {}",
                    self.name,
                    self.ports,
                    process::START_TIMEOUT.as_secs(),
                    process::log_tails(&self.dir, self.logs())
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers(&self) -> bool {
        match self.probe {
            Probe::ClickHouse => clickhouse::ping(self.ports[0]),
            Probe::ZooKeeper => {
                four_letter_word(self.ports[0], "srvr").is_ok_and(|r| r.contains("\nMode: "))
            }
        }
    }

    /// Whether it runs (or how it ended) and its logs' tails: what a failed
    /// query's message adds, so that a server that died says why.
    fn state(&self) -> String {
        let how = {
            let mut running = self.lock();
            match running.as_mut() {
                None => Some("it was stopped or killed by the test".to_owned()),
                Some(watched) => watched.exited(&self.dir),
            }
        };
        let logs = process::log_tails(&self.dir, self.logs());
        match how {
            None => format!("testkit: cluster server {} still runs; {logs}", self.name),
            Some(how) => format!(
                "testkit: cluster server {} is down ({how}); {logs}",
                self.name
            ),
        }
    }

    fn is_running(&self) -> bool {
        let mut running = self.lock();
        match running.as_mut() {
            None => false,
            Some(watched) => watched.exited(&self.dir).is_none(),
        }
    }

    /// Sends `SIGNAL` to the server itself (not its watchdog) and waits
    /// until the watchdog reaped it; after a `TERM` that did not end it
    /// within the timeout, panics.
    fn signal_and_wait(&self, signal: &str) {
        let mut running = self.lock();
        let Some(mut watched) = running.take() else {
            return;
        };
        if watched.exited(&self.dir).is_none() {
            let pid = fs::read_to_string(self.dir.join(process::PID_FILE)).unwrap_or_default();
            let pid = pid.trim();
            assert!(
                !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()),
                "testkit: no pid recorded for cluster server {} in {}",
                self.name,
                self.dir.display()
            );
            let status = Command::new("/bin/sh")
                .args(["-c", "kill -s \"$1\" \"$2\"", "sh", signal, pid])
                .status();
            let deadline = Instant::now() + STOP_TIMEOUT;
            let gone = wait_for(deadline, || watched.exited(&self.dir).is_some()).is_ok();
            if !gone {
                // Leave no stray server behind before failing the test.
                watched.finish();
                panic!(
                    "testkit: cluster server {} (pid {pid}) still runs {} s after SIG{signal} ({status:?})",
                    self.name,
                    STOP_TIMEOUT.as_secs()
                );
            }
        }
        watched.finish();
    }

    /// Starts the process again on its ports, waiting until it answers;
    /// retries while a port of its last run is still taken.
    fn restart(&self) {
        if self.is_running() {
            return;
        }
        // An exited server's watchdog is still there: let it go.
        if let Some(watched) = self.lock().take() {
            watched.finish();
        }
        let deadline = Instant::now() + process::START_TIMEOUT;
        loop {
            let started = self.launch().and_then(|()| self.wait_ready(deadline));
            match started {
                Ok(()) => return,
                Err(message)
                    if message.contains("Address already in use") && Instant::now() < deadline =>
                {
                    thread::sleep(Duration::from_millis(200));
                }
                Err(message) => panic!("{message}"),
            }
        }
    }
}

/// Polls `done` every 50 ms until it is true or `deadline` passes.
fn wait_for(deadline: Instant, mut done: impl FnMut() -> bool) -> Result<(), ()> {
    loop {
        if done() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(());
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Sends a ZooKeeper four-letter command and returns the reply.
fn four_letter_word(port: u16, word: &str) -> io::Result<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(word.as_bytes())?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply)
}

/// Fills a template's placeholders; every placeholder must be known.
fn render(template: &str, values: &[(String, String)]) -> io::Result<String> {
    let mut out = template.to_owned();
    for (name, value) in values {
        out = out.replace(&format!("@{name}@"), value);
    }
    let placeholder = |name: &str| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    };
    let parts: Vec<&str> = out.split('@').collect();
    // A placeholder is an upper-case name between two at-signs.
    for (i, name) in parts.iter().enumerate().skip(1) {
        if i + 1 < parts.len() && placeholder(name) {
            return Err(io::Error::other(format!(
                "template placeholder @{name}@ left unfilled"
            )));
        }
    }
    Ok(out)
}

fn write_zookeeper_config(dir: &Path, zk_port: u16) -> io::Result<()> {
    fs::create_dir_all(dir.join("data"))?;
    let cfg = render(
        ZOO_CFG,
        &[
            ("DIR".into(), dir.display().to_string()),
            ("ZK_PORT".into(), zk_port.to_string()),
        ],
    )?;
    fs::write(dir.join("zoo.cfg"), cfg)
}

fn write_clickhouse_config(
    dir: &Path,
    node: &ClusterNode,
    zk_port: u16,
    tcp_ports: &[u16],
) -> io::Result<()> {
    for sub in ["data", "tmp", "user_files", "format_schemas", "log"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    let mut values = vec![
        ("DIR".to_owned(), xml_escape(&dir.display().to_string())),
        ("CLUSTER".to_owned(), CLUSTER_NAME.to_owned()),
        ("ZK_PORT".to_owned(), zk_port.to_string()),
        ("HTTP_PORT".to_owned(), node.http_port().to_string()),
        ("TCP_PORT".to_owned(), node.tcp_port().to_string()),
        (
            "INTERSERVER_PORT".to_owned(),
            node.interserver_port().to_string(),
        ),
        ("SHARD".to_owned(), node.shard.to_string()),
        ("REPLICA".to_owned(), node.name().to_owned()),
    ];
    for ((name, _, _), port) in NODES.iter().zip(tcp_ports) {
        values.push((
            format!("TCP_PORT_{}", name.to_uppercase()),
            port.to_string(),
        ));
    }
    fs::write(dir.join("config.xml"), render(CLICKHOUSE_XML, &values)?)?;
    crate::clickhouse::write_compression_config(dir)?;
    fs::write(dir.join("users.xml"), USERS_XML)
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_every_placeholder_or_say_which_is_left() {
        let filled = render(
            "a @X@ b @Y_2@",
            &[("X".into(), "1".into()), ("Y_2".into(), "2".into())],
        )
        .expect("filled");
        assert_eq!(filled, "a 1 b 2");
        let left = render("a @X@ b @Y@", &[("X".into(), "1".into())]).expect_err("left");
        assert!(left.to_string().contains("@Y@"), "{left}");
        // Lone at-signs are no placeholders; one after them still counts.
        assert_eq!(
            render("user@host", &[]).expect("no placeholder"),
            "user@host"
        );
        let late = render("a@b c @Z@", &[]).expect_err("left");
        assert!(late.to_string().contains("@Z@"), "{late}");
    }

    #[test]
    fn the_clickhouse_template_names_every_server_of_the_cluster() {
        for (name, _, _) in NODES {
            let placeholder = format!("@TCP_PORT_{}@", name.to_uppercase());
            assert!(CLICKHOUSE_XML.contains(&placeholder), "{placeholder}");
        }
    }
}
