//! The backfill against the real reference PDS and PLC directory on loopback
//! (testkit's `Network`), real ClickHouse 18.16 and real Redis.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod hosts;
mod identities;
mod relay;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use skyhouse_backfill::{
    enqueue_dids, enqueue_list_repos, CancellationToken, RepoStatus, Summary, WorkerConfig,
    BACKFILL_STREAM, DEAD_LIST, GROUP,
};
use skyhouse_identity::{HandleConfig, Resolver, ResolverConfig};
use skyhouse_state::State;
use skyhouse_store::migrate;
use skyhouse_store::{ClickHouse, ClickHouseConfig};
use skyhouse_testkit::dns::DnsServer;
use skyhouse_testkit::{AccountStatus, Network, Records, Scenario, TestDatabase};

async fn fresh(hint: &str) -> (TestDatabase, ClickHouse) {
    let server = skyhouse_testkit::ClickHouse::shared();
    let db = server.database(hint);
    let ch = ClickHouse::new(ClickHouseConfig::local(&server.http_url(), db.name())).unwrap();
    migrate::up_embedded(&ch).await.unwrap();
    (db, ch)
}

async fn state(hint: &str) -> State {
    let redis = skyhouse_testkit::Redis::shared();
    State::connect(&redis.url(), &redis.key_prefix(hint))
        .await
        .unwrap()
}

/// The nameserver every test's handle checks ask (no TXT records unless a
/// test adds some; then it uses names of its own).
fn dns() -> &'static DnsServer {
    static DNS: OnceLock<DnsServer> = OnceLock::new();
    DNS.get_or_init(DnsServer::start)
}

/// Handles resolved on loopback: DNS from [`dns`], the well-known path
/// from the PDS (as `@atproto/dev-env` resolves its `.test` handles).
fn handles(network: &Network) -> HandleConfig {
    HandleConfig::loopback(vec![dns().addr()], Some(network.pds_url().to_string()))
}

fn resolver(network: &Network) -> Arc<Resolver> {
    resolver_with(network, handles(network))
}

/// [`resolver`] with handles checked as `handles` says.
fn resolver_with(network: &Network, handles: HandleConfig) -> Arc<Resolver> {
    Arc::new(
        Resolver::new(ResolverConfig {
            plc_url: network.plc_url().to_string(),
            allow_loopback_http: true,
            handles,
            ..Default::default()
        })
        .unwrap(),
    )
}

fn config(consumer: &str) -> WorkerConfig {
    let mut cfg = WorkerConfig::new(consumer);
    cfg.concurrency = 4;
    cfg.drain = true;
    cfg.poll = Duration::from_millis(100);
    cfg.retry_base = Duration::from_millis(100);
    cfg.writer.max_age = Duration::from_millis(200);
    cfg
}

async fn work(cfg: WorkerConfig, ch: &ClickHouse, state: &State, network: &Network) -> Summary {
    skyhouse_backfill::run(
        cfg,
        ch.clone(),
        state.clone(),
        resolver(network),
        CancellationToken::new(),
    )
    .await
    .unwrap()
}

/// Live records per DID in ClickHouse.
fn stored(db: &TestDatabase) -> BTreeMap<String, Records> {
    let out = db.query(
        "SELECT did, collection, rkey, cid FROM records FINAL WHERE deleted = 0 FORMAT TabSeparated",
    );
    let mut m: BTreeMap<String, Records> = BTreeMap::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        m.entry(f[0].to_string())
            .or_default()
            .insert((f[1].to_string(), f[2].to_string()), f[3].to_string());
    }
    m
}

/// repo_state: did → (status, records, rev).
fn repo_state(db: &TestDatabase) -> BTreeMap<String, (String, u64, String)> {
    let out =
        db.query("SELECT did, status, records, rev FROM repo_state FINAL FORMAT TabSeparated");
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].to_string(),
                (f[1].to_string(), f[2].parse().unwrap(), f[3].to_string()),
            )
        })
        .collect()
}

