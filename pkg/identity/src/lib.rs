//! DID resolution for skyhouse: DID → DID document, and from it the
//! account's signing key and PDS.
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
//! Untrusted input stays bounded: requests time out, redirects are not
//! followed, documents over [`ResolverConfig::max_document_bytes`] are
//! refused, and a document whose `id` is not the DID asked for is rejected.
//! Errors are one line, name the DID, and say whether retrying may help
//! ([`ResolveError::is_retriable`]).
#![deny(missing_docs)]

mod cache;
mod error;
mod resolver;

pub use error::{ConfigError, ResolveError};
pub use resolver::{Resolver, ResolverConfig, DEFAULT_PLC_URL};
pub use skyhouse_atproto::crypto::{DidDocument, PublicKey};
