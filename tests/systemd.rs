//! herd under systemd: `Type=notify` (READY=1 once every pool's first
//! workers passed their gate, RELOADING=1 with MONOTONIC_USEC and READY=1
//! again around a reload, STOPPING=1, STATUS=, watchdog pings, MAINPID
//! after `herd ctl upgrade`) and socket activation (`listen =
//! systemd:NAME`), with none of systemd's variables reaching a worker.
//!
//! No systemd runs as PID 1 on the machines this project uses, so the
//! tests play its part: a unix datagram socket in the test's directory is
//! `NOTIFY_SOCKET` (it reads the sender's pid as systemd does), and
//! listening sockets are passed as fds 3, 4, ... with `LISTEN_FDS`,
//! `LISTEN_FDNAMES` and a `LISTEN_PID` that a shell wrapper sets to its
//! own pid before it execs herd. Where `systemd-socket-activate` is
//! installed (it is part of the `systemd` package), one test lets systemd's
//! own code pass the socket; where systemd does run (`/run/systemd/system`),
//! one test starts herd as a transient `Type=notify` service.

mod support;

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::notify::{Message, NotifySocket};
use support::{Dir, HERD, Herd, fcgi, user_line, wait_for};

fn local_addr() -> String {
    format!("127.0.0.1:{}", support::free_port())
}

/// `[global]` with the log and control socket in the test's directory.
fn global(extra: &str) -> String {
    format!("[global]\nerror_log = {{dir}}/herd.log\ncontrol.listen = {{dir}}/ctl.sock\n{extra}")
}

/// A pool of `workers` example-app workers that keep herd's environment
/// (`clear_env = no`), so that a variable herd failed to withhold would
/// reach them.
fn pool(name: &str, listen: &str, workers: u32, extra: &str) -> String {
    format!(
        "[{name}]\nlisten = {listen}\npm = static\npm.max_children = {workers}\n\
         command = {{herd}}\nargs = example-app\nclear_env = no\n{user}{extra}",
        user = user_line()
    )
}

/// `herd run -c CONFIG` with `NOTIFY_SOCKET` set.
fn with_notify(notify: &Path) -> impl FnOnce(&Path) -> Command {
    let notify = notify.to_path_buf();
    move |config| {
        let mut cmd = Command::new(HERD);
        cmd.args(["run", "-c"])
            .arg(config)
            .env("NOTIFY_SOCKET", notify);
        cmd
    }
}

/// herd started through `sh`, which exports `exports` (each `NAME` set to
/// the shell's own pid, `$$`) and then execs herd in the same process: how
/// a test gives herd a `LISTEN_PID` or `WATCHDOG_PID` that is its own pid.
fn via_shell(pid_vars: &[&str], config: &Path) -> Command {
    let exports: String = pid_vars.iter().map(|v| format!("export {v}=$$;")).collect();
    support::herd_via_shell(&exports, config)
}

/// What the worker behind `addr` has in its environment for `name`
/// (empty when unset).
fn worker_env(addr: &str, name: &str) -> String {
    let body = fcgi::get(addr, &format!("/?env={name}")).body();
    body.trim_end()
        .strip_prefix(&format!("{name}="))
        .unwrap_or_else(|| panic!("?env={name} answered {body:?}"))
        .to_string()
}

/// CLOCK_MONOTONIC now, in microseconds, as MONOTONIC_USEC counts.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

fn ready_lines(herd: &Herd, pool: &str, generation: u32) -> usize {
    herd.log_lines("worker ready")
        .iter()
        .filter(|l| l.contains(&format!("pool={pool} ")) || l.ends_with(&format!("pool={pool}")))
        .filter(|l| support::field(l, "generation") == Some(generation))
        .count()
}

// ---- Type=notify -------------------------------------------------------

