//! Feed results against PDS truth: posts and likes written on the reference
//! PDS, indexed from its firehose by the real pipeline into a fresh
//! database, ranked by the feed generator.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use skyhouse_feeds::{parse_feeds_config, GET_FEED_SKELETON};
use skyhouse_pipeline::IndexerConfig;
use skyhouse_sources::{SourceConfig, SourceKind};
use skyhouse_testkit::{now_rfc3339, Account, Network, Pds, Written};

use crate::{enc, posts, wait_until, Feedgen};

async fn post(pds: &Pds, who: &Account, text: &str) -> Written {
    pds.create_record(
        who,
        "app.bsky.feed.post",
        json!({"$type": "app.bsky.feed.post", "text": text, "createdAt": now_rfc3339()}),
    )
    .await
    .unwrap()
}

async fn like(pds: &Pds, who: &Account, subject: &Written) -> Written {
    pds.create_record(
        who,
        "app.bsky.feed.like",
        json!({"$type": "app.bsky.feed.like", "subject": subject.strong_ref(), "createdAt": now_rfc3339()}),
    )
    .await
    .unwrap()
}

async fn repost(pds: &Pds, who: &Account, subject: &Written) -> Written {
    pds.create_record(
        who,
        "app.bsky.feed.repost",
        json!({"$type": "app.bsky.feed.repost", "subject": subject.strong_ref(), "createdAt": now_rfc3339()}),
    )
    .await
    .unwrap()
}

async fn account(pds: &Pds, name: &str) -> Account {
    pds.create_account(&format!("{name}{}.test", fastrand::u32(..)))
        .await
        .unwrap()
}

/// Rows of `sql` as a number.
fn number(fg: &Feedgen, sql: &str) -> u64 {
    fg.db.query(sql).trim().parse().unwrap()
}

