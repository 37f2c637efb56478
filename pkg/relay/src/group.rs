//! Consumer groups: members share one stream, partitioned by DID.
//!
//! A group has `partitions` partitions (`--group-partitions`, fixed for the
//! relay); an operation's partition is its DID's hash modulo that, so one
//! repository's operations always fall in one partition. Each partition is
//! owned by one member (one `StreamOperations` call with the group's name) at
//! a time: members that join take partitions from the busiest, partitions of
//! a member that leaves go to the least busy (sticky: only what must move
//! moves). Each move bumps the group's generation; members see it and re-read
//! their assignment.
//!
//! The group's position is kept per partition: `committed[p]` = every
//! operation of partition p up to that cursor was delivered to some member
//! and acknowledged by it. A member starts a partition it gains there, so
//! whatever its previous owner delivered but had not acknowledged is
//! delivered again: at least once across a rebalance, exactly once (in
//! cursor order per DID) otherwise.
//!
//! A member acknowledges a batch by its `ack_id` (not by cursor: after a
//! rebalance a member's stream goes back in cursor order for the partitions
//! it gained). Each batch sent records, per partition the member owns, how
//! far its stream has delivered that partition; acknowledging batch n
//! commits those positions of batches ≤ n.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::{watch, Notify};
use tonic::Status;

use crate::metrics;
use crate::pb::StreamRequest;

/// An ended stream's unacknowledged batches are kept this long for late
/// acknowledgements (a member that processed them after its stream broke).
const ENDED_SESSION_KEEP: Duration = Duration::from_secs(60);

/// Positions of a group, saved and restored with the retention on disk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct SavedGroup {
    pub(crate) name: String,
    pub(crate) filter: String,
    pub(crate) committed: Vec<u64>,
}

/// Batches a session sent and not yet acknowledged: (ack id, operations,
/// the stream's delivered position per owned partition after it).
type Pending = VecDeque<(u64, usize, Vec<(u32, u64)>)>;

#[derive(Debug)]
struct Session {
    group: String,
    pending: Pending,
    unacked: usize,
    /// The last ack id handed out.
    last_sent: u64,
    ended: Option<Instant>,
    /// Woken by each acknowledgement (a member waiting on its unacked bound).
    acked: Arc<Notify>,
}

#[derive(Debug)]
struct Group {
    filter: String,
    committed: Vec<u64>,
    /// Live members (session ids) in join order.
    members: Vec<u64>,
    owner: Vec<Option<u64>>,
    generation: watch::Sender<u64>,
    /// When the last member left (a group without members is forgotten
    /// after the retention age).
    idle_since: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    groups: HashMap<String, Group>,
    sessions: HashMap<u64, Session>,
    dirty: bool,
}

/// Every group of the relay.
#[derive(Debug)]
pub(crate) struct Groups {
    pub(crate) partitions: u32,
    max_groups: usize,
    /// A member with this many operations delivered and not acknowledged
    /// gets no more until it acknowledges.
    pub(crate) max_unacked: usize,
    state: Mutex<State>,
}

/// What a member needs from its group.
#[derive(Debug)]
pub(crate) struct Joined {
    pub(crate) session: u64,
    pub(crate) generation: watch::Receiver<u64>,
    pub(crate) acked: Arc<Notify>,
}

/// The canonical form of a request's filters (what all members must share).
pub(crate) fn filter_key(req: &StreamRequest) -> String {
    let mut collections: Vec<&str> = req.collections.iter().map(|c| c.trim()).collect();
    collections.sort_unstable();
    collections.dedup();
    let mut dids: Vec<&str> = req.dids.iter().map(|d| d.trim()).collect();
    dids.sort_unstable();
    dids.dedup();
    let mut actions = req.actions.clone();
    actions.sort_unstable();
    actions.dedup();
    let mut sources = req.sources.clone();
    sources.sort_unstable();
    sources.dedup();
    let mut h = Sha256::new();
    for c in collections {
        h.update(c.as_bytes());
        h.update([0]);
    }
    h.update([1]);
    for d in dids {
        h.update(d.as_bytes());
        h.update([0]);
    }
    h.update([1]);
    for a in actions {
        h.update(a.to_le_bytes());
    }
    h.update([1]);
    for s in sources {
        h.update(s.to_le_bytes());
    }
    h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `name` is a usable group name.
pub(crate) fn check_name(name: &str) -> Result<(), Status> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "group {:?}: expected 1-64 characters of [A-Za-z0-9._-]",
            name.chars().take(80).collect::<String>()
        )))
    }
}

