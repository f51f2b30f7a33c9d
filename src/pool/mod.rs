//! A pool as the router and the supervisor share it: the scoreboard of its
//! workers, the set of idle ones with their open connections, and the FIFO
//! queue of requests waiting for one.
//!
//! The master, not the kernel, decides who serves each request: a request
//! leases an idle worker's connection, and the worker counts as idle again
//! only when the lease comes back after `FCGI_END_REQUEST`. Everything here
//! is synchronous and behind one short-held lock; the supervisor learns what
//! it must act on (a worker to retire) through [`PoolEvent`]s.

mod accepted;
mod counters;
mod deploy;
pub mod dispatch;
pub mod hangups;
mod histogram;
mod scoreboard;
pub mod usage;
pub mod worker_conn;
mod workers;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::config::PoolConfig;

use crate::throttle::Throttle;
pub use counters::{Counters, PoolLogs, Refused};
pub use deploy::{DeployCell, DeployState, DeployStatus, GenerationStatus, Settled};
use dispatch::IdleSlots;
pub use dispatch::WorkerId;
pub use histogram::{BUCKETS, Histogram, HistogramSnapshot};
pub use scoreboard::{BusyInfo, IdleWorker, LastRequest, Load, WorkerEntry, WorkerState};
pub use usage::RequestUsage;
pub use worker_conn::WorkerConn;
pub use workers::Snapshot;

/// What the router tells the supervisor.
#[derive(Debug)]
pub enum PoolEvent {
    /// Stop this worker: it reached `pm.max_requests`, or its connection
    /// broke mid-request. It gets no new request.
    Retire { id: WorkerId, reason: RetireReason },
    /// A request had to wait: no worker was idle.
    Demand,
}

/// Why the router hands a worker to the supervisor to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetireReason {
    /// A request ran past `request_terminate_timeout`: stuck, it goes now.
    Terminated,
    /// Its connection broke mid-request.
    Broken,
    /// It served `pm.max_requests`.
    MaxRequests,
    /// The supervisor retired it (a rollout, a scale-down, max memory) and
    /// its last request has ended.
    Retiring,
}

impl std::fmt::Display for RetireReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RetireReason::Terminated => "request_terminate_timeout",
            RetireReason::Broken => "its connection broke mid-request",
            RetireReason::MaxRequests => "reached pm.max_requests",
            RetireReason::Retiring => "retiring",
        })
    }
}

/// The right to send one request to one slot of a worker.
pub struct Lease {
    pub id: WorkerId,
    pub slot: u32,
    pub pid: u32,
    pub generation: u32,
    /// Requests the worker serves at once.
    pub slots: u32,
    /// `None` once released.
    pub conn: Option<WorkerConn>,
    /// What the request cost the worker, when it was measured; the
    /// scoreboard keeps it as the worker's last request's.
    pub usage: Option<RequestUsage>,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Lease(pool {}, worker {} slot {}, pid {})",
            self.pool.name, self.id, self.slot, self.pid
        )
    }
}

/// How a leased request ended, as far as the worker's connection goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `FCGI_END_REQUEST` arrived and the connection is at a record boundary.
    Clean,
    /// The connection cannot be reused: the worker must go.
    Broken,
    /// The request ran past `request_terminate_timeout`: the worker is
    /// stuck and must go now.
    Terminated,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AcquireError {
    #[error("queue full")]
    QueueFull,
    #[error("no worker can start")]
    NoWorkers,
}

struct Waiter {
    tx: oneshot::Sender<Lease>,
    info: BusyInfo,
}

#[derive(Default)]
struct Dispatch {
    workers: BTreeMap<WorkerId, WorkerEntry>,
    /// Every free slot of a ready worker, with its connection, best first.
    idle: IdleSlots<WorkerConn>,
    /// Asks which connections opened ahead a php-fpm child holds.
    diag: accepted::Diag,
    queue: VecDeque<Waiter>,
    /// When set, requests fail at once instead of queueing: no worker of
    /// this pool can start (crash loop).
    unavailable: Option<String>,
    /// Slots serving a request now.
    busy: usize,
    /// The pool's newest generation.
    generation: u32,
    /// `pm.max_children` set at run time (`herd ctl scale`), if any.
    scaled_max_children: Option<u32>,
    /// Requests that ended, by the generation of the worker that served
    /// them. Counted here, under the lock release takes anyway, so the hot
    /// path gains no lock, and so totals outlive the workers.
    served: BTreeMap<u32, u64>,
}

