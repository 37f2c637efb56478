//! Dev-only test helpers: real ClickHouse and Redis servers for integration tests.
//!
//! [`ClickHouse::shared`] and [`Redis::shared`] start one real server per test
//! process (the first test to ask starts it, every other test of the same test
//! binary reuses it) on spare loopback ports, with a throwaway data directory
//! under [`std::env::temp_dir`]. Tests isolate themselves with
//! [`ClickHouse::database`] (a fresh database, dropped again on `Drop`) and
//! [`Redis::key_prefix`] (a unique key prefix the test owns).
//!
//! ```no_run
//! use skyhouse_testkit::{ClickHouse, Redis};
//!
//! let ch = ClickHouse::shared();
//! let db = ch.database("records");
//! db.query("CREATE TABLE t (x UInt8) ENGINE = Memory");
//! db.query("INSERT INTO t VALUES (1)");
//! assert_eq!(db.query("SELECT count() FROM t"), "1\n");
//!
//! let redis = Redis::shared();
//! let key = format!("{}cursor", redis.key_prefix("cursor"));
//! redis.command(&["SET", key.as_str(), "42"]);
//! ```
//!
//! # Server lifetime
//!
//! Rust never runs destructors of statics, so a shared server cannot be
//! stopped from the test process itself. Each server is therefore started
//! through a small `/bin/sh` watchdog, in a process group of its own, whose
//! standard input is a pipe: the test process holds the only write end
//! (Rust opens pipes close-on-exec, so no other child inherits it) and never
//! writes to it. When the test process ends — normally, by a panic, by
//! Ctrl-C or even by `SIGKILL` — the kernel closes that end, the watchdog's
//! `read` returns end-of-file, and the watchdog kills the server with
//! `SIGKILL` (the data is throwaway, so there is no point in a graceful
//! shutdown) and deletes the temporary directory. Unlike polling the
//! parent's pid this reacts at once and cannot be fooled by pid reuse, and
//! unlike `prctl(PR_SET_PDEATHSIG)` it needs no `unsafe`. The server is gone
//! a few milliseconds after the test binary exits. (Only a `SIGKILL` of the
//! watchdog itself leaks a server.)
//!
//! # A ClickHouse cluster
//!
//! [`Cluster::shared`] starts, once per test process, a standalone ZooKeeper
//! and four ClickHouse servers (2 shards × 2 replicas, cluster
//! [`CLUSTER_NAME`]), the topology of `just cluster-up`, under the same
//! watchdog. [`Cluster::database`] makes a database `ON CLUSTER`; each
//! [`ClusterNode`] and the [`ZooKeeper`] can be killed, stopped and started
//! again with their data, for fault tests ([`Cluster::start`] gives a test
//! a cluster of its own for that).
//!
//! ```no_run
//! use skyhouse_testkit::Cluster;
//!
//! let cluster = Cluster::shared();
//! let db = cluster.database("sharded");
//! cluster.query(&format!(
//!     "CREATE TABLE {}.t ON CLUSTER skyhouse (x UInt8) ENGINE = Memory",
//!     db.name()
//! ));
//! let replica = cluster.node(2, 1);
//! replica.kill();
//! replica.start();
//! ```
//!
//! If the server binaries are missing every test that asks for a server
//! panics with a one-line hint (`just deps`); tests never skip silently.
//!
//! # A real AT Protocol network
//!
//! [`Network`] runs `node e2e/network.mjs` (`@atproto/dev-env`: an in-memory
//! PLC directory and the reference PDS on SQLite, on loopback) under the same
//! watchdog. [`Pds`] is an XRPC client for it (accounts, record writes,
//! handle and account-state changes, admin deletion and takedown),
//! [`Pds::truth`] is the PDS's own view of a DID (records from `getRepo`
//! walked with skyhouse-atproto and cross-checked with `listRecords`, handle,
//! status), [`Scenario::run`] performs every kind of write and account change
//! an indexer must handle and says what the PDS should hold afterwards, and
//! [`read_firehose`] reads `subscribeRepos`.
//!
//! ```no_run
//! # async fn demo() {
//! use skyhouse_testkit::{firehose, Network, Scenario};
//!
//! let network = Network::start();
//! let pds = network.pds();
//! let scenario = Scenario::run(&pds).await.expect("scenario");
//! let frames = firehose::read_firehose(
//!     &network.firehose_url(Some(0)),
//!     firehose::commit_of(scenario.last.did(), &scenario.last.rev),
//! )
//! .await
//! .expect("firehose replay");
//! for (did, expected) in &scenario.expected {
//!     let truth = pds.truth(did).await.expect("truth");
//!     assert_eq!(truth.records, expected.records);
//! }
//! # }
//! ```
//!
//! # The reference AppView
//!
//! [`AppViewNetwork`] runs `node e2e/network.mjs --appview`: dev-env's
//! `TestNetwork`, i.e. the network above plus the reference AppView
//! (`@atproto/bsky`) and Ozone, on the test binary's [`Postgres`].
//! [`AppViewNetwork::process_all`] waits until the AppView has indexed
//! everything the PDS emitted; [`AppView`] reads posts, profiles and feeds
//! from it; [`CountsScenario::run`] writes every case where counts, handles
//! and visibility can differ between indexers.
//!
//! ```no_run
//! # async fn demo() {
//! use skyhouse_testkit::{AppViewNetwork, CountsScenario, Viewer};
//!
//! let network = AppViewNetwork::shared();
//! let scenario = CountsScenario::run(network).await.expect("scenario");
//! network.process_all().await.expect("AppView caught up");
//! let post = network
//!     .appview()
//!     .get_post(&scenario.duplicates.post.uri, Viewer::Anonymous)
//!     .await
//!     .expect("getPosts")
//!     .expect("shown");
//! assert_eq!(post.like_count, 2); // three like records, two accounts
//! # }
//! ```
//!
//! # Faults, generated streams, comparisons
//!
//! [`proxy::FaultProxy`] sits between a client and the real ClickHouse and
//! stalls, resets, answers `502`, truncates or answers an unknown error code
//! for the requests a test picks, while traffic flows. [`synth::Synth`]
//! generates a deterministic Jetstream stream of any length and says what
//! each event must leave in ClickHouse. [`compare::Compare`] checks that two
//! databases hold the same data, table by table. [`ws::Script`] plays a
//! misbehaving WebSocket server. [`dns::DnsServer`] is a small nameserver
//! (TXT records over UDP and TCP) for handle resolution.
//!
//! # A browser
//!
//! [`Browser`] runs headless Chromium and ChromeDriver (Debian's `chromium`
//! and `chromium-driver`) under the same watchdog, reaching loopback only;
//! [`Session`] is a small WebDriver client for page tests (the query page of
//! `skyhouse search`).
#![deny(missing_docs)]

