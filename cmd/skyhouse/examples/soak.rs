//! `just soak [MINUTES]`: a long run of `skyhouse indexer` under faults, to
//! see memory, descriptors and threads stay flat and nothing get lost.
//!
//! The indexer reads a generated Jetstream stream (testkit `synth`, 10M
//! events by default) from a WebSocket server in this process, which plays
//! it in a loop (same rows, ever higher positions) and resumes from the
//! `cursor` the indexer asks for. ClickHouse (testkit's, on spare ports) is
//! behind the fault proxy, Redis is a private testkit server. Every 5-15 s a
//! fault fires at random: a ClickHouse fault on the next 1-3 requests
//! (stall, reset, 502, truncated answer, unknown code), Redis stopped for
//! 5-30 s, or the source connection dropped. Every 10 s it prints the
//! indexer's RSS, open descriptors and thread count (the binary exports no
//! tokio task count; `/proc` threads stand in for it), its progress, retries
//! and /health, and checks that the saved cursor is not ahead of ClickHouse.
//!
//! After MINUTES the faults stop, the stream stops at the end of the loop in
//! progress, and once the indexer has saved the last position it is stopped
//! (SIGTERM, must exit 0). One loop of the stream is then loaded without
//! faults into a second database by a second indexer, and the two are
//! compared table by table (see testkit `compare`); `dead_letters` must be
//! empty. Exit status 0 when everything held.
//!
//! ```text
//! soak --skyhouse target/release/skyhouse [--minutes 30] [--events 10000000]
//!      [--dids 100000] [--seed N] [--sample-secs 10]
//! ```
#![allow(clippy::unwrap_used)]
// a test driver: a panic is the failure report
// The handshake callback's error type is tungstenite's (an HTTP response), not ours.
#![allow(clippy::result_large_err)]

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use skyhouse_testkit::compare::Compare;
use skyhouse_testkit::proxy::{Fault, FaultKind, FaultProxy};
use skyhouse_testkit::synth::Synth;
use skyhouse_testkit::{ClickHouse, Redis, TestDatabase};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

/// Short ClickHouse timeouts, so a stalled request ends quickly.
const TIMEOUTS: &[&str] = &[
    "--clickhouse-connect-timeout-secs",
    "2",
    "--clickhouse-send-timeout-secs",
    "5",
    "--clickhouse-receive-timeout-secs",
    "10",
];

/// How long a stalled request is held (the client's timeout ends it first).
const STALL: Duration = Duration::from_secs(600);

/// Events checked behind the saved cursor at each sample.
const LOOKBACK: u64 = 50;

/// The end of the run (the last loop, the clean load) may take this long.
const FINISH_DEADLINE: Duration = Duration::from_secs(3600);

#[derive(Debug)]
struct Args {
    skyhouse: PathBuf,
    minutes: f64,
    events: u64,
    dids: u64,
    seed: u64,
    sample: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        skyhouse: PathBuf::from("target/release/skyhouse"),
        minutes: 30.0,
        events: 10_000_000,
        dids: 100_000,
        seed: 1,
        sample: Duration::from_secs(10),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String, flag: &str| -> Result<f64, String> {
            v.parse::<f64>()
                .ok()
                .filter(|n| *n > 0.0)
                .ok_or_else(|| format!("{flag}: {v:?} is not a positive number"))
        };
        match flag.as_str() {
            "--skyhouse" => args.skyhouse = PathBuf::from(value()?),
            "--minutes" => args.minutes = number(value()?, &flag)?,
            "--events" => args.events = number(value()?, &flag)? as u64,
            "--dids" => args.dids = number(value()?, &flag)? as u64,
            "--seed" => args.seed = number(value()?, &flag)? as u64,
            "--sample-secs" => args.sample = Duration::from_secs_f64(number(value()?, &flag)?),
            other => {
                return Err(format!(
                    "unknown argument {other:?} (see the source's header)"
                ))
            }
        }
    }
    if !args.skyhouse.is_file() {
        return Err(format!(
            "--skyhouse {}: no such binary (cargo build --release -p skyhouse)",
            args.skyhouse.display()
        ));
    }
    Ok(args)
}

/// What the stream server shares with the driver.
#[derive(Debug, Default)]
struct Stream {
    /// Serve global indices below this (u64::MAX: no end).
    limit: AtomicU64,
    /// One past the highest global index sent.
    sent: AtomicU64,
    /// Drop the current connection(s) at the next event.
    drop_now: AtomicBool,
    connections: AtomicU64,
}

