//! The workers: queue entries → repositories → rows → ClickHouse → ack.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use skyhouse_atproto::car::{CarError, CarOptions};
use skyhouse_atproto::repo::{Repo, RepoError};
use skyhouse_identity::Identity;
use skyhouse_identity::Resolver;
use skyhouse_state::{State, WorkEntry, WorkQueue};
use skyhouse_store::cleanup::now_version;
use skyhouse_store::repos::{self, RepoStateRow};
use skyhouse_store::writer::{self, Ack, WriterConfig};
use skyhouse_store::{ClickHouse, Retry, WriteProgress};
use skyhouse_transform::{AccountRow, Action, IdentityRow, Op, Rows};
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

use crate::fetch::{Fetched, Fetcher};
use crate::hosts::{DidInfo, Hosts, PdsCache};
use crate::{
    BackfillError, Progress, BACKFILL_STREAM, BATCH_AGE, BATCH_BYTES, BATCH_ROWS, DEAD_LIST, GROUP,
};

/// Settings of [`run`].
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Repositories processed at the same time. Default 16.
    pub concurrency: usize,
    /// Check each commit's signature against the DID document. Default off.
    pub verify: bool,
    /// Also serve the indexer's resync stream (`<prefix>resync`). Default off.
    pub resync: bool,
    /// Entries pending this long on another consumer are taken over.
    /// Default 5 min. Live workers reset the idle time of the repositories
    /// they work on every third of this, so only a dead worker's are taken.
    pub claim_idle: Duration,
    /// Attempts per repository before it goes to the dead-letter list. Default 5.
    pub max_attempts: u32,
    /// First retry delay (doubles per attempt, see `retry_max`). Default 1 s.
    pub retry_base: Duration,
    /// Longest retry delay, and the longest `Retry-After` honoured. Default 5 min.
    pub retry_max: Duration,
    /// Largest repository CAR accepted, in bytes. Default 1 GiB.
    pub max_repo_bytes: u64,
    /// CAR blocks kept in memory per repository before spilling to a
    /// temporary file. Default 64 MiB.
    pub memory_cap: usize,
    /// `getRepo` timeout. Default 10 min (a large repository is slow).
    pub fetch_timeout: Duration,
    /// This process's consumer name in the group (unique per process).
    pub consumer: String,
    /// Batch writer limits. Default [`BATCH_ROWS`] / [`BATCH_BYTES`] /
    /// [`BATCH_AGE`].
    pub writer: WriterConfig,
    /// Return once both queues are empty with nothing pending (tests, one-shot
    /// runs). Default off: keep polling until shutdown.
    pub drain: bool,
    /// Sleep between polls of an empty queue. Default 500 ms.
    pub poll: Duration,
    /// Also hand every record row to this sink (the gRPC relay,
    /// `--relay-url`); it must not block. Default: none.
    pub ops_tap: Option<Arc<dyn skyhouse_transform::OpsTap>>,
    /// Which `records` rows keep the record's JSON (`--raw-records`).
    /// Default all.
    pub raw_records: skyhouse_transform::RawRecords,
    /// Most `getRepo` requests in flight to one host from this process.
    /// Default 8.
    pub per_host: usize,
    /// How long a DID → PDS answer is kept in Redis for every worker; zero
    /// turns the shared cache off. Default 6 h.
    pub did_cache_ttl: Duration,
    /// The monitor's view of host health (`skyhouse monitor`): repositories
    /// on a host found down go back to the end of the queue. Default: none.
    pub host_health: Option<skyhouse_monitor::UnhealthyHosts>,
    /// Totals updated as repositories finish (for a progress display).
    pub progress: Arc<Progress>,
    /// CARs larger than this (or of unknown size) are parsed while they
    /// download instead of being read whole first. Default 16 MiB.
    pub stream_above: u64,
    /// Also walk `identities` and verify again those older than the
    /// interval (`--identity-refresh-secs`), in one process at a time (a
    /// lease in Redis). Default: off.
    pub identity_refresh: Option<crate::RefreshConfig>,
}

impl WorkerConfig {
    /// Defaults with consumer name `consumer`.
    pub fn new(consumer: impl Into<String>) -> WorkerConfig {
        WorkerConfig {
            concurrency: 16,
            verify: false,
            resync: false,
            claim_idle: Duration::from_secs(300),
            max_attempts: 5,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            max_repo_bytes: 1 << 30,
            memory_cap: 64 << 20,
            fetch_timeout: Duration::from_secs(600),
            consumer: consumer.into(),
            writer: WriterConfig {
                max_rows: BATCH_ROWS,
                max_bytes: BATCH_BYTES,
                max_age: BATCH_AGE,
                ..WriterConfig::default()
            },
            drain: false,
            poll: Duration::from_millis(500),
            ops_tap: None,
            raw_records: skyhouse_transform::RawRecords::All,
            per_host: 8,
            did_cache_ttl: Duration::from_secs(6 * 3600),
            host_health: None,
            progress: Arc::default(),
            stream_above: 16 << 20,
            identity_refresh: None,
        }
    }

