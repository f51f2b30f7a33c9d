//! What a handler reads: the request's params, complete before it runs,
//! and its body, streamed from `FCGI_STDIN` records as the handler reads
//! (see [`Body`]).

use std::borrow::Cow;
use std::io::{self, Read};
use std::ops::Range;

use super::body::Body;
use crate::fastcgi::{ProtocolError, pairs};

/// One FastCGI request as its handler sees it.
///
/// Params are looked up by name; when a name occurs twice the first one
/// wins (as everywhere in herd). The body is read with [`Read`].
pub struct Request<'a> {
    id: u16,
    params: Params,
    body: Body<'a>,
}

impl<'a> Request<'a> {
    pub(crate) fn new(id: u16, params: Params, body: Body<'a>) -> Request<'a> {
        Request { id, params, body }
    }

    /// The FastCGI request id (unique on its connection while it runs).
    pub fn id(&self) -> u16 {
        self.id
    }

    /// A param as text; `None` when it is missing or not UTF-8 (then see
    /// [`Request::param_bytes`]).
    pub fn param(&self, name: &str) -> Option<&str> {
        std::str::from_utf8(self.param_bytes(name)?).ok()
    }

    pub fn param_bytes(&self, name: &str) -> Option<&[u8]> {
        self.params.get(name.as_bytes())
    }

    /// Every param that is valid UTF-8, in the order they came.
    pub fn params(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params
            .iter()
            .filter_map(|(n, v)| Some((std::str::from_utf8(n).ok()?, std::str::from_utf8(v).ok()?)))
    }

    /// Every param, as bytes.
    pub fn params_bytes(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.params.iter()
    }

    /// `REQUEST_METHOD`, or `""` when the server sent none.
    pub fn method(&self) -> &str {
        self.param("REQUEST_METHOD").unwrap_or("")
    }

    /// `REQUEST_URI`: path and query as the client sent them.
    pub fn uri(&self) -> &str {
        self.param("REQUEST_URI").unwrap_or("")
    }

    /// The path part of [`Request::uri`], still percent-encoded.
    pub fn path(&self) -> &str {
        let uri = self.uri();
        uri.split_once('?').map_or(uri, |(path, _)| path)
    }

    /// `QUERY_STRING`, else the part of [`Request::uri`] after `?`.
    pub fn query(&self) -> &str {
        self.param("QUERY_STRING")
            .or_else(|| self.uri().split_once('?').map(|(_, q)| q))
            .unwrap_or("")
    }

    /// The first value of `name` in the query string, percent-decoded (`+`
    /// is a space); `Some("")` for a bare `name` without `=`.
    pub fn query_param(&self, name: &str) -> Option<Cow<'_, str>> {
        self.query()
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
            .find(|(k, _)| percent_decode(k) == name)
            .map(|(_, v)| percent_decode(v))
    }

    /// An HTTP request header by its name (`User-Agent`), from the
    /// `HTTP_*` param the server made of it (`CONTENT_TYPE` and
    /// `CONTENT_LENGTH` have no prefix).
    pub fn header(&self, name: &str) -> Option<&str> {
        let upper = name.to_ascii_uppercase().replace('-', "_");
        match upper.as_str() {
            "CONTENT_TYPE" | "CONTENT_LENGTH" => self.param(&upper),
            _ => self.param(&format!("HTTP_{upper}")),
        }
    }

    /// `CONTENT_LENGTH`, when present and a number.
    pub fn content_length(&self) -> Option<u64> {
        self.param("CONTENT_LENGTH")?.trim().parse().ok()
    }

    /// Reads the whole body into memory, refusing one longer than `limit`
    /// bytes (`InvalidData`) before reading it when `CONTENT_LENGTH` says so.
    pub fn read_body(&mut self, limit: usize) -> io::Result<Vec<u8>> {
        let too_long = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("request body exceeds {limit} bytes"),
            )
        };
        if self.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_long());
        }
        let mut body = Vec::new();
        self.by_ref()
            .take(limit as u64 + 1)
            .read_to_end(&mut body)?;
        if body.len() > limit {
            return Err(too_long());
        }
        Ok(body)
    }

    pub(crate) fn body_mut(&mut self) -> &mut Body<'a> {
        &mut self.body
    }
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("id", &self.id)
            .field("method", &self.method())
            .field("uri", &self.uri())
            .finish_non_exhaustive()
    }
}

impl Read for Request<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.body.read(out)
    }
}

/// The params of one request: the raw `FCGI_PARAMS` stream and where each
/// pair is in it, checked once when the stream is complete.
#[derive(Debug)]
pub struct Params {
    raw: Vec<u8>,
    index: Vec<(Range<usize>, Range<usize>)>,
}

