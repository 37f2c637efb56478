//! The identities walk: handles go stale (an account changes its handle, a
//! domain stops pointing back, an `#identity` event was missed or its
//! update lost in a crash), so every identity older than the interval is
//! verified again.
//!
//! ```text
//! lease (Redis, one walker at a time) ─► for each window of the DID space (store::identities::windows)
//!     ─► identities FINAL, did in (after, before), ORDER BY did LIMIT chunk    (keyset: after = last did)
//!     ─► rows older than the interval ─► DID document (fresh) ─► handle (fresh) ─► identities row
//!     ─► cursor (window, after) in Redis
//! ```
//!
//! The walk reads the table in key order, a bounded window per step, so a
//! step never scans the rest of the table. Its position is kept in Redis,
//! so a restarted (or another) worker goes on where it stopped. A pass
//! starts at most every half interval.

use std::time::Duration;

use futures_util::StreamExt;
use skyhouse_identity::{unusable, HandleStatus, Identity, ResolveError, Resolver};
use skyhouse_state::State;
use skyhouse_store::identities::{self, StoredIdentity};
use skyhouse_store::writer::{self, WriterConfig};
use skyhouse_store::ClickHouse;
use skyhouse_transform::{IdentityRow, Rows};
use tokio_util::sync::CancellationToken;

use crate::hosts::PdsCache;
use crate::BackfillError;

/// Redis key (under the prefix) of the walk's lease.
pub const WALK_LEASE: &str = "identity:walk:lease";
/// Redis key of the walk's position: `<window index>\t<last DID done>`.
pub const WALK_CURSOR: &str = "identity:walk:cursor";
/// How long the lease lasts without renewal: a walker renews it every step,
/// so another process takes over about this long after it dies.
const LEASE_TTL: Duration = Duration::from_secs(60);

/// Settings of the walk (`backfill work --identity-refresh-secs`).
#[derive(Debug, Clone)]
pub struct RefreshConfig {
    /// Identities whose row is older than this are verified again.
    pub interval: Duration,
    /// Rows read per step. Default 1,000.
    pub chunk: usize,
    /// Verifications in flight at a time. Default 8.
    pub concurrency: usize,
    /// This process's name for the lease (the consumer name).
    pub holder: String,
}

impl RefreshConfig {
    /// Defaults for `interval`, held by `holder`.
    pub fn new(interval: Duration, holder: impl Into<String>) -> RefreshConfig {
        RefreshConfig {
            interval,
            chunk: 1_000,
            concurrency: 8,
            holder: holder.into(),
        }
    }
}

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalkSummary {
    /// Identity rows read.
    pub seen: u64,
    /// Stale ones verified again, by outcome (`valid`, `invalid`,
    /// `unknown`, `failed`).
    pub refreshed: std::collections::BTreeMap<&'static str, u64>,
    /// Whether the pass reached the end of the table (false: shutdown, or
    /// the lease is held by another process).
    pub complete: bool,
}

/// What the walk needs.
pub(crate) struct Walk<'a> {
    pub(crate) cfg: &'a RefreshConfig,
    pub(crate) ch: &'a ClickHouse,
    pub(crate) state: &'a State,
    pub(crate) resolver: &'a Resolver,
    pub(crate) cache: &'a PdsCache,
    pub(crate) writer: &'a WriterConfig,
}

/// One pass over `identities` from the saved position to the end (see the
/// module documentation), verifying rows older than `cfg.interval`. Stops
/// early, position saved, on `shutdown` or when another process holds the
/// lease. A Redis DID cache TTL of `cache_ttl` is shared with the workers.
pub async fn refresh_pass(
    cfg: &RefreshConfig,
    ch: &ClickHouse,
    state: &State,
    resolver: &Resolver,
    cache_ttl: Duration,
    writer: &WriterConfig,
    shutdown: &CancellationToken,
) -> Result<WalkSummary, BackfillError> {
    let cache = PdsCache::new(state.clone(), cache_ttl);
    Walk {
        cfg,
        ch,
        state,
        resolver,
        cache: &cache,
        writer,
    }
    .pass(shutdown)
    .await
}

