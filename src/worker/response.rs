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
#[path = "response_tests.rs"]
mod tests;
