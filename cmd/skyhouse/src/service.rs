//! What every long-running service starts with: the async runtime, the
//! `/metrics` + `/health` endpoint, the signal-driven shutdown token with
//! its bounded grace period (`--shutdown-grace-secs`) and the Redis
//! connection, with the `clickhouse` and `redis` checks of `/health` probed
//! every few seconds.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use skyhouse_state::State;
use skyhouse_store::{ClickHouse, WriteProgress};
use skyhouse_telemetry::{CancellationToken, Health, Pending};

use crate::redis_args::RedisArgs;

/// The multi-threaded runtime the services run on.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
}

/// How many connections the kernel completes and queues for a listener
/// before the service accepts them (capped by `net.core.somaxconn`, 4096 on
/// current Linux). Tokio's `TcpListener::bind` asks for 128: a client that
/// opens a few hundred connections at once (a feed's burst, a load test)
/// had the rest of its SYNs dropped and waited the kernel's 1 s retry.
pub const LISTEN_BACKLOG: u32 = 4096;

/// A TCP listener on `addr` with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as
/// tokio's `bind`); `flag` names the option `addr` came from in the error.
/// Called inside the runtime.
pub fn listen(addr: SocketAddr, flag: &str) -> Result<tokio::net::TcpListener> {
    let bind = || {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    bind().with_context(|| format!("{flag} {addr}: cannot listen"))
}

/// `--shutdown-grace-secs`, flattened into every long-running service.
#[derive(Debug, Clone, Args)]
pub struct ShutdownArgs {
    /// On SIGINT/SIGTERM the service drains (writes acknowledged, cursor saved); past this
    /// many seconds it exits non-zero with one line naming what was unfinished. A second
    /// signal exits at once.
    #[arg(
        long = "shutdown-grace-secs",
        env = "SKYHOUSE_SHUTDOWN_GRACE_SECS",
        default_value_t = skyhouse_telemetry::DEFAULT_SHUTDOWN_GRACE.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub shutdown_grace_secs: u64,
}

impl ShutdownArgs {
    /// The grace period.
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// Install the signal handlers (see [`skyhouse_telemetry::shutdown_on_signals`]): the
    /// token, and where the service says what a cut-short shutdown left unfinished.
    pub fn install(&self) -> (CancellationToken, Pending) {
        let pending = Pending::default();
        let token = skyhouse_telemetry::shutdown_on_signals(self.grace(), pending.clone());
        (token, pending)
    }
}

/// A started service's shared parts.
pub struct Service {
    /// Readiness checks shown by `/health`.
    pub health: Health,
    /// Cancelled on SIGINT/SIGTERM; the service drains and exits (within the grace period).
    pub shutdown: CancellationToken,
    /// What the service has not finished, said if the grace period passes or a second
    /// signal comes (set it with [`Pending::describe_with`]).
    pub pending: Pending,
    /// The Redis state.
    pub state: State,
}

/// How often `/health` probes ClickHouse and Redis.
pub const HEALTH_PROBE: Duration = Duration::from_secs(5);

/// A probe that has not answered within this counts as a failure.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// A service's ClickHouse writes, watched by `/health`.
#[derive(Debug, Clone)]
pub struct Writes {
    /// Shared with the service's batch writer.
    pub progress: WriteProgress,
    /// The `clickhouse_writes` check fails once writes have failed this long.
    pub stuck_after: Duration,
}

/// Serve `/metrics` and `/health` on `metrics_addr`, with every metric the
/// service's dashboard reads exported by `export_metrics` before (so the
/// first scrape has them all, at 0), install the signal
/// handlers, connect Redis, and probe ClickHouse (`SELECT version()`) and
/// Redis (`PING`) now and every [`HEALTH_PROBE`] until shutdown: checks
/// `clickhouse` and `redis`; with `writes`, also `clickhouse_writes` (false
/// while the writer has been failing and retrying for longer than its limit);
/// on a cluster, also `clickhouse_shards` and `clickhouse_writable`
/// ([`probe_cluster`]). `later_checks` are the checks the service itself sets
/// once it runs: they are false from before `/health` first answers, so it
/// never says ready in between (a search API whose counts were not refreshed
/// yet, an indexer not yet reading its source).
pub async fn start(
    metrics_addr: SocketAddr,
    redis: &RedisArgs,
    ch: &ClickHouse,
    writes: Option<Writes>,
    later_checks: &[&'static str],
    grace: &ShutdownArgs,
    export_metrics: impl FnOnce(),
) -> Result<Service> {
    let handle = skyhouse_telemetry::install_metrics();
    skyhouse_store::retry::describe_metrics();
    export_metrics();
    let health = Health::default();
    for check in later_checks {
        health.set(check, false);
    }
    let (shutdown, pending) = grace.install();
    let listener = listen(metrics_addr, "--metrics-addr")?;
    tokio::spawn(skyhouse_telemetry::serve_metrics(
        listener,
        handle,
        health.clone(),
        shutdown.clone(),
    ));
    tracing::info!(
        redis = %skyhouse_state::redact_url(&redis.url),
        "Connecting to Redis."
    );
    let state = redis.connect().await?;
    let probe = {
        // The probe must answer fast: a stalled server counts as down.
        let ch = ch.with_receive_timeout(PROBE_TIMEOUT);
        let (state, health) = (state.clone(), health.clone());
        let shards_ok = Arc::new(AtomicBool::new(true));
        move || {
            let (ch, state, health, writes, shards_ok) = (
                ch.clone(),
                state.clone(),
                health.clone(),
                writes.clone(),
                shards_ok.clone(),
            );
            async move {
                let (ch_ok, redis_ok) = tokio::join!(
                    answers(async { ch.server_version().await.is_ok() }),
                    answers(state.ping()),
                );
                health.set("clickhouse", ch_ok);
                health.set("redis", redis_ok);
                if ch_ok && ch.cluster().is_some() {
                    probe_cluster(&ch, &health, &shards_ok).await;
                }
                if let Some(w) = writes {
                    health.set("clickhouse_writes", !w.progress.is_stuck(w.stuck_after));
                }
            }
        }
    };
    probe().await;
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(HEALTH_PROBE) => {}
            }
            probe().await;
        }
    });
    Ok(Service {
        health,
        shutdown,
        pending,
        state,
    })
}

