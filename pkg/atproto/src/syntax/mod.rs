//! Validated AT Protocol identifier syntax: DID, handle, NSID, AT-URI, TID,
//! record key, datetime, CID string, language tag.
//!
//! Every identifier is a newtype over `String` that can only be built through
//! validation (`FromStr`, `TryFrom<&str>`, `TryFrom<String>`, serde
//! deserialization), so code holding a [`Did`] or an [`AtUri`] never has to
//! re-check it. Each type also has an allocation-free `is_valid(&str)` for hot
//! paths (firehose filtering) that only need a yes/no.
//!
//! The rules follow the atproto specs and are pinned by the interop vectors in
//! `testdata/interop/syntax/`. Validators are hand-written byte loops (no regex).
//! Two types ([`Datetime`], [`Language`]) have a second, semantic stage on top
//! of the shape check (calendar ranges, duplicate subtags); their `is_valid`
//! runs both stages and `is_valid_syntax` only the first.

use std::fmt;

/// Implements the string-like trait set on a validated identifier type.
///
/// The type must provide `fn parse_owned(String) -> Result<Self, SyntaxError>`
/// (validate and take ownership) and `fn as_str(&self) -> &str`.
macro_rules! string_traits {
    ($ty:ident) => {
        impl ::std::str::FromStr for $ty {
            type Err = $crate::syntax::SyntaxError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse_owned(s.to_owned())
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = $crate::syntax::SyntaxError;
            fn try_from(s: &str) -> Result<Self, Self::Error> {
                Self::parse_owned(s.to_owned())
            }
        }

        impl TryFrom<String> for $ty {
            type Error = $crate::syntax::SyntaxError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse_owned(s)
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl ::std::ops::Deref for $ty {
            type Target = str;
            fn deref(&self) -> &str {
                self.as_str()
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl From<$ty> for String {
            fn from(v: $ty) -> String {
                v.into_string()
            }
        }

        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl ::serde::de::Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                        write!(
                            f,
                            "a string holding a valid {}",
                            $crate::syntax::kind_name::<$ty>()
                        )
                    }
                    fn visit_str<E: ::serde::de::Error>(self, v: &str) -> Result<$ty, E> {
                        $ty::parse_owned(v.to_owned()).map_err(E::custom)
                    }
                    fn visit_string<E: ::serde::de::Error>(self, v: String) -> Result<$ty, E> {
                        $ty::parse_owned(v).map_err(E::custom)
                    }
                }
                d.deserialize_string(V)
            }
        }
    };
}

/// Defines the common inherent API and all string traits of a plain validated
/// newtype `$ty(String)` whose rule is `$check(&str) -> Result<(), &'static str>`.
macro_rules! string_newtype {
    ($ty:ident, $variant:ident, $check:path) => {
        impl $ty {
            /// Whether `s` is valid, without allocating (for hot paths).
            pub fn is_valid(s: &str) -> bool {
                $check(s).is_ok()
            }

            /// The validated string.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Gives back the owned string without copying.
            pub fn into_string(self) -> String {
                self.0
            }

            /// Wraps a string the caller has already validated (crate-internal).
            #[allow(dead_code)]
            pub(crate) fn from_validated(s: String) -> Self {
                debug_assert!($check(&s).is_ok(), "{s:?}");
                Self(s)
            }

            fn parse_owned(s: String) -> Result<Self, $crate::syntax::SyntaxError> {
                match $check(&s) {
                    Ok(()) => Ok(Self(s)),
                    Err(reason) => Err($crate::syntax::SyntaxError::$variant(
                        $crate::syntax::Rejected::new(&s, reason),
                    )),
                }
            }
        }

        /// Lets `HashMap<Self, _>` be queried with a plain `&str` (the hash and
        /// order of the newtype are those of the string).
        impl ::std::borrow::Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        string_traits!($ty);
    };
}

mod atidentifier;
mod aturi;
mod cidstr;
mod datetime;
mod did;
mod handle;
mod lang;
mod nsid;
mod rkey;
mod tid;
mod uri;

pub use atidentifier::AtIdentifier;
pub use aturi::AtUri;
pub use cidstr::CidString;
pub use datetime::{civil_from_days, parse_datetime_lenient, Datetime};
pub use did::Did;
pub use handle::{is_disallowed_tld, Handle, DISALLOWED_TLDS, INVALID_HANDLE};
pub use lang::Language;
pub use nsid::Nsid;
pub use rkey::RecordKey;
pub use tid::{Tid, TidGenerator};
pub use uri::{is_valid_uri, Uri};

/// Longest offending value quoted in an error message, in characters; keeps
/// log lines bounded when the input is an 8 KB garbage string.
const MAX_QUOTED_CHARS: usize = 64;

/// A rejected input (shortened for display) and the rule it broke. Shared
/// payload of every [`SyntaxError`] variant so callers can log or inspect it
/// uniformly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    value: String,
    reason: &'static str,
}

impl Rejected {
    pub(crate) fn new(value: &str, reason: &'static str) -> Rejected {
        let value = match value.char_indices().nth(MAX_QUOTED_CHARS) {
            Some((cut, _)) => format!("{}…", &value[..cut]),
            None => value.to_owned(),
        };
        Rejected { value, reason }
    }

    /// The offending input, cut to 64 characters (with `…`) if it was longer.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The rule the input broke, e.g. `"empty label"`.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.value, self.reason)
    }
}

