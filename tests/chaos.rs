//! Chaos, CI-sized (the long runs are `contrib/chaos/`): SIGKILL random
//! workers under load, a storm of reloads with broken generations among
//! them, and a burst of hostile connections. Assertions are on counts,
//! liveness and bounds, never on speed: every wait has a deadline, and a
//! request without a complete answer after 10 s counts as hung.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use herd::fastcgi::pairs;
use herd::fastcgi::record::{self, BeginRequest};
use serde_json::Value;
use support::fcgi::{self, Conn};
use support::{Herd, procfs, refusals_accounted, user_line, wait_for};

/// A request with no complete answer after this long is hung.
const HANG: Duration = Duration::from_secs(10);

/// One pool `app` of `workers` static example-app workers on `addr`, with
/// a control socket at `{dir}/ctl.sock`; `extra` goes in the pool section.
fn config(addr: &str, workers: u32, extra: &str) -> String {
    format!(
        "[global]\nerror_log = {{dir}}/herd.log\ncontrol.listen = {{dir}}/ctl.sock\n\
         [app]\nlisten = {addr}\npm = static\npm.max_children = {workers}\n\
         command = {{herd}}\nargs = example-app\n{user}{extra}",
        user = user_line()
    )
}

fn local_addr() -> String {
    format!("127.0.0.1:{}", support::free_port())
}

fn socket(herd: &Herd) -> PathBuf {
    herd.dir.join("ctl.sock")
}

fn pool_status(herd: &Herd) -> Value {
    herd.ctl_status(&socket(herd))["pools"][0].clone()
}

fn worker_pids(pool: &Value) -> Vec<u32> {
    pool["processes"]
        .as_array()
        .unwrap_or_else(|| panic!("no processes in {pool}"))
        .iter()
        .map(|p| p["pid"].as_u64().unwrap() as u32)
        .collect()
}

/// The pool has exactly `n` workers, all idle or running (none warming or
/// retiring), no rollout is in progress, and the master has exactly `n`
/// child processes: every retired or killed worker has been reaped.
fn settled(herd: &Herd, n: usize) -> bool {
    let pool = pool_status(herd);
    let procs = pool["processes"].as_array().cloned().unwrap_or_default();
    procs.len() == n
        && procs.iter().all(|p| {
            p["retiring"] != true && matches!(p["state"].as_str(), Some("Idle" | "Running"))
        })
        && matches!(pool["deploy"]["state"].as_str(), Some("stable" | "refused"))
        && procfs::children(herd.pid()).len() == n
}

