//! Counts as the AppView computes them (migration 0008, src/counts.rs), on
//! the real server: one like/repost/follow per account, threadgate-aware
//! replies, per-account counts; and random interleavings of creates,
//! duplicate creates, deletes and replays give what a direct recomputation
//! gives.

use std::collections::{BTreeMap, HashMap};

use crate::{fresh, migrated};
use skyhouse_atproto::json::from_lex_json;
use skyhouse_store::aggregates::refresh_hidden_accounts;
use skyhouse_store::counts::{actor_counts, post_counts, refresh_interactions};
use skyhouse_store::migrate::{self, Migrator};
use skyhouse_store::writer::{write_batch, WriterConfig};
use skyhouse_store::ClickHouse;
use skyhouse_transform::{apply, Action, Cid, Op, Rows};

const CID: &str = "bafyreigmpffgbpgzfhvml36cecdcz7cn2v7kde2ar7ib4jgol7grj4jyly";

fn did(name: &str) -> String {
    format!("did:plc:{:a<24}", name)
}

fn post_uri(author: &str, rkey: &str) -> String {
    format!("at://{author}/app.bsky.feed.post/{rkey}")
}

/// One operation, owned.
#[derive(Debug, Clone)]
struct W {
    did: String,
    collection: &'static str,
    rkey: String,
    version: u64,
    record: Option<serde_json::Value>,
    /// A write to a key that holds a record: an update, as the firehose says.
    update: bool,
}

fn create(
    did: &str,
    collection: &'static str,
    rkey: &str,
    version: u64,
    record: serde_json::Value,
) -> W {
    W {
        did: did.into(),
        collection,
        rkey: rkey.into(),
        version,
        record: Some(record),
        update: false,
    }
}

fn delete(did: &str, collection: &'static str, rkey: &str, version: u64) -> W {
    W {
        did: did.into(),
        collection,
        rkey: rkey.into(),
        version,
        record: None,
        update: false,
    }
}

fn like(did: &str, rkey: &str, subject: &str, version: u64) -> W {
    create(
        did,
        "app.bsky.feed.like",
        rkey,
        version,
        serde_json::json!({
        "$type": "app.bsky.feed.like", "createdAt": "2024-05-02T12:00:00Z",
        "subject": {"uri": subject, "cid": CID}}),
    )
}

fn repost(did: &str, rkey: &str, subject: &str, version: u64) -> W {
    create(
        did,
        "app.bsky.feed.repost",
        rkey,
        version,
        serde_json::json!({
        "$type": "app.bsky.feed.repost", "createdAt": "2024-05-02T12:00:00Z",
        "subject": {"uri": subject, "cid": CID}}),
    )
}

fn follow(did: &str, rkey: &str, subject: &str, version: u64) -> W {
    create(
        did,
        "app.bsky.graph.follow",
        rkey,
        version,
        serde_json::json!({
        "$type": "app.bsky.graph.follow", "createdAt": "2024-05-02T12:00:00Z", "subject": subject}),
    )
}

fn post(did: &str, rkey: &str, version: u64, created: &str, extra: serde_json::Value) -> W {
    let mut record =
        serde_json::json!({"$type": "app.bsky.feed.post", "text": "hi", "createdAt": created});
    if let (Some(r), Some(e)) = (record.as_object_mut(), extra.as_object()) {
        r.extend(e.clone());
    }
    create(did, "app.bsky.feed.post", rkey, version, record)
}

fn reply(root: &str, parent: &str) -> serde_json::Value {
    serde_json::json!({"reply": {"root": {"uri": root, "cid": CID}, "parent": {"uri": parent, "cid": CID}}})
}

fn threadgate(
    did: &str,
    post_rkey: &str,
    version: u64,
    created: &str,
    allow: Option<serde_json::Value>,
    hidden: &[&str],
) -> W {
    let mut record = serde_json::json!({"$type": "app.bsky.feed.threadgate",
        "post": post_uri(did, post_rkey), "createdAt": created, "hiddenReplies": hidden});
    if let (Some(r), Some(a)) = (record.as_object_mut(), allow) {
        r.insert("allow".into(), a);
    }
    create(did, "app.bsky.feed.threadgate", post_rkey, version, record)
}

/// A root post (version 1) and its threadgate (version 2) that lets
/// nobody but the author reply.
fn closed_root(owner: &str, rkey: &str, created: &str) -> Vec<W> {
    vec![
        post(owner, rkey, 1, created, serde_json::json!({})),
        threadgate(owner, rkey, 2, created, Some(serde_json::json!([])), &[]),
    ]
}

