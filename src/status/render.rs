//! Renderings of a [`PoolStatus`]: php-fpm's text, JSON, XML, HTML and
//! OpenMetrics layouts, with herd's fields after php-fpm's.

use std::fmt::Write;

use super::time::{clf, epoch};
use super::{Format, PoolStatus, ProcessStatus};

/// Returns the content type and the body.
pub fn render(s: &PoolStatus, format: Format, full: bool) -> (&'static str, String) {
    match format {
        Format::Text => ("text/plain", text(s, full)),
        Format::Json => ("application/json", json(s, full)),
        Format::Xml => ("text/xml", xml(s, full)),
        Format::Html => ("text/html", html(s, full)),
        Format::OpenMetrics => (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            openmetrics(s),
        ),
    }
}

/// Pool fields as (php-fpm's name, text value, JSON value).
fn pool_fields(s: &PoolStatus) -> Vec<(&'static str, String, serde_json::Value)> {
    use serde_json::json;
    let n = |v: u64| (v.to_string(), json!(v));
    let mut f = vec![
        ("pool", (s.pool.clone(), json!(s.pool))),
        (
            "process manager",
            (s.process_manager.to_string(), json!(s.process_manager)),
        ),
        (
            "start time",
            (clf(s.start_time), json!(epoch(s.start_time))),
        ),
        ("start since", n(s.start_since)),
        ("accepted conn", n(s.accepted_conn)),
        ("listen queue", n(s.listen_queue)),
        ("max listen queue", n(s.max_listen_queue)),
        ("listen queue len", n(s.listen_queue_len)),
        ("idle processes", n(s.idle_processes)),
        ("active processes", n(s.active_processes)),
        ("total processes", n(s.total_processes)),
        ("max active processes", n(s.max_active_processes)),
        ("max children reached", n(s.max_children_reached)),
        ("slow requests", n(s.slow_requests)),
        // herd's own.
        ("generation", n(s.generation as u64)),
        ("max children", n(s.max_children as u64)),
        ("config max children", n(s.config_max_children as u64)),
        ("warming processes", n(s.warming_processes)),
        ("spawns", n(s.spawns)),
        ("failures", n(s.failures)),
        ("queue full", n(s.queue_full)),
        ("queue timeouts", n(s.queue_timeouts)),
        ("unavailable", n(s.unavailable)),
        ("terminated requests", n(s.terminated)),
        ("worker lost requests", n(s.worker_lost)),
        ("retried requests", n(s.retried)),
        ("state", (s.state.clone(), json!(s.state))),
        ("phase", (s.phase.to_string(), json!(s.phase.as_str()))),
    ];
    f.iter_mut()
        .map(|(k, (t, j))| (*k, std::mem::take(t), j.take()))
        .collect()
}

/// A process's fields as (php-fpm's name, text value, JSON value), those
/// herd does not know for it left out (see [`process_columns`]).
fn process_fields(p: &ProcessStatus) -> Vec<(&'static str, String, serde_json::Value)> {
    process_columns(p)
        .into_iter()
        .filter_map(|(k, v)| v.map(|(t, j)| (k, t, j)))
        .collect()
}

