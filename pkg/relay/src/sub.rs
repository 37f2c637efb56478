//! One client's stream: its read position in the ring (and, when it is older
//! than the ring, in the segments on disk), its filter, and for a consumer
//! group member its partitions and their positions.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tonic::Status;

use crate::auth::{Auth, Caller, Scope};
use crate::group::Groups;
use crate::hub::{Filter, Hub, BATCH_BYTES, BATCH_OPS};
use crate::metrics;
use crate::wire::{EncodedBatch, Prepared};

/// Ring entries a client scans per lock acquisition (bounds the time a read
/// lock is held to ~tens of µs).
pub(crate) const SCAN_STEP: usize = 4_096;
/// How often an idle stream re-checks its token.
const IDLE_RECHECK: Duration = Duration::from_secs(2);

/// A stream's token: when the tokens file changes (its generation moves),
/// a stream whose token was revoked ends with UNAUTHENTICATED.
struct Guard {
    auth: Auth,
    caller: Caller,
    generation: u64,
}

impl Guard {
    fn revoked(&mut self) -> bool {
        let now = self.auth.generation();
        if now == self.generation {
            return false;
        }
        self.generation = now;
        !self.auth.still_valid(&self.caller, Scope::Subscribe)
    }
}

/// A consumer group member's share of the stream.
pub(crate) struct Member {
    groups: Arc<Groups>,
    group: String,
    session: u64,
    generation: watch::Receiver<u64>,
    acked: Arc<Notify>,
    /// Per partition: whether this member owns it …
    owned: Vec<bool>,
    /// … and the cursor up to which this stream has delivered it.
    delivered: Vec<u64>,
    owned_list: Vec<u32>,
    /// The group generation whose assignment this member follows (`None`:
    /// none read yet). Compared by value: the waits below consume the
    /// watch's change flag.
    seen: Option<u64>,
}

impl Member {
    pub(crate) fn new(
        groups: Arc<Groups>,
        group: String,
        session: u64,
        generation: watch::Receiver<u64>,
        acked: Arc<Notify>,
    ) -> Member {
        let p = groups.partitions as usize;
        Member {
            groups,
            group,
            session,
            generation,
            acked,
            owned: vec![false; p],
            delivered: vec![0; p],
            owned_list: Vec::new(),
            seen: None,
        }
    }

    /// Re-read the assignment after a rebalance; gained partitions start at
    /// the group's position (not older than `oldest`). Whether any was
    /// gained.
    fn refresh(&mut self, oldest: u64) -> bool {
        // Read before the assignment: a rebalance after this is seen next time.
        self.seen = Some(*self.generation.borrow_and_update());
        let now = self.groups.assignment(self.session);
        let mut owned = vec![false; self.owned.len()];
        let mut gained = false;
        for &(p, committed) in &now {
            let i = p as usize;
            owned[i] = true;
            if !self.owned[i] {
                gained = true;
                if committed < oldest {
                    tracing::warn!(
                        group = %self.group,
                        partition = p,
                        position = committed,
                        oldest,
                        "Group position older than the retention window: the partition resumes at the oldest operation kept (what lay between was dropped unacknowledged)."
                    );
                    metrics::group_position_lost(&self.group);
                }
                self.delivered[i] = committed.max(oldest);
            }
        }
        self.owned = owned;
        self.owned_list = now.iter().map(|(p, _)| *p).collect();
        gained
    }

    /// Whether a rebalance happened since the last [`Member::refresh`].
    fn stale(&self) -> bool {
        self.seen != Some(*self.generation.borrow())
    }

    /// Where the stream must read from: the oldest partition position.
    fn scan_from(&self) -> Option<u64> {
        self.owned_list
            .iter()
            .map(|&p| self.delivered[p as usize])
            .min()
    }

    fn positions(&self) -> Vec<(u32, u64)> {
        self.owned_list
            .iter()
            .map(|&p| (p, self.delivered[p as usize]))
            .collect()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.groups.leave(self.session);
    }
}

