//! What happens to a request when things go wrong: timeouts, slow
//! requests, dying workers, full queues; and the access log.

mod support;

use std::thread;
use std::time::{Duration, Instant};

use support::fcgi;
use support::{Herd, refusals_accounted, user_line, wait_for};

fn pool(addr: &str, workers: u32, extra: &str) -> String {
    format!(
        "[global]\nerror_log = {{dir}}/herd.log\n\
         [www]\nlisten = {addr}\npm = static\npm.max_children = {workers}\n\
         command = {{herd}}\nargs = example-app\n{user}{extra}",
        user = user_line()
    )
}

#[test]
fn request_terminate_timeout_answers_504_and_replaces_the_worker() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start(&pool(&addr, 1, "request_terminate_timeout = 1s\n"));
    let first = herd.wait_ready(1)[0];
    let started = Instant::now();
    let reply = fcgi::get(&addr, "/stuck?ms=20000");
    assert_eq!(reply.status(), 504, "{}", reply.text());
    assert!(started.elapsed() < Duration::from_secs(10));
    // The stuck worker is stopped and a new one serves.
    wait_for("the stuck worker to exit", Duration::from_secs(10), || {
        (!support::alive(first)).then_some(())
    });
    let next = wait_for("a replacement", Duration::from_secs(10), || {
        let r = fcgi::get(&addr, "/");
        (r.status() == 200).then(|| r.pid())
    });
    assert_ne!(next, first);
    assert!(!herd.log_lines("request_terminate_timeout").is_empty());
}

#[test]
fn slow_requests_get_one_slowlog_line_each() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start(&pool(
        &addr,
        2,
        "request_slowlog_timeout = 200ms\nslowlog = {dir}/slow.log\n",
    ));
    herd.wait_ready(2);
    let slow = fcgi::get(&addr, "/slow.php?ms=700");
    assert_eq!(slow.status(), 200);
    assert_eq!(fcgi::get(&addr, "/fast.php").status(), 200);
    let log = std::fs::read_to_string(herd.dir.join("slow.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains(&format!("pool www pid {} GET /slow.php?ms=700", slow.pid())),
        "{log}"
    );
}

#[test]
fn a_get_whose_worker_dies_is_retried_on_another_worker() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start(&pool(&addr, 2, ""));
    herd.wait_ready(2);
    let marker = herd.dir.shared("markers").join("died-once");
    let reply = fcgi::get(&addr, &format!("/?exit_once={}", marker.display()));
    assert_eq!(reply.status(), 200, "{}", reply.text());
    assert!(marker.exists(), "the first worker did die");
    assert_eq!(herd.log_lines("trying another worker").len(), 1);
}

#[test]
fn a_post_whose_worker_dies_gets_502_not_a_second_run() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start(&pool(&addr, 2, ""));
    herd.wait_ready(2);
    let marker = herd.dir.shared("markers").join("died-once");
    let reply = fcgi::request(
        &addr,
        &format!("/?exit_once={}", marker.display()),
        &[("REQUEST_METHOD", "POST")],
        b"a=1",
    );
    assert_eq!(reply.status(), 502, "{}", reply.text());
    assert!(reply.body().contains("Bad Gateway"));
    // The pool recovers.
    wait_for("a worker to serve again", Duration::from_secs(10), || {
        (fcgi::get(&addr, "/").status() == 200).then_some(())
    });
}

/// Waits until status shows `active` busy workers and `queued` waiting.
fn wait_load(addr: &str, active: u32, queued: u32) {
    wait_for(
        &format!("{active} busy and {queued} queued"),
        Duration::from_secs(10),
        || {
            let t = fcgi::get(addr, "/status").body();
            let want = format!("listen queue:         {queued}\n");
            (t.contains(&want) && t.contains(&format!("active processes:     {active}\n")))
                .then_some(())
        },
    );
}

#[test]
fn a_full_queue_answers_503_with_retry_after_at_once() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start(&pool(
        &addr,
        1,
        "pm.max_queue = 1\nrequest.queue_timeout = 20s\npm.status_path = /status\n",
    ));
    herd.wait_ready(1);
    // One request runs, one waits in the queue; the third finds it full.
    let spawn = |uri: &'static str| {
        let addr = addr.clone();
        thread::spawn(move || fcgi::get(&addr, uri))
    };
    let running = spawn("/?ms=3000");
    wait_load(&addr, 1, 0);
    let queued = spawn("/?ms=10");
    wait_load(&addr, 1, 1);
    let started = Instant::now();
    let full = fcgi::get(&addr, "/third");
    assert_eq!(full.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused at once, not after the 20 s queue timeout"
    );
    assert!(
        full.text().contains("Retry-After: 20\r\n"),
        "{}",
        full.text()
    );
    assert!(full.body().contains("queue of this pool is full"));
    // A flood of refusals: a few log lines, each counting the ones it
    // stands for, and every refusal accounted for.
    for _ in 0..20 {
        assert_eq!(fcgi::get(&addr, "/flood").status(), 503);
    }
    let needle = "the queue is full (pm.max_queue = 1)";
    let lines = wait_for("21 refusals in the log", Duration::from_secs(10), || {
        let lines = herd.log_lines(needle);
        (refusals_accounted(&lines) >= 21).then_some(lines)
    });
    assert_eq!(refusals_accounted(&lines), 21, "{lines:#?}");
    assert!(lines.len() <= 4, "not one line per refusal: {lines:#?}");
    assert!(lines[0].contains("503 for GET /third"), "{}", lines[0]);
    assert_eq!(running.join().unwrap().status(), 200);
    assert_eq!(
        queued.join().unwrap().status(),
        200,
        "the queued request is served, not dropped"
    );
}

