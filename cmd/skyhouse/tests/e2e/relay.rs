//! `skyhouse relay` and `skyhouse indexer --relay-url`, both the real binary:
//! the indexer replays the production Jetstream capture into ClickHouse and
//! pushes every operation to the relay; a gRPC client of the relay receives
//! exactly the capture's operations, tagged live.

use std::path::PathBuf;

use serde_json::Value;
use skyhouse_relay::pb::{Action, HealthCheckRequest, Operation, Source, StreamRequest};
use skyhouse_relay::{AuthedClient, ClientConfig};
use skyhouse_testkit::Redis;

use crate::{spare_port, Indexer, Setup, DEADLINE};

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../pkg/sources/testdata/corpus.jsonl")
        .canonicalize()
        .unwrap()
}

/// (did, collection, rkey, action, cid, rev) of every commit in the capture.
fn capture() -> Vec<(String, String, String, Action, String, String)> {
    std::fs::read_to_string(corpus())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["kind"] == "commit")
        .map(|e| {
            let c = &e["commit"];
            let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
            let action = match c["operation"].as_str() {
                Some("create") => Action::Create,
                Some("update") => Action::Update,
                _ => Action::Delete,
            };
            (
                s(&e["did"]),
                s(&c["collection"]),
                s(&c["rkey"]),
                action,
                s(&c["cid"]),
                s(&c["rev"]),
            )
        })
        .collect()
}