/// Run passes until `shutdown`: one every half interval at most, while this
/// process holds the lease. Errors (ClickHouse or Redis away) are logged and
/// the pass is tried again later: the walk must not stop the workers.
pub(crate) async fn run(walk: Walk<'_>, shutdown: CancellationToken) {
    let pause = (walk.cfg.interval / 2).max(Duration::from_secs(1));
    loop {
        match walk.pass(&shutdown).await {
            Ok(s) => tracing::info!(
                seen = s.seen,
                refreshed = s.refreshed.values().sum::<u64>(),
                complete = s.complete,
                "Identities walk pass ended."
            ),
            Err(error) => tracing::warn!(%error, "Identities walk failed; trying again later."),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

impl Walk<'_> {
    async fn pass(&self, shutdown: &CancellationToken) -> Result<WalkSummary, BackfillError> {
        let mut summary = WalkSummary::default();
        let windows = identities::windows();
        let (mut index, mut after) = self.position(windows.len()).await?;
        while index < windows.len() {
            if shutdown.is_cancelled() || !self.hold_lease().await? {
                return Ok(summary);
            }
            let (low, before) = &windows[index];
            let from = if after.is_empty() {
                low.as_str()
            } else {
                after.as_str()
            };
            let rows = self
                .writer
                .retry
                .run("identities walk", None, || {
                    identities::window(self.ch, from, before, self.cfg.chunk)
                })
                .await?;
            summary.seen += rows.len() as u64;
            let full = rows.len() >= self.cfg.chunk.max(1);
            let last = rows.last().map(|r| r.did.clone());
            self.refresh(rows, &mut summary).await?;
            match (full, last) {
                (true, Some(did)) => after = did,
                _ => {
                    index += 1;
                    after.clear();
                }
            }
            let position = format!("{index}\t{after}");
            self.state.set_value(WALK_CURSOR, &position).await?;
        }
        // Done: the next pass starts from the beginning.
        self.state.set_value(WALK_CURSOR, "0\t").await?;
        summary.complete = true;
        crate::metrics::identity_walk();
        Ok(summary)
    }

    /// The saved position, or the start.
    async fn position(&self, windows: usize) -> Result<(usize, String), BackfillError> {
        let saved = self.state.value(WALK_CURSOR).await?.unwrap_or_default();
        let (index, after) = saved.split_once('\t').unwrap_or(("0", ""));
        match index.parse::<usize>() {
            Ok(i) if i < windows => Ok((i, after.to_string())),
            _ => Ok((0, String::new())),
        }
    }

    async fn hold_lease(&self) -> Result<bool, BackfillError> {
        Ok(self
            .state
            .lease(WALK_LEASE, &self.cfg.holder, LEASE_TTL)
            .await?)
    }

    /// Verify the stale rows among `rows` again and write what they found.
    async fn refresh(
        &self,
        rows: Vec<StoredIdentity>,
        summary: &mut WalkSummary,
    ) -> Result<(), BackfillError> {
        let interval = u64::try_from(self.cfg.interval.as_micros()).unwrap_or(u64::MAX);
        let stale_before = skyhouse_identity::now_us().saturating_sub(interval);
        let stale: Vec<String> = rows
            .into_iter()
            .filter(|r| r.version < stale_before)
            .map(|r| r.did)
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        let found: Vec<(String, Option<Identity>)> = futures_util::stream::iter(stale)
            .map(|did| async move {
                let identity = self.verify(&did).await;
                (did, identity)
            })
            .buffer_unordered(self.cfg.concurrency.max(1))
            .collect()
            .await;
        let mut out = Rows::default();
        for (did, identity) in found {
            let Some(id) = identity else {
                *summary.refreshed.entry("failed").or_default() += 1;
                crate::metrics::identity_refresh("failed");
                continue;
            };
            let status = id.status.as_str();
            *summary.refreshed.entry(status).or_default() += 1;
            crate::metrics::identity_refresh(status);
            if id.status == HandleStatus::Unknown {
                // Nothing learnt: the row stays as it is (and stale, so the
                // next pass tries again).
                tracing::debug!(did, reason = %id.reason, "Handle could not be checked.");
                continue;
            }
            out.push_identity(IdentityRow {
                did,
                handle: id.handle.clone(),
                version: id.version(),
                indexed_at: now_secs(),
            });
        }
        if out.is_empty() {
            return Ok(());
        }
        writer::write_batch(self.ch, self.writer, &mut out, ()).await?;
        Ok(())
    }

    /// `did`'s identity from a fresh DID document and a fresh resolution;
    /// `None` when the document cannot be had now.
    async fn verify(&self, did: &str) -> Option<Identity> {
        let now = skyhouse_identity::now_us();
        match self.cache.refresh(self.resolver, did).await {
            Ok(info) => Some(self.cache.identity(self.resolver, did, &info, true).await),
            Err(ResolveError::NotFound { .. }) => {
                Some(unusable(did, "the DID does not resolve".to_string(), now))
            }
            // A document without a PDS still claims a handle.
            Err(ResolveError::NoPds { .. }) => self.resolver.identity(did, true).await.ok(),
            Err(error) => {
                tracing::debug!(did, %error, "DID document not had; identity left as it is.");
                None
            }
        }
    }
}

fn now_secs() -> u32 {
    u32::try_from(skyhouse_identity::now_us() / 1_000_000).unwrap_or(u32::MAX)
}
