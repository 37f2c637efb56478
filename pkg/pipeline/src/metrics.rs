//! The indexer's metrics (names as in the README and dashboards/).
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `skyhouse_indexer_events_total` | counter | `source`, `kind` | messages decoded, by event kind (`commit`, `identity`, `account`, `sync`, `info`, `error`, `unknown`, `invalid`) |
//! | `skyhouse_indexer_ops_total` | counter | `source`, `collection` (typed collections, else `other`) | record operations turned into rows |
//! | `skyhouse_indexer_filtered_total` | counter | `source` | operations dropped by the collection filter |
//! | `skyhouse_indexer_dead_letters_total` | counter | `source` | rows sent to `dead_letters` while decoding/transforming |
//! | `skyhouse_indexer_lag_seconds` | gauge | `source` | now − the newest event's own time |
//! | `skyhouse_indexer_resyncs_total` | counter | `reason` (`gap`, `sync`, `chain`, `too_big`, `unverified`, `future_cursor`) | repositories queued for resync |
//! | `skyhouse_indexer_resync_dropped_total` | counter | | resync requests dropped (queue full while Redis was down) |
//! | `skyhouse_indexer_verify_failures_total` | counter | `reason` (`no_key`, `bad_signature`) | commits that failed `--verify` |
//! | `skyhouse_indexer_batch_rows` | histogram | | rows per acknowledged ClickHouse batch |
//! | `skyhouse_indexer_batches_total` | counter | | batches acknowledged by ClickHouse |
//! | `skyhouse_indexer_rows_total` | counter | | rows acknowledged (all tables) |
//! | `skyhouse_indexer_insert_dead_letters_total` | counter | | rows ClickHouse refused, stored in `dead_letters` |
//! | `skyhouse_indexer_ack_latency_seconds` | histogram | | event received → its batch acknowledged (queryable) |
//! | `skyhouse_indexer_cursor` | gauge | | the newest acknowledged position |
//! | `skyhouse_indexer_cursor_saved` | gauge | | the newest position written to Redis |
//! | `skyhouse_indexer_redis_errors_total` | counter | `op` | failed Redis commands (`load_cursor`, `save_cursor`, `resync`, `skipped`) |
//! | `skyhouse_indexer_cleanups_total` | counter | | deleted accounts whose rows were tombstoned |
//! | `skyhouse_indexer_identity_resolutions_total` | counter | `status` (`valid`, `invalid`, `unknown`, `failed`) | `#identity` events without a handle, resolved (`failed`: no DID document) |
//! | `skyhouse_indexer_identity_dropped_total` | counter | | `#identity` events without a handle not resolved (queue full, or shutdown) |
//!
//! The source's own metrics (`skyhouse_source_*`: reconnects, bytes,
//! connected) are described by `skyhouse_sources::describe_metrics`.

use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Unit,
};
use skyhouse_sources::SourceKind;

use crate::{Decoded, ResyncReason};
use skyhouse_transform::Decoder;

/// Every `op` of `skyhouse_indexer_redis_errors_total`.
const REDIS_OPS: [&str; 4] = ["load_cursor", "save_cursor", "resync", "skipped"];

/// Every `reason` of `skyhouse_indexer_verify_failures_total`.
const VERIFY_FAILURES: [&str; 2] = ["no_key", "bad_signature"];

