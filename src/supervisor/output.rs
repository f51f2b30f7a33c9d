//! `catch_workers_output`: a worker's stdout and stderr go to one pipe that
//! the master reads and logs line by line, naming pool and pid. Its last
//! lines are kept, so a worker that never became ready (a PHP engine that
//! failed to start) is refused with its own words.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};

/// `log_limit`: the longest line logged as is, in bytes; the rest of a
/// longer line is cut, as php-fpm does, so one runaway line cannot flood
/// the log. A master-wide setting, like the log level.
static LINE_LIMIT: AtomicUsize = AtomicUsize::new(1024);

pub fn set_line_limit(bytes: usize) {
    LINE_LIMIT.store(bytes.max(1), Ordering::Relaxed);
}

/// `line` cut to at most `limit` bytes, on a character boundary.
fn cut(line: &str, limit: usize) -> &str {
    if line.len() <= limit {
        return line;
    }
    let mut end = limit;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}

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

/// Logs what the worker writes until it closes the pipe (exits); with
/// `decorate` (`decorate_workers_output`), each line names pool and pid.
pub fn forward(read: OwnedFd, pool: String, pid: u32, decorate: bool) -> LastWords {
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
                    let text = cut(text, LINE_LIMIT.load(Ordering::Relaxed));
                    kept.push(text);
                    // php-fpm's notices (started, ready) are not warnings.
                    let notice = text.contains("] NOTICE: ");
                    match (decorate, notice) {
                        (true, true) => tracing::info!(pool = %pool, pid, "worker said: {text}"),
                        (true, false) => tracing::warn!(pool = %pool, pid, "worker said: {text}"),
                        (false, true) => tracing::info!("{text}"),
                        (false, false) => tracing::warn!("{text}"),
                    }
                }
            }
        }
    });
    words
}
