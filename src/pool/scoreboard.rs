//! What the master knows about each worker of a pool: the scoreboard status
//! pages and `herd ctl status` read. The router keeps it exact because every
//! request passes through it.

use std::time::{Duration, Instant};

/// Where a worker is in its life, as far as routing goes.
#[derive(Clone, Debug)]
pub enum WorkerState {
    /// Started, not yet through the readiness gate.
    Warming,
    Idle,
    Busy(BusyInfo),
}

impl WorkerState {
    pub fn name(&self) -> &'static str {
        match self {
            WorkerState::Warming => "Warming",
            WorkerState::Idle => "Idle",
            WorkerState::Busy(_) => "Running",
        }
    }
}

/// The request a busy worker is serving.
#[derive(Clone, Debug)]
pub struct BusyInfo {
    pub method: String,
    pub uri: String,
    pub script: String,
    /// `REMOTE_USER` (or PHP_AUTH_USER), empty when none.
    pub user: String,
    pub content_length: u64,
    pub started: Instant,
}

/// The last request a worker finished.
#[derive(Clone, Debug)]
pub struct LastRequest {
    pub info: BusyInfo,
    pub duration: Duration,
}

#[derive(Clone, Debug)]
pub struct WorkerEntry {
    pub pid: u32,
    pub generation: u32,
    /// Dispatch rank of the worker's generation: higher is preferred.
    pub rank: u64,
    pub spawned_at: Instant,
    /// When it last became idle (or ready).
    pub idle_since: Instant,
    pub state: WorkerState,
    pub requests: u64,
    /// Gets no new request; stopped when its current one ends.
    pub retiring: bool,
    pub last: Option<LastRequest>,
}

impl WorkerEntry {
    pub fn new(pid: u32, generation: u32, rank: u64) -> WorkerEntry {
        WorkerEntry {
            pid,
            generation,
            rank,
            spawned_at: Instant::now(),
            idle_since: Instant::now(),
            state: WorkerState::Warming,
            requests: 0,
            retiring: false,
            last: None,
        }
    }

    /// Books a finished request. The state is set by whoever takes the
    /// worker next (a waiter, the idle set or the supervisor).
    pub fn finish_request(&mut self) {
        self.requests += 1;
        self.idle_since = Instant::now();
        if let WorkerState::Busy(info) = std::mem::replace(&mut self.state, WorkerState::Idle) {
            let duration = info.started.elapsed();
            self.last = Some(LastRequest { info, duration });
        }
    }

    pub fn is_busy(&self) -> bool {
        matches!(self.state, WorkerState::Busy(_))
    }
}
