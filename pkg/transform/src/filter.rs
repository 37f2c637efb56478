//! Which collections the indexer keeps.

/// The default filter: Bluesky's app and chat lexicons, comma-separated as
/// `--collections` takes them (the flags' default is this string).
pub const DEFAULT_COLLECTIONS: &str = "app.bsky.*,chat.bsky.*";

/// A list of collection patterns: an NSID (exact) or a prefix ending in
/// `.*` (`app.bsky.*` keeps `app.bsky.feed.post`); `*` keeps everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionFilter {
    exact: Vec<String>,
    prefixes: Vec<String>,
    all: bool,
}

impl Default for CollectionFilter {
    fn default() -> Self {
        CollectionFilter::new(DEFAULT_COLLECTIONS.split(',')).expect("valid default patterns")
    }
}

impl CollectionFilter {
    /// Build from patterns; a bad one is a one-line error naming it.
    pub fn new<S: AsRef<str>>(patterns: impl IntoIterator<Item = S>) -> Result<Self, String> {
        let mut f = CollectionFilter {
            exact: Vec::new(),
            prefixes: Vec::new(),
            all: false,
        };
        for p in patterns {
            let p = p.as_ref().trim();
            if p == "*" {
                f.all = true;
            } else if let Some(prefix) = p.strip_suffix(".*") {
                if prefix.is_empty() || !prefix.split('.').all(segment_ok) {
                    return Err(format!("collection pattern {p:?} is not an NSID prefix"));
                }
                f.prefixes.push(format!("{prefix}."));
            } else if skyhouse_atproto::syntax::Nsid::is_valid(p) {
                f.exact.push(p.to_owned());
            } else {
                return Err(format!(
                    "collection pattern {p:?} is neither an NSID nor a prefix like app.bsky.*"
                ));
            }
        }
        Ok(f)
    }

    /// Whether `collection` is kept.
    #[inline]
    pub fn accepts(&self, collection: &str) -> bool {
        self.all
            || self
                .prefixes
                .iter()
                .any(|p| collection.starts_with(p.as_str()))
            || self.exact.iter().any(|e| e == collection)
    }

    /// The patterns as Jetstream's `wantedCollections` takes them; `None`
    /// when everything is kept.
    pub fn jetstream_wanted(&self) -> Option<Vec<String>> {
        if self.all {
            return None;
        }
        let mut out: Vec<String> = self.exact.clone();
        out.extend(self.prefixes.iter().map(|p| format!("{p}*")));
        Some(out)
    }
}

fn segment_ok(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_keeps_app_and_chat_bsky_only() {
        let f = CollectionFilter::default();
        assert!(f.accepts("app.bsky.feed.post"));
        assert!(f.accepts("chat.bsky.actor.declaration"));
        assert!(!f.accepts("app.bskyx.feed.post"));
        assert!(!f.accepts("com.whtwnd.blog.entry"));
        assert_eq!(
            f.jetstream_wanted().unwrap(),
            vec!["app.bsky.*".to_string(), "chat.bsky.*".to_string()]
        );
    }

    #[test]
    fn exact_all_and_errors() {
        let f = CollectionFilter::new(["app.bsky.feed.like"]).unwrap();
        assert!(f.accepts("app.bsky.feed.like"));
        assert!(!f.accepts("app.bsky.feed.post"));
        assert!(CollectionFilter::new(["*"]).unwrap().accepts("x.y.z"));
        let e = CollectionFilter::new(["app..*"]).unwrap_err();
        assert!(e.contains("app..*"), "{e}");
        let e = CollectionFilter::new(["not a nsid"]).unwrap_err();
        assert!(e.contains("not a nsid"), "{e}");
    }
}
