//! Record keys: the last path segment of a record's AT-URI.

/// Longest record key accepted.
pub(crate) const MAX_LEN: usize = 512;

/// A syntactically valid record key, e.g. `3jzfcijpj2z2a` or `self`.
///
/// Rules (atproto record key spec): 1-512 chars of `A-Za-z0-9._:~-`, and not
/// exactly `.` or `..` (which would be path traversal in URIs). Case-sensitive.
/// Collection-specific key types (TID, literal) are checked by the Lexicon
/// layer, not here.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey(String);

/// A record key's characters.
const KEY_CHARS: [bool; 256] = super::alnum_and(b"._:~-");

pub(crate) fn check(s: &str) -> Result<(), &'static str> {
    let b = s.as_bytes();
    if b.is_empty() {
        return Err("empty");
    }
    if b.len() > MAX_LEN {
        return Err("too long (max 512 chars)");
    }
    if !super::all_in(&KEY_CHARS, b) {
        return Err("invalid character (allowed: A-Z a-z 0-9 . _ : ~ -)");
    }
    if b == b"." || b == b".." {
        return Err("must not be \".\" or \"..\"");
    }
    Ok(())
}

string_newtype!(RecordKey, RecordKey, check);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots() {
        assert!(!RecordKey::is_valid("."));
        assert!(!RecordKey::is_valid(".."));
        assert!(RecordKey::is_valid("..."));
        assert!(!RecordKey::is_valid(""));
    }
}
