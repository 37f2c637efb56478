//! The relay's metrics (`skyhouse_relay_*`), described once.

use metrics::{counter, describe_counter, describe_gauge, gauge, Counter, Gauge, Unit};

use crate::pb::Source;

/// Describe every metric (idempotent).
pub fn describe() {
    describe_gauge!(
        "skyhouse_relay_clients",
        Unit::Count,
        "gRPC clients streaming operations now"
    );
    describe_counter!(
        "skyhouse_relay_client_operations_total",
        Unit::Count,
        "Operations sent, by client name (the request's client_name)"
    );
    describe_gauge!(
        "skyhouse_relay_client_queue_depth",
        Unit::Count,
        "Operations between a client's position and the newest, by client name (at its last batch)"
    );
    describe_counter!(
        "skyhouse_relay_disconnects_total",
        Unit::Count,
        "Client streams ended, by reason: slow, client_gone, shutdown, revoked"
    );
    describe_counter!(
        "skyhouse_relay_auth_refused_total",
        Unit::Count,
        "Calls refused by the token check, by reason: missing (no token), invalid (unknown or revoked), scope (the token lacks the method's scope)"
    );
    describe_counter!(
        "skyhouse_relay_rejected_total",
        Unit::Count,
        "StreamOperations calls refused, by reason: out_of_range, invalid, too_many_clients, group (other filters than the group's, too many groups)"
    );
    describe_counter!(
        "skyhouse_relay_published_total",
        Unit::Count,
        "Operations published to the ring, by source (live, backfill)"
    );
    describe_gauge!(
        "skyhouse_relay_retained_operations",
        Unit::Count,
        "Operations in the retention ring"
    );
    describe_gauge!(
        "skyhouse_relay_retained_bytes",
        Unit::Bytes,
        "Encoded bytes in the retention ring"
    );
    describe_counter!(
        "skyhouse_relay_ingest_invalid_total",
        Unit::Count,
        "Operations refused (undecodable, missing did/collection/rkey, or over 2 MiB encoded)"
    );
    describe_counter!(
        "skyhouse_relay_push_operations_total",
        Unit::Count,
        "Operations an indexer or backfill worker pushed to the relay (--relay-url), by outcome: sent, dropped"
    );
    describe_gauge!(
        "skyhouse_relay_disk_segments",
        Unit::Count,
        "Retention segment files on disk (--data-dir)"
    );
    describe_gauge!(
        "skyhouse_relay_disk_bytes",
        Unit::Bytes,
        "Bytes of the retention segments on disk (--data-dir)"
    );
    describe_counter!(
        "skyhouse_relay_disk_repaired_total",
        Unit::Count,
        "Segments found damaged (truncated or corrupt) at start and cut at their last good record"
    );
    describe_counter!(
        "skyhouse_relay_disk_write_errors_total",
        Unit::Count,
        "Publishes whose operations could not be written to the segments (served from memory only)"
    );
    describe_counter!(
        "skyhouse_relay_disk_read_operations_total",
        Unit::Count,
        "Operations read back from the segments for clients behind the memory ring"
    );
    describe_gauge!(
        "skyhouse_relay_group_members",
        Unit::Count,
        "Members streaming now, by consumer group"
    );
    describe_counter!(
        "skyhouse_relay_group_rebalances_total",
        Unit::Count,
        "Partition reassignments (a member joined or left), by consumer group"
    );
    describe_gauge!(
        "skyhouse_relay_group_lag",
        Unit::Count,
        "Cursors between a consumer group's oldest acknowledged partition position and the newest operation, by group"
    );
    describe_counter!(
        "skyhouse_relay_group_position_lost_total",
        Unit::Count,
        "Partitions a consumer group resumed past its acknowledged position because that fell out of the retention window, by group"
    );
    describe_gauge!(
        "skyhouse_relay_push_connected",
        Unit::Count,
        "1 while the push to the relay (--relay-url) is connected"
    );
}

/// The relay's series at 0 from the start, one per label value (so rates and
/// dashboards see them before the first event).
pub(crate) fn zero_relay() {
    describe();
    gauge!("skyhouse_relay_clients").increment(0.0);
    for reason in ["slow", "client_gone", "shutdown", "revoked"] {
        counter!("skyhouse_relay_disconnects_total", "reason" => reason).increment(0);
    }
    for reason in ["missing", "invalid", "scope"] {
        counter!("skyhouse_relay_auth_refused_total", "reason" => reason).increment(0);
    }
    for reason in ["out_of_range", "invalid", "too_many_clients", "group"] {
        counter!("skyhouse_relay_rejected_total", "reason" => reason).increment(0);
    }
    for source in [Source::Live, Source::Backfill] {
        published(source, 0);
    }
    counter!("skyhouse_relay_ingest_invalid_total").increment(0);
    counter!("skyhouse_relay_disk_repaired_total").increment(0);
    counter!("skyhouse_relay_disk_write_errors_total").increment(0);
    counter!("skyhouse_relay_disk_read_operations_total").increment(0);
    gauge!("skyhouse_relay_disk_segments").increment(0.0);
    gauge!("skyhouse_relay_disk_bytes").increment(0.0);
    gauge!("skyhouse_relay_retained_operations").increment(0.0);
    gauge!("skyhouse_relay_retained_bytes").increment(0.0);
}

