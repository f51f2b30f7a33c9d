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

use super::protocol::Request;

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
        let v: Value =
            serde_json::from_str(&line).context("the master sent something that is not JSON")?;
        let shown = if json {
            writeln!(out, "{line}")
        } else {
            show(&v, out)
        };
        match shown {
            // A reader that went away (`| head`) is not an error of ours.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
            other => other?,
        }
        if v["done"] == true {
            let ok = v["ok"] == true;
            if !ok && !json {
                eprintln!("herd ctl: {}", v["error"].as_str().unwrap_or("failed"));
            }
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
    }
    eprintln!("herd ctl: the master closed the connection without an answer");
    Ok(ExitCode::from(1))
}

fn show(v: &Value, out: &mut dyn Write) -> std::io::Result<()> {
    if v["event"] == "progress" && v["message"].is_string() {
        return writeln!(out, "{}", s(&v["message"]));
    }
    if v["event"] == "progress" {
        return writeln!(
            out,
            "pool {}: generation {}: {}/{} new workers ready, {} old left",
            s(&v["pool"]),
            v["generation"],
            v["ready"],
            v["target"],
            v["old"]
        );
    }
    if let Some(pools) = v["pools"].as_array() {
        writeln!(out, "master pid {}: {}", s(&v["pid"]), s(&v["phase"]))?;
        for p in pools {
            show_pool(p, out)?;
        }
        return Ok(());
    }
    if let Some(text) = v["metrics"].as_str() {
        write!(out, "{text}")?;
    }
    if let Some(msg) = v["message"].as_str() {
        writeln!(out, "{msg}")?;
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
