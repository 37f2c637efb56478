//! Post search on the real server: paging by cursor walks the whole result
//! in order (ties on `sort_at` included) without duplicates or gaps, even
//! when newer posts arrive between pages; each filter keeps what it names.

use crate::fresh;
use skyhouse_store::migrate::{self, Migrator};
use skyhouse_store::search::{self, Author, PostSearch};
use skyhouse_store::ClickHouse;
use skyhouse_testkit::TestDatabase;

const ALICE: &str = "did:plc:alice";
const BOB: &str = "did:plc:bob";
const HIDDEN: &str = "did:plc:hidden";

/// A live post of `did` at `sort_at` (Unix seconds).
fn post(
    db: &TestDatabase,
    did: &str,
    rkey: &str,
    sort_at: u32,
    text: &str,
    langs: &str,
    tags: &str,
) {
    let n = db.name();
    db.query(&format!(
        "INSERT INTO {n}.posts (did, rkey, cid, version, deleted, created_at, indexed_at, sort_at, text, langs, tags) \
         VALUES ('{did}', '{rkey}', 'bafy', 1, 0, toDateTime({sort_at}), now(), toDateTime({sort_at}), '{text}', {langs}, {tags})"
    ));
}

async fn setup(hint: &str) -> (TestDatabase, ClickHouse) {
    let (db, ch) = fresh(hint);
    Migrator::new(&ch, migrate::embedded().expect("migrations"))
        .up()
        .await
        .expect("up");
    let n = db.name();
    // Three posts share one second: the order falls back to DID, then rkey.
    post(
        &db,
        ALICE,
        "3a",
        1_000,
        "Guten Morgen",
        "['de']",
        "['Rust']",
    );
    post(&db, ALICE, "3b", 1_000, "good morning", "['en']", "[]");
    post(
        &db,
        BOB,
        "3a",
        1_000,
        "morgen bob",
        "['de']",
        "['rust', 'x']",
    );
    post(&db, BOB, "3c", 2_000, "later", "['en']", "[]");
    post(&db, ALICE, "3d", 500, "earliest", "[]", "[]");
    post(
        &db,
        HIDDEN,
        "3h",
        1_500,
        "hidden morgen",
        "['de']",
        "['rust']",
    );
    db.query(&format!(
        "INSERT INTO {n}.accounts VALUES ('{HIDDEN}', 0, 'takendown', 1, now())"
    ));
    // Hiding takes effect at the next refresh (migration 0009's hidden_accounts).
    skyhouse_store::aggregates::refresh_hidden_accounts(&ch)
        .await
        .expect("hidden accounts");
    // Edited away: a newer version drops the word; deleted: a tombstone.
    post(&db, BOB, "3e", 1_200, "morgen edited", "[]", "[]");
    db.query(&format!(
        "INSERT INTO {n}.posts (did, rkey, cid, version, deleted, sort_at, text) VALUES ('{BOB}', '3e', 'bafy2', 2, 0, toDateTime(1200), 'edited')"
    ));
    post(&db, BOB, "3f", 1_300, "morgen deleted", "[]", "[]");
    db.query(&format!(
        "INSERT INTO {n}.posts (did, rkey, cid, version, deleted, sort_at) VALUES ('{BOB}', '3f', '', 2, 1, toDateTime(1300))"
    ));
    db.query(&format!(
        "INSERT INTO {n}.identities VALUES ('{ALICE}', 'alice.test', 1, now())"
    ));
    (db, ch)
}

fn uris(posts: &[search::FoundPost]) -> Vec<String> {
    posts
        .iter()
        .map(|p| format!("{}/{}", p.did, p.rkey))
        .collect()
}

async fn find(ch: &ClickHouse, s: PostSearch) -> Vec<String> {
    let page = search::search_posts(ch, &PostSearch { limit: 100, ..s })
        .await
        .expect("search");
    assert_eq!(page.next, None, "one page holds it all");
    uris(&page.posts)
}

