//! The store's read queries on the real server, after writes through the
//! transform and the batch writer.

use crate::fresh;
use skyhouse_atproto::json::from_lex_json;
use skyhouse_store::migrate::{self, Migrator};
use skyhouse_store::writer::{write_batch, WriterConfig};
use skyhouse_store::ClickHouse;
use skyhouse_store::{aggregates, queries};
use skyhouse_transform::{apply, Action, Cid, Op, Rows};

const ALICE: &str = "did:plc:alicealicealicealicealic";
const BOB: &str = "did:plc:bobbobbobbobbobbobbobbobb";

async fn put(
    ch: &ClickHouse,
    did: &str,
    collection: &str,
    rkey: &str,
    action: Action,
    version: u64,
) {
    let record = from_lex_json(&match collection {
        "app.bsky.feed.post" => serde_json::json!({"$type": collection, "text": "hi", "createdAt": "2024-05-01T12:00:00Z"}),
        _ => serde_json::json!({"$type": collection, "createdAt": "2024-05-02T12:00:00Z",
                "subject": {"uri": "at://did:plc:x/app.bsky.feed.post/1", "cid": "bafyreigmpffgbpgzfhvml36cecdcz7cn2v7kde2ar7ib4jgol7grj4jyly"}}),
    })
    .expect("record");
    let mut rows = Rows::default();
    let live = action != Action::Delete;
    apply(
        &Op {
            did,
            collection,
            rkey,
            action,
            cid: live.then(|| Cid::from_sha256(0x71, [version as u8; 32])),
            record: live.then_some(&record),
            version,
            indexed_at: 1_714_700_000,
        },
        &mut rows,
    );
    write_batch(ch, &WriterConfig::default(), &mut rows, 0u64)
        .await
        .expect("write");
}

/// A TID record key for a time (Unix seconds) and a clock id.
fn tid(secs: u64, clock: u16) -> String {
    skyhouse_atproto::syntax::Tid::from_parts(secs * 1_000_000, clock)
        .expect("tid")
        .to_string()
}

