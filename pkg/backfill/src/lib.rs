//! Backfill: every repository of the network into ClickHouse, and resync.
//!
//! ```text
//! enqueue: listRepos (cursor-paged, cursor in Redis) | DIDs ─XADD─► <prefix>backfill (Redis Stream)
//! work:    XREADGROUP / XAUTOCLAIM ─► resolve DID → PDS ─► getRepo (size cap, retries)
//!          ─► MST walk ─► transform (version = commit rev) ─► batch writer ─► ClickHouse
//!          ─► (writer ack) ─► repo_state row ─► XACK ─► XTRIM
//!          (with the rows: the DID's identity — its document's handle,
//!          verified both ways — and its account status: active, or what
//!          getRepoStatus says when getRepo refuses)
//! resync:  <prefix>resync entries take the same path, then the DID's stored
//!          records older than the snapshot and absent from it get tombstones.
//! walk:    identities older than --identity-refresh-secs are verified again
//!          (one process at a time; see `RefreshConfig`).
//! ```
//!
//! Only DIDs travel through Redis. A stream entry is acknowledged only after
//! the ClickHouse batch holding the repository's last rows is written, so a
//! crashed worker loses nothing: its pending entries are claimed by another
//! worker once idle longer than `claim_idle`. Every record row's version is
//! the snapshot commit's rev, and every identity and account row's the time
//! it was learnt (Unix microseconds, as live events' are), so backfill and
//! live indexing converge in any order.
#![deny(missing_docs)]

mod enumerate;
mod error;
mod fetch;
mod hosts;
pub mod metrics;
mod refresh;
mod worker;

pub use enumerate::{
    enqueue_dids, enqueue_hosts, enqueue_list_repos, list_repos_cursor_key, HostsQueued,
};
pub use error::BackfillError;
pub use fetch::{Fetched, Fetcher, HostedStatus};
pub use refresh::{refresh_pass, RefreshConfig, WalkSummary, WALK_CURSOR, WALK_LEASE};
pub use reqwest;
pub use skyhouse_monitor::UnhealthyHosts;
pub use skyhouse_state::{State, WorkQueue};
pub use tokio_util::sync::CancellationToken;
pub use worker::{repo_rows, run, RepoStatus, Summary, WorkerConfig};

/// Name (under the Redis prefix) of the backfill work stream.
pub const BACKFILL_STREAM: &str = "backfill";
/// Name of the dead-letter list: `did<TAB>reason` per repository that
/// failed `max_attempts` times.
pub const DEAD_LIST: &str = "backfill:dead";
/// The consumer group every backfill worker joins (on both streams).
pub const GROUP: &str = "backfill";

/// The backfill's ClickHouse batch limit in rows (`backfill work
/// --batch-rows`). ClickHouse 18.16's cost is mostly per part, so bigger
/// batches are cheaper for it: in `just bench-backfill`, 200k-row batches
/// cost ClickHouse ~40% less CPU than 100k (7.8 vs 13.5 s), and the worker
/// peaked at 835 MiB with a 300 MB repository in flight; 400k rows passed
/// the 1 GB goal. Four times the indexer's batch: a backfill is a bulk load
/// where latency does not matter.
pub const BATCH_ROWS: usize = 200_000;

/// The backfill's ClickHouse batch limit in bytes of RowBinary
/// (`--batch-bytes`): 64 MiB ≈ 190k rows of the real mix (~350 bytes each),
/// so rows and bytes close a batch at about the same point.
pub const BATCH_BYTES: usize = 64 << 20;

/// The backfill's ClickHouse batch age limit (`--batch-age-ms`): a slow
/// trickle of small repositories is still written (and acknowledged in the
/// queue) within about a second.
pub const BATCH_AGE: std::time::Duration = std::time::Duration::from_secs(1);

/// Running totals of this process's workers (for a progress display).
#[derive(Debug, Default)]
pub struct Progress {
    /// Repositories finished (acked), any status.
    pub repos: std::sync::atomic::AtomicU64,
    /// Records written.
    pub records: std::sync::atomic::AtomicU64,
    /// Repositories taken from a queue and not acknowledged yet: being
    /// fetched or walked, or waiting for their rows' batch. (What a shutdown
    /// cut short leaves pending in the queue, for another worker.)
    pub in_flight: std::sync::atomic::AtomicU64,
}
