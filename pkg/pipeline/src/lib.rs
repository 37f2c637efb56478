//! The live indexer's wiring: source → decode + transform → batch writer →
//! ack → cursor in Redis.
//!
//! ```text
//! sources::run ─msg─► decode (coalesce ≤ COALESCE_ROWS rows) ─(Rows, pos)─► store::writer ─ack─► cursor keeper ─watch─► Redis saver
//!      ▲  ▲                │ resync DIDs, skipped ranges ─► Redis streams                  │   │
//!      │  └── resume (last decoded position, for reconnects)              account cleanups ◄─┼── ClickHouse `accounts`
//!      └───── acked (last acknowledged position, for a ConsumerTooSlow reconnect) ◄─────────────┘
//! ```
//!
//! Firehose `#error` frames are instructions (the source reconnects as they
//! ask, see `skyhouse_sources`): after `FutureCursor` the source goes on from
//! the live tip, and the decode task records the skipped range (a warning and
//! an entry of the Redis stream `skipped`), queues the first DID after it for
//! resync, and keeps every repository's chain state, so a repository whose
//! commits were in the range is queued (`chain`) at its next commit. The
//! server's numbering may restart lower: positions after a skip are a new
//! epoch that orders after every earlier one, so the cursor follows the new
//! numbering once its first batch is stored. `ConsumerTooSlow` reconnects
//! from the last acknowledged position; the replayed commits are recognised
//! and change nothing.
//!
//! Guarantee: the cursor saved in Redis never runs ahead of ClickHouse. It
//! moves only on writer acks (in order, running max), so after a crash the
//! indexer replays from a position whose events are all stored; rows are
//! idempotent (ReplacingMergeTree on the commit rev), so the replay changes
//! nothing. Every stage is joined by a bounded channel: a slow ClickHouse
//! fills them and the source stops reading its socket. Redis being down
//! stops nothing: the cursor waits in memory and is written when it returns.
#![deny(missing_docs)]

