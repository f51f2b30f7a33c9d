//! PHP engines: PHP processes in groups that share one OPcache, run as one
//! worker with a slot per process — a php-fpm master herd configures, or a
//! php-cgi with `PHP_FCGI_CHILDREN`. Real php-fpm and php-cgi, real OPcache.

mod support;

use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use herd::fastcgi::record;
use support::nginx::Nginx;
use support::{Dir, Herd, fcgi, user_line, wait_for, wait_until};

/// The time one request may take before the test fails instead of waiting.
const LIMIT: Duration = Duration::from_secs(10);

/// Prints the pid, OPcache's shared hit count and its start time.
const STATUS: &str = "<?php usleep((int)($_GET['ms'] ?? 0) * 1000); $s = opcache_get_status(false)['opcache_statistics']; \
     echo getmypid(), ' ', $s['hits'], ' ', $s['start_time'], ' ', PHP_SAPI;";

fn php_fpm() -> String {
    support::installed("/usr/sbin/php-fpm8.2", "php8.2-fpm")
        .display()
        .to_string()
}

fn php_cgi() -> String {
    support::installed("/usr/bin/php-cgi8.2", "php8.2-cgi")
        .display()
        .to_string()
}

/// A PHP pool `www` of `children` processes running `command` on `addr`;
/// OPcache caches the test's just-written scripts at once (by default it
/// waits until a file is 2 s old).
fn config(addr: &str, command: &str, children: u32, extra: &str) -> String {
    format!(
        "[global]\nerror_log = {{dir}}/herd.log\ncontrol.listen = {{dir}}/ctl.sock\n\
         [www]\nlisten = {addr}\npm = static\npm.max_children = {children}\n\
         command = {command}\nchdir = {{dir}}\n\
         php_admin_value[opcache.enable] = 1\n\
         php_admin_value[opcache.file_update_protection] = 0\n{}{extra}",
        user_line()
    )
}

fn get(addr: &str, uri: &str, root: &Dir) -> String {
    let script = uri.split('?').next().unwrap();
    let file = root.join(script.trim_start_matches('/'));
    let reply = fcgi::request(
        addr,
        uri,
        &[("SCRIPT_FILENAME", file.to_str().unwrap())],
        b"",
    );
    assert_eq!(reply.status(), 200, "{uri}: {}", reply.text());
    reply.body()
}

/// (pid, OPcache hits, OPcache start time, SAPI) of one answer.
fn parse(body: &str) -> (u32, u64, u64, String) {
    let f: Vec<&str> = body.split(' ').collect();
    (
        f[0].parse().unwrap(),
        f[1].parse().unwrap(),
        f[2].parse().unwrap(),
        f[3].to_string(),
    )
}