#[test]
fn notify_ready_after_every_pool_is_ready_reloading_then_ready_and_stopping() {
    let (a, b) = (local_addr(), local_addr());
    // Pool b's warm-up is the slowest: READY=1 must wait for it too.
    let pools = |a_extra: &str| {
        format!(
            "{}{}{}",
            global("shutdown.depool_delay = 1s\n"),
            pool(
                "a",
                &a,
                2,
                &format!("warmup.request[] = /?ms=300\n{a_extra}")
            ),
            pool("b", &b, 1, "warmup.request[] = /?ms=900\n"),
        )
    };
    let dir = Dir::new();
    let mut notify = NotifySocket::bind(&dir.join("notify.sock"));
    let mut herd = Herd::start_with(dir, &pools(""), with_notify(&notify.path));
    let master = herd.pid();

    // READY=1 comes once all three workers are through their gate: when
    // it arrives, the log already has every "worker ready" line.
    let ready = notify.wait("READY=1", Duration::from_secs(20), |m| m.has("READY=1"));
    let ready_now = herd.log_lines("worker ready").len();
    assert_eq!(
        ready_now,
        3,
        "READY=1 came with {ready_now} of 3 workers ready\n{}",
        herd.log_text()
    );
    assert_eq!(ready.pid, Some(master), "sent by the master: {ready:?}");
    let status = ready.value("STATUS").expect("READY=1 comes with STATUS=");
    assert!(
        status.contains("a: generation 1 stable, 2 workers")
            && status.contains("b: generation 1 stable, 1 workers"),
        "{status}"
    );
    assert!(!status.contains('\n'));
    for m in &notify.seen {
        assert!(
            !m.has("RELOADING=1") && !m.has("STOPPING=1"),
            "nothing but start-up messages before READY=1: {:#?}",
            notify.seen
        );
    }

    // No worker sees NOTIFY_SOCKET, though they keep herd's environment.
    for addr in [&a, &b] {
        assert_eq!(
            worker_env(addr, "HERD_TEST"),
            "1",
            "clear_env = no keeps it"
        );
        assert_eq!(worker_env(addr, "NOTIFY_SOCKET"), "");
    }

    // A reload with a new generation of pool a: RELOADING=1 with a
    // MONOTONIC_USEC of now, then READY=1 once pool a's rollout is done.
    herd.rewrite_config(&pools("env[VERSION] = 2\n"));
    herd.signal(libc::SIGUSR2);
    let reloading = notify.wait("RELOADING=1", Duration::from_secs(10), |m| {
        m.has("RELOADING=1")
    });
    let now = monotonic_usec();
    let usec: u64 = reloading
        .value("MONOTONIC_USEC")
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {reloading:?}"))
        .parse()
        .unwrap();
    assert!(
        usec <= now && now - usec < 5_000_000,
        "MONOTONIC_USEC={usec} is CLOCK_MONOTONIC at the reload (now {now})"
    );
    assert!(!reloading.has("READY=1"), "{reloading:?}");
    let ready2 = notify.wait("READY=1 after the reload", Duration::from_secs(20), |m| {
        m.has("READY=1")
    });
    assert_eq!(
        ready_lines(&herd, "a", 2),
        2,
        "READY=1 after the rollout of pool a's generation 2\n{}",
        herd.log_text()
    );
    assert!(
        ready2.at - reloading.at >= Duration::from_millis(300),
        "the new workers' warm-up alone takes 300 ms"
    );
    let status = ready2.value("STATUS").expect("STATUS=");
    assert!(status.contains("a: generation 2 stable"), "{status}");
    assert_eq!(fcgi::get(&a, "/").generation(), 2);

    // A refused reload (a broken config) ends the reload too: READY=1
    // again, so systemd does not wait in "reloading".
    herd.rewrite_config(&format!("{}pm.bogus = 1\n", pools("env[VERSION] = 2\n")));
    herd.signal(libc::SIGUSR2);
    notify.wait(
        "RELOADING=1 (broken config)",
        Duration::from_secs(10),
        |m| m.has("RELOADING=1"),
    );
    notify.wait(
        "READY=1 after the refused reload",
        Duration::from_secs(10),
        |m| m.has("READY=1"),
    );
    herd.wait_log("reload refused", 1, Duration::from_secs(5));

    // SIGQUIT: STOPPING=1 at once, while herd still depools and drains.
    herd.signal(libc::SIGQUIT);
    let stopping = notify.wait("STOPPING=1", Duration::from_secs(5), |m| {
        m.has("STOPPING=1")
    });
    assert!(
        herd.running(),
        "STOPPING=1 is sent when the stop begins, not at the exit"
    );
    assert_eq!(stopping.pid, Some(master));
    assert_eq!(herd.wait_exit(Duration::from_secs(20)), Some(0));
    let after: Vec<&Message> = notify
        .seen
        .iter()
        .filter(|m| m.at > stopping.at && m.has("READY=1"))
        .collect();
    assert!(after.is_empty(), "no READY=1 after STOPPING=1: {after:#?}");
}

