//! Arbitrary params bodies: the name-value parser never panics and never
//! yields a slice that is not inside the body.
#![no_main]

use herd::fastcgi::pairs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let range = data.as_ptr_range();
    for pair in pairs::pairs(data) {
        let Ok((name, value)) = pair else { break };
        for s in [name, value] {
            assert!(s.is_empty() || (range.contains(&s.as_ptr()) && s.len() <= data.len()));
        }
    }
    let _ = pairs::find(data, b"REQUEST_URI");
});
