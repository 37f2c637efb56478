//! Source messages → rows: Jetstream JSON events and firehose frames.
//!
//! Pure and synchronous except for signature checks, which need keys: the
//! caller resolves them ([`Decoded::needs_key`]) and decodes again. Every
//! problem with the input becomes a `dead_letters` row naming the DID and
//! path, never an error that stops the stream.

use std::collections::HashMap;

use crate::filter::CollectionFilter;
use crate::{apply, apply_with_cbor, AccountRow, DeadLetterRow, IdentityRow, Op, Rows, Table};
use skyhouse_atproto::car::{CarError, CarOptions, CarSlice};
use skyhouse_atproto::cbor;
use skyhouse_atproto::commit::Commit;
use skyhouse_atproto::crypto::PublicKey;
use skyhouse_atproto::frame::Action;
use skyhouse_atproto::frame::{CommitEvent, ErrorFrame, ErrorKind, Frame};
use skyhouse_atproto::jetstream::{self, Operation, Payload, PayloadRef};
use skyhouse_atproto::json::from_lex_json;
use skyhouse_atproto::syntax::Tid;
use skyhouse_atproto::Cid;

/// Dead letters keep at most this much of the offending input (bytes).
const DEAD_LETTER_PAYLOAD: usize = 16 << 10;

/// Per-DID repository chain positions kept for `prevData` checks; when the
/// map grows past this many DIDs it starts over (~150 bytes each: ~150 MB
/// would be 1M; 200k DIDs ≈ 30 MB). Losing an entry only skips one check.
const CHAIN_CAPACITY: usize = 200_000;

/// Why a repository needs a resync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResyncReason {
    /// The firehose `seq` jumped: events may be missing.
    Gap,
    /// A `#sync` event reset the repository.
    Sync,
    /// A commit's `since`/`prevData` does not follow the last commit seen.
    Chain,
    /// A commit too big for the stream (`tooBig`): its ops are not in it.
    TooBig,
    /// `--verify` could not get the repository's key: the commit was not
    /// stored; the snapshot repairs it.
    Unverified,
    /// The first event after a `FutureCursor` reconnect to the live tip:
    /// events between our cursor and it were never received.
    FutureCursor,
}

impl ResyncReason {
    /// Every reason (the closed label set of the resync metric).
    pub const ALL: [ResyncReason; 6] = [
        ResyncReason::Gap,
        ResyncReason::Sync,
        ResyncReason::Chain,
        ResyncReason::TooBig,
        ResyncReason::Unverified,
        ResyncReason::FutureCursor,
    ];

    /// The label used in metrics and in the resync stream.
    pub fn as_str(self) -> &'static str {
        match self {
            ResyncReason::Gap => "gap",
            ResyncReason::Sync => "sync",
            ResyncReason::Chain => "chain",
            ResyncReason::TooBig => "too_big",
            ResyncReason::Unverified => "unverified",
            ResyncReason::FutureCursor => "future_cursor",
        }
    }
}

/// What one message produced besides rows.
#[derive(Debug, Default)]
pub struct Decoded {
    /// The message's position (Jetstream `time_us`, firehose `seq`), if
    /// readable.
    pub position: Option<i64>,
    /// The event's kind, for metrics (`commit`, `identity`, `account`,
    /// `sync`, `info`, `error`, `unknown`, `invalid`).
    pub kind: &'static str,
    /// The event's own time (Unix microseconds), for lag.
    pub event_time_us: Option<i64>,
    /// Repositories to resync.
    pub resync: Vec<(String, ResyncReason)>,
    /// Operations left out by the collection filter.
    pub filtered: u64,
    /// Operations turned into rows.
    pub ops: u64,
    /// Dead letters written for this message.
    pub dead_letters: u64,
    /// `--verify`: the commit's DID, whose key is not known yet. Nothing was
    /// added to the rows; resolve the key and decode again.
    pub needs_key: Option<String>,
    /// `--verify`: the signature did not match the key given.
    pub bad_signature: bool,
    /// A firehose `#error` frame: an instruction about the connection (the
    /// transport acts on it; see [`ErrorKind`]).
    pub error: Option<ErrorFrame>,
    /// This is the first event after a `FutureCursor` error: the events
    /// between the two were skipped.
    pub skipped: Option<Skip>,
    /// An `#identity` event without a handle: the DID whose identity must be
    /// resolved (the event only says "resolve again"; no row was added).
    pub resolve_identity: Option<String>,
}

/// The events a `FutureCursor` reconnect to the live tip skipped: everything
/// the server sent after `after` and before `resumed_at`. The DIDs they
/// touched are unknown; those with a later commit show it (their `since` no
/// longer follows the last commit seen: [`ResyncReason::Chain`]), and the
/// DID of the first event after the skip is queued
/// ([`ResyncReason::FutureCursor`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skip {
    /// The last `seq` decoded before the error, if any (the caller may know
    /// a better one: the cursor it connected with).
    pub after: Option<i64>,
    /// The first `seq` from the live tip, in the server's numbering (which
    /// may be lower than `after`: a reset sequence is one cause of
    /// `FutureCursor`).
    pub resumed_at: i64,
}

impl Decoded {
    /// Every [`Decoded::kind`] (the closed label set of the events metric).
    pub const KINDS: [&'static str; 8] = [
        "commit", "identity", "account", "sync", "info", "error", "unknown", "invalid",
    ];
}

/// Signature checking for firehose commits.
#[derive(Debug, Default)]
pub enum Verify {
    /// Do not check signatures.
    #[default]
    Off,
    /// Check with this key (the caller looked it up for the commit's DID).
    With(PublicKey),
    /// Check; the key is not known yet ([`Decoded::needs_key`]).
    Lookup,
}

