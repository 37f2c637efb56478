//! Metric names and their descriptions (described once, used everywhere through these
//! constants so a typo cannot split a series).

use metrics::{counter, describe_counter, describe_gauge, gauge, Unit};
use skyhouse_atproto::frame::ErrorKind;

use crate::SourceKind;

/// Messages sent into the channel, by `kind` (`jetstream`, `firehose`).
pub(crate) const MESSAGES: &str = "skyhouse_source_messages_total";
/// Bytes received, compressed size when `compress` is on.
pub(crate) const BYTES: &str = "skyhouse_source_bytes_total";
/// Connections lost or failed, by `reason`.
pub(crate) const RECONNECTS: &str = "skyhouse_source_reconnects_total";
/// Messages refused while the connection stays up, by `reason`.
pub(crate) const DROPPED: &str = "skyhouse_source_dropped_total";
/// 1 while connected.
pub(crate) const CONNECTED: &str = "skyhouse_source_connected";
/// Firehose `#error` frames received, by `kind` (`future_cursor`,
/// `consumer_too_slow`, `other`).
pub(crate) const ERROR_FRAMES: &str = "skyhouse_source_error_frames_total";

/// Every `reason` of [`RECONNECTS`] (a closed set: the label of each lost connection).
pub(crate) const RECONNECT_REASONS: [&str; 8] = [
    "connect_failed",
    "connect_timeout",
    "closed",
    "eof",
    "error",
    "silent",
    "oversized",
    "error_frame",
];

/// Every `reason` of [`DROPPED`].
pub(crate) const DROP_REASONS: [&str; 3] = ["oversized", "decompress", "unexpected_text"];

/// Export every counter of a `kind` source at 0, each labelled one with every
/// value of its closed set, and `connected` at 0, before the source runs: a
/// dashboard then has a series from the first scrape, and a `rate()` (or an
/// alert on `increase()`) sees the first event instead of a series appearing
/// at 1. Idempotent (adds 0).
pub fn export_at_zero(kind: SourceKind) {
    counter!(MESSAGES, "kind" => kind.as_str()).increment(0);
    counter!(BYTES).increment(0);
    for reason in RECONNECT_REASONS {
        counter!(RECONNECTS, "reason" => reason).increment(0);
    }
    for reason in DROP_REASONS {
        counter!(DROPPED, "reason" => reason).increment(0);
    }
    if kind == SourceKind::Firehose {
        for k in [
            ErrorKind::FutureCursor,
            ErrorKind::ConsumerTooSlow,
            ErrorKind::Other,
        ] {
            counter!(ERROR_FRAMES, "kind" => k.as_str()).increment(0);
        }
    }
    gauge!(CONNECTED).increment(0.0);
}

/// Describe this crate's metrics to the installed recorder. Call once, after installing it.
pub fn describe_metrics() {
    describe_counter!(
        MESSAGES,
        Unit::Count,
        "Messages the source handed to the pipeline, by source kind"
    );
    describe_counter!(
        BYTES,
        Unit::Bytes,
        "Bytes received from the socket or capture file (compressed size when compress is on)"
    );
    describe_counter!(
        RECONNECTS,
        Unit::Count,
        "Source connections lost or failed, by reason (connect_failed, connect_timeout, closed, eof, error, silent, oversized, error_frame)"
    );
    describe_counter!(
        ERROR_FRAMES,
        Unit::Count,
        "Firehose #error frames received, by kind (future_cursor: reconnected at the live tip; consumer_too_slow: reconnected from the last acknowledged cursor; other)"
    );
    describe_counter!(
        DROPPED,
        Unit::Count,
        "Messages refused without dropping the connection, by reason (oversized, decompress, unexpected_text)"
    );
    describe_gauge!(
        CONNECTED,
        Unit::Count,
        "1 while the source has a WebSocket connection, 0 otherwise"
    );
}
