//! The fast flow-line reader never decides differently from the reference decoder (the generated
//! one, plus protojson's form of imdsguard's extension), whatever the line and whatever line it
//! decoded before (its buffers are reused).
#![no_main]

use imdsguard_flow::jsonline::{LineDecoder, decode_reference};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut decoder = LineDecoder::new();
    for line in text.split('\n') {
        let want = decode_reference(line).map_err(|e| e.to_string());
        let got = decoder.decode(line).cloned().map_err(|e| e.to_string());
        assert_eq!(got, want, "line {line:?}");
    }
});
