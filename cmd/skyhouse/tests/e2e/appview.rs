//! skyhouse's counts, handles and visibility against the reference AppView
//! (`@atproto/bsky` on the dev-env `TestNetwork`) on the same network: the
//! counts scenario (duplicate likes, reposts and follows, deletes in every
//! order, moved likes, a re-created post, quotes of edited posts,
//! threadgates of each rule, hidden replies, handle changes, deactivation,
//! takedown, account deletion), indexed three ways — the live firehose, a
//! backfill alone, and a backfill followed by a firehose replay — and read
//! through `skyhouse search`'s `/v1/stats/posts` and `/v1/stats/actors`.
//!
//! Every post's likes, reposts, replies and quotes and every profile's
//! followers, follows, posts and handle equal the AppView's, except the
//! differences README "Counts" documents; for those the test computes what
//! skyhouse's rule gives and asserts that value, and asserts that the
//! AppView indeed differs there (so the list cannot go stale silently).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use skyhouse_testkit::counts::GateRule;
use skyhouse_testkit::{
    dashboards, firehose as fh, AppViewNetwork, CountsScenario, PostView, ProfileView, Redis,
    Viewer, Written,
};

use crate::{metric, sentinel, skyhouse, spare_port, strings, text, Indexer, Setup};

/// Counts of one post or one account, by field name.
type Counts = BTreeMap<&'static str, u64>;

const POST_FIELDS: [(&str, &str); 4] = [
    ("likes", "likeCount"),
    ("reposts", "repostCount"),
    ("replies", "replyCount"),
    ("quotes", "quoteCount"),
];

fn post_counts(p: &PostView) -> Counts {
    Counts::from([
        ("likes", p.like_count),
        ("reposts", p.repost_count),
        ("replies", p.reply_count),
        ("quotes", p.quote_count),
    ])
}

fn profile_counts(p: &ProfileView) -> Counts {
    Counts::from([
        ("followers", p.followers_count),
        ("follows", p.follows_count),
        ("posts", p.posts_count),
    ])
}

/// `skyhouse search` on one database, started after its data is in (its
/// first refresh then covers everything).
struct Search {
    process: Indexer,
    base: String,
}

