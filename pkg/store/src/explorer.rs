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
    /// Its rows, one JSON object each.
    Rows(Vec<JsonRow>),
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
        Ok(rows) => Ok(Answer::Rows(rows)),
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
