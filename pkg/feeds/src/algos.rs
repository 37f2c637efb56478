//! The feeds: what each one ranks and the ClickHouse query that ranks it.
//!
//! Every query reads current state (`FINAL`, `deleted = 0`) and leaves out
//! hidden accounts (`accounts.active = 0`: deactivated, taken down,
//! suspended, deleted), both as authors and as likers/reposters. Like and
//! repost counts come from `interactions` (migration 0004), which
//! [`skyhouse_store::queries::refresh_interactions`] keeps current, so a
//! deleted like stops counting at the next refresh. Every input that reaches
//! SQL is a checked DID/URI or an escaped literal.

use std::collections::BTreeMap;

use serde::Deserialize;
use skyhouse_atproto::syntax::Did;
use skyhouse_store::{literal, ClickHouse, StoreError};

/// Most posts one ranking holds (what a cursor can page through): ~100 KB
/// of URIs per snapshot in Redis.
pub const MAX_RANKED: usize = 1_000;

/// Posts `whats-hot` considers: those of the last this many seconds (48 h).
pub const HOT_WINDOW_SECS: u32 = 48 * 3600;

/// The collection of feed generator records (`at://<publisher>/<this>/<rkey>`).
pub const GENERATOR_COLLECTION: &str = "app.bsky.feed.generator";

/// Hidden accounts, as a subquery.
const HIDDEN: &str = "SELECT did FROM {db}.accounts FINAL WHERE active = 0";

/// What a feed ranks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedKind {
    /// Likes and reposts (a repost counts twice) over recent posts, divided
    /// by `(age_hours + 2) ^ 1.8` so newer posts rise.
    WhatsHot,
    /// Posts created within the last `window_secs`, by like count.
    Top {
        /// The window, seconds.
        window_secs: u32,
    },
    /// Posts of accounts holding `label` in `actor_labels`, newest first.
    /// A private one answers only viewers who hold the label themselves.
    Label {
        /// The label value.
        label: String,
        /// Only for authenticated viewers holding the label.
        private: bool,
    },
    /// Pinned post URIs, in the given order.
    Static {
        /// AT-URIs of posts.
        uris: Vec<String>,
    },
}

/// One feed: its record key under the publisher and what it ranks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feed {
    /// Record key of its `app.bsky.feed.generator` record.
    pub rkey: String,
    /// What it ranks.
    pub kind: FeedKind,
}

impl Feed {
    /// Whether only viewers holding a label may read it.
    pub fn is_private(&self) -> bool {
        matches!(self.kind, FeedKind::Label { private: true, .. })
    }
}

/// A feed in the config file (`--feeds-config`, JSON):
/// `{"feeds": [{"rkey": "cats", "label": "cat"}, {"rkey": "cats-private",
/// "label": "cat", "private": true}, {"rkey": "pinned", "uris": ["at://…"]}]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedEntry {
    rkey: String,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    private: bool,
    #[serde(default)]
    uris: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedsFile {
    feeds: Vec<FeedEntry>,
}

/// The built-in feeds: `whats-hot`, `top-1h`, `top-24h`.
pub fn builtin_feeds() -> Vec<Feed> {
    vec![
        Feed {
            rkey: "whats-hot".into(),
            kind: FeedKind::WhatsHot,
        },
        Feed {
            rkey: "top-1h".into(),
            kind: FeedKind::Top { window_secs: 3600 },
        },
        Feed {
            rkey: "top-24h".into(),
            kind: FeedKind::Top {
                window_secs: 24 * 3600,
            },
        },
    ]
}

/// Whether `rkey` is a valid record key (atproto record-key syntax).
pub fn valid_rkey(rkey: &str) -> bool {
    (1..=512).contains(&rkey.len())
        && rkey != "."
        && rkey != ".."
        && rkey
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:~-".contains(&b))
}

/// Whether `uri` is `at://<did>/app.bsky.feed.post/<rkey>`.
pub fn valid_post_uri(uri: &str) -> bool {
    let Some(rest) = uri.strip_prefix("at://") else {
        return false;
    };
    let mut parts = rest.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(did), Some("app.bsky.feed.post"), Some(rkey), None) => {
            Did::is_valid(did) && valid_rkey(rkey)
        }
        _ => false,
    }
}

