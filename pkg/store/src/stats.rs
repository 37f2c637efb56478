//! Per-account stats and the analytics of the search API, with their SQL in
//! `queries/stats.sql`. (The totals and the daily series are in
//! [`crate::queries`], next to the refresh that computes them.)

use crate::sql::{self, literal, render, Db, Rendered};
use crate::{ClickHouse, JsonRow, StoreError};

/// One account's live records per collection, by collection name.
pub async fn actor_collection_counts(
    ch: &ClickHouse,
    did: &str,
) -> Result<Vec<(String, u64)>, StoreError> {
    let sql = render(
        ch.db(),
        "actor_collection_counts",
        &[("did", &literal(did))],
    )?;
    ch.fetch_all("actor records", &sql).await
}

/// One account's handle, if one is known.
pub async fn actor_handle(ch: &ClickHouse, did: &str) -> Result<Option<String>, StoreError> {
    let sql = render(ch.db(), "actor_handle", &[("did", &literal(did))])?;
    let handles: Vec<String> = ch.fetch_all("actor handle", &sql).await?;
    Ok(handles.into_iter().next())
}

/// The analytics: each a fixed question over the visible accounts' live
/// records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Analytics {
    /// Live records per collection, most first.
    EventsPerCollection,
    /// Live records and distinct accounts per collection.
    CreatesAndUsers,
    /// Posts, reposts and likes per hour of the day they were created.
    ByHour,
    /// The three accounts with the earliest post.
    EarliestPosters,
    /// The three accounts with the longest time between first and last post.
    LongestSpans,
    /// Top hashtags of the window's posts.
    Hashtags,
    /// Top languages of the window's posts.
    Languages,
}

impl Analytics {
    /// Every analytics, in the order they are listed to users.
    pub const ALL: [Analytics; 7] = [
        Analytics::EventsPerCollection,
        Analytics::CreatesAndUsers,
        Analytics::ByHour,
        Analytics::EarliestPosters,
        Analytics::LongestSpans,
        Analytics::Hashtags,
        Analytics::Languages,
    ];

    /// Its name in the API (`events-per-collection`, …).
    pub fn name(self) -> &'static str {
        match self {
            Analytics::EventsPerCollection => "events-per-collection",
            Analytics::CreatesAndUsers => "creates-and-users",
            Analytics::ByHour => "by-hour",
            Analytics::EarliestPosters => "earliest-posters",
            Analytics::LongestSpans => "longest-spans",
            Analytics::Hashtags => "hashtags",
            Analytics::Languages => "languages",
        }
    }

    /// The analytics named `name`.
    pub fn from_name(name: &str) -> Option<Analytics> {
        Analytics::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Whether it reads only a window of recent posts, top `limit` first.
    pub fn is_windowed(self) -> bool {
        matches!(self, Analytics::Hashtags | Analytics::Languages)
    }

    fn statement(self) -> &'static str {
        match self {
            Analytics::EventsPerCollection => "analytics_events_per_collection",
            Analytics::CreatesAndUsers => "analytics_creates_and_users",
            Analytics::ByHour => "analytics_by_hour",
            Analytics::EarliestPosters => "analytics_earliest_posters",
            Analytics::LongestSpans => "analytics_longest_spans",
            Analytics::Hashtags => "analytics_hashtags",
            Analytics::Languages => "analytics_languages",
        }
    }
}

/// The rows of `which`, as JSON objects (each analytics has its own
/// columns). A windowed one ([`Analytics::is_windowed`]) reads the posts of
/// the last `window_secs` and answers its top `limit`; the others ignore both.
pub async fn analytics(
    ch: &ClickHouse,
    which: Analytics,
    window_secs: u32,
    limit: u32,
) -> Result<Vec<JsonRow>, StoreError> {
    let sql = analytics_sql(ch.db(), which, window_secs, limit)?;
    ch.fetch_json("analytics", &sql, &[]).await
}

fn analytics_sql(
    db: Db<'_>,
    which: Analytics,
    window_secs: u32,
    limit: u32,
) -> Result<String, StoreError> {
    if which.is_windowed() {
        render(
            db,
            which.statement(),
            &[
                ("window", &window_secs.to_string()),
                ("limit", &limit.to_string()),
            ],
        )
    } else {
        render(db, which.statement(), &[])
    }
}

/// This module's statements with sample values (see [`sql::catalog`]).
pub(crate) fn samples(db: Db<'_>, out: &mut Vec<Rendered>) -> Result<(), StoreError> {
    let alice = literal("did:plc:alice");
    sql::sample(out, db, "actor_collection_counts", &[("did", &alice)])?;
    sql::sample(out, db, "actor_handle", &[("did", &alice)])?;
    for which in Analytics::ALL {
        out.push(Rendered {
            name: which.statement().to_owned(),
            sql: analytics_sql(db, which, 86_400, 20)?,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in Analytics::ALL {
            assert_eq!(Analytics::from_name(a.name()), Some(a));
        }
        assert_eq!(Analytics::from_name("hashtag"), None);
    }
}
