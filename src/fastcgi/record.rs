//! FastCGI records: the 8-byte header, record types and the fixed bodies
//! (`FCGI_BEGIN_REQUEST`, `FCGI_END_REQUEST`, `FCGI_UNKNOWN_TYPE`), as the
//! FastCGI 1.0 specification lays them out.

use bytes::{BufMut, BytesMut};

use super::ProtocolError;

pub const VERSION_1: u8 = 1;
pub const HEADER_LEN: usize = 8;
/// The content length field is 16 bits wide.
pub const MAX_CONTENT_LEN: usize = 65535;
/// The longest record the protocol can express: header, content, padding.
pub const MAX_RECORD_LEN: usize = HEADER_LEN + MAX_CONTENT_LEN + 255;
/// Stream chunks we write are kept a multiple of 8 so no padding is needed.
pub const CHUNK_LEN: usize = 65528;

/// Request id 0 is reserved for management records.
pub const NULL_REQUEST_ID: u16 = 0;

pub const BEGIN_REQUEST: u8 = 1;
pub const ABORT_REQUEST: u8 = 2;
pub const END_REQUEST: u8 = 3;
pub const PARAMS: u8 = 4;
pub const STDIN: u8 = 5;
pub const STDOUT: u8 = 6;
pub const STDERR: u8 = 7;
pub const DATA: u8 = 8;
pub const GET_VALUES: u8 = 9;
pub const GET_VALUES_RESULT: u8 = 10;
pub const UNKNOWN_TYPE: u8 = 11;

/// `FCGI_KEEP_CONN` in the begin-request flags.
pub const KEEP_CONN: u8 = 1;

pub const ROLE_RESPONDER: u16 = 1;
pub const ROLE_AUTHORIZER: u16 = 2;
pub const ROLE_FILTER: u16 = 3;

pub const REQUEST_COMPLETE: u8 = 0;
pub const CANT_MPX_CONN: u8 = 1;
pub const OVERLOADED: u8 = 2;
pub const UNKNOWN_ROLE: u8 = 3;

/// A record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub record_type: u8,
    pub request_id: u16,
    pub content_length: u16,
    pub padding_length: u8,
}

impl Header {
    /// Reads a header from the first 8 bytes of `b`, checking the version.
    pub fn parse(b: &[u8]) -> Result<Header, ProtocolError> {
        debug_assert!(b.len() >= HEADER_LEN);
        if b[0] != VERSION_1 {
            return Err(ProtocolError::BadVersion(b[0]));
        }
        Ok(Header {
            record_type: b[1],
            request_id: u16::from_be_bytes([b[2], b[3]]),
            content_length: u16::from_be_bytes([b[4], b[5]]),
            padding_length: b[6],
        })
    }

    pub fn new(record_type: u8, request_id: u16, content_length: usize) -> Header {
        debug_assert!(content_length <= MAX_CONTENT_LEN);
        Header {
            record_type,
            request_id,
            content_length: content_length as u16,
            padding_length: padding_for(content_length),
        }
    }

    /// Header, content and padding together.
    pub fn record_len(&self) -> usize {
        HEADER_LEN + self.content_length as usize + self.padding_length as usize
    }

    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_u8(VERSION_1);
        buf.put_u8(self.record_type);
        buf.put_u16(self.request_id);
        buf.put_u16(self.content_length);
        buf.put_u8(self.padding_length);
        buf.put_u8(0);
    }
}

/// Padding that brings content to a multiple of 8, as the spec recommends.
fn padding_for(content_length: usize) -> u8 {
    ((8 - content_length % 8) % 8) as u8
}

/// The body of `FCGI_BEGIN_REQUEST`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BeginRequest {
    pub role: u16,
    pub flags: u8,
}

impl BeginRequest {
    pub fn parse(content: &[u8]) -> Result<BeginRequest, ProtocolError> {
        if content.len() != 8 {
            return Err(ProtocolError::BadBody("FCGI_BEGIN_REQUEST"));
        }
        Ok(BeginRequest {
            role: u16::from_be_bytes([content[0], content[1]]),
            flags: content[2],
        })
    }

    pub fn keep_conn(&self) -> bool {
        self.flags & KEEP_CONN != 0
    }
}

/// The body of `FCGI_END_REQUEST`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndRequest {
    pub app_status: u32,
    pub protocol_status: u8,
}

impl EndRequest {
    pub fn parse(content: &[u8]) -> Result<EndRequest, ProtocolError> {
        if content.len() != 8 {
            return Err(ProtocolError::BadBody("FCGI_END_REQUEST"));
        }
        Ok(EndRequest {
            app_status: u32::from_be_bytes([content[0], content[1], content[2], content[3]]),
            protocol_status: content[4],
        })
    }
}

/// Appends one record with `content` (at most [`MAX_CONTENT_LEN`] bytes).
pub fn put_record(buf: &mut BytesMut, record_type: u8, request_id: u16, content: &[u8]) {
    let header = Header::new(record_type, request_id, content.len());
    buf.reserve(header.record_len());
    header.encode(buf);
    buf.put_slice(content);
    buf.put_bytes(0, header.padding_length as usize);
}

/// Appends `data` to a stream (`PARAMS`, `STDIN`, `STDOUT`, ...) in as many
/// records as it takes. Empty `data` writes nothing: the empty record that
/// ends a stream is written by [`put_stream_end`].
pub fn put_stream(buf: &mut BytesMut, record_type: u8, request_id: u16, data: &[u8]) {
    for chunk in data.chunks(CHUNK_LEN) {
        put_record(buf, record_type, request_id, chunk);
    }
}

