//! The supervisor and the master's lifecycle: recycling workers, a worker
//! dying mid-request, a worker program that crashes at start, workers
//! dying with the master, the stop signals, and workers' output.

mod support;

use std::io::ErrorKind;
use std::thread;
use std::time::{Duration, Instant};

use support::fcgi::{self, Conn, Reply};
use support::{Herd, alive, example_pool, user_line, wait_for};

/// A GET on a fresh connection that must be answered within `limit`
/// (a hang fails the test instead of blocking it); returns the reply and
/// how long it took.
fn get_within(addr: &str, uri: &str, limit: Duration) -> (Reply, Duration) {
    let started = Instant::now();
    let mut c = Conn::open(addr);
    c.set_read_timeout(limit);
    c.send(&fcgi::request_bytes(1, uri, false, &[], b""));
    let reply = c
        .reply(1)
        .unwrap_or_else(|| panic!("connection closed without a reply to {uri}"));
    (reply, started.elapsed())
}

/// `100ms`, `1.6s` (a Duration's Debug form) in milliseconds.
fn millis(text: &str) -> f64 {
    if let Some(ms) = text.strip_suffix("ms") {
        ms.parse().unwrap()
    } else if let Some(us) = text.strip_suffix("µs") {
        us.parse::<f64>().unwrap() / 1000.0
    } else if let Some(s) = text.strip_suffix('s') {
        s.parse::<f64>().unwrap() * 1000.0
    } else {
        panic!("not a duration: {text}")
    }
}

fn all_gone(pids: &[u32]) -> Option<()> {
    pids.iter().all(|&p| !alive(p)).then_some(())
}

#[test]
fn pm_max_requests_retires_a_worker_after_that_many_requests() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start(&example_pool(&addr, 1, "pm.max_requests = 2\n"));
    herd.wait_ready(1);
    let limit = Duration::from_secs(10);
    let first = get_within(&addr, "/1", limit).0.pid();
    assert_eq!(get_within(&addr, "/2", limit).0.pid(), first);
    let third = get_within(&addr, "/3", limit).0;
    assert_eq!(third.status(), 200);
    assert_ne!(third.pid(), first, "the third request goes to a new worker");
    let retired = herd.wait_log("retiring worker", 1, Duration::from_secs(5));
    assert!(
        retired[0].contains("max_requests") && retired[0].contains(&format!("pid={first}")),
        "{retired:?}"
    );
    wait_for(
        &format!("retired worker {first} to exit"),
        Duration::from_secs(5),
        || (!alive(first)).then_some(()),
    );
}

#[test]
fn a_worker_dying_mid_request_gets_the_client_a_502_and_is_replaced() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start(&example_pool(&addr, 1, ""));
    herd.wait_ready(1);
    let old = get_within(&addr, "/", Duration::from_secs(10)).0.pid();

    // A request with a body is never sent twice: its worker dies, it gets 502.
    let started = Instant::now();
    let mut c = Conn::open(&addr);
    c.set_read_timeout(Duration::from_secs(5));
    c.send(&fcgi::request_bytes(1, "/?exit=3", false, &[], b"a body"));
    let reply = c.reply(1).expect("a reply, not a closed connection");
    let took = started.elapsed();
    assert_eq!(reply.status(), 502, "{}", reply.text());
    assert!(took < Duration::from_secs(3), "the 502 took {took:?}");
    let exits = herd.wait_log("code 3", 1, Duration::from_secs(5));
    assert!(exits[0].contains(&format!("pid={old}")), "{exits:?}");

    let (next, _) = get_within(&addr, "/", Duration::from_secs(10));
    assert_eq!(next.status(), 200, "{}", next.text());
    assert_ne!(next.pid(), old, "served by a respawned worker");
    assert!(!alive(old));

    // A GET whose every worker dies (it may be retried once): still a
    // prompt 502, never a hang.
    let (reply, took) = get_within(&addr, "/?exit=3", Duration::from_secs(5));
    assert_eq!(reply.status(), 502, "{}", reply.text());
    assert!(took < Duration::from_secs(3), "the 502 took {took:?}");
    let (after, _) = get_within(&addr, "/", Duration::from_secs(10));
    assert_eq!(after.status(), 200, "{}", after.text());
    assert!(herd.running());
}

