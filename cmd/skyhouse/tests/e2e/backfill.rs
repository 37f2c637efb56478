//! `skyhouse backfill enqueue` + `skyhouse backfill work`, run as an operator
//! would, against the reference PDS: every active account's records land
//! exactly; `/health`, `/metrics` and the Grafana dashboard of the workers;
//! SIGTERM exits 0. A worker killed with -9 while it holds entries: a second
//! worker takes them over (XAUTOCLAIM) and finishes.

use skyhouse_testkit::{dashboards, AccountStatus, Network, Redis, Scenario};

use crate::{live_records, metric, skyhouse, spare_port, strings, text, Indexer, Setup};

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

/// `skyhouse backfill work` for `setup` on a spare metrics port.
fn worker(setup: &Setup, network: &Network, extra: &[&str]) -> Indexer {
    let port = spare_port();
    let mut args = strings(&["backfill", "work", "--plc", network.plc_url()]);
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
async fn backfill_workers_land_every_repository_and_export_their_dashboard() {
    let (setup, scenario, network) = queued("e2e_backfill").await;
    let repos = scenario.dids().count() as f64;
    let mut work = worker(&setup, &network, &["--concurrency", "2"]);
    // Every repository finished, whatever its status (done, deactivated, …).
    let done = |m: &str| {
        let samples = dashboards::parse_scrape(m);
        dashboards::sum(&samples, "skyhouse_backfill_repos_total", None) >= repos
            && metric(m, "skyhouse_backfill_queue_depth", &[]).is_some()
    };
    let scrape = work.metrics_until("every repository done", done).await;
    let problems = dashboards::check("backfill.json", &scrape);
    assert!(problems.is_empty(), "{}\n{scrape}", problems.join("\n"));
    let (status, body) = work.get("/health").await;
    assert_eq!(status, 200, "{body}");
    assert_active_repos_match(&setup, &network, &scenario).await;
    let exit = work.terminate();
    assert!(exit.success(), "{exit}:\n{}", work.log_tail());
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
