//! Reading record fields with lexicon shape checks.
//!
//! Every helper takes the location of the value it reads as a [`Loc`], a
//! linked list of keys and indexes that lives on the stack: nothing is
//! allocated while a record is well formed, and the path (`reply.root.uri`,
//! `facets[2].features[0].did`) is rendered only when a check fails.
//!
//! Policy, applied the same way by every record type:
//! - a required field that is missing (or `null`) is an error;
//! - a field we read that has the wrong data-model kind is an error, whether
//!   required or optional (`langs: 3`); an optional field that is absent or
//!   `null` is simply absent;
//! - formats are checked where a column holds an identifier other tables join
//!   on: every `did`, `at-uri` and `handle` field we read (subjects, mentions,
//!   replies, quotes, lists, gated posts…). Language tags, link URIs and CID
//!   strings are kept as written.
//! - fields we do not read are not looked at (records are open).

use std::borrow::Cow;
use std::fmt;

use skyhouse_atproto::cbor::{Map, Value};
use skyhouse_atproto::syntax::{AtUri, Did, Handle};

/// Where a value sits inside a record: rendered as `a.b[3].c`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Loc<'p> {
    /// The record itself.
    Root,
    /// A key of the map at the parent location.
    Key(&'p Loc<'p>, &'static str),
    /// An element of the array at the parent location.
    Index(&'p Loc<'p>, usize),
}

impl<'p> Loc<'p> {
    /// The location of `key` inside this map.
    pub(crate) fn key(&'p self, key: &'static str) -> Loc<'p> {
        Loc::Key(self, key)
    }

    /// The location of element `i` of this array.
    pub(crate) fn index(&'p self, i: usize) -> Loc<'p> {
        Loc::Index(self, i)
    }
}

impl fmt::Display for Loc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loc::Root => f.write_str("record"),
            Loc::Key(Loc::Root, k) => f.write_str(k),
            Loc::Key(p, k) => write!(f, "{p}.{k}"),
            Loc::Index(p, i) => write!(f, "{p}[{i}]"),
        }
    }
}

/// What was wrong with a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Problem {
    /// A required field is absent or `null`.
    Missing,
    /// The value has another data-model kind.
    Kind {
        /// What the lexicon asks for.
        expected: &'static str,
        /// What the record has.
        found: &'static str,
    },
    /// A string that is not a valid identifier of the given format.
    Format(&'static str),
    /// The record's `$type` names another collection.
    RecordType(String),
    /// The record key is not the literal the lexicon fixes.
    Rkey(&'static str),
}

/// Why a record does not fit its typed table: one line naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub(crate) struct Invalid {
    /// The field, as a path (`subject.uri`).
    pub(crate) field: String,
    /// What was wrong.
    pub(crate) problem: Problem,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing => f.write_str("required field is missing"),
            Problem::Kind { expected, found } => write!(f, "expected {expected}, found {found}"),
            Problem::Format(format) => write!(f, "not a valid {format}"),
            Problem::RecordType(t) => {
                let shown: String = t.chars().take(64).collect();
                write!(f, "names another collection ({shown:?})")
            }
            Problem::Rkey(want) => write!(f, "must be {want:?} for this collection"),
        }
    }
}

impl Invalid {
    pub(crate) fn new(loc: &Loc<'_>, problem: Problem) -> Invalid {
        Invalid {
            field: loc.to_string(),
            problem,
        }
    }

    fn kind(loc: &Loc<'_>, expected: &'static str, found: &Value<'_>) -> Invalid {
        Invalid::new(
            loc,
            Problem::Kind {
                expected,
                found: found.kind(),
            },
        )
    }
}

/// The result of a shape check.
pub(crate) type Check<T> = Result<T, Invalid>;

/// `map[key]`, with `null` taken as absent.
#[inline]
pub(crate) fn field<'v, 'a>(map: &'v Map<'a>, key: &str) -> Option<&'v Value<'a>> {
    match map.get(key) {
        None | Some(Value::Null) => None,
        Some(v) => Some(v),
    }
}

#[inline]
fn required<'v, 'a>(map: &'v Map<'a>, at: &Loc<'_>, key: &'static str) -> Check<&'v Value<'a>> {
    field(map, key).ok_or_else(|| Invalid::new(&at.key(key), Problem::Missing))
}

/// The value as a string.
#[inline]
pub(crate) fn as_str<'v>(v: &'v Value<'_>, at: &Loc<'_>) -> Check<&'v str> {
    v.as_str().ok_or_else(|| Invalid::kind(at, "string", v))
}

/// The value as a map.
#[inline]
pub(crate) fn as_map<'v, 'a>(v: &'v Value<'a>, at: &Loc<'_>) -> Check<&'v Map<'a>> {
    v.as_map().ok_or_else(|| Invalid::kind(at, "object", v))
}

