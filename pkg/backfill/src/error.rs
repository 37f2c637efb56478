//! What can go wrong in a backfill, and whether trying again can help.

use std::time::Duration;

/// A backfill failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackfillError {
    /// A setting is unusable.
    #[error("{0}")]
    Config(String),
    /// An HTTP request failed before an answer (connect, timeout, reset).
    #[error("{url}: {reason}")]
    Transport {
        /// The URL (no credentials).
        url: String,
        /// Why.
        reason: String,
    },
    /// The server answered with an error status.
    #[error("{url}: HTTP {status} {error}")]
    Http {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// The XRPC `error` name or the start of the body.
        error: String,
        /// When the server said to come back (`Retry-After`, `RateLimit-Reset`).
        retry_after: Option<Duration>,
    },
    /// The repository is larger than the cap.
    #[error("repository larger than {max} bytes")]
    TooLarge {
        /// The cap.
        max: u64,
    },
    /// The repository CAR is broken, or its commit does not verify.
    #[error("bad repository: {0}")]
    Repo(String),
    /// DID resolution failed.
    #[error(transparent)]
    Resolve(#[from] skyhouse_identity::ResolveError),
    /// Redis failed.
    #[error(transparent)]
    State(#[from] skyhouse_state::StateError),
    /// The batch writer stopped (ClickHouse refused a batch for good, or
    /// shutdown): nothing more can be written.
    #[error("the batch writer stopped")]
    WriterStopped,
    /// ClickHouse failed.
    #[error(transparent)]
    Store(#[from] skyhouse_store::StoreError),
    /// The monitor's newest check found the repository's host down: the
    /// repository goes back to the end of the queue, no attempt counted.
    #[error("{0}: host down at the monitor's last check")]
    HostDown(String),
}

impl BackfillError {
    /// Whether the same request may succeed later: transport errors, 408,
    /// 425, 429, 5xx, unavailable Redis/ClickHouse, retriable resolution.
    pub fn is_retriable(&self) -> bool {
        match self {
            BackfillError::Transport { .. } => true,
            BackfillError::Http { status, .. } => {
                matches!(status, 408 | 425 | 429) || (500..600).contains(status)
            }
            BackfillError::Resolve(e) => e.is_retriable(),
            BackfillError::State(e) => e.is_retriable(),
            BackfillError::Store(e) => e.is_retriable(),
            _ => false,
        }
    }

    /// Whether the writer is gone (stop working, do not dead-letter).
    pub fn is_writer_stopped(&self) -> bool {
        matches!(self, BackfillError::WriterStopped)
    }

    /// The delay the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            BackfillError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}
