//! The exploration views (migration 0010) on ClickHouse 18.16, over rows
//! written by the real transform and writer and kept by the real refresh:
//! the `_live` views leave out tombstones and hidden accounts, the windowed
//! views their window, `recent_posts_with_score` ranks as the whats-hot
//! feed does with the counts `post_counts` gives, and `follower_counts` /
//! `following_counts` equal `actor_counts`. A windowed view reads its
//! window only, on 18.16 too (current ClickHouse and the per-account views:
//! scripts/chdb_check.py).

use std::collections::BTreeSet;

use skyhouse_atproto::json::from_lex_json;
use skyhouse_atproto::syntax::{Datetime, Tid};
use skyhouse_store::counts::{actor_counts, post_counts};
use skyhouse_store::migrate::{self, Migrator};
use skyhouse_store::writer::{write_batch, WriterConfig};
use skyhouse_store::{aggregates, feeds, ClickHouse};
use skyhouse_testkit::TestDatabase;
use skyhouse_transform::{apply, Action, Cid, Op, Rows};

use crate::fresh;

const CID: &str = "bafyreigmpffgbpgzfhvml36cecdcz7cn2v7kde2ar7ib4jgol7grj4jyly";

/// The whats-hot window (pkg/feeds `HOT_WINDOW_SECS`), which
/// `recent_posts_with_score` uses.
const HOT_WINDOW_SECS: u32 = 48 * 3600;

pub(crate) fn did(name: &str) -> String {
    format!("did:plc:{:a<24}", name)
}

pub(crate) fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64
}

/// A TID key of `hours_ago` (and a clock id to keep keys apart).
pub(crate) fn tid(hours_ago: f64, clock: u16) -> String {
    let at = now_us() - (hours_ago * 3_600_000_000.0) as i64;
    Tid::from_parts(at as u64, clock).expect("tid").to_string()
}

