//! `skyhouse backfill work` under ClickHouse faults: the reference PDS's
//! repositories backfilled through the proxy (stall, reset, 502, truncated
//! answer, unknown code, each several times on inserts) end equal to a
//! clean backfill; nothing is dead-lettered (neither rows nor
//! repositories), the worker recovers by itself, and a repository is never
//! marked done (`repo_state`, then XACK) before its records are stored.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use serde_json::json;
use skyhouse_testkit::compare::Compare;
use skyhouse_testkit::proxy::{FaultKind, FaultProxy};
use skyhouse_testkit::{now_rfc3339, ClickHouse, Network, Redis, Scenario};

use super::{every_fault, every_fault_fired, retries, TIMEOUTS};
use crate::{skyhouse, spare_port, strings, text, wait_while_progressing, Indexer, Setup};

/// Accounts added to the scenario's, and posts each: more repositories and
/// records, more batches to fault.
const ACCOUNTS: usize = 6;
const POSTS: usize = 25;

/// Rounds of enqueueing every repository again while faults are missing.
const MAX_ROUNDS: usize = 6;

fn enqueue(setup: &Setup, dids: &[String]) {
    let mut args = strings(&["backfill", "enqueue"]);
    for did in dids {
        args.extend(["--did".to_owned(), did.clone()]);
    }
    args.extend(setup.redis_flags());
    let out = skyhouse(&args);
    assert!(out.status.success(), "enqueue: {}", text(&out));
}

