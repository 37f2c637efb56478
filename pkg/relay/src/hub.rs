//! The retention ring every client reads from.
//!
//! Publishing appends to one ring under a short write lock and assigns the
//! next cursor; each client keeps its own read position and copies matching
//! operations out under a read lock. Nothing a client does can block the
//! publisher: a client more than `client_queue` operations behind the newest
//! is cut off (RESOURCE_EXHAUSTED, resume cursor in the message), and the
//! ring drops its oldest entries by count, bytes and age whatever the clients
//! are doing. Memory is the ring's bound plus one batch per client.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::disk::{DiskConfig, DiskError, Log};
use crate::group::{self, Groups};
use crate::metrics;
use crate::pb::{Action, Source, StreamRequest};
use crate::sub::{Member, Subscription};
use crate::wire::Prepared;

/// A client's batch closes at this many operations …
pub const BATCH_OPS: usize = 512;
/// … or this many encoded bytes (a gRPC message stays well under the 4 MiB
/// clients accept by default).
pub const BATCH_BYTES: usize = 1 << 20;
/// Operations larger than this (encoded) are refused when published and
/// counted in `skyhouse_relay_ingest_invalid_total`: with a batch closing at
/// [`BATCH_BYTES`], every message stays under the 4 MiB gRPC clients accept
/// by default. (Records are far smaller: the PDS caps them near 1 MiB.)
pub const MAX_OPERATION_BYTES: usize = 2 << 20;
/// Distinct `client` label values before further names are counted as
/// "other" (keeps metric cardinality bounded).
const MAX_CLIENT_NAMES: usize = 64;

/// How much the relay keeps and how far a client may fall behind.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Operations kept for resuming clients. Default 200,000 (~2 minutes of
    /// the live network at its peak; ~150 MB).
    pub retain_ops: usize,
    /// Encoded bytes kept. Default 256 MiB.
    pub retain_bytes: usize,
    /// Operations older than this are dropped. Default 10 minutes.
    pub retain_age: Duration,
    /// A live client this many operations behind the newest is disconnected
    /// with RESOURCE_EXHAUSTED. Default 50,000. A client resuming from an
    /// older cursor may be further behind until it first catches up.
    pub client_queue: usize,
    /// Clients streaming at once; more are refused with RESOURCE_EXHAUSTED.
    /// Default 1,024 (each costs at most one batch, ≤ 1 MiB, plus its
    /// HTTP/2 buffers).
    pub max_clients: usize,
    /// Partitions of every consumer group (DIDs hash into them; a group
    /// uses at most this many members at once). Default 64.
    pub group_partitions: u32,
    /// Consumer groups kept (with members or remembered). Default 64.
    pub max_groups: usize,
    /// A group member with this many operations delivered and not
    /// acknowledged gets no more until it acknowledges. Default 20,000.
    pub group_max_unacked: usize,
    /// Whether the window is on disk ([`Hub::open`]): then `retain_ops` and
    /// `retain_bytes` bound only its newest part kept in memory, and a client
    /// may lag by more than that (it reads from disk).
    pub disk: bool,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            retain_ops: 200_000,
            retain_bytes: 256 << 20,
            retain_age: Duration::from_secs(600),
            client_queue: 50_000,
            max_clients: 1_024,
            group_partitions: 64,
            max_groups: 64,
            group_max_unacked: 20_000,
            disk: false,
        }
    }
}

/// Most partitions a group may have.
pub const MAX_GROUP_PARTITIONS: u32 = 4_096;

/// Why a configuration is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A limit is zero.
    #[error("{0} must be > 0")]
    Zero(&'static str),
    /// Group partitions out of range.
    #[error("group partitions ({0}) must be 1-{MAX_GROUP_PARTITIONS}")]
    Partitions(u32),
    /// The client bound is larger than what the ring keeps.
    #[error("client queue ({queue}) must not exceed the retained operations ({retain})")]
    QueueTooLong {
        /// `client_queue`.
        queue: usize,
        /// `retain_ops`.
        retain: usize,
    },
}