#[test]
fn watchdog_pings_come_at_half_the_interval() {
    let addr = local_addr();
    let conf = global("") + &pool("app", &addr, 1, "");
    let dir = Dir::new();
    let mut notify = NotifySocket::bind(&dir.join("notify.sock"));
    let path = notify.path.clone();
    let herd = Herd::start_with(dir, &conf, move |config| {
        let mut cmd = via_shell(&["WATCHDOG_PID"], config);
        cmd.env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "400000");
        cmd
    });
    notify.wait("READY=1", Duration::from_secs(20), |m| m.has("READY=1"));
    let pings: Vec<Message> = notify
        .collect(Duration::from_millis(2000))
        .into_iter()
        .filter(|m| m.has("WATCHDOG=1"))
        .collect();
    assert!(
        pings.len() >= 6,
        "about ten WATCHDOG=1 in 2 s at WATCHDOG_USEC=400000, got {}: {pings:#?}",
        pings.len()
    );
    assert!(pings.iter().all(|m| m.pid == Some(herd.pid())));
    let worst = pings.windows(2).map(|w| w[1].at - w[0].at).max().unwrap();
    assert!(
        worst < Duration::from_millis(400),
        "systemd kills the service when WATCHDOG_USEC passes without a ping; longest gap {worst:?}"
    );
    for name in ["WATCHDOG_USEC", "WATCHDOG_PID", "NOTIFY_SOCKET"] {
        assert_eq!(worker_env(&addr, name), "", "{name} reached a worker");
    }
}

#[test]
fn a_watchdog_of_another_process_is_not_pinged() {
    // WATCHDOG_PID names someone else (herd was started by a wrapper that
    // systemd watches): sd_watchdog_enabled() says no, so no pings at the
    // watchdog's rate.
    let addr = local_addr();
    let conf = global("") + &pool("app", &addr, 1, "");
    let dir = Dir::new();
    let mut notify = NotifySocket::bind(&dir.join("notify.sock"));
    let path = notify.path.clone();
    let _herd = Herd::start_with(dir, &conf, move |config| {
        let mut cmd = Command::new(HERD);
        cmd.args(["run", "-c"])
            .arg(config)
            .env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "200000")
            .env("WATCHDOG_PID", "1");
        cmd
    });
    notify.wait("READY=1", Duration::from_secs(20), |m| m.has("READY=1"));
    let pings = notify
        .collect(Duration::from_millis(1000))
        .into_iter()
        .filter(|m| m.has("WATCHDOG=1"))
        .count();
    assert!(
        pings <= 1,
        "{pings} WATCHDOG=1 in 1 s for a watchdog that is not ours"
    );
}

/// The new master is not the harness's child: stop it by pid however the
/// test ends.
struct StopOnDrop(u32);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if support::alive(self.0) {
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
}

fn pid_file(herd: &Herd) -> u32 {
    std::fs::read_to_string(herd.dir.join("herd.pid"))
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0)
}

/// `herd ctl upgrade` under `Type=notify`: systemd must learn the new
/// master's pid from a process it accepts messages from (the old master,
/// still the main pid, for `NotifyAccess=main`), must not be told the
/// service is stopping when only the old master leaves (STOPPING=1 puts a
/// running unit into "deactivating": systemd would kill the new master
/// `TimeoutStopSec` later), and the new master must keep the watchdog fed.
#[test]
fn upgrade_hands_systemd_the_new_main_pid_and_keeps_the_watchdog_fed() {
    let addr = local_addr();
    let conf = global("pid = {dir}/herd.pid\n") + &pool("app", &addr, 1, "");
    let dir = Dir::new();
    let mut notify = NotifySocket::bind(&dir.join("notify.sock"));
    let path = notify.path.clone();
    let mut herd = Herd::start_with(dir, &conf, move |config| {
        let mut cmd = via_shell(&["WATCHDOG_PID"], config);
        cmd.env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "400000");
        cmd
    });
    let old = herd.pid();
    notify.wait("READY=1", Duration::from_secs(20), |m| m.has("READY=1"));

    let (code, out, err) = herd.ctl(&herd.dir.join("ctl.sock"), &["upgrade"]);
    assert_eq!(code, 0, "{out}{err}\n{}", herd.log_text());
    let new = wait_for(
        "the pid file to name the new master",
        Duration::from_secs(10),
        || {
            let p = pid_file(&herd);
            (p != 0 && p != old).then_some(p)
        },
    );
    let _guard = StopOnDrop(new);
    assert_eq!(
        herd.wait_exit(Duration::from_secs(20)),
        Some(0),
        "the old master drains and exits"
    );
    // A little time for the new master's pings after the old one left.
    let _ = notify.collect(Duration::from_millis(1500));

    let seen = &notify.seen;
    let mut problems = Vec::new();
    let switch = seen
        .iter()
        .position(|m| m.value("MAINPID") == Some(&new.to_string()) && m.pid == Some(old));
    match switch {
        None => problems.push(format!("no MAINPID={new} from the old master {old}")),
        Some(at) => {
            let stopping: Vec<&Message> =
                seen[at..].iter().filter(|m| m.has("STOPPING=1")).collect();
            if !stopping.is_empty() {
                problems.push(format!(
                    "STOPPING=1 after MAINPID={new} (systemd would stop the whole service): {stopping:?}"
                ));
            }
        }
    }
    let exit_seen = Instant::now() - Duration::from_millis(1500);
    let fed = seen
        .iter()
        .filter(|m| m.has("WATCHDOG=1") && m.pid == Some(new) && m.at > exit_seen)
        .count();
    if fed < 3 {
        problems.push(format!(
            "the new master does not feed the watchdog: {fed} WATCHDOG=1 from pid {new} in 1.5 s"
        ));
    }
    assert!(
        problems.is_empty(),
        "{}\nmessages: {seen:#?}",
        problems.join("\n")
    );
    assert_eq!(fcgi::get(&addr, "/").status(), 200);
}

