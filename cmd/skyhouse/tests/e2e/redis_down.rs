//! Redis killed while the indexer runs: indexing goes on (ClickHouse gets
//! every write), `/health` says Redis is down, and once Redis is back
//! (empty: no persistence) the cursor is written again.

use serde_json::json;
use skyhouse_testkit::{now_rfc3339, Account, Network, Pds, Redis, Written};

use crate::{assert_matches_truth, firehose_url, sentinel, seq_of, wait_until, Indexer, Setup};

async fn posts(pds: &Pds, who: &Account, from: usize, n: usize) -> Written {
    let mut last = None;
    for i in from..from + n {
        let post = json!({ "$type": "app.bsky.feed.post", "text": format!("post {i}"), "createdAt": now_rfc3339() });
        last = Some(
            pds.create_record(who, "app.bsky.feed.post", post)
                .await
                .unwrap(),
        );
    }
    last.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_keeps_indexing_and_the_cursor_is_saved_when_it_returns() {
    let network = Network::start();
    let pds = network.pds();
    let sentinel = sentinel(&pds).await;
    let suffix = std::process::id() % 100_000;
    let ivy = pds
        .create_account(&format!("ivy{suffix}.test"))
        .await
        .unwrap();
    let mut redis = Redis::start_private();
    let setup = Setup::new(
        "e2e_redis_down",
        redis.url(),
        "firehose",
        firehose_url(&network),
    );
    let mut indexer = setup.start(&["--cursor", "1", "--batch-age-ms", "100"]);

    let before = posts(&pds, &ivy, 0, 20).await;
    let seq = seq_of(&network, &before).await;
    indexer.wait_for_cursor(&setup, seq);

    // Redis goes away; the PDS keeps writing.
    redis.stop();
    let first_during = posts(&pds, &ivy, 20, 1).await;
    posts(&pds, &ivy, 21, 30).await;
    let liked = json!({ "$type": "app.bsky.feed.like", "subject": before.strong_ref(), "createdAt": now_rfc3339() });
    pds.create_record(&ivy, "app.bsky.feed.like", liked)
        .await
        .unwrap();
    pds.delete_record(&ivy, "app.bsky.feed.post", first_during.rkey())
        .await
        .unwrap();
    let last = posts(&pds, &ivy, 51, 1).await;
    let last_seq = seq_of(&network, &last).await;
    assert!(last_seq > seq);

    // Everything reaches ClickHouse meanwhile.
    let key = format!(
        "did = '{}' AND collection = 'app.bsky.feed.post' AND rkey = '{}' AND cid = '{}'",
        last.did(),
        last.rkey(),
        last.cid
    );
    wait_until(
        "the last write in ClickHouse while Redis is down",
        || {
            (setup.number(&format!(
                "SELECT count() FROM records FINAL WHERE deleted = 0 AND {key}"
            )) == 1)
                .then_some(())
        },
        || indexer.log_tail(),
    );
    indexer.assert_running();
    let truth = pds.truths([ivy.did.as_str()]).await.unwrap();
    assert_matches_truth(&setup, &truth, &[&sentinel]);
    // 52 posts, one of them deleted, and a like.
    assert_eq!(truth[&ivy.did].records.len(), 52);

    // /health reports it (probed every 5 s), and the failed saves are counted.
    health_until(&mut indexer, "503 with redis false", |status, v| {
        status == 503 && v["checks"]["redis"] == false && v["checks"]["clickhouse"] == true
    })
    .await;
    // The failed save is counted when Redis's command timeout ends it, which may be a
    // moment after /health's own probe timed out: wait for both.
    let scrape = indexer
        .metrics_until("the last seq acknowledged and a failed save", |s| {
            crate::metric(s, "skyhouse_indexer_cursor", &[]) == Some(last_seq as f64)
                && crate::metric(
                    s,
                    "skyhouse_indexer_redis_errors_total",
                    &["op=\"save_cursor\""],
                )
                .is_some_and(|n| n > 0.0)
        })
        .await;
    assert!(
        crate::metric(
            &scrape,
            "skyhouse_indexer_redis_errors_total",
            &["op=\"save_cursor\""]
        )
        .is_some_and(|n| n > 0.0),
        "{scrape}"
    );
    assert!(crate::metric(&scrape, "skyhouse_indexer_cursor_saved", &[])
        .is_some_and(|c| c < last_seq as f64));

    // Redis returns, empty: the held cursor is written.
    redis.restart();
    assert_eq!(indexer.wait_for_cursor(&setup, last_seq), last_seq);
    health_until(&mut indexer, "200 again", |status, v| {
        status == 200 && v["checks"]["redis"] == true
    })
    .await;
    let status = indexer.terminate();
    assert!(status.success(), "exit {status}:\n{}", indexer.log_tail());
    assert_eq!(setup.cursor(), Some(last_seq));
}

/// Polls `/health` until `ok(status, body)`; panics after [`crate::DEADLINE`].
async fn health_until(
    indexer: &mut Indexer,
    what: &str,
    ok: impl Fn(u16, &serde_json::Value) -> bool,
) {
    let deadline = std::time::Instant::now() + crate::DEADLINE;
    loop {
        indexer.assert_running();
        let (status, body) = indexer.get("/health").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if ok(status, &v) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/health never {what}: last {status} {body}\n{}",
            indexer.log_tail()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
