//! A worker is everything it started: a worker program that forks (as
//! FCGI::ProcManager's `pm_manage` and php-cgi with `PHP_FCGI_CHILDREN`
//! do) leaves no process behind when herd stops it, when it crashes, when
//! its request runs past `request_terminate_timeout`, or when the master
//! itself is killed with SIGKILL (the next master clears what it left).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use support::{Dir, Herd, alive, fcgi, procfs, wait_for};

/// A worker program that starts two helper processes of its own — one
/// with an empty environment, as a program that rewrites what /proc shows
/// of it (Perl renaming its FCGI::ProcManager servers) looks — notes their
/// pids, then serves as `herd example-app`.
fn forking_worker(dir: &Dir) -> String {
    let notes = dir.shared("helpers");
    let script = dir.write(
        "forking-worker.sh",
        &format!(
            "#!/bin/sh\nsleep 600 &\necho $! > {notes}/$$\n\
             exec 3<&0\nenv -i sleep 600 <&3 &\necho $! > {notes}/$$.bare\n\
             exec {herd} example-app\n",
            notes = notes.display(),
            herd = support::HERD,
        ),
    );
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script.display().to_string()
}

/// The helper the worker with pid `worker` started.
fn helper_of(dir: &Dir, worker: u32) -> u32 {
    note(dir, &worker.to_string())
}

/// The helper with an empty environment.
fn bare_helper_of(dir: &Dir, worker: u32) -> u32 {
    note(dir, &format!("{worker}.bare"))
}

fn note(dir: &Dir, name: &str) -> u32 {
    let note = dir.join("helpers").join(name);
    wait_for(
        "the worker to note its helper",
        Duration::from_secs(10),
        || std::fs::read_to_string(&note).ok()?.trim().parse().ok(),
    )
}

fn config(dir: &Dir, listen: &str, extra: &str) -> String {
    format!(
        "[global]\nerror_log = {{dir}}/herd.log\n\
         [app]\nlisten = {listen}\npm = static\npm.max_children = 1\n\
         command = {script}\nworker.min_lifetime = 0\n{user}{extra}",
        script = forking_worker(dir),
        user = support::user_line()
    )
}

/// herd with one worker, the forking script, `extra` in its pool; and
/// the pool's address.
fn start(extra: &str) -> (Herd, String) {
    let dir = Dir::new();
    let addr = format!("127.0.0.1:{}", support::free_port());
    let conf = config(&dir, &addr, extra);
    (Herd::start_in(dir, &conf), addr)
}

fn gone(what: &str, pid: u32) {
    wait_for(what, Duration::from_secs(10), || {
        (!alive(pid)).then_some(())
    });
}

#[test]
fn stopping_herd_stops_what_its_workers_started() {
    let (mut herd, addr) = start("");
    let worker = herd.wait_ready(1)[0];
    let helper = helper_of(&herd.dir, worker);
    assert!(alive(helper));
    assert_eq!(fcgi::get(&addr, "/").status(), 200);
    let bare = bare_helper_of(&herd.dir, worker);
    herd.signal(libc::SIGQUIT);
    assert_eq!(herd.wait_exit(Duration::from_secs(15)), Some(0));
    gone("the helper of a worker stopped gracefully", helper);
    gone("the bare helper of a worker stopped gracefully", bare);
}

#[test]
fn a_crashed_or_stuck_worker_takes_its_helpers_along() {
    let (mut herd, addr) = start("request_terminate_timeout = 1s\n");
    let first = herd.wait_ready(1)[0];
    let helper = helper_of(&herd.dir, first);

    // The worker crashes: its helper goes with it.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    gone("the helper of a crashed worker", helper);

    // Its replacement gets stuck past request_terminate_timeout.
    let second = herd.wait_ready(2)[1];
    let helper = helper_of(&herd.dir, second);
    let reply = fcgi::get(&addr, "/?ms=5000");
    assert_eq!(reply.status(), 504);
    gone("the helper of a stuck worker", helper);
    herd.stop();
}

