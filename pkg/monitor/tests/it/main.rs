//! skyhouse-monitor against real servers on loopback:
//!
//! - `checks`: the reference PDS (`@atproto/dev-env`, testkit `Network`) is
//!   healthy with its describeServer fields; in-process servers that fail in
//!   controlled ways (500, a hang past the timeout, a closed connection, a
//!   non-HTTP answer, garbage and oversized bodies, TLS to a plain server, a
//!   refused connection) are each classified as what they are.
//! - `stored`: snapshots in a real ClickHouse (a migrated database per
//!   test): the same check written twice is one row, a newer observation of
//!   the same interval replaces it, `unhealthy_hosts` lists down hosts.
//! - `service`: a round over the PDS and a failing host, `/v1/hosts`,
//!   `/metrics`, `/health`; relay `listHosts` discovery with paging.
//!
//! No assertion depends on timing: only the hang case uses a small timeout,
//! and it never answers at all.
#![allow(clippy::unwrap_used)] // a panic is the failure report

mod checks;
mod service;
mod stored;

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use skyhouse_monitor::ClickHouse;
use skyhouse_store::migrate;
use skyhouse_store::ClickHouseConfig;
use skyhouse_testkit::TestDatabase;
use tokio::net::TcpListener;

/// Serve `router` on a fresh loopback port for the rest of the test.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// Accept connections on a fresh loopback port and hand each to `handle`.
pub async fn serve_raw<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handle(stream));
        }
    });
    addr
}

/// A fresh database named after the test, with every migration applied.
pub async fn fresh(hint: &str) -> (TestDatabase, ClickHouse) {
    let server = skyhouse_testkit::ClickHouse::shared();
    let db = server.database(hint);
    let ch = ClickHouse::new(ClickHouseConfig::local(&server.http_url(), db.name())).unwrap();
    migrate::up_embedded(&ch).await.unwrap();
    (db, ch)
}
