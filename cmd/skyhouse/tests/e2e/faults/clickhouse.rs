//! The indexer under ClickHouse faults: the generated stream through a
//! proxy that stalls, resets, answers 502, truncates and answers an unknown
//! code, every third request, until each has hit inserts several times.

use skyhouse_testkit::compare::Compare;
use skyhouse_testkit::proxy::{FaultKind, FaultProxy};
use skyhouse_testkit::synth::Synth;
use skyhouse_testkit::{ClickHouse, Redis};

use super::{
    assert_samples, clean_run, cursor_key, every_fault, every_fault_fired, feed_in_steps, retries,
    start_indexer, synth, wait_cursor, Feeder, Fifo, Sampler,
};
use crate::Setup;

/// Events written into the pipe at a time while faults fire.
const STEP: u64 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexer_under_clickhouse_faults_stores_what_a_clean_run_stores() {
    let synth = synth();
    let redis = Redis::shared();
    let clean = clean_run("faults_ch_clean", redis.url());

    let fifo = Fifo::new("faults_ch");
    let setup = Setup::new("faults_ch", redis.url(), "jetstream", fifo.url());
    let key = cursor_key(&setup);
    let proxy = FaultProxy::start(ClickHouse::shared().http_port());
    proxy.schedule(3, every_fault());
    // Small batches: many inserts, many faults.
    let mut indexer = start_indexer(
        &setup,
        &proxy.url(),
        &[
            "--batch-rows",
            "200",
            "--batch-age-ms",
            "50",
            // The generated events are dated 2026-01-01: no lag check.
            "--health-max-lag-secs",
            "0",
        ],
    );
    let sampler = Sampler::start(redis.port(), key.clone(), setup.db.name().to_owned(), synth);
    let feeder = Feeder::start(&fifo, synth);

    // Feed step by step while the faults fire, each step only once the
    // previous one is saved: faults meet traffic, and the process must
    // get every batch through them to move on.
    let mut fed = 0;
    while !every_fault_fired(&proxy.stats()) {
        assert!(
            fed < synth.len(),
            "the stream ran out before every fault fired {} times: {}",
            super::EACH_FAULT,
            proxy.stats()
        );
        fed = (fed + STEP).min(synth.len());
        feeder.feed_to(fed);
        wait_cursor(
            &mut indexer,
            redis.port(),
            &key,
            Synth::time_us(fed - 1),
            || format!("faulty run, {fed} events fed ({})", proxy.stats()),
        );
    }
    proxy.clear();
    let stats = proxy.stats();
    println!("faults injected: {stats}");
    feed_in_steps(
        &feeder,
        &mut indexer,
        redis.port(),
        &key,
        fed,
        synth.len(),
        STEP,
    );

    // The retries are counted, by reason: every fault on an insert made an
    // attempt fail (a truncated answer too: the client cannot know the
    // insert landed).
    let insert_faults: u64 = FaultKind::ALL
        .iter()
        .map(|k| stats.injected_on_inserts(*k))
        .sum();
    let scrape = indexer
        .metrics_until("a retry counted for each fault on an insert", |s| {
            retries(s).values().sum::<f64>() >= insert_faults as f64
        })
        .await;
    let by_reason = retries(&scrape);
    println!("retries by reason: {by_reason:?}");
    let reason = |r: &str| by_reason.get(r).copied().unwrap_or(0.0);
    let on_inserts = |k: FaultKind| stats.injected_on_inserts(k) as f64;
    assert!(
        reason("timeout") >= on_inserts(FaultKind::Stall),
        "{by_reason:?} {stats}"
    );
    assert!(
        reason("http") >= on_inserts(FaultKind::BadGateway),
        "{by_reason:?} {stats}"
    );
    assert!(
        reason("unknown_code") >= on_inserts(FaultKind::UnknownError),
        "{by_reason:?} {stats}"
    );
    assert!(
        reason("network") + reason("garbled")
            >= on_inserts(FaultKind::Reset) + on_inserts(FaultKind::Truncate),
        "{by_reason:?} {stats}"
    );
    let (status, health) = indexer.get("/health").await;
    assert_eq!(status, 200, "healthy again once the faults stop: {health}");

    // End of the capture: it exits 0 by itself, never restarted.
    feeder.finish();
    let status = indexer.wait_exit();
    assert!(status.success(), "exit {status}:\n{}", indexer.log_tail());
    let samples = sampler.finish();
    println!(
        "cursor samples: {} reads, {} distinct cursors, {} events checked",
        samples.reads,
        samples.cursors.len(),
        samples.events_checked
    );
    assert_samples(&samples, 5);

    let result = Compare::new(ClickHouse::shared()).run(clean.db.name(), setup.db.name());
    assert!(result.is_equal(), "{result}");
    assert!(result.rows("records") > 10_000, "{result}");
    assert_eq!(setup.number("SELECT count() FROM dead_letters"), 0);
}
