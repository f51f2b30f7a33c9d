//! `spawn = preload` in the supervisor: one preloader per generation loads
//! and validates the application once, then forks each worker when asked.
//! A preloader whose preload or validate fails refuses its generation, with
//! the application's own error text. A preloader lives while its
//! generation has workers (they die with it), and is stopped after.

use std::path::PathBuf;
use std::time::Instant;

use nix::sys::signal::Signal;

use super::process::{self, ProcessCommand, ProcessHandle};
use super::{Event, Supervisor, output, output_pipe, preloader, spawn};
use crate::pool::WorkerId;

pub(super) struct PreloaderState {
    handle: ProcessHandle,
    control: preloader::Control,
    ready: bool,
    started: Instant,
    stopping: bool,
    /// Its failure was already counted (validate failed, or it was too slow).
    failed: bool,
}

/// A worker asked of a preloader, not forked yet.
pub(super) struct Forking {
    pub generation: u32,
    socket: PathBuf,
    hard: bool,
}

impl Supervisor {
    /// Asks the generation's preloader for a worker, starting the preloader
    /// first if there is none. Nothing happens until it is ready; its
    /// `Ready` event runs the supervisor's loop again.
    pub(super) fn spawn_forked(&mut self, generation: u32, hard: bool) -> anyhow::Result<()> {
        if !self.preloaders.contains_key(&generation) {
            self.start_preloader(generation)?;
        }
        let p = &self.preloaders[&generation];
        if !p.ready || p.stopping {
            self.budget.give_back();
            return Ok(());
        }
        let id = self.next_id;
        self.next_id += 1;
        let socket = self.sockets.worker_socket(self.index, id);
        let listener = spawn::bind_worker_socket(&socket)?;
        p.control.fork(id, listener);
        self.forking.insert(
            id,
            Forking {
                generation,
                socket,
                hard,
            },
        );
        Ok(())
    }

    fn start_preloader(&mut self, generation: u32) -> anyhow::Result<()> {
        let g = self.gens[&generation].clone();
        let (master_end, preloader_end) = preloader::socket_pair()?;
        let (out_read, out_write) = output_pipe(&g.cfg)?;
        let child = spawn::spawn(spawn::SpawnSpec {
            pool: &g.cfg,
            identity: &g.identity,
            program: &g.program,
            dir: g.dir.as_deref(),
            generation,
            worker: 0,
            listener: None,
            control: Some(preloader_end),
            output: out_write,
        })?;
        let events = self.events_tx.clone();
        let handle = process::watch(child, move |status| {
            let _ = events.send(Event::PreloaderExited { generation, status });
        });
        if let Some(r) = out_read {
            output::forward(
                r,
                self.pool.name.clone(),
                handle.pid,
                g.cfg.decorate_workers_output,
            );
        }
        let events = self.events_tx.clone();
        let control = preloader::start(master_end, move |msg| {
            let _ = events.send(Event::Preloader { generation, msg });
        })?;
        tracing::info!(pool = %self.name(), pid = handle.pid, generation, "preloader started");
        let state = PreloaderState {
            handle,
            control,
            ready: false,
            started: Instant::now(),
            stopping: false,
            failed: false,
        };
        self.preloaders.insert(generation, state);
        Ok(())
    }

    pub(super) fn on_preloader(&mut self, generation: u32, msg: preloader::Message) {
        use preloader::Message;
        match msg {
            Message::Ready => {
                if let Some(p) = self.preloaders.get_mut(&generation) {
                    p.ready = true;
                    tracing::info!(pool = %self.pool.name, pid = p.handle.pid, generation, "preloader ready: preload and validate passed in {:.1?}", p.started.elapsed());
                }
            }
            Message::Failed(text) => {
                if let Some(p) = self.preloaders.get_mut(&generation) {
                    p.failed = true;
                }
                tracing::error!(pool = %self.name(), generation, "preload failed: {text}");
                self.generation_failed(generation, format!("preload failed: {text}"), true);
            }
            Message::Forked {
                worker,
                pid,
                exited,
            } => {
                let Some(f) = self.forking.remove(&worker) else {
                    return;
                };
                let events = self.events_tx.clone();
                match process::watch_forked(pid, exited, move |status| {
                    let _ = events.send(Event::Exited { id: worker, status });
                }) {
                    Ok(handle) => {
                        self.register_worker(worker, f.generation, handle, f.socket, f.hard)
                    }
                    Err(e) => self.fork_lost(
                        worker,
                        f,
                        format!("forked worker {pid} is gone already: {e}"),
                    ),
                }
            }
            Message::ForkFailed { worker, reason } => {
                if let Some(f) = self.forking.remove(&worker) {
                    self.fork_lost(worker, f, reason);
                }
            }
            Message::Gone => {}
        }
    }

