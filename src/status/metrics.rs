//! herd's own OpenMetrics families, labelled by pool: one family per name,
//! one sample per pool (and generation, kind or state), so they can be
//! exposed for one pool (after php-fpm's unlabelled families on its status
//! page, `?openmetrics`) or for every pool in one document
//! (`herd ctl metrics`, where php-fpm's families could not repeat).
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `herd_requests_total` | counter | pool, generation | requests that ended, by the generation of the worker that served them (the last one, for a retried request); `generation="none"`: ended without a worker (refused by herd, or given up by the client while queued) |
//! | `herd_failures_total` | counter | pool, kind | `queue_full`, `queue_timeout`, `unavailable` (503s herd answered), `terminated` (504 past `request_terminate_timeout`), `worker_lost` (502, or cut off: the worker died mid-request), `deploy_refused` (generations refused) |
//! | `herd_requests_retried_total` | counter | pool | requests sent again to another worker after theirs died before answering |
//! | `herd_slow_requests_total` | counter | pool | requests that ran past `request_slowlog_timeout` |
//! | `herd_request_duration_seconds` | histogram | pool | time in herd, from the request's params to its last record, queue wait included; every request of `herd_requests_total` |
//! | `herd_queue_wait_seconds` | histogram | pool | time from asking for a worker to getting one, per worker lease (0 when one was idle) |
//! | `herd_queue_length` | gauge | pool | requests waiting for a worker now |
//! | `herd_queue_limit` | gauge | pool | `pm.max_queue` |
//! | `herd_connections_total` | counter | pool | client connections accepted |
//! | `herd_connections_open` | gauge | pool | client connections open now |
//! | `herd_workers` | gauge | pool, generation, state | workers now, by generation and state: `idle`, `busy`, `warming` (before the readiness gate), `retiring` (getting no new request) |
//! | `herd_slots` | gauge | pool, state | requests the ready workers can take at once, `idle` or `busy` (a php-cgi with N children, a php-fpm group of N, or an FCGI::ProcManager script of N is N slots) |
//! | `herd_php_processes` | gauge | pool, generation | PHP processes behind the pool's groups (a php-fpm engine's children, a php-cgi's `PHP_FCGI_CHILDREN`); no sample for a pool without groups |
//! | `herd_php_resident_bytes` | gauge | pool, generation | their resident memory, summed (pages they share counted in each) |
//! | `herd_php_engine_processes` | gauge | pool, generation, state | a php-fpm engine's children by the state its own status page gives them: `idle`, `running`, `finishing` (a script at work after `fastcgi_finish_request()`), `reading_headers`, ...; only when the engine was asked (the pool's status page, `herd ctl metrics`) and answered |
//! | `herd_workers_limit` | gauge | pool | `pm.max_children` in force: the config file's, or what `herd ctl scale` (or SIGTTIN/SIGTTOU) set at run time |
//! | `herd_workers_limit_config` | gauge | pool | `pm.max_children` as the config file says |
//! | `herd_max_children_reached_total` | counter | pool | times the pool wanted another worker and `pm.max_children` said no |
//! | `herd_spawns_total` | counter | pool | workers started |
//! | `herd_worker_failures_total` | counter | pool | workers that failed to start or exited early |
//! | `herd_backoff_failures` | gauge | pool | failures counting towards the respawn backoff now (0 when healthy) |
//! | `herd_backoff_delay_seconds` | gauge | pool | the respawn delay those failures set: 0, then 0.1 doubling to 30 |
//! | `herd_pool_unavailable` | gauge | pool | 1 while no worker can start and requests are refused at once |
//! | `herd_pool_generation` | gauge | pool | the newest generation |
//! | `herd_pool_serving_generation` | gauge | pool | the generation that last finished a rollout |
//! | `herd_deploy_state` | stateset | pool, herd_deploy_state | `stable`, `rolling_out` or `refused`: 1 for the current one |
//! | `herd_rollout_ready` | gauge | pool | new workers through the gate (when stable: the live workers) |
//! | `herd_rollout_old` | gauge | pool | old workers left to replace |
//! | `herd_rollout_target` | gauge | pool | the workers the rollout ends with (0 when refused) |
//! | `herd_generation_info` | info | pool, generation, state | one per generation herd still tracks: `rolling_out`, `stable`, `superseded`, `refused`, `retired` |

use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use super::PoolStatus;
use crate::pool::{BUCKETS, DeployStatus, HistogramSnapshot, Pool, Snapshot, WorkerState};
use crate::supervisor::backoff::Backoff;

