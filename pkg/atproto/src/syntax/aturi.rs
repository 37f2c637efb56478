//! AT-URIs (`at://authority/collection/rkey`): references to repositories,
//! collections and records.

use super::{
    atidentifier, nsid, rkey, AtIdentifier, Did, Handle, Nsid, RecordKey, Rejected, SyntaxError,
};

/// Longest AT-URI accepted (8 KB, per the AT-URI spec).
pub(crate) const MAX_LEN: usize = 8192;
const PREFIX: &str = "at://";

/// A valid AT-URI in the restricted atproto syntax, e.g.
/// `at://did:plc:44ybard66vv44zksje25o7dz/app.bsky.feed.post/3jwdwj2ctlk26`.
///
/// Rules (AT-URI spec, restricted syntax used by Lexicon `at-uri`):
/// `at://AUTHORITY[/COLLECTION[/RKEY]]` where the authority is a DID or a
/// handle, the collection an NSID and the record key a record key; lowercase
/// `at://`, no trailing slash, no empty or extra path segments, no query or
/// fragment, at most 8192 chars. Kept as written (a handle authority is not
/// lowercased).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AtUri(String);

pub(crate) fn check(s: &str) -> Result<(), &'static str> {
    if valid(s) {
        Ok(())
    } else {
        reason(s)
    }
}

/// The rules in one pass over the segments: every segment's own check
/// refuses `#`, `?` and emptiness, so a valid URI needs no separate scan for
/// them; [`reason`] (the rules one by one, in the order of their messages)
/// runs only for an invalid one. Tests hold the two to the same verdict.
fn valid(s: &str) -> bool {
    let Some(rest) = s.strip_prefix(PREFIX) else {
        return false;
    };
    if s.len() > MAX_LEN {
        return false;
    }
    let mut parts = rest.splitn(3, '/');
    let authority = parts.next().unwrap_or("");
    if atidentifier::check(authority).is_err() {
        return false;
    }
    match (parts.next(), parts.next()) {
        (None, _) => true,
        (Some(collection), key) => {
            nsid::check(collection).is_ok() && key.is_none_or(|k| rkey::check(k).is_ok())
        }
    }
}

/// Why `s` is not an AT-URI (`Ok` only if it is one).
fn reason(s: &str) -> Result<(), &'static str> {
    if s.len() > MAX_LEN {
        return Err("too long (max 8192 chars)");
    }
    let Some(rest) = s.strip_prefix(PREFIX) else {
        return Err("must start with \"at://\"");
    };
    if rest.bytes().any(|c| c == b'#' || c == b'?') {
        return Err("query and fragment are not allowed");
    }
    if rest.ends_with('/') {
        return Err("trailing slash is not allowed");
    }
    let mut parts = rest.split('/');
    let authority = parts.next().unwrap_or("");
    if authority.is_empty() {
        return Err("missing authority");
    }
    if atidentifier::check(authority).is_err() {
        return Err("authority is not a valid DID or handle");
    }
    if let Some(collection) = parts.next() {
        if collection.is_empty() {
            return Err("empty path segment");
        }
        if nsid::check(collection).is_err() {
            return Err("collection is not a valid NSID");
        }
    }
    if let Some(key) = parts.next() {
        if key.is_empty() {
            return Err("empty path segment");
        }
        if rkey::check(key).is_err() {
            return Err("record key is not valid");
        }
    }
    if parts.next().is_some() {
        return Err("too many path segments (at most collection and record key)");
    }
    Ok(())
}

string_newtype!(AtUri, AtUri, check);

impl AtUri {
    /// The URI of one record. Infallible: valid parts always make a valid
    /// AT-URI within the length limit.
    pub fn record(did: &Did, collection: &Nsid, rkey: &RecordKey) -> AtUri {
        AtUri(format!("{PREFIX}{did}/{collection}/{rkey}"))
    }

