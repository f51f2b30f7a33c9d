//! `catch_workers_output`: a worker's stdout and stderr go to one pipe that
//! the master reads and logs line by line, naming pool and pid.

use std::os::fd::OwnedFd;

use tokio::io::{AsyncBufReadExt, BufReader};

/// Longest line logged as is; the rest of a longer line is cut, as
/// php-fpm's `log_limit` does, so one runaway line cannot flood the log.
const LINE_LIMIT: usize = 1024;

pub fn pipe() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

/// Logs what the worker writes until it closes the pipe (exits).
pub fn forward(read: OwnedFd, pool: String, pid: u32) {
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
                    tracing::warn!(pool = %pool, pid, "worker said: {}", &text[..cut]);
                }
            }
        }
    });
}
