//! Firehose `#error` frames through the whole indexer: a scripted relay
//! (`skyhouse_testkit::ws`) in front, real ClickHouse and Redis behind.

use std::sync::Arc;
use std::time::Duration;

use skyhouse_pipeline::{IndexerConfig, Summary};
use skyhouse_sources::{CancellationToken, SourceConfig, SourceKind};
use skyhouse_state::{State, WorkEntry};
use skyhouse_testkit::firehose::LikeCommit;
use skyhouse_testkit::ws::{serve, Script};
use tokio::sync::Notify;

use crate::*;

const SUBSCRIBE: &str = "/xrpc/com.atproto.sync.subscribeRepos";
const CURSOR_KEY: &str = "cursor:firehose:test";
/// A rev in July 2026 (microseconds << 10), so the likes' TIDs look real.
const REV: u64 = 1_783_000_000_000_000 << 10;
/// How long to wait for a condition before failing: generous, the machine is shared.
const PATIENCE: Duration = Duration::from_secs(60);

/// An indexer reading `url` (firehose) with batches closed at `batch_rows` rows
/// or `batch_age`, and a quick cursor.
fn indexer(
    url: String,
    ch: &ClickHouse,
    state: &State,
    batch_rows: usize,
    batch_age: Duration,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<Summary, skyhouse_pipeline::PipelineError>>,
) {
    let mut source = SourceConfig::new(SourceKind::Firehose);
    source.endpoints = vec![url];
    source.backoff_base = Duration::from_millis(10);
    source.backoff_max = Duration::from_millis(50);
    let mut cfg = IndexerConfig::new(source, CURSOR_KEY.to_owned());
    cfg.writer.max_rows = batch_rows;
    cfg.writer.max_age = batch_age;
    cfg.cursor_interval = Duration::from_millis(50);
    let stop = CancellationToken::new();
    let task = tokio::spawn(skyhouse_pipeline::run(
        cfg,
        ch.clone(),
        state.clone(),
        None,
        stop.clone(),
    ));
    (stop, task)
}

/// Poll `cond` until it holds or PATIENCE passes (then fail naming `what`).
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut cond: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn saved(state: &State) -> Option<i64> {
    state.cursor(CURSOR_KEY).await.unwrap()
}

/// The resync stream: (did, reason, at).
async fn resyncs(state: &State) -> Vec<(String, String, Option<i64>)> {
    let entries: Vec<WorkEntry> = state
        .work_queue(skyhouse_state::RESYNC_STREAM, "test")
        .peek(100)
        .await
        .unwrap();
    entries
        .into_iter()
        .map(|e| (e.did, e.reason, e.at))
        .collect()
}

/// The like each commit wrote: its `records` key and CID present, not deleted.
fn likes(commits: &[&LikeCommit]) -> Records {
    commits
        .iter()
        .map(|c| {
            let key = (c.did.clone(), "app.bsky.feed.like".to_owned(), c.rev_tid());
            (key, (String::new(), 0))
        })
        .collect()
}

/// `records` without the CIDs (the builder's CIDs are its own business).
fn record_keys(db: &skyhouse_testkit::TestDatabase) -> Records {
    records(db)
        .into_iter()
        .map(|(k, (_, deleted))| (k, (String::new(), deleted)))
        .collect()
}

