//! The process manager: how many workers a pool has (pm = dynamic and
//! ondemand, pm.max_children, SIGTTIN/SIGTTOU, `herd ctl scale`,
//! process.max), which workers leave (the youngest idle ones, those past
//! worker.max_memory), the master's SIGUSR1 and emergency restart, and one
//! pool's failure leaving the others alone.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::fcgi::{Reply, get_within, status_json};
use support::{Herd, alive, user_line, wait_for, wait_until};

/// A request that must be answered within this (a hang fails the test).
const LIMIT: Duration = Duration::from_secs(10);

fn addr() -> String {
    format!("127.0.0.1:{}", support::free_port())
}

/// A pool `name` of `herd example-app` workers with a status page at
/// `/status`; `pm` holds the `pm*` lines, `extra` anything else.
fn pool(name: &str, listen: &str, pm: &str, extra: &str) -> String {
    format!(
        "[{name}]\nlisten = {listen}\n{pm}\ncommand = {{herd}}\nargs = example-app\n\
         {user}pm.status_path = /status\n{extra}",
        user = user_line()
    )
}

/// A whole config: `[global]` logging to the test's `herd.log`, plus
/// `global` lines, then the pools.
fn config(global: &str, pools: &[String]) -> String {
    format!(
        "[global]\nerror_log = {{dir}}/herd.log\n{global}{}",
        pools.concat()
    )
}

/// herd with one pool, `app`, on `addr` and nothing in `[global]` but
/// the log.
fn app_pool(addr: &str, pm: &str, extra: &str) -> Herd {
    Herd::start(&config("", &[pool("app", addr, pm, extra)]))
}

fn status(addr: &str) -> Value {
    status_json(addr, "/status")
}

fn count(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("status has no number '{key}': {v}"))
}

fn total(addr: &str) -> u64 {
    count(&status(addr), "total processes")
}

/// Pids on the pool's scoreboard, as status lists them.
fn status_pids(v: &Value) -> BTreeSet<u32> {
    v["processes"]
        .as_array()
        .unwrap_or_else(|| panic!("status has no processes: {v}"))
        .iter()
        .map(|p| p["pid"].as_u64().unwrap() as u32)
        .collect()
}

/// Waits until status says the pool has exactly `n` workers; returns it.
/// (At a timeout, the harness prints the log as the test fails.)
fn wait_total(addr: &str, n: u64, within: Duration) -> Value {
    wait_until(&format!("{n} workers on status"), within, || {
        let v = status(addr);
        match count(&v, "total processes") {
            total if total == n => Ok(v),
            total => Err(format!("{total}: {:?}", status_pids(&v))),
        }
    })
}

/// Sends each uri on its own connection at once, from its own thread.
fn concurrently(addr: &str, uris: &[String]) -> Vec<thread::JoinHandle<(Reply, Duration)>> {
    uris.iter()
        .map(|uri| {
            let (addr, uri) = (addr.to_string(), uri.clone());
            thread::spawn(move || get_within(&addr, &uri, Duration::from_secs(15)))
        })
        .collect()
}

fn joined(handles: Vec<thread::JoinHandle<(Reply, Duration)>>) -> Vec<(Reply, Duration)> {
    handles
        .into_iter()
        .map(|h| h.join().expect("request thread"))
        .collect()
}

/// The worker id the log gave `pid` when it was spawned.
fn worker_id(herd: &Herd, pid: u32) -> u32 {
    herd.spawned_workers()
        .iter()
        .find(|(_, p)| *p == pid)
        .unwrap_or_else(|| panic!("pid {pid} was never spawned\n{}", herd.log_text()))
        .0
}

const DYNAMIC: &str = "pm = dynamic\npm.max_children = 8\npm.start_servers = 2\n\
                       pm.min_spare_servers = 1\npm.max_spare_servers = 3\n";

#[test]
fn dynamic_pool_starts_pm_start_servers_workers() {
    let addr = addr();
    let herd = app_pool(&addr, DYNAMIC, "");
    herd.wait_log("started:", 1, LIMIT);
    // php-fpm starts pm.start_servers (2) workers at once: not
    // min_spare_servers (1), not max_spare_servers (3).
    let ready: BTreeSet<u32> = herd.wait_ready(2).into_iter().collect();
    let v = wait_total(&addr, 2, Duration::from_secs(5));
    assert_eq!(count(&v, "idle processes"), 2, "{v}");
    assert_eq!(status_pids(&v), ready, "{v}");
    // Two idle workers are within the spares: no third one follows (the
    // pool's maintenance runs every second).
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(herd.worker_pids().len(), 2, "{}", herd.log_text());
    assert_eq!(status_pids(&status(&addr)), ready);
}

