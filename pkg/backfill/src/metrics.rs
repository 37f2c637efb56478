//! The backfill's metrics (served on :8096 by `skyhouse backfill work`).
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `skyhouse_backfill_repos_total` | counter | `status` (`done`, `deactivated`, `takendown`, `suspended`, `not_found`, `failed`) | repositories finished (acked) |
//! | `skyhouse_backfill_records_total` | counter | | records written from snapshots |
//! | `skyhouse_backfill_tombstones_total` | counter | | resync tombstones for records the snapshot no longer holds |
//! | `skyhouse_backfill_queue_depth` | gauge | | entries in the backfill stream (sampled) |
//! | `skyhouse_backfill_fetch_seconds` | histogram | | `getRepo` request time |
//! | `skyhouse_backfill_bytes_total` | counter | | repository CAR bytes fetched |
//! | `skyhouse_backfill_retries_total` | counter | | attempts retried (transient errors, 429) |
//! | `skyhouse_backfill_dead_letters_total` | counter | | repositories sent to the dead-letter list |
//! | `skyhouse_backfill_enqueued_total` | counter | | DIDs queued by `enqueue` |
//! | `skyhouse_backfill_claimed_total` | counter | | entries taken over from idle workers |
//! | `skyhouse_backfill_deferred_total` | counter | | repositories sent back to the end of the queue because the monitor found their host down |
//! | `skyhouse_backfill_host_wait_seconds` | histogram | | time a repository waited for its host's request slot or pause |
//! | `skyhouse_backfill_host_pauses_total` | counter | | hosts paused after a 429/503 asking to wait |
//! | `skyhouse_backfill_did_cache_total` | counter | `result` (`hit`, `miss`) | DID → PDS lookups in the Redis cache |
//! | `skyhouse_backfill_handle_cache_total` | counter | `result` (`hit`, `miss`) | handle → DID lookups in the Redis cache |
//! | `skyhouse_backfill_identities_total` | counter | `status` (`valid`, `invalid`, `unknown`) | `identities` rows written with repositories |
//! | `skyhouse_backfill_identity_refreshes_total` | counter | `status` (`valid`, `invalid`, `unknown`, `failed`) | stale identities re-verified by the walk (`failed`: the DID document could not be had) |
//! | `skyhouse_backfill_identity_walks_total` | counter | | passes of the walk over `identities` completed |

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};

