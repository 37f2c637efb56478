//! Signed repository commits.
//!
//! A commit is a DAG-CBOR map `{did, version, data, rev, prev, sig}`: `data`
//! is the MST root, `rev` a TID that orders commits of one repository, and
//! `sig` the account's signature over the same map without `sig`. Version 2
//! commits (before TID revisions) have no `rev`; they still decode.

use std::borrow::Cow;

use crate::cbor::{self, Map, Value};
use crate::cid::Cid;
use crate::crypto::PublicKey;

/// A decoded commit object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// The repository's DID.
    pub did: String,
    /// Repository format version (3 today; 2 for legacy repos).
    pub version: i64,
    /// CID of the MST root.
    pub data: Cid,
    /// The revision TID (absent in version 2).
    pub rev: Option<String>,
    /// The previous commit, if linked (usually null in version 3).
    pub prev: Option<Cid>,
    /// The signature bytes (64-byte compact ECDSA).
    pub sig: Vec<u8>,
    /// The commit block, kept to rebuild the signed bytes exactly (decoded
    /// again only when a signature is checked).
    raw: Vec<u8>,
}

/// Why a commit block is not a valid commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// The block is not valid DAG-CBOR.
    #[error("commit is not valid DAG-CBOR: {0}")]
    Cbor(#[from] cbor::CborError),
    /// A field is missing or has the wrong type.
    #[error("commit field {field}: {reason}")]
    Field {
        /// The field.
        field: &'static str,
        /// What was wrong.
        reason: &'static str,
    },
    /// The signature does not verify.
    #[error("commit signature of {did} does not verify: {reason}")]
    Signature {
        /// The repository DID.
        did: String,
        /// Why.
        reason: String,
    },
}

fn field(field: &'static str, reason: &'static str) -> CommitError {
    CommitError::Field { field, reason }
}

impl Commit {
    /// Decode a commit block.
    pub fn decode(bytes: &[u8]) -> Result<Commit, CommitError> {
        let v = cbor::decode(bytes)?;
        let Value::Map(map) = v else {
            return Err(field("(root)", "not a map"));
        };
        let did = map
            .get("did")
            .and_then(Value::as_str)
            .ok_or(field("did", "missing or not a string"))?
            .to_string();
        if !did.starts_with("did:") {
            return Err(field("did", "not a DID"));
        }
        let version = map
            .get("version")
            .and_then(Value::as_i64)
            .ok_or(field("version", "missing or not an integer"))?;
        if version != 2 && version != 3 {
            return Err(field("version", "unsupported (want 2 or 3)"));
        }
        let data = *map
            .get("data")
            .and_then(Value::as_link)
            .ok_or(field("data", "missing or not a link"))?;
        let rev = match map.get("rev") {
            Some(Value::String(s)) => Some(s.to_string()),
            None if version == 2 => None,
            _ => return Err(field("rev", "missing or not a string")),
        };
        let prev = match map.get("prev") {
            Some(Value::Link(c)) => Some(*c),
            Some(Value::Null) | None => None,
            Some(_) => return Err(field("prev", "not a link or null")),
        };
        let sig = map
            .get("sig")
            .and_then(Value::as_bytes)
            .ok_or(field("sig", "missing or not bytes"))?
            .to_vec();
        Ok(Commit {
            did,
            version,
            data,
            rev,
            prev,
            sig,
            raw: bytes.to_vec(),
        })
    }

    /// The bytes the signature covers: the commit re-encoded without `sig`.
    pub fn unsigned_bytes(&self) -> Vec<u8> {
        match cbor::decode(&self.raw) {
            Ok(Value::Map(mut m)) => {
                m.remove("sig");
                cbor::encode(&Value::Map(m))
            }
            // `decode` read these bytes as a map already.
            _ => Vec::new(),
        }
    }

    /// Check the signature against the account's signing key.
    pub fn verify(&self, key: &PublicKey) -> Result<(), CommitError> {
        key.verify(&self.unsigned_bytes(), &self.sig)
            .map_err(|e| CommitError::Signature {
                did: self.did.clone(),
                reason: e.to_string(),
            })
    }

    /// The revision as an integer (the TID's value), used as the row version.
    pub fn rev_u64(&self) -> Option<u64> {
        self.rev
            .as_deref()
            .and_then(|r| r.parse::<crate::syntax::Tid>().ok())
            .map(|t| t.to_u64())
    }

    /// A commit value with the given fields (used by tests and tools that sign).
    pub fn unsigned_value(did: &str, data: Cid, rev: &str, prev: Option<Cid>) -> Value<'static> {
        let mut m = Map::new();
        m.insert("did", Value::String(Cow::Owned(did.to_string())));
        m.insert("version", Value::Integer(3));
        m.insert("data", Value::Link(data));
        m.insert("rev", Value::String(Cow::Owned(rev.to_string())));
        m.insert("prev", prev.map_or(Value::Null, Value::Link));
        Value::Map(m)
    }
}
