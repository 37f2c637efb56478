//! The time columns every record row carries.
//!
//! ClickHouse 18.16 has only `DateTime` (unsigned 32-bit Unix seconds, up to
//! 2106-02-07), so every time column is a `u32` of seconds.

use skyhouse_atproto::cbor::Value;
use skyhouse_atproto::syntax::parse_datetime_lenient;

/// How far past `indexed_at` a record's own `createdAt` may claim to be, in
/// seconds (one day). A later claim is clamped to `indexed_at` + this: clock
/// skew and time zones stay visible, a post dated 2099 does not.
pub const MAX_FUTURE_SECS: u32 = 86_400;

/// The `created_at`, `indexed_at`, `sort_at` columns of one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Times {
    /// The record's own claim (`createdAt`), see [`Times::of_record`].
    pub created_at: u32,
    /// When we first saw the operation.
    pub indexed_at: u32,
    /// `min(created_at, indexed_at)`: what feeds and daily stats sort and
    /// bucket on, so a record can backdate itself but never jump ahead.
    pub sort_at: u32,
}

impl Times {
    /// The times of a record seen at `indexed_at` (Unix seconds).
    ///
    /// `created_at` is the record's `createdAt` string parsed leniently
    /// ([`parse_datetime_lenient`]: missing zone, space separator, …) and
    /// truncated to the second (rounded down, also before 1970); then clamped
    /// to `[0, indexed_at + MAX_FUTURE_SECS]`. When `createdAt` is absent, not
    /// a string or unparseable (and for record types without one, such as
    /// declarations), `created_at = indexed_at`.
    pub fn of_record(record: Option<&Value<'_>>, indexed_at: u32) -> Times {
        let claimed = record
            .and_then(|r| r.get("createdAt"))
            .and_then(Value::as_str)
            .and_then(parse_datetime_lenient);
        let created_at = match claimed {
            None => indexed_at,
            Some(micros) => {
                let secs = micros.div_euclid(1_000_000);
                let ceiling = i64::from(indexed_at.saturating_add(MAX_FUTURE_SECS));
                // In [0, u32::MAX] after the clamp, so the conversion cannot fail.
                u32::try_from(secs.clamp(0, ceiling)).unwrap_or(indexed_at)
            }
        };
        Times {
            created_at,
            indexed_at,
            sort_at: created_at.min(indexed_at),
        }
    }

    /// The times of a tombstone (a delete has no record): all three are the
    /// moment we saw the delete.
    pub fn of_delete(indexed_at: u32) -> Times {
        Times {
            created_at: indexed_at,
            indexed_at,
            sort_at: indexed_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use skyhouse_atproto::cbor::Map;

    use super::*;

    fn rec(created: &str) -> Value<'static> {
        let mut m = Map::new();
        m.insert("createdAt", Value::String(Cow::Owned(created.to_owned())));
        Value::Map(m)
    }

    const NOW: u32 = 1_783_175_888; // 2026-07-04T14:38:08Z

    #[test]
    fn parses_and_truncates() {
        let t = Times::of_record(Some(&rec("2026-07-04T14:38:07.705Z")), NOW);
        assert_eq!(t.created_at, NOW - 1);
        assert_eq!(t.sort_at, NOW - 1);
        assert_eq!(t.indexed_at, NOW);
        // Lenient forms: no zone, space separator, offset.
        assert_eq!(
            Times::of_record(Some(&rec("2026-07-04 14:38:07")), NOW).created_at,
            NOW - 1
        );
        assert_eq!(
            Times::of_record(Some(&rec("2026-07-04T16:38:07+02:00")), NOW).created_at,
            NOW - 1
        );
    }

    #[test]
    fn falls_back_and_clamps() {
        assert_eq!(Times::of_record(None, NOW).created_at, NOW);
        assert_eq!(
            Times::of_record(Some(&rec("yesterday")), NOW).created_at,
            NOW
        );
        let mut m = Map::new();
        m.insert("createdAt", Value::Integer(5));
        assert_eq!(Times::of_record(Some(&Value::Map(m)), NOW).created_at, NOW);
        // Far future: clamped to a day ahead; sort_at stays at indexed_at.
        let t = Times::of_record(Some(&rec("2099-01-01T00:00:00Z")), NOW);
        assert_eq!(t.created_at, NOW + MAX_FUTURE_SECS);
        assert_eq!(t.sort_at, NOW);
        // Before 1970: clamped to 0, and so is sort_at.
        let t = Times::of_record(Some(&rec("1969-12-31T23:59:59.5Z")), NOW);
        assert_eq!((t.created_at, t.sort_at), (0, 0));
        // indexed_at near the end of u32 does not overflow.
        let t = Times::of_record(Some(&rec("2200-01-01T00:00:00Z")), u32::MAX - 5);
        assert_eq!(t.created_at, u32::MAX);
        assert_eq!(t.sort_at, u32::MAX - 5);
    }
}