mod cursor;
pub mod health;
mod identity;
pub mod metrics;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use skyhouse_atproto::crypto::PublicKey;
use skyhouse_atproto::frame::ErrorKind;
use skyhouse_sources::{Acked, CancellationToken, Connected, Message, SourceConfig, SourceKind};
use skyhouse_state::State;
use skyhouse_store::writer::{self, WriterConfig};
use skyhouse_store::ClickHouse;
use skyhouse_transform::{
    CollectionFilter, Decoded, Decoder, OpsTap, RawRecords, ResyncReason, Rows, Verify,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use health::Progress;

pub use cursor::Inflight;
pub use identity::IDENTITY_QUEUE;

/// A decoded group is sent to the writer once it holds this many rows (or
/// the source has nothing more queued): one channel message per ~1,000 ops
/// instead of one per event keeps allocation and channel traffic low.
pub const COALESCE_ROWS: usize = 2_048;

/// Messages the decoder takes off the source's channel at once: their slots
/// free up together, so a source blocked on a full channel is woken once per
/// batch, not once per message (a thread wake-up per event cost a quarter of
/// the indexer's CPU when decoding was the bottleneck).
const RECV_BATCH: usize = 256;

/// Decoded groups waiting for the writer: 16 × ≤ 2,048 rows ≈ 33k rows,
/// ~10 MB at worst, enough to keep the writer busy while decoding catches
/// up. When full, decoding waits and the source stops reading. (64 cost
/// ~30 MB more peak RSS in `just bench-indexer` for no measurable speed.)
pub const ROWS_QUEUE: usize = 16;

/// The indexer's ClickHouse batch limit in rows (`--batch-rows`): the
/// writer holds two batches (open and in flight) plus the queues above, and
/// the indexer must stay under 200 MB replaying at full speed. 100k-row
/// batches cost ClickHouse about a third less CPU per event than 50k (fewer
/// parts to write and merge); since each batch's buffers are reserved at
/// the size of the one before (no doubling, no copies), they fit: `just
/// bench-indexer` 127-182 MiB peak RSS (50k: 91-127). At live rates batches
/// close on age ([`BATCH_AGE`]) long before either limit.
pub const BATCH_ROWS: usize = 100_000;

/// The indexer's ClickHouse batch limit in bytes of RowBinary
/// (`--batch-bytes`): 32 MiB ≈ 50k-100k rows of the real mix (~350-700
/// bytes each), so rows and bytes close a batch at about the same point;
/// two batches in memory ≈ 64 MiB of RowBinary.
pub const BATCH_BYTES: usize = 32 << 20;

/// The indexer's ClickHouse batch age limit (`--batch-age-ms`): at live
/// rates (~1-2k events/s) a row waits at most this long before it is
/// queryable, and each table gets about one part a second.
pub const BATCH_AGE: Duration = Duration::from_secs(1);

/// Resync requests (and skipped-range records) waiting for Redis (DIDs,
/// ~100 bytes each: ≤ 10 MB).
pub const RESYNC_QUEUE: usize = 100_000;

/// How the indexer runs.
#[derive(Debug, Clone)]
pub struct IndexerConfig {
    /// Where events come from (kind, endpoints, reconnect policy).
    pub source: SourceConfig,
    /// Collections kept; the rest are counted and dropped.
    pub collections: CollectionFilter,
    /// Which `records` rows keep the record's JSON (`--raw-records`).
    /// Default all.
    pub raw_records: RawRecords,
    /// Check firehose commit signatures (needs `keys` in [`run`]).
    pub verify: bool,
    /// Batch limits of the ClickHouse writer.
    pub writer: WriterConfig,
    /// The Redis cursor name (see [`skyhouse_state::cursor_key`]).
    pub cursor_key: String,
    /// Write the cursor to Redis at most this often. Default 1 s.
    pub cursor_interval: Duration,
    /// Start here instead of the saved cursor (`--cursor`): a negative value
    /// is the live tip, 0 everything the source still holds.
    pub start_cursor: Option<i64>,
    /// Jetstream only: on start, rewind the saved cursor by this much
    /// (Jetstream's order by `time_us` is approximate). Default 5 s.
    pub jetstream_rewind: Duration,
    /// How often deleted accounts are looked for and cleaned up. Default 5 s.
    pub cleanup_interval: Duration,
    /// Also hand every decoded record operation to this sink (`--relay-url`).
    /// Default: none.
    pub ops_tap: Option<Arc<dyn OpsTap>>,
    /// [`run_with_health`]: the `lag` check fails above this lag (see
    /// [`health`]); `None` leaves the check out. Default
    /// [`health::DEFAULT_MAX_LAG`] (5 minutes).
    pub health_max_lag: Option<Duration>,
    /// Filled by the running pipeline: what ClickHouse has not acknowledged
    /// yet (keep a clone to say what a shutdown cut short).
    pub inflight: Inflight,
    /// Resolves `#identity` events that carry no handle (their DID document
    /// fetched again, its handle verified) off the decode path, through a
    /// queue of [`IDENTITY_QUEUE`] DIDs. Default: none (such events are
    /// counted as dropped).
    pub identity: Option<Arc<skyhouse_identity::Resolver>>,
}

impl IndexerConfig {
    /// Defaults for `source`: [`skyhouse_transform::DEFAULT_COLLECTIONS`],
    /// batches of [`BATCH_ROWS`] / [`BATCH_BYTES`] / [`BATCH_AGE`].
    pub fn new(source: SourceConfig, cursor_key: String) -> Self {
        IndexerConfig {
            source,
            collections: CollectionFilter::default(),
            raw_records: RawRecords::All,
            verify: false,
            writer: WriterConfig {
                max_rows: BATCH_ROWS,
                max_bytes: BATCH_BYTES,
                max_age: BATCH_AGE,
                ..WriterConfig::default()
            },
            cursor_key,
            cursor_interval: Duration::from_secs(1),
            start_cursor: None,
            jetstream_rewind: skyhouse_sources::DEFAULT_JETSTREAM_REWIND,
            cleanup_interval: Duration::from_secs(5),
            ops_tap: None,
            health_max_lag: Some(health::DEFAULT_MAX_LAG),
            inflight: Inflight::default(),
            identity: None,
        }
    }
}

/// Why a signing key could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// One line naming the DID.
    pub message: String,
    /// Whether asking again later can succeed (network, 5xx, 429).
    pub retriable: bool,
}

