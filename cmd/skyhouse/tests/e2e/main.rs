//! End-to-end tests of `skyhouse indexer`: the real binary, run as an operator
//! would, against the reference PDS on loopback (`@atproto/dev-env`, testkit
//! `Network`), a real ClickHouse 18.16 and real Redis servers.
//!
//! - `firehose`: a scripted day on the PDS (every kind of write and account
//!   change), indexed from its firehose, equals the PDS's own truth for
//!   every account; `/health` and `/metrics` while it runs; SIGTERM drains
//!   and leaves the cursor at the last seq.
//! - `kill`: `kill -9` at random moments while the PDS keeps writing,
//!   restarts resuming from Redis: the final state is still exact, each
//!   record once.
//! - `jetstream`: the real production capture through the binary, Jetstream
//!   JSON and firehose frames of the same events, give the same tables.
//! - `appview`: the counts scenario on the reference AppView's network,
//!   indexed live, by backfill alone and by both: every post's and
//!   profile's counts and handles equal the AppView's, except the
//!   differences README "Counts" documents, which hold skyhouse's rule.
//! - `backfill`: `skyhouse backfill enqueue` + `work` land every active
//!   repository of the scenario; the workers' dashboard against their scrape;
//!   a worker killed with -9 is taken over by a second one.
//! - `page`: the query page of `skyhouse search` in headless Chromium over
//!   WebDriver: key, tables, a query's rows and chart, the shared URL,
//!   examples, errors; the README's screenshot.
//! - `cluster`: one scenario (firehose, backfill, an admin cleanup) indexed
//!   on one server and on the 2 × 2 cluster gives the same answer from every
//!   search route and feed and the same tables.
//! - `cluster_faults`: on a cluster of their own while the PDS keeps
//!   writing: `kill -9` of one replica of each shard, ZooKeeper stopped for
//!   20 s (read-only replicas), a whole shard down (writes stall, `search`
//!   answers 503): nothing lost or dead-lettered, the cursor never ahead of
//!   ClickHouse, the replicas converge.
//! - `cluster_services`: on the shared cluster, the indexer on the
//!   production capture (Jetstream and frames), the relay fed by the
//!   indexer, a resync and `backfill status`, `skyhouse monitor`, API keys:
//!   the same answers as on one server.
//! - `search`: `skyhouse search` over the indexed scenario: search, stats,
//!   records, cursors, keys, the SQL explorer, hostile parameters, OpenAPI.
//! - `redis_down`: Redis killed mid-stream: indexing goes on, the cursor is
//!   saved once Redis is back.
//! - `faults`: a ClickHouse behind a fault-injecting proxy (stalls, resets,
//!   502 pages, truncated answers, unknown error codes), Redis stopped for
//!   30 s, a source that cuts frames and sends garbage: nothing is lost, the
//!   process recovers by itself, the cursor never runs ahead of ClickHouse.
//! - `health`: `/health` names what fails: an unreachable source, lag over
//!   `--health-max-lag-secs` (and passes once the source is idle), Redis
//!   stopped under a running service; ready on the PDS's firehose.
//! - `shutdown`: SIGTERM against a ClickHouse that never answers exits
//!   non-zero after `--shutdown-grace-secs`, naming the unacknowledged rows,
//!   the cursor not moved; a second SIGTERM exits at once; with a healthy
//!   ClickHouse SIGTERM writes what the writer held and exits 0.
//!
//! The PDS's `subscribeRepos` replays events with `seq > cursor`, and the
//! indexer's `--cursor 0` means "live tip", so a replay from the first event
//! is impossible; each network therefore starts with a sentinel account
//! (seq 1 is one of its events) and the indexer starts at cursor 1.
#![allow(clippy::unwrap_used)] // a panic is the failure report

mod appview;
mod backfill;
mod cluster;
mod cluster_faults;
mod cluster_services;
mod faults;
mod firehose;
mod health;
mod jetstream;
mod kill;
mod page;
mod redis_down;
mod relay;
mod resync;
mod search;
mod shutdown;

pub use skyhouse_testkit::spare_port;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use skyhouse_testkit::{
    firehose as fh, AccountStatus, Network, Pds, Scenario, TestDatabase, Truth, Written,
};

