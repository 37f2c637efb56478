//! DID resolution for skyhouse: DID → DID document, and from it the
//! account's signing key, PDS and handle (verified both ways).
//!
//! The firehose indexer needs a DID's key to verify commit signatures
//! (`--verify`); backfill needs its PDS to fetch `getRepo` from. Both resolve
//! the same few hundred thousand active DIDs over and over, so a
//! [`Resolver`] keeps answers in a bounded in-memory cache with a TTL (and
//! remembers "not found" for a shorter time), and concurrent requests for one
//! DID share a single fetch. Redis-backed caching across processes belongs
//! to `pkg/state`, which can sit in front of this.
//!
//! - `did:plc:…` → `GET <plc_url>/<did>` (default <https://plc.directory>).
//! - `did:web:<host>` → `GET https://<host>/.well-known/did.json`. atproto
//!   allows host-level `did:web` only (no paths). For tests,
//!   `did:web:localhost%3A<port>` (or `127.0.0.1%3A<port>`) resolves over
//!   plain http when [`ResolverConfig::allow_loopback_http`] is set.
//!
//! - handles: the document's claim (`alsoKnownAs`) must resolve back to the
//!   DID, by DNS TXT `_atproto.<handle>` (a small UDP/TCP client of its own,
//!   [`dns`]) or `https://<handle>/.well-known/atproto-did`; see
//!   [`Resolver::identity`] and [`HandleConfig`].
//!
//! Untrusted input stays bounded: requests time out, redirects are not
//! followed, documents over [`ResolverConfig::max_document_bytes`] are
//! refused, and a document whose `id` is not the DID asked for is rejected.
//! Errors are one line, name the DID, and say whether retrying may help
//! ([`ResolveError::is_retriable`]).
#![deny(missing_docs)]

mod cache;
pub mod dns;
mod error;
mod handle;
mod metrics;
mod resolver;

pub use error::{ConfigError, ResolveError};
pub use handle::{
    claimed_handle, judge, unusable, HandleAnswer, HandleConfig, HandleResolution, HandleStatus,
    Identity, Via, INVALID_HANDLE,
};
pub use metrics::describe_metrics;
pub use resolver::{Resolver, ResolverConfig, DEFAULT_PLC_URL};
pub use skyhouse_atproto::crypto::{DidDocument, PublicKey};

/// Now, in Unix microseconds (the version of rows built from a resolution).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
