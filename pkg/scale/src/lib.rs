//! The scale benchmark (`just bench-scale [RECORDS]`): how every read,
//! refresh and table of skyhouse grows with the data.
//!
//! For each size (by default RECORDS / 10, then RECORDS record operations)
//! the harness ([`run`]):
//!
//! 1. times the generator alone on one core ([`gen`]), then loads its
//!    network-like dataset through `skyhouse_transform` and the batch
//!    writer (`skyhouse_store::writer::run`), as the indexer writes;
//! 2. runs each maintenance job once: daily stats, interaction counts,
//!    every feed's ranking, the account cleanup queue and one cleanup job,
//!    `skyhouse backfill status`;
//! 3. starts the real `skyhouse search` and `skyhouse feedgen` binaries
//!    and times every route cold (caches dropped, new parameters) and warm
//!    (repeated; feed pages at 200 connections at once);
//! 4. asks the five JSONBench questions, weighs every table
//!    (`system.parts`), adds min(1M, RECORDS / 10) records at the live
//!    rate and runs the jobs again;
//! 5. reads each query's peak memory from the server's query log and the
//!    server's RSS.
//!
//! The [`Report`] holds every figure per size and its growth from the
//! smallest size to the largest; `skyhouse-scale` prints it as a table and
//! one JSON line.
#![deny(missing_docs)]

mod bench;
pub mod clock;
pub mod dist;
pub mod gen;
pub mod http;
pub mod report;
pub mod text;

pub use bench::{run, BoxError, Config};
pub use report::Report;
