//! The status page and ping, answered by the master itself so they work
//! while every worker is busy. Status speaks php-fpm's formats (text,
//! `?json`, `?xml`, `?html`, `?openmetrics`, `&full`) with php-fpm's field
//! names, so existing exporters and dashboards read it unchanged, and adds
//! herd's own fields after them. herd's OpenMetrics families are in
//! [`metrics`].

pub mod engine;
pub mod metrics;
mod render;
mod time;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use self::engine::EngineProcess;
use crate::phase::Phase;
use crate::pool::usage::Cpu;
use crate::pool::{Pool, WorkerState};
pub use metrics::Metrics;
pub use render::render;

/// Now, as php-fpm's logs print it: `23/Nov/2026:19:00:00 +0000`.
pub fn clf_now() -> String {
    time::clf(SystemTime::now())
}

/// A pool at one instant, in php-fpm's terms plus herd's.
#[derive(Clone, Debug)]
pub struct PoolStatus {
    pub pool: String,
    pub process_manager: &'static str,
    pub start_time: SystemTime,
    pub start_since: u64,
    pub accepted_conn: u64,
    pub listen_queue: u64,
    pub max_listen_queue: u64,
    pub listen_queue_len: u64,
    pub idle_processes: u64,
    pub active_processes: u64,
    pub total_processes: u64,
    pub max_active_processes: u64,
    pub max_children_reached: u64,
    pub slow_requests: u64,
    // herd's own.
    pub generation: u32,
    /// `pm.max_children` in force: set at run time (`herd ctl scale`,
    /// SIGTTIN/SIGTTOU), else the config file's.
    pub max_children: u32,
    /// `pm.max_children` as the config file says.
    pub config_max_children: u32,
    pub warming_processes: u64,
    pub spawns: u64,
    pub failures: u64,
    pub queue_full: u64,
    pub queue_timeouts: u64,
    pub unavailable: u64,
    pub terminated: u64,
    pub worker_lost: u64,
    pub retried: u64,
    /// `ok`, or why the pool cannot serve.
    pub state: String,
    /// The master's phase: a dashboard sees a reload or a stop under way.
    pub phase: Phase,
    pub processes: Vec<ProcessStatus>,
    /// What herd's OpenMetrics families add.
    pub metrics: Metrics,
}

#[derive(Clone, Debug)]
pub struct ProcessStatus {
    pub pid: u32,
    /// php-fpm's state name: Idle or Running (herd adds Warming).
    pub state: &'static str,
    pub start_time: SystemTime,
    pub start_since: u64,
    pub requests: u64,
    /// Microseconds: of the current request, else of the last one.
    pub request_duration: u64,
    pub request_method: String,
    pub request_uri: String,
    pub content_length: u64,
    pub user: String,
    pub script: String,
    /// php-fpm's %CPU of the last request, while the worker is idle and
    /// when that request was measured (see `pool::usage`).
    pub last_request_cpu: Option<f64>,
    /// The worker's peak resident memory during its last request, likewise.
    pub last_request_memory: Option<u64>,
    // herd's own.
    pub generation: u32,
    pub retiring: bool,
    /// Resident memory now, in bytes (0 when unreadable).
    pub rss: u64,
    /// CPU time used so far, user and system.
    pub cpu_seconds: f64,
    /// Seconds since it last finished a request; `None` while busy.
    pub last_used: Option<f64>,
    /// Requests it serves at once, and how many it serves now.
    pub slots: u32,
    pub busy_slots: u32,
    /// Every request it serves now, the longest-running first: one per
    /// busy slot (`herd ctl status` shows them all; php-fpm's fields show
    /// the first).
    pub in_flight: Vec<InFlight>,
    /// For a PHP group (a php-fpm engine, or php-cgi with children): the
    /// PHP processes that serve its slots, the worker's children; empty
    /// for any other worker.
    pub group: Vec<GroupMember>,
}

/// One PHP process of a group, as `/proc` has it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct GroupMember {
    pub pid: u32,
    /// The kernel's state letter: R running, S sleeping, D in I/O, ...
    pub state: String,
    /// Resident memory, in bytes.
    pub rss: u64,
    /// CPU time used so far, user and system, in seconds.
    #[serde(rename = "cpu seconds")]
    pub cpu_seconds: f64,
    #[serde(rename = "start since")]
    pub start_since: u64,
    /// What a php-fpm group's own status page says of it (state, requests,
    /// the request it serves or served last); `None` for php-cgi's
    /// children, or when the page did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineProcess>,
}

