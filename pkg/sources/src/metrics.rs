//! Metric names and their descriptions (described once, used everywhere through these
//! constants so a typo cannot split a series).

use metrics::{describe_counter, describe_gauge, Unit};

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
