//! atproto lex-JSON: the JSON form of the data model.
//!
//! Links become `{"$link": "<cid>"}` and byte strings `{"$bytes": "<base64>"}`
//! (standard alphabet, no padding). [`Value`] implements `Serialize` in this
//! form, so `serde_json::to_writer(out, &value)` streams a record straight to
//! JSON without an intermediate tree; [`write_json`] writes the same bytes
//! into a `String` without serde (the indexers' path). [`from_lex_json`] goes the other way and
//! enforces the data-model rules that JSON cannot express on its own.

use std::borrow::Cow;

use base64::Engine as _;
use serde::ser::{SerializeMap, SerializeSeq};

use crate::cbor::{Map, Value};
use crate::cid::Cid;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;
const B64_LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

impl serde::Serialize for Value<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Integer(i) => s.serialize_i64(*i),
            Value::String(v) => s.serialize_str(v),
            Value::Bytes(b) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("$bytes", &B64.encode(b))?;
                m.end()
            }
            Value::Link(cid) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("$link", cid)?;
                m.end()
            }
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for v in items {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Value::Map(map) => map.serialize(s),
        }
    }
}

impl serde::Serialize for Map<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Append `value` as compact lex-JSON to `out`: byte for byte what
/// `serde_json::to_writer` writes through [`Value`]'s `Serialize`, without
/// serde's machinery or a UTF-8 check of the result (every record an
/// indexer stores goes through this).
pub fn write_json(value: &Value<'_>, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Integer(i) => out.push_str(itoa::Buffer::new().format(*i)),
        Value::String(v) => write_json_str(v, out),
        Value::Bytes(b) => {
            out.push_str("{\"$bytes\":\"");
            B64.encode_string(b, out);
            out.push_str("\"}");
        }
        Value::Link(cid) => {
            out.push_str("{\"$link\":\"");
            cid.push_to(out);
            out.push_str("\"}");
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(v, out);
            }
            out.push(']');
        }
        Value::Map(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_str(k, out);
                out.push(':');
                write_json(v, out);
            }
            out.push('}');
        }
    }
}

/// `s` as a JSON string, escaped as serde_json escapes: `"`, `\\` and the
/// control characters below U+0020 (short forms where JSON has them,
/// `\u00xx` otherwise); everything else as it is.
fn write_json_str(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let bytes = s.as_bytes();
    let mut run = 0;
    // Skip eight bytes at a time while none needs escaping (the usual case).
    let mut start = 0;
    while let Some(chunk) = bytes.get(start..start + 8) {
        if needs_escape(u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]))) {
            break;
        }
        start += 8;
    }
    for (i, &b) in bytes.iter().enumerate().skip(start) {
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        // The byte at `i` is ASCII, so both cuts are on character boundaries.
        out.push_str(&s[run..i]);
        run = i + 1;
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            _ => {
                out.push_str("\\u00");
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 0xf)] as char);
            }
        }
    }
    out.push_str(&s[run..]);
    out.push('"');
}

/// Whether any of the eight bytes of `w` is below 0x20, `"` or `\\`: the
/// exact "has a byte less than n" word test, and "has a zero byte" on `w`
/// with each of the two bytes cancelled out.
fn needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |n: u8, x: u64| x.wrapping_sub(ONES * u64::from(n)) & !x;
    let has = |b: u8| below(1, w ^ (ONES * u64::from(b)));
    (below(0x20, w) | has(b'"') | has(b'\\')) & HIGH != 0
}

/// Convert a value to a `serde_json::Value` in lex-JSON form.
pub fn to_json_value(value: &Value<'_>) -> serde_json::Value {
    // Serializing our own enum into serde_json's tree cannot fail: every key is a string.
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// Why a JSON document is not valid atproto data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid atproto data at {path}: {reason}")]
pub struct DataModelError {
    /// JSON-pointer-like path to the offending value (`/embed/images/0/image`).
    pub path: String,
    /// What was wrong.
    pub reason: String,
}

fn dm_err(path: &str, reason: impl Into<String>) -> DataModelError {
    DataModelError {
        path: if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
        reason: reason.into(),
    }
}

/// Convert lex-JSON to a data-model value, enforcing the rules: the top level
/// is an object; numbers are integers (an integral float such as `1.0` is taken
/// as the integer); `$link` and `$bytes` objects have exactly that one key and
/// a valid CID / base64 string; `$type`, where present, is a non-empty string;
/// blobs (`$type: blob`) have `ref` (link), `mimeType` (string), `size` (integer).
pub fn from_lex_json(json: &serde_json::Value) -> Result<Value<'static>, DataModelError> {
    if !json.is_object() {
        return Err(dm_err("", "top level is not an object"));
    }
    let mut path = String::new();
    let v = convert(json, &mut path, 0)?;
    Ok(v)
}