#[tokio::test]
async fn cursor_pages_walk_the_result_once_in_order() {
    let (db, ch) = setup("search_paging").await;
    let all = find(&ch, PostSearch::default()).await;
    assert_eq!(
        all,
        [
            "did:plc:bob/3c",
            "did:plc:bob/3e",
            "did:plc:bob/3a",
            "did:plc:alice/3b",
            "did:plc:alice/3a",
            "did:plc:alice/3d",
        ],
        "newest first, ties by DID then rkey descending; hidden and deleted left out"
    );
    for limit in 1..=4 {
        // What the search holds when paging begins (earlier rounds added posts).
        let all = find(&ch, PostSearch::default()).await;
        let mut paged = Vec::new();
        let mut after = None;
        let mut pages = 0;
        loop {
            let page = search::search_posts(
                &ch,
                &PostSearch {
                    limit,
                    after: after.clone(),
                    ..PostSearch::default()
                },
            )
            .await
            .expect("page");
            assert!(page.posts.len() <= limit as usize);
            paged.extend(uris(&page.posts));
            pages += 1;
            assert!(pages <= all.len() + 1, "paging does not end: {paged:?}");
            if pages == 1 {
                // A post newer than the first page arrives: later pages
                // continue after the cursor, so it never shows up in them.
                post(&db, ALICE, &format!("3z{limit}"), 9_000, "new", "[]", "[]");
            }
            match page.next {
                Some(k) => after = Some(k),
                None => break,
            }
        }
        assert_eq!(paged, all, "pages of {limit}");
        assert_eq!(
            pages,
            all.len().div_ceil(limit as usize),
            "pages of {limit}"
        );
    }
}

#[tokio::test]
async fn each_filter_keeps_what_it_names() {
    let (_db, ch) = setup("search_filters").await;
    let terms = |t: &[&str]| PostSearch {
        terms: t.iter().map(|s| s.to_string()).collect(),
        ..PostSearch::default()
    };
    assert_eq!(
        find(&ch, terms(&["MORGEN"])).await,
        ["did:plc:bob/3a", "did:plc:alice/3a"],
        "case-insensitive; the edit and the delete win over the old text"
    );
    assert_eq!(
        find(&ch, terms(&["morgen", "gut"])).await,
        ["did:plc:alice/3a"]
    );
    assert!(
        find(&ch, terms(&["it's"])).await.is_empty(),
        "quotes are data"
    );
    let by = |a: Author| PostSearch {
        author: Some(a),
        ..PostSearch::default()
    };
    let alices = ["did:plc:alice/3b", "did:plc:alice/3a", "did:plc:alice/3d"];
    assert_eq!(find(&ch, by(Author::Did(ALICE.into()))).await, alices);
    assert_eq!(
        find(&ch, by(Author::Handle("Alice.TEST".into()))).await,
        alices
    );
    assert!(find(&ch, by(Author::Did(HIDDEN.into()))).await.is_empty());
    assert_eq!(
        find(
            &ch,
            PostSearch {
                lang: Some("de".into()),
                ..PostSearch::default()
            }
        )
        .await,
        ["did:plc:bob/3a", "did:plc:alice/3a"]
    );
    assert_eq!(
        find(
            &ch,
            PostSearch {
                tag: Some("RUST".into()),
                ..PostSearch::default()
            }
        )
        .await,
        ["did:plc:bob/3a", "did:plc:alice/3a"],
        "tags compare lowercased"
    );
    assert_eq!(
        find(
            &ch,
            PostSearch {
                since: Some(1_000),
                until: Some(2_000),
                ..PostSearch::default()
            }
        )
        .await,
        [
            "did:plc:bob/3e",
            "did:plc:bob/3a",
            "did:plc:alice/3b",
            "did:plc:alice/3a"
        ],
        "since is inclusive, until exclusive"
    );
    let actors = search::search_actors(&ch, "ALI", 10).await.expect("actors");
    assert_eq!(actors.len(), 1);
    assert_eq!(
        (actors[0].did.as_str(), actors[0].handle.as_str()),
        (ALICE, "alice.test")
    );
    assert_eq!(actors[0].display_name, "", "no profile");
}

