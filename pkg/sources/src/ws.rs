//! The WebSocket client loop: connect, read into the channel, reconnect with backoff.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use metrics::{counter, gauge, Counter};
use skyhouse_atproto::frame::{may_be_error_frame, ErrorFrame, ErrorKind, Frame};
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout, Instant};
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::compress::{DecompressError, Decompressor};
use crate::config::{Endpoint, SourceConfig, SourceKind, DEFAULT_JETSTREAM_REWIND};
use crate::error::SourceError;
use crate::metrics as m;
use crate::{rewind_jetstream_cursor, Acked, Connected, ConnectedFlag, Message};

/// How long to wait for a close handshake when we hang up: 1 s. It is a courtesy; the
/// socket is dropped either way.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What the consumer shares with the loop: where to resume, where it has stored up to,
/// and the connected flag it reports.
pub(crate) struct Handles<'a> {
    pub(crate) resume: &'a AtomicI64,
    pub(crate) connected: &'a Connected,
    pub(crate) acked: &'a Acked,
}

/// Where the next connect starts, as the last connection's end asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// `resume`, the consumer's last decoded position (the usual case).
    Resume,
    /// No cursor: the live tip (after `FutureCursor`).
    Tip,
    /// [`Acked`], or `resume` while it is unknown (after `ConsumerTooSlow`).
    Acked,
}

/// Connect to the endpoints in turn until `shutdown` or the receiver goes away.
pub(crate) async fn run(
    cfg: &SourceConfig,
    endpoints: &[Endpoint],
    handles: Handles<'_>,
    tx: &mpsc::Sender<Message>,
    shutdown: &CancellationToken,
) -> Result<(), SourceError> {
    let Handles {
        resume,
        connected,
        acked,
    } = handles;
    let bases: Vec<&Url> = endpoints
        .iter()
        .filter_map(|e| match e {
            Endpoint::Ws(url) => Some(url),
            Endpoint::File { .. } => None,
        })
        .collect();
    let decompressor = match (cfg.kind, cfg.compress) {
        (SourceKind::Jetstream, true) => Some(
            Decompressor::new(&cfg.zstd_dictionary, cfg.max_message_size)
                .map_err(SourceError::Dictionary)?,
        ),
        _ => None,
    };
    let mut conn = Connection {
        cfg,
        tx,
        shutdown,
        connected,
        decompressor,
        messages: counter!(m::MESSAGES, "kind" => cfg.kind.as_str()),
        bytes: counter!(m::BYTES),
    };
    // Consecutive failures since the last stable connection: the backoff exponent.
    let mut failures: u32 = 0;
    let mut host = 0usize;
    let mut last_connected: Option<usize> = None;
    let mut next_connect = Next::Resume;
    loop {
        let base = bases[host];
        let resume_at = || Some(resume.load(Ordering::Relaxed)).filter(|c| *c >= 0);
        let mut cursor = match std::mem::replace(&mut next_connect, Next::Resume) {
            Next::Resume => resume_at(),
            Next::Tip => None,
            Next::Acked => acked.get().or_else(resume_at),
        };
        if cfg.kind == SourceKind::Jetstream && last_connected.is_some_and(|h| h != host) {
            // Another Jetstream instance stamps time_us with its own clock and ordering:
            // go back a little so nothing between the two is missed (replays are harmless).
            cursor = cursor.map(|c| rewind_jetstream_cursor(c, DEFAULT_JETSTREAM_REWIND));
        }
        let url = cfg.subscribe_url(base, cursor);
        let endpoint: Arc<str> = Arc::from(base.as_str());
        let lost = match conn.connect_and_read(&url, &endpoint, cursor).await {
            End::Stop => return Ok(()),
            End::Lost(lost) => lost,
        };
        debug_assert!(
            m::RECONNECT_REASONS.contains(&lost.reason),
            "{}",
            lost.reason
        );
        counter!(m::RECONNECTS, "reason" => lost.reason).increment(1);
        let stable = lost
            .connected_for
            .is_some_and(|up| up >= cfg.backoff_reset_after);
        if stable {
            failures = 0;
        }
        if lost.connected_for.is_some() {
            last_connected = Some(host);
        }
        let delay = backoff(cfg, failures);
        failures = failures.saturating_add(1);
        let host_name = base.host_str().unwrap_or_default();
        // A host that could not keep a connection up until it was stable is unhealthy:
        // try the next one. A stable connection that dropped is retried first, and so is
        // one that ended with an `#error` frame: the error is about our cursor or speed,
        // and the reconnect it asks for goes back to the same sequence.
        let next = if stable || lost.next != Next::Resume {
            host
        } else {
            (host + 1) % bases.len()
        };
        next_connect = lost.next;
        if lost.reason == "oversized" {
            tracing::error!(
                host = host_name,
                error = %lost.detail,
                "Source message over max_message_size; dropping the connection. The server will \
                 resend it after reconnecting: raise max_message_size if this repeats."
            );
        }
        tracing::warn!(
            host = host_name,
            reason = lost.reason,
            error = %lost.detail,
            attempt = failures,
            ?delay,
            next = bases[next].host_str().unwrap_or_default(),
            "Source connection lost; reconnecting."
        );
        host = next;
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(()),
            _ = tx.closed() => return Ok(()),
            _ = sleep(delay) => {}
        }
    }
}

