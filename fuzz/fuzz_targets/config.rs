//! Arbitrary config text: the parser reports errors with locations and
//! never panics.
#![no_main]

use herd::config::{LoadOptions, parse_str};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(errors) = parse_str(text, std::path::Path::new("/fuzz/herd.conf"), &LoadOptions { allow_root: true, ..LoadOptions::default() }) {
        assert!(!errors.0.is_empty());
    }
});
