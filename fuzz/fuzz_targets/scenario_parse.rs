//! Any text given to the scenario parser yields a scenario or an error, never a panic.
#![no_main]

use imdsguard_manifest::Source;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let src = Source::new("fuzz.yaml", text);
    if let Ok(s) = imdsguard_scenario::parse(&src) {
        let _ = imdsguard_scenario::run(&s, &[]);
    }
});
