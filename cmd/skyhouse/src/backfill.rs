//! `skyhouse backfill`: enumerate repositories into the work queue, run
//! workers, show progress (see pkg/backfill).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use skyhouse_backfill::{WorkerConfig, BACKFILL_STREAM, DEAD_LIST, GROUP};

use crate::migrate::ClickHouseArgs;
use crate::redis_args::RedisArgs;

#[derive(Debug, Subcommand)]
pub enum BackfillCommand {
    /// Queue repositories: every DID a relay or PDS lists (listRepos), or given DIDs.
    Enqueue(EnqueueArgs),
    /// Process the queue (any number of processes on any number of machines).
    Work(Box<WorkArgs>),
    /// Queue depth, pending entries, repo_state counts and the dead-letter list length.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// Relay or PDS base URL to enumerate with com.atproto.sync.listRepos (resumable: the
    /// page cursor is kept in Redis until the listing completes).
    #[arg(long, env = "SKYHOUSE_BACKFILL_RELAY")]
    relay: Option<String>,
    /// File of DIDs, one per line (# comments allowed).
    #[arg(long)]
    dids: Option<PathBuf>,
    /// DIDs to queue (repeatable).
    #[arg(long = "did")]
    did: Vec<String>,
    #[command(flatten)]
    redis: RedisArgs,
}

#[derive(Debug, Args)]
pub struct WorkArgs {
    /// Repositories processed at the same time by this process.
    #[arg(long, env = "SKYHOUSE_BACKFILL_CONCURRENCY", default_value_t = 16)]
    concurrency: usize,
    /// Verify each snapshot commit's signature against the DID document.
    #[arg(long, env = "SKYHOUSE_VERIFY")]
    verify: bool,
    /// Also serve the live indexer's resync queue (tombstones records a snapshot lost).
    #[arg(long, env = "SKYHOUSE_BACKFILL_RESYNC")]
    resync: bool,
    /// PLC directory for did:plc resolution.
    #[arg(long, env = "PLC_URL", default_value = skyhouse_identity::DEFAULT_PLC_URL)]
    plc: String,
    /// Seconds an entry may sit unacknowledged on another worker before this one takes it over.
    #[arg(long, env = "SKYHOUSE_BACKFILL_CLAIM_IDLE_SECS", default_value_t = 300)]
    claim_idle: u64,
    /// Attempts per repository before it goes to the dead-letter list.
    #[arg(long, env = "SKYHOUSE_BACKFILL_MAX_ATTEMPTS", default_value_t = 5)]
    max_attempts: u32,
    /// Largest repository CAR accepted, in MiB.
    #[arg(long, env = "SKYHOUSE_BACKFILL_MAX_REPO_MB", default_value_t = 1024)]
    max_repo_mb: u64,
    /// Consumer name in the Redis group (unique per process). Default: <host>-<pid>.
    #[arg(long, env = "SKYHOUSE_BACKFILL_CONSUMER")]
    consumer: Option<String>,
    /// Exit once the queue is empty and nothing is pending (instead of waiting for more).
    #[arg(long)]
    drain: bool,
    /// Address of /metrics and /health.
    #[arg(long, env = "BACKFILL_METRICS_ADDR", default_value = "0.0.0.0:8096")]
    metrics_addr: SocketAddr,
    /// Also push every record operation to the gRPC relay at this URL (http://host:50051),
    /// tagged backfill. Best effort: dropped and counted while the relay is slow or down.
    #[arg(long, env = "BACKFILL_RELAY_URL")]
    relay_url: Option<String>,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    #[command(flatten)]
    redis: RedisArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    #[command(flatten)]
    redis: RedisArgs,
}

pub fn run(cmd: BackfillCommand) -> Result<ExitCode> {
    match cmd {
        BackfillCommand::Enqueue(a) => enqueue(a),
        BackfillCommand::Work(a) => work(*a),
        BackfillCommand::Status(a) => status(a),
    }
}

fn enqueue(args: EnqueueArgs) -> Result<ExitCode> {
    args.redis.validate()?;
    if args.relay.is_none() && args.dids.is_none() && args.did.is_empty() {
        return Err(anyhow!("give --relay URL, --dids FILE or --did DID"));
    }
    if let Some(r) = &args.relay {
        if !(r.starts_with("http://") || r.starts_with("https://")) {
            return Err(anyhow!("--relay {r:?}: expected an http(s):// URL"));
        }
    }
    let mut dids = args.did.clone();
    if let Some(f) = &args.dids {
        let text = std::fs::read_to_string(f).with_context(|| format!("--dids {}", f.display()))?;
        dids.extend(text.lines().map(str::to_owned));
    }
    if let Some(bad) = dids.iter().map(|d| d.trim()).find(|d| {
        !d.is_empty() && !d.starts_with('#') && !skyhouse_atproto::syntax::Did::is_valid(d)
    }) {
        return Err(anyhow!("--did/--dids: invalid DID {bad:?}"));
    }
    crate::service::runtime()?.block_on(async move {
        let state = args.redis.connect().await?;
        let queue = state.work_queue(BACKFILL_STREAM, GROUP);
        queue
            .create_group()
            .await
            .map_err(|e| anyhow!("--redis: {e}"))?;
        let mut n = skyhouse_backfill::enqueue_dids(&queue, &dids, "did")
            .await
            .map_err(|e| anyhow!("--did/--dids: {e}"))?;
        if let Some(relay) = &args.relay {
            let http = reqwest_client()?;
            n += skyhouse_backfill::enqueue_list_repos(&http, relay, &state, &queue)
                .await
                .map_err(|e| anyhow!("--relay: {e}"))?;
        }
        tracing::info!(repositories = n, "Backfill queued.");
        Ok(ExitCode::SUCCESS)
    })
}

