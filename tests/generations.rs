//! Generations: reloads under load, refused deploys, rollbacks, hard
//! restarts, refused configs and symlink deploys, on the real binary with
//! example-app workers, driven through `herd ctl` and SIGUSR2.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::fcgi;
use support::{Herd, user_line, wait_for};

/// The example app as the worker program.
const APP: &str = "command = {herd}\nargs = example-app\n";

/// One pool `app` of `workers` static workers running `program` (the
/// `command` and `args` lines), with a control socket at `{dir}/ctl.sock`.
fn config(addr: &str, workers: u32, program: &str, extra: &str) -> String {
    format!(
        "[global]\nerror_log = {{dir}}/herd.log\ncontrol.listen = {{dir}}/ctl.sock\n\
         [app]\nlisten = {addr}\npm = static\npm.max_children = {workers}\n\
         {program}{user}{extra}",
        user = user_line()
    )
}

fn local_addr() -> String {
    format!("127.0.0.1:{}", support::free_port())
}

fn socket(herd: &Herd) -> PathBuf {
    herd.dir.join("ctl.sock")
}

/// `herd ctl --socket {dir}/ctl.sock ARGS...`.
fn ctl(herd: &Herd, args: &[&str]) -> (i32, String, String) {
    herd.ctl(&socket(herd), args)
}

/// The pool's entry of `herd ctl status --json`.
fn pool_status(herd: &Herd) -> Value {
    herd.ctl_status(&socket(herd))["pools"][0].clone()
}

/// A live worker as status shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Worker {
    pid: u32,
    generation: u32,
    state: String,
    retiring: bool,
}

fn workers(pool: &Value) -> Vec<Worker> {
    pool["processes"]
        .as_array()
        .unwrap_or_else(|| panic!("no processes in {pool}"))
        .iter()
        .map(|p| Worker {
            pid: p["pid"].as_u64().unwrap() as u32,
            generation: p["generation"].as_u64().unwrap() as u32,
            state: p["state"].as_str().unwrap_or("").to_string(),
            retiring: p["retiring"] == true,
        })
        .collect()
}

