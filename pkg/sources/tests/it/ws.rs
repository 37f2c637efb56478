//! The WebSocket client against real loopback servers (`skyhouse_testkit::ws`).

use std::sync::Arc;
use std::time::Duration;

use skyhouse_sources::{SourceKind, ZstdDictionary};
use skyhouse_testkit::ws::{refused_url, serve, Script};
use tokio::sync::Notify;

use crate::*;

const RECONNECTS: &str = "skyhouse_source_reconnects_total";
const DROPPED: &str = "skyhouse_source_dropped_total";
const MESSAGES: &str = "skyhouse_source_messages_total";
const ERROR_FRAMES: &str = "skyhouse_source_error_frames_total";
const SUBSCRIBE: &str = "/xrpc/com.atproto.sync.subscribeRepos";

/// A firehose frame's `seq`.
fn seq(frame: &[u8]) -> i64 {
    skyhouse_atproto::frame::Frame::decode(frame)
        .expect("frame")
        .seq()
        .expect("seq")
}

/// Poll `cond` until it holds; fail the test after PATIENCE. (Waiting, not timing: the
/// test asserts what happened, never how fast.)
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The server closes; the client reconnects with `cursor=` set to what the consumer
/// stored in `resume` by then, and gets the rest.
#[test]
fn reconnect_after_close_resumes_from_the_consumer_position() {
    with_metrics(|metrics| async move {
        let lines = corpus_lines();
        let gate = Arc::new(Notify::new());
        let server = serve(
            Script::new()
                .send_jsonl(&lines[..3].join("\n"))
                .wait_for(gate.clone())
                .close()
                .send_jsonl(&lines[3..5].join("\n"))
                .silent(),
        )
        .await;
        let mut src = start(config(SourceKind::Jetstream, &[server.url()]), 16, 1234);
        let mut last = 0;
        for line in &lines[..3] {
            let msg = recv(&mut src.rx).await;
            assert_eq!(&msg.bytes[..], line.as_bytes());
            last = time_us(&msg.bytes);
            src.set_resume(last);
        }
        gate.notify_one();
        for line in &lines[3..5] {
            assert_eq!(&recv(&mut src.rx).await.bytes[..], line.as_bytes());
        }
        let requests = server.requests();
        assert_eq!(requests.len(), 2, "{requests:?}");
        assert_eq!(
            requests[0],
            "/subscribe?maxMessageSizeBytes=5242880&cursor=1234"
        );
        assert_eq!(
            requests[1],
            format!("/subscribe?maxMessageSizeBytes=5242880&cursor={last}")
        );
        assert_eq!(metrics.counter(RECONNECTS, &[("reason", "closed")]), 1);
        assert_eq!(metrics.counter(MESSAGES, &[("kind", "jetstream")]), 5);
        assert_eq!(metrics.gauge("skyhouse_source_connected"), 1.0);
        src.stop().await;
        assert_eq!(metrics.gauge("skyhouse_source_connected"), 0.0);
    });
}

#[test]
fn fails_over_to_the_next_host_when_the_first_refuses_connections() {
    with_metrics(|metrics| async move {
        let frames = corpus_frames();
        let server = serve(
            Script::new()
                .binary(frames[0].clone())
                .binary(frames[1].clone())
                .silent(),
        )
        .await;
        let refused = refused_url();
        let mut src = start(
            config(SourceKind::Firehose, &[refused, server.url()]),
            16,
            -1,
        );
        for frame in &frames[..2] {
            let msg = recv(&mut src.rx).await;
            assert_eq!(&msg.bytes[..], &frame[..]);
            assert_eq!(
                &*msg.endpoint,
                format!("{}/xrpc/com.atproto.sync.subscribeRepos", server.url())
            );
        }
        assert!(metrics.counter(RECONNECTS, &[("reason", "connect_failed")]) >= 1);
        assert_eq!(server.requests(), ["/xrpc/com.atproto.sync.subscribeRepos"]);
        src.stop().await;
    });
}

