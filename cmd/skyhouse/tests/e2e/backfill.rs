//! `skyhouse backfill enqueue` + `skyhouse backfill work`, run as an operator
//! would, against the reference PDS: every active account's records land
//! exactly; `/health`, `/metrics` and the Grafana dashboard of the workers;
//! SIGTERM exits 0. A worker killed with -9 while it holds entries: a second
//! worker takes them over (XAUTOCLAIM) and finishes. The backfill and the
//! live indexer at the same time, while the PDS keeps writing and deleting:
//! they converge on the PDS's truth.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::json;
use skyhouse_testkit::{dashboards, now_rfc3339, AccountStatus, Network, Pds, Redis, Scenario};

use crate::{
    assert_each_record_once, firehose_url, live_records, metric, seq_of, skyhouse, spare_port,
    strings, text, Indexer, Setup,
};

/// A scenario's DIDs queued for a fresh backfill deployment.
async fn queued(hint: &str) -> (Setup, Scenario, Network) {
    let network = Network::start();
    let pds = network.pds();
    let scenario = Scenario::run(&pds).await.expect("scenario");
    let setup = Setup::new(hint, Redis::shared().url(), "firehose", String::new());
    let mut args = strings(&["backfill", "enqueue"]);
    for did in scenario.dids() {
        args.extend(["--did".to_owned(), did.to_owned()]);
    }
    args.extend(setup.redis_flags());
    let out = skyhouse(&args);
    assert!(out.status.success(), "enqueue: {}", text(&out));
    (setup, scenario, network)
}

/// `skyhouse backfill work` for `setup` on a spare metrics port. Handles are
/// verified on the loopback network: no DNS, and the PDS answers
/// `/.well-known/atproto-did` for its own handles by the `Host` header.
fn worker(setup: &Setup, network: &Network, extra: &[&str]) -> Indexer {
    worker_on(setup, network.plc_url(), network.pds_url(), extra)
}

/// [`worker`] for any loopback network: its PLC and its PDS by URL.
pub fn worker_on(setup: &Setup, plc_url: &str, pds_url: &str, extra: &[&str]) -> Indexer {
    let port = spare_port();
    let mut args = strings(&[
        "backfill",
        "work",
        "--plc",
        plc_url,
        "--handle-resolver-http",
        pds_url,
        "--handle-nameservers",
        "none",
    ]);
    args.extend(setup.redis_flags());
    args.extend(setup.clickhouse_flags());
    args.extend(strings(extra));
    args.extend(["--metrics-addr".into(), format!("127.0.0.1:{port}")]);
    Indexer::spawn(&args, port)
}

