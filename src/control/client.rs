//! `herd ctl`: sends one request to a master's control socket and shows
//! the answer, as a table a person reads at a glance or as JSON.
//!
//! Exit codes: 0 done; 1 the master refused or failed (for `reload
//! --wait`: the deploy was refused, with the reason); 2 cannot reach it.

use std::io::{BufRead, BufReader, Lines, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use super::protocol::{Done, Line, Progress, Request};
use super::view::{self, Style};

/// Sends `request` and prints what comes back to `out`, marked up as
/// `style` says.
pub fn run(
    socket: &Path,
    request: &Request,
    json: bool,
    style: Style,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let answers = match Answers::ask(socket, request) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("herd ctl: {e:#} (is herd running? see --socket / --config)");
            return Ok(ExitCode::from(2));
        }
    };
    for answer in answers {
        let (line, answer) = answer?;
        let shown = match (&answer, json) {
            (_, true) => writeln!(out, "{line}"),
            (Line::Progress(p), false) => show_progress(p, out),
            (Line::Done(d), false) => show_done(d, style, out),
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

/// The master's answer to one request, line by line: each as sent and as
/// read. The last one is `done`.
pub struct Answers {
    lines: Lines<BufReader<UnixStream>>,
}

impl Answers {
    /// Connects to the master at `socket` and sends `request`.
    pub fn ask(socket: &Path, request: &Request) -> anyhow::Result<Answers> {
        let mut stream = UnixStream::connect(socket)
            .with_context(|| format!("failed to connect to {}", socket.display()))?;
        let mut line = serde_json::to_string(request)?;
        line.push('\n');
        stream
            .write_all(line.as_bytes())
            .context("failed to send the request")?;
        Ok(Answers {
            lines: BufReader::new(stream).lines(),
        })
    }

    /// The last line, `done`; an error if the master closed first.
    pub fn done(self) -> anyhow::Result<(String, Done)> {
        for answer in self {
            if let (raw, Line::Done(d)) = answer? {
                return Ok((raw, d));
            }
        }
        anyhow::bail!("the master closed the connection without an answer")
    }
}

impl Iterator for Answers {
    type Item = anyhow::Result<(String, Line)>;

    fn next(&mut self) -> Option<Self::Item> {
        let line = match self.lines.next()? {
            Ok(line) => line,
            Err(e) => {
                return Some(Err(
                    anyhow::Error::new(e).context("failed to read the answer")
                ));
            }
        };
        let parsed = serde_json::from_str(&line)
            .context("the master sent something that is not an answer line");
        Some(parsed.map(|answer| (line, answer)))
    }
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

fn show_done(d: &Done, style: Style, out: &mut dyn Write) -> std::io::Result<()> {
    if d.pools.is_some() {
        return write!(out, "{}", view::render(d, style));
    }
    if let Some(text) = &d.metrics {
        write!(out, "{text}")?;
    }
    if let Some(message) = &d.message {
        writeln!(out, "{message}")?;
    }
    Ok(())
}
