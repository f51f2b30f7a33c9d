//! A worker is everything it started: a worker program that forks (as
//! FCGI::ProcManager's `pm_manage` and php-cgi with `PHP_FCGI_CHILDREN`
//! do) leaves no process behind when herd stops it, when it crashes, when
//! its request runs past `request_terminate_timeout`, or when the master
//! itself is killed with SIGKILL (the next master clears what it left).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use support::{Dir, Herd, alive, fcgi, wait_for};

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
