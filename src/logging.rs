//! The master's log: tracing events as one line each on stderr, which is
//! the `error_log` file when one is configured. As php-fpm does, the file is
//! put in place of fd 2 itself, so workers that inherit stderr write to it
//! too and `SIGUSR1` reopens it for all of them after a log rotation.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::config::{LogFormat, LogLevel};

/// One line per event on stderr: `text` (timestamp, level, message, then
/// `key=value` fields such as pool, worker, pid) or `json` (one object per
/// line with the same fields, for log pipelines).
pub fn init(level: LogLevel, format: LogFormat) {
    let filter = match level {
        LogLevel::Alert | LogLevel::Error => tracing::Level::ERROR,
        LogLevel::Warning => tracing::Level::WARN,
        LogLevel::Notice => tracing::Level::INFO,
        LogLevel::Debug => tracing::Level::DEBUG,
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

/// Points fd 2 at `path` (appending); nothing to do without a file.
pub fn reopen(path: Option<&Path>) {
    let Some(path) = path else { return };
    match open_over_stderr(path) {
        Ok(()) => tracing::info!("reopened {}", path.display()),
        Err(e) => tracing::error!("failed to reopen {}: {e}", path.display()),
    }
}

pub fn open_over_stderr(path: &Path) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    nix::unistd::dup2_stderr(&file).map_err(std::io::Error::from)?;
    Ok(())
}

/// A log file of the master's own (access log, slowlog): appended to one
/// line per write, reopened in place on `SIGUSR1` after a rotation.
pub struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

impl LogFile {
    pub fn open(path: &Path) -> std::io::Result<LogFile> {
        Ok(LogFile {
            path: path.to_path_buf(),
            file: Mutex::new(append(path)?),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `line` and a newline with one `write()`, so concurrent lines
    /// never interleave (O_APPEND).
    pub fn write_line(&self, line: &str) {
        let mut buf = String::with_capacity(line.len() + 1);
        buf.push_str(line);
        buf.push('\n');
        let mut f = self.file.lock().expect("log file lock");
        if let Err(e) = f.write_all(buf.as_bytes()) {
            tracing::error!("failed to write to {}: {e}", self.path.display());
        }
    }

    pub fn reopen(&self) {
        match append(&self.path) {
            Ok(new) => *self.file.lock().expect("log file lock") = new,
            Err(e) => tracing::error!("failed to reopen {}: {e}", self.path.display()),
        }
    }
}

fn append(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}
