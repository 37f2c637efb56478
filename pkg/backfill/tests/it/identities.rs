//! Identities and account status from a backfill alone, against the real
//! PDS and PLC: handles verified both ways (DNS on loopback, the PDS's
//! well-known path), `handle.invalid` where the handle does not point back,
//! hidden accounts; the periodic re-verification walk; and live events
//! against backfill rows in both arrival orders.

use std::collections::BTreeMap;
use std::time::Duration;

use skyhouse_backfill::{
    enqueue_dids, refresh_pass, CancellationToken, RefreshConfig, BACKFILL_STREAM, GROUP,
    WALK_CURSOR, WALK_LEASE,
};
use skyhouse_identity::{HandleConfig, INVALID_HANDLE};
use skyhouse_store::ClickHouse;
use skyhouse_testkit::dns::{DnsMode, DnsServer};
use skyhouse_testkit::{firehose, AccountStatus, Network, Records, Scenario, TestDatabase};
use skyhouse_transform::{Decoder, Rows, Verify};

use crate::{config, dns, fresh, resolver, resolver_with, state, stored, work};

/// `identities` FINAL: did → (handle, version).
fn identities(db: &TestDatabase) -> BTreeMap<String, (String, u64)> {
    db.query("SELECT did, handle, version FROM identities FINAL FORMAT TabSeparated")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_string(), (f[1].to_string(), f[2].parse().unwrap()))
        })
        .collect()
}

/// `accounts` FINAL: did → (active, status, version).
fn accounts(db: &TestDatabase) -> BTreeMap<String, (u8, String, u64)> {
    db.query("SELECT did, active, status, version FROM accounts FINAL FORMAT TabSeparated")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].to_string(),
                (
                    f[1].parse().unwrap(),
                    f[2].to_string(),
                    f[3].parse().unwrap(),
                ),
            )
        })
        .collect()
}

/// 2023-11-14 in Unix microseconds: every version written from now on is
/// later; a firehose `seq` is far below.
const RECENT_US: u64 = 1_700_000_000_000_000;

async fn backfill(dids: &[String], ch: &ClickHouse, st: &skyhouse_state::State) {
    let queue = st.work_queue(BACKFILL_STREAM, GROUP);
    queue.create_group().await.unwrap();
    enqueue_dids(&queue, dids, "did").await.unwrap();
    work(config("identities"), ch, st, Network::shared()).await;
}

