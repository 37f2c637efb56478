//! Dev-only test helpers.
#![deny(missing_docs)]
