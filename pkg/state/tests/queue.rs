//! The backfill work queue against a real Redis (testkit starts it).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use skyhouse_state::State;
use skyhouse_testkit::Redis;

async fn state(hint: &str) -> State {
    let redis = Redis::shared();
    State::connect(&redis.url(), &redis.key_prefix(hint))
        .await
        .unwrap()
}

#[tokio::test]
async fn each_entry_goes_to_one_consumer_and_ack_trims() {
    let state = state("queue").await;
    let q = state.work_queue("backfill", "workers");
    q.create_group().await.unwrap();
    q.create_group().await.unwrap(); // idempotent
    let dids: Vec<String> = (0..5).map(|i| format!("did:plc:q{i}")).collect();
    q.push_many(&dids, "test").await.unwrap();
    assert_eq!(q.len().await.unwrap(), 5);

    let a = q.read("a", 3).await.unwrap();
    let b = q.read("b", 10).await.unwrap();
    assert_eq!(a.len(), 3);
    assert_eq!(b.len(), 2);
    let mut seen: Vec<String> = a.iter().chain(&b).map(|e| e.did.clone()).collect();
    seen.sort();
    assert_eq!(seen, dids);
    assert!(q.read("c", 10).await.unwrap().is_empty());
    assert_eq!(q.pending().await.unwrap().0, 5);

    // Ack b's entries (the last two): a's three are pending below them,
    // so the trim may not remove anything a still needs.
    let ids: Vec<String> = b.iter().map(|e| e.id.clone()).collect();
    assert_eq!(q.ack(&ids).await.unwrap(), 2);
    q.trim_acked(&ids[1]).await.unwrap();
    assert_eq!(
        q.len().await.unwrap(),
        5,
        "pending entries survive the trim"
    );
    let ids: Vec<String> = a.iter().map(|e| e.id.clone()).collect();
    q.ack(&ids).await.unwrap();
    assert_eq!(q.pending().await.unwrap(), (0, None));
    let last = b.last().unwrap().id.clone();
    q.trim_acked(&last).await.unwrap();
    assert_eq!(
        q.len().await.unwrap(),
        0,
        "everything up to the last ack is gone"
    );
    // Entries after the acked one stay.
    q.push_many(&dids[..2], "test").await.unwrap();
    let c = q.read("c", 1).await.unwrap();
    q.ack(&[c[0].id.clone()]).await.unwrap();
    q.trim_acked(&c[0].id).await.unwrap();
    assert_eq!(q.len().await.unwrap(), 1, "the undelivered entry stays");
}

#[tokio::test]
async fn idle_entries_are_claimed_and_touch_keeps_them() {
    let state = state("claim").await;
    let q = state.work_queue("backfill", "workers");
    q.create_group().await.unwrap();
    q.push("did:plc:one", "test", 7).await.unwrap();
    q.push("did:plc:two", "test", 0).await.unwrap();
    let taken = q.read("crashed", 10).await.unwrap();
    assert_eq!(taken.len(), 2);
    assert_eq!(taken[0].at, Some(7));
    assert_eq!(taken[0].reason, "test");

    // Not idle long enough yet: nothing to claim.
    let idle = Duration::from_millis(300);
    assert!(q.claim_idle("rescuer", idle, 10).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The crashed worker's entry one is still being worked on: touched.
    q.touch("crashed", &[taken[0].id.clone()]).await.unwrap();
    let claimed = q.claim_idle("rescuer", idle, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].did, "did:plc:two");
    q.ack(&[claimed[0].id.clone()]).await.unwrap();
    assert_eq!(q.pending().await.unwrap().0, 1);
}

#[tokio::test]
async fn values_and_dead_letters() {
    let state = state("values").await;
    assert_eq!(state.value("backfill:cursor:x").await.unwrap(), None);
    state.set_value("backfill:cursor:x", "abc").await.unwrap();
    assert_eq!(
        state.value("backfill:cursor:x").await.unwrap().as_deref(),
        Some("abc")
    );
    state
        .dead_letter("backfill:dead", "did:plc:x", "getRepo: 500\tboom")
        .await
        .unwrap();
    assert_eq!(state.list_len("backfill:dead").await.unwrap(), 1);
    assert_eq!(
        state.dead_letters("backfill:dead", 10).await.unwrap(),
        vec![("did:plc:x".to_string(), "getRepo: 500 boom".to_string())]
    );
}
