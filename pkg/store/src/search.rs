//! Post and actor search, with their SQL in `queries/search.sql`.
//!
//! Current state only (`FINAL`, `deleted = 0`), never a hidden account
//! (`accounts.active = 0`). A post search is one statement built from the
//! filters that are set, each a named fragment of the file; the catalog
//! renders each filter alone and all of them together, so what the tests run
//! on 18.16 and current ClickHouse is what is sent.

use serde::Deserialize;

use crate::sql::{literal, render, Db, Rendered};
use crate::{ClickHouse, StoreError};

/// Most terms a post search takes (each must occur in the text).
pub const MAX_TERMS: usize = 8;

/// Largest page of one search.
pub const MAX_LIMIT: u32 = 1_000;

/// Whose posts a search is limited to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Author {
    /// An account by DID.
    Did(String),
    /// An account by its current handle (compared lowercased).
    Handle(String),
}

/// Where a page of a post search ended: the last post's position in the
/// order of the search (newest `sort_at` first, then DID and record key
/// descending). The next page starts after it, so posts that arrive while
/// a reader pages never shift what the next page holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostKey {
    /// The post's `sort_at`, Unix seconds.
    pub sort_at: u32,
    /// The author's DID.
    pub did: String,
    /// The post's record key.
    pub rkey: String,
}

/// A post search: every filter that is set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostSearch {
    /// Words that must each occur in the text (case-insensitive), at most
    /// [`MAX_TERMS`]; none means any text.
    pub terms: Vec<String>,
    /// Only this account's posts.
    pub author: Option<Author>,
    /// Only posts tagged with this language (`langs`).
    pub lang: Option<String>,
    /// Only posts with this hashtag (case-insensitive).
    pub tag: Option<String>,
    /// Only posts with `sort_at` at or after this Unix time.
    pub since: Option<u32>,
    /// Only posts with `sort_at` before this Unix time.
    pub until: Option<u32>,
    /// Only posts after this one (the previous page's [`PostPage::next`]).
    pub after: Option<PostKey>,
    /// Page size, 1 to [`MAX_LIMIT`].
    pub limit: u32,
}

/// A post found by a search.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, clickhouse::Row)]
pub struct FoundPost {
    /// The author's DID.
    pub did: String,
    /// Record key.
    pub rkey: String,
    /// Record CID.
    pub cid: String,
    /// The text.
    pub text: String,
    /// Language tags.
    pub langs: Vec<String>,
    /// Hashtags (facets and `tags`).
    pub tags: Vec<String>,
    /// `createdAt` as the author wrote it, Unix seconds.
    pub created_at: u32,
    /// The time the search orders by (`createdAt` unless it lies in the
    /// future or far past), Unix seconds.
    pub sort_at: u32,
}

impl FoundPost {
    /// The post's AT-URI.
    pub fn uri(&self) -> String {
        format!("at://{}/app.bsky.feed.post/{}", self.did, self.rkey)
    }

    /// The post's position, for paging on after it.
    pub fn key(&self) -> PostKey {
        PostKey {
            sort_at: self.sort_at,
            did: self.did.clone(),
            rkey: self.rkey.clone(),
        }
    }
}

/// One page of a post search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostPage {
    /// The posts, newest first.
    pub posts: Vec<FoundPost>,
    /// Where the next page starts, if more posts match.
    pub next: Option<PostKey>,
}

/// A candidate of a post search's first step: a row of any version.
#[derive(Debug, Clone, Deserialize, clickhouse::Row)]
struct Candidate {
    did: String,
    rkey: String,
    sort_at: u32,
}

/// Candidates the first step of a page of `limit` takes: the page and half
/// as many again, plus ten, so that older versions (edits, replays, deletes
/// not yet merged away) among them rarely leave the page short. The second
/// step reads about one granule of `posts` per candidate and part.
fn first_candidates(limit: u32) -> usize {
    let page = limit as usize + 1;
    page + page / 2 + 10
}

/// How many more candidates a search takes when a round left its page short.
const CANDIDATE_GROWTH: usize = 8;

