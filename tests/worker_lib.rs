//! The worker library (`herd::worker`) through its example programs: under
//! herd, and alone on a listening socket the test hands them as fd 0, the
//! way any FastCGI manager starts a program. Alone, the test can send what
//! herd's master would never forward.
//!
//! The examples are built by `cargo test` (and `cargo build --examples`);
//! Cargo gives integration tests no path to them, so they are found beside
//! this test's own binary.

mod support;

use std::fs;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use herd::fastcgi::{pairs, record};
use support::fcgi::{self, Conn};
use support::{Dir, Herd, example, user_line, wait_for};

/// An example program started alone with a unix listening socket as fd 0,
/// its stderr in a file; killed by pid when dropped.
struct Alone {
    child: Child,
    sock: PathBuf,
    stderr: PathBuf,
    _dir: Dir,
}

impl Alone {
    fn start(name: &str, env: &[(&str, &str)]) -> Alone {
        let dir = Dir::new();
        let sock = dir.join("app.sock");
        let listener = UnixListener::bind(&sock).expect("bind the app socket");
        let stderr = dir.join("stderr");
        let child = Command::new(example(name))
            .envs(env.iter().copied())
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::from(OwnedFd::from(listener)))
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start the example");
        Alone {
            child,
            sock,
            stderr,
            _dir: dir,
        }
    }

    fn addr(&self) -> &str {
        self.sock.to_str().unwrap()
    }

    fn conn(&self) -> Conn {
        let mut c = Conn::open(self.addr());
        c.set_read_timeout(Duration::from_secs(10));
        c
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for the process to exit; its exit code.
    fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let child = &mut self.child;
        wait_for("the example to exit", within, || child.try_wait().unwrap()).code()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Alone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- example stderr ---\n{}", self.stderr());
        }
    }
}

/// Runs an example to completion with `args`; (exit code, stderr).
fn run_example(name: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(example(name))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run the example");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn hello_pool(workers: u32) -> String {
    format!(
        "[global]\nerror_log = {{dir}}/herd.log\n\
         [app]\nlisten = {{dir}}/app.sock\npm = static\npm.max_children = {workers}\n\
         command = {}\n{}",
        example("hello").display(),
        user_line()
    )
}

#[test]
fn hello_serves_under_herd() {
    let herd = Herd::start(&hello_pool(1));
    let ready = herd.wait_ready(1);
    let addr = herd.dir.join("app.sock");
    let addr = addr.to_str().unwrap();
    let reply = fcgi::get(addr, "/");
    assert_eq!(reply.status(), 200, "{}", reply.text());
    assert_eq!(
        reply.body(),
        format!("Hello from generation 1, pid {}\n", ready[0])
    );
    // A body larger than a record streams through master and worker.
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let echo = fcgi::request(addr, "/?echo", &[], &body);
    assert_eq!(echo.status(), 200);
    let head_end = echo
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap()
        + 4;
    assert!(
        echo.stdout[head_end..] == body[..],
        "the echoed body differs"
    );
}

#[test]
fn a_panicking_handler_under_herd_is_answered_and_its_worker_replaced() {
    let herd = Herd::start(&hello_pool(1));
    let first = herd.wait_ready(1)[0];
    let addr = herd.dir.join("app.sock");
    let addr = addr.to_str().unwrap();
    let (reply, _) = fcgi::get_within(addr, "/?panic=1", Duration::from_secs(10));
    assert_eq!(reply.status(), 500, "{}", reply.text());
    let second = herd.wait_ready(2)[1];
    assert_ne!(first, second);
    let (reply, _) = fcgi::get_within(addr, "/", Duration::from_secs(10));
    assert_eq!(reply.status(), 200);
    assert_eq!(
        reply.body(),
        format!("Hello from generation 1, pid {second}\n")
    );
    let exited = herd.wait_log("exited with code 70", 1, Duration::from_secs(5));
    assert!(exited[0].contains(&format!("pid={first}")), "{exited:?}");
}