/// A Jetstream-like server of `synth`, looping: a connection starts at the
/// event of its `cursor` (inclusive: at-least-once), or at 0 without one.
async fn serve_stream(synth: Synth, stream: Arc<Stream>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let stream = stream.clone();
            tokio::spawn(async move {
                let mut uri = String::new();
                let ws =
                    tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, resp: Response| {
                        uri = req.uri().to_string();
                        Ok(resp)
                    })
                    .await;
                let Ok(ws) = ws else { return };
                stream.connections.fetch_add(1, Ordering::SeqCst);
                let cursor = uri
                    .split_once('?')
                    .and_then(|(_, q)| q.split('&').find_map(|p| p.strip_prefix("cursor=")))
                    .and_then(|c| c.parse::<i64>().ok())
                    .filter(|c| *c > 0);
                let mut g = cursor.and_then(Synth::index_at).unwrap_or(0);
                let (mut sink, mut source) = ws.split();
                // Read (and drop) what the client sends, so pings get pongs.
                let reader = tokio::spawn(async move { while source.next().await.is_some() {} });
                loop {
                    if stream.drop_now.swap(false, Ordering::SeqCst) {
                        break;
                    }
                    if g >= stream.limit.load(Ordering::SeqCst) {
                        if sink.flush().await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    if sink.feed(Message::text(synth.event(g).json)).await.is_err() {
                        break;
                    }
                    g += 1;
                    stream.sent.fetch_max(g, Ordering::SeqCst);
                    if g.is_multiple_of(256) && sink.flush().await.is_err() {
                        break;
                    }
                }
                reader.abort();
            });
        }
    });
    addr
}

/// A `skyhouse indexer` child process, its log in a file.
struct Indexer {
    child: Child,
    metrics: String,
    log: PathBuf,
}

impl Indexer {
    fn start(
        args: &Args,
        name: &str,
        url: &str,
        clickhouse: &str,
        db: &TestDatabase,
        redis: &str,
        faulty: bool,
    ) -> Indexer {
        let port = skyhouse_testkit::spare_port();
        let log =
            std::env::temp_dir().join(format!("skyhouse-soak-{}-{name}.log", std::process::id()));
        let file = fs::File::create(&log).unwrap();
        let mut cmd = Command::new(&args.skyhouse);
        cmd.env_clear()
            .env("RUST_LOG", "info")
            .args(["indexer", "--source", "jetstream", "--url", url])
            .args(["--clickhouse-address", clickhouse, "--database", db.name()])
            .args(["--redis", redis, "--redis-prefix", &format!("soak-{name}:")])
            .args(["--cursor-key", "cursor"])
            .args(["--health-max-lag-secs", "0"])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")]);
        if faulty {
            cmd.args(TIMEOUTS);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", args.skyhouse.display()));
        Indexer {
            child,
            metrics: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "the indexer exited ({status}); log {}:\n{}",
                self.log.display(),
                tail(&self.log)
            );
        }
    }

    /// SIGTERM and wait; true if it exited 0.
    fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        self.child.wait().unwrap().success()
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(path: &PathBuf) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// `GET key`, `None` when Redis does not answer or has no value.
fn redis_get(port: u16, key: &str) -> Option<String> {
    use std::io::{BufRead, BufReader, Read, Write};
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).as_bytes())
        .ok()?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let n: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
    let mut v = vec![0; n + 2];
    r.read_exact(&mut v).ok()?;
    v.truncate(n);
    String::from_utf8(v).ok()
}

/// `(VmRSS in KiB, threads, open descriptors)` of a process from /proc.
fn proc_stats(pid: u32) -> (u64, u64, u64) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    (field("VmRSS:"), field("Threads:"), fds)
}

