//! What every long-running service starts with: the async runtime, the
//! `/metrics` + `/health` endpoint, the signal-driven shutdown token and the
//! Redis connection, with first readiness probes.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, Result};
use skyhouse_state::State;
use skyhouse_store::ClickHouse;
use skyhouse_telemetry::{CancellationToken, Health};

use crate::redis_args::RedisArgs;

/// The multi-threaded runtime the services run on.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
}

/// A started service's shared parts.
pub struct Service {
    /// Readiness checks shown by `/health`.
    pub health: Health,
    /// Cancelled on SIGINT/SIGTERM; the service drains and exits.
    pub shutdown: CancellationToken,
    /// The Redis state.
    pub state: State,
}

/// Serve `/metrics` and `/health` on `metrics_addr`, install the signal
/// handlers, connect Redis and take first ClickHouse/Redis readings.
pub async fn start(
    metrics_addr: SocketAddr,
    redis: &RedisArgs,
    ch: &ClickHouse,
) -> Result<Service> {
    let handle = skyhouse_telemetry::install_metrics();
    let health = Health::default();
    let shutdown = skyhouse_telemetry::shutdown_on_signals();
    let listener = tokio::net::TcpListener::bind(metrics_addr)
        .await
        .with_context(|| format!("--metrics-addr {metrics_addr}: cannot listen"))?;
    tokio::spawn(skyhouse_telemetry::serve_metrics(
        listener,
        handle,
        health.clone(),
        shutdown.clone(),
    ));
    let state = redis.connect().await?;
    health.set("clickhouse", ch.server_version().await.is_ok());
    health.set("redis", state.ping().await);
    Ok(Service {
        health,
        shutdown,
        state,
    })
}

/// After a server returned: stop the other tasks (`refresh`), wait for them,
/// and report the server's own failure naming `what`.
pub async fn finish(
    served: std::io::Result<()>,
    refresh: tokio::task::JoinHandle<()>,
    shutdown: &CancellationToken,
    what: &str,
) -> Result<ExitCode> {
    shutdown.cancel();
    let _ = refresh.await;
    served.with_context(|| format!("{what} server"))?;
    Ok(ExitCode::SUCCESS)
}
