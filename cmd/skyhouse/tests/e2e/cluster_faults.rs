//! Faults of the 2 × 2 cluster with real processes, each test on a cluster
//! of its own (its servers are killed or stopped), while the reference PDS
//! keeps writing (`kill::write_while_killing`) and `skyhouse indexer`,
//! talking to `s1r1`, ingests its firehose:
//!
//! - `kill -9` of one replica of each shard, then a restart;
//! - ZooKeeper stopped for 20 s, longer than the servers' 10 s session: the
//!   replicated tables turn read-only, the writer retries, the cursor never
//!   passes what ClickHouse holds, ingestion resumes by itself;
//! - both servers of shard 2 stopped: writes stall, `skyhouse search`
//!   answers 503 and `/health` names the shard check, until the shard is
//!   back.
//!
//! Each ends the same way ([`Ingestion::ends_as_truth`]): the cursor reaches
//! the last event, the replicas converge, the tables equal the PDS's truth,
//! each record once, nothing dead-lettered.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use skyhouse_testkit::{Cluster, ClusterNode, Network, Pds, Redis};
use tokio::task::JoinHandle;

use crate::kill::{assert_covered, newest_versions, write_while_killing, written_up_to, Done, Key};
use crate::{
    assert_each_record_once, assert_matches_truth, firehose_url, sentinel, seq_of, wait_until,
    Indexer, Setup, DEADLINE,
};

/// How long ZooKeeper stays stopped: twice the servers' session timeout
/// (`session_timeout_ms` 10 s in `scripts/cluster/clickhouse.xml`).
const ZOOKEEPER_OUTAGE: Duration = Duration::from_secs(20);

/// The indexer ingesting a PDS that keeps writing, into a database of its
/// own on a cluster.
struct Ingestion {
    network: Network,
    pds: Pds,
    sentinel: String,
    setup: Setup,
    indexer: Indexer,
    stop: Arc<AtomicBool>,
    writes: JoinHandle<Done>,
}

impl Ingestion {
    /// A network, a database `hint` on `cluster`, the indexer from the
    /// first event (small, frequent batches: many acknowledgements and
    /// cursor saves), and the PDS's writes under way.
    async fn start(cluster: &Cluster, hint: &str) -> Ingestion {
        let network = Network::start();
        let pds = network.pds();
        let sentinel = sentinel(&pds).await;
        let mut setup = Setup::on_cluster(
            cluster,
            hint,
            Redis::shared().url(),
            "firehose",
            firehose_url(&network),
        );
        setup.indexer_flags = ["--batch-rows", "25", "--batch-age-ms", "50"]
            .map(String::from)
            .to_vec();
        setup.set_cursor(1);
        let indexer = setup.start(&[]);
        let stop = Arc::new(AtomicBool::new(false));
        let writes = tokio::spawn(write_while_killing(pds.clone(), stop.clone()));
        Ingestion {
            network,
            pds,
            sentinel,
            setup,
            indexer,
            stop,
            writes,
        }
    }

    /// Waits until the saved cursor is past `after` (the indexer writes);
    /// returns it.
    fn cursor_past(&mut self, after: i64) -> i64 {
        self.indexer.wait_for_cursor(&self.setup, after + 1)
    }

    /// The saved cursor (the indexer saved one).
    fn cursor(&self) -> i64 {
        self.setup.cursor().expect("a saved cursor")
    }

    /// Stops the PDS's writes (after at least their minimum) and waits for
    /// the last one.
    async fn finish_writes(&mut self) -> Done {
        self.stop.store(true, Ordering::Relaxed);
        (&mut self.writes).await.unwrap()
    }