    /// Check the settings before any I/O.
    pub fn validate(&self) -> Result<(), BackfillError> {
        let bad = |s: &str| Err(BackfillError::Config(s.to_string()));
        if self.concurrency == 0 {
            return bad("concurrency must be > 0");
        }
        if self.per_host == 0 {
            return bad("per-host limit must be > 0");
        }
        if self.max_attempts == 0 {
            return bad("max attempts must be > 0");
        }
        if self.claim_idle < Duration::from_millis(100) {
            return bad("claim idle must be at least 100 ms");
        }
        if self.max_repo_bytes == 0 || self.memory_cap == 0 {
            return bad("repository size cap and memory cap must be > 0");
        }
        if self.consumer.trim().is_empty() {
            return bad("consumer name must not be empty");
        }
        if let Some(r) = &self.identity_refresh {
            if r.interval.is_zero() || r.chunk == 0 || r.concurrency == 0 {
                return bad("identity refresh interval, chunk and concurrency must be > 0");
            }
        }
        Ok(())
    }
}

/// How a repository ended, as stored in `repo_state.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RepoStatus {
    /// Indexed from its snapshot.
    Done,
    /// The owner deactivated the account: nothing fetched.
    Deactivated,
    /// The host took the account down.
    Takendown,
    /// The host suspended the account.
    Suspended,
    /// No such repository (or DID).
    NotFound,
    /// Failed `max_attempts` times (also in the dead-letter list).
    Failed,
}

impl RepoStatus {
    /// Every status (the closed label set of `skyhouse_backfill_repos_total`).
    pub const ALL: [RepoStatus; 6] = [
        RepoStatus::Done,
        RepoStatus::Deactivated,
        RepoStatus::Takendown,
        RepoStatus::Suspended,
        RepoStatus::NotFound,
        RepoStatus::Failed,
    ];

    /// The `repo_state.status` string.
    pub fn as_str(self) -> &'static str {
        match self {
            RepoStatus::Done => "done",
            RepoStatus::Deactivated => "deactivated",
            RepoStatus::Takendown => "takendown",
            RepoStatus::Suspended => "suspended",
            RepoStatus::NotFound => "not_found",
            RepoStatus::Failed => "failed",
        }
    }

    fn from_unavailable(s: &str) -> RepoStatus {
        match s {
            "deactivated" => RepoStatus::Deactivated,
            "takendown" => RepoStatus::Takendown,
            "suspended" => RepoStatus::Suspended,
            _ => RepoStatus::NotFound,
        }
    }
}

/// What [`run`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Repositories acknowledged, by status.
    pub repos: BTreeMap<RepoStatus, u64>,
    /// Records written.
    pub records: u64,
    /// Resync tombstones written.
    pub tombstones: u64,
}

/// A repository whose rows are all sent, waiting for their batch's ack.
#[derive(Debug)]
struct Finished {
    job: u64,
    resync: bool,
    id: String,
    status: RepoStatus,
    row: RepoStateRow,
    tombstones: u64,
}

type RowsTx = mpsc::Sender<(Rows, u64)>;

/// The writer's input, numbered: positions are handed out under the lock in
/// channel order, so an ack with `upto >= n` covers every chunk sent up to n.
#[derive(Debug, Clone)]
struct Rowsink {
    /// The last position handed out, and the writer's input.
    inner: Arc<Mutex<(u64, RowsTx)>>,
    /// The relay's copy of the record rows (`WorkerConfig::ops_tap`).
    tap: Option<Arc<dyn skyhouse_transform::OpsTap>>,
    /// `WorkerConfig::raw_records`.
    raw_records: skyhouse_transform::RawRecords,
    /// The chunks' buffers, given back by the writer once copied.
    recycler: skyhouse_transform::Recycler,
}

impl Rowsink {
    /// Empty rows that keep what the tap (if any) asks for, and the JSON
    /// `--raw-records` names, in buffers the writer gave back if it did.
    fn new_rows(&self) -> Rows {
        let mut rows = Rows::for_writer(self.raw_records, self.tap.as_deref());
        rows.recycle_via(&self.recycler);
        rows
    }

    async fn send(&self, mut rows: Rows) -> Result<u64, BackfillError> {
        if let Some(tap) = &self.tap {
            tap.offer(&rows);
            rows.tap = Vec::new();
        }
        let mut g = self.inner.lock().await;
        g.0 += 1;
        let n = g.0;
        g.1.send((rows, n)).await.map_err(|_| closed())?;
        Ok(n)
    }

    fn blocking_send(&self, mut rows: Rows) -> Result<u64, BackfillError> {
        if let Some(tap) = &self.tap {
            tap.offer(&rows);
            rows.tap = Vec::new();
        }
        let mut g = self.inner.blocking_lock();
        g.0 += 1;
        let n = g.0;
        g.1.blocking_send((rows, n)).map_err(|_| closed())?;
        Ok(n)
    }
}

fn closed() -> BackfillError {
    BackfillError::WriterStopped
}

/// Rows per chunk sent to the writer while walking one repository: bounds a
/// worker's memory to about this plus its CAR (≤ `memory_cap` in memory).
const CHUNK_BYTES: usize = 4 << 20;

struct Ctx {
    cfg: WorkerConfig,
    ch: ClickHouse,
    state: State,
    backfill: WorkQueue,
    resync: WorkQueue,
    resolver: Arc<Resolver>,
    fetcher: Fetcher,
    hosts: Hosts,
    pds: PdsCache,
    sink: Rowsink,
    done: mpsc::Sender<Finished>,
    /// Repositories whose rows are sent and whose handle check has not
    /// answered: `PENDING_PER_WORKER` permits per worker.
    pending: Arc<tokio::sync::Semaphore>,
}

