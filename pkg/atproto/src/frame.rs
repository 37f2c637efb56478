//! Firehose (`com.atproto.sync.subscribeRepos`) frames.
//!
//! A WebSocket binary message holds two DAG-CBOR values back to back: a
//! header `{op, t}` and a body. `op = 1` is a message whose type `t` names the
//! body (`#commit`, `#sync`, `#identity`, `#account`, `#info`); `op = -1` is an
//! error frame `{error, message}`. An unknown `t` decodes to
//! [`Frame::Unknown`] so a consumer can count it and go on.

use std::borrow::Cow;

use crate::car::{BlockStore, CarError, CarOptions, CarReader};
use crate::cbor::{self, Map, Value};
use crate::cid::Cid;

/// One decoded frame. The CAR slices of `#commit` and `#sync` frames borrow
/// the message's bytes (a frame's largest part, not copied);
/// [`Frame::into_owned`] detaches them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// `#commit`: a repository changed.
    Commit(CommitEvent<'a>),
    /// `#sync`: a repository's state was reset to a commit (consumers resync).
    Sync(SyncEvent<'a>),
    /// `#identity`: a DID's handle or DID document may have changed.
    Identity(IdentityEvent),
    /// `#account`: an account's hosting status changed.
    Account(AccountEvent),
    /// `#info`: an informational message (e.g. `OutdatedCursor`).
    Info(InfoEvent),
    /// An error frame (`op = -1`); the server closes the stream after it.
    Error(ErrorFrame),
    /// A message type this version does not know (legacy `#handle`, `#tombstone`, …).
    Unknown {
        /// The `t` of the header.
        t: String,
        /// The body's `seq`, if it has one.
        seq: Option<i64>,
    },
}

impl Frame<'_> {
    /// The frame with its CAR slice copied out of the message's bytes.
    pub fn into_owned(self) -> Frame<'static> {
        match self {
            Frame::Commit(c) => Frame::Commit(c.into_owned()),
            Frame::Sync(s) => Frame::Sync(SyncEvent {
                blocks: Cow::Owned(s.blocks.into_owned()),
                ..s
            }),
            Frame::Identity(i) => Frame::Identity(i),
            Frame::Account(a) => Frame::Account(a),
            Frame::Info(i) => Frame::Info(i),
            Frame::Error(e) => Frame::Error(e),
            Frame::Unknown { t, seq } => Frame::Unknown { t, seq },
        }
    }

    /// The sequence number, for frames that carry one.
    pub fn seq(&self) -> Option<i64> {
        match self {
            Frame::Commit(c) => Some(c.seq),
            Frame::Sync(s) => Some(s.seq),
            Frame::Identity(i) => Some(i.seq),
            Frame::Account(a) => Some(a.seq),
            Frame::Unknown { seq, .. } => *seq,
            Frame::Info(_) | Frame::Error(_) => None,
        }
    }

    /// The DID the frame is about, if any.
    pub fn did(&self) -> Option<&str> {
        match self {
            Frame::Commit(c) => Some(&c.repo),
            Frame::Sync(s) => Some(&s.did),
            Frame::Identity(i) => Some(&i.did),
            Frame::Account(a) => Some(&a.did),
            _ => None,
        }
    }
}

/// What a repository operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// A new record.
    Create,
    /// A record replaced.
    Update,
    /// A record removed.
    Delete,
}

impl Action {
    /// The lexicon string (`create`, `update`, `delete`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

/// One operation of a `#commit`; its path borrows the message's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoOp<'a> {
    /// create / update / delete.
    pub action: Action,
    /// `collection/rkey`.
    pub path: Cow<'a, str>,
    /// The new record's CID (none for deletes).
    pub cid: Option<Cid>,
    /// The previous record's CID (sync 1.1; none for creates).
    pub prev: Option<Cid>,
}

impl RepoOp<'_> {
    /// `(collection, rkey)` of the path, if it is well formed.
    pub fn split_path(&self) -> Option<(&str, &str)> {
        crate::repo::split_path(self.path.as_bytes())
    }
}