/// What herd's families show beyond the fields php-fpm's status has.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Requests that ended, by generation.
    pub requests: Vec<(u32, u64)>,
    /// Requests that ended without a worker.
    pub unserved: u64,
    pub latency: HistogramSnapshot,
    pub queue_wait: HistogramSnapshot,
    /// Workers by generation: idle, busy, warming, retiring.
    pub workers: Vec<(u32, [u64; 4])>,
    pub deploy: DeployStatus,
    pub deploys_refused: u64,
    pub backoff_delay: Duration,
    pub connections: u64,
    pub connections_open: u64,
}

const WORKER_STATES: [&str; 4] = ["idle", "busy", "warming", "retiring"];
const DEPLOY_STATES: [&str; 3] = ["stable", "rolling_out", "refused"];

impl Metrics {
    pub fn collect(pool: &Arc<Pool>, snap: &Snapshot) -> Metrics {
        let c = &pool.counters;
        let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
        let mut workers: Vec<(u32, [u64; 4])> = Vec::new();
        for (_, w) in &snap.workers {
            let state = match w.state() {
                _ if w.retiring => 3,
                WorkerState::Idle => 0,
                WorkerState::Busy => 1,
                WorkerState::Warming => 2,
            };
            match workers.iter_mut().find(|(g, _)| *g == w.generation) {
                Some((_, n)) => n[state] += 1,
                None => {
                    let mut n = [0; 4];
                    n[state] = 1;
                    workers.push((w.generation, n));
                }
            }
        }
        workers.sort_by_key(|(g, _)| *g);
        let deploy = pool.deploy.borrow().clone();
        Metrics {
            requests: snap.served.clone(),
            unserved: load(&c.unserved),
            latency: c.latency.snapshot(),
            queue_wait: c.queue_wait.snapshot(),
            workers,
            backoff_delay: backoff_delay(deploy.backoff_failures),
            deploy,
            deploys_refused: pool.deploy.refusals(),
            connections: load(&c.accepted_conns),
            connections_open: pool.open_connections() as u64,
        }
    }
}

/// The respawn delay `failures` consecutive failures set, as the
/// supervisor's backoff computes it (it stops growing well before 20).
fn backoff_delay(failures: u32) -> Duration {
    let mut b = Backoff::default();
    for _ in 0..failures.min(20) {
        b.fail();
    }
    b.delay()
}

/// A label value, escaped as OpenMetrics wants.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes the families' metadata, then their samples through `samples`.
struct Out<'a> {
    text: &'a mut String,
}

impl Out<'_> {
    fn family(&mut self, name: &str, kind: &str, unit: Option<&str>, help: &str) {
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        if let Some(unit) = unit {
            let _ = writeln!(self.text, "# UNIT {name} {unit}");
        }
        let _ = writeln!(self.text, "# HELP {name} {help}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.text, "{name}{{{labels}}} {value}");
    }

    /// A family with one sample per pool.
    fn per_pool<V: std::fmt::Display>(
        &mut self,
        pools: &[&PoolStatus],
        (name, kind, help): (&str, &str, &str),
        value: impl Fn(&PoolStatus) -> V,
    ) {
        self.family(name, kind, None, help);
        let sample = if kind == "counter" {
            format!("{name}_total")
        } else {
            name.to_string()
        };
        for s in pools {
            self.sample(&sample, &pool_label(s), value(s));
        }
    }

    fn histogram(
        &mut self,
        pools: &[&PoolStatus],
        name: &str,
        help: &str,
        h: impl Fn(&PoolStatus) -> HistogramSnapshot,
    ) {
        self.family(name, "histogram", Some("seconds"), help);
        for s in pools {
            let (pool, h) = (pool_label(s), h(s));
            let les = BUCKETS.iter().map(|(_, le)| *le).chain(["+Inf"]);
            for (le, n) in les.zip(h.cumulative) {
                self.sample(&format!("{name}_bucket"), &format!("{pool},le=\"{le}\""), n);
            }
            self.sample(&format!("{name}_count"), &pool, h.count());
            self.sample(&format!("{name}_sum"), &pool, h.sum_seconds());
        }
    }
}

fn pool_label(s: &PoolStatus) -> String {
    format!("pool=\"{}\"", escape(&s.pool))
}

/// (generation, PHP processes, their resident bytes) of one pool.
type GroupsByGeneration = Vec<(u32, u64, u64)>;