/// How long any wait of these tests may take before it fails: a guard
/// against a hang, never a performance expectation.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// Poll interval of the waits.
const POLL: Duration = Duration::from_millis(100);

/// Runs `skyhouse ARGS` to completion with an empty environment (nothing of
/// the caller's `CLICKHOUSE_*`, `REDIS_*`, `WS_URL` … leaks in).
pub fn skyhouse(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skyhouse"))
        .env_clear()
        .env("RUST_LOG", "info")
        .args(args)
        .output()
        .expect("run skyhouse")
}

/// Standard output and error of a finished command.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// A test's database: on the shared server, or on the shared cluster
/// (`--clickhouse-cluster`, read through the `Distributed` tables).
#[derive(Debug)]
pub enum Db {
    /// On the shared single server.
    Single(TestDatabase),
    /// On a 2 × 2 cluster, whose first server's URL it holds.
    Cluster(skyhouse_testkit::ClusterDatabase, String),
}

impl Db {
    /// The database's name.
    pub fn name(&self) -> &str {
        match self {
            Db::Single(d) => d.name(),
            Db::Cluster(d, _) => d.name(),
        }
    }

    /// On a cluster, waits until every replica holds what its shard
    /// received so far ([`ClusterDatabase::sync_replicas`](skyhouse_testkit::ClusterDatabase::sync_replicas)):
    /// a read right after a write otherwise may go to the replica that has
    /// not fetched it yet. Nothing to wait for on one server.
    pub fn sync_replicas(&self) {
        if let Db::Cluster(d, _) = self {
            d.sync_replicas();
        }
    }

    /// Runs `sql` in the database (on a cluster through its first server).
    pub fn query(&self, sql: &str) -> String {
        match self {
            Db::Single(d) => d.query(sql),
            Db::Cluster(d, _) => d.query(sql),
        }
    }
}

/// One indexer deployment: a fresh migrated database, a Redis key prefix,
/// a source and its URL. Every `skyhouse` command of the test goes through
/// it, so `indexer` and `cursor` see the same flags.
#[derive(Debug)]
pub struct Setup {
    pub db: Db,
    pub redis_url: String,
    pub prefix: String,
    pub source: &'static str,
    pub url: String,
    /// Extra `indexer` flags of every start.
    pub indexer_flags: Vec<String>,
}

impl Setup {
    /// A fresh database on the shared ClickHouse, migrated with
    /// `skyhouse migrate up`.
    pub fn new(hint: &str, redis_url: String, source: &'static str, url: String) -> Setup {
        let db = Db::Single(skyhouse_testkit::ClickHouse::shared().database(hint));
        Setup::with_db(db, hint, redis_url, source, url, None)
    }

    /// Like [`Setup::new`], on `cluster`: every command gets
    /// `--clickhouse-cluster` and talks to its first server.
    pub fn on_cluster(
        cluster: &skyhouse_testkit::Cluster,
        hint: &str,
        redis_url: String,
        source: &'static str,
        url: String,
    ) -> Setup {
        let db = Db::Cluster(cluster.database(hint), cluster.http_url());
        let _migrating = cluster.ddl_lock();
        Setup::with_db(db, hint, redis_url, source, url, Some(cluster))
    }