/// Export every metric of an indexer reading a `kind` source before it reads
/// anything: each counter at 0, each labelled one with every value of its
/// closed set (event kinds, typed collections and `other`, resync reasons,
/// Redis operations, …), the histograms empty, the gauges at 0 (the cursors
/// until the first acknowledgement; the lag until the first event). The
/// dashboards then have a series from the first scrape, and a `rate()` or an
/// `increase()` alert sees the first event. Describes them too. Idempotent.
pub fn export_at_zero(kind: SourceKind) {
    describe();
    skyhouse_sources::export_at_zero(kind);
    let source = kind.as_str();
    for k in Decoded::KINDS {
        counter!("skyhouse_indexer_events_total", "source" => source, "kind" => k).increment(0);
    }
    for collection in Decoder::op_count_labels() {
        counter!("skyhouse_indexer_ops_total", "source" => source, "collection" => collection)
            .increment(0);
    }
    for name in [
        "skyhouse_indexer_filtered_total",
        "skyhouse_indexer_dead_letters_total",
    ] {
        counter!(name, "source" => source).increment(0);
    }
    gauge!("skyhouse_indexer_lag_seconds", "source" => source).increment(0.0);
    for reason in ResyncReason::ALL {
        counter!("skyhouse_indexer_resyncs_total", "reason" => reason.as_str()).increment(0);
    }
    for reason in VERIFY_FAILURES {
        counter!("skyhouse_indexer_verify_failures_total", "reason" => reason).increment(0);
    }
    for op in REDIS_OPS {
        counter!("skyhouse_indexer_redis_errors_total", "op" => op).increment(0);
    }
    for name in [
        "skyhouse_indexer_resync_dropped_total",
        "skyhouse_indexer_batches_total",
        "skyhouse_indexer_rows_total",
        "skyhouse_indexer_insert_dead_letters_total",
        "skyhouse_indexer_cleanups_total",
    ] {
        counter!(name).increment(0);
    }
    // Registered without a sample: rendered with every quantile at 0 and a count of 0.
    let _ = histogram!("skyhouse_indexer_batch_rows");
    let _ = histogram!("skyhouse_indexer_ack_latency_seconds");
    gauge!("skyhouse_indexer_cursor").increment(0.0);
    gauge!("skyhouse_indexer_cursor_saved").increment(0.0);
}

/// Describe every metric once (idempotent).
pub fn describe() {
    skyhouse_sources::describe_metrics();
    describe_counter!(
        "skyhouse_indexer_events_total",
        Unit::Count,
        "Messages decoded, by source and event kind"
    );
    describe_counter!(
        "skyhouse_indexer_ops_total",
        Unit::Count,
        "Record operations turned into rows"
    );
    describe_counter!(
        "skyhouse_indexer_filtered_total",
        Unit::Count,
        "Operations dropped by the collection filter"
    );
    describe_counter!(
        "skyhouse_indexer_dead_letters_total",
        Unit::Count,
        "Rows sent to dead_letters while decoding"
    );
    describe_gauge!(
        "skyhouse_indexer_lag_seconds",
        Unit::Seconds,
        "Now minus the newest event's own time"
    );
    describe_counter!(
        "skyhouse_indexer_resyncs_total",
        Unit::Count,
        "Repositories queued for resync, by reason"
    );
    describe_counter!(
        "skyhouse_indexer_resync_dropped_total",
        Unit::Count,
        "Resync requests dropped (queue full)"
    );
    describe_counter!(
        "skyhouse_indexer_verify_failures_total",
        Unit::Count,
        "Commits that failed --verify"
    );
    describe_histogram!(
        "skyhouse_indexer_batch_rows",
        Unit::Count,
        "Rows per acknowledged ClickHouse batch"
    );
    describe_counter!(
        "skyhouse_indexer_batches_total",
        Unit::Count,
        "Batches acknowledged by ClickHouse"
    );
    describe_counter!(
        "skyhouse_indexer_rows_total",
        Unit::Count,
        "Rows acknowledged by ClickHouse"
    );
    describe_counter!(
        "skyhouse_indexer_insert_dead_letters_total",
        Unit::Count,
        "Rows ClickHouse refused (stored in dead_letters)"
    );
    describe_histogram!(
        "skyhouse_indexer_ack_latency_seconds",
        Unit::Seconds,
        "Event received to batch acknowledged"
    );
    describe_gauge!(
        "skyhouse_indexer_cursor",
        "Newest position acknowledged by ClickHouse"
    );
    describe_gauge!(
        "skyhouse_indexer_cursor_saved",
        "Newest position written to Redis"
    );
    describe_counter!(
        "skyhouse_indexer_redis_errors_total",
        Unit::Count,
        "Failed Redis commands by operation"
    );
    describe_counter!(
        "skyhouse_indexer_cleanups_total",
        Unit::Count,
        "Deleted accounts whose rows were tombstoned"
    );
    describe_counter!(
        "skyhouse_indexer_identity_resolutions_total",
        Unit::Count,
        "#identity events without a handle resolved, by outcome"
    );
    describe_counter!(
        "skyhouse_indexer_identity_dropped_total",
        Unit::Count,
        "#identity events without a handle not resolved (queue full or shutdown)"
    );
    counter!("skyhouse_indexer_identity_dropped_total").increment(0);
    for status in ["valid", "invalid", "unknown", "failed"] {
        counter!("skyhouse_indexer_identity_resolutions_total", "status" => status).increment(0);
    }
    skyhouse_identity::describe_metrics();
}