/// `base * 2^failures`, capped at `max`, then scaled by a random factor in [0.5, 1] so
/// that many clients dropped together do not reconnect together.
fn backoff(cfg: &SourceConfig, failures: u32) -> Duration {
    let full = cfg
        .backoff_base
        .saturating_mul(2u32.saturating_pow(failures))
        .min(cfg.backoff_max);
    full.mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// How a connection ended.
enum End {
    /// Shutdown or receiver gone: stop for good.
    Stop,
    /// Lost: reconnect.
    Lost(Lost),
}

struct Lost {
    /// The `reason` label.
    reason: &'static str,
    /// For the log line.
    detail: String,
    /// `None` if it never connected.
    connected_for: Option<Duration>,
    /// Where the next connect starts.
    next: Next,
}

/// The per-source state kept across connections.
struct Connection<'a> {
    cfg: &'a SourceConfig,
    tx: &'a mpsc::Sender<Message>,
    shutdown: &'a CancellationToken,
    connected: &'a Connected,
    decompressor: Option<Decompressor>,
    messages: Counter,
    bytes: Counter,
}

/// Sets `skyhouse_source_connected` to 1 and the [`Connected`] flag while alive.
struct ConnectedGuard<'a> {
    _flag: ConnectedFlag<'a>,
}

impl<'a> ConnectedGuard<'a> {
    fn new(connected: &'a Connected) -> Self {
        gauge!(m::CONNECTED).set(1.0);
        ConnectedGuard {
            _flag: connected.hold(),
        }
    }
}

impl Drop for ConnectedGuard<'_> {
    fn drop(&mut self) {
        gauge!(m::CONNECTED).set(0.0);
    }
}

impl Connection<'_> {
    async fn connect_and_read(
        &mut self,
        url: &Url,
        endpoint: &Arc<str>,
        cursor: Option<i64>,
    ) -> End {
        let cfg = self.cfg;
        let never = |reason, detail: String| {
            End::Lost(Lost {
                reason,
                detail,
                connected_for: None,
                next: Next::Resume,
            })
        };
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(cfg.max_message_size))
            .max_frame_size(Some(cfg.max_message_size));
        let connecting = timeout(
            cfg.connect_timeout,
            tokio_tungstenite::connect_async_with_config(url.as_str(), Some(ws_config), true),
        );
        let mut ws = tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => return End::Stop,
            _ = self.tx.closed() => return End::Stop,
            r = connecting => match r {
                Err(_) => return never("connect_timeout", format!("no handshake within {:?}", cfg.connect_timeout)),
                Ok(Err(e)) => return never("connect_failed", e.to_string()),
                Ok(Ok((ws, _response))) => ws,
            },
        };
        let connected_at = Instant::now();
        let _connected = ConnectedGuard::new(self.connected);
        tracing::info!(endpoint = &**endpoint, cursor, "Source connected.");
        let lost = |reason, detail: String| {
            End::Lost(Lost {
                reason,
                detail,
                connected_for: Some(connected_at.elapsed()),
                next: Next::Resume,
            })
        };
        // A quiet stream (a small PDS) is not a dead one: after a third of the
        // liveness timeout without a message we ping; the pong counts as life.
        let ping_every = cfg.liveness_timeout / 3;
        let mut heard = Instant::now();
        loop {
            let next = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {
                    let _ = timeout(CLOSE_GRACE, ws.close(None)).await;
                    return End::Stop;
                }
                // The consumer is gone: hang up now rather than at the next message.
                _ = self.tx.closed() => {
                    let _ = timeout(CLOSE_GRACE, ws.close(None)).await;
                    return End::Stop;
                }
                next = timeout(ping_every, ws.next()) => next,
            };
            let wire = match next {
                Err(_) if heard.elapsed() < cfg.liveness_timeout => {
                    // Best effort: a socket that cannot take a ping is caught
                    // by the liveness check on a later round.
                    let _ = timeout(CLOSE_GRACE, ws.send(WsMessage::Ping(Bytes::new()))).await;
                    continue;
                }
                Err(_) => {
                    return lost(
                        "silent",
                        format!("nothing received for {:?}", cfg.liveness_timeout),
                    )
                }
                Ok(None) => return lost("eof", "stream ended without a close frame".into()),
                Ok(Some(Err(e))) => return lost(read_error_reason(&e), e.to_string()),
                Ok(Some(Ok(msg))) => {
                    heard = Instant::now();
                    msg
                }
            };
            let bytes = match wire {
                WsMessage::Text(text) => {
                    if cfg.kind == SourceKind::Firehose {
                        self.drop_message(
                            "unexpected_text",
                            endpoint,
                            "firehose sent a text message",
                        );
                        continue;
                    }
                    Bytes::from(text)
                }
                WsMessage::Binary(data) => data,
                // tungstenite answers pings itself (the pong goes out with the next read).
                WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => continue,
                WsMessage::Close(frame) => {
                    // Send our half of the close handshake; best effort.
                    let _ = timeout(CLOSE_GRACE, ws.flush()).await;
                    let detail = match frame {
                        Some(f) => {
                            format!("close frame {} {:?}", u16::from(f.code), f.reason.as_str())
                        }
                        None => "close frame without a code".into(),
                    };
                    return lost("closed", detail);
                }
            };
            self.bytes.increment(bytes.len() as u64);
            let bytes = match (&mut self.decompressor, cfg.kind) {
                (Some(d), SourceKind::Jetstream) if !looks_like_json(&bytes) => {
                    match d.decompress(&bytes) {
                        Ok(b) => b,
                        Err(e) => {
                            let reason = match e {
                                DecompressError::TooLarge { .. } => "oversized",
                                DecompressError::Corrupt(_) => "decompress",
                            };
                            self.drop_message(reason, endpoint, &e.to_string());
                            continue;
                        }
                    }
                }
                _ => bytes,
            };
            // An `#error` frame is read here as well as by the consumer: the reconnect
            // it asks for is the transport's to make, and it must not wait for the
            // consumer to get through the messages queued before it.
            let error = match cfg.kind {
                SourceKind::Firehose if may_be_error_frame(&bytes) => match Frame::decode(&bytes) {
                    Ok(Frame::Error(e)) => Some(e),
                    _ => None,
                },
                _ => None,
            };
            self.messages.increment(1);
            let msg = Message {
                bytes,
                endpoint: endpoint.clone(),
            };
            // Backpressure: while the channel is full we do not read the socket.
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {
                    let _ = timeout(CLOSE_GRACE, ws.close(None)).await;
                    return End::Stop;
                }
                sent = self.tx.send(msg) => if sent.is_err() {
                    let _ = timeout(CLOSE_GRACE, ws.close(None)).await;
                    return End::Stop;
                },
            }
            if let Some(e) = error {
                // The server closes after an error frame; hang up without waiting for it.
                let _ = timeout(CLOSE_GRACE, ws.close(None)).await;
                return End::Lost(Lost {
                    reason: "error_frame",
                    detail: error_detail(&e),
                    connected_for: Some(connected_at.elapsed()),
                    next: error_frame(&e, endpoint, cursor),
                });
            }
        }
    }

    fn drop_message(&self, reason: &'static str, endpoint: &str, detail: &str) {
        debug_assert!(m::DROP_REASONS.contains(&reason), "{reason}");
        counter!(m::DROPPED, "reason" => reason).increment(1);
        tracing::warn!(endpoint, reason, error = detail, "Source message refused.");
    }
}

