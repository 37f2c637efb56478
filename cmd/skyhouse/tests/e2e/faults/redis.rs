//! Redis stopped for 30 s in the middle of a replay, then back (empty: no
//! persistence): indexing goes on, nothing is lost, the cursor is saved
//! once Redis is back and never runs ahead of ClickHouse.

use std::time::Duration;

use skyhouse_testkit::compare::Compare;
use skyhouse_testkit::synth::Synth;
use skyhouse_testkit::{ClickHouse, Redis};

use super::{
    assert_samples, clean_run, cursor_key, feed_in_steps, synth, wait_cursor, Feeder, Fifo,
    Sampler, LOOKBACK,
};
use crate::{metric, wait_until, Setup};

/// How long Redis stays away.
const OUTAGE: Duration = Duration::from_secs(30);

/// Events fed at a time before and after the outage.
const STEP: u64 = 1_000;

/// Steps in which the stream goes on during the outage.
const OUTAGE_STEPS: u64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_away_for_30_s_mid_replay_loses_nothing_and_the_cursor_is_saved_when_back() {
    let synth = synth();
    let clean = clean_run("faults_redis_clean", Redis::shared().url());
    let mut redis = Redis::start_private();
    let fifo = Fifo::new("faults_redis");
    let setup = Setup::new("faults_redis", redis.url(), "jetstream", fifo.url());
    let key = cursor_key(&setup);
    let mut indexer = setup.start(&[
        "--batch-rows",
        "200",
        "--batch-age-ms",
        "50",
        "--health-max-lag-secs",
        "0",
    ]);
    let sampler = Sampler::start(redis.port(), key.clone(), setup.db.name().to_owned(), synth);
    let feeder = Feeder::start(&fifo, synth);
    let third = synth.len() / 3;
    feed_in_steps(&feeder, &mut indexer, redis.port(), &key, 0, third, STEP);

    // Redis goes away; the stream goes on.
    redis.stop();
    for step in 1..=OUTAGE_STEPS {
        feeder.feed_to(third + step * third / OUTAGE_STEPS);
        tokio::time::sleep(OUTAGE / OUTAGE_STEPS as u32).await;
    }
    let during = Synth::time_us(2 * third - 1);
    wait_until(
        "every event of the outage stored while Redis is away",
        || {
            synth
                .check_stored(ClickHouse::shared(), setup.db.name(), during, LOOKBACK)
                .ok()
        },
        || indexer.log_tail(),
    );
    indexer.assert_running();
    let scrape = indexer
        .metrics_until("a failed cursor save counted", |s| {
            metric(
                s,
                "skyhouse_indexer_redis_errors_total",
                &["op=\"save_cursor\""],
            )
            .is_some_and(|n| n > 0.0)
        })
        .await;
    let acked = metric(&scrape, "skyhouse_indexer_cursor", &[]);
    assert!(
        acked.is_some_and(|c| c > Synth::time_us(third - 1) as f64),
        "the acknowledged cursor moved on without Redis: {acked:?}"
    );
    let (status, health) = indexer.get("/health").await;
    assert_eq!(status, 503, "{health}");
    assert!(health.contains("\"redis\":false"), "{health}");

    // Redis is back (empty): the held cursor is saved, then the rest.
    redis.restart();
    wait_cursor(&mut indexer, redis.port(), &key, during, || {
        "the cursor saved once Redis is back".to_owned()
    });
    feed_in_steps(
        &feeder,
        &mut indexer,
        redis.port(),
        &key,
        2 * third,
        synth.len(),
        STEP,
    );
    feeder.finish();
    let status = indexer.wait_exit();
    assert!(status.success(), "exit {status}:\n{}", indexer.log_tail());
    let samples = sampler.finish();
    println!(
        "cursor samples: {} reads ({} failed), {} distinct cursors, {} events checked",
        samples.reads,
        samples.failed_reads,
        samples.cursors.len(),
        samples.events_checked
    );
    assert!(
        samples.failed_reads > 0,
        "Redis was never seen away: {samples:?}"
    );
    assert_samples(&samples, 10);

    let result = Compare::new(ClickHouse::shared()).run(clean.db.name(), setup.db.name());
    assert!(result.is_equal(), "{result}");
    assert_eq!(setup.number("SELECT count() FROM dead_letters"), 0);
}