impl Ctx {
    fn queue(&self, resync: bool) -> &WorkQueue {
        if resync {
            &self.resync
        } else {
            &self.backfill
        }
    }
}

/// How many repositories per worker may wait for their handle check after
/// their rows are sent (each holds its entry's claim and a little memory,
/// not its CAR).
const PENDING_PER_WORKER: usize = 32;

/// Run workers until `shutdown` (or, with `drain`, until the queues are
/// empty and nothing is pending). Entries still in flight at shutdown stay
/// pending and are claimed by a worker later.
pub async fn run(
    cfg: WorkerConfig,
    ch: ClickHouse,
    state: State,
    resolver: Arc<Resolver>,
    shutdown: CancellationToken,
) -> Result<Summary, BackfillError> {
    cfg.validate()?;
    crate::metrics::describe();
    let backfill = state.work_queue(BACKFILL_STREAM, GROUP);
    let resync = state.work_queue(skyhouse_state::RESYNC_STREAM, GROUP);
    backfill.create_group().await?;
    if cfg.resync {
        resync.create_group().await?;
    }
    let fetcher = Fetcher::new(cfg.fetch_timeout, cfg.max_repo_bytes)?;
    // Chunks of ≤ CHUNK_BYTES: at most ~2 per worker waiting.
    let (rows_tx, rows_rx) = mpsc::channel(cfg.concurrency * 2);
    let (ack_tx, ack_rx) = mpsc::channel::<Ack<u64>>(64);
    let (done_tx, done_rx) = mpsc::channel(cfg.concurrency * 4);
    let writer = tokio::spawn(writer::run(ch.clone(), cfg.writer.clone(), rows_rx, ack_tx));
    let ctx = Arc::new(Ctx {
        sink: Rowsink {
            inner: Arc::new(Mutex::new((0, rows_tx))),
            tap: cfg.ops_tap.clone(),
            raw_records: cfg.raw_records,
            recycler: skyhouse_transform::Recycler::default(),
        },
        done: done_tx,
        pending: Arc::new(tokio::sync::Semaphore::new(
            cfg.concurrency * PENDING_PER_WORKER,
        )),
        backfill: backfill.clone(),
        resync: resync.clone(),
        hosts: Hosts::new(cfg.per_host),
        pds: PdsCache::new(state.clone(), cfg.did_cache_ttl),
        cfg,
        ch: ch.clone(),
        state,
        resolver,
        fetcher,
    });
    let acker = tokio::spawn(acker(
        Settle {
            ch,
            retry: ctx.cfg.writer.retry,
            progress: ctx.cfg.writer.progress.clone(),
        },
        backfill,
        resync,
        ack_rx,
        done_rx,
        Heartbeat {
            consumer: ctx.cfg.consumer.clone(),
            every: ctx.cfg.claim_idle / 3,
        },
        ctx.cfg.progress.clone(),
    ));
    // The identities walk, beside the workers until they stop.
    let walk_stop = shutdown.child_token();
    let walk = ctx.cfg.identity_refresh.clone().map(|refresh| {
        let (ch, state, resolver) = (ctx.ch.clone(), ctx.state.clone(), ctx.resolver.clone());
        let cache = PdsCache::new(state.clone(), ctx.cfg.did_cache_ttl);
        let writer = ctx.cfg.writer.clone();
        let stop = walk_stop.clone();
        tokio::spawn(async move {
            let walk = crate::refresh::Walk {
                cfg: &refresh,
                ch: &ch,
                state: &state,
                resolver: &resolver,
                cache: &cache,
                writer: &writer,
            };
            crate::refresh::run(walk, stop).await;
        })
    });
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..ctx.cfg.concurrency {
        tasks.spawn(worker(ctx.clone(), i, shutdown.clone()));
    }
    drop(ctx);
    let mut first_err = None;
    while let Some(r) = tasks.join_next().await {
        if let Ok(Err(e)) = r {
            first_err.get_or_insert(e);
            shutdown.cancel();
        }
    }
    walk_stop.cancel();
    if let Some(walk) = walk {
        let _ = walk.await;
    }
    // Every sender is gone: the writer flushes and stops, then the acker.
    let w = writer
        .await
        .map_err(|e| BackfillError::Config(format!("writer task: {e}")))?;
    let summary = acker
        .await
        .map_err(|e| BackfillError::Config(format!("acker task: {e}")))??;
    w?;
    match first_err {
        Some(e) => Err(e),
        None => Ok(summary),
    }
}

