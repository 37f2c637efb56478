//! Host health for skyhouse: which PDS hosts and relays answer, how fast and
//! what they say about themselves.
//!
//! ```text
//! seed file | --host | --relay ─┐
//! relay listHosts (periodic) ───┼─► host list (capped) ─► every interval: check each host
//! hosts seen before (ClickHouse)┘      (bounded concurrency; _health, describeServer, rtt)
//!     ─► host_checks (ClickHouse, ReplacingMergeTree keyed by host + interval bucket)
//!     ─► /metrics (skyhouse_monitor_*), /v1/hosts (JSON), /health
//! ```
//!
//! Every check ends in a [`Snapshot`] with a [`CheckResult`] (`ok`,
//! `timeout`, `connect`, `tls`, `protocol`, `http_status`, `bad_body`); no
//! answer can panic the monitor or grow its memory (bodies are capped,
//! the host list is capped). The backfill asks [`unhealthy_hosts`] (or,
//! per repository, [`UnhealthyHosts::is_down`]) which hosts were down at
//! their newest check.
#![deny(missing_docs)]

mod check;
mod hosts;
mod metrics;
mod monitor;
mod store;

pub use check::{CheckResult, Checker, Snapshot, MAX_BODY_BYTES, MAX_DOMAINS, MAX_ERROR_CHARS};
pub use hosts::{list_hosts, parse_seed, Host, HostKind};
pub use metrics::describe_metrics;
pub use monitor::{HostState, Monitor, MonitorConfig};
pub use skyhouse_store::ClickHouse;
pub use skyhouse_telemetry::CancellationToken;
pub use store::{bucket, known_hosts, unhealthy_hosts, write_snapshots, UnhealthyHosts};

/// The monitor's failures (a failed check is not one: it is a [`Snapshot`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MonitorError {
    /// A [`MonitorConfig`] setting is invalid (`setting` is its field name).
    #[error("{setting} {why}")]
    Setting {
        /// The field of [`MonitorConfig`].
        setting: &'static str,
        /// What is wrong.
        why: String,
    },
    /// The HTTP client could not be built.
    #[error("{0}")]
    Config(String),
    /// A host URL or seed-file line is invalid.
    #[error("invalid host {0}")]
    BadHost(String),
    /// A relay's `listHosts` failed.
    #[error("listHosts {0}")]
    ListHosts(String),
    /// ClickHouse failed.
    #[error(transparent)]
    Store(#[from] skyhouse_store::StoreError),
}

/// Why a capped body read failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("body over {0} bytes")]
    TooLarge(usize),
    #[error(transparent)]
    Http(#[from] reqwest::Error),
}

/// Read a response body, failing as soon as it passes `max` bytes (a
/// hostile or broken host cannot make the monitor buffer more).
pub(crate) async fn read_capped(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, ReadError> {
    if resp
        .content_length()
        .is_some_and(|n| n > u64::try_from(max).unwrap_or(u64::MAX))
    {
        return Err(ReadError::TooLarge(max));
    }
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if buf.len() + chunk.len() > max {
            return Err(ReadError::TooLarge(max));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}
