//! Each way a host can fail is classified as that failure.

use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use skyhouse_monitor::{CheckResult, Checker, Host, HostKind, Snapshot, MAX_BODY_BYTES};
use skyhouse_testkit::Network;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{serve, serve_raw};

/// Generous: only the hang case relies on a timeout, and it uses its own.
const TIMEOUT: Duration = Duration::from_secs(30);

const HEALTH: &str = "/xrpc/_health";
const DESCRIBE: &str = "/xrpc/com.atproto.server.describeServer";

fn pds(url: String) -> Host {
    Host::parse(&url, HostKind::Pds).unwrap()
}

async fn check(url: String) -> Snapshot {
    Checker::new(TIMEOUT).unwrap().check(&pds(url)).await
}

/// A server whose `_health` is fine and whose describeServer answers `body`.
fn describing(body: &'static str) -> Router {
    Router::new()
        .route(HEALTH, get(|| async { r#"{"version":"9.9.9"}"# }))
        .route(DESCRIBE, get(move || async move { body }))
}

#[tokio::test]
async fn the_reference_pds_is_healthy_with_its_describe_server_fields() {
    let net = Network::shared();
    let s = check(net.pds_url().to_owned()).await;
    assert!(s.up, "{s:?}");
    assert_eq!(s.result, CheckResult::Ok);
    assert_eq!((s.health_status, s.describe_status), (200, 200));
    assert!(s.describe_did.starts_with("did:"), "{s:?}");
    assert!(!s.user_domains.is_empty(), "{s:?}");
    assert!(s.rtt_ms > 0, "an answered check has a round trip");
    assert!(s.error.is_empty());
}

#[tokio::test]
async fn a_500_is_http_status() {
    let addr =
        serve(Router::new().fallback(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }))
            .await;
    let s = check(format!("http://{addr}")).await;
    assert!(!s.up);
    assert_eq!(s.result, CheckResult::HttpStatus);
    assert_eq!(s.health_status, 500);
    assert_eq!(
        s.describe_status, 0,
        "describeServer is not asked after _health failed"
    );
    assert!(s.error.contains("500"), "{}", s.error);
}

#[tokio::test]
async fn a_describe_server_error_after_a_good_health_is_http_status() {
    let addr = serve(Router::new().route(HEALTH, get(|| async { "{}" })).route(
        DESCRIBE,
        get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "") }),
    ))
    .await;
    let s = check(format!("http://{addr}")).await;
    assert_eq!(s.result, CheckResult::HttpStatus);
    assert_eq!((s.health_status, s.describe_status), (200, 503));
    assert!(s.error.starts_with("describeServer:"), "{}", s.error);
}

#[tokio::test]
async fn a_hang_past_the_timeout_is_timeout() {
    let addr = serve(Router::new().fallback(std::future::pending::<&'static str>)).await;
    let checker = Checker::new(Duration::from_millis(200)).unwrap();
    let s = checker.check(&pds(format!("http://{addr}"))).await;
    assert!(!s.up);
    assert_eq!(s.result, CheckResult::Timeout, "{s:?}");
    assert_eq!(s.health_status, 0);
}

#[tokio::test]
async fn a_body_that_never_finishes_is_timeout() {
    // Headers, then silence: the deadline covers the body too.
    let addr = serve_raw(|mut stream| async move {
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"ver")
            .await;
        std::future::pending::<()>().await;
        drop(stream);
    })
    .await;
    let checker = Checker::new(Duration::from_millis(200)).unwrap();
    let s = checker.check(&pds(format!("http://{addr}"))).await;
    assert_eq!(s.result, CheckResult::Timeout, "{s:?}");
    assert_eq!(s.health_status, 200);
}

#[tokio::test]
async fn a_closed_connection_is_protocol() {
    let addr = serve_raw(|mut stream| async move {
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf).await;
        drop(stream);
    })
    .await;
    let s = check(format!("http://{addr}")).await;
    assert!(!s.up);
    assert_eq!(s.result, CheckResult::Protocol, "{s:?}");
}

