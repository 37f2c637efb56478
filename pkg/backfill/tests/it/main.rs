//! Backfill against real servers.
