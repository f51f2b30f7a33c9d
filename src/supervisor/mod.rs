//! The supervisor of one pool: it starts workers, walks each through the
//! readiness gate, reaps every exit with its status, retires workers the
//! router hands it, and respawns with a backoff so a worker that dies at
//! once never makes the master spin.

pub mod backoff;
mod gate;
mod output;
pub mod process;
pub mod socket_dir;
pub mod spawn;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::sync::mpsc;

use crate::config::PoolConfig;
use crate::pool::{Pool, PoolEvent, WorkerConn, WorkerEntry, WorkerId};
use backoff::Backoff;
use process::{ProcessCommand, ProcessHandle};
use socket_dir::SocketDir;
use spawn::Identity;

/// What the master asks of a pool's supervisor.
#[derive(Debug)]
pub enum Command {
    /// Stop every worker: idle ones now, busy ones when their request ends.
    StopGraceful,
    /// Stop every worker now.
    StopFast,
}

/// What a supervisor's own tasks report.
enum Event {
    Ready {
        id: WorkerId,
        conn: WorkerConn,
    },
    GateFailed {
        id: WorkerId,
        reason: String,
    },
    Exited {
        id: WorkerId,
        status: std::io::Result<std::process::ExitStatus>,
    },
}

/// One live worker process, as the supervisor tracks it.
struct Proc {
    handle: ProcessHandle,
    socket: PathBuf,
    started: Instant,
    ready_at: Option<Instant>,
    /// We asked it to stop: its exit is not a failure.
    stopping: bool,
}

pub struct Supervisor {
    pool: Arc<Pool>,
    index: usize,
    cfg: Arc<PoolConfig>,
    identity: Identity,
    generation: u32,
    sockets: Arc<SocketDir>,
    procs: BTreeMap<WorkerId, Proc>,
    next_id: WorkerId,
    backoff: Backoff,
    next_spawn_at: Instant,
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    pool_events: mpsc::UnboundedReceiver<PoolEvent>,
    commands: mpsc::UnboundedReceiver<Command>,
    stopping: bool,
}

impl Supervisor {
    pub fn new(
        pool: Arc<Pool>,
        index: usize,
        pool_events: mpsc::UnboundedReceiver<PoolEvent>,
        sockets: Arc<SocketDir>,
    ) -> anyhow::Result<(Supervisor, mpsc::UnboundedSender<Command>)> {
        let cfg = pool.config();
        let identity = Identity::resolve(&cfg)?;
        let (events_tx, events) = mpsc::unbounded_channel();
        let (cmd_tx, commands) = mpsc::unbounded_channel();
        let sup = Supervisor {
            pool,
            index,
            cfg,
            identity,
            generation: 1,
            sockets,
            procs: BTreeMap::new(),
            next_id: 1,
            backoff: Backoff::default(),
            next_spawn_at: Instant::now(),
            events_tx,
            events,
            pool_events,
            commands,
            stopping: false,
        };
        Ok((sup, cmd_tx))
    }

    /// Runs until every worker is gone after a stop command.
    pub async fn run(mut self) {
        self.pool.set_generation(self.generation);
        loop {
            self.maintain();
            if self.stopping && self.procs.is_empty() {
                break;
            }
            let wake = tokio::time::Instant::from_std(self.next_wake());
            tokio::select! {
                Some(ev) = self.events.recv() => self.on_event(ev),
                Some(ev) = self.pool_events.recv() => self.on_pool_event(ev),
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => self.on_command(Command::StopFast),
                },
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
        tracing::info!(pool = %self.pool.name, "all workers stopped");
    }

    /// Workers that count towards the pool's size.
    fn live(&self) -> usize {
        self.procs.values().filter(|p| !p.stopping).count()
    }

    fn target(&self) -> usize {
        self.cfg.max_children as usize
    }

    /// Spawns up to the pool's size once the backoff allows, and forgives
    /// past failures once a worker has stayed up for `worker.min_lifetime`.
    fn maintain(&mut self) {
        if self.stopping {
            return;
        }
        let now = Instant::now();
        if self.backoff.failures() > 0
            && self.procs.values().any(|p| {
                p.ready_at
                    .is_some_and(|t| now >= t + self.cfg.worker_min_lifetime)
            })
        {
            self.backoff.reset();
            self.pool.set_unavailable(None);
        }
        while self.live() < self.target() && now >= self.next_spawn_at {
            if let Err(e) = self.spawn_one() {
                tracing::error!(pool = %self.pool.name, "failed to start a worker: {e:#}");
                self.failed("could not start a worker");
                break;
            }
        }
    }

    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let far = now + Duration::from_secs(3600);
        let mut wake = far;
        if self.live() < self.target() && !self.stopping {
            wake = wake.min(self.next_spawn_at.max(now));
        }
        if self.backoff.failures() > 0 {
            for p in self.procs.values() {
                if let Some(t) = p.ready_at {
                    wake = wake.min(t + self.cfg.worker_min_lifetime);
                }
            }
        }
        wake
    }