fn convert(
    json: &serde_json::Value,
    path: &mut String,
    depth: usize,
) -> Result<Value<'static>, DataModelError> {
    if depth > crate::cbor::MAX_DEPTH {
        return Err(dm_err(path, "nesting too deep"));
    }
    Ok(match json {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Integer(i)
            } else if let Some(f) = n.as_f64() {
                if f.fract() == 0.0 && f.abs() < EXACT_FLOAT {
                    Value::Integer(f as i64)
                } else {
                    return Err(dm_err(path, format!("number {n} is not an integer")));
                }
            } else {
                return Err(dm_err(
                    path,
                    format!("integer {n} out of the signed 64-bit range"),
                ));
            }
        }
        serde_json::Value::String(s) => Value::String(Cow::Owned(s.clone())),
        serde_json::Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                out.push(convert(item, path, depth + 1)?);
                path.truncate(len);
            }
            Value::Array(out)
        }
        serde_json::Value::Object(obj) => {
            if let Some(link) = obj.get("$link") {
                let s = link
                    .as_str()
                    .ok_or_else(|| dm_err(path, "$link is not a string"))?;
                if obj.len() != 1 {
                    return Err(dm_err(path, "$link object has extra fields"));
                }
                let cid: Cid = s.parse().map_err(|e| dm_err(path, format!("$link: {e}")))?;
                return Ok(Value::Link(cid));
            }
            if let Some(bytes) = obj.get("$bytes") {
                let s = bytes
                    .as_str()
                    .ok_or_else(|| dm_err(path, "$bytes is not a string"))?;
                if obj.len() != 1 {
                    return Err(dm_err(path, "$bytes object has extra fields"));
                }
                let b = B64_LENIENT
                    .decode(s)
                    .map_err(|e| dm_err(path, format!("$bytes: {e}")))?;
                return Ok(Value::Bytes(Cow::Owned(b)));
            }
            let mut entries = Vec::with_capacity(obj.len());
            for (k, v) in obj {
                let len = path.len();
                path.push('/');
                path.push_str(k);
                entries.push((Cow::Owned(k.clone()), convert(v, path, depth + 1)?));
                path.truncate(len);
            }
            // serde_json objects cannot repeat keys, so this cannot fail.
            let map = Map::from_entries(entries).ok_or_else(|| dm_err(path, "repeated key"))?;
            let value = Value::Map(map);
            validate_object(&value, path)?;
            value
        }
    })
}

/// A data-model value decoded straight from lex-JSON by serde, borrowing
/// the strings that need no unescaping: the one-pass form of
/// [`from_lex_json`] used by [`crate::jetstream::EventRef::parse`].
///
/// It accepts a subset of what `serde_json::Value` + [`from_lex_json`]
/// accept, with the same value: everything those reject, and the rare forms
/// they accept that it does not bother with (a repeated key, where
/// `serde_json` keeps the last, and a `$link`/`$bytes` string nested deeper
/// than [`crate::cbor::MAX_DEPTH`]), fail here, and the caller goes the slow
/// way for the error or the value. Its errors are not meant to be shown.
pub(crate) struct LexSeed {
    /// Nesting of the value: the record itself is 0.
    pub(crate) depth: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for LexSeed {
    type Value = Value<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value<'de>, D::Error> {
        if self.depth > crate::cbor::MAX_DEPTH {
            return Err(serde::de::Error::custom("nesting too deep"));
        }
        d.deserialize_any(LexVisitor { depth: self.depth })
    }
}

/// A record: an object (the top level of a record is never anything else).
pub(crate) struct RecordSeed;

impl<'de> serde::de::DeserializeSeed<'de> for RecordSeed {
    type Value = Value<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value<'de>, D::Error> {
        d.deserialize_map(LexVisitor { depth: 0 })
    }
}

struct LexVisitor {
    depth: usize,
}

/// Largest magnitude below which an integral float is taken as the integer (2^53).
const EXACT_FLOAT: f64 = 9.007_199_254_740_992e15;

impl<'de> serde::de::Visitor<'de> for LexVisitor {
    type Value = Value<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("atproto data")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Value<'de>, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Value<'de>, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: serde::de::Error>(self, i: i64) -> Result<Value<'de>, E> {
        Ok(Value::Integer(i))
    }

    fn visit_u64<E: serde::de::Error>(self, u: u64) -> Result<Value<'de>, E> {
        i64::try_from(u)
            .map(Value::Integer)
            .map_err(|_| E::custom("integer out of range"))
    }

    fn visit_f64<E: serde::de::Error>(self, f: f64) -> Result<Value<'de>, E> {
        if f.fract() == 0.0 && f.abs() < EXACT_FLOAT {
            Ok(Value::Integer(f as i64))
        } else {
            Err(E::custom("not an integer"))
        }
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, s: &'de str) -> Result<Value<'de>, E> {
        Ok(Value::String(Cow::Borrowed(s)))
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Value<'de>, E> {
        Ok(Value::String(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Value<'de>, E> {
        Ok(Value::String(Cow::Owned(s)))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element_seed(LexSeed {
            depth: self.depth + 1,
        })? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value<'de>, A::Error> {
        use serde::de::Error as _;
        let mut entries: Vec<(Cow<'de, str>, Value<'de>)> = Vec::new();
        while let Some(k) = map.next_key_seed(CowStr)? {
            let v = map.next_value_seed(LexSeed {
                depth: self.depth + 1,
            })?;
            entries.push((k, v));
        }
        if let [(k, v)] = entries.as_slice() {
            match (k.as_ref(), v) {
                ("$link", Value::String(s)) => {
                    let cid: Cid = s.parse().map_err(A::Error::custom)?;
                    return Ok(Value::Link(cid));
                }
                ("$bytes", Value::String(s)) => {
                    let b = B64_LENIENT.decode(s.as_bytes()).map_err(A::Error::custom)?;
                    return Ok(Value::Bytes(Cow::Owned(b)));
                }
                _ => {}
            }
        }
        if entries.iter().any(|(k, _)| k == "$link" || k == "$bytes") {
            return Err(A::Error::custom("bad $link or $bytes object"));
        }
        let map = Map::from_entries(entries).ok_or_else(|| A::Error::custom("repeated key"))?;
        let value = Value::Map(map);
        validate_object(&value, "").map_err(A::Error::custom)?;
        Ok(value)
    }
}

/// A string, borrowed from the input when it has no escapes.
pub(crate) struct CowStr;

impl<'de> serde::de::DeserializeSeed<'de> for CowStr {
    type Value = Cow<'de, str>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(CowStr)
    }
}