pub fn put_stream_end(buf: &mut BytesMut, record_type: u8, request_id: u16) {
    put_record(buf, record_type, request_id, &[]);
}

pub fn put_begin_request(buf: &mut BytesMut, request_id: u16, begin: BeginRequest) {
    let r = begin.role.to_be_bytes();
    put_record(
        buf,
        BEGIN_REQUEST,
        request_id,
        &[r[0], r[1], begin.flags, 0, 0, 0, 0, 0],
    );
}

/// A whole responder request: `BEGIN_REQUEST` (with `KEEP_CONN` if
/// `keep_conn`), the encoded `params` and `stdin`, each stream ended.
pub fn put_request(buf: &mut BytesMut, id: u16, keep_conn: bool, params: &[u8], stdin: &[u8]) {
    let flags = if keep_conn { KEEP_CONN } else { 0 };
    let begin = BeginRequest {
        role: ROLE_RESPONDER,
        flags,
    };
    put_begin_request(buf, id, begin);
    put_stream(buf, PARAMS, id, params);
    put_stream_end(buf, PARAMS, id);
    put_stream(buf, STDIN, id, stdin);
    put_stream_end(buf, STDIN, id);
}

pub fn put_end_request(buf: &mut BytesMut, request_id: u16, end: EndRequest) {
    let s = end.app_status.to_be_bytes();
    put_record(
        buf,
        END_REQUEST,
        request_id,
        &[s[0], s[1], s[2], s[3], end.protocol_status, 0, 0, 0],
    );
}

pub fn put_unknown_type(buf: &mut BytesMut, record_type: u8) {
    put_record(
        buf,
        UNKNOWN_TYPE,
        NULL_REQUEST_ID,
        &[record_type, 0, 0, 0, 0, 0, 0, 0],
    );
}

/// Answers an `FCGI_GET_VALUES` query in one `FCGI_GET_VALUES_RESULT`:
/// each variable asked for that `value` knows; the others are left out, as
/// the spec says.
pub fn put_get_values_result<'a>(
    buf: &mut BytesMut,
    query: &[u8],
    value: impl Fn(&[u8]) -> Option<&'a [u8]>,
) {
    let mut body = BytesMut::new();
    for (name, _) in super::pairs::pairs(query).map_while(Result::ok) {
        if let Some(v) = value(name) {
            super::pairs::put_pair(&mut body, name, v);
        }
    }
    put_record(buf, GET_VALUES_RESULT, NULL_REQUEST_ID, &body);
}

/// The `FCGI_GET_VALUES` answers of a worker that serves one connection
/// and one request at a time.
pub fn serial_worker_value(name: &[u8]) -> Option<&'static [u8]> {
    match name {
        b"FCGI_MAX_CONNS" | b"FCGI_MAX_REQS" => Some(b"1"),
        b"FCGI_MPXS_CONNS" => Some(b"0"),
        _ => None,
    }
}

/// Test input for a worker: each chunk one `STDIN` record of request 1,
/// then the stream's empty end record if `end`.
#[cfg(test)]
pub fn stdin_records(chunks: &[&[u8]], end: bool) -> BytesMut {
    let mut b = BytesMut::new();
    for c in chunks {
        put_record(&mut b, STDIN, 1, c);
    }
    if end {
        put_stream_end(&mut b, STDIN, 1);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let mut buf = BytesMut::new();
        let h = Header::new(STDOUT, 513, 13);
        h.encode(&mut buf);
        assert_eq!(buf.len(), HEADER_LEN);
        assert_eq!(Header::parse(&buf).unwrap(), h);
        assert_eq!(h.padding_length, 3);
        assert_eq!(h.record_len(), 24);
    }

    #[test]
    fn header_rejects_other_versions() {
        let b = [2u8, 1, 0, 1, 0, 0, 0, 0];
        assert_eq!(Header::parse(&b), Err(ProtocolError::BadVersion(2)));
    }

    #[test]
    fn stream_splits_large_data_into_aligned_chunks() {
        let mut buf = BytesMut::new();
        let data = vec![7u8; CHUNK_LEN * 2 + 5];
        put_stream(&mut buf, STDOUT, 1, &data);
        let first = Header::parse(&buf[..8]).unwrap();
        assert_eq!(first.content_length as usize, CHUNK_LEN);
        assert_eq!(first.padding_length, 0);
        let total: usize = [CHUNK_LEN, CHUNK_LEN, 5]
            .iter()
            .map(|c| 8 + c + padding_for(*c) as usize)
            .sum();
        assert_eq!(buf.len(), total);
    }

    #[test]
    fn bodies_round_trip() {
        let mut buf = BytesMut::new();
        put_begin_request(
            &mut buf,
            1,
            BeginRequest {
                role: ROLE_RESPONDER,
                flags: KEEP_CONN,
            },
        );
        let begin = BeginRequest::parse(&buf[8..16]).unwrap();
        assert!(begin.keep_conn());
        assert_eq!(begin.role, ROLE_RESPONDER);
        buf.clear();
        put_end_request(
            &mut buf,
            1,
            EndRequest {
                app_status: 70000,
                protocol_status: OVERLOADED,
            },
        );
        let end = EndRequest::parse(&buf[8..16]).unwrap();
        assert_eq!(end.app_status, 70000);
        assert_eq!(end.protocol_status, OVERLOADED);
        assert!(BeginRequest::parse(&[0; 7]).is_err());
    }
}
