//! CID strings in their loose atproto syntax (Lexicon `cid` format).

/// A string that passes atproto's loose CID syntax check, e.g.
/// `bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm`.
///
/// Rules (atproto Lexicon `cid` format): 8-256 chars of `A-Za-z0-9+=`, and not
/// a legacy CIDv0 (base58btc sha2-256, always `Qm` + 44 chars), which atproto
/// does not allow. This does not decode the multibase or check the codec and
/// hash: use [`crate::Cid`] when the binary CID matters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CidString(String);

pub(crate) fn check(s: &str) -> Result<(), &'static str> {
    let b = s.as_bytes();
    if b.len() < 8 {
        return Err("too short (min 8 chars)");
    }
    if b.len() > 256 {
        return Err("too long (max 256 chars)");
    }
    if !b
        .iter()
        .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'=')
    {
        return Err("invalid character (allowed: A-Z a-z 0-9 + =)");
    }
    if b.len() == 46 && b.starts_with(b"Qm") {
        return Err("CIDv0 is not allowed");
    }
    Ok(())
}

string_newtype!(CidString, Cid, check);