impl Search {
    async fn start(setup: &Setup) -> Search {
        let (port, metrics) = (spare_port(), spare_port());
        let mut args = strings(&["search", "--listen", &format!("127.0.0.1:{port}")]);
        args.extend(setup.clickhouse_flags());
        args.extend(setup.redis_flags());
        args.extend(strings(&[
            "--metrics-addr",
            &format!("127.0.0.1:{metrics}"),
            "--refresh-secs",
            "1",
        ]));
        let mut process = Indexer::spawn(&args, metrics);
        process.ready().await;
        Search {
            process,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn get(&self, path: &str) -> Value {
        let response = reqwest::get(format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.process.log_tail()));
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// `/v1/stats/posts` for every URI, 25 at a time.
    async fn posts(&self, uris: &[&str]) -> BTreeMap<String, Counts> {
        let mut out = BTreeMap::new();
        for chunk in uris.chunks(25) {
            let v = self
                .get(&format!("/v1/stats/posts?uris={}", chunk.join(",")))
                .await;
            for p in v["posts"].as_array().unwrap() {
                let n = |k: &str| p[k].as_u64().unwrap_or_else(|| panic!("{k} in {p}"));
                let counts = POST_FIELDS.iter().map(|(k, _)| (*k, n(k))).collect();
                out.insert(p["uri"].as_str().unwrap().to_owned(), counts);
            }
        }
        out
    }

    /// `/v1/stats/actors/{did}`: the counts and the handle.
    async fn actor(&self, did: &str) -> (Counts, String) {
        let v = self.get(&format!("/v1/stats/actors/{did}")).await;
        let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
        let counts = Counts::from([
            ("followers", n("followers")),
            ("follows", n("follows")),
            ("posts", n("posts")),
        ]);
        (counts, v["handle"].as_str().unwrap_or_default().to_owned())
    }
}

/// One documented difference: skyhouse's value of `field` for `key` (a
/// post URI or a DID), and the README row that explains it.
struct Difference {
    key: String,
    field: &'static str,
    skyhouse: u64,
    why: &'static str,
}

const HIDDEN: &str = "interactions of a deactivated or taken-down account stop counting";
const DUPLICATE_ORIGINAL: &str = "duplicate likes count once whatever order they are deleted in";
const MOVED_ONTO_LIKED: &str = "a like moved to a post the account already likes";

/// What README "Counts" says skyhouse shows where it differs from the
/// AppView in this scenario, each value computed from what the
/// repositories hold.
fn documented_differences(s: &CountsScenario) -> Vec<Difference> {
    let hidden: BTreeSet<&str> = [s.deactivated.as_str(), s.takendown.as_str()].into();
    let by_hidden = |w: &Written| hidden.contains(w.did());
    let mut out = Vec::new();
    let mut add = |key: &str, field, skyhouse, why| {
        out.push(Difference {
            key: key.to_owned(),
            field,
            skyhouse,
            why,
        })
    };
    // Likes, reposts and follows by accounts hidden now: the repositories'
    // records less theirs (a deleted account's records are gone from the
    // ledger, and from skyhouse's counts at once).
    // (Only of what the AppView shows: posts and profiles of accounts
    // neither hidden nor deleted.)
    let shown = |key: &str| {
        ![&s.deactivated, &s.takendown, &s.deleted_account]
            .iter()
            .any(|did| key == did.as_str() || key.starts_with(&format!("at://{did}/")))
    };
    for uri in s.ledger.posts.keys().filter(|u| shown(u)) {
        for (field, creators) in [
            ("likes", s.ledger.likers(uri)),
            ("reposts", s.ledger.reposters(uri)),
        ] {
            let visible = creators.iter().filter(|d| !hidden.contains(*d)).count();
            if visible != creators.len() {
                add(uri, field, visible as u64, HIDDEN);
            }
        }
    }
    for did in s.dids().into_iter().filter(|d| shown(d)) {
        let followers = s.ledger.followers(did);
        let visible = followers.iter().filter(|d| !hidden.contains(*d)).count();
        if visible != followers.len() {
            add(did, "followers", visible as u64, HIDDEN);
        }
    }
    // The AppView's original-and-duplicates bookkeeping: deleting the
    // original, then the duplicate it promoted, leaves one live like at 0.
    for order in &s.delete_orders {
        if order.deleted == [0, 1] {
            add(&order.post.uri, "likes", 1, DUPLICATE_ORIGINAL);
        }
    }
    // A like moved onto a post the account already likes: the old post
    // keeps no like here, the AppView rolled the move back.
    let onto_liked = &s.moved_likes[1];
    add(&onto_liked.from.uri, "likes", 0, MOVED_ONTO_LIKED);
    // Replies by dan (deactivated) that the AppView counts: the one written
    // before a "nobody" gate, and his reply the root's author hid.
    for thread in &s.gated {
        if thread.rule == GateRule::NobodyAfterReply {
            let counted = thread.allowed.iter().filter(|w| !by_hidden(w)).count() as u64;
            add(&thread.root.uri, "replies", counted, HIDDEN);
        }
    }
    let hidden_thread = s.hidden.replies.iter().chain([&s.hidden.later_reply]);
    let replies = hidden_thread.filter(|w| !by_hidden(w)).count() as u64;
    add(&s.hidden.root.uri, "replies", replies, HIDDEN);
    // Quotes by dan: of a post then edited (nobody quoted the new
    // version), and of a postgated post (the AppView also counts the quote
    // the postgate detached, as skyhouse does).
    for q in s
        .edited_quotes
        .iter()
        .filter(|q| q.quote_of_after.is_none())
    {
        let quotes = u64::from(!by_hidden(&q.quote_of_before));
        add(&q.after.uri, "quotes", quotes, HIDDEN);
    }
    let gated_quotes = [&s.postgated.detached_quote, &s.postgated.later_quote];
    let quotes = gated_quotes.into_iter().filter(|w| !by_hidden(w)).count() as u64;
    add(&s.postgated.post.uri, "quotes", quotes, HIDDEN);
    out
}

/// Compares one database's answers with the AppView's: equal everywhere
/// but the documented differences, which hold skyhouse's value.
async fn compare(
    how: &str,
    search: &Search,
    s: &CountsScenario,
    appview_posts: &BTreeMap<String, PostView>,
    appview_profiles: &BTreeMap<String, ProfileView>,
    differences: &[Difference],
) {
    let mut problems = Vec::new();
    let mut documented_seen = BTreeSet::new();
    let uris: Vec<&str> = appview_posts.keys().map(String::as_str).collect();
    let ours = search.posts(&uris).await;
    let mut check = |key: &str, field: &'static str, theirs: u64, mine: u64| match differences
        .iter()
        .position(|d| d.key == key && d.field == field)
    {
        Some(i) => {
            documented_seen.insert(i);
            let d = &differences[i];
            if mine != d.skyhouse {
                problems.push(format!(
                        "{key} {field}: skyhouse {mine}, README's rule ({}) gives {}, the AppView {theirs}",
                        d.why, d.skyhouse
                    ));
            } else if mine == theirs {
                problems.push(format!(
                    "{key} {field}: documented as a difference ({}) but both say {mine}",
                    d.why
                ));
            }
        }
        None if mine != theirs => {
            problems.push(format!(
                "{key} {field}: skyhouse {mine}, the AppView {theirs}"
            ));
        }
        None => {}
    };
    for (uri, view) in appview_posts {
        let empty = Counts::new();
        let mine = ours.get(uri).unwrap_or(&empty);
        for (field, theirs) in post_counts(view) {
            // A post skyhouse has no counts for: u64::MAX never matches.
            check(
                uri,
                field,
                theirs,
                mine.get(field).copied().unwrap_or(u64::MAX),
            );
        }
    }
    let mut handles = Vec::new();
    for (did, view) in appview_profiles {
        let (mine, handle) = search.actor(did).await;
        for (field, theirs) in profile_counts(view) {
            check(did, field, theirs, mine[field]);
        }
        handles.push((did.clone(), view.handle.clone(), handle));
    }
    for (did, theirs, mine) in handles {
        if theirs != mine {
            problems.push(format!(
                "{did} handle: skyhouse {mine:?}, the AppView {theirs:?}"
            ));
        }
    }
    for (i, d) in differences.iter().enumerate() {
        if !documented_seen.contains(&i) {
            problems.push(format!(
                "{} {}: documented difference not compared",
                d.key, d.field
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{how}: {} differences from the AppView that README \"Counts\" does not explain:\n{}",
        problems.len(),
        problems.join("\n")
    );
    // The hidden accounts' profiles are hidden here too.
    for did in [&s.deactivated, &s.takendown, &s.deleted_account] {
        assert!(!appview_profiles.contains_key(did.as_str()));
    }
}

/// `backfill enqueue` of every account of the scenario and one worker
/// until each repository is done.
async fn backfill(setup: &Setup, network: &AppViewNetwork, s: &CountsScenario) {
    let mut args = strings(&["backfill", "enqueue"]);
    for did in s.dids() {
        args.extend(["--did".to_owned(), did.to_owned()]);
    }
    args.extend(setup.redis_flags());
    let out = skyhouse(&args);
    assert!(out.status.success(), "enqueue: {}", text(&out));
    let mut work = crate::backfill::worker_on(setup, network.plc_url(), network.pds_url(), &[]);
    let repos = s.dids().len() as f64;
    work.metrics_until("every repository done", |m| {
        let samples = dashboards::parse_scrape(m);
        dashboards::sum(&samples, "skyhouse_backfill_repos_total", None) >= repos
            && metric(m, "skyhouse_backfill_queue_depth", &[]).is_some()
    })
    .await;
    let exit = work.terminate();
    assert!(exit.success(), "{exit}:\n{}", work.log_tail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_and_handles_equal_the_reference_appview_live_by_backfill_and_both() {
    let network = AppViewNetwork::start();
    let pds = network.pds();
    sentinel(&pds).await;

    // Live: the indexer follows the firehose while the scenario is written.
    let live = Setup::new(
        "appview_live",
        Redis::shared().url(),
        "firehose",
        network.firehose_url(None),
    );
    let mut indexer = live.start(&["--cursor", "1", "--batch-age-ms", "100"]);

    let s = CountsScenario::run(&network).await.expect("the scenario");
    network.process_all().await.expect("processAll");
    let messages = fh::read_firehose(
        &network.firehose_url(Some(0)),
        fh::commit_of(s.last.did(), &s.last.rev),
    )
    .await
    .unwrap();
    let last_seq = messages.last().and_then(|m| m.frame.seq()).unwrap();
    indexer.wait_for_cursor(&live, last_seq);

    // The AppView's answers.
    let appview = network.appview();
    let uris: Vec<&str> = s.posts();
    let appview_posts: BTreeMap<String, PostView> = appview
        .get_posts(&uris, Viewer::Anonymous)
        .await
        .expect("getPosts")
        .into_iter()
        .map(|p| (p.uri.clone(), p))
        .collect();
    let dids: Vec<&str> = s.dids();
    let appview_profiles: BTreeMap<String, ProfileView> = appview
        .get_profiles(&dids, Viewer::Anonymous)
        .await
        .expect("getProfiles")
        .into_iter()
        .map(|p| (p.did.clone(), p))
        .collect();
    assert!(appview_posts.len() >= 40, "{} posts", appview_posts.len());
    assert_eq!(appview_profiles.len(), 5, "ann, bob, cat, eve, hal");
    let differences = documented_differences(&s);

    let search = Search::start(&live).await;
    compare(
        "live firehose",
        &search,
        &s,
        &appview_posts,
        &appview_profiles,
        &differences,
    )
    .await;
    drop(search);
    indexer.terminate();

    // A backfill alone.
    let backfilled = Setup::new(
        "appview_backfill",
        Redis::shared().url(),
        "firehose",
        String::new(),
    );
    backfill(&backfilled, &network, &s).await;
    let search = Search::start(&backfilled).await;
    compare(
        "backfill alone",
        &search,
        &s,
        &appview_posts,
        &appview_profiles,
        &differences,
    )
    .await;
    drop(search);

    // Both: a backfill, then the whole firehose replayed over it (every
    // event older than the snapshot arriving after it).
    let both = Setup::new(
        "appview_both",
        Redis::shared().url(),
        "firehose",
        network.firehose_url(None),
    );
    backfill(&both, &network, &s).await;
    let mut replay = both.start(&["--cursor", "1", "--batch-age-ms", "100"]);
    replay.wait_for_cursor(&both, last_seq);
    let search = Search::start(&both).await;
    compare(
        "backfill, then the firehose",
        &search,
        &s,
        &appview_posts,
        &appview_profiles,
        &differences,
    )
    .await;
    replay.terminate();
}
