//! One connection from the web server (or herd's master): records in, the
//! handler run for each request, records out, until the peer closes, a
//! request without `FCGI_KEEP_CONN` ends, or the peer breaks the protocol.
//!
//! The worker reads its connection until the peer closes it: a manager
//! that keeps one connection open to its worker (herd's master does) is
//! served on it alone, which is what `FCGI_MAX_CONNS = 1` announces.
//!
//! A connection that sends a malformed record (a bad version, a record cut
//! short, a body that does not parse) is closed with one log line and the
//! worker goes back to `accept`: bad input never stops a worker. A handler
//! that panics is answered (500 when nothing was sent yet) and then the
//! connection ends with [`ConnEnd::Panicked`], so the worker exits and its
//! manager replaces it.

use std::io::{self, Read, Write};
use std::time::Duration;

use bytes::BytesMut;
use socket2::Socket;

use super::body::{Body, BodyState, Drained};
use super::request::Request;
use super::response::Response;
use super::session::{Begun, Next, Session};
use super::{App, log, panic};
use crate::fastcgi::{self, Frame, ProtocolError};

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 32 * 1024;

/// What is left of a body the handler did not read is drained up to this
/// much, for at most [`DRAIN_TIMEOUT`], so the connection can carry the next
/// request; past either the connection is closed instead.
pub const DRAIN_LIMIT: u64 = 4 << 20;
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ConnEnd {
    /// Closed (by either side); the worker accepts the next one.
    Closed,
    /// A handler panicked; its request was answered. The worker must exit.
    Panicked,
}

/// Why reading a record failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("connection closed in the middle of a record")]
    Truncated,
    #[error("failed to read: {0}")]
    Io(#[from] io::Error),
}

impl ReadError {
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            ReadError::Protocol(_) => io::ErrorKind::InvalidData,
            ReadError::Truncated => io::ErrorKind::UnexpectedEof,
            ReadError::Io(e) => e.kind(),
        }
    }
}

/// Reads the next whole record into `buf`; `None` when the peer closed the
/// connection between records.
pub fn read_frame(sock: &Socket, buf: &mut BytesMut) -> Result<Option<Frame>, ReadError> {
    loop {
        if let Some(frame) = fastcgi::decode(buf)? {
            return Ok(Some(frame));
        }
        let start = buf.len();
        buf.resize(start + READ_CHUNK, 0);
        let read = loop {
            match (&*sock).read(&mut buf[start..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                buf.truncate(start);
                return Err(e.into());
            }
        };
        buf.truncate(start + n);
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(ReadError::Truncated)
            };
        }
    }
}

/// Writes whole records; a record is never split between two writers.
pub fn send(sock: &Socket, bytes: &[u8]) -> io::Result<()> {
    (&*sock).write_all(bytes)
}

/// Serves every request of one connection.
pub fn serve<A: App>(sock: &Socket, app: &A) -> ConnEnd {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut session = Session::default();
    let mut out = BytesMut::new();
    loop {
        let frame = match read_frame(sock, &mut buf) {
            Ok(Some(frame)) => frame,
            Ok(None) => return ConnEnd::Closed,
            Err(e) => {
                log(format_args!("closing a connection: {e}"));
                return ConnEnd::Closed;
            }
        };
        let next = session.on_record(&frame, &mut out);
        if !out.is_empty() {
            if send(sock, &out).is_err() {
                return ConnEnd::Closed;
            }
            out.clear();
        }
        match next {
            Ok(Next::Read) => {}
            Ok(Next::Close) => return ConnEnd::Closed,
            Ok(Next::Rejected { reason, keep }) => {
                log(format_args!("refused a request: {reason}"));
                if !keep {
                    return ConnEnd::Closed;
                }
            }
            Ok(Next::Run(begun)) => match run_request(sock, &mut buf, begun, app) {
                After::Keep => {}
                After::Close => return ConnEnd::Closed,
                After::Exit => return ConnEnd::Panicked,
            },
            Err(e) => {
                log(format_args!("closing a connection: {e}"));
                return ConnEnd::Closed;
            }
        }
    }
}

/// What the connection does after a request.
enum After {
    Keep,
    Close,
    Exit,
}