/// `skyhouse backfill status` as `name → value`.
fn status(setup: &Setup) -> BTreeMap<String, String> {
    let mut args = strings(&["backfill", "status"]);
    args.extend(setup.redis_flags());
    args.extend(setup.clickhouse_flags());
    let out = skyhouse(&args);
    assert!(out.status.success(), "status: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Nothing queued and nothing pending.
fn settled(setup: &Setup) -> bool {
    let s = status(setup);
    s.get("queue").map(String::as_str) == Some("0")
        && s.get("pending").map(String::as_str) == Some("0")
}

/// `skyhouse backfill work` with ClickHouse at `clickhouse_url`.
fn worker(setup: &Setup, network: &Network, clickhouse_url: &str, extra: &[&str]) -> Indexer {
    let port = spare_port();
    let mut args = strings(&["backfill", "work", "--plc", network.plc_url()]);
    args.extend(setup.redis_flags());
    args.extend([
        "--clickhouse-address".to_owned(),
        clickhouse_url.to_owned(),
        "--database".to_owned(),
        setup.db.name().to_owned(),
    ]);
    args.extend(strings(extra));
    args.extend(["--metrics-addr".into(), format!("127.0.0.1:{port}")]);
    Indexer::spawn(&args, port)
}

/// Every 100 ms: each repository `repo_state` says is done has at least its
/// `records` stored (read after `repo_state`; data only grows).
struct DoneSampler {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<(u64, Vec<String>)>>,
}

impl DoneSampler {
    fn start(db: String) -> DoneSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            let ch = ClickHouse::shared();
            let (mut checked, mut violations) = (0u64, Vec::new());
            while !stopped.load(Ordering::SeqCst) {
                let done = ch.query(&format!(
                    "SELECT did, records FROM {db}.repo_state FINAL WHERE status = 'done' FORMAT TSV"
                ));
                let done: Vec<(String, u64)> = done
                    .lines()
                    .filter_map(|l| l.split_once('\t'))
                    .map(|(d, n)| (d.to_owned(), n.parse().unwrap()))
                    .collect();
                if !done.is_empty() {
                    let dids: Vec<String> = done.iter().map(|(d, _)| format!("'{d}'")).collect();
                    let stored: BTreeMap<String, u64> = ch
                        .query(&format!(
                            "SELECT did, uniqExact(collection, rkey) FROM {db}.records \
                             WHERE did IN ({}) GROUP BY did FORMAT TSV",
                            dids.join(",")
                        ))
                        .lines()
                        .filter_map(|l| l.split_once('\t'))
                        .map(|(d, n)| (d.to_owned(), n.parse().unwrap()))
                        .collect();
                    for (did, records) in &done {
                        checked += 1;
                        let got = stored.get(did).copied().unwrap_or(0);
                        if got < *records {
                            violations.push(format!(
                                "{did} marked done with {records} records, {got} stored"
                            ));
                        }
                    }
                }
                thread::sleep(Duration::from_millis(100));
            }
            (checked, violations)
        });
        DoneSampler {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for DoneSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_under_clickhouse_faults_stores_what_a_clean_backfill_stores() {
    let network = Network::start();
    let pds = network.pds();
    let scenario = Scenario::run(&pds).await.expect("scenario");
    let mut dids: Vec<String> = scenario.dids().map(str::to_owned).collect();
    let suffix = std::process::id() % 100_000;
    for a in 0..ACCOUNTS {
        let account = pds
            .create_account(&format!("bulk{a}x{suffix}.test"))
            .await
            .unwrap();
        for i in 0..POSTS {
            let post = json!({ "$type": "app.bsky.feed.post", "text": format!("bulk {a} {i}"), "createdAt": now_rfc3339() });
            pds.create_record(&account, "app.bsky.feed.post", post)
                .await
                .unwrap();
        }
        dids.push(account.did);
    }
    // A record created in the second the clean backfill indexes it has
    // created_at = indexed_at there, which the comparison reads as a clock-
    // defaulted time (a record without createdAt), and not in the later
    // faulted backfill: both backfills start in a later second.
    let subsec = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_millis();
    thread::sleep(Duration::from_millis(u64::from(1_010 - subsec)));
    let redis = Redis::shared();

    // The reference: a clean backfill of the same repositories.
    let clean = Setup::new("faults_bf_clean", redis.url(), "firehose", String::new());
    enqueue(&clean, &dids);
    let mut work = worker(
        &clean,
        &network,
        &ClickHouse::shared().http_url(),
        &["--drain"],
    );
    let exit = work.wait_exit();
    assert!(
        exit.success(),
        "clean backfill: {exit}\n{}",
        work.log_tail()
    );

    // Through the proxy, every other request faulted, small batches.
    let setup = Setup::new("faults_bf", redis.url(), "firehose", String::new());
    let proxy = FaultProxy::start(ClickHouse::shared().http_port());
    proxy.schedule(2, every_fault());
    let sampler = DoneSampler::start(setup.db.name().to_owned());
    let mut extra = TIMEOUTS.to_vec();
    extra.extend(["--batch-rows", "10", "--concurrency", "2"]);
    let mut work = worker(&setup, &network, &proxy.url(), &extra);
    // Round after round (backfilling again changes nothing) until every
    // fault has hit inserts several times.
    let log = work.log_path();
    let mut rounds = 0;
    while !every_fault_fired(&proxy.stats()) {
        assert!(
            rounds < MAX_ROUNDS,
            "{MAX_ROUNDS} rounds and not every fault fired: {}",
            proxy.stats()
        );
        rounds += 1;
        enqueue(&setup, &dids);
        // Progress: rows stored (each insert adds some, even a repeated
        // one) and repositories left.
        wait_while_progressing(
            &format!("round {rounds} backfilled"),
            || {
                work.assert_running();
                settled(&setup).then_some(())
            },
            || {
                let s = status(&setup);
                (
                    setup.number("SELECT count() FROM records"),
                    s.get("queue").cloned(),
                    s.get("pending").cloned(),
                )
            },
            || {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!(
                    "{}\n{}\n{:?}",
                    proxy.stats(),
                    tail.join("\n"),
                    status(&setup)
                )
            },
        );
    }
    proxy.clear();
    let stats = proxy.stats();
    println!("{rounds} rounds; faults injected: {stats}");
    let insert_faults: u64 = FaultKind::ALL
        .iter()
        .map(|k| stats.injected_on_inserts(*k))
        .sum();
    let scrape = work
        .metrics_until("a retry counted for each fault on an insert", |s| {
            retries(s).values().sum::<f64>() >= insert_faults as f64
        })
        .await;
    println!("retries by reason: {:?}", retries(&scrape));
    // Healthy again once the faults stop: the ClickHouse probe runs every
    // 5 s, and the last one before the proxy was cleared may have been
    // faulted (every other request is).
    let mut health = work.get("/health").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while health.0 != 200 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        health = work.get("/health").await;
    }
    assert_eq!(
        health.0, 200,
        "healthy again once the faults stop: {}",
        health.1
    );
    let exit = work.terminate();
    assert!(exit.success(), "exit {exit}:\n{}", work.log_tail());

    let (checked, violations) = sampler.finish();
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    assert!(checked > 0, "no repository was ever seen done");
    let s = status(&setup);
    assert_eq!(s.get("dead").map(String::as_str), Some("0"), "{s:?}");
    assert_eq!(setup.number("SELECT count() FROM dead_letters"), 0);
    // repo_state's version is the time of writing; identities' and
    // accounts' the time the handle and the status were learnt.
    let result = Compare::new(ClickHouse::shared())
        .ignore_column("repo_state", "version")
        .ignore_column("identities", "version")
        .ignore_column("accounts", "version")
        .run(clean.db.name(), setup.db.name());
    assert!(result.is_equal(), "{result}");
    assert_eq!(result.rows("repo_state"), dids.len() as u64, "{result}");
    assert!(
        result.rows("records") >= (ACCOUNTS * POSTS) as u64,
        "{result}"
    );
}
