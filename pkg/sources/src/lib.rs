//! Live event transports: the first stage of the skyhouse indexer.
//!
//! ```text
//! Jetstream (ws JSON, zstd) ─┐                                   ┌─ pkg/pipeline: decode, transform,
//! relay firehose (ws CBOR) ──┼─► run() ─► bounded mpsc<Message> ─┤  write, ack, then store the cursor
//! file:// capture ───────────┘     ▲                             └─ and update `resume`
//!                                  └──── resume: Arc<AtomicI64> (last position decoded)
//! ```
//!
//! This crate moves bytes only: each WebSocket message (Jetstream JSON, decompressed when
//! `compress` is on; firehose frame bytes) becomes one [`Message`]. Decoding, filtering
//! and cursor bookkeeping belong to the consumer. What the transport does:
//!
//! - **Resume.** At every (re)connect the subscribe URL carries `cursor=` with the value of
//!   `resume` at that moment (negative: none, start at the live tip; 0: from the oldest event
//!   the server still holds). The consumer stores the
//!   position of each message it decoded there, so a reconnect replays from the last one
//!   seen: at-least-once. For a process restart the caller seeds `resume` from the saved
//!   cursor (for Jetstream rewound with [`rewind_jetstream_cursor`]).
//! - **Failover and backoff.** A failed connect (or a connection that dropped before it
//!   was stable) moves to the next endpoint; every retry waits a capped exponential delay
//!   with jitter, reset after a stable connection. Moving to another Jetstream instance
//!   rewinds the cursor by [`DEFAULT_JETSTREAM_REWIND`] (instances stamp `time_us` with
//!   their own clocks).
//! - **Liveness.** A socket silent for [`SourceConfig::liveness_timeout`] is dropped and
//!   reconnected (half-open TCP connections otherwise hang forever).
//! - **Backpressure.** Messages go into the caller's bounded channel with `send().await`:
//!   when it is full the reader stops reading the socket, TCP flow control pushes back to
//!   the server, and nothing is buffered here. (Jetstream and relays disconnect a consumer
//!   that stays too slow; it then reconnects from `resume` like after any drop.)
//! - **Limits.** Messages over [`SourceConfig::max_message_size`] are refused, on the wire
//!   and after decompression (the zstd decoder is capped; a small message cannot inflate
//!   into a large allocation).
//! - **`#error` frames.** A firehose `#error` frame is an instruction about the connection:
//!   it is delivered like any message (the consumer sees it in order), counted, and the
//!   source hangs up and reconnects to the same endpoint as the error asks. `FutureCursor`
//!   (the cursor is ahead of the server's sequence; asking again fails the same way): the
//!   next connect has no cursor, the live tip; the consumer records the skipped range and
//!   resets `resume` when it decodes the frame. `ConsumerTooSlow`: the next connect asks
//!   for [`Acked`], the last position the consumer has stored for good (falling back to
//!   `resume` while that is unknown), so whatever was held in memory when the server cut
//!   the connection is read again. Any other error: the next connect uses `resume`.
//! - **Replay.** A `file://` endpoint replays a capture: Jetstream JSON lines, or firehose
//!   frames as `[u32 big-endian length][frame]` ([`write_frame_file`], [`split_frame_file`]); end of file is end
//!   of stream. With `resume > 0`, messages at or before it are skipped: every Jetstream
//!   line whose `time_us <= resume` (Jetstream's order is only roughly by `time_us`, so
//!   each line is checked, reading just that field), and firehose frames up to the first
//!   `seq > resume` (a relay's `seq` only grows, so checking stops there). A message whose
//!   position cannot be read is delivered: the consumer decides what bad input is.
//!
//! ```no_run
//! # async fn example() -> Result<(), skyhouse_sources::SourceError> {
//! use std::sync::{atomic::AtomicI64, Arc};
//! use skyhouse_sources::{run, SourceConfig, CancellationToken, EVENT_QUEUE};
//!
//! let mut cfg = SourceConfig::jetstream();
//! cfg.wanted_collections = vec!["app.bsky.*".into()];
//! cfg.validate()?;
//! let resume = Arc::new(AtomicI64::new(-1)); // live tip, or the saved cursor (rewound)
//! let (tx, mut rx) = tokio::sync::mpsc::channel(EVENT_QUEUE);
//! let shutdown = CancellationToken::new();
//! let source = tokio::spawn(run(cfg, resume.clone(), tx, shutdown.child_token()));
//! while let Some(msg) = rx.recv().await {
//!     // decode msg.bytes, then resume.store(time_us, Ordering::Relaxed)
//! #   let _ = msg;
//! }
//! # let _ = source.await;
//! # Ok(()) }
//! ```
//!
//! Metrics (call [`describe_metrics`] once at startup, and [`export_at_zero`]
//! to have every series from the first scrape):
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `skyhouse_source_messages_total` | counter | `kind` = `jetstream`, `firehose` | messages sent into the channel |
//! | `skyhouse_source_bytes_total` | counter | | bytes received (wire size: compressed when `compress`) |
//! | `skyhouse_source_reconnects_total` | counter | `reason` (see below) | connections lost or failed |
//! | `skyhouse_source_dropped_total` | counter | `reason` = `oversized`, `decompress`, `unexpected_text` | messages refused without dropping the connection |
//! | `skyhouse_source_connected` | gauge | | 1 while a WebSocket is connected |
//! | `skyhouse_source_error_frames_total` | counter | `kind` = `future_cursor`, `consumer_too_slow`, `other` | firehose `#error` frames received |
//!
//! Reconnect reasons: `connect_failed`, `connect_timeout`, `closed` (close frame),
//! `eof` (socket ended without one), `error` (read error), `silent` (liveness timeout),
//! `oversized` (a wire message over the limit: the WebSocket layer fails the connection),
//! `error_frame` (a firehose `#error` frame: we hang up and reconnect as it asks).
#![deny(missing_docs)]

