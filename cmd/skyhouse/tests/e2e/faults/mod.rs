//! Fault injection with real processes: the `skyhouse` binary against a
//! ClickHouse behind the fault proxy (testkit `proxy`), a Redis that goes
//! away, and a source that misbehaves. What must hold in every case: no row
//! is lost (ClickHouse ends equal to a clean run of the same input, nothing
//! dead-lettered that is not bad), the process recovers by itself (no
//! restart), and the saved cursor never runs ahead of ClickHouse.
//!
//! - `clickhouse`: a generated Jetstream stream replayed into the indexer
//!   while the proxy stalls, resets, answers 502, truncates and answers an
//!   unknown error code, each several times.
//! - `backfill`: the same faults under `skyhouse backfill work`.
//! - `redis`: Redis stopped for 30 s during a replay, then back.
//! - `source`: a firehose that cuts a frame, sends garbage, a frame over the
//!   size limit and `#error FutureCursor`.
//!
//! The replays read a named pipe as their `file://` capture: the test writes
//! the stream into it step by step (faults must meet traffic) and keeps it
//! open until it has read the process's metrics; closing it ends the replay
//! and the process exits 0 by itself.
//!
//! The cursor check: a thread reads the saved cursor from Redis every
//! 100 ms and, right after each read, checks that ClickHouse holds the rows
//! (`records`, the typed table, `identities`, `accounts`) of every event at
//! or before it that an earlier value did not cover, and of the last
//! [`LOOKBACK`] again (the generator knows each event's position and rows).
//! Data only grows, so a row missing at check time was missing when the
//! cursor was saved.

mod backfill;
mod clickhouse;
mod redis;
mod source;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use skyhouse_testkit::proxy::{Fault, FaultKind, ProxyStats};
use skyhouse_testkit::synth::Synth;
use skyhouse_testkit::ClickHouse;

use crate::{spare_port, strings, Indexer, Setup, DEADLINE};

/// Events of the generated stream: ~15 MB of JSON lines, 150 batches of 200
/// rows (many inserts to fault), generated in well under a second.
pub const EVENTS: u64 = 30_000;

/// Accounts the events are spread over (each gets updates, deletes,
/// handle and status changes).
pub const DIDS: u64 = 2_000;

/// Events checked again behind each sampled cursor (those it newly covers
/// are all checked).
pub const LOOKBACK: u64 = 50;

/// Events checked per round of queries (the DIDs of 1,000 events make an
/// `IN` list of ~30 KB).
const CHECK_CHUNK: u64 = 1_000;

/// How long a stalled request is held: far longer than the client's
/// receive timeout ([`TIMEOUTS`]), so only a timeout ends it.
pub const STALL: Duration = Duration::from_secs(600);

/// Short ClickHouse timeouts, so stalls end quickly.
pub const TIMEOUTS: &[&str] = &[
    "--clickhouse-connect-timeout-secs",
    "2",
    "--clickhouse-send-timeout-secs",
    "2",
    "--clickhouse-receive-timeout-secs",
    "2",
];

/// Each fault kind must fire at least this many times on inserts.
pub const EACH_FAULT: u64 = 3;

/// Every fault the proxy can inject, one of each.
pub fn every_fault() -> Vec<Fault> {
    vec![
        Fault::Stall(STALL),
        Fault::Reset,
        Fault::BadGateway,
        Fault::Truncate,
        Fault::UnknownError,
    ]
}

/// True once every kind has fired [`EACH_FAULT`] times on inserts.
pub fn every_fault_fired(stats: &ProxyStats) -> bool {
    FaultKind::ALL
        .iter()
        .all(|k| stats.injected_on_inserts(*k) >= EACH_FAULT)
}

/// The generator of every test here.
pub fn synth() -> Synth {
    Synth::new(EVENTS, DIDS)
}

/// Where this test binary keeps its files (under `target/tmp`).
fn work_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("faults");
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The generated stream as a capture file, written once per process.
pub fn capture() -> &'static Path {
    static CAPTURE: OnceLock<PathBuf> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let path = work_dir().join(format!(
            "synth-{EVENTS}-{DIDS}-{}.jsonl",
            std::process::id()
        ));
        synth().write_jsonl(&path).unwrap();
        path
    })
}

/// `file://` URL of a path.
pub fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// The Redis key of the Jetstream cursor of `setup` (the indexer's default name).
pub fn cursor_key(setup: &Setup) -> String {
    format!(
        "{}{}",
        setup.prefix,
        skyhouse_state::cursor_key(setup.source, &setup.url)
    )
}

