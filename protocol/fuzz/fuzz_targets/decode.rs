#![no_main]
//! Feeds arbitrary bytes to the frame decoder of both directions: it must
//! return a frame, "need more" or an error, never panic or over-allocate.

use dibop_protocol::{AgentToControl, ControlToAgent, Decoded, decode_frame, encode_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Decoded::Frame { message, .. }) = decode_frame::<AgentToControl>(data) {
        // Whatever decodes must re-encode and decode to the same message.
        let again = encode_frame(&message).expect("decoded message re-encodes");
        match decode_frame::<AgentToControl>(&again) {
            Ok(Decoded::Frame { message: back, .. }) => assert_eq!(back, message),
            other => panic!("re-encoded frame did not decode: {other:?}"),
        }
    }
    let _ = decode_frame::<ControlToAgent>(data);
});