/// A `#commit` body. Its strings and CAR slice borrow the message's bytes
/// (no allocation for them); [`CommitEvent::into_owned`] detaches them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitEvent<'a> {
    /// Stream sequence number.
    pub seq: i64,
    /// The repository DID.
    pub repo: Cow<'a, str>,
    /// CID of the commit object (its block is in `blocks`).
    pub commit: Cid,
    /// The commit's revision TID.
    pub rev: Cow<'a, str>,
    /// The revision this commit follows, if any.
    pub since: Option<Cow<'a, str>>,
    /// A CAR slice: the commit, new records, and the MST nodes that prove them.
    pub blocks: Cow<'a, [u8]>,
    /// The operations.
    pub ops: Vec<RepoOp<'a>>,
    /// Blobs referenced by new records.
    pub blobs: Vec<Cid>,
    /// The MST root before this commit (sync 1.1), for chaining.
    pub prev_data: Option<Cid>,
    /// When the relay or PDS emitted it (RFC 3339).
    pub time: Cow<'a, str>,
    /// Deprecated: the commit was too big to include its blocks.
    pub too_big: bool,
    /// Deprecated: the repository was rebased.
    pub rebase: bool,
}

/// A borrowed string as an owned one.
fn owned(s: Cow<'_, str>) -> Cow<'static, str> {
    Cow::Owned(s.into_owned())
}

impl CommitEvent<'_> {
    /// The event with its strings and CAR slice copied out of the message.
    pub fn into_owned(self) -> CommitEvent<'static> {
        CommitEvent {
            seq: self.seq,
            repo: owned(self.repo),
            commit: self.commit,
            rev: owned(self.rev),
            since: self.since.map(owned),
            blocks: Cow::Owned(self.blocks.into_owned()),
            ops: self
                .ops
                .into_iter()
                .map(|op| RepoOp {
                    path: owned(op.path),
                    ..op
                })
                .collect(),
            blobs: self.blobs,
            prev_data: self.prev_data,
            time: owned(self.time),
            too_big: self.too_big,
            rebase: self.rebase,
        }
    }

    /// Parse the `blocks` CAR slice into a block store (hashes checked).
    pub fn block_store(&self) -> Result<BlockStore, CarError> {
        let opts = CarOptions {
            memory_cap: usize::MAX,
            ..CarOptions::default()
        };
        let mut reader = CarReader::new(&*self.blocks, opts)?;
        BlockStore::from_car(&mut reader)
    }
}

/// A `#sync` body: the repository's current commit, to be trusted as a reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncEvent<'a> {
    /// Stream sequence number.
    pub seq: i64,
    /// The repository DID.
    pub did: String,
    /// A CAR with the commit block.
    pub blocks: Cow<'a, [u8]>,
    /// The commit's revision.
    pub rev: String,
    /// Emission time.
    pub time: String,
}

/// An `#identity` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityEvent {
    /// Stream sequence number.
    pub seq: i64,
    /// The DID.
    pub did: String,
    /// Emission time.
    pub time: String,
    /// The current handle, if the emitter included it.
    pub handle: Option<String>,
}

/// An `#account` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountEvent {
    /// Stream sequence number.
    pub seq: i64,
    /// The DID.
    pub did: String,
    /// Emission time.
    pub time: String,
    /// Whether the account is active.
    pub active: bool,
    /// Why not active: `takendown`, `suspended`, `deleted`, `deactivated`, … (open set).
    pub status: Option<String>,
}

/// An `#info` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoEvent {
    /// The info name (`OutdatedCursor`).
    pub name: String,
    /// Optional detail.
    pub message: Option<String>,
}

/// An error frame body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    /// The error name (`FutureCursor`, `ConsumerTooSlow`).
    pub error: String,
    /// Optional detail.
    pub message: Option<String>,
}

