//! The core path: a request from a client reaches an idle worker through
//! the master and comes back, over TCP and unix sockets.

mod support;

use std::thread;
use std::time::{Duration, Instant};

use support::fcgi::{self, Conn};
use support::{Herd, field, user_line};

fn example_pool(listen: &str, workers: u32, extra: &str) -> String {
    format!(
        "[global]\nerror_log = {{dir}}/herd.log\n\
         [app]\nlisten = {listen}\npm = static\npm.max_children = {workers}\n\
         command = {{herd}}\nargs = example-app\n{user}{extra}",
        user = user_line()
    )
}

#[test]
fn serves_requests_over_tcp_and_unix_sockets() {
    let port = support::free_port();
    let tcp = format!("127.0.0.1:{port}");
    let herd = Herd::start(&example_pool(&tcp, 2, ""));
    herd.wait_ready(2);
    let reply = fcgi::get(&tcp, "/hello");
    assert_eq!(reply.status(), 200);
    assert!(reply.body().starts_with("gen=1 pid="), "{}", reply.text());

    let herd2 = Herd::start(&example_pool("{dir}/app.sock", 1, ""));
    herd2.wait_ready(1);
    let sock = herd2.dir.join("app.sock");
    let reply = fcgi::get(sock.to_str().unwrap(), "/hello?status=404");
    assert_eq!(reply.status(), 404);
}

#[test]
fn the_longest_running_idle_worker_serves_first() {
    let port = support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let herd = Herd::start(&example_pool(&addr, 3, ""));
    let ready = herd.wait_ready(3);
    let oldest = herd.worker_pids()[0];
    assert!(ready.contains(&oldest));
    for _ in 0..5 {
        assert_eq!(
            fcgi::get(&addr, "/").pid(),
            oldest,
            "sequential requests go to the oldest worker"
        );
    }
}

#[test]
fn concurrent_requests_use_distinct_workers_and_the_rest_queue() {
    let port = support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let herd = Herd::start(&example_pool(&addr, 2, ""));
    herd.wait_ready(2);
    let started = Instant::now();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let addr = addr.clone();
            thread::spawn(move || fcgi::get(&addr, "/?ms=300"))
        })
        .collect();
    let replies: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let elapsed = started.elapsed();
    assert!(replies.iter().all(|r| r.status() == 200));
    let mut pids: Vec<u32> = replies.iter().map(|r| r.pid()).collect();
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 2, "both workers served");
    // Four 300 ms requests on two workers: two rounds, none lost.
    assert!(
        elapsed >= Duration::from_millis(600),
        "queued requests waited for a worker: {elapsed:?}"
    );
}

#[test]
fn a_keepalive_connection_does_not_pin_a_worker() {
    // php-fpm binds a worker to each nginx keep-alive connection until the
    // connection closes; with one worker, a second connection then starves.
    let port = support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let herd = Herd::start(&example_pool(&addr, 1, ""));
    herd.wait_ready(1);
    let mut first = Conn::open(&addr);
    assert_eq!(first.get(1, "/a", true).status(), 200);
    // `first` stays open and idle; another connection must still be served.
    let mut second = Conn::open(&addr);
    assert_eq!(second.get(1, "/b", true).status(), 200);
    // And the first connection carries another request.
    assert_eq!(first.get(1, "/c", true).status(), 200);
}

#[test]
fn keep_conn_off_closes_the_connection_after_the_response() {
    let port = support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let herd = Herd::start(&example_pool(&addr, 1, ""));
    herd.wait_ready(1);
    let mut c = Conn::open(&addr);
    assert_eq!(c.get(1, "/", false).status(), 200);
    assert!(c.is_closed());
}

#[test]
fn multiplexed_requests_on_one_connection() {
    let port = support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let herd = Herd::start(&example_pool(&addr, 2, ""));
    herd.wait_ready(2);
    let mut c = Conn::open(&addr);
    // Request 1 is slow, request 2 fast: 2's reply comes first.
    let mut both = fcgi::request_bytes(1, "/?ms=400", true, &[], b"");
    both.extend_from_slice(&fcgi::request_bytes(2, "/?bytes=5", true, &[], b""));
    c.send(&both);
    let mut ends = Vec::new();
    let mut bodies = std::collections::HashMap::<u16, Vec<u8>>::new();
    while ends.len() < 2 {
        let f = c.next_frame().expect("replies to both requests");
        match f.record_type() {
            herd::fastcgi::record::STDOUT => bodies
                .entry(f.request_id())
                .or_default()
                .extend_from_slice(f.content()),
            herd::fastcgi::record::END_REQUEST => ends.push(f.request_id()),
            _ => {}
        }
    }
    assert_eq!(ends, vec![2, 1]);
    assert!(String::from_utf8_lossy(&bodies[&2]).ends_with("\r\n\r\ngen=1"));
}

#[test]
fn request_bodies_and_large_responses_pass_through_intact() {
    let port = support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let herd = Herd::start(&example_pool(&addr, 1, ""));
    herd.wait_ready(1);
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let reply = fcgi::request(&addr, "/?echo=1", &[("REQUEST_METHOD", "POST")], &body);
    assert_eq!(reply.status(), 200);
    let text = reply.stdout;
    let at = text.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(&text[at..], &body[..]);

    let big = fcgi::get(&addr, "/?bytes=1000000");
    assert_eq!(big.body().len(), 1_000_000);
}

