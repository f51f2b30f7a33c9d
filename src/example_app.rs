//! `herd example-app`: a small FastCGI responder built into the binary, used
//! by the embedded default config, the tests and the benchmarks.
//!
//! It follows the FastCGI spec like any third-party worker: it accepts on the
//! listening socket it was given as fd 0 and serves one connection at a time,
//! keeping it open when the request asks for `FCGI_KEEP_CONN`.
//!
//! The body is `gen=<HERD_GENERATION> pid=<pid>`. Query parameters make it
//! misbehave on purpose: `ms=N` sleeps first, `cpu_ms=N` keeps a CPU busy
//! for N ms, `alloc_mb=N` allocates and touches N MiB (freed before the
//! answer), `status=N` answers that status,
//! `bytes=N` pads the body to N bytes, `echo=1` returns the request body,
//! `env=NAME` returns `NAME=<value>` from the worker's environment,
//! `stderr=TEXT` writes TEXT to `FCGI_STDERR`, `exit=N` exits mid-request,
//! `exit_once=PATH` exits mid-request unless the file PATH exists (and
//! creates it), so only the first worker to get it dies.

use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::BytesMut;
use socket2::Socket;

use crate::fastcgi::record::{self, BeginRequest, EndRequest};
use crate::fastcgi::{self, Frame, pairs, response};

/// Serves forever on fd 0, or on `listen` (a `host:port`) when given.
pub fn run(listen: Option<&str>) -> anyhow::Result<()> {
    let listener = match listen {
        Some(addr) => Socket::from(
            TcpListener::bind(addr).with_context(|| format!("failed to listen on {addr}"))?,
        ),
        None => listener_from_fd0()?,
    };
    let generation = std::env::var("HERD_GENERATION").unwrap_or_else(|_| "0".into());
    let app = App {
        generation,
        pid: std::process::id(),
    };
    loop {
        let (conn, _) = match listener.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("failed to accept"),
        };
        match app.serve(conn) {
            // The peer hung up while we answered: a probe that had its
            // answer (herd's readiness probe asks twice and reads once), or
            // a client that left. Nothing to say about it.
            Err(e)
                if e.downcast_ref::<io::Error>().is_some_and(|e| {
                    matches!(
                        e.kind(),
                        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                    )
                }) => {}
            Err(e) => eprintln!("example-app: connection ended: {e}"),
            Ok(()) => {}
        }
    }
}

