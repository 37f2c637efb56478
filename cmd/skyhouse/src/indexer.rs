//! `skyhouse indexer`: the live indexer (Jetstream or firehose → ClickHouse).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::{Args, ValueEnum};
use skyhouse_pipeline::{IndexerConfig, KeyFuture, Keys};
use skyhouse_sources::{SourceConfig, SourceKind};
use skyhouse_transform::CollectionFilter;

use crate::migrate::ClickHouseArgs;
use crate::redis_args::RedisArgs;
use crate::Usage;

/// Which stream to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Source {
    /// Jetstream: JSON events (`time_us` cursor).
    Jetstream,
    /// A relay's or PDS's `com.atproto.sync.subscribeRepos` (`seq` cursor).
    Firehose,
}

impl Source {
    pub fn kind(self) -> SourceKind {
        match self {
            Source::Jetstream => SourceKind::Jetstream,
            Source::Firehose => SourceKind::Firehose,
        }
    }
}

/// Where events come from; shared by `indexer` and `cursor`.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Event source.
    #[arg(long, env = "SKYHOUSE_SOURCE", value_enum, default_value = "jetstream")]
    pub source: Source,
    /// Endpoint(s), tried in order with failover: ws:// or wss:// URLs, Jetstream
    /// shorthands (us-east-1, us-east-2, us-west-1, us-west-2), or one file:// capture to
    /// replay. Comma-separated or repeated. Default: the four public Jetstream instances,
    /// or wss://bsky.network for the firehose.
    #[arg(long = "url", env = "WS_URL", value_delimiter = ',')]
    pub urls: Vec<String>,
    /// Redis key name of the cursor (under the prefix). Default: cursor:<source>:<first URL
    /// without scheme>.
    #[arg(long, env = "SKYHOUSE_CURSOR_KEY")]
    pub cursor_key: Option<String>,
}

impl SourceArgs {
    /// The source config (validated) and its cursor key.
    pub fn resolve(&self) -> Result<(SourceConfig, String)> {
        let mut cfg = SourceConfig::new(self.source.kind());
        cfg.endpoints = self
            .urls
            .iter()
            .filter(|u| !u.trim().is_empty())
            .cloned()
            .collect();
        cfg.validate().map_err(|e| anyhow!("--url: {e}"))?;
        let key = match &self.cursor_key {
            Some(k) if !k.trim().is_empty() => k.trim().to_owned(),
            _ => {
                let first = cfg
                    .subscribe_urls(None)
                    .map_err(|e| anyhow!("--url: {e}"))?
                    .into_iter()
                    .next()
                    .ok_or_else(|| anyhow!("--url: no endpoint"))?;
                skyhouse_state::cursor_key(self.source.kind().as_str(), &first)
            }
        };
        Ok((cfg, key))
    }
}