/// A boxed future returning a DID's signing key.
pub type KeyFuture<'a> = Pin<Box<dyn Future<Output = Result<PublicKey, KeyError>> + Send + 'a>>;

/// Where `--verify` gets signing keys (the identity resolver, cached).
pub trait Keys: Send + Sync {
    /// The current signing key of `did`; `fresh` = bypass caches (after a
    /// signature failed with the cached key).
    fn signing_key<'a>(&'a self, did: &'a str, fresh: bool) -> KeyFuture<'a>;
}

/// Attempts to get a key while the resolver fails transiently (~6 s in
/// all with the backoff below) before the commit is set aside for a resync.
const KEY_ATTEMPTS: u32 = 5;

/// Why the indexer stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The configuration is not usable (message names the flag).
    #[error("{0}")]
    Config(String),
    /// The source failed (bad capture file, bad config).
    #[error("source: {0}")]
    Source(#[from] skyhouse_sources::SourceError),
    /// ClickHouse refused a batch for good.
    #[error("ClickHouse: {0}")]
    Store(#[from] skyhouse_store::StoreError),
    /// A task panicked or could not be joined.
    #[error("task failed: {0}")]
    Task(String),
}

/// What a run did (returned when the source ends or on shutdown).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Messages decoded.
    pub messages: u64,
    /// Record operations written.
    pub ops: u64,
    /// The last cursor acknowledged by ClickHouse (and saved if Redis was up).
    pub cursor: Option<i64>,
}

/// [`run`], keeping the indexer's checks of `health` current (re-evaluated
/// every second): `indexer` (running), `source` (a WebSocket is connected or a
/// `file://` capture is being replayed; `false` while connecting or backing
/// off) and, unless `cfg.health_max_lag` is `None`, `lag` (under that
/// threshold; an idle source passes, see [`health`]). ClickHouse and Redis
/// are the caller's checks (the binary probes them for every service).
pub async fn run_with_health(
    cfg: IndexerConfig,
    ch: ClickHouse,
    state: State,
    keys: Option<Arc<dyn Keys>>,
    shutdown: CancellationToken,
    health: skyhouse_telemetry::Health,
) -> Result<Summary, PipelineError> {
    let watch = Watch::default();
    let max_lag = cfg.health_max_lag;
    let check = move |health: &skyhouse_telemetry::Health, watch: &Watch| {
        health.set("source", watch.connected.get());
        if let Some(max) = max_lag {
            let lag = watch.progress.lag(metrics::now_us());
            health.set("lag", lag.is_none_or(|l| l <= max));
        }
    };
    health.set("indexer", true);
    check(&health, &watch);
    let checks_stop = shutdown.child_token();
    let checks = {
        let (health, watch, stop) = (health.clone(), watch.clone(), checks_stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(health::CHECK_EVERY) => {}
                }
                check(&health, &watch);
            }
        })
    };
    let result = run_watched(cfg, ch, state, keys, shutdown, watch.clone()).await;
    checks_stop.cancel();
    let _ = checks.await;
    health.set("indexer", false);
    check(&health, &watch);
    result
}

/// What the health checks read from a running pipeline.
#[derive(Debug, Clone, Default)]
struct Watch {
    connected: Connected,
    progress: Progress,
}

/// Run the indexer until the source ends (a `file://` capture) or
/// `shutdown` is cancelled; then drain: everything read is written and the
/// cursor saved before it returns.
pub async fn run(
    cfg: IndexerConfig,
    ch: ClickHouse,
    state: State,
    keys: Option<Arc<dyn Keys>>,
    shutdown: CancellationToken,
) -> Result<Summary, PipelineError> {
    run_watched(cfg, ch, state, keys, shutdown, Watch::default()).await
}