#[test]
fn a_queued_request_times_out_with_503() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start(&pool(
        &addr,
        1,
        "request.queue_timeout = 1s\npm.status_path = /status\n",
    ));
    herd.wait_ready(1);
    let busy = {
        let addr = addr.clone();
        thread::spawn(move || fcgi::get(&addr, "/?ms=3000"))
    };
    wait_load(&addr, 1, 0);
    let started = Instant::now();
    let reply = fcgi::get(&addr, "/queued");
    assert_eq!(reply.status(), 503);
    let waited = started.elapsed();
    // Refused by the 1 s queue timeout, not served after the 3 s request.
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(2900),
        "{waited:?}"
    );
    assert!(
        reply.body().contains("timed out waiting for a worker"),
        "{}",
        reply.text()
    );
    herd.wait_log(
        "503 for GET /queued: no worker within request.queue_timeout (1s)",
        1,
        Duration::from_secs(5),
    );
    assert_eq!(busy.join().unwrap().status(), 200);
}

#[test]
fn the_access_log_uses_php_fpm_format_letters() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start(&pool(
        &addr,
        1,
        "access.log = {dir}/access.log\naccess.format = \"%R - %u %t \\\"%m %r%Q%q\\\" %s %n %{X-Custom}o\"\n",
    ));
    herd.wait_ready(1);
    let reply = fcgi::request(
        &addr,
        "/page?status=404",
        &[("REMOTE_ADDR", "10.1.2.3")],
        b"",
    );
    assert_eq!(reply.status(), 404);
    let log = wait_for("the access log line", Duration::from_secs(5), || {
        let t = std::fs::read_to_string(herd.dir.join("access.log")).ok()?;
        (!t.is_empty()).then_some(t)
    });
    let line = log.lines().next().unwrap();
    assert!(line.starts_with("10.1.2.3 - - "), "{line}");
    assert!(
        line.ends_with("\"GET /page?status=404\" 404 www -"),
        "{line}"
    );
}

#[test]
fn a_client_abort_lets_the_worker_finish_and_keeps_it() {
    // nginx closes its connection when the browser goes away: herd sends
    // FCGI_ABORT_REQUEST, reads the worker's answer to its end, and only
    // then gives the worker the next request. The worker is not killed.
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start(&pool(&addr, 1, "pm.status_path = /status\n"));
    let worker = herd.wait_ready(1)[0];
    let mut c = fcgi::Conn::open(&addr);
    c.send(&fcgi::request_bytes(1, "/?ms=800", false, &[], b""));
    wait_load(&addr, 1, 0);
    drop(c);
    let next = fcgi::get(&addr, "/after");
    assert_eq!(next.status(), 200);
    assert_eq!(next.pid(), worker, "the same worker serves on");
    assert!(
        herd.log_lines("worker died").is_empty() && herd.log_lines("retiring").is_empty(),
        "{}",
        herd.log_text()
    );
    let status = fcgi::get(&addr, "/status?json").body();
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["worker lost requests"], 0);
    assert_eq!(v["spawns"], 1);
}

#[test]
fn refusals_the_log_held_back_are_logged_when_herd_stops() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let mut herd = Herd::start(&pool(
        &addr,
        1,
        "pm.max_queue = 1\npm.status_path = /status\n",
    ));
    herd.wait_ready(1);
    let spawn = |uri: &'static str| {
        let addr = addr.clone();
        thread::spawn(move || fcgi::try_get(&addr, uri, Duration::from_secs(20)))
    };
    let running = spawn("/?ms=3000");
    wait_load(&addr, 1, 0);
    let queued = spawn("/?ms=10");
    wait_load(&addr, 1, 1);
    for _ in 0..10 {
        assert_eq!(fcgi::get(&addr, "/refused").status(), 503);
    }
    // Within the second the throttle holds the last nine back: a stop
    // now must still account for them.
    herd.signal(libc::SIGTERM);
    herd.wait_exit(Duration::from_secs(10));
    // Ten refused, plus maybe the two others: killed by the stop, a GET's
    // retry finds no worker either.
    let lines = herd.log_lines("the queue is full");
    assert!(
        (10..=12).contains(&refusals_accounted(&lines)),
        "{lines:#?}"
    );
    let _ = (running.join(), queued.join());
}