impl ErrorFrame {
    /// What the error asks of the subscriber (a closed set, for metric labels).
    pub fn kind(&self) -> ErrorKind {
        match self.error.as_str() {
            "FutureCursor" => ErrorKind::FutureCursor,
            "ConsumerTooSlow" => ErrorKind::ConsumerTooSlow,
            _ => ErrorKind::Other,
        }
    }
}

/// The error frames `com.atproto.sync.subscribeRepos` defines, each an
/// instruction to the subscriber; the server closes the stream after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// `FutureCursor`: the cursor asked for is ahead of the server's sequence
    /// (its sequence was reset, or the cursor is another server's).
    /// Reconnecting with it fails the same way: start from the live tip.
    FutureCursor,
    /// `ConsumerTooSlow`: the subscriber fell too far behind and was cut off;
    /// events the server held for it are gone from the connection.
    ConsumerTooSlow,
    /// Any other error name.
    Other,
}

impl ErrorKind {
    /// The label used in metrics and logs: `future_cursor`,
    /// `consumer_too_slow`, `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::FutureCursor => "future_cursor",
            ErrorKind::ConsumerTooSlow => "consumer_too_slow",
            ErrorKind::Other => "other",
        }
    }
}

/// Whether `bytes` look like an error frame: the header of an error frame is
/// the one-entry map `{op: -1}`, a message's has two entries (`op`, `t`).
/// A cheap test on the first byte, for transports that must notice error
/// frames without decoding every message; confirm with [`Frame::decode`].
#[inline]
pub fn may_be_error_frame(bytes: &[u8]) -> bool {
    bytes.first() == Some(&0xa1)
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The header or body is not valid DAG-CBOR.
    #[error("frame {part}: {source}")]
    Cbor {
        /// `header` or `body`.
        part: &'static str,
        /// The decoding error.
        source: cbor::CborError,
    },
    /// The header is not `{op, t}`.
    #[error("frame header: {0}")]
    Header(String),
    /// A body field is missing or has the wrong type.
    #[error("{t} frame (seq {seq:?}): field {field}: {reason}")]
    Field {
        /// The message type.
        t: String,
        /// The body's seq, if readable.
        seq: Option<i64>,
        /// The field.
        field: &'static str,
        /// What was wrong.
        reason: &'static str,
    },
}

struct Body<'m, 'a> {
    t: &'m str,
    map: &'m Map<'a>,
    seq: Option<i64>,
}

impl<'a> Body<'_, 'a> {
    fn err(&self, field: &'static str, reason: &'static str) -> FrameError {
        FrameError::Field {
            t: self.t.to_string(),
            seq: self.seq,
            field,
            reason,
        }
    }
    /// [`Body::text`] as an owned string.
    fn str(&self, field: &'static str) -> Result<String, FrameError> {
        self.text(field).map(Cow::into_owned)
    }
    /// [`Body::opt_text`] as an owned string.
    fn opt_str(&self, field: &'static str) -> Result<Option<String>, FrameError> {
        Ok(self.opt_text(field)?.map(Cow::into_owned))
    }
    /// A string field, borrowed from the message.
    fn text(&self, field: &'static str) -> Result<Cow<'a, str>, FrameError> {
        match self.map.get(field) {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => Err(self.err(field, "missing or not a string")),
        }
    }
    /// A string field that may be null or absent, borrowed from the message.
    fn opt_text(&self, field: &'static str) -> Result<Option<Cow<'a, str>>, FrameError> {
        opt_text(self.map.get(field)).ok_or_else(|| self.err(field, "not a string"))
    }
    fn int(&self, field: &'static str) -> Result<i64, FrameError> {
        self.map
            .get(field)
            .and_then(Value::as_i64)
            .ok_or_else(|| self.err(field, "missing or not an integer"))
    }
    fn bool_or_false(&self, field: &'static str) -> Result<bool, FrameError> {
        bool_or_false(self.map.get(field)).ok_or_else(|| self.err(field, "not a boolean"))
    }
    fn bytes(&self, field: &'static str) -> Result<Cow<'a, [u8]>, FrameError> {
        match self.map.get(field) {
            Some(Value::Bytes(b)) => Ok(b.clone()),
            _ => Err(self.err(field, "missing or not bytes")),
        }
    }
    fn link(&self, field: &'static str) -> Result<Cid, FrameError> {
        self.map
            .get(field)
            .and_then(Value::as_link)
            .copied()
            .ok_or_else(|| self.err(field, "missing or not a link"))
    }
    fn opt_link(&self, field: &'static str) -> Result<Option<Cid>, FrameError> {
        opt_link_in(self.map, field).map_err(|reason| self.err(field, reason))
    }
}

/// A field that is a string (borrowed from the message), null or absent;
/// `None` for anything else.
fn opt_text<'a>(v: Option<&Value<'a>>) -> Option<Option<Cow<'a, str>>> {
    match v {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) => Some(Some(s.clone())),
        Some(_) => None,
    }
}