mod compress;
mod config;
mod error;
mod file;
mod metrics;
mod ws;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

pub use bytes::Bytes;
pub use tokio_util::sync::CancellationToken;

pub use config::{
    rewind_jetstream_cursor, ConfigError, SourceConfig, SourceKind, ZstdDictionary,
    DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX, DEFAULT_BACKOFF_RESET_AFTER,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_JETSTREAM_REWIND, DEFAULT_LIVENESS_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE, FIREHOSE_HOST, FIREHOSE_PATH, JETSTREAM_HOSTS, JETSTREAM_PATH,
    JETSTREAM_SHORTHANDS, MAX_WANTED_COLLECTIONS, MAX_WANTED_DIDS,
};
pub use error::SourceError;
pub use file::{split_frame_file, write_frame, write_frame_file};
pub use metrics::{describe_metrics, export_at_zero};

/// A suggested capacity for the channel given to [`run`]: 4096 messages, about 2 s of
/// peak Jetstream traffic (~2,000 events/s) and at worst 4096 × `max_message_size` of
/// memory (typically ~2 MB: Jetstream events average ~500 bytes). When it is full the
/// socket reader waits (backpressure).
pub const EVENT_QUEUE: usize = 4096;

/// One message from the source.
#[derive(Debug, Clone)]
pub struct Message {
    /// Jetstream: one JSON event (decompressed if `compress`). Firehose: one frame (DAG-CBOR
    /// header + body), as received.
    pub bytes: Bytes,
    /// The endpoint it came from: the subscribe URL without its query, or the `file://`
    /// URL. Cheap to clone. Positions are only comparable within one relay (firehose).
    pub endpoint: Arc<str>,
}

