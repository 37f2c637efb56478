//! `skyhouse feedgen` run as an operator would: the real binary against the
//! testkit ClickHouse 18.16 and Redis. It becomes ready once its first count
//! refresh ran, serves did.json / describeFeedGenerator / getFeedSkeleton
//! and its metrics, stops cleanly on SIGTERM, and refuses bad flags with one
//! line naming the flag.
#![allow(clippy::unwrap_used)] // a panic is the failure report

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(60);

fn spare_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn get(url: &str) -> Option<(u16, String)> {
    let resp = reqwest::get(url).await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

#[tokio::test]
async fn feedgen_serves_until_sigterm() {
    let ch = skyhouse_testkit::ClickHouse::shared();
    let db = ch.database("feedgen_cli");
    let redis = skyhouse_testkit::Redis::shared();
    let bin = env!("CARGO_BIN_EXE_skyhouse");
    let ch_flags = [
        "--clickhouse-address".to_owned(),
        ch.http_url(),
        "--database".to_owned(),
        db.name().to_owned(),
    ];
    let out = Command::new(bin)
        .env_clear()
        .args(["migrate", "up"])
        .args(&ch_flags)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (port, metrics) = (spare_port(), spare_port());
    let child = Command::new(bin)
        .env_clear()
        .env("RUST_LOG", "info")
        .arg("feedgen")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
        .args(["--public-url", &format!("http://localhost:{port}")])
        .args(["--redis", &redis.url()])
        .args(["--redis-prefix", &redis.key_prefix("feedgen_cli")])
        .args(&ch_flags)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    let start = Instant::now();
    loop {
        if let Some((200, _)) = get(&format!("http://127.0.0.1:{metrics}/health")).await {
            break;
        }
        assert!(
            running.0.try_wait().unwrap().is_none(),
            "feedgen exited early"
        );
        assert!(start.elapsed() < DEADLINE, "feedgen never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let base = format!("http://127.0.0.1:{port}");
    let did = format!("did:web:localhost%3A{port}");

    let (status, body) = get(&format!("{base}/.well-known/did.json")).await.unwrap();
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["id"], did.as_str());
    assert_eq!(doc["service"][0]["id"], "#bsky_fg");
    assert_eq!(
        doc["service"][0]["serviceEndpoint"],
        format!("http://localhost:{port}").as_str()
    );

    let (status, body) = get(&format!("{base}/xrpc/app.bsky.feed.describeFeedGenerator"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let described: Value = serde_json::from_str(&body).unwrap();
    let uris: Vec<&str> = described["feeds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["uri"].as_str().unwrap())
        .collect();
    let whats_hot = format!("at://{did}/app.bsky.feed.generator/whats-hot");
    assert!(uris.contains(&whats_hot.as_str()), "{uris:?}");
    assert_eq!(uris.len(), 3);

    let feed: String = url::form_urlencoded::byte_serialize(whats_hot.as_bytes()).collect();
    let (status, body) = get(&format!(
        "{base}/xrpc/app.bsky.feed.getFeedSkeleton?feed={feed}&limit=10"
    ))
    .await
    .unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"feed":[]}"#));
    let (status, _) = get(&format!(
        "{base}/xrpc/app.bsky.feed.getFeedSkeleton?feed={feed}&limit=101"
    ))
    .await
    .unwrap();
    assert_eq!(status, 400);
    let (_, scrape) = get(&format!("http://127.0.0.1:{metrics}/metrics"))
        .await
        .unwrap();
    assert!(
        scrape
            .contains("skyhouse_feedgen_requests_total{method=\"getFeedSkeleton\",status=\"200\"}"),
        "{scrape}"
    );

    let pid = running.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = running.0.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < DEADLINE, "feedgen ignored SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
}

#[test]
fn bad_flags_are_one_line_errors_naming_the_flag() {
    let bin = env!("CARGO_BIN_EXE_skyhouse");
    for (args, flag) in [
        (&["feedgen"][..], "--public-url"),
        (
            &["feedgen", "--public-url", "ftp://feeds.example"][..],
            "--public-url",
        ),
        (
            &[
                "feedgen",
                "--public-url",
                "https://f.example",
                "--service-did",
                "nope",
            ][..],
            "--service-did",
        ),
        (
            &[
                "feedgen",
                "--public-url",
                "https://f.example",
                "--feeds-config",
                "/nonexistent.json",
            ][..],
            "--feeds-config",
        ),
        (
            &[
                "feedgen",
                "--public-url",
                "https://f.example",
                "--redis",
                "http://x",
            ][..],
            "--redis",
        ),
    ] {
        let out = Command::new(bin).env_clear().args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag), "{args:?}: {err}");
        if flag != "--public-url" || args.len() > 1 {
            assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        }
    }
}