    fn with_db(
        db: Db,
        hint: &str,
        redis_url: String,
        source: &'static str,
        url: String,
        cluster: Option<&skyhouse_testkit::Cluster>,
    ) -> Setup {
        let prefix = if redis_url == skyhouse_testkit::Redis::shared().url() {
            skyhouse_testkit::Redis::shared().key_prefix(hint)
        } else {
            format!("{hint}:")
        };
        let setup = Setup {
            db,
            redis_url,
            prefix,
            source,
            url,
            indexer_flags: Vec::new(),
        };
        let mut args = strings(&["migrate", "up"]);
        args.extend(setup.clickhouse_flags());
        let out = match cluster {
            None => skyhouse(&args),
            // A server whose ON CLUSTER worker stopped is restarted while
            // the migration waits on it (see Cluster::revive_ddl_workers).
            // When that server is the one the migration talks to, the
            // restart drops its connection: then `migrate up` runs again,
            // as an operator would (a migration interrupted after its
            // column changes runs again from its first statement).
            Some(cluster) => {
                let mut attempt = 1;
                loop {
                    let child = Command::new(env!("CARGO_BIN_EXE_skyhouse"))
                        .env_clear()
                        .env("RUST_LOG", "info")
                        .args(&args)
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .spawn()
                        .expect("run skyhouse");
                    let waiting = thread::spawn(move || child.wait_with_output());
                    let mut revived = Vec::new();
                    while !waiting.is_finished() {
                        revived.extend(cluster.revive_ddl_workers());
                        thread::sleep(Duration::from_millis(500));
                    }
                    let out = waiting.join().unwrap().expect("run skyhouse");
                    if out.status.success() || revived.is_empty() || attempt == 3 {
                        break out;
                    }
                    eprintln!(
                        "migrate up again: {revived:?} restarted during attempt {attempt}: {}",
                        text(&out).lines().last().unwrap_or_default()
                    );
                    attempt += 1;
                }
            }
        };
        assert!(out.status.success(), "migrate up: {}", text(&out));
        setup
    }

    fn clickhouse_flags(&self) -> Vec<String> {
        match &self.db {
            Db::Single(_) => vec![
                "--clickhouse-address".into(),
                skyhouse_testkit::ClickHouse::shared().http_url(),
                "--database".into(),
                self.db.name().into(),
            ],
            Db::Cluster(_, address) => vec![
                "--clickhouse-address".into(),
                address.clone(),
                "--database".into(),
                self.db.name().into(),
                "--clickhouse-cluster".into(),
                skyhouse_testkit::CLUSTER_NAME.into(),
            ],
        }
    }

    /// `--redis`, `--redis-prefix`.
    fn redis_flags(&self) -> Vec<String> {
        vec![
            "--redis".into(),
            self.redis_url.clone(),
            "--redis-prefix".into(),
            self.prefix.clone(),
        ]
    }