/// Waits until the pool has exactly `n` workers, all of `generation`,
/// none starting or retiring; returns their pids.
fn wait_workers(herd: &Herd, n: usize, generation: u32, within: Duration) -> BTreeSet<u32> {
    let deadline = Instant::now() + within;
    loop {
        let st = pool_status(herd);
        let ws = workers(&st);
        let settled = ws.len() == n
            && ws.iter().all(|w| {
                w.generation == generation
                    && !w.retiring
                    && matches!(w.state.as_str(), "Idle" | "Running")
            });
        if settled {
            return ws.iter().map(|w| w.pid).collect();
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {within:?} waiting for {n} workers of generation \
                 {generation}; last status:\n{st:#}"
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Starts herd with `text` and waits for `n` ready workers and the control socket.
fn start(text: &str, n: usize) -> Herd {
    let herd = Herd::start(text);
    herd.wait_ready(n);
    wait_for("the control socket", Duration::from_secs(10), || {
        let (code, _, _) = ctl(&herd, &["status", "--json"]);
        (code == 0).then_some(())
    });
    herd
}

// ---- a bounded client load -------------------------------------------

/// One request of a load loop.
#[derive(Clone, Debug)]
struct Sample {
    client: usize,
    slow: bool,
    start: Instant,
    end: Instant,
    /// (status, generation, pid), or what went wrong.
    outcome: Result<(u16, u32, u32), String>,
}

impl Sample {
    fn took(&self) -> Duration {
        self.end - self.start
    }
    fn ok_from(&self) -> Option<u32> {
        match &self.outcome {
            Ok((200, g, _)) => Some(*g),
            _ => None,
        }
    }
    fn generation(&self) -> Option<u32> {
        self.outcome.as_ref().ok().map(|o| o.1)
    }
}

/// Client threads, each looping on one URI on fresh connections.
type Load = support::load::Load<Sample>;

impl Load {
    /// `clients`: (uri, slow) per client thread.
    fn start(addr: &str, clients: &[(&str, bool)], max_time: Duration, max_count: usize) -> Load {
        let clients = clients
            .iter()
            .enumerate()
            .map(|(client, &(uri, slow))| {
                let (addr, uri) = (addr.to_string(), uri.to_string());
                move || {
                    let start = Instant::now();
                    let outcome =
                        fcgi::try_get(&addr, &uri, Duration::from_secs(5)).and_then(|r| {
                            let body = r.body();
                            let status = r.status();
                            match (support::field(&body, "gen"), support::field(&body, "pid")) {
                                (Some(g), Some(p)) => Ok((status, g, p)),
                                _ => Err(format!("status {status}, body {body:?}")),
                            }
                        });
                    let failed = outcome.is_err();
                    let sample = Sample {
                        client,
                        slow,
                        start,
                        end: Instant::now(),
                        outcome,
                    };
                    (sample, failed)
                }
            })
            .collect();
        Load::spawn(clients, max_time, max_count)
    }

    /// Waits until every client has `n` replies that started after `since`.
    fn wait_each(&self, clients: usize, n: usize, since: Instant, within: Duration) {
        wait_for(
            &format!("{clients} clients with {n} requests each"),
            within,
            || {
                let s = self.snapshot();
                (0..clients)
                    .all(|c| {
                        s.iter()
                            .filter(|x| x.client == c && x.start > since)
                            .count()
                            >= n
                    })
                    .then_some(())
            },
        )
    }
}

fn not_ok(samples: &[Sample]) -> Vec<&Sample> {
    samples.iter().filter(|s| s.ok_from().is_none()).collect()
}

fn spawned_of(herd: &Herd, generation: u32) -> usize {
    herd.log_lines("worker spawned")
        .iter()
        .filter(|l| support::field(l, "generation") == Some(generation))
        .count()
}

// ---- 1. a reload under load ------------------------------------------

#[test]
fn a_reload_under_load_drops_nothing_and_moves_every_request_to_the_new_generation() {
    let addr = local_addr();
    let base = config(&addr, 3, APP, "rollout.surge = 1\n");
    let herd = start(&base, 3);
    let old = wait_workers(&herd, 3, 1, Duration::from_secs(10));

    const FAST: (&str, bool) = ("/?ms=5", false);
    const SLOW: (&str, bool) = ("/?ms=2000", true);
    let load = Load::start(
        &addr,
        &[FAST, FAST, FAST, SLOW],
        Duration::from_secs(12),
        3000,
    );
    let began = Instant::now();
    load.wait_each(
        3,
        10,
        began - Duration::from_secs(1),
        Duration::from_secs(5),
    );

    // The new generation: a new environment, and a 200 ms warm-up per
    // worker so that the rollout lasts long enough (about 600 ms) for the
    // two generations to serve side by side under load.
    herd.rewrite_config(&format!(
        "{base}env[VERSION] = 2\nwarmup.request[] = /?ms=200\n"
    ));
    let reload_at = Instant::now();
    let (code, out, err) = ctl(&herd, &["reload", "--wait"]);
    let done_at = Instant::now();
    assert_eq!(code, 0, "reload --wait: {out}{err}");

    // A little more load once the rollout is done: every fast client 20
    // requests, the slow one a whole request.
    load.wait_each(3, 20, done_at, Duration::from_secs(5));
    wait_for(
        "a slow request that started after the rollout",
        Duration::from_secs(6),
        || {
            load.snapshot()
                .iter()
                .any(|s| s.slow && s.start > done_at)
                .then_some(())
        },
    );
    let samples = load.finish();

    let bad = not_ok(&samples);
    assert!(
        bad.is_empty(),
        "{} of {} requests failed during the reload: {bad:#?}",
        bad.len(),
        samples.len()
    );
    let too_slow: Vec<&Sample> = samples
        .iter()
        .filter(|s| !s.slow && s.took() > Duration::from_millis(2500))
        .collect();
    assert!(too_slow.is_empty(), "fast requests held up: {too_slow:#?}");
    // The slow requests in flight when the reload began finished on the
    // old workers that had them: a retiring worker finishes its request,
    // it is neither killed nor is the request retried elsewhere.
    let spanning: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.slow && s.start < reload_at && s.end > reload_at)
        .collect();
    assert!(
        !spanning.is_empty(),
        "a slow request was in flight when the reload began (the test's premise)"
    );
    for s in &spanning {
        let (_, generation, pid) = s.outcome.clone().unwrap();
        assert!(
            generation == 1 && old.contains(&pid),
            "the slow request in flight over the reload was answered by its old worker: {s:?}"
        );
    }
    let retried = herd.log_lines("trying another worker");
    assert!(retried.is_empty(), "requests were retried: {retried:?}");

    // After the rollout: only generation 2 answers.
    let late: Vec<&Sample> = samples.iter().filter(|s| s.start > done_at).collect();
    let stale: Vec<&&Sample> = late.iter().filter(|s| s.generation() != Some(2)).collect();
    assert!(
        stale.is_empty(),
        "requests after the rollout served by an old generation: {stale:#?}"
    );

    // Once a generation-2 worker had answered, the newest generation took
    // most of the fast requests. (This alone does not tell newest-first
    // from oldest-first dispatch: four clients keep three workers busy
    // most of the time. The rollback test checks the dispatch order with
    // one sequential client.)
    let first_new = samples
        .iter()
        .filter(|s| s.generation() == Some(2))
        .map(|s| s.end)
        .min()
        .expect("a generation-2 reply");
    let later: Vec<&Sample> = samples
        .iter()
        .filter(|s| !s.slow && s.start > first_new)
        .collect();
    let new = later.iter().filter(|s| s.generation() == Some(2)).count();
    let during: Vec<&Sample> = later
        .iter()
        .copied()
        .filter(|s| s.start < done_at)
        .collect();
    let during_new = during.iter().filter(|s| s.generation() == Some(2)).count();
    eprintln!(
        "after the first gen-2 reply: {new}/{} fast requests on gen 2; \
         before the rollout was done: {during_new}/{}; rollout took {:?}",
        later.len(),
        during.len(),
        done_at - reload_at
    );
    assert!(
        new * 100 > later.len() * 80,
        "only {new} of {} fast requests after the first generation-2 reply went to generation 2",
        later.len()
    );

    let st = pool_status(&herd);
    let d = &st["deploy"];
    assert_eq!(d["state"], "stable", "{st:#}");
    assert_eq!(d["generation"], 2, "{st:#}");
    assert_eq!(d["serving"], 2, "{st:#}");
    let now = wait_workers(&herd, 3, 2, Duration::from_secs(5));
    assert!(now.is_disjoint(&old), "old {old:?}, now {now:?}");
    assert!(!herd.log_lines("rollout done").is_empty());
}

// ---- 2, 3. broken deploys are refused --------------------------------

/// Rolls out `broken` under a client loop and checks that it is refused
/// with a reason naming every word of `reason`, that nothing of it ever
/// served, that generation 1 keeps its full size, and that the master
/// does not spin.
fn assert_refused(herd: &Herd, addr: &str, workers: usize, broken: &str, reason: &[&str]) {
    let old = wait_workers(herd, workers, 1, Duration::from_secs(10));
    let load = Load::start(addr, &[("/?ms=20", false)], Duration::from_secs(12), 2000);
    load.wait_each(
        1,
        5,
        Instant::now() - Duration::from_secs(1),
        Duration::from_secs(5),
    );

    let master = herd.pid();
    let ticks_before = support::cpu_ticks(master);
    let watch = Instant::now();
    herd.rewrite_config(broken);
    let (code, out, err) = ctl(herd, &["reload", "--wait"]);
    let said = format!("{out}{err}");
    assert_eq!(code, 1, "reload --wait of a broken deploy: {said}");
    assert!(said.contains("deploy refused"), "{said}");
    for word in reason {
        assert!(said.contains(word), "the refusal names {word:?}: {said}");
    }
    let refused_at = Instant::now();

    let st = pool_status(herd);
    let d = &st["deploy"];
    assert_eq!(d["state"], "refused", "{st:#}");
    assert_eq!(d["serving"], 1, "{st:#}");
    assert_eq!(d["generation"], 2, "{st:#}");
    let why = d["reason"].as_str().unwrap_or_default();
    for word in reason {
        assert!(why.contains(word), "status reason names {word:?}: {st:#}");
    }
    let g2 = d["generations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["number"] == 2)
        .unwrap_or_else(|| panic!("generation 2 in status: {st:#}"));
    assert_eq!(g2["state"], "refused", "{st:#}");
    assert_eq!(
        wait_workers(herd, workers, 1, Duration::from_secs(5)),
        old,
        "generation 1 keeps its workers, all of them"
    );

    // An observation window, not a wait for readiness: what the master
    // does over the two seconds after a refusal.
    let spawned = spawned_of(herd, 2);
    thread::sleep(Duration::from_secs(2));
    let ticks = support::cpu_ticks(master) - ticks_before;
    let watched = watch.elapsed();
    assert_eq!(
        spawned_of(herd, 2),
        spawned,
        "no generation-2 worker starts after the refusal:\n{}",
        herd.log_text()
    );
    assert!(
        spawned <= 3,
        "{spawned} generation-2 workers for rollout.max_failures = 3"
    );
    eprintln!(
        "master used {ticks} ticks over {watched:?}; refused after {:?}",
        refused_at - watch
    );
    assert!(
        ticks < 60,
        "the master used {ticks} clock ticks of CPU in {watched:?} around a refusal"
    );
    assert_eq!(wait_workers(herd, workers, 1, Duration::from_secs(2)), old);

    let samples = load.finish();
    let bad = not_ok(&samples);
    assert!(bad.is_empty(), "failed requests: {bad:#?}");
    let wrong: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.generation() != Some(1))
        .collect();
    assert!(
        wrong.is_empty(),
        "served by a refused generation: {wrong:#?}"
    );
    assert!(samples.iter().any(|s| s.start > refused_at));
    assert!(!herd.log_lines("deploy refused").is_empty());
}

#[test]
fn a_deploy_whose_warmup_fails_is_refused_and_the_old_generation_keeps_serving() {
    let addr = local_addr();
    let base = config(
        &addr,
        3,
        APP,
        "rollout.surge = 1\nrollout.max_failures = 3\n",
    );
    let herd = start(&base, 3);
    let broken = format!("{base}warmup.request[] = /warm?status=500\n");
    assert_refused(&herd, &addr, 3, &broken, &["warmup"]);
}

#[test]
fn a_deploy_whose_program_exits_at_once_is_refused_and_the_next_reload_tries_again() {
    let addr = local_addr();
    let extra = "rollout.surge = 1\nrollout.max_failures = 3\n";
    let base = config(&addr, 3, APP, extra);
    let herd = start(&base, 3);
    let broken = config(
        &addr,
        3,
        "command = {herd}\nargs = example-app --bogus\n",
        extra,
    );
    assert_refused(&herd, &addr, 3, &broken, &["exited"]);

    // The config is fixed: the same as generation 1, yet the reload rolls
    // out again rather than calling it unchanged.
    herd.rewrite_config(&base);
    let (code, out, err) = ctl(&herd, &["reload", "--wait"]);
    assert_eq!(code, 0, "the fixed deploy: {out}{err}");
    let st = pool_status(&herd);
    assert_eq!(st["deploy"]["state"], "stable", "{st:#}");
    assert_eq!(st["deploy"]["serving"], 3, "{st:#}");
    wait_workers(&herd, 3, 3, Duration::from_secs(5));
    let r = fcgi::get(&addr, "/");
    assert_eq!((r.status(), r.generation()), (200, 3), "{}", r.text());
}

// ---- 4. fatal exit codes ---------------------------------------------

#[test]
fn a_fatal_exit_code_refuses_the_generation_at_the_first_failure() {
    let addr = local_addr();
    let extra = "rollout.surge = 1\nrollout.max_failures = 3\n";
    let herd = start(&config(&addr, 2, APP, extra), 2);
    let old = wait_workers(&herd, 2, 1, Duration::from_secs(10));
    herd.rewrite_config(&config(
        &addr,
        2,
        "command = /bin/sh\nargs = -c \"exit 3\"\n",
        &format!("{extra}worker.fatal_exit_codes = 3\n"),
    ));
    let (code, out, err) = ctl(&herd, &["reload", "--wait"]);
    let said = format!("{out}{err}");
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("deploy refused"), "{said}");
    assert!(
        said.contains("fatal") && said.contains("code 3"),
        "the refusal names the fatal exit code: {said}"
    );
    let st = pool_status(&herd);
    assert_eq!(st["deploy"]["state"], "refused", "{st:#}");
    assert_eq!(
        spawned_of(&herd, 2),
        1,
        "refused at the first failure, not after rollout.max_failures:\n{}",
        herd.log_text()
    );
    assert_eq!(wait_workers(&herd, 2, 1, Duration::from_secs(5)), old);
    let r = fcgi::get(&addr, "/");
    assert_eq!((r.status(), r.generation()), (200, 1), "{}", r.text());
    assert_eq!(spawned_of(&herd, 2), 1, "{}", herd.log_text());
}

// ---- 5. a rollback during a slow rollout -----------------------------

#[test]
fn a_rollback_never_prefers_the_generation_it_rolls_back_from() {
    let addr = local_addr();
    // Every worker of the original config takes 500 ms to pass its gate,
    // so the rollback (generation 3) takes a while, during which
    // generation 1 and 2 serve side by side.
    let base = config(
        &addr,
        3,
        APP,
        "rollout.surge = 1\nwarmup.timeout = 10s\nwarmup.request[] = /?ms=500\n",
    );
    let herd = start(&base, 3);
    wait_workers(&herd, 3, 1, Duration::from_secs(10));
    let slow = format!(
        "{}env[VERSION] = 2\n",
        base.replace("/?ms=500", "/?ms=2000")
    );
    herd.rewrite_config(&slow);
    let (code, out, err) = ctl(&herd, &["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("rolling out generation 2"), "{out}");

    let load = Load::start(&addr, &[("/?ms=5", false)], Duration::from_secs(12), 3000);
    // Generation 2's first worker passes its gate and takes traffic as the
    // newest generation; its second is still warming up.
    wait_for(
        "10 replies from generation 2",
        Duration::from_secs(8),
        || {
            (load
                .snapshot()
                .iter()
                .filter(|s| s.generation() == Some(2))
                .count()
                >= 10)
                .then_some(())
        },
    );

    let rollback_asked = Instant::now();
    herd.rewrite_config(&base);
    let (code, out, err) = ctl(&herd, &["reload"]);
    let rollback_at = Instant::now();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("rolling out generation 3"), "{out}");

    // Where the deploy stood as the rollback began; checked below.
    let st = pool_status(&herd);

    wait_for("the rollback to finish", Duration::from_secs(10), || {
        let d = pool_status(&herd)["deploy"].clone();
        (d["state"] == "stable" && d["serving"] == 3).then_some(())
    });
    wait_workers(&herd, 3, 3, Duration::from_secs(5));
    load.wait_each(1, 5, Instant::now(), Duration::from_secs(5));
    let samples = load.finish();

    let bad = not_ok(&samples);
    assert!(bad.is_empty(), "failed requests: {bad:#?}");
    // Before the rollback, generation 2 was the newest: once its worker was
    // ready, the one sequential client (so that worker was always idle)
    // got it for every request, not the older, longer-running workers.
    let first_new = samples
        .iter()
        .filter(|s| s.generation() == Some(2))
        .map(|s| s.end)
        .min()
        .unwrap();
    let rolling: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.start > first_new && s.end < rollback_asked)
        .collect();
    let elsewhere: Vec<&&Sample> = rolling
        .iter()
        .filter(|s| s.generation() != Some(2))
        .collect();
    assert!(
        !rolling.is_empty() && elsewhere.is_empty(),
        "with an idle generation-2 worker, {} of {} requests went to an older generation: {elsewhere:#?}",
        elsewhere.len(),
        rolling.len()
    );

    let gens = st["deploy"]["generations"].as_array().unwrap().clone();
    let of = |n: u32| {
        gens.iter()
            .find(|g| g["number"] == n)
            .unwrap_or_else(|| panic!("generation {n} in status: {st:#}"))
    };
    assert_eq!(of(2)["state"], "superseded", "{st:#}");
    assert!(
        of(2)["workers"].as_u64().unwrap() >= 1,
        "a ready generation-2 worker is still there (the test's premise): {st:#}"
    );

    let after: Vec<&Sample> = samples.iter().filter(|s| s.start > rollback_at).collect();
    let to_bad: Vec<&&Sample> = after.iter().filter(|s| s.generation() == Some(2)).collect();
    let on_one = after.iter().filter(|s| s.generation() == Some(1)).count();
    eprintln!(
        "after the rollback began: {} requests, {on_one} on generation 1, {} on 2",
        after.len(),
        to_bad.len()
    );
    assert!(
        to_bad.is_empty(),
        "{} requests went to the superseded generation 2 while generation 1 had idle workers",
        to_bad.len()
    );
    assert!(
        on_one > 0,
        "generation 1 served during the rollback (the test's premise)"
    );
    let rank = |n: u32| of(n)["rank"].as_u64().unwrap();
    assert!(
        rank(2) < rank(1) && rank(1) < rank(3),
        "ranks: the rollback first, then the last finished generation, the superseded one last: {st:#}"
    );
}

// ---- 6. hard restart -------------------------------------------------

#[test]
fn a_hard_restart_replaces_every_worker_at_once_and_queues_new_requests() {
    let addr = local_addr();
    let herd = start(&config(&addr, 3, APP, "worker.start_timeout = 5s\n"), 3);
    let old = wait_workers(&herd, 3, 1, Duration::from_secs(10));
    // One old worker is busy with a long request: a hard restart does not
    // wait for it.
    let long = {
        let addr = addr.clone();
        thread::spawn(move || fcgi::try_get(&addr, "/?ms=5000", Duration::from_secs(8)))
    };
    const C: (&str, bool) = ("/?ms=200", false);
    let load = Load::start(&addr, &[C, C], Duration::from_secs(12), 200);
    load.wait_each(
        2,
        2,
        Instant::now() - Duration::from_secs(1),
        Duration::from_secs(5),
    );

    let asked = Instant::now();
    let (code, out, err) = ctl(&herd, &["restart", "--hard"]);
    let answered = Instant::now();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("generation 2"), "{out}");
    wait_for(
        "every old worker, the busy one too, to be stopped",
        Duration::from_secs(2),
        || old.iter().all(|p| !support::alive(*p)).then_some(()),
    );
    let new = wait_workers(
        &herd,
        3,
        2,
        Duration::from_secs(6).saturating_sub(asked.elapsed()),
    );
    let replaced_in = asked.elapsed();
    assert!(new.is_disjoint(&old), "old {old:?}, new {new:?}");
    let replaced_at = Instant::now();
    load.wait_each(2, 3, replaced_at, Duration::from_secs(5));
    let samples = load.finish();

    // In-flight requests may fail; every one that arrived after the
    // restart was asked for is served, by the new generation.
    let after: Vec<&Sample> = samples.iter().filter(|s| s.start > answered).collect();
    let bad: Vec<&&Sample> = after.iter().filter(|s| s.ok_from() != Some(2)).collect();
    eprintln!(
        "replaced in {replaced_in:?}; {} failed, {} after",
        not_ok(&samples).len(),
        after.len()
    );
    assert!(
        bad.is_empty(),
        "requests after the hard restart not served by generation 2: {bad:#?}"
    );
    let before_fail: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.end < asked && s.ok_from().is_none())
        .collect();
    assert!(before_fail.is_empty(), "{before_fail:#?}");
    // The long request was cut short: an error, or a retry on a new worker.
    match long.join().unwrap() {
        Err(_) => {}
        Ok(r) => assert!(
            r.status() != 200 || support::field(&r.body(), "gen") == Some(2),
            "the long request finished on its old worker: {}",
            r.text()
        ),
    }
    assert!(
        !herd.log_lines("hard restart").is_empty(),
        "{}",
        herd.log_text()
    );
}