/// Decoding state that spans messages: the last seq and each repository's
/// last commit.
#[derive(Debug, Default)]
pub struct Decoder {
    filter: CollectionFilter,
    /// Operations per typed table since the last [`Decoder::take_op_counts`]
    /// (index = position in `Table::ALL`; the last slot: other collections).
    op_counts: Vec<u64>,
    last_seq: Option<i64>,
    /// Set by a `FutureCursor` error until the next event with a `seq`:
    /// the last `seq` before the skip.
    skip: Option<Option<i64>>,
    /// The last commit (rev, MST root) seen of each repository; kept across
    /// reconnects and skips, so a repository whose events were lost shows it
    /// at its next commit.
    chain: HashMap<String, (String, Cid)>,
}

#[cfg(test)]
thread_local! {
    /// The tests' clock in microseconds, so that two decodes of one input
    /// can be compared row by row.
    static TEST_CLOCK_US: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

fn now_secs() -> u32 {
    #[cfg(test)]
    if let Some(us) = TEST_CLOCK_US.with(std::cell::Cell::get) {
        return (us / 1_000_000) as u32;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

/// Parse an RFC 3339 time to Unix microseconds (for lag metrics).
fn time_us(s: &str) -> Option<i64> {
    skyhouse_atproto::syntax::parse_datetime_lenient(s)
}

fn dead_letter(
    rows: &mut Rows,
    source: &str,
    did: &str,
    path: (&str, &str),
    reason: String,
    payload: String,
) {
    let mut payload = payload;
    if payload.len() > DEAD_LETTER_PAYLOAD {
        let mut end = DEAD_LETTER_PAYLOAD;
        while !payload.is_char_boundary(end) {
            end -= 1;
        }
        payload.truncate(end);
    }
    rows.push_dead_letter(DeadLetterRow {
        source: source.to_owned(),
        did: did.to_owned(),
        collection: path.0.to_owned(),
        rkey: path.1.to_owned(),
        cid: String::new(),
        version: 0,
        reason,
        payload,
        at: now_secs(),
    });
}

fn hex(bytes: &[u8]) -> String {
    let n = bytes.len().min(DEAD_LETTER_PAYLOAD / 2);
    bytes[..n].iter().map(|b| format!("{b:02x}")).collect()
}

impl Decoder {
    /// A decoder keeping only collections `filter` accepts.
    pub fn new(filter: CollectionFilter) -> Self {
        Decoder {
            filter,
            op_counts: vec![0; Table::ALL.len() + 1],
            ..Decoder::default()
        }
    }

    fn count_op(&mut self, collection: &str) {
        if self.op_counts.is_empty() {
            self.op_counts = vec![0; Table::ALL.len() + 1];
        }
        let i = Table::for_collection(collection)
            .and_then(|t| Table::ALL.iter().position(|x| *x == t))
            .unwrap_or(Table::ALL.len());
        self.op_counts[i] += 1;
    }

    /// Every collection label [`Decoder::take_op_counts`] gives: the typed
    /// collections, then `"other"`.
    pub fn op_count_labels() -> impl Iterator<Item = &'static str> {
        Table::ALL
            .iter()
            .map(|t| t.collection())
            .chain(std::iter::once("other"))
    }

    /// Operations per collection since the last call: `(collection, n)` for
    /// the typed collections, `"other"` for the rest (a closed label set).
    pub fn take_op_counts(&mut self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.op_counts
            .iter_mut()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| {
                let name = Table::ALL.get(i).map_or("other", |t| t.collection());
                (name, std::mem::take(n))
            })
    }

    /// Decode one Jetstream JSON event into `rows`.
    ///
    /// A line in the usual form is read once, its strings borrowed and its
    /// record decoded straight into the data model
    /// ([`jetstream::EventRef::parse`]); any other line (an error, or a rare
    /// form that parser leaves alone) goes through [`jetstream::Event`] and
    /// `from_lex_json`, which give the same rows, or the error.
    pub fn jetstream(&mut self, line: &[u8], rows: &mut Rows) -> Decoded {
        match jetstream::EventRef::parse(line) {
            Some(ev) => self.jetstream_fast(ev, line, rows),
            None => self.jetstream_slow(line, rows),
        }
    }

    /// [`Decoder::jetstream`] the slow way only, for the tests and fuzzing
    /// that compare both ways.
    #[doc(hidden)]
    pub fn jetstream_slow(&mut self, line: &[u8], rows: &mut Rows) -> Decoded {
        let event = match jetstream::Event::from_json(line) {
            Ok(e) => e,
            Err(e) => {
                dead_letter(
                    rows,
                    "jetstream",
                    "",
                    ("", ""),
                    format!("Jetstream event is not valid: {e}"),
                    String::from_utf8_lossy(line).into_owned(),
                );
                return Decoded {
                    kind: "invalid",
                    dead_letters: 1,
                    ..Decoded::default()
                };
            }
        };
        let payload = match &event.payload {
            Payload::Commit { commit: c } => JsPayload::Commit(JsCommit {
                rev: &c.rev,
                operation: c.operation,
                collection: &c.collection,
                rkey: &c.rkey,
                cid: c.cid.as_deref(),
                record: JsRecord::Json(c.record.as_ref()),
            }),
            Payload::Identity { identity: i } => JsPayload::Identity {
                did: &i.did,
                handle: i.handle.as_deref(),
                time: &i.time,
            },
            Payload::Account { account: a } => JsPayload::Account {
                did: &a.did,
                active: a.active,
                status: a.status.as_deref(),
                time: &a.time,
            },
        };
        self.jetstream_event(&event.did, event.time_us, payload, line, rows)
    }

    fn jetstream_fast(
        &mut self,
        ev: jetstream::EventRef<'_>,
        line: &[u8],
        rows: &mut Rows,
    ) -> Decoded {
        let jetstream::EventRef {
            did,
            time_us,
            payload,
        } = ev;
        match payload {
            PayloadRef::Commit(c) => {
                let jetstream::CommitRef {
                    rev,
                    operation,
                    collection,
                    rkey,
                    record,
                    cid,
                } = c;
                let commit = JsCommit {
                    rev: &rev,
                    operation,
                    collection: &collection,
                    rkey: &rkey,
                    cid: cid.as_deref(),
                    record: JsRecord::Decoded(record),
                };
                self.jetstream_event(&did, time_us, JsPayload::Commit(commit), line, rows)
            }
            PayloadRef::Identity(i) => {
                let payload = JsPayload::Identity {
                    did: &i.did,
                    handle: i.handle.as_deref(),
                    time: &i.time,
                };
                self.jetstream_event(&did, time_us, payload, line, rows)
            }
            PayloadRef::Account(a) => {
                let payload = JsPayload::Account {
                    did: &a.did,
                    active: a.active,
                    status: a.status.as_deref(),
                    time: &a.time,
                };
                self.jetstream_event(&did, time_us, payload, line, rows)
            }
        }
    }

    /// The rows of one parsed Jetstream event, however it was parsed.
    fn jetstream_event(
        &mut self,
        did: &str,
        at_us: i64,
        payload: JsPayload<'_>,
        line: &[u8],
        rows: &mut Rows,
    ) -> Decoded {
        let mut out = Decoded {
            kind: "invalid",
            ..Decoded::default()
        };
        out.position = Some(at_us);
        out.event_time_us = Some(at_us);
        let indexed_at = now_secs();
        match payload {
            JsPayload::Commit(commit) => {
                out.kind = "commit";
                if !self.filter.accepts(commit.collection) {
                    out.filtered = 1;
                    return out;
                }
                let (collection, rkey) = (commit.collection, commit.rkey);
                let (tid, action, cid, record) = match jetstream_parts(commit) {
                    Ok(parts) => parts,
                    Err(reason) => {
                        dead_letter(
                            rows,
                            "jetstream",
                            did,
                            (collection, rkey),
                            reason,
                            String::from_utf8_lossy(line).into_owned(),
                        );
                        out.dead_letters = 1;
                        return out;
                    }
                };
                let before = rows.dead_letters.len();
                apply(
                    &Op {
                        did,
                        collection,
                        rkey,
                        action,
                        cid,
                        record: record.as_ref(),
                        version: tid,
                        indexed_at,
                    },
                    rows,
                );
                out.ops = 1;
                out.dead_letters = (rows.dead_letters.len() - before) as u64;
                self.count_op(collection);
            }
            JsPayload::Identity {
                did: identity_did,
                handle,
                time,
            } => {
                out.kind = "identity";
                out.event_time_us = time_us(time).or(out.event_time_us);
                // Without a handle the event only says "resolve again": the
                // caller resolves the DID document and checks its handle.
                match handle {
                    Some(handle) => rows.push_identity(IdentityRow {
                        did: identity_did.to_owned(),
                        handle: handle.to_owned(),
                        version: event_version(Some(at_us)),
                        indexed_at,
                    }),
                    None => out.resolve_identity = Some(identity_did.to_owned()),
                }
            }
            JsPayload::Account {
                did: account_did,
                active,
                status,
                time,
            } => {
                out.kind = "account";
                out.event_time_us = time_us(time).or(out.event_time_us);
                rows.push_account(account_row(
                    account_did,
                    active,
                    status,
                    event_version(Some(at_us)),
                    indexed_at,
                ));
            }
        }
        out
    }

    /// Decode one firehose frame into `rows`.
    pub fn firehose(&mut self, bytes: &[u8], verify: Verify, rows: &mut Rows) -> Decoded {
        let mut out = Decoded {
            kind: "invalid",
            ..Decoded::default()
        };
        let frame = match Frame::decode(bytes) {
            Ok(f) => f,
            Err(e) => {
                dead_letter(rows, "firehose", "", ("", ""), e.to_string(), hex(bytes));
                out.dead_letters = 1;
                return out;
            }
        };
        if let (Frame::Commit(c), Verify::Lookup) = (&frame, &verify) {
            // Nothing recorded: the caller decodes the frame again with the key.
            out.kind = "commit";
            out.needs_key = Some(c.repo.to_string());
            return out;
        }
        let indexed_at = now_secs();
        out.position = frame.seq();
        if let Some(seq) = frame.seq() {
            if let Some(after) = self.skip.take() {
                out.skipped = Some(Skip {
                    after,
                    resumed_at: seq,
                });
                if let Some(did) = frame.did() {
                    out.resync
                        .push((did.to_owned(), ResyncReason::FutureCursor));
                }
            } else if let (Some(last), Some(did)) = (self.last_seq, frame.did()) {
                if seq > last + 1 {
                    out.resync.push((did.to_owned(), ResyncReason::Gap));
                }
            }
        }
        match &frame {
            Frame::Commit(c) => {
                out.kind = "commit";
                out.event_time_us = time_us(&c.time);
                self.commit(c, verify, rows, &mut out, indexed_at);
            }
            Frame::Sync(s) => {
                out.kind = "sync";
                out.event_time_us = time_us(&s.time);
                out.resync.push((s.did.clone(), ResyncReason::Sync));
                // The sync's commit is the repository's new chain head.
                let head = CarSlice::parse(&s.blocks, CarOptions::default())
                    .ok()
                    .and_then(|car| Commit::decode(car.get(car.roots().first()?)?).ok());
                match head {
                    Some(commit) => self.remember(&s.did, &s.rev, commit.data),
                    None => {
                        self.chain.remove(&s.did);
                    }
                }
            }
            Frame::Identity(i) => {
                out.kind = "identity";
                out.event_time_us = time_us(&i.time);
                match &i.handle {
                    Some(handle) => rows.push_identity(IdentityRow {
                        did: i.did.clone(),
                        handle: handle.clone(),
                        version: event_version(out.event_time_us),
                        indexed_at,
                    }),
                    None => out.resolve_identity = Some(i.did.clone()),
                }
            }
            Frame::Account(a) => {
                out.kind = "account";
                out.event_time_us = time_us(&a.time);
                rows.push_account(account_row(
                    &a.did,
                    a.active,
                    a.status.as_deref(),
                    event_version(out.event_time_us),
                    indexed_at,
                ));
                if a.status.as_deref() == Some("deleted") {
                    self.chain.remove(&a.did);
                }
            }
            Frame::Info(i) => {
                out.kind = "info";
                tracing::info!(name = %i.name, message = ?i.message, "Firehose #info.");
            }
            Frame::Error(e) => {
                // The transport logs, counts and acts on it (it reconnects as asked).
                out.kind = "error";
                tracing::debug!(error = %e.error, message = ?e.message, "Firehose error frame.");
                if e.kind() == ErrorKind::FutureCursor && self.skip.is_none() {
                    // The next events come from the live tip, perhaps in a new numbering:
                    // no gap check across the skip, the chain state stays.
                    self.skip = Some(self.last_seq.take());
                }
                out.error = Some(e.clone());
            }
            Frame::Unknown { t, .. } => {
                out.kind = "unknown";
                tracing::debug!(t, "Unknown firehose message type.");
            }
        }
        if let Some(seq) = out.position {
            self.last_seq = Some(self.last_seq.map_or(seq, |l| l.max(seq)));
        }
        out
    }

    fn remember(&mut self, did: &str, rev: &str, data: Cid) {
        // A repository seen before keeps its entry: its revision is rewritten
        // in place, with no new strings.
        if let Some((last, last_data)) = self.chain.get_mut(did) {
            last.clear();
            last.push_str(rev);
            *last_data = data;
            return;
        }
        if self.chain.len() >= CHAIN_CAPACITY {
            self.chain.clear();
        }
        self.chain.insert(did.to_owned(), (rev.to_owned(), data));
    }

    fn commit(
        &mut self,
        c: &CommitEvent,
        verify: Verify,
        rows: &mut Rows,
        out: &mut Decoded,
        indexed_at: u32,
    ) {
        let fail = |rows: &mut Rows, out: &mut Decoded, reason: String| {
            dead_letter(
                rows,
                "firehose",
                &c.repo,
                ("", ""),
                format!("commit {} (seq {}): {reason}", c.commit, c.seq),
                String::new(),
            );
            out.dead_letters += 1;
        };
        if c.too_big {
            out.resync.push((c.repo.to_string(), ResyncReason::TooBig));
        }
        let Some(version) = Tid::value_of(&c.rev) else {
            fail(rows, out, format!("rev {:?} is not a TID", c.rev));
            return;
        };
        let store = match commit_blocks(c) {
            Ok(s) => s,
            Err(e) => {
                fail(rows, out, format!("blocks: {e}"));
                return;
            }
        };
        let commit = match checked_block(&store, &c.commit) {
            Ok(b) => b.map(Commit::decode),
            Err(e) => {
                fail(rows, out, format!("blocks: {e}"));
                return;
            }
        };
        let commit = match commit {
            Some(Ok(commit)) => Some(commit),
            Some(Err(e)) => {
                fail(rows, out, format!("commit block: {e}"));
                return;
            }
            None => None,
        };
        if let Verify::With(key) = &verify {
            let Some(commit) = &commit else {
                fail(rows, out, "commit block missing; cannot verify".into());
                return;
            };
            if commit.did != c.repo {
                fail(rows, out, format!("commit is for {}", commit.did));
                return;
            }
            if commit.verify(key).is_err() {
                out.bad_signature = true;
                fail(rows, out, "signature does not verify".into());
                return;
            }
        }
        // sync 1.1 chaining: `since` and `prevData` must continue the last
        // commit we saw of this repository. A commit at or before that one
        // (TIDs sort as strings) is a replay, e.g. after reconnecting from an
        // earlier cursor (`ConsumerTooSlow`): it neither breaks nor moves the
        // chain.
        let mut replay = false;
        if let Some((rev, data)) = self.chain.get(&*c.repo) {
            replay = *c.rev <= **rev;
            let since_ok = c.since.as_deref() == Some(rev.as_str());
            let data_ok = c.prev_data.is_none_or(|p| p == *data);
            if !replay && (!since_ok || !data_ok) {
                out.resync.push((c.repo.to_string(), ResyncReason::Chain));
            }
        }
        if let (Some(commit), false) = (&commit, replay) {
            self.remember(&c.repo, &c.rev, commit.data);
        }

        for op in &c.ops {
            let Some((collection, rkey)) = op.split_path() else {
                fail(rows, out, format!("bad op path {:?}", op.path));
                continue;
            };
            if !self.filter.accepts(collection) {
                out.filtered += 1;
                continue;
            }
            let block = match (op.action, op.cid) {
                (Action::Delete, _) => Ok(None),
                (_, Some(cid)) => match checked_block(&store, &cid) {
                    Ok(Some(b)) => Ok(Some(b)),
                    Ok(None) => Err(format!("record block {cid} missing from the commit")),
                    Err(e) => Err(format!("record block: {e}")),
                },
                (_, None) => Err(format!("{} without a cid", op.action.as_str())),
            };
            let block = match block {
                Ok(b) => b,
                Err(reason) => {
                    dead_letter(
                        rows,
                        "firehose",
                        &c.repo,
                        (collection, rkey),
                        reason,
                        String::new(),
                    );
                    out.dead_letters += 1;
                    continue;
                }
            };
            let record = match block.map(cbor::decode).transpose() {
                Ok(r) => r,
                Err(e) => {
                    dead_letter(
                        rows,
                        "firehose",
                        &c.repo,
                        (collection, rkey),
                        format!("record is not valid DAG-CBOR: {e}"),
                        hex(block.unwrap_or_default()),
                    );
                    out.dead_letters += 1;
                    continue;
                }
            };
            let before = rows.dead_letters.len();
            apply_with_cbor(
                &Op {
                    did: &c.repo,
                    collection,
                    rkey,
                    action: op.action,
                    cid: op.cid,
                    record: record.as_ref(),
                    version,
                    indexed_at,
                },
                block,
                rows,
            );
            out.ops += 1;
            out.dead_letters += (rows.dead_letters.len() - before) as u64;
            self.count_op(collection);
        }
    }
}

/// A Jetstream commit's rev (as a TID's value), action, CID and record, or
/// why it is unusable.
type JetstreamParts<'a> = (
    u64,
    Action,
    Option<Cid>,
    Option<skyhouse_atproto::Value<'a>>,
);

