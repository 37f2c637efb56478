//! Logs and traces as env/telemetry.env configures them: the real indexer, run with
//! JSON logs and an OTLP endpoint, writes one JSON object per log line and posts its
//! spans to a collector (a minimal OTLP/HTTP receiver on loopback).

use std::process::Command;
use std::sync::{Arc, Mutex};

use skyhouse_testkit::{ClickHouse, Redis};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::util::{root, text};

/// One request the collector received: (path, content-type, body).
type Received = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// Accept HTTP/1.1 POSTs with a Content-Length body; answer 200 to each.
async fn collector() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let got: Received = Arc::default();
    let store = got.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let mut sock = BufReader::new(sock);
                loop {
                    let mut request_line = String::new();
                    if sock.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let path = request_line
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or("")
                        .to_owned();
                    let (mut len, mut content_type) = (0usize, String::new());
                    loop {
                        let mut h = String::new();
                        if sock.read_line(&mut h).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        let (k, v) = h.split_once(':').unwrap_or((h, ""));
                        match k.to_ascii_lowercase().as_str() {
                            "content-length" => len = v.trim().parse().unwrap_or(0),
                            "content-type" => content_type = v.trim().to_owned(),
                            _ => {}
                        }
                    }
                    let mut body = vec![0u8; len];
                    if sock.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    store.lock().expect("lock").push((path, content_type, body));
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                    if sock.get_mut().write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, got)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_and_otlp_spans_from_a_real_indexer_run() {
    let ch = ClickHouse::shared();
    let db = ch.database("ops_telemetry");
    let redis = Redis::shared();
    let prefix = redis.key_prefix("ops-telemetry");
    let bin = env!("CARGO_BIN_EXE_skyhouse");
    let migrate = Command::new(bin)
        .env_clear()
        .args(["migrate", "up", "--clickhouse-address", &ch.http_url()])
        .args(["--database", db.name()])
        .output()
        .expect("run skyhouse migrate");
    assert!(migrate.status.success(), "{}", text(&migrate));

    let (endpoint, received) = collector().await;
    let capture = root().join("pkg/sources/testdata/corpus.frames");
    let url = format!("file://{}", capture.display());
    let run = tokio::task::spawn_blocking({
        let (ch_url, db, redis_url, prefix) =
            (ch.http_url(), db.name().to_owned(), redis.url(), prefix);
        move || {
            Command::new(bin)
                .env_clear()
                .env("SKYHOUSE_LOG_FORMAT", "json")
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
                .args(["indexer", "--source", "firehose", "--url", &url])
                .args(["--cursor", "0", "--clickhouse-address", &ch_url])
                .args(["--database", &db, "--redis", &redis_url])
                .args(["--redis-prefix", &prefix, "--metrics-addr", "127.0.0.1:0"])
                .output()
                .expect("run skyhouse indexer")
        }
    })
    .await
    .expect("join");
    assert!(run.status.success(), "{}", text(&run));

    // Logs: every line of stderr is one JSON object with a level and fields.
    let stderr = String::from_utf8_lossy(&run.stderr);
    let mut messages = Vec::new();
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(v["level"].is_string(), "no level: {line}");
        messages.push(v["fields"]["message"].as_str().unwrap_or("").to_owned());
    }
    assert!(
        messages.iter().any(|m| m == "Indexer starting."),
        "{messages:?}"
    );

    // Traces: OTLP/HTTP protobuf posts to /v1/traces, holding the writer's batch
    // spans and the service name (protobuf keeps strings as raw bytes).
    let got = received.lock().expect("lock").clone();
    let traces: Vec<_> = got.iter().filter(|(p, _, _)| p == "/v1/traces").collect();
    assert!(
        !traces.is_empty(),
        "no POST /v1/traces; got {:?}",
        got.iter().map(|r| &r.0).collect::<Vec<_>>()
    );
    for (_, content_type, _) in &traces {
        assert_eq!(content_type, "application/x-protobuf");
    }
    let all: Vec<u8> = traces.iter().flat_map(|(_, _, b)| b.clone()).collect();
    assert!(contains(&all, b"clickhouse.write_batch"), "no writer span");
    assert!(contains(&all, b"skyhouse-indexer"), "no service.name");
}