fn wait_settled(herd: &Herd, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while !settled(herd, n) {
        if Instant::now() > deadline {
            panic!(
                "the pool did not settle at {n} workers within {within:?}; children {:?}; status:\n{:#}",
                procfs::children(herd.pid()),
                pool_status(herd)
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Starts herd and waits for `n` ready workers and the control socket.
fn start(text: &str, n: usize) -> Herd {
    let herd = Herd::start(text);
    herd.wait_ready(n);
    wait_for("the control socket", Duration::from_secs(10), || {
        let (code, _, _) = herd.ctl(&socket(&herd), &["status", "--json"]);
        (code == 0).then_some(())
    });
    herd
}

/// A tiny xorshift: which worker to kill, how long to wait; the seed is
/// printed so that a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("chaos seed {seed}");
        Rng(seed)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

// ---- client load ------------------------------------------------------

/// How one request ended.
#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    /// 200 from a worker.
    Ok,
    /// A status herd answered itself (its body is not the app's).
    Herd(u16),
    /// Any other status from the app.
    App(u16),
    /// Reset or closed before FCGI_END_REQUEST.
    Cut(String),
    /// Nothing complete within [`HANG`].
    Hung,
    /// Not even connected.
    Connect(String),
}

#[derive(Clone, Debug)]
struct Sample {
    uri: String,
    start: Instant,
    outcome: Outcome,
}

/// One request on `conn` (connected first when there is none); a kept
/// connection stays for the next request, anything else is dropped.
fn one(addr: &str, conn: &mut Option<Conn>, id: u16, uri: &str, keep: bool) -> Outcome {
    let started = Instant::now();
    if conn.is_none() {
        match fcgi::try_connect(addr) {
            Ok(s) => {
                let mut c = Conn::from_stream(s);
                c.set_read_timeout(HANG);
                *conn = Some(c);
            }
            Err(e) => return Outcome::Connect(e.to_string()),
        }
    }
    let c = conn.as_mut().unwrap();
    let bytes = fcgi::request_bytes(id, uri, keep, &[], b"");
    if let Err(e) = c.stream.write_all(&bytes) {
        *conn = None;
        return Outcome::Cut(format!("send: {e}"));
    }
    let outcome = match c.try_reply(id) {
        Ok(reply) => {
            let status = reply.status();
            let body = reply.body();
            if status == 200 {
                Outcome::Ok
            } else if body.contains("gen=") && body.contains("pid=") {
                Outcome::App(status)
            } else {
                Outcome::Herd(status)
            }
        }
        // A read that waited the whole timeout is a hang, anything
        // quicker a reset or a close.
        Err(_) if started.elapsed() >= HANG - Duration::from_millis(200) => Outcome::Hung,
        Err(e) => Outcome::Cut(e),
    };
    if !keep || outcome != Outcome::Ok {
        *conn = None;
    }
    outcome
}

/// Client threads, each looping on its URI (`{id}` replaced by a number
/// unique to the request), kept-alive or a new connection per request;
/// bounded: a client never runs more than a minute.
type Load = support::load::Load<Sample>;

impl Load {
    fn start(addr: &str, clients: &[(&str, bool)]) -> Load {
        let next = Arc::new(AtomicU64::new(1));
        let clients = clients
            .iter()
            .map(|&(uri, keep)| {
                let (addr, uri, next) = (addr.to_string(), uri.to_string(), next.clone());
                let mut conn = None;
                move || {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    let uri = uri.replace("{id}", &n.to_string());
                    let start = Instant::now();
                    let id = (n % 60000 + 1) as u16;
                    let outcome = one(&addr, &mut conn, id, &uri, keep);
                    let failed = outcome != Outcome::Ok;
                    (
                        Sample {
                            uri,
                            start,
                            outcome,
                        },
                        failed,
                    )
                }
            })
            .collect();
        Load::spawn(clients, Duration::from_secs(60), usize::MAX)
    }
}

fn count_by_kind(samples: &[Sample]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in samples {
        let k = match &s.outcome {
            Outcome::Ok => "ok".to_string(),
            Outcome::Herd(st) => format!("herd {st}"),
            Outcome::App(st) => format!("app {st}"),
            Outcome::Cut(_) => "cut".into(),
            Outcome::Hung => "hung".into(),
            Outcome::Connect(_) => "connect".into(),
        };
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

// ---- 1. kill -9 workers under load ------------------------------------

/// The respawn delay after `failures` failures (100 ms doubling, 30 s cap).
fn backoff_delay(failures: u64) -> Duration {
    if failures == 0 {
        Duration::ZERO
    } else {
        Duration::from_millis(100u64 << (failures - 1).min(16)).min(Duration::from_secs(30))
    }
}

#[test]
fn sigkill_random_workers_under_load_costs_only_the_requests_they_were_answering() {
    const WORKERS: usize = 4;
    // The kills are the test's, not the program's failures: a short
    // worker.min_lifetime keeps the respawn backoff (tested on its own in
    // supervision.rs) from growing past what a CI-sized test can wait for.
    let addr = local_addr();
    let herd = start(
        &config(&addr, WORKERS as u32, "worker.min_lifetime = 1s\n"),
        WORKERS,
    );
    let master = herd.pid();
    let load = Load::start(
        &addr,
        &[
            ("/k?ms=50&id={id}", false),
            ("/k?ms=50&id={id}", true),
            ("/k?ms=50&id={id}", false),
            ("/k?ms=50&id={id}", true),
            ("/k?ms=50&id={id}", false),
            ("/k?ms=50&id={id}", true),
        ],
    );

    let mut rng = Rng::new();
    let mut killed = BTreeSet::new();
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        // Only a live child of this master: never a pid that was reused.
        let pids: Vec<u32> = worker_pids(&pool_status(&herd))
            .into_iter()
            .filter(|&p| procfs::ppid(p) == Some(master))
            .collect();
        if !pids.is_empty() {
            let pid = pids[rng.below(pids.len() as u64) as usize];
            if unsafe { libc::kill(pid as i32, libc::SIGKILL) } == 0 {
                killed.insert(pid);
            }
        }
        thread::sleep(Duration::from_millis(100 + rng.below(200)));
    }
    let kills_ended = Instant::now();
    let failures = pool_status(&herd)["deploy"]["backoff_failures"]
        .as_u64()
        .unwrap_or(0);
    let delay = backoff_delay(failures);
    // Back to size, still under load, within the backoff in effect (and a
    // margin for the spawns and the readiness gate).
    wait_settled(&herd, WORKERS, delay + Duration::from_secs(5));
    let recovered = Instant::now();
    thread::sleep(Duration::from_millis(500));
    let samples = load.finish();
    eprintln!(
        "{} kills, backoff failures {failures} ({delay:?}), back to size {:?} after the last kill; \
         requests {:?}",
        killed.len(),
        recovered - kills_ended,
        count_by_kind(&samples)
    );
    assert!(
        killed.len() >= 10,
        "the test's premise: many kills ({killed:?})"
    );

    // Which request each lost worker was serving, from herd's log.
    let mut died_serving = BTreeMap::new();
    for line in herd.log_lines("worker died while serving") {
        let uri = line
            .split("worker died while serving ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().nth(1))
            .map(String::from);
        if let (Some(uri), Some(pid)) = (uri, support::field(&line, "pid")) {
            died_serving.insert(uri, pid);
        }
    }
    let hung: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.outcome == Outcome::Hung)
        .collect();
    assert!(hung.is_empty(), "requests hung past {HANG:?}: {hung:#?}");
    let unexplained: Vec<&Sample> = samples
        .iter()
        .filter(|s| match &s.outcome {
            Outcome::Ok => false,
            // herd answered for a worker it lost (502) or could not get (503).
            Outcome::Herd(status) => *status < 500,
            // Cut off: only a request whose worker we killed mid-answer.
            Outcome::Cut(_) => !died_serving
                .get(&s.uri)
                .is_some_and(|pid| killed.contains(pid)),
            Outcome::App(_) | Outcome::Hung | Outcome::Connect(_) => true,
        })
        .collect();
    assert!(
        unexplained.is_empty(),
        "errors that are neither a 5xx from herd nor a request cut off on a killed worker: \
         {unexplained:#?}\nworkers killed: {killed:?}\nherd's 'died while serving': {died_serving:?}"
    );
    let retried = herd.log_lines("worker died before answering").len();
    assert!(
        retried > 0,
        "some kills hit a worker mid-request, and herd sent those GETs to another worker"
    );
    assert!(
        samples
            .iter()
            .any(|s| s.start > recovered && s.outcome == Outcome::Ok),
        "served after the pool was back to size"
    );
    assert!(herd.running(), "the master survived:\n{}", herd.log_text());
    assert_eq!(procfs::children(master).len(), WORKERS);
}

#[test]
fn losing_the_last_worker_while_a_respawn_is_backed_off_leaves_no_request_waiting_for_it() {
    // Found by contrib/chaos/kill9-workers.py: SIGKILLs of young idle
    // workers back the respawns off; a worker killed mid-request is
    // retired (its exit is no failure). When that one was the last, the
    // pool has no worker and the next spawn is the backoff away. README:
    // "While no worker can start, requests get 503 at once" — a request
    // must not wait in the queue for that respawn (up to 30 s).
    let addr = local_addr();
    // A long worker.min_lifetime: no worker outlives it here, so the
    // failures are never forgiven during the test.
    let herd = start(&config(&addr, 2, "worker.min_lifetime = 60s\n"), 2);
    let master = herd.pid();
    let slow = {
        let addr = addr.clone();
        thread::spawn(move || fcgi::try_get(&addr, "/slow?ms=30000", Duration::from_secs(40)))
    };
    let busy = wait_for(
        "a worker busy with the slow request",
        Duration::from_secs(10),
        || {
            let pool = pool_status(&herd);
            pool["processes"]
                .as_array()?
                .iter()
                .find(|p| p["state"] != "Idle")
                .and_then(|p| p["pid"].as_u64())
                .map(|p| p as u32)
        },
    );
    // Kill the other worker as soon as it is up, until the respawn delay
    // is 6.4 s (seven failures: 0.1 + 0.2 + ... + 3.2 s of waiting).
    let failures = wait_for("seven failed workers", Duration::from_secs(20), || {
        let pool = pool_status(&herd);
        let failures = pool["deploy"]["backoff_failures"].as_u64().unwrap_or(0);
        if failures >= 7 {
            return Some(failures);
        }
        for pid in worker_pids(&pool) {
            if pid != busy && procfs::ppid(pid) == Some(master) {
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        None
    });
    let delay = backoff_delay(failures);
    // Now the busy one, the last worker.
    assert_eq!(procfs::ppid(busy), Some(master));
    unsafe { libc::kill(busy as i32, libc::SIGKILL) };
    wait_for("the last worker to be gone", Duration::from_secs(5), || {
        (!support::alive(busy)).then_some(())
    });
    let before = pool_status(&herd);
    let asked = Instant::now();
    let outcome = fcgi::try_get(&addr, "/after", Duration::from_secs(40)).map(|r| r.status());
    let waited = asked.elapsed();
    eprintln!("after {failures} failures ({delay:?}): {waited:?} for {outcome:?}");
    assert!(
        waited < delay / 2,
        "with no worker and the next spawn {delay:?} away, a request waited {waited:?} \
         (then {outcome:?}) instead of a 503 at once or a worker at once; status before it:\n{:#}",
        before
    );
    let _ = slow.join();
    assert!(herd.running());
}

// ---- 2. a reload storm ------------------------------------------------

/// The master's fds and children once it is quiet, after the same short
/// warm-up load both times (herd connects to a worker the first time it
/// needs it, so every worker must have served).
struct Snapshot {
    fds: usize,
    kinds: BTreeMap<String, usize>,
    children: usize,
}

fn quiet_snapshot(herd: &Herd, addr: &str, workers: usize) -> Snapshot {
    let clients: Vec<(&str, bool)> = (0..workers * 2)
        .map(|_| ("/w?ms=20&id={id}", false))
        .collect();
    let warm = Load::start(addr, &clients);
    thread::sleep(Duration::from_secs(1));
    let bad: Vec<Sample> = warm
        .finish()
        .into_iter()
        .filter(|s| s.outcome != Outcome::Ok)
        .collect();
    assert!(bad.is_empty(), "the warm-up load failed: {bad:#?}");
    // Quiet: the same fd count three times in a row.
    let pid = herd.pid();
    let fds = wait_for(
        "the master's fd count to settle",
        Duration::from_secs(10),
        || {
            let a = procfs::fd_count(pid);
            thread::sleep(Duration::from_millis(100));
            let b = procfs::fd_count(pid);
            thread::sleep(Duration::from_millis(100));
            let c = procfs::fd_count(pid);
            (a == b && b == c).then_some(c)
        },
    );
    Snapshot {
        fds,
        kinds: procfs::fd_kinds(pid),
        children: procfs::children(pid).len(),
    }
}

fn storm_config(addr: &str, round: u32, broken: Option<&str>) -> String {
    let mut extra = format!("env[CHAOS_ROUND] = {round}\nwarmup.request[] = /warm\n");
    match broken {
        // Every new worker fails its warm-up: the deploy is refused.
        Some("warmup") => extra.push_str("warmup.request[] = /?status=500\n"),
        // The config does not parse: the reload is refused.
        Some("config") => extra.push_str("chaos.not_a_directive = yes\n"),
        _ => {}
    }
    config(addr, 3, &extra)
}

#[test]
fn a_storm_of_reloads_with_broken_ones_fails_no_request_and_leaks_nothing() {
    const WORKERS: usize = 3;
    let addr = local_addr();
    let herd = start(&storm_config(&addr, 0, None), WORKERS);
    wait_settled(&herd, WORKERS, Duration::from_secs(10));
    let before = quiet_snapshot(&herd, &addr, WORKERS);
    assert_eq!(before.children, WORKERS);

    let load = Load::start(
        &addr,
        &[
            ("/f?id={id}", false),
            ("/f?id={id}", true),
            ("/s?ms=100&id={id}", false),
            ("/s?ms=100&id={id}", true),
        ],
    );
    let mut results = Vec::new();
    let mut peak_children = 0;
    for round in 1..=6 {
        let broken = match round {
            3 => Some("warmup"),
            6 => Some("config"),
            _ => None,
        };
        herd.rewrite_config(&storm_config(&addr, round, broken));
        // herd.ctl fails the test if a reload --wait runs past 10 s.
        let (code, out, err) = herd.ctl(&socket(&herd), &["reload", "--force", "--wait"]);
        peak_children = peak_children.max(procfs::children(herd.pid()).len());
        results.push((round, broken, code, format!("{out}{err}")));
    }
    thread::sleep(Duration::from_millis(300));
    let samples = load.finish();

    for (round, broken, code, said) in &results {
        let want = if broken.is_some() { 1 } else { 0 };
        assert_eq!(
            *code,
            want,
            "reload {round} ({}) exited {code}: {said}",
            broken.unwrap_or("good")
        );
    }
    let failed: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.outcome != Outcome::Ok)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the storm: {failed:#?}",
        failed.len(),
        samples.len()
    );
    assert!(
        !herd.log_lines("deploy refused").is_empty(),
        "the broken generation was refused"
    );

    // Retiring workers exit within process_control_timeout; wait for
    // them before counting.
    wait_settled(&herd, WORKERS, Duration::from_secs(30));
    let after = quiet_snapshot(&herd, &addr, WORKERS);
    eprintln!(
        "storm: {} requests; master fds {} -> {}, children {} -> (peak {peak_children}) -> {}",
        samples.len(),
        before.fds,
        after.fds,
        before.children,
        after.children
    );
    assert_eq!(
        after.fds, before.fds,
        "the master's fds grew over the storm: before {:?}, after {:?}",
        before.kinds, after.kinds
    );
    assert_eq!(
        after.children, WORKERS,
        "the master's children after the storm"
    );
    // No worker herd ever spawned is still running besides the pool's.
    let current: BTreeSet<u32> = worker_pids(&pool_status(&herd)).into_iter().collect();
    let stray: Vec<u32> = herd
        .worker_pids()
        .into_iter()
        .filter(|p| !current.contains(p) && support::alive(*p))
        .collect();
    assert!(stray.is_empty(), "workers left running: {stray:?}");
    assert!(herd.running());
}

// ---- 3. a burst of hostile connections ----------------------------------

/// BEGIN_REQUEST and half of a PARAMS record: a client that then stalls.
fn half_record() -> Vec<u8> {
    let mut bytes = BytesMut::new();
    record::put_begin_request(
        &mut bytes,
        1,
        BeginRequest {
            role: record::ROLE_RESPONDER,
            flags: record::KEEP_CONN,
        },
    );
    let mut p = BytesMut::new();
    pairs::put_pair(&mut p, b"REQUEST_METHOD", b"GET");
    pairs::put_pair(&mut p, b"REQUEST_URI", b"/stall");
    record::put_record(&mut bytes, record::PARAMS, 1, &p);
    let cut = bytes.len() - p.len() / 2;
    bytes[..cut].to_vec()
}

/// Without blocking: has the peer closed `s` (EOF or reset)?
fn closed_now(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 64];
    let closed = loop {
        match (&mut &*s).read(&mut b) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break true,
        }
    };
    s.set_nonblocking(false).unwrap();
    closed
}

#[test]
fn a_burst_of_hostile_connections_costs_bounded_memory_and_a_few_log_lines() {
    const LIMIT: usize = 600;
    const STALLERS: usize = 50;
    const BURST: usize = 1000;
    let addr = local_addr();
    let herd = start(
        &config(
            &addr,
            2,
            // 3 s: longer than the kernel's first SYN retry (1 s) for the
            // connects past the backlog, so the whole burst meets the limit
            // before any silent connection's timeout frees a slot.
            &format!("listen.max_connections = {LIMIT}\nrequest.read_timeout = 3s\n"),
        ),
        2,
    );
    let pid = herd.pid();

    // A normal client on its kept-alive connection, opened before the
    // burst as nginx keeps its upstream connections: served throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let normal = {
        let (addr, stop) = (addr.clone(), stop.clone());
        thread::spawn(move || {
            let mut conn = None;
            let mut outcomes = Vec::new();
            let until = Instant::now() + Duration::from_secs(60);
            let mut id = 0u16;
            while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                id = id % 60000 + 1;
                outcomes.push(one(&addr, &mut conn, id, "/normal", true));
                thread::sleep(Duration::from_millis(20));
            }
            outcomes
        })
    };
    // Peak VmRSS, sampled while the burst is on.
    let rss_before = procfs::rss_kb(pid);
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                if let Some(kb) = procfs::status_kb(pid, "VmRSS") {
                    peak.fetch_max(kb, Ordering::SeqCst);
                }
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    thread::sleep(Duration::from_millis(200));
    let lines_before = herd.log_text().lines().count();

    // 50 clients send half a record and stall; then 1000 connections at
    // once, idle.
    let half = half_record();
    let mut stallers: Vec<TcpStream> = (0..STALLERS)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).expect("connect a staller");
            s.write_all(&half).unwrap();
            s
        })
        .collect();
    let burst: Vec<TcpStream> = (0..BURST)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    assert_eq!(
        burst.len(),
        BURST,
        "every connect of the burst went through"
    );

    // Past the limit, connections are closed at once; the ones herd took
    // never send a byte, so they are closed after request.read_timeout.
    // The stallers free their slots after read_timeout too, maybe before
    // the last of the burst is accepted: between these many are refused.
    let room = LIMIT - 1 - STALLERS; // the normal client holds one
    let (fewest, most) = (BURST - room - STALLERS, BURST - room);
    wait_for(
        "every connection of the burst to be closed",
        Duration::from_secs(15),
        || (burst.iter().filter(|s| closed_now(s)).count() == BURST).then_some(()),
    );
    // Each staller is dropped, after about read_timeout.
    for s in &mut stallers {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 64];
        let r = s.read(&mut b);
        assert!(
            matches!(r, Ok(0) | Err(_))
                && !matches!(&r, Err(e) if e.kind() == ErrorKind::WouldBlock),
            "a staller is still open 10 s later: {r:?}"
        );
    }
    // The refusals, as the log accounts for them: each line stands for
    // itself and the ones it counts.
    let refusal_lines = || -> Vec<String> {
        herd.log_text()
            .lines()
            .skip(lines_before)
            .filter(|l| l.contains("listen.max_connections"))
            .map(String::from)
            .collect()
    };
    let refused = wait_for(
        &format!("at least {fewest} refusals in the log"),
        Duration::from_secs(10),
        || {
            let n = refusals_accounted(&refusal_lines());
            (n >= fewest).then_some(n)
        },
    );
    thread::sleep(Duration::from_millis(1500)); // held-back ones, if any
    let refused = refusals_accounted(&refusal_lines()).max(refused);
    let rss_peak = peak.load(Ordering::SeqCst);
    drop(burst);
    drop(stallers);

    // After the burst, new connections are served again.
    wait_for(
        "a new connection to be served after the burst",
        Duration::from_secs(10),
        || {
            let mut conn = None;
            (one(&addr, &mut conn, 1, "/after", false) == Outcome::Ok).then_some(())
        },
    );
    stop.store(true, Ordering::SeqCst);
    let normal = normal.join().unwrap();
    sampler.join().unwrap();

    let log = herd.log_text();
    let new_lines: Vec<&str> = log.lines().skip(lines_before).collect();
    let refusal_lines = refusal_lines();
    let stall_lines = new_lines
        .iter()
        .filter(|l| l.contains("dropping connection: no bytes for"))
        .count();
    let warnings = new_lines
        .iter()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .count();
    eprintln!(
        "burst: {refused} refused; {} refusal lines, {stall_lines} stall lines; VmRSS {} KiB -> peak {} KiB; \
         normal client {:?}",
        refusal_lines.len(),
        rss_before,
        rss_peak,
        normal.iter().filter(|o| **o == Outcome::Ok).count()
    );
    assert!(
        (fewest..=most).contains(&refused),
        "{refused} of the burst refused, expected {fewest}..={most}"
    );
    assert!(
        !refusal_lines.is_empty() && refusal_lines.len() <= 10,
        "refusals past listen.max_connections are logged, throttled; got {}:\n{}",
        refusal_lines.len(),
        refusal_lines.join("\n")
    );
    // The silent connections herd closed are not worth a warning each.
    assert_eq!(
        warnings,
        refusal_lines.len() + stall_lines,
        "no other warnings:\n{}",
        new_lines.join("\n")
    );
    assert_eq!(
        stall_lines, STALLERS,
        "one line per stalled connection, not one per byte or none"
    );
    let bad: Vec<&Outcome> = normal.iter().filter(|o| **o != Outcome::Ok).collect();
    assert!(
        bad.is_empty() && normal.len() > 10,
        "the kept-alive client was served throughout: {} requests, failures {bad:?}",
        normal.len()
    );
    let growth_mib = rss_peak.saturating_sub(rss_before) / 1024;
    assert!(
        growth_mib < 64,
        "the master's VmRSS grew by {growth_mib} MiB ({rss_before} KiB -> {rss_peak} KiB)"
    );
    assert!(herd.running(), "herd exited:\n{log}");
}

