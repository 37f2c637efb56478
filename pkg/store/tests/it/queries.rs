//! The store's read queries on the real server, after writes through the
//! transform and the batch writer.

use crate::fresh;
use skyhouse_atproto::json::from_lex_json;
use skyhouse_store::migrate::{self, Migrator};
use skyhouse_store::queries;
use skyhouse_store::writer::{write_batch, WriterConfig};
use skyhouse_store::ClickHouse;
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

#[tokio::test]
async fn counts_records_and_daily_stats_follow_deletes_replays_and_hidden_accounts() {
    let (db, ch) = fresh("queries");
    Migrator::new(&ch, migrate::embedded().expect("m"))
        .up()
        .await
        .expect("up");
    for _ in 0..2 {
        // written twice: replays change nothing
        put(&ch, ALICE, "app.bsky.feed.post", "3kp1", Action::Create, 10).await;
        put(&ch, ALICE, "app.bsky.feed.post", "3kp2", Action::Create, 11).await;
        put(&ch, ALICE, "app.bsky.feed.like", "3kl1", Action::Create, 12).await;
        put(&ch, BOB, "app.bsky.feed.like", "3kl2", Action::Create, 13).await;
        put(&ch, ALICE, "app.bsky.feed.post", "3kp2", Action::Delete, 14).await;
    }
    let counts = queries::collection_counts(&ch).await.expect("counts");
    assert_eq!(
        counts,
        vec![
            ("app.bsky.feed.like".into(), 2),
            ("app.bsky.feed.post".into(), 1)
        ]
    );
    // A deactivated account drops out of aggregates.
    let n = db.name();
    db.query(&format!(
        "INSERT INTO {n}.accounts VALUES ('{BOB}', 0, 'deactivated', 1, now())"
    ));
    let counts = queries::collection_counts(&ch).await.expect("counts");
    assert_eq!(
        counts,
        vec![
            ("app.bsky.feed.like".into(), 1),
            ("app.bsky.feed.post".into(), 1)
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
            ("app.bsky.feed.like".into(), "3kl1".into(), 12),
            ("app.bsky.feed.post".into(), "3kp1".into(), 10)
        ]
    );
    assert!(
        recs[1].record.contains("\"text\":\"hi\""),
        "{}",
        recs[1].record
    );
    assert!(queries::records_of(&ch, "not a did", 10).await.is_err());

    queries::refresh_daily_stats(&ch, "2024-01-01")
        .await
        .expect("refresh");
    queries::refresh_daily_stats(&ch, "2024-01-01")
        .await
        .expect("refresh again");
    let day = |s: &[queries::DailyStat]| {
        s.iter()
            .map(|d| (d.day.clone(), d.collection.clone(), d.records, d.actors))
            .collect::<Vec<_>>()
    };
    let stats = queries::daily_stats(&ch, "2024-01-01")
        .await
        .expect("stats");
    // sort_at = min(createdAt, indexed_at): posts on 05-01, likes on 05-02.
    assert_eq!(
        day(&stats),
        vec![
            ("2024-05-01".into(), "app.bsky.feed.post".into(), 1, 1),
            ("2024-05-02".into(), "app.bsky.feed.like".into(), 2, 2),
        ]
    );
    // Delete the last post of 05-01: the day drops to zero, not stale.
    put(&ch, ALICE, "app.bsky.feed.post", "3kp1", Action::Delete, 20).await;
    queries::refresh_daily_stats(&ch, "2024-01-01")
        .await
        .expect("refresh");
    let stats = queries::daily_stats(&ch, "2024-01-01")
        .await
        .expect("stats");
    assert_eq!(
        day(&stats)[0],
        ("2024-05-01".into(), "app.bsky.feed.post".into(), 0, 0)
    );
    assert!(queries::refresh_daily_stats(&ch, "2024-1-1").await.is_err());
}
