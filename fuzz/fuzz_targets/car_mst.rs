//! A repository CAR from the network: read, walk, decode every record.
//! Must never panic, and must stay within the configured caps.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skyhouse_atproto::car::CarOptions;
use skyhouse_atproto::repo::Repo;
use skyhouse_atproto::{cbor, json};

fuzz_target!(|data: &[u8]| {
    // Hashes off so the fuzzer can reach the MST and record decoders; a small
    // memory cap so the spill path is exercised too.
    let opts = CarOptions { verify_hashes: false, memory_cap: 4096, max_block: 1 << 16, ..CarOptions::default() };
    let Ok(repo) = Repo::from_bytes(data, opts) else { return };
    let _ = repo.walk(|r| {
        if let Some(d) = r.data {
            if let Ok(v) = cbor::decode(d) {
                let _ = json::validate(&v);
                let _ = serde_json::to_vec(&v);
            }
        }
        Ok::<_, ()>(())
    });
    let _ = repo.commit.unsigned_bytes();
});