async fn write(ch: &ClickHouse, ops: &[W]) {
    let mut rows = Rows::default();
    for w in ops {
        let record = w.record.as_ref().map(|r| from_lex_json(r).expect("record"));
        apply(
            &Op {
                did: &w.did,
                collection: w.collection,
                rkey: &w.rkey,
                action: match (&record, w.update) {
                    (None, _) => Action::Delete,
                    (Some(_), true) => Action::Update,
                    (Some(_), false) => Action::Create,
                },
                cid: record
                    .as_ref()
                    .map(|_| Cid::from_sha256(0x71, [w.version as u8; 32])),
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

/// (likes, reposts, replies, replies_all, quotes) of `uri` after a refresh.
async fn counts(ch: &ClickHouse, uri: &str) -> (u64, u64, u64, u64, u64) {
    refresh_interactions(ch).await.expect("refresh");
    let c = post_counts(ch, &[uri]).await.expect("counts");
    (
        c[0].likes,
        c[0].reposts,
        c[0].replies,
        c[0].replies_all,
        c[0].quotes,
    )
}

#[tokio::test]
async fn likes_reposts_and_follows_count_once_per_account() {
    let (_db, ch) = migrated("counts_dupes").await;
    let (alice, bob, carol) = (did("alice"), did("bob"), did("carol"));
    let p = post_uri(&alice, "3kpost0000001");
    // Bob likes it twice, Carol three times (applyWrites allows that): 2.
    write(
        &ch,
        &[
            post(
                &alice,
                "3kpost0000001",
                1,
                "2024-05-01T00:00:00Z",
                serde_json::json!({}),
            ),
            like(&bob, "3klike0000001", &p, 10),
            like(&bob, "3klike0000002", &p, 11),
            like(&carol, "3klike0000003", &p, 12),
            like(&carol, "3klike0000004", &p, 13),
            like(&carol, "3klike0000005", &p, 14),
            repost(&bob, "3krepo0000001", &p, 15),
            repost(&bob, "3krepo0000002", &p, 16),
        ],
    )
    .await;
    assert_eq!(counts(&ch, &p).await, (2, 1, 0, 0, 0));
    // Deleting one of Bob's duplicates: the other still counts.
    write(
        &ch,
        &[delete(&bob, "app.bsky.feed.like", "3klike0000001", 20)],
    )
    .await;
    assert_eq!(counts(&ch, &p).await, (2, 1, 0, 0, 0));
    // Deleting the last one: Bob stops counting. A delete that arrives
    // before its create (Carol's) wins too.
    write(
        &ch,
        &[
            delete(&bob, "app.bsky.feed.like", "3klike0000002", 21),
            delete(&carol, "app.bsky.feed.like", "3klike0000006", 31),
        ],
    )
    .await;
    write(&ch, &[like(&carol, "3klike0000006", &p, 30)]).await;
    assert_eq!(counts(&ch, &p).await, (1, 1, 0, 0, 0));
    // Follows: distinct followers, duplicates once.
    write(
        &ch,
        &[
            follow(&bob, "3kfoll0000001", &alice, 40),
            follow(&bob, "3kfoll0000002", &alice, 41),
            follow(&carol, "3kfoll0000003", &alice, 42),
            follow(&carol, "3kfoll0000004", &bob, 43),
        ],
    )
    .await;
    refresh_interactions(&ch).await.expect("refresh");
    let got = actor_counts(&ch, &[&alice, &bob, &carol])
        .await
        .expect("actors");
    let followers: Vec<u64> = got.iter().map(|c| c.followers).collect();
    let follows: Vec<u64> = got.iter().map(|c| c.follows).collect();
    assert_eq!(followers, [2, 1, 0]);
    assert_eq!(follows, [0, 1, 2]);
    assert_eq!(got[0].posts, 1);
    assert_eq!((got[0].likes_received, got[0].reposts_received), (1, 1));
    // Unfollow one duplicate: still following.
    write(
        &ch,
        &[delete(&bob, "app.bsky.graph.follow", "3kfoll0000001", 44)],
    )
    .await;
    refresh_interactions(&ch).await.expect("refresh");
    let got = actor_counts(&ch, &[&alice]).await.expect("actors");
    assert_eq!((got[0].followers, got[0].follows), (2, 0));
}

#[tokio::test]
async fn replies_follow_the_threadgate_as_the_appview_does() {
    let (_db, ch) = migrated("counts_gates").await;
    let owner = did("owner");
    let (friend, stranger, listed, mentioned, fan) = (
        did("friend"),
        did("stranger"),
        did("listed"),
        did("mentioned"),
        did("fan"),
    );
    let t = "2024-05-01T10:00:00Z";
    let later = "2024-05-01T11:00:00Z";
    // Root posts, each with its own gate.
    let roots = [
        "3kroot0000001",
        "3kroot0000002",
        "3kroot0000003",
        "3kroot0000004",
        "3kroot0000005",
    ];
    let list = format!("at://{owner}/app.bsky.graph.list/3klist0000001");
    let mut ops = vec![
        // Root 1: nobody may reply. Root 2: accounts the owner follows.
        // Root 3: mentioned accounts. Root 4: a list. Root 5: followers.
        post(&owner, roots[0], 1, t, serde_json::json!({})),
        post(&owner, roots[1], 1, t, serde_json::json!({})),
        post(
            &owner,
            roots[2],
            1,
            t,
            serde_json::json!({"facets": [{"index": {"byteStart": 0, "byteEnd": 2},
            "features": [{"$type": "app.bsky.richtext.facet#mention", "did": mentioned}]}]}),
        ),
        post(&owner, roots[3], 1, t, serde_json::json!({})),
        post(&owner, roots[4], 1, t, serde_json::json!({})),
        threadgate(&owner, roots[0], 2, t, Some(serde_json::json!([])), &[]),
        threadgate(
            &owner,
            roots[1],
            2,
            t,
            Some(serde_json::json!([{"$type": "app.bsky.feed.threadgate#followingRule"}])),
            &[],
        ),
        threadgate(
            &owner,
            roots[2],
            2,
            t,
            Some(serde_json::json!([{"$type": "app.bsky.feed.threadgate#mentionRule"}])),
            &[],
        ),
        threadgate(
            &owner,
            roots[3],
            2,
            t,
            Some(serde_json::json!([{"$type": "app.bsky.feed.threadgate#listRule", "list": list}])),
            &[],
        ),
        threadgate(
            &owner,
            roots[4],
            2,
            t,
            Some(serde_json::json!([{"$type": "app.bsky.feed.threadgate#followerRule"}])),
            &[],
        ),
        follow(&owner, "3kfoll0000001", &friend, 3),
        follow(&fan, "3kfoll0000002", &owner, 3),
        create(
            &owner,
            "app.bsky.graph.list",
            "3klist0000001",
            3,
            serde_json::json!({
            "$type": "app.bsky.graph.list", "name": "l", "purpose": "app.bsky.graph.defs#curatelist", "createdAt": t}),
        ),
        create(
            &owner,
            "app.bsky.graph.listitem",
            "3kitem0000001",
            3,
            serde_json::json!({
            "$type": "app.bsky.graph.listitem", "list": list, "subject": listed, "createdAt": t}),
        ),
    ];
    // Everyone replies to every root (reply rkeys are newer TIDs than the follows').
    let repliers = [&owner, &friend, &stranger, &listed, &mentioned, &fan];
    for (i, root) in roots.iter().enumerate() {
        let uri = post_uri(&owner, root);
        for (j, r) in repliers.iter().enumerate() {
            ops.push(post(
                r,
                &format!("3kreply{i}{j}00000"),
                10,
                later,
                reply(&uri, &uri),
            ));
        }
    }
    write(&ch, &ops).await;
    let c = |i: usize| post_uri(&owner, roots[i]);
    // (likes, reposts, replies, replies_all, quotes); the owner always may.
    assert_eq!(counts(&ch, &c(0)).await, (0, 0, 1, 6, 0), "nobody");
    assert_eq!(
        counts(&ch, &c(1)).await,
        (0, 0, 2, 6, 0),
        "following: owner, friend"
    );
    assert_eq!(
        counts(&ch, &c(2)).await,
        (0, 0, 2, 6, 0),
        "mention: owner, mentioned"
    );
    assert_eq!(
        counts(&ch, &c(3)).await,
        (0, 0, 2, 6, 0),
        "list: owner, listed"
    );
    assert_eq!(
        counts(&ch, &c(4)).await,
        (0, 0, 2, 6, 0),
        "followers: owner, fan"
    );
    // The owner hides the friend's reply on root 2: not counted.
    let hidden = post_uri(&friend, "3kreply1100000");
    write(
        &ch,
        &[threadgate(
            &owner,
            roots[1],
            5,
            t,
            Some(serde_json::json!([{"$type": "app.bsky.feed.threadgate#followingRule"}])),
            &[&hidden],
        )],
    )
    .await;
    // Hidden: still in `replies` (as the AppView's replyCount), not in
    // `replies_visible`.
    assert_eq!(counts(&ch, &c(1)).await, (0, 0, 2, 6, 0), "hidden");
    let visible = post_counts(&ch, &[&c(1)]).await.expect("counts");
    assert_eq!(visible[0].replies_visible, 1);
    // The gate of root 1 goes away: its thread is evaluated again.
    write(
        &ch,
        &[delete(&owner, "app.bsky.feed.threadgate", roots[0], 6)],
    )
    .await;
    assert_eq!(counts(&ch, &c(0)).await, (0, 0, 6, 6, 0), "gate deleted");
    // A gate made after the replies does not apply to them.
    let late_root = "3kroot0000006";
    let uri = post_uri(&owner, late_root);
    write(
        &ch,
        &[
            post(&owner, late_root, 7, t, serde_json::json!({})),
            post(&stranger, "3kreply6000000", 8, t, reply(&uri, &uri)),
        ],
    )
    .await;
    assert_eq!(counts(&ch, &uri).await, (0, 0, 1, 1, 0));
    write(
        &ch,
        &[threadgate(
            &owner,
            late_root,
            9,
            later,
            Some(serde_json::json!([])),
            &[],
        )],
    )
    .await;
    assert_eq!(counts(&ch, &uri).await, (0, 0, 1, 1, 0), "late gate");
    // A reply replayed after the gate pass keeps its flags.
    write(
        &ch,
        &[post(
            &stranger,
            "3kreply0200000",
            10,
            later,
            reply(&c(0), &c(0)),
        )],
    )
    .await;
    assert_eq!(counts(&ch, &c(0)).await, (0, 0, 6, 6, 0));
}

/// One random step of the model: what a record key holds after it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Live(String),
    Gone,
}

#[tokio::test]
async fn random_interleavings_equal_a_recomputation() {
    let (_db, ch) = migrated("counts_random").await;
    let accounts: Vec<String> = (0..6).map(|i| did(&format!("acct{i}"))).collect();
    let posts: Vec<String> = (0..3)
        .map(|i| post_uri(&accounts[0], &format!("3kpost000000{i}")))
        .collect();
    let mut rng = fastrand::Rng::with_seed(0x5eed_c0de);
    let mut history: Vec<W> = Vec::new();
    for round in 0..4u64 {
        // Each account's commits in its own order (versions increase per
        // key); the batches then arrive shuffled, some replayed.
        let mut ops: Vec<W> = Vec::new();
        let mut version: HashMap<(String, String), (u64, bool)> = HashMap::new();
        for _ in 0..60 {
            let who = &accounts[rng.usize(1..accounts.len())];
            let kind = rng.usize(0..3);
            let collection = [
                "app.bsky.feed.like",
                "app.bsky.feed.repost",
                "app.bsky.graph.follow",
            ][kind];
            let rkey = format!("3k{}{:010}", round, rng.usize(0..8));
            let (v, live) = version
                .entry((who.clone(), format!("{collection}/{rkey}")))
                .or_insert((round * 1000, false));
            *v += 1 + rng.u64(0..3);
            let w = if rng.usize(0..4) == 0 {
                *live = false;
                delete(who, collection, &rkey, *v)
            } else {
                let target = &posts[rng.usize(0..posts.len())];
                let mut w = match kind {
                    0 => like(who, &rkey, target, *v),
                    1 => repost(who, &rkey, target, *v),
                    _ => follow(who, &rkey, &accounts[rng.usize(0..3)], *v),
                };
                // A write to a key that holds a record is an update (as the
                // firehose says), to a new or deleted key a create.
                w.update = *live;
                *live = true;
                w
            };
            ops.push(w);
        }
        let mut arrivals: Vec<W> = ops.clone();
        for _ in 0..10 {
            arrivals.push(ops[rng.usize(0..ops.len())].clone()); // replays
        }
        rng.shuffle(&mut arrivals);
        for chunk in arrivals.chunks(7) {
            write(&ch, chunk).await;
            if rng.bool() {
                refresh_interactions(&ch).await.expect("refresh");
            }
        }
        refresh_interactions(&ch).await.expect("refresh");
        // The model, all rounds so far: the newest version of each key wins.
        history.extend(ops);
        let mut newest: BTreeMap<(String, &str, String), (u64, State)> = BTreeMap::new();
        for w in &history {
            let state = match &w.record {
                None => State::Gone,
                Some(r) => State::Live(
                    r["subject"]["uri"]
                        .as_str()
                        .or(r["subject"].as_str())
                        .unwrap_or_default()
                        .to_owned(),
                ),
            };
            let key = (w.did.clone(), w.collection, w.rkey.clone());
            let e = newest.entry(key).or_insert((0, State::Gone));
            if w.version >= e.0 {
                *e = (w.version, state);
            }
        }
        let count = |collection: &str, subject: &str| -> u64 {
            let mut who: Vec<&String> = newest
                .iter()
                .filter(|((_, c, _), (_, s))| {
                    *c == collection && *s == State::Live(subject.to_owned())
                })
                .map(|((d, _, _), _)| d)
                .collect();
            who.sort();
            who.dedup();
            who.len() as u64
        };
        let refs: Vec<&str> = posts.iter().map(String::as_str).collect();
        let got = post_counts(&ch, &refs).await.expect("counts");
        for (c, p) in got.iter().zip(&posts) {
            assert_eq!(
                c.likes,
                count("app.bsky.feed.like", p),
                "round {round} likes of {p}"
            );
            assert_eq!(
                c.reposts,
                count("app.bsky.feed.repost", p),
                "round {round} reposts of {p}"
            );
        }
        let refs: Vec<&str> = accounts[..3].iter().map(String::as_str).collect();
        let got = actor_counts(&ch, &refs).await.expect("actors");
        for (c, a) in got.iter().zip(&accounts) {
            assert_eq!(
                c.followers,
                count("app.bsky.graph.follow", a),
                "round {round} followers of {a}"
            );
        }
    }
}

/// A change row that took its arrival time before a refresh started and
/// became visible only after it (an insert in flight) is read by the next
/// refresh, which starts at that row's second; when nothing arrived late, a
/// refresh starts where the last one started, not a margin before it. The
/// same for the accounts' log.
#[tokio::test]
async fn a_row_that_became_visible_after_a_refresh_is_read_by_the_next() {
    let (db, ch) = migrated("counts_late").await;
    let (alice, bob, carol) = (did("alice"), did("bob"), did("carol"));
    let p = post_uri(&alice, "3kpost0000001");
    write(&ch, &[like(&bob, "3klike0000001", &p, 10)]).await;
    let first = refresh_interactions(&ch).await.expect("refresh");
    let second = refresh_interactions(&ch).await.expect("refresh");
    assert_eq!(second.after, first.upto, "nothing late: no margin read");
    // Carol's like, as its insert would have logged it 10 s before the last
    // refresh started, visible only now (written to the log by hand: the
    // view stamps the time it runs at).
    let late = second.upto - 10;
    db.query(&format!(
        "INSERT INTO interaction_changes (arrived, kind, subject_uri, did, rkey, version, deleted, action, sort_at) \
         VALUES (toDateTime({late}), 'like', '{p}', '{carol}', '3klike0000002', 11, 0, 1, toDateTime(1714521600))"
    ));
    let third = refresh_interactions(&ch).await.expect("refresh");
    assert_eq!(third.after, late, "read again from the late row's second");
    let got = post_counts(&ch, &[&p]).await.expect("counts");
    assert_eq!(got[0].likes, 2, "the late like counts");
    let fourth = refresh_interactions(&ch).await.expect("refresh");
    assert_eq!(fourth.after, third.upto, "read once, not again");

    // The accounts' log: a late event is read again from its second.
    let (_, upto) = refresh_hidden_accounts(&ch).await.expect("accounts");
    let (after, _) = refresh_hidden_accounts(&ch).await.expect("accounts");
    assert_eq!(after, upto);
    db.query(&format!(
        "INSERT INTO account_changes (arrived, did) VALUES (toDateTime({}), '{bob}')",
        upto - 3
    ));
    let (after, _) = refresh_hidden_accounts(&ch).await.expect("accounts");
    assert_eq!(after, upto - 3);
}

#[tokio::test]
async fn a_window_read_again_leaves_the_gate_verdicts_alone() {
    // On a cluster every refresh reads its whole margin again (and a
    // single server does after a run stopped between windows). A reply's
    // row rewritten there with the flags at 0 would replace the gate pass's
    // verdict (the later of equal versions wins): a forbidden reply
    // counted. Only the gate pass writes a reply's row, with its flags.
    let (db, ch) = migrated("counts_read_again").await;
    // The rows are counted as stored: no merge may collapse them meanwhile.
    db.query("SYSTEM STOP MERGES interactions");
    let (owner, stranger) = (did("owner"), did("stranger"));
    let t = "2024-05-01T10:00:00Z";
    let root = post_uri(&owner, "3kroot0000001");
    let mut ops = closed_root(&owner, "3kroot0000001", t);
    ops.push(post(&stranger, "3kreply0000001", 3, t, reply(&root, &root)));
    write(&ch, &ops).await;
    assert_eq!(counts(&ch, &root).await, (0, 0, 0, 1, 0), "gated");
    let unflagged = || {
        db.query(&format!(
            "SELECT count() FROM interactions WHERE kind = 'reply' AND did = '{stranger}' AND gated = 0"
        ))
    };
    let before = unflagged();
    // The last run's watermark without its counts: the next reads the
    // whole margin again, the reply's create among it.
    let done = refresh_interactions(&ch).await.expect("refresh");
    db.query(&format!(
        "INSERT INTO aggregate_refreshes (name, upto, version, exact) VALUES \
         ('interactions', toDateTime({}), toUInt64(toUnixTimestamp(now())) * 1000000 + 999999, 0)",
        done.upto
    ));
    let again = refresh_interactions(&ch).await.expect("refresh");
    assert!(
        again.after < done.upto,
        "{again:?} after {done:?}: not read again"
    );
    assert_eq!(
        unflagged(),
        before,
        "the reply was written again with its flags at 0"
    );
    let got = post_counts(&ch, &[&root]).await.expect("counts");
    assert_eq!((got[0].replies, got[0].replies_all), (0, 1));
}

#[tokio::test]
async fn a_gated_reply_created_after_its_delete_arrived_stays_deleted() {
    // A reply's delete arrives first (version 12), then its create (11, a
    // backfill racing the firehose): the create is tombstoned at 11, just
    // below the delete. The gate pass writes the reply's row at 11 too;
    // the tombstone must come after it (at equal versions the later insert
    // wins), or the deleted reply counts again. The create arrives in a
    // later refresh than the delete, which that refresh does not read
    // again: the delete arrived a second before the first refresh started
    // (a refresh reads again only from the seconds that got rows late).
    let (_db, ch) = migrated("counts_gated_stale").await;
    let (owner, stranger) = (did("owner"), did("stranger"));
    let t = "2024-05-01T10:00:00Z";
    let root = post_uri(&owner, "3kroot0000001");
    write(&ch, &closed_root(&owner, "3kroot0000001", t)).await;
    write(
        &ch,
        &[delete(
            &stranger,
            "app.bsky.feed.post",
            "3kreply0000001",
            12,
        )],
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        counts(&ch, &root).await,
        (0, 0, 0, 0, 0),
        "the delete alone"
    );
    write(
        &ch,
        &[post(
            &stranger,
            "3kreply0000001",
            11,
            t,
            reply(&root, &root),
        )],
    )
    .await;
    assert_eq!(
        counts(&ch, &root).await,
        (0, 0, 0, 0, 0),
        "the stale create stays out"
    );
}

#[tokio::test]
async fn a_like_of_a_recent_post_created_after_its_delete_arrived_stays_out_of_the_rankings() {
    // `recent_interactions` (the feeds' rankings) keys a like by its
    // subject's TID time. A delete that arrives before its create (a
    // backfill racing the firehose) names no subject, so only the create's
    // arrival can tombstone it (interaction_pending_matches, copied by
    // migration 0018's view): at the same time as the like's own row, or
    // the tombstone lands beside it.
    let (db, ch) = migrated("counts_recent_replay").await;
    let (alice, bob) = (did("alice"), did("bob"));
    let now_micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let hour_ago = now_micros - 3_600_000_000;
    let rkey = skyhouse_atproto::syntax::Tid::from_u64(hour_ago << 10)
        .unwrap()
        .to_string();
    let subject = post_uri(&alice, &rkey);
    let row = |rkey: &str| {
        db.query(&format!(
            "SELECT toUnixTimestamp(subject_time), deleted FROM recent_interactions FINAL WHERE did = '{bob}' AND rkey = '{rkey}'"
        ))
    };
    let want = |deleted: u8| format!("{}\t{deleted}\n", hour_ago / 1_000_000);
    // A live like first: the rankings have it at its subject's time.
    write(&ch, &[like(&bob, "3klike0000001", &subject, 10)]).await;
    refresh_interactions(&ch).await.expect("refresh");
    let mut got = vec![row("3klike0000001")];
    // Another like's delete, then (later) its older create.
    write(
        &ch,
        &[delete(&bob, "app.bsky.feed.like", "3klike0000002", 12)],
    )
    .await;
    refresh_interactions(&ch).await.expect("refresh");
    write(&ch, &[like(&bob, "3klike0000002", &subject, 11)]).await;
    refresh_interactions(&ch).await.expect("refresh");
    got.push(row("3klike0000002"));
    assert_eq!(
        got,
        [want(0), want(1)],
        "the live like; the stale create tombstoned"
    );
}

#[tokio::test]
async fn an_edit_that_keeps_the_subjects_survives_a_replay_of_the_older_create() {
    // A reply quoting a post, edited (putRecord: same parent, same quote),
    // then its older create replayed (a firehose replay from an old
    // cursor): the create is stale, the edit's rows stay live.
    let (_db, ch) = migrated("counts_edit_replay").await;
    let (alice, bob) = (did("alice"), did("bob"));
    let root = post_uri(&alice, "3kroot0000001");
    let quoted = post_uri(&alice, "3kroot0000002");
    let t = "2024-05-02T12:00:00Z";
    write(
        &ch,
        &[
            post(&alice, "3kroot0000001", 1, t, serde_json::json!({})),
            post(&alice, "3kroot0000002", 1, t, serde_json::json!({})),
        ],
    )
    .await;
    let body = |text: &str| {
        let mut extra = reply(&root, &root);
        extra["text"] = text.into();
        extra["embed"] = serde_json::json!({"$type": "app.bsky.embed.record",
            "record": {"uri": quoted, "cid": CID}});
        extra
    };
    let created = post(&bob, "3kreply000001", 5, t, body("first"));
    write(&ch, std::slice::from_ref(&created)).await;
    assert_eq!(counts(&ch, &root).await, (0, 0, 1, 1, 0), "the reply");
    assert_eq!(counts(&ch, &quoted).await, (0, 0, 0, 0, 1), "the quote");
    let mut edit = post(&bob, "3kreply000001", 10, t, body("edited"));
    edit.update = true;
    write(&ch, &[edit]).await;
    assert_eq!(counts(&ch, &root).await, (0, 0, 1, 1, 0), "edited");
    write(&ch, &[created]).await;
    assert_eq!(
        counts(&ch, &root).await,
        (0, 0, 1, 1, 0),
        "the reply after the replayed create"
    );
    assert_eq!(
        counts(&ch, &quoted).await,
        (0, 0, 0, 0, 1),
        "the quote after the replayed create"
    );
    let bob_posts = actor_counts(&ch, &[&bob]).await.expect("actor counts");
    assert_eq!(bob_posts[0].posts, 1, "{bob_posts:?}");
}

#[test]
fn the_tid_time_expression_reads_every_key_as_the_tid_parser_does() {
    let (db, _ch) = fresh("tid_time");
    let mut rng = fastrand::Rng::with_seed(7);
    let mut keys: Vec<String> = (0..3_000)
        .map(|i| {
            // Every range of values: the top bit is always 0 in a TID.
            let v = match i % 3 {
                0 => rng.u64(..) >> 1,
                1 => rng.u64(1_600_000_000_000_000 << 10..1_900_000_000_000_000 << 10),
                _ => rng.u64(..1 << 40),
            };
            skyhouse_atproto::syntax::Tid::from_u64(v)
                .expect("tid")
                .to_string()
        })
        .collect();
    keys.extend(
        [
            "2222222222222",
            "jzzzzzzzzzzzz",
            "kzzzzzzzzzzzz",
            "3jzfcijpj2z2",
            "3jzfcijpj2z2aa",
            "3JZFCIJPJ2Z2A",
            "3jzfcijpj2z1a",
            "3jzfcijpj2z2!",
            "self",
            "",
        ]
        .map(String::from),
    );
    let list: Vec<String> = keys.iter().map(|k| format!("'{k}'")).collect();
    let out = db.query(&format!(
        "SELECT k, toUInt32({}) FROM (SELECT arrayJoin([{}]) AS k)",
        skyhouse_store::counts::tid_time_sql("k"),
        list.join(", ")
    ));
    let got: Vec<(String, u32)> = out
        .lines()
        .map(|l| {
            let (k, t) = l.split_once('\t').expect("two columns");
            (k.to_owned(), t.parse().expect("seconds"))
        })
        .collect();
    let want: Vec<(String, u32)> = keys
        .iter()
        .map(|k| {
            let secs = k.parse::<skyhouse_atproto::syntax::Tid>().map_or(0, |t| {
                (t.timestamp_micros() / 1_000_000).min(u64::from(u32::MAX))
            });
            (k.clone(), secs as u32)
        })
        .collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }
    assert!(want.iter().filter(|(_, t)| *t == 0).count() >= 8);
}

#[tokio::test]
async fn an_edit_that_drops_the_quote_stops_counting_it() {
    // A top-level post quoting another, edited (putRecord) without the
    // embed: it names no subject of any kind any more.
    let (_db, ch) = migrated("counts_edit_drops_quote").await;
    let (alice, bob) = (did("alice"), did("bob"));
    let quoted = post_uri(&alice, "3kroot0000002");
    let t = "2024-05-02T12:00:00Z";
    write(
        &ch,
        &[post(&alice, "3kroot0000002", 1, t, serde_json::json!({}))],
    )
    .await;
    let quoting = serde_json::json!({"embed": {"$type": "app.bsky.embed.record",
        "record": {"uri": quoted, "cid": CID}}});
    write(&ch, &[post(&bob, "3kquote000001", 5, t, quoting)]).await;
    assert_eq!(counts(&ch, &quoted).await, (0, 0, 0, 0, 1), "the quote");
    let mut edit = post(
        &bob,
        "3kquote000001",
        10,
        t,
        serde_json::json!({"text": "no quote"}),
    );
    edit.update = true;
    write(&ch, &[edit]).await;
    assert_eq!(counts(&ch, &quoted).await, (0, 0, 0, 0, 0), "edited away");
}

#[tokio::test]
async fn replies_stored_before_migration_0019_are_decided_when_their_thread_gets_a_gate() {
    // Migration 0019 seeds `thread_replies` from `posts`: the gate pass
    // finds a thread's replies there when its gate arrives. Replies an
    // older build counted (their change log expired since) are decided
    // then too; a reply deleted before the upgrade stays deleted.
    let (db, ch) = fresh("counts_upgrade_0019");
    let all = migrate::embedded().expect("migrations");
    let before: Vec<_> = all.iter().filter(|m| m.version < 19).cloned().collect();
    Migrator::new(&ch, before).up().await.expect("up to 0018");
    let (owner, alice, bob, carol) = (did("owner"), did("alice"), did("bob"), did("carol"));
    let t = "2024-05-01T10:00:00Z";
    let root = post_uri(&owner, "3kroot0000001");
    let first = post_uri(&alice, "3kreply000001");
    write(
        &ch,
        &[
            post(&owner, "3kroot0000001", 1, t, serde_json::json!({})),
            post(&alice, "3kreply000001", 2, t, reply(&root, &root)),
            post(&bob, "3kreply000002", 3, t, reply(&root, &first)),
            post(&carol, "3kreply000003", 4, t, reply(&root, &root)),
            delete(&carol, "app.bsky.feed.post", "3kreply000003", 5),
        ],
    )
    .await;
    // What the older refresh left of the live replies (their rows and
    // `thread` rows in `interactions`), then the change log expired.
    db.query(&format!(
        "INSERT INTO interactions (subject_uri, kind, did, rkey, version, deleted, sort_at) \
         SELECT subject_uri, kind, did, rkey, version, 0, sort_at FROM interaction_changes \
         WHERE deleted = 0 AND kind IN ('reply', 'thread') AND did != '{carol}'"
    ));
    db.query("TRUNCATE TABLE interaction_changes");
    let replies = |uri: String| {
        let ch = &ch;
        async move {
            let c = post_counts(ch, &[&uri]).await.expect("counts");
            (c[0].replies, c[0].replies_all)
        }
    };
    assert_eq!(replies(root.clone()).await, (1, 1), "alice's, before");
    assert_eq!(replies(first.clone()).await, (1, 1), "bob's, before");

    Migrator::new(&ch, all).up().await.expect("up");
    // Nobody but the owner may reply: both stored replies break the gate.
    write(
        &ch,
        &[threadgate(
            &owner,
            "3kroot0000001",
            6,
            t,
            Some(serde_json::json!([])),
            &[],
        )],
    )
    .await;
    refresh_interactions(&ch).await.expect("refresh");
    assert_eq!(
        replies(root.clone()).await,
        (0, 1),
        "alice's gated, carol's deleted one still out"
    );
    assert_eq!(replies(first).await, (0, 1), "bob's gated");
}

#[tokio::test]
async fn migration_0019_down_gives_the_older_gate_pass_its_thread_rows_back() {
    // Since 0019 a new reply's `thread` row is in `thread_replies` only; the
    // older gate pass finds a thread's replies by the `thread` rows of
    // `interactions`, so going down copies them back.
    let (db, ch) = migrated("counts_down_0019").await;
    let (owner, alice) = (did("owner"), did("alice"));
    let t = "2024-05-01T10:00:00Z";
    let root = post_uri(&owner, "3kroot0000001");
    write(
        &ch,
        &[
            post(&owner, "3kroot0000001", 1, t, serde_json::json!({})),
            post(&alice, "3kreply000001", 2, t, reply(&root, &root)),
        ],
    )
    .await;
    refresh_interactions(&ch).await.expect("refresh");
    let threads = || {
        db.query(&format!(
            "SELECT subject_uri, rkey, version, deleted FROM interactions FINAL WHERE kind = 'thread' AND did = '{alice}'"
        ))
    };
    assert_eq!(threads(), "", "no thread row in interactions since 0019");
    // Down to 0018 (0019 and any later migration).
    crate::down_to_before(&ch, 19).await;
    assert_eq!(threads(), format!("{root}\t3kreply000001\t2\t0\n"));
}
