//! Running SQL for the API: `{db}` filled in, sent verbatim (`query_raw`:
//! no `?` placeholders, so user text with `?` is safe once quoted with
//! [`skyhouse_store::literal`]), answered as JSON objects.

use serde_json::{Map, Value};
use skyhouse_store::ClickHouse;

use crate::error::ApiError;

/// One result row.
pub type Row = Map<String, Value>;

/// Rows of `sql` (`{db}` replaced); `what` names the data in errors.
pub async fn query(ch: &ClickHouse, sql: &str, what: &str) -> Result<Vec<Row>, ApiError> {
    let bytes = raw(ch, sql, &[])
        .await
        .map_err(|e| ApiError::unavailable(what, e))?;
    parse(&bytes).map_err(|e| ApiError::unavailable(what, e))
}

/// The raw JSONEachRow answer, or ClickHouse's error text.
pub async fn raw(
    ch: &ClickHouse,
    sql: &str,
    settings: &[(&str, String)],
) -> Result<bytes::Bytes, String> {
    let sql = sql.replace("{db}", ch.database());
    // In the database, so the SQL explorer can name tables without `{db}.`.
    let mut q = ch
        .in_database()
        .query_raw(&sql)
        .with_setting("output_format_json_quote_64bit_integers", "0");
    for (k, v) in settings {
        q = q.with_setting(*k, v.clone());
    }
    let mut cursor = q.fetch_bytes("JSONEachRow").map_err(|e| e.to_string())?;
    cursor.collect().await.map_err(|e| e.to_string())
}

/// JSON lines to rows.
pub fn parse(bytes: &[u8]) -> Result<Vec<Row>, String> {
    let mut out = Vec::new();
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice(line) {
            Ok(Value::Object(m)) => out.push(m),
            Ok(other) => return Err(format!("not a row: {other}")),
            Err(e) => return Err(format!("bad JSON row: {e}")),
        }
    }
    Ok(out)
}
