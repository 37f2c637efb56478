//! The read-only SQL explorer: an admin's own statement, sent as written
//! (there is no template: the text is the caller's), in the database (so it
//! may name tables without the database), with `readonly = 1` and time and
//! row limits set by the server. ClickHouse refuses anything that writes,
//! and a statement that tries to lift `readonly` with `SETTINGS`.

use crate::{ClickHouse, JsonRow, StoreError};

/// What one explorer statement may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// ClickHouse `max_execution_time`, seconds.
    pub max_seconds: u64,
    /// ClickHouse `max_result_rows` (with `result_overflow_mode = throw`).
    pub max_rows: u64,
}

/// What an explorer statement answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Its rows, one JSON object each, and its column names in the
    /// statement's order (a [`JsonRow`] sorts its keys; a table of the
    /// answer shows them as written). No rows: no columns.
    Rows {
        /// Column names as the statement gives them.
        columns: Vec<String>,
        /// The rows.
        rows: Vec<JsonRow>,
    },
    /// Something other than rows (a `FORMAT` clause changed the output).
    NotRows,
}

/// Run `statement` (surrounding whitespace and trailing `;` dropped)
/// read-only within `limits`. ClickHouse's refusal (a syntax error, a
/// write, a limit hit) comes back as the [`StoreError`] of its code:
/// [`StoreError::server_message`] is what it said.
pub async fn run(ch: &ClickHouse, statement: &str, limits: Limits) -> Result<Answer, StoreError> {
    let statement = statement.trim().trim_end_matches(';');
    let settings = [
        ("readonly", "1".to_owned()),
        ("max_execution_time", limits.max_seconds.to_string()),
        ("max_result_rows", limits.max_rows.to_string()),
        ("result_overflow_mode", "throw".to_owned()),
    ];
    let bytes = ch
        .fetch_json_bytes("sql explorer", statement, &settings)
        .await?;
    match crate::parse_json_rows(&bytes) {
        Ok(rows) => {
            let first = bytes.split(|b| *b == b'\n').find(|l| !l.is_empty());
            let columns = first.map(key_order).unwrap_or_default();
            Ok(Answer::Rows { columns, rows })
        }
        Err(_) => {
            // An exception after the first rows arrives in the body, after them.
            let text = String::from_utf8_lossy(&bytes);
            match text.find("Code: ") {
                Some(at) if text.contains("DB::Exception") => Err(StoreError::classify(
                    clickhouse::error::Error::BadResponse(text[at..].to_owned()),
                    "sql explorer",
                )),
                _ => Ok(Answer::NotRows),
            }
        }
    }
}

/// The keys of the JSON object `line`, in the order they appear (empty if
/// it is not one).
fn key_order(line: &[u8]) -> Vec<String> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
            let mut keys = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                keys.push(key);
            }
            Ok(keys)
        }
    }
    serde_json::Deserializer::from_slice(line)
        .deserialize_map(Keys)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::key_order;

    #[test]
    fn columns_keep_the_statement_order() {
        assert_eq!(
            key_order(br#"{"z":1,"a":[1,{"q":2}],"m":null}"#),
            ["z", "a", "m"]
        );
        assert!(key_order(b"[1,2]").is_empty());
        assert!(key_order(b"{\"a\":").is_empty());
    }
}