/// The record of a Jetstream commit: decoded with the event, or its JSON
/// still to be checked and converted.
enum JsRecord<'a> {
    Decoded(Option<skyhouse_atproto::Value<'a>>),
    Json(Option<&'a serde_json::Value>),
}

/// A Jetstream commit, borrowed from either parse.
struct JsCommit<'a> {
    rev: &'a str,
    operation: Operation,
    collection: &'a str,
    rkey: &'a str,
    cid: Option<&'a str>,
    record: JsRecord<'a>,
}

/// A Jetstream event's payload, borrowed from either parse.
enum JsPayload<'a> {
    Commit(JsCommit<'a>),
    Identity {
        did: &'a str,
        handle: Option<&'a str>,
        time: &'a str,
    },
    Account {
        did: &'a str,
        active: bool,
        status: Option<&'a str>,
        time: &'a str,
    },
}

fn jetstream_parts(commit: JsCommit<'_>) -> Result<JetstreamParts<'_>, String> {
    let tid =
        Tid::value_of(commit.rev).ok_or_else(|| format!("rev {:?} is not a TID", commit.rev))?;
    let action = match commit.operation {
        Operation::Create => Action::Create,
        Operation::Update => Action::Update,
        Operation::Delete => Action::Delete,
    };
    if action == Action::Delete {
        return Ok((tid, action, None, None));
    }
    let cid = commit
        .cid
        .map(|c| c.parse::<Cid>().map_err(|e| format!("cid {c:?}: {e}")))
        .transpose()?;
    let record = match commit.record {
        JsRecord::Decoded(record) => record,
        JsRecord::Json(json) => json
            .map(|json| {
                from_lex_json(json).map_err(|e| format!("record is not valid lex-JSON: {e}"))
            })
            .transpose()?,
    };
    Ok((tid, action, cid, record))
}

/// A commit's blocks, indexed without hashing them: [`checked_block`]
/// hashes the few this decoder reads (the commit and the ops' records). The
/// MST nodes, ~80% of the bytes, are never read, and hashing them cost ~12%
/// of a firehose run.
fn commit_blocks<'a>(c: &'a CommitEvent<'_>) -> Result<CarSlice<'a>, CarError> {
    let opts = CarOptions {
        memory_cap: usize::MAX,
        verify_hashes: false,
        ..CarOptions::default()
    };
    CarSlice::parse(&c.blocks, opts)
}

/// The block of `cid`, if present, checked against its hash.
fn checked_block<'a>(store: &CarSlice<'a>, cid: &Cid) -> Result<Option<&'a [u8]>, String> {
    match store.get(cid) {
        Some(b) if cid.matches(b) => Ok(Some(b)),
        Some(_) => Err(format!("block {cid} does not match its hash")),
        None => Ok(None),
    }
}

