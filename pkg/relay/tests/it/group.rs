//! Consumer groups over real gRPC: the members of a group share the stream
//! by DID, acknowledge what they processed, and a member that replaces a
//! gone one resumes at the group's acknowledged positions.

use std::collections::{BTreeMap, BTreeSet};

use skyhouse_relay::pb::{AckRequest, Operation, StreamRequest};
use skyhouse_relay::tonic::{Code, Streaming};
use skyhouse_relay::{OpRef, Prepared, RelayConfig};

use crate::*;

fn member(group: &str) -> StreamRequest {
    StreamRequest {
        group: group.into(),
        client_name: "member".into(),
        ..Default::default()
    }
}

/// Read until `want` operations arrived in total across calls, acknowledging
/// each batch once read.
async fn read_acking(
    url: &str,
    s: &mut Streaming<skyhouse_relay::pb::OperationBatch>,
    got: &mut Vec<Operation>,
    until: impl Fn(&[Operation]) -> bool,
) {
    let mut c = client(url).await;
    while !until(got) {
        let b = s.message().await.expect("no error").expect("stream open");
        assert!(
            b.session != 0 && b.ack_id != 0,
            "group batches carry an ack id"
        );
        got.extend(b.operations);
        c.ack(AckRequest {
            session: b.session,
            ack_id: b.ack_id,
        })
        .await
        .expect("ack");
    }
}

/// Publish `copies` of the capture with `tag` in every rkey (distinct ops).
fn publish(relay: &TestRelay, capture: &[Operation], tag: &str) -> u64 {
    relay.hub.publish(capture.iter().map(|o| {
        let rkey = format!("{}{tag}", o.rkey);
        let mut r = OpRef::of(o);
        r.rkey = &rkey;
        Prepared::new(&r)
    }))
}

async fn the_capture() -> Vec<Operation> {
    let scratch = start(RelayConfig::default()).await;
    replay_capture(&scratch.hub).await;
    let mut s = subscribe(
        &scratch.url,
        StreamRequest {
            cursor: Some(FIRST - 1),
            ..Default::default()
        },
    )
    .await
    .expect("scratch");
    read_until(&mut s, scratch.hub.window().newest).await
}

#[tokio::test]
async fn two_members_split_the_stream_by_did_and_a_replacement_resumes_where_the_group_stopped() {
    let relay = start(RelayConfig {
        group_partitions: 16,
        ..RelayConfig::default()
    })
    .await;
    let capture = the_capture().await;
    let mut a = subscribe(&relay.url, member("g")).await.expect("a");
    let mut b = subscribe(&relay.url, member("g")).await.expect("b");
    let last = publish(&relay, &capture, "-1");
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    let total = |a: &[Operation], b: &[Operation]| a.len() + b.len();
    // Read both until everything arrived (each read is bounded by what is left).
    while total(&got_a, &got_b) < capture.len() {
        tokio::select! {
            m = a.message() => {
                let batch = m.expect("a").expect("a open");
                let mut c = client(&relay.url).await;
                c.ack(AckRequest { session: batch.session, ack_id: batch.ack_id }).await.expect("ack");
                got_a.extend(batch.operations);
            }
            m = b.message() => {
                let batch = m.expect("b").expect("b open");
                let mut c = client(&relay.url).await;
                c.ack(AckRequest { session: batch.session, ack_id: batch.ack_id }).await.expect("ack");
                got_b.extend(batch.operations);
            }
        }
    }
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "both members got a share"
    );
    let dids_a: BTreeSet<&str> = got_a.iter().map(|o| o.did.as_str()).collect();
    let dids_b: BTreeSet<&str> = got_b.iter().map(|o| o.did.as_str()).collect();
    assert!(dids_a.is_disjoint(&dids_b), "one DID, one member");
    let mut union: Vec<u64> = got_a.iter().chain(&got_b).map(|o| o.cursor).collect();
    union.sort_unstable();
    assert_eq!(
        union,
        (last - capture.len() as u64 + 1..=last).collect::<Vec<_>>(),
        "each once"
    );
    for got in [&got_a, &got_b] {
        assert!(
            got.windows(2).all(|w| w[0].cursor < w[1].cursor),
            "cursor order per member"
        );
    }

    // b leaves; a new member c takes b's partitions from the group's
    // acknowledged positions; more is published: nothing of it is lost.
    drop(b);
    // c joins before the second copy is published, so it owns partitions
    // while that flows (whether or not the relay has seen b go yet).
    let mut c_stream = subscribe(&relay.url, member("g")).await.expect("c");
    let last = publish(&relay, &capture, "-2");
    let (mut more_a, mut got_c) = (Vec::new(), Vec::new());
    let want: BTreeSet<u64> = (last - capture.len() as u64 + 1..=last).collect();
    let covered = |a: &[Operation], c: &[Operation]| {
        let seen: BTreeSet<u64> = a.iter().chain(c).map(|o| o.cursor).collect();
        want.is_subset(&seen)
    };
    while !covered(&more_a, &got_c) {
        tokio::select! {
            m = a.message() => {
                let batch = m.expect("a").expect("a open");
                let mut c = client(&relay.url).await;
                c.ack(AckRequest { session: batch.session, ack_id: batch.ack_id }).await.expect("ack");
                more_a.extend(batch.operations);
            }
            m = c_stream.message() => {
                let batch = m.expect("c").expect("c open");
                let mut c = client(&relay.url).await;
                c.ack(AckRequest { session: batch.session, ack_id: batch.ack_id }).await.expect("ack");
                got_c.extend(batch.operations);
            }
        }
    }
    assert!(!got_c.is_empty(), "the new member got a share");
    // At least once: duplicates only of the second copy, around the rebalance.
    let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
    for o in more_a.iter().chain(&got_c) {
        *counts.entry(o.cursor).or_default() += 1;
    }
    assert!(
        counts.keys().all(|c| want.contains(c)),
        "nothing of the first copy again: it was acknowledged"
    );
}

