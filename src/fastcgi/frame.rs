//! Splitting a byte stream into records without copying them.
//!
//! "Need more bytes" is `Ok(None)`. A record is at most
//! [`MAX_RECORD_LEN`](super::record::MAX_RECORD_LEN) bytes by construction of
//! its header, so a buffer never grows past one record plus what one read
//! brought in.

use bytes::{Bytes, BytesMut};

use super::ProtocolError;
use super::record::{HEADER_LEN, Header};

/// One complete record: its header and the raw bytes (header, content and
/// padding), ready to be forwarded as they are.
#[derive(Clone, Debug)]
pub struct Frame {
    pub header: Header,
    pub raw: Bytes,
}

impl Frame {
    pub fn content(&self) -> &[u8] {
        &self.raw[HEADER_LEN..HEADER_LEN + self.header.content_length as usize]
    }

    pub fn record_type(&self) -> u8 {
        self.header.record_type
    }

    pub fn request_id(&self) -> u16 {
        self.header.request_id
    }
}

/// Takes one complete record off the front of `buf`.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
    let Some(header) = peek_header(buf)? else {
        return Ok(None);
    };
    let len = header.record_len();
    if buf.len() < len {
        buf.reserve(len - buf.len());
        return Ok(None);
    }
    let raw = buf.split_to(len).freeze();
    Ok(Some(Frame { header, raw }))
}

/// Reads the header at the front of `buf`, if all 8 bytes are there.
pub fn peek_header(buf: &[u8]) -> Result<Option<Header>, ProtocolError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    Header::parse(&buf[..HEADER_LEN]).map(Some)
}

/// Walks the complete records at the front of a buffer, for relaying a run
/// of records with one write. Yields each header and its offset.
pub struct Records<'a> {
    buf: &'a [u8],
    pos: usize,
}

pub fn records(buf: &[u8]) -> Records<'_> {
    Records { buf, pos: 0 }
}

impl Records<'_> {
    /// Bytes of complete records walked so far.
    pub fn consumed(&self) -> usize {
        self.pos
    }
}

impl Iterator for Records<'_> {
    type Item = Result<(usize, Header), ProtocolError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.buf[self.pos..];
        match peek_header(rest) {
            Err(e) => Some(Err(e)),
            Ok(None) => None,
            Ok(Some(h)) if rest.len() < h.record_len() => None,
            Ok(Some(h)) => {
                let at = self.pos;
                self.pos += h.record_len();
                Some(Ok((at, h)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastcgi::record::{self, STDOUT};
    use proptest::prelude::*;

    #[test]
    fn decode_waits_for_whole_record() {
        let mut full = BytesMut::new();
        record::put_record(&mut full, STDOUT, 1, b"hello");
        let mut buf = BytesMut::from(&full[..10]);
        assert!(decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&full[10..]);
        let frame = decode(&mut buf).unwrap().unwrap();
        assert_eq!(frame.content(), b"hello");
        assert_eq!(frame.request_id(), 1);
        assert!(buf.is_empty());
    }

    #[test]
    fn records_stops_at_partial_record() {
        let mut buf = BytesMut::new();
        record::put_record(&mut buf, STDOUT, 1, b"a");
        record::put_record(&mut buf, STDOUT, 1, b"bc");
        let whole = buf.len();
        record::put_record(&mut buf, STDOUT, 1, b"def");
        let cut = &buf[..buf.len() - 2];
        let mut walk = records(cut);
        let seen: Vec<_> = walk.by_ref().map(|r| r.unwrap().0).collect();
        assert_eq!(seen, vec![0, 16]);
        assert_eq!(walk.consumed(), whole);
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = decode(&mut buf) {}
            for r in records(&bytes) {
                if r.is_err() { break; }
            }
        }

        #[test]
        fn stream_round_trips(data in proptest::collection::vec(any::<u8>(), 0..200_000)) {
            let mut buf = BytesMut::new();
            record::put_stream(&mut buf, STDOUT, 7, &data);
            record::put_stream_end(&mut buf, STDOUT, 7);
            let mut out = Vec::new();
            let mut ended = false;
            while let Some(f) = decode(&mut buf).unwrap() {
                prop_assert_eq!(f.request_id(), 7);
                if f.content().is_empty() { ended = true; }
                out.extend_from_slice(f.content());
            }
            prop_assert!(ended);
            prop_assert_eq!(out, data);
        }
    }
}