/// A request a worker is serving now.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct InFlight {
    pub method: String,
    pub uri: String,
    /// Seconds since the request got its worker.
    pub elapsed: f64,
}

/// Takes a snapshot of `pool`, in the master's `phase`.
/// `engine`: what the pool's php-fpm groups' own status pages said, if
/// they were asked (see [`engine::collect`]).
pub fn snapshot(
    pool: &Arc<Pool>,
    master_start: SystemTime,
    phase: Phase,
    engine: &engine::Figures,
) -> PoolStatus {
    let cfg = pool.config();
    let snap = pool.snapshot();
    let metrics = Metrics::collect(pool, &snap);
    let c = &pool.counters;
    let now = std::time::Instant::now();
    let wall_now = SystemTime::now();
    let mut idle = 0;
    let mut active = 0;
    let mut warming = 0;
    let processes = snap
        .workers
        .iter()
        .map(|(_, w)| {
            // php-fpm's process counts are in slots: a worker serving N
            // requests at once (php-cgi children, FCGI::ProcManager) is N.
            match w.state() {
                WorkerState::Warming => warming += 1,
                _ => {
                    active += w.busy.len() as u64;
                    idle += u64::from(w.slots).saturating_sub(w.busy.len() as u64);
                }
            }
            let age = now.duration_since(w.spawned_at);
            let (duration, info) = match (w.current(), &w.last) {
                (Some(info), _) => (info.started.elapsed(), Some(info)),
                (None, Some(last)) => (last.duration, Some(&last.info)),
                _ => (Duration::ZERO, None),
            };
            let text =
                |f: fn(&crate::pool::BusyInfo) -> &str| info.map(f).unwrap_or("-").to_string();
            // As php-fpm: the last request's cost, once it has ended.
            let measured = match (w.state(), &w.last) {
                (WorkerState::Idle, Some(last)) => last.usage,
                _ => None,
            };
            ProcessStatus {
                pid: w.pid,
                state: w.state().name(),
                start_time: wall_now - age,
                start_since: age.as_secs(),
                requests: w.requests,
                request_duration: duration.as_micros() as u64,
                request_method: text(|i| &i.method),
                request_uri: text(|i| &i.uri),
                content_length: info.map_or(0, |i| i.content_length),
                user: text(|i| if i.user.is_empty() { "-" } else { &i.user }),
                script: text(|i| &i.script),
                last_request_cpu: measured.map(|u| u.cpu_percent(Cpu::Total)),
                last_request_memory: measured.and_then(|u| u.memory),
                generation: w.generation,
                retiring: w.retiring,
                rss: rss_of(w.pid),
                cpu_seconds: cpu_of(w.pid),
                last_used: match w.state() {
                    WorkerState::Busy => None,
                    _ => Some(now.duration_since(w.idle_since).as_secs_f64()),
                },
                slots: w.slots,
                busy_slots: w.busy.len() as u32,
                in_flight: w
                    .busy
                    .iter()
                    .map(|(_, i)| InFlight {
                        method: i.method.clone(),
                        uri: i.uri.clone(),
                        elapsed: i.started.elapsed().as_secs_f64(),
                    })
                    .collect(),
                group: if cfg.php_group.is_some() {
                    group_members(w.pid, &pool.name, engine.get(&w.pid))
                } else {
                    Vec::new()
                },
            }
        })
        .collect();
    PoolStatus {
        pool: pool.name.clone(),
        process_manager: cfg.pm.as_str(),
        start_time: master_start,
        start_since: wall_now
            .duration_since(master_start)
            .unwrap_or_default()
            .as_secs(),
        accepted_conn: c.requests.load(Ordering::Relaxed),
        listen_queue: snap.queue_len as u64,
        max_listen_queue: c.max_queue_seen.load(Ordering::Relaxed),
        listen_queue_len: cfg.max_queue as u64,
        idle_processes: idle,
        active_processes: active,
        total_processes: idle + active + warming,
        max_active_processes: c.max_active.load(Ordering::Relaxed),
        max_children_reached: c.max_children_reached.load(Ordering::Relaxed),
        slow_requests: c.slow_requests.load(Ordering::Relaxed),
        generation: snap.generation,
        max_children: snap.scaled_max_children.unwrap_or(cfg.max_children),
        config_max_children: cfg.max_children,
        warming_processes: warming,
        spawns: c.spawns.load(Ordering::Relaxed),
        failures: c.worker_failures.load(Ordering::Relaxed),
        queue_full: c.queue_full.load(Ordering::Relaxed),
        queue_timeouts: c.queue_timeouts.load(Ordering::Relaxed),
        unavailable: c.unavailable.load(Ordering::Relaxed),
        terminated: c.terminated.load(Ordering::Relaxed),
        worker_lost: c.worker_lost.load(Ordering::Relaxed),
        retried: c.retried.load(Ordering::Relaxed),
        state: snap.unavailable.unwrap_or_else(|| "ok".into()),
        phase,
        processes,
        metrics,
    }
}