/// A field that is a boolean (null or absent: false); `None` for anything else.
fn bool_or_false(v: Option<&Value<'_>>) -> Option<bool> {
    match v {
        None | Some(Value::Null) => Some(false),
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => None,
    }
}

/// The links of a `blobs` field (null or absent: none; entries that are
/// not links are left out); `None` when it is not an array.
fn blob_links(v: Option<&Value<'_>>) -> Option<Vec<Cid>> {
    match v {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(a)) => Some(a.iter().filter_map(Value::as_link).copied().collect()),
        Some(_) => None,
    }
}

fn opt_link_in(m: &Map<'_>, field: &str) -> Result<Option<Cid>, &'static str> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Link(c)) => Ok(Some(*c)),
        Some(_) => Err("not a link"),
    }
}

/// The header of every `#commit` frame, `{"t": "#commit", "op": 1}` in
/// canonical DAG-CBOR: nearly every frame starts with these bytes.
const COMMIT_HEADER: &[u8] = b"\xa2\x61t\x67#commit\x62op\x01";

/// A `#commit` body read straight from its bytes, with no value tree:
/// `None` when anything is not in the plain form (a field missing, of
/// another type, out of canonical order, bytes left over, an unknown key),
/// and the caller decodes the frame the general way, which gives the value
/// or the error.
fn commit_fast(body: &[u8]) -> Option<CommitEvent<'_>> {
    let mut d = cbor::Decoder::new(body);
    let entries = d.map_len()?;
    let (mut seq, mut repo, mut commit, mut rev, mut since) = (None, None, None, None, None);
    let (mut blocks, mut ops, mut blobs, mut prev_data, mut time) = (None, None, None, None, None);
    let (mut too_big, mut rebase) = (false, false);
    let mut last = None;
    for _ in 0..entries {
        match d.key_after(&mut last)? {
            "seq" => seq = Some(d.value().ok()?.as_i64()?),
            "repo" => repo = Some(Cow::Borrowed(text(&mut d)?)),
            "commit" => commit = Some(d.link_or_null().ok()??),
            "rev" => rev = Some(Cow::Borrowed(text(&mut d)?)),
            "since" => since = opt_text(Some(&d.value().ok()?))?,
            "blocks" => {
                let (major, len, _) = d.head().ok()?;
                if major != 2 {
                    return None;
                }
                blocks = Some(Cow::Borrowed(d.take(len).ok()?));
            }
            "ops" => ops = Some(ops_fast(&mut d)?),
            "blobs" => blobs = Some(blob_links(Some(&d.value().ok()?))?),
            "prevData" => prev_data = d.link_or_null().ok()?,
            "time" => time = Some(Cow::Borrowed(text(&mut d)?)),
            "tooBig" => too_big = bool_or_false(Some(&d.value().ok()?))?,
            "rebase" => rebase = bool_or_false(Some(&d.value().ok()?))?,
            _ => return None,
        }
    }
    if !d.at_end() {
        return None;
    }
    Some(CommitEvent {
        seq: seq?,
        repo: repo?,
        commit: commit?,
        rev: rev?,
        since,
        blocks: blocks?,
        ops: ops?,
        blobs: blobs.unwrap_or_default(),
        prev_data,
        time: time?,
        too_big,
        rebase,
    })
}

