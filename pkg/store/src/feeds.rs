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
///
/// First over the posts of the last day, week or month by TID time
/// ([`LABEL_WINDOWS`], `rank_labelled_recent`), whose cost follows the
/// window: a full ranking whose last post lies at least
/// [`crate::search::OFF_TIME_SECS`] into its window is the ranking of every
/// post (see `queries/feeds.sql`), once its posts with an older TID time (a
/// few off-time ones) are found current in `posts`. Otherwise every post of
/// the labelled accounts is read (`rank_labelled`): accounts that posted
/// fewer than `limit` times that month.
pub async fn labelled_posts(
    ch: &ClickHouse,
    label: &str,
    limit: u32,
) -> Result<LabelRanking, StoreError> {
    let db = ch.db();
    let now = crate::search::now_secs();
    for window in LABEL_WINDOWS {
        let from = now.saturating_sub(window);
        let sql = labelled_recent_sql(db, label, from, limit)?;
        let ranked: Vec<Ranked> = ch.fetch_all("label ranking", &sql).await?;
        let exact = ranked.len() == limit as usize
            && ranked
                .last()
                .is_some_and(|p| p.sort_at >= from.saturating_add(crate::search::OFF_TIME_SECS));
        if !exact {
            continue; // too few posts that recent: a wider window
        }
        let old: Vec<&Ranked> = ranked.iter().filter(|p| p.old == 1).collect();
        if !old.is_empty() {
            let sql = labelled_check_sql(db, &old)?;
            let current: Vec<Ranked> = ch.fetch_all("label ranking", &sql).await?;
            if !still_current(&old, &current) {
                break; // a newer version the window cannot see: every post
            }
        }
        return Ok(LabelRanking {
            uris: ranked.iter().map(Ranked::uri).collect(),
            window_secs: Some(window),
        });
    }
    let sql = labelled_sql(db, label, limit)?;
    Ok(LabelRanking {
        uris: ch.fetch_all("label ranking", &sql).await?,
        window_secs: None,
    })
}

/// A label ranking ([`labelled_posts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRanking {
    /// Post AT-URIs, newest first.
    pub uris: Vec<String>,
    /// The window (seconds back, by TID time) whose posts gave the ranking,
    /// or `None` when every post of the labelled accounts was read.
    pub window_secs: Option<u32>,
}

/// How far back (seconds) the label ranking first looks, by TID time: a
/// day, a week, and the oldest window `recent_posts` keeps.
const LABEL_WINDOWS: [u32; 3] = [86_400, 7 * 86_400, crate::search::OLDEST_WINDOW_SECS];

/// A post of a windowed label ranking (`old`: its TID time is before the
/// window) or of its check.
#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct Ranked {
    did: String,
    rkey: String,
    sort_at: u32,
    old: u8,
}

impl Ranked {
    fn uri(&self) -> String {
        format!("at://{}/app.bsky.feed.post/{}", self.did, self.rkey)
    }
}

/// Whether every post of `old` is live in `current` with the same sort_at.
fn still_current(old: &[&Ranked], current: &[Ranked]) -> bool {
    old.iter().all(|o| {
        current
            .iter()
            .any(|c| c.did == o.did && c.rkey == o.rkey && c.sort_at == o.sort_at)
    })
}

fn labelled_sql(db: Db<'_>, label: &str, limit: u32) -> Result<String, StoreError> {
    render(
        db,
        "rank_labelled",
        &[("label", &literal(label)), ("limit", &limit.to_string())],
    )
}

fn labelled_recent_sql(
    db: Db<'_>,
    label: &str,
    from: u32,
    limit: u32,
) -> Result<String, StoreError> {
    render(
        db,
        "rank_labelled_recent",
        &[
            ("label", &literal(label)),
            ("from", &from.to_string()),
            ("limit", &limit.to_string()),
        ],
    )
}

fn labelled_check_sql(db: Db<'_>, posts: &[&Ranked]) -> Result<String, StoreError> {
    let keys: Vec<String> = posts
        .iter()
        .map(|p| format!("({}, {})", literal(&p.did), literal(&p.rkey)))
        .collect();
    render(db, "rank_labelled_check", &[("keys", &keys.join(", "))])
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
        name: "rank_labelled_recent".into(),
        sql: labelled_recent_sql(db, r"it's \ me", 1_714_000_000, 1000)?,
    });
    let checked = Ranked {
        did: "did:plc:alice".into(),
        rkey: "3kxyz'".into(),
        sort_at: 1_714_000_000,
        old: 1,
    };
    out.push(Rendered {
        name: "rank_labelled_check".into(),
        sql: labelled_check_sql(db, &[&checked, &checked])?,
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