#[tokio::test]
async fn a_backfill_alone_writes_verified_handles_and_hides_the_accounts_the_pds_hides() {
    let network = Network::shared();
    let pds = network.pds();
    let scenario = Scenario::run(&pds).await.unwrap();
    let (db, ch) = fresh("backfill_identities").await;
    let st = state("backfill_identities").await;
    // carol's handle: DNS, asked first, names alice: it does not point back.
    let carol = &scenario.accounts["carol"];
    let alice = &scenario.accounts["alice"];
    dns().set_txt(
        &format!("_atproto.{}", carol.handle),
        &[&format!("did={}", alice.did)],
    );
    let dids: Vec<String> = scenario.dids().map(str::to_owned).collect();
    backfill(&dids, &ch, &st).await;

    let ids = identities(&db);
    let accts = accounts(&db);
    let mut active = 0;
    for (did, expected) in &scenario.expected {
        let (handle, version) = ids.get(did).cloned().unwrap_or_default();
        let (is_active, status, account_version) = accts
            .get(did)
            .cloned()
            .unwrap_or_else(|| panic!("no accounts row for {did}"));
        assert!(account_version > RECENT_US, "{did}: {account_version}");
        match &expected.status {
            AccountStatus::Active => {
                active += 1;
                let want = if did == &carol.did {
                    INVALID_HANDLE.to_string()
                } else {
                    expected.handle.clone().unwrap()
                };
                assert_eq!(handle, want, "handle of {did}");
                assert!(version > RECENT_US, "{did}: {version}");
                assert_eq!((is_active, status.as_str()), (1, ""), "{did}");
                assert!(!skyhouse_store::queries::account_hidden(&ch, did)
                    .await
                    .unwrap());
            }
            AccountStatus::Deactivated | AccountStatus::Takendown => {
                // The PDS serves no well-known answer for a hidden account's
                // handle; what matters is that the account is hidden.
                assert!(
                    handle == expected.handle.clone().unwrap() || handle == INVALID_HANDLE,
                    "{did}: {handle}"
                );
                let word = expected.status.as_event_status().unwrap();
                assert_eq!((is_active, status.as_str()), (0, word), "{did}");
                assert!(skyhouse_store::queries::account_hidden(&ch, did)
                    .await
                    .unwrap());
            }
            AccountStatus::Deleted => {
                assert!(
                    handle.is_empty() || handle == INVALID_HANDLE,
                    "{did}: {handle}"
                );
                assert_eq!((is_active, status.as_str()), (0, "not_found"), "{did}");
                assert!(skyhouse_store::queries::account_hidden(&ch, did)
                    .await
                    .unwrap());
            }
            other => panic!("unexpected status {other:?} of {did}"),
        }
    }
    assert_eq!(active, 4);
    // bob's handle is the one he changed to.
    let (bob, _, renamed) = &scenario.handle_change;
    assert_eq!(&ids[bob].0, renamed);

    // Actor search finds the accounts by the handles the backfill wrote,
    // and not the hidden ones once the hidden-accounts set is refreshed (as
    // the search service does every --refresh-secs).
    skyhouse_store::aggregates::refresh_hidden_accounts(&ch)
        .await
        .unwrap();
    let found = skyhouse_store::search::search_actors(&ch, &alice.handle, 10)
        .await
        .unwrap();
    assert!(found.iter().any(|a| a.did == alice.did), "{found:?}");
    let hidden = &scenario.deactivated;
    let hidden_handle = &scenario.expected[hidden].handle.clone().unwrap();
    let found = skyhouse_store::search::search_actors(&ch, hidden_handle, 10)
        .await
        .unwrap();
    assert!(found.iter().all(|a| &a.did != hidden), "{found:?}");
}