#[test]
fn an_unresponsive_server_is_dropped_after_the_liveness_timeout() {
    with_metrics(|metrics| async move {
        let lines = corpus_lines();
        let server = serve(
            Script::new()
                .text(lines[0].clone())
                .unresponsive()
                .text(lines[1].clone())
                .silent(),
        )
        .await;
        let mut cfg = config(SourceKind::Jetstream, &[server.url()]);
        // Long enough that the first line always arrives first, even on a loaded machine.
        cfg.liveness_timeout = Duration::from_secs(1);
        let mut src = start(cfg, 16, -1);
        assert_eq!(&recv(&mut src.rx).await.bytes[..], lines[0].as_bytes());
        // Only a new connection can deliver the second line.
        assert_eq!(&recv(&mut src.rx).await.bytes[..], lines[1].as_bytes());
        assert!(server.connections() >= 2);
        assert!(metrics.counter(RECONNECTS, &[("reason", "silent")]) >= 1);
        src.stop().await;
    });
}

/// With the channel full the source stops reading: the server's writes block once the
/// socket buffers are full, and only channel capacity + 1 messages were taken off the
/// socket. An unbounded buffer anywhere would let the server write all 64 MiB.
#[test]
fn a_full_channel_stops_the_socket_reader() {
    with_metrics(|metrics| async move {
        const TOTAL: u64 = 1024;
        const SIZE: usize = 64 << 10; // 64 MiB in all, far more than loopback socket buffers
        let server = serve(
            Script::new()
                .repeat_binary(vec![7u8; SIZE], TOTAL as usize)
                .silent(),
        )
        .await;
        let mut src = start(config(SourceKind::Firehose, &[server.url()]), 1, -1);

        // The reader has filled the channel (1) and holds one more, waiting for room.
        eventually("the reader is waiting for room", || {
            metrics.counter(MESSAGES, &[("kind", "firehose")]) >= 2
        })
        .await;
        // Wait until the server cannot write any more (its count stops moving).
        let mut last = server.sent();
        let mut still = 0;
        while still < 10 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = server.sent();
            still = if now == last { still + 1 } else { 0 };
            last = now;
        }
        assert!(
            last < TOTAL / 2,
            "server wrote {last} of {TOTAL} messages without a reader"
        );
        assert_eq!(metrics.counter(MESSAGES, &[("kind", "firehose")]), 2);

        // Reading again resumes the flow: every message arrives, in full.
        for _ in 0..TOTAL {
            let msg = recv(&mut src.rx).await;
            assert_eq!(msg.bytes.len(), SIZE);
        }
        assert_eq!(server.sent(), TOTAL);
        src.stop().await;
    });
}

#[test]
fn shutdown_while_waiting_for_room_returns_ok() {
    with_metrics(|metrics| async move {
        let server = serve(Script::new().repeat_binary(vec![1u8; 100], 10).silent()).await;
        let src = start(config(SourceKind::Firehose, &[server.url()]), 1, -1);
        eventually("the reader is waiting for room", || {
            metrics.counter(MESSAGES, &[("kind", "firehose")]) >= 2
        })
        .await;
        src.stop().await;
    });
}

#[tokio::test]
async fn dropping_the_receiver_ends_run() {
    let server = serve(Script::new().text("{}").silent()).await;
    let mut src = start(config(SourceKind::Jetstream, &[server.url()]), 4, -1);
    recv(&mut src.rx).await;
    drop(src.rx);
    tokio::time::timeout(PATIENCE, src.task)
        .await
        .expect("run ends once the receiver is gone")
        .expect("no panic")
        .expect("Ok");
}

