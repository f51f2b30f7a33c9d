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

/// The one process of a `?json&full` status page.
fn only_process(v: &serde_json::Value) -> serde_json::Value {
    let procs = v["processes"].as_array().expect("processes");
    assert_eq!(procs.len(), 1, "{v}");
    procs[0].clone()
}

/// `GET uri`, then the worker's entry on the status page once it is idle
/// again (the router books the request just after answering it).
fn cost_of(addr: &str, uri: &str) -> serde_json::Value {
    assert_eq!(fcgi::get(addr, uri).status(), 200, "{uri}");
    wait_for(
        &format!("{uri} to be booked"),
        Duration::from_secs(5),
        || {
            let p = only_process(&fcgi::status_json(addr, "/status"));
            (p["state"] == "Idle" && p["request uri"] == uri).then_some(p)
        },
    )
}

const MIB: f64 = 1024.0 * 1024.0;

#[test]
fn last_request_cpu_and_memory_are_what_the_last_request_cost() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start(&pool(&addr, 1, ""));
    herd.wait_ready(1);
    // Looking at per-worker status is what turns the measuring on.
    let first = only_process(&fcgi::status_json(&addr, "/status"));
    assert!(
        first.get("last request cpu").is_none(),
        "nothing measured yet: {first}"
    );

    let burn = cost_of(&addr, "/?cpu_ms=400");
    let cpu = burn["last request cpu"].as_f64().expect("cpu measured");
    assert!(
        cpu > 25.0,
        "a CPU-bound request used {cpu}% of a CPU: {burn}"
    );
    let sleep = cost_of(&addr, "/?ms=400");
    let idle_cpu = sleep["last request cpu"].as_f64().expect("cpu measured");
    assert!(
        idle_cpu < 15.0,
        "a sleeping request used {idle_cpu}%: {sleep}"
    );

    let alloc = cost_of(&addr, "/?alloc_mb=96");
    let peak = alloc["last request memory"]
        .as_f64()
        .expect("memory measured");
    assert!(
        peak >= 96.0 * MIB,
        "96 MiB touched, peak {} MiB",
        peak / MIB
    );
    let small = cost_of(&addr, "/?ms=1");
    let after = small["last request memory"]
        .as_f64()
        .expect("memory measured");
    assert!(
        after < 48.0 * MIB,
        "the peak is the request's, not the process's: {} MiB after a small request",
        after / MIB
    );

    // The text page has the same figures under php-fpm's names.
    let text = fcgi::get(&addr, "/status?full").body();
    let line = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no '{name}' in:\n{text}"))
    };
    assert_eq!(line("last request memory:"), format!("{}", after as u64));

    // While busy, php-fpm's fields say nothing of the request under way.
    let slow = {
        let addr = addr.clone();
        thread::spawn(move || fcgi::get(&addr, "/?ms=1500"))
    };
    let busy = wait_for("the worker to be busy", Duration::from_secs(5), || {
        let p = only_process(&fcgi::status_json(&addr, "/status"));
        (p["state"] == "Running").then_some(p)
    });
    assert!(busy.get("last request cpu").is_none(), "{busy}");
    assert!(busy.get("last request memory").is_none(), "{busy}");
    assert_eq!(slow.join().unwrap().status(), 200);
}

