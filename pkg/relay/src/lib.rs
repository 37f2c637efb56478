//! The gRPC relay (SPEC §7): every record operation the indexer and the
//! backfill workers decode, streamed to external ingesters.
//!
//! ```text
//! indexer ──OpsTap──► Pusher ──IngestStream──┐
//! backfill ─OpsTap──► Pusher ──IngestStream──┤
//! standalone source ─► run_source ───────────┼─► Hub (retention ring, cursors) ─► Subscription per client ─► StreamOperations
//!                                  Ingest ───┘
//! ```
//!
//! The relay gives each operation the next cursor (a `u64`) and keeps the
//! newest ones in a ring bounded by count, bytes and age ([`RelayConfig`]).
//! A client resuming from a cursor inside the ring gets everything after it,
//! then live operations, with no gap and no duplicate. Each client reads the
//! ring at its own position: a client more than `client_queue` operations
//! behind is disconnected with RESOURCE_EXHAUSTED (the message names the
//! cursor to resume from); nothing it does slows the publisher, the other
//! clients or the indexer (whose push drops, counted, when the relay is
//! slow or down).
//!
//! With a data directory ([`Hub::open`], `--data-dir`) the window is also
//! kept in segment files (`disk`): it survives a restart, and clients behind
//! the memory ring read it back from disk. Consumer groups (`group`,
//! `StreamRequest.group`) share one stream between members, partitioned by
//! DID, with positions per partition that move with the members' `Ack`s.
#![deny(missing_docs)]

pub mod auth;
mod client;
mod disk;
mod group;
mod hub;
pub mod metrics;
mod ops;
mod push;
mod service;
mod standalone;
mod sub;
mod tls;
mod wire;

/// The protobuf messages and the client of `skyhouse.relay.v1`
/// (proto/skyhouse/relay/v1/relay.proto).
#[allow(missing_docs, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/client/skyhouse.relay.v1.rs"));
}

/// The server half of the generated code (its `OperationBatch` is
/// [`wire::EncodedBatch`]).
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
mod server_pb {
    include!(concat!(env!("OUT_DIR"), "/server/skyhouse.relay.v1.rs"));
}

pub use auth::{Auth, Scope, TokenFile, TokenInfo};
pub use client::{AuthedClient, Bearer, ClientConfig};
pub use disk::{DiskConfig, DiskError};
pub use hub::{
    ConfigError, Hub, RelayConfig, Window, BATCH_BYTES, BATCH_OPS, MAX_GROUP_PARTITIONS,
    MAX_OPERATION_BYTES,
};
pub use ops::prepare_record;
pub use push::{HubTap, Pusher, PUSH_QUEUE};
pub use service::{serve, RelayError, ServeConfig, MAX_INGEST_MESSAGE, SHUTDOWN_GRACE};
pub use standalone::{run_source, SourceSummary};
pub use sub::Subscription;
pub use tls::TlsConfig;
pub use tonic;
pub use wire::{OpRef, Prepared};

/// The first cursor of a relay started now: the Unix time in microseconds,
/// so the cursors of an earlier run are older than this run's window.
pub fn first_cursor_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64)
}