/// Train a dictionary on the corpus, compress with it as Jetstream would, and check the
/// source (given that dictionary) hands back the exact JSON; also the request it made.
#[test]
fn compressed_messages_decode_with_the_configured_dictionary() {
    with_metrics(|metrics| async move {
        let lines = corpus_lines();
        let dictionary = zstd::dict::from_samples(&lines, 8 << 10).expect("train dictionary");
        let mut compressor =
            zstd::bulk::Compressor::with_dictionary(3, &dictionary).expect("compressor");
        let mut script = Script::new();
        for line in &lines[..20] {
            let frame = compressor.compress(line.as_bytes()).expect("compress");
            assert!(frame.len() < line.len());
            script = script.binary(frame);
        }
        // One frame without its size in the header: the capped streaming path.
        let mut enc = zstd::stream::write::Encoder::with_dictionary(Vec::new(), 3, &dictionary)
            .expect("encoder");
        std::io::Write::write_all(&mut enc, lines[20].as_bytes()).expect("write");
        let unsized_frame = enc.finish().expect("finish");
        assert!(matches!(
            zstd::zstd_safe::get_frame_content_size(&unsized_frame),
            Ok(None)
        ));
        script = script.binary(unsized_frame);
        let server = serve(script.silent()).await;

        let mut cfg = config(SourceKind::Jetstream, &[server.url()]);
        cfg.compress = true;
        cfg.zstd_dictionary = ZstdDictionary::new(dictionary);
        cfg.wanted_collections = vec!["app.bsky.feed.like".into(), "app.bsky.graph.*".into()];
        cfg.wanted_dids = vec!["did:plc:wq4aajammjtxdomz3e23667t".into()];
        let mut src = start(cfg, 64, -1);
        for line in &lines[..21] {
            let msg = recv(&mut src.rx).await;
            assert_eq!(std::str::from_utf8(&msg.bytes).expect("utf-8"), line);
        }
        assert_eq!(
            server.requests(),
            ["/subscribe?wantedCollections=app.bsky.feed.like&wantedCollections=app.bsky.graph.*\
              &wantedDids=did%3Aplc%3Awq4aajammjtxdomz3e23667t&compress=true\
              &maxMessageSizeBytes=5242880"]
        );
        assert_eq!(metrics.counter(DROPPED, &[("reason", "decompress")]), 0);
        src.stop().await;
    });
}

/// A frame made with another dictionary is refused and counted; the connection goes on.
#[test]
fn a_message_from_another_dictionary_is_dropped_and_counted() {
    with_metrics(|metrics| async move {
        let lines = corpus_lines();
        let dictionary = zstd::dict::from_samples(&lines, 8 << 10).expect("train dictionary");
        let foreign = zstd::bulk::Compressor::with_dictionary(3, &dictionary)
            .expect("compressor")
            .compress(lines[0].as_bytes())
            .expect("compress");
        let server = serve(
            Script::new()
                .binary(foreign)
                .text(lines[1].clone())
                .silent(),
        )
        .await;
        let mut cfg = config(SourceKind::Jetstream, &[server.url()]);
        cfg.compress = true; // with the bundled (Jetstream) dictionary
        let mut src = start(cfg, 16, -1);
        // Plain JSON text still passes through in compress mode.
        assert_eq!(&recv(&mut src.rx).await.bytes[..], lines[1].as_bytes());
        assert_eq!(metrics.counter(DROPPED, &[("reason", "decompress")]), 1);
        assert_eq!(server.connections(), 1);
        src.stop().await;
    });
}