#[test]
fn every_refusal_past_max_connections_is_accounted_for_in_the_log() {
    // The README: refusals "are logged at most once a second, with a
    // count". A burst refused within one second must still show its count
    // once it is over, not only the first refusal of it.
    const LIMIT: usize = 20;
    const OPEN: usize = 300;
    let addr = local_addr();
    let herd = start(
        &config(&addr, 1, &format!("listen.max_connections = {LIMIT}\n")),
        1,
    );
    let conns: Vec<TcpStream> = (0..OPEN)
        .map(|_| TcpStream::connect(&addr).expect("connect"))
        .collect();
    let refused = wait_for(
        &format!("{} connections to be refused", OPEN - LIMIT),
        Duration::from_secs(15),
        || {
            let n = conns.iter().filter(|s| closed_now(s)).count();
            (n >= OPEN - LIMIT).then_some(n)
        },
    );
    assert_eq!(
        refused,
        OPEN - LIMIT,
        "exactly the connections past the limit"
    );
    // No more refusals come: whatever the throttle held back must still
    // reach the log (within a few of its one-second windows).
    let deadline = Instant::now() + Duration::from_secs(5);
    let accounted = loop {
        let log = herd.log_text();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("listen.max_connections"))
            .collect();
        let n = refusals_accounted(&lines);
        if n >= refused || Instant::now() > deadline {
            break (n, lines.iter().map(|l| l.to_string()).collect::<Vec<_>>());
        }
        thread::sleep(Duration::from_millis(100));
    };
    assert!(
        accounted.1.len() <= 10,
        "throttled: {} lines",
        accounted.1.len()
    );
    assert_eq!(
        accounted.0,
        refused,
        "{refused} connections were refused, the log accounts for {}:\n{}",
        accounted.0,
        accounted.1.join("\n")
    );
    drop(conns);
    assert!(herd.running());
}

