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

/// A decoded commit object. Its strings and bytes borrow the block they were
/// read from (no allocation for them); [`Commit::into_owned`] detaches them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit<'a> {
    /// The repository's DID.
    pub did: Cow<'a, str>,
    /// Repository format version (3 today; 2 for legacy repos).
    pub version: i64,
    /// CID of the MST root.
    pub data: Cid,
    /// The revision TID (absent in version 2).
    pub rev: Option<Cow<'a, str>>,
    /// The previous commit, if linked (usually null in version 3).
    pub prev: Option<Cid>,
    /// The signature bytes (64-byte compact ECDSA).
    pub sig: Cow<'a, [u8]>,
    /// The commit block, kept to rebuild the signed bytes exactly (decoded
    /// again only when a signature is checked).
    raw: Cow<'a, [u8]>,
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

impl<'a> Commit<'a> {
    /// Decode a commit block.
    pub fn decode(bytes: &'a [u8]) -> Result<Commit<'a>, CommitError> {
        match Commit::decode_in_place(bytes) {
            Some(c) => Ok(c),
            None => Commit::decode_general(bytes),
        }
    }

    /// A commit in the plain form (its six fields in canonical order, nothing
    /// else, every value valid) read without a value tree; `None` otherwise.
    fn decode_in_place(bytes: &'a [u8]) -> Option<Commit<'a>> {
        let mut d = cbor::Decoder::new(bytes);
        let entries = d.map_len()?;
        let (mut did, mut version, mut data, mut rev, mut prev, mut sig) =
            (None, None, None, None, None, None);
        let mut last = None;
        for _ in 0..entries {
            match (d.key_after(&mut last)?, d.value().ok()?) {
                ("did", Value::String(s)) if s.starts_with("did:") => did = Some(s),
                ("version", Value::Integer(v @ (2 | 3))) => version = Some(v),
                ("data", Value::Link(c)) => data = Some(c),
                ("rev", Value::String(s)) => rev = Some(s),
                ("prev", Value::Link(c)) => prev = Some(c),
                ("prev", Value::Null) => {}
                ("sig", Value::Bytes(b)) => sig = Some(b),
                _ => return None,
            }
        }
        let version = version?;
        if !d.at_end() || (rev.is_none() && version != 2) {
            return None;
        }
        Some(Commit {
            did: did?,
            version,
            data: data?,
            rev,
            prev,
            sig: sig?,
            raw: Cow::Borrowed(bytes),
        })
    }

    /// [`Commit::decode`] through the DAG-CBOR value tree, for every block:
    /// the same result, slower (the tests compare the two).
    pub fn decode_general(bytes: &'a [u8]) -> Result<Commit<'a>, CommitError> {
        let v = cbor::decode(bytes)?;
        let Value::Map(map) = v else {
            return Err(field("(root)", "not a map"));
        };
        let did = match map.get("did") {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(field("did", "missing or not a string")),
        };
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
            Some(Value::String(s)) => Some(s.clone()),
            None if version == 2 => None,
            _ => return Err(field("rev", "missing or not a string")),
        };
        let prev = match map.get("prev") {
            Some(Value::Link(c)) => Some(*c),
            Some(Value::Null) | None => None,
            Some(_) => return Err(field("prev", "not a link or null")),
        };
        let sig = match map.get("sig") {
            Some(Value::Bytes(b)) => b.clone(),
            _ => return Err(field("sig", "missing or not bytes")),
        };
        Ok(Commit {
            did,
            version,
            data,
            rev,
            prev,
            sig,
            raw: Cow::Borrowed(bytes),
        })
    }

    /// The commit with its strings and bytes copied out of the block.
    pub fn into_owned(self) -> Commit<'static> {
        Commit {
            did: Cow::Owned(self.did.into_owned()),
            version: self.version,
            data: self.data,
            rev: self.rev.map(|r| Cow::Owned(r.into_owned())),
            prev: self.prev,
            sig: Cow::Owned(self.sig.into_owned()),
            raw: Cow::Owned(self.raw.into_owned()),
        }
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
                did: self.did.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::car::{CarOptions, CarSlice};
    use crate::frame::tests::{commit_cars, each_damaged};

    /// The commit block of every `#commit` of the real relay frames.
    fn commit_blocks() -> Vec<Vec<u8>> {
        commit_cars()
            .iter()
            .map(|(commit, car)| {
                let car = CarSlice::parse(car, CarOptions::default()).expect("car");
                car.get(commit).expect("commit block").to_vec()
            })
            .collect()
    }

    #[test]
    fn every_real_commit_block_is_read_in_place_as_the_value_tree_reads_it() {
        let blocks = commit_blocks();
        assert_eq!(blocks.len(), 148);
        for b in &blocks {
            let want = Commit::decode_general(b).expect("commit");
            assert_eq!(Commit::decode_in_place(b).as_ref(), Some(&want));
        }
    }

    #[test]
    fn a_commit_borrows_its_block_and_into_owned_copies_it() {
        for b in &commit_blocks() {
            for c in [Commit::decode(b), Commit::decode_general(b)] {
                let c = c.expect("commit");
                assert!(matches!(c.did, Cow::Borrowed(_)));
                assert!(matches!(c.rev, Some(Cow::Borrowed(_))));
                assert!(matches!(c.sig, Cow::Borrowed(_)));
                assert!(matches!(c.raw, Cow::Borrowed(r) if r == &b[..]));
                let owned = c.clone().into_owned();
                assert!(matches!(owned.did, Cow::Owned(_)));
                assert!(matches!(owned.raw, Cow::Owned(_)));
                assert_eq!(owned, c);
                assert_eq!(owned.unsigned_bytes(), c.unsigned_bytes());
            }
        }
    }

    #[test]
    fn a_damaged_commit_block_decodes_or_fails_as_the_value_tree_says() {
        let mut errors = 0;
        for b in commit_blocks().iter().take(3) {
            each_damaged(b, |g, at, how| {
                let general = Commit::decode_general(g);
                assert_eq!(Commit::decode(g), general, "byte {at}, change {how}");
                errors += usize::from(general.is_err());
            });
        }
        assert!(errors > 100, "{errors}");
    }

    #[test]
    fn a_version_2_commit_without_rev_and_a_version_3_one_without_rev_decode_as_before() {
        let data = commit_blocks()
            .first()
            .map(|b| Commit::decode(b).expect("commit").data)
            .expect("a commit");
        for (version, ok) in [(2, true), (3, false)] {
            let mut m = Map::new();
            m.insert("did", Value::String("did:plc:x".into()));
            m.insert("version", Value::Integer(version));
            m.insert("data", Value::Link(data));
            m.insert("prev", Value::Null);
            m.insert("sig", Value::Bytes(vec![1u8; 64].into()));
            let b = cbor::encode(&Value::Map(m));
            let general = Commit::decode_general(&b);
            assert_eq!(general.is_ok(), ok, "{general:?}");
            assert_eq!(Commit::decode(&b), general);
        }
    }
}