// ---- 7. a bad config is refused --------------------------------------

#[test]
fn a_reload_with_a_bad_config_is_refused_and_nothing_changes() {
    let addr = local_addr();
    let base = config(&addr, 2, APP, "");
    let herd = start(&base, 2);
    let old = wait_workers(&herd, 2, 1, Duration::from_secs(10));
    let bad = format!("{base}bogus.directive = 1\n");
    let line = bad.lines().count();
    herd.rewrite_config(&bad);
    let at = format!("herd.conf:{line}:");

    let (code, out, err) = ctl(&herd, &["reload", "--wait"]);
    let said = format!("{out}{err}");
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains(&at) && said.contains("bogus.directive"),
        "the error names {at} and the directive: {said}"
    );

    herd.signal(libc::SIGUSR2);
    herd.wait_log("reload refused", 2, Duration::from_secs(5));
    // The message goes on, with every error, on the following lines.
    let log = herd.log_text();
    assert_eq!(log.matches(&at).count(), 2, "{log}");

    let st = pool_status(&herd);
    assert_eq!(st["deploy"]["generation"], 1, "{st:#}");
    assert_eq!(st["deploy"]["state"], "stable", "{st:#}");
    assert_eq!(wait_workers(&herd, 2, 1, Duration::from_secs(2)), old);
    for _ in 0..4 {
        let r = fcgi::get(&addr, "/");
        assert_eq!(r.status(), 200, "{}", r.text());
        assert_eq!(r.generation(), 1);
        assert!(old.contains(&r.pid()));
    }
    assert_eq!(
        herd.log_lines("worker spawned").len(),
        2,
        "{}",
        herd.log_text()
    );
    assert!(herd.running());
}