/// Rounds of candidates before the search falls back to the frame without
/// keys.
const CANDIDATE_ROUNDS: usize = 2;

/// Most bytes of SQL the candidates' keys take in one statement; a longer
/// list goes to the fallback. With the rest of the statement this stays
/// under ClickHouse's 256 KiB `max_query_size`.
const KEY_LIST_BYTES: usize = 192 * 1024;

/// The windows (seconds back from now) over which the first step tries the
/// posts by TID time before it reads every post.
const RECENT_WINDOWS: [u32; 3] = [3_600, 86_400, 7 * 86_400];

/// How far a post's TID time may be from its `sort_at` and the post still be
/// left out of `posts_off_time` (migration 0017).
pub(crate) const OFF_TIME_SECS: u32 = 600;

/// The oldest start of a window by TID time: `recent_posts` keeps the days
/// of [`crate::aggregates::RECENT_POST_DAYS`], less one for the day the
/// retention step counts from.
pub(crate) const OLDEST_WINDOW_SECS: u32 = (crate::aggregates::RECENT_POST_DAYS - 1) * 86_400;

/// Where the first step's windows start, smallest window first: the last
/// hour, day and week ([`RECENT_WINDOWS`]), and with `since` (if recent
/// enough) one that starts [`OFF_TIME_SECS`] before it and replaces the
/// wider ones: it holds every match.
fn window_starts(now: u32, since: Option<u32>) -> Vec<u32> {
    let mut starts: Vec<u32> = RECENT_WINDOWS
        .iter()
        .map(|w| now.saturating_sub(*w))
        .collect();
    let since_start = since
        .map(|s| s.saturating_sub(OFF_TIME_SECS))
        .filter(|s| *s >= now.saturating_sub(OLDEST_WINDOW_SECS));
    if let Some(start) = since_start {
        // Windows no narrower than this one add nothing.
        starts.retain(|s| *s > start.saturating_add(OFF_TIME_SECS));
        starts.push(start);
    }
    starts
}

/// The local clock in Unix seconds: where the windows by TID time (post
/// search, the label ranking) count back from.
pub(crate) fn now_secs() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

