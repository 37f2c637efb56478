//! `#identity` events without a handle: they only say "resolve again", so
//! the DID's document is fetched afresh and its handle verified (DNS, then
//! HTTPS), off the decode path, and the `identities` row written.
//!
//! ```text
//! decode ─try_send(DID)─► IDENTITY_QUEUE ─► ≤ RESOLVING at a time: DID document + handle (fresh)
//!        (full: dropped, counted)          ─► rows ─► ClickHouse (every FLUSH_EVERY or FLUSH_ROWS)
//! ```
//!
//! The cursor does not wait for these rows: an update still queued or being
//! resolved when the process dies is lost (counted as dropped when the
//! process stops in order). The identities walk of `skyhouse backfill work
//! --identity-refresh-secs` verifies every identity again within its
//! interval, which repairs it.

use std::sync::Arc;
use std::time::Duration;

use skyhouse_identity::Resolver;
use skyhouse_sources::CancellationToken;
use skyhouse_store::writer::{self, WriterConfig};
use skyhouse_store::ClickHouse;
use skyhouse_transform::{IdentityRow, Rows};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::{metrics, PipelineError, TaskEnd};

/// DIDs waiting to be resolved: the network sends a few `#identity` events
/// a second, most with a handle; 10,000 DIDs (~1 MB) is minutes of the
/// handle-less ones even while the resolver is slow. When full, the event
/// is dropped and counted (the walk repairs it).
pub const IDENTITY_QUEUE: usize = 10_000;

/// Resolutions in flight at a time (each is a PLC or did:web request, a DNS
/// query and maybe an HTTPS request, mostly waiting).
const RESOLVING: usize = 8;

/// Resolved rows are written at least this often …
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// … or once this many are waiting.
const FLUSH_ROWS: usize = 500;

/// Resolve the DIDs from `rx` and write their rows until `rx` closes (then
/// every queued DID is resolved first) or `shutdown` (then the queued ones
/// are dropped and counted; those in flight finish).
pub(crate) async fn resolve_loop(
    resolver: Arc<Resolver>,
    mut rx: mpsc::Receiver<String>,
    ch: ClickHouse,
    writer: WriterConfig,
    shutdown: CancellationToken,
) -> Result<TaskEnd, PipelineError> {
    let mut inflight: JoinSet<(String, Option<skyhouse_identity::Identity>)> = JoinSet::new();
    let mut rows = Rows::default();
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut open = true;
    while open || !inflight.is_empty() {
        tokio::select! {
            did = rx.recv(), if open && inflight.len() < RESOLVING => match did {
                Some(did) => {
                    let resolver = resolver.clone();
                    inflight.spawn(async move {
                        let identity = match resolver.identity(&did, true).await {
                            Ok(id) => Some(id),
                            Err(error) => {
                                tracing::debug!(did, %error, "Identity not resolved.");
                                None
                            }
                        };
                        (did, identity)
                    });
                }
                None => open = false,
            },
            Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                let Ok((did, identity)) = done else { continue };
                match identity {
                    Some(id) => {
                        metrics::identity_resolved(id.status.as_str());
                        rows.push_identity(IdentityRow {
                            did,
                            handle: id.handle.clone(),
                            version: id.version(),
                            indexed_at: now_secs(),
                        });
                    }
                    None => metrics::identity_resolved("failed"),
                }
                if rows.len() >= FLUSH_ROWS {
                    flush(&ch, &writer, &mut rows).await?;
                }
            }
            _ = tick.tick() => flush(&ch, &writer, &mut rows).await?,
            _ = shutdown.cancelled(), if open => {
                // Stopping: what is queued is not resolved.
                open = false;
                rx.close();
                let mut dropped = 0;
                while rx.try_recv().is_ok() {
                    dropped += 1;
                }
                if dropped > 0 {
                    metrics::identity_dropped(dropped);
                    tracing::warn!(
                        dropped,
                        "Identity updates not resolved at shutdown; the identities walk repairs them."
                    );
                }
            }
        }
    }
    flush(&ch, &writer, &mut rows).await?;
    Ok(TaskEnd::Identity)
}

async fn flush(
    ch: &ClickHouse,
    writer: &WriterConfig,
    rows: &mut Rows,
) -> Result<(), PipelineError> {
    if rows.is_empty() {
        return Ok(());
    }
    writer::write_batch(ch, writer, rows, ()).await?;
    Ok(())
}

fn now_secs() -> u32 {
    u32::try_from(skyhouse_identity::now_us() / 1_000_000).unwrap_or(u32::MAX)
}
