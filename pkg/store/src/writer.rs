//! The batch writer: rows in, acknowledged batches out.
//!
//! Producers send `(Rows, position)` through a bounded channel (when it is
//! full they wait: that is the backpressure that reaches the socket). The
//! writer encodes them into the open batch (each table's rows as the
//! `RowBinary` its insert sends) and closes it on whichever limit comes
//! first: rows, bytes or age. A closed batch is inserted table by table,
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

use bytes::Bytes;
use skyhouse_transform::{DeadLetterRow, Encoded, RecordRow, Rows, TableRow};
use tokio::sync::mpsc;

use crate::{ClickHouse, Retry, StoreError, WriteProgress};

/// Batch limits and retry pacing.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Close the batch at this many rows (all tables together). Default
    /// 100,000: every batch makes one part per table it touches, so bigger
    /// batches mean fewer parts for ClickHouse to write and merge
    /// (in `just bench-store` runs, 50,000-row batches were ~0.9× as fast);
    /// the writer holds two batches, as their `RowBinary` (≤ `max_bytes`
    /// each).
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
/// batch is the real buffer, so a short queue is enough to keep it fed; it
/// and the batch being written are held as `RowBinary` (≤ `max_bytes`
/// each). When the queue is full the producer waits (backpressure).
pub const INPUT_QUEUE: usize = 8;

type InFlight<P> = tokio::task::JoinHandle<Result<Ack<P>, StoreError>>;

/// Settle a finished write: send its ack. `Ok(false)`: nobody listens to
/// acks any more.
async fn settle<P>(
    done: Result<Result<Ack<P>, StoreError>, tokio::task::JoinError>,
    acks: &mpsc::Sender<Ack<P>>,
) -> Result<bool, StoreError> {
    let ack =
        done.map_err(|e| StoreError::Internal(format!("batch writer task failed: {e}")))??;
    Ok(acks.send(ack).await.is_ok())
}

