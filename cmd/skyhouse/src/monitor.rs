//! `skyhouse monitor`: health of known PDS hosts and relays (see
//! pkg/monitor), stored in ClickHouse `host_checks` and served as
//! `/v1/hosts` (JSON) on `--listen`, with `/metrics` and `/health` on the
//! same port unless `--metrics-addr` gives them their own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use skyhouse_monitor::{Host, HostKind, Monitor, MonitorConfig, MonitorError};

use crate::migrate::ClickHouseArgs;
use crate::Usage;

/// Flags of `skyhouse monitor`.
#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// PDS hosts to check: base URLs or host names (https:// assumed), comma-separated or repeated.
    #[arg(long = "host", env = "MONITOR_HOSTS", value_delimiter = ',')]
    hosts: Vec<String>,
    /// Relays to check and to enumerate with com.atproto.sync.listHosts (every PDS they list is
    /// checked too), comma-separated or repeated.
    #[arg(long = "relay", env = "MONITOR_RELAYS", value_delimiter = ',')]
    relays: Vec<String>,
    /// Seed file: one host per line, `URL` or `pds URL` for a PDS, `relay URL` for a relay;
    /// `#` comments.
    #[arg(long, env = "MONITOR_HOSTS_FILE")]
    hosts_file: Option<PathBuf>,
    /// Seconds between check rounds; also the snapshot bucket (one row per host per interval).
    #[arg(long, env = "MONITOR_INTERVAL_SECS", default_value_t = 60)]
    interval_secs: u64,
    /// Milliseconds one request (connect, headers, body) may take before it counts as a timeout.
    #[arg(long, env = "MONITOR_TIMEOUT_MS", default_value_t = 10_000)]
    timeout_ms: u64,
    /// Hosts checked at the same time.
    #[arg(long, env = "MONITOR_CONCURRENCY", default_value_t = 32)]
    concurrency: usize,
    /// Most hosts kept; discovered hosts past it are dropped (and counted).
    #[arg(long, env = "MONITOR_MAX_HOSTS", default_value_t = 50_000)]
    max_hosts: usize,
    /// Seconds between two listHosts enumerations of each --relay.
    #[arg(long, env = "MONITOR_DISCOVER_INTERVAL_SECS", default_value_t = 3600)]
    discover_interval_secs: u64,
    /// Run one round, print /v1/hosts JSON on stdout and exit (1 if a host is down).
    #[arg(long)]
    once: bool,
    /// Listen address of /v1/hosts (and of /metrics and /health without --metrics-addr).
    #[arg(
        long,
        alias = "addr", // the old name, hidden
        env = "MONITOR_ADDR",
        default_value = "0.0.0.0:8097"
    )]
    listen: SocketAddr,
    /// Address of /metrics and /health. Unset: served on --listen.
    #[arg(long, env = "MONITOR_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Browser origins that may read /v1/hosts (CORS): * for any, none, or a comma-separated
    /// list of origins (https://status.example.com).
    #[arg(long, env = "MONITOR_CORS_ORIGINS", default_value = "*")]
    cors_origins: String,
    // Before the groups with their own --help heading (clap keeps the last heading
    // for the fields after a flattened group).
    #[command(flatten)]
    shutdown: crate::service::ShutdownArgs,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
}

