//! AT Protocol core for skyhouse: the data every other crate speaks.
//!
//! Everything here is pure (no network, no clock except the TID generator):
//! syntax types, CIDs, strict DAG-CBOR and atproto lex-JSON, CAR files and the
//! MST walk, signed commits and their verification, firehose frames and the
//! Jetstream event model. Sources (`pkg/sources`) feed bytes in; the transform
//! crate consumes the decoded records.
#![deny(missing_docs)]

pub mod car;
pub mod cbor;
pub mod cid;
pub mod commit;
pub mod crypto;
pub mod frame;
pub mod jetstream;
pub mod json;
pub mod mst;
pub mod repo;
pub mod syntax;

pub use cbor::Value;
pub use cid::Cid;
