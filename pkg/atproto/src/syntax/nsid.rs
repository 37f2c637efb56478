//! Namespaced identifiers: Lexicon schema ids and record collections.

use super::handle::check_label;

/// Longest NSID accepted (spec: 253-char authority + `.` + 63-char name).
pub(crate) const MAX_LEN: usize = 317;

/// A syntactically valid NSID, e.g. `app.bsky.feed.post`.
///
/// Rules (atproto NSID spec): ASCII, at most 317 chars, at least three
/// `.`-separated segments. All but the last form the domain authority (a
/// hostname in reverse order): each segment 1-63 of
/// `A-Za-z0-9-` with no hyphen at either end, and the first segment (the TLD)
/// must not start with a digit. The last segment is the name: 1-63 ASCII
/// letters and digits, not starting with a digit. The authority is
/// case-insensitive and the name case-sensitive; the string is kept as given.
///
/// The spec prose also caps the authority at 253 chars, but the interop
/// vectors (and the reference validators) accept a 280-char authority inside
/// the 317-char total, so only the total is enforced here.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nsid(String);

pub(crate) fn check(s: &str) -> Result<(), &'static str> {
    let b = s.as_bytes();
    if b.len() > MAX_LEN {
        return Err("too long (max 317 chars)");
    }
    let Some(dot) = b.iter().rposition(|&c| c == b'.') else {
        return Err("needs at least three segments");
    };
    let (authority, name) = (&b[..dot], &b[dot + 1..]);
    match name.first() {
        None => return Err("empty name segment"),
        Some(c) if !c.is_ascii_alphabetic() => return Err("name segment must start with a letter"),
        Some(_) => {}
    }
    if name.len() > 63 {
        return Err("name segment too long (max 63 chars)");
    }
    if !name.iter().all(u8::is_ascii_alphanumeric) {
        return Err("name segment may only contain letters and digits");
    }
    let mut segments = 0usize;
    for seg in authority.split(|&c| c == b'.') {
        check_label(seg)?;
        if segments == 0 && seg.first().is_some_and(u8::is_ascii_digit) {
            return Err("first segment (top-level domain) starts with a digit");
        }
        segments += 1;
    }
    if segments < 2 {
        return Err("needs at least three segments");
    }
    Ok(())
}

string_newtype!(Nsid, Nsid, check);

impl Nsid {
    /// The domain authority exactly as written in the NSID (reverse order),
    /// e.g. `app.bsky.feed` for `app.bsky.feed.post`; groups collections by
    /// namespace without allocating.
    pub fn authority(&self) -> &str {
        self.0.rsplit_once('.').map_or("", |(a, _)| a)
    }

    /// The authority as a DNS hostname in normal order, lowercased, e.g.
    /// `feed.bsky.app`: the name to look up when resolving the schema.
    pub fn authority_domain(&self) -> String {
        let mut out = String::with_capacity(self.authority().len());
        for (i, seg) in self.authority().rsplit('.').enumerate() {
            if i > 0 {
                out.push('.');
            }
            out.push_str(seg);
        }
        out.make_ascii_lowercase();
        out
    }

    /// The name segment, e.g. `post` for `app.bsky.feed.post`.
    pub fn name(&self) -> &str {
        self.0.rsplit_once('.').map_or("", |(_, n)| n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors() {
        let n = Nsid::try_from("App.Bsky.feed.postV2").expect("valid");
        assert_eq!(n.authority(), "App.Bsky.feed");
        assert_eq!(n.authority_domain(), "feed.bsky.app");
        assert_eq!(n.name(), "postV2");
    }

    #[test]
    fn reasons() {
        let reason = |s: &str| check(s).expect_err("invalid");
        assert_eq!(reason("com.example"), "needs at least three segments");
        assert_eq!(
            reason("com.example.fooBar.2"),
            "name segment must start with a letter"
        );
        assert_eq!(
            reason("1.0.0.127.record"),
            "first segment (top-level domain) starts with a digit"
        );
        assert_eq!(
            reason("com.atproto.feed.p_st"),
            "name segment may only contain letters and digits"
        );
    }
}