/// The master writes to its clients without waiting on their sockets
/// (src/quiet.rs), and waits for room only on one whose buffer is full. A
/// client that stops reading a response far larger than any socket buffer
/// holds up only itself: others are served meanwhile, over TCP and unix
/// sockets, and when it reads again every byte arrives, in order.
#[test]
fn a_client_that_stops_reading_a_large_response_holds_up_no_one_else() {
    const BIG: usize = 32 * 1024 * 1024;
    let tcp = format!("127.0.0.1:{}", support::free_port());
    for listen in [tcp.as_str(), "{dir}/app.sock"] {
        let herd = Herd::start(&example_pool(listen, 2, ""));
        herd.wait_ready(2);
        let addr = listen.replace("{dir}", &herd.dir.path().display().to_string());
        let mut slow = Conn::open(&addr);
        slow.send(&fcgi::request_bytes(
            1,
            &format!("/?bytes={BIG}"),
            false,
            &[],
            b"",
        ));
        // The response has started; the client now stops reading.
        let first = slow.next_frame().expect("the response starts");
        assert_eq!(first.request_id(), 1);
        for _ in 0..20 {
            assert_eq!(fcgi::get(&addr, "/hello").status(), 200, "{addr}");
        }
        let rest = slow.reply(1).expect("the rest of the response");
        let mut stdout = first.content().to_vec();
        stdout.extend_from_slice(&rest.stdout);
        let at = stdout.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let body = &stdout[at..];
        assert_eq!(body.len(), BIG, "{addr}");
        assert!(body.starts_with(b"gen=1 pid="), "{addr}");
        assert!(
            body[64..].iter().all(|b| *b == b'.'),
            "{addr}: the body is intact"
        );
        drop(herd);
    }
}

#[test]
fn workers_get_their_environment() {
    let port = support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let herd = Herd::start(&example_pool(
        &addr,
        1,
        "env[GREETING] = hello from $pool\n",
    ));
    herd.wait_ready(1);
    let env = |name: &str| fcgi::get(&addr, &format!("/?env={name}")).body();
    assert_eq!(env("HERD_POOL"), "HERD_POOL=app\n");
    assert_eq!(env("HERD_GENERATION"), "HERD_GENERATION=1\n");
    assert_eq!(env("HERD_WORKER"), "HERD_WORKER=1\n");
    assert_eq!(env("GREETING"), "GREETING=hello from app\n");
    // clear_env = yes (the default): the master's environment stays out.
    assert_eq!(env("HERD_TEST"), "HERD_TEST=\n");
}

#[test]
fn workers_run_as_the_pool_user_when_herd_is_root() {
    if !support::is_root() {
        return support::skip("not root: herd cannot switch users");
    }
    let port = support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let herd = Herd::start(&example_pool(&addr, 1, ""));
    herd.wait_ready(1);
    let pid = fcgi::get(&addr, "/").pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|u| u == nobody.to_string()),
        "{uid_line}"
    );
}

#[test]
fn the_master_answers_get_values_itself() {
    let port = support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let herd = Herd::start(&example_pool(&addr, 1, "listen.max_connections = 77\n"));
    herd.wait_ready(1);
    let mut c = Conn::open(&addr);
    let mut q = bytes::BytesMut::new();
    herd::fastcgi::pairs::put_pair(&mut q, b"FCGI_MAX_CONNS", b"");
    herd::fastcgi::pairs::put_pair(&mut q, b"FCGI_MPXS_CONNS", b"");
    let mut out = bytes::BytesMut::new();
    herd::fastcgi::record::put_record(&mut out, herd::fastcgi::record::GET_VALUES, 0, &q);
    // An unknown management record type too.
    herd::fastcgi::record::put_record(&mut out, 42, 0, b"");
    c.send(&out);
    let values = c.next_frame().unwrap();
    assert_eq!(
        values.record_type(),
        herd::fastcgi::record::GET_VALUES_RESULT
    );
    let got: Vec<_> = herd::fastcgi::pairs::pairs(values.content())
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        got,
        vec![
            (&b"FCGI_MAX_CONNS"[..], &b"77"[..]),
            (&b"FCGI_MPXS_CONNS"[..], &b"1"[..])
        ]
    );
    let unknown = c.next_frame().unwrap();
    assert_eq!(unknown.record_type(), herd::fastcgi::record::UNKNOWN_TYPE);
    assert_eq!(unknown.content()[0], 42);
    // The connection still serves requests.
    assert_eq!(c.get(1, "/", true).status(), 200);
}

#[test]
fn herd_call_prints_the_response() {
    let port = support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let herd = Herd::start(&example_pool(&addr, 1, ""));
    herd.wait_ready(1);
    let (code, out, _) = support::herd_cmd(&["call", &addr, "/x?status=201"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("Status: 201"), "{out}");
    let (code, _, _) = support::herd_cmd(&["call", &addr, "/x?status=503", "--fail"]);
    assert_eq!(code, 22);
    // Nothing listening: a clear failure.
    let dead = format!("127.0.0.1:{}", support::free_port());
    let (code, _, err) = support::herd_cmd(&["call", &dead, "/"]);
    assert_eq!(code, 1);
    assert!(err.contains("failed to connect"), "{err}");
    assert!(field(&out, "pid").is_some());
}
