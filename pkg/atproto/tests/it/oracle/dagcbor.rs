//! skyhouse's DAG-CBOR decoder against `serde_ipld_dagcbor` as an oracle.
//!
//! [`check`] decodes the same bytes with both and says how they relate:
//!
//! - both accept: the values must be equal (nulls, booleans, integers,
//!   strings, byte strings, CIDs, arrays, and maps entry by entry in wire
//!   order), and the oracle's encoder must give back the input bytes;
//! - both refuse: fine;
//! - skyhouse refuses, the oracle accepts: skyhouse's error must name one of
//!   the [`Rule`]s that make it stricter than DAG-CBOR, and the input must
//!   break that rule where skyhouse says it does;
//! - skyhouse accepts, the oracle refuses: always a divergence.
//!
//! Any divergence is an `Err` describing it. Shared by the property tests
//! (`tests/it/cbor_oracle.rs`) and the `cbor_oracle` fuzz target, so it uses
//! only skyhouse-atproto, the oracle crates and std.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ipld_core::cid::serde::BytesToCidVisitor;
use ipld_core::cid::{Cid as OracleCid, Version};
use ipld_core::ipld::Ipld;
use serde::de;
use skyhouse_atproto::cbor::{self, CborError, CborErrorKind, Value, MAX_DEPTH};

/// A value as the oracle decoded it, with map entries in wire order (the
/// oracle's own `Ipld` keeps maps in a `BTreeMap`, which would hide order).
#[derive(Debug, Clone, PartialEq)]
pub enum Oracle {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// Any CBOR integer, -2^64 ..= 2^64-1.
    Int(i128),
    /// A 64-bit float (DAG-CBOR allows them; the atproto data model does not).
    Float(f64),
    /// A UTF-8 string.
    Str(String),
    /// A byte string.
    Bytes(Vec<u8>),
    /// A tag-42 CID, any version, codec or hash the `cid` crate reads.
    Link(OracleCid),
    /// An array.
    List(Vec<Oracle>),
    /// A map, entries in the order they were on the wire.
    Map(Vec<(String, Oracle)>),
}

impl Oracle {
    /// Nesting depth: a scalar is 0, `[1]` is 1.
    pub fn depth(&self) -> usize {
        match self {
            Oracle::List(items) => 1 + items.iter().map(Oracle::depth).max().unwrap_or(0),
            Oracle::Map(entries) => 1 + entries.iter().map(|(_, v)| v.depth()).max().unwrap_or(0),
            _ => 0,
        }
    }

    /// Whether this value or any value inside it satisfies `f`.
    pub fn any(&self, f: &impl Fn(&Oracle) -> bool) -> bool {
        f(self)
            || match self {
                Oracle::List(items) => items.iter().any(|v| v.any(f)),
                Oracle::Map(entries) => entries.iter().any(|(_, v)| v.any(f)),
                _ => false,
            }
    }
}

impl<'de> de::Deserialize<'de> for Oracle {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Oracle, D::Error> {
        d.deserialize_any(OracleVisitor)
    }
}

struct OracleVisitor;

