//! Strict DAG-CBOR: whatever decodes is canonical, so it re-encodes to the
//! same bytes, and its lex-JSON converts back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skyhouse_atproto::{cbor, json};

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = cbor::decode(data) {
        assert_eq!(cbor::encode(&v), data);
        let j = json::to_json_value(&v);
        if j.is_object() && json::validate(&v).is_ok() {
            let back = json::from_lex_json(&j).expect("own lex-JSON converts back");
            assert_eq!(back, v.into_owned());
        }
    }
});
