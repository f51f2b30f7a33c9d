//! Bad input from clients: a malformed, truncated, oversized or stalled
//! request costs that one connection and one log line; the master and
//! every other client go on. Also the listener's own guards:
//! `listen.max_connections`, `listen.allowed_clients` and `listen.mode`.

mod support;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use herd::fastcgi::pairs;
use herd::fastcgi::record::{self, BeginRequest};
use support::fcgi::{self, Conn};
use support::{Herd, example_pool, wait_for};

/// A pool of one example worker on a fresh loopback port.
fn start(extra: &str) -> (Herd, String) {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start(&example_pool(&addr, 1, extra));
    herd.wait_ready(1);
    (herd, addr)
}

fn begin(id: u16, role: u16, flags: u8) -> BytesMut {
    let mut out = BytesMut::new();
    record::put_begin_request(&mut out, id, BeginRequest { role, flags });
    out
}

/// The WARN/ERROR lines logged since `before` lines had been.
fn new_warnings(herd: &Herd, before: usize) -> Vec<String> {
    herd.warnings().into_iter().skip(before).collect()
}

/// The master still runs and serves a normal request on a new connection.
fn assert_still_serving(herd: &Herd, addr: &str) {
    assert!(herd.running(), "herd exited:\n{}", herd.log_text());
    let reply = fcgi::get(addr, "/after");
    assert_eq!(reply.status(), 200, "{}", reply.text());
    assert!(herd.running(), "herd exited:\n{}", herd.log_text());
}

/// After bad input on one connection (already seen closed): exactly one
/// warning since `before` says why, mentioning one of `any_of` and the
/// peer, and the master goes on serving.
fn assert_dropped_once(herd: &Herd, addr: &str, before: usize, any_of: &[&str]) -> String {
    let line = herd
        .wait_log("dropping connection", 1, Duration::from_secs(5))
        .remove(0);
    assert_still_serving(herd, addr);
    let warnings = new_warnings(herd, before);
    assert_eq!(
        warnings.len(),
        1,
        "exactly one log line about the bad connection, got:\n{}",
        warnings.join("\n")
    );
    assert!(
        any_of.iter().any(|w| line.contains(w)),
        "the log line should mention one of {any_of:?}: {line}"
    );
    assert!(line.contains("peer=127.0.0.1"), "names the peer: {line}");
    line
}

#[test]
fn a_record_with_an_unknown_version_closes_only_that_connection() {
    let (herd, addr) = start("");
    let before = herd.warnings().len();
    let mut bad = Conn::open(&addr);
    // A well-formed BEGIN_REQUEST but for version 2, followed by more
    // version-2 records: a per-record (or per-byte) complaint would show.
    let mut bytes = begin(1, record::ROLE_RESPONDER, 0).to_vec();
    bytes[0] = 2;
    let mut more = fcgi::request_bytes(1, "/", false, &[], b"").to_vec();
    for chunk in more.chunks_mut(8) {
        chunk[0] = 2;
    }
    bytes.extend_from_slice(&more);
    bytes.extend(std::iter::repeat_n(2u8, 512));
    bad.send(&bytes);
    bad.wait_closed("a version-2 record", Duration::from_secs(5));
    assert_dropped_once(&herd, &addr, before, &["version"]);
}

#[test]
fn a_truncated_header_or_params_body_then_close_harms_no_one() {
    let (herd, addr) = start("");
    let before = herd.warnings().len();

    // Half a record header, then the client goes away.
    let mut half_header = Conn::open(&addr);
    half_header.send(&begin(1, record::ROLE_RESPONDER, 0)[..4]);
    drop(half_header);

    // A complete BEGIN_REQUEST, then a PARAMS record that announces 200
    // bytes of content but carries 90, then the client goes away.
    let mut half_params = Conn::open(&addr);
    let mut params = BytesMut::new();
    pairs::put_pair(&mut params, b"REQUEST_METHOD", b"GET");
    pairs::put_pair(&mut params, b"LONG", &[b'x'; 200]);
    assert!(params.len() >= 200);
    let mut bytes = begin(1, record::ROLE_RESPONDER, 0);
    record::put_record(&mut bytes, record::PARAMS, 1, &params[..200]);
    let cut = bytes.len() - (8 + 200) + 8 + 90;
    half_params.send(&bytes[..cut]);
    drop(half_params);

    // herd has seen both clients go and closed its side of each: on its
    // port only the listener is left (not established, not close-wait).
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    wait_for(
        "herd to close its side of the truncated connections",
        Duration::from_secs(5),
        || {
            let states = support::tcp_states(port);
            states
                .iter()
                .all(|&s| s == support::TCP_LISTEN)
                .then_some(())
        },
    );
    assert_still_serving(&herd, &addr);
    assert_still_serving(&herd, &addr);
    let warnings = new_warnings(&herd, before);
    assert!(
        warnings.len() <= 2,
        "at most one log line per truncated connection, got:\n{}",
        warnings.join("\n")
    );
}

