//! Content identifiers (CIDv1) as atproto uses them.
//!
//! A [`Cid`] is kept in its binary form inline (no heap), so CAR blocks, MST
//! entries and record links can be copied and hashed cheaply. atproto's
//! "blessed" CIDs are v1 with codec dag-cbor (`0x71`) or raw (`0x55`) and a
//! sha2-256 multihash; [`Cid::read_bytes`] enforces that (the DASL CID rules)
//! unless told otherwise, and the string form is multibase base32 (`b…`).

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Multicodec of DAG-CBOR blocks (records, commits, MST nodes).
pub const CODEC_DAG_CBOR: u64 = 0x71;
/// Multicodec of raw blocks (blobs).
pub const CODEC_RAW: u64 = 0x55;
/// Multihash code of sha2-256.
pub const HASH_SHA256: u64 = 0x12;
/// Multihash code of BLAKE3 (allowed by DASL, never by atproto repos).
pub const HASH_BLAKE3: u64 = 0x1e;

/// Longest binary CID we keep: v1, a one-byte codec (dag-cbor or raw), a
/// one-byte hash code (sha2-256 or BLAKE3) and a 32-byte digest. Every CID
/// [`Cid::read_bytes`] accepts is exactly this long.
const MAX_LEN: usize = 36;

/// A CIDv1 in binary form.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cid {
    len: u8,
    bytes: [u8; MAX_LEN],
}

/// Why a CID could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidError {
    /// The input ended inside the CID.
    #[error("truncated CID")]
    Truncated,
    /// The CID's version is not 1 (CIDv0 is not allowed in the atproto data model).
    #[error("unsupported CID version {0}")]
    Version(u64),
    /// The codec is neither dag-cbor nor raw.
    #[error("unsupported CID codec 0x{0:x}")]
    Codec(u64),
    /// The multihash is not sha2-256 (or BLAKE3 where allowed).
    #[error("unsupported CID hash 0x{0:x}")]
    Hash(u64),
    /// The digest length does not match the hash function.
    #[error("CID digest length {0} does not match its hash function")]
    DigestLength(u64),
    /// A varint was over-long or not minimally encoded.
    #[error("malformed varint in CID")]
    Varint,
    /// The string form is not multibase base32 lower-case (`b…`).
    #[error("CID string is not base32 multibase: {0:?}")]
    Multibase(String),
    /// Bytes followed the CID where none were allowed.
    #[error("trailing bytes after CID")]
    Trailing,
}

impl Cid {
    /// The CID of a DAG-CBOR block with the given sha2-256 digest.
    pub fn from_sha256(codec: u64, digest: [u8; 32]) -> Cid {
        let mut bytes = [0u8; MAX_LEN];
        bytes[0] = 1;
        bytes[1] = codec as u8; // both blessed codecs fit one varint byte
        bytes[2] = HASH_SHA256 as u8;
        bytes[3] = 32;
        bytes[4..36].copy_from_slice(&digest);
        Cid { len: 36, bytes }
    }

    /// Hash `data` and return its CID with `codec` (use [`CODEC_DAG_CBOR`] for records).
    pub fn compute(codec: u64, data: &[u8]) -> Cid {
        Cid::from_sha256(codec, Sha256::digest(data).into())
    }

    /// Read a binary CID from the front of `buf`, returning it and the bytes it used.
    /// Enforces the atproto/DASL rules: v1, dag-cbor or raw, sha2-256 (or BLAKE3) with a
    /// 32-byte digest.
    #[inline]
    pub fn read_bytes(buf: &[u8]) -> Result<(Cid, usize), CidError> {
        // Fast path: every CID in a repository is v1, dag-cbor or raw, sha2-256.
        if buf.len() >= 36
            && buf[0] == 1
            && (buf[1] == 0x71 || buf[1] == 0x55)
            && buf[2] == 0x12
            && buf[3] == 32
        {
            let mut bytes = [0u8; MAX_LEN];
            bytes[..36].copy_from_slice(&buf[..36]);
            return Ok((Cid { len: 36, bytes }, 36));
        }
        Cid::read_bytes_slow(buf)
    }

    fn read_bytes_slow(buf: &[u8]) -> Result<(Cid, usize), CidError> {
        let mut pos = 0;
        let version = read_varint(buf, &mut pos)?;
        if version != 1 {
            return Err(CidError::Version(version));
        }
        let codec = read_varint(buf, &mut pos)?;
        if codec != CODEC_DAG_CBOR && codec != CODEC_RAW {
            return Err(CidError::Codec(codec));
        }
        let hash = read_varint(buf, &mut pos)?;
        if hash != HASH_SHA256 && hash != HASH_BLAKE3 {
            return Err(CidError::Hash(hash));
        }
        let dlen = read_varint(buf, &mut pos)?;
        if dlen != 32 {
            return Err(CidError::DigestLength(dlen));
        }
        let end = pos + 32;
        if buf.len() < end {
            return Err(CidError::Truncated);
        }
        let mut bytes = [0u8; MAX_LEN];
        bytes[..end].copy_from_slice(&buf[..end]);
        Ok((
            Cid {
                len: end as u8,
                bytes,
            },
            end,
        ))
    }