#[test]
fn after_a_burst_of_connections_the_master_gives_its_memory_back() {
    const BURST: usize = 5000;
    // The client side needs a descriptor per connection too.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    lim.rlim_cur = lim.rlim_max;
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    assert!(
        lim.rlim_cur as usize > BURST + 100,
        "a hard fd limit of {} is too low for this test",
        lim.rlim_max
    );
    let addr = local_addr();
    let herd = start(&config(&addr, 2, "listen.backlog = 4096\n"), 2);
    let pid = herd.pid();
    let before = procfs::rss_kb(pid);

    let burst: Vec<TcpStream> = (0..BURST)
        .map(|_| TcpStream::connect(&addr).expect("connect"))
        .collect();
    // herd holds them all: a read buffer and a task each.
    let peak = wait_for(
        "the master to hold the burst",
        Duration::from_secs(20),
        || {
            let rss = procfs::rss_kb(pid);
            (rss >= before + 12 * 1024).then_some(rss)
        },
    );
    drop(burst);
    // Once they are gone, the memory goes back to the system.
    let after = wait_for(
        "the master to give the memory back",
        Duration::from_secs(15),
        || {
            let rss = procfs::rss_kb(pid);
            (rss <= before + 8 * 1024).then_some(rss)
        },
    );
    eprintln!("VmRSS {before} KiB, {peak} KiB with {BURST} connections, {after} KiB after");
    assert_eq!(fcgi::get(&addr, "/after").status(), 200);
}