/// A handle check that waits (here a nameserver that does not answer, as
/// many handle domains' do not) holds no worker: with one worker, every
/// repository's records are written while every check still waits, and
/// nothing is acknowledged; once the nameserver answers, each identity row
/// lands with its handle (verified by the PDS's well-known path) and every
/// entry is acknowledged.
#[tokio::test]
async fn handle_checks_that_wait_hold_no_worker_and_land_when_they_answer() {
    let network = Network::shared();
    let pds = network.pds();
    let scenario = Scenario::run(&pds).await.unwrap();
    let (db, ch) = fresh("backfill_waiting_handles").await;
    let st = state("backfill_waiting_handles").await;
    // A nameserver of this test's own, silent until it is told to answer:
    // each DNS attempt waits 100 ms, for up to 10 minutes in all.
    let dns = DnsServer::start();
    dns.set_mode(DnsMode::Silent);
    let resolver = resolver_with(
        network,
        HandleConfig {
            dns_timeout: Duration::from_millis(100),
            dns_attempts: 6_000,
            ..HandleConfig::loopback(vec![dns.addr()], Some(network.pds_url().to_string()))
        },
    );
    let queue = st.work_queue(BACKFILL_STREAM, GROUP);
    queue.create_group().await.unwrap();
    let dids: Vec<String> = scenario.dids().map(str::to_owned).collect();
    enqueue_dids(&queue, &dids, "did").await.unwrap();
    let mut cfg = config("waiting_handles");
    cfg.concurrency = 1;
    let run = tokio::spawn(skyhouse_backfill::run(
        cfg,
        ch.clone(),
        st.clone(),
        resolver,
        CancellationToken::new(),
    ));

    let truths = pds.truths(scenario.dids()).await.unwrap();
    let want: BTreeMap<String, Records> = truths
        .iter()
        .filter(|(_, t)| t.status == AccountStatus::Active)
        .map(|(did, t)| (did.clone(), t.records.clone()))
        .collect();
    assert!(want.len() >= 4 && want.values().all(|r| !r.is_empty()));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if stored(&db) == want {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the records of {} accounts were not all written while the handle checks waited",
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(dns.queries() > 0, "no handle check asked the nameserver");
    assert!(
        identities(&db).is_empty(),
        "an identity row without an answer"
    );
    // Each of them still claimed (an account without a DID document, the
    // deleted one, has no check to wait for).
    let claimed = queue.pending().await.unwrap().0;
    assert!(
        claimed >= want.len() as u64,
        "acked early: {claimed} pending"
    );
    assert!(!run.is_finished());

    dns.set_mode(DnsMode::Answer);
    let summary = run.await.unwrap().unwrap();
    assert_eq!(
        summary.repos.values().sum::<u64>(),
        dids.len() as u64,
        "{summary:?}"
    );
    assert_eq!(queue.pending().await.unwrap().0, 0);
    let ids = identities(&db);
    for did in want.keys() {
        let expected = scenario.expected[did].handle.clone().unwrap();
        assert_eq!(
            ids.get(did).map(|(h, _)| h),
            Some(&expected),
            "handle of {did}"
        );
    }
}

#[tokio::test]
async fn stale_identities_are_verified_again_window_by_window_from_the_saved_position() {
    let network = Network::shared();
    let pds = network.pds();
    let (db, ch) = fresh("identity_walk").await;
    let st = state("identity_walk").await;
    let suffix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 1_000_000;
    let mut accounts = Vec::new();
    for i in 0..4 {
        let a = pds
            .create_account(&format!("walk{i}x{suffix:06}.test"))
            .await
            .unwrap();
        accounts.push(a);
    }
    let dids: Vec<String> = accounts.iter().map(|a| a.did.clone()).collect();
    backfill(&dids[..3], &ch, &st).await;
    // The fourth has only a row from before event-time versions: a
    // firehose seq and a handle it no longer has.
    db.query(&format!(
        "INSERT INTO identities VALUES ('{}', 'gone.example.com', 123456789, now())",
        dids[3]
    ));
    // The first renames itself; nothing tells the database.
    let renamed = format!("walkr{suffix:06}.test");
    let old = accounts[0].handle.clone();
    pds.update_handle(&mut accounts[0], &renamed).await.unwrap();

    let resolver = resolver(network);
    let writer = config("walk").writer;
    let stop = CancellationToken::new();
    let pass = |cfg: RefreshConfig| {
        let (ch, st, resolver, writer, stop) = (&ch, &st, &resolver, &writer, &stop);
        async move {
            refresh_pass(
                &cfg,
                ch,
                st,
                resolver,
                Duration::from_secs(60),
                writer,
                stop,
            )
            .await
            .unwrap()
        }
    };

    // An hour's interval: only the seq-versioned row is stale.
    let s = pass(RefreshConfig::new(Duration::from_secs(3600), "me")).await;
    assert!(s.complete, "{s:?}");
    assert_eq!(s.seen, 4, "{s:?}");
    assert_eq!(s.refreshed.values().sum::<u64>(), 1, "{s:?}");
    let ids = identities(&db);
    assert_eq!(ids[&dids[3]].0, accounts[3].handle);
    assert!(ids[&dids[3]].1 > RECENT_US);
    assert_eq!(ids[&dids[0]].0, old, "not stale yet");

    // Another process holds the lease: this one does nothing.
    skyhouse_testkit::Redis::shared().command(&["DEL", &st.key(WALK_LEASE)]);
    assert!(st
        .lease(WALK_LEASE, "other", Duration::from_secs(60))
        .await
        .unwrap());
    let s = pass(RefreshConfig::new(Duration::from_millis(1), "me")).await;
    assert_eq!((s.complete, s.seen), (false, 0), "{s:?}");
    skyhouse_testkit::Redis::shared().command(&["DEL", &st.key(WALK_LEASE)]);

    // A pass that starts from a saved position (the window of the third
    // DID in key order) reads only from there; the next one starts over.
    let mut sorted = dids.clone();
    sorted.sort();
    let windows = skyhouse_store::identities::windows();
    let index = windows
        .iter()
        .position(|(a, b)| a.as_str() < sorted[2].as_str() && sorted[2].as_str() < b.as_str())
        .unwrap();
    st.set_value(WALK_CURSOR, &format!("{index}\t"))
        .await
        .unwrap();
    let from_there = dids
        .iter()
        .filter(|d| d.as_str() > windows[index].0.as_str())
        .count() as u64;
    assert!((2..4).contains(&from_there), "{from_there}");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut small = RefreshConfig::new(Duration::from_millis(1), "me");
    small.chunk = 1; // every DID is its own step
    let s = pass(small.clone()).await;
    assert_eq!((s.complete, s.seen), (true, from_there), "{s:?}");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let s = pass(small).await;
    assert!(s.complete, "{s:?}");
    assert_eq!(s.seen, 4, "{s:?}");
    assert_eq!(s.refreshed.get("valid"), Some(&4), "{s:?}");
    let ids = identities(&db);
    assert_eq!(ids[&dids[0]].0, renamed, "the rename is found");
    for (i, a) in accounts.iter().enumerate().skip(1) {
        assert_eq!(ids[&dids[i]].0, a.handle);
    }
}

/// The `accounts` row of `did` as stored, to insert elsewhere.
fn account_row_sql(db: &TestDatabase, did: &str) -> String {
    let row = db.query(&format!(
        "SELECT did, active, status, version, indexed_at FROM accounts FINAL WHERE did = '{did}' FORMAT Values"
    ));
    format!("INSERT INTO accounts VALUES {}", row.trim())
}

/// Whether `did` is hidden in a fresh database after two arrivals, in
/// order: a stored backfill row (its INSERT), or `None` for the live rows.
async fn hidden_after(
    did: &str,
    live: &Rows,
    first: Option<&str>,
    second: Option<&str>,
    hint: &str,
) -> bool {
    let (db, ch) = fresh(hint).await;
    for step in [first, second] {
        match step {
            Some(sql) => {
                db.query(sql);
            }
            None => {
                let mut rows = live.clone();
                skyhouse_store::writer::write_batch(&ch, &config("order").writer, &mut rows, ())
                    .await
                    .unwrap();
            }
        }
    }
    skyhouse_store::queries::account_hidden(&ch, did)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_newer_of_a_live_event_and_a_backfill_wins_in_either_arrival_order() {
    let network = Network::shared();
    let pds = network.pds();
    let suffix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 1_000_000;
    let account = pds
        .create_account(&format!("order{suffix:06}.test"))
        .await
        .unwrap();
    let did = account.did.clone();

    // Backfill 1 (active), then the account is deactivated (a live event),
    // then reactivated, then backfill 2 (active again).
    let (scratch1, ch1) = fresh("order_backfill1").await;
    let st = state("order_backfill1").await;
    backfill(std::slice::from_ref(&did), &ch1, &st).await;
    let backfill_active = account_row_sql(&scratch1, &did);
    pds.deactivate_account(&account).await.unwrap();
    let frames = firehose::read_firehose(
        &network.firehose_url(Some(0)),
        |f| matches!(f, skyhouse_atproto::frame::Frame::Account(a) if a.did == did && !a.active),
    )
    .await
    .unwrap();
    let mut live = Rows::default();
    let mut decoder = Decoder::default();
    let deactivation = frames.last().unwrap();
    decoder.firehose(&deactivation.bytes, Verify::Off, &mut live);
    assert_eq!(live.accounts.len(), 1);
    assert_eq!(live.accounts[0].status, "deactivated");
    let mut account = account;
    pds.activate_account(&account).await.unwrap();
    pds.login(&mut account).await.unwrap();
    let (scratch2, ch2) = fresh("order_backfill2").await;
    let st2 = state("order_backfill2").await;
    backfill(std::slice::from_ref(&did), &ch2, &st2).await;
    let backfill_active_again = account_row_sql(&scratch2, &did);

    // The deactivation is newer than backfill 1: hidden, whichever came first.
    assert!(hidden_after(&did, &live, Some(&backfill_active), None, "order_a").await);
    assert!(hidden_after(&did, &live, None, Some(&backfill_active), "order_b").await);
    // Backfill 2 is newer than the deactivation: visible, whichever came first.
    assert!(!hidden_after(&did, &live, Some(&backfill_active_again), None, "order_c").await);
    assert!(!hidden_after(&did, &live, None, Some(&backfill_active_again), "order_d").await);
}
