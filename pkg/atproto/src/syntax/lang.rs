//! BCP 47 language tags, as used in post `langs` and Lexicon `language` fields.

/// A valid language tag, e.g. `en`, `pt-BR`, `zh-Hant`, `i-navajo`, `x-klingon`.
///
/// Syntax (atproto's deliberately naive BCP 47 check): `-`-separated subtags
/// of ASCII letters and digits, each 1-8 chars. The first subtag is either a
/// 2-3 letter lowercase primary language, or a singleton `i` (grandfathered
/// tags) or `x` (private use; either case) that must be followed by at least
/// one more subtag. The order of script/region/variant subtags is not checked.
///
/// On top of the syntax, tags whose primary subtag is a language must be
/// well-formed per RFC 5646 §2.2.6-2.2.9: a variant subtag (5-8 chars, or 4
/// starting with a digit) may not repeat, an extension singleton may not
/// repeat, each extension needs at least one 2-8 char subtag and `x` at least
/// one subtag after it. Repeats are compared case-insensitively, since tags
/// are. The tag is kept as written (no case normalization).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Language(String);

/// The shape check: subtag characters and lengths and the primary subtag.
fn check_syntax(s: &str) -> Result<(), &'static str> {
    let mut subtags = s.split('-');
    let first = subtags.next().unwrap_or("");
    let singleton = matches!(first, "i" | "I" | "x" | "X");
    let language = matches!(first.len(), 2 | 3) && first.bytes().all(|c| c.is_ascii_lowercase());
    if !singleton && !language {
        return Err("primary subtag must be 2-3 lowercase letters, or i-/x- followed by subtags");
    }
    let mut count = 0usize;
    for sub in subtags {
        if sub.is_empty() {
            return Err("empty subtag");
        }
        if sub.len() > 8 {
            return Err("subtag longer than 8 chars");
        }
        if !sub.bytes().all(|c| c.is_ascii_alphanumeric()) {
            return Err("subtags may only contain ASCII letters and digits");
        }
        count += 1;
    }
    if singleton && count == 0 {
        return Err("primary subtag must be 2-3 lowercase letters, or i-/x- followed by subtags");
    }
    Ok(())
}

/// Bit for an alphanumeric singleton in a 36-bit set, case-insensitive.
fn singleton_bit(c: u8) -> u64 {
    match c.to_ascii_lowercase() {
        c @ b'0'..=b'9' => 1 << (c - b'0'),
        c => 1 << (10 + (c.wrapping_sub(b'a') % 26)),
    }
}

/// RFC 5646 well-formedness beyond the shape (assumes `check_syntax` passed).
fn check_parse(s: &str) -> Result<(), &'static str> {
    let mut subtags = s.split('-');
    let first = subtags.next().unwrap_or("");
    if first.len() == 1 {
        // Grandfathered `i-…` and private-use `x-…` tags have no inner structure.
        return Ok(());
    }
    /// Where in the tag the walk is.
    enum State {
        /// Language, extlang, script, region and variant subtags.
        Main,
        /// Inside an extension, with how many subtags it has so far.
        Extension(usize),
        /// Inside the private-use section, with how many subtags so far.
        Private(usize),
    }
    let mut state = State::Main;
    let mut seen_singletons = 0u64;
    // Byte offset where the main section's subtags (after the primary) start.
    let main_start = first.len() + 1;
    let mut offset = first.len() + 1;
    for sub in subtags {
        let b = sub.as_bytes();
        match state {
            State::Private(n) => state = State::Private(n + 1),
            _ if b.len() == 1 => {
                if matches!(state, State::Extension(0)) {
                    return Err("extension has no subtags");
                }
                if b[0].eq_ignore_ascii_case(&b'x') {
                    state = State::Private(0);
                } else {
                    let bit = singleton_bit(b[0]);
                    if seen_singletons & bit != 0 {
                        return Err("duplicate extension singleton");
                    }
                    seen_singletons |= bit;
                    state = State::Extension(0);
                }
            }
            State::Extension(n) => {
                if b.len() < 2 {
                    return Err("extension subtags must be 2-8 chars");
                }
                state = State::Extension(n + 1);
            }
            State::Main => {
                let variant = b.len() >= 5 || (b.len() == 4 && b[0].is_ascii_digit());
                if variant && offset > main_start {
                    let earlier = &s[main_start..offset - 1];
                    if earlier.split('-').any(|e| e.eq_ignore_ascii_case(sub)) {
                        return Err("duplicate variant subtag");
                    }
                }
            }
        }
        offset += sub.len() + 1;
    }
    match state {
        State::Extension(0) => Err("extension has no subtags"),
        State::Private(0) => Err("private-use section has no subtags"),
        _ => Ok(()),
    }
}

fn check(s: &str) -> Result<(), &'static str> {
    check_syntax(s)?;
    check_parse(s)
}

string_newtype!(Language, Language, check);

impl Language {
    /// Whether `s` has the language tag shape only, without the RFC 5646
    /// duplicate checks; e.g. `de-DE-1901-1901` passes this but not
    /// [`Language::is_valid`].
    pub fn is_valid_syntax(s: &str) -> bool {
        check_syntax(s).is_ok()
    }

    /// The primary subtag (`en` for `en-GB`; `i` or `x` for grandfathered and
    /// private-use tags), for grouping posts by language.
    pub fn primary(&self) -> &str {
        self.0.split('-').next().unwrap_or(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structure() {
        assert_eq!(Language::try_from("en-GB").expect("valid").primary(), "en");
        assert_eq!(Language::try_from("X-fr-CH").expect("valid").primary(), "X");
        assert!(!Language::is_valid("en-a"));
        assert!(!Language::is_valid("en-a-b-foo"));
        assert!(!Language::is_valid("en-x"));
        assert!(Language::is_valid_syntax("en-x"));
        assert!(Language::is_valid("en-x-a-a"));
        assert!(Language::is_valid("en-1901-x-1901"));
        assert!(!Language::is_valid("i"));
        assert!(!Language::is_valid("x"));
        assert!(!Language::is_valid("en-toolongsub"));
        assert!(Language::is_valid("de-419-DE"));
        assert!(!Language::is_valid("de-1901-u-co-1901-1901-U-xx"));
        assert!(Language::is_valid("de-1901-u-co-1901-1901"));
    }
}