    /// Parse a whole byte slice as one binary CID.
    pub fn from_bytes(buf: &[u8]) -> Result<Cid, CidError> {
        let (cid, used) = Cid::read_bytes(buf)?;
        if used != buf.len() {
            return Err(CidError::Trailing);
        }
        Ok(cid)
    }

    /// The binary form.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// The multicodec of the content (0x71 dag-cbor, 0x55 raw).
    pub fn codec(&self) -> u64 {
        u64::from(self.bytes[1])
    }

    /// The multihash digest (32 bytes).
    pub fn digest(&self) -> &[u8] {
        &self.bytes[self.len as usize - 32..self.len as usize]
    }

    /// Whether `data` hashes to this CID (sha2-256 only; BLAKE3 CIDs never match).
    pub fn matches(&self, data: &[u8]) -> bool {
        self.bytes[2] == HASH_SHA256 as u8 && Sha256::digest(data)[..] == *self.digest()
    }
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, CidError> {
    let mut value: u64 = 0;
    for i in 0..9 {
        let Some(&b) = buf.get(*pos) else {
            return Err(CidError::Truncated);
        };
        *pos += 1;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return Err(CidError::Varint); // not minimal
            }
            return Ok(value);
        }
    }
    Err(CidError::Varint)
}

const B32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Lower-case RFC 4648 base32 without padding (multibase `b`) of `data`
/// into `buf` (at least `ceil(8 * len / 5)` bytes); the length written.
fn base32_encode_into(data: &[u8], buf: &mut [u8]) -> usize {
    // Five bytes are eight digits: whole groups at once, then the rest
    // bit by bit.
    let mut n = 0;
    let mut groups = data.chunks_exact(5);
    for group in &mut groups {
        let mut word = [0u8; 8];
        word[3..].copy_from_slice(group);
        let bits = u64::from_be_bytes(word);
        for (i, out) in buf[n..n + 8].iter_mut().enumerate() {
            *out = B32[((bits >> (35 - 5 * i)) & 31) as usize];
        }
        n += 8;
    }
    let (mut acc, mut bits) = (0u32, 0u32);
    for &byte in groups.remainder() {
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            buf[n] = B32[((acc >> bits) & 31) as usize];
            n += 1;
        }
    }
    if bits > 0 {
        buf[n] = B32[((acc << (5 - bits)) & 31) as usize];
        n += 1;
    }
    n
}

/// Each byte's base32 digit (`a`–`z` 0–25, `2`–`7` 26–31), 0xff for others.
const B32_DIGITS: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 32 {
        t[B32[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// Decode lower-case base32 without padding; `None` on any other character.
pub(crate) fn base32_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = vec![0u8; s.len() * 5 / 8];
    let n = base32_decode_into(s, &mut out)?;
    out.truncate(n);
    Some(out)
}

/// [`base32_decode`] into `out` (at least `s.len() * 5 / 8` bytes): the
/// length written.
fn base32_decode_into(s: &str, out: &mut [u8]) -> Option<usize> {
    // Eight digits are five bytes: whole groups at once, then the rest
    // digit by digit.
    let mut n = 0usize;
    let mut groups = s.as_bytes().chunks_exact(8);
    for group in &mut groups {
        let (mut word, mut any) = (0u64, 0u8);
        for &c in group {
            let v = B32_DIGITS[usize::from(c)];
            any |= v;
            word = (word << 5) | u64::from(v);
        }
        // A non-digit is 0xff; every digit is below 32.
        if any >= 32 {
            return None;
        }
        out.get_mut(n..n + 5)?
            .copy_from_slice(&word.to_be_bytes()[3..]);
        n += 5;
    }
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in groups.remainder() {
        let v = B32_DIGITS[usize::from(c)];
        if v == 0xff {
            return None;
        }
        acc = (acc << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(n)? = (acc >> bits) as u8;
            n += 1;
        }
    }
    // Leftover bits must be zero padding of fewer than 5 bits.
    if bits >= 5 || acc & ((1 << bits) - 1) != 0 {
        return None;
    }
    Some(n)
}

impl std::hash::Hash for Cid {
    /// Eight bytes from the end of the digest: already uniformly distributed,
    /// and the same for equal CIDs (which have equal digests).
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let end = self.len as usize;
        let mut a = [0u8; 8];
        a.copy_from_slice(&self.bytes[end - 8..end]);
        state.write_u64(u64::from_le_bytes(a));
    }
}

impl FromStr for Cid {
    type Err = CidError;

    fn from_str(s: &str) -> Result<Cid, CidError> {
        let bad = || CidError::Multibase(s.chars().take(80).collect());
        let rest = s.strip_prefix('b').ok_or_else(bad)?;
        // Every CID atproto allows fits on the stack; a longer string still
        // decodes (to the error its bytes give).
        let mut buf = [0u8; 2 * MAX_LEN];
        if rest.len() * 5 / 8 <= buf.len() {
            let n = base32_decode_into(rest, &mut buf).ok_or_else(bad)?;
            return Cid::from_bytes(&buf[..n]);
        }
        let bytes = base32_decode(rest).ok_or_else(bad)?;
        Cid::from_bytes(&bytes)
    }
}

/// Room for the string form of the longest CID this type holds.
const TEXT_MAX: usize = 1 + (MAX_LEN * 8).div_ceil(5);

impl Cid {
    /// The string form (multibase base32, `b…`) written into `buf`.
    fn text<'b>(&self, buf: &'b mut [u8; TEXT_MAX]) -> &'b str {
        buf[0] = b'b';
        let n = 1 + base32_encode_into(self.as_bytes(), &mut buf[1..]);
        // Only the ASCII alphabet was written.
        std::str::from_utf8(&buf[..n]).unwrap_or_default()
    }

    /// Append the string form to `out`, in one `push_str`: what `Display`
    /// writes, without a formatter or an allocation of its own (this runs
    /// for every op and every link).
    pub fn push_to(&self, out: &mut String) {
        out.push_str(self.text(&mut [0; TEXT_MAX]));
    }

    /// The string form in a `String` of its exact size.
    pub fn to_text(&self) -> String {
        self.text(&mut [0; TEXT_MAX]).to_owned()
    }

    /// The string form held inline, without an allocation.
    pub fn text_inline(&self) -> CidText {
        let mut buf = [0; TEXT_MAX];
        let len = self.text(&mut buf).len();
        CidText { buf, len }
    }
}