/// The relay says our cursor is in its future (its sequence was reset): the
/// indexer goes on from the live tip instead of asking again for ever,
/// records the skipped range, queues the first DID after it and every DID
/// whose next commit shows a lost one, and saves the cursor in the relay's
/// new numbering.
#[tokio::test]
async fn future_cursor_goes_on_from_the_live_tip_and_queues_the_skipped_range_for_repair() {
    let (db, ch) = fresh("future_cursor").await;
    let state = state("future_cursor").await;
    state.set_cursor(CURSOR_KEY, 5000).await.unwrap();
    let a1 = LikeCommit::new(5001, "did:plc:aaaa", REV);
    let b1 = LikeCommit::new(5002, "did:plc:bbbb", REV + 100);
    // After the reset: c is new, a lost a commit in the skipped range, b lost nothing.
    let c1 = LikeCommit::new(3, "did:plc:cccc", REV + 200);
    let a3 = a1.next(0).next(4);
    let b2 = b1.next(5);
    let gate = Arc::new(Notify::new());
    let server = serve(
        Script::new()
            .binary(a1.frame())
            .binary(b1.frame())
            .wait_for(gate.clone())
            .close()
            .error_frame("FutureCursor", Some("Cursor in the future."))
            .close()
            .binary(c1.frame())
            .binary(a3.frame())
            .binary(b2.frame())
            .wait_for(gate.clone())
            .close()
            .silent(),
    )
    .await;
    let (stop, task) = indexer(
        server.url(),
        &ch,
        &state,
        50_000,
        Duration::from_millis(100),
    );
    // Stored and saved before the relay goes away: the next connect asks for 5002.
    eventually("cursor 5002 saved", || async {
        saved(&state).await == Some(5002)
    })
    .await;
    gate.notify_one();
    // The new numbering is lower than ours: the cursor still follows it.
    eventually("cursor 5 saved", || async {
        saved(&state).await == Some(5)
    })
    .await;
    // A later drop reconnects from the new numbering (not from 5002 again).
    gate.notify_one();
    server.wait_connections(4).await;
    assert_eq!(
        server.requests(),
        [
            format!("{SUBSCRIBE}?cursor=5000"),
            format!("{SUBSCRIBE}?cursor=5002"),
            SUBSCRIBE.to_owned(),
            format!("{SUBSCRIBE}?cursor=5"),
        ],
        "after FutureCursor the indexer connects without a cursor, once"
    );
    assert_same_records(&record_keys(&db), &likes(&[&a1, &b1, &c1, &a3, &b2]));
    let skips = state.skips(10).await.unwrap();
    assert_eq!(skips.len(), 1, "{skips:?}");
    assert_eq!(
        (
            skips[0].cursor.as_str(),
            skips[0].reason.as_str(),
            skips[0].after,
            skips[0].resumed_at
        ),
        (CURSOR_KEY, "future_cursor", Some(5002), 3)
    );
    assert!(
        skips[0].time > 1_700_000_000,
        "a Unix time: {}",
        skips[0].time
    );
    assert_eq!(
        resyncs(&state).await,
        [
            (
                "did:plc:cccc".to_owned(),
                "future_cursor".to_owned(),
                Some(3)
            ),
            ("did:plc:aaaa".to_owned(), "chain".to_owned(), Some(4)),
        ],
        "b's commit chains: not queued"
    );
    stop.cancel();
    let summary = task.await.unwrap().unwrap();
    assert_eq!(summary.cursor, Some(5));
    assert_eq!(saved(&state).await, Some(5));
}

/// The relay cut us off for being slow: the indexer reconnects from the last
/// position ClickHouse acknowledged, not the last one it decoded; the
/// replayed commit changes nothing (no false chain break) and everything
/// lands.
#[tokio::test]
async fn consumer_too_slow_reconnects_from_the_acknowledged_cursor() {
    let (db, ch) = fresh("consumer_too_slow").await;
    let state = state("consumer_too_slow").await;
    state.set_cursor(CURSOR_KEY, 100).await.unwrap();
    let a1 = LikeCommit::new(101, "did:plc:aaaa", REV);
    let b1 = LikeCommit::new(102, "did:plc:bbbb", REV + 100);
    // a2 skips a rev: its chain break is queued, which shows it was decoded.
    let a2 = a1.next(0).next(103);
    let a3 = a2.next(104);
    // After a seq gap, so that its decoding shows (a `gap` resync).
    let d1 = LikeCommit::new(106, "did:plc:dddd", REV + 300);
    let (acked, decoded) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let server = serve(
        Script::new()
            .binary(a1.frame())
            .binary(b1.frame())
            .wait_for(acked.clone())
            .binary(a2.frame())
            .wait_for(decoded.clone())
            .error_frame("ConsumerTooSlow", None)
            .close()
            .binary(a2.frame())
            .binary(a3.frame())
            .binary(d1.frame())
            .silent(),
    )
    .await;
    // A like is 2 rows (`records`, `likes`): batches close at 4 rows, never on
    // age. a1 + b1 are one batch, stored; a2 waits in the next one, decoded but
    // not stored, when the relay cuts us off.
    let (stop, task) = indexer(server.url(), &ch, &state, 4, Duration::from_secs(3600));
    eventually("cursor 102 saved", || async {
        saved(&state).await == Some(102)
    })
    .await;
    acked.notify_one();
    eventually("a2 decoded (its chain break queued)", || async {
        resyncs(&state).await.len() == 1
    })
    .await;
    decoded.notify_one();
    eventually("d1 decoded (its gap queued)", || async {
        resyncs(&state).await.len() == 2
    })
    .await;
    assert_eq!(
        server.requests(),
        [
            format!("{SUBSCRIBE}?cursor=100"),
            format!("{SUBSCRIBE}?cursor=102"),
        ],
        "reconnected from the acknowledged 102, not the decoded 103"
    );
    stop.cancel();
    // Everything decoded is written at shutdown and the cursor saved.
    assert_eq!(task.await.unwrap().unwrap().cursor, Some(106));
    assert_eq!(
        resyncs(&state).await,
        [
            ("did:plc:aaaa".to_owned(), "chain".to_owned(), Some(103)),
            ("did:plc:dddd".to_owned(), "gap".to_owned(), Some(106)),
        ],
        "the replayed a2 is not a second chain break, nor a gap"
    );
    assert_same_records(&record_keys(&db), &likes(&[&a1, &b1, &a2, &a3, &d1]));
    assert!(state.skips(10).await.unwrap().is_empty());
    assert_eq!(saved(&state).await, Some(106));
}