impl Dispatch {
    fn mark_busy(&mut self, id: WorkerId, slot: u32, info: BusyInfo, counters: &Counters) {
        let entry = self.workers.get_mut(&id).expect("worker on the scoreboard");
        entry.start_request(slot, info);
        self.busy += 1;
        counters
            .max_active
            .fetch_max(self.busy as u64, Ordering::Relaxed);
    }

    /// Frees a slot whose lease never carried a request.
    fn unmark_busy(&mut self, id: WorkerId, slot: u32) {
        if let Some(entry) = self.workers.get_mut(&id) {
            entry.unuse(slot);
            self.busy -= 1;
        }
    }
}

pub struct Pool {
    me: std::sync::Weak<Pool>,
    pub name: String,
    config: RwLock<Arc<PoolConfig>>,
    dispatch: Mutex<Dispatch>,
    events: mpsc::UnboundedSender<PoolEvent>,
    pub counters: Counters,
    pub started: Instant,
    pub logs: PoolLogs,
    pub deploy: DeployCell,
    open_conns: tokio::sync::watch::Sender<usize>,
    /// One log throttle per kind of refusal, indexed by `Refused`.
    refusals: Mutex<[Throttle; 4]>,
    /// Until when (milliseconds after `started`) requests are measured
    /// for status: see [`Pool::watch_usage`].
    usage_until: AtomicU64,
    /// Started with the first response held (see `hangups`); `None` when
    /// it could not start, and responses are relayed as they come.
    hangups: std::sync::OnceLock<Option<hangups::Hangups>>,
}

/// How long requests' CPU and memory are measured after someone looked at
/// per-worker status: long enough to follow an incident in `herd ctl
/// top`, short enough that nobody pays for it unwatched.
pub const USAGE_WINDOW: Duration = Duration::from_secs(600);

/// Held by each open client connection of a pool.
pub struct ConnGuard(Arc<Pool>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.open_conns.send_modify(|n| *n -= 1);
    }
}

impl Pool {
    /// Opens the pool's log files; fails when one cannot be opened.
    pub fn new(
        config: Arc<PoolConfig>,
    ) -> std::io::Result<(Arc<Pool>, mpsc::UnboundedReceiver<PoolEvent>)> {
        let logs = PoolLogs::open(&config)?;
        let (events, rx) = mpsc::unbounded_channel();
        let pool = Arc::new_cyclic(|me| Pool {
            me: me.clone(),
            name: config.name.clone(),
            config: RwLock::new(config),
            dispatch: Mutex::new(Dispatch::default()),
            events,
            counters: Counters::default(),
            started: Instant::now(),
            logs,
            deploy: DeployCell::default(),
            open_conns: tokio::sync::watch::Sender::new(0),
            refusals: Mutex::default(),
            usage_until: AtomicU64::new(0),
            hangups: std::sync::OnceLock::new(),
        });
        Ok((pool, rx))
    }

    /// The pool's hangup watcher, started on first use (in the runtime).
    pub fn hangups(&self) -> Option<&hangups::Hangups> {
        self.hangups
            .get_or_init(|| {
                hangups::Hangups::start()
                    .inspect_err(|e| {
                        tracing::warn!(pool = %self.name, "cannot watch workers' hangups ({e}); responses are relayed as they come");
                    })
                    .ok()
            })
            .as_ref()
    }

    /// Counts an open client connection until the guard is dropped.
    pub fn conn_opened(self: &Arc<Self>) -> ConnGuard {
        self.open_conns.send_modify(|n| *n += 1);
        ConnGuard(self.clone())
    }

    pub fn open_connections(&self) -> usize {
        *self.open_conns.borrow()
    }

