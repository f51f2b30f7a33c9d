//! A fleet on loopback: two herd hosts behind one nginx upstream, or behind
//! HAProxy speaking FastCGI with health checks on herd's ping path (with
//! `contrib/haproxy/haproxy.cfg` itself). A deploy tool runs `herd ctl
//! reload --wait` host by host, and a host is taken out with a graceful
//! stop; clients see no failed request either way.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::haproxy::{self, HaProxy};
use support::nginx::{self, Nginx};
use support::{Dir, Herd, fcgi, user_line, wait_for};

/// One host: a pool of two example-app workers on its own TCP port, with
/// a 100 ms warm-up so that a rollout takes a while under load.
fn host_config(port: u16, release: u32, global_extra: &str) -> String {
    format!(
        "[global]\nerror_log = {{dir}}/herd.log\ncontrol.listen = {{dir}}/ctl.sock\n{global_extra}\
         [app]\nlisten = 127.0.0.1:{port}\npm = static\npm.max_children = 2\n\
         command = {{herd}}\nargs = example-app\n{user}\
         rollout.surge = 1\nwarmup.request[] = /?ms=100\nping.path = /herd-ping\n\
         env[RELEASE] = {release}\n",
        user = user_line()
    )
}

struct Host {
    herd: Herd,
    port: u16,
}

impl Host {
    fn start(global_extra: &str) -> Host {
        let port = support::free_port();
        let herd = Herd::start(&host_config(port, 1, global_extra));
        herd.wait_ready(2);
        Host { herd, port }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What a deploy tool does on this host: new config, then
    /// `herd ctl reload --wait`, which returns once the rollout is done.
    fn deploy(&self, release: u32, global_extra: &str) {
        self.herd
            .rewrite_config(&host_config(self.port, release, global_extra));
        let (code, out, err) = self
            .herd
            .ctl(&self.herd.dir.join("ctl.sock"), &["reload", "--wait"]);
        assert_eq!(code, 0, "reload --wait on port {}: {out}{err}", self.port);
    }

    fn served(&self, pid: u32) -> bool {
        self.herd.worker_pids().contains(&pid)
    }
}

/// nginx with both hosts in one upstream, configured as the README
/// recommends for a fleet: a host that refuses connections, times out or
/// answers 503 is skipped for the next one (`fastcgi_next_upstream`), and
/// never marked down for long (`max_fails=0`), so it is used again as soon
/// as it is back.
fn front(dir: &Dir, hosts: &[&Host]) -> Nginx {
    let servers: String = hosts
        .iter()
        .map(|h| format!("    server 127.0.0.1:{} max_fails=0;\n", h.port))
        .collect();
    Nginx::start(
        dir.path(),
        &format!("upstream fleet {{\n{servers}    keepalive 8;\n}}"),
        "location / {\n\
           include /etc/nginx/fastcgi_params;\n\
           fastcgi_keep_conn on;\n\
           fastcgi_pass fleet;\n\
           fastcgi_next_upstream error timeout http_503;\n\
           fastcgi_next_upstream_tries 2;\n\
         }",
    )
}

/// One request through nginx.
#[derive(Clone, Debug)]
struct Sample {
    start: Instant,
    end: Instant,
    slow: bool,
    /// (generation, worker pid), or what went wrong.
    outcome: Result<(u32, u32), String>,
}

/// Client threads looping through the front (nginx or HAProxy, over HTTP),
/// each on one URI.
type Load = support::load::Load<Sample>;

impl Load {
    fn start(port: u16, uris: &[&str], max_time: Duration, max_count: usize) -> Load {
        let clients = uris
            .iter()
            .map(|&uri| {
                let uri = uri.to_string();
                let slow = uri.contains("ms=4");
                move || {
                    let start = Instant::now();
                    let outcome = nginx::try_get(port, &uri, Duration::from_secs(10)).and_then(
                        |(status, body)| match (
                            status,
                            support::field(&body, "gen"),
                            support::field(&body, "pid"),
                        ) {
                            (200, Some(g), Some(p)) => Ok((g, p)),
                            _ => Err(format!("status {status}, body {body:?}")),
                        },
                    );
                    let failed = outcome.is_err();
                    let sample = Sample {
                        start,
                        end: Instant::now(),
                        slow,
                        outcome,
                    };
                    (sample, failed)
                }
            })
            .collect();
        Load::spawn(clients, max_time, max_count)
    }

    /// Waits for `n` more answers (of any kind) that started after `since`.
    fn wait_more(&self, n: usize, since: Instant) {
        wait_for(
            &format!("{n} requests after the mark"),
            Duration::from_secs(15),
            || (self.snapshot().iter().filter(|s| s.start > since).count() >= n).then_some(()),
        );
    }