// ---- socket activation -------------------------------------------------

#[test]
fn socket_activation_matches_sockets_to_pools_by_name() {
    let dir = Dir::new();
    // fd 3: a unix socket named "admin", fd 4: a TCP socket named "www",
    // fd 5: one no pool asks for. The pools list them in another order.
    let admin_path = dir.join("admin.sock");
    let admin = UnixListener::bind(&admin_path).unwrap();
    let www = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let www_addr = www.local_addr().unwrap().to_string();
    let extra = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let inodes = [
        support::inode_of(&admin),
        support::inode_of(&www),
        support::inode_of(&extra),
    ];
    let conf =
        global("") + &pool("web", "systemd:www", 2, "") + &pool("adm", "systemd:admin", 1, "");
    let fds = [admin.as_raw_fd(), www.as_raw_fd(), extra.as_raw_fd()];
    let mut herd = Herd::start_with(dir, &conf, |config| {
        let mut cmd = via_shell(&["LISTEN_PID"], config);
        cmd.env("LISTEN_FDS", "3")
            .env("LISTEN_FDNAMES", "admin:www:extra");
        support::pass_fds(&mut cmd, &fds);
        cmd
    });
    herd.wait_ready(3);
    let admin_addr = admin_path.to_str().unwrap();
    let web_worker = fcgi::get(&www_addr, "/").pid();
    let adm_worker = fcgi::get(admin_addr, "/").pid();
    let web_pids: Vec<u32> = herd
        .log_lines("worker ready pool=web")
        .iter()
        .filter_map(|l| support::field(l, "pid"))
        .collect();
    assert!(web_pids.contains(&web_worker), "www is pool web's socket");
    assert!(
        !web_pids.contains(&adm_worker),
        "admin is pool adm's socket"
    );

    herd.wait_log(
        "closing the passed socket 'extra'",
        1,
        Duration::from_secs(5),
    );
    let held = support::socket_inodes(herd.pid());
    assert!(held.contains(&inodes[0]) && held.contains(&inodes[1]));
    assert!(!held.contains(&inodes[2]), "the unused socket is closed");

    // Workers inherit neither the variables nor the sockets.
    for addr in [www_addr.as_str(), admin_addr] {
        for name in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
            assert_eq!(worker_env(addr, name), "", "{name} reached a worker");
        }
    }
    for pid in herd.worker_pids() {
        let theirs = support::socket_inodes(pid);
        assert!(
            inodes.iter().all(|i| !theirs.contains(i)),
            "worker {pid} holds one of systemd's sockets"
        );
    }

    // A graceful stop leaves systemd's sockets alone: the socket file stays
    // and both still listen (systemd holds them for the next start), so a
    // connection made now waits in the backlog for the next herd.
    herd.signal(libc::SIGQUIT);
    assert_eq!(herd.wait_exit(Duration::from_secs(20)), Some(0));
    assert!(admin_path.exists(), "herd removed systemd's socket file");
    let _queued = std::net::TcpStream::connect(&www_addr).expect("www still listens");
    www.set_nonblocking(true).unwrap();
    wait_for(
        "the connection in www's backlog",
        Duration::from_secs(5),
        || www.accept().ok(),
    );
    let _queued =
        std::os::unix::net::UnixStream::connect(&admin_path).expect("admin still listens");
}