/// One client's read position; see the module docs.
pub struct Subscription {
    pub(crate) hub: Hub,
    pub(crate) client: metrics::Client,
    pub(crate) filter: Filter,
    /// Broadcast: the last cursor read (delivered or skipped by the filter).
    /// Group member: where its last scan ended.
    pub(crate) pos: u64,
    /// Whether the client has been within `client_queue` of the newest.
    pub(crate) caught_up: bool,
    pub(crate) newest_rx: watch::Receiver<u64>,
    pub(crate) done: bool,
    guard: Option<Guard>,
    pub(crate) member: Option<Member>,
    /// Where it reads the segments, while it is behind the memory ring.
    disk: Option<crate::disk::Reader>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("pos", &self.pos)
            .field("caught_up", &self.caught_up)
            .field("group", &self.member.as_ref().map(|m| &m.group))
            .finish_non_exhaustive()
    }
}

/// What one look at the ring found.
enum Step {
    Batch(EncodedBatch),
    /// Scanned entries, none matched: look again.
    Skipped,
    /// Nothing new: wait.
    Empty,
    /// What comes next is older than the memory ring: read the segments.
    Disk,
    Cut(Status),
}

impl Subscription {
    pub(crate) fn new(
        hub: Hub,
        client: metrics::Client,
        filter: Filter,
        pos: u64,
        caught_up: bool,
        newest_rx: watch::Receiver<u64>,
        member: Option<Member>,
    ) -> Subscription {
        Subscription {
            hub,
            client,
            filter,
            pos,
            caught_up,
            newest_rx,
            done: false,
            guard: None,
            member,
            disk: None,
        }
    }

    /// End the stream with UNAUTHENTICATED once `caller`'s token is revoked.
    pub fn guarded(mut self, auth: Auth, caller: Caller) -> Subscription {
        if auth.enabled() {
            self.guard = Some(Guard {
                generation: auth.generation(),
                auth,
                caller,
            });
        }
        self
    }

    fn end(&mut self, reason: &'static str) {
        self.done = true;
        self.client.disconnect(reason);
    }

    /// The next batch: `None` when the stream is over (after an error, or on
    /// shutdown).
    pub async fn next(&mut self) -> Option<Result<EncodedBatch, Status>> {
        if self.done {
            return None;
        }
        let shutdown = self.hub.shutdown_token();
        loop {
            if shutdown.is_cancelled() {
                self.end("shutdown");
                return None;
            }
            if self.guard.as_mut().is_some_and(Guard::revoked) {
                self.end("revoked");
                return Some(Err(Status::unauthenticated(
                    "the relay token was revoked (or lost its subscribe scope)",
                )));
            }
            // A member: follow rebalances, respect the unacknowledged bound,
            // wait while it owns nothing.
            let mut waiting_for_acks = None;
            if let Some(m) = self.member.as_mut() {
                if m.stale() && m.refresh(self.hub.oldest()) {
                    // Gained partitions may start far back: replaying them is
                    // not falling behind.
                    self.caught_up = false;
                }
                let acked = m.acked.clone();
                if m.owned_list.is_empty() || m.groups.unacked(m.session) >= m.groups.max_unacked {
                    waiting_for_acks = Some(acked);
                }
            }
            if let Some(acked) = waiting_for_acks {
                let notified = acked.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                // Checked again now that a notification cannot be missed.
                let still = self.member.as_ref().is_some_and(|m| {
                    m.owned_list.is_empty() || m.groups.unacked(m.session) >= m.groups.max_unacked
                });
                if still {
                    self.client.depth(self.lag());
                    let Some(m) = self.member.as_mut() else {
                        continue;
                    };
                    let over = tokio::select! {
                        _ = &mut notified => false,
                        changed = m.generation.changed() => changed.is_err(),
                        _ = shutdown.cancelled() => true,
                        _ = tokio::time::sleep(IDLE_RECHECK) => false,
                    };
                    if over {
                        self.end("shutdown");
                        return None;
                    }
                    continue;
                }
            }
            self.newest_rx.borrow_and_update();
            let step = match self.step() {
                Step::Disk => self.step_disk().await,
                other => other,
            };
            match step {
                Step::Batch(b) => {
                    self.client.sent(b.len(), self.lag());
                    return Some(Ok(b));
                }
                Step::Skipped | Step::Disk => tokio::task::consume_budget().await,
                Step::Cut(status) => {
                    self.end("slow");
                    return Some(Err(status));
                }
                Step::Empty => {
                    self.client.depth(0);
                    let generation = self.member.as_mut().map(|m| &mut m.generation);
                    let recheck = self.guard.is_some();
                    let over = tokio::select! {
                        changed = self.newest_rx.changed() => changed.is_err(),
                        _ = async {
                            match generation {
                                Some(g) => { let _ = g.changed().await; }
                                None => std::future::pending::<()>().await,
                            }
                        } => false,
                        _ = shutdown.cancelled() => true,
                        // A quiet relay still notices a revoked token.
                        _ = tokio::time::sleep(IDLE_RECHECK), if recheck => false,
                    };
                    if over {
                        self.end("shutdown");
                        return None;
                    }
                }
            }
        }
    }

