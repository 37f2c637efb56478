//! Timestamp identifiers: sortable 64-bit ids used as record keys and commit
//! revisions.

use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Rejected, SyntaxError};

/// Length of every TID string (13 × 5 bits covers the 64-bit value).
pub(crate) const LEN: usize = 13;
/// The base32-sortable alphabet, in ascending ASCII order so that string
/// order equals integer order.
const ALPHABET: &[u8; 32] = b"234567abcdefghijklmnopqrstuvwxyz";
/// Largest timestamp a TID holds: 53 bits of microseconds (until year 2255).
const MAX_MICROS: u64 = (1 << 53) - 1;
/// Largest clock id: 10 bits.
const MAX_CLOCK_ID: u16 = (1 << 10) - 1;

/// A syntactically valid TID, e.g. `3jzfcijpj2z2a`.
///
/// The value is a 64-bit integer with the top bit zero, then 53 bits of
/// microseconds since the Unix epoch, then a 10-bit clock id, written as 13
/// chars of base32-sortable (`234567abcdefghijklmnopqrstuvwxyz`), most
/// significant first. Lowercase only. Because the alphabet is in ASCII order
/// and the length is fixed, comparing TID strings compares their integers
/// (and so their timestamps).
///
/// 13 chars carry 65 bits, so the first char holds only the top 4 bits of the
/// integer. The syntax rule (atproto spec and reference validators) limits it
/// to `234567abcdefghij`, i.e. "the value fits in 64 bits"; strictly, a clear
/// top bit would also exclude `c`..`j`. Those strings are accepted here for
/// interoperability (their [`Tid::to_u64`] has the top bit set), but
/// [`Tid::from_u64`] and [`TidGenerator`] never produce them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tid(String);

/// Value of one base32-sortable char, if it is one.
fn digit(c: u8) -> Option<u64> {
    match c {
        b'2'..=b'7' => Some(u64::from(c - b'2')),
        b'a'..=b'z' => Some(u64::from(c - b'a') + 6),
        _ => None,
    }
}

/// The integer a checked TID string encodes.
fn value(s: &str) -> u64 {
    s.bytes()
        .fold(0u64, |acc, c| (acc << 5) | digit(c).unwrap_or(0))
}

pub(crate) fn check(s: &str) -> Result<(), &'static str> {
    let b = s.as_bytes();
    if b.len() != LEN {
        return Err("must be exactly 13 chars");
    }
    if !b.iter().all(|&c| digit(c).is_some()) {
        return Err("invalid character (allowed: 234567abcdefghijklmnopqrstuvwxyz)");
    }
    if !matches!(b[0], b'2'..=b'7' | b'a'..=b'j') {
        return Err("first char must be in 234567abcdefghij (value must fit in 64 bits)");
    }
    Ok(())
}

string_newtype!(Tid, Tid, check);

impl Tid {
    /// Encodes an integer as a TID. Fails if the top bit is set, since such a
    /// value has no valid TID string.
    pub fn from_u64(value: u64) -> Result<Tid, SyntaxError> {
        if value >> 63 != 0 {
            return Err(SyntaxError::Tid(Rejected::new(
                &value.to_string(),
                "integer has the top bit set",
            )));
        }
        Ok(Tid::encode(value))
    }

    /// Encodes the low 63 bits of `value` (callers guarantee the top bit is clear).
    fn encode(value: u64) -> Tid {
        let mut s = String::with_capacity(LEN);
        for i in (0..LEN).rev() {
            let idx = (value >> (5 * i)) & 31;
            s.push(char::from(ALPHABET[idx as usize]));
        }
        Tid(s)
    }

    /// Builds a TID from microseconds since the Unix epoch and a clock id.
    /// Fails if `micros` exceeds 53 bits or `clock_id` exceeds 10 bits.
    pub fn from_parts(micros: u64, clock_id: u16) -> Result<Tid, SyntaxError> {
        if micros > MAX_MICROS {
            return Err(SyntaxError::Tid(Rejected::new(
                &micros.to_string(),
                "timestamp exceeds 53 bits",
            )));
        }
        if clock_id > MAX_CLOCK_ID {
            return Err(SyntaxError::Tid(Rejected::new(
                &clock_id.to_string(),
                "clock id exceeds 10 bits",
            )));
        }
        Tid::from_u64((micros << 10) | u64::from(clock_id))
    }

    /// The integer value of the TID string `s`, checked as [`Tid`]'s parse
    /// checks it, without making a `Tid` (no allocation).
    pub fn value_of(s: &str) -> Option<u64> {
        check(s).ok()?;
        Some(value(s))
    }

    /// The 64-bit integer value (top bit always zero).
    pub fn to_u64(&self) -> u64 {
        value(&self.0)
    }

    /// Microseconds since the Unix epoch, the creation time the TID claims.
    pub fn timestamp_micros(&self) -> u64 {
        self.to_u64() >> 10
    }

