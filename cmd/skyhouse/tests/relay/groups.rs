//! Consumer groups on the real binary, with tokens: a group of three where
//! one member is killed and another joins mid-stream; hostile requests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use skyhouse_relay::pb::{
    AckRequest, Action, HealthCheckRequest, Operation, OperationBatch, StreamRequest,
};
use skyhouse_relay::tonic::Code;
use skyhouse_relay::AuthedClient;

use crate::*;

/// Repositories the test operations spread over.
pub const DIDS: usize = 40;

/// Operations `from..from + n`: DID `i % DIDS`, rkey `i`.
pub fn ops(from: usize, n: usize) -> Vec<Operation> {
    (from..from + n)
        .map(|i| Operation {
            did: format!("did:plc:repo{:04}", i % DIDS),
            collection: "app.bsky.feed.like".into(),
            rkey: format!("k{i:07}"),
            record_json: format!("{{\"i\":{i}}}"),
            action: Action::Create as i32,
            ..Default::default()
        })
        .collect()
}

/// Publish through IngestStream (500 per message); the last cursor assigned.
pub async fn publish(writer: &mut AuthedClient, ops: Vec<Operation>) -> u64 {
    let n = ops.len() as u64;
    let batches: Vec<OperationBatch> = ops
        .chunks(500)
        .map(|c| OperationBatch {
            operations: c.to_vec(),
            ..OperationBatch::default()
        })
        .collect();
    let reply = writer
        .ingest_stream(futures_util::stream::iter(batches))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.accepted, n);
    reply.last_cursor
}

pub async fn newest(c: &mut AuthedClient) -> u64 {
    c.health_check(HealthCheckRequest {})
        .await
        .unwrap()
        .into_inner()
        .newest_cursor
}

/// What a member received: (cursor, did, rkey), in arrival order.
pub type Received = Arc<Mutex<Vec<(u64, String, String)>>>;

/// A group member streaming in a task, acknowledging each batch once it is
/// stored in `got`. Aborting the task drops its stream: the member is gone.
pub fn member(mut c: AuthedClient, group: &str, got: Received) -> tokio::task::JoinHandle<()> {
    let req = StreamRequest {
        group: group.into(),
        client_name: "member".into(),
        ..Default::default()
    };
    tokio::spawn(async move {
        let mut s = c.stream_operations(req).await.unwrap().into_inner();
        // Until the stream ends (or the relay is killed under it).
        while let Ok(Some(b)) = s.message().await {
            assert!(
                b.session != 0 && b.ack_id != 0,
                "group batches carry an ack id"
            );
            got.lock()
                .unwrap()
                .extend(b.operations.into_iter().map(|o| (o.cursor, o.did, o.rkey)));
            let acked = c
                .ack(AckRequest {
                    session: b.session,
                    ack_id: b.ack_id,
                })
                .await;
            if acked.is_err() {
                return;
            }
        }
    })
}

pub fn cursors(got: &Received) -> BTreeSet<u64> {
    got.lock().unwrap().iter().map(|g| g.0).collect()
}

/// Wait until the members together hold every cursor of `want`.
pub async fn until_covered(relay: &Relay, members: &[&Received], want: &BTreeSet<u64>) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let seen: BTreeSet<u64> = members.iter().flat_map(|m| cursors(m)).collect();
        if want.is_subset(&seen) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} operations delivered:\n{}",
            want.intersection(&seen).count(),
            want.len(),
            relay.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Within one member, each repository's operations arrive in cursor order.
