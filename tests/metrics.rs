//! herd's OpenMetrics, on the pool's status page (`?openmetrics`, after
//! php-fpm's families) and from `herd ctl metrics` (herd's families for
//! every pool), read back with the reference OpenMetrics parser.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use support::{Herd, fcgi, user_line, wait_for, wait_until};

fn config(addr: &str, workers: u32, program: &str, extra: &str) -> String {
    format!(
        "[global]\nerror_log = {{dir}}/herd.log\ncontrol.listen = {{dir}}/ctl.sock\n\
         [www]\nlisten = {addr}\npm = static\npm.max_children = {workers}\n\
         {program}{user}pm.status_path = /status\n{extra}",
        user = user_line()
    )
}

const APP: &str = "command = {herd}\nargs = example-app\n";

fn socket(herd: &Herd) -> PathBuf {
    herd.dir.join("ctl.sock")
}

/// One sample as the parser read it.
#[derive(Debug, serde::Deserialize)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses `text` with `prometheus_client`'s strict OpenMetrics parser
/// (which requires the `# EOF`); returns family name → (type, samples).
fn parse(text: &str) -> BTreeMap<String, (String, Vec<Sample>)> {
    let script = "import sys, json\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
        out = {f.name: [f.type, [{'name': s.name, 'labels': s.labels, 'value': s.value}\n\
               for s in f.samples]] for f in text_string_to_metric_families(sys.stdin.read())}\n\
        print(json.dumps(out))\n";
    let mut py = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (the test command installs prometheus_client)");
    py.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser rejected:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script prints JSON")
}

type Families = BTreeMap<String, (String, Vec<Sample>)>;

/// The samples of `family` named `name` whose labels include `labels`.
fn values(fams: &Families, family: &str, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    let (_, samples) = fams
        .get(family)
        .unwrap_or_else(|| panic!("no family {family}"));
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
        })
        .map(|s| s.value)
        .collect()
}

/// The one sample of `family` named `name` with `labels`.
fn value(fams: &Families, family: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let v = values(fams, family, name, labels);
    assert_eq!(v.len(), 1, "{name}{labels:?}: {v:?}");
    v[0]
}

fn status_page(addr: &str) -> Families {
    let reply = fcgi::get(addr, "/status?openmetrics");
    assert_eq!(reply.status(), 200, "{}", reply.text());
    parse(&reply.body())
}

/// The JSON status page, for the waits where time counts: the OpenMetrics
/// parser is a Python process, too slow to poll while slow requests run.
fn status_json(addr: &str) -> serde_json::Value {
    let reply = fcgi::get(addr, "/status?json");
    assert_eq!(reply.status(), 200, "{}", reply.text());
    serde_json::from_str(&reply.body()).expect("status JSON")
}

fn ctl_metrics(herd: &Herd) -> (String, Families) {
    let (code, out, err) = herd.ctl(&socket(herd), &["metrics"]);
    assert_eq!(code, 0, "herd ctl metrics: {out}{err}");
    let fams = parse(&out);
    (out, fams)
}

/// Requests counted per generation, `none` included.
fn requests(fams: &Families) -> BTreeMap<String, f64> {
    fams["herd_requests"]
        .1
        .iter()
        .map(|s| (s.labels["generation"].clone(), s.value))
        .collect()
}

/// Checks a histogram of pool `www`: buckets ascend and end in `+Inf`,
/// which equals the count; returns the buckets by `le`.
fn histogram(fams: &Families, family: &str) -> Vec<(String, f64)> {
    let (kind, samples) = &fams[family];
    assert_eq!(kind, "histogram");
    let buckets: Vec<(String, f64)> = samples
        .iter()
        .filter(|s| s.name == format!("{family}_bucket"))
        .map(|s| (s.labels["le"].clone(), s.value))
        .collect();
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    let (last, inf) = buckets.last().unwrap();
    assert_eq!(last, "+Inf");
    let count = value(fams, family, &format!("{family}_count"), &[("pool", "www")]);
    assert_eq!(*inf, count);
    buckets
}

fn bucket(buckets: &[(String, f64)], le: &str) -> f64 {
    buckets.iter().find(|(l, _)| l == le).unwrap().1
}