/// The ops array of a `#commit`, each `{action, path, cid, prev}` read in place.
fn ops_fast<'a>(d: &mut cbor::Decoder<'a>) -> Option<Vec<RepoOp<'a>>> {
    let (major, n, _) = d.head().ok()?;
    if major != 4 || n > d.remaining() as u64 {
        return None;
    }
    let mut ops = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let entries = d.map_len()?;
        let (mut action, mut path, mut cid, mut prev) = (None, None, None, None);
        let mut last = None;
        for _ in 0..entries {
            match d.key_after(&mut last)? {
                "action" => {
                    action = Some(match text(d)? {
                        "create" => Action::Create,
                        "update" => Action::Update,
                        "delete" => Action::Delete,
                        _ => return None,
                    })
                }
                "path" => path = Some(Cow::Borrowed(text(d)?)),
                "cid" => cid = d.link_or_null().ok()?,
                "prev" => prev = d.link_or_null().ok()?,
                _ => return None,
            }
        }
        ops.push(RepoOp {
            action: action?,
            path: path?,
            cid,
            prev,
        });
    }
    Some(ops)
}

fn text<'a>(d: &mut cbor::Decoder<'a>) -> Option<&'a str> {
    let (major, len, start) = d.head().ok()?;
    if major != 3 {
        return None;
    }
    d.text(len, start).ok()
}

impl Frame<'_> {
    /// Decode one WebSocket binary message.
    pub fn decode(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
        if let Some(body) = bytes.strip_prefix(COMMIT_HEADER) {
            if let Some(c) = commit_fast(body) {
                return Ok(Frame::Commit(c));
            }
        }
        Frame::decode_general(bytes)
    }

    /// [`Frame::decode`] through the DAG-CBOR value tree for every frame,
    /// without the in-place reading of plain `#commit` frames: the same
    /// result, slower (the tests compare the two).
    pub fn decode_general(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
        let (header, used) = cbor::decode_prefix(bytes).map_err(|source| FrameError::Cbor {
            part: "header",
            source,
        })?;
        let body = cbor::decode(&bytes[used..]).map_err(|mut source| {
            source.offset += used;
            FrameError::Cbor {
                part: "body",
                source,
            }
        })?;
        let op = header
            .get("op")
            .and_then(Value::as_i64)
            .ok_or_else(|| FrameError::Header("missing op".into()))?;
        let map = body
            .as_map()
            .ok_or_else(|| FrameError::Header("body is not a map".into()))?;
        match op {
            -1 => {
                let b = Body {
                    t: "error",
                    map,
                    seq: None,
                };
                Ok(Frame::Error(ErrorFrame {
                    error: b.str("error")?,
                    message: b.opt_str("message")?,
                }))
            }
            1 => {
                let t = header
                    .get("t")
                    .and_then(Value::as_str)
                    .ok_or_else(|| FrameError::Header("missing t".into()))?;
                let seq = map.get("seq").and_then(Value::as_i64);
                let b = Body { t, map, seq };
                decode_message(&b)
            }
            other => Err(FrameError::Header(format!("unknown op {other}"))),
        }
    }
}