/// On a cluster, `/health`'s checks `clickhouse_shards` (every shard has a
/// server that answers) and `clickhouse_writable` (none of the database's
/// replicated tables is read-only for want of ZooKeeper, on the server that
/// answered for each shard); both from one statement
/// ([`skyhouse_store::queries::read_only_replicas`]). While a shard does
/// not answer, `clickhouse_writable` keeps its last value. The first failure
/// and the recovery are logged (ClickHouse's message names the servers).
async fn probe_cluster(ch: &ClickHouse, health: &Health, shards_ok: &AtomicBool) {
    let answer = tokio::time::timeout(
        PROBE_TIMEOUT,
        skyhouse_store::queries::read_only_replicas(ch),
    )
    .await
    .unwrap_or_else(|_| {
        Err(skyhouse_store::StoreError::timed_out(
            "read_only_replicas",
            PROBE_TIMEOUT,
        ))
    });
    match answer {
        Ok(read_only) => {
            health.set("clickhouse_shards", true);
            health.set("clickhouse_writable", read_only == 0);
            if !shards_ok.swap(true, Ordering::Relaxed) {
                tracing::info!("Every ClickHouse shard answers again.");
            }
        }
        Err(e) => {
            health.set("clickhouse_shards", false);
            if shards_ok.swap(false, Ordering::Relaxed) {
                tracing::warn!(error = %e, "A ClickHouse shard does not answer; reads and writes that need it fail until it is back.");
            }
        }
    }
}

/// `probe`'s answer, `false` if it takes over [`PROBE_TIMEOUT`].
async fn answers(probe: impl Future<Output = bool>) -> bool {
    tokio::time::timeout(PROBE_TIMEOUT, probe)
        .await
        .unwrap_or(false)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing accepts: the kernel completes a connection's handshake while
    /// the listener's queue has room and drops its SYN when it is full (the
    /// client waits for a retry, never within this test's bound).
    #[tokio::test]
    async fn a_listener_queues_hundreds_of_connections_before_accepting() {
        let cap = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(4096);
        let n = cap.min(600);
        let listener = listen("127.0.0.1:0".parse().unwrap(), "--listen").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut connects = tokio::task::JoinSet::new();
        for _ in 0..n {
            connects.spawn(tokio::time::timeout(
                Duration::from_secs(5),
                tokio::net::TcpStream::connect(addr),
            ));
        }
        let mut streams = Vec::new();
        while let Some(done) = connects.join_next().await {
            match done.unwrap() {
                Ok(Ok(stream)) => streams.push(stream),
                Ok(Err(e)) => panic!("connect: {e}"),
                Err(_) => panic!(
                    "a connection was not queued ({} of {n} were)",
                    streams.len()
                ),
            }
        }
        assert_eq!(streams.len(), n);
        drop(listener);
    }

    #[test]
    fn an_address_in_use_is_named_with_its_flag() {
        let rt = runtime().unwrap();
        rt.block_on(async {
            let first = listen("127.0.0.1:0".parse().unwrap(), "--listen").unwrap();
            let addr = first.local_addr().unwrap();
            let err = listen(addr, "--metrics-addr").unwrap_err();
            let text = format!("{err:#}");
            assert!(
                text.starts_with(&format!("--metrics-addr {addr}: cannot listen: ")),
                "{text}"
            );
        });
    }
}
