//! Like / repost / reply / quote counts (migration 0004) on the real server:
//! right, unchanged by replays, and delete-aware in either arrival order.

use crate::{fresh, migrated};
use skyhouse_atproto::json::from_lex_json;
use skyhouse_store::migrate::{self, Migrator};
use skyhouse_store::queries::{self, PostCounts};
use skyhouse_store::writer::{write_batch, WriterConfig};
use skyhouse_store::ClickHouse;
use skyhouse_transform::{apply, AccountRow, Action, Cid, Op, Rows};

const ALICE: &str = "did:plc:alicealicealicealicealic";
const BOB: &str = "did:plc:bobbobbobbobbobbobbobbobb";
const CAROL: &str = "did:plc:carolcarolcarolcarolcaro";
const POST: &str = "at://did:plc:alicealicealicealicealic/app.bsky.feed.post/3kpost0000001";
const OTHER: &str = "at://did:plc:alicealicealicealicealic/app.bsky.feed.post/3kpost0000002";
const CID: &str = "bafyreigmpffgbpgzfhvml36cecdcz7cn2v7kde2ar7ib4jgol7grj4jyly";

/// One operation to write.
struct W {
    did: &'static str,
    collection: &'static str,
    rkey: &'static str,
    action: Action,
    version: u64,
    record: serde_json::Value,
}

fn like(did: &'static str, rkey: &'static str, subject: &str, version: u64) -> W {
    W {
        did,
        collection: "app.bsky.feed.like",
        rkey,
        action: Action::Create,
        version,
        record: serde_json::json!({"$type": "app.bsky.feed.like", "createdAt": "2024-05-02T12:00:00Z",
            "subject": {"uri": subject, "cid": CID}}),
    }
}

fn repost(did: &'static str, rkey: &'static str, subject: &str, version: u64) -> W {
    W {
        collection: "app.bsky.feed.repost",
        record: serde_json::json!({"$type": "app.bsky.feed.repost", "createdAt": "2024-05-02T12:00:00Z",
            "subject": {"uri": subject, "cid": CID}}),
        ..like(did, rkey, subject, version)
    }
}

fn post(did: &'static str, rkey: &'static str, version: u64, extra: serde_json::Value) -> W {
    let mut record = serde_json::json!({"$type": "app.bsky.feed.post", "text": "hi",
        "createdAt": "2024-05-01T12:00:00Z"});
    if let (Some(r), Some(e)) = (record.as_object_mut(), extra.as_object()) {
        r.extend(e.clone());
    }
    W {
        did,
        collection: "app.bsky.feed.post",
        rkey,
        action: Action::Create,
        version,
        record,
    }
}

fn delete(did: &'static str, collection: &'static str, rkey: &'static str, version: u64) -> W {
    W {
        did,
        collection,
        rkey,
        action: Action::Delete,
        version,
        record: serde_json::Value::Null,
    }
}

/// The same write as an update (`putRecord` of an existing key).
fn moved(w: W) -> W {
    W {
        action: Action::Update,
        ..w
    }
}

fn reply_to(uri: &str) -> serde_json::Value {
    serde_json::json!({"reply": {"root": {"uri": uri, "cid": CID}, "parent": {"uri": uri, "cid": CID}}})
}

fn quote_of(uri: &str) -> serde_json::Value {
    serde_json::json!({"embed": {"$type": "app.bsky.embed.record", "record": {"uri": uri, "cid": CID}}})
}

/// Write the operations as one batch, through the transform and the writer.
async fn write(ch: &ClickHouse, ops: &[W]) {
    let mut rows = Rows::default();
    for w in ops {
        let live = w.action != Action::Delete;
        let record = live.then(|| from_lex_json(&w.record).expect("record"));
        apply(
            &Op {
                did: w.did,
                collection: w.collection,
                rkey: w.rkey,
                action: w.action,
                cid: live.then(|| Cid::from_sha256(0x71, [w.version as u8; 32])),
                record: record.as_ref(),
                version: w.version,
                indexed_at: 1_714_700_000,
            },
            &mut rows,
        );
        assert!(rows.dead_letters.is_empty(), "{:?}", rows.dead_letters);
    }
    write_batch(ch, &WriterConfig::default(), &mut rows, 0u64)
        .await
        .expect("write");
}

