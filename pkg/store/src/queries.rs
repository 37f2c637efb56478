//! The read queries the services use, with their SQL in
//! `queries/store.sql` (checked on ClickHouse 18.16 and on current
//! ClickHouse). Current state is always read with `FINAL` and `deleted = 0`;
//! hidden accounts (`accounts.active = 0`) are left out of aggregates.

use serde::Deserialize;

use crate::sql::{self, literal, render, Rendered};
use crate::{ClickHouse, StoreError};

/// Live records per collection (hidden accounts left out), most first.
pub async fn collection_counts(ch: &ClickHouse) -> Result<Vec<(String, u64)>, StoreError> {
    let sql = render(ch.database(), "collection_counts", &[])?;
    ch.fetch_all("collection_counts", &sql).await
}

/// Whether `did`'s account is hidden (`accounts.active = 0`: deactivated,
/// taken down, suspended, deleted): nothing of it may be shown.
pub async fn account_hidden(ch: &ClickHouse, did: &str) -> Result<bool, StoreError> {
    let sql = render(ch.database(), "account_hidden", &[("did", &literal(did))])?;
    let n: u64 = ch.fetch_one("account_hidden", &sql).await?;
    Ok(n > 0)
}

/// One live record, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, clickhouse::Row)]
pub struct StoredRecord {
    /// Collection NSID.
    pub collection: String,
    /// Record key.
    pub rkey: String,
    /// Record CID.
    pub cid: String,
    /// The version (rev as an integer) that wrote it.
    pub version: u64,
    /// The record, lex-JSON.
    pub record: String,
}

/// A DID's live records in key order, at most `limit`.
pub async fn records_of(
    ch: &ClickHouse,
    did: &str,
    limit: u32,
) -> Result<Vec<StoredRecord>, StoreError> {
    if !skyhouse_atproto::syntax::Did::is_valid(did) {
        return Err(StoreError::Config(format!("invalid DID {did:?}")));
    }
    let sql = render(
        ch.database(),
        "records_of",
        &[("did", &literal(did)), ("limit", &limit.to_string())],
    )?;
    ch.fetch_all("records_of", &sql).await
}

/// Recompute `daily_stats` for every day from `since` (a `YYYY-MM-DD` date) on,
/// from `records FINAL`: replays change nothing and deletes are subtracted,
/// down to zero for a day that lost all its records.
pub async fn refresh_daily_stats(ch: &ClickHouse, since: &str) -> Result<(), StoreError> {
    let valid = since.len() == 10
        && since.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !valid {
        return Err(StoreError::Config(format!(
            "since {since:?} must be a YYYY-MM-DD date"
        )));
    }
    // Each refresh writes newer versions than any before it: microseconds
    // since the epoch, doubled so the zeroing pass sits just below the
    // recomputation of the same refresh.
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let version = (micros * 2).to_string();
    for name in ["zero_daily_stats", "refresh_daily_stats"] {
        let sql = render(
            ch.database(),
            name,
            &[("since", &literal(since)), ("version", &version)],
        )?;
        ch.execute(name, &sql).await?;
    }
    Ok(())
}

/// One row of daily stats.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, clickhouse::Row)]
pub struct DailyStat {
    /// The day, `YYYY-MM-DD` (on `sort_at`).
    pub day: String,
    /// Collection NSID.
    pub collection: String,
    /// Live records created that day.
    pub records: u64,
    /// Distinct accounts behind them.
    pub actors: u64,
}

/// Daily stats from `since` (`YYYY-MM-DD`) on, by day then collection.
pub async fn daily_stats(ch: &ClickHouse, since: &str) -> Result<Vec<DailyStat>, StoreError> {
    let sql = render(ch.database(), "daily_stats", &[("since", &literal(since))])?;
    ch.fetch_all("daily_stats", &sql).await
}

/// The four kinds of interaction counted per post: (kind, record table,
/// column naming the post). See migration 0004.
const INTERACTION_SOURCES: [(&str, &str, &str); 4] = [
    ("like", "likes", "subject_uri"),
    ("repost", "reposts", "subject_uri"),
    ("reply", "posts", "reply_parent_uri"),
    ("quote", "posts", "quote_uri"),
];

/// How far before the last refresh's start the next one looks again,
/// seconds: covers inserts that began (took their `inserted_at`) before a
/// refresh and became visible after it. Rows seen twice change nothing.
pub const REFRESH_MARGIN_SECS: u32 = 300;

