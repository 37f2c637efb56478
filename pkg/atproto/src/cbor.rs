//! Strict DAG-CBOR under the atproto data model.
//!
//! Decoding borrows strings and byte strings from the input, so walking a CAR
//! allocates only the map and array spines. The decoder rejects everything the
//! data model forbids: floats, indefinite lengths, non-minimal lengths and
//! integers, tags other than 42 (CID links, DASL CID rules), simple values
//! other than true/false/null, map keys that are not strings or not in
//! canonical order (length first, then bytes; which also rejects duplicates),
//! invalid UTF-8, integers outside the signed 64-bit range, and trailing bytes.
//! Nesting is capped at [`MAX_DEPTH`] so hostile input cannot exhaust the stack.

use std::borrow::Cow;
use std::fmt;

use crate::cid::{Cid, CidError};

/// Deepest nesting of arrays and maps accepted. Real records nest a handful of
/// levels; the cap stops a few kilobytes of `0x81 0x81 …` from exhausting the stack.
pub const MAX_DEPTH: usize = 64;

/// A DAG-CBOR value of the atproto data model.
#[derive(Clone, PartialEq, Eq)]
pub enum Value<'a> {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A signed 64-bit integer.
    Integer(i64),
    /// A UTF-8 string.
    String(Cow<'a, str>),
    /// A byte string (`{"$bytes"}` in JSON).
    Bytes(Cow<'a, [u8]>),
    /// A CID link (tag 42; `{"$link"}` in JSON).
    Link(Cid),
    /// An array.
    Array(Vec<Value<'a>>),
    /// A map with string keys, kept in canonical order.
    Map(Map<'a>),
}

/// A string-keyed map in DAG-CBOR canonical key order (shorter keys first,
/// then bytewise). Lookups are linear: atproto maps are small.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Map<'a>(Vec<(Cow<'a, str>, Value<'a>)>);

impl<'a> Map<'a> {
    /// An empty map.
    pub fn new() -> Map<'a> {
        Map(Vec::new())
    }

    /// Build a map from entries in any order; `None` if a key repeats.
    pub fn from_entries(mut entries: Vec<(Cow<'a, str>, Value<'a>)>) -> Option<Map<'a>> {
        entries.sort_by(|a, b| key_order(&a.0, &b.0));
        if entries.windows(2).any(|w| w[0].0 == w[1].0) {
            return None;
        }
        Some(Map(entries))
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Insert or replace `key`, keeping canonical order.
    pub fn insert(&mut self, key: impl Into<Cow<'a, str>>, value: Value<'a>) {
        let key = key.into();
        match self.0.binary_search_by(|(k, _)| key_order(k, &key)) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (key, value)),
        }
    }

    /// Remove `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Value<'a>> {
        let i = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(i).1)
    }

    /// Entries in canonical order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value<'a>)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Copy every borrowed string so the map outlives its input.
    pub fn into_owned(self) -> Map<'static> {
        Map(self
            .0
            .into_iter()
            .map(|(k, v)| (Cow::Owned(k.into_owned()), v.into_owned()))
            .collect())
    }
}

/// DAG-CBOR canonical key order: length first, then bytes.
pub fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

impl<'a> Value<'a> {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The link, if this is one.
    pub fn as_link(&self) -> Option<&Cid> {
        match self {
            Value::Link(c) => Some(c),
            _ => None,
        }
    }

    /// The bytes, if this is a byte string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The map, if this is one.
    pub fn as_map(&self) -> Option<&Map<'a>> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The array, if this is one.
    pub fn as_array(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// `self[key]` for maps; `None` otherwise.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        self.as_map()?.get(key)
    }

    /// The kind of value, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Integer(_) => "integer",
            Value::String(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::Link(_) => "link",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
        }
    }

    /// Copy every borrowed string so the value outlives its input.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Null => Value::Null,
            Value::Bool(b) => Value::Bool(b),
            Value::Integer(i) => Value::Integer(i),
            Value::String(s) => Value::String(Cow::Owned(s.into_owned())),
            Value::Bytes(b) => Value::Bytes(Cow::Owned(b.into_owned())),
            Value::Link(c) => Value::Link(c),
            Value::Array(a) => Value::Array(a.into_iter().map(Value::into_owned).collect()),
            Value::Map(m) => Value::Map(m.into_owned()),
        }
    }
}

