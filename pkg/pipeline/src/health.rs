//! What the indexer's `/health` reads from the running pipeline besides
//! ClickHouse and Redis: `source` (connected) and `lag` (how far behind the
//! events it receives it is).
//!
//! Lag is `now − the newest decoded event's own time`, the value of
//! `skyhouse_indexer_lag_seconds`. While the pipeline is busy (the decoder
//! has input, or waits for the writer) it grows with the clock, so a stalled
//! writer shows as lag. A source that has handed over everything it had and
//! then says nothing for [`IDLE_AFTER`] is idle: the age of its last event is
//! not a backlog (a quiet PDS, or the end of a replayed backlog), so an idle
//! pipeline never fails the check. Waiting for input for less than that, the
//! lag stays what it was when the last event was decoded.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A decoder that has waited this long for input is idle: `lag` passes.
pub const IDLE_AFTER: Duration = Duration::from_secs(5);

/// The default lag threshold of `/health` (`--health-max-lag-secs`).
pub const DEFAULT_MAX_LAG: Duration = Duration::from_secs(300);

/// How often the `source` and `lag` checks are re-evaluated.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(1);

const NONE: i64 = i64::MIN;

/// The decoder's progress, shared with the health task. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Progress(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    base: Instant,
    /// The newest decoded event's own time, µs since the epoch (`NONE`: none yet).
    event_us: AtomicI64,
    /// Its lag when it was decoded, µs.
    decoded_lag_us: AtomicI64,
    /// Since when the decoder waits on an empty queue, ms after `base`
    /// (`NONE`: it is busy).
    waiting_since_ms: AtomicI64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress(Arc::new(Inner {
            base: Instant::now(),
            event_us: AtomicI64::new(NONE),
            decoded_lag_us: AtomicI64::new(0),
            waiting_since_ms: AtomicI64::new(NONE),
        }))
    }
}

impl Progress {
    /// An event of time `event_us` was decoded at `now_us` (µs since the epoch).
    pub(crate) fn decoded(&self, event_us: i64, now_us: i64) {
        self.0
            .decoded_lag_us
            .store(now_us - event_us, Ordering::Relaxed);
        self.0.event_us.store(event_us, Ordering::Relaxed);
    }

    /// The decoder found its queue empty and waits for the source.
    pub(crate) fn waiting(&self) {
        let ms = self.0.base.elapsed().as_millis() as i64;
        self.0.waiting_since_ms.store(ms, Ordering::Relaxed);
    }

    /// The decoder has input again.
    pub(crate) fn busy(&self) {
        self.0.waiting_since_ms.store(NONE, Ordering::Relaxed);
    }

    /// The lag `/health` compares with its threshold at `now_us`; `None` when
    /// there is nothing to be behind of (no event yet, or idle).
    pub(crate) fn lag(&self, now_us: i64) -> Option<Duration> {
        let event = Some(self.0.event_us.load(Ordering::Relaxed)).filter(|e| *e != NONE);
        let since = self.0.waiting_since_ms.load(Ordering::Relaxed);
        let waiting = (since != NONE).then(|| {
            let now_ms = self.0.base.elapsed().as_millis() as i64;
            Duration::from_millis(now_ms.saturating_sub(since).max(0) as u64)
        });
        let decoded = self.0.decoded_lag_us.load(Ordering::Relaxed);
        lag_at(event, decoded, waiting, now_us)
    }
}

/// See the module docs: `event_us` the newest event's time, `decoded_lag_us`
/// its lag when decoded, `waiting` how long the decoder has waited for input
/// (`None`: busy).
fn lag_at(
    event_us: Option<i64>,
    decoded_lag_us: i64,
    waiting: Option<Duration>,
    now_us: i64,
) -> Option<Duration> {
    let lag_us = match (event_us, waiting) {
        (None, _) => return None,
        (Some(_), Some(w)) if w >= IDLE_AFTER => return None,
        (Some(_), Some(_)) => decoded_lag_us,
        (Some(e), None) => now_us.saturating_sub(e),
    };
    // An event from the future (clock skew) is not behind.
    Some(Duration::from_micros(lag_us.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    #[test]
    fn lag_grows_while_busy_holds_while_waiting_and_is_none_when_idle() {
        let now = 1_700_000_000 * S;
        // Nothing decoded yet: nothing to be behind of.
        assert_eq!(lag_at(None, 0, None, now), None);
        assert_eq!(lag_at(None, 0, Some(Duration::ZERO), now), None);
        // Busy (input queued, or the writer is slow): now − event time.
        let event = now - 600 * S;
        assert_eq!(
            lag_at(Some(event), 2 * S, None, now),
            Some(Duration::from_secs(600))
        );
        // Waiting briefly for input: the lag when the last event was decoded.
        assert_eq!(
            lag_at(Some(event), 2 * S, Some(Duration::from_secs(1)), now),
            Some(Duration::from_secs(2))
        );
        // Idle: the source has nothing more for us; an old last event is not lag.
        assert_eq!(lag_at(Some(event), 600 * S, Some(IDLE_AFTER), now), None);
        // Clock skew: an event from the future is no lag.
        assert_eq!(lag_at(Some(now + S), -S, None, now), Some(Duration::ZERO));
    }

    #[test]
    fn progress_tracks_the_decoder() {
        let p = Progress::default();
        let now = 1_700_000_000 * S;
        assert_eq!(p.lag(now), None);
        p.decoded(now - 10 * S, now - 9 * S);
        // Busy: measured against the clock.
        assert_eq!(p.lag(now), Some(Duration::from_secs(10)));
        // Just started waiting: the decode-time lag.
        p.waiting();
        assert_eq!(p.lag(now), Some(Duration::from_secs(1)));
        p.busy();
        assert_eq!(p.lag(now), Some(Duration::from_secs(10)));
    }
}