#[test]
fn params_past_max_params_size_close_the_connection_with_one_line() {
    let (herd, addr) = start("request.max_params_size = 1K\n");
    let before = herd.warnings().len();
    let mut bad = Conn::open(&addr);
    let mut bytes = begin(1, record::ROLE_RESPONDER, 0);
    // 4K of params in eight records of 512 bytes, none of them the end.
    for i in 0..8 {
        let mut p = BytesMut::new();
        let name = format!("HTTP_X_FILL_{i}");
        pairs::put_pair(&mut p, name.as_bytes(), &vec![b'v'; 512 - 5 - name.len()]);
        assert_eq!(p.len(), 512);
        record::put_record(&mut bytes, record::PARAMS, 1, &p);
    }
    bad.send(&bytes);
    bad.wait_closed(
        "params past request.max_params_size",
        Duration::from_secs(5),
    );
    assert_dropped_once(
        &herd,
        &addr,
        before,
        &["1024", "1K", "1 KiB", "max_params_size"],
    );
}

#[test]
fn an_unknown_role_gets_unknown_role_and_the_connection_stays_usable() {
    let (herd, addr) = start("");
    let mut c = Conn::open(&addr);
    c.set_read_timeout(Duration::from_secs(5));
    // A whole request, as a client sends it, but for role 9.
    let mut bytes = fcgi::request_bytes(1, "/role", true, &[], b"");
    bytes[8 + 1] = 9; // BEGIN_REQUEST body: role is a big-endian u16
    assert_eq!(
        BeginRequest::parse(&bytes[8..16]).unwrap().role,
        9,
        "patched the role"
    );
    c.send(&bytes);
    let reply = c
        .reply(1)
        .expect("an FCGI_END_REQUEST for the unknown role");
    let end = reply.end.unwrap();
    assert_eq!(end.protocol_status, record::UNKNOWN_ROLE, "{end:?}");
    assert!(
        reply.stdout.is_empty(),
        "no response body: {}",
        reply.text()
    );
    // The same connection (keep_conn) carries a normal request, on a new
    // id and then on the refused id again.
    assert_eq!(c.get(2, "/next", true).status(), 200);
    assert_eq!(c.get(1, "/again", true).status(), 200);
    assert!(herd.running());
}

#[test]
fn a_connection_that_never_sends_is_closed_quietly_after_read_timeout() {
    let (herd, addr) = start("request.read_timeout = 1s\n");
    let before = herd.warnings().len();
    let opened = Instant::now();
    let mut silent: Vec<Conn> = (0..20).map(|_| Conn::open(&addr)).collect();
    // A keep-alive connection that was served, then went idle, is nginx's
    // to close: it stays.
    let mut served = Conn::open(&addr);
    served.send(&fcgi::request_bytes(1, "/", true, &[], b""));
    assert_eq!(served.reply(1).expect("a reply").status(), 200);

    for c in &mut silent {
        c.wait_closed("a connection that sent nothing", Duration::from_secs(5));
    }
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}, before request.read_timeout (1s)"
    );
    assert!(!served.closed_now(), "the idle keep-alive connection stays");
    served.send(&fcgi::request_bytes(2, "/", true, &[], b""));
    assert_eq!(served.reply(2).expect("a reply").status(), 200);
    // Port probes are not worth a warning each.
    assert_eq!(herd.warnings().len(), before, "{}", herd.log_text());
    assert!(herd.running());
}

#[test]
fn a_client_stalling_mid_record_is_dropped_after_read_timeout() {
    let (herd, addr) = start("request.read_timeout = 1s\n");
    let before = herd.warnings().len();
    let mut staller = Conn::open(&addr);
    let mut bytes = begin(1, record::ROLE_RESPONDER, record::KEEP_CONN);
    let mut p = BytesMut::new();
    pairs::put_pair(&mut p, b"REQUEST_METHOD", b"GET");
    record::put_record(&mut bytes, record::PARAMS, 1, &p);
    let half = bytes.len() - p.len() / 2 - 4;
    let stalled_at = Instant::now();
    staller.send(&bytes[..half]);

    // While the staller holds its half record, others are served.
    for _ in 0..3 {
        assert_eq!(fcgi::get(&addr, "/meanwhile").status(), 200);
    }
    if stalled_at.elapsed() < Duration::from_millis(800) {
        assert!(
            herd.log_lines("dropping connection").is_empty(),
            "the staller was dropped before its read timeout:\n{}",
            herd.log_text()
        );
    }

    staller.wait_closed("a stalled client", Duration::from_secs(5));
    let waited = stalled_at.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "dropped after {waited:?}, before request.read_timeout (1s)"
    );
    assert_dropped_once(
        &herd,
        &addr,
        before,
        &["1s", "read_timeout", "stall", "timed out", "timeout"],
    );
}