async fn worker(
    ctx: Arc<Ctx>,
    index: usize,
    shutdown: CancellationToken,
) -> Result<(), BackfillError> {
    let cfg = &ctx.cfg;
    let mut last_claim = Instant::now();
    let mut last_depth = Instant::now() - Duration::from_secs(60);
    while !shutdown.is_cancelled() {
        let next = match next_entry(&ctx, &mut last_claim).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "reading the work queue failed; retrying.");
                None
            }
        };
        if index == 0 && last_depth.elapsed() > Duration::from_secs(5) {
            if let Ok(n) = ctx.backfill.len().await {
                crate::metrics::queue_depth(n);
            }
            last_depth = Instant::now();
        }
        let Some((entry, resync)) = next else {
            if cfg.drain && queues_idle(&ctx).await.unwrap_or(false) {
                return Ok(());
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(cfg.poll) => {}
            }
            continue;
        };
        let queue = ctx.queue(resync);
        cfg.progress.in_flight.fetch_add(1, Ordering::Relaxed);
        let every = cfg.claim_idle / 3;
        let work = process(&ctx, &entry, resync);
        let outcome = heartbeating(queue, &cfg.consumer, &entry, every, work).await?;
        match outcome {
            Some(o) if o.waits() => {
                // The handle check has not answered: the rest waits for it
                // on a task of its own, and this worker takes the next
                // repository (at most `PENDING_PER_WORKER` per worker wait).
                let permit = ctx
                    .pending
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| closed())?;
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let (queue, entry) = (ctx.queue(o.resync), o.entry.clone());
                    let finish = o.finish(&ctx);
                    let every = ctx.cfg.claim_idle / 3;
                    match heartbeating(queue, &ctx.cfg.consumer, &entry, every, finish).await {
                        Ok(f) => {
                            let _ = ctx.done.send(f).await;
                        }
                        // Only a stopped writer: the entry stays pending.
                        Err(e) => {
                            tracing::warn!(did = entry.did, error = %e, "repository not finished")
                        }
                    }
                });
            }
            Some(o) => {
                let f = o.finish(&ctx).await?;
                if ctx.done.send(f).await.is_err() {
                    return Err(closed());
                }
            }
            // Deferred: back off a little so a queue holding only repositories
            // of down hosts is not spun through.
            None => {
                cfg.progress.in_flight.fetch_sub(1, Ordering::Relaxed);
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(cfg.poll) => {}
                }
            }
        }
    }
    Ok(())
}

/// The next entry: resync first, then entries idle on another consumer
/// (every `claim_idle`, or when nothing new is queued), then new entries.
async fn next_entry(
    ctx: &Ctx,
    last_claim: &mut Instant,
) -> Result<Option<(WorkEntry, bool)>, BackfillError> {
    let cfg = &ctx.cfg;
    if cfg.resync {
        if let Some(e) = ctx.resync.read(&cfg.consumer, 1).await?.pop() {
            return Ok(Some((e, true)));
        }
    }
    let claim_due = last_claim.elapsed() >= cfg.claim_idle;
    if claim_due {
        if let Some(c) = claim(ctx, last_claim).await? {
            return Ok(Some(c));
        }
    }
    if let Some(e) = ctx.backfill.read(&cfg.consumer, 1).await?.pop() {
        return Ok(Some((e, false)));
    }
    if claim_due {
        return Ok(None);
    }
    claim(ctx, last_claim).await
}

async fn claim(
    ctx: &Ctx,
    last_claim: &mut Instant,
) -> Result<Option<(WorkEntry, bool)>, BackfillError> {
    let cfg = &ctx.cfg;
    *last_claim = Instant::now();
    let mut found = ctx
        .backfill
        .claim_idle(&cfg.consumer, cfg.claim_idle, 1)
        .await?
        .pop()
        .map(|e| (e, false));
    if found.is_none() && cfg.resync {
        found = ctx
            .resync
            .claim_idle(&cfg.consumer, cfg.claim_idle, 1)
            .await?
            .pop()
            .map(|e| (e, true));
    }
    if let Some((e, _)) = &found {
        crate::metrics::claimed(1);
        tracing::info!(did = e.did, "took over an idle entry");
    }
    Ok(found)
}

/// Nothing pending in any queue served (called right after a read found
/// nothing new).
async fn queues_idle(ctx: &Ctx) -> Result<bool, BackfillError> {
    if ctx.backfill.pending().await?.0 > 0 {
        return Ok(false);
    }
    if ctx.cfg.resync && ctx.resync.pending().await?.0 > 0 {
        return Ok(false);
    }
    Ok(true)
}

fn now_secs() -> u32 {
    u32::try_from((now_version() >> 10) / 1_000_000).unwrap_or(u32::MAX)
}

/// What one attempt found.
struct Attempt {
    status: RepoStatus,
    rev: String,
    rev_version: u64,
    records: u64,
    tombstones: u64,
    /// The DID's identity (its document's handle, checked), when the
    /// document could be had: a check that may still be running.
    identity: Option<PendingIdentity>,
    /// The account's hosting status: active when `getRepo` served the
    /// repository, else what `getRepoStatus` (or `getRepo`'s error) said.
    account: Option<AccountRow>,
}

impl Attempt {
    /// An attempt that fetched nothing.
    fn unavailable(status: RepoStatus) -> Attempt {
        Attempt {
            status,
            rev: String::new(),
            rev_version: 0,
            records: 0,
            tombstones: 0,
            identity: None,
            account: None,
        }
    }

    /// The `identities` and `accounts` rows this attempt learnt, once its
    /// handle check has answered.
    async fn rows(&mut self) -> Rows {
        let mut rows = Rows::default();
        let identity = match self.identity.take() {
            Some(pending) => pending.wait().await,
            None => None,
        };
        if let Some(id) = &identity {
            crate::metrics::identity(id.status.as_str());
            rows.push_identity(IdentityRow {
                did: id.did.clone(),
                handle: id.handle.clone(),
                version: id.version(),
                indexed_at: now_secs(),
            });
        }
        if let Some(account) = &self.account {
            rows.push_account(account.clone());
        }
        rows
    }
}

