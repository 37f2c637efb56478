//! The monitor's Prometheus metrics (`skyhouse_monitor_*`).
//!
//! No metric has a host label: a relay's listHosts names thousands of hosts,
//! and labels must come from closed sets. Per-host state is in `/v1/hosts`
//! and in ClickHouse `host_checks`; the metrics count hosts by kind and state
//! and checks by result.

use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};

use crate::check::{CheckResult, Snapshot};
use crate::hosts::HostKind;

/// Describe every metric once (call at start-up) and export them all before
/// the first check: the counters at 0 (`checks_total` with each result),
/// the host gauges at 0 for each kind and state, the histograms empty. Every
/// series a dashboard reads is then in the first scrape.
pub fn describe_metrics() {
    describe_gauge!(
        "skyhouse_monitor_hosts",
        Unit::Count,
        "Known hosts by kind (pds, relay) and state at their newest check (up, down, unchecked)"
    );
    describe_counter!(
        "skyhouse_monitor_checks_total",
        Unit::Count,
        "Host checks by result (ok, timeout, connect, tls, protocol, http_status, bad_body)"
    );
    describe_histogram!(
        "skyhouse_monitor_rtt_seconds",
        Unit::Seconds,
        "Round trip of GET /xrpc/_health to its response headers (connect and TLS included), hosts that answered"
    );
    describe_counter!(
        "skyhouse_monitor_rounds_total",
        Unit::Count,
        "Completed check rounds (every known host checked once)"
    );
    describe_histogram!(
        "skyhouse_monitor_round_seconds",
        Unit::Seconds,
        "Wall time of one check round"
    );
    describe_counter!(
        "skyhouse_monitor_store_errors_total",
        Unit::Count,
        "Rounds whose snapshots could not be written to ClickHouse"
    );
    describe_counter!(
        "skyhouse_monitor_discovery_errors_total",
        Unit::Count,
        "Failed listHosts enumerations of a relay"
    );
    describe_counter!(
        "skyhouse_monitor_hosts_dropped_total",
        Unit::Count,
        "Discovered hosts not added because the host list is at --max-hosts"
    );
    for r in CheckResult::ALL {
        counter!("skyhouse_monitor_checks_total", "result" => r.as_str()).increment(0);
    }
    for kind in [HostKind::Pds, HostKind::Relay] {
        for state in STATES {
            gauge!("skyhouse_monitor_hosts", "kind" => kind.as_str(), "state" => state)
                .increment(0.0);
        }
    }
    let _ = histogram!("skyhouse_monitor_rtt_seconds");
    let _ = histogram!("skyhouse_monitor_round_seconds");
    for name in [
        "skyhouse_monitor_rounds_total",
        "skyhouse_monitor_store_errors_total",
        "skyhouse_monitor_discovery_errors_total",
        "skyhouse_monitor_hosts_dropped_total",
    ] {
        counter!(name).increment(0);
    }
}

pub(crate) fn checked(s: &Snapshot) {
    counter!("skyhouse_monitor_checks_total", "result" => s.result.as_str()).increment(1);
    if s.rtt_ms > 0 {
        histogram!("skyhouse_monitor_rtt_seconds").record(f64::from(s.rtt_ms) / 1000.0);
    }
}

pub(crate) fn round(took: Duration) {
    counter!("skyhouse_monitor_rounds_total").increment(1);
    histogram!("skyhouse_monitor_round_seconds").record(took.as_secs_f64());
}

/// Every `state` of `skyhouse_monitor_hosts`.
const STATES: [&str; 3] = ["up", "down", "unchecked"];

pub(crate) fn hosts(kind: HostKind, up: usize, down: usize, unchecked: usize) {
    for (state, n) in STATES.into_iter().zip([up, down, unchecked]) {
        gauge!("skyhouse_monitor_hosts", "kind" => kind.as_str(), "state" => state).set(n as f64);
    }
}

pub(crate) fn store_error() {
    counter!("skyhouse_monitor_store_errors_total").increment(1);
}

pub(crate) fn discovery_error() {
    counter!("skyhouse_monitor_discovery_errors_total").increment(1);
}

pub(crate) fn dropped(n: usize) {
    counter!("skyhouse_monitor_hosts_dropped_total").increment(n as u64);
}