fn quoted(s: &str) -> String {
    format!("'{s}'")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_match_what_was_posted_and_liked_on_the_pds() {
    let net = Network::shared();
    let pds = net.pds();
    let a = account(&pds, "fa").await;
    let b = account(&pds, "fb").await;
    let c = account(&pds, "fc").await;
    let d = account(&pds, "fd").await;
    let h = account(&pds, "fh").await; // to be deactivated

    // a: p1 (liked by b, c), p2 (liked by b, c, d; c and d take theirs
    // back), five more posts for paging. b: p3 (liked by a, reposted by d).
    // h: ph (liked by b, c, d), then h deactivates. c: p4 (no likes).
    let p1 = post(&pds, &a, "first").await;
    let p2 = post(&pds, &a, "second").await;
    let p3 = post(&pds, &b, "third").await;
    let p4 = post(&pds, &c, "fourth").await;
    let ph = post(&pds, &h, "hidden").await;
    let mut a_posts = vec![p1.clone(), p2.clone()];
    for i in 0..5 {
        a_posts.push(post(&pds, &a, &format!("more {i}")).await);
    }
    like(&pds, &b, &p1).await;
    like(&pds, &c, &p1).await;
    like(&pds, &b, &p2).await;
    let c_p2 = like(&pds, &c, &p2).await;
    let d_p2 = like(&pds, &d, &p2).await;
    like(&pds, &a, &p3).await;
    repost(&pds, &d, &p3).await;
    for who in [&b, &c, &d] {
        like(&pds, who, &ph).await;
    }
    pds.delete_record(&c, "app.bsky.feed.like", c_p2.rkey())
        .await
        .unwrap();
    pds.delete_record(&d, "app.bsky.feed.like", d_p2.rkey())
        .await
        .unwrap();
    pds.deactivate_account(&h).await.unwrap();

    let config = format!(
        r#"{{"feeds": [
            {{"rkey": "cats", "label": "cat"}},
            {{"rkey": "vip", "label": "vip", "private": true}},
            {{"rkey": "pins", "uris": ["{}", "{}", "{}"]}}
        ]}}"#,
        ph.uri, p4.uri, p1.uri
    );
    let fg = Feedgen::start("feeds_truth", parse_feeds_config(&config).unwrap()).await;

    // Index the PDS's firehose from its first event with the real pipeline.
    let mut source = SourceConfig::new(SourceKind::Firehose);
    source.endpoints = vec![net.firehose_url(None)];
    let mut cfg = IndexerConfig::new(source, "cursor:feeds_truth".into());
    cfg.start_cursor = Some(0);
    let redis = skyhouse_testkit::Redis::shared();
    let state = skyhouse_state::State::connect(&redis.url(), &redis.key_prefix("feeds_truth_ix"))
        .await
        .unwrap();
    let stop = skyhouse_telemetry::CancellationToken::new();
    let indexer = tokio::spawn(skyhouse_pipeline::run(
        cfg,
        fg.ch.clone(),
        state,
        None,
        stop.clone(),
    ));
    let db = fg.db.name().to_owned();
    let all_posts: Vec<&Written> = a_posts.iter().chain([&p3, &p4, &ph]).collect();
    let uris = all_posts
        .iter()
        .map(|w| quoted(w.rkey()))
        .collect::<Vec<_>>()
        .join(",");
    let (c_rkey, d_rkey) = (quoted(c_p2.rkey()), quoted(d_p2.rkey()));
    wait_until("the PDS's writes in ClickHouse", || {
        let fg = &fg;
        let (db, uris, c_rkey, d_rkey, h) = (&db, &uris, &c_rkey, &d_rkey, &h);
        async move {
            number(fg, &format!("SELECT count() FROM {db}.posts FINAL WHERE deleted = 0 AND rkey IN ({uris})")) == 10
                && number(fg, &format!("SELECT count() FROM {db}.likes FINAL WHERE deleted = 1 AND rkey IN ({c_rkey}, {d_rkey})")) == 2
                && number(fg, &format!("SELECT count() FROM {db}.likes FINAL WHERE deleted = 0")) >= 7
                && number(fg, &format!("SELECT count() FROM {db}.reposts FINAL WHERE deleted = 0")) >= 1
                && number(fg, &format!("SELECT count() FROM {db}.accounts FINAL WHERE active = 0 AND did = '{}'", h.did)) == 1
        }
    })
    .await;
    stop.cancel();
    let _ = indexer.await;
    skyhouse_store::queries::refresh_interactions(&fg.ch)
        .await
        .unwrap();

    // Labels as a labeler would have them: a and h (hidden) are cats; c's
    // cat label was negated later; b holds vip.
    fg.db.query(&format!(
        "INSERT INTO {db}.actor_labels VALUES \
         ('{a}', 'cat', 'did:plc:labeler', 0, 1, now()), \
         ('{h}', 'cat', 'did:plc:labeler', 0, 1, now()), \
         ('{c}', 'cat', 'did:plc:labeler', 0, 1, now()), \
         ('{c}', 'cat', 'did:plc:labeler', 1, 2, now()), \
         ('{b}', 'vip', 'did:plc:labeler', 0, 1, now())",
        a = a.did,
        h = h.did,
        c = c.did,
        b = b.did
    ));

    // top-1h / top-24h: by live likes of visible accounts: p1 (2), then p2
    // and p3 (1 each; ties newest URI first). p2 would lead with the
    // deleted likes; ph (3 likes) is hidden; p4 has none.
    let mut ones = [p2.uri.clone(), p3.uri.clone()];
    ones.sort();
    ones.reverse();
    let expected_top = vec![p1.uri.clone(), ones[0].clone(), ones[1].clone()];
    for rkey in ["top-1h", "top-24h"] {
        let (status, body) = fg.skeleton(rkey, "", None).await;
        assert_eq!(status, 200, "{rkey}: {body}");
        assert_eq!(posts(&body), expected_top, "{rkey}");
        assert!(
            body.get("cursor").is_none(),
            "{rkey}: one page holds it all"
        );
    }
    // whats-hot: p3 (1 like + 1 repost = 3) and p1 (2 likes) ahead of p2 (1).
    let (status, body) = fg.skeleton("whats-hot", "", None).await;
    assert_eq!(status, 200);
    let hot = posts(&body);
    assert_eq!(hot.len(), 3, "{body}");
    assert_eq!(hot[0], p3.uri, "the repost counts double");
    assert_eq!(hot[1], p1.uri);
    assert_eq!(hot[2], p2.uri);

    // cats: a's posts only (h hidden, c negated), newest first.
    let (status, body) = fg.skeleton("cats", "&limit=100", None).await;
    assert_eq!(status, 200);
    let cats = posts(&body);
    let mut expected_cats: Vec<String> = a_posts.iter().map(|w| w.uri.clone()).collect();
    expected_cats.reverse();
    assert_eq!(cats, expected_cats);

    // Paging cats two at a time: the pages put together are the feed, with
    // no duplicate or gap, even though a new post arrives meanwhile.
    let (status, first) = fg.skeleton("cats", "&limit=2", None).await;
    assert_eq!(status, 200);
    let mut paged = posts(&first);
    let mut cursor = first["cursor"].as_str().unwrap().to_owned();
    fg.db.query(&format!(
        "INSERT INTO {db}.posts (did, rkey, cid, version, deleted, created_at, indexed_at, sort_at, text) \
         VALUES ('{}', '3zzzzzzzzzzzz', 'bafy', 1, 0, now(), now(), now(), 'late')",
        a.did
    ));
    // Pages alternate between this server (its ranking in memory) and a
    // replica (the snapshot in Redis).
    let replica = fg.replica().await;
    let mut pages = 1;
    loop {
        let base = if pages % 2 == 1 { &replica } else { &fg.base };
        let q = format!(
            "/xrpc/app.bsky.feed.getFeedSkeleton?feed={}&limit=2&cursor={}",
            enc(&fg.feed_uri("cats")),
            enc(&cursor)
        );
        let (status, page) = fg.get_via(base, &q, None).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        paged.extend(posts(&page));
        match page.get("cursor").and_then(Value::as_str) {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 4);
    assert_eq!(paged, expected_cats, "pages = the whole ranking, in order");
    let unique: BTreeSet<&String> = paged.iter().collect();
    assert_eq!(unique.len(), paged.len());

    // pins: the configured order, hidden author left out.
    let (status, body) = fg.skeleton("pins", "", None).await;
    assert_eq!(status, 200);
    assert_eq!(posts(&body), vec![p4.uri.clone(), p1.uri.clone()]);

    // vip (private): no token → 401; a valid token of a non-holder → 403;
    // b holds the label → b's post.
    let (status, body) = fg.skeleton("vip", "", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("AuthenticationRequired"))
    );
    let token_a = pds
        .service_auth(&a, &fg.service_did, Some(GET_FEED_SKELETON))
        .await
        .unwrap();
    let (status, body) = fg.skeleton("vip", "", Some(&token_a)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("NotAuthorized"))
    );
    fg.db.query(&format!(
        "INSERT INTO {db}.actor_labels VALUES ('{}', 'vip', 'did:plc:labeler', 0, 1, now())",
        b.did
    ));
    let token_b = pds
        .service_auth(&b, &fg.service_did, Some(GET_FEED_SKELETON))
        .await
        .unwrap();
    let (status, body) = fg.skeleton("vip", "", Some(&token_b)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(posts(&body), vec![p3.uri.clone()]);
    // a's refusal was not cached into b's answer, nor b's into a's.
    let (status, _) = fg.skeleton("vip", "", Some(&token_a)).await;
    assert_eq!(status, 403);

    // describeFeedGenerator lists every feed; did.json names the service.
    let (status, body) = fg
        .get("/xrpc/app.bsky.feed.describeFeedGenerator", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["did"], json!(fg.service_did));
    let listed: BTreeSet<String> = body["feeds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["uri"].as_str().unwrap().to_owned())
        .collect();
    let want: BTreeSet<String> = ["cats", "pins", "top-1h", "top-24h", "vip", "whats-hot"]
        .iter()
        .map(|r| fg.feed_uri(r))
        .collect();
    assert_eq!(listed, want);
    let (status, body) = fg.get("/.well-known/did.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], json!(fg.service_did));
    assert_eq!(body["service"][0]["id"], "#bsky_fg");
    assert_eq!(body["service"][0]["type"], "BskyFeedGenerator");
    assert!(body["service"][0]["serviceEndpoint"]
        .as_str()
        .unwrap()
        .starts_with("http://localhost:"));
}

#[tokio::test]
async fn limits_unknown_feeds_and_hostile_input_are_400s() {
    let fg = Feedgen::start("feeds_hostile", skyhouse_feeds::builtin_feeds()).await;
    for limit in ["1", "50", "100"] {
        let (status, body) = fg
            .skeleton("top-24h", &format!("&limit={limit}"), None)
            .await;
        assert_eq!(status, 200, "limit {limit}: {body}");
    }
    let long = "x".repeat(5000);
    let bad_limits = [
        "0",
        "101",
        "-1",
        "abc",
        "1e2",
        "",
        "1.5",
        "%FF",
        "99999999999999999999999",
        " 5",
        &long,
    ];
    for limit in bad_limits {
        let (status, body) = fg
            .skeleton("top-24h", &format!("&limit={limit}"), None)
            .await;
        assert_eq!(status, 400, "limit {limit:?}: {body}");
        assert_eq!(body["error"], "InvalidRequest");
    }
    let bad_cursors = [
        "'; DROP TABLE posts; --",
        "%00",
        "%FF%FE",
        "\\\\",
        "..",
        "a.b",
        "0000000000000000.0",
        "0000000000000000.-5",
        "%25%25",
        &long,
        "0000000000000000.1%27",
    ];
    for cursor in bad_cursors {
        let (status, body) = fg
            .skeleton("top-24h", &format!("&cursor={cursor}"), None)
            .await;
        assert_eq!(status, 400, "cursor {cursor:?}: {body}");
        assert_eq!(body["error"], "InvalidRequest");
    }
    // A well-formed cursor of no snapshot: expired.
    let (status, body) = fg
        .skeleton("top-24h", "&cursor=00000000000000ab.2", None)
        .await;
    assert_eq!(status, 400, "{body}");
    let publisher = fg.publisher.clone();
    let bad_feeds = [
        format!("at://{publisher}/app.bsky.feed.generator/nope"),
        "at://did:plc:someoneelse0000000000000/app.bsky.feed.generator/whats-hot".to_owned(),
        format!("at://{publisher}/app.bsky.feed.post/whats-hot"),
        format!("at://{publisher}/app.bsky.feed.generator/whats-hot'"),
        format!("at://{publisher}/app.bsky.feed.generator/whats-hot/x"),
        "'\\%".to_owned(),
        "\u{0}".to_owned(),
        long.clone(),
        String::new(),
    ];
    for feed in &bad_feeds {
        let (status, body) = fg
            .get(
                &format!("/xrpc/app.bsky.feed.getFeedSkeleton?feed={}", enc(feed)),
                None,
            )
            .await;
        assert_eq!(status, 400, "feed {feed:?}: {body}");
        assert!(
            body["error"] == "UnknownFeed" || body["error"] == "InvalidRequest",
            "{body}"
        );
    }
    // Raw bad UTF-8 and no feed at all.
    for q in ["feed=%FF%FE%FD", "", "limit=5", "feed=a&feed=b"] {
        let (status, body) = fg
            .get(&format!("/xrpc/app.bsky.feed.getFeedSkeleton?{q}"), None)
            .await;
        assert_eq!(status, 400, "{q}: {body}");
    }
    let (status, body) = fg.skeleton("nope", "", None).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("UnknownFeed")));
    // Hostile Authorization headers: 401, never 500.
    for header in [
        "Bearer ",
        "Bearer a.b",
        "Bearer ....",
        "Bearer eyJhbGciOiJFUzI1NksifQ.e30.AAAA",
    ] {
        let resp = fg
            .http
            .get(format!(
                "{}/xrpc/app.bsky.feed.getFeedSkeleton?feed={}",
                fg.base,
                enc(&fg.feed_uri("top-1h"))
            ))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{header:?}");
    }
}