#[test]
fn malformed_input_closes_that_connection_and_the_worker_goes_on() {
    let mut app = Alone::start("hello", &[]);
    // A record of FastCGI version 9.
    let mut bad = app.conn();
    bad.send(&[9, 1, 0, 1, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    bad.wait_closed("a bad version", Duration::from_secs(10));
    // A record cut short, then the client leaves.
    let mut cut = UnixStream::connect(app.addr()).unwrap();
    cut.write_all(&[1, 1, 0, 1, 0, 8]).unwrap();
    drop(cut);
    // A second request while one is active is refused, the first served.
    let mut c = app.conn();
    let mut two = BytesMut::new();
    record::put_begin_request(
        &mut two,
        1,
        record::BeginRequest {
            role: record::ROLE_RESPONDER,
            flags: record::KEEP_CONN,
        },
    );
    record::put_begin_request(
        &mut two,
        2,
        record::BeginRequest {
            role: record::ROLE_RESPONDER,
            flags: record::KEEP_CONN,
        },
    );
    c.send(&two);
    let refused = c.reply(2).expect("an answer to request 2");
    assert_eq!(refused.end.unwrap().protocol_status, record::CANT_MPX_CONN);
    let mut rest = BytesMut::new();
    record::put_stream_end(&mut rest, record::PARAMS, 1);
    record::put_stream_end(&mut rest, record::STDIN, 1);
    c.send(&rest);
    assert_eq!(c.reply(1).unwrap().status(), 200);
    // The worker serves one connection at a time: this one, until it ends.
    drop(c);
    // And a fresh connection is served as if nothing happened.
    let reply = app.conn().get(1, "/", false);
    assert_eq!(reply.status(), 200, "{}", reply.text());
    assert!(reply.body().starts_with("Hello from generation 0, pid "));
    assert!(app.running());
}

#[test]
fn get_values_and_keep_conn_alone() {
    let app = Alone::start("hello", &[]);
    let mut c = app.conn();
    let mut query = BytesMut::new();
    for name in ["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"] {
        pairs::put_pair(&mut query, name.as_bytes(), b"");
    }
    let mut out = BytesMut::new();
    record::put_record(&mut out, record::GET_VALUES, 0, &query);
    c.send(&out);
    let values = c.next_frame().expect("FCGI_GET_VALUES_RESULT");
    assert_eq!(values.record_type(), record::GET_VALUES_RESULT);
    let got: Vec<_> = pairs::pairs(values.content()).map(Result::unwrap).collect();
    assert_eq!(
        got,
        [
            (&b"FCGI_MAX_CONNS"[..], &b"1"[..]),
            (b"FCGI_MAX_REQS", b"1"),
            (b"FCGI_MPXS_CONNS", b"0")
        ]
    );
    assert_eq!(c.get(1, "/a", true).status(), 200);
    assert_eq!(c.get(1, "/b", false).status(), 200);
    assert!(
        c.is_closed(),
        "closed after a request without FCGI_KEEP_CONN"
    );
}

#[test]
fn a_panicking_handler_answers_500_then_the_process_exits_70() {
    let mut app = Alone::start("hello", &[]);
    let mut c = app.conn();
    let reply = c.get(1, "/?panic=1", true);
    assert_eq!(reply.status(), 500, "{}", reply.text());
    assert_eq!(reply.end.unwrap().protocol_status, record::REQUEST_COMPLETE);
    assert_eq!(app.wait_exit(Duration::from_secs(10)), Some(70));
    let stderr = app.stderr();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line per panic: {stderr}");
    assert!(
        lines[0].contains("GET /?panic=1") && lines[0].contains("panicked: asked to panic"),
        "{stderr}"
    );
}

#[test]
fn a_failing_handler_answers_500_and_the_worker_goes_on() {
    let mut app = Alone::start("hello", &[]);
    let mut c = app.conn();
    assert_eq!(c.get(1, "/?fail", true).status(), 500);
    assert_eq!(c.get(1, "/", true).status(), 200);
    assert!(app.running());
    assert!(app.stderr().contains("handler failed: asked to fail"));
}

#[test]
fn big_table_answers_from_its_preloaded_table() {
    let app = Alone::start("big_table", &[("BIG_TABLE_MB", "8")]);
    let reply = app.conn().get(1, "/?i=5", false);
    assert_eq!(reply.status(), 200, "{}", reply.text());
    assert!(
        reply.body().starts_with("table[5] = ")
            && reply.body().contains("of 1048576 entries (8 MiB)"),
        "{}",
        reply.text()
    );
    assert_eq!(app.conn().get(1, "/?i=1048576", false).status(), 404);
    assert_eq!(app.conn().get(1, "/?i=x", false).status(), 400);
}

#[test]
fn check_runs_preload_and_validate_and_exits_78_on_a_failure() {
    assert_eq!(run_example("hello", &["--check"], &[]).0, 0);
    let (code, _) = run_example("big_table", &["--check"], &[("BIG_TABLE_MB", "1")]);
    assert_eq!(code, 0);
    let (code, stderr) = run_example("big_table", &["--check"], &[("BIG_TABLE_MB", "lots")]);
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("failed to preload: BIG_TABLE_MB=\"lots\""),
        "{stderr}"
    );
    let (code, stderr) = run_example("big_table", &["--check"], &[("BIG_TABLE_MB", "0")]);
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("failed to validate"), "{stderr}");
    // Serving runs the same checks before it accepts anything.
    let mut app = Alone::start("big_table", &[("BIG_TABLE_MB", "0")]);
    assert_eq!(app.wait_exit(Duration::from_secs(10)), Some(78));
}

#[test]
fn without_a_listening_socket_on_fd_0_it_says_so() {
    let (code, stderr) = run_example("hello", &[], &[]);
    assert_eq!(code, 64);
    assert!(
        stderr.contains("fd 0 is not a listening socket"),
        "{stderr}"
    );
    assert!(stderr.contains("--listen"), "{stderr}");
}