/// A handle check running on its own task, beside the repository's
/// download and walk: a slow or silent handle domain (each check may wait
/// out its DNS and HTTP timeouts) holds no worker. Aborted if dropped.
struct PendingIdentity(tokio::task::JoinHandle<Identity>);

impl PendingIdentity {
    fn start(ctx: &Arc<Ctx>, did: &str, info: &DidInfo) -> PendingIdentity {
        let (ctx, did, info) = (ctx.clone(), did.to_owned(), info.clone());
        PendingIdentity(tokio::spawn(async move {
            ctx.pds.identity(&ctx.resolver, &did, &info, false).await
        }))
    }

    fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    /// The identity; `None` if the check's task panicked.
    async fn wait(mut self) -> Option<Identity> {
        (&mut self.0).await.ok()
    }
}

impl Drop for PendingIdentity {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An `accounts` row from the backfill, as of `at_us`.
fn account_row(did: &str, active: bool, status: &str, at_us: u64) -> AccountRow {
    AccountRow {
        did: did.to_string(),
        active: u8::from(active),
        status: if active {
            String::new()
        } else {
            status.to_string()
        },
        version: at_us,
        indexed_at: now_secs(),
    }
}

/// The account's status when `getRepo` refused the repository with
/// `refused` (`deactivated`, `takendown`, `suspended`, `not_found`): the
/// host's `getRepoStatus` answer, precise (e.g. `desynchronized`); if that
/// fails, what `getRepo` said.
async fn hosted_status(ctx: &Ctx, pds: &str, did: &str, refused: &str) -> AccountRow {
    let answer = {
        let _permit = ctx.hosts.acquire(pds).await;
        ctx.fetcher.get_repo_status(pds, did).await
    };
    let at = skyhouse_identity::now_us();
    match answer {
        Ok(Some(hosted)) => account_row(
            did,
            hosted.active,
            hosted.status.as_deref().unwrap_or("inactive"),
            at,
        ),
        Ok(None) => account_row(did, false, "not_found", at),
        Err(error) => {
            tracing::debug!(did, %error, "getRepoStatus failed; recording getRepo's status");
            account_row(did, false, refused, at)
        }
    }
}

/// Process one entry with retries; ends in an [`Outcome`] (failures too:
/// they are recorded, dead-lettered and acked) unless the writer stopped, or
/// in `None` when the entry went back to the end of its queue because the
/// monitor found its host down. One trace span per repository.
#[tracing::instrument(name = "backfill.repo", skip_all, fields(did = %entry.did, resync))]
async fn process(
    ctx: &Arc<Ctx>,
    entry: &WorkEntry,
    resync: bool,
) -> Result<Option<Outcome>, BackfillError> {
    let cfg = &ctx.cfg;
    let mut attempt = 0;
    let result = loop {
        attempt += 1;
        match attempt_once(ctx, &entry.did, resync).await {
            Err(e) if e.is_retriable() && attempt < cfg.max_attempts => {
                let backoff = cfg
                    .retry_base
                    .saturating_mul(2u32.saturating_pow(attempt - 1))
                    .min(cfg.retry_max);
                let wait = e.retry_after().map_or(backoff, |d| d.min(cfg.retry_max));
                crate::metrics::retry();
                tracing::info!(did = entry.did, attempt, error = %e, ?wait, "repository failed; retrying.");
                tokio::time::sleep(wait).await;
            }
            r => break r,
        }
    };
    let (attempt_out, error) = match result {
        Ok(a) => (a, String::new()),
        Err(BackfillError::HostDown(host)) => {
            // Re-queue first, then ack: a crash in between leaves the DID
            // queued twice (harmless), never not at all.
            let queue = ctx.queue(resync);
            let reason = if resync {
                "resync-deferred"
            } else {
                "deferred"
            };
            queue
                .push(&entry.did, reason, i64::from(now_secs()))
                .await?;
            queue.ack(std::slice::from_ref(&entry.id)).await?;
            crate::metrics::deferred();
            tracing::debug!(did = entry.did, host, "host down; repository re-queued");
            return Ok(None);
        }
        Err(e) => {
            if e.is_writer_stopped() {
                return Err(e);
            }
            let reason = e.to_string();
            tracing::warn!(did = entry.did, attempts = attempt, error = %reason, "repository failed; dead-lettered.");
            ctx.state
                .dead_letter(DEAD_LIST, &entry.did, &reason)
                .await?;
            crate::metrics::dead_letter();
            (Attempt::unavailable(RepoStatus::Failed), reason)
        }
    };
    Ok(Some(Outcome {
        entry: entry.clone(),
        resync,
        attempt: attempt_out,
        error,
    }))
}

/// An entry whose records are all sent, with its last chunk (the identity
/// and account rows) still to send once its handle check answers.
struct Outcome {
    entry: WorkEntry,
    resync: bool,
    attempt: Attempt,
    error: String,
}

impl Outcome {
    /// Whether the handle check is still running.
    fn waits(&self) -> bool {
        self.attempt
            .identity
            .as_ref()
            .is_some_and(|p| !p.is_finished())
    }