fn workers_by_state(fams: &Families, generation: &str) -> BTreeMap<String, f64> {
    fams["herd_workers"]
        .1
        .iter()
        .filter(|s| s.labels["generation"] == generation)
        .map(|s| (s.labels["state"].clone(), s.value))
        .collect()
}

#[test]
fn metrics_count_requests_latency_and_a_full_queue() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let herd = Herd::start(&config(&addr, 2, APP, "pm.max_queue = 1\n"));
    herd.wait_ready(2);
    for _ in 0..5 {
        assert_eq!(fcgi::get(&addr, "/fast").status(), 200);
    }
    // Both workers busy for 4 s (time enough to see it on a loaded
    // machine), one request queued behind them, and the next finds the
    // queue full.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let addr = addr.clone();
            thread::spawn(move || fcgi::get(&addr, "/slow?ms=4000"))
        })
        .collect();
    wait_for("both workers to be busy", Duration::from_secs(10), || {
        (status_json(&addr)["active processes"] == 2).then_some(())
    });
    let queued = {
        let addr = addr.clone();
        thread::spawn(move || fcgi::get(&addr, "/queued"))
    };
    wait_for("a request to queue", Duration::from_secs(10), || {
        (status_json(&addr)["listen queue"] == 1).then_some(())
    });
    let full = fcgi::get(&addr, "/refused");
    assert_eq!(full.status(), 503, "{}", full.text());
    for t in slow {
        assert_eq!(t.join().unwrap().status(), 200);
    }
    assert_eq!(queued.join().unwrap().status(), 200);

    // 8 requests served by generation 1, 1 refused; each is counted just
    // after its response leaves, so wait for the last one.
    let fams = wait_for(
        "9 requests in the latency histogram",
        Duration::from_secs(5),
        || {
            let fams = status_page(&addr);
            let count = value(
                &fams,
                "herd_request_duration_seconds",
                "herd_request_duration_seconds_count",
                &[("pool", "www")],
            );
            (count == 9.0).then_some(fams)
        },
    );
    let by_gen = requests(&fams);
    assert_eq!(by_gen.get("1"), Some(&8.0), "{by_gen:?}");
    assert_eq!(by_gen.get("none"), Some(&1.0), "{by_gen:?}");
    assert_eq!(by_gen.values().sum::<f64>(), 9.0, "{by_gen:?}");
    let failures = |kind| {
        value(
            &fams,
            "herd_failures",
            "herd_failures_total",
            &[("kind", kind)],
        )
    };
    assert_eq!(failures("queue_full"), 1.0);
    for kind in [
        "queue_timeout",
        "unavailable",
        "terminated",
        "worker_lost",
        "deploy_refused",
    ] {
        assert_eq!(failures(kind), 0.0, "{kind}");
    }

    let latency = histogram(&fams, "herd_request_duration_seconds");
    // The fast ones and the refusal under a second; the slow ones over
    // 2.5 s; the queued one waited for what was left of them, which
    // depends on how fast this machine noticed the queue.
    assert_eq!(bucket(&latency, "1.0"), 6.0, "{latency:?}");
    assert!(bucket(&latency, "2.5") <= 7.0, "{latency:?}");
    assert_eq!(bucket(&latency, "10.0"), 9.0, "{latency:?}");
    let sum = value(
        &fams,
        "herd_request_duration_seconds",
        "herd_request_duration_seconds_sum",
        &[("pool", "www")],
    );
    assert!(sum >= 8.0, "the two slow ones alone take 8 s: {sum}");

    // One lease per served request; only the queued one waited long.
    let wait = histogram(&fams, "herd_queue_wait_seconds");
    assert_eq!(wait.last().unwrap().1, 8.0, "{wait:?}");
    assert_eq!(bucket(&wait, "0.25"), 7.0, "{wait:?}");

    let states = workers_by_state(&fams, "1");
    assert_eq!(states.values().sum::<f64>(), 2.0, "{states:?}");
    assert_eq!(states["idle"], 2.0, "{states:?}");
    let phpfpm_total = value(
        &fams,
        "phpfpm_total_processes",
        "phpfpm_total_processes",
        &[],
    );
    assert_eq!(phpfpm_total, 2.0);
    assert_eq!(value(&fams, "herd_spawns", "herd_spawns_total", &[]), 2.0);

    // herd ctl metrics: herd's families only, agreeing with the page.
    let (text, all) = ctl_metrics(&herd);
    assert!(!text.contains("phpfpm_"), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(requests(&all), by_gen);
    assert_eq!(
        histogram(&all, "herd_request_duration_seconds"),
        latency,
        "{text}"
    );
    let queue_full = value(
        &all,
        "herd_failures",
        "herd_failures_total",
        &[("kind", "queue_full")],
    );
    assert_eq!(queue_full, 1.0);
    assert_eq!(workers_by_state(&all, "1").values().sum::<f64>(), 2.0);
}

