//! The batch writer: rows in, acknowledged batches out.
//!
//! Producers send `(Rows, position)` through a bounded channel (when it is
//! full they wait: that is the backpressure that reaches the socket). The
//! writer appends them to the open batch and closes it on whichever limit
//! comes first: rows, bytes or age. A closed batch is inserted table by table,
//! and what happens on a failure depends on its kind ([`StoreError`]):
//! - transient (network, timeout, a proxy's 502, a garbled answer, a code in
//!   no list): retried with capped exponential backoff, for ever, counted in
//!   `skyhouse_store_retries_total{reason}`; [`WriteProgress`] tells the
//!   service's `/health` how long writes have been stuck. A down ClickHouse
//!   stops the pipeline instead of dropping data;
//! - the rows are bad (ClickHouse cannot store these values): the table's
//!   rows are bisected until the refused ones are isolated, and only those go
//!   to `dead_letters` — one bad row does not take the rest of the batch;
//! - the schema is wrong, or the credentials: the batch fails, nothing is
//!   acknowledged or dead-lettered, and the service stops with that one line.
//!
//! Each batch, once written, is acknowledged with the highest position it
//! holds: the pipeline moves its cursor on that, so the cursor never runs
//! ahead of the data. Inserts are idempotent (ReplacingMergeTree on the
//! commit's version), so a retried or bisected insert that had partly landed
//! changes nothing.

use std::time::{Duration, Instant};

use serde::Serialize;
use skyhouse_transform::{DeadLetterRow, RecordRow, Rows, TableRow, TableSink};
use tokio::sync::mpsc;

use crate::{ClickHouse, Retry, StoreError, WriteProgress};

/// Batch limits and retry pacing.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Close the batch at this many rows (all tables together). Default
    /// 100,000: every batch makes one part per table it touches, so bigger
    /// batches mean fewer parts for ClickHouse to write and merge
    /// (in `just bench-store` runs, 50,000-row batches were ~0.9× as fast);
    /// the writer holds two batches (~70 MB each at this size).
    pub max_rows: usize,
    /// Close the batch at this many bytes of RowBinary. Default 32 MiB
    /// (≈ 95k rows of the real mix, ~350 bytes each).
    pub max_bytes: usize,
    /// Close the batch this long after its first row. Default 1 s: at live
    /// rates a row waits at most this long before it is queryable.
    pub max_age: Duration,
    /// Backoff between attempts after a transient error (retried for ever).
    /// Default 100 ms doubling to 10 s.
    pub retry: Retry,
    /// Since when writes have been failing, for `/health` (shared with the
    /// service's health check).
    pub progress: WriteProgress,
    /// Insert `records` on a second connection while the typed tables are
    /// inserted one after another on the first. Default true: ClickHouse
    /// parses one INSERT on one thread and `records` (the raw JSON) is about
    /// half of a batch's bytes, so with a spare core the two halves overlap
    /// (`just bench-store`: +19% rows/s on a quiet machine, about even on a
    /// busy one). False: one INSERT at a time.
    pub concurrent_tables: bool,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            max_rows: 100_000,
            max_bytes: 32 << 20,
            max_age: Duration::from_secs(1),
            retry: Retry::default(),
            progress: WriteProgress::default(),
            concurrent_tables: true,
        }
    }
}

/// A written batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack<P> {
    /// The highest position among the batch's inputs.
    pub upto: P,
    /// Rows written (all tables).
    pub rows: usize,
    /// Rows that went to `dead_letters` because ClickHouse refused their
    /// values (only those: the rest of their table's rows were written).
    pub dead_lettered: usize,
}

/// How many rows a producer should put into one input message: apply
/// operations into one `Rows` until it holds about this many (≈ 1,000
/// operations) or the input pauses, then send it. One message per event costs
/// ~20 vector allocations per event, freed on the writer's thread; coalesced,
/// that cost is paid once per ~1,000 events (`just bench-store` measures both).
pub const MESSAGE_ROWS: usize = 2_048;