/// Count and log an `#error` frame; where the next connect starts.
fn error_frame(e: &ErrorFrame, endpoint: &str, cursor: Option<i64>) -> Next {
    let kind = e.kind();
    counter!(m::ERROR_FRAMES, "kind" => kind.as_str()).increment(1);
    let (next, then) = match kind {
        ErrorKind::FutureCursor => (Next::Tip, "reconnecting at the live tip"),
        ErrorKind::ConsumerTooSlow => (
            Next::Acked,
            "reconnecting from the last acknowledged position",
        ),
        ErrorKind::Other => (Next::Resume, "reconnecting"),
    };
    tracing::warn!(
        endpoint,
        error = %e.error,
        message = e.message.as_deref().unwrap_or_default(),
        cursor,
        "Firehose #error frame; {then}."
    );
    next
}

fn error_detail(e: &ErrorFrame) -> String {
    match &e.message {
        Some(m) => format!("#error {}: {m}", e.error),
        None => format!("#error {}", e.error),
    }
}

/// With `compress=true` Jetstream sends zstd as binary messages; a text message (or a
/// binary one that starts like JSON) is passed through as it is.
fn looks_like_json(bytes: &[u8]) -> bool {
    bytes.first() == Some(&b'{')
}

fn read_error_reason(e: &tungstenite::Error) -> &'static str {
    match e {
        tungstenite::Error::Capacity(CapacityError::MessageTooLong { .. }) => "oversized",
        tungstenite::Error::Capacity(_) => "oversized",
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => "eof",
        tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ) => "eof",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters_within_half() {
        let mut cfg = SourceConfig::jetstream();
        cfg.backoff_base = Duration::from_millis(100);
        cfg.backoff_max = Duration::from_secs(1);
        for (n, full) in [
            (0, 100),
            (1, 200),
            (2, 400),
            (3, 800),
            (4, 1000),
            (40, 1000),
        ] {
            for _ in 0..50 {
                let d = backoff(&cfg, n).as_millis() as u64;
                assert!(
                    d >= full / 2 && d <= full,
                    "n={n}: {d} ms not in [{}, {full}]",
                    full / 2
                );
            }
        }
    }
}