/// Sends `head` at once, then `tail` a byte every `every` from a thread
/// of its own, until herd closes the connection; returns how long after
/// the first byte that took.
fn trickle(addr: &str, head: &[u8], tail: &[u8], every: Duration) -> Duration {
    let stream = std::net::TcpStream::connect(addr).expect("connect");
    let mut writer = stream.try_clone().unwrap();
    let (head, tail) = (head.to_vec(), tail.to_vec());
    let started = Instant::now();
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&head);
        for b in tail {
            std::thread::sleep(every);
            if writer.write_all(&[b]).is_err() {
                return;
            }
        }
    });
    let mut conn = Conn::from_stream(Box::new(stream));
    conn.wait_closed("a trickling client", Duration::from_secs(10));
    let took = started.elapsed();
    sender.join().unwrap();
    took
}

/// A client trickling `bytes` a byte every 300 ms (always within the 1 s
/// read timeout), after the first `at` at once, is dropped 2 s after the
/// first byte, with one log line naming `directive`.
fn assert_trickler_dropped_at_2s(extra: &str, bytes: &[u8], at: usize, directive: &str) {
    let (herd, addr) = start(&format!("request.read_timeout = 1s\n{extra}"));
    let before = herd.warnings().len();
    let took = trickle(
        &addr,
        &bytes[..at],
        &bytes[at..],
        Duration::from_millis(300),
    );
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
        "dropped after {took:?}, {directive} is 2s"
    );
    assert_dropped_once(&herd, &addr, before, &[directive]);
}

#[test]
fn a_client_trickling_its_params_is_dropped_at_header_timeout_with_one_line() {
    let bytes = fcgi::request_bytes(1, "/", false, &[], b"");
    let extra = "request.header_timeout = 2s\n";
    assert_trickler_dropped_at_2s(extra, &bytes, 0, "request.header_timeout");
}

#[test]
fn a_client_trickling_its_body_is_dropped_at_body_timeout_with_one_line() {
    // Params at once, then a 1000-byte body a byte at a time: each byte
    // buys a millisecond at 1K a second, far less than it takes.
    let body = vec![b'x'; 1000];
    let bytes = fcgi::request_bytes(1, "/", false, &[], &body);
    let at = bytes.len() - 8 - 8 - body.len();
    let extra = "request.body_timeout = 2s\nrequest.body_min_rate = 1K\n";
    assert_trickler_dropped_at_2s(extra, &bytes, at, "request.body_timeout");
}

#[test]
fn an_idle_keepalive_connection_is_closed_quietly_at_idle_timeout() {
    let (herd, addr) = start("request.idle_timeout = 1s\n");
    let before = herd.warnings().len();
    let mut c = Conn::open(&addr);
    c.send(&fcgi::request_bytes(1, "/", true, &[], b""));
    assert_eq!(c.reply(1).expect("a reply").status(), 200);
    let served = Instant::now();
    c.wait_closed("an idle keep-alive connection", Duration::from_secs(5));
    let waited = served.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}, before request.idle_timeout (1s)"
    );
    assert_eq!(new_warnings(&herd, before), Vec::<String>::new());
    assert_still_serving(&herd, &addr);
}

#[test]
fn a_second_begin_request_for_an_active_id_closes_the_connection() {
    let (herd, addr) = start("");
    let before = herd.warnings().len();
    let mut bad = Conn::open(&addr);
    let mut bytes = begin(7, record::ROLE_RESPONDER, record::KEEP_CONN);
    let mut p = BytesMut::new();
    pairs::put_pair(&mut p, b"REQUEST_METHOD", b"GET");
    record::put_record(&mut bytes, record::PARAMS, 7, &p);
    bytes.extend_from_slice(&begin(7, record::ROLE_RESPONDER, record::KEEP_CONN));
    bad.send(&bytes);
    bad.wait_closed("a duplicate BEGIN_REQUEST", Duration::from_secs(5));
    assert_dropped_once(&herd, &addr, before, &["BEGIN_REQUEST", "7"]);
}