/// The FastCGI spec hands a worker its listening socket as fd 0.
fn listener_from_fd0() -> anyhow::Result<Socket> {
    let fd = io::stdin().as_raw_fd();
    let is_listening = nix::sys::socket::getsockopt(
        &unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        nix::sys::socket::sockopt::AcceptConn,
    );
    if !matches!(is_listening, Ok(true)) {
        bail!(
            "fd 0 is not a listening socket: run me under herd or spawn-fcgi, or pass --listen HOST:PORT"
        );
    }
    // SAFETY: fd 0 is a listening socket (checked above) that nothing else
    // in this process uses; we take ownership of it for the process's life.
    Ok(Socket::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

struct App {
    generation: String,
    pid: u32,
}

/// The one request a connection may carry at a time.
struct Request {
    id: u16,
    keep_conn: bool,
    params: Vec<u8>,
    params_done: bool,
    stdin: Vec<u8>,
}

impl App {
    fn serve(&self, mut conn: Socket) -> anyhow::Result<()> {
        let mut buf = BytesMut::with_capacity(8192);
        let mut out = BytesMut::new();
        let mut active: Option<Request> = None;
        loop {
            while let Some(frame) = fastcgi::decode(&mut buf)? {
                let keep = self.on_frame(frame, &mut active, &mut out)?;
                if !out.is_empty() {
                    conn.write_all(&out)?;
                    out.clear();
                }
                if !keep {
                    return Ok(());
                }
            }
            let mut chunk = [0u8; 8192];
            let n = conn.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Handles one record; returns whether the connection stays open.
    fn on_frame(
        &self,
        frame: Frame,
        active: &mut Option<Request>,
        out: &mut BytesMut,
    ) -> anyhow::Result<bool> {
        let id = frame.request_id();
        match frame.record_type() {
            record::GET_VALUES => {
                // One connection and one request at a time, no multiplexing.
                record::put_get_values_result(out, frame.content(), record::serial_worker_value);
                return Ok(true);
            }
            record::BEGIN_REQUEST => {
                let begin = BeginRequest::parse(frame.content())?;
                if active.is_some() {
                    end(out, id, record::CANT_MPX_CONN);
                } else if begin.role != record::ROLE_RESPONDER {
                    end(out, id, record::UNKNOWN_ROLE);
                    return Ok(begin.keep_conn());
                } else {
                    *active = Some(Request {
                        id,
                        keep_conn: begin.keep_conn(),
                        params: Vec::new(),
                        params_done: false,
                        stdin: Vec::new(),
                    });
                }
                return Ok(true);
            }
            t if id == record::NULL_REQUEST_ID => {
                record::put_unknown_type(out, t);
                return Ok(true);
            }
            _ => {}
        }
        let Some(req) = active.as_mut().filter(|r| r.id == id) else {
            return Ok(true); // records of a request we are not serving
        };
        match frame.record_type() {
            record::PARAMS if frame.content().is_empty() => req.params_done = true,
            record::PARAMS => req.params.extend_from_slice(frame.content()),
            record::STDIN if !frame.content().is_empty() => {
                req.stdin.extend_from_slice(frame.content())
            }
            record::STDIN if req.params_done => {
                let req = active.take().expect("active request");
                self.respond(&req, out);
                return Ok(req.keep_conn);
            }
            record::ABORT_REQUEST => {
                let req = active.take().expect("active request");
                end(out, req.id, record::REQUEST_COMPLETE);
                return Ok(req.keep_conn);
            }
            _ => {}
        }
        Ok(true)
    }

    fn respond(&self, req: &Request, out: &mut BytesMut) {
        let query = pairs::find(&req.params, b"QUERY_STRING").unwrap_or_default();
        let query = String::from_utf8_lossy(query);
        let arg = |name: &str| {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        if let Some(ms) = arg("ms").and_then(|v| v.parse().ok()) {
            std::thread::sleep(Duration::from_millis(ms));
        }
        if let Some(ms) = arg("cpu_ms").and_then(|v| v.parse().ok()) {
            burn(Duration::from_millis(ms));
        }
        if let Some(mb) = arg("alloc_mb").and_then(|v| v.parse::<usize>().ok()) {
            // Every page written, so it is resident, not just reserved.
            std::hint::black_box(vec![1u8; mb.min(4096) << 20]);
        }
        if let Some(code) = arg("exit").and_then(|v| v.parse().ok()) {
            std::process::exit(code);
        }
        // Dies the first time only: the marker file tells the next worker.
        if let Some(marker) = arg("exit_once")
            && std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&marker)
                .is_ok()
        {
            std::process::exit(3);
        }
        if let Some(text) = arg("stderr") {
            record::put_stream(out, record::STDERR, req.id, text.as_bytes());
            record::put_stream_end(out, record::STDERR, req.id);
        }
        let status: u16 = arg("status").and_then(|v| v.parse().ok()).unwrap_or(200);
        let mut body = if arg("echo").is_some() {
            req.stdin.clone()
        } else if let Some(name) = arg("env") {
            format!("{name}={}\n", std::env::var(&name).unwrap_or_default()).into_bytes()
        } else {
            format!("gen={} pid={}\n", self.generation, self.pid).into_bytes()
        };
        if let Some(n) = arg("bytes").and_then(|v| v.parse::<usize>().ok()) {
            body.resize(n, b'.');
        }
        let head = format!(
            "Status: {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            response::reason(status),
            body.len()
        );
        record::put_stream(out, record::STDOUT, req.id, head.as_bytes());
        record::put_stream(out, record::STDOUT, req.id, &body);
        record::put_stream_end(out, record::STDOUT, req.id);
        end(out, req.id, record::REQUEST_COMPLETE);
    }
}

/// Keeps one CPU busy for `wall` of wall time.
fn burn(wall: Duration) {
    let until = std::time::Instant::now() + wall;
    let mut x = 0u64;
    while std::time::Instant::now() < until {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

fn end(out: &mut BytesMut, id: u16, protocol_status: u8) {
    record::put_end_request(
        out,
        id,
        EndRequest {
            app_status: 0,
            protocol_status,
        },
    );
}