async fn run_watched(
    cfg: IndexerConfig,
    ch: ClickHouse,
    state: State,
    keys: Option<Arc<dyn Keys>>,
    shutdown: CancellationToken,
    watch: Watch,
) -> Result<Summary, PipelineError> {
    if cfg.verify && keys.is_none() {
        return Err(PipelineError::Config(
            "--verify needs a DID resolver".to_owned(),
        ));
    }
    metrics::export_at_zero(cfg.source.kind);
    let start = match cfg.start_cursor {
        Some(c) => Some(c),
        None => {
            let saved = cursor::load(&state, &cfg.cursor_key, &shutdown).await;
            if let Some(c) = saved {
                metrics::cursor_saved(c);
            }
            saved
        }
    };
    if let Some(c) = start.filter(|c| *c > 0) {
        // Where this run starts is acknowledged by definition (see `acked` below).
        metrics::cursor(c);
    }
    let resume_at = match (cfg.source.kind, start) {
        (SourceKind::Jetstream, Some(c)) if c > 0 && cfg.start_cursor.is_none() => {
            skyhouse_sources::rewind_jetstream_cursor(c, cfg.jetstream_rewind)
        }
        // No cursor: the live tip (-1). 0: everything the source still holds.
        (_, c) => c.unwrap_or(-1),
    };
    tracing::info!(
        kind = cfg.source.kind.as_str(),
        cursor_key = %cfg.cursor_key,
        resume = resume_at,
        "Indexer starting."
    );
    let resume = Arc::new(AtomicI64::new(resume_at));
    // The start position is stored by definition (it is the saved cursor, or where the
    // operator asked to start): a ConsumerTooSlow before the first ack resumes there.
    let acked = Acked::default();
    acked.set(start.unwrap_or(-1));
    let latency = cfg.inflight.clone();

    let (msg_tx, msg_rx) = mpsc::channel(skyhouse_sources::EVENT_QUEUE);
    let (rows_tx, rows_rx) = mpsc::channel(ROWS_QUEUE);
    let (ack_tx, ack_rx) = mpsc::channel(16);
    let (repair_tx, repair_rx) = mpsc::channel(RESYNC_QUEUE);
    let identity_tx = match cfg.identity.clone() {
        Some(resolver) => {
            let (tx, rx) = mpsc::channel(IDENTITY_QUEUE);
            Some((tx, rx, resolver))
        }
        None => None,
    };

    let stop = shutdown.child_token();
    let mut tasks: JoinSet<Result<TaskEnd, PipelineError>> = JoinSet::new();
    let source_cfg = cfg.source.clone();
    let source_stop = stop.child_token();
    let source_resume = resume.clone();
    let connected = watch.connected.clone();
    let source_acked = acked.clone();
    tasks.spawn(async move {
        skyhouse_sources::run_with_status(
            source_cfg,
            source_resume,
            msg_tx,
            source_stop,
            connected,
            source_acked,
        )
        .await?;
        Ok(TaskEnd::Source)
    });
    // Cancelled by the outside shutdown or a failed task, not by `stop`:
    // when the source ends on its own (a capture), every queued DID is
    // resolved first.
    let abandon = shutdown.child_token();
    let identity_tx = identity_tx.map(|(tx, rx, resolver)| {
        tasks.spawn(identity::resolve_loop(
            resolver,
            rx,
            ch.clone(),
            cfg.writer.clone(),
            abandon.clone(),
        ));
        tx
    });
    let decode = DecodeLoop {
        identity: identity_tx,
        kind: cfg.source.kind,
        metrics: metrics::DecodeMetrics::new(cfg.source.kind),
        decoder: Decoder::new(cfg.collections.clone()),
        verify: cfg.verify,
        keys,
        resume: resume.clone(),
        latency: latency.clone(),
        tap: cfg.ops_tap.clone(),
        raw_records: cfg.raw_records,
        progress: watch.progress.clone(),
        cursor_key: cfg.cursor_key.clone(),
        epoch: 0,
        skip: None,
    };
    tasks.spawn(decode.run(msg_rx, rows_tx, repair_tx));
    let writer_ch = ch.clone();
    let writer_cfg = cfg.writer.clone();
    tasks.spawn(async move {
        writer::run(writer_ch, writer_cfg, rows_rx, ack_tx).await?;
        Ok(TaskEnd::Writer)
    });
    let keeper = cursor::Keeper::new(
        state.clone(),
        cfg.cursor_key.clone(),
        cfg.cursor_interval,
        acked,
    );
    tasks.spawn(keeper.run(ack_rx, latency));
    tasks.spawn(cursor::repair_loop(state.clone(), repair_rx));
    let cleanup_stop = stop.child_token();
    let cleanup_ch = ch.clone();
    let every = cfg.cleanup_interval;
    tasks.spawn(async move {
        cursor::cleanup_loop(cleanup_ch, every, cleanup_stop).await;
        Ok(TaskEnd::Cleanup)
    });

    let mut summary = Summary::default();
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(TaskEnd::Decode { messages, ops })) => {
                summary.messages = messages;
                summary.ops = ops;
            }
            Ok(Ok(TaskEnd::Cursor(c))) => {
                summary.cursor = c;
                // Everything written and acknowledged: stop the rest.
                stop.cancel();
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "Indexer task failed; stopping.");
                failure.get_or_insert(e);
                stop.cancel();
                abandon.cancel();
            }
            Err(e) => {
                failure.get_or_insert(PipelineError::Task(e.to_string()));
                stop.cancel();
                abandon.cancel();
            }
        }
    }
    // A last cleanup pass for deletions in the final batches.
    if failure.is_none() {
        cfg.inflight.final_cleanup(true);
        if let Err(e) = skyhouse_store::cleanup::run_account_cleanups(&ch).await {
            tracing::warn!(error = %e, "Account cleanup failed; it runs again at the next start.");
        }
        cfg.inflight.final_cleanup(false);
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(summary),
    }
}