/// A small frame that inflates past max_message_size is refused without inflating it
/// (and counted); the connection goes on. A wire message over the limit makes the
/// WebSocket layer fail the connection: counted as a reconnect with reason `oversized`.
#[test]
fn oversized_messages_are_refused_and_counted() {
    with_metrics(|metrics| async move {
        let lines = corpus_lines();
        let dictionary = zstd::dict::from_samples(&lines, 8 << 10).expect("train dictionary");
        let mut compressor =
            zstd::bulk::Compressor::with_dictionary(3, &dictionary).expect("compressor");
        let bomb = format!("{{\"time_us\":1,\"pad\":\"{}\"}}", "x".repeat(100_000));
        let bomb = compressor.compress(bomb.as_bytes()).expect("compress");
        let small = compressor.compress(b"{\"time_us\":2}").expect("compress");
        assert!(bomb.len() < 1000, "the bomb is small on the wire");
        let server = serve(Script::new().binary(bomb).binary(small).silent()).await;
        let mut cfg = config(SourceKind::Jetstream, &[server.url()]);
        cfg.compress = true;
        cfg.zstd_dictionary = ZstdDictionary::new(dictionary);
        cfg.max_message_size = 1000;
        let mut src = start(cfg, 16, -1);
        assert_eq!(&recv(&mut src.rx).await.bytes[..], b"{\"time_us\":2}");
        assert_eq!(metrics.counter(DROPPED, &[("reason", "oversized")]), 1);
        src.stop().await;

        let server = serve(
            Script::new()
                .binary(vec![0u8; 5000])
                .silent()
                .binary(vec![1u8; 10])
                .silent(),
        )
        .await;
        let mut cfg = config(SourceKind::Firehose, &[server.url()]);
        cfg.max_message_size = 1000;
        let mut src = start(cfg, 16, -1);
        assert_eq!(&recv(&mut src.rx).await.bytes[..], &[1u8; 10]);
        assert_eq!(metrics.counter(RECONNECTS, &[("reason", "oversized")]), 1);
        assert_eq!(metrics.counter(MESSAGES, &[("kind", "firehose")]), 1);
        src.stop().await;
    });
}

#[test]
fn pings_are_answered_and_not_delivered() {
    with_metrics(|metrics| async move {
        let server = serve(Script::new().ping("are you there").text("{}").silent()).await;
        let mut src = start(config(SourceKind::Jetstream, &[server.url()]), 16, -1);
        assert_eq!(&recv(&mut src.rx).await.bytes[..], b"{}");
        eventually("the client answered the ping", || server.pongs() >= 1).await;
        assert_eq!(metrics.counter(MESSAGES, &[("kind", "jetstream")]), 1);
        src.stop().await;
    });
}

#[test]
fn firehose_text_messages_are_dropped_and_counted() {
    with_metrics(|metrics| async move {
        let server = serve(Script::new().text("hello").binary(vec![9u8; 3]).silent()).await;
        let mut src = start(config(SourceKind::Firehose, &[server.url()]), 16, -1);
        assert_eq!(&recv(&mut src.rx).await.bytes[..], &[9u8; 3]);
        assert_eq!(
            metrics.counter(DROPPED, &[("reason", "unexpected_text")]),
            1
        );
        src.stop().await;
    });
}

/// wss:// builds a rustls client config, which needs a crypto provider (ring here): without
/// one the handshake panics. A loopback TCP server that hangs up makes the TLS handshake
/// fail; the source must retry, not panic.
#[tokio::test]
async fn wss_handshake_failure_is_retried_not_a_panic() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("wss://{}", listener.local_addr().expect("addr"));
    let src = start(config(SourceKind::Firehose, &[url]), 4, -1);
    for _ in 0..2 {
        let (stream, _) = tokio::time::timeout(PATIENCE, listener.accept())
            .await
            .expect("the client connects (again)")
            .expect("accept");
        drop(stream);
    }
    assert!(!src.task.is_finished(), "run ended early");
    src.stop().await;
}

