//! Generic URIs (Lexicon `uri` format): any scheme, loosely checked.

/// Longest URI accepted (Lexicon `uri` format: 8 KB).
pub(crate) const MAX_LEN: usize = 8192;

/// A string that passes the loose generic URI check, e.g.
/// `https://example.com/path` or `dns:example.com`.
///
/// Rules: an RFC 3986 scheme (an ASCII letter, then letters, digits, `+`, `-`
/// or `.`), a `:`, then at least one char, every char being visible ASCII
/// (no whitespace, controls or non-ASCII), at most 8192 chars in all. It does
/// not parse the authority, path or percent-encoding: this is the
/// "is it plausibly a URI" check atproto Lexicons apply, not an RFC 3986 parser.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uri(String);

pub(crate) fn check(s: &str) -> Result<(), &'static str> {
    let b = s.as_bytes();
    if b.len() > MAX_LEN {
        return Err("too long (max 8192 chars)");
    }
    let Some(colon) = b.iter().position(|&c| c == b':') else {
        return Err("missing scheme");
    };
    let scheme = &b[..colon];
    if !scheme.first().is_some_and(u8::is_ascii_alphabetic)
        || !scheme
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
    {
        return Err("scheme must be a letter followed by letters, digits, + - or .");
    }
    let rest = &b[colon + 1..];
    if rest.is_empty() {
        return Err("nothing after the scheme");
    }
    if !rest.iter().all(u8::is_ascii_graphic) {
        return Err("whitespace, control or non-ASCII character");
    }
    Ok(())
}

string_newtype!(Uri, Uri, check);

/// Whether `s` passes the loose generic URI check (see [`Uri`]), without
/// allocating.
pub fn is_valid_uri(s: &str) -> bool {
    check(s).is_ok()
}