async fn counts(ch: &ClickHouse, uri: &str) -> (u64, u64, u64, u64) {
    queries::refresh_interactions(ch).await.expect("refresh");
    let c = queries::post_counts(ch, &[uri]).await.expect("counts");
    assert_eq!(c.len(), 1);
    (c[0].likes, c[0].reposts, c[0].replies, c[0].quotes)
}

/// Two likes, a repost, a reply and a quote of POST; a like of OTHER.
fn interactions() -> Vec<W> {
    vec![
        post(ALICE, "3kpost0000001", 10, serde_json::json!({})),
        post(ALICE, "3kpost0000002", 11, serde_json::json!({})),
        like(BOB, "3klike0000001", POST, 20),
        like(CAROL, "3klike0000002", POST, 21),
        like(BOB, "3klike0000003", OTHER, 22),
        repost(CAROL, "3krepo0000001", POST, 23),
        post(BOB, "3kpost0000003", 24, reply_to(POST)),
        post(CAROL, "3kpost0000004", 25, quote_of(POST)),
    ]
}

#[tokio::test]
async fn counts_per_post_and_kind() {
    let (_db, ch) = migrated("agg_counts").await;
    write(&ch, &interactions()).await;
    queries::refresh_interactions(&ch).await.expect("refresh");
    let unknown = "at://did:plc:nobodynobodynobodynobodyn/app.bsky.feed.post/3kzzz";
    let got = queries::post_counts(&ch, &[POST, OTHER, unknown])
        .await
        .expect("counts");
    let want = |uri: &str, likes, reposts, replies, quotes| PostCounts {
        uri: uri.to_owned(),
        likes,
        reposts,
        replies,
        replies_visible: replies,
        replies_all: replies,
        quotes,
    };
    assert_eq!(
        got,
        vec![
            want(POST, 2, 1, 1, 1),
            want(OTHER, 1, 0, 0, 0),
            want(unknown, 0, 0, 0, 0)
        ]
    );
    // A hidden (deactivated) account's interactions are left out.
    let mut rows = Rows::default();
    rows.push_account(AccountRow {
        did: CAROL.to_owned(),
        active: 0,
        status: "deactivated".to_owned(),
        version: 1,
        indexed_at: 1_714_700_000,
    });
    write_batch(&ch, &WriterConfig::default(), &mut rows, 0u64)
        .await
        .expect("account");
    // Hidden from the next refresh on.
    queries::refresh_interactions(&ch).await.expect("refresh");
    let hidden = queries::post_counts(&ch, &[POST]).await.expect("counts");
    assert_eq!(hidden, vec![want(POST, 1, 0, 1, 0)]);
    assert_eq!(queries::post_counts(&ch, &[]).await.expect("none"), vec![]);
    assert!(queries::post_counts(&ch, &["https://x"]).await.is_err());
}

#[tokio::test]
async fn the_same_events_twice_change_nothing() {
    let (_db, ch) = migrated("agg_replay").await;
    write(&ch, &interactions()).await;
    let once = counts(&ch, POST).await;
    assert_eq!(once, (2, 1, 1, 1));
    // Replayed after a refresh, and again before one.
    write(&ch, &interactions()).await;
    assert_eq!(counts(&ch, POST).await, once);
    write(&ch, &interactions()).await;
    write(&ch, &interactions()).await;
    assert_eq!(counts(&ch, POST).await, once);
    // Merged and refreshed again: still the same.
    skyhouse_store::admin::optimize_final(&ch, "interactions")
        .await
        .expect("optimize");
    assert_eq!(counts(&ch, POST).await, once);
}

