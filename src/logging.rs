//! The master's log: tracing events as one line each on stderr, which is
//! the `error_log` file when one is configured. As php-fpm does, the file is
//! put in place of fd 2 itself, so workers that inherit stderr write to it
//! too and `SIGUSR1` reopens it for all of them after a log rotation.

use std::path::Path;

use crate::config::LogLevel;

pub fn init(level: LogLevel) {
    let filter = match level {
        LogLevel::Alert | LogLevel::Error => tracing::Level::ERROR,
        LogLevel::Warning => tracing::Level::WARN,
        LogLevel::Notice => tracing::Level::INFO,
        LogLevel::Debug => tracing::Level::DEBUG,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
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
