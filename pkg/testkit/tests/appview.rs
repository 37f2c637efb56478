//! The reference AppView on loopback: it starts, indexes the counts
//! scenario, and answers what `@atproto/bsky`'s rules say it should — so a
//! comparison with skyhouse compares with Bluesky's own code.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::json;
use skyhouse_testkit::counts::GateRule;
use skyhouse_testkit::{now_rfc3339, AppView, AppViewNetwork, CountsScenario, PostView, Viewer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

async fn post(appview: &AppView, uri: &str) -> PostView {
    appview
        .get_post(uri, Viewer::Anonymous)
        .await
        .expect("getPosts")
        .unwrap_or_else(|| panic!("the AppView does not show {uri}"))
}

#[tokio::test]
async fn the_reference_appview_indexes_the_counts_scenario() {
    let t = Instant::now();
    let network = AppViewNetwork::shared();
    eprintln!("AppView network up in {:.1?}", t.elapsed());
    for url in [network.pds_url(), network.plc_url(), network.appview_url()] {
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    }
    assert!(network.appview_did().starts_with("did:plc:"));
    assert!(network.firehose_url(None).starts_with("ws://127.0.0.1:"));

    let t = Instant::now();
    let s = CountsScenario::run(network)
        .await
        .expect("the scenario runs");
    eprintln!("scenario in {:.1?}", t.elapsed());
    let caught_up = network.process_all().await.expect("processAll");
    eprintln!("processAll after the scenario: {caught_up:?}");
    let appview = network.appview();

    // Every post the repositories hold, by an author the AppView shows, is
    // there, at its current version.
    let hidden_authors = [&s.deactivated, &s.takendown, &s.deleted_account];
    let visible: Vec<&str> = s
        .posts()
        .into_iter()
        .filter(|uri| {
            !hidden_authors
                .iter()
                .any(|did| uri.starts_with(&format!("at://{did}/")))
        })
        .collect();
    let shown: BTreeMap<String, PostView> = appview
        .get_posts(&visible, Viewer::Anonymous)
        .await
        .expect("getPosts")
        .into_iter()
        .map(|p| (p.uri.clone(), p))
        .collect();
    for uri in &visible {
        let p = shown.get(*uri).unwrap_or_else(|| panic!("{uri} missing"));
        assert_eq!(p.cid, s.ledger.posts[*uri], "{uri} at an old version");
    }

    // One like and one repost per account: bob liked twice, cat three
    // times, and one duplicate of each was deleted (for bob the one the
    // AppView counted, so it promoted the other).
    let dup = post(&appview, &s.duplicates.post.uri).await;
    assert_eq!(s.ledger.like_records(&s.duplicates.post.uri), 3);
    assert_eq!(dup.like_count, 2);
    assert_eq!(
        dup.like_count as usize,
        s.ledger.likers(&s.duplicates.post.uri).len()
    );
    assert_eq!(dup.repost_count, 2, "bob reposted twice, cat once");

    // Deletes in every order: one of three likes left counts once...
    for order in &s.delete_orders {
        let p = post(&appview, &order.post.uri).await;
        let left = order.remaining().len() as u64;
        if order.deleted == [0, 1] {
            // ...except when the counted like and then the duplicate the
            // AppView promoted in its place are deleted: the third still
            // names the first as its original, so nothing is promoted.
            assert_eq!((left, p.like_count), (1, 0), "order {:?}", order.deleted);
        } else {
            assert_eq!(p.like_count, left, "order {:?}", order.deleted);
        }
    }

    // A like moved by putRecord leaves its first subject...
    let moved = &s.moved_likes[0];
    assert_eq!(post(&appview, &moved.from.uri).await.like_count, 0);
    assert_eq!(post(&appview, &moved.to.uri).await.like_count, 1);
    // ...unless the account already likes the new subject: the AppView's
    // update then fails (its unique (subject, creator) index) and is rolled
    // back, so it still counts the like on the old subject.
    let onto_liked = &s.moved_likes[1];
    assert!(onto_liked.already_liking.is_some());
    assert_eq!(post(&appview, &onto_liked.from.uri).await.like_count, 1);
    assert_eq!(post(&appview, &onto_liked.to.uri).await.like_count, 1);

    // A post re-created at its URI keeps the likes and replies of the first
    // version (they name the URI).
    let recreated = post(&appview, &s.recreated.after.uri).await;
    assert_eq!(recreated.cid, s.recreated.after.cid);
    assert_eq!((recreated.like_count, recreated.reply_count), (1, 1));

    // Threadgates: replies that broke the gate when they were indexed do
    // not count; the author's own always do; a gate does not reach back.
    for thread in &s.gated {
        let root = post(&appview, &thread.root.uri).await;
        let expected = match thread.rule {
            GateRule::NobodyAfterReply => 1, // dan's reply before the gate
            _ => thread.allowed.len() as u64,
        };
        assert_eq!(root.reply_count, expected, "{:?}", thread.rule);
        if let Some(nested) = &thread.nested_denied {
            // The root's gate applies to replies deeper in the thread.
            let parent = post(&appview, &thread.allowed[1].uri).await;
            assert_eq!(parent.reply_count, 0, "{} counted", nested.uri);
        }
    }
    // Hidden replies still count in getPosts' replyCount.
    assert_eq!(post(&appview, &s.hidden.root.uri).await.reply_count, 3);

    // Accounts: a deactivated, taken-down or deleted account's profile and
    // posts are hidden, yet its likes still count (the deleted account's
    // until the count is next recomputed).
    let status = post(&appview, &s.status_post.uri).await;
    assert_eq!(status.like_count, 5, "bob, dan, eve, fay, gus");
    let profiles = appview
        .get_profiles(&s.dids(), Viewer::Anonymous)
        .await
        .expect("getProfiles");
    let shown: BTreeMap<&str, _> = profiles.iter().map(|p| (p.did.as_str(), p)).collect();
    for did in hidden_authors {
        assert!(!shown.contains_key(did.as_str()), "{did} shown");
    }
    assert!(shown.contains_key(s.reactivated.as_str()));
    assert_eq!(shown.len(), 5);
    let (hal, handles) = &s.handle_changes;
    assert_eq!(Some(&shown[hal.as_str()].handle), handles.last());
    // Follows, one per account: cat's three follows of hal (two deleted)
    // and the deactivated dan's.
    assert_eq!(shown[hal.as_str()].followers_count, 2);
    let bob = &shown[s.account("bob").did.as_str()];
    assert_eq!((bob.follows_count, bob.followers_count), (1, 1));
    assert!(appview
        .get_post(&s.gated[0].denied[0].uri, Viewer::Anonymous)
        .await
        .expect("getPosts")
        .is_none());

    // getFeed: the AppView resolves the generator's DID, asks it for a
    // skeleton (passing on the viewer's token), and hydrates the posts.
    let generator = SkeletonServer::start(vec![
        s.gated[0].root.uri.clone(),
        s.gated[0].denied[0].uri.clone(), // dan's: hidden, dropped
        s.duplicates.post.uri.clone(),
    ])
    .await;
    let fg_did = network
        .create_feedgen_did(&generator.url)
        .await
        .expect("feed generator DID");
    let pds = network.pds();
    let ann = s.account("ann");
    let record = pds
        .create_record_with_rkey(
            ann,
            "app.bsky.feed.generator",
            "counts",
            json!({
                "$type": "app.bsky.feed.generator", "did": fg_did,
                "displayName": "Counts", "createdAt": now_rfc3339(),
            }),
        )
        .await
        .expect("generator record");
    network.process_all().await.expect("processAll");
    let expected = vec![s.gated[0].root.uri.clone(), s.duplicates.post.uri.clone()];
    let page = appview
        .get_feed(&record.uri, Some(10), None, Viewer::Anonymous)
        .await
        .expect("getFeed");
    let uris: Vec<String> = page.feed.iter().map(|item| item.post.uri.clone()).collect();
    assert_eq!(uris, expected);
    assert_eq!(page.feed[1].post.like_count, 2);
    let bob = s.account("bob");
    let token = pds
        .service_auth(bob, &fg_did, Some("app.bsky.feed.getFeedSkeleton"))
        .await
        .expect("service auth");
    let page = appview
        .get_feed(&record.uri, None, None, Viewer::Bearer(&token))
        .await
        .expect("getFeed as bob");
    let uris: Vec<String> = page.feed.iter().map(|item| item.post.uri.clone()).collect();
    assert_eq!(uris, expected);
    assert_eq!(
        generator.authorizations(),
        vec![None, Some(format!("Bearer {token}"))],
        "the AppView passes the viewer's token on to the generator"
    );
}

/// A feed generator answering every `getFeedSkeleton` with the same posts,
/// recording each request's `Authorization` header.
struct SkeletonServer {
    url: String,
    seen: Arc<Mutex<Vec<Option<String>>>>,
}

impl SkeletonServer {
    async fn start(posts: Vec<String>) -> SkeletonServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!(
            "http://127.0.0.1:{}",
            listener.local_addr().expect("addr").port()
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let body =
            json!({ "feed": posts.iter().map(|p| json!({ "post": p })).collect::<Vec<_>>() })
                .to_string();
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let body = body.clone();
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&request);
                    if head.starts_with("GET /xrpc/app.bsky.feed.getFeedSkeleton") {
                        let auth = head.lines().find_map(|line| {
                            let (name, value) = line.split_once(':')?;
                            name.eq_ignore_ascii_case("authorization")
                                .then(|| value.trim().to_string())
                        });
                        log.lock().expect("lock").push(auth);
                    }
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(response.as_bytes()).await;
                });
            }
        });
        SkeletonServer { url, seen }
    }

    fn authorizations(&self) -> Vec<Option<String>> {
        self.seen.lock().expect("lock").clone()
    }
}