#[tokio::test]
async fn an_unacknowledged_member_stalls_and_its_replacement_gets_everything_again() {
    let relay = start(RelayConfig {
        group_partitions: 4,
        group_max_unacked: 600,
        ..RelayConfig::default()
    })
    .await;
    let capture = the_capture().await;
    let mut lazy = subscribe(&relay.url, member("h")).await.expect("lazy");
    let mut last = 0;
    for i in 0..10 {
        last = publish(&relay, &capture, &format!("-{i}"));
    }
    let total = 10 * capture.len();
    // It reads without acknowledging: it gets the bound (the last batch may
    // pass it) …
    let mut got = Vec::new();
    while got.len() < 600 {
        got.extend(lazy.message().await.expect("ok").expect("open").operations);
    }
    // … and then nothing while it does not acknowledge.
    while let Ok(m) = tokio::time::timeout(std::time::Duration::from_secs(2), lazy.message()).await
    {
        got.extend(m.expect("ok").expect("open").operations);
    }
    assert!(
        got.len() < 600 + skyhouse_relay::BATCH_OPS,
        "stalled at the bound: {}",
        got.len()
    );
    drop(lazy);
    // The replacement starts from the group's start: it gets all of it.
    let mut next = subscribe(&relay.url, member("h")).await.expect("next");
    let mut all = Vec::new();
    read_acking(&relay.url, &mut next, &mut all, |g| g.len() >= total).await;
    let cursors: BTreeSet<u64> = all.iter().map(|o| o.cursor).collect();
    assert_eq!(cursors.len(), total);
    assert_eq!(cursors.last().copied(), Some(last));
}

#[tokio::test]
async fn hostile_group_requests_get_clear_errors() {
    let relay = start(RelayConfig {
        max_groups: 1,
        ..RelayConfig::default()
    })
    .await;
    for bad in ["has space", "", "ä", &"x".repeat(65)] {
        if bad.is_empty() {
            continue; // empty = broadcast
        }
        let e = subscribe(&relay.url, member(bad))
            .await
            .expect_err("bad name");
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e}");
        assert!(e.message().contains("expected 1-64 characters"), "{e}");
    }
    let _g = subscribe(&relay.url, member("one")).await.expect("first");
    let e = subscribe(
        &relay.url,
        StreamRequest {
            collections: vec!["app.bsky.feed.".into()],
            ..member("one")
        },
    )
    .await
    .expect_err("other filters");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    let e = subscribe(&relay.url, member("two"))
        .await
        .expect_err("too many groups");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    let mut c = client(&relay.url).await;
    let e = c
        .ack(AckRequest {
            session: 42,
            ack_id: 1,
        })
        .await
        .expect_err("unknown session");
    assert_eq!(e.code(), Code::NotFound, "{e}");
    let e = subscribe(
        &relay.url,
        StreamRequest {
            cursor: Some(u64::MAX),
            ..member("one")
        },
    )
    .await
    .expect_err("cursor u64::MAX");
    assert_eq!(e.code(), Code::OutOfRange, "{e}");
    let e = subscribe(
        &relay.url,
        StreamRequest {
            dids: (0..10_001).map(|i| format!("did:plc:{i}")).collect(),
            ..Default::default()
        },
    )
    .await
    .expect_err("huge dids");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
}