/// Every process field, `None` where herd does not know it: `last request
/// cpu` and `last request memory` of a busy worker (php-fpm says 0 there),
/// of a request that was not measured, or of a worker whose requests are
/// served by processes herd cannot tell apart (see `pool::usage`).
fn process_columns(p: &ProcessStatus) -> Vec<(&'static str, Option<(String, serde_json::Value)>)> {
    use serde_json::json;
    let n = |v: u64| (v.to_string(), json!(v));
    let s = |v: &str| (v.to_string(), json!(v));
    let f = vec![
        ("pid", n(p.pid as u64)),
        ("state", s(p.state)),
        (
            "start time",
            (clf(p.start_time), json!(epoch(p.start_time))),
        ),
        ("start since", n(p.start_since)),
        ("requests", n(p.requests)),
        ("request duration", n(p.request_duration)),
        ("request method", s(&p.request_method)),
        ("request URI", s(&p.request_uri)),
        ("content length", n(p.content_length)),
        ("user", s(&p.user)),
        ("script", s(&p.script)),
        (
            "last request cpu",
            (
                format!("{:.2}", p.last_request_cpu.unwrap_or(0.0)),
                json!(p.last_request_cpu),
            ),
        ),
        ("last request memory", n(p.last_request_memory.unwrap_or(0))),
        // herd's own.
        ("generation", n(p.generation as u64)),
        (
            "retiring",
            (
                if p.retiring { "yes" } else { "no" }.into(),
                json!(p.retiring),
            ),
        ),
        ("slots", n(p.slots as u64)),
        ("busy slots", n(p.busy_slots as u64)),
        ("rss", n(p.rss)),
        (
            "cpu seconds",
            (format!("{:.2}", p.cpu_seconds), json!(p.cpu_seconds)),
        ),
        (
            "last used",
            (
                p.last_used.map_or("-".into(), |t| format!("{t:.1}")),
                json!(p.last_used),
            ),
        ),
        // A PHP group's processes: `pid/rss/cpu seconds` each in text.
        (
            "group processes",
            (
                p.group
                    .iter()
                    .map(|m| format!("{}/{}/{:.2}", m.pid, m.rss, m.cpu_seconds))
                    .collect::<Vec<_>>()
                    .join(" "),
                json!(p.group),
            ),
        ),
    ];
    let known = |k: &str| match k {
        "last request cpu" => p.last_request_cpu.is_some(),
        "last request memory" => p.last_request_memory.is_some(),
        "group processes" => !p.group.is_empty(),
        _ => true,
    };
    f.into_iter()
        .map(|(k, v)| (k, known(k).then_some(v)))
        .collect()
}

fn text(s: &PoolStatus, full: bool) -> String {
    let mut out = String::new();
    for (k, v, _) in pool_fields(s) {
        let _ = writeln!(out, "{:<22}{v}", format!("{k}:"));
    }
    if full {
        for p in &s.processes {
            out.push_str("\n************************\n");
            for (k, v, _) in process_fields(p) {
                let _ = writeln!(out, "{:<22}{v}", format!("{k}:"));
            }
        }
    }
    out
}

fn json(s: &PoolStatus, full: bool) -> String {
    let mut obj = serde_json::Map::new();
    for (k, _, v) in pool_fields(s) {
        obj.insert(k.into(), v);
    }
    if full {
        let procs = s
            .processes
            .iter()
            .map(|p| {
                // php-fpm writes this one key in lower case in JSON.
                let fields = process_fields(p).into_iter().map(|(k, _, v)| {
                    (
                        if k == "request URI" {
                            "request uri".into()
                        } else {
                            k.to_string()
                        },
                        v,
                    )
                });
                serde_json::Value::Object(fields.collect())
            })
            .collect();
        obj.insert("processes".into(), serde_json::Value::Array(procs));
    }
    serde_json::Value::Object(obj).to_string()
}

