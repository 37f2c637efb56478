//! Lexicon datetimes (`createdAt` and friends): strict validation, conversion
//! to microseconds, and a lenient parser for indexing real-world records.

use super::{Rejected, SyntaxError};

/// Longest datetime string accepted (atproto reference validators).
pub(crate) const MAX_LEN: usize = 64;

const MICROS_PER_SEC: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SEC;
/// `0000-01-01T00:00:00Z` in microseconds since the Unix epoch: the earliest
/// instant a valid datetime may denote.
const MIN_MICROS: i64 = -719_528 * MICROS_PER_DAY;
/// `9999-12-31T23:59:59.999999Z`: the latest instant [`Datetime::from_timestamp_micros`] can write.
const MAX_MICROS: i64 = 2_932_897 * MICROS_PER_DAY - 1;

/// A valid atproto datetime, e.g. `1985-04-12T23:20:50.123Z`, with its
/// instant precomputed.
///
/// Syntax (Lexicon `datetime`, an RFC 3339 / ISO 8601 intersection):
/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+hh:mm|-hh:mm)` with exactly those digit
/// counts, uppercase `T` and `Z`, a required timezone, at least one fraction
/// digit if the `.` is present, no `-00:00`, and at most 64 chars.
///
/// On top of the syntax, the value must be a real instant: month 01-12, a day
/// that exists in that month (proleptic Gregorian, leap years included), hour
/// 00-23, minute and second 00-59 (leap second `60` is rejected, as by the
/// reference implementations), offset at most 23:59, and not before
/// `0000-01-01T00:00:00Z` once the offset is applied.
///
/// Equality and ordering are those of the string as written (two spellings of
/// one instant differ); compare [`Datetime::timestamp_micros`] for time order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Datetime {
    s: String,
    micros: i64,
}

/// The fields of a datetime string, not yet range-checked.
#[derive(Debug, Clone, Copy)]
struct Fields {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// Fraction of a second in microseconds (digits past the sixth are truncated).
    frac_micros: u32,
    /// Timezone offset east of UTC, as hours and minutes with a sign.
    offset_negative: bool,
    offset_hours: u32,
    offset_minutes: u32,
}

/// Value of the ASCII digits `b[start..start + n]`, if all are digits.
fn digits(b: &[u8], start: usize, n: usize) -> Option<u32> {
    let run = b.get(start..start + n)?;
    run.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

/// Up to the first six of `frac` (all ASCII digits) as microseconds.
fn frac_to_micros(frac: &[u8]) -> u32 {
    let mut v = 0u32;
    for i in 0..6 {
        v = v * 10 + frac.get(i).map_or(0, |&c| u32::from(c - b'0'));
    }
    v
}

/// The strict shape check: every field has the right number of digits and the
/// separators are right. Values are not range-checked here.
fn check_syntax(s: &str) -> Result<Fields, &'static str> {
    const TEMPLATE: &[u8; 19] = b"dddd-dd-ddTdd:dd:dd";
    let b = s.as_bytes();
    if b.len() > MAX_LEN {
        return Err("too long (max 64 chars)");
    }
    if b.len() < TEMPLATE.len() {
        return Err("does not match YYYY-MM-DDTHH:MM:SS[.fraction](Z|±hh:mm)");
    }
    for (&t, &c) in TEMPLATE.iter().zip(b) {
        let ok = if t == b'd' {
            c.is_ascii_digit()
        } else {
            t == c
        };
        if !ok {
            return Err("does not match YYYY-MM-DDTHH:MM:SS[.fraction](Z|±hh:mm)");
        }
    }
    let field = |start, n| digits(b, start, n).unwrap_or(0);
    let mut rest = &b[TEMPLATE.len()..];
    let mut frac_micros = 0;
    if let Some(after_dot) = rest.strip_prefix(b".") {
        let n = after_dot.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return Err("fractional seconds need at least one digit");
        }
        frac_micros = frac_to_micros(&after_dot[..n]);
        rest = &after_dot[n..];
    }
    let (offset_negative, offset_hours, offset_minutes) = match rest {
        b"Z" => (false, 0, 0),
        b"-00:00" => return Err("\"-00:00\" is not allowed (use Z or +00:00)"),
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (Some(h), Some(m)) = (digits(&[*h1, *h2], 0, 2), digits(&[*m1, *m2], 0, 2)) else {
                return Err("timezone must be Z or ±hh:mm");
            };
            (*sign == b'-', h, m)
        }
        [] => return Err("timezone is required (Z or ±hh:mm)"),
        _ => return Err("timezone must be Z or ±hh:mm"),
    };
    Ok(Fields {
        year: i64::from(field(0, 4)),
        month: field(5, 2),
        day: field(8, 2),
        hour: field(11, 2),
        minute: field(14, 2),
        second: field(17, 2),
        frac_micros,
        offset_negative,
        offset_hours,
        offset_minutes,
    })
}

fn is_leap_year(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap_year(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (valid fields).
///
/// Shifts the year to start in March so the leap day falls at the end, then
/// counts whole 400-year eras (146097 days each) plus the days within the era.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400; // 0..=399
    let month_from_march = i64::from((month + 9) % 12); // Mar=0 .. Feb=11
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Inverse of [`days_from_civil`]: (year, month, day) of a day number
/// (days since 1970-01-01, proleptic Gregorian).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097; // 0..=146096
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153; // 0..=11
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Range checks and conversion to microseconds since the Unix epoch (UTC).
/// Does not apply the year-0000 lower bound (strict validation does).
fn to_micros(f: &Fields) -> Result<i64, &'static str> {
    if !(1..=12).contains(&f.month) {
        return Err("month out of range");
    }
    if f.day == 0 || f.day > days_in_month(f.year, f.month) {
        return Err("day out of range for the month");
    }
    if f.hour > 23 {
        return Err("hour out of range");
    }
    if f.minute > 59 {
        return Err("minute out of range");
    }
    if f.second > 59 {
        return Err("second out of range");
    }
    if f.offset_hours > 23 || f.offset_minutes > 59 {
        return Err("timezone offset out of range");
    }
    let offset = i64::from(f.offset_hours * 60 + f.offset_minutes) * 60 * MICROS_PER_SEC;
    let offset = if f.offset_negative { -offset } else { offset };
    let secs_of_day = i64::from(f.hour * 3600 + f.minute * 60 + f.second);
    let micros = days_from_civil(f.year, f.month, f.day) * MICROS_PER_DAY
        + secs_of_day * MICROS_PER_SEC
        + i64::from(f.frac_micros)
        - offset;
    Ok(micros)
}

fn check(s: &str) -> Result<i64, &'static str> {
    let micros = to_micros(&check_syntax(s)?)?;
    if micros < MIN_MICROS {
        return Err("before year 0000 once the offset is applied");
    }
    Ok(micros)
}

impl Datetime {
    /// Whether `s` is a valid datetime (syntax and calendar), without allocating.
    pub fn is_valid(s: &str) -> bool {
        check(s).is_ok()
    }

    /// Whether `s` has the datetime shape only, without the calendar checks;
    /// e.g. `1985-13-12T23:20:50Z` passes this but not [`Datetime::is_valid`].
    pub fn is_valid_syntax(s: &str) -> bool {
        check_syntax(s).is_ok()
    }

    /// The datetime as written.
    pub fn as_str(&self) -> &str {
        &self.s
    }

    /// Gives back the owned string without copying.
    pub fn into_string(self) -> String {
        self.s
    }

    /// The instant in microseconds since the Unix epoch (negative before
    /// 1970). Fraction digits beyond microseconds are truncated, not rounded.
    pub fn timestamp_micros(&self) -> i64 {
        self.micros
    }

    /// Writes an instant as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC, microsecond
    /// precision), e.g. to stamp records the indexer creates. `None` outside
    /// years 0000-9999.
    pub fn from_timestamp_micros(micros: i64) -> Option<Datetime> {
        if !(MIN_MICROS..=MAX_MICROS).contains(&micros) {
            return None;
        }
        let (y, mo, d) = civil_from_days(micros.div_euclid(MICROS_PER_DAY));
        let in_day = micros.rem_euclid(MICROS_PER_DAY);
        let secs = in_day / MICROS_PER_SEC;
        let s = format!(
            "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            in_day % MICROS_PER_SEC
        );
        Some(Datetime { s, micros })
    }

    fn parse_owned(s: String) -> Result<Self, SyntaxError> {
        match check(&s) {
            Ok(micros) => Ok(Datetime { s, micros }),
            Err(reason) => Err(SyntaxError::Datetime(Rejected::new(&s, reason))),
        }
    }
}

string_traits!(Datetime);

/// Cursor over the bytes of a datetime for the lenient parser.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        self.i += usize::from(hit);
        hit
    }

    fn eat_any(&mut self, set: &[u8]) -> bool {
        match self.peek() {
            Some(c) if set.contains(&c) => {
                self.i += 1;
                true
            }
            _ => false,
        }
    }

    /// Reads `min..=max` ASCII digits.
    fn number(&mut self, min: usize, max: usize) -> Option<u32> {
        let n = self.b[self.i..]
            .iter()
            .take(max)
            .take_while(|c| c.is_ascii_digit())
            .count();
        if n < min {
            return None;
        }
        let v = digits(self.b, self.i, n)?;
        self.i += n;
        Some(v)
    }

    fn at_end(&self) -> bool {
        self.i == self.b.len()
    }

    fn rest_eq_ignore_case(&self, word: &[u8]) -> bool {
        self.b[self.i..].eq_ignore_ascii_case(word)
    }
}

/// Parses the datetimes real records carry into microseconds since the Unix
/// epoch, accepting what strict validation rejects: surrounding whitespace, a
/// missing timezone (taken as UTC), lowercase `t`/`z`, a space instead of `T`,
/// one-digit month/day/hour/minute/second, missing seconds, `,` as the
/// decimal mark, `±hhmm`/`±hh` offsets (and `-00:00`), a `UTC`/`GMT` suffix,
/// a space before the zone, a leap second `60`, and a bare date (midnight UTC).
///
/// For indexing only, so a record with a sloppy `createdAt` still gets a
/// sortable time; it is not validation (use [`Datetime`] for that). Calendar
/// fields must still be in range and the year must have four digits. Every
/// strictly valid datetime parses to the same value as
/// [`Datetime::timestamp_micros`].
pub fn parse_datetime_lenient(s: &str) -> Option<i64> {
    let mut c = Cursor {
        b: s.trim().as_bytes(),
        i: 0,
    };
    let year = i64::from(c.number(4, 4)?);
    c.eat(b'-').then_some(())?;
    let month = c.number(1, 2)?;
    c.eat(b'-').then_some(())?;
    let day = c.number(1, 2)?;
    let mut f = Fields {
        year,
        month,
        day,
        hour: 0,
        minute: 0,
        second: 0,
        frac_micros: 0,
        offset_negative: false,
        offset_hours: 0,
        offset_minutes: 0,
    };
    let mut leap_second = false;
    if !c.at_end() {
        c.eat_any(b"Tt ").then_some(())?;
        f.hour = c.number(1, 2)?;
        c.eat(b':').then_some(())?;
        f.minute = c.number(1, 2)?;
        if c.eat(b':') {
            f.second = c.number(1, 2)?;
            if f.second == 60 {
                leap_second = true;
                f.second = 59;
            }
            if c.eat_any(b".,") {
                let start = c.i;
                let n = c.b[start..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                if n == 0 {
                    return None;
                }
                f.frac_micros = frac_to_micros(&c.b[start..start + n]);
                c.i += n;
            }
        }
        c.eat(b' ');
        if c.eat_any(b"Zz") {
            // UTC
        } else if c.rest_eq_ignore_case(b"UTC") || c.rest_eq_ignore_case(b"GMT") {
            c.i = c.b.len();
        } else if let Some(sign @ (b'+' | b'-')) = c.peek() {
            c.i += 1;
            f.offset_negative = sign == b'-';
            f.offset_hours = c.number(2, 2)?;
            let colon = c.eat(b':');
            if colon || !c.at_end() {
                f.offset_minutes = c.number(2, 2)?;
            }
        }
        if !c.at_end() {
            return None;
        }
    }
    let micros = to_micros(&f).ok()?;
    Some(if leap_second {
        micros + MICROS_PER_SEC
    } else {
        micros
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_rules() {
        assert!(Datetime::is_valid("2024-02-29T00:00:00Z"));
        assert!(!Datetime::is_valid("2023-02-29T00:00:00Z"));
        assert!(Datetime::is_valid("2000-02-29T00:00:00Z"));
        assert!(!Datetime::is_valid("1900-02-29T00:00:00Z"));
        assert!(!Datetime::is_valid("2024-02-30T00:00:00Z"));
        assert!(!Datetime::is_valid("2024-04-31T00:00:00Z"));
        assert!(!Datetime::is_valid("2024-04-30T24:00:00Z"));
        assert!(!Datetime::is_valid("2024-04-30T23:59:60Z"));
        assert!(!Datetime::is_valid("2024-04-30T23:59:59+24:00"));
        assert!(Datetime::is_valid_syntax("2024-04-30T23:59:59+24:00"));
        assert!(!Datetime::is_valid("0000-01-01T00:00:00+00:01"));
        assert!(Datetime::is_valid("0000-01-01T00:00:00-00:01"));
    }

    #[test]
    fn civil_round_trip() {
        for days in (-800_000..3_000_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert!(
                (1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m),
                "{days}: {y}-{m}-{d}"
            );
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn formats_from_micros() {
        let dt = Datetime::from_timestamp_micros(1_709_200_800_123_456).expect("in range");
        assert_eq!(dt.as_str(), "2024-02-29T10:00:00.123456Z");
        assert!(Datetime::is_valid(dt.as_str()));
        assert_eq!(
            Datetime::from_timestamp_micros(-1)
                .expect("in range")
                .as_str(),
            "1969-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            Datetime::from_timestamp_micros(MIN_MICROS)
                .expect("in range")
                .as_str(),
            "0000-01-01T00:00:00.000000Z"
        );
        assert!(Datetime::from_timestamp_micros(MIN_MICROS - 1).is_none());
        assert!(Datetime::from_timestamp_micros(MAX_MICROS + 1).is_none());
    }
}
