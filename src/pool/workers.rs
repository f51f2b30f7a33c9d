//! The supervisor's side of the pool: workers onto and off the scoreboard,
//! ready with their slots, retired, ranked by generation; and the counts
//! status and scaling read.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{BusyInfo, IdleWorker, Load, Pool, WorkerConn, WorkerEntry, WorkerId, WorkerState};

impl Pool {
    /// Puts a just-spawned worker on the scoreboard, warming.
    pub fn add_worker(&self, id: WorkerId, entry: WorkerEntry) {
        self.lock().workers.insert(id, entry);
    }

    /// Keeps a copy of the socket a static php-fpm group listens on; its
    /// free slots open their connections ahead from then on (see
    /// `WorkerEntry::listener`).
    pub fn watch_listener(&self, id: WorkerId, listener: std::os::unix::net::UnixListener) {
        if let Some(e) = self.lock().workers.get_mut(&id) {
            e.listener = Some(std::sync::Arc::new(listener));
        }
    }

    /// Replaces the connections opened ahead that near php-fpm's limit
    /// (see `WorkerConn::renew_spare`); called once a second.
    pub fn renew_spares(&self) {
        for conn in self.lock().idle.conns_mut() {
            conn.renew_spare(super::worker_conn::SPARE_RENEW);
        }
    }

    /// A worker passed its readiness gate: each of its slots (one
    /// connection each) takes traffic from now on.
    pub fn worker_ready(&self, id: WorkerId, conns: Vec<WorkerConn>) {
        let mut d = self.lock();
        let Some(entry) = d.workers.get_mut(&id).filter(|e| !e.retiring) else {
            return;
        };
        entry.ready = true;
        entry.slots = conns.len() as u32;
        if let Some(c) = conns.first() {
            entry.socket = c.socket.clone();
        }
        entry.idle_since = Instant::now();
        for (slot, conn) in conns.into_iter().enumerate() {
            self.hand_over(&mut d, id, slot as u32, conn);
        }
    }

    /// Takes a worker off the scoreboard (it exited). A busy worker's
    /// leases find it gone when they come back.
    pub fn remove_worker(&self, id: WorkerId) -> Option<WorkerEntry> {
        let mut d = self.lock();
        let entry = d.workers.remove(&id)?;
        super::usage::forget(entry.pid);
        d.busy -= entry.busy.len();
        d.idle.remove_worker(id, entry.rank);
        Some(entry)
    }

    /// Stops routing to a worker. Returns true when it serves nothing (or
    /// is still warming) and can be stopped now; a busy one is stopped when
    /// its last lease comes back.
    pub fn retire(&self, id: WorkerId) -> bool {
        let mut d = self.lock();
        let Some(entry) = d.workers.get_mut(&id) else {
            return false;
        };
        entry.retiring = true;
        let (rank, busy) = (entry.rank, entry.is_busy());
        d.idle.remove_worker(id, rank);
        !busy
    }

    /// Marks the pool as unable to serve (`Some(reason)`), failing every
    /// queued request at once, or as able again (`None`).
    pub fn set_unavailable(&self, reason: Option<String>) {
        let mut d = self.lock();
        if reason.is_some() {
            d.queue.clear();
        }
        d.unavailable = reason;
    }

    /// A copy of the scoreboard and queue length, for status.
    pub fn snapshot(&self) -> Snapshot {
        let d = self.lock();
        Snapshot {
            workers: d.workers.iter().map(|(id, e)| (*id, e.clone())).collect(),
            queue_len: d.queue.iter().filter(|w| !w.tx.is_closed()).count(),
            unavailable: d.unavailable.clone(),
            generation: d.generation,
            scaled_max_children: d.scaled_max_children,
            served: d.served.iter().map(|(g, n)| (*g, *n)).collect(),
        }
    }

    /// Sets the pool's newest generation, for status.
    pub fn set_generation(&self, generation: u32) {
        self.lock().generation = generation;
    }

    /// Publishes `pm.max_children` set at run time, for status.
    pub fn set_scaled_max_children(&self, max_children: Option<u32>) {
        self.lock().scaled_max_children = max_children;
    }

    /// Gives every worker the dispatch rank of its generation, and puts the
    /// free slots in their new order.
    pub fn set_ranks(&self, ranks: &BTreeMap<u32, u64>) {
        let mut d = self.lock();
        let d = &mut *d;
        for entry in d.workers.values_mut() {
            entry.rank = ranks.get(&entry.generation).copied().unwrap_or(0);
        }
        let workers = &d.workers;
        d.idle.rerank(|id| workers.get(&id).map_or(0, |e| e.rank));
    }

    /// Counts of workers by state (not retiring), the queue, and the idle
    /// workers with the time they became idle: what scaling decides on.
    pub fn load(&self) -> (Load, Vec<IdleWorker>) {
        let d = self.lock();
        let mut load = Load {
            queued: d.queue.iter().filter(|w| !w.tx.is_closed()).count(),
            ..Load::default()
        };
        let mut idle = Vec::new();
        for (id, e) in d.workers.iter().filter(|(_, e)| !e.retiring) {
            match e.state() {
                WorkerState::Idle => {
                    load.idle += 1;
                    idle.push(IdleWorker {
                        id: *id,
                        since: e.idle_since,
                    });
                }
                WorkerState::Busy => load.busy += 1,
                WorkerState::Warming => load.warming += 1,
            }
        }
        (load, idle)
    }

    /// Whether a worker is ready and serves nothing right now.
    pub fn is_idle(&self, id: WorkerId) -> bool {
        self.lock()
            .workers
            .get(&id)
            .is_some_and(|e| e.state() == WorkerState::Idle)
    }

    /// The request a worker's slot is serving now.
    pub fn busy_info(&self, id: WorkerId, slot: u32) -> Option<BusyInfo> {
        self.lock().workers.get(&id)?.on_slot(slot).cloned()
    }

    /// Free slots of ready workers.
    pub fn idle_count(&self) -> usize {
        self.lock().idle.len()
    }
}

/// A point-in-time copy of a pool's scoreboard.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub workers: Vec<(WorkerId, WorkerEntry)>,
    pub queue_len: usize,
    pub unavailable: Option<String>,
    pub generation: u32,
    /// `pm.max_children` set at run time; `None`: the config file's.
    pub scaled_max_children: Option<u32>,
    /// Requests that ended, by generation, oldest first.
    pub served: Vec<(u32, u64)>,
}
