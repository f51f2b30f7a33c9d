//! A blocking FastCGI client for tests, built on herd's codec, that can
//! also send what no well-behaved client would.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use herd::fastcgi::record::{self, EndRequest};
use herd::fastcgi::{self, Frame, pairs, response};

/// A TCP or unix stream; the socket options tests need on either.
pub trait Stream: Read + Write + Send {
    fn set_read_timeout(&self, d: Option<Duration>) -> std::io::Result<()>;
    fn set_nonblocking(&self, on: bool) -> std::io::Result<()>;
}

impl Stream for TcpStream {
    fn set_read_timeout(&self, d: Option<Duration>) -> std::io::Result<()> {
        TcpStream::set_read_timeout(self, d)
    }
    fn set_nonblocking(&self, on: bool) -> std::io::Result<()> {
        TcpStream::set_nonblocking(self, on)
    }
}

impl Stream for UnixStream {
    fn set_read_timeout(&self, d: Option<Duration>) -> std::io::Result<()> {
        UnixStream::set_read_timeout(self, d)
    }
    fn set_nonblocking(&self, on: bool) -> std::io::Result<()> {
        UnixStream::set_nonblocking(self, on)
    }
}

/// Connects to a unix path (anything with a `/`) or host:port.
pub fn connect(addr: &str) -> Box<dyn Stream> {
    try_connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"))
}

/// Like [`connect`], but a refused connection is the caller's to judge.
pub fn try_connect(addr: &str) -> std::io::Result<Box<dyn Stream>> {
    if addr.contains('/') {
        let s = UnixStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Box::new(s))
    } else {
        let s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.set_nodelay(true)?;
        Ok(Box::new(s))
    }
}

/// Connects to `addr` (host:port) from the local address `source`, e.g.
/// 127.0.0.2: every 127/8 address is local on Linux.
pub fn connect_from(source: IpAddr, addr: &str) -> Box<dyn Stream> {
    use socket2::{Domain, Socket, Type};
    let to: SocketAddr = addr.parse().expect("host:port");
    let s = Socket::new(Domain::for_address(to), Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(source, 0).into())
        .unwrap_or_else(|e| panic!("bind {source}: {e}"));
    s.connect(&to.into())
        .unwrap_or_else(|e| panic!("connect {addr} from {source}: {e}"));
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_nodelay(true).unwrap();
    Box::new(s)
}

/// The records of one complete request.
pub fn request_bytes(
    id: u16,
    uri: &str,
    keep_conn: bool,
    extra: &[(&str, &str)],
    body: &[u8],
) -> BytesMut {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let len = body.len().to_string();
    let method = if body.is_empty() { "GET" } else { "POST" };
    let mut params = BytesMut::new();
    let std_params = [
        ("REQUEST_METHOD", method),
        ("REQUEST_URI", uri),
        ("SCRIPT_NAME", path),
        ("SCRIPT_FILENAME", path),
        ("QUERY_STRING", query),
        ("CONTENT_LENGTH", &len),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("REDIRECT_STATUS", "200"),
    ];
    for (k, v) in std_params {
        if !extra.iter().any(|(n, _)| *n == k) {
            pairs::put_pair(&mut params, k.as_bytes(), v.as_bytes());
        }
    }
    for (k, v) in extra {
        pairs::put_pair(&mut params, k.as_bytes(), v.as_bytes());
    }
    let mut out = BytesMut::new();
    record::put_request(&mut out, id, keep_conn, &params, body);
    out
}

/// What came back for one request id.
#[derive(Debug, Default, Clone)]
pub struct Reply {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub end: Option<EndRequest>,
}

impl Reply {
    pub fn status(&self) -> u16 {
        response::status_of(&self.stdout).unwrap_or(0)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The body after the CGI headers.
    pub fn body(&self) -> String {
        let t = self.text();
        match t.split_once("\r\n\r\n") {
            Some((_, b)) => b.to_string(),
            None => t,
        }
    }

    /// The `pid=N` the example app writes in its body.
    pub fn pid(&self) -> u32 {
        super::field(&self.body(), "pid").unwrap_or_else(|| panic!("no pid in {:?}", self.text()))
    }

    pub fn generation(&self) -> u32 {
        super::field(&self.body(), "gen").unwrap_or_else(|| panic!("no gen in {:?}", self.text()))
    }
}

/// A connection that reads whole records.
pub struct Conn {
    pub stream: Box<dyn Stream>,
    buf: BytesMut,
}

impl Conn {
    pub fn open(addr: &str) -> Conn {
        Conn::from_stream(connect(addr))
    }