impl fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Integer(i) => write!(f, "{i}"),
            Value::String(s) => write!(f, "{s:?}"),
            Value::Bytes(b) => write!(f, "bytes({})", b.len()),
            Value::Link(c) => write!(f, "{c:?}"),
            Value::Array(a) => f.debug_list().entries(a).finish(),
            Value::Map(m) => m.fmt(f),
        }
    }
}

impl fmt::Debug for Map<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (k, v)))
            .finish()
    }
}

/// What was wrong with a DAG-CBOR input, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid DAG-CBOR at byte {offset}: {kind}")]
pub struct CborError {
    /// Byte offset into the decoded buffer where the problem starts.
    pub offset: usize,
    /// What was wrong.
    pub kind: CborErrorKind,
}

/// The kinds of DAG-CBOR violation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CborErrorKind {
    /// The input ended inside a value.
    #[error("unexpected end of input")]
    Eof,
    /// Bytes remain after the value.
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
    /// A float (not allowed by the atproto data model).
    #[error("floats are not allowed")]
    Float,
    /// An indefinite-length item.
    #[error("indefinite lengths are not allowed")]
    Indefinite,
    /// A length or integer not in its shortest form.
    #[error("non-minimal integer or length encoding")]
    NonMinimal,
    /// A reserved additional-info value (28–30).
    #[error("reserved additional information {0}")]
    Reserved(u8),
    /// An integer outside the signed 64-bit range.
    #[error("integer out of the signed 64-bit range")]
    IntegerRange,
    /// A simple value other than false, true, null.
    #[error("simple value {0} is not allowed")]
    Simple(u8),
    /// A tag other than 42, or tag 42 in a non-minimal form.
    #[error("tag {0} is not allowed")]
    Tag(u64),
    /// Tag 42 not followed by a valid `0x00`-prefixed CID byte string.
    #[error("bad CID link: {0}")]
    Cid(String),
    /// A string that is not UTF-8.
    #[error("string is not valid UTF-8")]
    Utf8,
    /// A map key that is not a text string.
    #[error("map key is not a string")]
    KeyType,
    /// Map keys out of canonical order or repeated.
    #[error("map key {0:?} is out of canonical order or repeated")]
    KeyOrder(String),
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("nesting deeper than {MAX_DEPTH}")]
    Depth,
    /// A declared length larger than the remaining input.
    #[error("declared length {0} exceeds the input")]
    Length(u64),
}

/// Decode exactly one value occupying all of `buf`.
pub fn decode(buf: &[u8]) -> Result<Value<'_>, CborError> {
    let mut d = Decoder::new(buf);
    let v = d.value()?;
    if d.pos != buf.len() {
        return Err(d.err_at(d.pos, CborErrorKind::Trailing(buf.len() - d.pos)));
    }
    Ok(v)
}

/// Decode one value from the front of `buf`; returns it and the bytes used.
/// Firehose frames are two values back to back (header, body).
pub fn decode_prefix(buf: &[u8]) -> Result<(Value<'_>, usize), CborError> {
    let mut d = Decoder::new(buf);
    let v = d.value()?;
    Ok((v, d.pos))
}

/// A cursor over DAG-CBOR bytes.
#[derive(Debug)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    depth: usize,
}