/// One page of posts matching `search`, newest first.
///
/// First the newest rows of any version that pass the filters
/// (`search_posts_candidates`), then the current rows of those keys alone
/// from the last candidate's position on: the page is exact (see
/// `queries/search.sql`), and FINAL reads a few granules instead of the
/// whole table. The candidates come first from the posts of the last hour,
/// day or week by TID time ([`RECENT_WINDOWS`]), whose cost follows the
/// window: they are exact from the last one's position on when it lies at
/// least [`OFF_TIME_SECS`] into the window; with a recent `since`, the
/// window that starts that far before it holds every match and ends the
/// search ([`window_starts`]). Otherwise they come from every
/// post; a page that comes up short while more candidates exist takes
/// [`CANDIDATE_GROWTH`] times as many, then the search without candidates.
pub async fn search_posts(ch: &ClickHouse, search: &PostSearch) -> Result<PostPage, StoreError> {
    let db = ch.db();
    check(search)?;
    let mut want = first_candidates(search.limit);
    let now = now_secs();
    // The newest sort_at the search can return (until and a cursor bound it).
    let newest = [
        search.until.map(|u| u.saturating_sub(1)),
        search.after.as_ref().map(|k| k.sort_at),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(u32::MAX);
    for from in window_starts(now, search.since) {
        if newest < from.saturating_add(OFF_TIME_SECS) {
            continue;
        }
        let candidates: Vec<Candidate> = ch
            .fetch_all(
                "post search",
                &recent_candidates_sql(db, search, from, want)?,
            )
            .await?;
        let exact_from = from.saturating_add(OFF_TIME_SECS);
        // `since` far enough into the window: every match is in it, so
        // fewer candidates than asked for are all of them.
        let complete = candidates.len() < want && search.since.is_some_and(|s| s >= exact_from);
        if complete && candidates.is_empty() {
            return Ok(page(Vec::new(), search.limit));
        }
        let exact = complete
            || (candidates.len() == want
                && candidates.last().is_some_and(|c| c.sort_at >= exact_from));
        if !exact {
            continue; // too few that recent: a wider window
        }
        if let Some(sql) = keyed_sql(db, search, &candidates, !complete)? {
            let posts: Vec<FoundPost> = ch.fetch_all("post search", &sql).await?;
            if complete || posts.len() > search.limit as usize {
                return Ok(page(posts, search.limit));
            }
        }
        break; // short (older versions among them): every post's candidates
    }
    for _ in 0..CANDIDATE_ROUNDS {
        let candidates: Vec<Candidate> = ch
            .fetch_all("post search", &candidates_sql(db, search, want)?)
            .await?;
        if candidates.is_empty() {
            return Ok(page(Vec::new(), search.limit));
        }
        // Fewer than asked for: every row that matches is a candidate.
        let complete = candidates.len() < want;
        let Some(sql) = keyed_sql(db, search, &candidates, !complete)? else {
            break;
        };
        let posts: Vec<FoundPost> = ch.fetch_all("post search", &sql).await?;
        if complete || posts.len() > search.limit as usize {
            return Ok(page(posts, search.limit));
        }
        want *= CANDIDATE_GROWTH;
    }
    let posts = ch
        .fetch_all("post search", &search_posts_sql(db, search)?)
        .await?;
    Ok(page(posts, search.limit))
}

/// The page of at most `limit` of `posts` (fetched with one more, to tell
/// whether a next page exists).
fn page(mut posts: Vec<FoundPost>, limit: u32) -> PostPage {
    let limit = limit as usize;
    let more = posts.len() > limit;
    posts.truncate(limit);
    let next = if more {
        posts.last().map(FoundPost::key)
    } else {
        None
    };
    PostPage { posts, next }
}

fn check(s: &PostSearch) -> Result<(), StoreError> {
    if !(1..=MAX_LIMIT).contains(&s.limit) {
        return Err(StoreError::Config(format!(
            "search limit {} must be from 1 to {MAX_LIMIT}",
            s.limit
        )));
    }
    if s.terms.len() > MAX_TERMS {
        return Err(StoreError::Config(format!(
            "a search takes at most {MAX_TERMS} terms, got {}",
            s.terms.len()
        )));
    }
    Ok(())
}

/// The terms of `s` as one condition (`search_posts_term`s joined with AND),
/// if it has any.
fn matches(db: Db<'_>, s: &PostSearch) -> Result<Option<String>, StoreError> {
    if s.terms.is_empty() {
        return Ok(None);
    }
    let all = s
        .terms
        .iter()
        .map(|t| render(db, "search_posts_term", &[("term", &literal(t))]))
        .collect::<Result<Vec<_>, _>>()?
        .join(" AND ");
    Ok(Some(all))
}

/// The filters of `s` but its terms, as `AND …` fragments.
fn filters(db: Db<'_>, s: &PostSearch) -> Result<Vec<String>, StoreError> {
    let mut filters = Vec::new();
    match &s.author {
        Some(Author::Did(did)) => filters.push(render(
            db,
            "search_posts_author_did",
            &[("did", &literal(did))],
        )?),
        Some(Author::Handle(handle)) => filters.push(render(
            db,
            "search_posts_author_handle",
            &[("handle", &literal(&handle.to_ascii_lowercase()))],
        )?),
        None => {}
    }
    if let Some(lang) = &s.lang {
        filters.push(render(
            db,
            "search_posts_lang",
            &[("lang", &literal(lang))],
        )?);
    }
    if let Some(tag) = &s.tag {
        filters.push(render(db, "search_posts_tag", &[("tag", &literal(tag))])?);
    }
    if let Some(since) = s.since {
        filters.push(render(
            db,
            "search_posts_since",
            &[("since", &since.to_string())],
        )?);
    }
    if let Some(until) = s.until {
        filters.push(render(
            db,
            "search_posts_until",
            &[("until", &until.to_string())],
        )?);
    }
    if let Some(k) = &s.after {
        filters.push(position(
            db,
            "search_posts_after",
            k.sort_at,
            &k.did,
            &k.rkey,
        )?);
    }
    Ok(filters)
}

/// A fragment comparing a row's position in the search's order with the
/// position (`sort_at`, `did`, `rkey`).
fn position(
    db: Db<'_>,
    fragment: &str,
    sort_at: u32,
    did: &str,
    rkey: &str,
) -> Result<String, StoreError> {
    render(
        db,
        fragment,
        &[
            ("sort_at", &sort_at.to_string()),
            ("did", &literal(did)),
            ("rkey", &literal(rkey)),
        ],
    )
}

/// Every filter of `s`, its terms checked on the row.
fn row_filters(db: Db<'_>, s: &PostSearch) -> Result<Vec<String>, StoreError> {
    let mut all = Vec::new();
    if let Some(m) = matches(db, s)? {
        all.push(render(db, "search_posts_matches", &[("matches", &m)])?);
    }
    all.extend(filters(db, s)?);
    Ok(all)
}

/// The first step: the newest `want` rows of any version passing `s`.
fn candidates_sql(db: Db<'_>, s: &PostSearch, want: usize) -> Result<String, StoreError> {
    check(s)?;
    let filters = row_filters(db, s)?;
    let prewhere = if filters.is_empty() {
        String::new()
    } else {
        render(
            db,
            "search_posts_filtered",
            &[("filters", &filters.join(" "))],
        )?
    };
    render(
        db,
        "search_posts_candidates",
        &[("prewhere", &prewhere), ("limit", &want.to_string())],
    )
}

/// The first step over the posts by TID time from `from` on (and the posts
/// whose TID time is off: `search_posts_recent_candidates`).
fn recent_candidates_sql(
    db: Db<'_>,
    s: &PostSearch,
    from: u32,
    want: usize,
) -> Result<String, StoreError> {
    check(s)?;
    render(
        db,
        "search_posts_recent_candidates",
        &[
            ("filters", &row_filters(db, s)?.join(" ")),
            ("from", &from.to_string()),
            ("limit", &want.to_string()),
        ],
    )
}

/// The second step: the current rows of the candidates' keys, from the
/// last candidate's position on when `bounded` (the candidates may not hold
/// every match). `None` when the keys would make the statement too long.
fn keyed_sql(
    db: Db<'_>,
    s: &PostSearch,
    candidates: &[Candidate],
    bounded: bool,
) -> Result<Option<String>, StoreError> {
    let mut keys = String::new();
    for c in candidates {
        if !keys.is_empty() {
            keys.push_str(", ");
        }
        keys.push('(');
        keys.push_str(&literal(&c.did));
        keys.push_str(", ");
        keys.push_str(&literal(&c.rkey));
        keys.push(')');
        if keys.len() > KEY_LIST_BYTES {
            return Ok(None);
        }
    }
    let mut filters = row_filters(db, s)?;
    if let (true, Some(last)) = (bounded, candidates.last()) {
        filters.push(position(
            db,
            "search_posts_from",
            last.sort_at,
            &last.did,
            &last.rkey,
        )?);
    }
    let prewhere = render(db, "search_posts_keys", &[("keys", &keys)])?;
    frame(db, s, &prewhere, &filters).map(Some)
}

/// The search without candidates: FINAL over the keys whose text holds the
/// terms in any version, or over the whole table.
fn search_posts_sql(db: Db<'_>, s: &PostSearch) -> Result<String, StoreError> {
    check(s)?;
    let prewhere = match matches(db, s)? {
        Some(m) => render(db, "search_posts_terms", &[("matches", &m)])?,
        None => String::new(),
    };
    frame(db, s, &prewhere, &row_filters(db, s)?)
}

fn frame(
    db: Db<'_>,
    s: &PostSearch,
    prewhere: &str,
    filters: &[String],
) -> Result<String, StoreError> {
    render(
        db,
        "search_posts",
        &[
            ("prewhere", prewhere),
            ("filters", &filters.join(" ")),
            ("limit", &(s.limit + 1).to_string()),
        ],
    )
}

/// An account found by [`search_actors`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, clickhouse::Row)]
pub struct FoundActor {
    /// The account's DID.
    pub did: String,
    /// Its current handle.
    pub handle: String,
    /// Its profile's display name (empty without a profile).
    pub display_name: String,
}

/// Visible accounts whose handle or display name contains `q`
/// (case-insensitive), by handle, at most `limit`.
pub async fn search_actors(
    ch: &ClickHouse,
    q: &str,
    limit: u32,
) -> Result<Vec<FoundActor>, StoreError> {
    let sql = search_actors_sql(ch.db(), q, limit)?;
    ch.fetch_all("actor search", &sql).await
}

fn search_actors_sql(db: Db<'_>, q: &str, limit: u32) -> Result<String, StoreError> {
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(StoreError::Config(format!(
            "search limit {limit} must be from 1 to {MAX_LIMIT}"
        )));
    }
    render(
        db,
        "search_actors",
        &[("q", &literal(q)), ("limit", &limit.to_string())],
    )
}