/// Every active account's records are in ClickHouse with the PDS's CIDs.
async fn assert_active_repos_match(setup: &Setup, network: &Network, scenario: &Scenario) {
    let pds = network.pds();
    let got = live_records(setup);
    let empty = skyhouse_testkit::Records::new();
    let mut checked = 0;
    for did in scenario.dids() {
        let truth = pds.truth(did).await.expect("truth");
        if truth.status != AccountStatus::Active {
            continue;
        }
        checked += 1;
        assert_eq!(
            got.get(did).unwrap_or(&empty),
            &truth.records,
            "{did}: ClickHouse vs the PDS"
        );
    }
    assert!(checked >= 3, "only {checked} active accounts compared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_workers_land_every_repository_in_series_exported_from_the_start() {
    let (setup, scenario, network) = queued("e2e_backfill").await;
    let repos = scenario.dids().count() as f64;
    let mut work = worker(
        &setup,
        &network,
        &["--concurrency", "2", "--progress", "always"],
    );
    let first_scrape = work.metrics_until("the first scrape", |_| true).await;
    // Every repository finished, whatever its status (done, deactivated, …).
    let done = |m: &str| {
        let samples = dashboards::parse_scrape(m);
        dashboards::sum(&samples, "skyhouse_backfill_repos_total", None) >= repos
            && metric(m, "skyhouse_backfill_queue_depth", &[]).is_some()
    };
    let scrape = work.metrics_until("every repository done", done).await;
    // Every series the work counted (repositories by status, cache results, …) was
    // exported from the first scrape on (the dashboard is checked against a fresh worker's
    // scrape in tests/ops).
    let (first, now) = (
        dashboards::parse_scrape(&first_scrape),
        dashboards::parse_scrape(&scrape),
    );
    for prefix in ["skyhouse_backfill_", "skyhouse_store_"] {
        let new = dashboards::new_series(&first, &now, prefix);
        assert!(new.is_empty(), "not exported from the start: {new:?}");
    }
    let (status, body) = work.get("/health").await;
    assert_eq!(status, 200, "{body}");
    assert_active_repos_match(&setup, &network, &scenario).await;
    // The backfill alone wrote every handle (verified both ways) and every
    // account's status, as the PDS has them.
    let handles = crate::handles(&setup);
    let accounts = crate::account_states(&setup);
    for (did, expected) in &scenario.expected {
        let account = accounts.get(did).map(|(a, s)| (*a, s.as_str()));
        match expected.status {
            AccountStatus::Active => {
                assert_eq!(
                    handles.get(did),
                    expected.handle.as_ref(),
                    "handle of {did}"
                );
                assert_eq!(account, Some((1, "")), "{did}");
            }
            AccountStatus::Deleted => assert_eq!(account, Some((0, "not_found")), "{did}"),
            ref other => {
                let word = other.as_event_status().expect("a status word");
                assert_eq!(account, Some((0, word)), "{did}");
            }
        }
    }
    let exit = work.terminate();
    assert!(exit.success(), "{exit}:\n{}", work.log_tail());
    // `--progress always` writes progress lines even into a log file, the
    // last one at shutdown.
    let log = work.log();
    assert!(
        log.contains(&format!("backfill: {repos} repos done, 0 queued")),
        "no progress line with {repos} repos done:\n{}",
        work.log_tail()
    );
    // `status`: nothing queued or pending, and the last minute's rate.
    let mut args = strings(&["backfill", "status"]);
    args.extend(setup.redis_flags());
    args.extend(setup.clickhouse_flags());
    let out = skyhouse(&args);
    assert!(out.status.success(), "status: {}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(printed.contains("pending\t0\n"), "{printed}");
    let last_minute: f64 = printed
        .lines()
        .find_map(|l| l.strip_prefix("last_minute\t"))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no last_minute line: {printed}"));
    assert_eq!(
        last_minute, repos,
        "repositories finished in the last minute: {printed}"
    );
    assert!(printed.contains("\nrate\t"), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_worker_takes_over_what_a_killed_one_held() {
    let (setup, scenario, network) = queued("e2e_backfill_kill").await;
    let pending = |setup: &Setup| setup.pending_entries();
    // Worker 1 claims entries, then dies without acking some of them.
    let mut first = worker(&setup, &network, &["--concurrency", "4"]);
    let log = first.log_path();
    crate::wait_until(
        "worker 1 holds entries",
        || {
            first.assert_running();
            (pending(&setup) > 0).then_some(())
        },
        || std::fs::read_to_string(&log).unwrap_or_default(),
    );
    first.kill9();
    // Worker 2 takes over entries idle for more than a second.
    let mut second = worker(&setup, &network, &["--claim-idle", "1", "--drain"]);
    let exit = second.wait_exit();
    assert!(exit.success(), "{exit}:\n{}", second.log_tail());
    assert_eq!(pending(&setup), 0, "nothing left pending");
    assert_active_repos_match(&setup, &network, &scenario).await;
}

/// Posts written before anything is indexed (the backfill's work).
const HISTORY: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_and_the_live_indexer_converge_while_the_pds_keeps_writing() {
    let network = Network::start();
    let pds = network.pds();
    let scenario = Scenario::run(&pds).await.expect("scenario");
    // History: a few accounts with posts, some of which are deleted later,
    // while their snapshots may be in flight.
    let suffix = std::process::id() % 100_000;
    let mut accounts = Vec::new();
    let mut history = Vec::new();
    for name in ["ivy", "jon", "kim"] {
        let a = pds
            .create_account(&format!("{name}{suffix}.test"))
            .await
            .unwrap();
        let mut posts = Vec::new();
        for i in 0..HISTORY {
            posts.push(post(&pds, &a, &format!("history {i}")).await);
        }
        accounts.push(a);
        history.push(posts);
    }
    let tip = post(&pds, &accounts[0], "the tip").await;
    let setup = Setup::new(
        "e2e_backfill_live",
        Redis::shared().url(),
        "firehose",
        firehose_url(&network),
    );
    // The live indexer starts after the history: that is the backfill's.
    setup.set_cursor(seq_of(&network, &tip).await);
    let mut indexer = setup.start(&[]);

    let mut args = strings(&["backfill", "enqueue"]);
    for did in scenario
        .dids()
        .chain(accounts.iter().map(|a| a.did.as_str()))
    {
        args.extend(["--did".to_owned(), did.to_owned()]);
    }
    args.extend(setup.redis_flags());
    let out = skyhouse(&args);
    assert!(out.status.success(), "enqueue: {}", text(&out));

    // Writes and deletes while the workers run (and a few after).
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (pds, accounts, stop) = (pds.clone(), accounts.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0usize;
            let mut last = None;
            while i < 30 || !stop.load(Ordering::Relaxed) {
                let who = i % accounts.len();
                last = Some(post(&pds, &accounts[who], &format!("live {i}")).await);
                if i.is_multiple_of(2) && i / 2 < HISTORY {
                    // Delete history the snapshot may or may not hold yet.
                    let victim = &history[who][i / 2];
                    pds.delete_record(&accounts[who], POST, victim.rkey())
                        .await
                        .unwrap();
                }
                if i % 5 == 4 {
                    let profile = json!({ "$type": "app.bsky.actor.profile", "displayName": format!("v{i}") });
                    pds.put_record(&accounts[who], "app.bsky.actor.profile", "self", profile)
                        .await
                        .unwrap();
                }
                i += 1;
            }
            (i, last.unwrap())
        })
    };
    // Two worker processes share the queue.
    let mut one = worker(&setup, &network, &["--concurrency", "2", "--drain"]);
    let mut two = worker(&setup, &network, &["--concurrency", "2", "--drain"]);
    let exits = [one.wait_exit(), two.wait_exit()];
    stop.store(true, Ordering::Relaxed);
    for (exit, w) in exits.iter().zip([&one, &two]) {
        assert!(exit.success(), "{exit}:\n{}", w.log_tail());
    }
    // No repository was processed to completion twice: one repo_state row
    // each (rows, not FINAL).
    let queued = scenario.dids().count() + accounts.len();
    assert_eq!(
        setup.number("SELECT count() FROM repo_state"),
        queued as u64,
        "repo_state rows"
    );
    let (writes, last) = writer.await.unwrap();
    println!("{writes} live writes while the backfill ran");
    let last_seq = seq_of(&network, &last).await;
    indexer.wait_for_cursor(&setup, last_seq);

    assert_active_repos_match(&setup, &network, &scenario).await;
    let pds_truth = pds
        .truths(accounts.iter().map(|a| a.did.as_str()))
        .await
        .expect("truth");
    let got = live_records(&setup);
    for (did, truth) in &pds_truth {
        assert_eq!(
            got.get(did),
            Some(&truth.records),
            "{did}: ClickHouse vs the PDS"
        );
    }
    assert_each_record_once(&setup);
    let status = indexer.terminate();
    assert!(status.success(), "{status}:\n{}", indexer.log_tail());
}

const POST: &str = "app.bsky.feed.post";

async fn post(
    pds: &Pds,
    account: &skyhouse_testkit::Account,
    text: &str,
) -> skyhouse_testkit::Written {
    pds.create_record(
        account,
        POST,
        json!({ "$type": POST, "text": text, "createdAt": now_rfc3339() }),
    )
    .await
    .unwrap()
}
