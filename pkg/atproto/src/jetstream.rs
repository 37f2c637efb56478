//! The Jetstream v1 event model (JSON), and the conversion from firehose
//! frames that Jetstream itself performs.
//!
//! One firehose `#commit` becomes one Jetstream event per operation; records
//! are carried as lex-JSON. `time_us` is Jetstream's own receive time, so the
//! converter takes it as an argument.

use std::borrow::Cow;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::cbor;
use crate::frame::{Action, Frame};
use crate::json::{CowStr, RecordSeed};
use crate::Value;

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

    /// This event in the form of [`EventRef`], its record converted by
    /// [`crate::json::from_lex_json`]: what [`EventRef::parse`] gives for a
    /// line it accepts (the tests compare the two).
    pub fn to_ref(&self) -> Result<EventRef<'_>, crate::json::DataModelError> {
        let payload = match &self.payload {
            Payload::Commit { commit: c } => PayloadRef::Commit(CommitRef {
                rev: Cow::Borrowed(&c.rev),
                operation: c.operation,
                collection: Cow::Borrowed(&c.collection),
                rkey: Cow::Borrowed(&c.rkey),
                record: c
                    .record
                    .as_ref()
                    .map(crate::json::from_lex_json)
                    .transpose()?,
                cid: c.cid.as_deref().map(Cow::Borrowed),
            }),
            Payload::Identity { identity: i } => PayloadRef::Identity(IdentityRef {
                did: Cow::Borrowed(&i.did),
                handle: i.handle.as_deref().map(Cow::Borrowed),
                seq: i.seq,
                time: Cow::Borrowed(&i.time),
            }),
            Payload::Account { account: a } => PayloadRef::Account(AccountRef {
                active: a.active,
                did: Cow::Borrowed(&a.did),
                seq: a.seq,
                time: Cow::Borrowed(&a.time),
                status: a.status.as_deref().map(Cow::Borrowed),
            }),
        };
        Ok(EventRef {
            did: Cow::Borrowed(&self.did),
            time_us: self.time_us,
            payload,
        })
    }
}

/// A Jetstream event borrowed from its JSON line, its record decoded straight
/// into the data model: [`EventRef::parse`] reads the line once, without the
/// intermediate trees of [`Event::from_json`] + [`crate::json::from_lex_json`].
#[derive(Debug, Clone, PartialEq)]
pub struct EventRef<'a> {
    /// The DID the event is about.
    pub did: Cow<'a, str>,
    /// Jetstream's receive time in microseconds since the epoch.
    pub time_us: i64,
    /// The payload of the event's `kind`.
    pub payload: PayloadRef<'a>,
}

/// The kind-specific part of an [`EventRef`].
#[derive(Debug, Clone, PartialEq)]
pub enum PayloadRef<'a> {
    /// A record operation.
    Commit(CommitRef<'a>),
    /// An identity change.
    Identity(IdentityRef<'a>),
    /// An account status change.
    Account(AccountRef<'a>),
}

/// The `commit` object of an [`EventRef`].
#[derive(Debug, Clone, PartialEq)]
pub struct CommitRef<'a> {
    /// The commit's revision (not checked here).
    pub rev: Cow<'a, str>,
    /// create / update / delete.
    pub operation: Operation,
    /// The collection NSID.
    pub collection: Cow<'a, str>,
    /// The record key.
    pub rkey: Cow<'a, str>,
    /// The record, valid atproto data.
    pub record: Option<Value<'a>>,
    /// The record's CID (not parsed here).
    pub cid: Option<Cow<'a, str>>,
}

/// The `identity` object of an [`EventRef`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRef<'a> {
    /// The DID.
    pub did: Cow<'a, str>,
    /// The handle, when the event carries one.
    pub handle: Option<Cow<'a, str>>,
    /// Firehose sequence number.
    pub seq: i64,
    /// Firehose event time.
    pub time: Cow<'a, str>,
}

/// The `account` object of an [`EventRef`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRef<'a> {
    /// Whether the account is active.
    pub active: bool,
    /// The DID.
    pub did: Cow<'a, str>,
    /// Firehose sequence number.
    pub seq: i64,
    /// Firehose event time.
    pub time: Cow<'a, str>,
    /// Why not active, when it is not.
    pub status: Option<Cow<'a, str>>,
}

