//! Unit tests for `response.rs`.

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