#[test]
fn a_worker_program_that_exits_at_once_backs_off_and_requests_get_503() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start(&format!(
        "[global]\nerror_log = {{dir}}/herd.log\n\
         [broken]\nlisten = {addr}\npm = static\npm.max_children = 1\n\
         command = /bin/false\n{}",
        user_line()
    ));
    herd.wait_log("worker spawned", 1, Duration::from_secs(10));
    let master = herd.pid();
    let ticks_before = support::cpu_ticks(master);
    let window = Instant::now();
    // An observation window, not a wait for readiness: what the master
    // does with a crash-looping pool over three seconds.
    thread::sleep(Duration::from_secs(3));
    let ticks = support::cpu_ticks(master) - ticks_before;
    let watched = window.elapsed();

    let spawns = herd.log_lines("worker spawned");
    assert!(
        spawns.len() <= 7,
        "{} spawns in {watched:?}: no backoff?\n{}",
        spawns.len(),
        herd.log_text()
    );
    assert!(
        ticks < 30,
        "the master used {ticks} clock ticks of CPU in {watched:?} of crash loop"
    );
    // The spawns themselves come further and further apart.
    let at: Vec<f64> = spawns.iter().map(|l| log_seconds(l)).collect();
    let gaps: Vec<f64> = at.windows(2).map(|w| (w[1] - w[0]) * 1000.0).collect();
    assert!(gaps.len() >= 3, "{}", herd.log_text());
    assert!(
        gaps[0] >= 90.0 && gaps.windows(2).all(|w| w[1] >= 1.5 * w[0]),
        "spawn gaps in ms grow from 100: {gaps:?}"
    );

    // No worker can start: a request is refused at once, not left waiting.
    let reply = wait_for(
        "a request to the broken pool to get 503",
        Duration::from_secs(5),
        || {
            let (reply, took) = get_within(&addr, "/", Duration::from_secs(3));
            assert!(took < Duration::from_secs(2), "the answer took {took:?}");
            (reply.status() == 503).then_some(reply)
        },
    );
    assert_eq!(reply.status(), 503);
    assert!(herd.running());
    herd.wait_log(
        "503 for GET /: no worker can start",
        1,
        Duration::from_secs(5),
    );

    // And the log says so: every failed start with the delay before the
    // next attempt.
    let delays: Vec<f64> = herd
        .log_lines("respawning in ")
        .iter()
        .map(|l| {
            let after = l.split("respawning in ").nth(1).unwrap();
            millis(after.split_whitespace().next().unwrap())
        })
        .collect();
    assert!(
        delays.len() >= 3 && delays[..3] == [100.0, 200.0, 400.0],
        "each failed start is logged with the delay before the next \
         (respawning in 100ms, 200ms, 400ms, ...); got {delays:?}:\n{}",
        herd.log_text()
    );
    assert!(
        delays.windows(2).all(|w| w[1] > w[0]),
        "the delay grows: {delays:?}"
    );
}

/// The time of day of a log line's timestamp, in seconds.
fn log_seconds(line: &str) -> f64 {
    let stamp = line.split_whitespace().next().unwrap();
    let time = stamp.split('T').nth(1).unwrap().trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next().unwrap().parse().unwrap();
    let m: f64 = parts.next().unwrap().parse().unwrap();
    let s: f64 = parts.next().unwrap().parse().unwrap();
    h * 3600.0 + m * 60.0 + s
}

#[test]
fn workers_die_with_the_master_even_on_sigkill() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let mut herd = Herd::start(&example_pool(&addr, 2, ""));
    herd.wait_ready(2);
    let workers = herd.worker_pids();
    assert_eq!(workers.len(), 2);
    herd.signal(libc::SIGKILL);
    assert_eq!(
        herd.wait_exit(Duration::from_secs(5)),
        None,
        "killed by a signal"
    );
    wait_for(
        &format!("workers {workers:?} to die with the master"),
        Duration::from_secs(5),
        || all_gone(&workers),
    );
}