    /// Resolves once no client connection is open.
    pub async fn wait_connections_closed(&self) {
        let mut rx = self.open_conns.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    pub fn config(&self) -> Arc<PoolConfig> {
        self.config.read().expect("pool config lock").clone()
    }

    pub fn set_config(&self, config: Arc<PoolConfig>) {
        *self.config.write().expect("pool config lock") = config;
    }

    /// Logs a 503 herd answered itself: at once, or counted into the next
    /// line of its kind when one was logged less than a second ago.
    pub fn refused(&self, kind: Refused, what: String) {
        self.refusals.lock().expect("refusals lock")[kind as usize].hit(&self.name, what);
    }

    /// Logs the refusals held back whose second is over; the supervisor
    /// calls it on every tick, and with `now` once its workers stopped.
    pub fn flush_refusals(&self, now: bool) {
        for t in self.refusals.lock().expect("refusals lock").iter_mut() {
            if now {
                t.flush_now(&self.name);
            } else {
                t.flush(&self.name);
            }
        }
    }

    /// Someone looked at per-worker status (`herd ctl status`, a status
    /// page with `full`): each request's CPU and memory are measured from
    /// now until [`USAGE_WINDOW`] after the last look.
    pub fn watch_usage(&self) {
        let until = (self.started.elapsed() + USAGE_WINDOW).as_millis() as u64;
        self.usage_until.fetch_max(until, Ordering::Relaxed);
    }

    /// Whether a request starting now is measured for status.
    pub fn usage_wanted(&self) -> bool {
        (self.started.elapsed().as_millis() as u64) < self.usage_until.load(Ordering::Relaxed)
    }

    /// Why no worker can start, while that is so.
    pub fn unavailable_reason(&self) -> Option<String> {
        self.lock().unavailable.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Dispatch> {
        self.dispatch.lock().expect("pool lock poisoned")
    }

    /// Takes the best free slot now, or queues for one. The returned
    /// receiver yields a lease when a slot frees up; dropping it leaves
    /// the queue.
    pub fn acquire(
        self: &Arc<Self>,
        info: BusyInfo,
        max_queue: usize,
    ) -> Result<Result<Lease, oneshot::Receiver<Lease>>, AcquireError> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let mut guard = self.lock();
        let d = &mut *guard;
        let workers = &d.workers;
        let diag = &mut d.diag;
        let taken = d.idle.take_taken(
            |id| {
                workers
                    .get(&id)
                    .and_then(|e| e.listener.as_ref())
                    .is_some_and(|l| connections_wait(l))
            },
            |conn| conn.spare_held(diag),
        );
        if let Some((id, slot, conn)) = taken {
            d.mark_busy(id, slot, info, &self.counters);
            return Ok(Ok(self.lease(d, id, slot, conn)));
        }
        if d.unavailable.is_some() {
            return Err(AcquireError::NoWorkers);
        }
        if d.queue.len() >= max_queue {
            d.queue.retain(|w| !w.tx.is_closed());
            if d.queue.len() >= max_queue {
                self.counters.queue_full.fetch_add(1, Ordering::Relaxed);
                return Err(AcquireError::QueueFull);
            }
        }
        let (tx, rx) = oneshot::channel();
        d.queue.push_back(Waiter { tx, info });
        if d.queue.len() == 1 {
            let _ = self.events.send(PoolEvent::Demand);
        }
        self.counters
            .max_queue_seen
            .fetch_max(d.queue.len() as u64, Ordering::Relaxed);
        Ok(Err(rx))
    }

    fn lease(&self, d: &Dispatch, id: WorkerId, slot: u32, conn: WorkerConn) -> Lease {
        let entry = &d.workers[&id];
        Lease {
            id,
            slot,
            pid: entry.pid,
            generation: entry.generation,
            slots: entry.slots,
            conn: Some(conn),
            usage: None,
            pool: self.me.upgrade().expect("pool outlives its leases"),
        }
    }

    /// Gives a lease back: its request has ended. A clean connection goes
    /// to the first waiter or back to the free slots; a worker that reached
    /// `pm.max_requests`, was marked retiring, or whose connection broke is
    /// handed to the supervisor to stop once its last request has ended.
    pub fn release(&self, mut lease: Lease, outcome: Outcome) {
        let conn = lease.conn.take();
        self.give_back(&lease, conn, outcome, true);
    }

    /// Gives back the lease of a worker that died before answering, when
    /// its request goes on to another worker: the request has not ended,
    /// so it is not counted yet.
    pub fn release_for_retry(&self, mut lease: Lease) {
        lease.conn = None;
        self.give_back(&lease, None, Outcome::Broken, false);
    }

    /// Gives back a lease whose request never reached the worker: the
    /// client went away just as the slot was handed to it. Not a request,
    /// and the connection is clean: the slot goes to the next waiter or
    /// back to the free slots, as it was.
    pub fn return_unused(&self, mut lease: Lease) {
        let Some(conn) = lease.conn.take() else {
            return;
        };
        let (id, slot) = (lease.id, lease.slot);
        let mut d = self.lock();
        if !d.workers.contains_key(&id) {
            return; // exited meanwhile
        }
        d.unmark_busy(id, slot);
        let entry = &d.workers[&id];
        if entry.retiring {
            let done = !entry.is_busy();
            drop(d);
            if done {
                let reason = RetireReason::Retiring;
                let _ = self.events.send(PoolEvent::Retire { id, reason });
            }
            return;
        }
        self.hand_over(&mut d, id, slot, conn);
    }

    fn give_back(&self, lease: &Lease, conn: Option<WorkerConn>, outcome: Outcome, ended: bool) {
        let (id, slot) = (lease.id, lease.slot);
        let cfg = self.config();
        let max_requests = cfg.herd_max_requests();
        // In a group the engine replaces a process that broke; the others
        // serve on, and the slot connects afresh at its next request.
        let engine_heals = cfg.php_group.is_some();
        let mut d = self.lock();
        if ended {
            *d.served.entry(lease.generation).or_insert(0) += 1;
        }
        let Some(entry) = d.workers.get_mut(&id) else {
            return; // exited meanwhile
        };
        let was_busy = if ended {
            entry.finish_request(slot, lease.usage)
        } else {
            let busy = entry.on_slot(slot).is_some();
            entry.unuse(slot);
            busy
        };
        let rank = entry.rank;
        let retire = match (outcome, conn) {
            // Stuck: it goes now, whatever else it serves.
            (Outcome::Terminated, _) => Some(RetireReason::Terminated),
            (Outcome::Broken, _) | (_, None) if engine_heals && !entry.retiring => {
                let conn = WorkerConn::new(entry.socket.clone(), None);
                if was_busy {
                    d.busy -= 1;
                }
                self.hand_over(&mut d, id, slot, conn);
                return;
            }
            (Outcome::Broken, _) | (_, None) => {
                entry.retiring = true;
                Some(RetireReason::Broken)
            }
            (Outcome::Clean, Some(conn)) => {
                if !entry.retiring && max_requests > 0 && entry.requests >= max_requests {
                    entry.retiring = true;
                    Some(RetireReason::MaxRequests)
                } else if entry.retiring {
                    Some(RetireReason::Retiring)
                } else {
                    if was_busy {
                        d.busy -= 1;
                    }
                    self.hand_over(&mut d, id, slot, conn);
                    return;
                }
            }
        };
        if was_busy {
            d.busy -= 1;
        }
        // A retiring worker gets no new request; one serving others stops
        // when the last of them comes back.
        let entry = &d.workers[&id];
        let stop_now = outcome == Outcome::Terminated || !entry.is_busy();
        d.idle.remove_worker(id, rank);
        drop(d);
        if let Some(reason) = retire.filter(|_| stop_now) {
            let _ = self.events.send(PoolEvent::Retire { id, reason });
        }
    }

    /// Gives a free slot to the first live waiter, or puts it with the
    /// free slots.
    fn hand_over(&self, d: &mut Dispatch, id: WorkerId, slot: u32, mut conn: WorkerConn) {
        while let Some(waiter) = d.queue.pop_front() {
            d.mark_busy(id, slot, waiter.info, &self.counters);
            match waiter.tx.send(self.lease(d, id, slot, conn)) {
                Ok(()) => return,
                Err(mut lease) => {
                    conn = lease.conn.take().expect("unsent lease has its conn");
                    d.unmark_busy(id, slot);
                }
            }
        }
        let entry = &d.workers[&id];
        let rank = entry.rank;
        // A worker whose queue herd watches opens connections ahead.
        if entry.listener.is_some() && conn.spare_order().is_none() {
            conn.open_spare();
        }
        let fresh = conn.spare_order().unwrap_or(0);
        d.idle.put_fresh(id, slot, rank, fresh, conn);
    }
}

/// Whether connections wait in `listener`'s queue, not yet accepted.
fn connections_wait(listener: &std::os::unix::net::UnixListener) -> bool {
    use std::os::fd::AsRawFd;
    let mut fd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, valid for the call; a zero timeout never blocks.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n > 0 && fd.revents & libc::POLLIN != 0
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Dropped without release: the request was cut off mid-way, so
            // the connection is at an unknown point of the stream.
            drop(conn);
            self.pool.give_back(self, None, Outcome::Broken, true);
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