impl<'a> EventRef<'a> {
    /// Parse one JSON line in one pass, borrowing its strings.
    ///
    /// `Some` only for a line that [`Event::from_json`] accepts and whose
    /// record, if any, [`crate::json::from_lex_json`] accepts, with the same
    /// values. `None` for every line either rejects, and for the rare forms
    /// they accept that this parser leaves to them: `kind` given as a variant
    /// index, an `operation` as a `{"create": null}` map, an object given as
    /// an array, a repeated key (unknown keys aside), a record of a delete
    /// that is not valid atproto data, a repeated key in a record. The
    /// caller then parses the line with [`Event::from_json`], which gives the
    /// value or the error.
    pub fn parse(line: &'a [u8]) -> Option<EventRef<'a>> {
        // One SIMD check of the whole line instead of one per string: a line
        // that is not UTF-8 is not JSON either (`from_json` says why).
        let text = simdutf8::basic::from_utf8(line).ok()?;
        let mut de = serde_json::Deserializer::from_str(text);
        let ev = de.deserialize_map(EventVisitor).ok()?;
        de.end().ok()?;
        Some(ev)
    }
}

/// An error whose text nobody reads: any failure sends the line the slow way.
fn fail<E: de::Error>() -> E {
    E::custom("not in the fast form")
}

fn once<T, E: de::Error>(slot: &mut Option<T>, v: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(fail());
    }
    *slot = Some(v);
    Ok(())
}

/// Any JSON value, discarded. Parsed with `deserialize_any` like the
/// buffered fields of [`Event::from_json`], so that `serde_json`'s nesting
/// limit and UTF-8 checks apply as there (its `IgnoredAny` skips both).
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(CowStr)?.is_some() {
            map.next_value_seed(Skip)?;
        }
        Ok(())
    }
}

/// `null` as `None`, anything else by the inner seed.
struct Opt<S>(S);

impl<'de, S: DeserializeSeed<'de> + Copy> DeserializeSeed<'de> for Opt<S> {
    type Value = Option<S::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de> + Copy> Visitor<'de> for Opt<S> {
    type Value = Option<S::Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an optional value")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(d).map(Some)
    }
}

#[derive(Clone, Copy)]
struct Str;

impl<'de> DeserializeSeed<'de> for Str {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        CowStr.deserialize(d)
    }
}

#[derive(Clone, Copy)]
struct Record;

impl<'de> DeserializeSeed<'de> for Record {
    type Value = Value<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value<'de>, D::Error> {
        RecordSeed.deserialize(d)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Commit,
    Identity,
    Account,
}

/// A string of one of `names`, as its index.
struct OneOf(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for OneOf {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        let s = CowStr.deserialize(d)?;
        self.0.iter().position(|n| *n == s).ok_or_else(fail)
    }
}

struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = EventRef<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a Jetstream event")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EventRef<'de>, A::Error> {
        let (mut did, mut time_us, mut kind) = (None, None, None);
        let (mut commit, mut identity, mut account) = (None, None, None);
        while let Some(key) = map.next_key_seed(CowStr)? {
            match key.as_ref() {
                "did" => once(&mut did, map.next_value_seed(Str)?)?,
                "time_us" => once(&mut time_us, map.next_value::<i64>()?)?,
                "kind" => {
                    let k = map.next_value_seed(OneOf(&["commit", "identity", "account"]))?;
                    once(&mut kind, [Kind::Commit, Kind::Identity, Kind::Account][k])?;
                }
                "commit" => once(&mut commit, map.next_value_seed(CommitSeed)?)?,
                "identity" => once(&mut identity, map.next_value_seed(IdentitySeed)?)?,
                "account" => once(&mut account, map.next_value_seed(AccountSeed)?)?,
                _ => map.next_value_seed(Skip)?,
            }
        }
        let payload = match kind.ok_or_else(fail)? {
            Kind::Commit => PayloadRef::Commit(commit.ok_or_else(fail)?),
            Kind::Identity => PayloadRef::Identity(identity.ok_or_else(fail)?),
            Kind::Account => PayloadRef::Account(account.ok_or_else(fail)?),
        };
        Ok(EventRef {
            did: did.ok_or_else(fail)?,
            time_us: time_us.ok_or_else(fail)?,
            payload,
        })
    }
}

/// Seeds for the three objects: each reads a JSON object (`deserialize_map`).
macro_rules! object_seed {
    ($seed:ident, $out:ident) => {
        struct $seed;

        impl<'de> DeserializeSeed<'de> for $seed {
            type Value = $out<'de>;

            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<$out<'de>, D::Error> {
                d.deserialize_map(self)
            }
        }
    };
}