/// The children of a group's leader (the php-fpm master, or the php-cgi
/// that forked `PHP_FCGI_CHILDREN`): the processes that run its PHP, with
/// what the engine said of each. A php-fpm master's other child, the one
/// that answers its status page (`pm.status_listen`, php-fpm's pool
/// `<pool>_status`), serves none of the pool's requests and is left out.
fn group_members(leader: u32, pool: &str, engine: Option<&Vec<EngineProcess>>) -> Vec<GroupMember> {
    let Ok(children) = std::fs::read_to_string(format!("/proc/{leader}/task/{leader}/children"))
    else {
        return Vec::new();
    };
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|u| u.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    let hz = crate::pool::usage::clock_ticks_per_second();
    children
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .filter(|pid| !serves_status_only(*pid, pool))
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // After the command's last ')': state is field 3, starttime 22.
            let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let started: f64 = rest.get(19)?.parse::<f64>().ok()? / hz;
            Some(GroupMember {
                pid,
                state: rest.first()?.to_string(),
                rss: rss_of(pid),
                cpu_seconds: cpu_of(pid),
                start_since: (uptime - started).max(0.0) as u64,
                engine: engine.and_then(|e| e.iter().find(|p| p.pid == pid).cloned()),
            })
        })
        .collect()
}

/// Whether `pid` is php-fpm's status-only child of `pool`'s group.
fn serves_status_only(pid: u32, pool: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        let title = String::from_utf8_lossy(&c);
        title.trim_end_matches(['\0', ' ']) == format!("php-fpm: pool {pool}_status")
    })
}

/// Resident set size from `/proc/<pid>/statm`, in bytes.
pub fn rss_of(pid: u32) -> u64 {
    let Ok(statm) = std::fs::read_to_string(format!("/proc/{pid}/statm")) else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * page_size()
}

/// User plus system CPU time from `/proc/<pid>/stat`, in seconds.
pub fn cpu_of(pid: u32) -> f64 {
    use crate::pool::usage;
    let ticks = usage::Ticks::of(pid).unwrap_or_default();
    ticks.own as f64 / usage::clock_ticks_per_second()
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u64 } else { 4096 }
}

/// Which rendering a status request asked for, php-fpm's way: the first of
/// `html`, `xml`, `json`, `openmetrics` present in the query wins; `full`
/// adds the processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Html,
    Xml,
    Json,
    OpenMetrics,
}

pub fn parse_query(query: &str) -> (Format, bool) {
    let has = |name: &str| {
        query
            .split('&')
            .any(|kv| kv.split('=').next() == Some(name))
    };
    let format = if has("html") {
        Format::Html
    } else if has("xml") {
        Format::Xml
    } else if has("json") {
        Format::Json
    } else if has("openmetrics") {
        Format::OpenMetrics
    } else {
        Format::Text
    };
    (format, has("full"))
}