#[test]
fn a_rollout_of_a_dynamic_pool_replaces_its_workers_and_grows_no_more() {
    let addr = addr();
    let herd = Herd::start(&config(
        "control.listen = {dir}/ctl.sock\n",
        &[pool("app", &addr, DYNAMIC, "")],
    ));
    herd.wait_ready(2);
    let (code, out, err) = herd.ctl(&herd.dir.join("ctl.sock"), &["reload", "--force", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    // Two workers before, two of generation 2 after: the rollout's size is
    // fixed when it starts (it once grew with every worker it started).
    let v = wait_total(&addr, 2, Duration::from_secs(10));
    assert!(
        v["processes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["generation"] == 2),
        "{v}"
    );
    assert!(
        herd.log_lines("worker spawned").len() <= 4,
        "{}",
        herd.log_text()
    );
}

#[test]
fn dynamic_pool_grows_for_a_burst_then_reaps_its_youngest_idle_workers() {
    let addr = addr();
    let herd = app_pool(&addr, DYNAMIC, "");
    herd.wait_ready(1);
    let (id, oldest) = herd.spawned_workers()[0];
    assert_eq!(id, 1);

    // Six slow requests at once: two workers alone would serve them in
    // three rounds (4.5 s); the pool grows to meet the queue instead.
    let uris: Vec<String> = (0..6).map(|i| format!("/burst{i}?ms=1500")).collect();
    let sent = Instant::now();
    let burst = concurrently(&addr, &uris);
    let grown = wait_until(
        "the pool to grow to 6 workers",
        Duration::from_secs(4),
        || match total(&addr) {
            6.. => Ok(sent.elapsed()),
            n => Err(format!("{n} workers")),
        },
    );
    let replies = joined(burst);
    let done = sent.elapsed();
    for (r, took) in &replies {
        assert_eq!(r.status(), 200, "{}", r.text());
        assert!(
            *took < Duration::from_secs(6),
            "a burst request took {took:?}"
        );
    }
    let served_by: BTreeSet<u32> = replies.iter().map(|(r, _)| r.pid()).collect();
    assert!(
        served_by.len() >= 4,
        "6 concurrent requests served by only {served_by:?} (grew to 6 in {grown:?})"
    );
    assert!(done < Duration::from_secs(6), "the burst took {done:?}");

    // Idle now with more than max_spare (3) idle workers: the surplus is
    // stopped, youngest first, so the warm ones stay.
    let v = wait_total(&addr, 3, Duration::from_secs(8));
    let survivors = status_pids(&v);
    assert!(
        survivors.contains(&oldest),
        "the oldest worker {oldest} was reaped; left: {survivors:?}\n{}",
        herd.log_text()
    );
    let youngest_survivor = survivors
        .iter()
        .map(|&p| worker_id(&herd, p))
        .max()
        .unwrap();
    let reaped: Vec<u32> = herd
        .log_lines("stopping an idle worker")
        .iter()
        .filter_map(|l| support::field(l, "worker"))
        .collect();
    assert!(!reaped.is_empty(), "{}", herd.log_text());
    assert!(
        reaped.iter().all(|&id| id > youngest_survivor),
        "reaped workers {reaped:?} while younger worker {youngest_survivor} stayed\n{}",
        herd.log_text()
    );
    // The three left are the idle spares (max_spare_servers).
    assert_eq!(count(&status(&addr), "idle processes"), 3);
}

#[test]
fn ondemand_pool_starts_empty_spawns_one_worker_per_waiting_request_and_reaps_idle_ones() {
    let addr = addr();
    let herd = app_pool(
        &addr,
        "pm = ondemand\npm.max_children = 4\npm.process_idle_timeout = 1s\n",
        "",
    );
    herd.wait_log("started:", 1, LIMIT);
    let v = status(&addr);
    assert_eq!(count(&v, "total processes"), 0, "{v}");
    assert!(herd.worker_pids().is_empty(), "{}", herd.log_text());

    let (first, _) = get_within(&addr, "/first", LIMIT);
    assert_eq!(first.status(), 200, "{}", first.text());
    assert_eq!(herd.worker_pids(), vec![first.pid()]);

    // Four slow requests at once, one idle worker: three wait, and three
    // workers start at once for them (php-fpm starts one or two).
    let uris: Vec<String> = (0..4).map(|i| format!("/slow{i}?ms=1500")).collect();
    let sent = Instant::now();
    let replies = joined(concurrently(&addr, &uris));
    let took = sent.elapsed();
    let idle_from = Instant::now();
    for (r, _) in &replies {
        assert_eq!(r.status(), 200, "{}", r.text());
    }
    let served_by: BTreeSet<u32> = replies.iter().map(|(r, _)| r.pid()).collect();
    assert_eq!(
        served_by.len(),
        4,
        "served by {served_by:?}\n{}",
        herd.log_text()
    );
    assert!(
        took < Duration::from_secs(3),
        "4 requests of 1.5 s on up to 4 workers took {took:?}"
    );
    // Not idle for process_idle_timeout yet: all four are still there.
    assert_eq!(total(&addr), 4);

    // Each worker idle for pm.process_idle_timeout (1 s) is stopped at the
    // next maintenance tick (1 s): all four are gone within 1 s + a tick,
    // plus a second of slack for the exits.
    let within = Duration::from_secs(3).saturating_sub(idle_from.elapsed());
    wait_total(&addr, 0, within);
    for pid in &served_by {
        wait_for(
            &format!("idle worker {pid} to exit"),
            Duration::from_secs(5),
            || (!alive(*pid)).then_some(()),
        );
    }
    assert_eq!(herd.log_lines("stopping an idle worker").len(), 4);
}

#[test]
fn reaching_pm_max_children_is_counted_and_logged_once_per_episode() {
    let addr = addr();
    let herd = app_pool(
        &addr,
        "pm = ondemand\npm.max_children = 2\npm.process_idle_timeout = 10s\n",
        "",
    );
    herd.wait_log("started:", 1, LIMIT);
    // Five slow requests for at most two workers: three wait in the queue.
    let uris: Vec<String> = (0..5).map(|i| format!("/q{i}?ms=1000")).collect();
    let burst = concurrently(&addr, &uris);
    wait_until(
        "status to count max children reached",
        Duration::from_secs(5),
        || {
            let v = status(&addr);
            (count(&v, "max children reached") >= 1)
                .then_some(())
                .ok_or_else(|| v.to_string())
        },
    );
    let replies = joined(burst);
    for (r, _) in &replies {
        assert_eq!(r.status(), 200, "a queued request was served: {}", r.text());
    }
    let served_by: BTreeSet<u32> = replies.iter().map(|(r, _)| r.pid()).collect();
    assert_eq!(
        served_by.len(),
        2,
        "never more than max_children: {served_by:?}"
    );
    assert_eq!(herd.spawned_workers().len(), 2, "{}", herd.log_text());
    // One episode of queueing at the limit: counted and logged once, not
    // once per waiting request or per tick.
    assert_eq!(count(&status(&addr), "max children reached"), 1);
    let warned = herd.log_lines("server reached pm.max_children");
    assert_eq!(warned.len(), 1, "{}", herd.log_text());
    assert!(warned[0].contains(" WARN "), "{warned:?}");
}

#[test]
fn sigttin_adds_a_worker_and_sigttou_removes_idle_ones() {
    let addr = addr();
    let mut herd = app_pool(&addr, "pm = static\npm.max_children = 2\n", "");
    herd.wait_ready(2);
    herd.signal(libc::SIGTTIN);
    herd.wait_log("pm.max_children is now 3 (was 2)", 1, LIMIT);
    wait_total(&addr, 3, LIMIT);
    herd.wait_ready(3);
    let workers = herd.spawned_workers();
    assert_eq!(workers.len(), 3, "{}", herd.log_text());

    // Make the youngest worker the only busy one: two short requests take
    // the two older workers (the longest-running idle one is picked
    // first), the long one the youngest; then the short ones finish.
    let mut held = Vec::new();
    for (i, uri) in ["/a?ms=500", "/b?ms=500", "/c?ms=3500"].iter().enumerate() {
        held.extend(concurrently(&addr, &[uri.to_string()]));
        wait_for(
            &format!("{} busy workers", i + 1),
            Duration::from_secs(5),
            || (count(&status(&addr), "active processes") > i as u64).then_some(()),
        );
    }
    let long = held.pop().unwrap();
    for (r, _) in joined(held) {
        assert_eq!(r.status(), 200, "{}", r.text());
    }
    let v = status(&addr);
    let busy: Vec<u32> = v["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] != "Idle")
        .map(|p| p["pid"].as_u64().unwrap() as u32)
        .collect();
    assert_eq!(busy.len(), 1, "{v}");
    let busy = busy[0];
    assert_eq!(
        worker_id(&herd, busy),
        3,
        "precondition: the long request runs on the youngest worker"
    );

    // One signal at a time: two at once may arrive as one.
    herd.signal(libc::SIGTTOU);
    herd.wait_log("pm.max_children is now 2 (was 3)", 1, LIMIT);
    herd.signal(libc::SIGTTOU);
    herd.wait_log("pm.max_children is now 1 (was 2)", 1, LIMIT);
    // The two idle workers go at once; the busy youngest one stays and is
    // not cut short.
    let v = wait_total(&addr, 1, Duration::from_secs(5));
    assert_eq!(status_pids(&v), BTreeSet::from([busy]), "{v}");
    for (_, pid) in workers.iter().filter(|(_, p)| *p != busy) {
        wait_for(
            &format!("idle worker {pid} to exit"),
            Duration::from_secs(5),
            || (!alive(*pid)).then_some(()),
        );
    }
    let (r, _) = long.join().unwrap();
    assert_eq!(r.status(), 200, "{}", r.text());
    assert_eq!(r.pid(), busy);
    // And it keeps serving: it was not retired after its request.
    let (next, _) = get_within(&addr, "/after", LIMIT);
    assert_eq!(next.status(), 200, "{}", next.text());
    assert_eq!(next.pid(), busy);
    assert_eq!(total(&addr), 1);
    herd.stop();
}

#[test]
fn herd_ctl_scale_sets_the_number_of_workers() {
    let addr = addr();
    let herd = Herd::start(&config(
        "control.listen = {dir}/ctl.sock\n",
        &[pool("app", &addr, "pm = static\npm.max_children = 2\n", "")],
    ));
    herd.wait_ready(2);
    assert_eq!(total(&addr), 2);
    let sock = herd.dir.join("ctl.sock");
    let (code, out, err) = herd.ctl(&sock, &["scale", "app", "4"]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let v = wait_total(&addr, 4, LIMIT);
    herd.wait_ready(4);
    assert_eq!(status_pids(&v).len(), 4, "{v}");
    // The four serve: four slow requests at once run side by side.
    let uris: Vec<String> = (0..4).map(|i| format!("/s{i}?ms=500")).collect();
    let served_by: BTreeSet<u32> = joined(concurrently(&addr, &uris))
        .iter()
        .map(|(r, _)| r.pid())
        .collect();
    assert_eq!(served_by.len(), 4, "{served_by:?}");
}

/// `pm.max_children` of pool `pool` as every status format shows it: the
/// JSON page (in force, and the file's), the text page, the XML page, the
/// page's OpenMetrics and `herd ctl metrics`.
fn max_children_everywhere(herd: &Herd, addr: &str, pool: &str) -> [(u64, u64); 5] {
    let sock = herd.dir.join("ctl.sock");
    let field = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no '{name}' in:\n{text}"))
    };
    let page = |query: &str| support::fcgi::get(addr, &format!("/status?{query}")).body();
    let v = status(addr);
    let text = page("");
    let xml = page("xml");
    let om = page("openmetrics");
    let (code, ctl, err) = herd.ctl(&sock, &["metrics"]);
    assert_eq!(code, 0, "{ctl}{err}");
    let limit = format!("herd_workers_limit{{pool=\"{pool}\"}}");
    let config = format!("herd_workers_limit_config{{pool=\"{pool}\"}}");
    [
        (count(&v, "max children"), count(&v, "config max children")),
        (
            field(&text, "max children:"),
            field(&text, "config max children:"),
        ),
        (
            field(&xml.replace("</max-children>", ""), "<max-children>"),
            field(
                &xml.replace("</config-max-children>", ""),
                "<config-max-children>",
            ),
        ),
        (field(&om, &limit), field(&om, &config)),
        (field(&ctl, &limit), field(&ctl, &config)),
    ]
}

#[test]
fn scale_sets_pm_max_children_which_every_status_shows_and_a_reload_keeps_until_the_file_changes() {
    let (a, d) = (addr(), addr());
    let pools = |static_max: u32| {
        [
            pool(
                "app",
                &a,
                &format!("pm = static\npm.max_children = {static_max}\n"),
                "",
            ),
            pool("dyn", &d, DYNAMIC, ""),
        ]
    };
    let global = "control.listen = {dir}/ctl.sock\n";
    let herd = Herd::start(&config(global, &pools(2)));
    herd.wait_ready(4);
    let sock = herd.dir.join("ctl.sock");
    assert_eq!(max_children_everywhere(&herd, &a, "app"), [(2, 2); 5]);

    // A static pool: its size. The answer says so, and status agrees.
    let (code, out, err) = herd.ctl(&sock, &["scale", "app", "3"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("pool app: pm.max_children is now 3 (was 2): a static pool keeps 3 workers")
            && out.contains("the config file says 2, and a reload keeps 3"),
        "{out}"
    );
    wait_total(&a, 3, LIMIT);
    assert_eq!(max_children_everywhere(&herd, &a, "app"), [(3, 2); 5]);

    // A dynamic pool: the most it runs; it does not start workers for it.
    let (code, out, err) = herd.ctl(&sock, &["scale", "dyn", "5"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(
            "pool dyn: pm.max_children is now 5 (was 8): a dynamic pool runs at most 5 workers, keeping 1 to 3 idle, 2 now"
        ),
        "{out}"
    );
    let v = status(&d);
    assert_eq!(
        (count(&v, "max children"), count(&v, "config max children")),
        (5, 8)
    );
    assert_eq!(count(&v, "total processes"), 2, "{v}");

    // A reload that leaves the file's pm.max_children alone keeps 3, and
    // SIGTTIN (one more in every pool) counts from it.
    let (code, out, err) = herd.ctl(&sock, &["reload", "--force", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    herd.wait_log(
        "keeping pm.max_children 3 set at run time (the config file says 2)",
        1,
        LIMIT,
    );
    assert_eq!(count(&wait_total(&a, 3, LIMIT), "max children"), 3);
    herd.signal(libc::SIGTTIN);
    herd.wait_log("pm.max_children is now 4 (was 3)", 1, LIMIT);
    herd.wait_log("pm.max_children is now 6 (was 5)", 1, LIMIT);
    assert_eq!(count(&wait_total(&a, 4, LIMIT), "max children"), 4);

    // The file's pm.max_children changes: the file wins.
    herd.rewrite_config(&config(global, &pools(1)));
    let (code, out, err) = herd.ctl(&sock, &["reload", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    herd.wait_log(
        "pm.max_children changed in the config file (2 to 1): the run-time value 4 no longer applies",
        1,
        LIMIT,
    );
    wait_total(&a, 1, LIMIT);
    assert_eq!(max_children_everywhere(&herd, &a, "app"), [(1, 1); 5]);
    // The dynamic pool's file did not change: its 6 stays.
    assert_eq!(count(&status(&d), "max children"), 6);
}

#[test]
fn worker_max_memory_replaces_workers_that_grow_past_it() {
    let addr = addr();
    let herd = app_pool(
        &addr,
        "pm = static\npm.max_children = 1\n",
        "worker.max_memory = 1M\n",
    );
    let first = herd.wait_ready(1)[0];
    let over = herd.wait_log("past worker.max_memory", 1, Duration::from_secs(5));
    assert!(over[0].contains(&format!("pid={first}")), "{over:?}");
    wait_for(
        &format!("worker {first} to be replaced"),
        Duration::from_secs(5),
        || (!alive(first)).then_some(()),
    );
    let second = herd.wait_ready(2)[1];
    assert_ne!(second, first);
    // Every worker is past 1M, so they keep being replaced; requests are
    // served all the while.
    for i in 0..5 {
        let (r, _) = get_within(&addr, &format!("/m{i}"), LIMIT);
        assert_eq!(r.status(), 200, "{}", r.text());
    }
    let over = herd.wait_log("past worker.max_memory", 2, Duration::from_secs(5));
    let pids: BTreeSet<u32> = over
        .iter()
        .filter_map(|l| support::field(l, "pid"))
        .collect();
    assert!(pids.len() >= 2, "{over:?}");
    assert!(herd.running());
}

#[test]
fn sigusr1_reopens_the_error_log_and_the_access_log() {
    let addr = addr();
    let herd = app_pool(
        &addr,
        "pm = static\npm.max_children = 1\n",
        "access.log = {dir}/access.log\n",
    );
    herd.wait_ready(1);
    let error_log = herd.dir.join("herd.log");
    let access_log = herd.dir.join("access.log");
    let (r, _) = get_within(&addr, "/before-rotation", LIMIT);
    assert_eq!(r.status(), 200);
    wait_for("the first access log line", LIMIT, || {
        fs::read_to_string(&access_log)
            .ok()
            .filter(|t| t.contains("/before-rotation"))
    });

    // logrotate: rename both away, then SIGUSR1.
    let error_old = herd.dir.join("herd.log.1");
    let access_old = herd.dir.join("access.log.1");
    fs::rename(&error_log, &error_old).unwrap();
    fs::rename(&access_log, &access_old).unwrap();
    let error_size = fs::metadata(&error_old).unwrap().len();
    let access_size = fs::metadata(&access_old).unwrap().len();
    herd.signal(libc::SIGUSR1);

    // herd.log (what herd.log_text() reads) is the new file from here on.
    herd.wait_log("reopened", 1, LIMIT);
    let (r, _) = get_within(&addr, "/after-rotation", LIMIT);
    assert_eq!(r.status(), 200);
    let access = wait_for("a line in the new access log", LIMIT, || {
        fs::read_to_string(&access_log)
            .ok()
            .filter(|t| t.contains("/after-rotation"))
    });
    assert_eq!(access.lines().count(), 1, "{access}");
    assert!(!access.contains("/before-rotation"), "{access}");

    assert_eq!(
        fs::metadata(&error_old).unwrap().len(),
        error_size,
        "the renamed error log was written to after the rotation:\n{}",
        fs::read_to_string(&error_old).unwrap()
    );
    let old = fs::read_to_string(&access_old).unwrap();
    assert_eq!(old.len() as u64, access_size, "{old}");
    assert!(!old.contains("/after-rotation"), "{old}");
    assert!(herd.running());
}

#[test]
fn emergency_restart_threshold_reloads_after_workers_die_of_sigsegv() {
    let addr = addr();
    let herd = Herd::start(&config(
        "emergency_restart_threshold = 2\nemergency_restart_interval = 10s\n",
        &[pool("app", &addr, "pm = static\npm.max_children = 2\n", "")],
    ));
    let workers = herd.wait_ready(2);
    let (r, _) = get_within(&addr, "/", LIMIT);
    assert_eq!(r.generation(), 1);
    assert!(herd.log_lines("failed processes threshold").is_empty());

    // Rust's runtime in the example app catches the first SIGSEGV (its
    // stack-overflow handler, which then restores the default action and
    // returns); the next one kills it. Signal until it is gone.
    for &pid in &workers {
        wait_for(
            &format!("worker {pid} to die of SIGSEGV"),
            Duration::from_secs(5),
            || {
                if !alive(pid) {
                    return Some(());
                }
                unsafe { libc::kill(pid as i32, libc::SIGSEGV) };
                None
            },
        );
    }
    assert_eq!(
        herd.wait_log("killed by SIGSEGV", 2, Duration::from_secs(5))
            .len(),
        2
    );
    let lines = herd.wait_log("failed processes threshold", 1, Duration::from_secs(5));
    assert!(lines[0].contains(" ERROR "), "{lines:?}");

    // Every pool is reloaded: generation 2 replaces the workers.
    wait_until(
        "every worker to be of generation 2",
        Duration::from_secs(10),
        || {
            let v = status(&addr);
            let procs = v["processes"].as_array().unwrap().clone();
            let gens: Vec<&Value> = procs.iter().map(|p| &p["generation"]).collect();
            (v["generation"] == 2 && procs.len() == 2 && procs.iter().all(|p| p["generation"] == 2))
                .then_some(())
                .ok_or_else(|| format!("pool generation {}, workers' {gens:?}", v["generation"]))
        },
    );
    let (r, _) = get_within(&addr, "/", LIMIT);
    assert_eq!(r.status(), 200, "{}", r.text());
    assert_eq!(r.generation(), 2);
    assert_eq!(herd.log_lines("failed processes threshold").len(), 1);
    assert!(herd.running());
}

#[test]
fn process_max_caps_workers_across_every_pool() {
    let (a, b) = (addr(), addr());
    let static2 = "pm = static\npm.max_children = 2\n";
    let herd = Herd::start(&config(
        "process.max = 2\n",
        &[pool("a", &a, static2, ""), pool("b", &b, static2, "")],
    ));
    herd.wait_ready(2);
    let warned = herd.wait_log("process.max", 1, LIMIT);
    assert!(warned[0].contains(" WARN "), "{warned:?}");
    // An observation window: no third worker starts in it.
    thread::sleep(Duration::from_millis(1500));
    let spawned = herd.spawned_workers();
    assert_eq!(spawned.len(), 2, "{}", herd.log_text());
    let running = spawned.iter().filter(|(_, p)| alive(*p)).count();
    assert_eq!(running, 2);
    let (ta, tb) = (total(&a), total(&b));
    assert_eq!(ta + tb, 2, "a has {ta}, b has {tb}");
    for (addr, n) in [(&a, ta), (&b, tb)] {
        if n > 0 {
            let (r, took) = get_within(addr, "/", LIMIT);
            assert_eq!(r.status(), 200, "{}", r.text());
            assert!(took < Duration::from_secs(2), "{took:?}");
        }
    }
    assert_eq!(herd.log_lines("process.max").len(), 1, "warned once");
}

#[test]
fn a_pool_that_cannot_start_answers_503_while_another_serves() {
    let (broken, good) = (addr(), addr());
    let herd = Herd::start(&config(
        "",
        &[
            format!(
                "[broken]\nlisten = {broken}\npm = static\npm.max_children = 1\n\
                 command = /bin/false\n{}pm.status_path = /status\n",
                user_line()
            ),
            pool("good", &good, "pm = static\npm.max_children = 2\n", ""),
        ],
    ));
    let good_pids: BTreeSet<u32> = herd.wait_ready(2).into_iter().collect();

    // Once the broken pool's workers have failed a few times, its requests
    // are refused, and never left to wait for a worker that cannot come.
    wait_until(
        "the broken pool to answer 503",
        Duration::from_secs(6),
        || {
            let (r, took) = get_within(&broken, "/", Duration::from_secs(5));
            assert!(
                took < Duration::from_millis(2500),
                "the answer took {took:?}"
            );
            match r.status() {
                503 => Ok(()),
                other => Err(format!("{other} after {took:?}")),
            }
        },
    );
    let (r, took) = get_within(&broken, "/again", Duration::from_secs(5));
    assert_eq!(r.status(), 503, "{}", r.text());
    assert!(took < Duration::from_millis(500), "503 after {took:?}");
    let v = status(&broken);
    let state = v["state"].as_str().unwrap_or_else(|| panic!("{v}"));
    // It says why: no worker could start.
    assert!(state != "ok" && state.contains("fail"), "{v}");

    // The other pool never notices.
    let v = status(&good);
    assert_eq!(v["state"], "ok", "{v}");
    assert_eq!(count(&v, "total processes"), 2, "{v}");
    for i in 0..5 {
        let (r, took) = get_within(&good, &format!("/g{i}"), LIMIT);
        assert_eq!(r.status(), 200, "{}", r.text());
        assert!(took < Duration::from_secs(1), "{took:?}");
        assert!(
            good_pids.contains(&r.pid()),
            "{} not in {good_pids:?}",
            r.pid()
        );
    }
    assert!(herd.running());
}

/// The nice value of a process (field 19 of /proc/<pid>/stat).
fn nice(pid: u32) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    rest.split_whitespace().nth(16).unwrap().parse().unwrap()
}

#[test]
fn process_priority_sets_the_master_and_the_workers_apart() {
    if !support::is_root() {
        return support::skip("not root: cannot lower a nice value");
    }
    let (a, b) = (addr(), addr());
    let herd = Herd::start(&config(
        "process.priority = -5\n",
        &[
            pool(
                "a",
                &a,
                "pm = static\npm.max_children = 1\n",
                "process.priority = 5\n",
            ),
            pool("b", &b, "pm = static\npm.max_children = 1\n", ""),
        ],
    ));
    herd.wait_ready(2);
    assert_eq!(nice(herd.pid()), -5, "the master's own");
    let pa = support::fcgi::get(&a, "/").pid();
    let pb = support::fcgi::get(&b, "/").pid();
    assert_eq!(nice(pa), 5, "pool a's process.priority");
    assert_eq!(nice(pb), 0, "pool b's workers do not inherit the master's");
}

/// A thread's scheduling policy, as the kernel reports it
/// (`SCHED_RESET_ON_FORK` included).
fn policy(tid: u32) -> libc::c_int {
    // SAFETY: a query on a thread id.
    unsafe { libc::sched_getscheduler(tid as libc::pid_t) }
}

/// "Max realtime timeout" of /proc/<pid>/limits: the soft limit.
fn rt_limit(pid: u32) -> String {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max realtime timeout"))
        .unwrap_or_else(|| panic!("{limits}"));
    line.split_whitespace().nth(3).unwrap().to_string()
}

/// A thread's static priority (1 to 99 under SCHED_FIFO, 0 otherwise).
fn priority(tid: u32) -> i32 {
    let mut param = libc::sched_param { sched_priority: -1 };
    // SAFETY: sched_getparam writes into the struct it is given.
    assert_eq!(
        unsafe { libc::sched_getparam(tid as libc::pid_t, &mut param) },
        0
    );
    param.sched_priority
}

/// The master's policy while `master.realtime` is paused.
fn other_paused() -> libc::c_int {
    libc::SCHED_OTHER | libc::SCHED_RESET_ON_FORK
}

fn wait_for_policy(tid: u32, any_of: &[libc::c_int]) {
    wait_until("the master's policy", Duration::from_secs(60), || {
        let p = policy(tid);
        if any_of.contains(&p) {
            Ok(())
        } else {
            Err(format!("policy {p:#x}, want one of {any_of:x?}"))
        }
    });
}

/// Keeps every CPU busy from this process (bounded by `limit`) until the
/// returned flag is set.
fn saturate(
    limit: Duration,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    Vec<thread::JoinHandle<()>>,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let cpus = thread::available_parallelism().map_or(2, |n| n.get());
    let spinners = (0..cpus)
        .map(|_| {
            let stop = stop.clone();
            thread::spawn(move || {
                let began = Instant::now();
                while !stop.load(Ordering::Relaxed) && began.elapsed() < limit {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    (stop, spinners)
}

/// herd with `global` lines and one pool of `n` workers, ready; `None`
/// (skipped) when not root.
fn realtime_herd(global: &str, n: u32) -> Option<(Herd, String)> {
    if !support::is_root() {
        support::skip("not root: SCHED_FIFO needs the privilege");
        return None;
    }
    let a = addr();
    let herd = Herd::start(&config(
        global,
        &[pool(
            "a",
            &a,
            &format!("pm = static\npm.max_children = {n}\n"),
            "",
        )],
    ));
    herd.wait_ready(n as usize);
    Some((herd, a))
}

#[test]
fn the_master_leaves_sched_fifo_while_the_cpus_are_saturated_and_comes_back() {
    let Some((herd, a)) = realtime_herd("log_level = debug\n", 1) else {
        return;
    };
    let fifo = libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK;
    let master = herd.pid();
    // Wait for spare CPU time (other tests may be busy), then take it all.
    wait_for_policy(master, &[fifo]);
    let (stop, spinners) = saturate(Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut paused = false;
    while !paused && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        paused = policy(master) == other_paused();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in spinners {
        s.join().unwrap();
    }
    assert!(paused, "still {:#x} with every CPU busy", policy(master));
    // With the CPUs free again, it is back.
    wait_for_policy(master, &[fifo]);
    assert_eq!(priority(master), 1);
    let log = fs::read_to_string(herd.dir.join("herd.log")).unwrap();
    assert!(log.contains("paused: the CPUs are saturated"), "{log}");
    assert!(log.contains("master.realtime resumed"), "{log}");
    // Serving all along.
    let (r, _) = get_within(&a, "/after", LIMIT);
    assert_eq!(r.status(), 200, "{}", r.text());
}

#[test]
fn the_master_relays_under_sched_fifo_and_nothing_it_starts_inherits_it() {
    let Some((herd, a)) = realtime_herd("", 2) else {
        return;
    };
    let fifo = libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK;
    let master = herd.pid();
    // By default under SCHED_FIFO, priority 1; under the ordinary policy
    // while the CPUs are saturated (other tests may keep them so), but
    // with the policy's reset-on-fork flag either way.
    wait_for_policy(master, &[fifo, other_paused()]);
    if policy(master) == fifo {
        assert_eq!(priority(master), 1, "the lowest real-time priority");
    }
    assert_eq!(rt_limit(master), "1000000", "the run limit, in µs");
    // The master's other threads, if any, and every worker: ordinary.
    for task in fs::read_dir(format!("/proc/{master}/task")).unwrap() {
        let tid: u32 = task.unwrap().file_name().to_str().unwrap().parse().unwrap();
        if tid != master {
            assert_eq!(policy(tid), libc::SCHED_OTHER, "thread {tid}");
        }
    }
    let workers = herd.worker_pids();
    assert_eq!(workers.len(), 2, "{workers:?}");
    for pid in workers {
        assert_eq!(policy(pid), libc::SCHED_OTHER, "worker {pid}");
        assert_eq!(
            rt_limit(pid),
            "unlimited",
            "worker {pid} gets the limit back"
        );
    }
    for i in 0..4 {
        let (r, _) = get_within(&a, &format!("/r{i}"), LIMIT);
        assert_eq!(r.status(), 200, "{}", r.text());
    }
    assert!(
        fs::read_to_string(herd.dir.join("herd.log"))
            .unwrap()
            .contains("master runs under SCHED_FIFO"),
        "it says so"
    );
    drop(herd);

    // Turned off: the ordinary policy and limit.
    let b = addr();
    let herd = Herd::start(&config(
        "master.realtime = no\n",
        &[pool("b", &b, "pm = static\npm.max_children = 1\n", "")],
    ));
    herd.wait_ready(1);
    assert_eq!(policy(herd.pid()), libc::SCHED_OTHER);
    assert_eq!(rt_limit(herd.pid()), "unlimited");
    drop(herd);

    // A multi-threaded master: its runtime's threads take the policy, the
    // main thread (which only waits) does not.
    let Some((herd, _)) = realtime_herd("master.threads = 2\n", 1) else {
        return;
    };
    let master = herd.pid();
    let mut runtime_threads = 0;
    for task in fs::read_dir(format!("/proc/{master}/task")).unwrap() {
        let tid: u32 = task.unwrap().file_name().to_str().unwrap().parse().unwrap();
        let comm = fs::read_to_string(format!("/proc/{master}/task/{tid}/comm")).unwrap();
        if tid == master {
            assert_eq!(policy(tid) & !libc::SCHED_RESET_ON_FORK, libc::SCHED_OTHER);
        } else if comm.trim() == "herd" {
            runtime_threads += 1;
            wait_for_policy(tid, &[fifo, other_paused()]);
        }
    }
    assert!(runtime_threads >= 2, "{runtime_threads} runtime threads");
}

#[test]
fn a_new_worker_warms_up_behind_serving_ones_at_a_lower_priority() {
    if !support::is_root() {
        return support::skip("not root: a lowered nice value could not be raised again");
    }
    let a = addr();
    let herd = Herd::start(&config(
        "control.listen = {dir}/ctl.sock\n",
        &[pool(
            "a",
            &a,
            "pm = static\npm.max_children = 1\n",
            "process.priority = 2\nwarmup.request[] = /?ms=1500\n",
        )],
    ));
    herd.wait_ready(1);
    let old = support::fcgi::get(&a, "/").pid();
    assert_eq!(
        nice(old),
        2,
        "the first worker starts at the pool's priority"
    );
    let (code, out, err) = herd.ctl(&herd.dir.join("ctl.sock"), &["reload", "--force"]);
    assert_eq!(code, 0, "{out}{err}");
    // While it warms up (1.5 s), the new worker runs 10 steps lower.
    let new = wait_until(
        "the new worker warming at nice 12",
        Duration::from_secs(10),
        || {
            let pids: Vec<u32> = herd
                .worker_pids()
                .into_iter()
                .filter(|p| *p != old)
                .collect();
            match pids.as_slice() {
                [p] if alive(*p) && nice(*p) == 12 => Ok(*p),
                _ => Err(format!("{pids:?}")),
            }
        },
    );
    assert_eq!(nice(old), 2, "the serving worker keeps its priority");
    // Through its gate, it serves at the pool's priority.
    wait_until(
        "the new worker serving at nice 2",
        Duration::from_secs(15),
        || {
            let pid = support::fcgi::get(&a, "/").pid();
            if pid == new && nice(new) == 2 {
                Ok(())
            } else {
                Err(format!("served by {pid}, new {new} at nice {}", nice(new)))
            }
        },
    );
}
