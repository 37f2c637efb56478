//! A Jetstream JSON line through both parsers: whatever the one-pass parser
//! (`EventRef::parse`) accepts, `Event::from_json` and `from_lex_json`
//! accept with the same values; neither panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skyhouse_atproto::jetstream::{Event, EventRef};

fuzz_target!(|data: &[u8]| {
    let slow = Event::from_json(data);
    if let Some(fast) = EventRef::parse(data) {
        let slow = slow.expect("the model accepts what the one-pass parser accepts");
        let slow = slow
            .to_ref()
            .expect("from_lex_json accepts the record the one-pass parser accepts");
        assert_eq!(fast, slow);
    } else if let Ok(ev) = slow {
        let _ = ev.to_ref();
    }
});