    /// The URI of a repository, a collection or a record, from parts.
    /// Fails only if a record key is given without a collection.
    pub fn from_parts(
        authority: &AtIdentifier,
        collection: Option<&Nsid>,
        rkey: Option<&RecordKey>,
    ) -> Result<AtUri, SyntaxError> {
        let s = match (collection, rkey) {
            (None, None) => format!("{PREFIX}{authority}"),
            (Some(c), None) => format!("{PREFIX}{authority}/{c}"),
            (Some(c), Some(k)) => format!("{PREFIX}{authority}/{c}/{k}"),
            (None, Some(k)) => {
                return Err(SyntaxError::AtUri(Rejected::new(
                    &format!("{PREFIX}{authority}//{k}"),
                    "record key without a collection",
                )))
            }
        };
        Ok(AtUri(s))
    }

    fn segments(&self) -> std::str::SplitN<'_, char> {
        self.0[PREFIX.len()..].splitn(3, '/')
    }

    /// The authority (DID or handle) as written.
    pub fn authority(&self) -> &str {
        self.segments().next().unwrap_or("")
    }

    /// Whether the authority is a DID (as opposed to a handle that needs resolving).
    pub fn authority_is_did(&self) -> bool {
        self.authority().starts_with("did:")
    }

    /// The authority as a typed identifier (copies it; no re-validation).
    pub fn authority_id(&self) -> AtIdentifier {
        let a = self.authority().to_owned();
        if a.starts_with("did:") {
            AtIdentifier::Did(Did::from_validated(a))
        } else {
            AtIdentifier::Handle(Handle::from_validated(a))
        }
    }

    /// The collection NSID, if the URI names one.
    pub fn collection(&self) -> Option<&str> {
        self.segments().nth(1)
    }

    /// The record key, if the URI names a record.
    pub fn rkey(&self) -> Option<&str> {
        self.segments().nth(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass check and the rule-by-rule one agree: on the interop
    /// vectors, each with every character changed to a few that matter, and
    /// on 200k strings built from the characters URIs are made of.
    #[test]
    fn the_fast_check_agrees_with_the_rules() {
        let agree = |s: &str| assert_eq!(valid(s), reason(s).is_ok(), "{s:?}");
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/interop/syntax/");
        for file in ["aturi_syntax_valid.txt", "aturi_syntax_invalid.txt"] {
            let text = std::fs::read_to_string(format!("{dir}{file}")).expect(file);
            let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
            assert!(lines.len() > 20, "{file}");
            for line in lines {
                agree(line);
                for (i, _) in line.char_indices() {
                    for c in ["/", "#", "?", "", ".", ":", "%", "~", "A"] {
                        let next = line[i..].chars().next().map_or(0, char::len_utf8);
                        agree(&format!("{}{c}{}", &line[..i], &line[i + next..]));
                    }
                }
            }
        }
        const ALPHABET: &[u8] = b"ad:/.#?-_~%3Ap";
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 24) as usize;
            let tail: String = (0..len)
                .map(|i| ALPHABET[((x >> (i * 2 % 60)) as usize + i) % ALPHABET.len()] as char)
                .collect();
            agree(&format!("at://did:plc:{tail}"));
            agree(&format!("at://{tail}"));
            agree(&format!("at://did:plc:x/app.bsky.{tail}"));
        }
    }

    #[test]
    fn reasons() {
        let reason = |s: &str| check(s).expect_err("invalid");
        assert_eq!(
            reason("at://did:plc:asdf123/"),
            "trailing slash is not allowed"
        );
        assert_eq!(
            reason("at://did:plc:asdf123#"),
            "query and fragment are not allowed"
        );
        assert_eq!(
            reason("at://did:plc:asdf123/short/stuff"),
            "collection is not a valid NSID"
        );
        assert_eq!(
            reason("at://user.bsky.social//com.atproto.feed.post"),
            "empty path segment"
        );
        assert_eq!(reason("AT://did:plc:asdf123"), "must start with \"at://\"");
    }
}