impl<'a> Decoder<'a> {
    /// Start decoding at the front of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Decoder {
            buf,
            pos: 0,
            depth: 0,
        }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn err_at(&self, offset: usize, kind: CborErrorKind) -> CborError {
        CborError { offset, kind }
    }

    #[inline]
    fn byte(&mut self) -> Result<u8, CborError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| self.err_at(self.pos, CborErrorKind::Eof))?;
        self.pos += 1;
        Ok(b)
    }

    #[inline]
    pub(crate) fn take(&mut self, n: u64) -> Result<&'a [u8], CborError> {
        let remaining = (self.buf.len() - self.pos) as u64;
        if n > remaining {
            return Err(self.err_at(self.pos, CborErrorKind::Length(n)));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    /// Read a head: (major type, argument). Rejects indefinite and non-minimal forms.
    #[inline]
    pub(crate) fn head(&mut self) -> Result<(u8, u64, usize), CborError> {
        let start = self.pos;
        let ib = self.byte()?;
        let major = ib >> 5;
        let info = ib & 0x1f;
        let arg = match info {
            0..=23 => u64::from(info),
            24 => {
                let v = u64::from(self.byte()?);
                if v < 24 && major != 7 {
                    return Err(self.err_at(start, CborErrorKind::NonMinimal));
                }
                v
            }
            25 => {
                let b = self.take(2)?;
                let v = u64::from(u16::from_be_bytes([b[0], b[1]]));
                if v <= 0xff && major != 7 {
                    return Err(self.err_at(start, CborErrorKind::NonMinimal));
                }
                v
            }
            26 => {
                let b = self.take(4)?;
                let v = u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                if v <= 0xffff && major != 7 {
                    return Err(self.err_at(start, CborErrorKind::NonMinimal));
                }
                v
            }
            27 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                let v = u64::from_be_bytes(a);
                if v <= 0xffff_ffff && major != 7 {
                    return Err(self.err_at(start, CborErrorKind::NonMinimal));
                }
                v
            }
            31 => return Err(self.err_at(start, CborErrorKind::Indefinite)),
            r => return Err(self.err_at(start, CborErrorKind::Reserved(r))),
        };
        Ok((major, arg, start))
    }

    pub(crate) fn text(&mut self, len: u64, start: usize) -> Result<&'a str, CborError> {
        let bytes = self.take(len)?;
        if bytes.len() < 64 && bytes.is_ascii() {
            // Most strings are short ASCII (keys, NSIDs, DIDs, dates), where a
            // full UTF-8 validator costs more than the check itself.
            #[allow(unsafe_code)]
            // SAFETY: every byte is < 0x80, and ASCII is valid UTF-8.
            return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
        }
        simdutf8::basic::from_utf8(bytes).map_err(|_| self.err_at(start, CborErrorKind::Utf8))
    }

    /// Decode the next value.
    pub fn value(&mut self) -> Result<Value<'a>, CborError> {
        let (major, arg, start) = self.head()?;
        match major {
            0 => {
                if arg > i64::MAX as u64 {
                    return Err(self.err_at(start, CborErrorKind::IntegerRange));
                }
                Ok(Value::Integer(arg as i64))
            }
            1 => {
                if arg > i64::MAX as u64 {
                    return Err(self.err_at(start, CborErrorKind::IntegerRange));
                }
                Ok(Value::Integer(-1 - arg as i64))
            }
            2 => Ok(Value::Bytes(Cow::Borrowed(self.take(arg)?))),
            3 => Ok(Value::String(Cow::Borrowed(self.text(arg, start)?))),
            4 => {
                self.enter(start)?;
                // Every item takes at least one byte: cap the reservation by the input left.
                let remaining = (self.buf.len() - self.pos) as u64;
                if arg > remaining {
                    return Err(self.err_at(start, CborErrorKind::Length(arg)));
                }
                let mut items = Vec::with_capacity(arg as usize);
                for _ in 0..arg {
                    items.push(self.value()?);
                }
                self.depth -= 1;
                Ok(Value::Array(items))
            }
            5 => {
                self.enter(start)?;
                let remaining = (self.buf.len() - self.pos) as u64;
                if arg.saturating_mul(2) > remaining {
                    return Err(self.err_at(start, CborErrorKind::Length(arg)));
                }
                let mut entries: Vec<(Cow<'a, str>, Value<'a>)> = Vec::with_capacity(arg as usize);
                let mut prev: Option<&'a str> = None;
                for _ in 0..arg {
                    let key_start = self.pos;
                    let key = self.key()?;
                    if let Some(p) = prev {
                        if key_order(p, key) != std::cmp::Ordering::Less {
                            let shown: String = key.chars().take(64).collect();
                            return Err(self.err_at(key_start, CborErrorKind::KeyOrder(shown)));
                        }
                    }
                    prev = Some(key);
                    entries.push((Cow::Borrowed(key), self.value()?));
                }
                self.depth -= 1;
                Ok(Value::Map(Map(entries)))
            }
            6 => {
                // Only tag 42 in its one-byte form (0xd8 0x2a).
                if arg != 42 || self.buf[start] != 0xd8 {
                    return Err(self.err_at(start, CborErrorKind::Tag(arg)));
                }
                Ok(Value::Link(self.cid_body(start)?))
            }
            _ => match self.buf[start] {
                0xf4 => Ok(Value::Bool(false)),
                0xf5 => Ok(Value::Bool(true)),
                0xf6 => Ok(Value::Null),
                0xf9..=0xfb => Err(self.err_at(start, CborErrorKind::Float)),
                _ => Err(self.err_at(start, CborErrorKind::Simple(arg as u8))),
            },
        }
    }

    fn enter(&mut self, start: usize) -> Result<(), CborError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err_at(start, CborErrorKind::Depth));
        }
        Ok(())
    }

    /// A map key (text string only); the caller checks canonical order.
    pub(crate) fn key(&mut self) -> Result<&'a str, CborError> {
        let (major, arg, start) = self.head()?;
        if major != 3 {
            return Err(self.err_at(start, CborErrorKind::KeyType));
        }
        self.text(arg, start)
    }

    /// The head of a map: its number of entries; `None` for anything else.
    pub(crate) fn map_len(&mut self) -> Option<u64> {
        match self.head().ok()? {
            (5, entries, _) => Some(entries),
            _ => None,
        }
    }

    /// The next key of a map whose last key was `prev` (updated); `None`
    /// when it is not a text string or does not follow `prev` in canonical
    /// order.
    pub(crate) fn key_after(&mut self, prev: &mut Option<&'a str>) -> Option<&'a str> {
        let key = self.key().ok()?;
        if prev.is_some_and(|p| key_order(p, key) != std::cmp::Ordering::Less) {
            return None;
        }
        *prev = Some(key);
        Some(key)
    }

    /// A CID link (tag 42) or null.
    pub(crate) fn link_or_null(&mut self) -> Result<Option<Cid>, CborError> {
        let start = self.pos;
        match self.buf.get(start) {
            Some(0xf6) => {
                self.pos += 1;
                Ok(None)
            }
            Some(0xd8) if self.buf.get(start + 1) == Some(&0x2a) => {
                self.pos += 2;
                self.cid_body(start).map(Some)
            }
            Some(_) => {
                Err(self.err_at(start, CborErrorKind::Cid("expected a link or null".into())))
            }
            None => Err(self.err_at(start, CborErrorKind::Eof)),
        }
    }

    /// Whether every byte was consumed.
    pub(crate) fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    fn cid_body(&mut self, tag_start: usize) -> Result<Cid, CborError> {
        let (major, arg, start) = self.head()?;
        if major != 2 {
            return Err(self.err_at(
                start,
                CborErrorKind::Cid("tag 42 content is not bytes".into()),
            ));
        }
        let bytes = self.take(arg)?;
        match bytes.split_first() {
            Some((0, rest)) => Cid::from_bytes(rest)
                .map_err(|e: CidError| self.err_at(tag_start, CborErrorKind::Cid(e.to_string()))),
            _ => Err(self.err_at(
                tag_start,
                CborErrorKind::Cid("missing 0x00 multibase prefix".into()),
            )),
        }
    }
}

