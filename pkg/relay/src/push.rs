//! The pipeline's side: hand decoded operations to a relay without ever
//! waiting for it.
//!
//! [`HubTap`] publishes into a relay in the same process (`skyhouse relay
//! --source …`). [`Pusher`] sends to a relay elsewhere over `IngestStream`
//! (`--relay-url`): a bounded queue in front of one connection; when the
//! queue is full (relay slow or down) operations are dropped and counted, so
//! ClickHouse indexing never waits for the relay.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use skyhouse_transform::{OpsTap, Rows, TapExtras};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::{Bearer, ClientConfig};
use crate::hub::Hub;
use crate::metrics;
use crate::ops::{operation_of, prepare_record, with_tap};
use crate::pb::relay_client::RelayClient;
use crate::pb::{Operation, OperationBatch, Source};
use crate::service::{RelayError, MAX_INGEST_MESSAGE};

/// Groups waiting to be pushed: 256 × ≤ 2,048 operations (the pipeline's
/// coalescing) ≈ 500k operations at most, ~10 s of the live network at its
/// peak; when full, new groups are dropped (`skyhouse_relay_push_operations_total{outcome="dropped"}`).
pub const PUSH_QUEUE: usize = 256;

/// A pushed group is split into messages of at most this many encoded bytes
/// (well under the relay's [`MAX_INGEST_MESSAGE`]).
const PUSH_MESSAGE_BYTES: usize = 4 << 20;

/// Reconnect backoff: from 250 ms, doubling, capped at 10 s.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Publishes into a relay in this process.
#[derive(Debug, Clone)]
pub struct HubTap {
    hub: Hub,
    source: Source,
}

impl HubTap {
    /// Operations offered are tagged `source`.
    pub fn new(hub: Hub, source: Source) -> HubTap {
        HubTap { hub, source }
    }
}

impl OpsTap for HubTap {
    fn extras(&self) -> TapExtras {
        TapExtras::ActionsAndCbor
    }

    fn offer(&self, rows: &Rows) {
        if !rows.records.is_empty() {
            self.hub
                .publish(with_tap(rows).map(|(r, t)| prepare_record(r, t, self.source)));
        }
    }
}

/// Sends operations to a relay over `IngestStream`; see the module docs.
#[derive(Debug, Clone)]
pub struct Pusher {
    tx: mpsc::Sender<Vec<Operation>>,
    source: Source,
    dropped: Arc<AtomicU64>,
}

impl OpsTap for Pusher {
    fn extras(&self) -> TapExtras {
        TapExtras::ActionsAndCbor
    }

    fn offer(&self, rows: &Rows) {
        if rows.records.is_empty() {
            return;
        }
        let mut group = Vec::new();
        let mut bytes = 0;
        for (r, t) in with_tap(rows) {
            let op = operation_of(r, t, self.source);
            let len = prost::Message::encoded_len(&op);
            if len > crate::hub::MAX_OPERATION_BYTES {
                self.drop_ops(1); // the relay would refuse it
                continue;
            }
            if bytes + len > PUSH_MESSAGE_BYTES && !group.is_empty() {
                self.enqueue(std::mem::take(&mut group));
                bytes = 0;
            }
            bytes += len;
            group.push(op);
        }
        if !group.is_empty() {
            self.enqueue(group);
        }
    }
}

impl Pusher {
    /// A pusher to the relay `relay` describes (URL, token, TLS), tagging
    /// operations `source`. The returned task connects (and reconnects) in
    /// the background; it ends once every `Pusher` clone is dropped and the
    /// queue is sent, or when `shutdown` is cancelled.
    pub fn connect(
        relay: &ClientConfig,
        source: Source,
        shutdown: CancellationToken,
    ) -> Result<(Pusher, JoinHandle<()>), RelayError> {
        let endpoint = relay.endpoint()?;
        let bearer = relay.interceptor()?;
        metrics::zero_push();
        let (tx, rx) = mpsc::channel(PUSH_QUEUE);
        let task = tokio::spawn(push_loop(endpoint, bearer, rx, shutdown));
        let dropped = Arc::new(AtomicU64::new(0));
        Ok((
            Pusher {
                tx,
                source,
                dropped,
            },
            task,
        ))
    }