/// Run the writer until the input channel closes; flushes what is left, then
/// returns. Acks go to `acks` in batch order.
///
/// Each input is encoded on arrival into the open batch's per-table
/// `RowBinary` buffers ([`Encoded`]) and its row structs freed: a batch
/// holds its insert bodies (about half the memory of the rows as structs).
/// One batch is written while the next one fills (at most two in memory),
/// so the producer is not held up by the insert; the next insert starts
/// only after the previous one is acknowledged, keeping acks in order.
pub async fn run<P: Copy + Ord + Send + 'static>(
    ch: ClickHouse,
    cfg: WriterConfig,
    mut input: mpsc::Receiver<(Rows, P)>,
    acks: mpsc::Sender<Ack<P>>,
) -> Result<(), StoreError> {
    let mut batch = Encoded::default();
    let mut upto: Option<P> = None;
    let mut opened: Option<Instant> = None;
    let mut inflight: Option<InFlight<P>> = None;
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
                if !settle(done, &acks).await? {
                    return Ok(()); // nobody listens: shutting down
                }
                continue;
            }
            next = recv => next,
        };
        let closed = match next {
            Some(Some((rows, pos))) => {
                batch.add(&rows);
                // Its buffers back to the producer, if it recycles them.
                rows.recycle();
                upto = Some(upto.map_or(pos, |u| u.max(pos)));
                opened.get_or_insert_with(Instant::now);
                if batch.len() < cfg.max_rows && batch.bytes() < cfg.max_bytes {
                    continue;
                }
                false
            }
            Some(None) => true,
            None => false,
        };
        // At most one batch in flight: wait for it before starting the next.
        if let Some(h) = inflight.take() {
            if !settle(h.await, &acks).await? {
                return Ok(()); // nobody listens: shutting down
            }
        }
        if let Some(u) = upto.take() {
            let next = batch.sized_like();
            let full = std::mem::replace(&mut batch, next);
            let (ch, cfg) = (ch.clone(), cfg.clone());
            // One trace span per batch (OTLP when configured).
            let span = tracing::info_span!("clickhouse.write_batch", rows = full.len());
            inflight = Some(tokio::spawn(tracing::Instrument::instrument(
                async move { write_encoded(&ch, &cfg, full, u).await },
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

/// Write one batch of rows (retrying transient errors), clear it, and
/// return its ack: [`write_encoded`] of the rows encoded.
pub async fn write_batch<P>(
    ch: &ClickHouse,
    cfg: &WriterConfig,
    batch: &mut Rows,
    upto: P,
) -> Result<Ack<P>, StoreError> {
    let mut encoded = Encoded::default();
    encoded.add(batch);
    let ack = write_encoded(ch, cfg, encoded, upto).await?;
    batch.clear();
    Ok(ack)
}

/// Write one batch already encoded (retrying transient errors) and return
/// its ack. Every table's rows go as one `INSERT … FORMAT RowBinary`;
/// `records` on a second connection while the others go one after another
/// on the first ([`WriterConfig::concurrent_tables`]). Where ClickHouse
/// refuses a table's values the rows are bisected by their boundaries and
/// only the refused ones dead-lettered.
pub async fn write_encoded<P>(
    ch: &ClickHouse,
    cfg: &WriterConfig,
    batch: Encoded,
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
    let mut tables: Vec<Table> = batch
        .into_tables()
        .map(|(name, data, ends)| Table {
            name,
            data: Bytes::from(data),
            ends,
        })
        .collect();
    let records = tables.iter().position(|t| t.name == RecordRow::TABLE);
    match records {
        Some(i) if cfg.concurrent_tables => {
            let records = tables.remove(i);
            let mut side = new_sink();
            let (side_done, rest_done) = tokio::join!(side.insert(&records), async {
                for t in &tables {
                    sink.insert(t).await?;
                }
                Ok::<(), StoreError>(())
            });
            side_done?;
            rest_done?;
            sink.dead.append(&mut side.dead);
            sink.dead_lettered += side.dead_lettered;
        }
        _ => {
            for t in &tables {
                sink.insert(t).await?;
            }
        }
    }
    drop(tables);
    let dead = std::mem::take(&mut sink.dead);
    if !dead.is_empty() {
        // If even dead_letters refuses them, fail the batch: acking it would
        // move the cursor past rows that are nowhere.
        let mut data = Vec::new();
        for d in &dead {
            d.write_row_binary(&mut data);
        }
        sink.insert_retrying(DeadLetterRow::TABLE, Bytes::from(data), dead.len())
            .await
            .map_err(|e| {
                StoreError::Internal(format!(
                    "could not dead-letter {} refused rows: {e}",
                    dead.len()
                ))
            })?;
    }
    Ok(Ack {
        upto,
        rows,
        dead_lettered: sink.dead_lettered,
    })
}

/// One table's rows of a batch: its `RowBinary` and the end of each row.
struct Table {
    name: &'static str,
    data: Bytes,
    ends: Vec<u32>,
}

impl Table {
    /// The bytes of rows `lo..hi`.
    fn rows(&self, lo: usize, hi: usize) -> Bytes {
        let start = match lo {
            0 => 0,
            i => self.ends[i - 1] as usize,
        };
        self.data.slice(start..self.ends[hi - 1] as usize)
    }
}

struct Sink<'a> {
    ch: &'a ClickHouse,
    cfg: &'a WriterConfig,
    dead: Vec<DeadLetterRow>,
    dead_lettered: usize,
}

impl Sink<'_> {
    /// Insert `data` (`rows` rows), retrying transient failures for ever.
    async fn insert_retrying(
        &self,
        table: &str,
        data: Bytes,
        rows: usize,
    ) -> Result<(), StoreError> {
        let what = format!("insert into {table} ({rows} rows)");
        self.cfg
            .retry
            .run(&what, Some(&self.cfg.progress), || {
                self.ch.insert_row_binary(table, data.clone())
            })
            .await
    }

    /// Insert a table's rows; where ClickHouse refuses the values, halve the
    /// rows and insert each half again, until the refused rows are alone:
    /// those go to `dead_letters` with ClickHouse's reason (the row read
    /// back as JSON), all others are written. A batch with one bad row costs
    /// about 2·log2(rows) extra inserts. `dead_letters` itself is never
    /// bisected (that could loop): its failure fails the batch.
    async fn insert(&mut self, t: &Table) -> Result<(), StoreError> {
        let n = t.ends.len();
        if n == 0 {
            return Ok(());
        }
        if t.name == DeadLetterRow::TABLE {
            return self.insert_retrying(t.name, t.data.clone(), n).await;
        }
        // An explicit stack instead of recursion (async recursion needs boxing).
        let mut todo: Vec<(usize, usize)> = vec![(0, n)];
        while let Some((lo, hi)) = todo.pop() {
            let part = t.rows(lo, hi);
            match self.insert_retrying(t.name, part.clone(), hi - lo).await {
                Ok(()) => {}
                Err(StoreError::BadRows(reason)) if hi - lo > 1 => {
                    tracing::warn!(table = t.name, rows = hi - lo, %reason, "ClickHouse refused some rows; bisecting.");
                    let mid = lo + (hi - lo) / 2;
                    todo.push((mid, hi));
                    todo.push((lo, mid));
                }
                Err(StoreError::BadRows(reason)) => {
                    tracing::error!(table = t.name, %reason, "ClickHouse refused a row; dead-lettering it.");
                    let reason = format!("insert into {} refused: {reason}", t.name);
                    self.dead
                        .push(DeadLetterRow::for_refused_encoded(t.name, &reason, &part));
                    self.dead_lettered += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