    /// Where the next scan starts.
    fn scan_from(&self) -> u64 {
        match &self.member {
            Some(m) => m.scan_from().unwrap_or(self.pos),
            None => self.pos,
        }
    }

    fn lag(&self) -> u64 {
        self.newest_rx.borrow().saturating_sub(self.scan_from())
    }

    fn behind(&self, oldest: u64) -> Status {
        match &self.member {
            None => Status::resource_exhausted(format!(
                "client fell behind the retention window (oldest cursor {oldest}); resume with \
                 cursor {} (it is outside the window: everything up to {oldest} was dropped)",
                self.pos
            )),
            Some(m) => Status::resource_exhausted(format!(
                "group member fell behind the retention window (oldest cursor {oldest}); \
                 rejoin group {}: it resumes from its acknowledged positions",
                m.group
            )),
        }
    }

    fn slow(&self, lag: u64) -> Status {
        let queue = self.hub.config().client_queue;
        match &self.member {
            None => Status::resource_exhausted(format!(
                "client fell {lag} operations behind (limit {queue}); resume with cursor {}",
                self.pos
            )),
            Some(m) => Status::resource_exhausted(format!(
                "group member fell {lag} operations behind (limit {queue}); rejoin group {}: \
                 it resumes from its acknowledged positions",
                m.group
            )),
        }
    }

    fn step(&mut self) -> Step {
        let queue = self.hub.config().client_queue as u64;
        let hub = self.hub.clone();
        let ring = hub.ring();
        let newest = ring.newest();
        let from = self.scan_from();
        let lag = newest.saturating_sub(from);
        if from + 1 < ring.first {
            if hub.disk().is_some() {
                return Step::Disk;
            }
            return Step::Cut(self.behind(ring.first - 1));
        }
        if lag <= queue {
            self.caught_up = true;
        } else if self.caught_up {
            return Step::Cut(self.slow(lag));
        }
        if lag == 0 {
            return Step::Empty;
        }
        let start = (from + 1 - ring.first) as usize;
        let entries = ring
            .entries
            .range(start..)
            .take(SCAN_STEP)
            .enumerate()
            .map(|(i, e)| (from + 1 + i as u64, &e.op));
        let last_possible = from + lag.min(SCAN_STEP as u64);
        let step = self.scan(entries, last_possible);
        drop(ring);
        // A client replaying from an old cursor is caught up as soon as what
        // it has read brings it within the bound (not only when a read starts so).
        if newest - self.scan_from() <= queue {
            self.caught_up = true;
        }
        step
    }

