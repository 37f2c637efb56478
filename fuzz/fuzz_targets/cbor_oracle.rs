//! skyhouse's DAG-CBOR decoder against serde_ipld_dagcbor: both accept with
//! the same value, both refuse, or skyhouse refuses under a named atproto
//! rule the input is checked to break (pkg/atproto/tests/it/oracle/dagcbor.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../pkg/atproto/tests/it/oracle/mod.rs"]
mod oracle;

fuzz_target!(|data: &[u8]| {
    if let Err(divergence) = oracle::dagcbor::check(data) {
        panic!("{divergence}");
    }
});