/// The version of an `identities` or `accounts` row from a live event: the
/// event's time in Unix microseconds (firehose `time`, Jetstream `time_us`),
/// so that the newest information wins whatever its source (a backfill or a
/// re-verification writes the time it resolved at). An event without a
/// readable time gets the time it is decoded.
fn event_version(time_us: Option<i64>) -> u64 {
    time_us
        .and_then(|t| u64::try_from(t).ok())
        .filter(|t| *t > 0)
        .unwrap_or_else(now_us)
}

fn now_us() -> u64 {
    #[cfg(test)]
    if let Some(us) = TEST_CLOCK_US.with(std::cell::Cell::get) {
        return us;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn account_row(did: &str, active: bool, status: Option<&str>, version: u64, at: u32) -> AccountRow {
    AccountRow {
        did: did.to_owned(),
        active: u8::from(active),
        status: if active {
            String::new()
        } else {
            status.unwrap_or("inactive").to_owned()
        },
        version,
        indexed_at: at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(rev: &str, cid: &str, record: &str) -> Vec<u8> {
        format!(
            r#"{{"did":"did:plc:a","time_us":5,"kind":"commit","commit":{{"rev":"{rev}","operation":"create","collection":"app.bsky.feed.like","rkey":"3mptbyplj5d2a","record":{record},"cid":"{cid}"}}}}"#
        )
        .into_bytes()
    }

    const CID: &str = "bafyreiguce4jh7kcbmof3pmcvasifqtw24b6isakj5ve5ga2b4z4alpc4i";
    const LIKE: &str = r#"{"$type":"app.bsky.feed.like","createdAt":"2026-07-04T14:38:08.999Z","subject":{"cid":"bafyreiftot7eltsc3f6g4qktykmbv6jcmdmhcx5osscan6jpdxkpqcmcza","uri":"at://did:plc:r2zybk6op3ymzpz6jhqpkoy5/app.bsky.feed.post/3mpsjbtci2c2o"}}"#;

    #[test]
    fn a_good_jetstream_commit_becomes_rows() {
        let mut rows = Rows::default();
        let d = Decoder::default().jetstream(&line("3mptbypluud2a", CID, LIKE), &mut rows);
        assert_eq!(
            (d.kind, d.ops, d.dead_letters, d.position),
            ("commit", 1, 0, Some(5))
        );
        assert_eq!((rows.records.len(), rows.likes.len()), (1, 1));
    }

    #[test]
    fn bad_jetstream_input_is_dead_lettered_with_its_reason() {
        for (input, reason) in [
            (b"{not json".to_vec(), "Jetstream event is not valid"),
            (
                line("not-a-tid", CID, LIKE),
                "rev \"not-a-tid\" is not a TID",
            ),
            (line("3mptbypluud2a", "bafynope", LIKE), "cid \"bafynope\""),
            (
                line(
                    "3mptbypluud2a",
                    CID,
                    r#"{"$type":"app.bsky.feed.like","x":{"$bytes":"!"}}"#,
                ),
                "record is not valid lex-JSON",
            ),
        ] {
            let mut rows = Rows::default();
            let d = Decoder::default().jetstream(&input, &mut rows);
            assert_eq!((d.ops, d.dead_letters), (0, 1), "{reason}");
            assert!(rows.records.is_empty());
            assert!(
                rows.dead_letters[0].reason.starts_with(reason),
                "{} vs {reason}",
                rows.dead_letters[0].reason
            );
        }
    }

    /// Both ways of reading a Jetstream line (one pass, and the model with
    /// `from_lex_json`) give the same report and the same encoded rows;
    /// returns the report.
    fn same_both_ways(line: &[u8]) -> Decoded {
        TEST_CLOCK_US.with(|c| c.set(Some(1_783_175_888_123_456)));
        let text = String::from_utf8_lossy(line);
        let (mut fast_rows, mut slow_rows) = (Rows::default(), Rows::default());
        let fast = Decoder::default().jetstream(line, &mut fast_rows);
        let slow = Decoder::default().jetstream_slow(line, &mut slow_rows);
        assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{text}");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        fast_rows.encode_into(&mut a);
        slow_rows.encode_into(&mut b);
        assert_eq!(a, b, "{text}");
        let mut kept = Rows::default();
        kept.keep_encoded();
        let kept_report = Decoder::default().jetstream(line, &mut kept);
        assert_eq!(format!("{fast:?}"), format!("{kept_report:?}"), "{text}");
        assert_eq!(encoded(&fast_rows), encoded(&kept), "{text}");
        assert_eq!(
            fast_rows
                .dead_letters
                .iter()
                .map(|d| &d.reason)
                .collect::<Vec<_>>(),
            slow_rows
                .dead_letters
                .iter()
                .map(|d| &d.reason)
                .collect::<Vec<_>>(),
            "{text}"
        );
        fast
    }

    /// Every row of `rows`, encoded.
    fn encoded(rows: &Rows) -> crate::Encoded {
        let mut e = crate::Encoded::default();
        e.add(rows);
        e
    }

    #[test]
    fn real_firehose_frames_give_the_same_rows_kept_encoded_as_structs() {
        use std::io::Read;
        TEST_CLOCK_US.with(|c| c.set(Some(1_783_175_888_123_456)));
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../atproto/testdata/jetstream/frames.bin.zst");
        let mut raw = Vec::new();
        zstd::stream::read::Decoder::new(&std::fs::read(path).expect("corpus")[..])
            .expect("zstd")
            .read_to_end(&mut raw)
            .expect("unzstd");
        let (mut structs, mut kept) = (Decoder::default(), Decoder::default());
        let (mut frames, mut ops, mut pos) = (0, 0, 0);
        while pos < raw.len() {
            let len = u32::from_le_bytes(raw[pos..pos + 4].try_into().expect("len")) as usize;
            let frame = &raw[pos + 4..pos + 4 + len];
            pos += 4 + len;
            let mut a = Rows::default();
            let mut b = Rows::default();
            b.keep_encoded();
            let da = structs.firehose(frame, Verify::Off, &mut a);
            let db = kept.firehose(frame, Verify::Off, &mut b);
            assert_eq!(format!("{da:?}"), format!("{db:?}"), "frame {frames}");
            assert_eq!(encoded(&a), encoded(&b), "frame {frames}");
            assert!(b.records.is_empty() && b.typed_len() == a.typed_len());
            (frames, ops) = (frames + 1, ops + da.ops);
        }
        assert!(frames >= 150 && ops >= 140, "{frames} frames, {ops} ops");
    }

    #[test]
    fn production_jetstream_lines_give_the_same_rows_both_ways() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../atproto/testdata");
        let (mut n, mut ops) = (0, 0);
        for rel in ["jetstream/expected_v1.jsonl", "jetstream/golden_v1.jsonl"] {
            let text = std::fs::read(dir.join(rel)).expect("fixture");
            for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                assert!(
                    jetstream::EventRef::parse(line).is_some(),
                    "{rel}: not read in one pass"
                );
                ops += same_both_ways(line).ops;
                n += 1;
            }
        }
        assert!(n >= 162 && ops >= 150, "{n} lines, {ops} ops");
    }

    #[test]
    fn bad_and_odd_jetstream_lines_give_the_same_rows_both_ways() {
        let with = |op: &str, rev: &str, cid: &str, record: &str| {
            format!(
                r#"{{"did":"did:plc:a","time_us":5,"kind":"commit","commit":{{"rev":"{rev}","operation":"{op}","collection":"app.bsky.feed.like","rkey":"3mptbyplj5d2a","record":{record},"cid":"{cid}"}}}}"#
            )
            .into_bytes()
        };
        let rev = "3mptbypluud2a";
        let deep = format!(r#"{{"a":{}1{}}}"#, "[".repeat(64), "]".repeat(64));
        let lines: Vec<Vec<u8>> = vec![
            b"{not json".to_vec(),
            Vec::new(),
            b"[]".to_vec(),
            br#"{"did":"d","time_us":1,"kind":"bogus"}"#.to_vec(),
            br#"{"did":"d","time_us":1.5,"kind":"account","account":{"active":true,"did":"d","seq":9,"time":"t"}}"#.to_vec(),
            br#"{"did":"d","time_us":0,"kind":"account","account":{"active":false,"did":"d","seq":9,"time":"2024-01-01T00:00:00Z"}}"#.to_vec(),
            br#"{"did":"d","time_us":-3,"kind":"identity","identity":{"did":"d","seq":9,"time":"t"}}"#.to_vec(),
            br#"{"did":"d","time_us":7,"kind":"identity","identity":{"did":"d","seq":9,"time":"t","handle":"a.b"}}"#.to_vec(),
            br#"{"did":"d","time_us":1,"kind":2,"account":{"active":true,"did":"d","seq":9,"time":"t"}}"#.to_vec(),
            with("create", rev, CID, LIKE),
            with("update", rev, CID, LIKE),
            with("delete", rev, CID, LIKE),
            with("delete", rev, "bafynope", r#"{"a":1.5}"#),
            with("create", "not-a-tid", CID, LIKE),
            with("create", rev, "bafynope", LIKE),
            with("create", rev, CID, "null"),
            with("create", rev, CID, "5"),
            with("create", rev, CID, r#"{"$type":"app.bsky.feed.like","x":{"$bytes":"!"}}"#),
            with("create", rev, CID, r#"{"$type":"app.bsky.feed.like","x":{"$link":"bafynope"}}"#),
            with("create", rev, CID, r#"{"$type":"app.bsky.feed.like","x":{"$link":5}}"#),
            with("create", rev, CID, r#"{"$type":"app.bsky.feed.like","x":1.5}"#),
            with("create", rev, CID, r#"{"$type":"app.bsky.feed.like","x":9223372036854775808}"#),
            with("create", rev, CID, r#"{"$type":"app.bsky.feed.like","x":1e300}"#),
            with("create", rev, CID, r#"{"$type":"app.bsky.feed.like","x":2.0,"x":3}"#),
            with("create", rev, CID, r#"{"$type":""}"#),
            with("create", rev, CID, &deep),
            with("upsert", rev, CID, LIKE),
        ];
        let mut fast = 0;
        for line in &lines {
            same_both_ways(line);
            fast += usize::from(jetstream::EventRef::parse(line).is_some());
        }
        // The errors found while parsing go the slow way; the good lines and
        // those whose error is found after the parse (rev, CID) do not.
        assert_eq!(fast, 9);
    }

    #[test]
    fn identity_and_account_rows_carry_the_event_time() {
        let mut rows = Rows::default();
        let mut dec = Decoder::default();
        let with_handle = br#"{"did":"did:plc:a","time_us":1725911162329308,"kind":"identity","identity":{"did":"did:plc:a","handle":"a.example.com","seq":1409752997,"time":"2024-09-05T06:11:04.870Z"}}"#;
        let d = dec.jetstream(with_handle, &mut rows);
        assert_eq!((d.kind, d.resolve_identity.as_deref()), ("identity", None));
        assert_eq!(rows.identities.len(), 1);
        assert_eq!(rows.identities[0].handle, "a.example.com");
        assert_eq!(
            rows.identities[0].version, 1_725_911_162_329_308,
            "time_us, not seq"
        );

        let without = br#"{"did":"did:plc:b","time_us":1725911162329309,"kind":"identity","identity":{"did":"did:plc:b","seq":1409752998,"time":"2024-09-05T06:11:04.870Z"}}"#;
        let d = dec.jetstream(without, &mut rows);
        assert_eq!(d.resolve_identity.as_deref(), Some("did:plc:b"));
        assert_eq!(rows.identities.len(), 1, "no row until resolved");

        let account = br#"{"did":"did:plc:c","time_us":1725911162329310,"kind":"account","account":{"active":false,"did":"did:plc:c","seq":1409753013,"status":"deactivated","time":"2024-09-05T06:11:04.870Z"}}"#;
        dec.jetstream(account, &mut rows);
        assert_eq!(rows.accounts.len(), 1);
        assert_eq!(
            (
                rows.accounts[0].active,
                rows.accounts[0].status.as_str(),
                rows.accounts[0].version
            ),
            (0, "deactivated", 1_725_911_162_329_310)
        );
    }

    #[test]
    fn garbage_frames_are_dead_lettered_not_fatal() {
        let mut rows = Rows::default();
        let d = Decoder::default().firehose(&[0xa2, 0x61, 0x74], Verify::Off, &mut rows);
        assert_eq!((d.kind, d.dead_letters, d.position), ("invalid", 1, None));
        assert_eq!(rows.dead_letters[0].source, "firehose");
    }

    use skyhouse_atproto::frame::encode_error_frame;
    use skyhouse_testkit::firehose::LikeCommit;

    /// A rev in July 2026 (microseconds << 10), so the likes' TIDs look real.
    const REV: u64 = 1_783_000_000_000_000 << 10;

    fn decode(d: &mut Decoder, frame: &[u8]) -> Decoded {
        d.firehose(frame, Verify::Off, &mut Rows::default())
    }

    fn resyncs(d: &Decoded) -> Vec<(&str, ResyncReason)> {
        d.resync.iter().map(|(did, r)| (did.as_str(), *r)).collect()
    }

    #[test]
    fn a_future_cursor_skip_is_reported_at_the_next_event_and_the_chains_survive_it() {
        let mut dec = Decoder::default();
        let a1 = LikeCommit::new(100, "did:plc:a", REV);
        let b1 = LikeCommit::new(101, "did:plc:b", REV + 10);
        for c in [&a1, &b1] {
            let d = decode(&mut dec, &c.frame());
            assert_eq!((d.ops, d.dead_letters, d.resync.len()), (1, 0, 0));
        }
        let e = decode(
            &mut dec,
            &encode_error_frame("FutureCursor", Some("cursor in the future")),
        );
        assert_eq!((e.kind, e.position), ("error", None));
        assert_eq!(
            e.error.as_ref().map(|e| e.kind()),
            Some(ErrorKind::FutureCursor)
        );
        assert!(e.skipped.is_none() && e.resync.is_empty());
        // The live tip, in a lower numbering: the first event reports the skip and
        // has its DID queued; no gap check across it.
        let c1 = LikeCommit::new(5, "did:plc:c", REV + 20);
        let d = decode(&mut dec, &c1.frame());
        assert_eq!(
            d.skipped,
            Some(Skip {
                after: Some(101),
                resumed_at: 5
            })
        );
        assert_eq!(resyncs(&d), [("did:plc:c", ResyncReason::FutureCursor)]);
        assert_eq!(d.ops, 1);
        // a's commit in the skipped range was never seen: its next one does not chain.
        let a3 = a1.next(0).next(6);
        assert_eq!(
            resyncs(&decode(&mut dec, &a3.frame())),
            [("did:plc:a", ResyncReason::Chain)]
        );
        // b lost nothing: its next commit chains.
        let d = decode(&mut dec, &b1.next(7).frame());
        assert!(d.resync.is_empty() && d.skipped.is_none(), "{:?}", d.resync);
        // Gap checks go on in the new numbering.
        let d = decode(&mut dec, &LikeCommit::new(9, "did:plc:d", REV).frame());
        assert_eq!(resyncs(&d), [("did:plc:d", ResyncReason::Gap)]);
    }

    #[test]
    fn other_error_frames_change_nothing() {
        let mut dec = Decoder::default();
        let a1 = LikeCommit::new(1, "did:plc:a", REV);
        decode(&mut dec, &a1.frame());
        for name in ["ConsumerTooSlow", "SomethingNew"] {
            let e = decode(&mut dec, &encode_error_frame(name, None));
            assert_eq!(e.error.as_ref().map(|e| e.error.as_str()), Some(name));
        }
        // No skip reported, the gap check still sees seq 1.
        let d = decode(&mut dec, &a1.next(3).frame());
        assert!(d.skipped.is_none());
        assert_eq!(resyncs(&d), [("did:plc:a", ResyncReason::Gap)]);
    }

    #[test]
    fn replayed_commits_neither_break_nor_move_the_chain() {
        let mut dec = Decoder::default();
        let a1 = LikeCommit::new(1, "did:plc:a", REV);
        let a2 = a1.next(2);
        let a3 = a2.next(3);
        for c in [&a1, &a2, &a3, &a2, &a3] {
            let d = decode(&mut dec, &c.frame());
            assert!(d.resync.is_empty(), "seq {}: {:?}", c.seq, d.resync);
            assert_eq!(d.ops, 1, "a replay is still written (idempotent)");
        }
        assert!(decode(&mut dec, &a3.next(4).frame()).resync.is_empty());
        // A commit that really does not follow is still caught.
        let a6 = a3.next(0).next(0).next(5);
        assert_eq!(
            resyncs(&decode(&mut dec, &a6.frame())),
            [("did:plc:a", ResyncReason::Chain)]
        );
    }

    #[test]
    fn a_sync_frame_sets_the_chain_to_its_commit() {
        use skyhouse_atproto::cbor::{Map, Value};
        let mut dec = Decoder::default();
        let a1 = LikeCommit::new(1, "did:plc:a", REV);
        decode(&mut dec, &a1.frame());
        // The sync's commit: two revs on, its CAR the one a commit frame carries.
        let head = a1.next(0).next(0);
        let head_frame = head.frame();
        let Ok(Frame::Commit(c)) = Frame::decode(&head_frame) else {
            panic!("a commit frame");
        };
        let mut body = Map::new();
        body.insert("seq", Value::Integer(2));
        body.insert("did", Value::String("did:plc:a".into()));
        body.insert("blocks", Value::Bytes(c.blocks));
        body.insert("rev", Value::String(head.rev_tid().into()));
        body.insert("time", Value::String("2026-07-04T14:38:09.000Z".into()));
        let sync = skyhouse_atproto::frame::encode_frame("#sync", &Value::Map(body));
        let d = decode(&mut dec, &sync);
        assert_eq!(resyncs(&d), [("did:plc:a", ResyncReason::Sync)]);
        // A commit after the sync's follows; one after the old head does not.
        assert!(decode(&mut dec, &head.next(3).frame()).resync.is_empty());
        let mut dec2 = Decoder::default();
        decode(&mut dec2, &a1.frame());
        decode(&mut dec2, &sync);
        let after_old_head = LikeCommit {
            rev: head.rev + 1,
            ..a1.next(3)
        };
        assert_eq!(
            resyncs(&decode(&mut dec2, &after_old_head.frame())),
            [("did:plc:a", ResyncReason::Chain)]
        );
    }
}
