//! `skyhouse relay`: the gRPC relay (SPEC §7). Serves `StreamOperations` to
//! external ingesters; fed by indexers and backfill workers (`--relay-url`,
//! over `Ingest`) and, with `--source`, by a live source it reads itself.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use skyhouse_relay::{Hub, RelayConfig};
use skyhouse_sources::SourceConfig;
use skyhouse_transform::CollectionFilter;

use crate::indexer::Source;

/// Flags of `skyhouse relay`.
#[derive(Debug, Args)]
pub struct RelayArgs {
    /// gRPC listen address.
    #[arg(long, env = "RELAY_ADDR", default_value = "0.0.0.0:50051")]
    listen: SocketAddr,
    /// Address of /metrics and /health.
    #[arg(long, env = "RELAY_METRICS_ADDR", default_value = "0.0.0.0:8098")]
    metrics_addr: SocketAddr,
    /// Also read this live source (jetstream or firehose) and relay its record operations (no
    /// ClickHouse or Redis involved). Unset: only what indexers and backfill workers push.
    #[arg(long, env = "RELAY_SOURCE", value_enum, hide_possible_values = true)]
    source: Option<Source>,
    /// Endpoint(s) of --source, comma-separated, tried in order: ws:// or wss:// URLs, Jetstream
    /// shorthands (us-east-1 …), or one file:// capture. Default: the public Jetstream
    /// instances, or wss://bsky.network for the firehose.
    #[arg(
        long = "url",
        env = "RELAY_SOURCE_URL",
        value_delimiter = ',',
        requires = "source"
    )]
    urls: Vec<String>,
    /// Start position of --source (time_us or seq): -1 = the live tip, 0 = everything the source
    /// holds.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    cursor: i64,
    /// Collections of --source relayed: NSIDs or prefixes like app.bsky.*; `*` relays all.
    #[arg(
        long,
        env = "RELAY_COLLECTIONS",
        value_delimiter = ',',
        default_value = skyhouse_transform::DEFAULT_COLLECTIONS
    )]
    collections: Vec<String>,
    /// Operations kept for clients resuming with a cursor.
    #[arg(long, env = "RELAY_RETAIN_OPS", default_value_t = 200_000)]
    retain_ops: usize,
    /// Encoded bytes kept for resuming clients.
    #[arg(long, env = "RELAY_RETAIN_BYTES", default_value_t = 256 << 20)]
    retain_bytes: usize,
    /// Operations older than this many seconds are dropped.
    #[arg(long, env = "RELAY_RETAIN_SECS", default_value_t = 600)]
    retain_secs: u64,
    /// A client this many operations behind the newest is disconnected (RESOURCE_EXHAUSTED);
    /// at most --retain-ops.
    #[arg(long, env = "RELAY_CLIENT_QUEUE", default_value_t = 50_000)]
    client_queue: usize,
    /// Clients streaming at once; more are refused (RESOURCE_EXHAUSTED).
    #[arg(long, env = "RELAY_MAX_CLIENTS", default_value_t = 1_024)]
    max_clients: usize,
    #[command(flatten)]
    shutdown: crate::service::ShutdownArgs,
}

impl RelayArgs {
    /// Check every flag before any I/O.
    fn config(&self) -> Result<(RelayConfig, Option<(SourceConfig, CollectionFilter)>)> {
        let cfg = RelayConfig {
            retain_ops: self.retain_ops,
            retain_bytes: self.retain_bytes,
            retain_age: Duration::from_secs(self.retain_secs),
            client_queue: self.client_queue,
            max_clients: self.max_clients,
        };
        cfg.validate().map_err(|e| {
            anyhow!("--retain-ops/--retain-bytes/--retain-secs/--client-queue/--max-clients: {e}")
        })?;
        let Some(source) = self.source else {
            return Ok((cfg, None));
        };
        let mut src = SourceConfig::new(source.kind());
        src.endpoints = self
            .urls
            .iter()
            .filter(|u| !u.trim().is_empty())
            .cloned()
            .collect();
        let collections =
            CollectionFilter::new(&self.collections).map_err(|e| anyhow!("--collections: {e}"))?;
        if src.kind == skyhouse_sources::SourceKind::Jetstream {
            if let Some(wanted) = collections.jetstream_wanted() {
                if wanted.len() <= skyhouse_sources::MAX_WANTED_COLLECTIONS {
                    src.wanted_collections = wanted;
                }
            }
        }
        src.validate().map_err(|e| anyhow!("--url: {e}"))?;
        Ok((cfg, Some((src, collections))))
    }
}

pub fn run(args: RelayArgs) -> Result<ExitCode> {
    let (cfg, source) = args.config()?;
    crate::service::runtime()?.block_on(async move {
        let handle = skyhouse_telemetry::install_metrics();
        let health = skyhouse_telemetry::Health::default();
        let (shutdown, pending) = args.shutdown.install();
        pending.describe_with(|| "gRPC streams still open".to_owned());
        let metrics = tokio::net::TcpListener::bind(args.metrics_addr)
            .await
            .with_context(|| format!("--metrics-addr {}: cannot listen", args.metrics_addr))?;
        tokio::spawn(skyhouse_telemetry::serve_metrics(
            metrics,
            handle,
            health.clone(),
            shutdown.clone(),
        ));
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("--listen {}: cannot listen", args.listen))?;
        let hub = Hub::new(cfg, skyhouse_relay::first_cursor_now(), shutdown.clone());
        if let Some((src, collections)) = source {
            let (hub, stop) = (hub.clone(), shutdown.clone());
            let start = args.cursor;
            tokio::spawn(async move {
                match skyhouse_relay::run_source(src, start, collections, hub, stop).await {
                    Ok(s) => tracing::info!(
                        messages = s.messages,
                        ops = s.ops,
                        "Relay source ended; still serving."
                    ),
                    Err(e) => {
                        tracing::error!(error = %e, "Relay source failed; still serving Ingest.")
                    }
                }
            });
        }
        tracing::info!(addr = %listener.local_addr()?, "Relay serving gRPC.");
        health.set("relay", true);
        let served = skyhouse_relay::serve(listener, hub, shutdown.clone()).await;
        health.set("relay", false);
        shutdown.cancel();
        served.map_err(|e| anyhow!("relay: {e}"))?;
        Ok(ExitCode::SUCCESS)
    })
}
