//! skyhouse backfill (in progress).
#![deny(missing_docs)]
