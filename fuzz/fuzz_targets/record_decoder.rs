//! Arbitrary bytes from a client: decoding never panics, never reads past
//! what it was given, and a decoded record is exactly what its header says.
#![no_main]

use bytes::BytesMut;
use herd::fastcgi::{decode, frame::records};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut taken = 0;
    while let Ok(Some(frame)) = decode(&mut buf) {
        assert_eq!(frame.raw.len(), frame.header.record_len());
        assert_eq!(frame.content().len(), frame.header.content_length as usize);
        taken += frame.raw.len();
    }
    assert!(taken <= data.len());
    let mut walk = records(data);
    for r in walk.by_ref() {
        if r.is_err() {
            break;
        }
    }
    assert!(walk.consumed() <= data.len());
});