/// What a refresh covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshedUpto {
    /// Rows that arrived at or after this server time (Unix seconds) were read.
    pub after: u32,
    /// The server time the refresh started at; the next one starts from
    /// here minus [`REFRESH_MARGIN_SECS`].
    pub upto: u32,
    /// How many windows of arrival time the rows were read in.
    pub windows: usize,
}

/// About how many rows of one source a refresh reads at once: a backlog
/// (the first refresh after a backfill of millions of likes) is read in
/// windows of arrival time of about this many rows each, so no statement
/// needs more memory than a window's keys (ClickHouse 18.16's default
/// per-query limit is ~3.7 GiB; 4M likes at once exceeded it).
pub const REFRESH_WINDOW_ROWS: u64 = 1_000_000;

/// Bring `interactions` up to date with the rows that arrived in `likes`,
/// `reposts` and `posts` since the last refresh (all of them the first
/// time). Safe to run at any time, repeatedly or concurrently: it only
/// rewrites rows from the current state of the record tables.
pub async fn refresh_interactions(ch: &ClickHouse) -> Result<RefreshedUpto, StoreError> {
    refresh_interactions_in_windows(ch, REFRESH_WINDOW_ROWS).await
}

/// [`refresh_interactions`] reading about `window_rows` rows of a source
/// per window (at least one second of arrivals each). The watermark moves
/// after each window, so an interrupted refresh resumes near where it was.
pub async fn refresh_interactions_in_windows(
    ch: &ClickHouse,
    window_rows: u64,
) -> Result<RefreshedUpto, StoreError> {
    let sql = render(ch.database(), "interactions_watermark", &[])?;
    let (last, now): (u32, u32) = ch.fetch_one("interactions_watermark", &sql).await?;
    let after = last.saturating_sub(REFRESH_MARGIN_SECS);
    let bounds = window_bounds(ch, after, window_rows.max(1)).await?;
    // Windows [lo, hi): the last one is open-ended (rows arriving during the
    // refresh are read now and again by the next one, within the margin).
    let mut edges = vec![after];
    edges.extend(bounds.into_iter().filter(|b| *b > after && *b < now));
    edges.push(u32::MAX);
    for pair in edges.windows(2) {
        let (lo, hi) = (pair[0], pair[1]);
        for (kind, source, subject) in INTERACTION_SOURCES {
            for name in ["refresh_interaction_subjects", "refresh_interactions"] {
                let sql = refresh_sql(ch.database(), name, (kind, source, subject), lo, hi)?;
                ch.execute(name, &sql).await?;
            }
        }
        save_interactions_watermark(ch, hi.min(now)).await?;
    }
    Ok(RefreshedUpto {
        after,
        upto: now,
        windows: edges.len() - 1,
    })
}

/// A source's backlog: rows since the watermark, quantiles of arrival time.
#[derive(clickhouse::Row, serde::Deserialize)]
struct Backlog {
    rows: u64,
    bounds: Vec<u32>,
}

/// Arrival times (Unix seconds, increasing) splitting the largest source's
/// rows since `after` into windows of about `window_rows`.
async fn window_bounds(
    ch: &ClickHouse,
    after: u32,
    window_rows: u64,
) -> Result<Vec<u32>, StoreError> {
    let mut largest: Option<(u64, &str)> = None;
    for source in ["likes", "reposts", "posts"] {
        let sql = backlog_sql(ch.database(), source, "0.5", after)?;
        let Backlog { rows, .. } = ch.fetch_one("interaction_backlog", &sql).await?;
        if largest.is_none_or(|(n, _)| rows > n) {
            largest = Some((rows, source));
        }
    }
    let Some((rows, source)) = largest else {
        return Ok(Vec::new());
    };
    let windows = rows.div_ceil(window_rows);
    if windows <= 1 {
        return Ok(Vec::new());
    }
    let windows = windows.min(1000);
    let levels: Vec<String> = (1..windows)
        .map(|i| format!("{:.6}", i as f64 / windows as f64))
        .collect();
    let sql = backlog_sql(ch.database(), source, &levels.join(", "), after)?;
    let backlog: Backlog = ch.fetch_one("interaction_backlog", &sql).await?;
    let mut bounds = backlog.bounds;
    bounds.sort_unstable();
    bounds.dedup();
    Ok(bounds)
}

async fn save_interactions_watermark(ch: &ClickHouse, upto: u32) -> Result<(), StoreError> {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let sql = render(
        ch.database(),
        "save_interactions_watermark",
        &[
            ("upto", &upto.to_string()),
            ("version", &micros.to_string()),
        ],
    )?;
    ch.execute("save_interactions_watermark", &sql).await
}

