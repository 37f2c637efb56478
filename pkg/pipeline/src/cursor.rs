//! Acks → cursor → Redis, and the background loops that talk to Redis and
//! ClickHouse outside the hot path.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skyhouse_sources::{Acked, CancellationToken};
use skyhouse_state::State;
use skyhouse_store::writer::Ack;
use skyhouse_store::ClickHouse;
use tokio::sync::{mpsc, watch};

use crate::{metrics, PipelineError, Pos, Repair, TaskEnd};

/// First wait before retrying Redis at startup; doubles up to 5 s.
const LOAD_RETRY: Duration = Duration::from_millis(200);

/// Read the saved cursor. Redis down at startup: wait for it (starting
/// without the cursor would skip everything since the last run), unless
/// shutdown comes first.
pub(crate) async fn load(state: &State, key: &str, shutdown: &CancellationToken) -> Option<i64> {
    let mut wait = LOAD_RETRY;
    let mut waited = false;
    loop {
        match state.cursor(key).await {
            Ok(c) => {
                if waited {
                    tracing::info!(key, "Redis answers; cursor read, indexing starts.");
                }
                return c;
            }
            Err(e) if e.is_retriable() => {
                waited = true;
                tracing::warn!(
                    error = %e,
                    key,
                    retry_in_secs = wait.as_secs_f64(),
                    "Waiting for Redis: indexing starts once the saved cursor is read."
                );
                metrics::redis_error("load_cursor");
            }
            Err(e) => {
                // A value we did not write: start from the live tip rather
                // than guess, and say so.
                tracing::error!(error = %e, key, "Ignoring an unreadable cursor.");
                return None;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// What the indexer has handed to ClickHouse and not had acknowledged yet:
/// each decoded group sent to the writer (its position, when it was
/// received, its rows) until an ack covers it, the cursor this run last
/// saved, and whether the final account cleanup is running. It measures
/// event → queryable latency (`skyhouse_indexer_ack_latency_seconds`) and
/// says what a shutdown cut short left unwritten ([`Inflight::describe`]).
/// Cheap to clone: give one to [`crate::IndexerConfig::inflight`] and keep
/// a clone.
#[derive(Debug, Clone, Default)]
pub struct Inflight(Arc<InflightInner>);

#[derive(Debug, Default)]
struct InflightInner {
    groups: Mutex<VecDeque<(Pos, Instant, usize)>>,
    saved: Mutex<Option<i64>>,
    final_cleanup: AtomicBool,
}

/// Groups remembered (one per channel message; a few dozen are in flight
/// at most, the writer's queues are bounded).
const LATENCY_WINDOW: usize = 65_536;

impl Inflight {
    pub(crate) fn sent(&self, pos: Pos, at: Instant, rows: usize) {
        let mut q = self.0.groups.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= LATENCY_WINDOW {
            q.pop_front();
        }
        q.push_back((pos, at, rows));
    }

    /// Observe every group the ack covers.
    fn acked(&self, upto: Pos) {
        let now = Instant::now();
        let mut q = self.0.groups.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(&(pos, at, _)) = q.front() {
            if pos > upto {
                break;
            }
            q.pop_front();
            metrics::ack_latency(now - at);
        }
    }

    fn saved(&self, cursor: i64) {
        *self.0.saved.lock().unwrap_or_else(|e| e.into_inner()) = Some(cursor);
    }

    pub(crate) fn final_cleanup(&self, running: bool) {
        self.0.final_cleanup.store(running, Ordering::Relaxed);
    }

    /// Rows sent to the writer that ClickHouse has not acknowledged.
    pub fn unacked_rows(&self) -> u64 {
        let q = self.0.groups.lock().unwrap_or_else(|e| e.into_inner());
        q.iter().map(|(_, _, rows)| *rows as u64).sum()
    }

    /// The cursor this run last wrote to Redis, if any.
    pub fn saved_cursor(&self) -> Option<i64> {
        *self.0.saved.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What is unfinished, as a phrase: "51,000 rows not acknowledged by
    /// ClickHouse; cursor saved at 123". (Messages still queued before the
    /// decoder are not counted: they are not rows yet, and the cursor is
    /// behind them too.)
    pub fn describe(&self) -> String {
        let cursor = match self.saved_cursor() {
            Some(c) => format!("cursor saved at {c}"),
            None => "no cursor saved by this run".to_owned(),
        };
        let rows = self.unacked_rows();
        if rows > 0 {
            format!(
                "{} rows not acknowledged by ClickHouse; {cursor}",
                thousands(rows)
            )
        } else if self.0.final_cleanup.load(Ordering::Relaxed) {
            format!("every row acknowledged but the final account cleanup unfinished; {cursor}")
        } else {
            format!("every row acknowledged; {cursor}")
        }
    }
}

/// `51000` → `51,000`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Takes the writer's acks, keeps the running maximum, has it saved, and
/// tells the source (`acked`, where a `ConsumerTooSlow` reconnect resumes).
pub(crate) struct Keeper {
    state: State,
    key: String,
    interval: Duration,
    acked: Acked,
}

impl Keeper {
    pub(crate) fn new(state: State, key: String, interval: Duration, acked: Acked) -> Self {
        Keeper {
            state,
            key,
            interval,
            acked,
        }
    }

    pub(crate) async fn run(
        self,
        mut acks: mpsc::Receiver<Ack<Pos>>,
        inflight: Inflight,
    ) -> Result<TaskEnd, PipelineError> {
        let (tx, rx) = watch::channel(None::<i64>);
        let saver = tokio::spawn(save_loop(
            self.state.clone(),
            self.key.clone(),
            self.interval,
            rx,
            inflight.clone(),
        ));
        let mut latest: Option<Pos> = None;
        while let Some(ack) = acks.recv().await {
            metrics::ack(ack.rows, ack.dead_lettered);
            inflight.acked(ack.upto);
            // In order, running max: a batch of replayed events (ConsumerTooSlow)
            // never moves the cursor back; one of a later epoch moves it on even
            // when the server's numbering restarted lower (FutureCursor).
            if ack.upto.at > 0 && latest.is_none_or(|l| ack.upto > l) {
                latest = Some(ack.upto);
                metrics::cursor(ack.upto.at);
                self.acked.set(ack.upto.at);
                let _ = tx.send(Some(ack.upto.at));
            }
        }
        drop(tx); // the saver writes the last value, then ends
        let saved = saver
            .await
            .map_err(|e| PipelineError::Task(format!("cursor saver: {e}")))?;
        Ok(TaskEnd::Cursor(saved.or(latest.map(|l| l.at))))
    }
}

/// Final save attempts when shutting down with Redis down (~2 s each).
const FINAL_SAVE_ATTEMPTS: u32 = 3;

/// Write the newest cursor at most every `interval`; on failure keep it and
/// try again at the next tick. Returns the last value written.
async fn save_loop(
    state: State,
    key: String,
    interval: Duration,
    mut rx: watch::Receiver<Option<i64>>,
    inflight: Inflight,
) -> Option<i64> {
    let mut saved: Option<i64> = None;
    loop {
        let closed = rx.has_changed().is_err(); // the keeper is done
        let value = *rx.borrow_and_update();
        if let Some(v) = value.filter(|v| saved != Some(*v)) {
            let attempts = if closed { FINAL_SAVE_ATTEMPTS } else { 1 };
            for _ in 0..attempts {
                match state.set_cursor(&key, v).await {
                    Ok(()) => {
                        saved = Some(v);
                        inflight.saved(v);
                        metrics::cursor_saved(v);
                        break;
                    }
                    Err(e) => {
                        metrics::redis_error("save_cursor");
                        tracing::warn!(error = %e, key, cursor = v, "Cursor not saved; holding it in memory.");
                    }
                }
            }
        }
        if closed {
            if value.is_some() && saved != value {
                tracing::error!(key, cursor = ?value, "Cursor not saved at shutdown: the next start replays from the last saved one (idempotent).");
            }
            return saved;
        }
        if saved == value {
            // Up to date: wait for a newer value (Err: closed, final pass).
            if rx.changed().await.is_err() {
                continue;
            }
        }
        // At most one write per interval (newer values meanwhile coalesce);
        // a failed write is retried after it.
        tokio::time::sleep(interval).await;
    }
}

/// Send resync requests and skipped-range records to Redis; while it is
/// down, hold them (bounded by the channel) and retry.
pub(crate) async fn repair_loop(
    state: State,
    mut rx: mpsc::Receiver<Repair>,
) -> Result<TaskEnd, PipelineError> {
    while let Some(repair) = rx.recv().await {
        let mut wait = Duration::from_millis(200);
        let mut attempts = 0;
        loop {
            let (sent, op) = match &repair {
                Repair::Resync(did, reason, at) => (
                    state.queue_resync(did, reason.as_str(), *at).await,
                    "resync",
                ),
                Repair::Skip(skip) => (state.record_skip(skip).await, "skipped"),
            };
            let Err(e) = sent else { break };
            metrics::redis_error(op);
            attempts += 1;
            if rx.is_closed() && attempts >= FINAL_SAVE_ATTEMPTS {
                tracing::error!(?repair, error = %e, "Resync request (or skipped range) lost at shutdown.");
                break;
            }
            tracing::warn!(?repair, error = %e, "Resync request (or skipped range) waits for Redis.");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }
    Ok(TaskEnd::Resync)
}

/// Tombstone the rows of deleted accounts, every `every`.
pub(crate) async fn cleanup_loop(ch: ClickHouse, every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match skyhouse_store::cleanup::run_account_cleanups(&ch).await {
            Ok(0) => {}
            Ok(n) => metrics::cleanups(n),
            Err(e) => tracing::warn!(error = %e, "Account cleanup failed; retrying later."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflight_counts_the_rows_no_ack_covers_yet() {
        let inflight = Inflight::default();
        assert_eq!(
            inflight.describe(),
            "every row acknowledged; no cursor saved by this run"
        );
        let at = |epoch, at| Pos { epoch, at };
        let now = Instant::now();
        inflight.sent(at(0, 10), now, 2_000);
        inflight.sent(at(0, 20), now, 49_000);
        inflight.sent(at(1, 3), now, 7);
        inflight.acked(at(0, 10));
        inflight.saved(10);
        assert_eq!(inflight.unacked_rows(), 49_007);
        assert_eq!(
            inflight.describe(),
            "49,007 rows not acknowledged by ClickHouse; cursor saved at 10"
        );
        // A later epoch covers every earlier position.
        inflight.acked(at(1, 3));
        inflight.final_cleanup(true);
        assert_eq!(
            inflight.describe(),
            "every row acknowledged but the final account cleanup unfinished; cursor saved at 10"
        );
    }

    #[test]
    fn thousands_are_separated() {
        for (n, s) in [
            (0, "0"),
            (999, "999"),
            (1_000, "1,000"),
            (51_000, "51,000"),
            (1_234_567, "1,234,567"),
        ] {
            assert_eq!(thousands(n), s);
        }
    }
}