    /// After the fault: the saved cursor reaches the last event, the deleted
    /// accounts are tombstoned, the replicas of `cluster` converge (nothing
    /// queued, none read-only, both replicas of each shard the same rows,
    /// every shard some), and the tables equal the PDS's truth, each record
    /// once, nothing dead-lettered; the indexer exits 0 on SIGTERM with the
    /// cursor at the last event. Returns the indexer's log.
    async fn ends_as_truth(&mut self, cluster: &Cluster, done: Done) -> String {
        let setup = &self.setup;
        let last_seq = seq_of(&self.network, &done.last).await;
        self.indexer.wait_for_cursor(setup, last_seq);
        let indexer = &self.indexer;
        let gone = [done.scenario.deleted_account.clone(), done.doomed.clone()];
        wait_until(
            "the deleted accounts' rows tombstoned",
            || {
                let live = setup.number(&format!(
                    "SELECT count() FROM records FINAL WHERE deleted = 0 AND did IN ('{}', '{}')",
                    gone[0], gone[1]
                ));
                (live == 0).then_some(())
            },
            || indexer.log_tail(),
        );
        let name = setup.db.name().to_owned();
        wait_until(
            "the replicas converged",
            || {
                let same = (1..=2).all(|shard| {
                    replica_digest(cluster.node(shard, 1), &name)
                        == replica_digest(cluster.node(shard, 2), &name)
                });
                (replicas_behind(cluster, &name) == 0 && same).then_some(())
            },
            || indexer.log_tail(),
        );
        for shard in 1..=2 {
            let d = replica_digest(cluster.node(shard, 1), &name);
            assert!(!d.starts_with("0\t"), "shard {shard} holds no records");
        }
        let mut dids: Vec<&str> = done.scenario.dids().collect();
        dids.extend(done.dids.iter().map(String::as_str));
        let truths = self.pds.truths(dids).await.expect("truth");
        assert_matches_truth(setup, &truths, &[&self.sentinel]);
        assert_each_record_once(setup);
        assert_eq!(setup.number("SELECT count() FROM dead_letters"), 0);
        let log = self.indexer.log();
        let status = self.indexer.terminate();
        assert!(
            status.success(),
            "exit {status}:\n{}",
            self.indexer.log_tail()
        );
        assert_eq!(setup.cursor(), Some(last_seq));
        log
    }
}

/// Replicated tables of `db`, over every server of `cluster`, with parts
/// to fetch or merge queued, or read-only.
pub(crate) fn replicas_behind(cluster: &Cluster, db: &str) -> u64 {
    cluster.nodes().iter().map(|n| read_only(n, db, true)).sum()
}

/// Replicated tables of `db` on `node` that are read-only (lost their
/// ZooKeeper session), and with `queued`, those with a replication queue.
fn read_only(node: &ClusterNode, db: &str, queued: bool) -> u64 {
    let queue = if queued {
        " OR queue_size > 0 OR inserts_in_queue > 0"
    } else {
        ""
    };
    node.query(&format!(
        "SELECT count() FROM system.replicas WHERE database = '{db}' AND (is_readonly{queue})"
    ))
    .trim()
    .parse()
    .unwrap()
}

/// `SELECT count(), digest` of `db.records_local` on `node`: what one
/// replica holds.
fn replica_digest(node: &ClusterNode, db: &str) -> String {
    node.query(&format!(
        "SELECT count(), sum(cityHash64(did, collection, rkey, cid, version, deleted)) \
         FROM {db}.records_local"
    ))
}

/// Every record key stored on any server of `cluster` (in
/// `db.records_local`) with its newest version: what ClickHouse holds,
/// whichever replica holds it (a replica may not have fetched its peer's
/// last blocks, and cannot while ZooKeeper is away).
fn held(cluster: &Cluster, db: &str) -> BTreeMap<Key, u64> {
    let mut out: BTreeMap<Key, u64> = BTreeMap::new();
    for node in cluster.nodes() {
        let rows: Vec<serde_json::Map<String, Value>> = node
            .query(&format!(
                "SELECT did, collection, rkey, max(version) AS v FROM {db}.records_local \
                 GROUP BY did, collection, rkey FORMAT JSONEachRow"
            ))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        for (key, v) in newest_versions(&rows, None) {
            let stored = out.entry(key).or_default();
            *stored = (*stored).max(v);
        }
    }
    out
}

