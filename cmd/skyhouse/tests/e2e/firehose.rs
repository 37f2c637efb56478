//! The scenario on the reference PDS, indexed from its firehose by the real
//! binary, equals the PDS's truth; `/health` and `/metrics` of the running
//! indexer; SIGTERM drains and saves the last seq.

use skyhouse_atproto::frame::Frame;
use skyhouse_testkit::{Network, Redis, Scenario};

use crate::{
    assert_each_record_once, assert_matches_truth, assert_scenario_tables, backlog, firehose_url,
    metric, sentinel, Setup,
};

/// Every metric the README lists for the indexer and the transport that a
/// firehose run without `--verify` or errors necessarily exports.
const METRICS: &[&str] = &[
    "skyhouse_indexer_events_total",
    "skyhouse_indexer_ops_total",
    "skyhouse_indexer_lag_seconds",
    "skyhouse_indexer_batch_rows",
    "skyhouse_indexer_batches_total",
    "skyhouse_indexer_rows_total",
    "skyhouse_indexer_ack_latency_seconds",
    "skyhouse_indexer_cursor",
    "skyhouse_indexer_cursor_saved",
    "skyhouse_source_messages_total",
    "skyhouse_source_bytes_total",
    "skyhouse_source_connected",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firehose_of_the_reference_pds_lands_exactly() {
    let network = Network::start();
    let pds = network.pds();
    let sentinel = sentinel(&pds).await;
    let scenario = Scenario::run(&pds).await.expect("scenario");
    let messages = backlog(&network, &scenario.last).await;
    let last_seq = messages.last().and_then(|m| m.frame.seq()).unwrap();
    // What the indexer replays from cursor 1: every frame with seq > 1.
    let replayed: Vec<&Frame> = messages
        .iter()
        .map(|m| &m.frame)
        .filter(|f| f.seq().is_some_and(|s| s > 1))
        .collect();
    let count = |kind: fn(&Frame) -> bool| replayed.iter().filter(|f| kind(f)).count() as f64;
    let commits = count(|f| matches!(f, Frame::Commit(_)));
    let identities = count(|f| matches!(f, Frame::Identity(_)));
    let accounts = count(|f| matches!(f, Frame::Account(_)));

    let redis = Redis::shared();
    let setup = Setup::new(
        "e2e_firehose",
        redis.url(),
        "firehose",
        firehose_url(&network),
    );
    let mut indexer = setup.start(&["--cursor", "1", "--batch-age-ms", "100"]);
    indexer.wait_for_cursor(&setup, last_seq);

    // Running: healthy, and the metrics say what happened.
    let (status, body) = indexer.get("/health").await;
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["ready"], true, "{body}");
    for check in [
        "clickhouse",
        "clickhouse_writes",
        "indexer",
        "redis",
        "source",
        "lag",
    ] {
        assert_eq!(health["checks"][check], true, "{body}");
    }
    let saved = |scrape: &str| metric(scrape, "skyhouse_indexer_cursor_saved", &[]);
    let scrape = indexer
        .metrics_until("the saved cursor", |s| saved(s) == Some(last_seq as f64))
        .await;
    let missing: Vec<&&str> = METRICS
        .iter()
        .filter(|m| metric(&scrape, m, &[]).is_none() && !scrape.contains(&format!("{m}_count")))
        .collect();
    assert!(
        missing.is_empty(),
        "missing metrics {missing:?} in\n{scrape}"
    );
    let value = |name: &str, labels: &[&str]| {
        metric(&scrape, name, labels).unwrap_or_else(|| panic!("{name}{labels:?} in\n{scrape}"))
    };
    assert_eq!(value("skyhouse_indexer_cursor", &[]), last_seq as f64);
    assert_eq!(value("skyhouse_source_connected", &[]), 1.0);
    let kind = |k: &str| {
        value(
            "skyhouse_indexer_events_total",
            &["source=\"firehose\"", &format!("kind=\"{k}\"")],
        )
    };
    assert_eq!(kind("commit"), commits, "commits replayed");
    assert_eq!(kind("identity"), identities, "#identity replayed");
    assert_eq!(kind("account"), accounts, "#account replayed");
    assert!(value("skyhouse_indexer_ack_latency_seconds_count", &[]) > 0.0);
    assert!(value("skyhouse_indexer_rows_total", &[]) > 0.0);
    assert_eq!(
        value(
            "skyhouse_indexer_ops_total",
            &["collection=\"app.bsky.feed.like\""]
        ),
        // Every like write the replay holds (frank's is gone with his account).
        replayed
            .iter()
            .map(|f| match f {
                Frame::Commit(c) => c
                    .ops
                    .iter()
                    .filter(|op| op.path.starts_with("app.bsky.feed.like/"))
                    .count(),
                _ => 0,
            })
            .sum::<usize>() as f64
    );

    // The account deletion ran its cleanup job (nothing of the account was
    // replayed, the PDS dropped its commits: the job finds no rows).
    let frank = scenario.deleted_account.clone();
    crate::wait_until(
        "the deleted account's cleanup job",
        || {
            (setup.number(&format!(
                "SELECT count() FROM repo_cleanup_jobs FINAL WHERE did = '{frank}' AND status = 'done'"
            )) == 1)
                .then_some(())
        },
        || indexer.log_tail(),
    );

    // ClickHouse equals the PDS for every account of the scenario.
    let truths = pds.truths(scenario.dids()).await.expect("truth");
    assert_matches_truth(&setup, &truths, &[&sentinel]);
    assert_scenario_tables(&setup, &scenario);
    assert_each_record_once(&setup);
    let (bob, old, new) = &scenario.handle_change;
    assert_ne!(old, new);
    assert_eq!(crate::handles(&setup).get(bob), Some(new));

    // SIGTERM: drains, exits 0, the cursor stays at the last seq.
    let status = indexer.terminate();
    assert!(status.success(), "exit {status}:\n{}", indexer.log_tail());
    assert_eq!(setup.cursor(), Some(last_seq));
    assert!(
        indexer
            .log()
            .lines()
            .any(|l| l.contains("Indexer stopped.") && l.contains(&format!("cursor={last_seq}"))),
        "{}",
        indexer.log_tail()
    );
}