#[test]
fn a_quiet_server_that_answers_pings_keeps_the_connection() {
    with_metrics(|metrics| async move {
        let lines = corpus_lines();
        // One line, silence (pings still answered) for 4 liveness periods, one more line.
        let server = serve(
            Script::new()
                .text(lines[0].clone())
                .wait(Duration::from_secs(2))
                .text(lines[1].clone())
                .silent(),
        )
        .await;
        let mut cfg = config(SourceKind::Jetstream, &[server.url()]);
        cfg.liveness_timeout = Duration::from_millis(500);
        let mut src = start(cfg, 16, -1);
        assert_eq!(&recv(&mut src.rx).await.bytes[..], lines[0].as_bytes());
        assert_eq!(&recv(&mut src.rx).await.bytes[..], lines[1].as_bytes());
        assert_eq!(server.connections(), 1, "one connection throughout");
        assert_eq!(metrics.counter(RECONNECTS, &[("reason", "silent")]), 0);
        assert!(server.pings() >= 1, "the client pinged while it was quiet");
        src.stop().await;
    });
}

/// `run_with_status` keeps `Connected` true while a socket is open (through a
/// reconnect) and false once `run` has returned. (Refused connects: tests/e2e/health.rs.)
#[tokio::test]
async fn connected_follows_the_socket() {
    let line = corpus_lines()[0].clone();
    let gate = Arc::new(Notify::new());
    let server = serve(
        Script::new()
            .text(line.clone())
            .wait_for(gate.clone())
            .close()
            .text(line),
    )
    .await;
    let connected = skyhouse_sources::Connected::default();
    assert!(!connected.get());
    let (tx, mut rx) = mpsc::channel(16);
    let stop = skyhouse_sources::CancellationToken::new();
    let task = tokio::spawn(skyhouse_sources::run_with_status(
        config(SourceKind::Jetstream, &[server.url()]),
        Arc::new(AtomicI64::new(-1)),
        tx,
        stop.clone(),
        connected.clone(),
        skyhouse_sources::Acked::default(),
    ));
    recv(&mut rx).await;
    assert!(connected.get(), "a message came over an open socket");
    gate.notify_one();
    // The second connection's message: reconnected, connected again.
    recv(&mut rx).await;
    assert!(connected.get());
    assert_eq!(server.connections(), 2);
    stop.cancel();
    task.await.expect("join").expect("run");
    assert!(!connected.get(), "run returned: not connected");
}

/// `FutureCursor`: the error frame is delivered (the consumer records the skip), the
/// source hangs up and connects again without a cursor (asking again would fail the
/// same way) whatever `resume` still says; the connection after that uses `resume`
/// again.
#[test]
fn a_future_cursor_error_reconnects_at_the_live_tip_once() {
    with_metrics(|metrics| async move {
        let frames = corpus_frames();
        let gate = Arc::new(Notify::new());
        let server = serve(
            Script::new()
                .error_frame("FutureCursor", Some("Cursor in the future."))
                .close()
                .binary(frames[0].clone())
                .wait_for(gate.clone())
                .close()
                .binary(frames[1].clone())
                .silent(),
        )
        .await;
        let mut src = start(
            config(SourceKind::Firehose, &[server.url()]),
            16,
            99_999_999_999,
        );
        let error = recv(&mut src.rx).await;
        assert!(
            matches!(
                skyhouse_atproto::frame::Frame::decode(&error.bytes),
                Ok(skyhouse_atproto::frame::Frame::Error(e)) if e.error == "FutureCursor"
            ),
            "the error frame itself reaches the consumer"
        );
        assert_eq!(&recv(&mut src.rx).await.bytes[..], &frames[0][..]);
        // `resume` was not touched: the tip connect is the source's own decision.
        assert_eq!(
            src.resume.load(std::sync::atomic::Ordering::SeqCst),
            99_999_999_999
        );
        src.set_resume(seq(&frames[0]));
        gate.notify_one();
        assert_eq!(&recv(&mut src.rx).await.bytes[..], &frames[1][..]);
        assert_eq!(
            server.requests(),
            [
                format!("{SUBSCRIBE}?cursor=99999999999"),
                SUBSCRIBE.to_owned(),
                format!("{SUBSCRIBE}?cursor={}", seq(&frames[0])),
            ]
        );
        assert_eq!(
            metrics.counter(ERROR_FRAMES, &[("kind", "future_cursor")]),
            1
        );
        assert_eq!(metrics.counter(RECONNECTS, &[("reason", "error_frame")]), 1);
        // We hang up on the error frame ourselves; the second close is the server's.
        assert_eq!(metrics.counter(RECONNECTS, &[("reason", "closed")]), 1);
        src.stop().await;
    });
}