    /// The 10-bit clock id that disambiguates TIDs minted in the same
    /// microsecond by different generators.
    pub fn clock_id(&self) -> u16 {
        (self.to_u64() & u64::from(MAX_CLOCK_ID)) as u16
    }
}

/// Mints strictly increasing TIDs from the system clock.
///
/// Each TID is greater than the previous one from the same generator even if
/// the wall clock stalls or steps backwards: the timestamp is bumped to one
/// microsecond past the last one issued. The clock id is fixed per generator,
/// either given or picked pseudo-randomly so separate processes rarely
/// collide. Not shared between threads by itself; wrap it in a `Mutex` to mint
/// from several threads with a single ordering.
#[derive(Debug, Clone)]
pub struct TidGenerator {
    clock_id: u16,
    last_micros: Option<u64>,
}

impl Default for TidGenerator {
    fn default() -> Self {
        TidGenerator::new()
    }
}

impl TidGenerator {
    /// A generator with a pseudo-random clock id (from std's per-process
    /// random hasher keys and the current time).
    pub fn new() -> TidGenerator {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(now_micros());
        h.write_u32(std::process::id());
        TidGenerator::with_clock_id((h.finish() & u64::from(MAX_CLOCK_ID)) as u16)
    }

    /// A generator with a chosen clock id (only the low 10 bits are used), for
    /// deployments that assign ids per worker.
    pub fn with_clock_id(clock_id: u16) -> TidGenerator {
        TidGenerator {
            clock_id: clock_id & MAX_CLOCK_ID,
            last_micros: None,
        }
    }

    /// The clock id stamped into every TID from this generator.
    pub fn clock_id(&self) -> u16 {
        self.clock_id
    }

    /// The next TID for the current system time.
    pub fn next_tid(&mut self) -> Tid {
        self.next_at(now_micros())
    }

    /// The next TID as if the clock read `now_micros` (deterministic; lets
    /// tests and replays drive the clock). Still strictly greater than every
    /// TID issued before, whatever `now_micros` is, until the 53-bit timestamp
    /// space runs out in the year 2255.
    pub fn next_at(&mut self, now_micros: u64) -> Tid {
        let mut micros = now_micros.min(MAX_MICROS);
        if let Some(last) = self.last_micros {
            if micros <= last {
                micros = (last + 1).min(MAX_MICROS);
            }
        }
        self.last_micros = Some(micros);
        // `micros` has at most 53 bits, so the top bit of the value is clear.
        Tid::encode((micros << 10) | u64::from(self.clock_id))
    }
}

/// Wall-clock microseconds since the Unix epoch (0 if the clock is before it).
fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        let t = Tid::from_u64(0).expect("in range");
        assert_eq!(t.as_str(), "2222222222222");
        let max = Tid::from_u64(u64::MAX >> 1).expect("in range");
        assert_eq!(max.as_str(), "bzzzzzzzzzzzz");
        assert!(Tid::is_valid(max.as_str()));
        assert!(Tid::from_u64(1 << 63).is_err());
        // Syntax admits first chars up to `j`: the full 64-bit range.
        let j = Tid::try_from("jzzzzzzzzzzzz").expect("valid syntax");
        assert_eq!(j.to_u64(), u64::MAX);
        assert_eq!(
            Tid::try_from("c222222222222")
                .expect("valid syntax")
                .to_u64(),
            1 << 63
        );
        assert!(!Tid::is_valid("k222222222222"));
        let t = Tid::try_from("3jzfcijpj2z2a").expect("valid");
        assert_eq!(Tid::from_u64(t.to_u64()).expect("in range"), t);
        assert_eq!(t.timestamp_micros(), t.to_u64() >> 10);
        let t = Tid::from_parts(1_700_000_000_000_000, 42).expect("in range");
        assert_eq!(t.timestamp_micros(), 1_700_000_000_000_000);
        assert_eq!(t.clock_id(), 42);
        assert!(Tid::from_parts(1 << 53, 0).is_err());
        assert!(Tid::from_parts(0, 1024).is_err());
    }

    #[test]
    fn value_of_accepts_and_refuses_what_parse_does() {
        for s in [
            "2222222222222",
            "3jzfcijpj2z2a",
            "jzzzzzzzzzzzz",
            "kzzzzzzzzzzzz",
            "3jzfcijpj2z2",
            "3jzfcijpj2z2aa",
            "3JZFCIJPJ2Z2A",
            "3jzfcijpj2z21",
            "",
        ] {
            assert_eq!(
                Tid::value_of(s),
                s.parse::<Tid>().ok().map(|t| t.to_u64()),
                "{s:?}"
            );
        }
        assert_eq!(Tid::value_of("2222222222223"), Some(1));
    }

    #[test]
    fn now_is_after_2020() {
        assert!(now_micros() > 1_577_836_800_000_000);
    }
}
