//! Retrying transient failures, and telling `/health` when writes are stuck.
//!
//! [`Retry::run`] repeats an operation while it fails transiently, with
//! capped exponential backoff, for ever or up to a deadline; every retry is
//! counted in `skyhouse_store_retries_total{reason}` and logged at warn.
//! [`WriteProgress`] remembers since when writes have been failing, so a
//! service's `/health` can turn red after a configurable time stuck while
//! the writer keeps trying.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{RetryReason, StoreError};

/// The retry counter's name.
pub const RETRIES_METRIC: &str = "skyhouse_store_retries_total";

/// Describe the store's metrics and export every retry reason at 0, so
/// dashboards and `rate()` alerts see the series before the first retry.
pub fn describe_metrics() {
    metrics::describe_counter!(
        RETRIES_METRIC,
        metrics::Unit::Count,
        "ClickHouse statements and inserts retried after a transient failure, by reason"
    );
    for reason in RetryReason::ALL {
        metrics::counter!(RETRIES_METRIC, "reason" => reason.as_str()).increment(0);
    }
}

/// Count one retry of `reason`.
pub fn count_retry(reason: RetryReason) {
    metrics::counter!(RETRIES_METRIC, "reason" => reason.as_str()).increment(1);
}

/// Backoff between attempts: `base`, doubling, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// First delay. Default 100 ms.
    pub base: Duration,
    /// Longest delay. Default 10 s.
    pub max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

impl Retry {
    /// Run `op` until it succeeds or fails with a non-transient error,
    /// sleeping between attempts; `what` names it in the log. With
    /// `progress`, failures and the final success are reported to it.
    pub async fn run<T, F, Fut>(
        &self,
        what: &str,
        progress: Option<&WriteProgress>,
        mut op: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut delay = self.base;
        let mut attempt: u32 = 0;
        loop {
            match op().await {
                Ok(v) => {
                    if let Some(p) = progress {
                        p.succeeded();
                    }
                    return Ok(v);
                }
                Err(e) => {
                    let Some(reason) = e.retry_reason() else {
                        return Err(e);
                    };
                    if let Some(p) = progress {
                        p.failed();
                    }
                    attempt += 1;
                    count_retry(reason);
                    tracing::warn!(error = %e, what, attempt, ?delay, "ClickHouse call failed; retrying.");
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2).min(self.max);
                }
            }
        }
    }

    /// Like [`Retry::run`], but gives up after `attempts` attempts, returning
    /// the last error (for requests a caller can answer with a 503 instead).
    pub async fn run_at_most<T, F, Fut>(
        &self,
        what: &str,
        attempts: u32,
        mut op: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut delay = self.base;
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let Some(reason) = e.retry_reason() else {
                        return Err(e);
                    };
                    if attempt >= attempts {
                        return Err(e);
                    }
                    attempt += 1;
                    count_retry(reason);
                    tracing::warn!(error = %e, what, attempt, ?delay, "ClickHouse call failed; retrying.");
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2).min(self.max);
                }
            }
        }
    }
}

/// Since when writes have been failing: shared by the writer (which reports
/// each failure and success) and the service's health check (which asks how
/// long it has been stuck). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct WriteProgress {
    /// Unix milliseconds of the first failure since the last success; 0
    /// while writes succeed.
    failing_since_ms: Arc<AtomicU64>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl WriteProgress {
    /// A write failed (keeps the time of the first failure in a row).
    pub fn failed(&self) {
        let _ = self.failing_since_ms.compare_exchange(
            0,
            now_ms().max(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// A write succeeded.
    pub fn succeeded(&self) {
        self.failing_since_ms.store(0, Ordering::Relaxed);
    }

    /// How long writes have been failing without a success in between;
    /// `None` while they succeed.
    pub fn stuck_for(&self) -> Option<Duration> {
        match self.failing_since_ms.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(now_ms().saturating_sub(since))),
        }
    }

    /// Whether writes have been failing for longer than `limit`.
    pub fn is_stuck(&self, limit: Duration) -> bool {
        self.stuck_for().is_some_and(|d| d > limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let progress = WriteProgress::default();
        let out = Retry::default()
            .run("t", Some(&progress), || async {
                let n = calls.fetch_add(1, Ordering::Relaxed);
                if n < 5 {
                    assert!(n == 0 || progress.stuck_for().is_some());
                    Err(StoreError::transient(RetryReason::Network, "refused"))
                } else {
                    Ok(n)
                }
            })
            .await;
        assert_eq!(out.expect("succeeds"), 5);
        assert_eq!(progress.stuck_for(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn other_errors_stop_at_once() {
        let calls = AtomicU32::new(0);
        let out: Result<(), _> = Retry::default()
            .run("t", None, || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err(StoreError::Schema("Code: 60".into()))
            })
            .await;
        assert!(matches!(out, Err(StoreError::Schema(_))));
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn run_at_most_gives_up() {
        let calls = AtomicU32::new(0);
        let out: Result<(), _> = Retry::default()
            .run_at_most("t", 3, || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err(StoreError::transient(RetryReason::Timeout, "slow"))
            })
            .await;
        assert_eq!(
            out.expect_err("gives up").retry_reason(),
            Some(RetryReason::Timeout)
        );
        assert_eq!(calls.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn progress_remembers_the_first_failure() {
        let p = WriteProgress::default();
        assert!(!p.is_stuck(Duration::ZERO));
        p.failed();
        let first = p.failing_since_ms.load(Ordering::Relaxed);
        p.failed();
        assert_eq!(p.failing_since_ms.load(Ordering::Relaxed), first);
        assert!(p.stuck_for().is_some());
        p.succeeded();
        assert!(p.stuck_for().is_none());
    }
}