#[tokio::test]
async fn a_deleted_like_stops_counting() {
    let (_db, ch) = migrated("agg_delete").await;
    write(&ch, &interactions()).await;
    assert_eq!(counts(&ch, POST).await, (2, 1, 1, 1));
    // Refreshed in between: the tombstone finds its subject through
    // interaction_keys (the tombstone row itself names none).
    write(
        &ch,
        &[delete(BOB, "app.bsky.feed.like", "3klike0000001", 30)],
    )
    .await;
    assert_eq!(counts(&ch, POST).await, (1, 1, 1, 1));
    // Even after the record table merged the like away.
    skyhouse_store::admin::optimize_final(&ch, "likes")
        .await
        .expect("optimize");
    // Create and delete between two refreshes; a deleted repost, reply, quote.
    write(
        &ch,
        &[
            like(ALICE, "3klike0000009", POST, 40),
            delete(ALICE, "app.bsky.feed.like", "3klike0000009", 41),
            delete(CAROL, "app.bsky.feed.repost", "3krepo0000001", 42),
            delete(BOB, "app.bsky.feed.post", "3kpost0000003", 43),
            delete(CAROL, "app.bsky.feed.post", "3kpost0000004", 44),
        ],
    )
    .await;
    assert_eq!(counts(&ch, POST).await, (1, 0, 0, 0));
    // A like moved to another post by an update counts there only.
    write(&ch, &[moved(like(CAROL, "3klike0000002", OTHER, 50))]).await;
    assert_eq!(counts(&ch, POST).await, (0, 0, 0, 0));
    assert_eq!(counts(&ch, OTHER).await, (2, 0, 0, 0));
}

#[tokio::test]
async fn a_delete_arriving_before_its_create_wins() {
    let (_db, ch) = migrated("agg_delete_first").await;
    // The delete (newer version) arrives and is refreshed first…
    write(
        &ch,
        &[delete(BOB, "app.bsky.feed.like", "3klike0000001", 30)],
    )
    .await;
    assert_eq!(counts(&ch, POST).await, (0, 0, 0, 0));
    // …then the create it deletes (older version): never counted.
    write(&ch, &[like(BOB, "3klike0000001", POST, 20)]).await;
    assert_eq!(counts(&ch, POST).await, (0, 0, 0, 0));
    // Both in one refresh window, delete first, for a repost and a reply.
    write(
        &ch,
        &[
            delete(CAROL, "app.bsky.feed.repost", "3krepo0000001", 31),
            delete(BOB, "app.bsky.feed.post", "3kpost0000003", 32),
        ],
    )
    .await;
    write(
        &ch,
        &[
            repost(CAROL, "3krepo0000001", POST, 23),
            post(BOB, "3kpost0000003", 24, reply_to(POST)),
            like(CAROL, "3klike0000002", POST, 21),
        ],
    )
    .await;
    assert_eq!(counts(&ch, POST).await, (1, 0, 0, 0));
}

#[tokio::test]
async fn a_backlog_is_read_in_windows_with_the_same_result() {
    let (_db, ch) = migrated("agg_windows").await;
    // Likes arriving over four server seconds (inserted_at), a like moved to
    // another post and a delete arriving in later seconds than their creates.
    let seconds: Vec<Vec<W>> = vec![
        interactions(),
        vec![
            like(ALICE, "3klike0000004", POST, 30),
            like(BOB, "3klike0000005", POST, 31),
        ],
        vec![
            moved(like(CAROL, "3klike0000002", OTHER, 40)), // moved from POST
            delete(BOB, "app.bsky.feed.like", "3klike0000005", 41),
        ],
        vec![like(ALICE, "3klike0000006", OTHER, 50)],
    ];
    for (i, batch) in seconds.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        }
        write(&ch, batch).await;
    }
    // Two rows per window at most: the refresh splits the backlog by arrival.
    let refreshed = queries::refresh_interactions_in_windows(&ch, 2)
        .await
        .expect("refresh");
    assert!(refreshed.windows >= 3, "{refreshed:?}");
    let got = queries::post_counts(&ch, &[POST, OTHER])
        .await
        .expect("counts");
    let counts: Vec<(u64, u64, u64, u64)> = got
        .iter()
        .map(|c| (c.likes, c.reposts, c.replies, c.quotes))
        .collect();
    // POST: BOB's and CAROL's first likes, minus CAROL's (moved), plus
    // ALICE's; BOB's second was deleted. OTHER: BOB's, CAROL's moved, ALICE's.
    assert_eq!(counts, vec![(2, 1, 1, 1), (3, 0, 0, 0)]);
    // One window (the default size) gives the same counts.
    let again = queries::refresh_interactions(&ch).await.expect("refresh");
    assert_eq!(again.windows, 1);
    let same = queries::post_counts(&ch, &[POST, OTHER])
        .await
        .expect("counts");
    assert_eq!(same, got);
}