    /// Send the last chunk. Every outcome gets a position, so its
    /// repo_state row and ack follow its rows (if any) through the writer.
    async fn finish(mut self, ctx: &Ctx) -> Result<Finished, BackfillError> {
        let job = ctx.sink.send(self.attempt.rows().await).await?;
        let a = self.attempt;
        Ok(Finished {
            job,
            resync: self.resync,
            id: self.entry.id,
            status: a.status,
            tombstones: a.tombstones,
            row: RepoStateRow {
                did: self.entry.did,
                rev: a.rev,
                rev_version: a.rev_version,
                status: a.status.as_str().to_string(),
                records: a.records,
                error: self.error,
                updated_at: now_secs(),
                version: now_version(),
            },
        })
    }
}

/// `work`, touching `entry` in `queue` every `every` meanwhile, so no other
/// consumer claims it as idle.
async fn heartbeating<T>(
    queue: &WorkQueue,
    consumer: &str,
    entry: &WorkEntry,
    every: Duration,
    work: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(work);
    let mut beat = tokio::time::interval(every);
    beat.tick().await;
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = beat.tick() => {
                if let Err(e) = queue.touch(consumer, std::slice::from_ref(&entry.id)).await {
                    tracing::warn!(error = %e, did = entry.did, "heartbeat failed");
                }
            }
        }
    }
}

async fn attempt_once(ctx: &Arc<Ctx>, did: &str, resync: bool) -> Result<Attempt, BackfillError> {
    let cfg = &ctx.cfg;
    // No such DID: nothing to fetch, and nobody to show.
    let not_found = || Attempt {
        account: Some(account_row(
            did,
            false,
            "not_found",
            skyhouse_identity::now_us(),
        )),
        ..Attempt::unavailable(RepoStatus::NotFound)
    };
    let Some((mut info, cached)) = found(ctx.pds.get(&ctx.resolver, did).await)? else {
        return Ok(not_found());
    };
    // The handle is checked while the repository downloads and is walked;
    // only the repository's last chunk waits for it.
    let mut identity = PendingIdentity::start(ctx, did, &info);
    let mut fetched = fetch(ctx, &info.pds, did).await?;
    let mut answered = skyhouse_identity::now_us();
    if let (Fetched::Unavailable(_), true) = (&fetched, cached) {
        // The cached host no longer serves it: the account may have moved.
        let Some(fresh) = found(ctx.pds.refresh(&ctx.resolver, did).await)? else {
            return Ok(not_found());
        };
        if fresh.handle != info.handle {
            identity = PendingIdentity::start(ctx, did, &fresh);
        }
        let moved = fresh.pds != info.pds;
        let old = std::mem::replace(&mut info, fresh);
        if moved {
            tracing::info!(
                did,
                old = old.pds,
                new = info.pds,
                "account moved; fetching from its new host"
            );
            fetched = fetch(ctx, &info.pds, did).await?;
            answered = skyhouse_identity::now_us();
        }
    }
    let pds = info.pds;
    let mut opts = CarOptions {
        max_total: cfg.max_repo_bytes,
        memory_cap: cfg.memory_cap,
        ..CarOptions::default()
    };
    let read = match fetched {
        Fetched::Car(car) => {
            opts.size_hint = Some(car.len() as u64);
            tokio::task::spawn_blocking(move || {
                Repo::from_vec(car, opts).map_err(|e| BackfillError::Repo(e.to_string()))
            })
            .await
        }
        Fetched::Stream(body) => {
            tokio::task::spawn_blocking(move || {
                let mut body = std::io::BufReader::with_capacity(256 << 10, body);
                Repo::read(&mut body, opts).map_err(|e| {
                    // A failed download is the download's error (retriable);
                    // a block declared past the cap is the cap's.
                    body.get_ref().failure().unwrap_or_else(|| match e {
                        RepoError::Car(CarError::TooLarge { max, .. }) => {
                            BackfillError::TooLarge { max }
                        }
                        e => BackfillError::Repo(e.to_string()),
                    })
                })
            })
            .await
        }
        Fetched::Unavailable(s) => {
            return Ok(Attempt {
                identity: Some(identity),
                account: Some(hosted_status(ctx, &pds, did, s).await),
                ..Attempt::unavailable(RepoStatus::from_unavailable(s))
            })
        }
    };
    let repo = read.map_err(|e| BackfillError::Repo(format!("reader task: {e}")))??;
    if repo.commit.did != did {
        return Err(BackfillError::Repo(format!(
            "commit is for {}, not {did}",
            repo.commit.did
        )));
    }
    let rev = repo.commit.rev.as_deref().unwrap_or_default().to_owned();
    let version = repo
        .commit
        .rev_u64()
        .ok_or_else(|| BackfillError::Repo(format!("commit rev {rev:?} is not a TID")))?;
    if cfg.verify {
        let key = ctx.resolver.signing_key(did).await?;
        if repo.commit.verify(&key).is_err() {
            // The key may have rotated: fetch the document again once.
            ctx.resolver.refresh(did).await?;
            let key = ctx.resolver.signing_key(did).await?;
            repo.commit
                .verify(&key)
                .map_err(|e| BackfillError::Repo(e.to_string()))?;
        }
    }
    let sink = ctx.sink.clone();
    let owned_did = did.to_string();
    let indexed_at = now_secs();
    let (records, keys) = tokio::task::spawn_blocking(move || {
        walk(&repo, &owned_did, version, indexed_at, resync, &sink)
    })
    .await
    .map_err(|e| BackfillError::Repo(format!("walk task: {e}")))??;
    let tombstones = if resync {
        tombstone_missing(ctx, did, version, &keys).await?
    } else {
        0
    };
    Ok(Attempt {
        status: RepoStatus::Done,
        rev,
        rev_version: version,
        records,
        tombstones,
        identity: Some(identity),
        account: Some(account_row(did, true, "", answered)),
    })
}