    fn enqueue(&self, group: Vec<Operation>) {
        let n = group.len() as u64;
        if self.tx.try_send(group).is_err() {
            self.drop_ops(n);
        }
    }

    fn drop_ops(&self, n: u64) {
        metrics::pushed("dropped", n);
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Operations dropped so far because the queue was full (the relay slow
    /// or down) or they were too large, by this pusher and its clones.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

async fn push_loop(
    endpoint: tonic::transport::Endpoint,
    bearer: Bearer,
    mut rx: mpsc::Receiver<Vec<Operation>>,
    shutdown: CancellationToken,
) {
    let mut attempt = 0u32;
    // A group taken from the queue but not yet handed to a connection.
    let mut pending: Option<Vec<Operation>> = None;
    loop {
        if pending.is_none() {
            pending = tokio::select! {
                _ = shutdown.cancelled() => return,
                g = rx.recv() => match g {
                    Some(g) => Some(g),
                    None => return, // every pusher dropped, queue empty
                },
            };
        }
        let channel = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = endpoint.connect() => c,
        };
        let channel = match channel {
            Ok(c) => c,
            Err(e) => {
                let wait = (BACKOFF_BASE * 2u32.saturating_pow(attempt)).min(BACKOFF_MAX);
                attempt = attempt.saturating_add(1);
                tracing::warn!(error = %e, attempt, "Relay unreachable; operations are dropped until it is back.");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
        };
        metrics::push_connected(true);
        let connected_at = std::time::Instant::now();
        let mut client = RelayClient::with_interceptor(channel, bearer.clone())
            .max_encoding_message_size(MAX_INGEST_MESSAGE);
        // One group in flight between this loop and the call: little lost if it fails.
        let (itx, irx) = mpsc::channel::<OperationBatch>(1);
        let body = futures_util::stream::unfold(irx, |mut irx| async move {
            irx.recv().await.map(|b| (b, irx))
        });
        let mut call = Box::pin(client.ingest_stream(body));
        let mut itx = Some(itx);
        let outcome = loop {
            if let (Some(g), Some(tx)) = (pending.take(), itx.as_ref()) {
                let n = g.len() as u64;
                tokio::select! {
                    r = tx.send(OperationBatch { operations: g, ..OperationBatch::default() }) => {
                        if r.is_err() { break Err(tonic::Status::unavailable("the relay closed the stream")); }
                        metrics::pushed("sent", n);
                    }
                        r = &mut call => break r.map(|_| ()),
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                g = rx.recv(), if itx.is_some() => match g {
                    Some(g) => pending = Some(g),
                    None => itx = None, // close the stream: the call completes
                },
                r = &mut call => break r.map(|_| ()),
            }
        };
        metrics::push_connected(false);
        match outcome {
            Ok(()) if itx.is_none() => return, // everything sent
            Ok(()) => tracing::warn!("Relay ended the ingest stream; reconnecting."),
            Err(e) => {
                let refused = matches!(
                    e.code(),
                    tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                );
                if refused {
                    tracing::error!(code = ?e.code(), message = e.message(), "The relay refused the push's token (--relay-token); operations are dropped.");
                } else {
                    tracing::warn!(code = ?e.code(), message = e.message(), "Relay push failed; reconnecting.");
                }
                // A connection that lived a while was fine: start the backoff over.
                // A refused token is refused again at once: back off ever longer.
                if connected_at.elapsed() > Duration::from_secs(10) && !refused {
                    attempt = 0;
                }
                let wait = (BACKOFF_BASE * 2u32.saturating_pow(attempt)).min(BACKOFF_MAX);
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
        if let Some(g) = pending.take() {
            metrics::pushed("dropped", g.len() as u64);
        }
    }
}
