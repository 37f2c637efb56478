//! Handles: DNS hostnames used as human-readable account names.

/// Longest handle accepted (the DNS hostname limit).
pub(crate) const MAX_LEN: usize = 253;
/// Longest single label (DNS limit).
pub(crate) const MAX_LABEL_LEN: usize = 63;

/// Top-level domains that are syntactically fine in a handle but must not be
/// resolved or accepted for real accounts (atproto handle spec: local,
/// reserved or non-DNS namespaces). Compared case-insensitively, without the dot.
pub const DISALLOWED_TLDS: &[&str] = &[
    "alt",
    "arpa",
    "example",
    "internal",
    "invalid",
    "local",
    "localhost",
    "onion",
];

/// The placeholder the network shows for an account whose handle failed
/// bidirectional verification. Syntactically valid, never resolvable.
pub const INVALID_HANDLE: &str = "handle.invalid";

/// A syntactically valid handle, e.g. `alice.bsky.social`.
///
/// Rules (atproto handle spec): ASCII hostname of at most 253 chars, two or
/// more labels separated by `.`; each label 1-63 chars of `A-Za-z0-9-`, not
/// starting or ending with `-`; the last label (TLD) must not start with a
/// digit. Validation is case-insensitive and keeps the input as given; call
/// [`Handle::normalize`] to get the canonical lowercase form before comparing
/// or storing. Reserved TLDs (see [`DISALLOWED_TLDS`]) pass syntax: check
/// [`Handle::has_disallowed_tld`] before resolving.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(String);

/// Checks one DNS-style label: 1-63 of `A-Za-z0-9-`, no hyphen at either end.
/// A DNS label's characters.
const LABEL_CHARS: [bool; 256] = super::alnum_and(b"-");

pub(crate) fn check_label(label: &[u8]) -> Result<(), &'static str> {
    let (Some(&first), Some(&last)) = (label.first(), label.last()) else {
        return Err("empty label");
    };
    if label.len() > MAX_LABEL_LEN {
        return Err("label too long (max 63 chars)");
    }
    if !super::all_in(&LABEL_CHARS, label) {
        return Err("invalid character (allowed: A-Z a-z 0-9 - and . between labels)");
    }
    if first == b'-' || last == b'-' {
        return Err("label starts or ends with a hyphen");
    }
    Ok(())
}

pub(crate) fn check(s: &str) -> Result<(), &'static str> {
    let b = s.as_bytes();
    if b.len() > MAX_LEN {
        return Err("too long (max 253 chars)");
    }
    let mut labels = 0usize;
    let mut tld: &[u8] = &[];
    for label in b.split(|&c| c == b'.') {
        check_label(label)?;
        labels += 1;
        tld = label;
    }
    if labels < 2 {
        return Err("needs at least two labels");
    }
    if tld.first().is_some_and(u8::is_ascii_digit) {
        return Err("top-level domain starts with a digit");
    }
    Ok(())
}

string_newtype!(Handle, Handle, check);

/// Whether `handle` ends in one of the [`DISALLOWED_TLDS`] (case-insensitive).
/// Such handles are syntactically valid but must not be resolved or trusted;
/// works on unvalidated strings so it can run before parsing.
pub fn is_disallowed_tld(handle: &str) -> bool {
    let tld = handle.rsplit('.').next().unwrap_or(handle);
    DISALLOWED_TLDS.iter().any(|t| t.eq_ignore_ascii_case(tld))
}

impl Handle {
    /// The canonical lowercase form. Handles are case-insensitive, so
    /// normalize before comparing, deduplicating or using as a key. Reuses the
    /// allocation.
    pub fn normalize(mut self) -> Handle {
        self.0.make_ascii_lowercase();
        self
    }

    /// Whether the handle is already in lowercase canonical form.
    pub fn is_normalized(&self) -> bool {
        !self.0.bytes().any(|c| c.is_ascii_uppercase())
    }

    /// Whether the TLD is reserved (see [`is_disallowed_tld`]).
    pub fn has_disallowed_tld(&self) -> bool {
        is_disallowed_tld(&self.0)
    }

    /// The top-level domain label, as written.
    pub fn tld(&self) -> &str {
        self.0.rsplit('.').next().unwrap_or(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_lowercases() {
        let h = Handle::try_from("XX.LCS.MIT.EDU").expect("valid");
        assert!(!h.is_normalized());
        let n = h.normalize();
        assert_eq!(n.as_str(), "xx.lcs.mit.edu");
        assert!(n.is_normalized());
    }

    #[test]
    fn disallowed_tlds() {
        for h in [
            "laptop.local",
            "x.ARPA",
            "handle.invalid",
            "a.localhost",
            "b.internal",
            "c.example",
            "d.onion",
            "e.alt",
        ] {
            assert!(Handle::is_valid(h), "{h}");
            assert!(
                Handle::try_from(h).expect("valid").has_disallowed_tld(),
                "{h}"
            );
        }
        for h in [
            "alice.bsky.social",
            "a.test",
            "local.com",
            "onion.net",
            "x.alternative",
        ] {
            assert!(!is_disallowed_tld(h), "{h}");
        }
        assert!(is_disallowed_tld(INVALID_HANDLE));
    }

    #[test]
    fn reasons() {
        let reason = |s: &str| check(s).expect_err("invalid");
        assert_eq!(reason("john..test"), "empty label");
        assert_eq!(reason("john"), "needs at least two labels");
        assert_eq!(reason("john.0"), "top-level domain starts with a digit");
        assert_eq!(reason("-john.test"), "label starts or ends with a hyphen");
    }
}