#[tokio::test]
async fn backfill_matches_the_pds_truth() {
    let network = Network::shared();
    let pds = network.pds();
    let scenario = Scenario::run(&pds).await.unwrap();
    let (db, ch) = fresh("backfill_truth").await;
    let state = state("backfill_truth").await;
    let queue = state.work_queue(BACKFILL_STREAM, GROUP);
    queue.create_group().await.unwrap();
    let http = reqwest::Client::new();
    let listed = enqueue_list_repos(&http, network.pds_url(), &state, &queue)
        .await
        .unwrap();
    assert!(listed >= 6, "{listed}");
    // The deleted account is not listed: queue it by hand.
    enqueue_dids(
        &queue,
        std::slice::from_ref(&scenario.deleted_account),
        "did",
    )
    .await
    .unwrap();
    let summary = work(config("truth"), &ch, &state, network).await;
    assert_eq!(
        summary.repos.values().sum::<u64>(),
        listed + 1,
        "{summary:?}"
    );
    assert_eq!(queue.pending().await.unwrap().0, 0);
    assert!(queue.len().await.unwrap() <= 1, "acked entries are trimmed");

    let truths = pds.truths(scenario.dids()).await.unwrap();
    let stored = stored(&db);
    let states = repo_state(&db);
    for (did, truth) in &truths {
        let (status, records, rev) = &states[did];
        let empty = Records::new();
        let have = stored.get(did).unwrap_or(&empty);
        match truth.status {
            AccountStatus::Active => {
                assert_eq!(have, &truth.records, "records of {did}");
                assert_eq!(status, "done", "{did}");
                assert_eq!(*records, truth.records.len() as u64, "{did}");
                assert_eq!(Some(rev), truth.rev.as_ref(), "{did}");
            }
            AccountStatus::Deactivated => {
                assert_eq!(status, "deactivated", "{did}");
                assert!(have.is_empty(), "{did}");
            }
            AccountStatus::Takendown => {
                assert_eq!(status, "takendown", "{did}");
                assert!(have.is_empty(), "{did}");
            }
            AccountStatus::Deleted => {
                assert_eq!(status, "not_found", "{did}");
                assert!(have.is_empty(), "{did}");
            }
            ref other => panic!("unexpected status {other:?} of {did}"),
        }
    }
    assert_eq!(
        truths
            .values()
            .filter(|t| t.status == AccountStatus::Active)
            .count(),
        4
    );
    assert_eq!(state.list_len(DEAD_LIST).await.unwrap(), 0);

    // Running again over an empty queue does nothing.
    let again = work(config("truth"), &ch, &state, network).await;
    assert_eq!(again, Summary::default());
    // listRepos is resumable: the cursor is removed once complete.
    assert_eq!(
        state
            .value(&skyhouse_backfill::list_repos_cursor_key(network.pds_url()))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn resync_tombstones_records_the_snapshot_no_longer_holds() {
    let network = Network::shared();
    let pds = network.pds();
    let scenario = Scenario::run(&pds).await.unwrap();
    let (db, ch) = fresh("backfill_resync").await;
    let state = state("backfill_resync").await;
    let queue = state.work_queue(BACKFILL_STREAM, GROUP);
    queue.create_group().await.unwrap();
    let alice = &scenario.accounts["alice"];
    enqueue_dids(&queue, std::slice::from_ref(&alice.did), "did")
        .await
        .unwrap();
    let s = work(config("resync"), &ch, &state, network).await;
    assert_eq!(s.repos.get(&RepoStatus::Done), Some(&1));
    let before = stored(&db)[&alice.did].clone();

    // Delete two records on the PDS while "the indexer was down".
    let gone = [&scenario.german_post, &scenario.list];
    for w in gone {
        pds.delete_record(alice, w.collection(), w.rkey())
            .await
            .unwrap();
    }
    state.queue_resync(&alice.did, "gap", 42).await.unwrap();
    let mut cfg = config("resync");
    cfg.resync = true;
    let s = work(cfg, &ch, &state, network).await;
    assert_eq!(s.repos.get(&RepoStatus::Done), Some(&1), "{s:?}");
    assert_eq!(s.tombstones, 2, "{s:?}");

    let truth = pds.truth(&alice.did).await.unwrap();
    let after = stored(&db);
    assert_eq!(after[&alice.did], truth.records);
    assert_eq!(before.len(), truth.records.len() + 2);
    // The typed table's rows are tombstoned too.
    let live_post = db.query(&format!(
        "SELECT count() FROM posts FINAL WHERE did = '{}' AND rkey = '{}' AND deleted = 0",
        alice.did,
        scenario.german_post.rkey()
    ));
    assert_eq!(live_post.trim(), "0");
    let rev = &repo_state(&db)[&alice.did].2;
    assert_eq!(Some(rev), truth.rev.as_ref());
    assert_eq!(
        state
            .work_queue(skyhouse_state::RESYNC_STREAM, GROUP)
            .pending()
            .await
            .unwrap()
            .0,
        0
    );
}

#[tokio::test]
async fn two_worker_sets_share_one_queue_and_take_over_a_crashed_reader() {
    let network = Network::shared();
    let pds = network.pds();
    let scenario = Scenario::run(&pds).await.unwrap();
    let (db, ch) = fresh("backfill_groups").await;
    let state = state("backfill_groups").await;
    let queue = state.work_queue(BACKFILL_STREAM, GROUP);
    queue.create_group().await.unwrap();
    let dids: Vec<String> = scenario.dids().map(str::to_owned).collect();
    enqueue_dids(&queue, &dids, "did").await.unwrap();
    // A worker takes one entry and crashes (never acks).
    let taken = queue.read("crashed", 1).await.unwrap();
    assert_eq!(taken.len(), 1);

    let mut a = config("set-a");
    let mut b = config("set-b");
    a.claim_idle = Duration::from_millis(500);
    b.claim_idle = Duration::from_millis(500);
    let (sa, sb) = tokio::join!(work(a, &ch, &state, network), work(b, &ch, &state, network));
    let total: u64 = sa.repos.values().sum::<u64>() + sb.repos.values().sum::<u64>();
    // Each repository exactly once, the crashed reader's included.
    assert_eq!(total, dids.len() as u64, "{sa:?} {sb:?}");
    assert_eq!(queue.pending().await.unwrap().0, 0);
    let states = repo_state(&db);
    assert_eq!(states.len(), dids.len());
    assert!(states.values().all(|s| s.0 != "failed"), "{states:?}");
    assert!(states.contains_key(&taken[0].did));
    let rows = db.query("SELECT count() FROM repo_state");
    assert_eq!(
        rows.trim(),
        dids.len().to_string(),
        "one repo_state row per repo"
    );
}
