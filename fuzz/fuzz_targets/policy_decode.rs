//! Any text given to the policy decoder yields policies or errors, never a panic, and whatever
//! decodes also resolves.
#![no_main]

use imdsguard_manifest::Source;
use imdsguard_policy::{DecodeOptions, EngineOptions, Repository, decode_source};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let decoded = decode_source(&Source::new("fuzz.yaml", text), &DecodeOptions::default());
    for e in &decoded.errors {
        let _ = e.to_string();
    }
    let mut repo = Repository::new(EngineOptions::default());
    repo.load(&decoded);
    repo.resolve();
});