/// The ClickHouse error codes of the writer's retries in an indexer's log,
/// with how many times each was retried.
fn retried_codes(log: &str) -> BTreeMap<u32, usize> {
    let mut codes = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains("retrying")) {
        if let Some(code) = skyhouse_store::parse_code(line) {
            *codes.entry(code).or_default() += 1;
        }
    }
    codes
}

/// Sends `SIGNAL` to `process`.
fn signal(process: &Indexer, signal: &str) {
    let out = std::process::Command::new("kill")
        .args([format!("-{signal}"), process.pid().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "kill -{signal}: {out:?}");
}

/// `/health` of `service` once `ok(checks)`; panics after [`DEADLINE`].
async fn health_until(service: &mut Indexer, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        service.assert_running();
        let (status, body) = service.get("/health").await;
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if ok(&v["checks"]) {
            return serde_json::json!({ "status": status, "body": v });
        }
        assert!(
            Instant::now() < deadline,
            "/health never showed {what}: {status} {body}\n{}",
            service.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_of_each_shard_killed_during_ingestion_loses_nothing() {
    let cluster = Cluster::start();
    let mut run = Ingestion::start(&cluster, "e2e_replica_kill").await;

    // kill -9 the second replica of each shard mid-stream (the indexer
    // talks to s1r1), then start them again while the writes go on.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let victims = [cluster.node(1, 2), cluster.node(2, 2)];
    for v in victims {
        v.kill();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    run.indexer.assert_running();
    for v in victims {
        v.start();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let done = run.finish_writes().await;
    println!("{} writes while replicas were killed", done.writes);
    run.ends_as_truth(&cluster, done).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_stopped_for_20_s_during_ingestion_loses_nothing() {
    let cluster = Cluster::start();
    let mut run = Ingestion::start(&cluster, "e2e_zookeeper_stop").await;
    let name = run.setup.db.name().to_owned();
    let before = run.cursor_past(1);

    cluster.zookeeper().stop();
    let stopped = Instant::now();
    // The servers lose ZooKeeper: the replicated tables turn read-only.
    wait_until(
        "the replicated tables read-only",
        || (read_only(cluster.node(1, 1), &name, false) > 0).then_some(()),
        || run.indexer.log_tail(),
    );
    // /health says why (probed every 5 s).
    let health = health_until(&mut run.indexer, "clickhouse_writable false", |c| {
        c["clickhouse_writable"] == false
    })
    .await;
    assert_eq!(health["status"], 503, "{health}");
    assert_eq!(health["body"]["checks"]["clickhouse"], true, "{health}");
    assert_eq!(
        health["body"]["checks"]["clickhouse_shards"], true,
        "{health}"
    );
    // Until ZooKeeper is back, whatever the indexer saved as its cursor is
    // in ClickHouse, on some replica (reads need no ZooKeeper).
    let mut during = Vec::new();
    while stopped.elapsed() < ZOOKEEPER_OUTAGE {
        run.indexer.assert_running();
        let c = run.cursor();
        let want = written_up_to(&run.network, c, None).await;
        assert_covered(c, &want, &held(&cluster, &name));
        during.push(c);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(run.setup.number("SELECT count() FROM dead_letters"), 0);
    let stalled = run.cursor();
    let want = written_up_to(&run.network, stalled, None).await;
    assert_covered(stalled, &want, &held(&cluster, &name));
    cluster.zookeeper().start();
    let back = Instant::now();
    println!(
        "ZooKeeper stopped {:.1} s; cursor {before} before, {during:?} during",
        stopped.elapsed().as_secs_f64() - back.elapsed().as_secs_f64()
    );

    // Ingestion resumes by itself.
    run.cursor_past(stalled);
    println!(
        "the cursor moved again {:.1} s after ZooKeeper was back",
        back.elapsed().as_secs_f64()
    );
    run.indexer.ready().await;
    let done = run.finish_writes().await;
    println!("{} writes", done.writes);
    let log = run.ends_as_truth(&cluster, done).await;
    let codes = retried_codes(&log);
    println!("the writer's retries by ClickHouse code: {codes:?}");
    assert!(
        codes.keys().any(|c| [242, 225, 999].contains(c)),
        "no retry of a ZooKeeper error: {codes:?}\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_shard_down_stalls_writes_and_reads_answer_503() {
    let cluster = Cluster::start();
    let mut run = Ingestion::start(&cluster, "e2e_shard_down").await;
    let (mut api, base) = crate::cluster::search(&run.setup, 3600).await;
    let name = run.setup.db.name().to_owned();
    let before = run.cursor_past(1);

    let shard = [cluster.node(2, 1), cluster.node(2, 2)];
    for n in shard {
        n.stop();
    }
    let stopped = Instant::now();
    // /health of the API and of the indexer says why.
    for service in [&mut api, &mut run.indexer] {
        let health = health_until(service, "clickhouse_shards false", |c| {
            c["clickhouse_shards"] == false
        })
        .await;
        assert_eq!(health["status"], 503, "{health}");
        assert_eq!(health["body"]["checks"]["clickhouse"], true, "{health}");
    }
    // Reads answer a clear 503, never a part of the data.
    let did = run.sentinel.clone();
    let client = reqwest::Client::new();
    for path in [
        "/v1/search/posts?q=live".to_owned(),
        "/v1/search/actors?q=ann".to_owned(),
        format!("/v1/repos/{did}?limit=10"),
        format!("/v1/stats/actors/{did}"),
        "/v1/stats/analytics/hashtags?window=24h".to_owned(),
    ] {
        let resp = client.get(format!("{base}{path}")).send().await.unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 503, "{path}: {body}");
        assert_eq!(body["error"], "Unavailable", "{path}: {body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.ends_with("is unavailable; try again")),
            "{path}: {body}"
        );
    }
    let resp = client
        .post(format!("{base}/v1/sql"))
        .bearer_auth(crate::cluster::ADMIN)
        .json(&serde_json::json!({ "query": "SELECT count() FROM posts" }))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(
        (status, &body["error"]),
        (503, &Value::from("Unavailable")),
        "{body}"
    );

    // Writes stall: the writer retries; sample the saved cursor meanwhile.
    wait_until(
        "the writer retried an insert the shard's absence failed",
        || {
            retried_codes(&run.indexer.log())
                .contains_key(&279)
                .then_some(())
        },
        || run.indexer.log_tail(),
    );
    let mut during = Vec::new();
    for _ in 0..5 {
        run.indexer.assert_running();
        during.push(run.cursor());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // The indexer paused (SIGSTOP) while the shard comes back, so that
    // nothing is written meanwhile: every record written up to each cursor
    // saved during the outage is on some server.
    signal(&run.indexer, "STOP");
    let down = stopped.elapsed();
    for n in shard {
        n.start();
    }
    let held = held(&cluster, &name);
    for &c in &during {
        assert_covered(c, &written_up_to(&run.network, c, None).await, &held);
    }
    signal(&run.indexer, "CONT");
    let back = Instant::now();
    let stalled = *during.iter().max().unwrap();
    println!(
        "shard 2 down {:.1} s; cursor {before} before, {during:?} during",
        down.as_secs_f64()
    );
    run.cursor_past(stalled);
    println!(
        "the cursor moved again {:.1} s after shard 2 was back",
        back.elapsed().as_secs_f64()
    );
    // The API answers again, and says so.
    api.ready().await;
    let (status, body) = crate::cluster::get(&format!("{base}/v1/search/posts?q=live")).await;
    assert_eq!(status, 200, "{body}");

    let done = run.finish_writes().await;
    println!("{} writes", done.writes);
    let log = run.ends_as_truth(&cluster, done).await;
    println!(
        "the writer's retries by ClickHouse code: {:?}",
        retried_codes(&log)
    );

    assert!(api.terminate().success());
}