    /// `skyhouse backfill status`: each line's name → value.
    pub fn backfill_status(&self) -> BTreeMap<String, String> {
        let mut args = strings(&["backfill", "status"]);
        args.extend(self.redis_flags());
        args.extend(self.clickhouse_flags());
        let out = skyhouse(&args);
        assert!(out.status.success(), "backfill status: {}", text(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect()
    }

    /// Backfill entries delivered to a worker and not acknowledged yet
    /// (`skyhouse backfill status`).
    pub fn pending_entries(&self) -> u64 {
        let status = self.backfill_status();
        status
            .get("pending")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no pending line in {status:?}"))
    }

    /// `--source`, `--url`, `--redis`, `--redis-prefix`.
    fn source_flags(&self) -> Vec<String> {
        vec![
            "--source".into(),
            self.source.into(),
            "--url".into(),
            self.url.clone(),
            "--redis".into(),
            self.redis_url.clone(),
            "--redis-prefix".into(),
            self.prefix.clone(),
        ]
    }

    /// `skyhouse cursor get`: the saved cursor, `None` when there is none.
    pub fn cursor(&self) -> Option<i64> {
        let mut args = strings(&["cursor", "get"]);
        args.extend(self.source_flags());
        let out = skyhouse(&args);
        assert!(out.status.success(), "cursor get: {}", text(&out));
        let printed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if printed == "none" {
            None
        } else {
            Some(
                printed
                    .parse()
                    .unwrap_or_else(|_| panic!("cursor get printed {printed:?}")),
            )
        }
    }

    /// `skyhouse cursor set VALUE`.
    pub fn set_cursor(&self, value: i64) {
        let mut args = strings(&["cursor", "set", &value.to_string()]);
        args.extend(self.source_flags());
        let out = skyhouse(&args);
        assert!(out.status.success(), "cursor set: {}", text(&out));
    }

    /// Starts `skyhouse indexer` with this setup's flags, `extra` and a
    /// spare metrics port.
    pub fn start(&self, extra: &[&str]) -> Indexer {
        let port = spare_port();
        let mut args = strings(&["indexer"]);
        args.extend(self.source_flags());
        args.extend(self.clickhouse_flags());
        args.extend(self.indexer_flags.iter().cloned());
        args.extend(strings(extra));
        args.extend(["--metrics-addr".into(), format!("127.0.0.1:{port}")]);
        Indexer::spawn(&args, port)
    }

    /// Runs query `sql` (with `FORMAT JSONEachRow` appended) and returns the rows.
    pub fn rows(&self, sql: &str) -> Vec<Map<String, Value>> {
        self.db
            .query(&format!("{sql} FORMAT JSONEachRow"))
            .lines()
            .map(|l| match serde_json::from_str(l).unwrap() {
                Value::Object(m) => m,
                other => panic!("not a row: {other}"),
            })
            .collect()
    }

    /// A single number (`SELECT count() …`).
    pub fn number(&self, sql: &str) -> u64 {
        let out = self.db.query(sql);
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{sql}: not a number: {out:?}"))
    }
}

/// A running `skyhouse indexer` child process. Dropping it kills the process
/// (SIGKILL); its log (standard error) is kept in a file and shown when a
/// wait fails, and left on disk when the test panics.
#[derive(Debug)]
pub struct Indexer {
    child: Child,
    log: PathBuf,
    /// `http://127.0.0.1:PORT`: `/metrics` and `/health`.
    pub metrics_url: String,
    exit: Option<ExitStatus>,
}

impl Indexer {
    fn spawn(args: &[String], metrics_port: u16) -> Indexer {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let log = std::env::temp_dir().join(format!(
            "skyhouse-e2e-{}-{}.log",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let file = fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_skyhouse"))
            .env_clear()
            .env("RUST_LOG", "info")
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start skyhouse indexer");
        Indexer {
            child,
            log,
            metrics_url: format!("http://127.0.0.1:{metrics_port}"),
            exit: None,
        }
    }

    /// Where its log (standard output and error) goes.
    pub fn log_path(&self) -> PathBuf {
        self.log.clone()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last 40 lines of its log.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- indexer log {} (tail) ---\n{}",
            self.log.display(),
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }

    /// The whole log.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its exit status if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().unwrap();
        }
        self.exit
    }

    /// Panics (with the log) if the process has exited.
    #[track_caller]
    pub fn assert_running(&mut self) {
        if let Some(status) = self.exited() {
            panic!("the indexer exited ({status}):\n{}", self.log_tail());
        }
    }

    /// `kill -9`, then reap it.
    pub fn kill9(&mut self) {
        if self.exited().is_none() {
            self.child.kill().unwrap();
            self.exit = Some(self.child.wait().unwrap());
        }
    }

    /// SIGTERM, then wait for it to exit; returns its status.
    pub fn terminate(&mut self) -> ExitStatus {
        if let Some(status) = self.exited() {
            panic!(
                "the indexer had already exited ({status}):\n{}",
                self.log_tail()
            );
        }
        let out = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "kill -TERM: {}", text(&out));
        self.wait_exit()
    }

    /// Waits for the process to end by itself (a `file://` replay ends at
    /// the end of the capture).
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the indexer did not exit within {} s:\n{}",
                DEADLINE.as_secs(),
                self.log_tail()
            );
            thread::sleep(POLL);
        }
    }

    /// Waits until the cursor saved in Redis (`skyhouse cursor get`) is
    /// `target` or more; the process must keep running meanwhile.
    pub fn wait_for_cursor(&mut self, setup: &Setup, target: i64) -> i64 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            self.assert_running();
            let saved = setup.cursor();
            if let Some(c) = saved.filter(|c| *c >= target) {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "the saved cursor did not reach {target} within {} s (it is {saved:?}):\n{}",
                DEADLINE.as_secs(),
                self.log_tail()
            );
            thread::sleep(POLL);
        }
    }

    /// `GET /PATH` on the metrics address: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("{}{path}", self.metrics_url))
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.log_tail()));
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }
}