/// A small deterministic generator (splitmix64) for the fault plan.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// A value from a Prometheus scrape: the sum of every sample of `name`.
fn metric_sum(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[derive(Debug, Default)]
struct FaultCounts {
    clickhouse: u64,
    redis: u64,
    source: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(2);
        }
    };
    let synth = Synth::new(args.events, args.dids);
    println!(
        "soak: {} min, a stream of {} events over {} accounts in a loop, seed {}",
        args.minutes, args.events, args.dids, args.seed
    );
    let ch = ClickHouse::shared();
    let mut redis = Redis::start_private();
    let proxy = FaultProxy::start(ch.http_port());
    let soaked = ch.database("soak");
    migrate(&args, ch, &soaked);
    let stream = Arc::new(Stream::default());
    stream.limit.store(u64::MAX, Ordering::SeqCst);
    let addr = serve_stream(synth, stream.clone()).await;
    let url = format!("ws://{addr}");
    let key = "soak-soaked:cursor";
    let mut indexer = Indexer::start(
        &args,
        "soaked",
        &url,
        &proxy.url(),
        &soaked,
        &redis.url(),
        true,
    );
    println!(
        "soak: ClickHouse {} behind {}, Redis {}, stream {url}, indexer pid {} (log {})",
        ch.version(),
        proxy.url(),
        redis.url(),
        indexer.pid(),
        indexer.log.display()
    );
    println!(
        "{:>7} {:>9} {:>5} {:>7} {:>12} {:>9} {:>8} {:>6} {:>14} {:>6}",
        "t_s",
        "rss_mib",
        "fds",
        "threads",
        "cursor_evt",
        "evt_per_s",
        "retries",
        "health",
        "faults_ch/r/s",
        "loop"
    );

    let mut rng = Rng(args.seed);
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(args.minutes * 60.0);
    let mut next_fault = started + Duration::from_secs(rng.range(5, 15));
    let mut redis_back: Option<Instant> = None;
    let mut next_sample = started + args.sample;
    let mut faults = FaultCounts::default();
    let mut violations: Vec<String> = Vec::new();
    let mut samples: Vec<(u64, u64, u64)> = Vec::new();
    let mut last_cursor: (Instant, u64) = (started, 0);
    let http = reqwest::Client::new();
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
        indexer.assert_running();
        let now = Instant::now();
        if let Some(at) = redis_back {
            if now >= at {
                redis.restart();
                redis_back = None;
            }
        }
        if now >= next_fault && redis_back.is_none() {
            next_fault = now + Duration::from_secs(rng.range(5, 15));
            match rng.range(0, 100) {
                0..70 => {
                    let fault = match rng.range(0, 5) {
                        0 => Fault::Stall(STALL),
                        1 => Fault::Reset,
                        2 => Fault::BadGateway,
                        3 => Fault::Truncate,
                        _ => Fault::UnknownError,
                    };
                    proxy.inject(fault, rng.range(1, 4) as usize);
                    faults.clickhouse += 1;
                }
                70..85 => {
                    redis.stop();
                    redis_back = Some(now + Duration::from_secs(rng.range(5, 31)));
                    faults.redis += 1;
                }
                _ => {
                    stream.drop_now.store(true, Ordering::SeqCst);
                    faults.source += 1;
                }
            }
        }
        if now >= next_sample {
            next_sample += args.sample;
            let cursor = redis_get(redis.port(), key).and_then(|v| v.parse::<i64>().ok());
            if let Some(c) = cursor {
                if let Err(missing) = synth.check_stored(ch, soaked.name(), c, LOOKBACK) {
                    violations.push(format!(
                        "t={}s: saved cursor {c} ahead of ClickHouse:\n{}",
                        now.duration_since(started).as_secs(),
                        missing.join("\n")
                    ));
                }
            }
            let events = cursor.and_then(Synth::index_at).map_or(0, |g| g + 1);
            let rate = if events > last_cursor.1 {
                (events - last_cursor.1) as f64 / now.duration_since(last_cursor.0).as_secs_f64()
            } else {
                0.0
            };
            if cursor.is_some() {
                last_cursor = (now, events);
            }
            let scrape = match http
                .get(format!("{}/metrics", indexer.metrics))
                .send()
                .await
            {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            let health = match http.get(format!("{}/health", indexer.metrics)).send().await {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "-".to_owned(),
            };
            let (rss, threads, fds) = proc_stats(indexer.pid());
            samples.push((rss, fds, threads));
            println!(
                "{:>7} {:>9.1} {:>5} {:>7} {:>12} {:>9.0} {:>8} {:>6} {:>14} {:>6}",
                now.duration_since(started).as_secs(),
                rss as f64 / 1024.0,
                fds,
                threads,
                cursor.map_or("-".to_owned(), |_| events.to_string()),
                rate,
                metric_sum(&scrape, "skyhouse_store_retries_total") as u64,
                health,
                format!("{}/{}/{}", faults.clickhouse, faults.redis, faults.source),
                events / args.events,
            );
        }
    }

    // Faults stop; the stream stops at the end of the loop in progress.
    proxy.clear();
    if redis_back.take().is_some() {
        redis.restart();
    }
    let sent = stream.sent.load(Ordering::SeqCst);
    let limit = sent.div_ceil(args.events).max(1) * args.events;
    stream.limit.store(limit, Ordering::SeqCst);
    println!(
        "soak: faults stop ({}); the stream ends at event {limit} ({} loops)",
        proxy.stats(),
        limit / args.events
    );
    let last = Synth::time_us(limit - 1);
    wait_for(
        &mut indexer,
        "the soaked indexer at the end of the stream",
        || {
            redis_get(redis.port(), key)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|c| c >= last)
        },
    )
    .await;
    let (rss, threads, fds) = proc_stats(indexer.pid());
    samples.push((rss, fds, threads));
    let clean_exit = indexer.terminate();

    // The reference: one loop, no faults, straight into ClickHouse.
    println!("soak: loading one loop without faults for the comparison");
    let clean = ch.database("soak_clean");
    migrate(&args, ch, &clean);
    let once = Arc::new(Stream::default());
    once.limit.store(args.events, Ordering::SeqCst);
    let once_addr = serve_stream(synth, once.clone()).await;
    let mut reference = Indexer::start(
        &args,
        "clean",
        &format!("ws://{once_addr}"),
        &ch.http_url(),
        &clean,
        &redis.url(),
        false,
    );
    let clean_key = "soak-clean:cursor";
    let clean_last = Synth::time_us(args.events - 1);
    wait_for(&mut reference, "the clean load", || {
        redis_get(redis.port(), clean_key)
            .and_then(|v| v.parse::<i64>().ok())
            .is_some_and(|c| c >= clean_last)
    })
    .await;
    reference.terminate();

    // An account's or identity's version is the time of its event, and each
    // loop plays the same events at later times: the soaked database holds
    // the last loop's, the clean load the first's. Their contents compare.
    let result = Compare::new(ch)
        .ignore_column("accounts", "version")
        .ignore_column("identities", "version")
        .run(clean.name(), soaked.name());
    let dead = soaked.rows("dead_letters");
    let stats = proxy.stats();
    println!(
        "soak: {} min, {} loops of {} events",
        args.minutes,
        limit / args.events,
        args.events
    );
    println!(
        "soak: faults: {} ClickHouse ({}), {} Redis outages, {} source drops; {} source connections",
        faults.clickhouse,
        FaultKind::ALL
            .iter()
            .map(|k| format!("{k} {}", stats.injected(*k)))
            .collect::<Vec<_>>()
            .join(", "),
        faults.redis,
        faults.source,
        stream.connections.load(Ordering::SeqCst)
    );
    let span = |f: fn(&(u64, u64, u64)) -> u64| {
        let v: Vec<u64> = samples.iter().map(f).collect();
        (
            v.first().copied().unwrap_or(0),
            v.iter().copied().min().unwrap_or(0),
            v.iter().copied().max().unwrap_or(0),
            v.last().copied().unwrap_or(0),
        )
    };
    let (r0, rmin, rmax, rlast) = span(|s| s.0);
    let (f0, fmin, fmax, flast) = span(|s| s.1);
    let (t0, tmin, tmax, tlast) = span(|s| s.2);
    println!(
        "soak: RSS MiB first {:.1} min {:.1} max {:.1} last {:.1}; fds first {f0} min {fmin} max {fmax} last {flast}; \
         threads first {t0} min {tmin} max {tmax} last {tlast}",
        r0 as f64 / 1024.0,
        rmin as f64 / 1024.0,
        rmax as f64 / 1024.0,
        rlast as f64 / 1024.0
    );
    println!("soak: comparison with a clean load: {result}");
    println!(
        "soak: dead_letters {dead}; cursor checks failed {}",
        violations.len()
    );
    for v in &violations {
        println!("{v}");
    }
    let ok = result.is_equal() && dead == 0 && violations.is_empty() && clean_exit;
    if !clean_exit {
        println!(
            "soak: the soaked indexer did not exit 0 on SIGTERM:\n{}",
            tail(&indexer.log)
        );
    }
    println!("soak: {}", if ok { "PASSED" } else { "FAILED" });
    if ok {
        let _ = fs::remove_file(&indexer.log);
        let _ = fs::remove_file(&reference.log);
    }
    std::process::exit(if ok { 0 } else { 1 });
}

/// `skyhouse migrate up` into `db`.
fn migrate(args: &Args, ch: &ClickHouse, db: &TestDatabase) {
    let out = Command::new(&args.skyhouse)
        .env_clear()
        .args([
            "migrate",
            "up",
            "--clickhouse-address",
            &ch.http_url(),
            "--database",
            db.name(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "migrate up: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `done` every 200 ms with the indexer running, up to [`FINISH_DEADLINE`].
async fn wait_for(indexer: &mut Indexer, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + FINISH_DEADLINE;
    while !done() {
        indexer.assert_running();
        assert!(
            Instant::now() < deadline,
            "{what}: not reached in {FINISH_DEADLINE:?}\n{}",
            tail(&indexer.log)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
