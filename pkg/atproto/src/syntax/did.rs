//! Decentralized identifiers (`did:method:identifier`), atproto's stable
//! account ids.

/// Longest DID accepted; the atproto spec sets an initial hard limit of 2 KB.
pub(crate) const MAX_LEN: usize = 2048;

/// A syntactically valid DID, e.g. `did:plc:ewvi7nxzyoun6zhxrhs64oiz`.
///
/// Rules (atproto DID spec): ASCII only; lowercase `did:` prefix; a method of
/// one or more lowercase letters; a non-empty identifier of
/// `A-Za-z0-9._:%-` that does not end in `:` or `%`; at most 2048 chars.
/// DIDs are case-sensitive and are not normalized. Percent-encoding is not
/// decoded or checked beyond the character set, as the spec allows.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Did(String);

/// The method-specific identifier's characters.
const ID_CHARS: [bool; 256] = super::alnum_and(b"._:%-");

pub(crate) fn check(s: &str) -> Result<(), &'static str> {
    let b = s.as_bytes();
    if b.len() > MAX_LEN {
        return Err("too long (max 2048 chars)");
    }
    let Some(rest) = b.strip_prefix(b"did:") else {
        return Err("must start with \"did:\"");
    };
    let mut i = 0;
    while i < rest.len() && rest[i].is_ascii_lowercase() {
        i += 1;
    }
    if i == 0 {
        return Err("method must be one or more lowercase letters");
    }
    match rest.get(i) {
        Some(b':') => {}
        Some(_) => return Err("method must be one or more lowercase letters"),
        None => return Err("missing method-specific identifier"),
    }
    let id = &rest[i + 1..];
    let Some(&last) = id.last() else {
        return Err("empty method-specific identifier");
    };
    if !super::all_in(&ID_CHARS, id) {
        return Err("invalid character (allowed: A-Z a-z 0-9 . _ : % -)");
    }
    if last == b':' || last == b'%' {
        return Err("must not end in ':' or '%'");
    }
    Ok(())
}

string_newtype!(Did, Did, check);

impl Did {
    /// The DID method, e.g. `plc` or `web`: callers dispatch resolution on it.
    pub fn method(&self) -> &str {
        self.0[4..].split_once(':').map_or("", |(m, _)| m)
    }

    /// The method-specific identifier (everything after `did:method:`).
    pub fn identifier(&self) -> &str {
        self.0[4..].split_once(':').map_or("", |(_, id)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors() {
        let d = Did::try_from("did:web:localhost%3A1234").expect("valid");
        assert_eq!(d.method(), "web");
        assert_eq!(d.identifier(), "localhost%3A1234");
        let d = Did::try_from("did:method::x").expect("valid");
        assert_eq!(d.method(), "method");
        assert_eq!(d.identifier(), ":x");
    }

    #[test]
    fn length_limit_is_inclusive() {
        let ok = format!("did:plc:{}", "a".repeat(MAX_LEN - 8));
        assert!(Did::is_valid(&ok));
        let too_long = format!("{ok}a");
        assert!(!Did::is_valid(&too_long));
    }
}