impl Indexer {
    /// Waits until `/health` answers 200 (every check passes: for the
    /// search API, its first refresh is done). Panics after [`DEADLINE`].
    pub async fn ready(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            self.assert_running();
            let (status, body) = match reqwest::get(format!("{}/health", self.metrics_url)).await {
                Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                Err(e) => (0, format!("GET /health: {e}")),
            };
            if status == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/health never answered 200: {body}\n{}",
                self.log_tail()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Scrapes `/metrics` until `ok(scrape)` (a gauge may be set a moment
    /// after the state it reports became visible elsewhere); returns the
    /// scrape. Panics after [`DEADLINE`].
    pub async fn metrics_until(&mut self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            self.assert_running();
            // Not listening yet (a service may connect to its servers
            // first): try again until the deadline.
            let (status, scrape) = match reqwest::get(format!("{}/metrics", self.metrics_url)).await
            {
                Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                Err(e) => (0, format!("GET /metrics: {e}")),
            };
            if status == 200 && ok(&scrape) {
                return scrape;
            }
            assert!(
                Instant::now() < deadline,
                "/metrics never showed {what}:\n{scrape}\n{}",
                self.log_tail()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("indexer log kept: {}", self.log.display());
        } else {
            let _ = fs::remove_file(&self.log);
        }
    }
}

/// Polls `probe` until it gives a value; panics with `explain()` after
/// [`DEADLINE`].
pub fn wait_until<T>(
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
    explain: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached within {} s\n{}",
            DEADLINE.as_secs(),
            explain()
        );
        thread::sleep(POLL);
    }
}

/// Like [`wait_until`], for a wait whose length grows with the work (many
/// faults, a slow machine): fails once `progress()` has not changed for
/// [`DEADLINE`], or after ten of them in all.
pub fn wait_while_progressing<T, P: PartialEq + std::fmt::Debug>(
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
    mut progress: impl FnMut() -> P,
    explain: impl Fn() -> String,
) -> T {
    let start = Instant::now();
    let (mut last, mut moved) = (progress(), Instant::now());
    loop {
        if let Some(v) = probe() {
            return v;
        }
        let now = progress();
        if now != last {
            (last, moved) = (now, Instant::now());
        }
        assert!(
            moved.elapsed() < DEADLINE && start.elapsed() < DEADLINE * 10,
            "{what}: not reached, no progress for {} s ({} s in all; last progress {last:?})\n{}",
            moved.elapsed().as_secs(),
            start.elapsed().as_secs(),
            explain()
        );
        thread::sleep(POLL);
    }
}

/// Creates an account before anything else on a fresh network, so that the
/// PDS's first events (seq 1 …) are not the test's; returns its DID.
pub async fn sentinel(pds: &Pds) -> String {
    let suffix = std::process::id() % 100_000;
    pds.create_account(&format!("sentinel{suffix}.test"))
        .await
        .unwrap()
        .did
}

/// The firehose of `network` without a cursor (the indexer adds its own).
pub fn firehose_url(network: &Network) -> String {
    network.firehose_url(None)
}

/// Every firehose message up to `last`'s commit (the PDS's whole backlog).
pub async fn backlog(network: &Network, last: &Written) -> Vec<fh::FirehoseMessage> {
    fh::read_firehose(
        &network.firehose_url(Some(0)),
        fh::commit_of(last.did(), &last.rev),
    )
    .await
    .unwrap()
}

/// The seq of `last`'s commit.
pub async fn seq_of(network: &Network, last: &Written) -> i64 {
    backlog(network, last)
        .await
        .last()
        .and_then(|m| m.frame.seq())
        .unwrap()
}

/// Live records in ClickHouse: DID → (collection, rkey) → CID.
pub fn live_records(setup: &Setup) -> BTreeMap<String, skyhouse_testkit::Records> {
    let mut out: BTreeMap<String, skyhouse_testkit::Records> = BTreeMap::new();
    for row in setup.rows("SELECT did, collection, rkey, cid FROM records FINAL WHERE deleted = 0")
    {
        let s = |k: &str| row[k].as_str().unwrap().to_owned();
        out.entry(s("did"))
            .or_default()
            .insert((s("collection"), s("rkey")), s("cid"));
    }
    out
}

