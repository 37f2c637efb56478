//! A DNS response to a `_atproto` TXT query (bytes from the network): the
//! parser must return an answer or an error, never panic or loop.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skyhouse_identity::dns::parse_txt_response;

fuzz_target!(|data: &[u8]| {
    // The first two bytes are the id the parser expects; also try the
    // message's own id, so the fuzzer reaches past the header check.
    let _ = parse_txt_response(data, 0x1234, "_atproto.alice.example.com");
    if data.len() >= 2 {
        let id = u16::from_be_bytes([data[0], data[1]]);
        let _ = parse_txt_response(data, id, "_atproto.alice.example.com");
        let _ = parse_txt_response(data, id, "a");
    }
});