/// Replays the whole capture into a fresh database without any fault; the
/// indexer must exit 0. The reference every faulty run is compared with.
pub fn clean_run(hint: &str, redis_url: String) -> Setup {
    let setup = Setup::new(hint, redis_url, "jetstream", file_url(capture()));
    let mut indexer = setup.start(&["--batch-rows", "5000"]);
    let status = indexer.wait_exit();
    assert!(
        status.success(),
        "clean run: {status}\n{}",
        indexer.log_tail()
    );
    assert_eq!(
        setup.number("SELECT count() FROM dead_letters"),
        0,
        "the clean run dead-lettered: {:?}",
        setup.rows("SELECT reason, payload FROM dead_letters LIMIT 5")
    );
    setup
}

/// Starts `skyhouse indexer` for `setup` with ClickHouse at `clickhouse_url`
/// (the proxy), short ClickHouse timeouts and `extra`.
pub fn start_indexer(setup: &Setup, clickhouse_url: &str, extra: &[&str]) -> Indexer {
    let port = spare_port();
    let mut args = strings(&["indexer"]);
    args.extend(setup.source_flags());
    args.extend([
        "--clickhouse-address".to_owned(),
        clickhouse_url.to_owned(),
        "--database".to_owned(),
        setup.db.name().to_owned(),
    ]);
    args.extend(strings(TIMEOUTS));
    args.extend(strings(extra));
    args.extend(["--metrics-addr".into(), format!("127.0.0.1:{port}")]);
    Indexer::spawn(&args, port)
}

/// `skyhouse_store_retries_total` by `reason`, from a scrape.
pub fn retries(scrape: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in scrape.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix("skyhouse_store_retries_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let reason = labels
            .split(',')
            .find_map(|l| l.strip_prefix("reason=\""))
            .map(|r| r.trim_end_matches('"').to_owned())
            .unwrap_or_default();
        *out.entry(reason).or_default() += value.trim().parse::<f64>().unwrap_or(0.0);
    }
    out
}

/// A named pipe that a replay reads as its capture file while the test
/// writes it; removed on drop.
#[derive(Debug)]
pub struct Fifo {
    path: PathBuf,
}

