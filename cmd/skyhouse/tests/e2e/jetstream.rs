//! The real production capture through the binary: the Jetstream JSON lines
//! and the relay frames of the same events (`pkg/sources/testdata`) give the
//! same tables; the cursor is the newest position of each; a second run
//! resumes from it and changes nothing.

use std::path::PathBuf;

use serde_json::Value;
use skyhouse_atproto::frame::Frame;
use skyhouse_testkit::Redis;

use crate::{diff_lines, Setup};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../pkg/sources/testdata")
        .join(name)
        .canonicalize()
        .unwrap()
}

pub fn file_url(name: &str) -> String {
    format!("file://{}", testdata(name).display())
}

/// The newest `time_us` of the Jetstream capture.
fn newest_time_us() -> i64 {
    std::fs::read_to_string(testdata("corpus.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["time_us"]
                .as_i64()
                .unwrap()
        })
        .max()
        .unwrap()
}

/// The newest seq of the frame capture (`[u32 BE length][frame]` repeated).
fn newest_seq() -> i64 {
    let bytes = std::fs::read(testdata("corpus.frames")).unwrap();
    let frames = skyhouse_sources::split_frame_file(&bytes).unwrap();
    frames
        .into_iter()
        .map(|frame| Frame::decode(frame).unwrap().seq().unwrap())
        .max()
        .unwrap_or(0)
}

/// Runs the indexer on the capture to its end; it must exit 0. On a
/// cluster, returns once the replicas hold what it wrote.
pub fn replay(setup: &Setup) {
    let mut indexer = setup.start(&["--batch-age-ms", "100"]);
    let status = indexer.wait_exit();
    assert!(status.success(), "exit {status}:\n{}", indexer.log_tail());
    setup.db.sync_replicas();
}

/// What both paths must agree on: every table the capture touches, with
/// the columns that come from the events (not `indexed_at`).
const TABLES: &[(&str, &str)] = &[
    ("records", "SELECT did, collection, rkey, cid, version, deleted, record FROM records FINAL ORDER BY did, collection, rkey"),
    ("posts", "SELECT did, rkey, cid, version, deleted, text, langs, reply_root_uri, reply_parent_uri, quote_uri, \
               embed_kind, external_uri, image_count, mentions, links, tags, labels FROM posts FINAL ORDER BY did, rkey"),
    ("likes", "SELECT did, rkey, cid, version, deleted, subject_uri, subject_cid, subject_did, via_uri FROM likes FINAL ORDER BY did, rkey"),
    ("reposts", "SELECT did, rkey, cid, version, deleted, subject_uri, subject_did FROM reposts FINAL ORDER BY did, rkey"),
    ("follows", "SELECT did, rkey, cid, version, deleted, subject_did FROM follows FINAL ORDER BY did, rkey"),
    ("blocks", "SELECT did, rkey, cid, version, deleted, subject_did FROM blocks FINAL ORDER BY did, rkey"),
    ("profiles", "SELECT did, rkey, cid, version, deleted, display_name, description FROM profiles FINAL ORDER BY did, rkey"),
    ("identities", "SELECT did, handle FROM identities FINAL ORDER BY did"),
    ("accounts", "SELECT did, active, status FROM accounts FINAL ORDER BY did"),
    ("dead_letters", "SELECT count() FROM dead_letters"),
];

pub fn snapshot(setup: &Setup) -> Vec<(&'static str, String)> {
    TABLES
        .iter()
        .map(|(name, sql)| (*name, setup.db.query(&format!("{sql} FORMAT TSV"))))
        .collect()
}

#[test]
fn jetstream_capture_through_the_binary_equals_the_firehose_capture() {
    let redis = Redis::shared();
    let js = Setup::new("e2e_js", redis.url(), "jetstream", file_url("corpus.jsonl"));
    let fh = Setup::new(
        "e2e_js_fh",
        redis.url(),
        "firehose",
        file_url("corpus.frames"),
    );
    both_captures_agree(&js, &fh);
}

/// Replays the Jetstream capture into `js` and the frame capture into `fh`
/// (fresh setups), twice: both give the same tables, the cursor of each is
/// its newest position, the second run changes nothing. Returns the tables
/// (the Jetstream side's).
pub fn both_captures_agree(js: &Setup, fh: &Setup) -> Vec<(&'static str, String)> {
    assert_eq!(js.cursor(), None);
    replay(js);
    replay(fh);

    let (js_tables, fh_tables) = (snapshot(js), snapshot(fh));
    for ((name, a), (_, b)) in js_tables.iter().zip(&fh_tables) {
        assert!(
            a == b,
            "{name}: Jetstream (-) and firehose (+) differ:\n{}",
            diff_lines(a, b)
        );
    }
    // Not vacuous: the capture's 149 keys of app.bsky.*/chat.bsky.*.
    assert_eq!(js.number("SELECT count() FROM records FINAL"), 149);
    assert!(js.number("SELECT count() FROM posts FINAL WHERE deleted = 0") > 0);
    assert_eq!(js.number("SELECT count() FROM dead_letters"), 0);

    // The cursor of each is its newest position, under the default key.
    assert_eq!(js.cursor(), Some(newest_time_us()));
    assert_eq!(fh.cursor(), Some(newest_seq()));

    // Again without --cursor: resumes from the saved cursor (Jetstream
    // rewinds 5 s), changes nothing, keeps the cursor.
    replay(js);
    replay(fh);
    assert_eq!(snapshot(js), js_tables);
    assert_eq!(snapshot(fh), fh_tables);
    assert_eq!(js.cursor(), Some(newest_time_us()));
    assert_eq!(fh.cursor(), Some(newest_seq()));
    js_tables
}