/// Input queue depth, in messages of up to [`MESSAGE_ROWS`] rows: at most
/// 8 × 2,048 ≈ 16k rows, ≈ 12 MB at the ~700 bytes a row takes in memory
/// (structs and strings; its `RowBinary` is ~350 bytes). The writer's open
/// batch is the real buffer, so a short queue is enough to keep it fed; with
/// the open batch and the one being written (≤ `max_rows` each, ~70 MB at
/// the default) `just bench-store` peaks at ~200 MB RSS. When the queue is
/// full the producer waits (backpressure).
pub const INPUT_QUEUE: usize = 8;

type InFlight<P> = tokio::task::JoinHandle<Result<(Rows, Ack<P>), StoreError>>;

/// Settle a finished write: send its ack and hand back its emptied `Rows`
/// for reuse. `Ok(None)`: nobody listens to acks any more.
async fn settle<P>(
    done: Result<Result<(Rows, Ack<P>), StoreError>, tokio::task::JoinError>,
    acks: &mpsc::Sender<Ack<P>>,
) -> Result<Option<Rows>, StoreError> {
    let (rows, ack) =
        done.map_err(|e| StoreError::Internal(format!("batch writer task failed: {e}")))??;
    Ok(acks.send(ack).await.ok().map(|()| rows))
}

/// Run the writer until the input channel closes; flushes what is left, then
/// returns. Acks go to `acks` in batch order.
///
/// One batch is written while the next one fills (at most two in memory), so
/// the producer is not held up by the insert; the next insert starts only
/// after the previous one is acknowledged, keeping acks in order.
pub async fn run<P: Copy + Ord + Send + 'static>(
    ch: ClickHouse,
    cfg: WriterConfig,
    mut input: mpsc::Receiver<(Rows, P)>,
    acks: mpsc::Sender<Ack<P>>,
) -> Result<(), StoreError> {
    let mut batch = Rows::default();
    let mut upto: Option<P> = None;
    let mut opened: Option<Instant> = None;
    let mut inflight: Option<InFlight<P>> = None;
    let mut spare: Option<Rows> = None;
    loop {
        let deadline = opened.map(|t| t + cfg.max_age);
        let recv = async {
            match deadline {
                // None: the age limit passed.
                Some(d) => tokio::time::timeout_at(d.into(), input.recv()).await.ok(),
                None => Some(input.recv().await),
            }
        };
        let next = tokio::select! {
            // A written batch is acknowledged as soon as it is done, even when
            // no new input arrives (the cursor must not wait for traffic).
            done = async { inflight.as_mut().expect("guarded by is_some").await }, if inflight.is_some() => {
                inflight = None;
                match settle(done, &acks).await? {
                    Some(rows) => spare = Some(rows),
                    None => return Ok(()), // nobody listens: shutting down
                }
                continue;
            }
            next = recv => next,
        };
        let closed = match next {
            Some(Some((mut rows, pos))) => {
                batch.append(&mut rows);
                upto = Some(upto.map_or(pos, |u| u.max(pos)));
                opened.get_or_insert_with(Instant::now);
                if batch.len() < cfg.max_rows && batch.approx_bytes() < cfg.max_bytes {
                    continue;
                }
                false
            }
            Some(None) => true,
            None => false,
        };
        // At most one batch in flight: wait for it before starting the next.
        if let Some(h) = inflight.take() {
            match settle(h.await, &acks).await? {
                Some(rows) => spare = Some(rows),
                None => return Ok(()), // nobody listens: shutting down
            }
        }
        if let Some(u) = upto.take() {
            let full = std::mem::replace(&mut batch, spare.take().unwrap_or_default());
            let (ch, cfg) = (ch.clone(), cfg.clone());
            // One trace span per batch (OTLP when configured).
            let span = tracing::info_span!("clickhouse.write_batch", rows = full.len());
            inflight = Some(tokio::spawn(tracing::Instrument::instrument(
                async move {
                    let mut full = full;
                    let ack = write_batch(&ch, &cfg, &mut full, u).await?;
                    Ok((full, ack))
                },
                span,
            )));
        }
        opened = None;
        if closed {
            // Input closed: wait for the last batch, then stop.
            if let Some(h) = inflight.take() {
                settle(h.await, &acks).await?;
            }
            return Ok(());
        }
    }
}

