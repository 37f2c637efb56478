//! SIGTERM, with a bounded grace period (`--shutdown-grace-secs`):
//!
//! - a ClickHouse that accepts connections and never answers: the indexer
//!   exits non-zero once the grace passes, with one line naming the rows not
//!   acknowledged, and the cursor in Redis is not past what ClickHouse holds
//!   (nothing: no cursor);
//! - a second SIGTERM while it drains exits at once (143);
//! - a healthy ClickHouse: SIGTERM writes what the writer held, saves the
//!   cursor at the last event and exits 0.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use skyhouse_atproto::frame::Frame;
use skyhouse_testkit::ws::{serve, Script};
use skyhouse_testkit::Redis;

use crate::{spare_port, strings, text, wait_until, Indexer, Setup};

/// The frames of the real relay capture (`pkg/sources/testdata/corpus.frames`).
fn capture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../pkg/sources/testdata/corpus.frames")
        .canonicalize()
        .unwrap()
}

/// The capture's frames.
fn frames() -> Vec<Vec<u8>> {
    let bytes = std::fs::read(capture()).unwrap();
    let frames = skyhouse_sources::split_frame_file(&bytes).unwrap();
    frames.into_iter().map(<[u8]>::to_vec).collect()
}

/// A loopback "ClickHouse" that accepts every connection and never says a
/// word; the connections are held until the test process ends.
fn silent_clickhouse() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let held = Arc::new(Mutex::new(Vec::new()));
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            held.lock().unwrap().push(conn);
        }
    });
    url
}

/// The sum of every sample of `name` in a Prometheus scrape.
fn total(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// `kill -SIG pid`, without waiting for the process.
fn signal(indexer: &Indexer, sig: &str) {
    let out = Command::new("kill")
        .args([format!("-{sig}"), indexer.pid().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "kill -{sig}: {}", text(&out));
}

/// The indexer replaying the capture into a ClickHouse that never answers.
fn start_against_silent_clickhouse(setup: &Setup, grace_secs: &str) -> Indexer {
    let port = spare_port();
    let mut args = strings(&["indexer"]);
    args.extend(setup.source_flags());
    args.extend(strings(&[
        "--clickhouse-address",
        &silent_clickhouse(),
        "--database",
        setup.db.name(),
        "--batch-age-ms",
        "100",
        "--shutdown-grace-secs",
        grace_secs,
        "--metrics-addr",
        &format!("127.0.0.1:{port}"),
    ]));
    Indexer::spawn(&args, port)
}

/// Every frame of the capture decoded (and handed to the writer, which
/// cannot get an answer).
async fn wait_decoded(indexer: &mut Indexer, frames: usize) {
    indexer
        .metrics_until("every frame decoded", |s| {
            total(s, "skyhouse_indexer_events_total") == frames as f64
        })
        .await;
}

/// The one log line that says why the process gave up, and what was left.
fn exit_line(indexer: &Indexer, starts: &str) -> String {
    let log = indexer.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(starts)).collect();
    assert_eq!(
        lines.len(),
        1,
        "one {starts:?} line:\n{}",
        indexer.log_tail()
    );
    println!("{}", lines[0]);
    lines[0].to_owned()
}

/// The rows the line says were not acknowledged.
fn unacknowledged_rows(line: &str) -> u64 {
    let before = line
        .split(" rows not acknowledged by ClickHouse")
        .next()
        .unwrap_or_default();
    let n = before
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .replace(',', "");
    n.parse()
        .unwrap_or_else(|_| panic!("no row count in {line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_that_cannot_finish_exits_non_zero_after_the_grace_naming_the_unacknowledged_rows()
{
    let redis = Redis::shared();
    let url = format!("file://{}", capture().display());
    let setup = Setup::new("e2e_grace", redis.url(), "firehose", url);
    let mut indexer = start_against_silent_clickhouse(&setup, "3");
    wait_decoded(&mut indexer, frames().len()).await;
    let status = indexer.terminate();
    assert_eq!(status.code(), Some(1), "{}", indexer.log_tail());
    let line = exit_line(&indexer, "Shutdown grace of 3 s passed with");
    assert!(unacknowledged_rows(&line) > 0, "{line}");
    assert!(line.contains("no cursor saved by this run"), "{line}");
    // ClickHouse holds nothing, so no cursor may have been saved.
    assert_eq!(setup.cursor(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_during_the_drain_exits_at_once() {
    let redis = Redis::shared();
    let url = format!("file://{}", capture().display());
    let setup = Setup::new("e2e_second_signal", redis.url(), "firehose", url);
    // A grace far longer than the test's own deadline: only the second signal ends it.
    let mut indexer = start_against_silent_clickhouse(&setup, "3600");
    wait_decoded(&mut indexer, frames().len()).await;
    signal(&indexer, "TERM");
    wait_until(
        "the drain started",
        || indexer.log().contains("Shutdown requested").then_some(()),
        || indexer.log_tail(),
    );
    indexer.assert_running();
    signal(&indexer, "TERM");
    let status = indexer.wait_exit();
    assert_eq!(status.code(), Some(128 + 15), "{}", indexer.log_tail());
    let line = exit_line(
        &indexer,
        "Second SIGTERM during shutdown: exiting at once with",
    );
    assert!(unacknowledged_rows(&line) > 0, "{line}");
    assert_eq!(setup.cursor(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_healthy_clickhouse_writes_what_the_writer_held_and_exits_0() {
    let frames = frames();
    let last_seq = frames
        .iter()
        .filter_map(|f| Frame::decode(f).ok()?.seq())
        .max()
        .unwrap();
    // What the capture gives: one `records` row per operation kept.
    let mut decoder = skyhouse_transform::Decoder::default();
    let mut rows = skyhouse_transform::Rows::default();
    for f in &frames {
        decoder.firehose(f, skyhouse_transform::Verify::Off, &mut rows);
    }
    let expected_records = rows.records.len() as u64;
    assert!(expected_records > 100, "{expected_records}");

    // A relay that sends the capture and then stays connected, quiet.
    let mut script = Script::new();
    for f in &frames {
        script = script.binary(f.clone());
    }
    let relay = serve(script.silent()).await;
    let redis = Redis::shared();
    let setup = Setup::new("e2e_sigterm_drain", redis.url(), "firehose", relay.url());
    // Batches that close only at shutdown: the writer holds everything.
    let mut indexer = setup.start(&["--batch-age-ms", "3600000", "--batch-rows", "1000000"]);
    wait_decoded(&mut indexer, frames.len()).await;
    assert_eq!(setup.number("SELECT count() FROM records"), 0);
    let status = indexer.terminate();
    assert!(status.success(), "exit {status}:\n{}", indexer.log_tail());
    assert_eq!(
        setup.number("SELECT count() FROM records"),
        expected_records
    );
    assert_eq!(setup.cursor(), Some(last_seq));
}
