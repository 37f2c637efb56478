//! The monitor as a service: rounds, the HTTP endpoint, relay discovery.

use std::time::Duration;

use axum::extract::RawQuery;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use serde_json::Value;
use skyhouse_monitor::{CancellationToken, Host, HostKind, Monitor, MonitorConfig};
use skyhouse_telemetry::Health;
use skyhouse_testkit::Network;

use crate::{fresh, serve};

fn config() -> MonitorConfig {
    MonitorConfig {
        interval: Duration::from_secs(60),
        timeout: Duration::from_secs(30),
        ..MonitorConfig::default()
    }
}

#[tokio::test]
async fn a_round_is_stored_and_served() {
    let (db, ch) = fresh("monitor_round_served").await;
    let pds = Network::shared().pds_url().to_owned();
    let failing = serve(Router::new().fallback(|| async { StatusCode::BAD_GATEWAY })).await;
    let failing = format!("http://{failing}");
    let health = Health::default();
    let monitor = Monitor::new(config(), Some(ch), health.clone()).unwrap();
    let hosts = [&pds, &failing].map(|u| Host::parse(u, HostKind::Pds).unwrap());
    assert_eq!(monitor.add_hosts(hosts.clone()), 2);
    assert_eq!(
        monitor.add_hosts(hosts),
        0,
        "known hosts are not added twice"
    );
    assert!(!health.ready(), "not ready before the first round");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let server = tokio::spawn({
        let monitor = monitor.clone();
        let stop = stop.clone();
        async move { monitor.serve(listener, stop).await }
    });
    let unchecked: Value = reqwest::get(format!("{base}/v1/hosts"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(unchecked["hosts"][0]["state"], "unchecked");
    assert_eq!(
        reqwest::get(format!("{base}/health"))
            .await
            .unwrap()
            .status(),
        503
    );

    let snaps = monitor.round().await;
    let results: Vec<(&str, &str)> = snaps
        .iter()
        .map(|s| (s.host.as_str(), s.result.as_str()))
        .collect();
    let mut expected = vec![(pds.as_str(), "ok"), (failing.as_str(), "http_status")];
    expected.sort();
    assert_eq!(results, expected);

    // Stored: one row per host, the same state.
    assert_eq!(
        db.query("SELECT host, up, result FROM host_checks FINAL ORDER BY host"),
        expected
            .iter()
            .map(|(h, r)| format!("{h}\t{}\t{r}\n", u8::from(*r == "ok")))
            .collect::<String>()
    );

    // Served.
    let body: Value = reqwest::get(format!("{base}/v1/hosts"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hosts = body["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 2);
    for h in hosts {
        let up = h["host"] == pds.as_str();
        assert_eq!(h["state"], if up { "up" } else { "down" }, "{h}");
        assert_eq!(h["consecutive_failures"], if up { 0 } else { 1 }, "{h}");
        assert_eq!(h["last_check"]["up"], up, "{h}");
        assert_eq!(h["last_up_at"].is_null(), !up, "{h}");
        if up {
            assert!(h["last_check"]["describe_did"]
                .as_str()
                .unwrap()
                .starts_with("did:"));
        } else {
            assert_eq!(h["last_check"]["result"], "http_status");
            assert_eq!(h["last_check"]["health_status"], 502);
        }
    }
    // Filtered.
    let down: Value = reqwest::get(format!("{base}/v1/hosts?state=down&kind=pds"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(down["hosts"].as_array().unwrap().len(), 1, "{down}");
    assert_eq!(down["hosts"][0]["host"], failing.as_str());
    let relays: Value = reqwest::get(format!("{base}/v1/hosts?kind=relay"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(relays["hosts"], serde_json::json!([]));
    for bad in ["state=sideways", "kind=labeler", "host=x"] {
        let r = reqwest::get(format!("{base}/v1/hosts?{bad}"))
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"], "InvalidRequest", "{bad}: {e}");
    }
    let r = reqwest::get(format!("{base}/health")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"ready":true,"checks":{"checked":true,"clickhouse":true}}"#
    );
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "skyhouse_monitor_checks_total{result=\"ok\"}",
        "skyhouse_monitor_checks_total{result=\"http_status\"}",
        "skyhouse_monitor_checks_total{result=\"tls\"}",
        "skyhouse_monitor_hosts{",
        "skyhouse_monitor_rtt_seconds",
        "skyhouse_monitor_rounds_total",
        "skyhouse_monitor_round_seconds",
    ] {
        assert!(metrics.contains(name), "{name} not in\n{metrics}");
    }
    stop.cancel();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_stopped_monitor_writes_nothing_more_and_a_down_clickhouse_is_not_ready() {
    // ClickHouse on a port nothing listens on: checks go on, /health says why.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let ch = skyhouse_monitor::ClickHouse::new(skyhouse_store::ClickHouseConfig::local(
        &dead, "skyhouse",
    ))
    .unwrap();
    let health = Health::default();
    let monitor = Monitor::new(config(), Some(ch), health.clone()).unwrap();
    let ok = serve(Router::new().fallback(|| async { r#"{"did":"did:web:ok.test"}"# })).await;
    monitor.add_hosts([Host::parse(&format!("http://{ok}"), HostKind::Pds).unwrap()]);
    let snaps = monitor.round().await;
    assert!(snaps[0].up, "{:?}", snaps[0]);
    assert!(!health.ready());

    // run() returns once cancelled.
    let stop = CancellationToken::new();
    stop.cancel();
    monitor.run(stop).await;
}

#[tokio::test]
async fn relays_list_their_hosts_page_by_page() {
    // Two pages of two hosts (one entry not a host name), then an empty page.
    let relay = serve(Router::new().route(
        "/xrpc/com.atproto.sync.listHosts",
        get(|RawQuery(q): RawQuery| async move {
            let q = q.unwrap_or_default();
            assert!(q.contains("limit=1000"), "{q}");
            if q.contains("cursor=2") {
                r#"{"hosts":[]}"#
            } else if q.contains("cursor=1") {
                r#"{"cursor":"2","hosts":[{"hostname":"pds-c.invalid"},{"hostname":"https://x/y"}]}"#
            } else {
                r#"{"cursor":"1","hosts":[{"hostname":"pds-a.invalid","seq":1},{"hostname":"pds-b.invalid","status":"active"}]}"#
            }
        }),
    ))
    .await;
    let relay = Host::parse(&format!("http://{relay}"), HostKind::Relay).unwrap();
    let monitor = Monitor::new(config(), None, Health::default()).unwrap();
    monitor.add_relay(relay.clone());
    assert_eq!(monitor.discover().await, 3);
    let hosts: Vec<(String, HostKind)> = monitor
        .hosts()
        .into_iter()
        .map(|h| (h.host, h.kind))
        .collect();
    assert_eq!(
        hosts,
        [
            (relay.url.clone(), HostKind::Relay),
            ("https://pds-a.invalid".to_owned(), HostKind::Pds),
            ("https://pds-b.invalid".to_owned(), HostKind::Pds),
            ("https://pds-c.invalid".to_owned(), HostKind::Pds),
        ]
    );
    assert_eq!(
        monitor.discover().await,
        0,
        "a second listing adds nothing new"
    );

    // The host list is capped.
    let small = Monitor::new(
        MonitorConfig {
            max_hosts: 2,
            ..config()
        },
        None,
        Health::default(),
    )
    .unwrap();
    small.add_relay(relay);
    assert_eq!(small.discover().await, 1);
    assert_eq!(small.hosts().len(), 2);
}

#[tokio::test]
async fn a_relay_that_fails_to_list_adds_nothing() {
    let relay = serve(Router::new().fallback(|| async { "not json" })).await;
    let monitor = Monitor::new(config(), None, Health::default()).unwrap();
    monitor.add_relay(Host::parse(&format!("http://{relay}"), HostKind::Relay).unwrap());
    assert_eq!(monitor.discover().await, 0);
    let e = skyhouse_monitor::list_hosts(
        &reqwest::Client::new(),
        &Host::parse(&format!("http://{relay}"), HostKind::Relay).unwrap(),
        10,
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("not a listHosts page"), "{e}");
}

#[tokio::test]
async fn a_relay_paging_junk_forever_is_read_for_at_most_max_hosts_entries() {
    // Every page: one entry that is not a host name, and a new cursor.
    let relay = serve(Router::new().route(
        "/xrpc/com.atproto.sync.listHosts",
        get(|RawQuery(q): RawQuery| async move {
            let n: u64 = q
                .unwrap_or_default()
                .split('&')
                .find_map(|kv| kv.strip_prefix("cursor="))
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            format!(
                r#"{{"cursor":"{}","hosts":[{{"hostname":"not a host/{n}"}}]}}"#,
                n + 1
            )
        }),
    ))
    .await;
    let relay = Host::parse(&format!("http://{relay}"), HostKind::Relay).unwrap();
    let hosts = skyhouse_monitor::list_hosts(&reqwest::Client::new(), &relay, 5)
        .await
        .unwrap();
    assert!(hosts.is_empty(), "{hosts:?}");
}
