//! The text `herd ctl status` prints and `herd ctl top` redraws: the
//! master and its phase (with the drain during a graceful stop), one
//! summary line per pool, and one row per worker with the requests it
//! serves now. Built from the master's JSON answer, so it shows what any
//! other client of the control socket would see.

use std::fmt::Write;

use serde_json::Value;

use super::protocol::Done;

/// How text is marked up: ANSI colours on a terminal, nothing elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    pub colour: bool,
}

#[derive(Clone, Copy)]
enum Tone {
    Good,
    Busy,
    Change,
    Bad,
    Dim,
    Bold,
}

impl Style {
    /// Colours for a terminal that wants them: `NO_COLOR` (no-color.org)
    /// and `TERM=dumb` turn them off.
    pub fn for_terminal(is_tty: bool) -> Style {
        let wanted = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            && std::env::var("TERM").map_or(true, |t| t != "dumb");
        Style {
            colour: is_tty && wanted,
        }
    }

    fn paint(self, tone: Tone, text: &str) -> String {
        if !self.colour {
            return text.to_string();
        }
        let code = match tone {
            Tone::Good => "32",
            Tone::Busy => "33",
            Tone::Change => "36",
            Tone::Bad => "1;31",
            Tone::Dim => "2",
            Tone::Bold => "1",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }
}

/// The whole view of one `status` answer.
pub fn render(d: &Done, style: Style) -> String {
    let mut out = String::new();
    let phase = d.phase.as_deref().unwrap_or("?");
    let pid = d.pid.map_or("?".into(), |p| p.to_string());
    let tone = match phase {
        "serving" => Tone::Good,
        "starting" | "reloading" | "upgrading" => Tone::Change,
        _ => Tone::Busy,
    };
    let _ = writeln!(out, "master pid {pid}: {}", style.paint(tone, phase));
    let pools = d.pools.as_deref().unwrap_or_default();
    if let Some(line) = drain_line(phase, d.phase_ends_in, pools) {
        let _ = writeln!(out, "{}", style.paint(Tone::Busy, &line));
    }
    for p in pools {
        pool_lines(&mut out, p, style);
    }
    out
}

/// During a graceful stop: what is left to finish, and when the step
/// ends. Those requests are the rows with a request in the tables below.
fn drain_line(phase: &str, ends_in: Option<f64>, pools: &[Value]) -> Option<String> {
    let step = match phase {
        "depooling" => "ping says 503 while everything is still served; the listeners close",
        "draining" => "listeners closed; requests still running are stopped",
        "stopping" => return Some("stopping the workers".into()),
        _ => return None,
    };
    let mut total = 0;
    let per_pool: Vec<String> = pools
        .iter()
        .map(|p| {
            let (requests, workers) = in_flight(p);
            total += requests;
            format!("{} {requests} on {workers} worker(s)", s(&p["pool"]))
        })
        .collect();
    let conns: u64 = pools
        .iter()
        .filter_map(|p| p["connections open"].as_u64())
        .sum();
    let when = ends_in.map_or(String::new(), |t| format!(" in {t:.1}s"));
    Some(format!(
        "{phase}: {total} request(s) in flight ({}), {conns} client connection(s) open; {step}{when}",
        per_pool.join(", ")
    ))
}

/// Requests in flight in a pool, and the workers serving them.
fn in_flight(pool: &Value) -> (usize, usize) {
    let procs = pool["processes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let busy: Vec<usize> = procs
        .iter()
        .map(|w| w["requests in flight"].as_array().map_or(0, Vec::len))
        .filter(|n| *n > 0)
        .collect();
    (busy.iter().sum(), busy.len())
}

fn pool_lines(out: &mut String, p: &Value, style: Style) {
    let _ = writeln!(out, "{}", summary(p, style));
    let _ = writeln!(
        out,
        "{}",
        style.paint(
            Tone::Dim,
            &format!(
                "  {:<8} {:>4} {:<9} {:>5} {:>7} {:>8} {:>6} {:>9}  {:<16} NOW",
                "PID", "GEN", "STATE", "SLOTS", "REQS", "UPTIME", "CPU", "MEMORY", "LAST REQUEST"
            )
        )
    );
    for w in p["processes"].as_array().into_iter().flatten() {
        worker_lines(out, w, style);
    }
}

/// `www: generation 3 stable | workers 1 busy, 3 idle, max 4 | slots 1/4
/// busy | queue 0/1024 | static on 127.0.0.1:9000`.
fn summary(p: &Value, style: Style) -> String {
    let d = &p["deploy"];
    let deploy = match d["state"].as_str() {
        Some("rolling out") => style.paint(
            Tone::Change,
            &format!(
                "generation {} rolling out ({}/{} ready, {} old left; {} serves)",
                d["generation"], d["ready"], d["target"], d["old"], d["serving"]
            ),
        ),
        Some("refused") => style.paint(
            Tone::Bad,
            &format!(
                "generation {} serves; deploy refused (generation {}): {}",
                d["serving"],
                d["generation"],
                s(&d["reason"])
            ),
        ),
        _ => format!("generation {} stable", p["generation"]),
    };
    let procs = p["processes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let count = |state: &str| procs.iter().filter(|w| w["state"] == state).count();
    let retiring = procs.iter().filter(|w| w["retiring"] == true).count();
    let mut workers = format!("workers {} busy, {} idle", count("Running"), count("Idle"));
    for (n, what) in [(count("Warming"), "warming"), (retiring, "retiring")] {
        if n > 0 {
            let _ = write!(workers, ", {n} {what}");
        }
    }
    let _ = write!(workers, ", max {}", p["max children"]);
    if p["max children"] != p["config max children"] {
        let _ = write!(workers, " (config {})", p["config max children"]);
    }
    let active = p["active processes"].as_u64().unwrap_or(0);
    let slots = active + p["idle processes"].as_u64().unwrap_or(0);
    let queue = format!("queue {}/{}", p["listen queue"], p["listen queue len"]);
    let queue = if p["listen queue"].as_u64().unwrap_or(0) > 0 {
        style.paint(Tone::Busy, &queue)
    } else {
        queue
    };
    let mut line = format!(
        "{}: {deploy} | {workers} | slots {active}/{slots} busy | {queue} | {} on {}",
        style.paint(Tone::Bold, &s(&p["pool"])),
        s(&p["process manager"]),
        s(&p["listen"])
    );
    if p["state"] != "ok" {
        let _ = write!(line, " | {}", style.paint(Tone::Bad, &s(&p["state"])));
    }
    line
}

/// Where the NOW column starts in a worker's row.
const NOW_COLUMN: usize = 84;

/// A worker's row, then one line for each further request it serves at
/// once (a worker with several slots).
fn worker_lines(out: &mut String, w: &Value, style: Style) {
    let state = if w["retiring"] == true {
        "Retiring".to_string()
    } else {
        s(&w["state"])
    };
    let tone = match state.as_str() {
        "Running" => Tone::Busy,
        "Idle" => Tone::Good,
        _ => Tone::Change,
    };
    let last = match (
        w["last request cpu"].as_f64(),
        w["last request memory"].as_f64(),
    ) {
        (Some(cpu), Some(mem)) => format!("{cpu:.0}% {}", mib(mem)),
        (Some(cpu), None) => format!("{cpu:.0}%"),
        _ => "-".into(),
    };
    let requests = w["requests in flight"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let now = match (requests.first(), w["last used"].as_f64()) {
        (Some(r), _) => request(r),
        (None, _) if state == "Warming" => "warming up".into(),
        (None, Some(t)) => style.paint(Tone::Dim, &format!("idle {}", duration(t))),
        (None, None) => "-".into(),
    };
    // Padded before painting, so escape codes do not shift the columns.
    let state = style.paint(tone, &format!("{state:<9}"));
    let _ = writeln!(
        out,
        "  {:<8} {:>4} {state} {:>5} {:>7} {:>8} {:>6} {:>9}  {last:<16} {now}",
        s(&w["pid"]),
        s(&w["generation"]),
        format!("{}/{}", w["busy slots"], w["slots"]),
        s(&w["requests"]),
        duration(w["start since"].as_f64().unwrap_or(0.0)),
        format!("{:.1}s", w["cpu seconds"].as_f64().unwrap_or(0.0)),
        mib(w["rss"].as_f64().unwrap_or(0.0)),
    );
    for r in requests.iter().skip(1) {
        let _ = writeln!(out, "{:NOW_COLUMN$}{}", "", request(r));
    }
    // A PHP group: the processes behind its slots.
    if let Some(members) = w["group processes"].as_array().filter(|m| !m.is_empty()) {
        let rss: f64 = members.iter().filter_map(|m| m["rss"].as_f64()).sum();
        let cpu: f64 = members
            .iter()
            .filter_map(|m| m["cpu seconds"].as_f64())
            .sum();
        let pids: Vec<String> = members.iter().map(|m| s(&m["pid"])).collect();
        let line = format!(
            "    {} PHP process{}{}, {} resident, {cpu:.1}s CPU: {}",
            members.len(),
            if members.len() == 1 { "" } else { "es" },
            engine_states(members),
            mib(rss),
            pids.join(" ")
        );
        let _ = writeln!(out, "{}", style.paint(Tone::Dim, &line));
        // What php-fpm says its busy children do: a request, or the work
        // a script goes on with after `fastcgi_finish_request()`.
        for m in members {
            let e = &m["engine"];
            if e.is_null() || e["state"] == "Idle" {
                continue;
            }
            let line = format!(
                "      {} {} {} {} ({:.1}s), {} served",
                s(&m["pid"]),
                s(&e["state"]),
                s(&e["request method"]),
                s(&e["request uri"]),
                e["request duration"].as_f64().unwrap_or(0.0) / 1e6,
                s(&e["requests"]),
            );
            let _ = writeln!(out, "{}", style.paint(Tone::Dim, &line));
        }
    }
}

/// ` (2 Running, 6 Idle)` from php-fpm's own figures, and nothing when it
/// gave none.
fn engine_states(members: &[Value]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for m in members {
        let Some(state) = m["engine"]["state"].as_str() else {
            continue;
        };
        match counts.iter_mut().find(|(s, _)| s == state) {
            Some((_, n)) => *n += 1,
            None => counts.push((state.to_string(), 1)),
        }
    }
    if counts.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    format!(" ({})", parts.join(", "))
}

/// `GET /slow?ms=2000 for 1.2s`.
fn request(r: &Value) -> String {
    format!(
        "{} {} for {:.1}s",
        s(&r["method"]),
        s(&r["uri"]),
        r["elapsed"].as_f64().unwrap_or(0.0)
    )
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

pub fn duration(secs: f64) -> String {
    let secs = secs as u64;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86400, secs % 86400 / 3600),
    }
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(phase: &str) -> Done {
        let worker = |pid: u32, state: &str, flight: Value, last: Value| {
            let mut w = json!({
                "pid": pid, "generation": 3, "state": state, "retiring": false,
                "slots": 2, "busy slots": flight.as_array().unwrap().len(),
                "requests": 12, "start since": 75, "cpu seconds": 1.25, "rss": 12_582_912,
                "last used": 3.0, "requests in flight": flight,
            });
            if let Value::Object(extra) = last {
                w.as_object_mut().unwrap().extend(extra);
            }
            w
        };
        Done {
            done: true,
            ok: true,
            pid: Some(42),
            phase: Some(phase.into()),
            phase_ends_in: Some(7.04),
            pools: Some(vec![json!({
                "pool": "www", "process manager": "static", "listen": "127.0.0.1:9000",
                "generation": 3, "state": "ok", "max children": 6, "config max children": 4,
                "active processes": 2, "idle processes": 2,
                "listen queue": 0, "listen queue len": 1024, "connections open": 2,
                "deploy": {"state": "stable", "generation": 3, "serving": 3},
                "processes": [
                    worker(100, "Running", json!([
                        {"method": "GET", "uri": "/slow?ms=2000", "elapsed": 1.23},
                        {"method": "POST", "uri": "/form", "elapsed": 0.5},
                    ]), Value::Null),
                    worker(101, "Idle", json!([]),
                        json!({"last request cpu": 97.4, "last request memory": 8_493_466})),
                ],
            })]),
            ..Done::default()
        }
    }

    #[test]
    fn a_pool_is_one_line_and_a_busy_worker_shows_its_requests() {
        let text = render(&answer("serving"), Style { colour: false });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "master pid 42: serving");
        assert_eq!(
            lines[1],
            "www: generation 3 stable | workers 1 busy, 1 idle, max 6 (config 4) | \
             slots 2/4 busy | queue 0/1024 | static on 127.0.0.1:9000"
        );
        assert!(
            lines[3].contains("Running") && lines[3].ends_with("GET /slow?ms=2000 for 1.2s"),
            "{text}"
        );
        assert!(lines[4].ends_with("POST /form for 0.5s"), "{text}");
        assert!(
            lines[5].contains("97% 8.1 MiB") && lines[5].ends_with("idle 3s"),
            "{text}"
        );
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn a_drain_says_what_is_left_and_when_it_is_cut() {
        let text = render(&answer("draining"), Style { colour: false });
        let second = text.lines().nth(1).unwrap();
        assert_eq!(
            second,
            "draining: 2 request(s) in flight (www 2 on 1 worker(s)), 2 client connection(s) open; \
             listeners closed; requests still running are stopped in 7.0s"
        );
    }

    #[test]
    fn colours_only_when_asked() {
        let text = render(&answer("serving"), Style { colour: true });
        assert!(text.contains("\x1b[32mserving\x1b[0m"), "{text}");
        assert!(text.contains("\x1b[33mRunning  \x1b[0m"), "{text}");
    }
}