pub fn assert_per_did_order(name: &str, got: &Received) {
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for (cursor, did, _) in got.lock().unwrap().iter() {
        if let Some(prev) = last.insert(did.clone(), *cursor) {
            assert!(prev < *cursor, "{name}: {did} got {cursor} after {prev}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_three_loses_one_member_and_gains_another_and_misses_nothing() {
    let dir = scratch("group3");
    let tokens = dir.join("tokens.json");
    let sub = create_token(&tokens, "ingesters", "subscribe");
    let publ = create_token(&tokens, "indexer", "publish");
    let mut relay = Relay::start(
        &dir,
        &[
            "--tokens-file",
            tokens.to_str().unwrap(),
            "--group-partitions",
            "16",
        ],
    );
    let mut writer = relay.client(Some(&publ)).await;
    let reader = relay.client(Some(&sub)).await;
    let start = newest(&mut writer.clone()).await;
    let (a, b, c, d): (Received, Received, Received, Received) = Default::default();
    let _ta = member(reader.clone(), "ingest", a.clone());
    let _tb = member(reader.clone(), "ingest", b.clone());
    let tc = member(reader.clone(), "ingest", c.clone());
    // The members joined: each owns its partitions before anything is published.
    let deadline = Instant::now() + DEADLINE;
    while !relay
        .scrape()
        .await
        .contains("skyhouse_relay_group_members{group=\"ingest\"} 3")
    {
        assert!(Instant::now() < deadline, "{}", relay.scrape().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let last = publish(&mut writer, ops(0, 3_000)).await;
    let first: BTreeSet<u64> = (start + 1..=last).collect();
    until_covered(&relay, &[&a, &b, &c], &first).await;
    for (name, m) in [("a", &a), ("b", &b), ("c", &c)] {
        assert!(!m.lock().unwrap().is_empty(), "{name} got a share");
    }
    // Each repository went to one member.
    let owners = |m: &Received| -> BTreeSet<String> {
        m.lock().unwrap().iter().map(|g| g.1.clone()).collect()
    };
    let (da, db, dc) = (owners(&a), owners(&b), owners(&c));
    assert!(da.is_disjoint(&db) && da.is_disjoint(&dc) && db.is_disjoint(&dc));

    // c is killed mid-stream (its last batches may be unacknowledged), more is
    // published, then d joins while the rest is published.
    tc.abort();
    publish(&mut writer, ops(3_000, 2_000)).await;
    let _td = member(reader.clone(), "ingest", d.clone());
    let mut last = 0;
    for i in 0..4 {
        last = publish(&mut writer, ops(5_000 + i * 500, 500)).await;
    }
    let all: BTreeSet<u64> = (start + 1..=last).collect();
    until_covered(&relay, &[&a, &b, &c, &d], &all).await;
    let deadline = Instant::now() + DEADLINE;
    while d.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "d got no share:\n{}",
            relay.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Complete, in order per repository within each member, and nothing
    // outside what was published.
    let mut receivers: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    for (name, m) in [("a", &a), ("b", &b), ("c", &c), ("d", &d)] {
        assert_per_did_order(name, m);
        for (cursor, _, _) in m.lock().unwrap().iter() {
            receivers.entry(*cursor).or_default().push(name);
        }
    }
    assert!(receivers.keys().all(|c| all.contains(c)));
    // The same operation twice only across a rebalance: never to one member
    // twice, and only when c (killed before acknowledging it) or d (which
    // took partitions over from their acknowledged positions) is one of them.
    for (cursor, names) in &receivers {
        if names.len() > 1 {
            let distinct: BTreeSet<&&str> = names.iter().collect();
            assert_eq!(
                distinct.len(),
                names.len(),
                "cursor {cursor} twice to one member: {names:?}"
            );
            assert!(
                names.contains(&"c") || names.contains(&"d"),
                "cursor {cursor} delivered to {names:?} outside a rebalance"
            );
        }
    }
    let metrics = relay.scrape().await;
    assert!(
        metrics.contains("skyhouse_relay_group_members{group=\"ingest\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("skyhouse_relay_group_rebalances_total{group=\"ingest\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_clear_errors() {
    let dir = scratch("hostile");
    let mut relay = Relay::start(&dir, &["--insecure-no-auth", "--max-groups", "2"]);
    let mut c = relay.client(None).await;
    let mut refused = async |req: StreamRequest| match c.stream_operations(req).await {
        Ok(_) => panic!("accepted"),
        Err(e) => e,
    };
    for bad in ["has space", "ä", "a/b", &"x".repeat(65), "\0"] {
        let e = refused(StreamRequest {
            group: bad.into(),
            ..Default::default()
        })
        .await;
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e}");
        assert!(e.message().starts_with("group "), "{e}");
        assert!(e.message().contains("[A-Za-z0-9._-]"), "{e}");
    }
    let e = refused(StreamRequest {
        dids: (0..10_001).map(|i| format!("did:plc:{i:024}")).collect(),
        ..Default::default()
    })
    .await;
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("DIDs per request"), "{e}");
    // A request past the message limit (20 MiB of DID) is refused before it
    // is decoded.
    let e = refused(StreamRequest {
        dids: vec!["x".repeat(20 << 20)],
        ..Default::default()
    })
    .await;
    assert!(
        matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{e}"
    );
    for group in ["", "g"] {
        let e = refused(StreamRequest {
            cursor: Some(u64::MAX),
            group: group.into(),
            ..Default::default()
        })
        .await;
        assert_eq!(e.code(), Code::OutOfRange, "{e}");
        assert!(e.message().contains("newer than the newest"), "{e}");
    }
    let e = c
        .ack(AckRequest {
            session: 7,
            ack_id: 1,
        })
        .await
        .expect_err("unknown session");
    assert_eq!(e.code(), Code::NotFound, "{e}");
    // The relay is still serving.
    assert!(c.health_check(HealthCheckRequest {}).await.is_ok());
    assert!(relay.exited().is_none());
}
