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
use crate::Usage;

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
    /// Relay whose hosts (com.atproto.sync.listHosts) are each enumerated with their own
    /// listRepos, one page per host in turn (resumable per host).
    #[arg(long, env = "SKYHOUSE_BACKFILL_HOSTS_FROM")]
    hosts_from: Option<String>,
    /// Most hosts taken from --hosts-from.
    #[arg(long, default_value_t = 100_000)]
    max_hosts: usize,
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
    /// Most getRepo requests in flight to one PDS host from this process.
    #[arg(long, env = "SKYHOUSE_BACKFILL_PER_HOST", default_value_t = 8)]
    per_host: usize,
    /// Seconds a DID's PDS and claimed handle, and a handle's DID, are kept in the Redis cache
    /// shared by every worker (0 = off).
    #[arg(
        long,
        env = "SKYHOUSE_BACKFILL_DID_CACHE_SECS",
        default_value_t = 21600
    )]
    did_cache_secs: u64,
    /// Skip hosts `skyhouse monitor` found down at its newest check (needs the monitor
    /// writing to the same ClickHouse database): their repositories go back to the end of
    /// the queue. The value is how old (seconds) a check may be to count.
    #[arg(
        long,
        env = "SKYHOUSE_BACKFILL_SKIP_DOWN_HOSTS_SECS",
        default_value_t = 0
    )]
    skip_down_hosts_secs: u64,
    /// Show a progress line on the terminal (repositories, records/s, ETA): auto = only when
    /// stderr is a terminal.
    #[arg(long, value_enum, default_value = "auto")]
    progress: Progress,
    /// Verify each snapshot commit's signature against the DID document.
    #[arg(long, env = "SKYHOUSE_VERIFY")]
    verify: bool,
    /// Which rows of `records` keep the record's JSON: all, untyped (only collections
    /// without a typed table), none (as the indexer's --raw-records).
    #[arg(long, env = "SKYHOUSE_BACKFILL_RAW_RECORDS", default_value = "all", value_parser = ["all", "untyped", "none"])]
    raw_records: String,
    /// Also serve the live indexer's resync queue (tombstones records a snapshot lost).
    #[arg(long, env = "SKYHOUSE_BACKFILL_RESYNC")]
    resync: bool,
    /// PLC directory for did:plc resolution.
    #[arg(long, env = "PLC_URL", default_value = skyhouse_identity::DEFAULT_PLC_URL)]
    plc: String,
    #[command(flatten)]
    handles: crate::handle_args::HandleArgs,
    /// Also verify again, in one process at a time, every identity (handle) older than this
    /// many seconds: a walk over `identities` beside the workers (0 = off).
    #[arg(long, env = "SKYHOUSE_IDENTITY_REFRESH_SECS", default_value_t = 0)]
    identity_refresh_secs: u64,
    /// Seconds an entry may sit unacknowledged on another worker before this one takes it over.
    #[arg(long, env = "SKYHOUSE_BACKFILL_CLAIM_IDLE_SECS", default_value_t = 300)]
    claim_idle: u64,
    /// Attempts per repository before it goes to the dead-letter list.
    #[arg(long, env = "SKYHOUSE_BACKFILL_MAX_ATTEMPTS", default_value_t = 5)]
    max_attempts: u32,
    /// Close a ClickHouse batch at this many rows (`just bench-backfill`: 200k rows / 64 MiB
    /// cut ClickHouse's CPU by ~40% against 100k / 32 MiB, peak RSS stays under 1 GB with a
    /// 300 MB repository in flight).
    #[arg(
        long,
        env = "SKYHOUSE_BACKFILL_BATCH_ROWS",
        default_value_t = skyhouse_backfill::BATCH_ROWS
    )]
    batch_rows: usize,
    /// Close a ClickHouse batch at this many bytes.
    #[arg(
        long,
        env = "SKYHOUSE_BACKFILL_BATCH_BYTES",
        default_value_t = skyhouse_backfill::BATCH_BYTES
    )]
    batch_bytes: usize,
    /// Close a ClickHouse batch this many milliseconds after its first row.
    #[arg(
        long,
        env = "SKYHOUSE_BACKFILL_BATCH_AGE_MS",
        default_value_t = skyhouse_backfill::BATCH_AGE.as_millis() as u64
    )]
    batch_age_ms: u64,
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
    /// Token of --relay-url with the publish scope (`skyhouse relay token create --scope
    /// publish`). Prefer the environment variable: a flag shows in `ps`.
    #[arg(
        long,
        env = "BACKFILL_RELAY_TOKEN",
        hide_env_values = true,
        requires = "relay_url"
    )]
    relay_token: Option<String>,
    /// https:// --relay-url: the CA certificate(s) to trust (PEM). Default: the public (webpki) roots.
    #[arg(long, env = "BACKFILL_RELAY_CA", requires = "relay_url")]
    relay_ca: Option<PathBuf>,
    /// https:// --relay-url that requires client certificates: this certificate (PEM) …
    #[arg(
        long,
        env = "BACKFILL_RELAY_CLIENT_CERT",
        requires = "relay_client_key"
    )]
    relay_client_cert: Option<PathBuf>,
    /// … and its private key (PEM).
    #[arg(
        long,
        env = "BACKFILL_RELAY_CLIENT_KEY",
        requires = "relay_client_cert"
    )]
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