/// The built-in feeds plus those of a config file's JSON text; the error
/// names the entry at fault.
pub fn parse_feeds_config(json: &str) -> Result<Vec<Feed>, String> {
    let file: FeedsFile = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let mut feeds: BTreeMap<String, Feed> = builtin_feeds()
        .into_iter()
        .map(|f| (f.rkey.clone(), f))
        .collect();
    for e in file.feeds {
        if !valid_rkey(&e.rkey) {
            return Err(format!("feed rkey {:?} is not a record key", e.rkey));
        }
        let kind = match (e.label, e.uris) {
            (Some(label), None) => {
                if label.is_empty() || label.len() > 128 {
                    return Err(format!("feed {:?}: label must be 1-128 bytes", e.rkey));
                }
                FeedKind::Label {
                    label,
                    private: e.private,
                }
            }
            (None, Some(uris)) => {
                if e.private {
                    return Err(format!(
                        "feed {:?}: only label feeds can be private",
                        e.rkey
                    ));
                }
                if uris.len() > MAX_RANKED {
                    return Err(format!("feed {:?}: at most {MAX_RANKED} uris", e.rkey));
                }
                if let Some(bad) = uris.iter().find(|u| !valid_post_uri(u)) {
                    return Err(format!("feed {:?}: {bad:?} is not a post AT-URI", e.rkey));
                }
                FeedKind::Static { uris }
            }
            _ => {
                return Err(format!(
                    "feed {:?}: give exactly one of \"label\" or \"uris\"",
                    e.rkey
                ))
            }
        };
        if feeds.contains_key(&e.rkey) {
            return Err(format!("feed {:?} is defined twice", e.rkey));
        }
        feeds.insert(e.rkey.clone(), Feed { rkey: e.rkey, kind });
    }
    Ok(feeds.into_values().collect())
}

/// The live posts of the last `window` seconds by visible authors, as a
/// subquery of `uri` (and `sort_at`).
fn recent_posts(window: u32) -> String {
    format!(
        "SELECT concat('at://', did, '/app.bsky.feed.post/', rkey) AS uri, sort_at \
         FROM {{db}}.posts FINAL \
         WHERE deleted = 0 AND sort_at >= now() - {window} AND did NOT IN ({HIDDEN})"
    )
}

/// The SQL that ranks `kind`, best first, at most [`MAX_RANKED`] URIs.
fn ranking_sql(kind: &FeedKind) -> String {
    match kind {
        FeedKind::WhatsHot => {
            let posts = recent_posts(HOT_WINDOW_SECS);
            format!(
                "SELECT uri FROM ({posts}) AS p ANY INNER JOIN ( \
                   SELECT subject_uri AS uri, countIf(kind = 'like') AS likes, \
                          countIf(kind = 'repost') AS reposts \
                   FROM {{db}}.interactions FINAL \
                   WHERE kind IN ('like', 'repost') AND deleted = 0 \
                     AND subject_uri IN (SELECT uri FROM ({posts})) \
                     AND did NOT IN ({HIDDEN}) \
                   GROUP BY subject_uri) AS c USING uri \
                 ORDER BY (likes + 2 * reposts) / pow(greatest(toInt64(toUInt32(now())) - toInt64(toUInt32(sort_at)), 0) / 3600 + 2, 1.8) DESC, uri DESC \
                 LIMIT {MAX_RANKED}"
            )
        }
        FeedKind::Top { window_secs } => {
            let posts = recent_posts(*window_secs);
            format!(
                "SELECT subject_uri AS uri FROM {{db}}.interactions FINAL \
                 WHERE kind = 'like' AND deleted = 0 \
                   AND subject_uri IN (SELECT uri FROM ({posts})) \
                   AND did NOT IN ({HIDDEN}) \
                 GROUP BY subject_uri ORDER BY count() DESC, uri DESC LIMIT {MAX_RANKED}"
            )
        }
        FeedKind::Label { label, .. } => format!(
            "SELECT concat('at://', did, '/app.bsky.feed.post/', rkey) AS uri FROM {{db}}.posts FINAL \
             WHERE deleted = 0 \
               AND did IN (SELECT did FROM {{db}}.actor_labels FINAL WHERE label = {} AND neg = 0) \
               AND did NOT IN ({HIDDEN}) \
             ORDER BY sort_at DESC, uri DESC LIMIT {MAX_RANKED}",
            literal(label)
        ),
        FeedKind::Static { uris } => {
            // The pinned posts' authors that are hidden; filtered below.
            let dids: Vec<String> = uris
                .iter()
                .filter_map(|u| u.strip_prefix("at://")?.split('/').next())
                .map(literal)
                .collect();
            let list = if dids.is_empty() {
                "''".to_owned()
            } else {
                dids.join(", ")
            };
            format!("SELECT did FROM {{db}}.accounts FINAL WHERE active = 0 AND did IN ({list})")
        }
    }
}