/// The PHP processes behind a pool's groups and their memory, by
/// generation; no sample for a pool without groups.
fn php_groups(out: &mut Out, pools: &[&PoolStatus]) {
    let by_generation = |s: &PoolStatus| {
        let mut g = GroupsByGeneration::new();
        for p in s.processes.iter().filter(|p| !p.group.is_empty()) {
            let rss: u64 = p.group.iter().map(|m| m.rss).sum();
            match g
                .iter_mut()
                .find(|(generation, ..)| *generation == p.generation)
            {
                Some(e) => {
                    e.1 += p.group.len() as u64;
                    e.2 += rss;
                }
                None => g.push((p.generation, p.group.len() as u64, rss)),
            }
        }
        g.sort_unstable();
        g
    };
    let groups: Vec<(String, GroupsByGeneration)> = pools
        .iter()
        .map(|s| (pool_label(s), by_generation(s)))
        .collect();
    out.family(
        "herd_php_processes",
        "gauge",
        None,
        "PHP processes serving the pool's groups (a php-fpm engine's or a php-cgi's children).",
    );
    for (pool, gens) in &groups {
        for (generation, n, _) in gens {
            let labels = format!("{pool},generation=\"{generation}\"");
            out.sample("herd_php_processes", &labels, n);
        }
    }
    out.family(
        "herd_php_resident_bytes",
        "gauge",
        Some("bytes"),
        "Resident memory of those PHP processes, summed (shared pages counted in each).",
    );
    for (pool, gens) in &groups {
        for (generation, _, rss) in gens {
            let labels = format!("{pool},generation=\"{generation}\"");
            out.sample("herd_php_resident_bytes", &labels, rss);
        }
    }
    engine_states(out, pools);
}

/// A php-fpm engine's children by the state php-fpm gives them, by pool
/// and generation; samples only where the engine was asked and answered.
fn engine_states(out: &mut Out, pools: &[&PoolStatus]) {
    out.family(
        "herd_php_engine_processes",
        "gauge",
        None,
        "A php-fpm engine's children by the state its own status page gives them.",
    );
    for s in pools {
        let pool = pool_label(s);
        // (generation, state) -> children, in a stable order.
        let mut counts: std::collections::BTreeMap<(u32, String), u64> = Default::default();
        for p in &s.processes {
            for e in p.group.iter().filter_map(|m| m.engine.as_ref()) {
                let state = e.state.to_lowercase().replace(' ', "_");
                *counts.entry((p.generation, state)).or_default() += 1;
            }
        }
        for ((generation, state), n) in &counts {
            let labels = format!(
                "{pool},generation=\"{generation}\",state=\"{}\"",
                escape(state)
            );
            out.sample("herd_php_engine_processes", &labels, n);
        }
    }
}

/// Appends herd's families for `pools` to `text` (without `# EOF`).
pub fn write(text: &mut String, pools: &[&PoolStatus]) {
    let mut out = Out { text };
    requests(&mut out, pools);
    queue(&mut out, pools);
    workers(&mut out, pools);
    deploys(&mut out, pools);
}

fn requests(out: &mut Out<'_>, pools: &[&PoolStatus]) {
    out.family(
        "herd_requests",
        "counter",
        None,
        "Requests that ended, by the generation of the worker that served them; none: ended without a worker.",
    );
    for s in pools {
        let pool = pool_label(s);
        for (generation, n) in &s.metrics.requests {
            let labels = format!("{pool},generation=\"{generation}\"");
            out.sample("herd_requests_total", &labels, n);
        }
        let labels = format!("{pool},generation=\"none\"");
        out.sample("herd_requests_total", &labels, s.metrics.unserved);
    }
    out.family(
        "herd_failures",
        "counter",
        None,
        "Requests refused or cut off, and generations refused, by kind.",
    );
    for s in pools {
        let pool = pool_label(s);
        for (kind, n) in [
            ("queue_full", s.queue_full),
            ("queue_timeout", s.queue_timeouts),
            ("unavailable", s.unavailable),
            ("terminated", s.terminated),
            ("worker_lost", s.worker_lost),
            ("deploy_refused", s.metrics.deploys_refused),
        ] {
            let labels = format!("{pool},kind=\"{kind}\"");
            out.sample("herd_failures_total", &labels, n);
        }
    }
    out.per_pool(
        pools,
        (
            "herd_requests_retried",
            "counter",
            "Requests sent again to another worker after theirs died before answering.",
        ),
        |s| s.retried,
    );
    out.per_pool(
        pools,
        (
            "herd_slow_requests",
            "counter",
            "Requests that ran past request_slowlog_timeout.",
        ),
        |s| s.slow_requests,
    );
    out.histogram(
        pools,
        "herd_request_duration_seconds",
        "Time from a request's params to its last record, queue wait included.",
        |s| s.metrics.latency,
    );
}

fn queue(out: &mut Out<'_>, pools: &[&PoolStatus]) {
    out.histogram(
        pools,
        "herd_queue_wait_seconds",
        "Time from asking for a worker to getting one, per lease.",
        |s| s.metrics.queue_wait,
    );
    out.per_pool(
        pools,
        (
            "herd_queue_length",
            "gauge",
            "Requests waiting for a worker.",
        ),
        |s| s.listen_queue,
    );
    out.per_pool(
        pools,
        (
            "herd_queue_limit",
            "gauge",
            "The most requests that may wait (pm.max_queue).",
        ),
        |s| s.listen_queue_len,
    );
    out.per_pool(
        pools,
        (
            "herd_connections",
            "counter",
            "Client connections accepted.",
        ),
        |s| s.metrics.connections,
    );
    out.per_pool(
        pools,
        ("herd_connections_open", "gauge", "Client connections open."),
        |s| s.metrics.connections_open,
    );
}

