//! StreamOperations: content, filters, cursors, slow clients; Ingest and the
//! pipeline's push.

use skyhouse_relay::pb::{Action, Operation, Source, StreamRequest};
use skyhouse_relay::tonic::Code;
use skyhouse_relay::{ClientConfig, OpRef, Prepared, Pusher, RelayConfig};
use skyhouse_transform::Rows;
use skyhouse_transform::{CollectionFilter, Decoder, OpsTap, TapExtras};
use tokio_util::sync::CancellationToken;

use crate::*;

fn from(cursor: u64) -> StreamRequest {
    StreamRequest {
        cursor: Some(cursor),
        ..Default::default()
    }
}

#[tokio::test]
async fn every_client_receives_exactly_the_capture_with_its_filters() {
    let relay = start(RelayConfig::default()).await;
    let start_at = relay.hub.window().newest;
    assert_eq!(start_at, FIRST - 1);
    let expected = expected_from_capture();
    let some_did = expected[0].0.clone();
    let filters: Vec<(StreamRequest, Keep)> = vec![
        (
            StreamRequest {
                collections: vec!["app.bsky.feed.*".into()],
                ..from(start_at)
            },
            Box::new(|o: &Operation| o.collection.starts_with("app.bsky.feed.")),
        ),
        (
            StreamRequest {
                collections: vec!["app.bsky.graph.follow".into(), "fm.teal.".into()],
                ..from(start_at)
            },
            Box::new(|o: &Operation| {
                o.collection == "app.bsky.graph.follow" || o.collection.starts_with("fm.teal.")
            }),
        ),
        (
            StreamRequest {
                dids: vec![some_did.clone()],
                ..from(start_at)
            },
            Box::new(move |o: &Operation| o.did == some_did),
        ),
        (
            StreamRequest {
                actions: vec![Action::Delete as i32],
                ..from(start_at)
            },
            Box::new(|o: &Operation| o.action() == Action::Delete),
        ),
    ];
    // Subscribed before anything is published: they get it live.
    let mut all = subscribe(&relay.url, from(start_at))
        .await
        .expect("subscribe");
    let mut filtered = Vec::new();
    for (req, _) in &filters {
        filtered.push(subscribe(&relay.url, req.clone()).await.expect("subscribe"));
    }
    let mut backfill_only = subscribe(
        &relay.url,
        StreamRequest {
            sources: vec![Source::Backfill as i32],
            ..from(start_at)
        },
    )
    .await
    .expect("subscribe");

    let published = replay_capture(&relay.hub).await;
    assert_eq!(published as usize, expected.len());
    let newest = relay.hub.window().newest;
    assert_eq!(newest, start_at + published);

    let got = read_until(&mut all, newest).await;
    let cursors: Vec<u64> = got.iter().map(|o| o.cursor).collect();
    assert_eq!(
        cursors,
        (FIRST..=newest).collect::<Vec<_>>(),
        "one cursor each, in order"
    );
    assert!(got.iter().all(|o| o.source() == Source::Live));
    assert!(got.iter().all(|o| o.indexed_at > 0 && o.time_us > 0));
    let content: Vec<Expected> = got.iter().map(as_expected).collect();
    assert_eq!(content, expected, "the capture's operations, in order");

    for ((_, keep), stream) in filters.iter().zip(filtered.iter_mut()) {
        let want: Vec<Operation> = got.iter().filter(|o| keep(o)).cloned().collect();
        assert!(!want.is_empty() && want.len() < got.len());
        let last = want.last().map(|o| o.cursor).expect("some");
        assert_eq!(read_until(stream, last).await, want);
    }

    // Ingest: one backfill operation; only it reaches the backfill-only client.
    let mut op = got[0].clone();
    op.cursor = 0;
    op.source = Source::Backfill as i32;
    let reply = client(&relay.url)
        .await
        .ingest(op.clone())
        .await
        .expect("ingest")
        .into_inner();
    assert_eq!((reply.accepted, reply.last_cursor), (1, newest + 1));
    let only = read_until(&mut backfill_only, newest + 1).await;
    op.cursor = newest + 1;
    assert_eq!(only, vec![op.clone()]);
    assert_eq!(read_until(&mut all, newest + 1).await, vec![op]);

    let bad = client(&relay.url)
        .await
        .ingest(Operation::default())
        .await
        .expect_err("an operation without did/collection/rkey");
    assert_eq!(bad.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_client_reconnecting_with_its_cursor_gets_no_gap_and_no_duplicate() {
    let relay = start(RelayConfig::default()).await;
    let published = replay_capture(&relay.hub).await;
    let newest = relay.hub.window().newest;
    let mut everything = subscribe(&relay.url, from(FIRST - 1))
        .await
        .expect("subscribe");
    let all = read_until(&mut everything, newest).await;
    assert_eq!(all.len() as u64, published);
    // Stop after every possible point, resume from the last cursor seen.
    for stop_after in [0usize, 1, 77, all.len() - 1] {
        let resume = if stop_after == 0 {
            FIRST - 1
        } else {
            all[stop_after - 1].cursor
        };
        let mut s = subscribe(&relay.url, from(resume)).await.expect("resume");
        let rest = read_until(&mut s, newest).await;
        let mut joined = all[..stop_after].to_vec();
        joined.extend(rest);
        assert_eq!(joined, all, "resumed after {stop_after}");
    }
    // From the newest: nothing old, the next one published.
    let mut s = subscribe(&relay.url, from(newest))
        .await
        .expect("resume at the tip");
    let mut next = all[5].clone();
    next.cursor = 0;
    relay.hub.publish([Prepared::new(&OpRef::of(&next))]);
    next.cursor = newest + 1;
    assert_eq!(read_until(&mut s, newest + 1).await, vec![next]);
}

#[tokio::test]
async fn a_cursor_outside_the_window_is_refused_with_the_oldest_available() {
    let relay = start(RelayConfig {
        retain_ops: 50,
        client_queue: 50,
        ..RelayConfig::default()
    })
    .await;
    let published = replay_capture(&relay.hub).await;
    let w = relay.hub.window();
    assert_eq!(w.newest, FIRST - 1 + published);
    assert_eq!(w.oldest, w.newest - 50);
    let err = subscribe(&relay.url, from(FIRST - 1))
        .await
        .expect_err("too old");
    assert_eq!(err.code(), Code::OutOfRange);
    assert!(
        err.message()
            .contains(&format!("oldest cursor available is {}", w.oldest)),
        "{}",
        err.message()
    );
    let err = subscribe(&relay.url, from(w.newest + 1))
        .await
        .expect_err("ahead");
    assert_eq!(err.code(), Code::OutOfRange);
    // The oldest available works: exactly the 50 retained.
    let mut s = subscribe(&relay.url, from(w.oldest)).await.expect("oldest");
    let got = read_until(&mut s, w.newest).await;
    assert_eq!(got.len(), 50);
    assert_eq!(got[0].cursor, w.oldest + 1);
}

#[tokio::test]
async fn a_slow_client_is_cut_off_while_others_get_everything_and_it_resumes_exactly() {
    // 200 copies of the capture: 30,000 operations, ~15 MB, far more than
    // HTTP/2 flow-control windows and socket buffers hold for a client that
    // does not read.
    const COPIES: usize = 200;
    let relay = start(RelayConfig {
        retain_ops: 100_000,
        client_queue: 1_000,
        ..RelayConfig::default()
    })
    .await;
    let start_at = relay.hub.window().newest;
    let mut slow = subscribe(
        &relay.url,
        StreamRequest {
            client_name: "slow".into(),
            ..from(start_at)
        },
    )
    .await
    .expect("slow");
    // The capture's operations, as a relay sends them.
    let capture = {
        let scratch = start(RelayConfig::default()).await;
        replay_capture(&scratch.hub).await;
        let mut s = subscribe(&scratch.url, from(FIRST - 1))
            .await
            .expect("scratch");
        read_until(&mut s, scratch.hub.window().newest).await
    };
    let newest = start_at + (COPIES * capture.len()) as u64;
    // Fast clients read as it comes and report how far they got.
    let mut fast = Vec::new();
    for i in 0..3 {
        let req = StreamRequest {
            client_name: format!("fast-{i}"),
            ..from(start_at)
        };
        let mut s = subscribe(&relay.url, req).await.expect("fast");
        let (progress, seen) = tokio::sync::watch::channel(start_at);
        let task = tokio::spawn(async move {
            let mut got: Vec<Operation> = Vec::new();
            while got.last().is_none_or(|o| o.cursor < newest) {
                let batch = s
                    .message()
                    .await
                    .expect("fast client cut")
                    .expect("stream ended");
                got.extend(batch.operations);
                progress.send_replace(got.last().map_or(start_at, |o| o.cursor));
            }
            got
        });
        fast.push((task, seen));
    }
    // Publish copy by copy, each once the fast clients have the previous one:
    // they keep up; `slow` reads nothing meanwhile.
    for _ in 0..COPIES {
        let upto = relay
            .hub
            .publish(capture.iter().map(|o| Prepared::new(&OpRef::of(o))));
        for (_, seen) in fast.iter_mut() {
            seen.wait_for(|p| *p >= upto)
                .await
                .expect("fast client alive");
        }
    }
    assert_eq!(relay.hub.window().newest, newest);
    let mut all = None;
    for (task, _) in fast {
        let got = task.await.expect("fast client");
        assert_eq!(got.len() as u64, newest - start_at);
        all = Some(got);
    }
    let all = all.expect("fast clients");

    // `slow` gets what was in flight, then RESOURCE_EXHAUSTED naming its cursor.
    let mut before = Vec::new();
    let status = loop {
        match slow.message().await {
            Ok(Some(b)) => before.extend(b.operations),
            Ok(None) => panic!("stream ended without a status after {}", before.len()),
            Err(s) => break s,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(before.len() < all.len(), "slow read everything: not cut");
    let last = before.last().map_or(start_at, |o| o.cursor);
    assert!(
        status
            .message()
            .contains(&format!("resume with cursor {last}")),
        "{}",
        status.message()
    );
    let mut again = subscribe(&relay.url, from(last)).await.expect("resume");
    before.extend(read_until(&mut again, newest).await);
    assert_eq!(before, all, "cut + resumed = everything, once each");
}

#[tokio::test]
async fn the_pipeline_push_delivers_every_operation_tagged_backfill() {
    let relay = start(RelayConfig::default()).await;
    let start_at = relay.hub.window().newest;
    let mut s = subscribe(&relay.url, from(start_at))
        .await
        .expect("subscribe");
    // The indexer's decoder turns the capture into rows, as in the pipeline.
    let mut decoder = Decoder::new(CollectionFilter::new(["*"]).expect("filter"));
    let mut groups = Vec::new();
    let text = std::fs::read_to_string(corpus_jsonl()).expect("corpus");
    for chunk in text.lines().collect::<Vec<_>>().chunks(40) {
        let mut rows = Rows::default();
        rows.keep_for_tap(TapExtras::Actions);
        for line in chunk {
            decoder.jetstream(line.as_bytes(), &mut rows);
        }
        groups.push(rows);
    }
    let (pusher, task) = Pusher::connect(
        &ClientConfig::new(relay.url.clone(), None),
        Source::Backfill,
        CancellationToken::new(),
    )
    .expect("pusher");
    for g in &groups {
        pusher.offer(g);
    }
    drop(pusher);
    task.await.expect("push task");
    let total: usize = groups.iter().map(|g| g.records.len()).sum();
    let got = read_until(&mut s, start_at + total as u64).await;
    assert!(got.iter().all(|o| o.source() == Source::Backfill));
    let content: Vec<Expected> = got.iter().map(as_expected).collect();
    assert_eq!(content, expected_from_capture());
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_streams_and_drops_a_client_that_stopped_reading() {
    let mut relay = start(RelayConfig::default()).await;
    let start_at = relay.hub.window().newest;
    let mut reading = subscribe(&relay.url, from(start_at)).await.expect("reader");
    let _stuck = subscribe(&relay.url, from(start_at)).await.expect("stuck");
    // ~7 MB for a client that never reads: more than its flow-control windows.
    let capture = {
        let scratch = start(RelayConfig::default()).await;
        replay_capture(&scratch.hub).await;
        let mut s = subscribe(&scratch.url, from(FIRST - 1))
            .await
            .expect("scratch");
        read_until(&mut s, scratch.hub.window().newest).await
    };
    let mut newest = start_at;
    for _ in 0..100 {
        newest = relay
            .hub
            .publish(capture.iter().map(|o| Prepared::new(&OpRef::of(o))));
    }
    read_until(&mut reading, newest).await;
    relay.shutdown.cancel();
    // The reader's stream ends cleanly …
    assert!(reading.message().await.expect("no error").is_none());
    // … and the server returns although `_stuck` still holds a stream (after
    // the grace period, on the paused clock).
    let server = relay.server.take().expect("server");
    server.await.expect("join").expect("serve");
}

#[tokio::test(start_paused = true)]
async fn a_relay_that_is_down_costs_the_pipeline_only_drops_and_gets_the_queue_when_back() {
    // A port nobody listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let (pusher, task) = Pusher::connect(
        &ClientConfig::new(url.clone(), None),
        Source::Live,
        CancellationToken::new(),
    )
    .expect("pusher");
    let mut decoder = Decoder::new(CollectionFilter::new(["*"]).expect("filter"));
    let mut rows = Rows::default();
    rows.keep_for_tap(TapExtras::Actions);
    let text = std::fs::read_to_string(corpus_jsonl()).expect("corpus");
    decoder.jetstream(text.lines().next().expect("a line").as_bytes(), &mut rows);
    assert_eq!(rows.records.len(), 1);
    // offer() never waits: with nobody receiving, the queue fills and the
    // rest is dropped and counted.
    let extra = 10;
    for _ in 0..skyhouse_relay::PUSH_QUEUE + extra {
        pusher.offer(&rows);
    }
    assert_eq!(pusher.dropped(), extra as u64);

    // The relay comes up on that port: what was queued reaches it.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("rebind");
    let shutdown = CancellationToken::new();
    let hub = skyhouse_relay::Hub::new(RelayConfig::default(), FIRST, shutdown.clone());
    tokio::spawn(skyhouse_relay::serve(
        listener,
        hub.clone(),
        skyhouse_relay::ServeConfig::insecure(),
        shutdown.clone(),
    ));
    drop(pusher);
    task.await.expect("push task");
    let w = hub.window();
    assert_eq!(w.newest - w.oldest, skyhouse_relay::PUSH_QUEUE as u64);
    shutdown.cancel();
}

#[tokio::test]
async fn the_firehose_capture_gives_the_same_operations_as_its_jetstream_twin() {
    let relay = start(RelayConfig::default()).await;
    let mut cfg = skyhouse_sources::SourceConfig::new(skyhouse_sources::SourceKind::Firehose);
    let frames = corpus_jsonl().with_file_name("corpus.frames");
    cfg.endpoints = vec![format!("file://{}", frames.display())];
    let all = CollectionFilter::new(["*"]).expect("filter");
    let summary =
        skyhouse_relay::run_source(cfg, 0, all, relay.hub.clone(), CancellationToken::new())
            .await
            .expect("replay");
    let expected = expected_from_capture();
    assert_eq!(summary.ops as usize, expected.len());
    let mut s = subscribe(&relay.url, from(FIRST - 1))
        .await
        .expect("subscribe");
    let newest = relay.hub.window().newest;
    let got = read_until(&mut s, newest).await;
    let content: Vec<Expected> = got.iter().map(as_expected).collect();
    assert_eq!(content, expected);
    // The capture has all three actions, as its source says.
    for a in [Action::Create, Action::Update, Action::Delete] {
        assert!(got.iter().any(|o| o.action() == a), "{a:?}");
    }
    assert!(
        got.iter().all(|o| o.record_cbor.is_empty()),
        "not asked for"
    );

    // Asked for: every create and update carries its block, whose hash is the
    // CID and which decodes to the same record as the JSON.
    let mut s = subscribe(
        &relay.url,
        StreamRequest {
            want_cbor: true,
            ..from(FIRST - 1)
        },
    )
    .await
    .expect("subscribe");
    let with_cbor = read_until(&mut s, newest).await;
    for (lean, full) in got.iter().zip(&with_cbor) {
        let mut stripped = full.clone();
        stripped.record_cbor.clear();
        assert_eq!(&stripped, lean, "the same operation otherwise");
        if full.action() == Action::Delete {
            assert!(full.record_cbor.is_empty());
            continue;
        }
        let cid = skyhouse_atproto::Cid::compute(
            skyhouse_atproto::cid::CODEC_DAG_CBOR,
            &full.record_cbor,
        );
        assert_eq!(cid.to_string(), full.cid);
        let value = skyhouse_atproto::cbor::decode(&full.record_cbor).expect("DAG-CBOR");
        let json: serde_json::Value = serde_json::to_value(&value).expect("lex-JSON");
        let stated: serde_json::Value = serde_json::from_str(&full.record_json).expect("json");
        assert_eq!(json, stated);
    }
}

#[tokio::test]
async fn jetstream_operations_have_no_cbor_even_when_asked() {
    let relay = start(RelayConfig::default()).await;
    replay_capture(&relay.hub).await;
    let mut s = subscribe(
        &relay.url,
        StreamRequest {
            want_cbor: true,
            ..from(FIRST - 1)
        },
    )
    .await
    .expect("subscribe");
    let got = read_until(&mut s, relay.hub.window().newest).await;
    assert!(got.iter().all(|o| o.record_cbor.is_empty()));
    assert!(got.iter().any(|o| o.action() == Action::Update));
}

#[tokio::test]
async fn a_group_larger_than_one_grpc_message_is_pushed_in_pieces() {
    let relay = start(RelayConfig::default()).await;
    let start_at = relay.hub.window().newest;
    let mut s = subscribe(&relay.url, from(start_at))
        .await
        .expect("subscribe");
    // 24 records of 1 MiB: more than the relay's 16 MiB message limit in one group.
    let big = format!("{{\"text\":\"{}\"}}", "x".repeat(1 << 20));
    let mut rows = Rows::default();
    rows.records = (0..24)
        .map(|i| skyhouse_transform::RecordRow {
            did: "did:plc:big".into(),
            collection: "app.bsky.feed.post".into(),
            rkey: format!("r{i}"),
            record: big.clone(),
            ..Default::default()
        })
        .collect();
    let (pusher, task) = Pusher::connect(
        &ClientConfig::new(relay.url.clone(), None),
        Source::Live,
        CancellationToken::new(),
    )
    .expect("pusher");
    pusher.offer(&rows);
    assert_eq!(pusher.dropped(), 0);
    drop(pusher);
    task.await.expect("push task");
    assert_eq!(relay.hub.window().newest, start_at + 24, "all 24 published");
    let got = read_until(&mut s, start_at + 24).await;
    let rkeys: Vec<&str> = got.iter().map(|o| o.rkey.as_str()).collect();
    let want: Vec<String> = (0..24).map(|i| format!("r{i}")).collect();
    assert_eq!(rkeys, want);
    assert!(got.iter().all(|o| o.record_json == big));
}

#[tokio::test]
async fn the_push_carries_its_token_and_a_refused_one_publishes_nothing() {
    let dir = std::env::temp_dir().join(format!("skyhouse-relay-push-auth-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let tokens = dir.join("tokens.json");
    let file = skyhouse_relay::TokenFile::new(&tokens);
    let (_, publish) = file
        .create("indexer", &[skyhouse_relay::Scope::Publish])
        .expect("token");
    let (_, subscribe) = file
        .create("reader", &[skyhouse_relay::Scope::Subscribe])
        .expect("token");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let shutdown = CancellationToken::new();
    let hub = skyhouse_relay::Hub::new(RelayConfig::default(), FIRST, shutdown.clone());
    let serve = skyhouse_relay::ServeConfig {
        auth: skyhouse_relay::Auth::from_file(&tokens).expect("auth"),
        tls: None,
    };
    tokio::spawn(skyhouse_relay::serve(
        listener,
        hub.clone(),
        serve,
        shutdown.clone(),
    ));
    let mut rows = Rows::default();
    rows.records = (0..3)
        .map(|i| skyhouse_transform::RecordRow {
            did: "did:plc:push".into(),
            collection: "app.bsky.feed.like".into(),
            rkey: format!("r{i}"),
            record: "{}".into(),
            ..Default::default()
        })
        .collect();
    // A subscribe-only token: the relay refuses the push, nothing is published.
    let (pusher, task) = Pusher::connect(
        &ClientConfig::new(url.clone(), Some(subscribe)),
        Source::Live,
        shutdown.child_token(),
    )
    .expect("pusher");
    pusher.offer(&rows);
    drop(pusher);
    task.await.expect("push task");
    assert_eq!(hub.window().newest, FIRST - 1, "nothing published");
    // The publish token: all three.
    let (pusher, task) = Pusher::connect(
        &ClientConfig::new(url, Some(publish)),
        Source::Live,
        shutdown.child_token(),
    )
    .expect("pusher");
    pusher.offer(&rows);
    drop(pusher);
    task.await.expect("push task");
    assert_eq!(hub.window().newest, FIRST - 1 + 3);
    shutdown.cancel();
}