/// A producer's push series at 0 from the start.
pub(crate) fn zero_push() {
    describe();
    for outcome in ["sent", "dropped"] {
        pushed(outcome, 0);
    }
    gauge!("skyhouse_relay_push_connected").increment(0.0);
}

fn source_label(s: Source) -> &'static str {
    match s {
        Source::Live => "live",
        Source::Backfill => "backfill",
        Source::Unspecified => "unspecified",
    }
}

pub(crate) fn published(source: Source, n: u64) {
    counter!("skyhouse_relay_published_total", "source" => source_label(source)).increment(n);
}

pub(crate) fn retained(ops: usize, bytes: usize) {
    gauge!("skyhouse_relay_retained_operations").set(ops as f64);
    gauge!("skyhouse_relay_retained_bytes").set(bytes as f64);
}

pub(crate) fn rejected(reason: &'static str) {
    counter!("skyhouse_relay_rejected_total", "reason" => reason).increment(1);
}

pub(crate) fn disk(segments: usize, bytes: u64) {
    gauge!("skyhouse_relay_disk_segments").set(segments as f64);
    gauge!("skyhouse_relay_disk_bytes").set(bytes as f64);
}

pub(crate) fn disk_repaired() {
    counter!("skyhouse_relay_disk_repaired_total").increment(1);
}

pub(crate) fn disk_write_failed() {
    counter!("skyhouse_relay_disk_write_errors_total").increment(1);
}

pub(crate) fn disk_read(ops: usize) {
    counter!("skyhouse_relay_disk_read_operations_total").increment(ops as u64);
}

pub(crate) fn group_members(group: &str, n: usize) {
    gauge!("skyhouse_relay_group_members", "group" => group.to_owned()).set(n as f64);
}

/// `group`'s partitions moved (a member joined or left). The group's position-lost
/// counter is exported at 0 from then on, so a dashboard's `increase()` sees
/// the first loss.
pub(crate) fn rebalanced(group: &str) {
    counter!("skyhouse_relay_group_rebalances_total", "group" => group.to_owned()).increment(1);
    counter!("skyhouse_relay_group_position_lost_total", "group" => group.to_owned()).increment(0);
}

pub(crate) fn group_lag(group: &str, lag: u64) {
    gauge!("skyhouse_relay_group_lag", "group" => group.to_owned()).set(lag as f64);
}

pub(crate) fn group_position_lost(group: &str) {
    counter!("skyhouse_relay_group_position_lost_total", "group" => group.to_owned()).increment(1);
}

/// A forgotten group's series go to 0 (its label stays until the process ends).
pub(crate) fn group_forgotten(group: &str) {
    group_members(group, 0);
    group_lag(group, 0);
}

pub(crate) fn auth_refused(reason: &'static str) {
    counter!("skyhouse_relay_auth_refused_total", "reason" => reason).increment(1);
}

pub(crate) fn ingest_invalid(n: u64) {
    counter!("skyhouse_relay_ingest_invalid_total").increment(n);
}

pub(crate) fn pushed(outcome: &'static str, n: u64) {
    counter!("skyhouse_relay_push_operations_total", "outcome" => outcome).increment(n);
}

pub(crate) fn push_connected(up: bool) {
    gauge!("skyhouse_relay_push_connected").set(if up { 1.0 } else { 0.0 });
}

/// A connected client's metrics; counts the disconnect when dropped.
pub(crate) struct Client {
    sent: Counter,
    depth: Gauge,
    reason: &'static str,
}

impl Client {
    pub(crate) fn connected(name: String) -> Client {
        gauge!("skyhouse_relay_clients").increment(1.0);
        Client {
            sent: counter!("skyhouse_relay_client_operations_total", "client" => name.clone()),
            depth: gauge!("skyhouse_relay_client_queue_depth", "client" => name),
            reason: "client_gone",
        }
    }

    pub(crate) fn sent(&self, ops: usize, lag: u64) {
        self.sent.increment(ops as u64);
        self.depth.set(lag as f64);
    }

    pub(crate) fn depth(&self, lag: u64) {
        self.depth.set(lag as f64);
    }

    /// Why the stream ends (counted on drop).
    pub(crate) fn disconnect(&mut self, reason: &'static str) {
        self.reason = reason;
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        gauge!("skyhouse_relay_clients").decrement(1.0);
        // A gone client has nothing queued (a stale depth would look like a stuck one).
        self.depth.set(0.0);
        counter!("skyhouse_relay_disconnects_total", "reason" => self.reason).increment(1);
    }
}