/// The value as an array.
#[inline]
pub(crate) fn as_array<'v, 'a>(v: &'v Value<'a>, at: &Loc<'_>) -> Check<&'v [Value<'a>]> {
    v.as_array().ok_or_else(|| Invalid::kind(at, "array", v))
}

/// A required string field.
pub(crate) fn req_str<'v>(map: &'v Map<'_>, at: &Loc<'_>, key: &'static str) -> Check<&'v str> {
    as_str(required(map, at, key)?, &at.key(key))
}

/// An optional string field.
pub(crate) fn opt_str<'v>(
    map: &'v Map<'_>,
    at: &Loc<'_>,
    key: &'static str,
) -> Check<Option<&'v str>> {
    field(map, key).map(|v| as_str(v, &at.key(key))).transpose()
}

/// An optional string field (empty when absent).
pub(crate) fn opt_string<'v>(
    map: &'v Map<'_>,
    at: &Loc<'_>,
    key: &'static str,
) -> Check<Cow<'v, str>> {
    Ok(opt_str(map, at, key)?.unwrap_or_default().into())
}

/// A required object field.
pub(crate) fn req_map<'v, 'a>(
    map: &'v Map<'a>,
    at: &Loc<'_>,
    key: &'static str,
) -> Check<&'v Map<'a>> {
    as_map(required(map, at, key)?, &at.key(key))
}

/// An optional object field.
pub(crate) fn opt_map<'v, 'a>(
    map: &'v Map<'a>,
    at: &Loc<'_>,
    key: &'static str,
) -> Check<Option<&'v Map<'a>>> {
    field(map, key).map(|v| as_map(v, &at.key(key))).transpose()
}

/// A required array field.
pub(crate) fn req_array<'v, 'a>(
    map: &'v Map<'a>,
    at: &Loc<'_>,
    key: &'static str,
) -> Check<&'v [Value<'a>]> {
    as_array(required(map, at, key)?, &at.key(key))
}

/// An optional array field (empty when absent).
pub(crate) fn opt_array<'v, 'a>(
    map: &'v Map<'a>,
    at: &Loc<'_>,
    key: &'static str,
) -> Check<&'v [Value<'a>]> {
    match field(map, key) {
        None => Ok(&[]),
        Some(v) => as_array(v, &at.key(key)),
    }
}

/// A required boolean field.
pub(crate) fn req_bool(map: &Map<'_>, at: &Loc<'_>, key: &'static str) -> Check<bool> {
    match required(map, at, key)? {
        Value::Bool(b) => Ok(*b),
        v => Err(Invalid::kind(&at.key(key), "boolean", v)),
    }
}

/// An optional boolean field.
pub(crate) fn opt_bool(map: &Map<'_>, at: &Loc<'_>, key: &'static str) -> Check<Option<bool>> {
    match field(map, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(Invalid::kind(&at.key(key), "boolean", v)),
    }
}

/// An optional integer field.
pub(crate) fn opt_int(map: &Map<'_>, at: &Loc<'_>, key: &'static str) -> Check<Option<i64>> {
    match field(map, key) {
        None => Ok(None),
        Some(Value::Integer(i)) => Ok(Some(*i)),
        Some(v) => Err(Invalid::kind(&at.key(key), "integer", v)),
    }
}

/// Call `f` with every element of an array of strings, each checked by
/// `check` (which gets the element's location for its error).
pub(crate) fn each_str<'v>(
    items: &'v [Value<'_>],
    at: &Loc<'_>,
    check: fn(&str, &Loc<'_>) -> Check<()>,
    mut f: impl FnMut(&'v str),
) -> Check<()> {
    for (i, v) in items.iter().enumerate() {
        let loc = at.index(i);
        let s = as_str(v, &loc)?;
        check(s, &loc)?;
        f(s);
    }
    Ok(())
}

/// A format check that accepts anything.
pub(crate) fn any(_: &str, _: &Loc<'_>) -> Check<()> {
    Ok(())
}

/// Check `s` is a DID.
pub(crate) fn did(s: &str, at: &Loc<'_>) -> Check<()> {
    if Did::is_valid(s) {
        Ok(())
    } else {
        Err(Invalid::new(at, Problem::Format("DID")))
    }
}

/// Check `s` is an AT-URI.
pub(crate) fn at_uri(s: &str, at: &Loc<'_>) -> Check<()> {
    if AtUri::is_valid(s) {
        Ok(())
    } else {
        Err(Invalid::new(at, Problem::Format("AT-URI")))
    }
}

/// Check `s` is a handle.
pub(crate) fn handle(s: &str, at: &Loc<'_>) -> Check<()> {
    if Handle::is_valid(s) {
        Ok(())
    } else {
        Err(Invalid::new(at, Problem::Format("handle")))
    }
}

/// A required string field in the given format.
pub(crate) fn req_fmt<'v>(
    map: &'v Map<'_>,
    at: &Loc<'_>,
    key: &'static str,
    check: fn(&str, &Loc<'_>) -> Check<()>,
) -> Check<Cow<'v, str>> {
    let s = req_str(map, at, key)?;
    check(s, &at.key(key))?;
    Ok(s.into())
}