#[test]
fn clients_giving_up_while_queued_cost_no_worker() {
    // Clients that send a request and go away while it waits in the queue:
    // wrk's timeouts under overload, users closing the tab. A worker handed
    // to such a request just as its client left must go on serving, not
    // be retired as broken (and respawned: costly for php-cgi).
    const CLIENTS: usize = 16;
    let addr = local_addr();
    let herd = start(&config(&addr, 2, "pm.max_queue = 4096\n"), 2);
    let first = herd.worker_pids();
    let until = Instant::now() + Duration::from_secs(4);
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let addr = addr.clone();
            thread::spawn(move || {
                let mut sent = 0u64;
                let mut n = i as u64;
                while Instant::now() < until && sent < 10_000 {
                    let Ok(mut s) = TcpStream::connect(&addr) else {
                        continue;
                    };
                    let _ = s.write_all(&fcgi::request_bytes(1, "/?ms=1", false, &[], b""));
                    sent += 1;
                    // Leave after 0 to 3 ms: about when a worker frees up.
                    n = n
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    thread::sleep(Duration::from_micros((n >> 33) % 3000));
                    drop(s);
                }
                sent
            })
        })
        .collect();
    let sent: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(sent > 1000, "only {sent} requests sent");
    assert_eq!(fcgi::get(&addr, "/after").status(), 200);
    let broke = herd.log_lines("its connection broke");
    assert!(
        broke.is_empty(),
        "{} of {sent} abandoned requests cost a worker:\n{}",
        broke.len(),
        broke.join("\n")
    );
    assert_eq!(herd.worker_pids(), first, "no worker was replaced");
}
