//! Acks → cursor → Redis, and the background loops that talk to Redis and
//! ClickHouse outside the hot path.

use std::collections::VecDeque;
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
    loop {
        match state.cursor(key).await {
            Ok(c) => return c,
            Err(e) if e.is_retriable() => {
                tracing::warn!(error = %e, key, "Cannot read the cursor yet; retrying.");
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

/// Event → queryable latency: when a decoded group was sent and its
/// position; the keeper observes the time when an ack covers it.
#[derive(Debug, Clone, Default)]
pub struct Latency(Arc<Mutex<VecDeque<(Pos, Instant)>>>);

/// Groups remembered for latency (one per channel message; a few seconds'
/// worth at most, the writer's queues are bounded).
const LATENCY_WINDOW: usize = 65_536;

impl Latency {
    pub(crate) fn sent(&self, pos: Pos, at: Instant) {
        let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= LATENCY_WINDOW {
            q.pop_front();
        }
        q.push_back((pos, at));
    }

    /// Observe every group the ack covers.
    fn acked(&self, upto: Pos) {
        let now = Instant::now();
        let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(&(pos, at)) = q.front() {
            if pos > upto {
                break;
            }
            q.pop_front();
            metrics::ack_latency(now - at);
        }
    }
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
        latency: Latency,
    ) -> Result<TaskEnd, PipelineError> {
        let (tx, rx) = watch::channel(None::<i64>);
        let saver = tokio::spawn(save_loop(
            self.state.clone(),
            self.key.clone(),
            self.interval,
            rx,
        ));
        let mut latest: Option<Pos> = None;
        while let Some(ack) = acks.recv().await {
            metrics::ack(ack.rows, ack.dead_lettered);
            latency.acked(ack.upto);
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