impl WorkArgs {
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

/// When `backfill work` draws its progress line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Progress {
    /// When stderr is a terminal.
    Auto,
    /// Always (also into a file or pipe).
    Always,
    /// Never.
    Never,
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
    let dids = enqueue_dids(&args).usage()?;
    crate::service::runtime()?.block_on(async move {
        let state = args.redis.connect_now().await?;
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
        let mut failed = Vec::new();
        if let Some(relay) = &args.hosts_from {
            let http = reqwest_client()?;
            let q = skyhouse_backfill::enqueue_hosts(&http, relay, args.max_hosts, &state, &queue)
                .await
                .map_err(|e| anyhow!("--hosts-from: {e}"))?;
            tracing::info!(
                hosts = q.hosts,
                repositories = q.dids,
                failed = q.failed.len(),
                "Hosts listed."
            );
            n += q.dids;
            failed = q.failed;
        }
        tracing::info!(repositories = n, "Backfill queued.");
        if !failed.is_empty() {
            eprintln!(
                "--hosts-from: {} host(s) failed; run the same command again to resume them: {}",
                failed.len(),
                failed.join("; ")
            );
            return Ok(ExitCode::FAILURE);
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Every flag of `backfill enqueue` checked and the DIDs to queue read (from
/// --did and the --dids file), before any I/O.
fn enqueue_dids(args: &EnqueueArgs) -> Result<Vec<String>> {
    args.redis.validate()?;
    if args.relay.is_none()
        && args.hosts_from.is_none()
        && args.dids.is_none()
        && args.did.is_empty()
    {
        return Err(anyhow!(
            "give --relay URL, --hosts-from URL, --dids FILE or --did DID"
        ));
    }
    for (flag, url) in [("--relay", &args.relay), ("--hosts-from", &args.hosts_from)] {
        if let Some(r) = url {
            if !(r.starts_with("http://") || r.starts_with("https://")) {
                return Err(anyhow!("{flag} {r:?}: expected an http(s):// URL"));
            }
        }
    }
    if args.max_hosts == 0 {
        return Err(anyhow!("--max-hosts must be > 0"));
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
    Ok(dids)
}

fn reqwest_client() -> Result<skyhouse_backfill::reqwest::Client> {
    skyhouse_backfill::Fetcher::new(Duration::from_secs(60), 1)
        .map(|f| f.http().clone())
        .map_err(|e| anyhow!("{e}"))
}

/// What `backfill work` runs with: its settings, DID resolver, ClickHouse
/// handle and whether to draw the progress line.
type WorkSetup = (
    WorkerConfig,
    skyhouse_identity::Resolver,
    skyhouse_store::ClickHouse,
    bool,
);

/// Every flag of `backfill work` checked, before any I/O.
fn work_config(args: &WorkArgs) -> Result<WorkSetup> {
    let consumer = args.consumer.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let mut cfg = WorkerConfig::new(consumer);
    cfg.concurrency = args.concurrency;
    cfg.per_host = args.per_host;
    cfg.did_cache_ttl = Duration::from_secs(args.did_cache_secs);
    if args.batch_rows == 0 || args.batch_bytes == 0 || args.batch_age_ms == 0 {
        return Err(anyhow!(
            "--batch-rows/--batch-bytes/--batch-age-ms must be > 0"
        ));
    }
    cfg.writer.max_rows = args.batch_rows;
    cfg.writer.max_bytes = args.batch_bytes;
    cfg.writer.max_age = Duration::from_millis(args.batch_age_ms);
    cfg.verify = args.verify;
    cfg.raw_records = args
        .raw_records
        .parse()
        .map_err(|e| anyhow!("--raw-records: {e}"))?;
    cfg.resync = args.resync;
    cfg.claim_idle = Duration::from_secs(args.claim_idle);
    cfg.max_attempts = args.max_attempts;
    cfg.max_repo_bytes = args.max_repo_mb.saturating_mul(1 << 20);
    cfg.drain = args.drain;
    if args.identity_refresh_secs > 0 {
        cfg.identity_refresh = Some(skyhouse_backfill::RefreshConfig::new(
            Duration::from_secs(args.identity_refresh_secs),
            cfg.consumer.clone(),
        ));
    }
    cfg.validate().map_err(|e| {
        anyhow!(
            "--concurrency/--per-host/--claim-idle/--max-attempts/--max-repo-mb/--consumer: {e}"
        )
    })?;
    if args.did_cache_secs > 24 * 3600 {
        return Err(anyhow!(
            "--did-cache-secs {}: at most 86400 (a day)",
            args.did_cache_secs
        ));
    }
    args.relay_client()?;
    let resolver = skyhouse_identity::Resolver::new(skyhouse_identity::ResolverConfig {
        plc_url: args.plc.clone(),
        handles: args.handles.config()?,
        ..Default::default()
    })
    .map_err(|e| anyhow!("--plc: {e}"))?;
    let ch = args.clickhouse.connect()?;
    if args.skip_down_hosts_secs > 0 {
        let max_age = Duration::from_secs(args.skip_down_hosts_secs);
        // Re-read at most every 10 s (or the window, if shorter).
        let refresh = max_age.min(Duration::from_secs(10));
        cfg.host_health = Some(skyhouse_backfill::UnhealthyHosts::new(
            ch.clone(),
            max_age,
            refresh,
        ));
    }
    let show_progress = match args.progress {
        Progress::Auto => std::io::IsTerminal::is_terminal(&std::io::stderr()),
        Progress::Always => true,
        Progress::Never => false,
    };
    args.redis.validate()?;
    Ok((cfg, resolver, ch, show_progress))
}

fn work(args: WorkArgs) -> Result<ExitCode> {
    let (mut cfg, resolver, ch, show_progress) = work_config(&args).usage()?;
    crate::service::runtime()?.block_on(async move {
        let svc = crate::service::start(
            args.metrics_addr,
            &args.redis,
            &ch,
            Some(crate::service::Writes {
                progress: cfg.writer.progress.clone(),
                stuck_after: args.clickhouse.stuck_after(),
            }),
            &[],
            &args.shutdown,
            skyhouse_backfill::metrics::describe,
        )
        .await?;
        let counts = cfg.progress.clone();
        svc.pending.describe_with(move || {
            let n = counts.in_flight.load(std::sync::atomic::Ordering::Relaxed);
            if n == 0 {
                "every repository taken acknowledged, the writer still finishing".to_owned()
            } else {
                format!(
                    "{n} repositories not written and acknowledged (their queue entries stay \
                     pending; a worker takes them over after --claim-idle)"
                )
            }
        });
        let progress = show_progress.then(|| {
            tokio::spawn(progress_line(
                cfg.progress.clone(),
                svc.state.work_queue(BACKFILL_STREAM, GROUP),
                svc.shutdown.clone(),
            ))
        });
        let (state, shutdown) = (svc.state, svc.shutdown);
        let push = match args.relay_client()? {
            Some(relay) => {
                let (pusher, task) = skyhouse_relay::Pusher::connect(
                    &relay,
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
        if let Some(p) = progress {
            let _ = p.await;
        }
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

/// One line on stderr: repositories done by this process, the queue left,
/// records/s and an ETA at this process's rate. On a terminal it is redrawn
/// in place every second; into a file or pipe, a new line every 10 s. A last
/// line at shutdown.
async fn progress_line(
    progress: Arc<skyhouse_backfill::Progress>,
    queue: skyhouse_backfill::WorkQueue,
    shutdown: skyhouse_backfill::CancellationToken,
) {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let every = Duration::from_secs(if terminal { 1 } else { 10 });
    let started = std::time::Instant::now();
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let mut left = 0u64;
    let mut last_len = std::time::Instant::now() - Duration::from_secs(60);
    loop {
        let last = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tick.tick() => false,
        };
        if last || last_len.elapsed() >= Duration::from_secs(5) {
            left = queue.len().await.unwrap_or(left);
            last_len = std::time::Instant::now();
        }
        let line = progress_text(
            progress.repos.load(Ordering::Relaxed),
            progress.records.load(Ordering::Relaxed),
            left,
            started.elapsed(),
        );
        let mut err = std::io::stderr().lock();
        let _ = if terminal {
            write!(err, "\r\x1b[2K{line}{}", if last { "\n" } else { "" })
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
        if last {
            return;
        }
    }
}

/// The progress line's text.
fn progress_text(repos: u64, records: u64, left: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let repos_rate = repos as f64 / secs;
    let eta = if left == 0 {
        "-".to_string()
    } else if repos_rate > 0.0 {
        let s = (left as f64 / repos_rate).round() as u64;
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        "?".to_string()
    };
    format!(
        "backfill: {repos} repos done, {left} queued | {repos_rate:.1} repos/s, {:.0} records/s | ETA {eta}",
        records as f64 / secs
    )
}

fn status(args: StatusArgs) -> Result<ExitCode> {
    let ch = args.clickhouse.connect()?;
    args.redis.validate()?;
    crate::service::runtime()?.block_on(async move {
        let state = args.redis.connect_now().await?;
        let queue = state.work_queue(BACKFILL_STREAM, GROUP);
        let redis = |e: skyhouse_state::StateError| anyhow!("--redis: {e}");
        let depth = queue.len().await.map_err(redis)?;
        let pending = queue.pending().await.map(|p| p.0).unwrap_or(0);
        let dead = state.list_len(DEAD_LIST).await.map_err(redis)?;
        // Repositories finished in the last minute, over every worker.
        let explain = |e| args.clickhouse.explain("repo_state", e);
        let last_minute = skyhouse_store::repos::finished_since(&ch, 60)
            .await
            .map_err(explain)?;
        let counts = skyhouse_store::repos::status_counts(&ch)
            .await
            .map_err(explain)?;
        println!("queue\t{depth}");
        println!("pending\t{pending}");
        println!("dead\t{dead}");
        println!("last_minute\t{last_minute}");
        println!("rate\t{:.2}/s", last_minute as f64 / 60.0);
        for (s, n) in counts {
            println!("{s}\t{n}");
        }
        Ok(ExitCode::SUCCESS)
    })
}