    /// Read what follows the position from the segments (on a blocking
    /// thread) and batch it like [`Subscription::step`] does from the ring.
    async fn step_disk(&mut self) -> Step {
        let Some(log) = self.hub.disk() else {
            return Step::Cut(self.behind(self.hub.oldest()));
        };
        let from = self.scan_from();
        let mut reader = self.disk.take();
        let read = tokio::task::spawn_blocking(move || {
            let chunk = crate::disk::read_after(&log, &mut reader, from, SCAN_STEP);
            (reader, chunk)
        })
        .await;
        let (reader, chunk) = match read {
            Ok(r) => r,
            Err(e) => {
                return Step::Cut(Status::internal(format!("reading the segments: {e}")));
            }
        };
        self.disk = reader;
        match chunk {
            Ok(crate::disk::Chunk::Records(records)) => {
                metrics::disk_read(records.len());
                let last = records.last().map_or(from, |r| r.cursor);
                let step = self.scan(records.iter().map(|r| (r.cursor, &r.op)), last);
                let newest = *self.newest_rx.borrow();
                if newest.saturating_sub(self.scan_from()) <= self.hub.config().client_queue as u64
                {
                    self.caught_up = true;
                }
                step
            }
            Ok(crate::disk::Chunk::Gone) => Step::Cut(self.behind(self.hub.oldest())),
            Ok(crate::disk::Chunk::Nothing) => {
                // Nothing on disk after the position (a restart's jump in the
                // numbering): what follows is the memory ring's.
                let first = self.hub.ring().first;
                self.advance_to(first - 1);
                Step::Skipped
            }
            Err(e) => {
                tracing::error!(error = %e, "Reading the relay segments failed; the client is cut off.");
                Step::Cut(Status::unavailable(format!(
                    "the relay could not read its retention segments ({e}); resume later"
                )))
            }
        }
    }

    /// Move the position(s) to `cursor` when nothing lies before it.
    fn advance_to(&mut self, cursor: u64) {
        match self.member.as_mut() {
            None => self.pos = self.pos.max(cursor),
            Some(m) => {
                for &p in &m.owned_list {
                    let d = &mut m.delivered[p as usize];
                    *d = (*d).max(cursor);
                }
                self.pos = self.pos.max(cursor);
            }
        }
    }

    /// Batch what this client takes of `entries` (consecutive cursors from
    /// `scan_from() + 1`, ending at `last_possible` if the batch does not
    /// fill up first), and move its position(s) past what was scanned.
    fn scan<'a>(
        &mut self,
        entries: impl Iterator<Item = (u64, &'a Prepared)>,
        last_possible: u64,
    ) -> Step {
        let mut batch = EncodedBatch::default();
        let mut bytes = 0;
        let mut last = last_possible;
        let want_cbor = self.filter.want_cbor;
        match self.member.as_mut() {
            None => {
                for (cursor, op) in entries {
                    if self.filter.accepts(op) {
                        bytes += op.len();
                        batch.out.push((cursor, op.body_for(want_cbor)));
                        if batch.out.len() >= BATCH_OPS || bytes >= BATCH_BYTES {
                            last = cursor;
                            break;
                        }
                    }
                }
                self.pos = last;
            }
            Some(m) => {
                let parts = m.owned.len() as u32;
                for (cursor, op) in entries {
                    let p = (op.did_hash % parts) as usize;
                    if m.owned[p] && cursor > m.delivered[p] && self.filter.accepts(op) {
                        bytes += op.len();
                        batch.out.push((cursor, op.body_for(want_cbor)));
                        if batch.out.len() >= BATCH_OPS || bytes >= BATCH_BYTES {
                            last = cursor;
                            break;
                        }
                    }
                }
                for &p in &m.owned_list {
                    let d = &mut m.delivered[p as usize];
                    *d = (*d).max(last);
                }
                self.pos = last;
                if batch.out.is_empty() {
                    m.groups.skipped(m.session, &m.positions());
                } else {
                    let ack_id = m.groups.sent(m.session, batch.out.len(), m.positions());
                    batch.ack = (ack_id, m.session);
                }
            }
        }
        if batch.out.is_empty() {
            Step::Skipped
        } else {
            Step::Batch(batch)
        }
    }

    /// The stream tonic sends: batches, then at most one error.
    pub fn into_stream(
        self,
    ) -> impl futures_util::Stream<Item = Result<EncodedBatch, Status>> + Send + 'static {
        futures_util::stream::unfold(self, |mut sub| async move {
            let item = sub.next().await?;
            Some((item, sub))
        })
    }
}