/// Why a string is not a valid identifier of the requested kind. The variant
/// names the kind; the message is one line, e.g.
/// `invalid handle "foo..bar": empty label`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyntaxError {
    /// Not a valid [`Did`].
    #[error("invalid DID {0}")]
    Did(Rejected),
    /// Not a valid [`Handle`].
    #[error("invalid handle {0}")]
    Handle(Rejected),
    /// Not a valid [`AtIdentifier`] (neither DID nor handle).
    #[error("invalid AT identifier {0}")]
    AtIdentifier(Rejected),
    /// Not a valid [`Nsid`].
    #[error("invalid NSID {0}")]
    Nsid(Rejected),
    /// Not a valid [`AtUri`].
    #[error("invalid AT-URI {0}")]
    AtUri(Rejected),
    /// Not a valid [`Tid`] (or an integer out of TID range).
    #[error("invalid TID {0}")]
    Tid(Rejected),
    /// Not a valid [`RecordKey`].
    #[error("invalid record key {0}")]
    RecordKey(Rejected),
    /// Not a valid [`Datetime`].
    #[error("invalid datetime {0}")]
    Datetime(Rejected),
    /// Not a valid [`CidString`].
    #[error("invalid CID string {0}")]
    Cid(Rejected),
    /// Not a valid [`Language`] tag.
    #[error("invalid language tag {0}")]
    Language(Rejected),
    /// Not a valid [`Uri`].
    #[error("invalid URI {0}")]
    Uri(Rejected),
}

impl SyntaxError {
    /// The offending value and the broken rule, whatever the kind.
    pub fn rejected(&self) -> &Rejected {
        match self {
            SyntaxError::Did(r)
            | SyntaxError::Handle(r)
            | SyntaxError::AtIdentifier(r)
            | SyntaxError::Nsid(r)
            | SyntaxError::AtUri(r)
            | SyntaxError::Tid(r)
            | SyntaxError::RecordKey(r)
            | SyntaxError::Datetime(r)
            | SyntaxError::Cid(r)
            | SyntaxError::Language(r)
            | SyntaxError::Uri(r) => r,
        }
    }

    /// Short human name of the identifier kind, as used in the message.
    pub fn kind(&self) -> &'static str {
        match self {
            SyntaxError::Did(_) => "DID",
            SyntaxError::Handle(_) => "handle",
            SyntaxError::AtIdentifier(_) => "AT identifier",
            SyntaxError::Nsid(_) => "NSID",
            SyntaxError::AtUri(_) => "AT-URI",
            SyntaxError::Tid(_) => "TID",
            SyntaxError::RecordKey(_) => "record key",
            SyntaxError::Datetime(_) => "datetime",
            SyntaxError::Cid(_) => "CID string",
            SyntaxError::Language(_) => "language tag",
            SyntaxError::Uri(_) => "URI",
        }
    }
}

/// Name of an identifier type for serde's "expected ..." messages.
/// ASCII letters and digits plus `extra`: a byte class looked up in one
/// step (the syntax checks run on every key and URI of every record).
pub(crate) const fn alnum_and(extra: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = (c as u8).is_ascii_alphanumeric();
        c += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
}

/// Whether every byte of `s` is in `class`.
pub(crate) fn all_in(class: &[bool; 256], s: &[u8]) -> bool {
    s.iter().all(|&c| class[usize::from(c)])
}

pub(crate) fn kind_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_message_names_kind_value_and_reason() {
        let err = "foo..bar".parse::<Handle>().expect_err("invalid");
        assert_eq!(err.to_string(), r#"invalid handle "foo..bar": empty label"#);
        assert_eq!(err.kind(), "handle");
        assert_eq!(err.rejected().value(), "foo..bar");
    }

    #[test]
    fn error_message_truncates_long_values() {
        let long = "x".repeat(300);
        let err = long.parse::<Did>().expect_err("invalid");
        let msg = err.to_string();
        assert!(msg.len() < 120, "{msg}");
        assert!(msg.contains(&format!("\"{}…\"", "x".repeat(64))), "{msg}");
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn error_message_escapes_control_characters() {
        let err = "a\nb.test".parse::<Handle>().expect_err("invalid");
        assert!(!err.to_string().contains('\n'));
    }

    #[test]
    fn serde_round_trip_and_validation() {
        let did: Did = serde_json::from_str(r#""did:plc:abc""#).expect("valid");
        assert_eq!(
            serde_json::to_string(&did).expect("ser"),
            r#""did:plc:abc""#
        );
        let err = serde_json::from_str::<Did>(r#""did:PLC:abc""#).expect_err("invalid");
        assert!(err.to_string().contains("invalid DID"), "{err}");
        let uri: AtUri =
            serde_json::from_str(r#""at://did:plc:abc/app.bsky.feed.post/3k""#).expect("valid");
        assert_eq!(uri.rkey(), Some("3k"));
        assert!(serde_json::from_str::<Datetime>(r#""1985-02-30T00:00:00Z""#).is_err());
    }

    #[test]
    fn hashmap_lookup_by_str() {
        let mut m = std::collections::HashMap::new();
        m.insert(Did::try_from("did:plc:abc").expect("valid"), 1);
        assert_eq!(m.get("did:plc:abc"), Some(&1));
    }
}
