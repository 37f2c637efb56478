//! Run the real services, scrape them, and check the dashboards against the scrape.
//!
//! Each dashboard is checked against its service's FIRST scrape, fresh and idle (no
//! event yet): every series a panel reads is exported from startup, counters at 0, so no
//! panel says "No data" and a `rate()` alert sees the first increment. The indexer is
//! also run through a scenario whose metrics are checked by value.

use skyhouse_testkit::spare_port;
use std::collections::BTreeSet;
use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use skyhouse_testkit::dashboards::{self, parse_scrape, sum, value};
use skyhouse_testkit::ws::{serve, Script};
use skyhouse_testkit::{ClickHouse, Redis};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::{env_values, root, text};

/// A plain HTTP/1.0 GET: (status, body).
async fn get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await?;
    let response = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// The capture's frames (`[u32 BE length][frame]` repeated).
fn corpus_frames() -> Vec<Vec<u8>> {
    let path = root().join("pkg/sources/testdata/corpus.frames");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let frames = skyhouse_sources::split_frame_file(&bytes)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    frames.into_iter().map(<[u8]>::to_vec).collect()
}

/// Kills the indexer if the test fails before it stops it.
struct Running {
    child: Child,
    log: std::path::PathBuf,
}

impl Running {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// The frame left out to make a `seq` gap (a `#commit` in the middle of the capture).
const SKIPPED_FRAME: usize = 100;

/// The indexer through a scenario (a seq gap, a bad frame, a Redis refusal, a closed
/// connection): its metrics count what happened, and every series it exports after it was
/// already in its first scrape (the closed label sets exported at 0 cover what the code
/// emits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_indexer_counts_what_it_did_in_series_exported_from_the_start() {
    let ch = ClickHouse::shared();
    let db = ch.database("ops_metrics");
    let redis = Redis::shared();
    let prefix = redis.key_prefix("ops");

    // The schema, configured like the compose `migrate` service (env/clickhouse.env).
    let migrate = Command::new(env!("CARGO_BIN_EXE_skyhouse"))
        .env_clear()
        .envs(env_values(&["clickhouse.env"]))
        .args([
            "migrate",
            "up",
            "--clickhouse-address",
            &ch.http_url(),
            "--database",
            db.name(),
        ])
        .output()
        .expect("run skyhouse migrate");
    assert!(migrate.status.success(), "{}", text(&migrate));

    // The resync stream's key holds a string: every XADD fails (WRONGTYPE) until the test
    // deletes it, which exercises skyhouse_indexer_redis_errors_total{op="resync"}.
    let resync_key = format!("{prefix}resync");
    redis.command(&["SET", resync_key.as_str(), "not a stream"]);

    // Connection 1: the capture with one frame left out (a seq gap → resync), one
    // undecodable frame (→ dead letter), then a close (→ reconnect, reason `closed`).
    // Connection 2: held open, silent, so the process stays up to be scraped.
    let frames = corpus_frames();
    assert_eq!(frames.len(), 150);
    let mut script = Script::new();
    for (i, frame) in frames.iter().enumerate() {
        if i != SKIPPED_FRAME {
            script = script.binary(frame.clone());
        }
    }
    let server = serve(script.binary(b"\xa2not a firehose frame".to_vec()).close()).await;

    let metrics_addr = format!("127.0.0.1:{}", spare_port());
    let log = std::env::temp_dir().join(format!("skyhouse-ops-indexer-{}.log", std::process::id()));
    // Configured from env/*.env exactly as docker/compose.yaml does (so the files must
    // parse); flags point it at the test's servers.
    let child = Command::new(env!("CARGO_BIN_EXE_skyhouse"))
        .env_clear()
        .envs(env_values(&["clickhouse.env", "redis.env", "indexer.env"]))
        .args([
            "indexer",
            "--source",
            "firehose",
            "--url",
            &server.url(),
            "--cursor",
            "0",
            "--clickhouse-address",
            &ch.http_url(),
            "--database",
            db.name(),
            "--redis",
            &redis.url(),
            "--redis-prefix",
            &prefix,
            "--metrics-addr",
            &metrics_addr,
            "--batch-age-ms",
            "200",
        ])
        .stdout(Stdio::null())
        .stderr(File::create(&log).expect("log file"))
        .spawn()
        .expect("start skyhouse indexer");
    let mut running = Running { child, log };