/// Describe every metric once (idempotent), and export them all from the
/// start: every counter at 0 (`repos_total` with each status,
/// `did_cache_total` with each result), the histograms empty, the queue
/// depth at 0 until its first sample. A dashboard's `rate()` then shows 0
/// rather than "no data" before the first repository, retry or takeover,
/// and an `increase()` alert sees the first one.
pub fn describe() {
    for status in crate::RepoStatus::ALL {
        counter!("skyhouse_backfill_repos_total", "status" => status.as_str()).increment(0);
    }
    let _ = histogram!("skyhouse_backfill_fetch_seconds");
    let _ = histogram!("skyhouse_backfill_host_wait_seconds");
    gauge!("skyhouse_backfill_queue_depth").increment(0.0);
    for name in [
        "skyhouse_backfill_enqueued_total",
        "skyhouse_backfill_records_total",
        "skyhouse_backfill_tombstones_total",
        "skyhouse_backfill_bytes_total",
        "skyhouse_backfill_retries_total",
        "skyhouse_backfill_dead_letters_total",
        "skyhouse_backfill_claimed_total",
        "skyhouse_backfill_deferred_total",
        "skyhouse_backfill_host_pauses_total",
    ] {
        counter!(name).increment(0);
    }
    for result in ["hit", "miss"] {
        counter!("skyhouse_backfill_did_cache_total", "result" => result).increment(0);
        counter!("skyhouse_backfill_handle_cache_total", "result" => result).increment(0);
    }
    counter!("skyhouse_backfill_identity_walks_total").increment(0);
    for status in ["valid", "invalid", "unknown"] {
        counter!("skyhouse_backfill_identities_total", "status" => status).increment(0);
    }
    for status in ["valid", "invalid", "unknown", "failed"] {
        counter!("skyhouse_backfill_identity_refreshes_total", "status" => status).increment(0);
    }
    skyhouse_identity::describe_metrics();
    describe_counter!(
        "skyhouse_backfill_repos_total",
        Unit::Count,
        "Repositories finished, by status"
    );
    describe_counter!(
        "skyhouse_backfill_records_total",
        Unit::Count,
        "Records written from snapshots"
    );
    describe_counter!(
        "skyhouse_backfill_tombstones_total",
        Unit::Count,
        "Resync tombstones written"
    );
    describe_gauge!(
        "skyhouse_backfill_queue_depth",
        Unit::Count,
        "Entries in the backfill stream"
    );
    describe_histogram!(
        "skyhouse_backfill_fetch_seconds",
        Unit::Seconds,
        "getRepo request time"
    );
    describe_counter!(
        "skyhouse_backfill_bytes_total",
        Unit::Bytes,
        "Repository CAR bytes fetched"
    );
    describe_counter!(
        "skyhouse_backfill_retries_total",
        Unit::Count,
        "Attempts retried"
    );
    describe_counter!(
        "skyhouse_backfill_dead_letters_total",
        Unit::Count,
        "Repositories dead-lettered"
    );
    describe_counter!(
        "skyhouse_backfill_enqueued_total",
        Unit::Count,
        "DIDs queued"
    );
    describe_counter!(
        "skyhouse_backfill_claimed_total",
        Unit::Count,
        "Entries taken over from idle workers"
    );
    describe_counter!(
        "skyhouse_backfill_deferred_total",
        Unit::Count,
        "Repositories re-queued because their host is down"
    );
    describe_histogram!(
        "skyhouse_backfill_host_wait_seconds",
        Unit::Seconds,
        "Wait for the host's request slot or pause"
    );
    describe_counter!(
        "skyhouse_backfill_host_pauses_total",
        Unit::Count,
        "Hosts paused after a 429/503 with a delay"
    );
    describe_counter!(
        "skyhouse_backfill_did_cache_total",
        Unit::Count,
        "DID to PDS lookups in the Redis cache, by result"
    );
    describe_counter!(
        "skyhouse_backfill_handle_cache_total",
        Unit::Count,
        "Handle to DID lookups in the Redis cache, by result"
    );
    describe_counter!(
        "skyhouse_backfill_identities_total",
        Unit::Count,
        "Identity rows written with repositories, by handle status"
    );
    describe_counter!(
        "skyhouse_backfill_identity_refreshes_total",
        Unit::Count,
        "Stale identities re-verified, by outcome"
    );
    describe_counter!(
        "skyhouse_backfill_identity_walks_total",
        Unit::Count,
        "Passes of the identities walk completed"
    );
}

pub(crate) fn bytes(n: usize) {
    counter!("skyhouse_backfill_bytes_total").increment(n as u64);
}
pub(crate) fn enqueued(n: usize) {
    counter!("skyhouse_backfill_enqueued_total").increment(n as u64);
}
pub(crate) fn repo(status: &'static str, records: u64) {
    counter!("skyhouse_backfill_repos_total", "status" => status).increment(1);
    counter!("skyhouse_backfill_records_total").increment(records);
}
pub(crate) fn tombstones(n: usize) {
    counter!("skyhouse_backfill_tombstones_total").increment(n as u64);
}
pub(crate) fn queue_depth(n: u64) {
    gauge!("skyhouse_backfill_queue_depth").set(n as f64);
}
pub(crate) fn fetch_seconds(s: f64) {
    histogram!("skyhouse_backfill_fetch_seconds").record(s);
}
pub(crate) fn retry() {
    counter!("skyhouse_backfill_retries_total").increment(1);
}
pub(crate) fn dead_letter() {
    counter!("skyhouse_backfill_dead_letters_total").increment(1);
}
pub(crate) fn claimed(n: usize) {
    counter!("skyhouse_backfill_claimed_total").increment(n as u64);
}
pub(crate) fn deferred() {
    counter!("skyhouse_backfill_deferred_total").increment(1);
}
pub(crate) fn host_wait(s: f64) {
    histogram!("skyhouse_backfill_host_wait_seconds").record(s);
}
pub(crate) fn host_paused() {
    counter!("skyhouse_backfill_host_pauses_total").increment(1);
}
pub(crate) fn did_cache(hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    counter!("skyhouse_backfill_did_cache_total", "result" => result).increment(1);
}
pub(crate) fn handle_cache(hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    counter!("skyhouse_backfill_handle_cache_total", "result" => result).increment(1);
}
pub(crate) fn identity(status: &'static str) {
    counter!("skyhouse_backfill_identities_total", "status" => status).increment(1);
}
pub(crate) fn identity_refresh(status: &'static str) {
    counter!("skyhouse_backfill_identity_refreshes_total", "status" => status).increment(1);
}
pub(crate) fn identity_walk() {
    counter!("skyhouse_backfill_identity_walks_total").increment(1);
}
