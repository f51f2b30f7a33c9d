//! What a pool counts and logs: the counters status and metrics read, the
//! kinds of refusal herd logs (at most once a second each), and the pool's
//! own log files.

use std::sync::atomic::{AtomicU64, Ordering};

use super::histogram::Histogram;
use crate::config::PoolConfig;
use crate::logging::LogFile;

/// Counters that only go up; read by status.
#[derive(Default, Debug)]
pub struct Counters {
    /// Client connections accepted.
    pub accepted_conns: AtomicU64,
    /// Requests that came in (php-fpm's "accepted conn").
    pub requests: AtomicU64,
    /// Refused with 503: the queue was full.
    pub queue_full: AtomicU64,
    /// Refused with 503: no worker freed up within `request.queue_timeout`.
    pub queue_timeouts: AtomicU64,
    /// Refused with 503: no worker of the pool could start.
    pub unavailable: AtomicU64,
    /// Answered 504 by `request_terminate_timeout`.
    pub terminated: AtomicU64,
    /// Worker died mid-request (502, or retried).
    pub worker_lost: AtomicU64,
    /// Requests sent again to another worker after one died before answering.
    pub retried: AtomicU64,
    /// Requests that ran past `request_slowlog_timeout`.
    pub slow_requests: AtomicU64,
    /// Workers that failed to start or exited early.
    pub worker_failures: AtomicU64,
    /// Workers started.
    pub spawns: AtomicU64,
    pub max_queue_seen: AtomicU64,
    pub max_active: AtomicU64,
    /// Times the pool wanted another worker and `pm.max_children` said no.
    pub max_children_reached: AtomicU64,
    /// Requests that ended without a worker serving them: refused by herd,
    /// or given up by the client while queued.
    pub unserved: AtomicU64,
    /// Each request's time in herd, from its params to its last record.
    pub latency: Histogram,
    /// Each lease's wait in the queue (zero when a worker was idle).
    pub queue_wait: Histogram,
}

impl Counters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The requests herd refuses itself, by kind: each kind is logged at most
/// once a second, with a count of the ones held back.
#[derive(Clone, Copy, Debug)]
pub enum Refused {
    QueueFull,
    QueueTimeout,
    Unavailable,
    /// 403 by `security.limit_extensions`.
    Script,
}

/// The pool's own log files.
pub struct PoolLogs {
    pub access: Option<LogFile>,
    pub slow: Option<LogFile>,
}

impl PoolLogs {
    pub(super) fn open(cfg: &PoolConfig) -> std::io::Result<PoolLogs> {
        let open = |p: &Option<std::path::PathBuf>| {
            p.as_deref()
                .map(|p| {
                    LogFile::open(p).map_err(|e| {
                        std::io::Error::new(
                            e.kind(),
                            format!("failed to open {}: {e}", p.display()),
                        )
                    })
                })
                .transpose()
        };
        Ok(PoolLogs {
            access: open(&cfg.access_log)?,
            slow: open(&cfg.slowlog)?,
        })
    }

    pub fn reopen(&self) {
        self.access
            .iter()
            .chain(self.slow.iter())
            .for_each(LogFile::reopen);
    }
}
