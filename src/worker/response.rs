//! What a handler writes: a status, headers, and a body streamed as
//! `FCGI_STDOUT` records.
//!
//! Status and headers may change until the first byte of body is written;
//! then they are committed, ahead of the body, and changing them is an
//! error. The body is buffered up to one record ([`CHUNK_LEN`] bytes) and
//! sent record by record, so a large body streams in constant memory. A
//! small response leaves in one write with its `FCGI_END_REQUEST`.
//!
//! Until anything is on the wire, the library can still replace what the
//! handler wrote by a 500 when the handler fails or panics.

use std::fmt::Write as _;
use std::io::{self, Write};

use bytes::BytesMut;
use socket2::Socket;

use super::conn;
use super::session;
use crate::fastcgi::record::{self, CHUNK_LEN, STDOUT};
use crate::fastcgi::response as cgi;

/// What a handler may get wrong about a response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("the headers were already sent with the start of the body")]
    HeadersSent,
    #[error("invalid HTTP status {0} (must be 100 to 599)")]
    BadStatus(u16),
    #[error("invalid response header {0:?}: a name is a token, a value has no line break")]
    BadHeader(String),
}

/// The response to one request.
pub struct Response<'a> {
    sock: &'a Socket,
    id: u16,
    status: u16,
    /// `Name: value\r\n` lines.
    headers: String,
    has_content_type: bool,
    stage: Stage,
    /// `FCGI_STDOUT` content not yet sent: less than one record.
    pending: Vec<u8>,
    /// Whether any byte went out on the socket.
    sent: bool,
    /// A write failed: the peer is gone.
    broken: Option<io::ErrorKind>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Head,
    Body,
    Ended,
}

impl<'a> Response<'a> {
    pub(crate) fn new(sock: &'a Socket, id: u16) -> Response<'a> {
        Response {
            sock,
            id,
            status: 200,
            headers: String::new(),
            has_content_type: false,
            stage: Stage::Head,
            pending: Vec::new(),
            sent: false,
            broken: None,
        }
    }

    /// Sets the HTTP status (200 unless set).
    pub fn status(&mut self, code: u16) -> Result<&mut Self, ResponseError> {
        self.check_head()?;
        if !(100..=599).contains(&code) {
            return Err(ResponseError::BadStatus(code));
        }
        self.status = code;
        Ok(self)
    }

    /// Adds a header. Without a `Content-Type` header the response says
    /// `text/plain; charset=utf-8`. `Status` is set with
    /// [`Response::status`], not here.
    pub fn header(&mut self, name: &str, value: &str) -> Result<&mut Self, ResponseError> {
        self.check_head()?;
        let token = |c: u8| c.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&c);
        let bad_value = value.bytes().any(|c| matches!(c, b'\r' | b'\n' | 0));
        if name.is_empty()
            || !name.bytes().all(token)
            || bad_value
            || name.eq_ignore_ascii_case("status")
        {
            return Err(ResponseError::BadHeader(name.to_string()));
        }
        self.has_content_type |= name.eq_ignore_ascii_case("content-type");
        let _ = write!(self.headers, "{name}: {value}\r\n");
        Ok(self)
    }

    /// Whether the status and headers are committed (the body started).
    pub fn headers_sent(&self) -> bool {
        self.stage != Stage::Head
    }

    fn check_head(&self) -> Result<(), ResponseError> {
        match self.stage {
            Stage::Head => Ok(()),
            _ => Err(ResponseError::HeadersSent),
        }
    }

    /// Puts the status line and headers ahead of the body.
    fn commit_head(&mut self) {
        if self.stage != Stage::Head {
            return;
        }
        self.stage = Stage::Body;
        let mut head = match cgi::reason(self.status) {
            "" => format!("Status: {}\r\n", self.status),
            reason => format!("Status: {} {reason}\r\n", self.status),
        };
        if !self.has_content_type {
            head.push_str("Content-Type: text/plain; charset=utf-8\r\n");
        }
        head.push_str(&std::mem::take(&mut self.headers));
        head.push_str("\r\n");
        self.push(head.as_bytes());
    }