/// Stream messages from the endpoints of `cfg` into `tx` until `shutdown` is cancelled,
/// the receiver is dropped, or (for `file://`) the capture ends; all three return `Ok`.
///
/// `resume` is the consumer's position: the `time_us` (Jetstream) or `seq` (firehose) of
/// the last message it decoded; negative means none (live tip), 0 asks for everything the
/// server still holds (`cursor=0`). It is read at each (re)connect to put
/// `cursor=` in the URL; `run` never writes it. For a `file://` capture, it is read once at
/// the start and messages at or before it are skipped (see the crate docs, *Replay*).
///
/// Network errors never end `run`: it reconnects (with backoff and failover) forever. It
/// returns `Err` for an invalid config and for an unreadable or malformed capture file.
pub async fn run(
    cfg: SourceConfig,
    resume: Arc<AtomicI64>,
    tx: tokio::sync::mpsc::Sender<Message>,
    shutdown: CancellationToken,
) -> Result<(), SourceError> {
    run_with_status(
        cfg,
        resume,
        tx,
        shutdown,
        Connected::default(),
        Acked::default(),
    )
    .await
}

/// [`run`], keeping `connected` current: `true` while a WebSocket is open (or a `file://`
/// capture is being replayed), `false` while connecting, backing off between attempts,
/// and after `run` returns. For readiness checks (`/health`). A firehose
/// `ConsumerTooSlow` reconnects from `acked` (see the crate docs, *`#error` frames*).
pub async fn run_with_status(
    cfg: SourceConfig,
    resume: Arc<AtomicI64>,
    tx: tokio::sync::mpsc::Sender<Message>,
    shutdown: CancellationToken,
    connected: Connected,
    acked: Acked,
) -> Result<(), SourceError> {
    let endpoints = cfg.resolve()?;
    match endpoints.as_slice() {
        [config::Endpoint::File { url, path }] => {
            let from = resume.load(Ordering::Relaxed);
            file::replay(&cfg, url.as_str(), path, from, &tx, &shutdown, &connected).await
        }
        _ => {
            let handles = ws::Handles {
                resume: &resume,
                connected: &connected,
                acked: &acked,
            };
            ws::run(&cfg, &endpoints, handles, &tx, &shutdown).await
        }
    }
}

/// The consumer's last position stored for good (for the indexer: acknowledged by
/// ClickHouse), where a firehose `ConsumerTooSlow` reconnect resumes: the messages after
/// it may have been only in memory when the server cut the connection. Shared between
/// the consumer (which sets it) and [`run_with_status`] (which reads it at a reconnect).
/// Cheap to clone; starts at -1, unknown (the reconnect then uses `resume`).
#[derive(Debug, Clone)]
pub struct Acked(Arc<AtomicI64>);

impl Default for Acked {
    fn default() -> Self {
        Acked(Arc::new(AtomicI64::new(-1)))
    }
}

impl Acked {
    /// Record `position` as stored (negative: unknown).
    pub fn set(&self, position: i64) {
        self.0.store(position, Ordering::Relaxed);
    }

    /// The last position stored, if known.
    pub fn get(&self) -> Option<i64> {
        Some(self.0.load(Ordering::Relaxed)).filter(|p| *p >= 0)
    }
}

/// Whether a source is connected, shared between [`run_with_status`] (which sets it) and
/// whoever reports readiness. Cheap to clone; starts `false`.
#[derive(Debug, Clone, Default)]
pub struct Connected(Arc<AtomicBool>);

impl Connected {
    /// `true` while a WebSocket is open or a `file://` capture is being replayed.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Set while the returned guard lives.
    pub(crate) fn hold(&self) -> ConnectedFlag<'_> {
        self.0.store(true, Ordering::Relaxed);
        ConnectedFlag(self)
    }
}

/// Clears [`Connected`] when dropped.
pub(crate) struct ConnectedFlag<'a>(&'a Connected);

impl Drop for ConnectedFlag<'_> {
    fn drop(&mut self) {
        self.0 .0.store(false, Ordering::Relaxed);
    }
}