    fn spawn_one(&mut self) -> anyhow::Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        let socket = self.sockets.worker_socket(self.index, id);
        let listener = spawn::bind_worker_socket(&socket)?;
        let output = if self.cfg.catch_workers_output {
            Some(output::pipe()?)
        } else {
            None
        };
        let (out_read, out_write) = match output {
            Some((r, w)) => (Some(r), Some(w)),
            None => (None, None),
        };
        let child = spawn::spawn(spawn::SpawnSpec {
            pool: &self.cfg,
            identity: &self.identity,
            program: &self.cfg.command,
            generation: self.generation,
            worker: id,
            listener,
            output: out_write,
        })
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&socket);
        })?;
        let events = self.events_tx.clone();
        let handle = process::watch(child, move |status| {
            let _ = events.send(Event::Exited { id, status });
        });
        let pid = handle.pid;
        crate::pool::Counters::bump(&self.pool.counters.spawns);
        if let Some(r) = out_read {
            output::forward(r, self.pool.name.clone(), pid);
        }
        tracing::info!(pool = %self.pool.name, worker = id, pid, generation = self.generation, "worker spawned");
        self.pool.add_worker(
            id,
            WorkerEntry::new(pid, self.generation, self.generation as u64),
        );
        self.procs.insert(
            id,
            Proc {
                handle,
                socket: socket.clone(),
                started: Instant::now(),
                ready_at: None,
                stopping: false,
            },
        );

        let cfg = self.cfg.clone();
        let events = self.events_tx.clone();
        let socket: Arc<std::path::Path> = socket.into();
        tokio::spawn(async move {
            let ev = match gate::pass(socket, &cfg).await {
                Ok(conn) => Event::Ready { id, conn },
                Err(e) => Event::GateFailed {
                    id,
                    reason: e.to_string(),
                },
            };
            let _ = events.send(ev);
        });
        Ok(())
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Ready { id, conn } => {
                let Some(p) = self.procs.get_mut(&id) else {
                    return;
                };
                if p.stopping {
                    return;
                }
                p.ready_at = Some(Instant::now());
                tracing::info!(pool = %self.pool.name, worker = id, pid = p.handle.pid, "worker ready");
                self.pool.worker_ready(id, conn);
            }
            Event::GateFailed { id, reason } => {
                let Some(p) = self.procs.get_mut(&id) else {
                    return;
                };
                if p.stopping {
                    return;
                }
                let pid = p.handle.pid;
                self.stop_worker(id, Signal::SIGKILL);
                let delay = self.failed("a worker failed its readiness gate");
                tracing::warn!(pool = %self.pool.name, worker = id, pid, "worker failed its readiness gate: {reason}; respawning in {delay:?}");
            }
            Event::Exited { id, status } => self.on_exit(id, status),
        }
    }

    fn on_exit(&mut self, id: WorkerId, status: std::io::Result<std::process::ExitStatus>) {
        let Some(p) = self.procs.remove(&id) else {
            return;
        };
        let _ = std::fs::remove_file(&p.socket);
        let entry = self.pool.remove_worker(id);
        let served = entry.as_ref().map_or(0, |e| e.requests);
        let lived = p.started.elapsed();
        let how = process::describe(&status);
        if p.stopping {
            tracing::info!(pool = %self.pool.name, worker = id, pid = p.handle.pid, "worker stopped: {how} after {lived:.1?}, {served} requests");
            return;
        }
        let clean_exit = status.as_ref().is_ok_and(|s| s.success());
        // A worker may end itself after serving, as php-cgi does after
        // PHP_FCGI_MAX_REQUESTS: that is recycling, not a failure.
        let failure = p.ready_at.is_none()
            || (lived < self.cfg.worker_min_lifetime && !(clean_exit && served > 0));
        if failure {
            let delay = self.failed("a worker exited early");
            tracing::warn!(pool = %self.pool.name, worker = id, pid = p.handle.pid, "worker {how} after {lived:.1?}; respawning in {delay:?}");
        } else {
            tracing::warn!(pool = %self.pool.name, worker = id, pid = p.handle.pid, "worker {how} after {lived:.1?}, {served} requests; respawning");
        }
    }

    /// Counts a failure against the pool; returns the respawn delay.
    fn failed(&mut self, why: &str) -> Duration {
        self.pool
            .counters
            .worker_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let delay = self.backoff.fail();
        self.next_spawn_at = Instant::now() + delay;
        // No worker up and the next attempt is a while away: fail requests
        // at once rather than let them wait for a worker that may never come.
        if self.pool.idle_count() == 0
            && !self.procs.values().any(|p| p.ready_at.is_some())
            && delay >= Duration::from_secs(1)
        {
            self.pool
                .set_unavailable(Some(format!("{why}; next attempt in {delay:?}")));
        }
        delay
    }

    fn on_pool_event(&mut self, ev: PoolEvent) {
        match ev {
            PoolEvent::Retire { id, reason } => {
                if let Some(p) = self.procs.get(&id) {
                    tracing::info!(pool = %self.pool.name, worker = id, pid = p.handle.pid, "retiring worker: {reason}");
                }
                // A stuck worker gets SIGTERM, as php-fpm sends: its own
                // graceful stop signal might be ignored mid-request.
                let signal = if reason == "request_terminate_timeout" {
                    Signal::SIGTERM
                } else {
                    self.stop_signal()
                };
                self.stop_worker(id, signal);
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        self.stopping = true;
        let ids: Vec<WorkerId> = self.procs.keys().copied().collect();
        let signal = self.stop_signal();
        for id in ids {
            match cmd {
                Command::StopFast => self.stop_worker(id, signal),
                Command::StopGraceful => {
                    if self.pool.retire(id) {
                        self.stop_worker(id, signal);
                    }
                }
            }
        }
    }

    fn stop_signal(&self) -> Signal {
        Signal::try_from(self.cfg.worker_stop_signal).unwrap_or(Signal::SIGTERM)
    }

    /// Takes a worker out of routing and signals it; SIGKILL follows after
    /// `worker.kill_timeout` if it is still there.
    fn stop_worker(&mut self, id: WorkerId, signal: Signal) {
        self.pool.retire(id);
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        if p.stopping && signal != Signal::SIGKILL {
            return;
        }
        p.stopping = true;
        p.handle.send(ProcessCommand::Stop {
            signal,
            grace: self.cfg.worker_kill_timeout,
        });
    }
}
