//! skyhouse's CAR readers (streaming and in-memory) against iroh-car, with
//! block hashes checked and not: the same roots and (CID, block) sequence,
//! both refuse, or a named rule the input is checked to break
//! (pkg/atproto/tests/it/oracle/car.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../pkg/atproto/tests/it/oracle/mod.rs"]
mod oracle;

fuzz_target!(|data: &[u8]| {
    for verify_hashes in [true, false] {
        if let Err(divergence) = oracle::car::check(data, verify_hashes) {
            panic!("{divergence}");
        }
    }
});
