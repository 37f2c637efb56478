//! A firehose that misbehaves: it cuts a frame in the middle and drops the
//! connection, sends garbage, sends a frame over the size limit, and sends
//! `#error FutureCursor`, between the 150 real frames of the bundled
//! capture. The indexer keeps running, dead-letters the garbage (and only
//! it), counts each problem, resumes after each, and lands every good
//! event: the tables equal a clean replay of the capture.

use std::path::PathBuf;

use skyhouse_atproto::frame::Frame;
use skyhouse_testkit::compare::Compare;
use skyhouse_testkit::ws::{serve, Script};
use skyhouse_testkit::{ClickHouse, Redis};

use super::file_url;
use crate::{metric, Setup};

/// The bundled relay capture: `[u32 BE length][frame]` repeated.
fn capture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../pkg/sources/testdata/corpus.frames")
        .canonicalize()
        .unwrap()
}

/// Every frame of the capture with its seq.
fn frames() -> Vec<(i64, Vec<u8>)> {
    let bytes = std::fs::read(capture_path()).unwrap();
    let frames = skyhouse_sources::split_frame_file(&bytes).unwrap();
    frames
        .into_iter()
        .map(|frame| (Frame::decode(frame).unwrap().seq().unwrap(), frame.to_vec()))
        .collect()
}

/// The `cursor` query parameter of a subscribe request.
fn cursor_param(request: &str) -> Option<i64> {
    let (_, query) = request.split_once('?')?;
    query
        .split('&')
        .find_map(|p| p.strip_prefix("cursor="))
        .and_then(|c| c.parse().ok())
}

/// Over the indexer's 5 MiB message limit.
const OVERSIZED: usize = (5 << 20) + 1;

/// Not CBOR at all (0xff is a stray "break").
const GARBAGE: &[u8] = b"\xff\xfe this is not a firehose frame";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_firehose_loses_no_good_event() {
    let frames = frames();
    assert_eq!(frames.len(), 150);
    let redis = Redis::shared();
    let clean = Setup::new(
        "faults_src_clean",
        redis.url(),
        "firehose",
        file_url(&capture_path()),
    );
    let mut replay = clean.start(&["--batch-age-ms", "100"]);
    let status = replay.wait_exit();
    assert!(
        status.success(),
        "clean replay: {status}\n{}",
        replay.log_tail()
    );

    let seq = |i: usize| frames[i].0;
    let send = |script: Script, range: std::ops::Range<usize>| {
        frames[range]
            .iter()
            .fold(script, |s, (_, f)| s.binary(f.clone()))
    };
    // Connection 1: frames 0..40, then frame 40 cut in the middle.
    let mut script = send(Script::new(), 0..40);
    script = script.cut_binary(frames[40].1.clone(), frames[40].1.len() / 2);
    // Connection 2: from frame 40 again, garbage, then a frame over the limit.
    script = send(script, 40..70).binary(GARBAGE.to_vec());
    script = send(script, 70..80).binary(vec![0u8; OVERSIZED]);
    // The client drops that connection itself; connection 3 resumes.
    script = send(script.silent(), 80..110)
        .error_frame("FutureCursor", Some("Cursor in the future."))
        .close();
    // Connection 4: the rest, then silence.
    script = send(script, 110..150);
    let server = serve(script).await;

    let setup = Setup::new("faults_src", redis.url(), "firehose", server.url());
    let mut indexer = setup.start(&["--cursor", "0", "--batch-age-ms", "100"]);
    indexer.wait_for_cursor(&setup, seq(149));
    indexer.assert_running();

    let requests = server.requests();
    assert!(requests.len() >= 4, "{requests:?}");
    // After the cut frame and after the oversized one: resumed from the last
    // event decoded. After FutureCursor: from the live tip (no cursor).
    assert_eq!(cursor_param(&requests[1]), Some(seq(39)), "{requests:?}");
    assert_eq!(cursor_param(&requests[2]), Some(seq(79)), "{requests:?}");
    assert_eq!(cursor_param(&requests[3]), None, "{requests:?}");

    let scrape = indexer
        .metrics_until("the problems counted", |s| {
            metric(s, "skyhouse_indexer_dead_letters_total", &[]).is_some()
        })
        .await;
    let count = |name: &str, labels: &[&str]| metric(&scrape, name, labels).unwrap_or(0.0);
    assert_eq!(
        count("skyhouse_indexer_dead_letters_total", &[]),
        1.0,
        "{scrape}"
    );
    assert!(
        count(
            "skyhouse_source_reconnects_total",
            &["reason=\"oversized\""]
        ) >= 1.0,
        "{scrape}"
    );
    assert_eq!(
        count(
            "skyhouse_source_error_frames_total",
            &["kind=\"future_cursor\""]
        ),
        1.0,
        "{scrape}"
    );

    let status = indexer.terminate();
    assert!(status.success(), "exit {status}:\n{}", indexer.log_tail());
    assert_eq!(setup.cursor(), Some(seq(149)));

    // Every good event landed; the garbage, and only it, is a dead letter.
    let result = Compare::new(ClickHouse::shared())
        .skip_table("dead_letters")
        .run(clean.db.name(), setup.db.name());
    assert!(result.is_equal(), "{result}");
    assert!(result.rows("records") >= 140, "{result}");
    let dead = setup.rows("SELECT source, reason, payload FROM dead_letters");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["source"], "firehose", "{dead:?}");
    let garbage_hex: String = GARBAGE.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        dead[0]["payload"].as_str().unwrap().contains(&garbage_hex),
        "{dead:?}"
    );
}