impl Fifo {
    pub fn new(hint: &str) -> Fifo {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = work_dir().join(format!(
            "{hint}-{}-{}.fifo",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_file(&path);
        let out = Command::new("mkfifo").arg(&path).output().unwrap();
        assert!(out.status.success(), "mkfifo: {}", crate::text(&out));
        Fifo { path }
    }

    pub fn url(&self) -> String {
        file_url(&self.path)
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Writes the generated stream into a [`Fifo`] from a thread of its own,
/// up to where the test says; [`finish`](Feeder::finish) closes the pipe
/// (end of the capture).
pub struct Feeder {
    targets: Option<mpsc::Sender<u64>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Feeder {
    pub fn start(fifo: &Fifo, synth: Synth) -> Feeder {
        let (targets, rx) = mpsc::channel::<u64>();
        let path = fifo.path.clone();
        let thread = thread::spawn(move || -> io::Result<()> {
            // Opening a pipe for writing waits for its reader (the indexer).
            let mut out = BufWriter::new(fs::OpenOptions::new().write(true).open(&path)?);
            let mut next = 0;
            while let Ok(target) = rx.recv() {
                while next < target {
                    out.write_all(synth.event(next).json.as_bytes())?;
                    out.write_all(b"\n")?;
                    next += 1;
                }
                out.flush()?;
            }
            Ok(())
        });
        Feeder {
            targets: Some(targets),
            thread: Some(thread),
        }
    }

    /// Write events up to (not including) `target` (in the background).
    pub fn feed_to(&self, target: u64) {
        if let Some(t) = &self.targets {
            t.send(target).unwrap();
        }
    }

    /// Close the pipe once everything asked for is written.
    pub fn finish(mut self) {
        self.targets.take();
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        // On a failed test the reader may be gone: never block here.
        self.targets.take();
    }
}

/// `GET key` on a Redis that may be down: `Err` when it does not answer.
pub fn redis_get(port: u16, key: &str) -> io::Result<Option<String>> {
    let mut stream = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("reply {line:?}"));
    match line.trim_end().strip_prefix('$') {
        Some("-1") => Ok(None),
        Some(n) => {
            let n: usize = n.parse().map_err(|_| bad())?;
            let mut value = vec![0; n + 2];
            io::Read::read_exact(&mut reader, &mut value)?;
            value.truncate(n);
            Ok(Some(String::from_utf8_lossy(&value).into_owned()))
        }
        None => Err(bad()),
    }
}

/// What the cursor sampler saw.
#[derive(Debug, Default)]
pub struct Samples {
    /// Cursor reads that got an answer from Redis.
    pub reads: u64,
    /// Reads that failed (Redis down).
    pub failed_reads: u64,
    /// Distinct cursor values seen, in order.
    pub cursors: Vec<i64>,
    /// Events checked behind the cursors, in all.
    pub events_checked: u64,
    /// Every violation: a cursor ahead of ClickHouse, a cursor going back.
    pub violations: Vec<String>,
}

/// Reads the saved cursor every 100 ms and checks each value against
/// ClickHouse right away (see the module documentation).
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Samples>>,
}

impl Sampler {
    pub fn start(redis_port: u16, key: String, db: String, synth: Synth) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            let server = ClickHouse::shared();
            let mut s = Samples::default();
            let mut checked_upto: Option<u64> = None;
            while !stopped.load(Ordering::SeqCst) {
                match redis_get(redis_port, &key) {
                    Err(_) => s.failed_reads += 1,
                    Ok(None) => s.reads += 1,
                    Ok(Some(v)) => {
                        s.reads += 1;
                        let c: i64 = v.parse().unwrap_or_else(|_| panic!("cursor {v:?}"));
                        if let Some(&last) = s.cursors.last() {
                            if c < last {
                                // A restarted (empty) Redis has no cursor until the
                                // next save, but a saved value never goes back.
                                s.violations
                                    .push(format!("the cursor went back from {last} to {c}"));
                            }
                        }
                        if s.cursors.last() != Some(&c) {
                            s.cursors.push(c);
                        }
                        // Every event up to c: those no earlier value covered,
                        // and the last LOOKBACK again.
                        if let Some(last) = Synth::index_at(c) {
                            let first = checked_upto
                                .map_or(0, |u: u64| u + 1)
                                .min(last.saturating_sub(LOOKBACK - 1));
                            checked_upto = Some(checked_upto.map_or(last, |u| u.max(last)));
                            let mut from = first;
                            while from <= last {
                                let to = (from + CHECK_CHUNK - 1).min(last);
                                match synth.check_range(server, &db, from, to) {
                                    Ok(n) => s.events_checked += n as u64,
                                    Err(missing) => s.violations.push(format!(
                                        "saved cursor {c} is ahead of ClickHouse: {} rows of \
                                         events {from}..={to} not stored, e.g.\n{}",
                                        missing.len(),
                                        missing[..missing.len().min(10)].join("\n")
                                    )),
                                }
                                from = to + 1;
                            }
                        }
                    }
                }
                thread::sleep(Duration::from_millis(100));
            }
            s
        });
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling and returns what it saw.
    pub fn finish(mut self) -> Samples {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Waits until the cursor saved under `key` is at least `target`, with the
/// process running; panics after [`DEADLINE`] (with `what()` and the log).
pub fn wait_cursor(
    indexer: &mut Indexer,
    redis_port: u16,
    key: &str,
    target: i64,
    what: impl Fn() -> String,
) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        indexer.assert_running();
        let saved = redis_get(redis_port, key).ok().flatten();
        if saved
            .as_deref()
            .and_then(|v| v.parse::<i64>().ok())
            .is_some_and(|c| c >= target)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: the saved cursor did not reach {target} within {} s (it is {saved:?})\n{}",
            what(),
            DEADLINE.as_secs(),
            indexer.log_tail()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Feeds events `from..to` in steps of `step`, each once the cursor covers
/// the previous one: the cursor moves many times (more values to check).
#[allow(clippy::too_many_arguments)]
pub fn feed_in_steps(
    feeder: &Feeder,
    indexer: &mut Indexer,
    redis_port: u16,
    key: &str,
    from: u64,
    to: u64,
    step: u64,
) {
    let mut fed = from;
    while fed < to {
        fed = (fed + step).min(to);
        feeder.feed_to(fed);
        wait_cursor(indexer, redis_port, key, Synth::time_us(fed - 1), || {
            format!("{fed} events fed")
        });
    }
}

/// The samples must show no violation and real coverage.
#[track_caller]
pub fn assert_samples(samples: &Samples, min_cursors: usize) {
    assert!(
        samples.violations.is_empty(),
        "{} violations:\n{}",
        samples.violations.len(),
        samples.violations.join("\n")
    );
    assert!(
        samples.cursors.len() >= min_cursors && samples.events_checked > 0,
        "too few cursors sampled to mean anything: {samples:?}"
    );
}
