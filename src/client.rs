//! A FastCGI client: `herd call`, the readiness gate's `FCGI_GET_VALUES`
//! probe and the warmup requests all go through it.

use std::path::Path;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::fastcgi::record::{self, EndRequest};
use crate::fastcgi::{self, ProtocolError, pairs, response};

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("failed to connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("connection closed before the response ended")]
    Truncated,
    #[error("request refused: protocol status {0}")]
    Refused(u8),
}

/// A byte stream to a FastCGI peer, over TCP or a unix socket.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type Stream = Box<dyn Io>;

/// Connects to `addr`: a path (anything with a `/`) or `host:port`.
pub async fn connect(addr: &str) -> Result<Stream, CallError> {
    let wrap = |source| CallError::Connect {
        addr: addr.to_string(),
        source,
    };
    if addr.contains('/') {
        Ok(Box::new(
            UnixStream::connect(Path::new(addr)).await.map_err(wrap)?,
        ))
    } else {
        let s = TcpStream::connect(addr).await.map_err(wrap)?;
        s.set_nodelay(true)?;
        Ok(Box::new(s))
    }
}

/// One request to send.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub method: String,
    /// Path and query, e.g. `/index.php?x=1`.
    pub uri: String,
    /// Document root: `SCRIPT_FILENAME` is the root joined with the path.
    pub root: Option<String>,
    /// Extra params; they override the standard ones of the same name.
    pub params: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn get(uri: &str) -> Request {
        Request {
            method: "GET".into(),
            uri: uri.into(),
            ..Request::default()
        }
    }

    /// The CGI params a web server would send for this request.
    pub fn encode_params(&self) -> BytesMut {
        let (path, query) = self.uri.split_once('?').unwrap_or((&self.uri, ""));
        let filename = match &self.root {
            Some(root) => format!("{}{path}", root.trim_end_matches('/')),
            None => path.to_string(),
        };
        let len = self.body.len().to_string();
        let standard = [
            ("GATEWAY_INTERFACE", "CGI/1.1"),
            ("SERVER_SOFTWARE", "herd"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("SERVER_NAME", "localhost"),
            ("SERVER_ADDR", "127.0.0.1"),
            ("SERVER_PORT", "80"),
            ("REMOTE_ADDR", "127.0.0.1"),
            ("REMOTE_PORT", "0"),
            ("REQUEST_METHOD", &self.method),
            ("REQUEST_URI", &self.uri),
            ("DOCUMENT_URI", path),
            ("SCRIPT_NAME", path),
            ("SCRIPT_FILENAME", &filename),
            ("QUERY_STRING", query),
            ("CONTENT_LENGTH", &len),
            ("REDIRECT_STATUS", "200"),
        ];
        let mut buf = BytesMut::new();
        for (name, value) in standard {
            if !self.params.iter().any(|(n, _)| n == name) {
                pairs::put_pair(&mut buf, name.as_bytes(), value.as_bytes());
            }
        }
        for (name, value) in &self.params {
            pairs::put_pair(&mut buf, name.as_bytes(), value.as_bytes());
        }
        buf
    }
}

/// What came back.
#[derive(Clone, Debug, Default)]
pub struct Response {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub app_status: u32,
}

impl Response {
    pub fn status(&self) -> Option<u16> {
        response::status_of(&self.stdout)
    }

    pub fn body(&self) -> &[u8] {
        let end = response::header_end(&self.stdout).unwrap_or(0);
        let skip = if self.stdout[end..].starts_with(b"\r\n\r\n") {
            4
        } else {
            2
        };
        self.stdout.get(end + skip..).unwrap_or_default()
    }
}

/// Sends one request with id 1 and reads its response to `FCGI_END_REQUEST`.
pub async fn call<S>(stream: &mut S, req: &Request, keep_conn: bool) -> Result<Response, CallError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let id = 1;
    let mut out = BytesMut::new();
    record::put_request(&mut out, id, keep_conn, &req.encode_params(), &req.body);
    stream.write_all(&out).await?;

    let mut resp = Response::default();
    let mut buf = BytesMut::with_capacity(8192);
    loop {
        while let Some(frame) = fastcgi::decode(&mut buf)? {
            if frame.request_id() != id {
                continue;
            }
            match frame.record_type() {
                record::STDOUT => resp.stdout.extend_from_slice(frame.content()),
                record::STDERR => resp.stderr.extend_from_slice(frame.content()),
                record::END_REQUEST => {
                    let end = EndRequest::parse(frame.content())?;
                    if end.protocol_status != record::REQUEST_COMPLETE {
                        return Err(CallError::Refused(end.protocol_status));
                    }
                    resp.app_status = end.app_status;
                    return Ok(resp);
                }
                other => return Err(ProtocolError::UnexpectedRecord(other).into()),
            }
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(CallError::Truncated);
        }
    }
}

/// Asks for management variables with `FCGI_GET_VALUES`.
pub async fn get_values<S>(
    stream: &mut S,
    names: &[&str],
) -> Result<Vec<(String, String)>, CallError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    get_values_times(stream, names, 1).await
}

/// `FCGI_GET_VALUES` sent `times` times in one write; the first answer's
/// pairs. The readiness probe sends it twice: libfcgi (and Perl's FCGI,
/// and FCGI::ProcManager on it) answers a management record only once the
/// next record's header has arrived, so a lone one is never answered.
pub async fn get_values_times<S>(
    stream: &mut S,
    names: &[&str],
    times: usize,
) -> Result<Vec<(String, String)>, CallError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut body = BytesMut::new();
    for name in names {
        pairs::put_pair(&mut body, name.as_bytes(), b"");
    }
    let mut out = BytesMut::new();
    for _ in 0..times {
        record::put_record(&mut out, record::GET_VALUES, record::NULL_REQUEST_ID, &body);
    }
    stream.write_all(&out).await?;
    let mut buf = BytesMut::with_capacity(512);
    loop {
        if let Some(frame) = fastcgi::decode(&mut buf)? {
            if frame.record_type() != record::GET_VALUES_RESULT
                || frame.request_id() != record::NULL_REQUEST_ID
            {
                return Err(ProtocolError::UnexpectedRecord(frame.record_type()).into());
            }
            return pairs::pairs(frame.content())
                .map(|p| {
                    let (n, v) = p?;
                    Ok((
                        String::from_utf8_lossy(n).into(),
                        String::from_utf8_lossy(v).into(),
                    ))
                })
                .collect();
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(CallError::Truncated);
        }
    }
}