impl<'de> serde::de::Visitor<'de> for CowStr {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, s: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s))
    }
}

/// Check the object-level rules (`$type`, blob shape) on one map.
fn validate_object(value: &Value<'_>, path: &str) -> Result<(), DataModelError> {
    let Some(t) = value.get("$type") else {
        return Ok(());
    };
    let t = t
        .as_str()
        .ok_or_else(|| dm_err(path, format!("$type is {}, not a string", t.kind())))?;
    if t.is_empty() {
        return Err(dm_err(path, "$type is empty"));
    }
    if t == "blob" {
        match value.get("ref") {
            Some(Value::Link(_)) => {}
            Some(v) => {
                return Err(dm_err(
                    path,
                    format!("blob ref is {}, not a link", v.kind()),
                ))
            }
            None => return Err(dm_err(path, "blob has no ref")),
        }
        match value.get("mimeType") {
            Some(Value::String(_)) => {}
            _ => return Err(dm_err(path, "blob mimeType missing or not a string")),
        }
        match value.get("size") {
            Some(Value::Integer(_)) => {}
            _ => return Err(dm_err(path, "blob size missing or not an integer")),
        }
    }
    Ok(())
}

/// Check the data-model rules that DAG-CBOR decoding alone does not (`$type`
/// non-empty string, blob shape, no map keyed `$link`/`$bytes`) on a decoded value and everything inside it.
pub fn validate(value: &Value<'_>) -> Result<(), DataModelError> {
    fn walk(v: &Value<'_>, path: &mut String) -> Result<(), DataModelError> {
        match v {
            Value::Map(m) => {
                if m.get("$link").is_some() || m.get("$bytes").is_some() {
                    return Err(dm_err(
                        path,
                        "$link and $bytes keys are reserved for lex-JSON",
                    ));
                }
                validate_object(v, path)?;
                for (k, child) in m.iter() {
                    let len = path.len();
                    path.push('/');
                    path.push_str(k);
                    walk(child, path)?;
                    path.truncate(len);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    let len = path.len();
                    path.push('/');
                    path.push_str(&i.to_string());
                    walk(child, path)?;
                    path.truncate(len);
                }
            }
            _ => {}
        }
        Ok(())
    }
    walk(value, &mut String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_escape_is_exact_for_every_byte_at_every_place() {
        let naive = |w: [u8; 8]| w.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
        for filler in [b'a', 0x7f, 0x80, 0xff, 0x21, 0x5d] {
            for place in 0..8 {
                for b in 0..=255u8 {
                    let mut w = [filler; 8];
                    w[place] = b;
                    assert_eq!(needs_escape(u64::from_le_bytes(w)), naive(w), "{w:?}");
                }
            }
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            assert_eq!(needs_escape(x), naive(x.to_le_bytes()), "{x:#x}");
        }
    }

    #[test]
    fn link_and_bytes_round_trip() {
        let json: serde_json::Value = serde_json::json!({
            "a": {"$link": "bafyreidfayvfuwqa7qlnopdjiqrxzs6blmoeu4rujcjtnci5beludirz2a"},
            "b": {"$bytes": "nFERjvLLiw9qm45JrqH9QTzyC2Lu1Xb4ne6+sBrCzI0"},
            "n": 5,
        });
        let v = from_lex_json(&json).expect("convert");
        assert!(matches!(v.get("a"), Some(Value::Link(_))));
        assert_eq!(
            v.get("b").and_then(Value::as_bytes).map(<[u8]>::len),
            Some(32)
        );
        assert_eq!(to_json_value(&v), json);
    }

    #[test]
    fn errors_name_the_path() {
        let json = serde_json::json!({"x": [{"$type": ""}]});
        let e = from_lex_json(&json).expect_err("empty type");
        assert_eq!(e.path, "/x/0");
        let json = serde_json::json!({"x": 1.5});
        assert_eq!(from_lex_json(&json).expect_err("float").path, "/x");
    }
}