#[test]
fn sigterm_stops_everything_and_removes_the_socket_file() {
    let mut herd = Herd::start(&example_pool("{dir}/app.sock", 2, ""));
    herd.wait_ready(2);
    let sock = herd.dir.join("app.sock");
    assert_eq!(fcgi::get(sock.to_str().unwrap(), "/").status(), 200);
    let workers = herd.worker_pids();
    herd.signal(libc::SIGTERM);
    let code = herd.wait_exit(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{}", herd.log_text());
    wait_for(
        &format!("workers {workers:?} to exit"),
        Duration::from_secs(5),
        || all_gone(&workers),
    );
    assert!(!sock.exists(), "{} is left behind", sock.display());
}

/// During a graceful stop, a new connection is either refused or, if the
/// kernel accepted it before the listener closed, served in full; never
/// accepted and then dropped. Returns true once it is refused.
fn refused_or_served(addr: &str) -> bool {
    match fcgi::try_connect(addr) {
        Err(e) => {
            let refused = e.kind() == ErrorKind::ConnectionRefused
                || (addr.contains('/') && e.kind() == ErrorKind::NotFound);
            assert!(refused, "connecting to {addr} during a graceful stop: {e}");
            true
        }
        Ok(stream) => {
            let mut c = Conn::from_stream(stream);
            c.set_read_timeout(Duration::from_secs(5));
            c.send(&fcgi::request_bytes(1, "/late", false, &[], b""));
            let reply = c.reply(1).unwrap_or_else(|| {
                panic!("{addr}: a connection accepted during the graceful stop was dropped")
            });
            assert_eq!(reply.status(), 200, "{}", reply.text());
            false
        }
    }
}

#[test]
fn sigquit_finishes_requests_in_flight_and_refuses_new_connections() {
    let port = support::free_port();
    let tcp = format!("127.0.0.1:{port}");
    let user = user_line();
    let mut herd = Herd::start(&format!(
        "[global]\nerror_log = {{dir}}/herd.log\n\
         [tcp]\nlisten = {tcp}\npm = static\npm.max_children = 2\n\
         command = {{herd}}\nargs = example-app\n{user}\
         [unix]\nlisten = {{dir}}/app.sock\npm = static\npm.max_children = 1\n\
         command = {{herd}}\nargs = example-app\n{user}"
    ));
    herd.wait_ready(3);
    let sock = herd.dir.join("app.sock");
    let unix = sock.to_str().unwrap().to_string();
    let workers = herd.worker_pids();

    let mut slow = Conn::open(&tcp);
    slow.set_read_timeout(Duration::from_secs(10));
    slow.send(&fcgi::request_bytes(1, "/?ms=1500", false, &[], b""));
    let sent = Instant::now();
    let in_flight = thread::spawn(move || (slow.reply(1), sent.elapsed()));
    // Where /proc tells, wait until a worker is sleeping in the request.
    wait_for(
        "the slow request to reach a worker",
        Duration::from_secs(2),
        || {
            workers
                .iter()
                .any(|&p| support::in_sleep_syscall(p) != Some(false))
                .then_some(())
        },
    );

    herd.signal(libc::SIGQUIT);
    wait_for(
        "the TCP listener to refuse connections",
        Duration::from_secs(3),
        || refused_or_served(&tcp).then_some(()),
    );
    wait_for(
        "the unix listener to refuse connections",
        Duration::from_secs(3),
        || refused_or_served(&unix).then_some(()),
    );
    assert!(!sock.exists(), "the socket file is removed first");

    let (reply, took) = in_flight.join().unwrap();
    let reply = reply.expect("the request in flight was finished, not dropped");
    assert_eq!(reply.status(), 200, "{}", reply.text());
    assert!(took >= Duration::from_millis(1500));
    let code = herd.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{}", herd.log_text());
    wait_for(
        &format!("workers {workers:?} to exit"),
        Duration::from_secs(5),
        || all_gone(&workers),
    );
}

#[test]
fn catch_workers_output_logs_what_workers_write_and_relays_fcgi_stderr() {
    let port = support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let quiet_port = support::free_port();
    let user = user_line();
    // A worker program that writes to its real stderr before it serves:
    // the shell hands fd 0 (the listening socket) on to example-app.
    let herd = Herd::start(&format!(
        "[global]\nerror_log = {{dir}}/herd.log\n\
         [caught]\nlisten = {addr}\npm = static\npm.max_children = 1\n\
         command = /bin/sh\n\
         args = -c 'echo caught-line-from-worker >&2 && exec {{herd}} example-app'\n{user}\
         [quiet]\nlisten = 127.0.0.1:{quiet_port}\npm = static\npm.max_children = 1\n\
         catch_workers_output = no\ncommand = /bin/sh\n\
         args = -c 'echo quiet-line-from-worker >&2 && exec {{herd}} example-app'\n{user}"
    ));
    herd.wait_ready(2);
    let pids = herd.worker_pids();
    let said = herd.wait_log("caught-line-from-worker", 1, Duration::from_secs(5));
    assert!(said[0].contains("pool=caught"), "{said:?}");
    assert!(
        pids.iter().any(|p| said[0].contains(&format!("pid={p}"))),
        "names the worker: {said:?}"
    );

    // FCGI_STDERR from the application goes to the client as FCGI_STDERR.
    let (reply, _) = get_within(
        &addr,
        "/?stderr=oops-on-fcgi-stderr",
        Duration::from_secs(10),
    );
    assert_eq!(reply.status(), 200, "{}", reply.text());
    assert_eq!(
        String::from_utf8_lossy(&reply.stderr),
        "oops-on-fcgi-stderr"
    );
    assert!(!reply.text().contains("oops"), "not mixed into stdout");

    // catch_workers_output = no: the quiet worker wrote its line before it
    // became ready, and it went nowhere.
    let (quiet, _) = get_within(
        &format!("127.0.0.1:{quiet_port}"),
        "/",
        Duration::from_secs(10),
    );
    assert_eq!(quiet.status(), 200);
    assert!(
        herd.log_lines("quiet-line-from-worker").is_empty(),
        "{}",
        herd.log_text()
    );
}

/// Copies `binary` and the shared libraries `ldd` names into `root`, so
/// it runs chrooted there.
fn chroot_tree(root: &std::path::Path, binary: &std::path::Path) -> std::path::PathBuf {
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .expect("ldd");
    let libs: Vec<std::path::PathBuf> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(std::path::PathBuf::from)
        .collect();
    for lib in libs.iter().chain(std::iter::once(&binary.to_path_buf())) {
        let dest = root.join(lib.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(lib, &dest).unwrap();
    }
    for dir in std::fs::read_dir(root).unwrap().flatten() {
        let _ = std::process::Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(dir.path())
            .status();
    }
    std::path::PathBuf::from("/").join(binary.strip_prefix("/").unwrap())
}

#[test]
fn workers_run_chrooted_in_chdir_when_asked() {
    if !support::is_root() {
        return support::skip("not root: chroot needs root");
    }
    let dir = support::Dir::new();
    let root = dir.join("jail");
    std::fs::create_dir_all(root.join("srv")).unwrap();
    let inside = chroot_tree(&root, std::path::Path::new(support::HERD));
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start_in(
        dir,
        &format!(
            "[global]\nerror_log = {{dir}}/herd.log\n\
             [jail]\nlisten = {addr}\npm = static\npm.max_children = 1\n\
             chroot = {{dir}}/jail\nchdir = /srv\ncommand = {}\nargs = example-app\n{}",
            inside.display(),
            support::user_line()
        ),
    );
    let pid = herd.wait_ready(1)[0];
    assert_eq!(fcgi::get(&addr, "/").status(), 200);
    // The kernel says where the worker's root and working directory are.
    let jail = std::fs::canonicalize(herd.dir.join("jail")).unwrap();
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/root")).unwrap(),
        jail
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        jail.join("srv")
    );
}

#[test]
fn workers_get_the_supplementary_groups_of_their_user() {
    if !support::is_root() {
        return support::skip("not root: herd cannot switch users");
    }
    // `user = nobody` with `group = daemon`: the worker's groups are exactly
    // its primary group plus the user's own supplementary groups (none for
    // nobody) — not the root master's.
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start(&format!(
        "[global]\nerror_log = {{dir}}/herd.log\n\
         [g]\nlisten = {addr}\npm = static\npm.max_children = 1\ncommand = {{herd}}\nargs = example-app\nuser = nobody\ngroup = daemon\n"
    ));
    let pid = herd.wait_ready(1)[0];
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap()
            .to_string()
    };
    let daemon = nix::unistd::Group::from_name("daemon")
        .unwrap()
        .unwrap()
        .gid
        .as_raw()
        .to_string();
    assert!(
        line("Gid:").split_whitespace().skip(1).all(|g| g == daemon),
        "{}",
        line("Gid:")
    );
    assert_eq!(
        line("Groups:")
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>(),
        vec![daemon.as_str()],
        "{}",
        line("Groups:")
    );
}

#[test]
fn a_worker_killed_after_serving_is_replaced_at_once_one_killed_before_backs_off() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start(&example_pool(&addr, 1, ""));
    // Three times: the worker serves a request, then dies of SIGKILL well
    // within worker.min_lifetime (5 s). It worked: no failure, no backoff.
    for round in 1..=3 {
        let pid = *herd.wait_ready(round).last().unwrap();
        assert_eq!(fcgi::get(&addr, "/served").status(), 200);
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let line = herd.wait_log("respawning", round, Duration::from_secs(10))[round - 1].clone();
        assert!(
            line.contains(&format!("pid={pid}")) && line.contains("1 requests; respawning"),
            "replaced at once, not backed off: {line}"
        );
    }
    // Killed before it served anything: a failure, the respawn backs off.
    let pid = *herd.wait_ready(4).last().unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let line = herd.wait_log("respawning", 4, Duration::from_secs(10))[3].clone();
    assert!(
        line.contains(&format!("pid={pid}")) && line.contains("respawning in 100ms"),
        "{line}"
    );
    herd.wait_ready(5);
    assert_eq!(fcgi::get(&addr, "/after").status(), 200);
}