    /// Appends body bytes, sending every full record.
    fn push(&mut self, mut data: &[u8]) {
        if !self.pending.is_empty() {
            let take = data.len().min(CHUNK_LEN - self.pending.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() < CHUNK_LEN {
                return;
            }
            let mut full = std::mem::take(&mut self.pending);
            self.send_stdout(&full);
            full.clear();
            self.pending = full; // keeps its allocation
        }
        while data.len() >= CHUNK_LEN {
            self.send_stdout(&data[..CHUNK_LEN]);
            data = &data[CHUNK_LEN..];
        }
        self.pending.extend_from_slice(data);
    }

    /// Sends `content` as `FCGI_STDOUT` records.
    fn send_stdout(&mut self, content: &[u8]) {
        let mut out = BytesMut::with_capacity(content.len() + 16);
        record::put_stream(&mut out, STDOUT, self.id, content);
        self.send(&out);
    }

    /// Sends a write. A failed write is remembered (the peer is gone) and
    /// later ones are skipped.
    fn send(&mut self, bytes: &[u8]) {
        if self.broken.is_some() || bytes.is_empty() {
            return;
        }
        self.sent = true;
        if let Err(e) = conn::send(self.sock, bytes) {
            self.broken = Some(e.kind());
        }
    }

    fn broken_error(&self) -> Option<io::Error> {
        self.broken
            .map(|kind| io::Error::new(kind, "the connection to the web server is gone"))
    }

    /// Ends the request after the handler returned: what is left of the
    /// body, the end of `FCGI_STDOUT` and `FCGI_END_REQUEST`, in one write.
    pub(crate) fn finish(&mut self) {
        self.end(0);
    }

    /// Ends the request after the handler failed or panicked: a 500 when
    /// nothing was sent yet, else the end of what was sent.
    pub(crate) fn fail(&mut self) {
        if self.sent || self.stage == Stage::Ended {
            self.end(1);
            return;
        }
        self.stage = Stage::Ended;
        let mut out = BytesMut::new();
        cgi::put_simple(&mut out, self.id, 500, &[], "internal server error\n");
        self.send(&out);
    }

    fn end(&mut self, app_status: u32) {
        if self.stage == Stage::Ended {
            return;
        }
        self.commit_head();
        self.stage = Stage::Ended;
        let mut out = BytesMut::new();
        record::put_stream(
            &mut out,
            STDOUT,
            self.id,
            &std::mem::take(&mut self.pending),
        );
        record::put_stream_end(&mut out, STDOUT, self.id);
        session::end_request(&mut out, self.id, app_status, record::REQUEST_COMPLETE);
        self.send(&out);
    }

    /// Whether the connection is still usable after this response.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken.is_some()
    }
}

impl std::fmt::Debug for Response<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("id", &self.id)
            .field("status", &self.status)
            .field("headers_sent", &self.headers_sent())
            .finish_non_exhaustive()
    }
}

