//! The label feed's ranking (`feeds::labelled_posts`) on ClickHouse 18.16:
//! over the posts of its window by TID time when that holds a full ranking,
//! with the same answer as every post of the labelled accounts would give
//! (edits, deletes, hidden and negated accounts, off-time posts), and over
//! every post when the window cannot be trusted or comes up short.

use skyhouse_atproto::syntax::Datetime;
use skyhouse_store::feeds::{self, LabelRanking};
use skyhouse_store::migrate::{self, Migrator};
use skyhouse_store::ClickHouse;
use skyhouse_testkit::TestDatabase;

use crate::fresh;
use crate::views::{did, now_us, record, tid, write, W};

const POST: &str = "app.bsky.feed.post";

/// A post record created `hours_ago`.
fn post(hours_ago: f64) -> Option<serde_json::Value> {
    let at = now_us() - (hours_ago * 3_600_000_000.0) as i64;
    let created = Datetime::from_timestamp_micros(at).expect("time");
    Some(record(
        POST,
        serde_json::json!({"text": "art", "createdAt": created.as_str()}),
    ))
}

fn uri(did: &str, rkey: &str) -> String {
    format!("at://{did}/app.bsky.feed.post/{rkey}")
}

async fn ranking(ch: &ClickHouse, limit: u32) -> LabelRanking {
    feeds::labelled_posts(ch, "artist", limit)
        .await
        .expect("ranking")
}

/// Alice and Carol hold `artist`, Bob held it (negated since), Dan never
/// did; Carol is hidden.
async fn labelled(db: &TestDatabase) -> (String, String, String, String) {
    let (alice, bob, carol, dan) = (did("alice"), did("bob"), did("carol"), did("dan"));
    let name = db.name();
    db.query(&format!(
        "INSERT INTO {name}.actor_labels VALUES \
         ('{alice}', 'artist', 'did:plc:labeler', 0, 1, now()), \
         ('{bob}', 'artist', 'did:plc:labeler', 0, 1, now()), \
         ('{bob}', 'artist', 'did:plc:labeler', 1, 2, now()), \
         ('{carol}', 'artist', 'did:plc:labeler', 0, 1, now())"
    ));
    db.query(&format!(
        "INSERT INTO {name}.hidden_accounts VALUES ('{carol}', 1, 1)"
    ));
    (alice, bob, carol, dan)
}

#[tokio::test]
async fn the_label_ranking_reads_its_window_and_equals_the_ranking_of_every_post() {
    let (db, ch) = fresh("labels");
    Migrator::new(&ch, migrate::embedded().expect("migrations"))
        .up()
        .await
        .expect("up");
    let (alice, bob, carol, dan) = labelled(&db).await;
    // Alice's posts 1, 2 (deleted), 3 (edited: created 6 hours ago), 4, 5
    // hours old and 40 days old; one whose key is 40 days old, created 1.5
    // hours ago (an off-time post: `posts_off_time`, not `recent_posts`).
    let keys: Vec<String> = [1.0, 2.0, 3.0, 4.0, 5.0, 960.0]
        .iter()
        .enumerate()
        .map(|(i, h)| tid(*h, i as u16))
        .collect();
    let off = tid(960.0, 9);
    let mut ops: Vec<W> = [1.0, 2.0, 3.0, 4.0, 5.0, 960.0]
        .iter()
        .zip(&keys)
        .map(|(h, k)| (alice.clone(), POST, k.clone(), 10, post(*h)))
        .collect();
    ops.push((alice.clone(), POST, off.clone(), 10, post(1.5)));
    ops.push((alice.clone(), POST, keys[1].clone(), 11, None));
    ops.push((alice.clone(), POST, keys[2].clone(), 11, post(6.0)));
    // Newer posts of the others: negated, hidden, never labelled.
    for (who, h) in [(&bob, 0.5), (&carol, 0.6), (&dan, 0.7)] {
        ops.push((who.clone(), POST, tid(h, 20), 10, post(h)));
    }
    write(&ch, &ops).await;

    // The four newest: 1 h, the off-time post (1.5 h), 4 h, 5 h. The day's
    // window holds them, and the off-time post is current in `posts`.
    let want = vec![
        uri(&alice, &keys[0]),
        uri(&alice, &off),
        uri(&alice, &keys[3]),
        uri(&alice, &keys[4]),
    ];
    let got = ranking(&ch, 4).await;
    assert_eq!(got.uris, want);
    assert_eq!(got.window_secs, Some(86_400), "the day's posts were enough");

    // Five: the edited post (now 6 h) joins, still within the day.
    let got = ranking(&ch, 5).await;
    assert_eq!(got.uris[4], uri(&alice, &keys[2]));
    assert_eq!(got.window_secs, Some(86_400));

    // Seven: more than any window holds, so every post, the 40-day-old too.
    let got = ranking(&ch, 7).await;
    assert_eq!(got.window_secs, None, "no window holds seven posts");
    assert_eq!(got.uris.len(), 6, "{:?}", got.uris);
    assert_eq!(got.uris[5], uri(&alice, &keys[5]));

    // The off-time post edited to be created when its key says: that
    // version is in `posts` only, so the window's copy is stale. The check
    // sees it, and the ranking of every post puts the post 40 days back.
    write(&ch, &[(alice.clone(), POST, off.clone(), 12, post(960.0))]).await;
    let got = ranking(&ch, 4).await;
    assert_eq!(
        got.window_secs, None,
        "a stale off-time post is not trusted"
    );
    assert_eq!(
        got.uris,
        vec![
            uri(&alice, &keys[0]),
            uri(&alice, &keys[3]),
            uri(&alice, &keys[4]),
            uri(&alice, &keys[2]),
        ]
    );
}
