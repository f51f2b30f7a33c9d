//! Workers that fail the readiness probe in the ways a broken or foreign
//! program can: garbage for an answer, a connection closed at once, a
//! request never read, a record echoed back. Each is refused within
//! `worker.start_timeout` with a log line naming the cause, the pool backs
//! off, the master stays nearly idle, and nothing is left behind.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use support::{Dir, Herd, alive, cpu_ticks, wait_for};

/// A worker program on fd 0 that misbehaves as `mode` says.
const WORKER: &str = r#"import os, socket, sys, time
mode = sys.argv[1]
listener = socket.socket(fileno=0)
held = []
while True:
    conn, _ = listener.accept()
    if mode == "close":
        conn.close()
    elif mode == "garbage":
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        held.append(conn)
    elif mode == "echo":
        conn.sendall(conn.recv(4096))
        held.append(conn)
    else:  # silent: accept and never read
        held.append(conn)
"#;

fn pool(dir: &Dir, listen: &str, mode: &str) -> String {
    let script = dir.write("bad_worker.py", WORKER);
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let python = support::installed("/usr/bin/python3", "python3");
    format!(
        "[global]\nerror_log = {{dir}}/herd.log\n\
         [app]\nlisten = {listen}\npm = static\npm.max_children = 1\n\
         command = {}\nargs = {} {mode}\nworker.start_timeout = 1s\n{}",
        python.display(),
        script.display(),
        support::user_line()
    )
}

/// Runs a pool of `mode` workers for a while and checks what herd did.
fn refused_with_backoff(mode: &str, cause: &str) {
    let dir = Dir::new();
    let addr = format!("127.0.0.1:{}", support::free_port());
    let conf = pool(&dir, &addr, mode);
    let mut herd = Herd::start_in(dir, &conf);
    let lines = herd.wait_log("failed its readiness gate", 1, Duration::from_secs(10));
    assert!(lines[0].contains(cause), "{mode}: {lines:?}");
    // The respawns back off: the delays the log announces grow.
    let delays = wait_for(
        "three respawns to be announced",
        Duration::from_secs(20),
        || {
            let lines = herd.log_lines("respawning in");
            (lines.len() >= 3).then_some(lines)
        },
    );
    let ms = |l: &str| -> f64 {
        let d = l
            .split("respawning in ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        if let Some(ms) = d.strip_suffix("ms") {
            ms.parse().unwrap()
        } else {
            d.trim_end_matches('s').parse::<f64>().unwrap() * 1000.0
        }
    };
    assert!(ms(&delays[2]) > ms(&delays[0]), "{mode}: {delays:?}");
    // Requests are not left hanging meanwhile.
    let reply = support::fcgi::get(&addr, "/");
    assert_eq!(reply.status(), 503, "{mode}");
    // The master waits on timers between its backed-off respawns, it does
    // not spin (a spinning master would use all 500 ticks of 5 s). This
    // is the debug build on a shared machine: the release build uses about
    // 1% here, respawns included; the bar leaves room for both.
    let master = herd.pid();
    let before = cpu_ticks(master);
    std::thread::sleep(Duration::from_secs(5));
    let used = cpu_ticks(master) - before;
    assert!(used <= 25, "{mode}: the master used {used} ticks in 5 s");
    let workers = herd.worker_pids();
    herd.stop();
    for pid in workers {
        assert!(!alive(pid), "{mode}: worker {pid} outlived herd");
    }
}

#[test]
fn a_worker_answering_garbage_is_refused() {
    refused_with_backoff("garbage", "failed FCGI_GET_VALUES");
}

#[test]
fn a_worker_closing_at_once_is_refused() {
    refused_with_backoff("close", "failed FCGI_GET_VALUES");
}

#[test]
fn a_worker_that_never_reads_is_refused_at_start_timeout() {
    refused_with_backoff("silent", "did not answer FCGI_GET_VALUES within 1s");
}

#[test]
fn a_worker_echoing_the_probe_is_refused() {
    refused_with_backoff("echo", "failed FCGI_GET_VALUES");
}