/// A `com.atproto.repo.strongRef` (`{uri, cid}`, both required; the URI must
/// be an AT-URI): returns `(uri, cid)`.
pub(crate) fn strong_ref<'v>(map: &'v Map<'_>, at: &Loc<'_>) -> Check<(&'v str, &'v str)> {
    let uri = req_str(map, at, "uri")?;
    at_uri(uri, &at.key("uri"))?;
    let cid = req_str(map, at, "cid")?;
    Ok((uri, cid))
}

/// An optional strongRef field: its URI (empty when absent).
pub(crate) fn opt_ref_uri<'v>(
    map: &'v Map<'_>,
    at: &Loc<'_>,
    key: &'static str,
) -> Check<Cow<'v, str>> {
    match opt_map(map, at, key)? {
        None => Ok(Cow::Borrowed("")),
        Some(r) => Ok(strong_ref(r, &at.key(key))?.0.into()),
    }
}

/// The CID of an optional blob field, as a string (empty when absent).
/// Accepts the current form (`{$type: blob, ref: {$link}}`) and the legacy
/// one of 2023 records (`{cid: "baf…", mimeType}`).
pub(crate) fn opt_blob_cid<'v>(
    map: &'v Map<'_>,
    at: &Loc<'_>,
    key: &'static str,
) -> Check<Cow<'v, str>> {
    let Some(v) = field(map, key) else {
        return Ok(Cow::Borrowed(""));
    };
    let loc = at.key(key);
    let blob = as_map(v, &loc)?;
    if let Some(r) = blob.get("ref") {
        return match r {
            Value::Link(cid) => Ok(cid.to_text().into()),
            v => Err(Invalid::kind(&loc.key("ref"), "link", v)),
        };
    }
    match blob.get("cid") {
        Some(Value::String(s)) => Ok(Cow::Borrowed(s)),
        Some(v) => Err(Invalid::kind(&loc.key("cid"), "string", v)),
        None => Err(Invalid::new(&loc.key("ref"), Problem::Missing)),
    }
}

/// The self-label values of an optional `labels` field
/// (`com.atproto.label.defs#selfLabels`). The field is an open union: other
/// `$type`s are ignored.
pub(crate) fn self_labels<'v>(map: &'v Map<'_>, at: &Loc<'_>) -> Check<Vec<Cow<'v, str>>> {
    let Some(labels) = opt_map(map, at, "labels")? else {
        return Ok(Vec::new());
    };
    let at = at.key("labels");
    if req_str(labels, &at, "$type")? != "com.atproto.label.defs#selfLabels" {
        return Ok(Vec::new());
    }
    let values_at = at.key("values");
    let values = req_array(labels, &at, "values")?;
    let mut out = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        let item_at = values_at.index(i);
        let val = req_str(as_map(v, &item_at)?, &item_at, "val")?;
        push_unique(&mut out, val);
    }
    Ok(out)
}

/// Append `s` unless it is already there (arrays here hold a handful of items).
#[inline]
pub(crate) fn push_unique<'v>(v: &mut Vec<Cow<'v, str>>, s: &'v str) {
    if !v.iter().any(|x| x == s) {
        v.push(Cow::Borrowed(s));
    }
}

/// The authority of an AT-URI if it is a DID, else `""` (a handle authority).
pub(crate) fn uri_did(uri: &str) -> &str {
    let rest = uri.strip_prefix("at://").unwrap_or("");
    let authority = rest.split('/').next().unwrap_or("");
    if authority.starts_with("did:") {
        authority
    } else {
        ""
    }
}

/// The record key must be `self` (lexicon `key: literal:self`).
pub(crate) fn rkey_self(rkey: &str) -> Check<()> {
    if rkey == "self" {
        Ok(())
    } else {
        Err(Invalid {
            field: "rkey".to_owned(),
            problem: Problem::Rkey("self"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render() {
        let root = Loc::Root;
        let facets = root.key("facets");
        let f2 = facets.index(2);
        let features = f2.key("features");
        let f0 = features.index(0);
        let did = f0.key("did");
        assert_eq!(did.to_string(), "facets[2].features[0].did");
        assert_eq!(root.to_string(), "record");
    }

    #[test]
    fn uri_did_takes_did_authorities_only() {
        assert_eq!(
            uri_did("at://did:plc:abc/app.bsky.feed.post/3k"),
            "did:plc:abc"
        );
        assert_eq!(uri_did("at://alice.test/app.bsky.feed.post/3k"), "");
        assert_eq!(uri_did("at://did:web:x.test"), "did:web:x.test");
        assert_eq!(uri_did("https://x"), "");
    }
}