/// Rank `feed` now: post URIs, best first, at most [`MAX_RANKED`].
pub async fn rank(ch: &ClickHouse, feed: &Feed) -> Result<Vec<String>, StoreError> {
    let sql = ranking_sql(&feed.kind).replace("{db}", ch.database());
    let rows: Vec<String> = ch
        .client()
        .query(&sql)
        .fetch_all()
        .await
        .map_err(|e| StoreError::classify(e, "feed ranking"))?;
    match &feed.kind {
        FeedKind::Static { uris } => Ok(uris
            .iter()
            .filter(|u| {
                let did = u
                    .strip_prefix("at://")
                    .and_then(|r| r.split('/').next())
                    .unwrap_or("");
                !rows.iter().any(|h| h == did)
            })
            .cloned()
            .collect()),
        _ => Ok(rows),
    }
}

/// Counts `did`'s live (not negated) `label`, if the account is visible.
fn label_sql(did: &str, label: &str) -> String {
    format!(
        "SELECT count() FROM {{db}}.actor_labels FINAL \
         WHERE did = {d} AND label = {l} AND neg = 0 AND did NOT IN ({HIDDEN})",
        d = literal(did),
        l = literal(label)
    )
}

/// Whether `did` currently holds `label` (not negated) and is visible.
pub async fn holds_label(ch: &ClickHouse, did: &str, label: &str) -> Result<bool, StoreError> {
    if !Did::is_valid(did) {
        return Ok(false);
    }
    let sql = label_sql(did, label).replace("{db}", ch.database());
    let n: u64 = ch
        .client()
        .query(&sql)
        .fetch_one()
        .await
        .map_err(|e| StoreError::classify(e, "label check"))?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_adds_label_and_static_feeds() {
        let feeds = parse_feeds_config(
            r#"{"feeds":[{"rkey":"cats","label":"cat"},{"rkey":"vip","label":"v'ip\\","private":true},
               {"rkey":"pins","uris":["at://did:plc:abc/app.bsky.feed.post/3k2a"]}]}"#,
        )
        .expect("valid");
        assert_eq!(feeds.len(), 6);
        let vip = feeds.iter().find(|f| f.rkey == "vip").expect("vip");
        assert!(vip.is_private());
        assert!(ranking_sql(&vip.kind).contains(r"'v\'ip\\'"));
    }

    #[test]
    fn config_errors_name_the_feed() {
        for (json, needle) in [
            (r#"{"feeds":[{"rkey":"a b","label":"x"}]}"#, "\"a b\""),
            (r#"{"feeds":[{"rkey":"x"}]}"#, "exactly one"),
            (r#"{"feeds":[{"rkey":"whats-hot","label":"x"}]}"#, "twice"),
            (
                r#"{"feeds":[{"rkey":"p","uris":["https://x"]}]}"#,
                "not a post",
            ),
            (
                r#"{"feeds":[{"rkey":"p","uris":[],"private":true}]}"#,
                "private",
            ),
            (r#"{"feeds":[{"rkey":"p","colour":"x"}]}"#, "unknown field"),
        ] {
            let e = parse_feeds_config(json).expect_err(json);
            assert!(e.contains(needle), "{e}");
        }
    }

    /// The ranking and label queries on current ClickHouse (chdb 26.x,
    /// through scripts/chdb_check.py, which also applies the migrations);
    /// the integration tests run them on 18.16. A missing chdb fails.
    #[test]
    fn queries_run_on_current_clickhouse() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let kinds = [
            FeedKind::WhatsHot,
            FeedKind::Top { window_secs: 3600 },
            FeedKind::Label {
                label: "it's".into(),
                private: false,
            },
            FeedKind::Static {
                uris: vec!["at://did:plc:abc/app.bsky.feed.post/3k2a".into()],
            },
        ];
        let mut file = String::from("-- skyhouse-feeds queries (generated by a unit test)\n");
        for k in &kinds {
            file.push_str(&ranking_sql(k));
            file.push_str(";\n");
        }
        file.push_str(&label_sql("did:plc:abc", "vip"));
        file.push_str(";\n");
        let path = std::env::temp_dir().join(format!("skyhouse-feeds-{}.sql", std::process::id()));
        std::fs::write(&path, file).expect("write queries");
        let out = std::process::Command::new("python3")
            .arg("scripts/chdb_check.py")
            .arg("--queries")
            .arg(&path)
            // The checker also wants the store's refresh (it fills the tables).
            .args(["--queries", "pkg/store/queries/store.sql"])
            .current_dir(&root)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .expect("run python3 scripts/chdb_check.py (chdb-core: `just deps`)");
        let _ = std::fs::remove_file(&path);
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn post_uris() {
        assert!(valid_post_uri("at://did:plc:abc/app.bsky.feed.post/3k2a"));
        assert!(!valid_post_uri("at://did:plc:abc/app.bsky.feed.like/3k2a"));
        assert!(!valid_post_uri(
            "at://did:plc:abc/app.bsky.feed.post/3k2a/x"
        ));
        assert!(!valid_post_uri("at://x'/app.bsky.feed.post/3k2a"));
    }
}