    fn fork_lost(&mut self, worker: WorkerId, f: Forking, reason: String) {
        self.budget.give_back();
        let _ = std::fs::remove_file(&f.socket);
        tracing::warn!(pool = %self.name(), worker, generation = f.generation, "preloader could not fork a worker: {reason}");
        self.generation_failed(
            f.generation,
            format!("could not fork a worker: {reason}"),
            false,
        );
    }

    pub(super) fn on_preloader_exit(
        &mut self,
        generation: u32,
        status: std::io::Result<std::process::ExitStatus>,
    ) {
        let Some(p) = self.preloaders.remove(&generation) else {
            return;
        };
        let lost: Vec<WorkerId> = self
            .forking
            .iter()
            .filter(|(_, f)| f.generation == generation)
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            if let Some(f) = self.forking.remove(&id) {
                self.budget.give_back();
                let _ = std::fs::remove_file(&f.socket);
            }
        }
        let how = process::describe(&status);
        if p.stopping {
            tracing::info!(pool = %self.name(), pid = p.handle.pid, generation, "preloader stopped: {how}");
            return;
        }
        tracing::warn!(pool = %self.name(), pid = p.handle.pid, generation, "preloader {how}; its workers are gone with it");
        if !p.failed {
            self.generation_failed(generation, format!("the preloader {how}"), false);
        }
    }

    /// A generation's preloader or fork failed: a rollout failure for a
    /// rolling generation (at once when `fatal`: a validation error will not
    /// pass on a retry), else a failure for the pool's backoff.
    fn generation_failed(&mut self, generation: u32, what: String, fatal: bool) {
        if self
            .rollout
            .as_ref()
            .is_some_and(|r| r.generation == generation)
        {
            self.rollout_failed(what, fatal);
        } else {
            let delay = self.failed("the preloader failed");
            tracing::warn!(pool = %self.name(), generation, "{what}; next attempt in {delay:?}");
        }
    }

    /// Kills preloaders that take longer than `worker.start_timeout` to load,
    /// and stops those whose generation needs them no more.
    pub(super) fn maintain_preloaders(&mut self, now: Instant) {
        let gens: Vec<u32> = self.preloaders.keys().copied().collect();
        for generation in gens {
            let has_workers = self.procs.values().any(|p| p.generation == generation)
                || self.forking.values().any(|f| f.generation == generation);
            let wanted = !self.stopping && self.gens.get(&generation).is_some_and(|g| g.is_live());
            let timeout = self
                .gens
                .get(&generation)
                .map(|g| g.cfg.worker_start_timeout);
            let grace = self.serving_gen().cfg.worker_kill_timeout;
            let p = self.preloaders.get_mut(&generation).expect("listed above");
            if p.stopping {
                continue;
            }
            if !p.ready && timeout.is_some_and(|t| now >= p.started + t) {
                tracing::warn!(pool = %self.pool.name, pid = p.handle.pid, generation, "preloader did not load within worker.start_timeout; killing it");
                p.failed = true;
                p.stopping = false;
                p.handle.send(ProcessCommand::Kill);
                let what = "the preloader did not load within worker.start_timeout".to_string();
                self.generation_failed(generation, what, false);
            } else if !wanted && !has_workers {
                p.stopping = true;
                p.handle.send(ProcessCommand::Stop {
                    signal: Signal::SIGTERM,
                    grace,
                });
            }
        }
    }

    /// When the next preloader times out.
    pub(super) fn next_preloader_deadline(&self) -> Option<Instant> {
        self.preloaders
            .iter()
            .filter(|(_, p)| !p.ready && !p.stopping && !p.failed)
            .filter_map(|(g, p)| Some(p.started + self.gens.get(g)?.cfg.worker_start_timeout))
            .min()
    }

    /// Workers asked of a preloader and not forked yet, of one generation
    /// or all.
    pub(super) fn forking_of(&self, generation: Option<u32>) -> usize {
        self.forking
            .values()
            .filter(|f| generation.is_none_or(|g| f.generation == g))
            .count()
    }
}