#[tokio::test]
async fn counts_records_and_daily_stats_follow_deletes_replays() {
    let (db, ch) = fresh("queries");
    Migrator::new(&ch, migrate::embedded().expect("m"))
        .up()
        .await
        .expect("up");
    // Record keys are TIDs: posts made on 2024-05-01, likes on 2024-05-02.
    let (may1, may2) = (1_714_564_800, 1_714_651_200);
    let (p1, p2) = (tid(may1 + 60, 1), tid(may1 + 120, 2));
    let (l1, l2) = (tid(may2 + 60, 3), tid(may2 + 3 * 3600, 4));
    for _ in 0..2 {
        // written twice: replays change nothing
        put(&ch, ALICE, "app.bsky.feed.post", &p1, Action::Create, 10).await;
        put(&ch, ALICE, "app.bsky.feed.post", &p2, Action::Create, 11).await;
        put(&ch, ALICE, "app.bsky.feed.like", &l1, Action::Create, 12).await;
        put(&ch, BOB, "app.bsky.feed.like", &l2, Action::Create, 13).await;
        put(&ch, ALICE, "app.bsky.feed.post", &p2, Action::Delete, 14).await;
        // A key that is not a TID is undated: counted in the totals only.
        put(&ch, BOB, "app.bsky.feed.post", "self", Action::Create, 15).await;
    }
    // Arrivals in an earlier second than the refresh (a row of the same
    // second as a recomputation's start is recomputed once more). The
    // refresh starts at the start of a second: this one and the one after
    // the delete below usually run in the same second, where the later
    // recomputation must still replace the earlier's stats.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let into_second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_millis();
    tokio::time::sleep(std::time::Duration::from_millis(u64::from(
        1_005 - into_second,
    )))
    .await;
    let refreshed = aggregates::refresh(&ch).await.expect("refresh");
    assert_eq!(refreshed.days_backlog, 0, "{refreshed:?}");
    let counts = queries::collection_counts(&ch).await.expect("counts");
    assert_eq!(
        counts,
        vec![
            ("app.bsky.feed.like".into(), 2),
            ("app.bsky.feed.post".into(), 2)
        ]
    );

    let recs = queries::records_of(&ch, ALICE, 10).await.expect("records");
    let keys: Vec<(String, String, u64)> = recs
        .iter()
        .map(|r| (r.collection.clone(), r.rkey.clone(), r.version))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("app.bsky.feed.like".into(), l1.clone(), 12),
            ("app.bsky.feed.post".into(), p1.clone(), 10)
        ]
    );
    assert!(
        recs[1].record.contains("\"text\":\"hi\""),
        "{}",
        recs[1].record
    );
    assert!(queries::records_of(&ch, "not a did", 10).await.is_err());

    // Running it again changes nothing.
    aggregates::refresh(&ch).await.expect("refresh again");
    let day = |s: &[queries::DailyStat]| {
        s.iter()
            .map(|d| (d.day.clone(), d.collection.clone(), d.records, d.actors))
            .collect::<Vec<_>>()
    };
    let stats = queries::daily_stats(&ch, "2024-01-01")
        .await
        .expect("stats");
    // Days of the record keys' TID times.
    assert_eq!(
        day(&stats),
        vec![
            ("2024-05-01".into(), "app.bsky.feed.post".into(), 1, 1),
            ("2024-05-02".into(), "app.bsky.feed.like".into(), 2, 2),
        ]
    );
    // Records per hour of the day (UTC): the post at 12:01; the likes at
    // 12:01 and 15:01.
    let hours = |at: &[usize]| {
        let slots: Vec<String> = (0..24)
            .map(|h| u8::from(at.contains(&h)).to_string())
            .collect();
        format!("[{}]", slots.join(","))
    };
    assert_eq!(
        db.query(&format!(
            "SELECT collection, hour_counts FROM {}.daily_stats FINAL \
             WHERE day >= '2024-01-01' ORDER BY day",
            db.name()
        )),
        format!(
            "app.bsky.feed.post\t{}\napp.bsky.feed.like\t{}\n",
            hours(&[12]),
            hours(&[12, 15])
        )
    );
    // Delete the last post of 05-01: the day drops to zero, not stale.
    put(&ch, ALICE, "app.bsky.feed.post", &p1, Action::Delete, 20).await;
    aggregates::refresh(&ch).await.expect("refresh");
    let stats = queries::daily_stats(&ch, "2024-01-01")
        .await
        .expect("stats");
    assert_eq!(
        day(&stats)[0],
        ("2024-05-01".into(), "app.bsky.feed.post".into(), 0, 0)
    );
    // The same days recomputed from scratch give the same numbers.
    let before = queries::daily_stats(&ch, "1970-01-01")
        .await
        .expect("stats");
    assert!(aggregates::rebuild_daily_stats(&ch, 1).await.is_ok());
    let after = queries::daily_stats(&ch, "1970-01-01")
        .await
        .expect("stats");
    assert_eq!(day(&before), day(&after));
}

#[tokio::test]
async fn old_days_are_worked_off_a_bounded_number_per_refresh() {
    let (_db, ch) = fresh("queries_backlog");
    Migrator::new(&ch, migrate::embedded().expect("m"))
        .up()
        .await
        .expect("up");
    // Likes on five different days.
    for d in 0..5u64 {
        let key = tid(1_714_564_800 + d * 86_400, 1);
        put(&ch, BOB, "app.bsky.feed.like", &key, Action::Create, 10 + d).await;
    }
    // Arrivals in an earlier second than the refreshes (a row of the same
    // second as a recomputation's start is recomputed once more).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (n, backlog) = aggregates::refresh_daily_stats(&ch, 2)
        .await
        .expect("refresh");
    assert_eq!((n, backlog), (2, 3));
    // The most recent days come first.
    let stats = queries::daily_stats(&ch, "2024-01-01")
        .await
        .expect("stats");
    let days: Vec<&str> = stats.iter().map(|s| s.day.as_str()).collect();
    assert_eq!(days, ["2024-05-04", "2024-05-05"]);
    let (n, backlog) = aggregates::refresh_daily_stats(&ch, 2)
        .await
        .expect("refresh");
    assert_eq!((n, backlog), (2, 1));
    let (n, backlog) = aggregates::refresh_daily_stats(&ch, 2)
        .await
        .expect("refresh");
    assert_eq!((n, backlog), (1, 0));
    let counts = queries::collection_counts(&ch).await.expect("counts");
    assert_eq!(counts, vec![("app.bsky.feed.like".into(), 5)]);
}