/// Live interactions with one post, as of the last [`refresh_interactions`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostCounts {
    /// The post's AT-URI.
    pub uri: String,
    /// Likes (`app.bsky.feed.like` with this subject).
    pub likes: u64,
    /// Reposts.
    pub reposts: u64,
    /// Direct replies (posts whose `reply.parent` is this post).
    pub replies: u64,
    /// Quote posts (posts embedding this one).
    pub quotes: u64,
}

/// Most URIs one [`post_counts`] call takes (the SQL lists them inline).
pub const MAX_COUNT_URIS: usize = 1_000;

/// Counts for each of `uris` (AT-URIs, at most [`MAX_COUNT_URIS`]), in the
/// same order; a post nobody interacted with gets zeros. Hidden accounts'
/// interactions are left out.
pub async fn post_counts(ch: &ClickHouse, uris: &[&str]) -> Result<Vec<PostCounts>, StoreError> {
    if uris.len() > MAX_COUNT_URIS {
        return Err(StoreError::Config(format!(
            "post_counts takes at most {MAX_COUNT_URIS} URIs, got {}",
            uris.len()
        )));
    }
    if let Some(bad) = uris.iter().find(|u| !u.starts_with("at://")) {
        return Err(StoreError::Config(format!("not an AT-URI: {bad:?}")));
    }
    let mut out: Vec<PostCounts> = uris
        .iter()
        .map(|u| PostCounts {
            uri: (*u).to_owned(),
            ..PostCounts::default()
        })
        .collect();
    if uris.is_empty() {
        return Ok(out);
    }
    let list = uris
        .iter()
        .map(|u| literal(u))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = render(ch.database(), "post_counts", &[("uris", &list)])?;
    let rows: Vec<(String, String, u64)> = ch.fetch_all("post_counts", &sql).await?;
    for (uri, kind, n) in rows {
        for c in out.iter_mut().filter(|c| c.uri == uri) {
            match kind.as_str() {
                "like" => c.likes = n,
                "repost" => c.reposts = n,
                "reply" => c.replies = n,
                "quote" => c.quotes = n,
                _ => {}
            }
        }
    }
    Ok(out)
}

/// The interaction refresh statement `name` for one source.
fn refresh_sql(
    db: &str,
    name: &str,
    (kind, source, subject): (&str, &str, &str),
    after: u32,
    before: u32,
) -> Result<String, StoreError> {
    render(
        db,
        name,
        &[
            ("source", source),
            ("subject", subject),
            ("kind", &literal(kind)),
            ("after", &after.to_string()),
            ("before", &before.to_string()),
        ],
    )
}

/// A source's backlog since `after`, with quantiles at `levels`.
fn backlog_sql(db: &str, source: &str, levels: &str, after: u32) -> Result<String, StoreError> {
    render(
        db,
        "interaction_backlog",
        &[
            ("source", source),
            ("levels", levels),
            ("after", &after.to_string()),
        ],
    )
}

/// This module's statements with sample values (see [`sql::catalog`]).
pub(crate) fn samples(db: &str, out: &mut Vec<Rendered>) -> Result<(), StoreError> {
    let alice = literal("did:plc:alice");
    sql::sample(out, db, "collection_counts", &[])?;
    sql::sample(out, db, "account_hidden", &[("did", &alice)])?;
    sql::sample(out, db, "records_of", &[("did", &alice), ("limit", "100")])?;
    for name in ["zero_daily_stats", "refresh_daily_stats"] {
        sql::sample(
            out,
            db,
            name,
            &[("since", "'2024-01-01'"), ("version", "2")],
        )?;
    }
    sql::sample(out, db, "daily_stats", &[("since", "'2024-01-01'")])?;
    for source in INTERACTION_SOURCES {
        for name in ["refresh_interaction_subjects", "refresh_interactions"] {
            out.push(Rendered {
                name: format!("{name}#{}", source.0),
                sql: refresh_sql(db, name, source, 0, u32::MAX)?,
            });
        }
    }
    out.push(Rendered {
        name: "interaction_backlog".into(),
        sql: backlog_sql(db, "likes", "0.25, 0.5", 0)?,
    });
    sql::sample(out, db, "interactions_watermark", &[])?;
    sql::sample(
        out,
        db,
        "save_interactions_watermark",
        &[("upto", "1714521600"), ("version", "2")],
    )?;
    sql::sample(
        out,
        db,
        "post_counts",
        &[("uris", "'at://did:plc:alice/app.bsky.feed.post/3kpost1'")],
    )?;
    Ok(())
}