/// Requests served at once by several processes of one group, then one
/// more: every answer reads the same OPcache (one start time), and the hits
/// the last one sees count every process's requests, not its own only.
/// Returns the pids of the PHP processes that answered.
fn one_opcache_serves_the_group(addr: &str, dir: &Dir, sapi: &str) -> BTreeSet<u32> {
    const AT_ONCE: usize = 4;
    let answers: Vec<String> = thread::scope(|s| {
        let handles: Vec<_> = (0..AT_ONCE)
            .map(|_| s.spawn(|| get(addr, "/status.php?ms=300", dir)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let seen: Vec<_> = answers.iter().map(|a| parse(a)).collect();
    let pids: BTreeSet<u32> = seen.iter().map(|s| s.0).collect();
    assert!(pids.len() >= 2, "served by one process only: {seen:?}");
    let starts: BTreeSet<u64> = seen.iter().map(|s| s.2).collect();
    assert_eq!(starts.len(), 1, "several OPcaches: {seen:?}");
    assert!(seen.iter().all(|s| s.3 == sapi), "{seen:?}");
    let (pid, hits, ..) = parse(&get(addr, "/status.php", dir));
    assert!(
        hits >= AT_ONCE as u64 - 1,
        "pid {pid} sees {hits} hits after {AT_ONCE} requests on {pids:?}: not one shared OPcache"
    );
    pids
}

/// The group's one worker in the status page (`?json&full`) lists its
/// PHP processes: `size` of them, the ones that answered among them, each
/// with its memory.
fn status_shows_the_group(addr: &str, size: usize, served: &BTreeSet<u32>) {
    let status = support::fcgi::status_json(addr, "/status");
    let procs = status["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 1, "one worker for the group: {status}");
    assert_eq!(procs[0]["slots"], size, "{status}");
    let members = procs[0]["group processes"]
        .as_array()
        .expect("group processes");
    let pids: BTreeSet<u32> = members
        .iter()
        .map(|m| m["pid"].as_u64().unwrap() as u32)
        .collect();
    assert_eq!(pids.len(), size, "{status}");
    assert!(
        served.is_subset(&pids),
        "served by {served:?}, status lists {pids:?}"
    );
    assert!(
        members.iter().all(|m| m["rss"].as_u64().unwrap() > 0),
        "{status}"
    );
    // OpenMetrics counts them too.
    let metrics = support::fcgi::get(addr, "/status?openmetrics").body();
    let line = format!("herd_php_processes{{pool=\"www\",generation=\"1\"}} {size}\n");
    assert!(metrics.contains(&line), "{line} in:\n{metrics}");
}

#[test]
fn php_fpm_as_the_engine_shares_one_opcache_and_keeps_its_sapi() {
    let dir = Dir::new();
    dir.write("status.php", STATUS);
    dir.write("level.php", "<?php echo error_reporting();");
    let addr = format!("127.0.0.1:{}", support::free_port());
    // An expression, unquoted as php-fpm's pool files have them.
    let extra = "pm.status_path = /status\n\
                 php_admin_value[error_reporting] = E_ALL & ~E_NOTICE\n";
    let herd = Herd::start_in(dir, &config(&addr, &php_fpm(), 4, extra));
    herd.wait_ready(1);
    // Evaluated, as php-fpm evaluates it: E_ALL (32767) without E_NOTICE (8).
    assert_eq!(get(&addr, "/level.php", &herd.dir), "32759");
    let served = one_opcache_serves_the_group(&addr, &herd.dir, "fpm-fcgi");
    // One worker, four slots: status counts PHP processes, and lists them.
    let status = support::fcgi::status_json(&addr, "/status");
    assert_eq!(status["total processes"], 4, "{status}");
    status_shows_the_group(&addr, 4, &served);
    // herd ctl status says so too.
    let (code, out, err) = herd.ctl(&herd.dir.join("ctl.sock"), &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("4 PHP processes"), "{out}");
}

/// How often a request went to another child than the request before it,
/// the first request aside.
fn switches(pids: &[String]) -> usize {
    pids.windows(2).skip(1).filter(|w| w[0] != w[1]).count()
}

/// One request at a time goes to the php-fpm child that served the last
/// one, its caches warm, as nginx's kept connections give php-fpm; the
/// engine's shared socket alone would hand each to the child idle longest,
/// in turn, switching every time. The requests are 20 ms apart: one sent
/// the moment the last is answered may find that child not back at its
/// socket yet and go to one that is (see `IdleSlots::take_taken`); a busy
/// machine makes that likelier (6 to 21 switches in 39 back to back with
/// both CPUs kept busy besides).
#[test]
fn one_request_at_a_time_goes_to_the_child_that_served_the_last() {
    let dir = Dir::new();
    dir.write("pid.php", "<?php echo getmypid();");
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start_in(dir, &config(&addr, &php_fpm(), 4, ""));
    herd.wait_ready(1);
    let pids: Vec<String> = (0..40)
        .map(|_| {
            thread::sleep(Duration::from_millis(20));
            get(&addr, "/pid.php", &herd.dir)
        })
        .collect();
    let switched = switches(&pids);
    assert!(switched <= 4, "{switched} switches in 39: {pids:?}");
}

/// A deploy script that clears OPcache through the FastCGI socket, as
/// cachetool's `opcache:reset --fcgi=...` does (a request that runs
/// `opcache_reset()`), reaches one PHP process; the group's processes share
/// one OPcache, so every one of them serves the new file after it. php-fpm
/// as the engine, one group (herd's default for it, as php-fpm has one
/// OPcache per master), timestamps not checked.
#[test]
fn opcache_reset_through_herd_clears_the_group_s_one_opcache() {
    let dir = Dir::new();
    let page = "<?php usleep((int)($_GET['ms'] ?? 0) * 1000); echo 'version 1 ', getmypid();";
    dir.write("page.php", page);
    dir.write("reset.php", "<?php echo opcache_reset() ? 'reset' : 'no';");
    let addr = format!("127.0.0.1:{}", support::free_port());
    let extra = "php_admin_value[opcache.validate_timestamps] = 0\n";
    let herd = Herd::start_in(dir, &config(&addr, &php_fpm(), 2, extra));
    herd.wait_ready(1);
    let version = |body: &str| body.rsplit_once(' ').map(|(v, _)| v.to_string());
    assert_eq!(
        version(&get(&addr, "/page.php", &herd.dir)).as_deref(),
        Some("version 1")
    );
    herd.dir
        .write("page.php", &page.replace("version 1", "version 2, longer"));
    assert_eq!(
        version(&get(&addr, "/page.php", &herd.dir)).as_deref(),
        Some("version 1"),
        "cached"
    );
    assert_eq!(get(&addr, "/reset.php", &herd.dir), "reset");
    let answers: Vec<String> = thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| get(&addr, "/page.php?ms=300", &herd.dir)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let pids: BTreeSet<&str> = answers
        .iter()
        .filter_map(|a| a.rsplit(' ').next())
        .collect();
    assert_eq!(pids.len(), 2, "both PHP processes answered: {answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| version(a).as_deref() == Some("version 2, longer")),
        "{answers:?}"
    );
}

/// A request whose body comes after its params (Apache always writes stdin
/// after the params; nginx a large body in pieces) goes on the connection
/// an idle child waits on, as any other. It once went on a new connection,
/// which waited in php-fpm's queue until a child's connection opened ahead
/// was renewed, 2.5 s after it was opened: here both were opened a moment
/// before (two requests at once, ended together), so that wait would be
/// over 2 s, where the request takes milliseconds.
#[test]
fn a_request_whose_body_follows_its_params_goes_to_an_idle_child_at_once() {
    let dir = Dir::new();
    dir.write("pid.php", "<?php usleep(300000); echo getmypid();");
    dir.write(
        "read.php",
        "<?php echo strlen(file_get_contents('php://input'));",
    );
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start_in(
        dir,
        &config(&addr, &php_fpm(), 2, "pm.status_path = /status\n"),
    );
    herd.wait_ready(1);
    for round in 0..3 {
        let both: Vec<_> = (0..2)
            .map(|_| {
                let (addr, root) = (addr.clone(), herd.dir.path().to_path_buf());
                thread::spawn(move || {
                    let file = root.join("pid.php");
                    fcgi::request(
                        &addr,
                        "/pid.php",
                        &[("SCRIPT_FILENAME", file.to_str().unwrap())],
                        b"",
                    )
                })
            })
            .collect();
        for h in both {
            assert_eq!(h.join().unwrap().status(), 200);
        }
        let file = herd.dir.join("read.php");
        let len = "65000";
        let params = [
            ("REQUEST_METHOD", "POST"),
            ("CONTENT_LENGTH", len),
            ("SCRIPT_FILENAME", file.to_str().unwrap()),
        ];
        let whole = fcgi::request_bytes(1, "/read.php", false, &params, b"");
        // Everything but the empty STDIN record that ends it: the params.
        let head = &whole[..whole.len() - 8];
        let mut body = bytes::BytesMut::new();
        record::put_stream(&mut body, record::STDIN, 1, &[b'x'; 65000]);
        record::put_stream_end(&mut body, record::STDIN, 1);
        let mut conn = fcgi::Conn::open(&addr);
        let sent = Instant::now();
        conn.send(head);
        // herd has the request in a slot before its body comes.
        wait_for("the request in a slot", LIMIT, || {
            (fcgi::status_json(&addr, "/status")["active processes"].as_u64() >= Some(1))
                .then_some(())
        });
        conn.send(&body);
        let reply = conn.reply(1).expect("a reply");
        let took = sent.elapsed();
        assert_eq!(reply.body(), len, "round {round}: {}", reply.text());
        assert!(
            took < Duration::from_millis(1500),
            "round {round}: the request waited {took:?} for a child, as if in php-fpm's queue"
        );
    }
}

/// While the child that served the last request is still finishing (here
/// its script works on after `fastcgi_finish_request()`), the next request
/// goes to the child that served the one before, not to the child idle
/// longest: herd asks the kernel which of the connections it opened ahead a
/// child has taken (`pool::accepted`). Each script works 90 ms after its
/// response and the next request comes about 60 ms after that response, so
/// the last child is always still at work and the one before always free
/// again, with 30 ms to spare either way: two children take turns. Sending
/// such a request to the child idle longest went round all eight.
#[test]
fn while_the_last_child_finishes_the_one_before_takes_the_request() {
    let dir = Dir::new();
    dir.write(
        "late.php",
        "<?php echo getmypid(); fastcgi_finish_request(); usleep(90000);",
    );
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start_in(dir, &config(&addr, &php_fpm(), 8, ""));
    herd.wait_ready(1);
    let pids: Vec<String> = (0..24)
        .map(|_| {
            let pid = get(&addr, "/late.php", &herd.dir);
            thread::sleep(Duration::from_millis(55));
            pid
        })
        .collect();
    let children: BTreeSet<&String> = pids.iter().collect();
    assert!(
        children.len() <= 3,
        "{} children served 24 requests: {pids:?}",
        children.len()
    );
}

/// The child that served the last request keeps getting the next one
/// past php-fpm's own limit: php-fpm closes a connection that brings no
/// request for 5 s and its child goes back to accepting, where it would take
/// the next connection herd opens ahead for any slot (the child waiting
/// longest first) and requests would go round the children. Requests come
/// every 100 ms for 9 s, so the three other children pass that limit.
#[test]
fn the_warm_child_keeps_the_requests_past_php_fpm_s_idle_limit() {
    let dir = Dir::new();
    dir.write("pid.php", "<?php echo getmypid();");
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start_in(dir, &config(&addr, &php_fpm(), 4, ""));
    herd.wait_ready(1);
    let started = Instant::now();
    let mut pids = Vec::new();
    while started.elapsed() < Duration::from_secs(9) && pids.len() < 200 {
        pids.push(get(&addr, "/pid.php", &herd.dir));
        thread::sleep(Duration::from_millis(100));
    }
    // Without the connections renewed, from the 5th second on the
    // requests go round the children: 9 switches in 87 in one run.
    let switched = switches(&pids);
    assert!(
        switched <= 2,
        "{switched} switches in {}: {pids:?}",
        pids.len() - 1
    );
}

/// Bytes waiting unread on the client's side of a unix connection.
fn stalled_bytes(conn: &std::os::unix::net::UnixStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer.
    unsafe { libc::ioctl(conn.as_raw_fd(), libc::FIONREAD, &mut n) };
    n as usize
}

/// A client that reads none of its responses keeps no PHP process: once
/// the client's socket is full, the held response waits for it with the
/// slot already free, and the one child serves another client at once.
#[test]
fn a_client_that_reads_nothing_does_not_keep_the_child() {
    let dir = Dir::new();
    dir.write("big.php", "<?php echo str_repeat('x', 50000);");
    dir.write("pid.php", "<?php echo getmypid();");
    let sock = dir.join("herd.sock");
    let addr = sock.to_str().unwrap().to_string();
    let herd = Herd::start_in(dir, &config(&addr, &php_fpm(), 1, ""));
    herd.wait_ready(1);
    let big = herd.dir.join("big.php");
    let raw = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let watch = raw.try_clone().unwrap();
    let mut stalled = fcgi::Conn::from_stream(Box::new(raw));
    // 16 responses of 50 KB: more than a unix socket takes unread.
    const SENT: u16 = 16;
    for id in 1..=SENT {
        stalled.send(&fcgi::request_bytes(
            id,
            "/big.php",
            true,
            &[("SCRIPT_FILENAME", big.to_str().unwrap())],
            b"",
        ));
    }
    // Once the client's socket is full (its replies unread)...
    wait_for("the stalled client's socket to fill", LIMIT, || {
        (stalled_bytes(&watch) > 150_000).then_some(())
    });
    // ...another client is answered at once: request.read_timeout is 30 s,
    // and a slot held for the stalled client would show here.
    let asked = Instant::now();
    let pid = get(&addr, "/pid.php", &herd.dir);
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    assert!(pid.parse::<u32>().is_ok(), "{pid}");
    // The stalled client loses nothing.
    for id in 1..=SENT {
        let r = stalled.reply(id).expect("every reply");
        assert_eq!(r.body().len(), 50000, "reply {id}");
    }
}

#[test]
fn a_php_cgi_group_shares_one_opcache() {
    let dir = Dir::new();
    dir.write("status.php", STATUS);
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start_in(
        dir,
        &config(
            &addr,
            &php_cgi(),
            4,
            "php.group_size = 4\npm.status_path = /status\n",
        ),
    );
    herd.wait_ready(1);
    assert_eq!(herd.worker_pids().len(), 1, "one group, one worker");
    let served = one_opcache_serves_the_group(&addr, &herd.dir, "cgi-fcgi");
    status_shows_the_group(&addr, 4, &served);
}

/// `opcache.preload` runs once per group, in the process its PHP processes
/// are forked from, and every one of them has what it defined; a new
/// generation's group preloads again. (With a php-cgi per worker it would
/// run once per worker.)
fn preload_runs_once_per_group(command: &str, extra: &str) {
    let dir = Dir::new();
    let log = dir.shared("out").join("preloads");
    dir.write(
        "preload.php",
        &format!(
            "<?php file_put_contents('{}', getmypid() . \"\\n\", FILE_APPEND);\n\
             function preloaded() {{ return getmypid(); }}",
            log.display()
        ),
    );
    dir.write(
        "who.php",
        "<?php usleep(300000); echo function_exists('preloaded') ? preloaded() : 'not preloaded';",
    );
    let preload = dir.join("preload.php");
    let addr = format!("127.0.0.1:{}", support::free_port());
    let extra = format!(
        "{extra}php_admin_value[opcache.preload] = {}\n",
        preload.display()
    );
    let herd = Herd::start_in(dir, &config(&addr, command, 4, &extra));
    herd.wait_ready(1);
    let preloads = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let answers: Vec<String> = thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| get(&addr, "/who.php", &herd.dir)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let pids: BTreeSet<u32> = answers
        .iter()
        .map(|a| a.parse().unwrap_or_else(|_| panic!("{answers:?}")))
        .collect();
    assert!(pids.len() >= 2, "served by one process only: {answers:?}");
    assert_eq!(preloads(), 1, "{answers:?}");
    let socket = herd.dir.join("ctl.sock");
    let (code, out, err) = herd.ctl(&socket, &["reload", "--force", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(preloads(), 2, "the new generation's group preloads once");
}

#[test]
fn preload_runs_once_per_php_fpm_group() {
    preload_runs_once_per_group(&php_fpm(), "");
}

#[test]
fn preload_runs_once_per_php_cgi_group() {
    preload_runs_once_per_group(&php_cgi(), "php.group_size = 4\n");
}

/// The PHP processes status lists for the group now.
fn group_pids(addr: &str) -> BTreeSet<u32> {
    let status = support::fcgi::status_json(addr, "/status");
    status["processes"][0]["group processes"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| m["pid"].as_u64().unwrap() as u32)
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until status lists `n` PHP processes in the group.
fn wait_for_group(addr: &str, what: &str, n: usize) {
    wait_until(what, Duration::from_secs(15), || {
        let pids = group_pids(addr);
        if pids.len() == n {
            Ok(())
        } else {
            Err(format!("{pids:?}"))
        }
    });
}

/// Four requests at once, each 300 ms long; the pids that served them.
fn four_at_once(addr: &str, dir: &Dir) -> BTreeSet<u32> {
    thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| parse(&get(addr, "/status.php?ms=300", dir)).0))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn an_ondemand_php_fpm_group_starts_children_for_requests_and_stops_idle_ones() {
    let dir = Dir::new();
    dir.write("status.php", STATUS);
    let addr = format!("127.0.0.1:{}", support::free_port());
    let extra = "pm = ondemand\npm.process_idle_timeout = 1s\npm.status_path = /status\n\
                 warmup.request[] = /status.php\n";
    let herd = Herd::start_in(dir, &config(&addr, &php_fpm(), 4, extra));
    herd.wait_ready(1);
    // Idle: php-fpm stops the child the readiness probe and the warm-up
    // started (herd does not hold on to the warm-up's connection).
    wait_for_group(&addr, "no PHP process while idle", 0);
    // Four requests at once all answer: php-fpm forks children for them
    // (one per wakeup of its master, so how many depends on timing),
    // within the group's four slots.
    let served = four_at_once(&addr, &herd.dir);
    assert!(!served.is_empty(), "no child served");
    let status = support::fcgi::status_json(&addr, "/status");
    assert_eq!(status["processes"][0]["slots"], 4, "{status}");
    // And stops them once idle again.
    wait_for_group(&addr, "the children stopped", 0);
}

#[test]
fn a_dynamic_php_fpm_group_starts_with_its_start_servers() {
    let dir = Dir::new();
    dir.write("status.php", STATUS);
    let addr = format!("127.0.0.1:{}", support::free_port());
    let extra = "pm = dynamic\npm.start_servers = 1\npm.min_spare_servers = 1\n\
                 pm.max_spare_servers = 1\npm.status_path = /status\n";
    let herd = Herd::start_in(dir, &config(&addr, &php_fpm(), 4, extra));
    herd.wait_ready(1);
    // One child, not pm.max_children of them.
    wait_for_group(&addr, "one PHP process", 1);
    // Four at once still all answer (the group has four slots; php-fpm
    // adds children as its spare-server rules say).
    let served = four_at_once(&addr, &herd.dir);
    assert!(!served.is_empty());
    let (code, out, err) = herd.ctl(&herd.dir.join("ctl.sock"), &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("PHP process"), "{out}");
}

#[test]
fn a_new_generation_starts_with_a_fresh_opcache() {
    let dir = Dir::new();
    dir.write("page.php", "<?php echo 'version 1';");
    let addr = format!("127.0.0.1:{}", support::free_port());
    // Timestamps are not checked: only a new OPcache sees a changed file.
    let extra = "php_admin_value[opcache.validate_timestamps] = 0\n";
    let herd = Herd::start_in(dir, &config(&addr, &php_fpm(), 2, extra));
    herd.wait_ready(1);
    assert_eq!(get(&addr, "/page.php", &herd.dir), "version 1");
    herd.dir.write(
        "page.php",
        "<?php echo 'version 2 (longer, so no same-size trick)';",
    );
    assert_eq!(get(&addr, "/page.php", &herd.dir), "version 1", "cached");
    let socket = herd.dir.join("ctl.sock");
    let (code, out, err) = herd.ctl(&socket, &["reload", "--force", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        get(&addr, "/page.php", &herd.dir),
        "version 2 (longer, so no same-size trick)"
    );
}

#[test]
fn fastcgi_finish_request_answers_before_the_work_after_it() {
    let dir = Dir::new();
    let marker = dir.shared("out").join("done");
    dir.write(
        "finish.php",
        &format!(
            "<?php echo 'sent early'; fastcgi_finish_request(); sleep(2); file_put_contents('{}', 'x');",
            marker.display()
        ),
    );
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start_in(dir, &config(&addr, &php_fpm(), 2, ""));
    herd.wait_ready(1);
    let started = Instant::now();
    assert_eq!(get(&addr, "/finish.php", &herd.dir), "sent early");
    let took = started.elapsed();
    assert!(
        !marker.exists(),
        "the response came after the work that follows it ({took:?})"
    );
    assert!(took < Duration::from_millis(1500), "{took:?}");
    // The next request goes to the group's other, idle process, not to the
    // one still at work after its response (as nginx's new connection to
    // php-fpm would be accepted by an idle child).
    herd.dir.write("fast.php", "<?php echo 'fast';");
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(get(&addr, "/fast.php", &herd.dir), "fast");
        let took = started.elapsed();
        assert!(
            !marker.exists() && took < Duration::from_millis(1500),
            "a request waited {took:?} behind another's post-response work"
        );
    }
    wait_for(
        "the work after the response",
        Duration::from_secs(10),
        || marker.exists().then_some(()),
    );
}

/// php-fpm's own figures for each child, read from the group's status
/// page: a child still at work after `fastcgi_finish_request()` (nothing
/// herd routed is in flight on it) shows as busy with that script, the
/// other as idle, each with the requests it served; the child php-fpm keeps
/// to answer that page is not counted among the group's processes.
#[test]
fn status_shows_what_php_fpm_says_each_child_does() {
    let dir = Dir::new();
    let (release, done) = write_finishing_scripts(&dir);
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start_in(
        dir,
        &config(&addr, &php_fpm(), 2, "pm.status_path = /status\n"),
    );
    herd.wait_ready(1);
    assert_eq!(get(&addr, "/fast.php", &herd.dir), "fast");
    assert_eq!(get(&addr, "/finish.php", &herd.dir), "sent early");
    // php-fpm says "Running" until the connection the response went out
    // on is closed, then "Finishing" until the script ends: wait for that,
    // so the views below are taken in the same state.
    let members = wait_for("php-fpm to say a child is finishing", LIMIT, || {
        let status = support::fcgi::status_json(&addr, "/status");
        let procs = status["processes"].as_array()?.clone();
        let members = procs.first()?["group processes"].as_array()?.clone();
        members
            .iter()
            .any(|m| m["engine"]["state"] == "Finishing")
            .then_some(members)
    });
    assert_eq!(
        members.len(),
        2,
        "the status child is not one of the group: {members:?}"
    );
    let busy: Vec<_> = members
        .iter()
        .filter(|m| m["engine"]["state"] != "Idle")
        .collect();
    assert_eq!(busy.len(), 1, "{members:?}");
    let e = &busy[0]["engine"];
    assert_eq!(e["request uri"], "/finish.php", "{members:?}");
    assert!(
        e["script"].as_str().unwrap().ends_with("/finish.php"),
        "{members:?}"
    );
    let idle = members
        .iter()
        .find(|m| m["engine"]["state"] == "Idle")
        .expect("an idle child");
    let served: u64 = members
        .iter()
        .map(|m| m["engine"]["requests"].as_u64().unwrap())
        .sum();
    assert!(served >= 1, "{members:?}");
    assert!(idle["rss"].as_u64().unwrap() > 0, "{members:?}");
    // herd ctl status names the busy child and its request.
    let (code, out, err) = herd.ctl(&herd.dir.join("ctl.sock"), &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 PHP processes (1 "), "{out}");
    let line = format!("{} {}", busy[0]["pid"], e["state"].as_str().unwrap());
    assert!(
        out.contains(&line) && out.contains("GET /finish.php"),
        "{line:?} in:\n{out}"
    );
    // OpenMetrics counts the children by php-fpm's state, on the status
    // page and in `herd ctl metrics`.
    let busy_line = format!(
        "herd_php_engine_processes{{pool=\"www\",generation=\"1\",state=\"{}\"}} 1\n",
        e["state"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .replace(' ', "_")
    );
    let idle_line = "herd_php_engine_processes{pool=\"www\",generation=\"1\",state=\"idle\"} 1\n";
    let page = support::fcgi::get(&addr, "/status?openmetrics").body();
    assert!(
        page.contains(&busy_line) && page.contains(idle_line),
        "{busy_line} in:\n{page}"
    );
    let (code, metrics, err) = herd.ctl(&herd.dir.join("ctl.sock"), &["metrics"]);
    assert_eq!(code, 0, "{err}");
    assert!(metrics.contains(&busy_line), "{busy_line} in:\n{metrics}");
    std::fs::write(&release, "go").unwrap();
    wait_for("the work after the response", LIMIT, || {
        done.exists().then_some(())
    });
    // Once it ends, php-fpm says the child is idle again.
    wait_for("both children idle", LIMIT, || {
        let status = support::fcgi::status_json(&addr, "/status");
        let members = status["processes"][0]["group processes"]
            .as_array()?
            .clone();
        members
            .iter()
            .all(|m| m["engine"]["state"] == "Idle")
            .then_some(())
    });
}

/// A script that answers, calls `fastcgi_finish_request()` and works on
/// until the test writes `out/release` (at most 20 s), then writes
/// `out/done`; and a fast one. Returns (release, done).
fn write_finishing_scripts(dir: &Dir) -> (std::path::PathBuf, std::path::PathBuf) {
    let out = dir.shared("out");
    let (release, done) = (out.join("release"), out.join("done"));
    dir.write(
        "finish.php",
        &format!(
            "<?php echo 'sent early'; fastcgi_finish_request();\n\
             $until = microtime(true) + 20;\n\
             while (!file_exists('{release}') && microtime(true) < $until) {{ usleep(10000); clearstatcache(); }}\n\
             file_put_contents('{done}', 'x');",
            release = release.display(),
            done = done.display()
        ),
    );
    dir.write("fast.php", "<?php echo 'fast';");
    (release, done)
}

/// nginx on `root` passing PHP to `upstream` over kept connections
/// (`keepalive` + `fastcgi_keep_conn on`), as a tuned production nginx does.
fn nginx_keeping_connections(root: &std::path::Path, upstream: &str) -> Nginx {
    Nginx::start(
        root,
        &format!("upstream php {{\n server {upstream};\n keepalive 8;\n}}"),
        "location ~ \\.php$ {\n include /etc/nginx/fastcgi_params;\n\
         fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;\n\
         fastcgi_keep_conn on;\n fastcgi_pass php;\n}",
    )
}

#[test]
fn behind_nginx_keepalive_no_request_waits_for_work_after_fastcgi_finish_request() {
    // php-fpm behind nginx with kept connections, side by side: nginx sends
    // the next request on the connection it just got a response on, whose
    // child is still running the script's work after
    // `fastcgi_finish_request()`, and the request waits for that work. The
    // reason herd opens a new connection to its engine for each request.
    let fpm_root = Dir::new();
    let (fpm_release, fpm_done) = write_finishing_scripts(&fpm_root);
    let fpm = support::php_fpm::PhpFpm::start(fpm_root.path(), 2, "");
    let nginx = nginx_keeping_connections(fpm_root.path(), &fpm.addr);
    assert_eq!(
        nginx.get_within("/finish.php", LIMIT),
        (200, "sent early".into())
    );
    let waited = nginx.try_get("/fast.php", Duration::from_secs(2));
    assert!(
        waited.is_err() && !fpm_done.exists(),
        "php-fpm behind nginx keep-alive answered a request while the child \
         it was sent to still worked after its response: {waited:?}"
    );
    std::fs::write(&fpm_release, "go").unwrap();
    wait_for("php-fpm's post-response work", LIMIT, || {
        fpm_done.exists().then_some(())
    });
    drop(nginx);
    drop(fpm);

    // herd with php-fpm as its engine, the same nginx in front: the next
    // request goes to the idle child, every time.
    let dir = Dir::new();
    let (release, done) = write_finishing_scripts(&dir);
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start_in(dir, &config(&addr, &php_fpm(), 2, ""));
    herd.wait_ready(1);
    let nginx = nginx_keeping_connections(herd.dir.path(), &addr);
    assert_eq!(
        nginx.get_within("/finish.php", LIMIT),
        (200, "sent early".into())
    );
    for i in 0..3 {
        assert_eq!(
            nginx.try_get("/fast.php", LIMIT),
            Ok((200, "fast".into())),
            "request {i} after the early response"
        );
    }
    assert!(
        !done.exists(),
        "the work after the response ended before the test let it"
    );
    std::fs::write(&release, "go").unwrap();
    wait_for("herd's post-response work", LIMIT, || {
        done.exists().then_some(())
    });
    assert!(herd.running());
}

/// A script that says it started (`out/started`) and answers once the test
/// writes `out/go` (at most 20 s later); and a fast one. Returns (started,
/// go).
fn write_holding_scripts(dir: &Dir) -> (std::path::PathBuf, std::path::PathBuf) {
    let out = dir.shared("out");
    let (started, go) = (out.join("started"), out.join("go"));
    dir.write(
        "hold.php",
        &format!(
            "<?php file_put_contents('{started}', 'x');\n\
             $until = microtime(true) + 20;\n\
             while (!file_exists('{go}') && microtime(true) < $until) {{ usleep(10000); clearstatcache(); }}\n\
             echo 'held';",
            started = started.display(),
            go = go.display()
        ),
    );
    dir.write("fast.php", "<?php echo 'fast';");
    (started, go)
}

type Answer = Result<(u16, String), String>;

/// Through `nginx`: `/hold.php` until it started, then `/fast.php` (given
/// `second_within` to answer) until `queued` says where it waits, then lets
/// the first go on. Returns both answers.
fn hold_one_send_another(
    nginx: &Nginx,
    (started, go): (&std::path::Path, &std::path::Path),
    second_within: Duration,
    (waits, queued): (&str, &(dyn Fn() -> bool + Sync)),
) -> (Answer, Answer) {
    thread::scope(|s| {
        let held = s.spawn(|| nginx.try_get("/hold.php", LIMIT));
        wait_for("hold.php to start", LIMIT, || {
            started.exists().then_some(())
        });
        let second = s.spawn(|| nginx.try_get("/fast.php", second_within));
        wait_for(waits, LIMIT, || queued().then_some(()));
        std::fs::write(go, "go").unwrap();
        (held.join().unwrap(), second.join().unwrap())
    })
}

#[test]
fn behind_nginx_keepalive_a_request_past_the_kept_connections_is_answered() {
    // php-fpm with one child behind nginx keeping connections, side by
    // side: while the child serves a request on the connection nginx kept,
    // a second request comes on a second connection and waits in php-fpm's
    // accept queue; the child, done, goes back to reading the kept
    // connection, and the second request waits until nginx closes that one
    // (keepalive_timeout, or fastcgi_read_timeout's 504: a minute by
    // default). The same with more connections than children, under load.
    let fpm_root = Dir::new();
    let (started, go) = write_holding_scripts(&fpm_root);
    let fpm = support::php_fpm::PhpFpm::start(fpm_root.path(), 1, "");
    let port: u16 = fpm.addr.rsplit(':').next().unwrap().parse().unwrap();
    let nginx = nginx_keeping_connections(fpm_root.path(), &fpm.addr);
    assert_eq!(nginx.get_within("/fast.php", LIMIT), (200, "fast".into()));
    let (held, second) = hold_one_send_another(
        &nginx,
        (&started, &go),
        Duration::from_secs(3),
        ("a second connection in php-fpm's queue", &|| {
            support::tcp_accept_queue(port) > 0
        }),
    );
    assert_eq!(held, Ok((200, "held".into())));
    assert!(
        second.is_err(),
        "php-fpm answered a request on nginx's second connection while its \
         only child had gone back to the first: {second:?}"
    );
    drop(nginx);
    drop(fpm);

    // herd with php-fpm as its engine, one child, the same nginx in front:
    // the second request waits in herd's queue and is answered as soon as
    // the child is free, whichever connection of nginx's it came on.
    let dir = Dir::new();
    let (started, go) = write_holding_scripts(&dir);
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start_in(
        dir,
        &config(&addr, &php_fpm(), 1, "pm.status_path = /status\n"),
    );
    herd.wait_ready(1);
    let nginx = nginx_keeping_connections(herd.dir.path(), &addr);
    assert_eq!(nginx.get_within("/fast.php", LIMIT), (200, "fast".into()));
    let (held, second) = hold_one_send_another(
        &nginx,
        (&started, &go),
        LIMIT,
        ("the second request in herd's queue", &|| {
            support::fcgi::status_json(&addr, "/status")["listen queue"] == 1
        }),
    );
    assert_eq!(held, Ok((200, "held".into())));
    assert_eq!(second, Ok((200, "fast".into())));
    assert!(herd.running());
}

/// A script that writes part of its page, flushes, and waits for the test
/// to let it go on (`go`), telling it when it flushed (`flushed`).
fn write_flushing_script(dir: &Dir) -> (std::path::PathBuf, std::path::PathBuf) {
    let flushed = dir.shared("out").join("flushed");
    let go = dir.shared("out").join("go");
    dir.write(
        "flush.php",
        &format!(
            "<?php while (ob_get_level()) ob_end_flush(); echo str_repeat('a', 8000), 'first'; flush(); \
             touch('{flushed}'); $t = microtime(true); \
             while (!file_exists('{go}') && microtime(true) - $t < 60) usleep(10000); echo ' second';",
            flushed = flushed.display(),
            go = go.display()
        ),
    );
    (flushed, go)
}

fn flush_request(conn: &mut fcgi::Conn, dir: &Dir) {
    let file = dir.join("flush.php");
    conn.send(&fcgi::request_bytes(
        1,
        "/flush.php",
        false,
        &[("SCRIPT_FILENAME", file.to_str().unwrap())],
        b"",
    ));
}

/// A PHP process's response is held until it hangs up, and goes to the
/// client whole: the part the script flushed does not leave herd while the
/// script works on.
fn held_until_the_child_hangs_up(command: &str, extra: &str) {
    let dir = Dir::new();
    let (flushed, go) = write_flushing_script(&dir);
    let addr = format!("127.0.0.1:{}", support::free_port());
    let extra = format!("response.hold = 60s\n{extra}");
    let herd = Herd::start_in(dir, &config(&addr, command, 2, &extra));
    herd.wait_ready(1);
    let mut conn = fcgi::Conn::open(&addr);
    flush_request(&mut conn, &herd.dir);
    wait_for(
        "the script to flush its first part",
        Duration::from_secs(20),
        || flushed.exists().then_some(()),
    );
    // Relayed as it came, the first part would be here within
    // milliseconds; held, nothing comes while the script waits.
    conn.set_read_timeout(Duration::from_millis(500));
    let mut byte = [0u8; 1];
    let early = std::io::Read::read(&mut conn.stream, &mut byte);
    assert!(
        matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "part of the response left herd before the child hung up: {early:?}"
    );
    std::fs::write(&go, "go").unwrap();
    conn.set_read_timeout(Duration::from_secs(30));
    let reply = conn.reply(1).expect("the whole response");
    assert!(reply.body().ends_with("first second"), "{}", reply.text());
}

/// Responses held until the child hangs up arrive whole and in order at
/// every size around the reads herd makes of them (16 KiB and up) and past
/// the size from which they stream instead.
#[test]
fn held_responses_arrive_whole_at_every_size() {
    let dir = Dir::new();
    dir.write(
        "size.php",
        "<?php $n = (int)$_GET['n']; \
         echo substr(str_repeat('abcdefghijklmnopqrstuvwxyz0123456789', intdiv($n, 36) + 1), 0, $n);",
    );
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start_in(dir, &config(&addr, &php_fpm(), 2, ""));
    herd.wait_ready(1);
    let pattern = "abcdefghijklmnopqrstuvwxyz0123456789";
    for n in [
        0, 1, 8191, 8192, 16383, 16384, 16385, 27440, 32768, 40000, 65535, 65536, 70000, 200_000,
    ] {
        let body = get(&addr, &format!("/size.php?n={n}"), &herd.dir);
        let want: String = pattern.chars().cycle().take(n).collect();
        assert_eq!(body.len(), n, "size {n}");
        assert!(
            body == want,
            "size {n}: the body differs from what the script wrote"
        );
    }
}

#[test]
fn a_php_fpm_response_is_held_until_the_child_hangs_up() {
    held_until_the_child_hangs_up(&php_fpm(), "");
}

#[test]
fn a_php_cgi_group_response_is_held_until_the_child_hangs_up() {
    held_until_the_child_hangs_up(&php_cgi(), "php.group_size = 2\n");
}

/// A response whose script flushed and works on past `response.hold` is
/// relayed as it comes from then on: the first part reaches the client
/// while the script still waits. One past 64K streams, and arrives whole.
#[test]
fn a_php_fpm_response_still_running_past_its_hold_streams() {
    let dir = Dir::new();
    let (_, go) = write_flushing_script(&dir);
    dir.write(
        "big.php",
        "<?php for ($i = 0; $i < 8192; $i++) echo str_pad((string)$i, 127, '.'), \"\\n\";",
    );
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start_in(
        dir,
        &config(&addr, &php_fpm(), 1, "response.hold = 200ms\n"),
    );
    herd.wait_ready(1);
    let mut conn = fcgi::Conn::open(&addr);
    flush_request(&mut conn, &herd.dir);
    let mut stdout = Vec::new();
    while !String::from_utf8_lossy(&stdout).contains("first") {
        let frame = conn
            .next_frame()
            .expect("the first part while the script still runs");
        match frame.record_type() {
            herd::fastcgi::record::STDOUT => stdout.extend_from_slice(frame.content()),
            herd::fastcgi::record::END_REQUEST => {
                panic!("the response ended before its first part came")
            }
            _ => {}
        }
    }
    assert!(
        !go.exists() && !String::from_utf8_lossy(&stdout).contains("second"),
        "the first part came with the rest"
    );
    std::fs::write(&go, "go").unwrap();
    let rest = conn.reply(1).expect("the rest of the response");
    stdout.extend_from_slice(&rest.stdout);
    assert!(String::from_utf8_lossy(&stdout).ends_with("first second"));

    let body = get(&addr, "/big.php", &herd.dir);
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 8192, "a 1 MiB response arrives whole");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line.trim_end_matches('.'), i.to_string());
    }
}

/// With `catch_workers_output = yes`, what a php-fpm child writes to its
/// stderr reaches herd's log, as php-fpm writes it to its own. (Unset, the
/// engine's default is php-fpm's `no`: see the config's unit tests.)
#[test]
fn a_php_fpm_childs_stderr_reaches_herds_log_when_its_output_is_caught() {
    let dir = Dir::new();
    dir.write(
        "say.php",
        "<?php file_put_contents('php://stderr', 'said on stderr: ' . $_GET['n'] . \"\\n\"); echo 'ok';",
    );
    let addr = format!("127.0.0.1:{}", support::free_port());
    let caught = config(&addr, &php_fpm(), 2, "catch_workers_output = yes\n");
    let herd = Herd::start_in(dir, &caught);
    herd.wait_ready(1);
    assert_eq!(get(&addr, "/say.php?n=17", &herd.dir), "ok");
    herd.wait_log("said on stderr: 17", 1, Duration::from_secs(10));
}

#[test]
fn an_engine_that_cannot_start_is_refused_in_its_own_words() {
    let dir = Dir::new();
    dir.write("status.php", STATUS);
    let addr = format!("127.0.0.1:{}", support::free_port());
    let good = config(&addr, &php_fpm(), 2, "rollout.max_failures = 1\n");
    let herd = Herd::start_in(dir, &good);
    herd.wait_ready(1);
    let (pid, ..) = parse(&get(&addr, "/status.php", &herd.dir));
    // php-fpm fails at start: it cannot write this pid file.
    let broken = config(
        &addr,
        &php_fpm(),
        2,
        "rollout.max_failures = 1\nargs = --pid /nonexistent/dir/fpm.pid\n",
    );
    herd.rewrite_config(&broken);
    let socket = herd.dir.join("ctl.sock");
    let (code, out, err) = herd.ctl(&socket, &["reload", "--wait"]);
    assert_eq!(code, 1, "{out}{err}");
    let said = format!("{out}{err}");
    assert!(said.contains("Unable to create the PID file"), "{said}");
    // The old group serves on, the same processes.
    let (again, ..) = parse(&get(&addr, "/status.php", &herd.dir));
    let group_of = |p: u32| std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap();
    assert!(
        again == pid || group_of(again).contains("php-fpm"),
        "{pid} then {again}"
    );
}