impl Write for Response<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(e) = self.broken_error() {
            return Err(e);
        }
        if self.stage == Stage::Ended {
            return Err(io::Error::other("the response is already finished"));
        }
        self.commit_head();
        self.push(data);
        match self.broken_error() {
            Some(e) => Err(e),
            None => Ok(data.len()),
        }
    }

    /// Sends the headers (if not yet) and the buffered body now.
    fn flush(&mut self) -> io::Result<()> {
        if self.stage == Stage::Ended {
            return Ok(());
        }
        self.commit_head();
        let mut pending = std::mem::take(&mut self.pending);
        self.send_stdout(&pending);
        pending.clear();
        self.pending = pending;
        match self.broken_error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastcgi::decode;
    use crate::fastcgi::record::EndRequest;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    /// Runs `f` on a response for request 1, then reads what it sent:
    /// (STDOUT bytes, STDOUT record sizes, the END_REQUEST if any).
    fn sent(f: impl FnOnce(&mut Response<'_>) + Send) -> (Vec<u8>, Vec<usize>, Option<EndRequest>) {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let sock = Socket::from(ours);
        let mut raw = Vec::new();
        // The writer runs beside the reader: a large body fills the socket.
        std::thread::scope(|s| {
            s.spawn(move || {
                let mut resp = Response::new(&sock, 1);
                f(&mut resp);
            });
            peer.read_to_end(&mut raw).unwrap();
        });
        let mut buf = BytesMut::from(&raw[..]);
        let (mut stdout, mut sizes, mut end) = (Vec::new(), Vec::new(), None);
        while let Some(frame) = decode(&mut buf).unwrap() {
            match frame.record_type() {
                STDOUT => {
                    sizes.push(frame.content().len());
                    stdout.extend_from_slice(frame.content());
                }
                record::END_REQUEST => end = Some(EndRequest::parse(frame.content()).unwrap()),
                t => panic!("unexpected record type {t}"),
            }
        }
        (stdout, sizes, end)
    }

    #[test]
    fn a_small_response_is_one_write_with_its_end() {
        let (out, sizes, end) = sent(|r| {
            r.status(404).unwrap().header("X-A", "1").unwrap();
            r.write_all(b"gone").unwrap();
            r.finish();
        });
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "Status: 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nX-A: 1\r\n\r\ngone"
        );
        assert_eq!(sizes.last(), Some(&0), "the stream ends");
        assert_eq!(end.unwrap().app_status, 0);
    }

    #[test]
    fn headers_are_refused_once_the_body_started() {
        let (out, _, _) = sent(|r| {
            r.header("Content-Type", "text/html").unwrap();
            write!(r, "<p>").unwrap();
            assert_eq!(
                r.header("X-Late", "1").unwrap_err(),
                ResponseError::HeadersSent
            );
            assert_eq!(r.status(500).unwrap_err(), ResponseError::HeadersSent);
            r.finish();
        });
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("Status: 200 OK\r\nContent-Type: text/html\r\n\r\n<p>"),
            "{text}"
        );
    }

    #[test]
    fn header_injection_is_refused() {
        let (_, _, _) = sent(|r| {
            assert!(r.header("X-A", "1\r\nSet-Cookie: x").is_err());
            assert!(r.header("X A", "1").is_err());
            assert!(r.header("", "1").is_err());
            assert!(r.header("Status", "200").is_err());
            assert!(r.status(42).is_err());
            r.finish();
        });
    }

    #[test]
    fn a_large_body_streams_in_full_records() {
        let body = vec![b'z'; 3 * CHUNK_LEN + 100];
        let (out, sizes, _) = sent(|r| {
            for piece in body.chunks(1000) {
                r.write_all(piece).unwrap();
            }
            r.finish();
        });
        assert!(sizes[..3].iter().all(|s| *s == CHUNK_LEN), "{sizes:?}");
        let head_len = out.len() - body.len();
        assert!(out[head_len..].iter().all(|b| *b == b'z'));
    }

    #[test]
    fn a_failure_before_anything_was_sent_is_a_500() {
        let (out, _, end) = sent(|r| {
            r.status(201).unwrap();
            r.write_all(b"half of it").unwrap();
            r.fail();
        });
        assert_eq!(cgi::status_of(&out), Some(500));
        assert!(!String::from_utf8_lossy(&out).contains("half"));
        assert_eq!(end.unwrap().app_status, 0);
    }

    #[test]
    fn a_failure_after_the_headers_went_out_ends_the_request() {
        let (out, _, end) = sent(|r| {
            r.write_all(b"streamed").unwrap();
            r.flush().unwrap();
            r.fail();
        });
        assert_eq!(cgi::status_of(&out), Some(200));
        assert!(out.ends_with(b"streamed"));
        assert_eq!(end.unwrap().app_status, 1);
    }

    #[test]
    fn a_status_without_a_reason_phrase() {
        let (out, _, _) = sent(|r| {
            r.status(299).unwrap();
            r.finish();
        });
        assert!(out.starts_with(b"Status: 299\r\n"));
    }

    #[test]
    fn an_empty_response_still_has_its_head() {
        let (out, _, end) = sent(|r| {
            r.status(204).unwrap();
            r.finish();
        });
        assert_eq!(cgi::status_of(&out), Some(204));
        assert!(end.is_some());
    }

    #[test]
    fn writes_after_the_peer_left_fail() {
        let (ours, peer) = UnixStream::pair().unwrap();
        drop(peer);
        let sock = Socket::from(ours);
        let mut r = Response::new(&sock, 1);
        r.write_all(b"x").unwrap(); // buffered
        assert!(r.flush().is_err());
        assert!(r.is_broken());
        assert!(r.write_all(b"y").is_err());
    }
}
