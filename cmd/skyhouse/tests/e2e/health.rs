//! `/health` reports real readiness and names what fails: the indexer's
//! `source` (a socket nobody answers), `lag` (old events arriving without a
//! pause, over `--health-max-lag-secs`; an idle source passes again), the
//! reference PDS's firehose (ready), and the `redis` probe of a service that
//! used to read it only at startup (search: Redis stopped, then back).

use std::time::{Duration, Instant};

use serde_json::Value;
use skyhouse_testkit::ws::{serve, Script};
use skyhouse_testkit::{Network, Redis};

use crate::{firehose_url, spare_port, strings, Indexer, Setup, DEADLINE};

/// Polls `/health` until `ok(status, body)`; panics with the last answer and the
/// process log after [`DEADLINE`].
async fn health_until(process: &mut Indexer, what: &str, ok: impl Fn(u16, &Value) -> bool) {
    let deadline = Instant::now() + DEADLINE;
    let mut last = String::from("no answer");
    loop {
        process.assert_running();
        if let Ok(r) = reqwest::get(format!("{}/health", process.metrics_url)).await {
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            let v: Value = serde_json::from_str(&body).unwrap_or_default();
            if ok(status, &v) {
                return;
            }
            last = format!("{status} {body}");
        }
        assert!(
            Instant::now() < deadline,
            "/health never {what}: last {last}\n{}",
            process.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The checks that fail in a `/health` answer.
fn failing(v: &Value) -> Vec<String> {
    v["checks"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, ok)| **ok == Value::Bool(false))
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_source_is_named_and_the_pds_firehose_is_ready() {
    let redis = Redis::shared();
    // A loopback port nobody listens on: every connect fails, the source backs off.
    let dead = format!("ws://127.0.0.1:{}", spare_port());
    let setup = Setup::new("e2e_health_source", redis.url(), "firehose", dead);
    let mut indexer = setup.start(&[]);
    health_until(&mut indexer, "503 naming only source", |status, v| {
        status == 503 && v["ready"] == false && failing(v) == ["source"]
    })
    .await;
    // /health may fail the source before the first connect attempt has
    // failed and been logged.
    crate::wait_until(
        "the failed connect logged",
        || indexer.log().contains("connect_failed").then_some(()),
        || indexer.log_tail(),
    );
    drop(indexer);

    // The reference PDS's firehose from its live tip: connected, nothing behind.
    let network = Network::start();
    let setup = Setup::new(
        "e2e_health_pds",
        redis.url(),
        "firehose",
        firehose_url(&network),
    );
    let mut indexer = setup.start(&["--cursor", "-1"]);
    health_until(&mut indexer, "200 with every check", |status, v| {
        status == 200
            && v["ready"] == true
            && [
                "clickhouse",
                "clickhouse_writes",
                "redis",
                "indexer",
                "source",
                "lag",
            ]
            .iter()
            .all(|c| v["checks"][*c] == true)
    })
    .await;
    let status = indexer.terminate();
    assert!(status.success(), "{status}:\n{}", indexer.log_tail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_events_without_a_pause_fail_lag_and_an_idle_source_passes() {
    // Real production Jetstream events (months old) sent one every 200 ms for a
    // while: the indexer is busy with events far older than 1 s. Then the
    // server sends nothing more (the connection stays open): idle, not behind.
    let capture = std::fs::read_to_string(
        skyhouse_testkit::workspace_root().join("pkg/sources/testdata/corpus.jsonl"),
    )
    .unwrap();
    let mut script = Script::new();
    for line in capture.lines().filter(|l| !l.trim().is_empty()).take(150) {
        script = script.text(line).wait(Duration::from_millis(200));
    }
    let server = serve(script).await;
    let setup = Setup::new(
        "e2e_health_lag",
        Redis::shared().url(),
        "jetstream",
        server.url(),
    );
    let mut indexer = setup.start(&[
        "--health-max-lag-secs",
        "1",
        // The quiet connection at the end must stay up (no reconnect churn).
        "--liveness-secs",
        "600",
    ]);
    health_until(&mut indexer, "503 naming only lag", |status, v| {
        status == 503 && failing(v) == ["lag"] && v["checks"]["source"] == true
    })
    .await;
    health_until(&mut indexer, "200 once the source is idle", |status, v| {
        status == 200 && v["checks"]["lag"] == true
    })
    .await;
    let status = indexer.terminate();
    assert!(status.success(), "{status}:\n{}", indexer.log_tail());
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_probes_redis_while_it_runs() {
    let mut redis = Redis::start_private();
    let ch = skyhouse_testkit::ClickHouse::shared();
    let db = ch.database("e2e_health_search");
    let (port, metrics) = (spare_port(), spare_port());
    let mut args = strings(&["search", "--listen", &format!("127.0.0.1:{port}")]);
    args.extend(strings(&[
        "--metrics-addr",
        &format!("127.0.0.1:{metrics}"),
        "--clickhouse-address",
        &ch.http_url(),
        "--database",
        db.name(),
        "--redis",
        &redis.url(),
    ]));
    let migrate = crate::skyhouse(&strings(&[
        "migrate",
        "up",
        "--clickhouse-address",
        &ch.http_url(),
        "--database",
        db.name(),
    ]));
    assert!(migrate.status.success(), "{}", crate::text(&migrate));
    let mut search = Indexer::spawn(&args, metrics);
    health_until(&mut search, "200", |status, v| {
        status == 200 && v["checks"]["redis"] == true
    })
    .await;
    redis.stop();
    health_until(&mut search, "503 naming only redis", |status, v| {
        status == 503 && failing(v) == ["redis"]
    })
    .await;
    redis.restart();
    health_until(&mut search, "200 again", |status, v| {
        status == 200 && v["checks"]["redis"] == true
    })
    .await;
    let status = search.terminate();
    assert!(status.success(), "{status}:\n{}", search.log_tail());
}