#[tokio::test]
async fn pages_are_served_while_redis_is_down() {
    // Four pinned posts (static feeds need no indexed data to rank).
    let uris: Vec<String> = (0..4)
        .map(|i| {
            format!("at://did:plc:redisdown000000000000000/app.bsky.feed.post/3kaaaaaaaaa{i}a")
        })
        .collect();
    let config = format!(
        r#"{{"feeds": [{{"rkey": "pins", "uris": {}}}]}}"#,
        serde_json::to_string(&uris).unwrap()
    );
    let mut redis = skyhouse_testkit::Redis::start_private();
    let fg = Feedgen::start_with_redis(
        "feeds_redis_down",
        parse_feeds_config(&config).unwrap(),
        &redis.url(),
        "feeds_redis_down:",
    )
    .await;
    let (status, first) = fg.skeleton("pins", "&limit=3", None).await;
    assert_eq!(status, 200, "{first}");
    let cursor = first["cursor"].as_str().unwrap().to_owned();
    redis.stop();
    // A first page without Redis (no page cache): ranked or from memory.
    let (status, body) = fg.skeleton("pins", "&limit=2", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(posts(&body), uris[..2].to_vec());
    // The cursor still pages (the ranking it names is in memory).
    let (status, body) = fg
        .skeleton("pins", &format!("&limit=3&cursor={}", enc(&cursor)), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(posts(&body), uris[3..].to_vec());
    // A replica with neither the ranking in memory nor Redis ranks again.
    let replica = fg.replica().await;
    let q = format!(
        "/xrpc/app.bsky.feed.getFeedSkeleton?feed={}&limit=3&cursor={}",
        enc(&fg.feed_uri("pins")),
        enc(&cursor)
    );
    let (status, body) = fg.get_via(&replica, &q, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(posts(&body), uris[3..].to_vec());
}