fn xml_escape(v: &str) -> String {
    v.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn xml(s: &PoolStatus, full: bool) -> String {
    let tag = |k: &str| k.replace(' ', "-").to_lowercase();
    let mut out = String::from("<?xml version=\"1.0\" ?>\n<status>\n");
    for (k, _, v) in pool_fields(s) {
        let value = match v {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        let _ = writeln!(out, "<{t}>{}</{t}>", xml_escape(&value), t = tag(k));
    }
    if full {
        out.push_str("<processes>\n");
        for p in &s.processes {
            out.push_str("<process>");
            for (k, _, v) in process_fields(p) {
                let value = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                let _ = write!(out, "<{t}>{}</{t}>", xml_escape(&value), t = tag(k));
            }
            out.push_str("</process>\n");
        }
        out.push_str("</processes>\n");
    }
    out.push_str("</status>\n");
    out
}

fn html(s: &PoolStatus, full: bool) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html><head><title>herd status</title></head><body>\n<table border=\"1\">\n",
    );
    for (k, v, _) in pool_fields(s) {
        let _ = writeln!(out, "<tr><th>{k}</th><td>{}</td></tr>", xml_escape(&v));
    }
    out.push_str("</table>\n");
    if full && !s.processes.is_empty() {
        out.push_str("<table border=\"1\">\n<tr>");
        for (k, _) in process_columns(&s.processes[0]) {
            let _ = write!(out, "<th>{k}</th>");
        }
        out.push_str("</tr>\n");
        for p in &s.processes {
            out.push_str("<tr>");
            for (_, v) in process_columns(p) {
                let v = v.map_or("-".into(), |(t, _)| t);
                let _ = write!(out, "<td>{}</td>", xml_escape(&v));
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</table>\n");
    }
    out.push_str("</body></html>\n");
    out
}

/// php-fpm's metric names, unlabelled as php-fpm has them, then herd's,
/// labelled by pool (see [`super::metrics`]). php-fpm declares its counters as `counter` without the
/// `_total` suffix OpenMetrics requires; herd keeps the names (so existing
/// queries keep working) and declares them `unknown`, which is valid.
fn openmetrics(s: &PoolStatus) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# TYPE {name} {kind}\n# HELP {name} {help}\n{name} {value}"
        );
    };
    metric(
        "phpfpm_up",
        "gauge",
        &format!(
            "Could pool {} using a {} PM be reached?",
            s.pool, s.process_manager
        ),
        1,
    );
    metric(
        "phpfpm_start_since",
        "unknown",
        "The number of seconds since the master started.",
        s.start_since,
    );
    metric(
        "phpfpm_accepted_connections",
        "unknown",
        "The number of requests accepted by the pool.",
        s.accepted_conn,
    );
    metric(
        "phpfpm_listen_queue",
        "gauge",
        "The number of requests waiting for a free worker.",
        s.listen_queue,
    );
    metric(
        "phpfpm_max_listen_queue",
        "unknown",
        "The most requests that have waited for a free worker at once.",
        s.max_listen_queue,
    );
    metric(
        "phpfpm_listen_queue_length",
        "gauge",
        "The most requests that may wait for a free worker.",
        s.listen_queue_len,
    );
    metric(
        "phpfpm_idle_processes",
        "gauge",
        "The number of idle processes.",
        s.idle_processes,
    );
    metric(
        "phpfpm_active_processes",
        "gauge",
        "The number of active processes.",
        s.active_processes,
    );
    metric(
        "phpfpm_total_processes",
        "gauge",
        "The number of idle + active processes.",
        s.total_processes,
    );
    metric(
        "phpfpm_max_active_processes",
        "unknown",
        "The maximum number of active processes since the master started.",
        s.max_active_processes,
    );
    metric(
        "phpfpm_max_children_reached",
        "unknown",
        "The number of times the process limit has been reached.",
        s.max_children_reached,
    );
    metric(
        "phpfpm_slow_requests",
        "unknown",
        "The number of requests that exceeded request_slowlog_timeout.",
        s.slow_requests,
    );

    super::metrics::write(&mut out, &[s]);
    out.push_str("# EOF\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::tests::sample;

    #[test]
    fn text_uses_php_fpm_field_names() {
        let t = text(&sample(), true);
        assert!(
            t.starts_with("pool:                 www\nprocess manager:      static\n"),
            "{t}"
        );
        assert!(
            t.contains("start time:           14/Nov/2023:22:13:20 +0000\n"),
            "{t}"
        );
        assert!(
            t.contains("\n************************\npid:                  42\n"),
            "{t}"
        );
        assert!(t.contains("request URI:          /a?b=<c>\n"));
        assert!(t.contains("group processes:      43/2048/0.25\n"), "{t}");
        assert!(t.contains("state:                ok\nphase:                serving\n"));
    }

    #[test]
    fn json_has_php_fpm_keys() {
        let v: serde_json::Value = serde_json::from_str(&json(&sample(), true)).unwrap();
        assert_eq!(v["accepted conn"], 7);
        assert_eq!(v["start time"], 1_700_000_000);
        assert_eq!(v["processes"][0]["request uri"], "/a?b=<c>");
        assert_eq!(v["processes"][0]["generation"], 1);
        assert_eq!(v["processes"][0]["group processes"][0]["pid"], 43);
        assert_eq!(v["processes"][0]["group processes"][0]["cpu seconds"], 0.25);
        assert_eq!(v["phase"], "serving");
    }

    #[test]
    fn xml_escapes_values() {
        let x = xml(&sample(), true);
        assert!(x.contains("<accepted-conn>7</accepted-conn>"));
        assert!(
            x.contains("<request-uri>/a?b=&lt;c&gt;</request-uri>"),
            "{x}"
        );
    }

    #[test]
    fn openmetrics_ends_with_eof() {
        let m = openmetrics(&sample());
        assert!(m.ends_with("# EOF\n"));
        assert!(m.contains("phpfpm_accepted_connections 7\n"));
        assert!(m.contains("herd_workers{pool=\"www\",generation=\"1\",state=\"busy\"} 1\n"));
        assert_eq!(m.matches("# EOF").count(), 1);
    }
}