fn reqwest_client() -> Result<skyhouse_backfill::reqwest::Client> {
    skyhouse_backfill::Fetcher::new(Duration::from_secs(60), 1)
        .map(|f| f.http().clone())
        .map_err(|e| anyhow!("{e}"))
}

fn work(args: WorkArgs) -> Result<ExitCode> {
    let consumer = args.consumer.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let mut cfg = WorkerConfig::new(consumer);
    cfg.concurrency = args.concurrency;
    cfg.verify = args.verify;
    cfg.resync = args.resync;
    cfg.claim_idle = Duration::from_secs(args.claim_idle);
    cfg.max_attempts = args.max_attempts;
    cfg.max_repo_bytes = args.max_repo_mb.saturating_mul(1 << 20);
    cfg.drain = args.drain;
    cfg.validate().map_err(|e| {
        anyhow!("--concurrency/--claim-idle/--max-attempts/--max-repo-mb/--consumer: {e}")
    })?;
    if let Some(url) = &args.relay_url {
        skyhouse_relay::check_relay_url(url).map_err(|e| anyhow!("--relay-url: {e}"))?;
    }
    let resolver = skyhouse_identity::Resolver::new(skyhouse_identity::ResolverConfig {
        plc_url: args.plc.clone(),
        ..Default::default()
    })
    .map_err(|e| anyhow!("--plc: {e}"))?;
    let ch = args.clickhouse.connect()?;
    args.redis.validate()?;
    crate::service::runtime()?.block_on(async move {
        let svc = crate::service::start(args.metrics_addr, &args.redis, &ch).await?;
        let (state, shutdown) = (svc.state, svc.shutdown);
        let push = match &args.relay_url {
            Some(url) => {
                let (pusher, task) = skyhouse_relay::Pusher::connect(
                    url,
                    skyhouse_relay::pb::Source::Backfill,
                    shutdown.child_token(),
                )
                .map_err(|e| anyhow!("--relay-url: {e}"))?;
                cfg.ops_tap = Some(Arc::new(pusher));
                Some(task)
            }
            None => None,
        };
        let summary = skyhouse_backfill::run(cfg, ch, state, Arc::new(resolver), shutdown.clone())
            .await
            .map_err(|e| anyhow!("backfill: {e}"))?;
        if let Some(task) = push {
            // The workers dropped their pusher: let the queue reach the relay (bounded).
            if tokio::time::timeout(crate::indexer::RELAY_DRAIN, task)
                .await
                .is_err()
            {
                tracing::warn!("Relay push not drained in time; the rest is dropped.");
            }
        }
        shutdown.cancel();
        let repos: Vec<String> = summary
            .repos
            .iter()
            .map(|(s, n)| format!("{} {n}", s.as_str()))
            .collect();
        tracing::info!(
            repositories = summary.repos.values().sum::<u64>(),
            by_status = %repos.join(", "),
            records = summary.records,
            tombstones = summary.tombstones,
            "Backfill workers stopped."
        );
        Ok(ExitCode::SUCCESS)
    })
}

fn status(args: StatusArgs) -> Result<ExitCode> {
    let ch = args.clickhouse.connect()?;
    args.redis.validate()?;
    crate::service::runtime()?.block_on(async move {
        let state = args.redis.connect().await?;
        let queue = state.work_queue(BACKFILL_STREAM, GROUP);
        let redis = |e: skyhouse_state::StateError| anyhow!("--redis: {e}");
        let depth = queue.len().await.map_err(redis)?;
        let pending = queue.pending().await.map(|p| p.0).unwrap_or(0);
        let dead = state.list_len(DEAD_LIST).await.map_err(redis)?;
        let sql = format!(
            "SELECT status, count() FROM {}.repo_state FINAL GROUP BY status ORDER BY status",
            ch.database()
        );
        let counts: Vec<(String, u64)> = ch
            .client()
            .query(&sql)
            .fetch_all()
            .await
            .map_err(|e| anyhow!("--clickhouse-address: repo_state: {e}"))?;
        println!("queue\t{depth}");
        println!("pending\t{pending}");
        println!("dead\t{dead}");
        for (s, n) in counts {
            println!("{s}\t{n}");
        }
        Ok(ExitCode::SUCCESS)
    })
}
