//! The metrics a feed generator exports: every series its requests count
//! was exported by `describe_metrics` before the first one (closed label
//! sets at 0). The dashboard itself is checked against a fresh feed
//! generator's first scrape in cmd/skyhouse/tests/ops.

use std::time::Duration;

use skyhouse_feeds::builtin_feeds;

use crate::{wait_until, Feedgen};

#[tokio::test]
async fn every_series_the_requests_count_was_exported_at_the_start() {
    let handle = skyhouse_telemetry::install_metrics();
    skyhouse_feeds::describe_metrics();
    let first = handle.render();
    let fg = Feedgen::start("feeds_metrics", builtin_feeds()).await;
    let stop = skyhouse_telemetry::CancellationToken::new();
    let health = skyhouse_telemetry::Health::default();
    health.set("clickhouse", true);
    let refresh = skyhouse_feeds::refresh_loop(
        fg.ch.clone(),
        health.clone(),
        Duration::from_secs(3600),
        stop.clone(),
    );
    // Not ready from the call on, before the spawned loop first runs (the
    // binary spawns it after /health answers).
    assert!(!health.ready(), "ready before the first refresh");
    tokio::spawn(refresh);
    // A miss, a hit, a refused token, a bad request.
    for _ in 0..2 {
        assert_eq!(fg.skeleton("top-1h", "", None).await.0, 200);
    }
    assert_eq!(fg.skeleton("top-1h", "", Some("a.b.c")).await.0, 401);
    assert_eq!(fg.skeleton("top-1h", "&limit=0", None).await.0, 400);
    // The first refresh runs at once; /health is ready after it.
    wait_until("the first count refresh", || {
        let health = health.clone();
        async move { health.ready() }
    })
    .await;
    stop.cancel();
    let parse = skyhouse_testkit::dashboards::parse_scrape;
    let new = skyhouse_testkit::dashboards::new_series(
        &parse(&first),
        &parse(&handle.render()),
        "skyhouse_feedgen_",
    );
    assert!(new.is_empty(), "not exported at the start: {new:?}");
}