#[tokio::test]
async fn counts_kept_before_migration_0014_stay_right_through_the_upgrade() {
    let (db, ch) = fresh("agg_upgrade_0014");
    let all = migrate::embedded().expect("migrations");
    let before: Vec<_> = all.iter().filter(|m| m.version < 14).cloned().collect();
    Migrator::new(&ch, before).up().await.expect("up to 0013");
    write(&ch, &interactions()).await;
    // Carol's like moved to OTHER; the version naming POST is then merged
    // away.
    write(&ch, &[moved(like(CAROL, "3klike0000002", OTHER, 26))]).await;
    skyhouse_store::admin::optimize_final(&ch, "likes")
        .await
        .expect("optimize");
    // What the refresh before 0014 left (its creates, their subjects and
    // the moved like's rows; the move's subject is left to the seed from
    // likes), then the change log expired.
    db.query(
        "INSERT INTO interactions (subject_uri, kind, did, rkey, version, deleted, sort_at) \
         SELECT subject_uri, kind, did, rkey, version, 0, sort_at FROM interaction_changes \
         WHERE deleted = 0 AND subject_uri != '' AND version < 26",
    );
    db.query(
        "INSERT INTO interaction_subjects SELECT did, kind, rkey, subject_uri, version \
         FROM interaction_changes WHERE deleted = 0 AND subject_uri != '' AND version < 26",
    );
    db.query(&format!(
        "INSERT INTO interactions (subject_uri, kind, did, rkey, version, deleted, sort_at) VALUES \
         ('{POST}', 'like', '{CAROL}', '3klike0000002', 26, 1, now()), \
         ('{OTHER}', 'like', '{CAROL}', '3klike0000002', 26, 0, now())"
    ));
    db.query("TRUNCATE TABLE interaction_changes");
    let live = || async {
        let c = queries::post_counts(&ch, &[POST, OTHER])
            .await
            .expect("counts");
        (c[0].likes, c[0].replies, c[1].likes)
    };
    assert_eq!(live().await, (1, 1, 2));

    Migrator::new(&ch, all).up().await.expect("up");
    let seeded = |rkey: &str, subject: &str| {
        db.query(&format!(
            "SELECT count() FROM interaction_keys FINAL WHERE rkey = '{rkey}' AND subject_uri = '{subject}'"
        ))
        .trim()
        .to_owned()
    };
    assert_eq!(
        seeded("3klike0000002", POST),
        "1",
        "from interaction_subjects"
    );
    assert_eq!(seeded("3klike0000002", OTHER), "1", "from likes");
    assert_eq!(
        seeded("3kpost0000003", POST),
        "2",
        "a reply: parent and root"
    );
    assert_eq!(
        counts(&ch, POST).await,
        (1, 1, 1, 1),
        "the upgrade changes no count"
    );
    assert_eq!(live().await, (1, 1, 2));

    // Deletes of keys written before the upgrade (no change-log row of
    // them is left): their state and subjects come from the seed.
    write(
        &ch,
        &[
            delete(BOB, "app.bsky.feed.like", "3klike0000001", 30),
            delete(BOB, "app.bsky.feed.post", "3kpost0000003", 31),
            delete(CAROL, "app.bsky.feed.like", "3klike0000002", 32),
        ],
    )
    .await;
    assert_eq!(counts(&ch, POST).await, (0, 1, 0, 1));
    assert_eq!(counts(&ch, OTHER).await, (1, 0, 0, 0));
}
