//! The metrics a running feed generator exports, against
//! `dashboards/feedgen.json`: every dashboard query names a metric, label
//! and label value the scrape holds.

use std::time::Duration;

use skyhouse_feeds::builtin_feeds;

use crate::{wait_until, Feedgen};

#[tokio::test]
async fn the_dashboard_queries_only_what_the_feedgen_exports() {
    let handle = skyhouse_telemetry::install_metrics();
    skyhouse_feeds::describe_metrics();
    let fg = Feedgen::start("feeds_metrics", builtin_feeds()).await;
    let stop = skyhouse_telemetry::CancellationToken::new();
    let health = skyhouse_telemetry::Health::default();
    tokio::spawn(skyhouse_feeds::refresh_loop(
        fg.ch.clone(),
        health.clone(),
        Duration::from_secs(3600),
        stop.clone(),
    ));
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
    let problems = skyhouse_testkit::dashboards::check("feedgen.json", &handle.render());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