#[test]
fn metrics_follow_generations_through_a_reload_and_a_refused_deploy() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let extra = "rollout.surge = 1\nrollout.max_failures = 3\n";
    let herd = Herd::start(&config(&addr, 2, APP, extra));
    herd.wait_ready(2);
    for _ in 0..3 {
        assert_eq!(fcgi::get(&addr, "/one").status(), 200);
    }
    let (code, out, err) = herd.ctl(&socket(&herd), &["reload", "--force", "--wait"]);
    assert_eq!(code, 0, "reload: {out}{err}");
    for _ in 0..4 {
        let r = fcgi::get(&addr, "/two");
        assert_eq!((r.status(), r.generation()), (200, 2), "{}", r.text());
    }
    // Generation 1's workers are gone (the rollout is stable once the last
    // was told to stop; its exit may come a moment later); their requests
    // are still counted.
    let fams = wait_until(
        "generation 2's requests, and generation 1's workers gone",
        Duration::from_secs(5),
        || {
            let (_, fams) = ctl_metrics(&herd);
            let old = workers_by_state(&fams, "1");
            if requests(&fams).get("2") == Some(&4.0) && old.values().all(|n| *n == 0.0) {
                Ok(fams)
            } else {
                Err(format!(
                    "requests {:?}, generation 1's workers {old:?}",
                    requests(&fams)
                ))
            }
        },
    );
    let by_gen = requests(&fams);
    assert_eq!(by_gen.get("1"), Some(&3.0), "{by_gen:?}");
    let gauge = |fams: &Families, name: &str| value(fams, name, name, &[("pool", "www")]);
    assert_eq!(gauge(&fams, "herd_pool_generation"), 2.0);
    assert_eq!(gauge(&fams, "herd_pool_serving_generation"), 2.0);
    let state = |fams: &Families, s: &str| {
        value(
            fams,
            "herd_deploy_state",
            "herd_deploy_state",
            &[("herd_deploy_state", s)],
        )
    };
    assert_eq!(state(&fams, "stable"), 1.0);
    assert_eq!(state(&fams, "refused"), 0.0);
    assert_eq!(gauge(&fams, "herd_rollout_target"), 2.0);
    assert_eq!(workers_by_state(&fams, "2")["idle"], 2.0);
    assert!(workers_by_state(&fams, "1").values().all(|n| *n == 0.0));
    let info = values(
        &fams,
        "herd_generation",
        "herd_generation_info",
        &[("generation", "2"), ("state", "stable")],
    );
    assert_eq!(info, [1.0]);

    // A generation whose workers exit with a fatal code is refused.
    herd.rewrite_config(&config(
        &addr,
        2,
        "command = /bin/sh\nargs = -c \"exit 3\"\n",
        &format!("{extra}worker.fatal_exit_codes = 3\n"),
    ));
    let (code, out, err) = herd.ctl(&socket(&herd), &["reload", "--wait"]);
    assert_eq!(code, 1, "the broken deploy: {out}{err}");
    let fams = wait_for("the refusal in the metrics", Duration::from_secs(5), || {
        let fams = status_page(&addr);
        (state(&fams, "refused") == 1.0).then_some(fams)
    });
    let refused = value(
        &fams,
        "herd_failures",
        "herd_failures_total",
        &[("kind", "deploy_refused")],
    );
    assert_eq!(refused, 1.0);
    assert_eq!(gauge(&fams, "herd_pool_generation"), 3.0);
    assert_eq!(gauge(&fams, "herd_pool_serving_generation"), 2.0);
    let r = fcgi::get(&addr, "/still-two");
    assert_eq!((r.status(), r.generation()), (200, 2), "{}", r.text());
}
