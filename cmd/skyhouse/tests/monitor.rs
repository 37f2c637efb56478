//! `skyhouse monitor` run as an operator would: flags checked before any
//! I/O, `--once` against the reference PDS, a refused host and a real
//! ClickHouse 18.16, and the long-running service's `/v1/hosts`, `/health`
//! and SIGTERM.
#![allow(clippy::unwrap_used)] // a panic is the failure report

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use skyhouse_testkit::{Network, TestDatabase};

/// A guard against a hang, never a performance expectation.
const DEADLINE: Duration = Duration::from_secs(120);

fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_skyhouse"));
    c.env_clear().env("RUST_LOG", "info").args(args);
    c
}

fn skyhouse(args: &[&str]) -> Output {
    command(args).output().expect("run skyhouse")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A port nothing listens on (bound a moment ago, released).
fn closed_port() -> u16 {
    skyhouse_testkit::spare_port()
}

/// `GET path` over HTTP/1.0 (the server closes after the body): status and body.
fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(DEADLINE)).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// A fresh database with every migration applied by `skyhouse migrate up`.
fn migrated(hint: &str) -> (TestDatabase, String) {
    let server = skyhouse_testkit::ClickHouse::shared();
    let db = server.database(hint);
    let url = server.http_url();
    let up = skyhouse(&[
        "migrate",
        "up",
        "--clickhouse-address",
        &url,
        "--database",
        db.name(),
    ]);
    assert!(up.status.success(), "{}", stderr(&up));
    (db, url)
}

#[test]
fn bad_flags_are_one_line_errors_naming_the_flag() {
    // ClickHouse on a closed port: a check that did I/O would fail differently.
    let ch = format!("http://127.0.0.1:{}", closed_port());
    let cases: &[(&[&str], &str)] = &[
        (&[], "give --host, --relay or --hosts-file"),
        (&["--host", "ftp://pds.test"], "--host: "),
        (&["--relay", "https://r.test/path"], "--relay: "),
        (
            &["--host", "pds.test", "--interval-secs", "0"],
            "--interval-secs: ",
        ),
        (
            &["--host", "pds.test", "--timeout-ms", "0"],
            "--timeout-ms: ",
        ),
        (
            &["--host", "pds.test", "--concurrency", "0"],
            "--concurrency: ",
        ),
        (&["--host", "pds.test", "--max-hosts", "0"], "--max-hosts: "),
        (
            &["--host", "pds.test", "--discover-interval-secs", "1"],
            "--discover-interval-secs: ",
        ),
        (&["--hosts-file", "/nonexistent/hosts.txt"], "--hosts-file "),
        (
            &["--host", "pds.test", "--clickhouse-address", "nope"],
            "ClickHouse address",
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["monitor", "--once"];
        all.extend_from_slice(args);
        let out = command(&all)
            .env("CLICKHOUSE_ADDRESS", &ch)
            .output()
            .unwrap();
        let err = stderr(&out);
        // The command line's fault: exit status 2.
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.starts_with("skyhouse: ") && err.contains(expected),
            "{args:?}: expected {expected:?} in {err:?}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
    // A seed-file error names the line.
    let dir = std::env::temp_dir().join(format!("skyhouse-monitor-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let seed = dir.join("hosts.txt");
    std::fs::write(&seed, "pds.test\nlabeler https://l.test\n").unwrap();
    let out = skyhouse(&[
        "monitor",
        "--once",
        "--clickhouse-address",
        &ch,
        "--hosts-file",
        seed.to_str().unwrap(),
    ]);
    assert!(stderr(&out).contains("line 2"), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn once_checks_stores_and_prints_every_host() {
    let pds = Network::shared().pds_url().to_owned();
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let (db, ch) = migrated("cli_monitor_once");
    let dir = std::env::temp_dir().join(format!("skyhouse-monitor-once-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let seed = dir.join("hosts.txt");
    std::fs::write(&seed, format!("# seed\npds {pds}\n")).unwrap();
    let out = skyhouse(&[
        "monitor",
        "--once",
        "--hosts-file",
        seed.to_str().unwrap(),
        "--host",
        &dead,
        "--clickhouse-address",
        &ch,
        "--database",
        db.name(),
    ]);
    std::fs::remove_dir_all(&dir).unwrap();
    // One host is down: exit 1, and the JSON says which and why.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    let hosts = body["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 2, "{body:#}");
    let by_host = |h: &str| hosts.iter().find(|x| x["host"] == h).unwrap().clone();
    assert_eq!(by_host(&pds)["state"], "up");
    assert_eq!(by_host(&pds)["last_check"]["describe_status"], 200);
    assert_eq!(by_host(&dead)["state"], "down");
    assert_eq!(by_host(&dead)["last_check"]["result"], "connect");
    let mut expected = [format!("{pds}\t1\tok"), format!("{dead}\t0\tconnect")];
    expected.sort();
    assert_eq!(
        db.query("SELECT host, up, result FROM host_checks FINAL ORDER BY host"),
        expected.join("\n") + "\n"
    );
}

#[test]
fn the_service_serves_hosts_and_health_and_stops_on_sigterm() {
    let pds = Network::shared().pds_url().to_owned();
    let (db, ch) = migrated("cli_monitor_service");
    let addr = format!("127.0.0.1:{}", closed_port());
    let metrics_addr = format!("127.0.0.1:{}", closed_port());
    let mut child = command(&[
        "monitor",
        "--host",
        &pds,
        "--listen",
        &addr,
        "--metrics-addr",
        &metrics_addr,
        "--clickhouse-address",
        &ch,
        "--database",
        db.name(),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // /v1/hosts on --listen, /metrics and /health on --metrics-addr.
    let get = |path: &str| {
        let on = if path == "/v1/hosts" {
            &addr
        } else {
            &metrics_addr
        };
        http_get(on, path)
    };
    let started = Instant::now();
    let first_scrape = loop {
        if let Some((200, body)) = get("/metrics") {
            break body;
        }
        assert!(started.elapsed() < DEADLINE, "no /metrics");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Ready once the first round is stored.
    let started = Instant::now();
    while get("/health").is_none_or(|(s, _)| s != 200) {
        assert!(
            started.elapsed() < DEADLINE,
            "never ready: {:?}",
            get("/health")
        );
        assert!(child.try_wait().unwrap().is_none(), "monitor exited early");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(http_get(&addr, "/metrics").map(|(s, _)| s), Some(404));
    assert_eq!(
        http_get(&metrics_addr, "/v1/hosts").map(|(s, _)| s),
        Some(404)
    );
    let (_, hosts) = get("/v1/hosts").unwrap();
    let hosts: Value = serde_json::from_str(&hosts).unwrap();
    assert_eq!(hosts["hosts"][0]["host"], pds.as_str());
    assert_eq!(hosts["hosts"][0]["state"], "up");
    let (_, metrics) = get("/metrics").unwrap();
    assert!(
        metrics.contains("skyhouse_monitor_hosts{kind=\"pds\",state=\"up\"} 1"),
        "{metrics}"
    );
    // What the round counted was exported from the first scrape on (the dashboard is
    // checked against a fresh monitor's scrape in tests/ops).
    let parse = skyhouse_testkit::dashboards::parse_scrape;
    let new = skyhouse_testkit::dashboards::new_series(
        &parse(&first_scrape),
        &parse(&metrics),
        "skyhouse_monitor_",
    );
    assert!(new.is_empty(), "not exported from the start: {new:?}");
    assert_eq!(
        db.query("SELECT count() FROM host_checks FINAL"),
        "1\n",
        "the first round is stored"
    );

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < DEADLINE, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{status}: {err}");
}