    pub fn from_stream(stream: Box<dyn Stream>) -> Conn {
        Conn {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// How long a read may block before it fails (30 s by default).
    pub fn set_read_timeout(&mut self, d: Duration) {
        self.stream.set_read_timeout(Some(d)).unwrap();
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// The next record, or `None` when the peer closed the connection.
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = fastcgi::decode(&mut self.buf).expect("valid records from herd") {
                return Some(f);
            }
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Reads records until `FCGI_END_REQUEST` for `id`; `None` if the
    /// connection closed first.
    pub fn reply(&mut self, id: u16) -> Option<Reply> {
        let mut reply = Reply::default();
        loop {
            let f = self.next_frame()?;
            if f.request_id() != id {
                continue;
            }
            match f.record_type() {
                record::STDOUT => reply.stdout.extend_from_slice(f.content()),
                record::STDERR => reply.stderr.extend_from_slice(f.content()),
                record::END_REQUEST => {
                    reply.end = Some(EndRequest::parse(f.content()).unwrap());
                    return Some(reply);
                }
                t => panic!("unexpected record type {t}"),
            }
        }
    }

    /// Sends a GET for `uri` and reads its reply.
    pub fn get(&mut self, id: u16, uri: &str, keep_conn: bool) -> Reply {
        self.send(&request_bytes(id, uri, keep_conn, &[], b""));
        self.reply(id)
            .unwrap_or_else(|| panic!("connection closed before the reply to {uri}"))
    }

    /// True once the peer has closed the connection (reads EOF or reset).
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 64];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }

    /// Reads until the peer closes the connection (EOF or reset) and
    /// returns every byte that came before; panics naming `what` if it is
    /// still open after `within`.
    pub fn wait_closed(&mut self, what: &str, within: Duration) -> Vec<u8> {
        let deadline = Instant::now() + within;
        let mut got = std::mem::take(&mut self.buf).to_vec();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("{what}: the connection is still open after {within:?}");
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk) {
                Ok(0) => return got,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!("{what}: the connection is still open after {within:?}")
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return got, // reset: closed
            }
        }
    }

    /// Without blocking: true if the peer has closed the connection (EOF or
    /// reset), false while it is open. Bytes that arrived are kept for
    /// [`Conn::next_frame`].
    pub fn closed_now(&mut self) -> bool {
        self.stream.set_nonblocking(true).unwrap();
        let mut chunk = [0u8; 16384];
        let closed = loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => break true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
        };
        self.stream.set_nonblocking(false).unwrap();
        closed
    }
}

/// One GET on a fresh connection.
pub fn get(addr: &str, uri: &str) -> Reply {
    Conn::open(addr).get(1, uri, false)
}

/// One request with extra params and a body on a fresh connection.
pub fn request(addr: &str, uri: &str, extra: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut c = Conn::open(addr);
    c.send(&request_bytes(1, uri, false, extra, body));
    c.reply(1).expect("a reply")
}

/// One GET on a fresh connection that never panics: a refused or reset
/// connection, a read past `timeout`, a malformed record or a connection
/// closed before `FCGI_END_REQUEST` is an `Err` naming what happened, for
/// load loops that count failures instead of stopping at the first.
pub fn try_get(addr: &str, uri: &str, timeout: Duration) -> Result<Reply, String> {
    let stream = try_connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| format!("set timeout: {e}"))?;
    let mut conn = Conn::from_stream(stream);
    conn.stream
        .write_all(&request_bytes(1, uri, false, &[], b""))
        .map_err(|e| format!("send: {e}"))?;
    conn.try_reply(1)
}

impl Conn {
    /// Like [`Conn::reply`], but every failure is an `Err` instead of a panic.
    pub fn try_reply(&mut self, id: u16) -> Result<Reply, String> {
        let mut reply = Reply::default();
        loop {
            let f = loop {
                match fastcgi::decode(&mut self.buf) {
                    Ok(Some(f)) => break f,
                    Ok(None) => {}
                    Err(e) => return Err(format!("bad record: {e}")),
                }
                let mut chunk = [0u8; 16384];
                match self.stream.read(&mut chunk) {
                    Ok(0) => return Err("closed before FCGI_END_REQUEST".into()),
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("read: {e}")),
                }
            };
            if f.request_id() != id {
                continue;
            }
            match f.record_type() {
                record::STDOUT => reply.stdout.extend_from_slice(f.content()),
                record::STDERR => reply.stderr.extend_from_slice(f.content()),
                record::END_REQUEST => {
                    reply.end = Some(
                        EndRequest::parse(f.content())
                            .map_err(|e| format!("bad FCGI_END_REQUEST: {e:?}"))?,
                    );
                    return Ok(reply);
                }
                t => return Err(format!("unexpected record type {t}")),
            }
        }
    }
}

/// A GET on a fresh connection that must be answered within `limit` (a
/// hang fails the test instead of blocking it); returns the reply and how
/// long it took.
pub fn get_within(addr: &str, uri: &str, limit: Duration) -> (Reply, Duration) {
    let started = Instant::now();
    let mut c = Conn::open(addr);
    c.set_read_timeout(limit);
    c.send(&request_bytes(1, uri, false, &[], b""));
    let reply = c
        .reply(1)
        .unwrap_or_else(|| panic!("{addr}: connection closed without a reply to {uri}"));
    (reply, started.elapsed())
}

/// The pool's status page as JSON (`<path>?json&full`), answered by the
/// master itself.
pub fn status_json(addr: &str, path: &str) -> serde_json::Value {
    let (reply, _) = get_within(addr, &format!("{path}?json&full"), Duration::from_secs(5));
    assert_eq!(reply.status(), 200, "{path}: {}", reply.text());
    serde_json::from_str(&reply.body())
        .unwrap_or_else(|e| panic!("{path} is not JSON ({e}): {}", reply.text()))
}