/// A resolution, with "no such DID" as `None`.
fn found<T>(r: Result<T, skyhouse_identity::ResolveError>) -> Result<Option<T>, BackfillError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(skyhouse_identity::ResolveError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `getRepo` from `pds` under its host's limits: skipped when the monitor
/// found the host down; a 429/503 asking to wait pauses the whole host.
async fn fetch(ctx: &Ctx, pds: &str, did: &str) -> Result<Fetched, BackfillError> {
    if let Some(health) = &ctx.cfg.host_health {
        if health.is_down(pds).await {
            return Err(BackfillError::HostDown(crate::hosts::host_key(pds)));
        }
    }
    let permit = ctx.hosts.acquire(pds).await;
    let started = Instant::now();
    let fetched = ctx
        .fetcher
        .get_repo(pds, did, ctx.cfg.stream_above, permit)
        .await;
    crate::metrics::fetch_seconds(started.elapsed().as_secs_f64());
    if let Err(
        e @ BackfillError::Http {
            status: 429 | 503, ..
        },
    ) = &fetched
    {
        if let Some(delay) = e.retry_after() {
            ctx.hosts.pause(pds, delay.min(ctx.cfg.retry_max));
        }
    }
    fetched
}

type Keys = HashSet<(String, String)>;

/// Walk the repository on a blocking thread, sending rows in chunks.
fn walk(
    repo: &Repo,
    did: &str,
    version: u64,
    indexed_at: u32,
    keep_keys: bool,
    sink: &Rowsink,
) -> Result<(u64, Keys), BackfillError> {
    let mut keys = Keys::new();
    let records = repo_rows(
        repo,
        did,
        version,
        indexed_at,
        keep_keys.then_some(&mut keys),
        || sink.new_rows(),
        |rows| sink.blocking_send(rows).map(drop),
    )?;
    Ok((records, keys))
}

/// The rows of a repository snapshot, as the workers write them: every
/// record as a create (an update with `keys`: a resync) whose version is the snapshot commit's rev
/// (`version`), handed to `chunk` in pieces of about 4 MiB of `RowBinary`
/// (the last one smaller), in key order. With `keys`, also collects each
/// record's `(collection, rkey)` (a resync tombstones the stored ones not
/// among them). `fresh` makes each chunk's empty `Rows` (the worker's keep
/// what the relay tap asks for). Returns the number of records. Public so
/// the benches can measure this step alone (`backfill_bench decode`).
pub fn repo_rows(
    repo: &Repo,
    did: &str,
    version: u64,
    indexed_at: u32,
    mut keys: Option<&mut HashSet<(String, String)>>,
    fresh: impl Fn() -> Rows,
    mut chunk: impl FnMut(Rows) -> Result<(), BackfillError>,
) -> Result<u64, BackfillError> {
    let mut rows = fresh();
    let mut records = 0u64;
    // A resync's snapshot may replace what the live stream wrote (a like
    // moved to another post): as updates, the interaction refresh checks the
    // keys' earlier subjects. A first backfill's records are creates.
    let action = if keys.is_some() {
        Action::Update
    } else {
        Action::Create
    };
    repo.walk(|r| {
        let value = r.data.and_then(|d| skyhouse_atproto::cbor::decode(d).ok());
        let op = Op {
            did,
            collection: r.collection,
            rkey: r.rkey,
            action,
            cid: Some(r.cid),
            record: value.as_ref(),
            version,
            indexed_at,
        };
        skyhouse_transform::apply_with_cbor(&op, r.data, &mut rows);
        records += 1;
        if let Some(keys) = keys.as_deref_mut() {
            keys.insert((r.collection.to_string(), r.rkey.to_string()));
        }
        if rows.approx_bytes() >= CHUNK_BYTES {
            chunk(std::mem::replace(&mut rows, fresh()))?;
        }
        Ok::<(), BackfillError>(())
    })
    .map_err(|e| match e {
        skyhouse_atproto::mst::WalkError::Visitor(
            skyhouse_atproto::repo::RepoOrVisitor::Visitor(v),
        ) => v,
        other => BackfillError::Repo(other.to_string()),
    })?;
    if !rows.is_empty() {
        chunk(rows)?;
    }
    Ok(records)
}

/// Resync: tombstone (version = the snapshot's) the DID's stored live
/// records older than the snapshot that it no longer holds.
async fn tombstone_missing(
    ctx: &Ctx,
    did: &str,
    version: u64,
    keys: &Keys,
) -> Result<u64, BackfillError> {
    let stored = ctx
        .cfg
        .writer
        .retry
        .run("resync: stored records", None, || {
            repos::stored_live_keys(&ctx.ch, did, version)
        })
        .await?;
    let mut rows = ctx.sink.new_rows();
    let mut n = 0u64;
    let indexed_at = now_secs();
    for (collection, rkey) in stored {
        if keys.contains(&(collection.clone(), rkey.clone())) {
            continue;
        }
        let op = Op {
            did,
            collection: &collection,
            rkey: &rkey,
            action: Action::Delete,
            cid: None,
            record: None,
            version,
            indexed_at,
        };
        skyhouse_transform::apply(&op, &mut rows);
        n += 1;
        if rows.approx_bytes() >= CHUNK_BYTES {
            ctx.sink
                .send(std::mem::replace(&mut rows, ctx.sink.new_rows()))
                .await?;
        }
    }
    if !rows.is_empty() {
        ctx.sink.send(rows).await?;
    }
    Ok(n)
}

/// How the acker keeps the entries it holds from looking idle.
struct Heartbeat {
    consumer: String,
    every: Duration,
}

/// Waits for the writer's acks; for every finished repository whose last
/// rows are written: its `repo_state` row, then XACK, then trim. While a
/// finished repository waits for its batch (a slow ClickHouse), its entry
/// is touched like one being worked on, so no other worker takes it over
/// and does it again.
/// Where the acker records finished repositories, and how it retries.
struct Settle {
    ch: ClickHouse,
    retry: Retry,
    progress: WriteProgress,
}

async fn acker(
    store: Settle,
    backfill: WorkQueue,
    resync: WorkQueue,
    mut acks: mpsc::Receiver<Ack<u64>>,
    mut done: mpsc::Receiver<Finished>,
    heartbeat: Heartbeat,
    progress: Arc<Progress>,
) -> Result<Summary, BackfillError> {
    let mut beat = tokio::time::interval(heartbeat.every);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut summary = Summary::default();
    let mut waiting: BTreeMap<u64, Finished> = BTreeMap::new();
    let mut acked = 0u64;
    let (mut acks_open, mut done_open) = (true, true);
    while acks_open || done_open {
        tokio::select! {
            a = acks.recv(), if acks_open => match a {
                Some(a) => acked = acked.max(a.upto),
                None => acks_open = false,
            },
            f = done.recv(), if done_open => match f {
                Some(f) => { waiting.insert(f.job, f); }
                None => done_open = false,
            },
            _ = beat.tick() => {
                touch_waiting(&backfill, &resync, &heartbeat.consumer, &waiting).await;
                continue;
            }
        }
        let rest = waiting.split_off(&(acked + 1));
        let ready = std::mem::replace(&mut waiting, rest);
        if ready.is_empty() {
            continue;
        }
        settle(
            &store,
            &backfill,
            &resync,
            ready.into_values().collect(),
            &mut summary,
            &progress,
        )
        .await?;
        if !acks_open && !waiting.is_empty() && !done_open {
            break;
        }
    }
    if !waiting.is_empty() {
        tracing::warn!(
            repos = waiting.len(),
            "writer stopped before these repositories were written; they stay pending"
        );
    }
    Ok(summary)
}

/// The stream entry ids of `finished`: the backfill stream's, the resync stream's.
fn ids_by_queue<'a>(finished: impl Iterator<Item = &'a Finished>) -> [Vec<String>; 2] {
    let mut out = [Vec::new(), Vec::new()];
    for f in finished {
        out[usize::from(f.resync)].push(f.id.clone());
    }
    out
}