    /// Waits for a slow request that started after `since` to finish.
    fn wait_slow(&self, since: Instant) {
        wait_for(
            "a slow request after the mark",
            Duration::from_secs(15),
            || {
                self.snapshot()
                    .iter()
                    .any(|s| s.slow && s.start > since)
                    .then_some(())
            },
        );
    }
}

const CLIENTS: &[&str] = &["/?ms=10", "/?ms=10", "/?ms=10", "/?ms=400"];

fn failures(samples: &[Sample]) -> Vec<&Sample> {
    samples.iter().filter(|s| s.outcome.is_err()).collect()
}

#[test]
fn a_host_by_host_deploy_behind_nginx_fails_no_request() {
    let a = Host::start("");
    let b = Host::start("");
    let dir = Dir::new();
    let nginx = front(&dir, &[&a, &b]);
    let load = Load::start(nginx.port, CLIENTS, Duration::from_secs(40), 5000);
    let began = Instant::now();
    load.wait_more(40, began);

    // The deploy tool: host A, then host B, each to completion.
    a.deploy(2, "");
    let a_done = Instant::now();
    load.wait_more(40, a_done);
    load.wait_slow(a_done);
    let b_start = Instant::now();
    b.deploy(2, "");
    let b_done = Instant::now();
    load.wait_more(60, b_done);
    load.wait_slow(b_done);
    let samples = load.finish();

    let bad = failures(&samples);
    assert!(
        bad.is_empty(),
        "{} of {} requests failed across the deploy: {:#?}",
        bad.len(),
        samples.len(),
        &bad[..bad.len().min(10)]
    );
    let ok: Vec<(Instant, u32, u32)> = samples
        .iter()
        .filter_map(|s| s.outcome.as_ref().ok().map(|&(g, p)| (s.start, g, p)))
        .collect();
    let of = |host: &Host, from: Instant, to: Instant| -> Vec<u32> {
        ok.iter()
            .filter(|(t, _, p)| *t > from && *t < to && host.served(*p))
            .map(|(_, g, _)| *g)
            .collect()
    };
    let far = Instant::now() + Duration::from_secs(3600);
    // Both hosts took traffic in every phase.
    for (what, from, to) in [
        ("before the deploy", began, a_done),
        ("between the hosts", a_done, b_done),
        ("after the deploy", b_done, far),
    ] {
        assert!(!of(&a, from, to).is_empty(), "host A served nothing {what}");
        assert!(!of(&b, from, to).is_empty(), "host B served nothing {what}");
    }
    // Host A was on generation 2 once its reload returned, B on 1 until
    // its own began; after B's, the whole fleet is on generation 2.
    assert!(of(&a, a_done, far).iter().all(|&g| g == 2));
    assert!(of(&b, began, b_start).iter().all(|&g| g == 1));
    assert!(of(&b, b_done, far).iter().all(|&g| g == 2));
    assert_eq!(fcgi::get(&a.addr(), "/").generation(), 2);
    assert_eq!(fcgi::get(&b.addr(), "/").generation(), 2);
    eprintln!(
        "{} requests through nginx, none failed ({} on host A, {} on host B)",
        ok.len(),
        of(&a, began, far).len(),
        of(&b, began, far).len()
    );
}

#[test]
fn a_host_stopped_gracefully_behind_nginx_fails_no_request() {
    let depool = "shutdown.depool_delay = 1s\n";
    let mut a = Host::start(depool);
    let b = Host::start(depool);
    let dir = Dir::new();
    let nginx = front(&dir, &[&a, &b]);
    let load = Load::start(nginx.port, CLIENTS, Duration::from_secs(40), 5000);
    let began = Instant::now();
    load.wait_more(40, began);
    load.wait_slow(began);

    // Host A leaves (a deploy tool's "drain", or a machine going down):
    // its ping says 503 at once for a load balancer's health check, while
    // it keeps serving for the depool delay; then it finishes what it has
    // and exits.
    // Taken before the signal: the master (under SCHED_FIFO) may start its
    // depool delay before this thread runs again.
    let stop_at = Instant::now();
    a.herd.signal(libc::SIGQUIT);
    wait_for(
        "host A's ping to say 503",
        Duration::from_millis(800),
        || (fcgi::get(&a.addr(), "/herd-ping").status() == 503).then_some(()),
    );
    assert_eq!(a.herd.wait_exit(Duration::from_secs(30)), Some(0));
    let gone = Instant::now();
    assert!(
        gone - stop_at >= Duration::from_secs(1),
        "A served through its depool delay"
    );
    load.wait_more(60, gone);
    load.wait_slow(gone);
    let samples = load.finish();

    let bad = failures(&samples);
    assert!(
        bad.is_empty(),
        "{} of {} requests failed while host A stopped: {:#?}\n--- host A log ---\n{}",
        bad.len(),
        samples.len(),
        &bad[..bad.len().min(10)],
        a.herd.log_text()
    );
    let from_a_during_depool = samples
        .iter()
        .filter(|s| s.start > stop_at && s.end < stop_at + Duration::from_millis(900))
        .filter_map(|s| s.outcome.as_ref().ok())
        .filter(|(_, p)| a.served(*p))
        .count();
    assert!(
        from_a_during_depool > 0,
        "host A kept serving during its depool delay"
    );
    let after: Vec<u32> = samples
        .iter()
        .filter(|s| s.start > gone)
        .filter_map(|s| s.outcome.as_ref().ok().map(|&(_, p)| p))
        .collect();
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|&p| b.served(p)),
        "once A is gone, B serves everything"
    );
    assert!(a.herd.warnings().is_empty(), "{:?}", a.herd.warnings());
}