/// This module's statements with sample values (see [`crate::sql::catalog`]): the
/// post search with no filter, each filter alone (named after its
/// fragment) and all of them together.
pub(crate) fn samples(db: Db<'_>, out: &mut Vec<Rendered>) -> Result<(), StoreError> {
    let base = PostSearch {
        limit: 25,
        ..PostSearch::default()
    };
    let after = PostKey {
        sort_at: 1_714_521_600,
        did: "did:plc:alice".into(),
        rkey: "3kpost'1".into(),
    };
    let all = PostSearch {
        terms: vec!["guten".into(), "Morgen's".into(), "100%".into()],
        author: Some(Author::Did("did:plc:alice".into())),
        lang: Some("de".into()),
        tag: Some("Rust".into()),
        since: Some(1_714_000_000),
        until: Some(1_715_000_000),
        after: Some(after.clone()),
        limit: 100,
    };
    let alone = [
        (
            "search_posts_term#one",
            PostSearch {
                terms: vec!["hello".into()],
                ..base.clone()
            },
        ),
        (
            "search_posts_terms#three",
            PostSearch {
                terms: all.terms.clone(),
                ..base.clone()
            },
        ),
        (
            "search_posts_author_did#alone",
            PostSearch {
                author: all.author.clone(),
                ..base.clone()
            },
        ),
        (
            "search_posts_author_handle#alone",
            PostSearch {
                author: Some(Author::Handle("Alice.example.com".into())),
                ..base.clone()
            },
        ),
        (
            "search_posts_lang#alone",
            PostSearch {
                lang: all.lang.clone(),
                ..base.clone()
            },
        ),
        (
            "search_posts_tag#alone",
            PostSearch {
                tag: all.tag.clone(),
                ..base.clone()
            },
        ),
        (
            "search_posts_since#alone",
            PostSearch {
                since: all.since,
                ..base.clone()
            },
        ),
        (
            "search_posts_until#alone",
            PostSearch {
                until: all.until,
                ..base.clone()
            },
        ),
        (
            "search_posts_after#alone",
            PostSearch {
                after: Some(after),
                ..base.clone()
            },
        ),
        ("search_posts", base.clone()),
        (
            "search_posts#all_by_handle",
            PostSearch {
                author: Some(Author::Handle("alice.example.com".into())),
                ..all.clone()
            },
        ),
        ("search_posts#all", all.clone()),
    ];
    // Both steps with every filter, the second with and without its bound.
    let candidates = [
        Candidate {
            did: "did:plc:alice".into(),
            rkey: "3kpost'2".into(),
            sort_at: 1_714_600_000,
        },
        Candidate {
            did: "did:plc:bob".into(),
            rkey: "3kpost1".into(),
            sort_at: 1_714_500_000,
        },
    ];
    let steps = [
        ("search_posts_filtered#all", candidates_sql(db, &all, 252)?),
        (
            "search_posts_matches#terms",
            candidates_sql(
                db,
                &PostSearch {
                    terms: all.terms.clone(),
                    ..base.clone()
                },
                39,
            )?,
        ),
        ("search_posts_candidates", candidates_sql(db, &base, 102)?),
        (
            "search_posts_recent_candidates#all",
            recent_candidates_sql(db, &all, 1_714_000_000, 252)?,
        ),
        (
            "search_posts_recent_candidates",
            recent_candidates_sql(db, &base, 1_714_000_000, 102)?,
        ),
        (
            "search_posts_from#all",
            keyed_sql(db, &all, &candidates, true)?.expect("short"),
        ),
        (
            "search_posts_keys#unbounded",
            keyed_sql(db, &base, &candidates, false)?.expect("short"),
        ),
    ];
    for (name, search) in alone {
        out.push(Rendered {
            name: name.to_owned(),
            sql: search_posts_sql(db, &search)?,
        });
    }
    for (name, sql) in steps {
        out.push(Rendered {
            name: name.to_owned(),
            sql,
        });
    }
    out.push(Rendered {
        name: "search_actors".into(),
        sql: search_actors_sql(db, "ali'ce", 25)?,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recent_since_replaces_the_windows_it_lies_in() {
        let now = 1_800_000_000;
        let (hour, day, week) = (now - 3_600, now - 86_400, now - 7 * 86_400);
        assert_eq!(window_starts(now, None), [hour, day, week]);
        // Two hours back: the hour first, then from 10 minutes before since.
        assert_eq!(
            window_starts(now, Some(now - 7_200)),
            [hour, now - 7_200 - OFF_TIME_SECS]
        );
        // Inside the hour: its own window only.
        assert_eq!(
            window_starts(now, Some(now - 60)),
            [now - 60 - OFF_TIME_SECS]
        );
        // Seven days back: the week adds nothing to it.
        assert_eq!(
            window_starts(now, Some(week)),
            [hour, day, week - OFF_TIME_SECS]
        );
        // Older than `recent_posts` keeps: the usual windows.
        assert_eq!(
            window_starts(now, Some(now - 40 * 86_400)),
            [hour, day, week]
        );
        // The last day `recent_posts` surely keeps.
        let oldest = now - OLDEST_WINDOW_SECS;
        assert_eq!(
            window_starts(now, Some(oldest + OFF_TIME_SECS)),
            [hour, day, week, oldest]
        );
    }

    #[test]
    fn filters_compose_in_one_statement_with_quoted_values() {
        let sql = search_posts_sql(
            Db::single("d"),
            &PostSearch {
                terms: vec!["it's".into(), "{db}".into()],
                author: Some(Author::Handle("Alice.Test".into())),
                limit: 2,
                ..PostSearch::default()
            },
        )
        .expect("renders");
        assert!(
            sql.contains(r"positionCaseInsensitiveUTF8(text, 'it\'s') > 0"),
            "{sql}"
        );
        assert!(
            sql.contains("positionCaseInsensitiveUTF8(text, '{db}') > 0"),
            "{sql}"
        );
        assert!(sql.contains("handle = 'alice.test'"), "{sql}");
        assert!(sql.contains("LIMIT 3"), "one more than the page: {sql}");
        assert!(
            !sql.contains("{filters}") && !sql.contains("{matches}"),
            "{sql}"
        );
    }

    #[test]
    fn limits_and_term_counts_are_checked() {
        let zero = PostSearch::default();
        assert!(matches!(
            search_posts_sql(Db::single("d"), &zero),
            Err(StoreError::Config(_))
        ));
        let many = PostSearch {
            terms: vec!["x".into(); MAX_TERMS + 1],
            limit: 1,
            ..PostSearch::default()
        };
        assert!(matches!(
            search_posts_sql(Db::single("d"), &many),
            Err(StoreError::Config(_))
        ));
        assert!(search_actors_sql(Db::single("d"), "x", MAX_LIMIT + 1).is_err());
    }
}
