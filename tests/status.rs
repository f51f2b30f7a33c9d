//! Status and ping are answered by the master, in php-fpm's formats.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use support::fcgi::{self, Conn};
use support::{Herd, user_line, wait_for};

fn pool(addr: &str, workers: u32, extra: &str) -> String {
    format!(
        "[global]\nerror_log = {{dir}}/herd.log\n\
         [www]\nlisten = {addr}\npm = static\npm.max_children = {workers}\n\
         command = {{herd}}\nargs = example-app\n{user}\
         pm.status_path = /status\nping.path = /ping\nping.response = alive\n{extra}",
        user = user_line()
    )
}

#[test]
fn status_and_ping_answer_while_every_worker_is_busy() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start(&pool(&addr, 1, ""));
    herd.wait_ready(1);
    let busy = {
        let addr = addr.clone();
        thread::spawn(move || fcgi::get(&addr, "/slow?ms=1500"))
    };
    // Wait until the only worker is busy, from status itself.
    let text = wait_for("the worker to be busy", Duration::from_secs(10), || {
        let t = fcgi::get(&addr, "/status").body();
        t.contains("active processes:     1\n").then_some(t)
    });
    assert!(
        text.starts_with("pool:                 www\nprocess manager:      static\n"),
        "{text}"
    );
    assert!(text.contains("idle processes:       0\n"), "{text}");
    let ping = fcgi::get(&addr, "/ping");
    assert_eq!(ping.status(), 200);
    assert_eq!(ping.body(), "alive\n");
    assert_eq!(busy.join().unwrap().status(), 200);
}

#[test]
fn status_json_has_php_fpm_fields_and_processes() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start(&pool(&addr, 2, ""));
    herd.wait_ready(2);
    for _ in 0..3 {
        assert_eq!(fcgi::get(&addr, "/x").status(), 200);
    }
    let reply = fcgi::get(&addr, "/status?json&full");
    assert!(reply.text().contains("Content-Type: application/json"));
    let v: serde_json::Value = serde_json::from_str(&reply.body()).expect("valid JSON");
    assert_eq!(v["pool"], "www");
    assert_eq!(v["process manager"], "static");
    assert_eq!(v["total processes"], 2);
    assert_eq!(v["idle processes"], 2);
    // The three requests and this one.
    assert!(v["accepted conn"].as_u64().unwrap() >= 3);
    assert_eq!(v["generation"], 1);
    let procs = v["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 2);
    let served: u64 = procs.iter().map(|p| p["requests"].as_u64().unwrap()).sum();
    assert_eq!(served, 3, "{procs:?}");
    for p in procs {
        for key in [
            "pid",
            "state",
            "start time",
            "start since",
            "request duration",
            "request method",
            "request uri",
            "script",
            "generation",
        ] {
            assert!(p.get(key).is_some(), "process lacks '{key}': {p}");
        }
    }
    let xml = fcgi::get(&addr, "/status?xml").body();
    assert!(
        xml.contains("<pool>www</pool>") && xml.contains("<accepted-conn>"),
        "{xml}"
    );
    let html = fcgi::get(&addr, "/status?html&full").body();
    assert!(html.contains("<th>accepted conn</th>"), "{html}");
}

#[test]
fn status_openmetrics_passes_the_reference_parser() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start(&pool(&addr, 2, ""));
    herd.wait_ready(2);
    assert_eq!(fcgi::get(&addr, "/x").status(), 200);
    let reply = fcgi::get(&addr, "/status?openmetrics");
    assert!(
        reply
            .text()
            .contains("Content-Type: application/openmetrics-text; version=1.0.0"),
        "{}",
        reply.text()
    );
    let script = "import sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
        fams = {f.name: f for f in text_string_to_metric_families(sys.stdin.read())}\n\
        print(fams['phpfpm_total_processes'].samples[0].value)\n\
        print(fams['phpfpm_accepted_connections'].samples[0].value)\n\
        print(sum(s.value for s in fams['herd_workers'].samples))\n";
    let mut py = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (the test command installs prometheus_client)");
    py.stdin
        .take()
        .unwrap()
        .write_all(reply.body().as_bytes())
        .unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "parser rejected:\n{}\n{}",
        reply.body(),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(lines[0], 2.0);
    assert!(lines[1] >= 1.0);
    assert_eq!(lines[2], 2.0);
}

#[test]
fn ping_reports_not_ready_once_a_graceful_stop_begins() {
    // Load balancers poll the ping path; during shutdown.depool_delay it
    // says 503 while requests are still accepted and served, so the host
    // is taken out before its listener closes.
    let addr = format!("127.0.0.1:{}", support::free_port());
    let text = pool(&addr, 1, "").replace("[www]", "shutdown.depool_delay = 2s\n[www]");
    let mut herd = Herd::start(&text);
    herd.wait_ready(1);
    assert_eq!(fcgi::get(&addr, "/ping").status(), 200);
    let slow = {
        let addr = addr.clone();
        thread::spawn(move || fcgi::get(&addr, "/?ms=1500"))
    };
    wait_for("the slow request to start", Duration::from_secs(10), || {
        fcgi::get(&addr, "/status")
            .body()
            .contains("active processes:     1\n")
            .then_some(())
    });
    herd.signal(libc::SIGQUIT);
    wait_for("ping to say 503", Duration::from_secs(10), || {
        (fcgi::get(&addr, "/ping").status() == 503).then_some(())
    });
    // Still accepting and serving during the depool delay.
    let mut conn = Conn::open(&addr);
    assert_eq!(conn.get(1, "/status", true).status(), 200);
    assert_eq!(slow.join().unwrap().status(), 200);
    assert_eq!(herd.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "the listener is closed after the stop"
    );
}

#[test]
fn ping_says_not_ready_until_the_first_workers_passed_their_gate() {
    // A load balancer or readiness probe must not send traffic to a host
    // whose workers are still warming up.
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start(&pool(&addr, 1, "warmup.request[] = /?ms=1500\n"));
    let early = wait_for("the listener", Duration::from_secs(10), || {
        fcgi::try_get(&addr, "/ping", Duration::from_secs(5)).ok()
    });
    assert_eq!(early.status(), 503, "{}", early.text());
    herd.wait_ready(1);
    wait_for("ping to say ready", Duration::from_secs(10), || {
        (fcgi::get(&addr, "/ping").status() == 200).then_some(())
    });
}
