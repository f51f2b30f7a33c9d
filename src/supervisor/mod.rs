//! The supervisor of one pool: it keeps the pool at its size (php-fpm's
//! static, dynamic and ondemand modes), walks each new worker through the
//! readiness gate, reaps every exit with its status, retires workers the
//! router hands it, rolls out new generations and refuses broken ones, and
//! respawns with a backoff so a worker that dies at once never makes the
//! master spin.

pub mod backoff;
mod budget;
mod capacity;
mod deploy;
pub mod engine;
mod exits;
mod gate;
pub mod generation;
pub mod orphans;
pub mod output;
mod preload;
pub mod preloader;
pub mod process;
pub mod rollout;
pub mod scaling;
pub mod socket_dir;
pub mod spawn;
pub mod strays;
mod workers;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::config::PoolConfig;
use crate::pool::{Pool, PoolEvent, WorkerId};
use backoff::Backoff;
pub use budget::ProcessBudget;
use capacity::Rescale;
use generation::{GenState, Generation};
use rollout::{Kind, Rollout};
use scaling::Scaler;
use socket_dir::SocketDir;
use workers::{Event, Proc, output_pipe};

/// What the master asks of a pool's supervisor.
#[derive(Debug)]
pub enum Command {
    /// Roll out `cfg` as a new generation if it differs from the newest
    /// (always, with `force`). The reply says which generation, if any.
    Reload {
        cfg: Arc<PoolConfig>,
        force: bool,
        reply: oneshot::Sender<anyhow::Result<Option<u32>>>,
    },
    /// The emergency path: replace every worker now.
    HardRestart {
        batch: Option<usize>,
        reply: oneshot::Sender<anyhow::Result<u32>>,
    },
    /// One worker more or fewer (SIGTTIN/SIGTTOU).
    Scale { delta: i64 },
    /// Set `pm.max_children` at run time (`herd ctl scale POOL N`); the
    /// reply says what that means for this pool.
    ScaleTo {
        max_children: u32,
        reply: oneshot::Sender<String>,
    },
    /// Stop every worker: idle ones now, busy ones when their request ends.
    StopGraceful,
    /// Stop every worker now.
    StopFast,
}

/// What a supervisor tells the master.
#[derive(Debug)]
pub enum Report {
    /// A worker died of SIGSEGV or SIGBUS (`emergency_restart_threshold`).
    Crashed,
}

/// What every pool's supervisor gets from the master.
#[derive(Clone)]
pub struct Shared {
    pub sockets: Arc<SocketDir>,
    pub reports: mpsc::UnboundedSender<Report>,
    /// `process_control_timeout`.
    pub control_timeout: Duration,
    pub budget: Arc<ProcessBudget>,
}

pub struct Supervisor {
    pool: Arc<Pool>,
    index: usize,
    gens: BTreeMap<u32, Generation>,
    /// The generation the pool falls back to: the last that finished.
    serving: u32,
    rollout: Option<Rollout>,
    procs: BTreeMap<WorkerId, Proc>,
    next_id: WorkerId,
    backoff: Backoff,
    next_spawn_at: Instant,
    scaler: Scaler,
    next_tick: Instant,
    sockets: Arc<SocketDir>,
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    pool_events: mpsc::UnboundedReceiver<PoolEvent>,
    commands: mpsc::UnboundedReceiver<Command>,
    reports: mpsc::UnboundedSender<Report>,
    refused: Option<String>,
    /// A request had to queue since the last scaling step.
    demand: bool,
    /// Requests are refused at once: no worker is up or coming soon.
    unavailable: bool,
    /// Why the last worker failed, for status while none can start.
    last_failure: String,
    /// `process_control_timeout`: what a busy retiring worker gets.
    control_timeout: Duration,
    budget: Arc<ProcessBudget>,
    next_memory_check: Instant,
    /// The pool's first workers have all passed their gate.
    started: bool,
    /// `spawn = preload`: the preloader of each generation that has one.
    preloaders: BTreeMap<u32, preload::PreloaderState>,
    /// Workers asked of a preloader, not forked yet.
    forking: BTreeMap<WorkerId, preload::Forking>,
    stopping: bool,
}