fn decode_message<'a>(b: &Body<'_, 'a>) -> Result<Frame<'a>, FrameError> {
    Ok(match b.t {
        "#commit" => {
            let ops_raw = b
                .map
                .get("ops")
                .and_then(Value::as_array)
                .ok_or_else(|| b.err("ops", "missing or not an array"))?;
            let mut ops = Vec::with_capacity(ops_raw.len());
            for op in ops_raw {
                let m = op
                    .as_map()
                    .ok_or_else(|| b.err("ops", "entry is not a map"))?;
                let action = match m.get("action").and_then(Value::as_str) {
                    Some("create") => Action::Create,
                    Some("update") => Action::Update,
                    Some("delete") => Action::Delete,
                    _ => return Err(b.err("ops.action", "missing or not create/update/delete")),
                };
                let path = match m.get("path") {
                    Some(Value::String(s)) => s.clone(),
                    _ => return Err(b.err("ops.path", "missing or not a string")),
                };
                let cid = opt_link_in(m, "cid").map_err(|r| b.err("ops.cid", r))?;
                let prev = opt_link_in(m, "prev").map_err(|r| b.err("ops.prev", r))?;
                ops.push(RepoOp {
                    action,
                    path,
                    cid,
                    prev,
                });
            }
            let blobs =
                blob_links(b.map.get("blobs")).ok_or_else(|| b.err("blobs", "not an array"))?;
            Frame::Commit(CommitEvent {
                seq: b.int("seq")?,
                repo: b.text("repo")?,
                commit: b.link("commit")?,
                rev: b.text("rev")?,
                since: b.opt_text("since")?,
                blocks: b.bytes("blocks")?,
                ops,
                blobs,
                prev_data: b.opt_link("prevData")?,
                time: b.text("time")?,
                too_big: b.bool_or_false("tooBig")?,
                rebase: b.bool_or_false("rebase")?,
            })
        }
        "#sync" => Frame::Sync(SyncEvent {
            seq: b.int("seq")?,
            did: b.str("did")?,
            blocks: b.bytes("blocks")?,
            rev: b.str("rev")?,
            time: b.str("time")?,
        }),
        "#identity" => Frame::Identity(IdentityEvent {
            seq: b.int("seq")?,
            did: b.str("did")?,
            time: b.str("time")?,
            handle: b.opt_str("handle")?,
        }),
        "#account" => {
            let active = match b.map.get("active") {
                Some(Value::Bool(v)) => *v,
                _ => return Err(b.err("active", "missing or not a boolean")),
            };
            Frame::Account(AccountEvent {
                seq: b.int("seq")?,
                did: b.str("did")?,
                time: b.str("time")?,
                active,
                status: b.opt_str("status")?,
            })
        }
        "#info" => Frame::Info(InfoEvent {
            name: b.str("name")?,
            message: b.opt_str("message")?,
        }),
        other => Frame::Unknown {
            t: other.to_string(),
            seq: b.seq,
        },
    })
}

/// Encode an error frame (`op = -1`) named `error` (for tests and replay
/// tools).
pub fn encode_error_frame(error: &str, message: Option<&str>) -> Vec<u8> {
    let mut header = Map::new();
    header.insert("op", Value::Integer(-1));
    let mut body = Map::new();
    body.insert("error", Value::String(error.to_string().into()));
    if let Some(m) = message {
        body.insert("message", Value::String(m.to_string().into()));
    }
    let mut out = cbor::encode(&Value::Map(header));
    cbor::encode_into(&Value::Map(body), &mut out);
    out
}

