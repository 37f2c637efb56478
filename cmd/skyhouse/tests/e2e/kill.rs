//! `kill -9` at random moments while the PDS keeps writing; every restart
//! resumes from the cursor in Redis. The final state is the PDS's truth,
//! each record once; at every kill, everything up to the saved cursor is in
//! ClickHouse (the cursor never runs ahead of it).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use skyhouse_atproto::frame::Frame;
use skyhouse_atproto::syntax::Tid;
use skyhouse_testkit::{firehose as fh, now_rfc3339, Network, Pds, Redis, Scenario, Written};

use crate::{
    assert_each_record_once, assert_matches_truth, assert_scenario_tables, firehose_url, sentinel,
    seq_of, wait_until, Rng, Setup,
};

/// How many times the indexer is killed.
const KILLS: usize = 5;

/// Writes made while the indexer runs, at least (more while kills go on).
const MIN_WRITES: usize = 150;

/// A bound on the writes, should the kills take unusually long.
const MAX_WRITES: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_and_the_final_state_is_exact() {
    let seed = std::env::var("SKYHOUSE_E2E_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("kill -9 test seed {seed} (rerun with SKYHOUSE_E2E_SEED={seed})");
    let mut rng = Rng::new(seed);

    let network = Network::start();
    let pds = network.pds();
    let sentinel = sentinel(&pds).await;
    let redis = Redis::shared();
    let mut setup = Setup::new("e2e_kill", redis.url(), "firehose", firehose_url(&network));
    // Small, frequent batches: many acks and cursor saves to interrupt.
    setup.indexer_flags = ["--batch-rows", "25", "--batch-age-ms", "50"]
        .map(String::from)
        .to_vec();
    // Every start, the first included, resumes from Redis.
    setup.set_cursor(1);
    let mut indexer = setup.start(&[]);

    // The scenario and a stream of writes, while the indexer is killed and
    // restarted: some of it is replayed after a restart, some arrives live.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = tokio::spawn(write_while_killing(pds.clone(), stop.clone()));

    let mut saved = Vec::new();
    for k in 0..KILLS {
        let wait = rng.range(300, 2_500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        indexer.assert_running();
        indexer.kill9();
        let cursor = setup.cursor();
        println!("kill -9 #{k} after {wait} ms: saved cursor {cursor:?}");
        if let Some(c) = cursor {
            assert_cursor_covered(&network, &setup, c).await;
        }
        saved.push(cursor.unwrap_or(0));
        let pause = rng.range(0, 600);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        indexer = setup.start(&[]);
    }
    assert!(
        saved.windows(2).all(|w| w[0] <= w[1]),
        "the saved cursor went backwards: {saved:?}"
    );
    stop.store(true, Ordering::Relaxed);
    let done = writes.await.unwrap();
    println!("{} writes while killing", done.writes);

    let last_seq = seq_of(&network, &done.last).await;
    indexer.wait_for_cursor(&setup, last_seq);
    // The deleted accounts' rows (indexed live before the deletions) are
    // tombstoned by the cleanup loop.
    let gone = [done.scenario.deleted_account.clone(), done.doomed.clone()];
    wait_until(
        "the deleted accounts' rows tombstoned",
        || {
            let live = setup.number(&format!(
                "SELECT count() FROM records FINAL WHERE deleted = 0 AND did IN ('{}', '{}')",
                gone[0], gone[1]
            ));
            (live == 0).then_some(())
        },
        || indexer.log_tail(),
    );

    let mut dids: Vec<&str> = done.scenario.dids().collect();
    dids.extend(done.dids.iter().map(String::as_str));
    let truths = pds.truths(dids).await.expect("truth");
    assert_matches_truth(&setup, &truths, &[&sentinel]);
    assert_scenario_tables(&setup, &done.scenario);
    assert_each_record_once(&setup);
    let live: usize = truths.values().map(|t| t.records.len()).sum();
    let stored = setup.number("SELECT count() FROM records FINAL WHERE deleted = 0");
    assert_eq!(
        stored, live as u64,
        "live records in ClickHouse vs on the PDS"
    );
    println!(
        "{live} live records; {} rows written to `records` in all (replays included)",
        setup.number("SELECT count() FROM records")
    );

    let status = indexer.terminate();
    assert!(status.success(), "exit {status}:\n{}", indexer.log_tail());
    assert_eq!(setup.cursor(), Some(last_seq));
}

/// What [`write_while_killing`] did.
pub(crate) struct Done {
    pub(crate) scenario: Scenario,
    /// The accounts that kept writing (the doomed one included).
    pub(crate) dids: Vec<String>,
    /// An account that wrote and was then deleted.
    pub(crate) doomed: String,
    pub(crate) writes: usize,
    /// The very last write.
    pub(crate) last: Written,
}

/// The scenario, then posts, likes, deletes and profile edits over three
/// accounts (and a fourth that is deleted at the end) until `stop` and at
/// least [`MIN_WRITES`]; then a last post.
pub(crate) async fn write_while_killing(pds: Pds, stop: Arc<AtomicBool>) -> Done {
    let scenario = Scenario::run(&pds).await.expect("scenario");
    let suffix = std::process::id() % 100_000;
    let mut accounts = Vec::new();
    for name in ["ann", "ben", "cal", "hank"] {
        accounts.push(
            pds.create_account(&format!("{name}{suffix}.test"))
                .await
                .unwrap(),
        );
    }
    let doomed = accounts.pop().unwrap();
    const POST: &str = "app.bsky.feed.post";
    let mut posts: BTreeMap<usize, Vec<Written>> = BTreeMap::new();
    let mut writes = 0;
    let mut i = 0;
    while i < MAX_WRITES && (i < MIN_WRITES || !stop.load(Ordering::Relaxed)) {
        let who = i % accounts.len();
        let post = pds
            .create_record(
                &accounts[who],
                POST,
                json!({ "$type": POST, "text": format!("live post {i}"), "createdAt": now_rfc3339() }),
            )
            .await
            .unwrap();
        posts.entry(who).or_default().push(post);
        writes += 1;
        if i % 4 == 1 {
            let other = (who + 1) % accounts.len();
            if let Some(subject) = posts.get(&other).and_then(|p| p.last()) {
                let like = json!({ "$type": "app.bsky.feed.like", "subject": subject.strong_ref(), "createdAt": now_rfc3339() });
                pds.create_record(&accounts[who], "app.bsky.feed.like", like)
                    .await
                    .unwrap();
                writes += 1;
            }
        }
        if i % 6 == 5 {
            let mine = posts.get_mut(&who).unwrap();
            let victim = mine.remove(0);
            pds.delete_record(&accounts[who], POST, victim.rkey())
                .await
                .unwrap();
            writes += 1;
        }
        if i % 10 == 9 {
            let profile =
                json!({ "$type": "app.bsky.actor.profile", "displayName": format!("v{i}") });
            pds.put_record(&accounts[who], "app.bsky.actor.profile", "self", profile)
                .await
                .unwrap();
            writes += 1;
        }
        if i % 8 == 0 {
            pds.create_record(
                &doomed,
                POST,
                json!({ "$type": POST, "text": format!("doomed {i}"), "createdAt": now_rfc3339() }),
            )
            .await
            .unwrap();
            writes += 1;
        }
        i += 1;
    }
    pds.delete_account(&doomed.did).await.unwrap();
    let last = pds
        .create_record(
            &accounts[0],
            POST,
            json!({ "$type": POST, "text": "live end", "createdAt": now_rfc3339() }),
        )
        .await
        .unwrap();
    let mut dids: Vec<String> = accounts.iter().map(|a| a.did.clone()).collect();
    dids.push(doomed.did.clone());
    Done {
        scenario,
        dids,
        doomed: doomed.did,
        writes: writes + 1,
        last,
    }
}

/// Every record write of a commit with seq ≤ `cursor` is in ClickHouse (a
/// row of that key with at least the commit's version): the cursor saved
/// in Redis never runs ahead of what ClickHouse acknowledged.
async fn assert_cursor_covered(network: &Network, setup: &Setup, cursor: i64) {
    let want = written_up_to(network, cursor, None).await;
    let rows = setup.rows(
        "SELECT did, collection, rkey, max(version) AS v FROM records GROUP BY did, collection, rkey",
    );
    let got = newest_versions(&rows, None);
    assert_covered(cursor, &want, &got);
}

/// A record's key: DID, collection, rkey.
pub(crate) type Key = (String, String, String);

/// The newest version of each record key written by a commit with
/// seq ≤ `cursor` (of `collection` only, if given), from the firehose.
pub(crate) async fn written_up_to(
    network: &Network,
    cursor: i64,
    collection: Option<&str>,
) -> BTreeMap<Key, u64> {
    let messages = fh::read_firehose(&network.firehose_url(Some(0)), |f: &Frame| {
        f.seq().is_some_and(|s| s >= cursor)
    })
    .await
    .unwrap();
    let mut want: BTreeMap<Key, u64> = BTreeMap::new();
    for m in &messages {
        let Frame::Commit(c) = &m.frame else { continue };
        if c.seq > cursor {
            continue;
        }
        let version = c.rev.parse::<Tid>().unwrap().to_u64();
        for op in &c.ops {
            let (coll, rkey) = op.split_path().unwrap();
            if collection.is_some_and(|want| want != coll) {
                continue;
            }
            let key = (c.repo.to_string(), coll.to_owned(), rkey.to_owned());
            let v = want.entry(key).or_default();
            *v = (*v).max(version);
        }
    }
    want
}

/// Rows `did, rkey, v` (and `collection`, unless given) as key → version.
pub(crate) fn newest_versions(
    rows: &[serde_json::Map<String, serde_json::Value>],
    collection: Option<&str>,
) -> BTreeMap<Key, u64> {
    rows.iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap().to_owned();
            let coll = collection.map_or_else(|| s("collection"), str::to_owned);
            ((s("did"), coll, s("rkey")), s("v").parse().unwrap())
        })
        .collect()
}

/// Every key of `want` is in `got` with at least its version.
#[track_caller]
pub(crate) fn assert_covered(cursor: i64, want: &BTreeMap<Key, u64>, got: &BTreeMap<Key, u64>) {
    let missing: Vec<String> = want
        .iter()
        .filter(|(k, v)| got.get(*k).is_none_or(|g| g < *v))
        .map(|(k, v)| format!("{k:?} version {v}: stored {:?}", got.get(k)))
        .collect();
    assert!(
        missing.is_empty(),
        "saved cursor {cursor} is ahead of ClickHouse: {} of {} writes up to it missing:\n{}",
        missing.len(),
        want.len(),
        missing.join("\n")
    );
}