#[test]
fn the_access_log_writes_each_requests_cpu_and_memory() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let extra = "access.log = {dir}/access.log\naccess.format = \"%r %C %{user}C %{mega}M\"\n";
    let herd = Herd::start(&pool(&addr, 1, extra));
    herd.wait_ready(1);
    // No status page is asked for: the format alone turns measuring on.
    for uri in ["/burn?cpu_ms=400", "/alloc?alloc_mb=80", "/nap?ms=300"] {
        assert_eq!(fcgi::get(&addr, uri).status(), 200, "{uri}");
    }
    let log = herd.dir.join("access.log");
    let lines = wait_for("three access log lines", Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(String::from).collect();
        (lines.len() >= 3).then_some(lines)
    });
    let fields = |path: &str| -> (f64, f64, u64) {
        let line = lines
            .iter()
            .find(|l| l.starts_with(path))
            .unwrap_or_else(|| panic!("no line for {path}: {lines:?}"));
        let f: Vec<&str> = line.split(' ').collect();
        let num = |i: usize| f[i].parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
        (num(1), num(2), num(3) as u64)
    };
    let (burn, burn_user, _) = fields("/burn");
    assert!(burn > 25.0 && burn_user > 20.0, "{lines:?}");
    let (_, _, alloc_mb) = fields("/alloc");
    assert!(alloc_mb >= 80, "{lines:?}");
    let (nap, _, nap_mb) = fields("/nap");
    assert!(nap < 15.0 && nap_mb < 40, "{lines:?}");
}

/// Real php-cgi: a script that burns CPU, one that builds a 64 MiB string;
/// and a php-cgi with children, where herd cannot tell which process
/// served a request, so it says nothing rather than something wrong.
#[test]
fn php_cgi_requests_show_their_cost_and_a_group_shows_none() {
    let Some(php) = support::php_cgi() else {
        support::skip("php-cgi is not installed");
        return;
    };
    let (single, group) = (
        format!("127.0.0.1:{}", support::free_port()),
        format!("127.0.0.1:{}", support::free_port()),
    );
    let section = |name: &str, addr: &str, children: u32, extra: &str| {
        format!(
            "[{name}]\nlisten = {addr}\npm = static\npm.max_children = {children}\ncommand = {}\n\
             chdir = {{dir}}\npm.status_path = /status\n\
             access.log = {{dir}}/{name}.log\naccess.format = \"%r %C %M\"\n{}{extra}",
            php.display(),
            user_line()
        )
    };
    let conf = format!(
        "[global]\nerror_log = {{dir}}/herd.log\n{}{}",
        section("single", &single, 1, ""),
        section("group", &group, 2, "php.group_size = 2\n"),
    );
    let dir = support::Dir::new();
    dir.write(
        "burn.php",
        "<?php $t = microtime(true); $x = 0; while (microtime(true) - $t < 0.4) { $x++; } echo $x;",
    );
    dir.write(
        "big.php",
        "<?php $s = str_repeat('x', 64 << 20); echo strlen($s);",
    );
    let herd = Herd::start_in(dir, &conf);
    herd.wait_ready(2);
    let run = |addr: &str, script: &str| {
        let file = herd.dir.join(script);
        let reply = fcgi::request(
            addr,
            &format!("/{script}"),
            &[("SCRIPT_FILENAME", file.to_str().unwrap())],
            b"",
        );
        assert_eq!(reply.status(), 200, "{script}: {}", reply.text());
    };
    for script in ["burn.php", "big.php"] {
        run(&single, script);
        run(&group, script);
    }
    let read = |name: &str| {
        let log = herd.dir.join(&format!("{name}.log"));
        wait_for(
            &format!("{name}'s two access log lines"),
            Duration::from_secs(5),
            || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                (text.lines().count() >= 2).then_some(text)
            },
        )
    };
    let single_log = read("single");
    let cols = |prefix: &str| -> Vec<String> {
        single_log
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {single_log}"))
            .split(' ')
            .map(String::from)
            .collect()
    };
    let burn: f64 = cols("/burn.php")[1].parse().expect("a number");
    assert!(burn > 25.0, "{single_log}");
    let big: u64 = cols("/big.php")[2].parse().expect("a number");
    assert!(big >= 64 << 20, "{single_log}");
    // The group: '-' in the log, no field on the status page.
    let group_log = read("group");
    for line in group_log.lines() {
        assert!(line.ends_with(" - -"), "{group_log}");
    }
    let v = fcgi::status_json(&group, "/status");
    for p in v["processes"].as_array().unwrap() {
        assert!(p.get("last request cpu").is_none(), "{p}");
        assert!(p.get("last request memory").is_none(), "{p}");
    }
}