/// Flags of `skyhouse indexer`.
#[derive(Debug, Args)]
pub struct IndexerArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Collections to keep: NSIDs or prefixes like app.bsky.*; `*` keeps all. Others are
    /// counted (skyhouse_indexer_filtered_total) and dropped.
    #[arg(
        long,
        env = "SKYHOUSE_COLLECTIONS",
        value_delimiter = ',',
        default_value = skyhouse_transform::DEFAULT_COLLECTIONS
    )]
    collections: Vec<String>,
    /// Which rows of `records` keep the record's JSON: all, untyped (only collections
    /// without a typed table), none. The rows stay either way (stats, resyncs and cleanups
    /// read their keys); the JSON is about half of what ClickHouse inserts.
    #[arg(long, env = "SKYHOUSE_RAW_RECORDS", default_value = "all", value_parser = ["all", "untyped", "none"])]
    raw_records: String,
    /// Jetstream only: only these DIDs (wantedDids), comma-separated.
    #[arg(long, env = "SKYHOUSE_WANTED_DIDS", value_delimiter = ',')]
    wanted_dids: Vec<String>,
    /// Jetstream only: ask for zstd-compressed events (uses Jetstream's dictionary).
    #[arg(long, env = "JETSTREAM_COMPRESS")]
    compress: bool,
    /// Firehose only: verify each commit's signature against the DID document (resolved
    /// through --plc or did:web, cached). Failing commits go to dead_letters.
    #[arg(long, env = "SKYHOUSE_VERIFY")]
    verify: bool,
    /// PLC directory for --verify and for `#identity` events that carry no handle (the
    /// DID document is fetched again and its handle verified).
    #[arg(long, env = "PLC_URL", default_value = skyhouse_identity::DEFAULT_PLC_URL)]
    plc: String,
    #[command(flatten)]
    handles: crate::handle_args::HandleArgs,
    /// Start at this position instead of the saved cursor (time_us or seq): -1 = the live
    /// tip, 0 = everything the source still holds (a firehose replays from its first event).
    #[arg(long, allow_negative_numbers = true)]
    cursor: Option<i64>,
    /// Close a ClickHouse batch at this many rows.
    #[arg(long, env = "SKYHOUSE_BATCH_ROWS", default_value_t = skyhouse_pipeline::BATCH_ROWS)]
    batch_rows: usize,
    /// Close a ClickHouse batch at this many bytes.
    #[arg(long, env = "SKYHOUSE_BATCH_BYTES", default_value_t = skyhouse_pipeline::BATCH_BYTES)]
    batch_bytes: usize,
    /// Close a ClickHouse batch this many milliseconds after its first row.
    #[arg(
        long,
        env = "SKYHOUSE_BATCH_AGE_MS",
        default_value_t = skyhouse_pipeline::BATCH_AGE.as_millis() as u64
    )]
    batch_age_ms: u64,
    /// Drop and reconnect a socket silent for this many seconds.
    #[arg(long, env = "SKYHOUSE_LIVENESS_SECS", default_value_t = 15)]
    liveness_secs: u64,
    /// Address of /metrics and /health.
    #[arg(long, env = "INDEXER_METRICS_ADDR", default_value = "0.0.0.0:8091")]
    metrics_addr: SocketAddr,
    /// /health fails its `lag` check while the indexer is more than this many seconds behind
    /// the events it receives (now − event time; an idle source passes). 0 = no lag check.
    #[arg(
        long,
        env = "INDEXER_HEALTH_MAX_LAG_SECS",
        default_value_t = skyhouse_pipeline::health::DEFAULT_MAX_LAG.as_secs()
    )]
    health_max_lag_secs: u64,
    /// Also push every record operation to the gRPC relay at this URL (http://host:50051),
    /// tagged live. Best effort: dropped and counted while the relay is slow or down, never
    /// slowing ClickHouse.
    #[arg(long, env = "INDEXER_RELAY_URL")]
    relay_url: Option<String>,
    /// Token of --relay-url with the publish scope (`skyhouse relay token create --scope
    /// publish`). Prefer the environment variable: a flag shows in `ps`.
    #[arg(
        long,
        env = "INDEXER_RELAY_TOKEN",
        hide_env_values = true,
        requires = "relay_url"
    )]
    relay_token: Option<String>,
    /// https:// --relay-url: the CA certificate(s) to trust (PEM). Default: the public (webpki) roots.
    #[arg(long, env = "INDEXER_RELAY_CA", requires = "relay_url")]
    relay_ca: Option<PathBuf>,
    /// https:// --relay-url that requires client certificates: this certificate (PEM) …
    #[arg(long, env = "INDEXER_RELAY_CLIENT_CERT", requires = "relay_client_key")]
    relay_client_cert: Option<PathBuf>,
    /// … and its private key (PEM).
    #[arg(long, env = "INDEXER_RELAY_CLIENT_KEY", requires = "relay_client_cert")]
    relay_client_key: Option<PathBuf>,
    // Before the groups with their own --help heading (clap keeps the last heading
    // for the fields after a flattened group).
    #[command(flatten)]
    shutdown: crate::service::ShutdownArgs,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    #[command(flatten)]
    redis: RedisArgs,
}

impl IndexerArgs {
    /// `--relay-url` with its token and TLS flags (the files read and checked).
    fn relay_client(&self) -> Result<Option<skyhouse_relay::ClientConfig>> {
        self.relay_url
            .as_deref()
            .map(|url| {
                crate::relay::client_config(
                    url,
                    self.relay_token.as_deref(),
                    self.relay_ca.as_ref(),
                    self.relay_client_cert.as_ref(),
                    self.relay_client_key.as_ref(),
                )
            })
            .transpose()
    }
}

struct ResolverKeys(skyhouse_identity::Resolver);

impl Keys for ResolverKeys {
    fn signing_key<'a>(&'a self, did: &'a str, fresh: bool) -> KeyFuture<'a> {
        Box::pin(async move {
            if fresh {
                self.0.invalidate(did);
            }
            self.0
                .signing_key(did)
                .await
                .map_err(|e| skyhouse_pipeline::KeyError {
                    retriable: e.is_retriable(),
                    message: e.to_string(),
                })
        })
    }
}