impl RelayConfig {
    /// Check the limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.retain_ops == 0 {
            return Err(ConfigError::Zero("retained operations"));
        }
        if self.retain_bytes == 0 {
            return Err(ConfigError::Zero("retained bytes"));
        }
        if self.retain_age.is_zero() {
            return Err(ConfigError::Zero("retention age"));
        }
        if self.client_queue == 0 {
            return Err(ConfigError::Zero("client queue"));
        }
        if self.max_clients == 0 {
            return Err(ConfigError::Zero("max clients"));
        }
        if self.group_partitions == 0 || self.group_partitions > MAX_GROUP_PARTITIONS {
            return Err(ConfigError::Partitions(self.group_partitions));
        }
        if self.max_groups == 0 {
            return Err(ConfigError::Zero("max groups"));
        }
        if self.group_max_unacked == 0 {
            return Err(ConfigError::Zero("group max unacknowledged"));
        }
        if self.client_queue > self.retain_ops && !self.disk {
            return Err(ConfigError::QueueTooLong {
                queue: self.client_queue,
                retain: self.retain_ops,
            });
        }
        Ok(())
    }
}

pub(crate) struct Entry {
    at: Instant,
    pub(crate) op: Prepared,
}

pub(crate) struct Ring {
    pub(crate) entries: VecDeque<Entry>,
    /// Cursor of `entries[0]` (or of the next one published, when empty).
    pub(crate) first: u64,
    bytes: usize,
}

impl Ring {
    /// The newest cursor assigned (`first - 1` when nothing is retained).
    pub(crate) fn newest(&self) -> u64 {
        self.first + self.entries.len() as u64 - 1
    }

    fn trim(&mut self, cfg: &RelayConfig, now: Instant) {
        while let Some(e) = self.entries.front() {
            let old = now.saturating_duration_since(e.at) > cfg.retain_age;
            if self.entries.len() > cfg.retain_ops || self.bytes > cfg.retain_bytes || old {
                self.bytes -= e.op.len();
                self.entries.pop_front();
                self.first += 1;
            } else {
                break;
            }
        }
    }
}

/// The relay's shared state: the ring, the newest cursor and the clients.
/// Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("cfg", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

struct Inner {
    cfg: RelayConfig,
    ring: RwLock<Ring>,
    /// The newest cursor; clients wait on it for new operations.
    newest: watch::Sender<u64>,
    names: Mutex<HashSet<String>>,
    shutdown: CancellationToken,
    groups: Arc<Groups>,
    disk: Option<Arc<Mutex<Log>>>,
}

/// The cursor window (what `HealthCheck` reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The oldest cursor a client can resume from (everything after it is
    /// retained).
    pub oldest: u64,
    /// The newest cursor assigned.
    pub newest: u64,
    /// Clients streaming.
    pub clients: u32,
}

impl Hub {
    /// An empty relay whose first cursor is `first_cursor` (the service uses
    /// the start time in Unix microseconds, so cursors of an earlier run are
    /// older than the window). Client streams end when `shutdown` is
    /// cancelled.
    pub fn new(cfg: RelayConfig, first_cursor: u64, shutdown: CancellationToken) -> Hub {
        Hub::build(cfg, first_cursor, shutdown, None)
    }