/// Posts of `did` whose newest versions no longer match: `n` posts with the
/// word, newer than every real match, then each edited (or every third
/// deleted) in a second insert. Merges are stopped, so the old versions stay
/// rows of their own, as they do until a merge meets them.
fn stale(db: &TestDatabase, did: &str, n: u32) {
    let t = db.name();
    let rows = |version: u32, edit: bool| -> String {
        (0..n)
            .map(|i| {
                let (deleted, text) = match (edit, i % 3) {
                    (false, _) => (0, "zebra crossing"),
                    (true, 0) => (1, ""),
                    (true, _) => (0, "crossing"),
                };
                format!(
                    "('{did}', 's{i:05}', 'bafy', {version}, {deleted}, toDateTime({}), '{text}')",
                    5_000 + i
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (version, edit) in [(1, false), (2, true)] {
        db.query(&format!(
            "INSERT INTO {t}.posts (did, rkey, cid, version, deleted, sort_at, text) VALUES {}",
            rows(version, edit)
        ));
    }
}

#[tokio::test]
async fn pages_stay_exact_when_the_newest_matches_are_old_versions() {
    let (db, ch) = setup("search_stale").await;
    let n = db.name();
    db.query(&format!("SYSTEM STOP MERGES {n}.posts"));
    for (rkey, at) in [("3x1", 100), ("3x2", 200), ("3x3", 300)] {
        post(&db, BOB, rkey, at, "zebra", "['en']", "[]");
    }
    let zebra = |limit, after| PostSearch {
        terms: vec!["zebra".into()],
        limit,
        after,
        ..PostSearch::default()
    };
    let pages = |stale_posts: &'static str| {
        let ch = ch.clone();
        async move {
            let mut seen = Vec::new();
            let mut after = None;
            loop {
                let page = search::search_posts(&ch, &zebra(2, after))
                    .await
                    .expect("page");
                seen.push(uris(&page.posts));
                match page.next {
                    Some(k) => after = Some(k),
                    None => break,
                }
                assert!(
                    seen.len() < 5,
                    "{stale_posts}: paging does not end: {seen:?}"
                );
            }
            seen
        }
    };
    let want = [
        vec!["did:plc:bob/3x3", "did:plc:bob/3x2"],
        vec!["did:plc:bob/3x1"],
    ];
    // The first round's candidates (14 for a page of 2) are all stale.
    stale(&db, "did:plc:carol", 60);
    assert_eq!(pages("60").await, want, "a second round of candidates");
    // More stale rows than the second round takes (112): the search
    // without candidates answers.
    stale(&db, "did:plc:dave", 500);
    assert_eq!(pages("560").await, want, "the fallback");
    // The same with every filter that reaches the candidates.
    let page = search::search_posts(
        &ch,
        &PostSearch {
            author: Some(Author::Did(BOB.into())),
            lang: Some("en".into()),
            until: Some(250),
            ..zebra(1, None)
        },
    )
    .await
    .expect("filtered");
    assert_eq!(uris(&page.posts), ["did:plc:bob/3x2"]);
    assert!(page.next.is_some(), "3x1 follows");

    // Edits that move 60 posts back in time (an older createdAt): their
    // old rows are the newest candidates, their current rows the oldest
    // matches. The page reads from the last candidate's position on, so
    // it holds the real newest posts, not those keys' current rows.
    post(&db, BOB, "3y1", 300, "okapi", "[]", "[]");
    for (version, base) in [(1, 6_000), (2, 10)] {
        let rows = (0..60)
            .map(|i| {
                format!(
                    "('did:plc:erin', 'o{i:02}', 'bafy', {version}, 0, toDateTime({}), 'okapi')",
                    base + i
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        db.query(&format!(
            "INSERT INTO {n}.posts (did, rkey, cid, version, deleted, sort_at, text) VALUES {rows}"
        ));
    }
    let page = search::search_posts(
        &ch,
        &PostSearch {
            terms: vec!["okapi".into()],
            limit: 2,
            ..PostSearch::default()
        },
    )
    .await
    .expect("okapi");
    assert_eq!(
        uris(&page.posts),
        ["did:plc:bob/3y1", "did:plc:erin/o59"],
        "newest first by the current rows"
    );
    db.query(&format!("SYSTEM START MERGES {n}.posts"));
}

/// Every page of `s`, following the cursors (at most `max` posts).
async fn all_pages(ch: &ClickHouse, mut s: PostSearch, max: usize) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let page = search::search_posts(ch, &s).await.expect("page");
        seen.extend(uris(&page.posts));
        assert!(seen.len() <= max, "paging does not end");
        match page.next {
            Some(k) => s.after = Some(k),
            None => return seen,
        }
    }
}

/// The clock, in Unix seconds.
fn now_secs() -> u32 {
    u32::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("u32 seconds")
}

/// A TID record key for `secs` (Unix seconds).
fn tid_at(secs: u32, clock: u16) -> String {
    skyhouse_atproto::syntax::Tid::from_parts(u64::from(secs) * 1_000_000, clock)
        .expect("tid")
        .as_str()
        .to_owned()
}

#[tokio::test]
async fn recent_windows_page_exactly_with_off_time_posts() {
    // Posts stored before migration 0017 reach `posts_off_time` by its seed,
    // later ones by its view: the database is migrated to 0016 first.
    let (db, ch) = fresh("search_recent");
    let all = migrate::embedded().expect("migrations");
    let before: Vec<_> = all.iter().filter(|m| m.version < 17).cloned().collect();
    Migrator::new(&ch, before).up().await.expect("up to 0016");
    let now = now_secs();
    const LYNX: &str = "did:plc:lynx";
    let mut want: Vec<(u32, String)> = Vec::new();
    let mut add = |rkey: String, sort_at: u32| {
        post(&db, LYNX, &rkey, sort_at, "a lynx", "['en']", "[]");
        want.push((sort_at, rkey));
    };
    // An import: a TID of 400 days ago, a createdAt of now (the newest).
    add(tid_at(now - 400 * 86_400, 1), now - 50);
    // Stored before the upgrade: its seed is what finds it.
    Migrator::new(&ch, all).up().await.expect("up");
    // A key that is not a TID.
    add("lynx-self".into(), now - 55);
    for i in 0..10 {
        add(tid_at(now - 100 - 10 * i, 2), now - 100 - 10 * i);
    }
    // On time (520 s from its TID) but its TID is 20 s before the last
    // hour: the hour's candidates below are not exact at its position.
    add(tid_at(now - 3_620, 3), now - 3_080);
    for i in 0..70 {
        let t = now - 3_500 + i;
        add(tid_at(t, 4), t - 590);
    }
    for i in 0..3 {
        let t = now - 700 * 86_400 - i;
        add(tid_at(t, 5), t);
    }
    want.sort_by(|a, b| b.cmp(a));
    let want: Vec<String> = want.iter().map(|(_, k)| format!("{LYNX}/{k}")).collect();

    let lynx = PostSearch {
        terms: vec!["lynx".into()],
        limit: 5,
        ..PostSearch::default()
    };
    let seen = all_pages(&ch, lynx, want.len()).await;
    assert_eq!(
        seen, want,
        "newest first, the import and the non-TID key included"
    );
}

#[tokio::test]
async fn a_recent_since_pages_exactly_from_its_window() {
    // With `since` in the last weeks, the first step reads `recent_posts`
    // from 10 minutes before it on (plus `posts_off_time`): that holds every
    // match, so a search with fewer matches than it asks for ends there.
    let (db, ch) = fresh("search_since");
    Migrator::new(&ch, migrate::embedded().expect("migrations"))
        .up()
        .await
        .expect("up");
    let now = now_secs();
    let since = now - 2 * 3_600;
    const OCELOT: &str = "did:plc:ocelot";
    let mut want: Vec<(u32, String)> = Vec::new();
    let mut add = |rkey: String, sort_at: u32, keep: bool| {
        post(&db, OCELOT, &rkey, sort_at, "an ocelot", "['en']", "[]");
        if keep {
            want.push((sort_at, rkey));
        }
    };
    // An import (a TID of 400 days ago, a createdAt of now) and a key that
    // is not a TID: both in `posts_off_time`.
    add(tid_at(now - 400 * 86_400, 1), now - 50, true);
    add("ocelot-self".into(), now - 60, true);
    for i in 0..4 {
        add(tid_at(now - 5_000 - i, 2), now - 5_000 - i, true);
    }
    // On time (400 s from its TID), its TID 300 s before since: only the
    // window's 10 minutes before since find it.
    add(tid_at(since - 300, 3), since + 100, true);
    // Before since, by a second and by two years.
    add(tid_at(since - 1, 4), since - 1, false);
    add(tid_at(now - 700 * 86_400, 5), now - 700 * 86_400, false);
    // Edited away and deleted: their first versions match, their current
    // ones do not.
    let (edited, deleted) = (tid_at(now - 300, 6), tid_at(now - 310, 7));
    add(edited.clone(), now - 300, false);
    add(deleted.clone(), now - 310, false);
    let n = db.name();
    db.query(&format!(
        "INSERT INTO {n}.posts (did, rkey, cid, version, deleted, sort_at, text) VALUES \
         ('{OCELOT}', '{edited}', 'bafy2', 2, 0, toDateTime({}), 'a cat'), \
         ('{OCELOT}', '{deleted}', '', 2, 1, toDateTime({}), '')",
        now - 300,
        now - 310
    ));
    want.sort_by(|a, b| b.cmp(a));
    let want: Vec<String> = want.iter().map(|(_, k)| format!("{OCELOT}/{k}")).collect();

    for limit in [2, 50] {
        let ocelot = PostSearch {
            terms: vec!["ocelot".into()],
            since: Some(since),
            limit,
            ..PostSearch::default()
        };
        let seen = all_pages(&ch, ocelot, want.len()).await;
        assert_eq!(seen, want, "pages of {limit}: every match since, no other");
    }
}