/// `ConsumerTooSlow`: the next connect asks for the last acknowledged position, not
/// the last decoded one (what was decoded after it may only have been in memory); an
/// unknown error name reconnects from `resume` as after any drop, and an unknown ack
/// falls back to `resume` too.
#[test]
fn a_consumer_too_slow_error_reconnects_from_the_acknowledged_position() {
    with_metrics(|metrics| async move {
        let frames = corpus_frames();
        let gate = Arc::new(Notify::new());
        let server = serve(
            Script::new()
                .binary(frames[0].clone())
                .binary(frames[1].clone())
                .binary(frames[2].clone())
                .wait_for(gate.clone())
                .error_frame("ConsumerTooSlow", None)
                .close()
                .binary(frames[1].clone())
                .wait_for(gate.clone())
                .error_frame("SomethingNew", Some("not in the lexicon"))
                .close()
                .binary(frames[3].clone())
                .silent(),
        )
        .await;
        let mut src = start(config(SourceKind::Firehose, &[server.url()]), 16, -1);
        for frame in &frames[..3] {
            assert_eq!(&recv(&mut src.rx).await.bytes[..], &frame[..]);
            src.set_resume(seq(frame));
        }
        src.acked.set(seq(&frames[0]));
        gate.notify_one();
        recv(&mut src.rx).await; // the error frame
        assert_eq!(&recv(&mut src.rx).await.bytes[..], &frames[1][..]);
        gate.notify_one();
        recv(&mut src.rx).await; // the unknown error frame
        assert_eq!(&recv(&mut src.rx).await.bytes[..], &frames[3][..]);
        assert_eq!(
            server.requests(),
            [
                SUBSCRIBE.to_owned(),
                format!("{SUBSCRIBE}?cursor={}", seq(&frames[0])),
                format!("{SUBSCRIBE}?cursor={}", seq(&frames[2])),
            ]
        );
        assert_eq!(
            metrics.counter(ERROR_FRAMES, &[("kind", "consumer_too_slow")]),
            1
        );
        assert_eq!(metrics.counter(ERROR_FRAMES, &[("kind", "other")]), 1);
        assert_eq!(metrics.counter(RECONNECTS, &[("reason", "error_frame")]), 2);
        src.stop().await;
    });
}

/// With no acknowledged position yet, `ConsumerTooSlow` resumes from `resume`.
#[test]
fn consumer_too_slow_without_an_ack_resumes_from_the_decoded_position() {
    with_metrics(|_metrics| async move {
        let frames = corpus_frames();
        let gate = Arc::new(Notify::new());
        let server = serve(
            Script::new()
                .binary(frames[0].clone())
                .wait_for(gate.clone())
                .error_frame("ConsumerTooSlow", None)
                .close()
                .binary(frames[1].clone())
                .silent(),
        )
        .await;
        let mut src = start(config(SourceKind::Firehose, &[server.url()]), 16, -1);
        recv(&mut src.rx).await;
        src.set_resume(seq(&frames[0]));
        gate.notify_one();
        recv(&mut src.rx).await; // the error frame
        assert_eq!(&recv(&mut src.rx).await.bytes[..], &frames[1][..]);
        assert_eq!(
            server.requests(),
            [
                SUBSCRIBE.to_owned(),
                format!("{SUBSCRIBE}?cursor={}", seq(&frames[0])),
            ]
        );
        src.stop().await;
    });
}