/// `identities`: DID → handle.
pub fn handles(setup: &Setup) -> BTreeMap<String, String> {
    setup
        .rows("SELECT did, handle FROM identities FINAL")
        .into_iter()
        .map(|r| {
            (
                r["did"].as_str().unwrap().to_owned(),
                r["handle"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// `accounts`: DID → (active, status).
pub fn account_states(setup: &Setup) -> BTreeMap<String, (u64, String)> {
    setup
        .rows("SELECT did, active, status FROM accounts FINAL")
        .into_iter()
        .map(|r| {
            (
                r["did"].as_str().unwrap().to_owned(),
                (
                    r["active"].as_u64().unwrap(),
                    r["status"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

/// ClickHouse holds exactly what the PDS holds for every DID of `truths`:
/// the same live records with the same CIDs (nothing deleted visible), the
/// handle, the account state; and no live record of any DID outside
/// `truths` and `others`. Every difference is listed.
#[track_caller]
pub fn assert_matches_truth(setup: &Setup, truths: &BTreeMap<String, Truth>, others: &[&str]) {
    let records = live_records(setup);
    let handles = handles(setup);
    let accounts = account_states(setup);
    let empty = skyhouse_testkit::Records::new();
    let mut diffs = Vec::new();
    for (did, truth) in truths {
        let got = records.get(did).unwrap_or(&empty);
        for (key, cid) in &truth.records {
            match got.get(key) {
                Some(c) if c == cid => {}
                other => diffs.push(format!(
                    "{did} {key:?}: PDS has {cid}, ClickHouse {other:?}"
                )),
            }
        }
        for (key, cid) in got {
            if !truth.records.contains_key(key) {
                diffs.push(format!(
                    "{did} {key:?}: visible in ClickHouse ({cid}), not on the PDS"
                ));
            }
        }
        let account = accounts.get(did);
        match (&truth.status, account) {
            (AccountStatus::Active, Some((1, _))) => {}
            (AccountStatus::Deactivated, Some((0, s))) if s == "deactivated" => {}
            (AccountStatus::Takendown, Some((0, s))) if s == "takendown" => {}
            (AccountStatus::Deleted, Some((0, s))) if s == "deleted" => {}
            (status, got) => diffs.push(format!("{did}: status {status:?}, accounts row {got:?}")),
        }
        match (&truth.handle, handles.get(did)) {
            (Some(h), Some(got)) if h == got => {}
            // A deleted account has no handle; an identities row left
            // behind is hidden by its `accounts` status (checked above).
            (None, _) => {}
            (want, got) => diffs.push(format!("{did}: handle {want:?}, identities {got:?}")),
        }
    }
    for (did, got) in &records {
        if !truths.contains_key(did) && !others.contains(&did.as_str()) {
            diffs.push(format!(
                "{did}: {} live records of an unknown DID",
                got.len()
            ));
        }
    }
    let total: usize = truths.values().map(|t| t.records.len()).sum();
    assert!(
        diffs.is_empty(),
        "ClickHouse differs from the PDS in {} ways ({} DIDs, {total} records on the PDS):\n{}",
        diffs.len(),
        truths.len(),
        diffs.join("\n")
    );
}

/// Each record appears once in query results: no key of `records` or of a
/// typed table has two live rows.
#[track_caller]
pub fn assert_each_record_once(setup: &Setup) {
    let mut dups = setup.rows(
        "SELECT did, collection, rkey, count() AS n FROM records FINAL WHERE deleted = 0 \
         GROUP BY did, collection, rkey HAVING n > 1",
    );
    for table in [
        "posts",
        "likes",
        "reposts",
        "follows",
        "blocks",
        "profiles",
        "lists",
        "list_items",
        "threadgates",
        "feed_generators",
    ] {
        dups.extend(setup.rows(&format!(
            "SELECT '{table}' AS t, did, rkey, count() AS n FROM {table} FINAL WHERE deleted = 0 \
             GROUP BY did, rkey HAVING n > 1"
        )));
    }
    dups.extend(setup.rows(
        "SELECT 'identities' AS t, did, count() AS n FROM identities FINAL GROUP BY did HAVING n > 1",
    ));
    dups.extend(setup.rows(
        "SELECT 'accounts' AS t, did, count() AS n FROM accounts FINAL GROUP BY did HAVING n > 1",
    ));
    assert!(
        dups.is_empty(),
        "keys with more than one live row: {dups:?}"
    );
}

/// The typed tables agree with what the scenario wrote: facets, replies,
/// the quote, the edits, likes, reposts, follows, the block, the list, the
/// threadgate, the feed generator; deleted records are gone from them too.
#[track_caller]
pub fn assert_scenario_tables(setup: &Setup, scenario: &Scenario) {
    let q = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
    let one = |table: &str, w: &Written, cols: &str| -> Map<String, Value> {
        let rows = setup.rows(&format!(
            "SELECT cid, {cols} FROM {table} FINAL WHERE deleted = 0 AND did = {} AND rkey = {}",
            q(w.did()),
            q(w.rkey())
        ));
        assert_eq!(rows.len(), 1, "{table} {}: {rows:?}", w.uri);
        assert_eq!(rows[0]["cid"], w.cid.as_str(), "{table} {}", w.uri);
        rows[0].clone()
    };
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };

    let f = &scenario.facets;
    let post = one(
        "posts",
        &scenario.facet_post,
        "mentions, links, tags, langs, text",
    );
    assert_eq!(strs(&post["mentions"]), vec![f.mention.clone()]);
    assert_eq!(strs(&post["links"]), vec![f.link.clone()]);
    assert_eq!(strs(&post["tags"]), vec![f.tag.clone()]);
    assert_eq!(strs(&post["langs"]), f.langs);
    let german = one("posts", &scenario.german_post, "langs");
    assert_eq!(strs(&german["langs"]), vec!["de".to_owned()]);

    let reply = one("posts", &scenario.reply, "reply_root_uri, reply_parent_uri");
    assert_eq!(reply["reply_root_uri"], scenario.facet_post.uri.as_str());
    assert_eq!(reply["reply_parent_uri"], scenario.facet_post.uri.as_str());
    let nested = one(
        "posts",
        &scenario.nested_reply,
        "reply_root_uri, reply_parent_uri",
    );
    assert_eq!(nested["reply_root_uri"], scenario.facet_post.uri.as_str());
    assert_eq!(nested["reply_parent_uri"], scenario.reply.uri.as_str());
    let quote = one("posts", &scenario.quote, "quote_uri, quote_cid, embed_kind");
    assert_eq!(quote["quote_uri"], scenario.facet_post.uri.as_str());
    assert_eq!(quote["quote_cid"], scenario.facet_post.cid.as_str());
    assert_ne!(quote["embed_kind"], "", "{quote:?}");

    // Edits: the new CID and content (`one` checks the CID of `after`).
    for edit in &scenario.edits {
        assert_ne!(edit.before.cid, edit.after.cid);
        let table = if edit.after.collection() == "app.bsky.feed.post" {
            "posts"
        } else {
            "profiles"
        };
        let cols = if table == "posts" {
            "text"
        } else {
            "display_name"
        };
        let row = one(table, &edit.after, cols);
        let want = if table == "posts" {
            "this post was edited"
        } else {
            "Alice A."
        };
        assert_eq!(row[cols], want, "{}", edit.after.uri);
    }

    for like in &scenario.likes {
        let row = one("likes", like, "subject_uri, subject_did");
        assert_eq!(row["subject_uri"], scenario.facet_post.uri.as_str());
        assert_eq!(row["subject_did"], scenario.facet_post.did());
    }
    let likers: BTreeSet<String> = setup
        .rows(&format!(
            "SELECT did FROM likes FINAL WHERE deleted = 0 AND subject_uri = {}",
            q(&scenario.facet_post.uri)
        ))
        .iter()
        .map(|r| r["did"].as_str().unwrap().to_owned())
        .collect();
    let want: BTreeSet<String> = scenario.likes.iter().map(|w| w.did().to_owned()).collect();
    assert_eq!(
        likers, want,
        "likers of the facet post (carol's like was deleted, frank's account)"
    );
    let repost = one("reposts", &scenario.repost, "subject_uri");
    assert_eq!(repost["subject_uri"], scenario.facet_post.uri.as_str());

    let dids: Vec<String> = scenario.dids().map(q).collect();
    let follows: BTreeSet<(String, String)> = setup
        .rows(&format!(
            "SELECT did, subject_did FROM follows FINAL WHERE deleted = 0 AND did IN ({})",
            dids.join(",")
        ))
        .iter()
        .map(|r| {
            (
                r["did"].as_str().unwrap().to_owned(),
                r["subject_did"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = scenario
        .follows
        .iter()
        .map(|w| {
            let subject = setup.rows(&format!(
                "SELECT subject_did FROM follows FINAL WHERE did = {} AND rkey = {}",
                q(w.did()),
                q(w.rkey())
            ));
            assert_eq!(subject.len(), 1, "follow {}", w.uri);
            (
                w.did().to_owned(),
                subject[0]["subject_did"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(follows, want, "live follows");
    let block = one("blocks", &scenario.block, "subject_did");
    assert_eq!(block["subject_did"], scenario.reactivated.as_str());

    let list = one("lists", &scenario.list, "name, purpose");
    assert_eq!(list["name"], "friends");
    assert_eq!(list["purpose"], "app.bsky.graph.defs#curatelist");
    let members: BTreeSet<String> = scenario
        .list_items
        .iter()
        .map(|w| {
            let row = one("list_items", w, "list_uri, subject_did");
            assert_eq!(row["list_uri"], scenario.list.uri.as_str());
            row["subject_did"].as_str().unwrap().to_owned()
        })
        .collect();
    let want: BTreeSet<String> = ["bob", "carol"]
        .iter()
        .map(|n| scenario.accounts[n].did.clone())
        .collect();
    assert_eq!(members, want);
    let gate = one("threadgates", &scenario.threadgate, "post_uri");
    assert_eq!(gate["post_uri"], scenario.facet_post.uri.as_str());
    let feed = one(
        "feed_generators",
        &scenario.feed_generator,
        "service_did, display_name",
    );
    assert_eq!(feed["service_did"], "did:web:feeds.example.com");
    assert_eq!(feed["display_name"], "What's hot");

    // Deleted records: no live row in records or their typed table.
    for w in &scenario.deleted {
        let table = match w.collection() {
            "app.bsky.feed.post" => "posts",
            "app.bsky.feed.like" => "likes",
            "app.bsky.graph.follow" => "follows",
            other => panic!("scenario deleted a {other}"),
        };
        for (t, extra) in [
            (table, String::new()),
            (
                "records",
                format!(" AND collection = {}", q(w.collection())),
            ),
        ] {
            let n = setup.number(&format!(
                "SELECT count() FROM {t} FINAL WHERE deleted = 0 AND did = {} AND rkey = {}{extra}",
                q(w.did()),
                q(w.rkey())
            ));
            assert_eq!(n, 0, "deleted {} still live in {t}", w.uri);
        }
    }
    // The deleted account: nothing of it in any typed table either.
    for table in ["posts", "likes", "follows"] {
        let n = setup.number(&format!(
            "SELECT count() FROM {table} FINAL WHERE deleted = 0 AND did = {}",
            q(&scenario.deleted_account)
        ));
        assert_eq!(n, 0, "the deleted account still has live {table}");
    }
    assert_eq!(
        setup.number("SELECT count() FROM dead_letters"),
        0,
        "{:?}",
        setup.rows("SELECT * FROM dead_letters")
    );
}

/// The value of the first sample of `metric` whose labels contain every
/// `label="value"` of `labels`, from a Prometheus text scrape.
pub fn metric(scrape: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    scrape.lines().find_map(|line| {
        if line.starts_with('#') {
            return None;
        }
        let (name_labels, value) = line.rsplit_once(' ')?;
        let (name, rest) = match name_labels.split_once('{') {
            Some((n, r)) => (n, r),
            None => (name_labels, ""),
        };
        (name == metric && labels.iter().all(|l| rest.contains(l)))
            .then(|| value.parse().ok())
            .flatten()
    })
}

/// A small deterministic generator (splitmix64) for the random kill times.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }
}

/// A summary of the differences between two query results, for messages.
pub fn diff_lines(a: &str, b: &str) -> String {
    let (a, b): (BTreeSet<&str>, BTreeSet<&str>) = (a.lines().collect(), b.lines().collect());
    let mut out = String::new();
    for l in a.difference(&b).take(10) {
        let _ = writeln!(out, "- {l}");
    }
    for l in b.difference(&a).take(10) {
        let _ = writeln!(out, "+ {l}");
    }
    out
}