fn session_id() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        // No secret: a session id only routes acknowledgements of a caller
        // that already holds a subscribe token.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        return t | 1;
    }
    u64::from_le_bytes(b).max(1)
}

impl Groups {
    pub(crate) fn new(partitions: u32, max_groups: usize, max_unacked: usize) -> Groups {
        Groups {
            partitions: partitions.max(1),
            max_groups,
            max_unacked,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Restore saved positions (the relay's previous run).
    pub(crate) fn restore(&self, saved: Vec<SavedGroup>) {
        let mut st = self.lock();
        for g in saved {
            let p = self.partitions as usize;
            let committed = if g.committed.len() == p {
                g.committed
            } else {
                // Another partition count: the oldest position for all (more
                // redelivered, nothing skipped).
                let min = g.committed.iter().copied().min().unwrap_or(0);
                tracing::warn!(group = %g.name, saved = g.committed.len(), now = p, "Group saved with another partition count; it resumes everywhere from its oldest position.");
                vec![min; p]
            };
            metrics::group_members(&g.name, 0);
            st.groups.insert(
                g.name,
                Group {
                    filter: g.filter,
                    committed,
                    members: Vec::new(),
                    owner: vec![None; p],
                    generation: watch::Sender::new(0),
                    idle_since: Some(Instant::now()),
                },
            );
        }
    }

    /// The groups' positions, if they changed since the last call.
    pub(crate) fn take_dirty(&self) -> Option<Vec<SavedGroup>> {
        let mut st = self.lock();
        if !st.dirty {
            return None;
        }
        st.dirty = false;
        Some(saved(&st))
    }

    /// The groups' positions now.
    pub(crate) fn snapshot(&self) -> Vec<SavedGroup> {
        saved(&self.lock())
    }

    /// Add a member to `name` (created at `start` if new); rebalances.
    pub(crate) fn join(&self, name: &str, filter: String, start: u64) -> Result<Joined, Status> {
        let mut st = self.lock();
        if !st.groups.contains_key(name) {
            if st.groups.len() >= self.max_groups {
                return Err(Status::resource_exhausted(format!(
                    "the relay keeps at most {} groups; reuse one or wait until an unused one \
                     is forgotten",
                    self.max_groups
                )));
            }
            let p = self.partitions as usize;
            st.groups.insert(
                name.to_owned(),
                Group {
                    filter: filter.clone(),
                    committed: vec![start; p],
                    members: Vec::new(),
                    owner: vec![None; p],
                    generation: watch::Sender::new(0),
                    idle_since: None,
                },
            );
            st.dirty = true;
        }
        let session = session_id();
        let acked = Arc::new(Notify::new());
        let group = st
            .groups
            .get_mut(name)
            .ok_or_else(|| Status::internal("group"))?;
        if group.filter != filter {
            return Err(Status::failed_precondition(format!(
                "group {name} has members with other filters: every member must ask for the \
                 same collections, dids, actions and sources (or use another group name)"
            )));
        }
        group.members.push(session);
        group.idle_since = None;
        rebalance(group);
        metrics::group_members(name, group.members.len());
        metrics::rebalanced(name);
        let generation = group.generation.subscribe();
        st.sessions.insert(
            session,
            Session {
                group: name.to_owned(),
                pending: VecDeque::new(),
                unacked: 0,
                last_sent: 0,
                ended: None,
                acked: acked.clone(),
            },
        );
        Ok(Joined {
            session,
            generation,
            acked,
        })
    }

    /// The member's stream ended: its partitions go to the others. Its
    /// unacknowledged batches stay a while for late acknowledgements.
    pub(crate) fn leave(&self, session: u64) {
        let mut st = self.lock();
        let Some(s) = st.sessions.get_mut(&session) else {
            return;
        };
        s.ended = Some(Instant::now());
        let name = s.group.clone();
        if let Some(g) = st.groups.get_mut(&name) {
            g.members.retain(|m| *m != session);
            if g.members.is_empty() {
                g.idle_since = Some(Instant::now());
            }
            rebalance(g);
            metrics::group_members(&name, g.members.len());
            metrics::rebalanced(&name);
        }
    }

    /// The partitions `session` owns now, with the group's position of each.
    pub(crate) fn assignment(&self, session: u64) -> Vec<(u32, u64)> {
        let st = self.lock();
        let Some(g) = st
            .sessions
            .get(&session)
            .and_then(|s| st.groups.get(&s.group))
        else {
            return Vec::new();
        };
        g.owner
            .iter()
            .enumerate()
            .filter(|(_, o)| **o == Some(session))
            .map(|(p, _)| (p as u32, g.committed[p]))
            .collect()
    }

    /// Operations `session` has delivered and not had acknowledged.
    pub(crate) fn unacked(&self, session: u64) -> usize {
        self.lock().sessions.get(&session).map_or(0, |s| s.unacked)
    }

    /// A batch of `ops` operations was sent; `positions` is how far the
    /// stream has delivered each partition it owns. Returns its ack id.
    pub(crate) fn sent(&self, session: u64, ops: usize, positions: Vec<(u32, u64)>) -> u64 {
        let mut st = self.lock();
        let Some(s) = st.sessions.get_mut(&session) else {
            return 0;
        };
        s.last_sent += 1;
        s.unacked += ops;
        s.pending.push_back((s.last_sent, ops, positions));
        s.last_sent
    }

    /// The stream scanned `positions` without delivering anything: with no
    /// batch awaiting acknowledgement, the group's position moves there (a
    /// member whose filters match little keeps its group's position recent).
    pub(crate) fn skipped(&self, session: u64, positions: &[(u32, u64)]) {
        let mut st = self.lock();
        let Some(s) = st.sessions.get(&session) else {
            return;
        };
        if !s.pending.is_empty() {
            return;
        }
        let name = s.group.clone();
        if let Some(g) = st.groups.get_mut(&name) {
            commit(g, session, positions);
            st.dirty = true;
        }
    }

    /// `Ack(session, ack_id)`.
    pub(crate) fn ack(&self, session: u64, ack_id: u64) -> Result<(), Status> {
        let mut st = self.lock();
        let Some(s) = st.sessions.get_mut(&session) else {
            return Err(Status::not_found(format!(
                "unknown session {session}: the relay restarted, or the stream ended over {} s \
                 ago; the group resumes from what was acknowledged",
                ENDED_SESSION_KEEP.as_secs()
            )));
        };
        if ack_id == 0 || ack_id > s.last_sent {
            return Err(Status::invalid_argument(format!(
                "ack_id {ack_id}: this session sent batches 1 to {}",
                s.last_sent
            )));
        }
        let mut done: Vec<(u32, u64)> = Vec::new();
        while s.pending.front().is_some_and(|(id, _, _)| *id <= ack_id) {
            if let Some((_, ops, positions)) = s.pending.pop_front() {
                s.unacked -= ops;
                done.extend(positions);
            }
        }
        s.acked.notify_waiters();
        let name = s.group.clone();
        if let Some(g) = st.groups.get_mut(&name) {
            commit(g, session, &done);
        }
        st.dirty = true;
        Ok(())
    }

    /// Forget sessions ended long ago and groups without members for longer
    /// than `idle`; report each group's lag behind `newest`.
    pub(crate) fn sweep(&self, idle: Duration, newest: u64) {
        let mut st = self.lock();
        st.sessions
            .retain(|_, s| s.ended.is_none_or(|t| t.elapsed() < ENDED_SESSION_KEEP));
        let before = st.groups.len();
        st.groups.retain(|name, g| {
            let keep = g.idle_since.is_none_or(|t| t.elapsed() < idle);
            if !keep {
                tracing::info!(group = %name, "Consumer group without members past the retention age; forgotten.");
                metrics::group_forgotten(name);
            }
            keep
        });
        if st.groups.len() != before {
            st.dirty = true;
        }
        for (name, g) in &st.groups {
            let oldest = g.committed.iter().copied().min().unwrap_or(newest);
            metrics::group_lag(name, newest.saturating_sub(oldest));
        }
    }
}

fn saved(st: &State) -> Vec<SavedGroup> {
    let mut out: Vec<SavedGroup> = st
        .groups
        .iter()
        .map(|(name, g)| SavedGroup {
            name: name.clone(),
            filter: g.filter.clone(),
            committed: g.committed.clone(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Move the group's positions to what `session` delivered and had
/// acknowledged (never back).
fn commit(g: &mut Group, _session: u64, positions: &[(u32, u64)]) {
    for &(p, pos) in positions {
        if let Some(c) = g.committed.get_mut(p as usize) {
            *c = (*c).max(pos);
        }
    }
}

/// Give every partition an owner among the members, moving as few as
/// possible: each member ends with ⌊P/n⌋ or ⌈P/n⌉ (the first members in
/// join order get the extra ones); members past P get none.
fn rebalance(g: &mut Group) {
    let n = g.members.len();
    let p = g.owner.len();
    if n == 0 {
        g.owner.iter_mut().for_each(|o| *o = None);
        g.generation.send_modify(|v| *v += 1);
        return;
    }
    let quota = |i: usize| p / n + usize::from(i < p % n);
    let index: HashMap<u64, usize> = g.members.iter().enumerate().map(|(i, m)| (*m, i)).collect();
    let mut count = vec![0usize; n];
    let mut free = Vec::new();
    for (part, o) in g.owner.iter_mut().enumerate() {
        match o.and_then(|m| index.get(&m).copied()) {
            Some(i) if count[i] < quota(i) => count[i] += 1,
            _ => {
                *o = None;
                free.push(part);
            }
        }
    }
    let mut i = 0;
    for part in free {
        while count[i] >= quota(i) {
            i += 1;
        }
        g.owner[part] = Some(g.members[i]);
        count[i] += 1;
    }
    g.generation.send_modify(|v| *v += 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(g: &Groups, s: u64) -> Vec<u32> {
        g.assignment(s).into_iter().map(|(p, _)| p).collect()
    }

    #[test]
    fn partitions_spread_evenly_and_move_as_little_as_possible() {
        let g = Groups::new(8, 4, 100);
        let a = g.join("g", "f".into(), 10).expect("a").session;
        assert_eq!(owned(&g, a), (0..8).collect::<Vec<_>>());
        let b = g.join("g", "f".into(), 10).expect("b").session;
        let (oa, ob) = (owned(&g, a), owned(&g, b));
        assert_eq!((oa.len(), ob.len()), (4, 4));
        let c = g.join("g", "f".into(), 10).expect("c").session;
        let (na, nb, nc) = (owned(&g, a), owned(&g, b), owned(&g, c));
        assert_eq!((na.len(), nb.len(), nc.len()), (3, 3, 2));
        assert!(
            na.iter().all(|p| oa.contains(p)),
            "a only gave partitions away"
        );
        assert!(
            nb.iter().all(|p| ob.contains(p)),
            "b only gave partitions away"
        );
        g.leave(b);
        let (la, lc) = (owned(&g, a), owned(&g, c));
        assert_eq!(la.len() + lc.len(), 8);
        assert!(na.iter().all(|p| la.contains(p)) && nc.iter().all(|p| lc.contains(p)));
        assert!(owned(&g, b).is_empty());
    }

    #[test]
    fn acknowledgements_commit_what_their_batches_delivered() {
        let g = Groups::new(2, 4, 100);
        let a = g.join("g", "f".into(), 100).expect("a").session;
        let first = g.sent(a, 3, vec![(0, 150), (1, 140)]);
        let second = g.sent(a, 2, vec![(0, 180), (1, 190)]);
        assert_eq!(g.unacked(a), 5);
        g.ack(a, first).expect("ack");
        assert_eq!(g.assignment(a), vec![(0, 150), (1, 140)]);
        assert_eq!(g.unacked(a), 2);
        assert_eq!(
            g.ack(a, second + 1).expect_err("not sent").code(),
            tonic::Code::InvalidArgument
        );
        // A member that takes over starts at the acknowledged positions.
        g.leave(a);
        let b = g.join("g", "f".into(), 0).expect("b").session;
        assert_eq!(g.assignment(b), vec![(0, 150), (1, 140)]);
        // A late acknowledgement of the gone member still counts.
        g.ack(a, second).expect("late ack");
        assert_eq!(g.assignment(b), vec![(0, 180), (1, 190)]);
        assert_eq!(
            g.ack(12345, 1).expect_err("unknown").code(),
            tonic::Code::NotFound
        );
    }

    #[test]
    fn members_must_share_filters_and_names_are_checked() {
        let g = Groups::new(4, 1, 100);
        g.join("g", "f".into(), 0).expect("first");
        assert_eq!(
            g.join("g", "other".into(), 0).expect_err("filters").code(),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(
            g.join("h", "f".into(), 0).expect_err("max groups").code(),
            tonic::Code::ResourceExhausted
        );
        for bad in ["", "a b", &"x".repeat(65), "ä"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name("ingesters.v2-a_1").is_ok());
        let a = StreamRequest {
            collections: vec!["b".into(), "a".into()],
            ..Default::default()
        };
        let b = StreamRequest {
            collections: vec!["a".into(), "b".into(), "a".into()],
            client_name: "other".into(),
            want_cbor: true,
            ..Default::default()
        };
        assert_eq!(filter_key(&a), filter_key(&b));
        let c = StreamRequest {
            dids: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        assert_ne!(filter_key(&a), filter_key(&c));
    }
}