/// Microseconds since the epoch.
pub(crate) fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The per-event metrics of one decode loop, registered once: looking a
/// labelled metric up in the registry for every event (hashing its name and
/// labels) costs more than the increment itself.
pub(crate) struct DecodeMetrics {
    /// `skyhouse_indexer_events_total` by kind, in [`Decoded::KINDS`] order.
    events: [Counter; Decoded::KINDS.len()],
    filtered: Counter,
    dead_letters: Counter,
    lag: Gauge,
}

impl DecodeMetrics {
    /// The handles of a `kind` source (the recorder must be installed).
    pub(crate) fn new(kind: SourceKind) -> DecodeMetrics {
        let source = kind.as_str();
        DecodeMetrics {
            events: Decoded::KINDS.map(
                |k| counter!("skyhouse_indexer_events_total", "source" => source, "kind" => k),
            ),
            filtered: counter!("skyhouse_indexer_filtered_total", "source" => source),
            dead_letters: counter!("skyhouse_indexer_dead_letters_total", "source" => source),
            lag: gauge!("skyhouse_indexer_lag_seconds", "source" => source),
        }
    }

    /// One decoded message.
    pub(crate) fn decoded(&self, d: &Decoded) {
        match Decoded::KINDS.iter().position(|k| *k == d.kind) {
            Some(i) => self.events[i].increment(1),
            None => debug_assert!(false, "an event kind not in Decoded::KINDS: {}", d.kind),
        }
        if d.filtered > 0 {
            self.filtered.increment(d.filtered);
        }
        if d.dead_letters > 0 {
            self.dead_letters.increment(d.dead_letters);
        }
    }

    /// An event of time `event_us` decoded at `now_us`.
    pub(crate) fn lag(&self, event_us: i64, now_us: i64) {
        self.lag.set((now_us - event_us) as f64 / 1e6);
    }
}

pub(crate) fn ops_by_collection(
    kind: SourceKind,
    counts: impl Iterator<Item = (&'static str, u64)>,
) {
    for (collection, n) in counts {
        counter!("skyhouse_indexer_ops_total", "source" => kind.as_str(), "collection" => collection)
            .increment(n);
    }
}

pub(crate) fn resync(reason: ResyncReason) {
    counter!("skyhouse_indexer_resyncs_total", "reason" => reason.as_str()).increment(1);
}

pub(crate) fn resync_dropped() {
    counter!("skyhouse_indexer_resync_dropped_total").increment(1);
}

pub(crate) fn verify_failed(reason: &'static str) {
    debug_assert!(VERIFY_FAILURES.contains(&reason), "{reason}");
    counter!("skyhouse_indexer_verify_failures_total", "reason" => reason).increment(1);
}

/// A batch acknowledged: its rows, and how many of them ClickHouse refused.
pub(crate) fn ack(rows: usize, dead_lettered: usize) {
    histogram!("skyhouse_indexer_batch_rows").record(rows as f64);
    counter!("skyhouse_indexer_batches_total").increment(1);
    counter!("skyhouse_indexer_rows_total").increment(rows as u64);
    if dead_lettered > 0 {
        counter!("skyhouse_indexer_insert_dead_letters_total").increment(dead_lettered as u64);
    }
}

pub(crate) fn ack_latency(d: Duration) {
    histogram!("skyhouse_indexer_ack_latency_seconds").record(d.as_secs_f64());
}

pub(crate) fn cursor(v: i64) {
    gauge!("skyhouse_indexer_cursor").set(v as f64);
}

pub(crate) fn cursor_saved(v: i64) {
    gauge!("skyhouse_indexer_cursor_saved").set(v as f64);
}

pub(crate) fn redis_error(op: &'static str) {
    debug_assert!(REDIS_OPS.contains(&op), "{op}");
    counter!("skyhouse_indexer_redis_errors_total", "op" => op).increment(1);
}

pub(crate) fn identity_resolved(status: &'static str) {
    counter!("skyhouse_indexer_identity_resolutions_total", "status" => status).increment(1);
}

pub(crate) fn identity_dropped(n: u64) {
    counter!("skyhouse_indexer_identity_dropped_total").increment(n);
}

pub(crate) fn cleanups(n: usize) {
    counter!("skyhouse_indexer_cleanups_total").increment(n as u64);
}