impl Params {
    pub fn parse(raw: Vec<u8>) -> Result<Params, ProtocolError> {
        let base = raw.as_ptr() as usize;
        let at = |s: &[u8]| {
            let start = s.as_ptr() as usize - base;
            start..start + s.len()
        };
        let index = pairs::pairs(&raw)
            .map(|pair| pair.map(|(n, v)| (at(n), at(v))))
            .collect::<Result<_, _>>()?;
        Ok(Params { raw, index })
    }

    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.index
            .iter()
            .map(|(n, v)| (&self.raw[n.clone()], &self.raw[v.clone()]))
    }
}

/// Percent-decodes a query component (`+` is a space); a `%` not followed
/// by two hex digits stays as it is; bytes that are not UTF-8 become U+FFFD.
fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |at: usize| b.get(at).and_then(|c| (*c as char).to_digit(16));
        match (b[i], hex(i + 1), hex(i + 2)) {
            (b'+', _, _) => out.push(b' '),
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 2;
            }
            (c, _, _) => out.push(c),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastcgi::record;
    use bytes::BytesMut;
    use socket2::Socket;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    fn params(list: &[(&str, &str)]) -> Params {
        let mut b = BytesMut::new();
        for (k, v) in list {
            pairs::put_pair(&mut b, k.as_bytes(), v.as_bytes());
        }
        Params::parse(b.to_vec()).unwrap()
    }

    /// A request whose body comes from the records `peer` writes.
    fn with_request<R>(
        list: &[(&str, &str)],
        records: &[u8],
        f: impl FnOnce(&mut Request<'_>) -> R,
    ) -> (R, UnixStream) {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        peer.write_all(records).unwrap();
        let sock = Socket::from(ours);
        let mut buf = BytesMut::new();
        let mut req = Request::new(1, params(list), Body::new(&sock, &mut buf, 1));
        (f(&mut req), peer)
    }

    #[test]
    fn params_and_the_uri_parts() {
        let list = [
            ("REQUEST_METHOD", "POST"),
            ("REQUEST_URI", "/a/b?x=1&name=J%C3%BCrgen+K&flag"),
            ("QUERY_STRING", "x=1&name=J%C3%BCrgen+K&flag"),
            ("HTTP_USER_AGENT", "curl"),
            ("CONTENT_LENGTH", "0"),
            ("REQUEST_METHOD", "GET"),
        ];
        let ((), _) = with_request(&list, b"", |r| {
            assert_eq!(r.method(), "POST", "the first occurrence wins");
            assert_eq!(r.path(), "/a/b");
            assert_eq!(r.query_param("name").as_deref(), Some("Jürgen K"));
            assert_eq!(r.query_param("flag").as_deref(), Some(""));
            assert_eq!(r.query_param("nope"), None);
            assert_eq!(r.header("user-agent"), Some("curl"));
            assert_eq!(r.header("Content-Length"), Some("0"));
            assert_eq!(r.content_length(), Some(0));
            assert_eq!(r.params().count(), 6);
        });
    }

    #[test]
    fn the_body_streams_record_by_record() {
        let records = record::stdin_records(&[b"hello ", b"world"], true);
        let (body, _) = with_request(&[], &records, |r| {
            let mut first = [0u8; 3];
            r.read_exact(&mut first).unwrap();
            assert_eq!(&first, b"hel");
            let mut rest = String::new();
            r.read_to_string(&mut rest).unwrap();
            rest
        });
        assert_eq!(body, "lo world");
    }

    #[test]
    fn read_body_refuses_what_is_over_the_limit() {
        let records = record::stdin_records(&[b"0123456789"], true);
        let (err, _) = with_request(&[], &records, |r| r.read_body(4).unwrap_err());
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let (err, _) = with_request(&[("CONTENT_LENGTH", "999")], b"", |r| {
            r.read_body(10).unwrap_err()
        });
        assert_eq!(
            err.kind(),
            io::ErrorKind::InvalidData,
            "refused before reading"
        );
    }

    #[test]
    fn an_abort_in_the_body_is_an_error_for_the_handler() {
        let mut records = record::stdin_records(&[b"part"], false);
        record::put_record(&mut records, record::ABORT_REQUEST, 1, b"");
        let (err, _) = with_request(&[], &records, |r| {
            let mut s = Vec::new();
            r.read_to_end(&mut s).unwrap_err()
        });
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    }

    #[test]
    fn get_values_in_the_middle_of_the_body_is_answered() {
        let mut records = record::stdin_records(&[b"a"], false);
        record::put_record(&mut records, record::GET_VALUES, 0, b"");
        records.extend_from_slice(&record::stdin_records(&[b"b"], true));
        let (body, mut peer) = with_request(&[], &records, |r| r.read_body(100).unwrap());
        assert_eq!(body, b"ab");
        let mut answer = [0u8; 8];
        peer.read_exact(&mut answer).unwrap();
        assert_eq!(answer[1], record::GET_VALUES_RESULT);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert!(matches!(percent_decode("plain"), Cow::Borrowed(_)));
    }
}