#[test]
fn connections_past_max_connections_are_closed_at_once_with_few_log_lines() {
    const LIMIT: usize = 50;
    const OPEN: usize = 300;
    let (herd, addr) = start(&format!("listen.max_connections = {LIMIT}\n"));
    let started = Instant::now();
    let mut conns: Vec<Conn> = (0..OPEN).map(|_| Conn::open(&addr)).collect();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "opening {OPEN} connections took {:?}",
        started.elapsed()
    );
    // Every connection past the limit is closed; the first LIMIT stay open
    // (they are idle, and closed only after request.read_timeout, 30 s).
    let closed = wait_for(
        &format!("{} connections to be refused", OPEN - LIMIT),
        Duration::from_secs(5),
        || {
            let n = conns
                .iter_mut()
                .map(|c| c.closed_now())
                .filter(|&closed| closed)
                .count();
            (n >= OPEN - LIMIT).then_some(n)
        },
    );
    assert_eq!(
        closed,
        OPEN - LIMIT,
        "exactly the connections past the limit"
    );
    let open = conns
        .iter_mut()
        .map(|c| c.closed_now())
        .filter(|&closed| !closed)
        .count();
    assert_eq!(open, LIMIT, "the connections under the limit stay open");

    let refusals = herd.log_lines("max_connections");
    assert!(
        !refusals.is_empty() && refusals.len() <= 5,
        "refusals are logged, throttled to about one line a second; got {}:\n{}",
        refusals.len(),
        refusals.join("\n")
    );
    let warnings = herd.warnings();
    assert!(
        warnings.len() <= 5,
        "no flood of warnings:\n{}",
        warnings.join("\n")
    );

    // Once the idle ones go, a normal request is served again.
    drop(conns);
    let reply = wait_for(
        "a request to be served after the idle connections closed",
        Duration::from_secs(5),
        || {
            let mut c = Conn::open(&addr);
            c.set_read_timeout(Duration::from_secs(5));
            c.send(&fcgi::request_bytes(1, "/", false, &[], b""));
            c.reply(1)
        },
    );
    assert_eq!(reply.status(), 200);
    assert!(herd.running());
}

#[test]
fn allowed_clients_closes_other_peers_without_a_response() {
    let deny_port = support::free_port();
    let allow_port = support::free_port();
    let user = support::user_line();
    let herd = Herd::start(&format!(
        "[global]\nerror_log = {{dir}}/herd.log\n\
         [only2]\nlisten = 127.0.0.1:{deny_port}\nlisten.allowed_clients = 127.0.0.2\n\
         pm = static\npm.max_children = 1\ncommand = {{herd}}\nargs = example-app\n{user}\
         [only1]\nlisten = 127.0.0.1:{allow_port}\nlisten.allowed_clients = 127.0.0.1\n\
         pm = static\npm.max_children = 1\ncommand = {{herd}}\nargs = example-app\n{user}"
    ));
    herd.wait_ready(2);
    let deny = format!("127.0.0.1:{deny_port}");
    let allow = format!("127.0.0.1:{allow_port}");

    // From 127.0.0.1 to the pool that allows only 127.0.0.2: closed, and
    // not a byte of response.
    let mut c = Conn::open(&deny);
    let _ = c
        .stream
        .write_all(&fcgi::request_bytes(1, "/", false, &[], b""));
    let got = c.wait_closed("a client not in allowed_clients", Duration::from_secs(5));
    assert!(got.is_empty(), "no response for a refused client: {got:?}");
    let line = herd
        .wait_log("allowed_clients", 1, Duration::from_secs(5))
        .remove(0);
    assert!(line.contains("127.0.0.1"), "names the peer: {line}");

    // The same listener serves 127.0.0.2.
    let mut from2 = Conn::from_stream(fcgi::connect_from("127.0.0.2".parse().unwrap(), &deny));
    assert_eq!(from2.get(1, "/", false).status(), 200);
    // And the pool that allows 127.0.0.1 serves it.
    assert_eq!(fcgi::get(&allow, "/").status(), 200);
    assert!(herd.running());
    assert_eq!(herd.log_lines("allowed_clients").len(), 1);
}

#[test]
fn a_unix_listener_gets_listen_mode() {
    let herd = Herd::start(&example_pool("{dir}/app.sock", 1, "listen.mode = 0600\n"));
    herd.wait_ready(1);
    let sock = herd.dir.join("app.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o600, "mode {:o}", mode & 0o7777);
    assert_eq!(fcgi::get(sock.to_str().unwrap(), "/").status(), 200);
}