/// Encode a header and body as one frame (for tests and replay tools).
pub fn encode_frame(t: &str, body: &Value<'_>) -> Vec<u8> {
    let mut header = Map::new();
    header.insert("op", Value::Integer(1));
    header.insert("t", Value::String(t.to_string().into()));
    let mut out = cbor::encode(&Value::Map(header));
    cbor::encode_into(body, &mut out);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The real relay frames of the Jetstream corpus.
    pub(crate) fn corpus() -> Vec<Vec<u8>> {
        use std::io::Read;
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/jetstream/frames.bin.zst"
        );
        let compressed = std::fs::read(path).expect("corpus");
        let mut raw = Vec::new();
        zstd::stream::read::Decoder::new(&compressed[..])
            .expect("zstd")
            .read_to_end(&mut raw)
            .expect("unzstd");
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < raw.len() {
            let len = u32::from_le_bytes(raw[pos..pos + 4].try_into().expect("len")) as usize;
            out.push(raw[pos + 4..pos + 4 + len].to_vec());
            pos += 4 + len;
        }
        out
    }

    /// The CAR slice of every `#commit` of [`corpus`], with its commit's CID.
    pub(crate) fn commit_cars() -> Vec<(Cid, Vec<u8>)> {
        corpus()
            .iter()
            .filter_map(|f| match Frame::decode(f) {
                Ok(Frame::Commit(c)) => Some((c.commit, c.blocks.into_owned())),
                _ => None,
            })
            .collect()
    }

    /// `bytes` with one byte changed, every byte three ways: `f(changed,
    /// at, how)`.
    pub(crate) fn each_damaged(bytes: &[u8], mut f: impl FnMut(&[u8], usize, u8)) {
        for at in 0..bytes.len() {
            for how in 0..3u8 {
                let mut g = bytes.to_vec();
                g[at] = match how {
                    0 => g[at] ^ 0x01,
                    1 => g[at] ^ 0xff,
                    _ => g[at].wrapping_sub(1),
                };
                f(&g, at, how);
            }
        }
    }

    #[test]
    fn every_real_commit_is_read_in_place_as_the_value_tree_reads_it() {
        let frames = corpus();
        let mut commits = 0;
        for f in &frames {
            let Ok(Frame::Commit(want)) = Frame::decode_general(f) else {
                continue;
            };
            commits += 1;
            let body = f.strip_prefix(COMMIT_HEADER).expect("the usual header");
            assert_eq!(commit_fast(body).as_ref(), Some(&want), "seq {}", want.seq);
        }
        assert_eq!(commits, 148);
    }

    #[test]
    fn a_commit_borrows_its_strings_from_the_message_and_into_owned_copies_them() {
        let borrowed = |s: &Cow<'_, str>| matches!(s, Cow::Borrowed(_));
        let frames = corpus();
        let mut commits = 0;
        for f in &frames {
            for decoded in [Frame::decode(f), Frame::decode_general(f)] {
                let Ok(Frame::Commit(c)) = decoded else {
                    continue;
                };
                commits += 1;
                assert!(borrowed(&c.repo) && borrowed(&c.rev) && borrowed(&c.time));
                assert!(c.since.as_ref().is_none_or(borrowed));
                assert!(c.ops.iter().all(|op| borrowed(&op.path)));
                let owned = c.clone().into_owned();
                assert!(!borrowed(&owned.repo) && !borrowed(&owned.rev));
                assert!(owned.ops.iter().all(|op| !borrowed(&op.path)));
                assert_eq!(owned, c);
            }
        }
        assert_eq!(commits, 2 * 148);
    }

    #[test]
    fn a_damaged_commit_decodes_or_fails_as_the_value_tree_says() {
        let frames = corpus();
        let commits: Vec<&Vec<u8>> = frames
            .iter()
            .filter(|f| f.starts_with(COMMIT_HEADER))
            .take(2)
            .collect();
        let mut errors = 0;
        for f in commits {
            each_damaged(f, |g, at, how| {
                let general = Frame::decode_general(g);
                assert_eq!(Frame::decode(g), general, "byte {at}, change {how}");
                errors += usize::from(general.is_err());
            });
        }
        assert!(errors > 100, "{errors}");
    }

    #[test]
    fn a_commit_with_its_keys_out_of_order_is_refused_as_the_value_tree_refuses_it() {
        let frames = corpus();
        let f = frames
            .iter()
            .find(|f| f.starts_with(COMMIT_HEADER))
            .expect("a commit");
        let Ok(Value::Map(m)) = cbor::decode(&f[COMMIT_HEADER.len()..]) else {
            panic!("body");
        };
        // The same entries, last first: not canonical DAG-CBOR.
        let entries: Vec<(&str, &Value<'_>)> = m.iter().collect();
        let mut g = COMMIT_HEADER.to_vec();
        cbor::write_head(&mut g, 5, entries.len() as u64);
        for (k, v) in entries.iter().rev() {
            cbor::encode_into(&Value::String((*k).into()), &mut g);
            cbor::encode_into(v, &mut g);
        }
        let general = Frame::decode_general(&g);
        assert!(
            general
                .as_ref()
                .is_err_and(|e| e.to_string().contains("order")),
            "{general:?}"
        );
        assert_eq!(Frame::decode(&g), general);
    }
}