#[test]
fn the_next_master_clears_what_a_killed_master_left() {
    let (mut herd, _) = start("");
    let worker = herd.wait_ready(1)[0];
    let helper = helper_of(&herd.dir, worker);
    let bare = bare_helper_of(&herd.dir, worker);

    // SIGKILL: the worker dies with the master; its helpers would not.
    let mut child = herd.child.take().expect("running");
    child.kill().unwrap();
    child.wait().unwrap();
    gone("the worker of a killed master", worker);
    // (Its helpers outlive it, until a master starts: another test's may
    // clear them first, which is the same sweep.)
    // The next master, on any config, clears it before it starts anything.
    let next = Herd::start(&support::example_pool(
        &format!("127.0.0.1:{}", support::free_port()),
        1,
        "",
    ));
    next.wait_ready(1);
    gone("the helper a killed master left", helper);
    // No marker to read: it still holds the worker's socket.
    gone("the helper with an empty environment", bare);
    drop(herd);
}

/// (process group, session) of `pid`, from /proc/PID/stat: the fields
/// after the command's closing parenthesis are state, ppid, pgrp, session.
fn group_and_session(pid: u32) -> (u32, u32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

#[test]
fn a_worker_leads_its_own_process_group_in_the_masters_session() {
    let (mut herd, _) = start("");
    let worker = herd.wait_ready(1)[0];
    let helper = helper_of(&herd.dir, worker);
    let (_, master_session) = group_and_session(herd.pid());
    // Its own group: herd's signals reach what it forked, a Ctrl-C at the
    // master's terminal does not reach it.
    assert_eq!(group_and_session(worker), (worker, master_session));
    assert_eq!(group_and_session(helper), (worker, master_session));
    // The master's session: with the kernel's autogroups a session is one
    // scheduling entity, and herd with its workers weighs one service, as
    // php-fpm with its children does.
    if let Ok(master_group) = std::fs::read_to_string(format!("/proc/{}/autogroup", herd.pid())) {
        let worker_group = std::fs::read_to_string(format!("/proc/{worker}/autogroup")).unwrap();
        assert_eq!(worker_group, master_group);
    }
    herd.stop();
}

/// As a container's init (PID 1 of a pid namespace of its own, as under
/// Docker), herd is handed every process a retired worker leaves: here the
/// two helpers of each worker, which herd kills with the worker's group.
/// It waits for each of them (no zombie is left in its name), and still
/// hears of its own workers' exits.
#[test]
fn as_pid_1_herd_reaps_the_orphans_its_workers_leave() {
    let Some(ns) = Pid1::start() else {
        return support::skip("not root: cannot make a pid namespace");
    };
    for round in 1..=3 {
        let (code, out, err) = ns.ctl(&["reload", "--force", "--wait"]);
        assert_eq!(code, 0, "reload {round}: {out}{err}");
        wait_for("the retired worker's exit", Duration::from_secs(10), || {
            (ns.count("worker stopped:") >= round).then_some(())
        });
    }
    let zombies = || -> Vec<u32> {
        procfs::children(ns.master)
            .into_iter()
            .filter(|&p| procfs::state(p) == Some('Z'))
            .collect()
    };
    let left = wait_for_or_last(Duration::from_secs(10), zombies);
    assert!(
        left.is_empty(),
        "zombies of herd as PID 1: {left:?}\n{}",
        ns.log()
    );
    // Its own workers' exits it still heard of, with their statuses.
    let log = ns.log();
    let stopped: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("worker stopped:"))
        .collect();
    assert_eq!(stopped.len(), 3, "{log}");
    assert!(
        stopped
            .iter()
            .all(|l| l.contains("by SIGTERM") || l.contains("exit")),
        "{stopped:#?}"
    );
    assert_eq!(fcgi::get(&ns.addr, "/").status(), 200);
    ns.stop();
}