/// One write: (did, collection, rkey, version, record or None for a delete).
pub(crate) type W = (String, &'static str, String, u64, Option<serde_json::Value>);

pub(crate) fn record(collection: &str, fields: serde_json::Value) -> serde_json::Value {
    let mut r = serde_json::json!({"$type": collection, "createdAt": Datetime::from_timestamp_micros(now_us()).expect("now").as_str()});
    if let (Some(r), Some(f)) = (r.as_object_mut(), fields.as_object()) {
        r.extend(f.clone());
    }
    r
}

pub(crate) async fn write(ch: &ClickHouse, ops: &[W]) {
    let mut rows = Rows::default();
    for (did, collection, rkey, version, rec) in ops {
        let rec = rec.as_ref().map(|r| from_lex_json(r).expect("record"));
        apply(
            &Op {
                did,
                collection,
                rkey,
                action: if rec.is_some() {
                    Action::Create
                } else {
                    Action::Delete
                },
                cid: rec
                    .as_ref()
                    .map(|_| Cid::from_sha256(0x71, [*version as u8; 32])),
                record: rec.as_ref(),
                version: *version,
                indexed_at: (now_us() / 1_000_000) as u32,
            },
            &mut rows,
        );
        assert!(rows.dead_letters.is_empty(), "{:?}", rows.dead_letters);
    }
    write_batch(ch, &WriterConfig::default(), &mut rows, 0u64)
        .await
        .expect("write");
}

fn column(db: &TestDatabase, sql: &str) -> Vec<String> {
    db.query(sql).lines().map(str::to_owned).collect()
}

fn set(db: &TestDatabase, sql: &str) -> BTreeSet<String> {
    column(db, sql).into_iter().collect()
}

#[tokio::test]
async fn views_show_current_visible_state_and_equal_the_counts_and_the_feed() {
    let (db, ch) = fresh("views");
    Migrator::new(&ch, migrate::embedded().expect("migrations"))
        .up()
        .await
        .expect("up");
    let (alice, bob, carol, erin) = (did("alice"), did("bob"), did("carol"), did("erin"));
    let post = |text: &str| {
        Some(record(
            "app.bsky.feed.post",
            serde_json::json!({"text": text}),
        ))
    };
    // Alice: posts 1, 10 and 30 hours old (in both windows), one 60 hours
    // old (in 72 h, not in 48 h), one 4 days old (in neither) and one
    // deleted; Bob one post; Erin (hidden below) one.
    let keys = [
        (alice.clone(), tid(1.0, 1)),
        (alice.clone(), tid(10.0, 2)),
        (alice.clone(), tid(30.0, 3)),
        (alice.clone(), tid(60.0, 4)),
        (alice.clone(), tid(96.0, 5)),
        (bob.clone(), tid(2.0, 6)),
        (erin.clone(), tid(3.0, 7)),
    ];
    let gone = tid(5.0, 8);
    let uri = |i: usize| format!("at://{}/app.bsky.feed.post/{}", keys[i].0, keys[i].1);
    let mut ops: Vec<W> = keys
        .iter()
        .enumerate()
        .map(|(i, (d, k))| {
            (
                d.clone(),
                "app.bsky.feed.post",
                k.clone(),
                10,
                post(&format!("post {i}")),
            )
        })
        .collect();
    ops.push((
        alice.clone(),
        "app.bsky.feed.post",
        gone.clone(),
        10,
        post("deleted"),
    ));
    write(&ch, &ops).await;
    write(
        &ch,
        &[(alice.clone(), "app.bsky.feed.post", gone.clone(), 11, None)],
    )
    .await;

    let subject = |i: usize| serde_json::json!({"subject": {"uri": uri(i), "cid": CID}});
    let like = |i: usize| Some(record("app.bsky.feed.like", subject(i)));
    let repost = |i: usize| Some(record("app.bsky.feed.repost", subject(i)));
    let follow = |d: &str| {
        Some(record(
            "app.bsky.graph.follow",
            serde_json::json!({"subject": d}),
        ))
    };
    let mut n = 100u16;
    let mut key = || {
        n += 1;
        tid(0.5, n)
    };
    let mut ops: Vec<W> = Vec::new();
    // Post 0: Bob likes it twice (counts once), Carol likes and reposts,
    // Erin likes (hidden: not counted). Post 1: Carol reposts. Post 2: Bob
    // likes. Post 3 (60 h): Carol likes. Post 5 (Bob's): Alice likes.
    for (who, w) in [
        (&bob, like(0)),
        (&bob, like(0)),
        (&carol, like(0)),
        (&carol, repost(0)),
        (&erin, like(0)),
        (&carol, repost(1)),
        (&bob, like(2)),
        (&carol, like(3)),
        (&alice, like(5)),
    ] {
        let collection = if w
            .as_ref()
            .is_some_and(|r| r["$type"] == "app.bsky.feed.like")
        {
            "app.bsky.feed.like"
        } else {
            "app.bsky.feed.repost"
        };
        ops.push((who.clone(), collection, key(), 20, w));
    }
    // Follows: Bob and Carol (twice) follow Alice, Erin follows Alice
    // (hidden: not counted), Alice follows Bob and Erin.
    for (who, whom) in [
        (&bob, &alice),
        (&carol, &alice),
        (&carol, &alice),
        (&erin, &alice),
        (&alice, &bob),
        (&alice, &erin),
    ] {
        ops.push((
            who.clone(),
            "app.bsky.graph.follow",
            key(),
            20,
            follow(whom),
        ));
    }
    write(&ch, &ops).await;
    db.query(&format!(
        "INSERT INTO accounts (did, active, status, version, indexed_at) VALUES ('{erin}', 0, 'takendown', 5, now())"
    ));
    aggregates::refresh(&ch).await.expect("refresh");

    // --- current state: no tombstone, no hidden account.
    let alive: BTreeSet<String> = [0, 1, 2, 3, 4, 5]
        .iter()
        .map(|&i| keys[i].1.clone())
        .collect();
    assert_eq!(set(&db, "SELECT rkey FROM posts_live"), alive);
    assert_eq!(
        set(
            &db,
            "SELECT rkey FROM records_live WHERE collection = 'app.bsky.feed.post'"
        ),
        alive
    );
    assert_eq!(
        db.query(&format!(
            "SELECT count() FROM likes_live WHERE did = '{erin}'"
        )),
        "0\n"
    );
    assert_eq!(
        db.query("SELECT count() FROM likes_live"),
        "6\n",
        "7 likes, 1 hidden"
    );

    // --- the windows.
    let in_72h: BTreeSet<String> = [0, 1, 2, 3, 5].iter().map(|&i| uri(i)).collect();
    assert_eq!(set(&db, "SELECT uri FROM recent_posts_72h"), in_72h);
    let in_48h: BTreeSet<String> = [0, 1, 2, 5].iter().map(|&i| uri(i)).collect();
    assert_eq!(set(&db, "SELECT uri FROM recent_posts_with_score"), in_48h);

    // --- the score: the feed's order, the counts' numbers.
    let ranked = column(
        &db,
        "SELECT uri FROM recent_posts_with_score WHERE likes + reposts > 0 ORDER BY score DESC, uri DESC",
    );
    let feed = feeds::hot_posts(&ch, HOT_WINDOW_SECS, 100)
        .await
        .expect("whats-hot");
    assert_eq!(ranked, feed);
    assert_eq!(ranked.len(), 4, "{ranked:?}");
    let uris: Vec<String> = [0, 1, 2, 5].iter().map(|&i| uri(i)).collect();
    let refs: Vec<&str> = uris.iter().map(String::as_str).collect();
    for c in post_counts(&ch, &refs).await.expect("post counts") {
        let row = db.query(&format!(
            "SELECT likes, reposts FROM recent_posts_with_score WHERE uri = '{}'",
            c.uri
        ));
        assert_eq!(row, format!("{}\t{}\n", c.likes, c.reposts), "{}", c.uri);
    }
    assert_eq!(
        db.query(&format!(
            "SELECT likes, reposts FROM recent_posts_with_score WHERE uri = '{}'",
            uri(0)
        )),
        "2\t1\n",
        "Bob once, Carol; Erin hidden"
    );

    // --- follow counts: those of /v1/stats/actors.
    for who in [&alice, &bob, &carol] {
        let c = &actor_counts(&ch, &[who.as_str()]).await.expect("counts")[0];
        let followers = db.query(&format!(
            "SELECT followers FROM follower_counts WHERE did = '{who}'"
        ));
        let follows = db.query(&format!(
            "SELECT follows FROM following_counts WHERE did = '{who}'"
        ));
        let or_zero = |s: String| s.trim().parse::<u64>().unwrap_or(0);
        assert_eq!(
            (or_zero(followers), or_zero(follows)),
            (c.followers, c.follows),
            "{who}"
        );
    }
    assert_eq!(
        db.query(&format!(
            "SELECT followers FROM follower_counts WHERE did = '{alice}'"
        )),
        "2\n",
        "Bob and Carol; Erin hidden"
    );
    assert_eq!(
        db.query(&format!(
            "SELECT follows FROM following_counts WHERE did = '{alice}'"
        )),
        "2\n"
    );
    for view in ["follower_counts", "following_counts"] {
        assert_eq!(
            db.query(&format!("SELECT count() FROM {view} WHERE did = '{erin}'")),
            "0\n",
            "{view}: a hidden account has no row"
        );
    }

    // --- a windowed view reads its window: 50,000 posts 20 days old in
    // recent_posts stay unread.
    db.query(
        "INSERT INTO recent_posts (tid_time, did, rkey, version, deleted) SELECT \
         now() - 1728000 - number, concat('did:plc:old', toString(number % 1000)), toString(number), 1, 0 \
         FROM system.numbers LIMIT 50000",
    );
    for view in ["recent_posts_72h", "recent_posts_with_score"] {
        let n = db
            .try_query(&format!(
                "SELECT count() FROM {view} SETTINGS max_rows_to_read = 10000"
            ))
            .unwrap_or_else(|e| panic!("{view} read outside its window: {e}"));
        assert!(n.trim().parse::<u64>().expect("count") >= 4, "{view}: {n}");
    }
    assert!(
        db.try_query("SELECT count() FROM recent_posts SETTINGS max_rows_to_read = 10000")
            .is_err(),
        "the limit stops a whole-table read"
    );
}

/// Since migration 0020, one insert logs each (collection, day) it touches
/// once in `day_changes` (0012's view logged every record), and the daily
/// stats still count every record; down to 0019, every record is logged
/// again.
#[tokio::test]
async fn an_insert_logs_each_of_its_days_once_and_the_stats_count_every_record() {
    let (db, ch) = crate::migrated("day_changes_per_insert").await;
    let (a, b) = (did("daylog"), did("daylogb"));
    let subject = serde_json::json!({"subject": {"uri": format!("at://{b}/app.bsky.feed.post/3kpost0000001"), "cid": CID}});
    let like = || Some(record("app.bsky.feed.like", subject.clone()));
    let mut ops: Vec<W> = Vec::new();
    for (i, hours_ago) in [1.0, 1.0, 1.0, 49.0, 49.0, 97.0].into_iter().enumerate() {
        ops.push((
            a.clone(),
            "app.bsky.feed.like",
            tid(hours_ago, i as u16),
            1,
            like(),
        ));
    }
    for i in 0..2 {
        let post = record("app.bsky.feed.post", serde_json::json!({"text": "hi"}));
        ops.push((
            b.clone(),
            "app.bsky.feed.post",
            tid(1.0, 10 + i),
            1,
            Some(post),
        ));
    }
    write(&ch, &ops).await;
    let count = |sql: &str| db.query(sql).trim().parse::<u64>().expect(sql);
    let pairs = count("SELECT uniqExact(collection, day) FROM record_days");
    assert!((3..=5).contains(&pairs), "{pairs} (collection, day) pairs");
    assert_eq!(count("SELECT count() FROM day_changes"), pairs);
    assert_eq!(
        count("SELECT max(c) FROM (SELECT count() AS c FROM day_changes GROUP BY collection, day)"),
        1
    );
    aggregates::refresh(&ch).await.expect("refresh");
    let stats = db.query(
        "SELECT collection, sum(records) FROM daily_stats FINAL GROUP BY collection ORDER BY collection FORMAT TabSeparated",
    );
    assert_eq!(stats, "app.bsky.feed.like\t6\napp.bsky.feed.post\t2\n");

    // Down to 0019: one row per record again.
    crate::down_to_before(&ch, 20).await;
    let more: Vec<W> = (0..3)
        .map(|i| (a.clone(), "app.bsky.feed.like", tid(2.0, 20 + i), 1, like()))
        .collect();
    write(&ch, &more).await;
    assert_eq!(count("SELECT count() FROM day_changes"), pairs + 3);
}