enum TaskEnd {
    Source,
    Identity,
    Decode { messages: u64, ops: u64 },
    Writer,
    Cursor(Option<i64>),
    Resync,
    Cleanup,
}

/// A position as the pipeline orders it: the source's position (`at`,
/// Jetstream `time_us` or firehose `seq`) within an epoch. A `FutureCursor`
/// skip starts a new epoch, because the server's numbering may restart lower
/// than ours: every position of a later epoch orders after every earlier
/// one, so batch acks and the cursor keep moving forward. The cursor saved
/// is `at`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pos {
    epoch: u32,
    at: i64,
}

/// What the decode task hands to Redis besides the cursor.
#[derive(Debug)]
pub(crate) enum Repair {
    /// A repository to resync: DID, why, the position that revealed it.
    Resync(String, ResyncReason, i64),
    /// A range the source skipped (`FutureCursor`).
    Skip(skyhouse_state::Skipped),
}

struct DecodeLoop {
    /// Where `#identity` events without a handle go to be resolved.
    identity: Option<mpsc::Sender<String>>,
    kind: SourceKind,
    metrics: metrics::DecodeMetrics,
    decoder: Decoder,
    verify: bool,
    keys: Option<Arc<dyn Keys>>,
    resume: Arc<AtomicI64>,
    latency: Inflight,
    tap: Option<Arc<dyn OpsTap>>,
    raw_records: RawRecords,
    progress: Progress,
    /// For the skipped-range records.
    cursor_key: String,
    /// Bumped by each `FutureCursor` skip (see [`Pos`]).
    epoch: u32,
    /// Set by a `FutureCursor` until the first event after it: our position
    /// when the error came (the cursor the source had connected with).
    skip: Option<Option<i64>>,
}

/// Take up to [`RECV_BATCH`] messages off `rx` into `inbox` (waiting for one
/// when it is empty); `false` once it is closed and drained.
async fn refill(rx: &mut mpsc::Receiver<Message>, inbox: &mut std::vec::IntoIter<Message>) -> bool {
    let mut taken = Vec::with_capacity(RECV_BATCH);
    let n = rx.recv_many(&mut taken, RECV_BATCH).await;
    *inbox = taken.into_iter();
    n > 0
}