/// Runs the handler, drains the body it left, and ends the request.
fn run_request<A: App>(sock: &Socket, buf: &mut BytesMut, begun: Begun, app: &A) -> After {
    let Begun {
        id,
        keep_conn,
        params,
    } = begun;
    let mut req = Request::new(id, params, Body::new(sock, buf, id));
    let mut resp = Response::new(sock, id);
    let outcome = panic::catch(|| app.handle(&mut req, &mut resp));
    let drained = req.body_mut().drain(DRAIN_LIMIT, DRAIN_TIMEOUT);
    let body = req.body_mut();
    let aborted = body.state() == BodyState::Aborted;
    let failure = (body.state() == BodyState::Broken)
        .then(|| body.failure.take())
        .flatten();
    // A handler that failed because the client left (an abort, a broken
    // connection) did nothing wrong: that is logged once, below, or not at
    // all for an abort, which is routine.
    let client_left = aborted || failure.is_some() || resp.is_broken();
    let what = || format!("request {id} ({} {})", req.method(), req.uri());
    let panicked = match outcome {
        Ok(Ok(())) => {
            resp.finish();
            false
        }
        Ok(Err(e)) => {
            if !client_left {
                log(format_args!("{}: handler failed: {e:#}", what()));
            }
            resp.fail();
            false
        }
        Err(p) => {
            log(format_args!(
                "{}: handler {p}; exiting so that the worker is replaced",
                what()
            ));
            if let Some(trace) = &p.backtrace {
                eprintln!("{trace}");
            }
            resp.fail();
            true
        }
    };
    if let Some(why) = failure {
        log(format_args!("{}: closing its connection: {why}", what()));
    }
    if panicked {
        After::Exit
    } else if resp.is_broken() || drained == Drained::GaveUp || !keep_conn {
        After::Close
    } else {
        After::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastcgi::record::{self, EndRequest};
    use crate::fastcgi::{pairs, response};
    use crate::worker::Error;
    use std::os::unix::net::UnixStream;

    struct Echo;

    impl App for Echo {
        fn preload() -> Result<Self, Error> {
            Ok(Echo)
        }

        fn handle(&self, req: &mut Request<'_>, resp: &mut Response<'_>) -> Result<(), Error> {
            match req.query_param("do").as_deref() {
                Some("panic") => panic!("asked to"),
                Some("fail") => anyhow::bail!("asked to fail"),
                Some("ignore") => {}
                _ => {
                    let body = req.read_body(1 << 20)?;
                    write!(resp, "{} {} ", req.method(), req.path())?;
                    resp.write_all(&body)?;
                }
            }
            Ok(())
        }
    }

    fn request(id: u16, uri: &str, keep: bool, body: &[u8]) -> BytesMut {
        let query = uri.split_once('?').map_or("", |(_, q)| q);
        let mut p = BytesMut::new();
        for (k, v) in [
            ("REQUEST_METHOD", "POST"),
            ("REQUEST_URI", uri),
            ("QUERY_STRING", query),
        ] {
            pairs::put_pair(&mut p, k.as_bytes(), v.as_bytes());
        }
        let mut out = BytesMut::new();
        record::put_request(&mut out, id, keep, &p, body);
        out
    }

    /// Serves one connection fed with `input` (the peer then closes its
    /// side); returns how it ended and the replies: (id, stdout, end).
    fn serve_input(input: &[u8]) -> (ConnEnd, Vec<(u16, Vec<u8>, EndRequest)>) {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let sock = Socket::from(ours);
        let mut raw = Vec::new();
        let end = std::thread::scope(|s| {
            let server = s.spawn(move || serve(&sock, &Echo));
            peer.write_all(input).unwrap();
            peer.shutdown(std::net::Shutdown::Write).unwrap();
            peer.read_to_end(&mut raw).unwrap();
            server.join().unwrap()
        });
        let mut buf = BytesMut::from(&raw[..]);
        let mut replies = Vec::new();
        let mut stdout = Vec::new();
        while let Some(f) = fastcgi::decode(&mut buf).unwrap() {
            match f.record_type() {
                record::STDOUT => stdout.extend_from_slice(f.content()),
                record::END_REQUEST => replies.push((
                    f.request_id(),
                    std::mem::take(&mut stdout),
                    EndRequest::parse(f.content()).unwrap(),
                )),
                _ => {}
            }
        }
        (end, replies)
    }

    fn body(stdout: &[u8]) -> String {
        let text = String::from_utf8_lossy(stdout);
        text.split_once("\r\n\r\n").unwrap().1.to_string()
    }

    #[test]
    fn keep_conn_carries_several_requests() {
        let mut input = request(1, "/a", true, b"one");
        input.extend_from_slice(&request(2, "/b?x=1", false, b"two"));
        input.extend_from_slice(&request(3, "/never", true, b""));
        let (end, replies) = serve_input(&input);
        assert_eq!(end, ConnEnd::Closed);
        assert_eq!(replies.len(), 2, "the connection closed after request 2");
        assert_eq!(body(&replies[0].1), "POST /a one");
        assert_eq!(body(&replies[1].1), "POST /b two");
    }

    #[test]
    fn an_unread_body_is_drained_for_the_next_request() {
        let big = vec![b'x'; 200_000];
        let mut input = request(1, "/?do=ignore", true, &big);
        input.extend_from_slice(&request(2, "/next", true, b"ok"));
        let (_, replies) = serve_input(&input);
        assert_eq!(replies.len(), 2);
        assert_eq!(response::status_of(&replies[0].1), Some(200));
        assert_eq!(body(&replies[1].1), "POST /next ok");
    }

    #[test]
    fn a_failing_handler_gets_a_500_and_the_connection_goes_on() {
        let mut input = request(1, "/?do=fail", true, b"");
        input.extend_from_slice(&request(2, "/after", true, b""));
        let (end, replies) = serve_input(&input);
        assert_eq!(end, ConnEnd::Closed);
        assert_eq!(response::status_of(&replies[0].1), Some(500));
        assert_eq!(body(&replies[1].1), "POST /after ");
    }

    #[test]
    fn a_panicking_handler_is_answered_then_the_worker_must_exit() {
        let mut input = request(1, "/?do=panic", true, b"");
        input.extend_from_slice(&request(2, "/never", true, b""));
        let (end, replies) = serve_input(&input);
        assert_eq!(end, ConnEnd::Panicked);
        assert_eq!(replies.len(), 1);
        assert_eq!(response::status_of(&replies[0].1), Some(500));
        assert_eq!(replies[0].2.protocol_status, record::REQUEST_COMPLETE);
    }

    #[test]
    fn an_abort_in_the_body_ends_the_request_and_keeps_the_connection() {
        let full = request(1, "/upload", true, b"partial");
        // Everything but the end of the body, then the abort.
        let mut input = BytesMut::from(&full[..full.len() - 8]);
        record::put_record(&mut input, record::ABORT_REQUEST, 1, b"");
        input.extend_from_slice(&request(2, "/next", true, b""));
        let (end, replies) = serve_input(&input);
        assert_eq!(end, ConnEnd::Closed);
        assert_eq!(replies.len(), 2);
        assert_eq!(replies[0].0, 1);
        assert_eq!(replies[0].2.protocol_status, record::REQUEST_COMPLETE);
        assert_eq!(body(&replies[1].1), "POST /next ");
    }

    #[test]
    fn a_bad_version_closes_the_connection() {
        let mut input = request(1, "/a", true, b"");
        input.extend_from_slice(&[9, 1, 0, 1, 0, 8, 0, 0]);
        input.extend_from_slice(&request(2, "/never", true, b""));
        let (end, replies) = serve_input(&input);
        assert_eq!(end, ConnEnd::Closed);
        assert_eq!(replies.len(), 1);
    }

    #[test]
    fn a_record_cut_short_closes_the_connection() {
        // The body's record loses its padding and the end of the stream.
        let input = request(1, "/a", true, b"body");
        let (end, replies) = serve_input(&input[..input.len() - 12]);
        assert_eq!(end, ConnEnd::Closed);
        assert_eq!(replies.len(), 1, "the handler's read failed: it answers");
        assert_eq!(response::status_of(&replies[0].1), Some(500));
    }
}