impl MonitorArgs {
    /// Every flag checked, the seed file read; no network I/O.
    fn config(&self) -> Result<(MonitorConfig, Vec<Host>, Vec<Host>)> {
        let cfg = MonitorConfig {
            interval: Duration::from_secs(self.interval_secs),
            timeout: Duration::from_millis(self.timeout_ms),
            concurrency: self.concurrency,
            max_hosts: self.max_hosts,
            discover_interval: Duration::from_secs(self.discover_interval_secs),
            cors: skyhouse_telemetry::http::Cors::parse(&self.cors_origins)
                .map_err(|e| anyhow!("--cors-origins: {e}"))?,
        };
        if let Err(MonitorError::Setting { setting, why }) = cfg.validate() {
            let flag = match setting {
                "interval" => "--interval-secs",
                "timeout" => "--timeout-ms",
                "concurrency" => "--concurrency",
                "max_hosts" => "--max-hosts",
                _ => "--discover-interval-secs",
            };
            return Err(anyhow!("{flag}: {why}"));
        }
        let parse = |flag: &str, list: &[String], kind| -> Result<Vec<Host>> {
            list.iter()
                .filter(|h| !h.trim().is_empty())
                .map(|h| Host::parse(h, kind).map_err(|e| anyhow!("{flag}: {e}")))
                .collect()
        };
        let mut hosts = parse("--host", &self.hosts, HostKind::Pds)?;
        let relays = parse("--relay", &self.relays, HostKind::Relay)?;
        if let Some(path) = &self.hosts_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--hosts-file {}", path.display()))?;
            let seed = skyhouse_monitor::parse_seed(&text)
                .map_err(|e| anyhow!("--hosts-file {}: {e}", path.display()))?;
            hosts.extend(seed);
        }
        if hosts.is_empty() && relays.is_empty() {
            return Err(anyhow!("give --host, --relay or --hosts-file"));
        }
        Ok((cfg, hosts, relays))
    }
}

pub fn run(args: MonitorArgs) -> Result<ExitCode> {
    let (cfg, hosts, relays) = args.config().usage()?;
    let ch = args.clickhouse.connect()?;
    crate::service::runtime()?.block_on(async move {
        // Before Monitor::new exports its metrics at 0.
        skyhouse_telemetry::install_metrics();
        let health = skyhouse_telemetry::Health::default();
        let (shutdown, pending) = args.shutdown.install();
        pending.describe_with(|| {
            "a round of host checks (or its write to ClickHouse) still running".to_owned()
        });
        let monitor = Monitor::new(cfg, Some(ch), health.clone()).map_err(|e| anyhow!("{e}"))?;
        monitor.add_hosts(hosts.iter().filter(|h| h.kind == HostKind::Pds).cloned());
        for relay in hosts
            .into_iter()
            .filter(|h| h.kind == HostKind::Relay)
            .chain(relays)
        {
            monitor.add_relay(relay);
        }
        if args.once {
            monitor.discover().await;
            let snaps = monitor.round().await;
            let body = serde_json::json!({ "hosts": monitor.hosts() });
            println!("{body:#}");
            let all_up = snaps.iter().all(|s| s.up);
            return Ok(if all_up {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        match monitor.load_known().await {
            Ok(n) => tracing::info!(hosts = n, "Hosts of earlier runs loaded."),
            Err(MonitorError::Store(e)) => {
                let error = args.clickhouse.explain("known hosts", e);
                tracing::warn!(%error, "Hosts of earlier runs not loaded.")
            }
            Err(error) => tracing::warn!(%error, "Hosts of earlier runs not loaded."),
        }
        let listener = crate::service::listen(args.listen, "--listen")?;
        let metrics = match args.metrics_addr {
            Some(addr) => Some(crate::service::listen(addr, "--metrics-addr")?),
            None => None,
        };
        let server = tokio::spawn({
            let monitor = monitor.clone();
            let shutdown = shutdown.clone();
            let health = health.clone();
            async move {
                match metrics {
                    None => monitor.serve(listener, shutdown).await,
                    Some(metrics) => {
                        let handle = skyhouse_telemetry::install_metrics();
                        let (hosts, metrics) = tokio::join!(
                            monitor.serve_hosts(listener, shutdown.clone()),
                            skyhouse_telemetry::serve_metrics(metrics, handle, health, shutdown)
                        );
                        hosts.and(metrics)
                    }
                }
            }
        });
        tracing::info!(
            listen = %args.listen,
            metrics = %args.metrics_addr.unwrap_or(args.listen),
            "Monitor serving /v1/hosts, /metrics and /health."
        );
        monitor.run(shutdown.clone()).await;
        shutdown.cancel();
        server
            .await
            .context("monitor HTTP server")?
            .context("monitor HTTP server")?;
        Ok(ExitCode::SUCCESS)
    })
}
