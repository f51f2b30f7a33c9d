//! What the master knows about each worker of a pool: the scoreboard status
//! pages and `herd ctl status` read. The router keeps it exact because every
//! request passes through it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::WorkerId;
use super::usage::RequestUsage;

/// Where a worker is in its life, as far as routing goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerState {
    /// Started, not yet through the readiness gate.
    Warming,
    /// Ready, every slot free.
    Idle,
    /// Ready, serving at least one request.
    Busy,
}

impl WorkerState {
    pub fn name(self) -> &'static str {
        match self {
            WorkerState::Warming => "Warming",
            WorkerState::Idle => "Idle",
            WorkerState::Busy => "Running",
        }
    }
}

/// The request a busy slot is serving.
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

#[cfg(test)]
impl BusyInfo {
    /// A GET of `uri` starting now, for unit tests.
    pub fn get(uri: &str) -> BusyInfo {
        BusyInfo {
            method: "GET".into(),
            uri: uri.into(),
            script: String::new(),
            user: String::new(),
            content_length: 0,
            started: Instant::now(),
        }
    }
}

/// The last request a worker finished.
#[derive(Clone, Debug)]
pub struct LastRequest {
    pub info: BusyInfo,
    pub duration: Duration,
    /// What it cost the worker, when it was measured.
    pub usage: Option<RequestUsage>,
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
    /// Passed its readiness gate.
    pub ready: bool,
    /// Requests it serves at once (its connections); known once ready.
    pub slots: u32,
    /// Where its slots connect.
    pub socket: Arc<Path>,
    /// What its busy slots serve, by slot, oldest request first.
    pub busy: Vec<(u32, BusyInfo)>,
    pub requests: u64,
    /// Gets no new request; stopped when its last one ends.
    pub retiring: bool,
    pub last: Option<LastRequest>,
    /// A copy of the socket a static php-fpm group listens on
    /// (`PoolConfig::opens_ahead`): its free slots open their connections
    /// ahead, and the copy shows whether any waits in its queue (see
    /// `IdleSlots::take_taken`).
    pub listener: Option<Arc<std::os::unix::net::UnixListener>>,
}

impl WorkerEntry {
    pub fn new(pid: u32, generation: u32, rank: u64) -> WorkerEntry {
        WorkerEntry {
            pid,
            generation,
            rank,
            spawned_at: Instant::now(),
            idle_since: Instant::now(),
            ready: false,
            slots: 1,
            socket: Arc::from(Path::new("")),
            busy: Vec::new(),
            requests: 0,
            retiring: false,
            last: None,
            listener: None,
        }
    }

    pub fn state(&self) -> WorkerState {
        match (self.ready, self.busy.is_empty()) {
            (false, _) => WorkerState::Warming,
            (true, true) => WorkerState::Idle,
            (true, false) => WorkerState::Busy,
        }
    }

    pub fn is_busy(&self) -> bool {
        !self.busy.is_empty()
    }

    /// The request it has been serving longest, if any.
    pub fn current(&self) -> Option<&BusyInfo> {
        self.busy.first().map(|(_, info)| info)
    }

    /// The request on `slot`, if it is busy.
    pub fn on_slot(&self, slot: u32) -> Option<&BusyInfo> {
        self.busy.iter().find(|(s, _)| *s == slot).map(|(_, i)| i)
    }

    pub fn start_request(&mut self, slot: u32, info: BusyInfo) {
        self.busy.push((slot, info));
    }

    /// Books the request on `slot` as finished, with what it cost when
    /// that was measured; false when that slot was not busy (counted
    /// already).
    pub fn finish_request(&mut self, slot: u32, usage: Option<RequestUsage>) -> bool {
        let Some(at) = self.busy.iter().position(|(s, _)| *s == slot) else {
            return false;
        };
        let (_, info) = self.busy.remove(at);
        self.requests += 1;
        if self.busy.is_empty() {
            self.idle_since = Instant::now();
        }
        let duration = info.started.elapsed();
        self.last = Some(LastRequest {
            info,
            duration,
            usage,
        });
        true
    }

    /// Frees `slot` without counting a request: its lease was never used.
    pub fn unuse(&mut self, slot: u32) {
        self.busy.retain(|(s, _)| *s != slot);
    }
}

/// What the pool's workers look like now (live ones, not stopping), in
/// workers: one with any slot busy is busy.
#[derive(Clone, Copy, Debug, Default)]
pub struct Load {
    pub idle: usize,
    pub busy: usize,
    pub warming: usize,
    /// Requests waiting for a worker.
    pub queued: usize,
}

impl Load {
    pub fn total(&self) -> usize {
        self.idle + self.busy + self.warming
    }
}

/// A worker with every slot free, as reaping sees it.
#[derive(Clone, Copy, Debug)]
pub struct IdleWorker {
    pub id: WorkerId,
    pub since: Instant,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(uri: &str) -> BusyInfo {
        BusyInfo::get(uri)
    }

    #[test]
    fn a_worker_is_busy_while_any_slot_is() {
        let mut w = WorkerEntry::new(10, 1, 0);
        assert_eq!(w.state(), WorkerState::Warming);
        w.ready = true;
        w.slots = 2;
        assert_eq!(w.state(), WorkerState::Idle);
        w.start_request(1, info("/a"));
        w.start_request(0, info("/b"));
        assert_eq!(w.state(), WorkerState::Busy);
        assert_eq!(w.current().unwrap().uri, "/a");
        assert_eq!(w.on_slot(0).unwrap().uri, "/b");
        assert!(w.finish_request(1, None));
        assert!(!w.finish_request(1, None), "a slot is counted once");
        assert_eq!(w.state(), WorkerState::Busy);
        assert!(w.finish_request(0, None));
        assert_eq!(w.state(), WorkerState::Idle);
        assert_eq!(w.requests, 2);
        assert_eq!(w.last.as_ref().unwrap().info.uri, "/b");
    }

    #[test]
    fn an_unused_lease_counts_no_request() {
        let mut w = WorkerEntry::new(10, 1, 0);
        w.ready = true;
        w.start_request(0, info("/a"));
        w.unuse(0);
        assert_eq!(w.state(), WorkerState::Idle);
        assert_eq!(w.requests, 0);
    }
}
