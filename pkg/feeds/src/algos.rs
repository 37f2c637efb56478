//! The feeds: what each one ranks and the store function that ranks it
//! ([`skyhouse_store::feeds`], which holds the SQL).
//!
//! Every ranking reads current state and leaves out hidden accounts
//! (`accounts.active = 0`: deactivated, taken down, suspended, deleted),
//! both as authors and as likers/reposters. Like and repost counts come from
//! `interactions` (migration 0004), which
//! [`skyhouse_store::queries::refresh_interactions`] keeps current, so a
//! deleted like stops counting at the next refresh.

use std::collections::BTreeMap;

use serde::Deserialize;
use skyhouse_atproto::syntax::Did;
use skyhouse_store::{feeds, ClickHouse, StoreError};

/// Most posts one ranking holds (what a cursor can page through): ~100 KB
/// of URIs per snapshot in Redis.
pub const MAX_RANKED: usize = 1_000;

/// Posts `whats-hot` considers: those of the last this many seconds (48 h).
pub const HOT_WINDOW_SECS: u32 = 48 * 3600;

/// The collection of feed generator records (`at://<publisher>/<this>/<rkey>`).
pub const GENERATOR_COLLECTION: &str = "app.bsky.feed.generator";

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
    /// How its record presents it (`skyhouse feedgen publish` writes it).
    pub profile: FeedProfile,
}

/// What a feed's `app.bsky.feed.generator` record shows in the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedProfile {
    /// `displayName` (at most 24 characters). Default: the built-in
    /// feed's name, else the record key.
    pub display_name: String,
    /// `description` (at most 300 characters).
    pub description: Option<String>,
    /// An avatar image file (PNG or JPEG, at most 1,000,000 bytes), relative
    /// to the config file's directory.
    pub avatar: Option<std::path::PathBuf>,
}

impl FeedProfile {
    fn named(name: &str, description: &str) -> FeedProfile {
        FeedProfile {
            display_name: name.to_owned(),
            description: Some(description.to_owned()),
            avatar: None,
        }
    }
}

impl Feed {
    /// Whether only viewers holding a label may read it.
    pub fn is_private(&self) -> bool {
        matches!(self.kind, FeedKind::Label { private: true, .. })
    }
}