// ---- 8. a symlink deploy ---------------------------------------------

#[test]
fn a_deploy_that_swaps_a_symlink_rolls_out_and_an_unchanged_one_does_not() {
    use std::os::unix::fs::PermissionsExt;
    let addr = local_addr();
    let dir = support::Dir::new();
    let script = format!("#!/bin/sh\nexec {} example-app\n", support::HERD);
    for v in ["v1", "v2"] {
        let d = dir.join(v);
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let app = d.join("app");
        std::fs::write(&app, &script).unwrap();
        std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::os::unix::fs::symlink("v1", dir.join("current")).unwrap();
    let text = config(&addr, 2, "command = {dir}/current/app\n", "");
    let herd = Herd::start_in(dir, &text);
    herd.wait_ready(2);
    wait_for("the control socket", Duration::from_secs(10), || {
        (ctl(&herd, &["status", "--json"]).0 == 0).then_some(())
    });
    let old = wait_workers(&herd, 2, 1, Duration::from_secs(10));

    // The deploy: `current` now points at v2 (same content, new path).
    let next = herd.dir.join("current.next");
    std::os::unix::fs::symlink("v2", &next).unwrap();
    std::fs::rename(&next, herd.dir.join("current")).unwrap();
    let (code, out, err) = ctl(&herd, &["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("rolling out generation 2"), "{out}{err}");
    wait_for("generation 2 to be stable", Duration::from_secs(10), || {
        let d = pool_status(&herd)["deploy"].clone();
        (d["state"] == "stable" && d["serving"] == 2).then_some(())
    });
    let new = wait_workers(&herd, 2, 2, Duration::from_secs(5));
    assert!(new.is_disjoint(&old));
    let r = fcgi::get(&addr, "/");
    assert_eq!((r.status(), r.generation()), (200, 2), "{}", r.text());

    // Nothing changed since: no new generation.
    let (code, out, err) = ctl(&herd, &["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("unchanged"), "{out}{err}");
    let st = pool_status(&herd);
    assert_eq!(st["deploy"]["generation"], 2, "{st:#}");
    assert_eq!(st["deploy"]["state"], "stable", "{st:#}");
    assert_eq!(wait_workers(&herd, 2, 2, Duration::from_secs(2)), new);
    assert_eq!(spawned_of(&herd, 3), 0, "{}", herd.log_text());
}
