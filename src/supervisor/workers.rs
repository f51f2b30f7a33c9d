//! The supervisor's workers: starting one (exec or from a preloader),
//! walking it through its readiness gate, and stopping it — retired after
//! its request when busy, signalled at once when idle, killed after
//! `worker.kill_timeout`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use nix::sys::signal::Signal;

use super::process::{self, ProcessCommand, ProcessHandle};
use super::{Supervisor, backoff, gate, generation, output, preloader, spawn};
use crate::config::{PoolConfig, SpawnMode};
use crate::pool::{Counters, PoolEvent, RetireReason, WorkerConn, WorkerEntry, WorkerId};

/// One live worker process, as the supervisor tracks it.
pub(super) struct Proc {
    pub(super) handle: ProcessHandle,
    pub(super) socket: PathBuf,
    pub(super) generation: u32,
    pub(super) started: Instant,
    /// When it passed its readiness gate.
    pub(super) ready_at: Option<Instant>,
    pub(super) life: Life,
    /// The last lines it wrote, when its output is caught.
    pub(super) last_words: Option<output::LastWords>,
    /// The nice value its process group gets back at its gate, when it
    /// started at a lower priority beside serving workers.
    pub(super) restore_nice: Option<i32>,
}

/// Where a worker is in its life, as the supervisor sees it. Every state
/// but `Live` is leaving: its exit is no failure, and it no longer counts
/// towards the pool's size (so its replacement may start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Life {
    /// Starting, warming or serving.
    Live,
    /// Retired while busy: it gets no new request, and is stopped when its
    /// request ends or, past `process_control_timeout`, at `by`.
    Finishing { by: Instant },
    /// Its stop signal was sent; SIGKILL follows after `worker.kill_timeout`.
    Signalled,
    /// It failed its readiness gate (why) and was killed; the failure is
    /// counted when its exit, and so its exit status, is known.
    GateFailed(String),
}

impl Life {
    pub(super) fn leaving(&self) -> bool {
        *self != Life::Live
    }

    /// Until when a busy retired worker may finish its request.
    pub(super) fn finish_by(&self) -> Option<Instant> {
        match self {
            Life::Finishing { by } => Some(*by),
            _ => None,
        }
    }
}

/// What a supervisor's own tasks report.
pub(super) enum Event {
    Ready {
        id: WorkerId,
        conns: Vec<WorkerConn>,
    },
    GateFailed {
        id: WorkerId,
        reason: String,
    },
    Exited {
        id: WorkerId,
        status: std::io::Result<std::process::ExitStatus>,
    },
    Preloader {
        generation: u32,
        msg: preloader::Message,
    },
    PreloaderExited {
        generation: u32,
        status: std::io::Result<std::process::ExitStatus>,
    },
}

/// The pipe that catches a process's output, when the pool wants it. A
/// php-fpm engine's is always caught: it is its master's own messages (its
/// start failures, its children's exits); whether its children's output
/// joins them is php-fpm's `catch_workers_output`.
pub(super) fn output_pipe(
    cfg: &PoolConfig,
) -> anyhow::Result<(Option<std::os::fd::OwnedFd>, Option<std::os::fd::OwnedFd>)> {
    Ok(match cfg.catch_workers_output || cfg.runs_php_fpm() {
        true => {
            let (r, w) = output::pipe()?;
            (Some(r), Some(w))
        }
        false => (None, None),
    })
}

impl Supervisor {
    pub(super) fn spawn(&mut self, generation: u32, hard: bool) -> anyhow::Result<()> {
        if let Err(why) = self.budget.take() {
            if !why.is_empty() {
                tracing::warn!(pool = %self.name(), "not starting a worker: {why}");
            }
            return Ok(());
        }
        let spawned = self.spawn_within_budget(generation, hard);
        if spawned.is_err() {
            self.budget.give_back();
        }
        spawned
    }