/// Index of the first entry out of canonical order, if any.
fn check_key_order(entries: &[(Cow<'_, str>, Value<'_>)]) -> Option<usize> {
    entries
        .windows(2)
        .position(|w| key_order(&w[0].0, &w[1].0) != std::cmp::Ordering::Less)
        .map(|i| i + 1)
}

/// Encode `value` as canonical DAG-CBOR.
pub fn encode(value: &Value<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    encode_into(value, &mut out);
    out
}

/// Append the canonical DAG-CBOR encoding of `value` to `out`.
pub fn encode_into(value: &Value<'_>, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(0xf6),
        Value::Bool(false) => out.push(0xf4),
        Value::Bool(true) => out.push(0xf5),
        Value::Integer(i) if *i >= 0 => write_head(out, 0, *i as u64),
        Value::Integer(i) => write_head(out, 1, (-1 - *i) as u64),
        Value::Bytes(b) => {
            write_head(out, 2, b.len() as u64);
            out.extend_from_slice(b);
        }
        Value::String(s) => write_str(out, s),
        Value::Link(cid) => {
            out.extend_from_slice(&[0xd8, 0x2a]);
            let b = cid.as_bytes();
            write_head(out, 2, b.len() as u64 + 1);
            out.push(0);
            out.extend_from_slice(b);
        }
        Value::Array(items) => {
            write_head(out, 4, items.len() as u64);
            for v in items {
                encode_into(v, out);
            }
        }
        Value::Map(m) => {
            write_head(out, 5, m.0.len() as u64);
            if check_key_order(&m.0).is_none() {
                for (k, v) in &m.0 {
                    write_str(out, k);
                    encode_into(v, out);
                }
            } else {
                let mut refs: Vec<&(Cow<'_, str>, Value<'_>)> = m.0.iter().collect();
                refs.sort_by(|a, b| key_order(&a.0, &b.0));
                for (k, v) in refs {
                    write_str(out, k);
                    encode_into(v, out);
                }
            }
        }
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    write_head(out, 3, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Append a CBOR head with the shortest argument encoding.
pub fn write_head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    if arg < 24 {
        out.push(m | arg as u8);
    } else if arg <= 0xff {
        out.extend_from_slice(&[m | 24, arg as u8]);
    } else if arg <= 0xffff {
        out.push(m | 25);
        out.extend_from_slice(&(arg as u16).to_be_bytes());
    } else if arg <= 0xffff_ffff {
        out.push(m | 26);
        out.extend_from_slice(&(arg as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&arg.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn decodes_simple_map() {
        let buf = hex("a361610161620262616103");
        let v = decode(&buf).expect("decode");
        assert_eq!(v.get("b").and_then(Value::as_i64), Some(2));
        assert_eq!(encode(&v), hex("a361610161620262616103"));
    }

    #[test]
    fn rejects_unsorted_and_duplicate_keys() {
        let e = decode(&hex("a2616201616100")).expect_err("unsorted");
        assert!(matches!(e.kind, CborErrorKind::KeyOrder(_)), "{e}");
        assert!(decode(&hex("a2616100616101")).is_err());
        // longer key before shorter one
        assert!(decode(&hex("a262616101616100")).is_err());
    }

    #[test]
    fn rejects_floats_and_huge_lengths() {
        assert_eq!(
            decode(&hex("fb3ff8000000000000")).expect_err("f").kind,
            CborErrorKind::Float
        );
        let e = decode(&hex("9b00000001ffffffff")).expect_err("len");
        assert!(matches!(e.kind, CborErrorKind::Length(_)), "{e}");
    }

    #[test]
    fn depth_is_capped() {
        let mut buf = vec![0x81u8; MAX_DEPTH + 1];
        buf.push(0x01);
        assert_eq!(decode(&buf).expect_err("deep").kind, CborErrorKind::Depth);
        let ok = vec![0x81u8; MAX_DEPTH];
        let mut ok = ok;
        ok.push(0x01);
        assert!(decode(&ok).is_ok());
    }

    #[test]
    fn integer_extremes() {
        for (h, v) in [
            ("1b7fffffffffffffff", i64::MAX),
            ("3b7fffffffffffffff", i64::MIN),
        ] {
            let buf = hex(h);
            let d = decode(&buf).expect("int");
            assert_eq!(d, Value::Integer(v));
            assert_eq!(encode(&d), hex(h));
        }
        assert_eq!(
            decode(&hex("1b8000000000000000")).expect_err("big").kind,
            CborErrorKind::IntegerRange
        );
    }
}