/// Write one batch (retrying transient errors), clear it, and return its ack.
pub async fn write_batch<P>(
    ch: &ClickHouse,
    cfg: &WriterConfig,
    batch: &mut Rows,
    upto: P,
) -> Result<Ack<P>, StoreError> {
    let rows = batch.len();
    let new_sink = || Sink {
        ch,
        cfg,
        dead: Vec::new(),
        dead_lettered: 0,
    };
    let mut sink = new_sink();
    if cfg.concurrent_tables && !batch.records.is_empty() {
        // The vector goes back afterwards, so its capacity is reused.
        let records = std::mem::take(&mut batch.records);
        let mut side = new_sink();
        let (side_done, rest_done) = tokio::join!(
            side.insert(RecordRow::TABLE, &records),
            batch.drain_into(&mut sink)
        );
        batch.records = records;
        side_done?;
        rest_done?;
        sink.dead.append(&mut side.dead);
        sink.dead_lettered += side.dead_lettered;
    } else {
        batch.drain_into(&mut sink).await?;
    }
    let dead = std::mem::take(&mut sink.dead);
    if !dead.is_empty() {
        // If even dead_letters refuses them, fail the batch: acking it would
        // move the cursor past rows that are nowhere.
        sink.insert_retrying("dead_letters", &dead)
            .await
            .map_err(|e| {
                StoreError::Internal(format!(
                    "could not dead-letter {} refused rows: {e}",
                    dead.len()
                ))
            })?;
    }
    batch.clear();
    Ok(Ack {
        upto,
        rows,
        dead_lettered: sink.dead_lettered,
    })
}

struct Sink<'a> {
    ch: &'a ClickHouse,
    cfg: &'a WriterConfig,
    dead: Vec<DeadLetterRow>,
    dead_lettered: usize,
}

impl Sink<'_> {
    /// Insert `rows`, retrying transient failures for ever.
    async fn insert_retrying<R>(&self, table: &str, rows: &[R]) -> Result<(), StoreError>
    where
        R: clickhouse::RowOwned + clickhouse::RowWrite + Serialize + Send + Sync + 'static,
    {
        let what = format!("insert into {table} ({} rows)", rows.len());
        self.cfg
            .retry
            .run(&what, Some(&self.cfg.progress), || {
                self.ch.insert(table, rows)
            })
            .await
    }

    /// Insert `rows`; where ClickHouse refuses the values, halve the rows
    /// and insert each half again, until the refused rows are alone: those
    /// go to `dead_letters` with ClickHouse's reason, all others are written.
    /// A batch with one bad row costs about 2·log2(rows) extra inserts.
    async fn insert_bisecting<R>(&mut self, table: &str, rows: &[R]) -> Result<(), StoreError>
    where
        R: clickhouse::RowOwned + clickhouse::RowWrite + Serialize + Send + Sync + 'static,
    {
        // An explicit stack instead of recursion (async recursion needs boxing).
        let mut todo: Vec<&[R]> = vec![rows];
        while let Some(part) = todo.pop() {
            match self.insert_retrying(table, part).await {
                Ok(()) => {}
                Err(StoreError::BadRows(reason)) if part.len() > 1 => {
                    tracing::warn!(table, rows = part.len(), %reason, "ClickHouse refused some rows; bisecting.");
                    let (a, b) = part.split_at(part.len() / 2);
                    todo.push(b);
                    todo.push(a);
                }
                Err(StoreError::BadRows(reason)) => {
                    tracing::error!(table, %reason, "ClickHouse refused a row; dead-lettering it.");
                    let reason = format!("insert into {table} refused: {reason}");
                    self.dead
                        .push(DeadLetterRow::for_refused_row(table, &reason, &part[0]));
                    self.dead_lettered += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl TableSink for Sink<'_> {
    type Error = StoreError;

    async fn insert<R>(&mut self, table: &'static str, rows: &[R]) -> Result<(), StoreError>
    where
        R: clickhouse::RowOwned + clickhouse::RowWrite + Serialize + Send + Sync + 'static,
    {
        if rows.is_empty() {
            return Ok(());
        }
        if table == "dead_letters" {
            // Never dead-letter the dead letters (that could loop): fail instead.
            return self.insert_retrying(table, rows).await;
        }
        self.insert_bisecting(table, rows).await
    }
}
