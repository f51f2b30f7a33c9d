//! FastCGI name-value pairs, the body of `FCGI_PARAMS` and of the
//! `FCGI_GET_VALUES` management records.
//!
//! Each length is one byte below 128, else four bytes with the top bit set.
//! Lengths are checked against the bytes actually present before any slice is
//! taken, so a pair that claims 2 GiB costs nothing (the bug class found in
//! two published crates, see the crate survey).

use bytes::{BufMut, BytesMut};

use super::ProtocolError;

/// Iterates over the pairs in a complete params body.
pub struct Pairs<'a> {
    rest: &'a [u8],
}

pub fn pairs(body: &[u8]) -> Pairs<'_> {
    Pairs { rest: body }
}

impl<'a> Iterator for Pairs<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), ProtocolError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = self.take_pair();
        if item.is_err() {
            self.rest = &[];
        }
        Some(item)
    }
}

impl<'a> Pairs<'a> {
    fn take_pair(&mut self) -> Result<(&'a [u8], &'a [u8]), ProtocolError> {
        let name_len = self.take_len()?;
        let value_len = self.take_len()?;
        let name = self.take(name_len)?;
        let value = self.take(value_len)?;
        Ok((name, value))
    }

    fn take_len(&mut self) -> Result<usize, ProtocolError> {
        let first = *self.rest.first().ok_or(ProtocolError::TruncatedPair)?;
        if first < 0x80 {
            self.rest = &self.rest[1..];
            return Ok(first as usize);
        }
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]) as usize)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if n > self.rest.len() {
            return Err(ProtocolError::TruncatedPair);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
}

/// Looks up one name in a params body; the first occurrence wins.
pub fn find<'a>(body: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    pairs(body)
        .map_while(Result::ok)
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// Looks up one name in a params body; the last occurrence wins, as in
/// PHP's FastCGI code, where a later pair replaces an earlier one. What a
/// PHP worker will act on must be read this way.
pub fn find_last<'a>(body: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    pairs(body)
        .map_while(Result::ok)
        .filter(|(n, _)| *n == name)
        .last()
        .map(|(_, v)| v)
}

fn put_len(buf: &mut BytesMut, len: usize) {
    if len < 0x80 {
        buf.put_u8(len as u8);
    } else {
        buf.put_u32(len as u32 | 0x8000_0000);
    }
}

/// Appends one pair. Names and values are at most 2^31 − 1 bytes.
pub fn put_pair(buf: &mut BytesMut, name: &[u8], value: &[u8]) {
    assert!(name.len() <= i32::MAX as usize && value.len() <= i32::MAX as usize);
    put_len(buf, name.len());
    put_len(buf, value.len());
    buf.put_slice(name);
    buf.put_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_and_long_lengths() {
        let mut buf = BytesMut::new();
        let long = vec![b'x'; 128];
        put_pair(&mut buf, b"SHORT", b"v");
        put_pair(&mut buf, b"LONG", &long);
        assert_eq!(buf[0], 5);
        let got: Vec<_> = pairs(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            got,
            vec![(&b"SHORT"[..], &b"v"[..]), (&b"LONG"[..], &long[..])]
        );
        assert_eq!(find(&buf, b"LONG"), Some(&long[..]));
        assert_eq!(find(&buf, b"NONE"), None);
    }

    #[test]
    fn claimed_length_past_the_body_is_an_error_not_an_allocation() {
        // name length 0x7fffffff, value length 0
        let body = [0xff, 0xff, 0xff, 0xff, 0x00, b'a'];
        let got: Vec<_> = pairs(&body).collect();
        assert_eq!(got, vec![Err(ProtocolError::TruncatedPair)]);
    }

    #[test]
    fn truncated_length_is_an_error() {
        let got: Vec<_> = pairs(&[0x80, 0, 0]).collect();
        assert_eq!(got, vec![Err(ProtocolError::TruncatedPair)]);
    }

    proptest! {
        #[test]
        fn pairs_round_trip(list in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..300), proptest::collection::vec(any::<u8>(), 0..300)), 0..8)) {
            let mut buf = BytesMut::new();
            for (n, v) in &list {
                put_pair(&mut buf, n, v);
            }
            let got: Vec<(Vec<u8>, Vec<u8>)> = pairs(&buf)
                .map(|r| r.map(|(n, v)| (n.to_vec(), v.to_vec())))
                .collect::<Result<_, _>>()
                .unwrap();
            prop_assert_eq!(got, list);
        }

        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            for item in pairs(&body) {
                let _ = item;
            }
        }
    }
}