/// A herd on the host starting up clears what dead masters left, and a
/// herd in a container is none of them: its workers say their master is
/// PID 1, which on the host is someone else, but of another pid namespace.
#[test]
fn a_master_starting_on_the_host_leaves_a_container_s_workers_alone() {
    let Some(ns) = Pid1::start() else {
        return support::skip("not root: cannot make a pid namespace");
    };
    let worker = wait_for("the container's worker", Duration::from_secs(10), || {
        procfs::children(ns.master).into_iter().next()
    });
    // Its sweep is done before its first worker starts.
    let host = Herd::start(&support::example_pool(
        &format!("127.0.0.1:{}", support::free_port()),
        1,
        "",
    ));
    host.wait_ready(1);
    assert!(
        alive(worker),
        "the host's herd killed the container's worker\n{}",
        host.log_text()
    );
    assert_eq!(ns.count("worker stopped:"), 0, "{}", ns.log());
    assert_eq!(fcgi::get(&ns.addr, "/").status(), 200);
    drop(host);
    ns.stop();
}

/// `herd ctl upgrade` ends with the old master's exit, which for a
/// container's init ends the container: refused, and herd serves on.
#[test]
fn as_pid_1_herd_refuses_an_upgrade_and_serves_on() {
    let Some(ns) = Pid1::start() else {
        return support::skip("not root: cannot make a pid namespace");
    };
    let (code, out, err) = ns.ctl(&["upgrade"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("PID 1 of its pid namespace"), "{out}{err}");
    assert_eq!(fcgi::get(&ns.addr, "/").status(), 200);
    assert_eq!(procfs::children(ns.unshare.id()), [ns.master]);
    ns.stop();
}

/// herd as PID 1 of a pid namespace of its own, on the forking worker.
/// `--kill-child` kills it, and so everything in the namespace, whenever
/// unshare goes, and the drop kills unshare however the test ends. The
/// pids herd logs are the namespace's: nothing here signals by them.
struct Pid1 {
    unshare: std::process::Child,
    /// herd's pid here, outside the namespace.
    master: u32,
    addr: String,
    dir: Dir,
}

impl Pid1 {
    /// `None` when not root (a pid namespace needs `CAP_SYS_ADMIN`).
    fn start() -> Option<Pid1> {
        if !support::is_root() {
            return None;
        }
        let unshare = support::installed("/usr/bin/unshare", "util-linux");
        let dir = Dir::new();
        let addr = format!("127.0.0.1:{}", support::free_port());
        // Sockets in the test's directory: /run/herd's are other masters',
        // whose pids mean nothing in the namespace.
        let conf = config(&dir, &addr, "").replacen(
            "[global]\n",
            "[global]\nworker.socket_dir = {dir}/run\ncontrol.listen = {dir}/ctl.sock\n",
            1,
        );
        let conf = dir.write("herd.conf", &support::expand(&conf, &dir));
        let unshare = std::process::Command::new(unshare)
            .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
            .arg(support::HERD)
            .args(["run", "-c"])
            .arg(&conf)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start unshare");
        let mut ns = Pid1 {
            master: 0,
            unshare,
            addr,
            dir,
        };
        ns.master = wait_for(
            "herd as PID 1 of the namespace",
            Duration::from_secs(10),
            || procfs::children(ns.unshare.id()).into_iter().next(),
        );
        wait_for("the first worker", Duration::from_secs(10), || {
            (ns.count("worker ready") >= 1).then_some(())
        });
        Some(ns)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("herd.log")).unwrap_or_default()
    }

    fn count(&self, what: &str) -> usize {
        self.log().matches(what).count()
    }

    fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let socket = self.dir.join("ctl.sock");
        let mut all = vec!["ctl", "--socket", socket.to_str().unwrap()];
        all.extend_from_slice(args);
        support::herd_cmd_within(&all, Duration::from_secs(30))
    }

    /// A graceful stop; herd exits 0.
    fn stop(mut self) {
        unsafe { libc::kill(self.master as i32, libc::SIGQUIT) };
        let status = wait_for("herd to exit", Duration::from_secs(15), || {
            self.unshare.try_wait().ok().flatten()
        });
        assert!(
            status.success(),
            "herd as PID 1 exited {status}\n{}",
            self.log()
        );
    }
}

impl Drop for Pid1 {
    fn drop(&mut self) {
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

/// Polls `list` until it is empty or `within` is over; its last value.
fn wait_for_or_last(within: Duration, mut list: impl FnMut() -> Vec<u32>) -> Vec<u32> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let got = list();
        if got.is_empty() || std::time::Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
