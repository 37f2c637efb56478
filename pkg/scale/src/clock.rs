//! Times as the generated records carry them: TIDs (record keys and revs)
//! and RFC 3339 `createdAt` strings, both from Unix microseconds.

/// The base32-sortable alphabet of TIDs.
const TID_ALPHABET: &[u8; 32] = b"234567abcdefghijklmnopqrstuvwxyz";

/// The TID integer of `micros` and a 10-bit clock id.
pub fn tid(micros: u64, clock: u16) -> u64 {
    ((micros << 10) | u64::from(clock & 0x3ff)) & (u64::MAX >> 1)
}

/// The 13-character TID string of `value`, written into `buf`.
pub fn tid_str(value: u64, buf: &mut [u8; 13]) -> &str {
    for (k, b) in buf.iter_mut().enumerate() {
        *b = TID_ALPHABET[((value >> (5 * (12 - k))) & 31) as usize];
    }
    // Only ASCII was written.
    std::str::from_utf8(&buf[..]).unwrap_or("2222222222222")
}

/// The TID string of `value`, owned.
pub fn tid_string(value: u64) -> String {
    let mut buf = [0u8; 13];
    tid_str(value, &mut buf).to_owned()
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of Unix microseconds (1970 or later).
pub fn datetime(micros: u64) -> String {
    let secs = micros / 1_000_000;
    let millis = (micros / 1000) % 1000;
    let (y, m, d) = civil(secs / 86_400);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

/// (year, month, day) of days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use skyhouse_atproto::syntax::Tid;

    #[test]
    fn tids_match_the_atproto_type() {
        let v = tid(1_783_175_888_384_849, 0x2a5);
        let s = tid_string(v);
        let parsed = Tid::try_from(s.as_str()).expect("a valid TID");
        assert_eq!(parsed.to_u64(), v);
        assert_eq!(parsed.timestamp_micros(), 1_783_175_888_384_849);
        assert_eq!(parsed.clock_id(), 0x2a5);
    }

    #[test]
    fn datetimes_are_rfc3339() {
        assert_eq!(datetime(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(datetime(1_783_175_888_384_849), "2026-07-04T14:38:08.384Z");
        assert_eq!(datetime(951_782_400_000_000), "2000-02-29T00:00:00.000Z");
        let parsed =
            skyhouse_atproto::syntax::parse_datetime_lenient(&datetime(1_700_000_000_123_000));
        assert_eq!(parsed, Some(1_700_000_000_123_000));
    }
}