/// The OpenMetrics exposition of every pool, for `herd ctl metrics`:
/// herd's labelled families only, each once with a sample per pool.
/// php-fpm's families are unlabelled, so they cannot be repeated per pool
/// in one document; each pool's status page (`?openmetrics`) has them.
/// `engine`: what each pool's php-fpm groups said, by pool, where asked.
pub fn openmetrics(pools: &[Arc<Pool>], phase: Phase, engine: &[engine::Figures]) -> String {
    let none = engine::Figures::new();
    let snaps: Vec<PoolStatus> = pools
        .iter()
        .enumerate()
        .map(|(i, pool)| {
            let started = SystemTime::now() - pool.started.elapsed();
            snapshot(pool, started, phase, engine.get(i).unwrap_or(&none))
        })
        .collect();
    let mut out = String::new();
    metrics::write(&mut out, &snaps.iter().collect::<Vec<_>>());
    out.push_str("# EOF\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool of two workers of generation 1, one busy, for the renderers.
    pub(super) fn sample() -> PoolStatus {
        PoolStatus {
            pool: "www".into(),
            process_manager: "static",
            start_time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            start_since: 5,
            accepted_conn: 7,
            listen_queue: 1,
            max_listen_queue: 2,
            listen_queue_len: 1024,
            idle_processes: 1,
            active_processes: 1,
            total_processes: 2,
            max_active_processes: 2,
            max_children_reached: 0,
            slow_requests: 0,
            generation: 1,
            max_children: 2,
            config_max_children: 2,
            warming_processes: 0,
            spawns: 2,
            failures: 0,
            queue_full: 0,
            queue_timeouts: 0,
            unavailable: 0,
            terminated: 0,
            worker_lost: 0,
            retried: 0,
            state: "ok".into(),
            phase: Phase::Serving,
            metrics: sample_metrics(),
            processes: vec![ProcessStatus {
                pid: 42,
                state: "Running",
                start_time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_001),
                start_since: 4,
                requests: 3,
                request_duration: 1500,
                request_method: "GET".into(),
                request_uri: "/a?b=<c>".into(),
                content_length: 0,
                user: "-".into(),
                script: "/srv/a.php".into(),
                last_request_cpu: None,
                last_request_memory: None,
                generation: 1,
                retiring: false,
                rss: 1024,
                cpu_seconds: 0.5,
                last_used: None,
                slots: 1,
                busy_slots: 1,
                in_flight: vec![InFlight {
                    method: "GET".into(),
                    uri: "/a?b=<c>".into(),
                    elapsed: 0.0015,
                }],
                group: vec![GroupMember {
                    pid: 43,
                    state: "S".into(),
                    rss: 2048,
                    cpu_seconds: 0.25,
                    start_since: 4,
                    engine: Some(EngineProcess {
                        pid: 43,
                        state: "Running".into(),
                        requests: 7,
                        request_duration: 2500,
                        request_method: "GET".into(),
                        request_uri: "/a?b=<c>".into(),
                        script: "/srv/a.php".into(),
                        ..EngineProcess::default()
                    }),
                }],
            }],
        }
    }

    fn sample_metrics() -> Metrics {
        let latency = crate::pool::Histogram::default();
        for ms in [2, 30, 700] {
            latency.observe(Duration::from_millis(ms));
        }
        latency.observe(Duration::from_micros(10));
        let queue_wait = crate::pool::Histogram::default();
        for ms in [0, 0, 0, 40] {
            queue_wait.observe(Duration::from_millis(ms));
        }
        Metrics {
            requests: vec![(1, 3)],
            unserved: 1,
            latency: latency.snapshot(),
            queue_wait: queue_wait.snapshot(),
            workers: vec![(1, [1, 1, 0, 0])],
            deploy: crate::pool::DeployStatus {
                generation: 1,
                serving: 1,
                state: crate::pool::DeployState::Stable,
                ready: 2,
                target: 2,
                generations: vec![crate::pool::GenerationStatus {
                    number: 1,
                    state: "stable".into(),
                    workers: 2,
                    rank: 1,
                }],
                ..Default::default()
            },
            deploys_refused: 0,
            backoff_delay: Duration::ZERO,
            connections: 4,
            connections_open: 1,
        }
    }

    #[test]
    fn query_picks_the_format_like_php_fpm() {
        assert_eq!(parse_query(""), (Format::Text, false));
        assert_eq!(parse_query("json&full"), (Format::Json, true));
        assert_eq!(parse_query("full&xml"), (Format::Xml, true));
        assert_eq!(parse_query("json&html"), (Format::Html, false));
        assert_eq!(parse_query("openmetrics"), (Format::OpenMetrics, false));
    }
}