mod appview;
pub mod bench;
pub mod browser;
mod clickhouse;
mod cluster;
pub mod compare;
pub mod counts;
pub mod dashboards;
pub mod dns;
pub mod firehose;
mod http;
mod network;
mod postgres;
mod process;
pub mod proxy;
mod redis;
mod scenario;
pub mod synth;
mod truth;
pub mod ws;
mod xrpc;

pub use appview::{AppView, FeedPage, FeedViewPost, PostView, ProfileBasic, ProfileView, Viewer};
pub use browser::{Browser, Element, Session};
pub use clickhouse::{ClickHouse, TestDatabase};
pub use cluster::{Cluster, ClusterDatabase, ClusterNode, ZooKeeper, CLUSTER_NAME};
pub use counts::CountsScenario;
pub use firehose::{read_firehose, FirehoseMessage};
pub use network::{e2e_dir, AppViewInfo, AppViewNetwork, Network, NetworkInfo};
pub use postgres::Postgres;
pub use process::spare_port;
pub use redis::{PrivateRedis, Redis, Reply};
pub use scenario::{now_rfc3339, Edit, Expected, FacetExpectation, Scenario};
pub use truth::{walk_car, AccountStatus, Records, Truth, TruthError};
pub use xrpc::{Account, Auth, ListedRecord, Pds, RepoStatus, WriteOp, Written, XrpcError};

/// `(car, expected listing)` pairs from `pkg/atproto/testdata/expected/cars.tsv`
/// under `testdata`: every repository CAR the tests walk and the listing an
/// independent implementation produced for it (paths relative to `testdata`).
pub fn repo_cars(testdata: &std::path::Path) -> Vec<(String, String)> {
    let path = testdata.join("expected/cars.tsv");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (car, listing) = l.split_once('\t').expect("car<TAB>listing");
            (car.to_string(), listing.to_string())
        })
        .collect()
}

/// The workspace root (this crate is `pkg/testkit`).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