impl<'de> de::Visitor<'de> for OracleVisitor {
    type Value = Oracle;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any DAG-CBOR value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Oracle, E> {
        Ok(Oracle::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Oracle, E> {
        Ok(Oracle::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Oracle, E> {
        Ok(Oracle::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Oracle, E> {
        Ok(Oracle::Int(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Oracle, E> {
        Ok(Oracle::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Oracle, E> {
        Ok(Oracle::Str(v.to_owned()))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Oracle, E> {
        Ok(Oracle::Bytes(v.to_vec()))
    }
    fn visit_none<E>(self) -> Result<Oracle, E> {
        Ok(Oracle::Null)
    }
    fn visit_unit<E>(self) -> Result<Oracle, E> {
        Ok(Oracle::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Oracle, D::Error> {
        de::Deserialize::deserialize(d)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Oracle, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element()? {
            items.push(v);
        }
        Ok(Oracle::List(items))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Oracle, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Oracle::Map(entries))
    }
    /// serde_ipld_dagcbor hands tag 42 over as a newtype struct (as `Ipld` reads it).
    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<Oracle, D::Error> {
        d.deserialize_bytes(BytesToCidVisitor).map(Oracle::Link)
    }
}

/// Decode `buf` with the oracle: exactly one value, no trailing bytes.
pub fn oracle_decode(buf: &[u8]) -> Result<Oracle, String> {
    serde_ipld_dagcbor::from_slice::<Oracle>(buf).map_err(|e| e.to_string())
}

/// Whether a CID is one skyhouse accepts in data: CIDv1, codec dag-cbor
/// (0x71) or raw (0x55), a 32-byte sha2-256 digest, or a 32-byte BLAKE3
/// digest, which the DASL CID rules also allow.
pub fn atproto_cid(c: &OracleCid) -> bool {
    c.version() == Version::V1
        && matches!(c.codec(), 0x71 | 0x55)
        && matches!(c.hash().code(), 0x12 | 0x1e)
        && c.hash().size() == 32
}

/// The rules under which skyhouse refuses what DAG-CBOR (and so the oracle)
/// accepts. Each is checked on the input, not taken from skyhouse's word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    /// The atproto data model has no floats; DAG-CBOR has 64-bit ones.
    Float,
    /// The atproto data model's integers are signed 64-bit; CBOR's run from
    /// -2^64 to 2^64-1.
    IntegerRange,
    /// A link is a CIDv1 with codec dag-cbor or raw and a 32-byte sha2-256
    /// (or, per DASL, BLAKE3) digest; DAG-CBOR allows any CID.
    CidKind,
    /// A link's byte string holds exactly one CID; the oracle's `cid` crate
    /// reads one from the front and ignores what follows.
    CidTrailing,
    /// skyhouse nests at most `cbor::MAX_DEPTH` arrays and maps, so hostile
    /// input cannot exhaust the stack (the oracle's cap is deeper).
    Depth,
    /// DAG-CBOR has no indefinite lengths. serde_ipld_dagcbor 0.7 refuses
    /// them in values but reads an indefinite-length (chunked) string where
    /// it reads a map key or a link's bytes.
    Indefinite,
}

impl Rule {
    /// Every rule, for tallies.
    pub const ALL: [Rule; 6] = [
        Rule::Float,
        Rule::IntegerRange,
        Rule::CidKind,
        Rule::CidTrailing,
        Rule::Depth,
        Rule::Indefinite,
    ];

    /// What the rule says, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Float => "atproto data model: no floats",
            Rule::IntegerRange => "atproto data model: integers are signed 64-bit",
            Rule::CidKind => "atproto data model: links are CIDv1, dag-cbor or raw, sha-256",
            Rule::CidTrailing => "a link's bytes are exactly one CID",
            Rule::Depth => "skyhouse: nesting capped at cbor::MAX_DEPTH",
            Rule::Indefinite => "DAG-CBOR: no indefinite lengths",
        }
    }
}

/// How skyhouse and the oracle agreed on one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Both accepted, with the same value.
    Same,
    /// Both refused.
    BothRefuse,
    /// skyhouse refused under a [`Rule`] the input does break; the oracle accepted.
    Stricter(Rule),
}

/// Decode `buf` with both decoders and compare (see the module docs).
pub fn check(buf: &[u8]) -> Result<Verdict, String> {
    let ours = cbor::decode(buf);
    let theirs = oracle_decode(buf);
    match (ours, theirs) {
        (Ok(v), Ok(o)) => {
            same_value(&v, &o).map_err(|e| format!("both accept {}, but {e}", hex(buf)))?;
            let again = serde_ipld_dagcbor::to_vec(&to_ipld(&v))
                .map_err(|e| format!("oracle cannot encode {v:?}: {e}"))?;
            if again != buf {
                return Err(format!(
                    "the oracle encodes {v:?} as {}, not as the input {}",
                    hex(&again),
                    hex(buf)
                ));
            }
            Ok(Verdict::Same)
        }
        (Err(_), Err(_)) => Ok(Verdict::BothRefuse),
        (Ok(v), Err(e)) => Err(format!(
            "skyhouse accepts {} as {v:?}; the oracle refuses it: {e}",
            hex(buf)
        )),
        (Err(e), Ok(o)) => stricter(buf, &e, &o).map(Verdict::Stricter).map_err(|why| {
            format!(
                "skyhouse refuses {} ({e}), the oracle accepts it as {o:?}: {why}",
                hex(buf)
            )
        }),
    }
}

/// The rule skyhouse refused `buf` under, checked against the input.
fn stricter(buf: &[u8], e: &CborError, o: &Oracle) -> Result<Rule, String> {
    let at = e.offset;
    match &e.kind {
        CborErrorKind::Float => {
            // The oracle (strict DAG-CBOR) reads only 64-bit floats.
            if buf.get(at) == Some(&0xfb) && o.any(&|v| matches!(v, Oracle::Float(_))) {
                Ok(Rule::Float)
            } else {
                Err("no 64-bit float where skyhouse says".into())
            }
        }
        CborErrorKind::IntegerRange => {
            let head = read_head(buf, at);
            let beyond = matches!(head, Some((0 | 1, arg, _)) if arg > i64::MAX as u64);
            if beyond && o.any(&|v| matches!(v, Oracle::Int(i) if i64::try_from(*i).is_err())) {
                Ok(Rule::IntegerRange)
            } else {
                Err("no integer beyond 64 bits where skyhouse says".into())
            }
        }
        CborErrorKind::Cid(_) => link_rule(buf, at),
        CborErrorKind::Depth => {
            if o.depth() > MAX_DEPTH {
                Ok(Rule::Depth)
            } else {
                Err(format!("nesting is only {}", o.depth()))
            }
        }
        CborErrorKind::Indefinite => {
            // An indefinite-length byte (0x5f) or text (0x7f) string head.
            if matches!(buf.get(at), Some(0x5f | 0x7f)) {
                Ok(Rule::Indefinite)
            } else {
                Err("no indefinite-length string where skyhouse says".into())
            }
        }
        _ => Err("no rule makes skyhouse stricter here".into()),
    }
}

/// Which link rule the tag 42 at `at` breaks, read with the oracle's `cid` crate.
fn link_rule(buf: &[u8], at: usize) -> Result<Rule, String> {
    if buf.get(at..at + 2) != Some(&[0xd8, 0x2a][..]) {
        return Err("no tag 42 where skyhouse says".into());
    }
    let Some((2, len, head)) = read_head(buf, at + 2) else {
        return Err("tag 42 is not followed by a byte string".into());
    };
    let start = at + 2 + head;
    let bytes = usize::try_from(len)
        .ok()
        .and_then(|len| buf.get(start..start.checked_add(len)?))
        .ok_or("link bytes run past the input")?;
    let Some((0, mut rest)) = bytes.split_first().map(|(p, r)| (*p, r)) else {
        return Err("link bytes lack the 0x00 prefix".into());
    };
    let cid = OracleCid::read_bytes(&mut rest).map_err(|e| format!("oracle cid: {e}"))?;
    if !atproto_cid(&cid) {
        Ok(Rule::CidKind)
    } else if !rest.is_empty() {
        Ok(Rule::CidTrailing)
    } else {
        Err(format!("{cid} is an atproto CID with nothing after it"))
    }
}

/// A CBOR head at `at`, read independently of skyhouse: (major type,
/// argument, head length). `None` for indefinite or reserved forms.
pub fn read_head(buf: &[u8], at: usize) -> Option<(u8, u64, usize)> {
    let ib = *buf.get(at)?;
    let (major, info) = (ib >> 5, ib & 0x1f);
    let width = match info {
        0..=23 => return Some((major, u64::from(info), 1)),
        24 => 1,
        25 => 2,
        26 => 4,
        27 => 8,
        _ => return None,
    };
    let arg = buf
        .get(at + 1..at + 1 + width)?
        .iter()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    Some((major, arg, 1 + width))
}

/// Whether skyhouse's value and the oracle's are the same data.
pub fn same_value(v: &Value<'_>, o: &Oracle) -> Result<(), String> {
    let mut path = String::from("$");
    same_at(v, o, &mut path)
}

fn same_at(v: &Value<'_>, o: &Oracle, path: &mut String) -> Result<(), String> {
    let differ = |path: &str| Err(format!("at {path}: skyhouse has {v:?}, the oracle {o:?}"));
    match (v, o) {
        (Value::Null, Oracle::Null) => Ok(()),
        (Value::Bool(a), Oracle::Bool(b)) if a == b => Ok(()),
        (Value::Integer(a), Oracle::Int(b)) if i128::from(*a) == *b => Ok(()),
        (Value::String(a), Oracle::Str(b)) if a.as_ref() == b => Ok(()),
        (Value::Bytes(a), Oracle::Bytes(b)) if a.as_ref() == b.as_slice() => Ok(()),
        (Value::Link(a), Oracle::Link(b)) if a.as_bytes() == b.to_bytes().as_slice() => Ok(()),
        (Value::Array(a), Oracle::List(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                let len = path.len();
                let _ = write!(path, "[{i}]");
                same_at(x, y, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        (Value::Map(a), Oracle::Map(b)) if a.len() == b.len() => {
            for ((ka, x), (kb, y)) in a.iter().zip(b) {
                if ka != kb {
                    return Err(format!("at {path}: key {ka:?} where the oracle has {kb:?}"));
                }
                let len = path.len();
                let _ = write!(path, ".{ka}");
                same_at(x, y, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => differ(path),
    }
}

/// skyhouse's value in the oracle's data model, to encode with the oracle.
pub fn to_ipld(v: &Value<'_>) -> Ipld {
    match v {
        Value::Null => Ipld::Null,
        Value::Bool(b) => Ipld::Bool(*b),
        Value::Integer(i) => Ipld::Integer((*i).into()),
        Value::String(s) => Ipld::String(s.to_string()),
        Value::Bytes(b) => Ipld::Bytes(b.to_vec()),
        Value::Link(c) => Ipld::Link(
            OracleCid::try_from(c.as_bytes()).expect("every skyhouse CID is a CID to the oracle"),
        ),
        Value::Array(a) => Ipld::List(a.iter().map(to_ipld).collect()),
        Value::Map(m) => Ipld::Map(
            m.iter()
                .map(|(k, v)| (k.to_owned(), to_ipld(v)))
                .collect::<BTreeMap<_, _>>(),
        ),
    }
}

/// Lower-case hex, shortened past 96 bytes, for messages.
pub fn hex(buf: &[u8]) -> String {
    let mut s: String = buf.iter().take(96).map(|b| format!("{b:02x}")).collect();
    if buf.len() > 96 {
        let _ = write!(s, "…({} bytes)", buf.len());
    }
    s
}