#[tokio::test]
async fn a_server_that_does_not_speak_http_is_protocol() {
    let addr = serve_raw(|mut stream| async move {
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf).await;
        let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
    })
    .await;
    let s = check(format!("http://{addr}")).await;
    assert_eq!(s.result, CheckResult::Protocol, "{s:?}");
}

#[tokio::test]
async fn a_garbage_body_is_bad_body() {
    let addr = serve(describing("<html>not json</html>")).await;
    let s = check(format!("http://{addr}")).await;
    assert!(!s.up);
    assert_eq!(s.result, CheckResult::BadBody, "{s:?}");
    assert_eq!((s.health_status, s.describe_status), (200, 200));
    assert_eq!(s.health_version, "9.9.9");
    assert!(s.error.contains("not JSON"), "{}", s.error);
}

#[tokio::test]
async fn a_describe_server_without_a_did_is_bad_body() {
    let addr = serve(describing(r#"{"availableUserDomains":[".test"]}"#)).await;
    let s = check(format!("http://{addr}")).await;
    assert_eq!(s.result, CheckResult::BadBody, "{s:?}");
}

#[tokio::test]
async fn a_json_array_is_bad_body() {
    let addr = serve(Router::new().route(HEALTH, get(|| async { "[1,2,3]" }))).await;
    let s = check(format!("http://{addr}")).await;
    assert_eq!(s.result, CheckResult::BadBody, "{s:?}");
}

#[tokio::test]
async fn an_oversized_body_is_bad_body_and_not_buffered() {
    // Declared length over the cap, and a chunked body (no length) over it.
    let big = "x".repeat(MAX_BODY_BYTES + 1);
    let declared = big.clone();
    let addr = serve(Router::new().route(HEALTH, get(move || async move { declared }))).await;
    let s = check(format!("http://{addr}")).await;
    assert_eq!(s.result, CheckResult::BadBody, "{s:?}");
    assert!(s.error.contains("over"), "{}", s.error);

    let addr = serve_raw(move |mut stream| async move {
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .await;
        let chunk = vec![b' '; 16 << 10];
        // Four times the cap, then the end: the reader must stop at the cap.
        for _ in 0..(4 * MAX_BODY_BYTES / chunk.len()) {
            let head = format!("{:x}\r\n", chunk.len());
            if stream.write_all(head.as_bytes()).await.is_err()
                || stream.write_all(&chunk).await.is_err()
                || stream.write_all(b"\r\n").await.is_err()
            {
                return;
            }
        }
        let _ = stream.write_all(b"0\r\n\r\n").await;
    })
    .await;
    let s = check(format!("http://{addr}")).await;
    assert_eq!(s.result, CheckResult::BadBody, "{s:?}");
}

#[tokio::test]
async fn tls_to_a_plain_http_server_is_tls() {
    let addr = serve(describing(r#"{"did":"did:web:x.test"}"#)).await;
    let s = check(format!("https://{addr}")).await;
    assert!(!s.up);
    assert_eq!(s.result, CheckResult::Tls, "{s:?}");
}

#[tokio::test]
async fn a_refused_connection_is_connect() {
    // A port that was free a moment ago and has no listener now.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let s = check(format!("http://{addr}")).await;
    assert_eq!(s.result, CheckResult::Connect, "{s:?}");
    assert_eq!(s.rtt_ms, 0);
}

#[tokio::test]
async fn a_relay_is_checked_on_health_only() {
    let addr = serve(Router::new().route(HEALTH, get(|| async { r#"{"status":"ok"}"# }))).await;
    let relay = Host::parse(&format!("http://{addr}"), HostKind::Relay).unwrap();
    let s = Checker::new(TIMEOUT).unwrap().check(&relay).await;
    assert!(s.up, "{s:?}");
    assert_eq!(s.describe_status, 0);
    assert_eq!(s.kind, HostKind::Relay);
}