// ---- behind HAProxy ----------------------------------------------------

/// HAProxy running `contrib/haproxy/haproxy.cfg` with the test's ports
/// and paths put in; its log (health check state changes) in the test's
/// directory.
fn start_haproxy(dir: &Path, hosts: &[&Host]) -> HaProxy {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/haproxy/haproxy.cfg"),
    )
    .unwrap();
    let port = support::free_port();
    let mut text = shipped.clone();
    for (from, to) in [
        (
            "/run/haproxy/admin.sock".to_string(),
            dir.join("haproxy.sock").display().to_string(),
        ),
        ("bind :80".into(), format!("bind 127.0.0.1:{port}")),
        (
            "server web1 10.0.0.11:9000".into(),
            format!("server web1 127.0.0.1:{}", hosts[0].port),
        ),
        (
            "server web2 10.0.0.12:9000".into(),
            format!("server web2 127.0.0.1:{}", hosts[1].port),
        ),
    ] {
        assert!(
            text.contains(&from),
            "contrib/haproxy/haproxy.cfg no longer has {from:?}: update this test"
        );
        text = text.replace(&from, &to);
    }
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(&cfg, text).unwrap();
    HaProxy::run(&cfg, port, "/")
}

#[test]
fn behind_haproxy_a_deploy_and_a_graceful_stop_fail_no_request() {
    if !Path::new(haproxy::BINARY).exists() {
        return support::skip(&format!(
            "{} is not installed (contrib/test-all.sh installs it)",
            haproxy::BINARY
        ));
    }
    // The depool delay outlasts HAProxy's detection (inter 1s, fall 2).
    let depool = "shutdown.depool_delay = 3s\n";
    let mut a = Host::start(depool);
    let b = Host::start(depool);
    let dir = Dir::new();
    let haproxy = start_haproxy(dir.path(), &[&a, &b]);
    wait_for("both servers UP", Duration::from_secs(10), || {
        let seen: Vec<u32> = (0..6)
            .filter_map(|_| nginx::try_get(haproxy.port, "/", Duration::from_secs(5)).ok())
            .filter_map(|(_, body)| support::field(&body, "pid"))
            .collect();
        (seen.iter().any(|p| a.served(*p)) && seen.iter().any(|p| b.served(*p))).then_some(())
    });
    let load = Load::start(haproxy.port, CLIENTS, Duration::from_secs(40), 5000);
    let began = Instant::now();
    load.wait_more(40, began);

    a.deploy(2, depool);
    let a_done = Instant::now();
    load.wait_more(40, a_done);
    b.deploy(2, depool);
    let b_done = Instant::now();
    load.wait_more(40, b_done);
    load.wait_slow(b_done);

    // Host A leaves: HAProxy's check sees its ping's 503 and takes it out
    // before A stops accepting.
    // Taken before the signal: the master (under SCHED_FIFO) may start its
    // depool delay before this thread runs again.
    let stop_at = Instant::now();
    a.herd.signal(libc::SIGQUIT);
    assert_eq!(a.herd.wait_exit(Duration::from_secs(30)), Some(0));
    let gone = Instant::now();
    load.wait_more(40, gone);
    let samples = load.finish();

    let bad = failures(&samples);
    assert!(
        bad.is_empty(),
        "{} of {} requests failed behind HAProxy: {:#?}",
        bad.len(),
        samples.len(),
        &bad[..bad.len().min(10)]
    );
    let log = haproxy.log_text();
    assert!(
        log.contains("Server herd/web1 is DOWN") && log.contains("Layer7 wrong status, code: 503"),
        "HAProxy's health check took host A out on its ping's 503:\n{log}"
    );
    let gens: Vec<u32> = samples
        .iter()
        .filter(|s| s.start > b_done)
        .filter_map(|s| s.outcome.as_ref().ok().map(|&(g, _)| g))
        .collect();
    assert!(!gens.is_empty() && gens.iter().all(|&g| g == 2), "{gens:?}");
    // The last second of A's depool delay: HAProxy already sends it nothing.
    let late_on_a = samples
        .iter()
        .filter(|s| s.start > stop_at + Duration::from_millis(2800))
        .filter_map(|s| s.outcome.as_ref().ok())
        .filter(|(_, p)| a.served(*p))
        .count();
    assert_eq!(
        late_on_a, 0,
        "requests reached A after HAProxy marked it down"
    );
    assert!(gone - stop_at >= Duration::from_secs(3));
}
