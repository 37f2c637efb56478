//! A firehose WebSocket message: decode it and convert it to Jetstream events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skyhouse_atproto::frame::Frame;
use skyhouse_atproto::jetstream;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::decode(data) {
        let _ = frame.seq();
        let _ = jetstream::from_frame(&frame, 0);
    }
});