object_seed!(CommitSeed, CommitRef);
object_seed!(IdentitySeed, IdentityRef);
object_seed!(AccountSeed, AccountRef);

impl<'de> Visitor<'de> for CommitSeed {
    type Value = CommitRef<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a commit object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CommitRef<'de>, A::Error> {
        let (mut rev, mut operation, mut collection, mut rkey) = (None, None, None, None);
        let (mut record, mut cid) = (None, None);
        while let Some(key) = map.next_key_seed(CowStr)? {
            match key.as_ref() {
                "rev" => once(&mut rev, map.next_value_seed(Str)?)?,
                "operation" => {
                    let i = map.next_value_seed(OneOf(&["create", "update", "delete"]))?;
                    once(
                        &mut operation,
                        [Operation::Create, Operation::Update, Operation::Delete][i],
                    )?;
                }
                "collection" => once(&mut collection, map.next_value_seed(Str)?)?,
                "rkey" => once(&mut rkey, map.next_value_seed(Str)?)?,
                "record" => once(&mut record, map.next_value_seed(Opt(Record))?)?,
                "cid" => once(&mut cid, map.next_value_seed(Opt(Str))?)?,
                _ => map.next_value_seed(Skip)?,
            }
        }
        Ok(CommitRef {
            rev: rev.ok_or_else(fail)?,
            operation: operation.ok_or_else(fail)?,
            collection: collection.ok_or_else(fail)?,
            rkey: rkey.ok_or_else(fail)?,
            record: record.flatten(),
            cid: cid.flatten(),
        })
    }
}

impl<'de> Visitor<'de> for IdentitySeed {
    type Value = IdentityRef<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an identity object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<IdentityRef<'de>, A::Error> {
        let (mut did, mut handle, mut seq, mut time) = (None, None, None, None);
        while let Some(key) = map.next_key_seed(CowStr)? {
            match key.as_ref() {
                "did" => once(&mut did, map.next_value_seed(Str)?)?,
                "handle" => once(&mut handle, map.next_value_seed(Opt(Str))?)?,
                "seq" => once(&mut seq, map.next_value::<i64>()?)?,
                "time" => once(&mut time, map.next_value_seed(Str)?)?,
                _ => map.next_value_seed(Skip)?,
            }
        }
        Ok(IdentityRef {
            did: did.ok_or_else(fail)?,
            handle: handle.flatten(),
            seq: seq.ok_or_else(fail)?,
            time: time.ok_or_else(fail)?,
        })
    }
}

impl<'de> Visitor<'de> for AccountSeed {
    type Value = AccountRef<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an account object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AccountRef<'de>, A::Error> {
        let (mut active, mut did, mut seq, mut time, mut status) = (None, None, None, None, None);
        while let Some(key) = map.next_key_seed(CowStr)? {
            match key.as_ref() {
                "active" => once(&mut active, map.next_value::<bool>()?)?,
                "did" => once(&mut did, map.next_value_seed(Str)?)?,
                "seq" => once(&mut seq, map.next_value::<i64>()?)?,
                "time" => once(&mut time, map.next_value_seed(Str)?)?,
                "status" => once(&mut status, map.next_value_seed(Opt(Str))?)?,
                _ => map.next_value_seed(Skip)?,
            }
        }
        Ok(AccountRef {
            active: active.ok_or_else(fail)?,
            did: did.ok_or_else(fail)?,
            seq: seq.ok_or_else(fail)?,
            time: time.ok_or_else(fail)?,
            status: status.flatten(),
        })
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
                did: c.repo.to_string(),
                seq: c.seq,
                source,
            })?;
            let mut out = Vec::with_capacity(c.ops.len());
            for op in &c.ops {
                let (collection, rkey) = op.split_path().ok_or_else(|| ConvertError::Path {
                    did: c.repo.to_string(),
                    seq: c.seq,
                    path: op.path.to_string(),
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
                                    did: c.repo.to_string(),
                                    seq: c.seq,
                                    path: op.path.to_string(),
                                    source,
                                })
                            }
                            Some(Ok(j)) => (Some(j), Some(cid.to_string())),
                        }
                    }
                };
                out.push(Event {
                    did: c.repo.to_string(),
                    time_us,
                    payload: Payload::Commit {
                        commit: CommitOp {
                            rev: c.rev.to_string(),
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
