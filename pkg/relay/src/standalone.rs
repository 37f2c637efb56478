//! `skyhouse relay --source …`: the relay reading a live source itself (no
//! ClickHouse, no Redis), decoded by the indexer's own decoder.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use skyhouse_atproto::frame::ErrorKind;
use skyhouse_sources::{SourceConfig, SourceError, SourceKind};
use skyhouse_transform::Rows;
use skyhouse_transform::{CollectionFilter, Decoder, OpsTap, Verify};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::pb::Source;
use crate::push::HubTap;

/// Messages decoded before their operations are published together
/// (one ring lock per group instead of one per message).
const GROUP_MESSAGES: usize = 256;

/// What a standalone run read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SourceSummary {
    /// Messages read.
    pub messages: u64,
    /// Operations published.
    pub ops: u64,
}

/// Read `cfg`'s source from `start` (-1: the live tip, 0: everything it
/// holds) and publish every record operation `collections` accepts, tagged
/// live, until the source ends (a `file://` capture) or `shutdown`.
pub async fn run_source(
    cfg: SourceConfig,
    start: i64,
    collections: CollectionFilter,
    hub: Hub,
    shutdown: CancellationToken,
) -> Result<SourceSummary, SourceError> {
    let kind = cfg.kind;
    let resume = Arc::new(AtomicI64::new(start));
    let (tx, mut rx) = mpsc::channel(skyhouse_sources::EVENT_QUEUE);
    let source = tokio::spawn(skyhouse_sources::run(
        cfg,
        resume.clone(),
        tx,
        shutdown.child_token(),
    ));
    let tap = HubTap::new(hub, Source::Live);
    let mut decoder = Decoder::new(collections);
    let mut summary = SourceSummary::default();
    let mut rows = Rows::default();
    rows.keep_for_tap(tap.extras());
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut n = 0;
        while let Some(msg) = next.take() {
            summary.messages += 1;
            let d = match kind {
                SourceKind::Jetstream => decoder.jetstream(&msg.bytes, &mut rows),
                SourceKind::Firehose => decoder.firehose(&msg.bytes, Verify::Off, &mut rows),
            };
            if d.error.as_ref().map(|e| e.kind()) == Some(ErrorKind::FutureCursor) {
                // The source went on from the live tip, perhaps in a lower numbering: a
                // later reconnect must ask for the new positions, not ours again.
                resume.store(-1, Ordering::Relaxed);
            }
            if let Some(p) = d.position {
                resume.fetch_max(p, Ordering::Relaxed);
            }
            n += 1;
            if n < GROUP_MESSAGES {
                next = rx.try_recv().ok();
            }
        }
        summary.ops += rows.records.len() as u64;
        tap.offer(&rows);
        rows = rows.like();
    }
    match source.await {
        Ok(r) => r?,
        Err(e) => tracing::error!(error = %e, "Relay source task failed."),
    }
    Ok(summary)
}