#[test]
fn socket_activation_through_systemd_socket_activate() {
    // systemd's own tool: it listens, waits for the first connection, then
    // execs herd in its own process with LISTEN_FDS, LISTEN_PID and
    // LISTEN_FDNAMES set by systemd's code. The request that activated
    // herd waits in the backlog and is served.
    let tool = Path::new("/usr/bin/systemd-socket-activate");
    if !tool.exists() {
        let why = format!("{} is not installed (package systemd)", tool.display());
        return support::skip(&why);
    }
    let port = support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let conf = global("") + &pool("app", "systemd:web", 1, "");
    let dir = Dir::new();
    let mut herd = Herd::start_with(dir, &conf, |config| {
        let mut cmd = Command::new(tool);
        cmd.arg(format!("--listen={addr}"))
            .arg("--fdname=web")
            .arg(HERD)
            .args(["run", "-c"])
            .arg(config);
        cmd
    });
    // Refused until the tool listens; the first request that connects
    // starts herd.
    let reply = wait_for("the activating request", Duration::from_secs(20), || {
        fcgi::try_get(&addr, "/?env=LISTEN_FDNAMES", Duration::from_secs(20)).ok()
    });
    assert_eq!(
        herd.log_lines("listening on").len(),
        1,
        "one herd, activated by the first request\n{}",
        herd.log_text()
    );
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.body().trim_end(), "LISTEN_FDNAMES=");
    herd.wait_log("listening on systemd:web", 1, Duration::from_secs(5));
    assert_eq!(worker_env(&addr, "LISTEN_PID"), "");
    herd.signal(libc::SIGQUIT);
    assert_eq!(herd.wait_exit(Duration::from_secs(20)), Some(0));
}

#[test]
fn an_upgrade_keeps_serving_on_the_socket_systemd_passed() {
    let www = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = www.local_addr().unwrap().to_string();
    let inode = support::inode_of(&www);
    let conf = global("pid = {dir}/herd.pid\n") + &pool("app", "systemd:www", 1, "");
    let fds = [www.as_raw_fd()];
    let mut herd = Herd::start_with(Dir::new(), &conf, |config| {
        let mut cmd = via_shell(&["LISTEN_PID"], config);
        cmd.env("LISTEN_FDS", "1").env("LISTEN_FDNAMES", "www");
        support::pass_fds(&mut cmd, &fds);
        cmd
    });
    herd.wait_ready(1);
    let old = herd.pid();
    assert_eq!(fcgi::get(&addr, "/").generation(), 1);
    // The new master inherits LISTEN_PID=<old pid>: it must take the
    // socket from the old master (HERD_LISTENERS), not fail on systemd:www.
    let (code, out, err) = herd.ctl(&herd.dir.join("ctl.sock"), &["upgrade"]);
    assert_eq!(code, 0, "{out}{err}\n{}", herd.log_text());
    let new = wait_for("the new master's pid", Duration::from_secs(10), || {
        let p = pid_file(&herd);
        (p != 0 && p != old).then_some(p)
    });
    let _guard = StopOnDrop(new);
    assert_eq!(herd.wait_exit(Duration::from_secs(20)), Some(0));
    assert_eq!(fcgi::get(&addr, "/").generation(), 2);
    assert!(support::socket_inodes(new).contains(&inode));
    assert_eq!(worker_env(&addr, "LISTEN_FDS"), "");
    let (code, _, _) = herd.ctl(&herd.dir.join("ctl.sock"), &["stop"]);
    assert_eq!(code, 0);
    wait_for("the new master to stop", Duration::from_secs(20), || {
        (!support::alive(new)).then_some(())
    });
}