async fn touch_waiting(
    backfill: &WorkQueue,
    resync: &WorkQueue,
    consumer: &str,
    waiting: &BTreeMap<u64, Finished>,
) {
    let [plain, resyncs] = ids_by_queue(waiting.values());
    for (queue, ids) in [(backfill, plain), (resync, resyncs)] {
        if let Err(e) = queue.touch(consumer, &ids).await {
            tracing::warn!(error = %e, entries = ids.len(), "heartbeat of finished entries failed");
        }
    }
}

async fn settle(
    store: &Settle,
    backfill: &WorkQueue,
    resync: &WorkQueue,
    ready: Vec<Finished>,
    summary: &mut Summary,
    progress: &Progress,
) -> Result<(), BackfillError> {
    // Transient failures of ClickHouse or Redis wait here (the entries stay
    // pending and heartbeated by nobody: after claim_idle another worker may
    // redo them, which writes the same rows again).
    let rows: Vec<RepoStateRow> = ready.iter().map(|f| f.row.clone()).collect();
    store
        .retry
        .run("repo_state", Some(&store.progress), || {
            repos::write_repo_states(&store.ch, &rows)
        })
        .await?;
    let [plain, resyncs] = ids_by_queue(ready.iter());
    for (queue, ids) in [(backfill, plain), (resync, resyncs)] {
        if ids.is_empty() {
            continue;
        }
        redis_retrying("ack backfill entries", || queue.ack(&ids)).await?;
        let max = ids
            .iter()
            .max_by_key(|i| skyhouse_state::parse_id(i))
            .cloned()
            .unwrap_or_default();
        redis_retrying("trim the backfill stream", || queue.trim_acked(&max)).await?;
    }
    for f in ready {
        crate::metrics::repo(f.status.as_str(), f.row.records);
        crate::metrics::tombstones(f.tombstones as usize);
        *summary.repos.entry(f.status).or_default() += 1;
        summary.records += f.row.records;
        summary.tombstones += f.tombstones;
        progress.repos.fetch_add(1, Ordering::Relaxed);
        progress.records.fetch_add(f.row.records, Ordering::Relaxed);
        progress.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
    Ok(())
}

/// `op` until it succeeds or fails with an error retrying cannot help
/// (Redis away: wait for it, with backoff from 100 ms to 10 s).
async fn redis_retrying<T, F, Fut>(what: &str, mut op: F) -> Result<T, BackfillError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, skyhouse_state::StateError>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retriable() => {
                tracing::warn!(error = %e, what, ?delay, "Redis failed; retrying.");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
}