impl DecodeLoop {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Message>,
        tx: mpsc::Sender<(Rows, Pos)>,
        repairs: mpsc::Sender<Repair>,
    ) -> Result<TaskEnd, PipelineError> {
        let (mut messages, mut ops) = (0u64, 0u64);
        let mut last_upto = Pos::default();
        // The next group's empty rows, their buffers sized like the last
        // group's, or given back by the writer (`Rows::recycle`).
        let mut next_rows: Option<Rows> = None;
        let recycler = skyhouse_transform::Recycler::default();
        // Messages taken off the channel, not decoded yet.
        let mut inbox = Vec::new().into_iter();
        loop {
            let first = match inbox.next() {
                Some(msg) => msg,
                None => {
                    if rx.is_empty() {
                        // Caught up with the source: for `/health`, waiting is not lagging.
                        self.progress.waiting();
                    }
                    let open = refill(&mut rx, &mut inbox).await;
                    self.progress.busy();
                    if !open {
                        break;
                    }
                    match inbox.next() {
                        Some(msg) => msg,
                        None => break,
                    }
                }
            };
            let received = Instant::now();
            let mut rows = next_rows.take().unwrap_or_else(|| {
                let mut rows = Rows::for_writer(self.raw_records, self.tap.as_deref());
                // The writer gives each message's buffers back once copied.
                rows.recycle_via(&recycler);
                rows
            });
            let mut upto: Option<Pos> = None;
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                messages += 1;
                let d = self.decode(&msg, &mut rows).await;
                ops += d.ops;
                if let Some(t) = d.event_time_us {
                    let now = metrics::now_us();
                    self.metrics.lag(t, now);
                    self.progress.decoded(t, now);
                }
                self.metrics.decoded(&d);
                if let Some(did) = d.resolve_identity.clone() {
                    let queued = self
                        .identity
                        .as_ref()
                        .is_some_and(|tx| tx.try_send(did).is_ok());
                    if !queued {
                        metrics::identity_dropped(1);
                    }
                }
                if d.error.as_ref().map(|e| e.kind()) == Some(ErrorKind::FutureCursor)
                    && self.skip.is_none()
                {
                    // The source reconnects at the live tip: the next positions may be
                    // lower than ours (a new epoch), and a later reconnect must ask for
                    // them, not for ours again.
                    self.epoch += 1;
                    let ours = self.resume.swap(-1, Ordering::Relaxed);
                    self.skip = Some((ours >= 0).then_some(ours));
                }
                if let Some(skip) = d.skipped {
                    self.skipped(skip, &repairs);
                }
                if let Some(p) = d.position {
                    let p = Pos {
                        epoch: self.epoch,
                        at: p,
                    };
                    upto = Some(upto.map_or(p, |u| u.max(p)));
                    self.resume.fetch_max(p.at, Ordering::Relaxed);
                }
                for (did, reason) in d.resync {
                    metrics::resync(reason);
                    let at = d.position.unwrap_or(0);
                    if repairs.try_send(Repair::Resync(did, reason, at)).is_err() {
                        metrics::resync_dropped();
                    }
                }
                if rows.len() < COALESCE_ROWS {
                    next = inbox.next();
                    if next.is_none() && !rx.is_empty() {
                        refill(&mut rx, &mut inbox).await;
                        next = inbox.next();
                    }
                }
            }
            if rows.is_empty() && upto.is_none() {
                next_rows = Some(rows);
                continue;
            }
            metrics::ops_by_collection(self.kind, self.decoder.take_op_counts());
            let pos = upto.unwrap_or(last_upto);
            last_upto = last_upto.max(pos);
            self.latency.sent(pos, received, rows.len());
            if let Some(tap) = &self.tap {
                tap.offer(&rows);
                // The writer needs none of it (the CBOR copies are freed now).
                rows.tap = Vec::new();
            }
            next_rows = Some(rows.like());
            if tx.send((rows, pos)).await.is_err() {
                break; // the writer stopped; its error is reported by its task
            }
        }
        Ok(TaskEnd::Decode { messages, ops })
    }

    /// The first event after a `FutureCursor`: say what was skipped, in the
    /// log and in Redis (`<prefix>skipped`).
    fn skipped(&mut self, skip: skyhouse_transform::Skip, repairs: &mpsc::Sender<Repair>) {
        // Our cursor when the error came; the decoder's last seq if we had none.
        let after = self.skip.take().flatten().or(skip.after);
        tracing::warn!(
            cursor_key = %self.cursor_key,
            after = after.map_or("none".to_owned(), |a| a.to_string()),
            resumed_at = skip.resumed_at,
            "Firehose FutureCursor: the events after our cursor and before the live tip were \
             skipped. Repositories whose next commit does not follow the last one seen are \
             queued for resync; `skyhouse backfill enqueue` repairs the rest."
        );
        let time = u64::try_from(metrics::now_us() / 1_000_000).unwrap_or(0);
        let record = skyhouse_state::Skipped {
            cursor: self.cursor_key.clone(),
            reason: ResyncReason::FutureCursor.as_str().to_owned(),
            after,
            resumed_at: skip.resumed_at,
            time,
        };
        if repairs.try_send(Repair::Skip(record)).is_err() {
            tracing::error!("Skipped range not recorded in Redis (queue full); it is in this log.");
        }
    }

    async fn decode(&mut self, msg: &Message, rows: &mut Rows) -> Decoded {
        match self.kind {
            SourceKind::Jetstream => self.decoder.jetstream(&msg.bytes, rows),
            SourceKind::Firehose => {
                if !self.verify {
                    return self.decoder.firehose(&msg.bytes, Verify::Off, rows);
                }
                let d = self.decoder.firehose(&msg.bytes, Verify::Lookup, rows);
                let Some(did) = d.needs_key else { return d };
                let Some(keys) = self.keys.clone() else {
                    return self.decoder.firehose(&msg.bytes, Verify::Off, rows);
                };
                let mut fresh = false;
                let mut attempt = 0;
                let mut wait = Duration::from_millis(200);
                loop {
                    let key = match keys.signing_key(&did, fresh).await {
                        Ok(k) => k,
                        Err(e) if e.retriable && attempt + 1 < KEY_ATTEMPTS => {
                            attempt += 1;
                            tracing::warn!(did, error = %e.message, attempt, "Signing key lookup failed; retrying.");
                            tokio::time::sleep(wait).await;
                            wait *= 2;
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(did, error = %e.message, "No signing key; commit set aside for a resync.");
                            metrics::verify_failed("no_key");
                            break;
                        }
                    };
                    // Decode into a scratch batch first: a bad signature
                    // with a stale cached key must not leave rows behind.
                    let mut scratch = rows.like();
                    let d = self
                        .decoder
                        .firehose(&msg.bytes, Verify::With(key), &mut scratch);
                    if d.bad_signature && !fresh {
                        fresh = true; // the key may have rotated: fetch it again
                        continue;
                    }
                    if d.bad_signature {
                        metrics::verify_failed("bad_signature");
                    }
                    rows.append(&mut scratch);
                    // Emptied by the append: its buffers back for the next message.
                    scratch.recycle();
                    return d;
                }
                // No key: keep the commit as a dead letter and have the
                // repository resynced (verified) from its snapshot.
                let mut d = self
                    .decoder
                    .firehose(&msg.bytes, Verify::Off, &mut Rows::default());
                d.ops = 0;
                d.resync.push((did.clone(), ResyncReason::Unverified));
                rows.push_dead_letter(skyhouse_transform::DeadLetterRow {
                    source: "firehose".to_owned(),
                    did,
                    reason: "signing key could not be resolved; commit not verified".to_owned(),
                    ..Default::default()
                });
                d.dead_letters += 1;
                d
            }
        }
    }
}