    /// A relay whose window is kept in `disk`'s segments (and the newest of
    /// it in memory): what a previous run left there is served again (the
    /// segments repaired if damaged), and new cursors continue right after
    /// it (from `first_cursor` when the disk is empty, or its newest records
    /// were cut by a repair). The consumer groups' positions come back too.
    pub fn open(
        cfg: RelayConfig,
        disk: DiskConfig,
        first_cursor: u64,
        shutdown: CancellationToken,
    ) -> Result<Hub, DiskError> {
        let dir = disk.dir.clone();
        let opened = Log::open(disk)?;
        // Cursors continue where the disk ends, so the window has no jump;
        // after a cut tail (a power loss) they start past `first_cursor`
        // instead: a client may hold a cursor of what was lost.
        let first = if opened.last > 0 && !opened.tail_cut {
            opened.last + 1
        } else {
            (opened.last + 1).max(first_cursor)
        };
        let oldest = opened.log.oldest();
        let hub = Hub::build(cfg, first, shutdown, Some(opened.log));
        hub.inner.groups.restore(opened.groups);
        tracing::info!(
            dir = %dir.display(),
            oldest = oldest.unwrap_or(first - 1),
            first_new = first,
            "Relay retention on disk opened."
        );
        Ok(hub)
    }

    fn build(
        cfg: RelayConfig,
        first_cursor: u64,
        shutdown: CancellationToken,
        disk: Option<Log>,
    ) -> Hub {
        let first = first_cursor.max(1);
        metrics::zero_relay();
        let groups = Arc::new(Groups::new(
            cfg.group_partitions,
            cfg.max_groups,
            cfg.group_max_unacked,
        ));
        Hub {
            inner: Arc::new(Inner {
                cfg,
                ring: RwLock::new(Ring {
                    entries: VecDeque::new(),
                    first,
                    bytes: 0,
                }),
                newest: watch::Sender::new(first - 1),
                names: Mutex::new(HashSet::new()),
                shutdown,
                groups,
                disk: disk.map(|d| Arc::new(Mutex::new(d))),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RelayConfig {
        &self.inner.cfg
    }

    /// Append operations to the ring; returns the cursor of the last one
    /// (the newest cursor if `ops` is empty). Never waits for clients.
    pub fn publish(&self, ops: impl IntoIterator<Item = Prepared>) -> u64 {
        match &self.inner.disk {
            None => self.publish_in_memory(ops.into_iter()),
            Some(disk) => {
                let ops: Vec<Prepared> = ops
                    .into_iter()
                    .filter(|op| {
                        let ok = op.len() <= MAX_OPERATION_BYTES;
                        if !ok {
                            metrics::ingest_invalid(1);
                        }
                        ok
                    })
                    .collect();
                if ops.is_empty() {
                    return self.ring().newest();
                }
                // Held until the ring has them too: publishers are serialized,
                // and each writes its operations to disk before any client
                // can see them.
                let mut log = disk.lock().unwrap_or_else(|p| p.into_inner());
                let first = self.ring().newest() + 1;
                if let Err(e) = log.append(first, crate::disk::now_ms(), ops.iter()) {
                    metrics::disk_write_failed();
                    tracing::error!(error = %e, first, n = ops.len(), "Writing relay segments failed: these operations are served from memory only (a restart loses them).");
                }
                let newest = self.publish_in_memory(ops.into_iter());
                drop(log);
                newest
            }
        }
    }

    fn publish_in_memory(&self, ops: impl Iterator<Item = Prepared>) -> u64 {
        let now = Instant::now();
        // Published per source: live, backfill, unspecified.
        let mut by_source = [0u64; 3];
        let (newest, retained, bytes, published) = {
            let mut ring = self.inner.ring.write().unwrap_or_else(|p| p.into_inner());
            let before = ring.newest();
            for op in ops {
                if op.len() > MAX_OPERATION_BYTES {
                    metrics::ingest_invalid(1);
                    continue;
                }
                by_source[match op.source {
                    Source::Live => 0,
                    Source::Backfill => 1,
                    Source::Unspecified => 2,
                }] += 1;
                ring.bytes += op.len();
                ring.entries.push_back(Entry { at: now, op });
                // Trim as we go: a huge publish never holds more than the bound.
                if ring.entries.len() > self.inner.cfg.retain_ops
                    || ring.bytes > self.inner.cfg.retain_bytes
                {
                    ring.trim(&self.inner.cfg, now);
                }
            }
            ring.trim(&self.inner.cfg, now);
            let newest = ring.newest();
            (newest, ring.entries.len(), ring.bytes, newest - before)
        };
        metrics::retained(retained, bytes);
        for (source, n) in [Source::Live, Source::Backfill, Source::Unspecified]
            .into_iter()
            .zip(by_source)
        {
            if n > 0 {
                metrics::published(source, n);
            }
        }
        if published > 0 {
            self.inner.newest.send_replace(newest);
        }
        newest
    }

    /// Drop operations older than the retention age (the service calls this
    /// on a timer so a quiet relay lets go of old operations too).
    pub fn trim(&self) {
        let newest = {
            let mut ring = self.inner.ring.write().unwrap_or_else(|p| p.into_inner());
            ring.trim(&self.inner.cfg, Instant::now());
            metrics::retained(ring.entries.len(), ring.bytes);
            ring.newest()
        };
        self.inner.groups.sweep(self.inner.cfg.retain_age, newest);
        if let Some(disk) = &self.inner.disk {
            let dir = {
                let mut log = disk.lock().unwrap_or_else(|p| p.into_inner());
                log.trim(self.inner.cfg.retain_age);
                log.sync();
                log.dir().to_owned()
            };
            if let Some(groups) = self.inner.groups.take_dirty() {
                crate::disk::save_groups(&dir, &groups);
            }
        }
    }

    /// Save what is not on disk yet (the groups' positions) and sync the
    /// segments: the service calls it when it stops.
    pub fn close(&self) {
        if let Some(disk) = &self.inner.disk {
            let mut log = disk.lock().unwrap_or_else(|p| p.into_inner());
            crate::disk::save_groups(log.dir(), &self.inner.groups.snapshot());
            log.close();
        }
    }

    /// The cursor window and the number of clients.
    pub fn window(&self) -> Window {
        let oldest = self.oldest();
        let ring = self.inner.ring.read().unwrap_or_else(|p| p.into_inner());
        Window {
            oldest: oldest.min(ring.first - 1),
            newest: ring.newest(),
            clients: self.inner.newest.receiver_count() as u32,
        }
    }

    /// The operations matching `req`, as a stream of batches: after
    /// `req.cursor` if given (OUT_OF_RANGE now if that is outside the
    /// window), then live. Ends with RESOURCE_EXHAUSTED if the reader falls
    /// `client_queue` behind, and without error on shutdown.
    pub fn subscribe(&self, req: &StreamRequest) -> Result<Subscription, Status> {
        let filter = Filter::new(req).inspect_err(|_| metrics::rejected("invalid"))?;
        let name = self.client_name(&req.client_name);
        // Subscribe before reading the window: nothing published in between is missed.
        let newest_rx = self.inner.newest.subscribe();
        // Counted after subscribing (this one included): concurrent callers
        // may both be refused at the limit, never both admitted past it.
        let clients = self.inner.newest.receiver_count();
        if clients > self.inner.cfg.max_clients {
            metrics::rejected("too_many_clients");
            return Err(Status::resource_exhausted(format!(
                "the relay serves at most {} clients; try again later",
                self.inner.cfg.max_clients
            )));
        }
        if !req.group.is_empty() {
            group::check_name(&req.group).inspect_err(|_| metrics::rejected("invalid"))?;
        }
        let (pos, caught_up) = {
            let oldest = self.window().oldest;
            let ring = self.inner.ring.read().unwrap_or_else(|p| p.into_inner());
            let newest = ring.newest();
            match req.cursor {
                None => (newest, true),
                Some(c) if c < oldest => {
                    metrics::rejected("out_of_range");
                    return Err(Status::out_of_range(format!(
                        "cursor {c} is older than the retention window: the oldest cursor \
                         available is {oldest} (newest {newest})"
                    )));
                }
                Some(c) if c > newest => {
                    metrics::rejected("out_of_range");
                    return Err(Status::out_of_range(format!(
                        "cursor {c} is newer than the newest operation ({newest}): a cursor \
                         of another relay run? The oldest cursor available is {oldest}"
                    )));
                }
                Some(c) => (c, newest - c <= self.inner.cfg.client_queue as u64),
            }
        };
        let member = if req.group.is_empty() {
            None
        } else {
            // A new group starts at the cursor asked for (checked above), or
            // the newest; an existing one at its own positions.
            let joined = self
                .inner
                .groups
                .join(&req.group, group::filter_key(req), pos)
                .inspect_err(|_| metrics::rejected("group"))?;
            Some(Member::new(
                self.inner.groups.clone(),
                req.group.clone(),
                joined.session,
                joined.generation,
                joined.acked,
            ))
        };
        let caught_up = caught_up && member.is_none();
        Ok(Subscription::new(
            self.clone(),
            metrics::Client::connected(name),
            filter,
            pos,
            caught_up,
            newest_rx,
            member,
        ))
    }

    /// `Ack(session, ack_id)` of a group member.
    pub fn ack(&self, session: u64, ack_id: u64) -> Result<(), Status> {
        self.inner.groups.ack(session, ack_id)
    }

    pub(crate) fn ring(&self) -> std::sync::RwLockReadGuard<'_, Ring> {
        self.inner.ring.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The oldest cursor a client can resume from.
    pub(crate) fn oldest(&self) -> u64 {
        let in_memory = self.ring().first - 1;
        match &self.inner.disk {
            None => in_memory,
            Some(d) => d
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .oldest()
                .map_or(in_memory, |o| o.min(in_memory)),
        }
    }

    /// The segments, with `--data-dir`.
    pub(crate) fn disk(&self) -> Option<Arc<Mutex<Log>>> {
        self.inner.disk.clone()
    }

    pub(crate) fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    fn client_name(&self, asked: &str) -> String {
        let ok = !asked.is_empty()
            && asked.len() <= 32
            && asked
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return if asked.is_empty() {
                "anonymous".to_owned()
            } else {
                "invalid".to_owned()
            };
        }
        let mut names = self.inner.names.lock().unwrap_or_else(|p| p.into_inner());
        if names.contains(asked) || names.len() < MAX_CLIENT_NAMES {
            names.insert(asked.to_owned());
            asked.to_owned()
        } else {
            "other".to_owned()
        }
    }
}

/// What a client asked for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    /// Collection prefixes (bytes); empty = all.
    collections: Vec<Box<[u8]>>,
    dids: HashSet<Box<[u8]>>,
    actions: Vec<Action>,
    sources: Vec<Source>,
    pub(crate) want_cbor: bool,
}

/// Filter lists longer than this are refused (INVALID_ARGUMENT).
const MAX_FILTER_ITEMS: usize = 10_000;

impl Filter {
    fn new(req: &StreamRequest) -> Result<Filter, Status> {
        if req.collections.len() > MAX_FILTER_ITEMS || req.dids.len() > MAX_FILTER_ITEMS {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_FILTER_ITEMS} collections and {MAX_FILTER_ITEMS} DIDs per request"
            )));
        }
        let prefixes: Vec<&str> = req
            .collections
            .iter()
            .map(|c| c.trim().trim_end_matches('*'))
            .collect();
        // `*` (or "") matches everything.
        let collections = if prefixes.iter().any(|p| p.is_empty()) {
            Vec::new()
        } else {
            prefixes.iter().map(|p| p.as_bytes().into()).collect()
        };
        let mut actions = Vec::new();
        for a in &req.actions {
            match Action::try_from(*a) {
                Ok(Action::Unspecified) | Err(_) => {
                    return Err(Status::invalid_argument(format!(
                        "actions: unknown value {a}"
                    )))
                }
                Ok(a) => actions.push(a),
            }
        }
        let mut sources = Vec::new();
        for s in &req.sources {
            match Source::try_from(*s) {
                Ok(Source::Unspecified) | Err(_) => {
                    return Err(Status::invalid_argument(format!(
                        "sources: unknown value {s}"
                    )))
                }
                Ok(s) => sources.push(s),
            }
        }
        Ok(Filter {
            collections,
            dids: req
                .dids
                .iter()
                .map(|d| d.trim().as_bytes().into())
                .collect(),
            actions,
            sources,
            want_cbor: req.want_cbor,
        })
    }

    pub(crate) fn accepts(&self, op: &Prepared) -> bool {
        (self.collections.is_empty()
            || self
                .collections
                .iter()
                .any(|p| op.collection().starts_with(p)))
            && (self.dids.is_empty() || self.dids.contains(op.did()))
            && (self.actions.is_empty() || self.actions.contains(&op.action))
            && (self.sources.is_empty() || self.sources.contains(&op.source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::OpRef;

    fn op(rkey: &str) -> Prepared {
        Prepared::new(&OpRef {
            source: Source::Live,
            did: "did:plc:a",
            collection: "app.bsky.feed.like",
            rkey,
            action: Action::Create,
            ..OpRef::default()
        })
    }

    fn hub(cfg: RelayConfig) -> Hub {
        Hub::new(cfg, 10, CancellationToken::new())
    }

    #[test]
    fn cursors_start_at_the_first_and_grow_by_one() {
        let h = hub(RelayConfig::default());
        assert_eq!(
            h.window(),
            Window {
                oldest: 9,
                newest: 9,
                clients: 0
            }
        );
        assert_eq!(h.publish([op("a"), op("b")]), 11);
        assert_eq!(h.publish([]), 11);
        assert_eq!(h.publish([op("c")]), 12);
        assert_eq!(
            h.window(),
            Window {
                oldest: 9,
                newest: 12,
                clients: 0
            }
        );
    }

    #[test]
    fn an_operation_over_the_size_limit_is_not_published() {
        let h = hub(RelayConfig::default());
        let big = "x".repeat(MAX_OPERATION_BYTES);
        let too_big = Prepared::new(&OpRef {
            did: "did:plc:a",
            collection: "c",
            rkey: "r",
            record_json: &big,
            ..OpRef::default()
        });
        assert_eq!(h.publish([op("a"), too_big, op("b")]), 11);
    }

    #[test]
    fn the_ring_keeps_at_most_retain_ops() {
        let h = hub(RelayConfig {
            retain_ops: 3,
            client_queue: 3,
            ..RelayConfig::default()
        });
        h.publish((0..10).map(|i| op(&i.to_string())));
        assert_eq!(
            h.window(),
            Window {
                oldest: 16,
                newest: 19,
                clients: 0
            }
        );
    }

    #[test]
    fn the_ring_keeps_at_most_retain_bytes() {
        let one = op("a").len();
        let h = hub(RelayConfig {
            retain_bytes: 2 * one,
            ..RelayConfig::default()
        });
        h.publish((0..5).map(|_| op("a")));
        let w = h.window();
        assert_eq!(w.newest - w.oldest, 2);
    }

    #[test]
    fn the_ring_drops_operations_past_the_retention_age() {
        let cfg = RelayConfig {
            retain_age: Duration::from_secs(60),
            ..RelayConfig::default()
        };
        let h = hub(cfg.clone());
        h.publish([op("a"), op("b")]);
        let mut ring = h.inner.ring.write().expect("lock");
        ring.trim(&cfg, Instant::now());
        assert_eq!(ring.entries.len(), 2, "young entries stay");
        ring.trim(&cfg, Instant::now() + Duration::from_secs(61));
        assert_eq!(ring.entries.len(), 0);
        assert_eq!(ring.first, 12);
        assert_eq!(ring.bytes, 0);
    }

    #[tokio::test]
    async fn clients_past_max_clients_are_refused() {
        let h = hub(RelayConfig {
            max_clients: 2,
            ..RelayConfig::default()
        });
        let req = StreamRequest::default();
        let a = h.subscribe(&req).expect("first");
        let _b = h.subscribe(&req).expect("second");
        let err = h.subscribe(&req).expect_err("third");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert_eq!(h.window().clients, 2);
        drop(a);
        assert!(h.subscribe(&req).is_ok(), "a slot is free again");
    }

    #[tokio::test]
    async fn a_resuming_client_may_lag_until_it_catches_up_then_the_bound_applies() {
        let cfg = RelayConfig {
            retain_ops: 100,
            client_queue: 10,
            ..RelayConfig::default()
        };
        let h = hub(cfg);
        h.publish((0..100).map(|i| op(&i.to_string())));
        let oldest = h.window().oldest;
        let mut sub = h
            .subscribe(&StreamRequest {
                cursor: Some(oldest),
                ..Default::default()
            })
            .expect("inside the window");
        // 100 behind with a bound of 10: allowed, it is replaying.
        let mut read = 0;
        while read < 100 {
            read += sub.next().await.expect("open").expect("not cut").len();
        }
        // Caught up; now 11 behind is one too many.
        h.publish((0..11).map(|i| op(&i.to_string())));
        let cut = sub.next().await.expect("a status").expect_err("cut");
        assert_eq!(cut.code(), tonic::Code::ResourceExhausted);
        let newest_read = oldest + 100;
        assert!(
            cut.message()
                .contains(&format!("resume with cursor {newest_read}")),
            "{}",
            cut.message()
        );
        assert!(
            sub.next().await.is_none(),
            "the stream ends after its status"
        );
    }

    #[tokio::test]
    async fn a_replaying_client_overtaken_by_the_ring_is_cut() {
        let cfg = RelayConfig {
            retain_ops: 100,
            client_queue: 10,
            ..RelayConfig::default()
        };
        let h = hub(cfg);
        h.publish((0..100).map(|i| op(&i.to_string())));
        let oldest = h.window().oldest;
        let mut sub = h
            .subscribe(&StreamRequest {
                cursor: Some(oldest),
                ..Default::default()
            })
            .expect("inside the window");
        // Before it reads anything, the ring drops what it still had to read.
        h.publish((0..50).map(|i| op(&i.to_string())));
        let cut = sub.next().await.expect("a status").expect_err("cut");
        assert_eq!(cut.code(), tonic::Code::ResourceExhausted);
        assert!(
            cut.message().contains("retention window"),
            "{}",
            cut.message()
        );
    }

    #[test]
    fn a_client_queue_longer_than_the_ring_is_refused() {
        let cfg = RelayConfig {
            retain_ops: 10,
            client_queue: 11,
            ..RelayConfig::default()
        };
        assert_eq!(
            cfg.validate(),
            Err(ConfigError::QueueTooLong {
                queue: 11,
                retain: 10
            })
        );
        assert!(RelayConfig::default().validate().is_ok());
    }

    #[test]
    fn filters_refuse_unknown_enum_values_and_star_matches_all() {
        let req = StreamRequest {
            actions: vec![9],
            ..Default::default()
        };
        assert_eq!(
            Filter::new(&req).expect_err("bad").code(),
            tonic::Code::InvalidArgument
        );
        let req = StreamRequest {
            collections: vec!["app.bsky.graph.".into(), "*".into()],
            ..Default::default()
        };
        assert!(Filter::new(&req).expect("ok").accepts(&op("a")));
        let req = StreamRequest {
            collections: vec!["app.bsky.graph.".into()],
            ..Default::default()
        };
        assert!(!Filter::new(&req).expect("ok").accepts(&op("a")));
    }
}
