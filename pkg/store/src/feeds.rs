//! The feed generator's rankings and label checks, with their SQL in
//! `queries/feeds.sql`. Each ranking answers post AT-URIs, best first;
//! hidden accounts (`accounts.active = 0`) are left out as authors and as
//! likers or reposters. Like and repost counts are those of
//! `interactions`, as of the last [`crate::queries::refresh_interactions`].

use crate::sql::{literal, render, Db, Rendered};
use crate::{ClickHouse, StoreError};

/// Recent posts (of the last `window_secs`) by likes and reposts (a repost
/// counts twice) divided by `(age_hours + 2) ^ 1.8`, at most `limit`.
pub async fn hot_posts(
    ch: &ClickHouse,
    window_secs: u32,
    limit: u32,
) -> Result<Vec<String>, StoreError> {
    let sql = windowed_sql(ch.db(), "rank_whats_hot", window_secs, limit)?;
    ch.fetch_all("whats-hot ranking", &sql).await
}

/// Posts of the last `window_secs` by like count, at most `limit`.
pub async fn top_liked_posts(
    ch: &ClickHouse,
    window_secs: u32,
    limit: u32,
) -> Result<Vec<String>, StoreError> {
    let sql = windowed_sql(ch.db(), "rank_top_liked", window_secs, limit)?;
    ch.fetch_all("top ranking", &sql).await
}

fn windowed_sql(
    db: Db<'_>,
    name: &str,
    window_secs: u32,
    limit: u32,
) -> Result<String, StoreError> {
    render(
        db,
        name,
        &[
            ("window", &window_secs.to_string()),
            ("limit", &limit.to_string()),
        ],
    )
}

/// Posts of the accounts holding `label` (not negated), newest first, at
/// most `limit`.
pub async fn labelled_posts(
    ch: &ClickHouse,
    label: &str,
    limit: u32,
) -> Result<Vec<String>, StoreError> {
    let sql = labelled_sql(ch.db(), label, limit)?;
    ch.fetch_all("label ranking", &sql).await
}

fn labelled_sql(db: Db<'_>, label: &str, limit: u32) -> Result<String, StoreError> {
    render(
        db,
        "rank_labelled",
        &[("label", &literal(label)), ("limit", &limit.to_string())],
    )
}

/// Which of `dids` are hidden accounts.
pub async fn hidden_among(ch: &ClickHouse, dids: &[&str]) -> Result<Vec<String>, StoreError> {
    if dids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = hidden_among_sql(ch.db(), dids)?;
    ch.fetch_all("hidden accounts", &sql).await
}

fn hidden_among_sql(db: Db<'_>, dids: &[&str]) -> Result<String, StoreError> {
    let list: Vec<String> = dids.iter().map(|d| literal(d)).collect();
    render(db, "hidden_among", &[("dids", &list.join(", "))])
}

/// Whether `did` holds `label` (not negated) and is visible.
pub async fn holds_label(ch: &ClickHouse, did: &str, label: &str) -> Result<bool, StoreError> {
    let sql = holds_label_sql(ch.db(), did, label)?;
    let n: u64 = ch.fetch_one("label check", &sql).await?;
    Ok(n > 0)
}

fn holds_label_sql(db: Db<'_>, did: &str, label: &str) -> Result<String, StoreError> {
    render(
        db,
        "holds_label",
        &[("did", &literal(did)), ("label", &literal(label))],
    )
}

/// This module's statements with sample values (see [`crate::sql::catalog`]).
pub(crate) fn samples(db: Db<'_>, out: &mut Vec<Rendered>) -> Result<(), StoreError> {
    for (name, window) in [("rank_whats_hot", 48 * 3600), ("rank_top_liked", 3600)] {
        out.push(Rendered {
            name: name.to_owned(),
            sql: windowed_sql(db, name, window, 1000)?,
        });
    }
    out.push(Rendered {
        name: "rank_labelled".into(),
        sql: labelled_sql(db, r"it's \ me", 1000)?,
    });
    out.push(Rendered {
        name: "hidden_among".into(),
        sql: hidden_among_sql(db, &["did:plc:alice", "did:plc:bob"])?,
    });
    out.push(Rendered {
        name: "holds_label".into(),
        sql: holds_label_sql(db, "did:plc:alice", "vip")?,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_dids_are_quoted() {
        let sql = labelled_sql(Db::single("d"), r"v'ip\", 10).expect("renders");
        assert!(sql.contains(r"label = 'v\'ip\\'"), "{sql}");
        let sql = hidden_among_sql(Db::single("d"), &["did:plc:a", "x'y"]).expect("renders");
        assert!(sql.contains(r"did IN ('did:plc:a', 'x\'y')"), "{sql}");
    }
}