#[test]
fn a_socket_systemd_did_not_pass_is_a_clear_error() {
    // None at all; a socket by another name; the right name but for
    // another process (LISTEN_PID is not herd's).
    let www = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// (what, variables, LISTEN_PID set to herd's own pid)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);
    let cases: [Case; 3] = [
        ("no LISTEN_FDS", &[], false),
        (
            "another name",
            &[("LISTEN_FDS", "1"), ("LISTEN_FDNAMES", "www")],
            true,
        ),
        (
            "another process",
            &[
                ("LISTEN_FDS", "1"),
                ("LISTEN_FDNAMES", "missing"),
                ("LISTEN_PID", "1"),
            ],
            false,
        ),
    ];
    for (what, vars, own_pid) in cases {
        let conf = global("") + &pool("app", "systemd:missing", 1, "");
        let fds = [www.as_raw_fd()];
        let mut herd = Herd::start_with(Dir::new(), &conf, |config| {
            let mut cmd = if own_pid {
                via_shell(&["LISTEN_PID"], config)
            } else {
                let mut c = Command::new(HERD);
                c.args(["run", "-c"]).arg(config);
                c
            };
            cmd.env_remove("LISTEN_FDS")
                .env_remove("LISTEN_PID")
                .env_remove("LISTEN_FDNAMES")
                .envs(vars.iter().copied());
            if !vars.is_empty() {
                support::pass_fds(&mut cmd, &fds);
            }
            cmd
        });
        assert_eq!(herd.wait_exit(Duration::from_secs(10)), Some(1), "{what}");
        let log = herd.log_text();
        assert!(
            log.contains("no socket named 'missing' was passed by systemd"),
            "{what}: {log}"
        );
        assert!(herd.worker_pids().is_empty(), "{what}: {log}");
    }
}

// ---- under a real systemd ----------------------------------------------

/// Where systemd is the init system, herd runs as a transient
/// `Type=notify` service: started (systemd waits for READY=1), reloaded
/// with `herd ctl reload --wait` as `ExecReload=`, stopped with
/// `KillSignal=SIGQUIT`. No test can install an init system, and the
/// project's machines and CI do not boot systemd: it runs only when asked,
/// as root on a systemd host (`cargo nextest run --run-ignored all
/// under_a_real_systemd`), where it fails if systemd is not there.
#[test]
#[ignore = "needs systemd as PID 1 and root: run it with --run-ignored on such a host"]
fn under_a_real_systemd() {
    assert!(
        Path::new("/run/systemd/system").is_dir() && support::is_root(),
        "systemd is not the init system here, or the test is not root"
    );
    let addr = local_addr();
    let dir = Dir::new();
    let conf = support::expand(&(global("") + &pool("app", &addr, 2, "")), &dir);
    let config = dir.write("herd.conf", &conf);
    let unit = format!("herd-test-{}.service", std::process::id());
    let ctl_sock = dir.join("ctl.sock");
    let systemctl = |args: &[&str]| {
        let out = Command::new("systemctl")
            .args(args)
            .output()
            .expect("systemctl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    struct Unit(String);
    impl Drop for Unit {
        fn drop(&mut self) {
            let _ = Command::new("systemctl").args(["stop", &self.0]).status();
            let _ = Command::new("systemctl")
                .args(["reset-failed", &self.0])
                .status();
        }
    }
    let reload = format!("{HERD} ctl --socket {} reload --wait", ctl_sock.display());
    let out = Command::new("systemd-run")
        .arg(format!("--unit={unit}"))
        .args([
            "-p",
            "Type=notify",
            "-p",
            "NotifyAccess=main",
            "-p",
            "KillSignal=SIGQUIT",
            "-p",
            "TimeoutStopSec=30",
        ])
        .arg("-p")
        .arg(format!("ExecReload={reload}"))
        .arg(HERD)
        .args(["run", "-c"])
        .arg(&config)
        .output()
        .expect("systemd-run");
    let _unit = Unit(unit.clone());
    assert!(
        out.status.success(),
        "systemd-run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let show = |prop: &str| {
        systemctl(&["show", "-p", prop, "--value", &unit])
            .1
            .trim()
            .to_string()
    };
    // systemd-run returns once the start job is done: for Type=notify, once
    // READY=1 came.
    wait_for("the unit to be active", Duration::from_secs(20), || {
        (show("ActiveState") == "active").then_some(())
    });
    assert!(
        show("StatusText").contains("app: generation 1"),
        "{}",
        show("StatusText")
    );
    assert_eq!(fcgi::get(&addr, "/").status(), 200);

    std::fs::write(&config, format!("{conf}env[VERSION] = 2\n")).unwrap();
    let (ok, _) = systemctl(&["reload", &unit]);
    assert!(ok, "systemctl reload");
    assert_eq!(fcgi::get(&addr, "/").generation(), 2);
    assert_eq!(show("ActiveState"), "active");

    let (ok, _) = systemctl(&["stop", &unit]);
    assert!(ok, "systemctl stop");
    assert_ne!(show("ActiveState"), "active");
}
