//! CGI responses as they travel in `FCGI_STDOUT`: the responses herd writes
//! itself (503 from the queue, 502 when a worker died, 504 on timeouts) and
//! reading the status line of a worker's response (warmup, `herd call`).

use bytes::BytesMut;

use super::record::{self, EndRequest, REQUEST_COMPLETE, STDOUT};

/// Appends a complete short response for `request_id`: headers and body in
/// `FCGI_STDOUT`, the end of the stream, and `FCGI_END_REQUEST`.
pub fn put_simple(
    buf: &mut BytesMut,
    request_id: u16,
    status: u16,
    extra_headers: &[(&str, &str)],
    body: &str,
) {
    let mut text = format!(
        "Status: {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\n",
        reason(status)
    );
    for (name, value) in extra_headers {
        text.push_str(name);
        text.push_str(": ");
        text.push_str(value);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text.push_str(body);
    record::put_stream(buf, STDOUT, request_id, text.as_bytes());
    record::put_stream_end(buf, STDOUT, request_id);
    record::put_end_request(
        buf,
        request_id,
        EndRequest {
            app_status: 0,
            protocol_status: REQUEST_COMPLETE,
        },
    );
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// The HTTP status of a CGI response whose headers start `head`: the
/// `Status:` header if there is one, else 302 with `Location:`, else 200.
/// `None` while the header block is not complete.
pub fn status_of(head: &[u8]) -> Option<u16> {
    let end = header_end(head)?;
    let mut status = 200;
    for line in head[..end].split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = &line[..colon];
        let value = String::from_utf8_lossy(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"status") {
            if let Some(code) = value.trim().split(' ').next().and_then(|c| c.parse().ok()) {
                return Some(code);
            }
        } else if name.eq_ignore_ascii_case(b"location") {
            status = 302;
        }
    }
    Some(status)
}

/// Offset of the blank line that ends a CGI header block.
pub fn header_end(head: &[u8]) -> Option<usize> {
    let crlf = head.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = head.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastcgi::frame::decode;

    #[test]
    fn simple_response_is_a_whole_request() {
        let mut buf = BytesMut::new();
        put_simple(&mut buf, 3, 503, &[("Retry-After", "1")], "busy\n");
        let first = decode(&mut buf).unwrap().unwrap();
        assert_eq!(status_of(first.content()), Some(503));
        assert!(String::from_utf8_lossy(first.content()).contains("Retry-After: 1\r\n"));
        let end = decode(&mut buf).unwrap().unwrap();
        assert!(end.content().is_empty());
        let done = decode(&mut buf).unwrap().unwrap();
        assert_eq!(done.record_type(), record::END_REQUEST);
        assert_eq!(done.request_id(), 3);
        assert!(buf.is_empty());
    }

    #[test]
    fn status_defaults_and_location() {
        assert_eq!(status_of(b"Content-Type: text/html\r\n\r\nx"), Some(200));
        assert_eq!(status_of(b"Status: 404 Not Found\r\n\r\n"), Some(404));
        assert_eq!(status_of(b"Location: /x\n\n"), Some(302));
        assert_eq!(status_of(b"Status: 500"), None);
    }
}
