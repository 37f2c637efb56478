//! The Jetstream v1 event model (JSON), and the conversion from firehose
//! frames that Jetstream itself performs.
//!
//! One firehose `#commit` becomes one Jetstream event per operation; records
//! are carried as lex-JSON. `time_us` is Jetstream's own receive time, so the
//! converter takes it as an argument.

use serde::{Deserialize, Serialize};

use crate::cbor;
use crate::frame::{Action, Frame};

/// One Jetstream event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The DID the event is about.
    pub did: String,
    /// Jetstream's receive time in microseconds since the epoch; also its cursor.
    pub time_us: i64,
    /// The payload, tagged by `kind`.
    #[serde(flatten)]
    pub payload: Payload,
}

/// The kind-specific part of an [`Event`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Payload {
    /// A record operation.
    Commit {
        /// The operation.
        commit: CommitOp,
    },
    /// An identity change.
    Identity {
        /// The identity fields.
        identity: Identity,
    },
    /// An account status change.
    Account {
        /// The account fields.
        account: Account,
    },
}

/// Jetstream's operation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// A new record.
    Create,
    /// A replaced record.
    Update,
    /// A removed record.
    Delete,
}

impl From<Action> for Operation {
    fn from(a: Action) -> Self {
        match a {
            Action::Create => Operation::Create,
            Action::Update => Operation::Update,
            Action::Delete => Operation::Delete,
        }
    }
}

/// The `commit` object of a commit event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitOp {
    /// The commit's revision TID.
    pub rev: String,
    /// create / update / delete.
    pub operation: Operation,
    /// The collection NSID.
    pub collection: String,
    /// The record key.
    pub rkey: String,
    /// The record in lex-JSON (creates and updates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<serde_json::Value>,
    /// The record's CID (creates and updates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
}

/// The `identity` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The DID.
    pub did: String,
    /// The handle, when the firehose event carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
    /// Firehose sequence number.
    pub seq: i64,
    /// Firehose event time.
    pub time: String,
}

/// The `account` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Whether the account is active.
    pub active: bool,
    /// The DID.
    pub did: String,
    /// Firehose sequence number.
    pub seq: i64,
    /// Firehose event time.
    pub time: String,
    /// Why not active, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

impl Event {
    /// Parse one JSON line, with a one-line error.
    pub fn from_json(line: &[u8]) -> Result<Event, serde_json::Error> {
        serde_json::from_slice(line)
    }
}

/// Why a firehose frame could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The commit's blocks CAR is broken.
    #[error("commit of {did} (seq {seq}): blocks: {source}")]
    Blocks {
        /// The repository.
        did: String,
        /// The frame's seq.
        seq: i64,
        /// The CAR error.
        source: crate::car::CarError,
    },
    /// An op's path is not `collection/rkey`.
    #[error("commit of {did} (seq {seq}): bad op path {path:?}")]
    Path {
        /// The repository.
        did: String,
        /// The frame's seq.
        seq: i64,
        /// The path.
        path: String,
    },
    /// A record block is not valid DAG-CBOR.
    #[error("commit of {did} (seq {seq}): record {path}: {source}")]
    Record {
        /// The repository.
        did: String,
        /// The frame's seq.
        seq: i64,
        /// The record path.
        path: String,
        /// The decoding error.
        source: cbor::CborError,
    },
}

/// Convert one firehose frame to the Jetstream events it yields (none for
/// `#sync`, `#info`, errors and unknown types; creates and updates whose
/// record block is absent, as in a `tooBig` commit, are skipped).
pub fn from_frame(frame: &Frame, time_us: i64) -> Result<Vec<Event>, ConvertError> {
    match frame {
        Frame::Commit(c) => {
            let blocks = c.block_store().map_err(|source| ConvertError::Blocks {
                did: c.repo.clone(),
                seq: c.seq,
                source,
            })?;
            let mut out = Vec::with_capacity(c.ops.len());
            for op in &c.ops {
                let (collection, rkey) = op.split_path().ok_or_else(|| ConvertError::Path {
                    did: c.repo.clone(),
                    seq: c.seq,
                    path: op.path.clone(),
                })?;
                let (record, cid) = match (op.action, op.cid) {
                    (Action::Delete, _) => (None, None),
                    (_, None) => continue,
                    (_, Some(cid)) => {
                        let json = blocks
                            .with_block(&cid, |b| {
                                b.map(|b| cbor::decode(b).map(|v| crate::json::to_json_value(&v)))
                            })
                            .ok()
                            .flatten();
                        match json {
                            None => continue,
                            Some(Err(source)) => {
                                return Err(ConvertError::Record {
                                    did: c.repo.clone(),
                                    seq: c.seq,
                                    path: op.path.clone(),
                                    source,
                                })
                            }
                            Some(Ok(j)) => (Some(j), Some(cid.to_string())),
                        }
                    }
                };
                out.push(Event {
                    did: c.repo.clone(),
                    time_us,
                    payload: Payload::Commit {
                        commit: CommitOp {
                            rev: c.rev.clone(),
                            operation: op.action.into(),
                            collection: collection.to_string(),
                            rkey: rkey.to_string(),
                            record,
                            cid,
                        },
                    },
                });
            }
            Ok(out)
        }
        Frame::Identity(i) => Ok(vec![Event {
            did: i.did.clone(),
            time_us,
            payload: Payload::Identity {
                identity: Identity {
                    did: i.did.clone(),
                    handle: i.handle.clone(),
                    seq: i.seq,
                    time: i.time.clone(),
                },
            },
        }]),
        Frame::Account(a) => Ok(vec![Event {
            did: a.did.clone(),
            time_us,
            payload: Payload::Account {
                account: Account {
                    active: a.active,
                    did: a.did.clone(),
                    seq: a.seq,
                    time: a.time.clone(),
                    status: a.status.clone(),
                },
            },
        }]),
        _ => Ok(Vec::new()),
    }
}
