//! `catch_workers_output`: a worker's stdout and stderr go to one pipe that
//! the master reads and logs line by line, naming pool and pid. Its last
//! lines are kept, so a worker that never became ready (a PHP engine that
//! failed to start) is refused with its own words.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};

/// Longest line logged as is; the rest of a longer line is cut, as
/// php-fpm's `log_limit` does, so one runaway line cannot flood the log.
const LINE_LIMIT: usize = 1024;

pub fn pipe() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

/// Lines of a worker's last words that are kept.
const LAST_WORDS: usize = 3;

/// The last lines a worker wrote.
#[derive(Clone, Debug, Default)]
pub struct LastWords(Arc<Mutex<VecDeque<String>>>);

impl LastWords {
    fn push(&self, line: &str) {
        let mut lines = self.0.lock().expect("last words lock");
        if lines.len() == LAST_WORDS {
            lines.pop_front();
        }
        lines.push_back(line.to_string());
    }

    /// What it last said, oldest line first, or `None` if nothing.
    pub fn said(&self) -> Option<String> {
        let lines = self.0.lock().expect("last words lock");
        (!lines.is_empty()).then(|| Vec::from(lines.clone()).join(" / "))
    }
}

/// Logs what the worker writes until it closes the pipe (exits).
pub fn forward(read: OwnedFd, pool: String, pid: u32) -> LastWords {
    let words = LastWords::default();
    let kept = words.clone();
    tokio::spawn(async move {
        let Ok(rx) = tokio::net::unix::pipe::Receiver::from_owned_fd(read) else {
            return;
        };
        let mut lines = BufReader::new(rx);
        let mut line = Vec::new();
        loop {
            line.clear();
            match lines.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end();
                    if text.is_empty() {
                        continue;
                    }
                    let cut = text
                        .char_indices()
                        .nth(LINE_LIMIT)
                        .map_or(text.len(), |(i, _)| i);
                    let text = &text[..cut];
                    kept.push(text);
                    // php-fpm's notices (started, ready) are not warnings.
                    if text.contains("] NOTICE: ") {
                        tracing::info!(pool = %pool, pid, "worker said: {text}");
                    } else {
                        tracing::warn!(pool = %pool, pid, "worker said: {text}");
                    }
                }
            }
        }
    });
    words
}