/// A CID's string form held inline ([`Cid::text_inline`]).
#[derive(Clone, Copy)]
pub struct CidText {
    buf: [u8; TEXT_MAX],
    len: usize,
}

impl CidText {
    /// The string.
    pub fn as_str(&self) -> &str {
        // `Cid::text` wrote only the ASCII alphabet.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl fmt::Debug for CidText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text(&mut [0; TEXT_MAX]))
    }
}

impl fmt::Debug for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cid({self})")
    }
}

impl serde::Serialize for Cid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cid, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_round_trip() {
        let s = "bafyreidfayvfuwqa7qlnopdjiqrxzs6blmoeu4rujcjtnci5beludirz2a";
        let cid: Cid = s.parse().expect("parse");
        assert_eq!(cid.to_string(), s);
        assert_eq!(cid.codec(), CODEC_DAG_CBOR);
        let raw: Cid = "bafkreiccldh766hwcnuxnf2wh6jgzepf2nlu2lvcllt63eww5p6chi4ity"
            .parse()
            .expect("raw");
        assert_eq!(raw.codec(), CODEC_RAW);
        // to_text and push_to write the same, to a String of the exact size.
        for (text, cid) in [
            (s, cid),
            (
                "bafkreiccldh766hwcnuxnf2wh6jgzepf2nlu2lvcllt63eww5p6chi4ity",
                raw,
            ),
        ] {
            let owned = cid.to_text();
            assert_eq!((owned.as_str(), owned.capacity()), (text, text.len()));
            let mut appended = String::from("x");
            cid.push_to(&mut appended);
            assert_eq!(appended, format!("x{text}"));
        }
    }

    #[test]
    fn rejects_v0_and_junk() {
        assert!("QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n"
            .parse::<Cid>()
            .is_err());
        assert!("bafyrei".parse::<Cid>().is_err());
        assert!(
            "BAFYREIDFAYVFUWQA7QLNOPDJIQRXZS6BLMOEU4RUJCJTNCI5BELUDIRZ2A"
                .parse::<Cid>()
                .is_err()
        );
        assert!("".parse::<Cid>().is_err());
    }

    #[test]
    fn compute_matches() {
        let cid = Cid::compute(CODEC_DAG_CBOR, b"\xa0");
        assert!(cid.matches(b"\xa0"));
        assert!(!cid.matches(b"\xa1"));
    }

    #[test]
    fn a_non_digit_anywhere_is_refused() {
        let s = "bafyreidfayvfuwqa7qlnopdjiqrxzs6blmoeu4rujcjtnci5beludirz2a";
        for i in 1..s.len() {
            for bad in ["A", "1", "8", "=", "é", " "] {
                let t = format!("{}{bad}{}", &s[..i], &s[i + 1..]);
                assert!(t.parse::<Cid>().is_err(), "{t}");
                let digits = &t[1..];
                let mut buf = [0u8; 64];
                assert_eq!(base32_decode_into(digits, &mut buf), None, "{t}");
            }
        }
    }

    #[test]
    fn base32_round_trip() {
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let mut buf = vec![0u8; (len * 8usize).div_ceil(5)];
            let n = base32_encode_into(&data, &mut buf);
            assert_eq!(n, buf.len());
            let s = std::str::from_utf8(&buf).expect("ascii");
            assert_eq!(base32_decode(s).expect("decode"), data);
        }
    }
}
