//! `herd ctl`: sends one request to a master's control socket and shows
//! the answer, as a table a person reads at a glance or as JSON.
//!
//! Exit codes: 0 done; 1 the master refused or failed (for `reload
//! --wait`: the deploy was refused, with the reason); 2 cannot reach it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;

use super::protocol::{Done, Line, Progress, Request};

/// Sends `request` and prints what comes back to `out`.
pub fn run(
    socket: &Path,
    request: &Request,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "herd ctl: failed to connect to {}: {e} (is herd running? see --socket / --config)",
                socket.display()
            );
            return Ok(ExitCode::from(2));
        }
    };
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .context("failed to send the request")?;
    for line in BufReader::new(stream).lines() {
        let line = line.context("failed to read the answer")?;
        let answer: Line = serde_json::from_str(&line)
            .context("the master sent something that is not an answer line")?;
        let shown = match (&answer, json) {
            (_, true) => writeln!(out, "{line}"),
            (Line::Progress(p), false) => show_progress(p, out),
            (Line::Done(d), false) => show_done(d, out),
        };
        match shown {
            // A reader that went away (`| head`) is not an error of ours.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
            other => other?,
        }
        if let Line::Done(done) = answer {
            if !done.ok && !json {
                eprintln!("herd ctl: {}", done.error.as_deref().unwrap_or("failed"));
            }
            return Ok(if done.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
    }
    eprintln!("herd ctl: the master closed the connection without an answer");
    Ok(ExitCode::from(1))
}

fn show_progress(p: &Progress, out: &mut dyn Write) -> std::io::Result<()> {
    if let Some(message) = &p.message {
        return writeln!(out, "{message}");
    }
    let n = |v: Option<usize>| v.map_or("?".into(), |n| n.to_string());
    writeln!(
        out,
        "pool {}: generation {}: {}/{} new workers ready, {} old left",
        p.pool.as_deref().unwrap_or("?"),
        p.generation.map_or("?".into(), |g| g.to_string()),
        n(p.ready),
        n(p.target),
        n(p.old)
    )
}

fn show_done(d: &Done, out: &mut dyn Write) -> std::io::Result<()> {
    if let Some(pools) = &d.pools {
        let pid = d.pid.map_or("?".into(), |p| p.to_string());
        writeln!(
            out,
            "master pid {pid}: {}",
            d.phase.as_deref().unwrap_or("?")
        )?;
        for p in pools {
            show_pool(p, out)?;
        }
        return Ok(());
    }
    if let Some(text) = &d.metrics {
        write!(out, "{text}")?;
    }
    if let Some(message) = &d.message {
        writeln!(out, "{message}")?;
    }
    Ok(())
}

fn show_pool(p: &Value, out: &mut dyn Write) -> std::io::Result<()> {
    let d = &p["deploy"];
    writeln!(
        out,
        "pool {}  listen {}  pm {}  queue {}  state {}",
        s(&p["pool"]),
        s(&p["listen"]),
        s(&p["process manager"]),
        p["listen queue"],
        s(&p["state"])
    )?;
    let gens: Vec<String> = d["generations"]
        .as_array()
        .map(|gs| {
            gs.iter()
                .map(|g| {
                    format!(
                        "{} {} ({} workers)",
                        g["number"],
                        s(&g["state"]),
                        g["workers"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    writeln!(out, "  generations: {}", gens.join(", "))?;
    match d["state"].as_str() {
        Some("rolling out") => writeln!(
            out,
            "  deploy: rolling out generation {}: {}/{} new workers ready, {} old left",
            d["generation"], d["ready"], d["target"], d["old"]
        )?,
        Some("refused") => writeln!(
            out,
            "  deploy refused: {} (generation {} keeps serving)",
            s(&d["reason"]),
            d["serving"]
        )?,
        _ => writeln!(out, "  deploy: stable at generation {}", d["serving"])?,
    }
    writeln!(
        out,
        "  {:<8} {:>4}  {:<9} {:>9}  {:>8}  {:>7}  {:>9}  {:>9}",
        "PID", "GEN", "STATE", "REQUESTS", "UPTIME", "CPU", "MEMORY", "LAST USED"
    )?;
    for w in p["processes"].as_array().into_iter().flatten() {
        let state = if w["retiring"] == true {
            "Retiring".to_string()
        } else {
            s(&w["state"])
        };
        writeln!(
            out,
            "  {:<8} {:>4}  {:<9} {:>9}  {:>8}  {:>7}  {:>9}  {:>9}",
            s(&w["pid"]),
            s(&w["generation"]),
            state,
            s(&w["requests"]),
            duration(w["start since"].as_f64().unwrap_or(0.0)),
            format!("{:.1}s", w["cpu seconds"].as_f64().unwrap_or(0.0)),
            mib(w["rss"].as_f64().unwrap_or(0.0)),
            match w["last used"].as_f64() {
                Some(t) => format!("{} ago", duration(t)),
                None => "-".into(),
            }
        )?;
    }
    Ok(())
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn duration(secs: f64) -> String {
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
