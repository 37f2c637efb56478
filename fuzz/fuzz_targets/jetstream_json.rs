//! A Jetstream JSON line: parse it; whatever parses must serialize and parse
//! back to the same event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skyhouse_atproto::jetstream::Event;

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = Event::from_json(data) {
        let out = serde_json::to_vec(&ev).expect("serialize");
        let back = Event::from_json(&out).expect("reparse own output");
        assert_eq!(back, ev);
        if let Some(record) = match &ev.payload {
            skyhouse_atproto::jetstream::Payload::Commit { commit } => commit.record.as_ref(),
            _ => None,
        } {
            let _ = skyhouse_atproto::json::from_lex_json(record);
        }
    }
});
