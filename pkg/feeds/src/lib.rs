//! The feed generator (`skyhouse feedgen`): feed algorithms over the indexed
//! ClickHouse tables, served as the XRPC methods an AppView calls, with
//! service-auth JWT verification and a Redis cache in front.
//!
//! ```text
//! AppView ── getFeedSkeleton + Bearer JWT ──► router ── verify (DID doc key, cached)
//!                                               │
//!                      Redis page cache ◄───────┤ miss: snapshot of the ranking (Redis list)
//!                                               │        └─ miss: rank in ClickHouse
//! refresh_interactions every --refresh-secs ──► interactions (like/repost counts)
//! ```
//!
//! Paging: the first page ranks the feed once and stores the ranking (at
//! most [`MAX_RANKED`] URIs) as a snapshot in Redis; the cursor names the
//! snapshot and an offset, so later pages read the same ranking: no
//! duplicates or gaps while likes keep arriving. Pages are cached for
//! [`FeedgenConfig::cache_ttl`] under feed + limit + cursor (+ viewer for
//! private feeds).
#![deny(missing_docs)]

mod algos;
mod auth;
mod server;

pub use algos::{
    builtin_feeds, holds_label, parse_feeds_config, rank, valid_post_uri, valid_rkey, Feed,
    FeedKind, FeedProfile, GENERATOR_COLLECTION, HOT_WINDOW_SECS, MAX_RANKED,
};
pub use auth::{bearer, AuthError, ServiceAuth, MAX_TOKEN_BYTES, REFETCH_INTERVAL};
pub use server::{
    describe_metrics, refresh_loop, router, serve, FeedgenConfig, FeedgenState, GET_FEED_SKELETON,
};