    pub(super) fn spawn_within_budget(
        &mut self,
        generation: u32,
        hard: bool,
    ) -> anyhow::Result<()> {
        if self.gens[&generation].cfg.spawn == SpawnMode::Preload {
            return self.spawn_forked(generation, hard);
        }
        let g = self.gens[&generation].clone();
        let id = self.next_id;
        self.next_id += 1;
        let socket = self.sockets.worker_socket(self.index, id);
        let listener = spawn::bind_worker_socket(&socket)?;
        // A static php-fpm group's queue is watched, and its free slots
        // open their connections ahead (see `pool::dispatch`).
        let watch = g
            .cfg
            .opens_ahead()
            .then(|| listener.try_clone().ok())
            .flatten();
        let (out_read, out_write) = output_pipe(&g.cfg)?;
        let child = spawn::spawn(spawn::SpawnSpec {
            pool: &g.cfg,
            identity: &g.identity,
            program: &g.program,
            dir: g.dir.as_deref(),
            generation,
            worker: id,
            listener: Some(listener),
            control: None,
            output: out_write,
        })
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&socket);
            let _ = std::fs::remove_file(super::engine::status_socket(&socket));
        })?;
        let events = self.events_tx.clone();
        let handle = process::watch(child, move |status| {
            let _ = events.send(Event::Exited { id, status });
        });
        let words = out_read.map(|r| {
            output::forward(
                r,
                self.pool.name.clone(),
                handle.pid,
                g.cfg.decorate_workers_output,
            )
        });
        self.register_worker(id, generation, handle, socket, hard);
        if let Some(listener) = watch {
            self.pool.watch_listener(id, listener);
        }
        if let Some(p) = self.procs.get_mut(&id) {
            p.last_words = words;
        }
        Ok(())
    }

    /// A started worker: on the scoreboard, warming, and through its gate.
    pub(super) fn register_worker(
        &mut self,
        id: WorkerId,
        generation: u32,
        handle: ProcessHandle,
        socket: PathBuf,
        hard: bool,
    ) {
        let pid = handle.pid;
        Counters::bump(&self.pool.counters.spawns);
        tracing::info!(pool = %self.name(), worker = id, pid, generation, "worker spawned");
        // Beside workers that serve, a new one starts (and warms up) at a
        // lower CPU priority, so its start-up does not slow their requests.
        let serving = self
            .procs
            .values()
            .any(|p| !p.life.leaving() && p.ready_at.is_some());
        let restore_nice = if serving {
            spawn::start_behind(pid, &self.gens[&generation].cfg)
        } else {
            None
        };
        let rank = generation::ranks(&self.gens)
            .get(&generation)
            .copied()
            .unwrap_or(0);
        self.pool
            .add_worker(id, WorkerEntry::new(pid, generation, rank));
        self.procs.insert(
            id,
            Proc {
                handle,
                socket: socket.clone(),
                generation,
                started: Instant::now(),
                ready_at: None,
                life: Life::Live,
                last_words: None,
                restore_nice,
            },
        );
        let events = self.events_tx.clone();
        let cfg = self.gens[&generation].cfg.clone();
        let socket: Arc<std::path::Path> = socket.into();
        tokio::spawn(async move {
            // A hard restart gates on FCGI_GET_VALUES only.
            let ev = match gate::pass(socket, &cfg, !hard).await {
                Ok(conns) => Event::Ready { id, conns },
                Err(e) => Event::GateFailed {
                    id,
                    reason: e.to_string(),
                },
            };
            let _ = events.send(ev);
        });
    }

    pub(super) fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Ready { id, conns } => {
                let Some(p) = self.procs.get_mut(&id) else {
                    return;
                };
                if p.life.leaving() {
                    return;
                }
                p.ready_at = Some(Instant::now());
                let (pid, generation) = (p.handle.pid, p.generation);
                if let Some(nice) = p.restore_nice.take() {
                    spawn::set_group_nice(pid, nice);
                }
                tracing::info!(pool = %self.name(), worker = id, pid, generation, "worker ready");
                self.pool.worker_ready(id, conns);
                if self
                    .rollout
                    .as_ref()
                    .is_some_and(|r| r.generation == generation)
                {
                    self.rollout_progress();
                }
            }
            Event::GateFailed { id, reason } => {
                let Some(p) = self.procs.get_mut(&id) else {
                    return;
                };
                if p.life.leaving() {
                    return;
                }
                self.stop_worker(id, Signal::SIGKILL);
                if let Some(p) = self.procs.get_mut(&id) {
                    p.life = Life::GateFailed(reason);
                }
                // No replacement until its exit is counted as a failure.
                self.next_spawn_at = self.next_spawn_at.max(Instant::now() + backoff::FIRST);
            }
            Event::Exited { id, status } => self.on_exit(id, status),
            Event::Preloader { generation, msg } => self.on_preloader(generation, msg),
            Event::PreloaderExited { generation, status } => {
                self.on_preloader_exit(generation, status)
            }
        }
    }

    pub(super) fn on_pool_event(&mut self, ev: PoolEvent) {
        match ev {
            PoolEvent::Retire { id, reason } => {
                if let Some(p) = self.procs.get(&id) {
                    tracing::info!(pool = %self.name(), worker = id, pid = p.handle.pid, "retiring worker: {reason}");
                }
                // A stuck worker gets SIGTERM, as php-fpm sends: its own
                // graceful stop signal might be ignored mid-request.
                let signal = if reason == RetireReason::Terminated {
                    Signal::SIGTERM
                } else {
                    self.stop_signal()
                };
                self.stop_worker(id, signal);
            }
            PoolEvent::Demand => self.demand = true,
        }
    }

    pub(super) fn stop_all(&mut self, graceful: bool) {
        self.stopping = true;
        let ids: Vec<WorkerId> = self.procs.keys().copied().collect();
        let signal = self.stop_signal();
        for id in ids {
            if !graceful || self.pool.retire(id) {
                self.stop_worker(id, signal);
            }
        }
    }

    pub(super) fn stop_signal(&self) -> Signal {
        Signal::try_from(self.serving_gen().cfg.worker_stop_signal).unwrap_or(Signal::SIGTERM)
    }

    /// Stops routing to a worker; it is stopped now if idle, else when its
    /// request ends (the router hands it back with `PoolEvent::Retire`).
    pub(super) fn retire_worker(&mut self, id: WorkerId, why: &str) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        if self.pool.retire(id) {
            tracing::info!(pool = %self.pool.name, worker = id, pid = p.handle.pid, "retiring idle worker: {why}");
            self.stop_worker(id, self.stop_signal());
        } else {
            tracing::info!(pool = %self.pool.name, worker = id, pid = p.handle.pid, "retiring worker after its current request: {why}");
            // Counted as leaving now, so a replacement may start.
            p.life = Life::Finishing {
                by: Instant::now() + self.control_timeout,
            };
        }
    }

    /// Takes a worker out of routing and signals it; SIGKILL follows after
    /// `worker.kill_timeout` if it is still there.
    pub(super) fn stop_worker(&mut self, id: WorkerId, signal: Signal) {
        self.pool.retire(id);
        let grace = self.serving_gen().cfg.worker_kill_timeout;
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        let signalled = matches!(p.life, Life::Signalled | Life::GateFailed(_));
        if signalled && signal != Signal::SIGKILL {
            return;
        }
        if !matches!(p.life, Life::GateFailed(_)) {
            p.life = Life::Signalled;
        }
        p.handle.send(ProcessCommand::Stop { signal, grace });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_live_worker_counts_and_only_a_finishing_one_has_a_deadline() {
        let by = Instant::now();
        assert!(!Life::Live.leaving());
        for leaving in [
            Life::Finishing { by },
            Life::Signalled,
            Life::GateFailed("did not answer".into()),
        ] {
            assert!(leaving.leaving(), "{leaving:?}");
        }
        assert_eq!(Life::Finishing { by }.finish_by(), Some(by));
        assert_eq!(Life::Signalled.finish_by(), None);
    }
}