    // Scrape until the scenario is over and the cursor is saved.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut first: Option<Vec<skyhouse_testkit::dashboards::Sample>> = None;
    let last_seq = {
        let samples;
        loop {
            if let Ok(Some(status)) = running.child.try_wait() {
                panic!("indexer exited early ({status}):\n{}", running.log());
            }
            if let Ok((200, body)) = get(&metrics_addr, "/metrics").await {
                let s = parse_scrape(&body);
                let saved = value(&s, "skyhouse_indexer_cursor_saved");
                let acked = value(&s, "skyhouse_indexer_cursor");
                let connected = value(&s, "skyhouse_source_connected");
                let over = sum(&s, "skyhouse_indexer_events_total", None) == 150.0
                    && sum(
                        &s,
                        "skyhouse_indexer_redis_errors_total",
                        Some(("op", "resync")),
                    ) >= 1.0
                    && sum(
                        &s,
                        "skyhouse_source_reconnects_total",
                        Some(("reason", "closed")),
                    ) >= 1.0;
                if first.is_none() {
                    first = Some(s.clone());
                }
                if over
                    && saved.is_some_and(|c| c > 0.0)
                    && saved == acked
                    && connected == Some(1.0)
                    && server.connections() >= 2
                {
                    samples = s;
                    break;
                }
                if Instant::now() > deadline {
                    panic!(
                        "after 60 s:\n--- /metrics\n{body}\n--- indexer log\n{}",
                        running.log()
                    );
                }
            } else if Instant::now() > deadline {
                panic!("no /metrics on {metrics_addr}:\n{}", running.log());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Every series the scenario made was exported from the first scrape on.
        let first = first.expect("a first scrape");
        for prefix in ["skyhouse_indexer_", "skyhouse_source_", "skyhouse_store_"] {
            let new = dashboards::new_series(&first, &samples, prefix);
            assert!(new.is_empty(), "not in the first scrape: {new:?}");
        }
        // What the scenario did, as the metrics say it.
        let s = &samples;
        let events = |kind| sum(s, "skyhouse_indexer_events_total", Some(("kind", kind)));
        assert_eq!(events("commit"), 147.0, "148 commits less the skipped one");
        assert_eq!(events("identity") + events("account"), 2.0);
        assert_eq!(events("invalid"), 1.0, "the undecodable frame");
        assert_eq!(sum(s, "skyhouse_indexer_dead_letters_total", None), 1.0);
        assert!(sum(s, "skyhouse_indexer_filtered_total", None) >= 1.0);
        assert!(sum(s, "skyhouse_indexer_ops_total", None) > 100.0);
        assert_eq!(
            sum(s, "skyhouse_indexer_resyncs_total", Some(("reason", "gap"))),
            1.0
        );
        assert!(
            sum(
                s,
                "skyhouse_indexer_redis_errors_total",
                Some(("op", "resync"))
            ) >= 1.0
        );
        assert!(
            sum(
                s,
                "skyhouse_source_reconnects_total",
                Some(("reason", "closed"))
            ) >= 1.0
        );
        assert_eq!(
            sum(s, "skyhouse_source_messages_total", None),
            150.0,
            "149 capture frames + 1 bad one"
        );
        assert!(sum(s, "skyhouse_indexer_rows_total", None) > 100.0);
        let quantiles: BTreeSet<&str> = s
            .iter()
            .filter(|x| x.name == "skyhouse_indexer_ack_latency_seconds")
            .filter_map(|x| x.labels.get("quantile").map(String::as_str))
            .collect();
        assert_eq!(quantiles, BTreeSet::from(["0.5", "0.9", "0.99", "1"]));
        value(s, "skyhouse_indexer_cursor").expect("cursor")
    };
    assert!(last_seq > 31_527_015_000.0, "cursor {last_seq}");

    // /health: ready, with its checks. The capture's events are old (lag far over the
    // default 300 s) but the source has sent all it had: once it has been quiet for a
    // few seconds the lag check passes (an idle source is not behind).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = get(&metrics_addr, "/health").await.expect("/health");
        let health: Value = serde_json::from_str(&body).expect("/health JSON");
        let checks = [
            "clickhouse",
            "clickhouse_writes",
            "redis",
            "indexer",
            "source",
            "lag",
        ];
        if status == 200 {
            assert_eq!(health["ready"], true, "{body}");
            for check in checks {
                assert_eq!(health["checks"][check], true, "{body}");
            }
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            Instant::now() < deadline,
            "/health not 200 after 60 s: {body}\n{}",
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The troubleshooting steps of the README work: the resync waits in memory while
    // Redis refuses it and lands once Redis accepts (XLEN <prefix>resync), and the dead
    // letter is in ClickHouse.
    redis.command(&["DEL", resync_key.as_str()]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let xlen = redis.command(&["XLEN", resync_key.as_str()]);
        if matches!(xlen, skyhouse_testkit::Reply::Integer(1)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "resync never queued: {xlen:?}\n{}",
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        db.query("SELECT count() FROM dead_letters WHERE source = 'firehose'"),
        "1\n"
    );

    // SIGTERM drains and exits 0 with the socket still open.
    let pid = running.child.id().to_string();
    // The shell's builtin kill: no procps needed, no unsafe libc call.
    let kill = Command::new("sh")
        .args(["-c", "kill -TERM \"$0\"", &pid])
        .status()
        .expect("sh -c kill");
    assert!(kill.success());
    let status = wait_exit(&mut running.child, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no exit 30 s after SIGTERM:\n{}", running.log()));
    assert!(status.success(), "{status}:\n{}", running.log());
    let _ = std::fs::remove_file(&running.log);
    drop(server);
}

/// The servers a fresh service talks to: a migrated database and a Redis key prefix.
struct Servers {
    ch: &'static ClickHouse,
    db: skyhouse_testkit::TestDatabase,
    redis: &'static Redis,
    prefix: String,
}

impl Servers {
    fn new(name: &str) -> Servers {
        let ch = ClickHouse::shared();
        let db = ch.database(name);
        let migrate = Command::new(env!("CARGO_BIN_EXE_skyhouse"))
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
            .expect("run skyhouse migrate");
        assert!(migrate.status.success(), "{}", text(&migrate));
        let redis = Redis::shared();
        let prefix = redis.key_prefix(name);
        Servers {
            ch,
            db,
            redis,
            prefix,
        }
    }

    /// The ClickHouse and Redis flags.
    fn flags(&self, redis: bool) -> Vec<String> {
        let mut out = vec![
            "--clickhouse-address".to_owned(),
            self.ch.http_url(),
            "--database".to_owned(),
            self.db.name().to_owned(),
        ];
        if redis {
            out.extend([
                "--redis".to_owned(),
                self.redis.url(),
                "--redis-prefix".to_owned(),
                self.prefix.clone(),
            ]);
        }
        out
    }
}

/// Start `skyhouse args` configured from `env_files` as docker/compose.yaml does, and
/// return it with the first `/metrics` it answers at `metrics_addr` (parsed), taken as
/// soon as it answers.
async fn first_scrape(
    env_files: &[&str],
    args: &[String],
    metrics_addr: &str,
) -> (Running, Vec<skyhouse_testkit::dashboards::Sample>) {
    let log = std::env::temp_dir().join(format!(
        "skyhouse-ops-fresh-{}-{}.log",
        args[0],
        std::process::id()
    ));
    let child = Command::new(env!("CARGO_BIN_EXE_skyhouse"))
        .env_clear()
        .envs(env_values(env_files))
        .args(args)
        .stdout(Stdio::null())
        .stderr(File::create(&log).expect("log file"))
        .spawn()
        .expect("start skyhouse");
    let mut running = Running { child, log };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = running.child.try_wait() {
            panic!("{args:?} exited early ({status}):\n{}", running.log());
        }
        if let Ok((200, body)) = get(metrics_addr, "/metrics").await {
            return (running, parse_scrape(&body));
        }
        assert!(
            Instant::now() < deadline,
            "no /metrics on {metrics_addr} after 60 s:\n{}",
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The dashboard's problems against a scrape, with the scrape's counters of `prefix` that
/// are not 0 (a fresh, idle service has counted nothing).
fn fresh_and_complete(
    dashboard: &str,
    samples: &[skyhouse_testkit::dashboards::Sample],
    prefix: &str,
) {
    let counted: Vec<String> = samples
        .iter()
        .filter(|s| s.name.starts_with(prefix) && s.name.ends_with("_total") && s.value != 0.0)
        .map(|s| format!("{} {:?} = {}", s.name, s.labels, s.value))
        .collect();
    assert!(counted.is_empty(), "not idle: {counted:?}");
    let problems = dashboards::check_samples(dashboard, samples);
    assert!(
        problems.is_empty(),
        "the first scrape of a fresh, idle service lacks what {dashboard} reads:\n{}",
        problems.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexer_dashboard_reads_only_what_a_fresh_idle_indexer_exports() {
    let servers = Servers::new("ops_fresh_indexer");
    // A source that accepts and says nothing: no event before the scrape.
    let source = serve(Script::new()).await;
    let metrics_addr = format!("127.0.0.1:{}", spare_port());
    let mut args: Vec<String> = [
        "indexer",
        "--source",
        "firehose",
        "--url",
        &source.url(),
        "--metrics-addr",
        &metrics_addr,
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(servers.flags(true));
    let (_running, samples) = first_scrape(
        &["clickhouse.env", "redis.env", "indexer.env"],
        &args,
        &metrics_addr,
    )
    .await;
    fresh_and_complete("indexer.json", &samples, "skyhouse_");
    drop(source);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_dashboard_reads_only_what_a_fresh_idle_worker_exports() {
    let servers = Servers::new("ops_fresh_backfill");
    let metrics_addr = format!("127.0.0.1:{}", spare_port());
    // An empty queue, and no --drain: the worker waits for work.
    let mut args: Vec<String> = [
        "backfill",
        "work",
        "--progress",
        "never",
        "--metrics-addr",
        &metrics_addr,
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(servers.flags(true));
    let (_running, samples) = first_scrape(
        &["clickhouse.env", "redis.env", "backfill.env"],
        &args,
        &metrics_addr,
    )
    .await;
    fresh_and_complete("backfill.json", &samples, "skyhouse_");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_dashboard_reads_only_what_a_fresh_idle_search_service_exports() {
    let servers = Servers::new("ops_fresh_search");
    let metrics_addr = format!("127.0.0.1:{}", spare_port());
    let listen = format!("127.0.0.1:{}", spare_port());
    let mut args: Vec<String> = [
        "search",
        "--listen",
        &listen,
        "--metrics-addr",
        &metrics_addr,
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(servers.flags(true));
    let (_running, samples) = first_scrape(
        &["clickhouse.env", "redis.env", "search.env"],
        &args,
        &metrics_addr,
    )
    .await;
    fresh_and_complete("api.json", &samples, "skyhouse_api_");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedgen_dashboard_reads_only_what_a_fresh_idle_feed_generator_exports() {
    let servers = Servers::new("ops_fresh_feedgen");
    let metrics_addr = format!("127.0.0.1:{}", spare_port());
    let port = spare_port();
    let mut args: Vec<String> = [
        "feedgen",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--public-url",
        &format!("http://localhost:{port}"),
        "--metrics-addr",
        &metrics_addr,
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(servers.flags(true));
    let (_running, samples) = first_scrape(
        &["clickhouse.env", "redis.env", "feedgen.env"],
        &args,
        &metrics_addr,
    )
    .await;
    // The count refresh runs at start and may have finished; nothing else counts.
    fresh_and_complete("feedgen.json", &samples, "skyhouse_feedgen_");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_dashboard_reads_only_what_a_fresh_idle_monitor_exports() {
    let servers = Servers::new("ops_fresh_monitor");
    // A host that accepts connections (the kernel does, into the backlog) and never
    // answers: no check finishes before --timeout-ms, so the scrape sees no event.
    let host = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let host_url = format!("http://{}", host.local_addr().expect("addr"));
    let metrics_addr = format!("127.0.0.1:{}", spare_port());
    let mut args: Vec<String> = [
        "monitor",
        "--host",
        &host_url,
        "--timeout-ms",
        "60000",
        "--listen",
        &format!("127.0.0.1:{}", spare_port()),
        "--metrics-addr",
        &metrics_addr,
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(servers.flags(false));
    let (_running, samples) =
        first_scrape(&["clickhouse.env", "monitor.env"], &args, &metrics_addr).await;
    fresh_and_complete("monitor.json", &samples, "skyhouse_monitor_");
    drop(host);
}

#[test]
fn every_dashboard_is_checked_against_its_service() {
    let mut files: Vec<String> = std::fs::read_dir(dashboards::dir())
        .expect("dashboards/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    files.sort();
    let mut listed: Vec<String> = dashboards::CHECKED_BY
        .iter()
        .map(|(f, _)| (*f).to_owned())
        .collect();
    listed.sort();
    assert_eq!(
        files, listed,
        "dashboards/ vs testkit dashboards::CHECKED_BY"
    );
    for (file, test) in dashboards::CHECKED_BY {
        let src = std::fs::read_to_string(root().join(test)).expect("checking test");
        assert!(
            src.contains(&format!("\"{file}\"")),
            "{test} does not check {file}"
        );
    }
}