async fn connect(url: &str, token: Option<&str>, relay: &mut Indexer) -> AuthedClient {
    let start = std::time::Instant::now();
    let cfg = ClientConfig::new(url, token.map(str::to_owned));
    loop {
        if let Ok(c) = cfg.connect().await {
            return c;
        }
        relay.assert_running();
        assert!(
            start.elapsed() < DEADLINE,
            "relay never listened:\n{}",
            relay.log_tail()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `skyhouse relay token create`: the token it prints.
fn create_token(tokens: &std::path::Path, name: &str, scope: &str) -> String {
    let out = crate::skyhouse(&[
        "relay".into(),
        "token".into(),
        "create".into(),
        "--tokens-file".into(),
        tokens.display().to_string(),
        "--name".into(),
        name.into(),
        "--scope".into(),
        scope.into(),
    ]);
    assert!(out.status.success(), "{}", crate::text(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The production Jetstream capture, a fresh setup of its `jetstream` source.
pub fn capture_url() -> String {
    format!("file://{}", corpus().display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_indexer_pushes_every_operation_of_the_capture_to_the_relay() {
    let setup = Setup::new(
        "relay_push",
        Redis::shared().url(),
        "jetstream",
        capture_url(),
    );
    the_indexer_feeds_the_relay(&setup).await;
}

/// `skyhouse relay` with tokens, and `setup`'s indexer (a fresh database,
/// source: the capture, [`capture_url`]) publishing to it: a client of the
/// relay receives exactly the capture's operations, tagged live, and
/// ClickHouse holds them too.
pub async fn the_indexer_feeds_the_relay(setup: &Setup) {
    let (grpc, metrics) = (spare_port(), spare_port());
    // One tokens file per setup: the cluster's test runs beside this one.
    let dir = std::env::temp_dir().join(format!(
        "skyhouse-e2e-relay-{}-{}",
        std::process::id(),
        setup.db.name()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = dir.join("tokens.json");
    let _ = std::fs::remove_file(&tokens);
    let (reader, writer) = (
        create_token(&tokens, "e2e-reader", "subscribe"),
        create_token(&tokens, "e2e-indexer", "publish"),
    );
    let args: Vec<String> = [
        "relay",
        "--listen",
        &format!("127.0.0.1:{grpc}"),
        "--metrics-addr",
        &format!("127.0.0.1:{metrics}"),
        "--tokens-file",
        &tokens.display().to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut relay = Indexer::spawn(&args, metrics);
    let url = format!("http://127.0.0.1:{grpc}");
    let mut client = connect(&url, Some(&reader), &mut relay).await;
    let before = client
        .health_check(HealthCheckRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before.newest_cursor, before.oldest_cursor, "nothing yet");
    let mut stream = client
        .stream_operations(StreamRequest {
            cursor: Some(before.newest_cursor),
            client_name: "e2e".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    let mut indexer = setup.start(&[
        "--cursor",
        "0",
        "--collections",
        "*",
        "--relay-url",
        &url,
        "--relay-token",
        &writer,
    ]);
    let status = indexer.wait_exit();
    assert!(status.success(), "exit {status}:\n{}", indexer.log_tail());
    assert!(
        !indexer.log().contains(&writer),
        "the token is in the indexer's log"
    );
    setup.db.sync_replicas();

    let want = capture();
    let last = before.newest_cursor + want.len() as u64;
    let mut got: Vec<Operation> = Vec::new();
    while got.last().is_none_or(|o| o.cursor < last) {
        let batch = stream.message().await.unwrap().expect("stream open");
        got.extend(batch.operations);
    }
    let after = client
        .health_check(HealthCheckRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        after.newest_cursor, last,
        "exactly the capture's operations"
    );
    assert!(got.iter().all(|o| o.source() == Source::Live));
    let seen: Vec<_> = got
        .iter()
        .map(|o| {
            (
                o.did.clone(),
                o.collection.clone(),
                o.rkey.clone(),
                o.action(),
                o.cid.clone(),
                o.rev.clone(),
            )
        })
        .collect();
    assert_eq!(seen, want);
    // ClickHouse got them too (the relay is beside it, not instead of it).
    assert_eq!(
        setup.number("SELECT count() FROM records"),
        want.len() as u64
    );
    let scrape = relay
        .metrics_until("the relay's counters", |m| {
            m.contains(&format!(
                "skyhouse_relay_published_total{{source=\"live\"}} {}",
                want.len()
            ))
        })
        .await;
    assert!(scrape.contains("skyhouse_relay_clients 1"), "{scrape}");
    let (code, _) = relay.get("/health").await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_relay_replays_a_capture_to_clients_resuming_from_its_oldest_cursor() {
    let (grpc, metrics) = (spare_port(), spare_port());
    let url_arg = format!("file://{}", corpus().display());
    let args: Vec<String> = [
        "relay",
        "--listen",
        &format!("127.0.0.1:{grpc}"),
        "--metrics-addr",
        &format!("127.0.0.1:{metrics}"),
        "--source",
        "jetstream",
        "--url",
        &url_arg,
        "--cursor",
        "0",
        "--collections",
        "*",
        "--insecure-no-auth",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut relay = Indexer::spawn(&args, metrics);
    let want = capture();
    // Listening on gRPC means /metrics listens too (bound first).
    let mut client = connect(&format!("http://127.0.0.1:{grpc}"), None, &mut relay).await;
    relay
        .metrics_until("the whole capture published", |m| {
            m.contains(&format!(
                "skyhouse_relay_published_total{{source=\"live\"}} {}",
                want.len()
            ))
        })
        .await;
    let w = client
        .health_check(HealthCheckRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.newest_cursor - w.oldest_cursor, want.len() as u64);
    // Deletes only, from the oldest cursor: the capture's deletes, in order.
    let mut stream = client
        .stream_operations(StreamRequest {
            cursor: Some(w.oldest_cursor),
            actions: vec![Action::Delete as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let deletes: Vec<_> = want.iter().filter(|o| o.3 == Action::Delete).collect();
    let mut got: Vec<Operation> = Vec::new();
    while got.len() < deletes.len() {
        got.extend(stream.message().await.unwrap().expect("open").operations);
    }
    let seen: Vec<(&str, &str, &str)> = got
        .iter()
        .map(|o| (o.did.as_str(), o.collection.as_str(), o.rkey.as_str()))
        .collect();
    let expected: Vec<(&str, &str, &str)> = deletes
        .iter()
        .map(|o| (o.0.as_str(), o.1.as_str(), o.2.as_str()))
        .collect();
    assert_eq!(seen, expected);
    // A cursor older than the window is refused, naming the oldest.
    let err = client
        .stream_operations(StreamRequest {
            cursor: Some(w.oldest_cursor - 1),
            ..Default::default()
        })
        .await
        .expect_err("out of range");
    assert_eq!(err.code(), skyhouse_relay::tonic::Code::OutOfRange);
    assert!(err.message().contains(&w.oldest_cursor.to_string()));

    // A consumer group member takes a batch and acknowledges it: the
    // group's series (members, rebalances, lag, positions lost) appear.
    let mut member = client
        .stream_operations(StreamRequest {
            cursor: Some(w.oldest_cursor),
            group: "e2e-group".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let batch = member.message().await.unwrap().expect("group stream open");
    assert!(!batch.operations.is_empty());
    client
        .ack(skyhouse_relay::pb::AckRequest {
            session: batch.session,
            ack_id: batch.ack_id,
        })
        .await
        .unwrap();

    // The dashboard queries only what the relay exports; the deletes client
    // hung up, which the relay counts.
    drop(stream);
    let scrape = relay
        .metrics_until("the closed stream counted and the group's lag", |m| {
            m.contains("skyhouse_relay_disconnects_total{reason=\"client_gone\"} 1")
                && m.contains("skyhouse_relay_rejected_total{reason=\"out_of_range\"} 1")
                && m.contains("skyhouse_relay_group_members{group=\"e2e-group\"} 1")
                && m.contains("skyhouse_relay_group_lag{group=\"e2e-group\"}")
                && m.contains("skyhouse_relay_group_position_lost_total{group=\"e2e-group\"} 0")
        })
        .await;
    drop(member);
    let problems = skyhouse_testkit::dashboards::check("relay.json", &scrape);
    assert!(problems.is_empty(), "{}\n{scrape}", problems.join("\n"));
}
