//! The master's lifecycle seen from outside: its phase in `herd ctl
//! status` and the status page, and what signals do while a graceful stop
//! drains.

mod support;

use std::thread;
use std::time::Duration;

use support::fcgi::{self, status_json};
use support::{Herd, example_pool, example_pool_with, wait_until};

/// How long each request of the load sleeps in its worker: long enough
/// for the test to act while they are in flight.
const SLOW: &str = "/?ms=3000";

/// `n` clients, each with one slow request on its own connection, all
/// running in a worker when this returns.
fn slow_clients(addr: &str, n: u64) -> Vec<thread::JoinHandle<Result<u16, String>>> {
    let clients = (0..n)
        .map(|_| {
            let addr = addr.to_string();
            thread::spawn(move || {
                fcgi::try_get(&addr, SLOW, Duration::from_secs(20)).map(|r| r.status())
            })
        })
        .collect();
    wait_until(
        &format!("{n} requests in flight"),
        Duration::from_secs(10),
        || match &status_json(addr, "/status")["active processes"] {
            active if *active == n => Ok(()),
            active => Err(format!("{active} active")),
        },
    );
    clients
}

#[test]
fn sigusr1_during_a_graceful_stop_reopens_the_log_and_aborts_nothing() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let mut herd = Herd::start(&example_pool(&addr, 4, "pm.status_path = /status\n"));
    herd.wait_ready(4);
    let clients = slow_clients(&addr, 4);

    herd.signal(libc::SIGQUIT);
    herd.wait_log("listeners closed", 1, Duration::from_secs(5));
    // logrotate: rename, then SIGUSR1 from `postrotate`. Any other signal
    // but a stop is ignored meanwhile.
    let rotated = herd.dir.join("herd.log.1");
    std::fs::rename(&herd.log, &rotated).unwrap();
    herd.signal(libc::SIGUSR1);
    let reopened = herd.wait_log("reopened", 1, Duration::from_secs(5));
    assert!(reopened[0].contains("herd.log"), "{reopened:?}");
    herd.signal(libc::SIGHUP);
    herd.signal(libc::SIGTTIN);
    herd.wait_log("stopping, ignored", 2, Duration::from_secs(5));

    for c in clients {
        let status = c.join().expect("client thread");
        assert_eq!(status, Ok(200), "a request in flight during the stop");
    }
    assert_eq!(herd.wait_exit(Duration::from_secs(15)), Some(0));
    let before = std::fs::read_to_string(&rotated).unwrap();
    let after = herd.log_text();
    assert!(before.contains("graceful stop"), "{before}");
    assert!(!before.contains("reopened"), "{before}");
    assert!(after.contains("herd stopped"), "{after}");
    for text in [&before, &after] {
        assert!(!text.contains("stopping now"), "escalated:\n{text}");
    }
}

/// Waits until `herd ctl status --json` says the master is in `phase`.
fn wait_phase(herd: &Herd, phase: &str) -> serde_json::Value {
    let socket = herd.dir.join("ctl.sock");
    wait_until(
        &format!("herd ctl status to say {phase}"),
        Duration::from_secs(10),
        || {
            let (code, out, err) = herd.ctl(&socket, &["status", "--json"]);
            if code != 0 {
                return Err(format!("exit {code}: {out}{err}"));
            }
            let v: serde_json::Value =
                serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
            match v["phase"].as_str() {
                Some(p) if p == phase => Ok(v),
                _ => Err(v["phase"].to_string()),
            }
        },
    )
}

#[test]
fn herd_ctl_status_and_the_status_page_follow_the_phase() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    // A slow warm-up makes starting and reloading last long enough to see.
    let conf = example_pool(
        &addr,
        2,
        "pm.status_path = /status\nwarmup.request[] = /?ms=1500\n",
    )
    .replacen(
        "[global]\n",
        "[global]\ncontrol.listen = {dir}/ctl.sock\nshutdown.depool_delay = 2s\n",
        1,
    );
    let mut herd = Herd::start(&conf);
    let starting = wait_phase(&herd, "starting");
    assert_eq!(starting["pid"], herd.pid(), "{starting}");
    wait_phase(&herd, "serving");
    assert_eq!(status_json(&addr, "/status")["phase"], "serving");

    let socket = herd.dir.join("ctl.sock");
    let (code, out, err) = herd.ctl(&socket, &["reload", "--force"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_phase(&herd, "reloading");
    wait_phase(&herd, "serving");

    let clients = slow_clients(&addr, 1);
    herd.signal(libc::SIGQUIT);
    wait_phase(&herd, "depooling");
    assert_eq!(status_json(&addr, "/status")["phase"], "depooling");
    wait_phase(&herd, "draining");
    // The text form says it first.
    let (code, out, err) = herd.ctl(&socket, &["status"]);
    assert_eq!(code, 0, "{out}{err}");
    let first = out.lines().next().unwrap_or_default();
    assert_eq!(first, format!("master pid {}: draining", herd.pid()));
    for c in clients {
        assert_eq!(c.join().expect("client thread"), Ok(200));
    }
    assert_eq!(herd.wait_exit(Duration::from_secs(15)), Some(0));
}

#[test]
fn herd_ctl_status_shows_the_drain_and_answers_until_the_last_worker_is_gone() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    // Workers that ignore their stop signal (SIGWINCH, 28) make the last
    // step, stopping them, last worker.kill_timeout: long enough to ask.
    let conf = example_pool_with(
        "control.listen = {dir}/ctl.sock\n",
        &addr,
        2,
        "pm.status_path = /status\nworker.stop_signal = 28\nworker.kill_timeout = 3s\n",
    );
    let mut herd = Herd::start(&conf);
    herd.wait_ready(2);
    let clients = slow_clients(&addr, 1);
    herd.signal(libc::SIGQUIT);
    let draining = wait_phase(&herd, "draining");
    let left = draining["phase_ends_in"]
        .as_f64()
        .expect("when the drain ends");
    assert!(left > 0.0 && left <= 10.0, "{draining}");

    // The text says what is left to finish, and where.
    let socket = herd.dir.join("ctl.sock");
    let (code, out, err) = herd.ctl(&socket, &["status"]);
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[1].starts_with(
            "draining: 1 request(s) in flight (app 1 on 1 worker(s)), 1 client connection(s) open; \
             listeners closed; requests still running are stopped in "
        ),
        "{out}"
    );
    let busy: Vec<&&str> = lines.iter().filter(|l| l.contains(" Running ")).collect();
    assert_eq!(busy.len(), 1, "{out}");
    assert!(busy[0].contains(&format!("GET {SLOW} for ")), "{out}");

    for c in clients {
        assert_eq!(c.join().expect("client thread"), Ok(200));
    }
    // Drained: the workers are being stopped, and status still answers.
    let stopping = wait_phase(&herd, "stopping");
    assert!(stopping["phase_ends_in"].is_null(), "{stopping}");
    let (code, out, err) = herd.ctl(&socket, &["status"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\nstopping the workers\n"), "{out}");
    assert_eq!(herd.wait_exit(Duration::from_secs(15)), Some(0));
}