fn workers(out: &mut Out<'_>, pools: &[&PoolStatus]) {
    out.family(
        "herd_workers",
        "gauge",
        None,
        "Workers by generation and state.",
    );
    for s in pools {
        let pool = pool_label(s);
        let none = [(s.generation, [0; 4])];
        let by_generation = if s.metrics.workers.is_empty() {
            &none[..]
        } else {
            &s.metrics.workers[..]
        };
        for (generation, counts) in by_generation {
            for (state, n) in WORKER_STATES.iter().zip(counts) {
                let labels = format!("{pool},generation=\"{generation}\",state=\"{state}\"");
                out.sample("herd_workers", &labels, n);
            }
        }
    }
    out.family(
        "herd_slots",
        "gauge",
        None,
        "Requests the ready workers can take at once, by state.",
    );
    for s in pools {
        let pool = pool_label(s);
        for (state, n) in [("idle", s.idle_processes), ("busy", s.active_processes)] {
            out.sample("herd_slots", &format!("{pool},state=\"{state}\""), n);
        }
    }
    php_groups(out, pools);
    out.per_pool(
        pools,
        (
            "herd_workers_limit",
            "gauge",
            "pm.max_children in force: the config file's, or what herd ctl scale set.",
        ),
        |s| s.max_children,
    );
    out.per_pool(
        pools,
        (
            "herd_workers_limit_config",
            "gauge",
            "pm.max_children as the config file says.",
        ),
        |s| s.config_max_children,
    );
    out.per_pool(
        pools,
        (
            "herd_max_children_reached",
            "counter",
            "Times the pool wanted another worker and pm.max_children said no.",
        ),
        |s| s.max_children_reached,
    );
    out.per_pool(pools, ("herd_spawns", "counter", "Workers started."), |s| {
        s.spawns
    });
    out.per_pool(
        pools,
        (
            "herd_worker_failures",
            "counter",
            "Workers that failed to start or exited early.",
        ),
        |s| s.failures,
    );
    out.per_pool(
        pools,
        (
            "herd_backoff_failures",
            "gauge",
            "Failures counting towards the respawn backoff.",
        ),
        |s| s.metrics.deploy.backoff_failures,
    );
    out.family(
        "herd_backoff_delay_seconds",
        "gauge",
        Some("seconds"),
        "The respawn delay the backoff has reached.",
    );
    for s in pools {
        let delay = s.metrics.backoff_delay.as_secs_f64();
        out.sample("herd_backoff_delay_seconds", &pool_label(s), delay);
    }
    out.per_pool(
        pools,
        (
            "herd_pool_unavailable",
            "gauge",
            "1 while no worker can start and requests are refused at once.",
        ),
        |s| u8::from(s.state != "ok"),
    );
}

fn deploys(out: &mut Out<'_>, pools: &[&PoolStatus]) {
    out.per_pool(
        pools,
        ("herd_pool_generation", "gauge", "The newest generation."),
        |s| s.generation,
    );
    out.per_pool(
        pools,
        (
            "herd_pool_serving_generation",
            "gauge",
            "The generation that last finished a rollout.",
        ),
        |s| s.metrics.deploy.serving,
    );
    out.family(
        "herd_deploy_state",
        "stateset",
        None,
        "Where the newest generation's deploy stands.",
    );
    for s in pools {
        let now = s.metrics.deploy.state.name().replace(' ', "_");
        for state in DEPLOY_STATES {
            let labels = format!("{},herd_deploy_state=\"{state}\"", pool_label(s));
            out.sample("herd_deploy_state", &labels, u8::from(now == state));
        }
    }
    out.per_pool(
        pools,
        (
            "herd_rollout_ready",
            "gauge",
            "New workers through the readiness gate.",
        ),
        |s| s.metrics.deploy.ready,
    );
    out.per_pool(
        pools,
        ("herd_rollout_old", "gauge", "Old workers left to replace."),
        |s| s.metrics.deploy.old,
    );
    out.per_pool(
        pools,
        (
            "herd_rollout_target",
            "gauge",
            "The workers the rollout ends with.",
        ),
        |s| s.metrics.deploy.target,
    );
    out.family(
        "herd_generation",
        "info",
        None,
        "The generations herd tracks, with their state.",
    );
    for s in pools {
        for g in &s.metrics.deploy.generations {
            let labels = format!(
                "{},generation=\"{}\",state=\"{}\"",
                pool_label(s),
                g.number,
                escape(&g.state.replace(' ', "_"))
            );
            out.sample("herd_generation_info", &labels, 1);
        }
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