impl IndexerArgs {
    /// Check every flag before any I/O.
    fn config(&self) -> Result<(IndexerConfig, Option<Arc<dyn Keys>>)> {
        let (mut source, key) = self.source.resolve()?;
        let collections =
            CollectionFilter::new(&self.collections).map_err(|e| anyhow!("--collections: {e}"))?;
        if source.kind == SourceKind::Jetstream {
            if let Some(wanted) = collections.jetstream_wanted() {
                if wanted.len() <= skyhouse_sources::MAX_WANTED_COLLECTIONS {
                    source.wanted_collections = wanted;
                }
            }
            source.wanted_dids = self.wanted_dids.clone();
            source.compress = self.compress;
        } else if self.compress || !self.wanted_dids.is_empty() {
            return Err(anyhow!("--compress/--wanted-dids: Jetstream only"));
        }
        if self.verify && source.kind != SourceKind::Firehose {
            return Err(anyhow!(
                "--verify: firehose only (Jetstream events carry no signatures)"
            ));
        }
        source.liveness_timeout = Duration::from_secs(self.liveness_secs.max(1));
        source
            .validate()
            .map_err(|e| anyhow!("--url/--wanted-dids: {e}"))?;
        self.relay_client()?;
        if self.batch_rows == 0 || self.batch_bytes == 0 || self.batch_age_ms == 0 {
            return Err(anyhow!(
                "--batch-rows/--batch-bytes/--batch-age-ms must be > 0"
            ));
        }
        let mut cfg = IndexerConfig::new(source, key);
        cfg.collections = collections;
        cfg.raw_records = self
            .raw_records
            .parse()
            .map_err(|e| anyhow!("--raw-records: {e}"))?;
        cfg.verify = self.verify;
        cfg.start_cursor = self.cursor;
        cfg.writer.max_rows = self.batch_rows;
        cfg.writer.max_bytes = self.batch_bytes;
        cfg.writer.max_age = Duration::from_millis(self.batch_age_ms);
        cfg.health_max_lag =
            (self.health_max_lag_secs > 0).then(|| Duration::from_secs(self.health_max_lag_secs));
        let resolver_cfg = skyhouse_identity::ResolverConfig {
            plc_url: self.plc.clone(),
            handles: self.handles.config()?,
            ..Default::default()
        };
        let resolver = || {
            skyhouse_identity::Resolver::new(resolver_cfg.clone())
                .map_err(|e| anyhow!("--plc: {e}"))
        };
        // Identities have a resolver of their own: a fresh resolution there
        // must not drop the keys' cached documents (nor the reverse).
        cfg.identity = Some(Arc::new(resolver()?));
        let keys: Option<Arc<dyn Keys>> = if self.verify {
            Some(Arc::new(ResolverKeys(resolver()?)))
        } else {
            None
        };
        Ok((cfg, keys))
    }
}

/// How long an ending indexer waits for its queued operations to reach the relay.
pub(crate) const RELAY_DRAIN: Duration = Duration::from_secs(10);

pub fn run(args: IndexerArgs) -> Result<ExitCode> {
    let (mut cfg, keys) = args.config().usage()?;
    let ch = args.clickhouse.connect()?;
    args.redis.validate()?;
    crate::service::runtime()?.block_on(async move {
        let svc = crate::service::start(
            args.metrics_addr,
            &args.redis,
            &ch,
            Some(crate::service::Writes {
                progress: cfg.writer.progress.clone(),
                stuck_after: args.clickhouse.stuck_after(),
            }),
            &["indexer", "source"],
            &args.shutdown,
            || skyhouse_pipeline::metrics::export_at_zero(cfg.source.kind),
        )
        .await?;
        let inflight = cfg.inflight.clone();
        svc.pending.describe_with(move || inflight.describe());
        let push = match args.relay_client()? {
            Some(relay) => {
                let (pusher, task) = skyhouse_relay::Pusher::connect(
                    &relay,
                    skyhouse_relay::pb::Source::Live,
                    svc.shutdown.child_token(),
                )
                .map_err(|e| anyhow!("--relay-url: {e}"))?;
                cfg.ops_tap = Some(Arc::new(pusher));
                Some(task)
            }
            None => None,
        };
        let summary = skyhouse_pipeline::run_with_health(
            cfg,
            ch,
            svc.state,
            keys,
            svc.shutdown.clone(),
            svc.health,
        )
        .await
        .map_err(|e| anyhow!("indexer: {e}"))?;
        if let Some(task) = push {
            let saved = summary.cursor;
            svc.pending.describe_with(move || {
                format!(
                    "every row acknowledged, operations still queued for --relay-url; cursor \
                     saved at {}",
                    saved.map_or("none".to_owned(), |c| c.to_string())
                )
            });
            // The pipeline dropped its pusher: let the queue reach the relay (bounded).
            if tokio::time::timeout(RELAY_DRAIN, task).await.is_err() {
                tracing::warn!("Relay push not drained in time; the rest is dropped.");
            }
        }
        svc.shutdown.cancel();
        // A log event (not a bare line) so that --log-format json stays pure JSON.
        tracing::info!(
            messages = summary.messages,
            ops = summary.ops,
            cursor = %summary.cursor.map_or("none".to_owned(), |c| c.to_string()),
            "Indexer stopped."
        );
        Ok(ExitCode::SUCCESS)
    })
}
