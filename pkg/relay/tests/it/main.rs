//! The relay over real gRPC: a Rust tonic client and a Python grpcio client
//! (tests/it/client.py) against `serve` on 127.0.0.1:0, fed from the bundled
//! real Jetstream capture (pkg/sources/testdata/corpus.jsonl).

mod group;
mod python;
mod stream;

use std::path::PathBuf;

use serde_json::Value;
use skyhouse_relay::pb::relay_client::RelayClient;
use skyhouse_relay::pb::{Action, Operation, StreamRequest};
use skyhouse_relay::tonic::transport::Channel;
use skyhouse_relay::tonic::{Status, Streaming};
use skyhouse_relay::{Hub, RelayConfig};
use skyhouse_sources::{SourceConfig, SourceKind};
use skyhouse_transform::CollectionFilter;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Which operations a filtered client should get.
pub type Keep = Box<dyn Fn(&Operation) -> bool + Send>;

/// The first cursor of every test relay.
pub const FIRST: u64 = 1_000;

pub fn corpus_jsonl() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sources/testdata/corpus.jsonl")
}

/// A relay serving on a spare port.
#[derive(Debug)]
pub struct TestRelay {
    pub hub: Hub,
    pub url: String,
    pub shutdown: CancellationToken,
    pub server: Option<tokio::task::JoinHandle<Result<(), skyhouse_relay::RelayError>>>,
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn start(cfg: RelayConfig) -> TestRelay {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let shutdown = CancellationToken::new();
    let hub = Hub::new(cfg, FIRST, shutdown.clone());
    let server = tokio::spawn(skyhouse_relay::serve(
        listener,
        hub.clone(),
        skyhouse_relay::ServeConfig::insecure(),
        shutdown.clone(),
    ));
    TestRelay {
        hub,
        url,
        shutdown,
        server: Some(server),
    }
}

pub async fn client(url: &str) -> RelayClient<Channel> {
    // The server task may not be accepting yet: connect retries until it does
    // (bounded by the attempts, not by a clock).
    for _ in 0..1_000 {
        let endpoint = Channel::from_shared(url.to_owned()).expect("url");
        if let Ok(c) = endpoint.connect().await {
            return RelayClient::new(c);
        }
        tokio::task::yield_now().await;
    }
    panic!("relay at {url} never answered");
}

pub async fn subscribe(
    url: &str,
    req: StreamRequest,
) -> Result<Streaming<skyhouse_relay::pb::OperationBatch>, Status> {
    client(url)
        .await
        .stream_operations(req)
        .await
        .map(|r| r.into_inner())
}

/// Read until the operation with cursor `last` (inclusive).
pub async fn read_until(
    s: &mut Streaming<skyhouse_relay::pb::OperationBatch>,
    last: u64,
) -> Vec<Operation> {
    let mut out: Vec<Operation> = Vec::new();
    while out.last().is_none_or(|o| o.cursor < last) {
        let batch = s
            .message()
            .await
            .unwrap_or_else(|e| panic!("after {} operations: {e}", out.len()))
            .unwrap_or_else(|| panic!("stream ended after {} operations", out.len()));
        out.extend(batch.operations);
    }
    assert_eq!(out.last().map(|o| o.cursor), Some(last), "read past {last}");
    out
}

/// An operation as the capture says it (cursor, source and indexed_at are
/// the relay's): (did, collection, rkey, action, cid, rev, record).
pub type Expected = (String, String, String, Action, String, String, Value);

/// Every commit of the Jetstream capture, straight from its JSON.
pub fn expected_from_capture() -> Vec<Expected> {
    let text = std::fs::read_to_string(corpus_jsonl()).expect("corpus");
    let mut out = Vec::new();
    for line in text.lines() {
        let e: Value = serde_json::from_str(line).expect("json");
        if e["kind"] != "commit" {
            continue;
        }
        let c = &e["commit"];
        let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
        let delete = c["operation"] == "delete";
        out.push((
            s(&e["did"]),
            s(&c["collection"]),
            s(&c["rkey"]),
            match c["operation"].as_str() {
                Some("create") => Action::Create,
                Some("update") => Action::Update,
                _ => Action::Delete,
            },
            s(&c["cid"]),
            s(&c["rev"]),
            if delete {
                Value::Null
            } else {
                c["record"].clone()
            },
        ));
    }
    out
}

pub fn as_expected(op: &Operation) -> Expected {
    (
        op.did.clone(),
        op.collection.clone(),
        op.rkey.clone(),
        op.action(),
        op.cid.clone(),
        op.rev.clone(),
        if op.record_json.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&op.record_json).expect("record_json is JSON")
        },
    )
}

/// Replay the capture into `hub` through the standalone source; returns the
/// operations published.
pub async fn replay_capture(hub: &Hub) -> u64 {
    let mut cfg = SourceConfig::new(SourceKind::Jetstream);
    cfg.endpoints = vec![format!("file://{}", corpus_jsonl().display())];
    let all = CollectionFilter::new(["*"]).expect("filter");
    let summary = skyhouse_relay::run_source(cfg, 0, all, hub.clone(), CancellationToken::new())
        .await
        .expect("replay");
    summary.ops
}