impl Supervisor {
    pub fn new(
        pool: Arc<Pool>,
        index: usize,
        pool_events: mpsc::UnboundedReceiver<PoolEvent>,
        shared: Shared,
        first_generation: u32,
    ) -> anyhow::Result<(Supervisor, mpsc::UnboundedSender<Command>)> {
        let mut first = Generation::new(first_generation, pool.config())?;
        first.state = GenState::Stable;
        first.finished = true;
        pool.set_generation(first_generation);
        let (events_tx, events) = mpsc::unbounded_channel();
        let (cmd_tx, commands) = mpsc::unbounded_channel();
        let sup = Supervisor {
            pool,
            index,
            gens: BTreeMap::from([(first_generation, first)]),
            serving: first_generation,
            rollout: None,
            procs: BTreeMap::new(),
            next_id: 1,
            backoff: Backoff::default(),
            next_spawn_at: Instant::now(),
            scaler: Scaler::default(),
            next_tick: Instant::now(),
            sockets: shared.sockets,
            events_tx,
            events,
            pool_events,
            commands,
            reports: shared.reports,
            refused: None,
            demand: false,
            unavailable: false,
            last_failure: String::new(),
            control_timeout: shared.control_timeout,
            budget: shared.budget,
            next_memory_check: Instant::now(),
            started: false,
            preloaders: BTreeMap::new(),
            forking: BTreeMap::new(),
            stopping: false,
        };
        Ok((sup, cmd_tx))
    }

    /// Runs until every worker is gone after a stop command.
    pub async fn run(mut self) {
        self.publish();
        loop {
            self.maintain();
            self.publish();
            if self.stopping
                && self.procs.is_empty()
                && self.forking.is_empty()
                && self.preloaders.is_empty()
            {
                break;
            }
            let wake = tokio::time::Instant::from_std(self.next_wake());
            tokio::select! {
                Some(ev) = self.events.recv() => self.on_event(ev),
                Some(ev) = self.pool_events.recv() => self.on_pool_event(ev),
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => self.stop_all(false),
                },
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
        self.pool.flush_refusals(true);
        tracing::info!(pool = %self.pool.name, "all workers stopped");
    }

    pub(super) fn name(&self) -> &str {
        &self.pool.name
    }

    pub(super) fn serving_gen(&self) -> &Generation {
        &self.gens[&self.serving]
    }

    pub(super) fn maintain(&mut self) {
        let now = Instant::now();
        self.pool.flush_refusals(false);
        self.maintain_preloaders(now);
        if self.stopping {
            return;
        }
        let due = now >= self.next_tick;
        if due {
            self.next_tick = now + scaling::TICK;
            self.pool.renew_spares();
        }
        self.forgive_failures(now);
        self.enforce_finish_by(now);
        self.check_memory(now);
        self.update_availability(now);
        if self.rollout.is_some() {
            self.maintain_rollout(now);
        } else if self.serving_gen().cfg.pm == crate::config::PmMode::Static
            || due
            || self.demand
            || self.pool.load().0.queued > 0
        {
            // Dynamic and ondemand pools step once a second, as php-fpm's
            // maintenance does, and at once when requests have to queue.
            self.demand = false;
            self.scale(now);
        }
        self.update_availability(now);
    }

    pub(super) fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let mut wake = now + Duration::from_secs(3600);
        if self.stopping {
            return wake;
        }
        wake = wake.min(self.next_tick);
        // Spawns happen as soon as they may; only a backoff makes one wait.
        if self.next_spawn_at > now {
            wake = wake.min(self.next_spawn_at);
        }
        if self.backoff.failures() > 0 {
            let min = self.serving_gen().cfg.worker_min_lifetime;
            for t in self.procs.values().filter_map(|p| p.ready_at) {
                wake = wake.min(t + min);
            }
        }
        if let Some(r) = &self.rollout {
            wake = wake.min(r.deadline);
        }
        if let Some(t) = self.next_preloader_deadline() {
            wake = wake.min(t.max(now));
        }
        if self
            .gens
            .values()
            .any(|g| g.cfg.worker_max_memory.is_some())
        {
            wake = wake.min(self.next_memory_check);
        }
        for t in self.procs.values().filter_map(|p| p.life.finish_by()) {
            wake = wake.min(t);
        }
        wake
    }

    pub(super) fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Reload { cfg, force, reply } => {
                let newest = self
                    .gens
                    .values()
                    .filter(|g| g.is_live())
                    .max_by_key(|g| g.number)
                    .expect("a live generation");
                let unchanged = !force && newest.same_as(&cfg) && self.refused.is_none();
                let result = if unchanged {
                    Ok(None)
                } else {
                    self.reload_scale(&cfg);
                    self.start_rollout(cfg, Kind::Graceful).map(Some)
                };
                let _ = reply.send(result);
            }
            Command::HardRestart { batch, reply } => {
                let cfg = self.pool.config();
                let _ = reply.send(self.start_rollout(cfg, Kind::Hard { batch }));
            }
            Command::Scale { delta } => {
                self.rescale(Rescale::By(delta));
            }
            Command::ScaleTo {
                max_children,
                reply,
            } => {
                let _ = reply.send(self.rescale(Rescale::To(max_children)));
            }
            Command::StopGraceful => self.stop_all(true),
            Command::StopFast => self.stop_all(false),
        }
        self.next_tick = Instant::now();
    }
}
