//! The body of the running request: `FCGI_STDIN` records read off the
//! connection as the handler reads, never held in memory as a whole.
//!
//! Records that are not the body may arrive in between: management records
//! are answered, a second request is refused, an abort ends the body. What
//! the handler leaves unread is drained after it returns, up to a bound, so
//! the connection can carry the next request.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use socket2::Socket;

use super::conn;
use super::session::{self, Running};

/// How the body stream of a request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyState {
    Open,
    /// The empty `FCGI_STDIN` record came.
    Ended,
    /// `FCGI_ABORT_REQUEST` came: the client went away.
    Aborted,
    /// The connection failed or broke the protocol; it must be closed.
    Broken,
}

/// How draining what the handler left unread ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drained {
    /// The body was read to its end (or the request aborted): the
    /// connection can carry the next request.
    Done,
    /// More than the bound was left, or it came too slowly, or the
    /// connection broke: close it after the response.
    GaveUp,
}

/// The `FCGI_STDIN` stream of the running request, read off the
/// connection's socket and input buffer.
pub struct Body<'a> {
    sock: &'a Socket,
    buf: &'a mut BytesMut,
    id: u16,
    /// What is left of the last `FCGI_STDIN` record.
    chunk: Bytes,
    state: BodyState,
    /// Why the connection broke, for the log.
    pub(crate) failure: Option<String>,
}

impl<'a> Body<'a> {
    pub(crate) fn new(sock: &'a Socket, buf: &'a mut BytesMut, id: u16) -> Body<'a> {
        Body {
            sock,
            buf,
            id,
            chunk: Bytes::new(),
            state: BodyState::Open,
            failure: None,
        }
    }

    pub(crate) fn state(&self) -> BodyState {
        self.state
    }

    /// Reads and drops the rest of the body: at most `limit` bytes, for at
    /// most `within`.
    pub(crate) fn drain(&mut self, limit: u64, within: Duration) -> Drained {
        let deadline = Instant::now() + within;
        let mut left = limit;
        let result = loop {
            left = left.saturating_sub(std::mem::take(&mut self.chunk).len() as u64);
            match self.state {
                BodyState::Ended | BodyState::Aborted => break Drained::Done,
                BodyState::Broken => break Drained::GaveUp,
                BodyState::Open => {}
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if left == 0
                || remaining.is_zero()
                || self.sock.set_read_timeout(Some(remaining)).is_err()
            {
                break Drained::GaveUp;
            }
            // An error marks the body broken; the loop then gives up.
            if let Err(e) = self.fill()
                && matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                )
            {
                self.failure = Some(format!(
                    "the rest of the request body did not come within {within:?}"
                ));
            }
        };
        let _ = self.sock.set_read_timeout(None);
        result
    }

    /// Reads records until a `FCGI_STDIN` chunk, the end of the stream, an
    /// abort or a failure; answers management records on the way.
    fn fill(&mut self) -> io::Result<()> {
        let mut out = BytesMut::new();
        loop {
            let frame = match conn::read_frame(self.sock, self.buf) {
                Ok(Some(f)) => f,
                Ok(None) => {
                    return Err(self.broke(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed in the request body".into(),
                    ));
                }
                Err(e) => return Err(self.broke(e.kind(), e.to_string())),
            };
            let event = session::while_running(&frame, self.id, &mut out);
            if !out.is_empty() {
                if let Err(e) = conn::send(self.sock, &out) {
                    return Err(self.broke(e.kind(), e.to_string()));
                }
                out.clear();
            }
            match event {
                Ok(Running::Stdin(bytes)) => {
                    self.chunk = bytes;
                    return Ok(());
                }
                Ok(Running::StdinEnd) => {
                    self.state = BodyState::Ended;
                    return Ok(());
                }
                Ok(Running::Abort) => {
                    self.state = BodyState::Aborted;
                    return Ok(());
                }
                Ok(Running::Other) => {}
                Err(e) => return Err(self.broke(io::ErrorKind::InvalidData, e.to_string())),
            }
        }
    }

    fn broke(&mut self, kind: io::ErrorKind, why: String) -> io::Error {
        self.state = BodyState::Broken;
        self.failure.get_or_insert_with(|| why.clone());
        io::Error::new(kind, why)
    }
}

impl Read for Body<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.state {
                BodyState::Open => self.fill()?,
                BodyState::Ended => return Ok(0),
                BodyState::Aborted => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the client aborted the request",
                    ));
                }
                BodyState::Broken => {
                    let why = self.failure.clone().unwrap_or_default();
                    return Err(io::Error::new(io::ErrorKind::BrokenPipe, why));
                }
            }
        }
        let n = out.len().min(self.chunk.len());
        out[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk.advance(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastcgi::record;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    /// A body fed with the records `peer` wrote.
    fn with_body<R>(records: &[u8], f: impl FnOnce(&mut Body<'_>) -> R) -> (R, UnixStream) {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        peer.write_all(records).unwrap();
        let sock = Socket::from(ours);
        let mut buf = BytesMut::new();
        let mut body = Body::new(&sock, &mut buf, 1);
        (f(&mut body), peer)
    }

    #[test]
    fn drain_reads_to_the_end_within_its_bound() {
        let records = record::stdin_records(&[&[b'x'; 1000], &[b'y'; 1000]], true);
        let (done, _) = with_body(&records, |r| r.drain(10_000, Duration::from_secs(5)));
        assert_eq!(done, Drained::Done);
        let (gave_up, _) = with_body(&records, |r| r.drain(500, Duration::from_secs(5)));
        assert_eq!(gave_up, Drained::GaveUp);
        let unfinished = record::stdin_records(&[b"x"], false);
        let (slow, _peer) = with_body(&unfinished, |r| r.drain(10_000, Duration::from_millis(50)));
        assert_eq!(
            slow,
            Drained::GaveUp,
            "a body that never ends is not waited for"
        );
    }

    #[test]
    fn a_closed_connection_is_a_broken_body() {
        let (ours, peer) = UnixStream::pair().unwrap();
        drop(peer);
        let sock = Socket::from(ours);
        let mut buf = BytesMut::new();
        let mut body = Body::new(&sock, &mut buf, 1);
        let err = body.read(&mut [0u8; 4]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(body.state(), BodyState::Broken);
    }
}
