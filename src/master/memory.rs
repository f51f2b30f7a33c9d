//! Giving memory back after a burst of connections. Each client connection
//! costs the master a read buffer and a task (about 10 KiB); glibc keeps
//! what they freed in its heap, so after 10,000 connections came and went
//! the master's RSS would stay at its peak for good. Once the connections
//! are gone, `malloc_trim` returns the free pages to the system.

use std::sync::Arc;

use crate::pool::Pool;

/// Open connections at or under which a burst counts as over.
const QUIET: usize = 256;
/// RSS growth since the last trim (KiB) worth a trim.
const GROWTH_KIB: u64 = 8 * 1024;

pub struct Trimmer {
    /// RSS right after the last trim (or at start).
    baseline_kib: u64,
}

impl Trimmer {
    pub fn new() -> Trimmer {
        Trimmer {
            baseline_kib: rss_kib(),
        }
    }

    /// Called every few seconds: trims when few connections are open and
    /// the RSS grew well past what it was after the last trim.
    pub fn tick(&mut self, pools: &[Arc<Pool>]) {
        let open: usize = pools.iter().map(|p| p.open_connections()).sum();
        if open > QUIET {
            return;
        }
        let before = rss_kib();
        if before < self.baseline_kib + GROWTH_KIB {
            return;
        }
        trim();
        let after = rss_kib();
        tracing::debug!(
            "returned {} KiB to the system after a burst of connections",
            before.saturating_sub(after)
        );
        // What is still held is in use: the next trim waits for new growth.
        self.baseline_kib = after;
    }
}

#[cfg(target_env = "gnu")]
fn trim() {
    // SAFETY: malloc_trim only walks and releases glibc's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(target_env = "gnu"))]
fn trim() {}

/// The master's resident set in KiB (0 when /proc cannot tell).
fn rss_kib() -> u64 {
    crate::status::rss_of(std::process::id()) / 1024
}