/// A feed in the config file (`--feeds-config`, JSON):
/// `{"feeds": [{"rkey": "cats", "label": "cat"}, {"rkey": "cats-private",
/// "label": "cat", "private": true}, {"rkey": "pinned", "uris": ["at://…"]}]}`,
/// each optionally with `displayName`, `description` and `avatar` (a file);
/// an entry naming a built-in feed gives only those.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedEntry {
    rkey: String,
    #[serde(default, rename = "displayName")]
    display_name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    avatar: Option<std::path::PathBuf>,
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
            profile: FeedProfile::named(
                "What's hot",
                "Posts of the last 48 hours by likes and reposts, newer ones first.",
            ),
        },
        Feed {
            rkey: "top-1h".into(),
            kind: FeedKind::Top { window_secs: 3600 },
            profile: FeedProfile::named("Top, last hour", "The most liked posts of the last hour."),
        },
        Feed {
            rkey: "top-24h".into(),
            kind: FeedKind::Top {
                window_secs: 24 * 3600,
            },
            profile: FeedProfile::named(
                "Top, last 24 hours",
                "The most liked posts of the last 24 hours.",
            ),
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
    let mut overridden = std::collections::BTreeSet::new();
    let builtin_rkeys: std::collections::BTreeSet<String> =
        builtin_feeds().into_iter().map(|f| f.rkey).collect();
    let mut feeds: BTreeMap<String, Feed> = builtin_feeds()
        .into_iter()
        .map(|f| (f.rkey.clone(), f))
        .collect();
    for e in file.feeds {
        if !valid_rkey(&e.rkey) {
            return Err(format!("feed rkey {:?} is not a record key", e.rkey));
        }
        if e.display_name.as_deref().is_some_and(str::is_empty) {
            return Err(format!("feed {:?}: displayName is empty", e.rkey));
        }
        let is_builtin = builtin_rkeys.contains(&e.rkey) && !overridden.contains(&e.rkey);
        if let Some(builtin) = feeds.get_mut(&e.rkey).filter(|_| is_builtin) {
            if e.label.is_some() || e.uris.is_some() || e.private {
                return Err(format!(
                    "feed {:?} is built in: give only displayName, description or avatar",
                    e.rkey
                ));
            }
            let p = &mut builtin.profile;
            if let Some(name) = e.display_name {
                p.display_name = name;
            }
            if e.description.is_some() {
                p.description = e.description;
            }
            p.avatar = e.avatar;
            overridden.insert(e.rkey);
            continue;
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
        let profile = FeedProfile {
            display_name: e.display_name.unwrap_or_else(|| e.rkey.clone()),
            description: e.description,
            avatar: e.avatar,
        };
        feeds.insert(
            e.rkey.clone(),
            Feed {
                rkey: e.rkey,
                kind,
                profile,
            },
        );
    }
    Ok(feeds.into_values().collect())
}

/// The author DID of a post AT-URI.
fn author(uri: &str) -> &str {
    uri.strip_prefix("at://")
        .and_then(|r| r.split('/').next())
        .unwrap_or("")
}

/// Rank `feed` now: post URIs, best first, at most [`MAX_RANKED`].
pub async fn rank(ch: &ClickHouse, feed: &Feed) -> Result<Vec<String>, StoreError> {
    let max = MAX_RANKED as u32;
    match &feed.kind {
        FeedKind::WhatsHot => feeds::hot_posts(ch, HOT_WINDOW_SECS, max).await,
        FeedKind::Top { window_secs } => feeds::top_liked_posts(ch, *window_secs, max).await,
        FeedKind::Label { label, .. } => Ok(feeds::labelled_posts(ch, label, max).await?.uris),
        FeedKind::Static { uris } => {
            // The pinned posts of hidden authors are left out.
            let dids: Vec<&str> = uris.iter().map(|u| author(u)).collect();
            let hidden = feeds::hidden_among(ch, &dids).await?;
            Ok(uris
                .iter()
                .filter(|u| !hidden.iter().any(|h| h == author(u)))
                .cloned()
                .collect())
        }
    }
}

/// Whether `did` currently holds `label` (not negated) and is visible.
pub async fn holds_label(ch: &ClickHouse, did: &str, label: &str) -> Result<bool, StoreError> {
    if !Did::is_valid(did) {
        return Ok(false);
    }
    feeds::holds_label(ch, did, label).await
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
    }

    #[test]
    fn config_errors_name_the_feed() {
        for (json, needle) in [
            (r#"{"feeds":[{"rkey":"a b","label":"x"}]}"#, "\"a b\""),
            (r#"{"feeds":[{"rkey":"x"}]}"#, "exactly one"),
            (
                r#"{"feeds":[{"rkey":"whats-hot","label":"x"}]}"#,
                "built in",
            ),
            (
                r#"{"feeds":[{"rkey":"c","label":"x"},{"rkey":"c","label":"y"}]}"#,
                "twice",
            ),
            (
                r#"{"feeds":[{"rkey":"c","label":"x","displayName":""}]}"#,
                "empty",
            ),
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

    #[test]
    fn config_gives_the_records_profile() {
        let feeds = parse_feeds_config(
            r#"{"feeds":[{"rkey":"cats","label":"cat","displayName":"Cats","avatar":"cat.png"},
               {"rkey":"dogs","label":"dog"},
               {"rkey":"whats-hot","description":"Hot here."}]}"#,
        )
        .expect("valid");
        let get = |rkey: &str| feeds.iter().find(|f| f.rkey == rkey).expect(rkey);
        assert_eq!(get("cats").profile.display_name, "Cats");
        assert_eq!(
            get("cats").profile.avatar.as_deref(),
            Some(std::path::Path::new("cat.png"))
        );
        assert_eq!(get("dogs").profile.display_name, "dogs");
        assert_eq!(get("dogs").profile.description, None);
        assert_eq!(get("whats-hot").profile.display_name, "What's hot");
        assert_eq!(
            get("whats-hot").profile.description.as_deref(),
            Some("Hot here.")
        );
        assert_eq!(get("whats-hot").kind, FeedKind::WhatsHot);
        assert_eq!(get("top-1h").profile.display_name, "Top, last hour");
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
