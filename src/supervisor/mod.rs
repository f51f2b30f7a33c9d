//! The supervisor of one pool: it keeps the pool at its size (php-fpm's
//! static, dynamic and ondemand modes), walks each new worker through the
//! readiness gate, reaps every exit with its status, retires workers the
//! router hands it, rolls out new generations and refuses broken ones, and
//! respawns with a backoff so a worker that dies at once never makes the
//! master spin.

pub mod backoff;
mod gate;
pub mod generation;
mod output;
mod preload;
pub mod preloader;
pub mod process;
pub mod rollout;
pub mod scaling;
pub mod socket_dir;
pub mod spawn;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot};

use crate::config::{PoolConfig, SpawnMode};
use crate::pool::{
    Counters, DeployStatus, GenerationStatus, Pool, PoolEvent, WorkerConn, WorkerEntry, WorkerId,
};
use backoff::Backoff;
use generation::{GenState, Generation};
use process::{ProcessCommand, ProcessHandle};
use rollout::{Candidate, Counts, Kind, Refusal, Rollout};
use scaling::{Scaler, Step};
use socket_dir::SocketDir;

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
    /// Add or remove workers (SIGTTIN/SIGTTOU, `herd ctl scale`).
    Scale { delta: i64 },
    /// Set the pool's size (`herd ctl scale POOL N`).
    ScaleTo { workers: usize },
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
    Preloader {
        generation: u32,
        msg: preloader::Message,
    },
    PreloaderExited {
        generation: u32,
        status: std::io::Result<std::process::ExitStatus>,
    },
}

/// The pipe that catches a process's output, when the pool wants it.
fn output_pipe(
    cfg: &PoolConfig,
) -> anyhow::Result<(Option<std::os::fd::OwnedFd>, Option<std::os::fd::OwnedFd>)> {
    Ok(match cfg.catch_workers_output {
        true => {
            let (r, w) = output::pipe()?;
            (Some(r), Some(w))
        }
        false => (None, None),
    })
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

/// `process.max`: workers across every pool of the master.
#[derive(Debug, Default)]
pub struct ProcessBudget {
    max: usize,
    live: std::sync::atomic::AtomicUsize,
    warned: std::sync::atomic::AtomicBool,
}

impl ProcessBudget {
    pub fn new(max: u32) -> Arc<ProcessBudget> {
        Arc::new(ProcessBudget {
            max: max as usize,
            ..ProcessBudget::default()
        })
    }

    /// Takes one process from the budget, or says why not.
    fn take(&self) -> Result<(), String> {
        use std::sync::atomic::Ordering::SeqCst;
        let ok = self
            .live
            .fetch_update(SeqCst, SeqCst, |n| {
                (self.max == 0 || n < self.max).then_some(n + 1)
            })
            .is_ok();
        if ok {
            self.warned.store(false, SeqCst);
            return Ok(());
        }
        let first = !self.warned.swap(true, SeqCst);
        Err(if first {
            format!("process.max ({}) reached", self.max)
        } else {
            String::new()
        })
    }

    fn give_back(&self) {
        self.live.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// One live worker process, as the supervisor tracks it.
struct Proc {
    handle: ProcessHandle,
    socket: PathBuf,
    generation: u32,
    started: Instant,
    ready_at: Option<Instant>,
    /// Leaving: its exit is not a failure, and it no longer counts towards
    /// the pool's size.
    stopping: bool,
    /// Its stop signal was sent.
    signalled: bool,
    /// A busy worker retired mid-request gets this long to finish it
    /// (`process_control_timeout`) before it is stopped anyway.
    finish_by: Option<Instant>,
    /// Why it failed its readiness gate; the failure is counted when its
    /// exit (and so its exit status) is known.
    gate_error: Option<String>,
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

    fn name(&self) -> &str {
        &self.pool.name
    }

    fn serving_gen(&self) -> &Generation {
        &self.gens[&self.serving]
    }

    // ---- keeping the pool at its size --------------------------------

    fn maintain(&mut self) {
        let now = Instant::now();
        self.pool.flush_refusals(false);
        self.maintain_preloaders(now);
        if self.stopping {
            return;
        }
        let due = now >= self.next_tick;
        if due {
            self.next_tick = now + scaling::TICK;
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

    /// `worker.max_memory`: a worker grown past it is retired after its
    /// current request and replaced (uWSGI's reload-on-rss), checked once a
    /// second.
    fn check_memory(&mut self, now: Instant) {
        if now < self.next_memory_check {
            return;
        }
        self.next_memory_check = now + scaling::TICK;
        let over: Vec<(WorkerId, u32, u64, u64)> = self
            .procs
            .iter()
            .filter(|(_, p)| !p.stopping && p.ready_at.is_some())
            .filter_map(|(id, p)| {
                let limit = self.gens.get(&p.generation)?.cfg.worker_max_memory?;
                let rss = crate::status::rss_of(p.handle.pid);
                (rss > limit).then_some((*id, p.handle.pid, rss, limit))
            })
            .collect();
        for (id, pid, rss, limit) in over {
            tracing::warn!(pool = %self.name(), worker = id, pid, "worker uses {} MiB, past worker.max_memory ({} MiB)", rss >> 20, limit >> 20);
            self.retire_worker(id, "worker.max_memory");
        }
    }

    /// A busy worker retired mid-request that is still busy past
    /// `process_control_timeout` is stopped anyway.
    fn enforce_finish_by(&mut self, now: Instant) {
        let late: Vec<WorkerId> = self
            .procs
            .iter()
            .filter(|(_, p)| p.finish_by.is_some_and(|t| now >= t))
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            tracing::warn!(pool = %self.name(), worker = id, "retiring worker still busy after process_control_timeout; stopping it");
            self.stop_worker(id, Signal::SIGTERM);
        }
    }

    /// Past failures are forgiven once a worker has stayed up for
    /// `worker.min_lifetime`.
    fn forgive_failures(&mut self, now: Instant) {
        let min = self.serving_gen().cfg.worker_min_lifetime;
        if self.backoff.failures() > 0
            && self
                .procs
                .values()
                .any(|p| p.ready_at.is_some_and(|t| now >= t + min))
        {
            self.backoff.reset();
        }
    }

    /// Requests wait for a worker only when one is up or coming: with none
    /// up, none starting and the next start held back by the backoff, they
    /// get a 503 at once and status says why.
    fn update_availability(&mut self, now: Instant) {
        let up = self.procs.values().any(|p| !p.stopping) || !self.forking.is_empty();
        let held = self.next_spawn_at > now + Duration::from_millis(500);
        let reason = (!up && held && self.backoff.failures() > 0).then(|| {
            format!(
                "{}; no worker is up, the next start is in {:.1?}",
                self.last_failure,
                self.next_spawn_at - now
            )
        });
        if reason.is_some() != self.unavailable {
            self.unavailable = reason.is_some();
            self.pool.set_unavailable(reason);
        }
    }

    /// php-fpm's process manager for the serving generation.
    fn scale(&mut self, now: Instant) {
        let cfg = self.serving_gen().cfg.clone();
        let (mut load, idle) = self.pool.load();
        // Workers started but not yet on the scoreboard's warming count.
        load.warming = self
            .procs
            .values()
            .filter(|p| !p.stopping && p.ready_at.is_none())
            .count()
            + self.forking_of(None);
        let (step, limited) = self.scaler.step(&cfg, load, &idle, now);
        if limited {
            Counters::bump(&self.pool.counters.max_children_reached);
            tracing::warn!(pool = %self.name(), "server reached pm.max_children setting ({}), consider raising it", self.scaler.max_children(&cfg));
        }
        match step {
            Step::Spawn(n) if now >= self.next_spawn_at => {
                for _ in 0..n {
                    if let Err(e) = self.spawn(self.serving, false) {
                        tracing::error!(pool = %self.name(), "failed to start a worker: {e:#}");
                        self.failed("could not start a worker");
                        break;
                    }
                }
            }
            Step::Reap(ids) => {
                for id in ids {
                    if self.pool.retire(id) {
                        tracing::info!(pool = %self.name(), worker = id, "stopping an idle worker ({} pool)", cfg.pm.as_str());
                        self.stop_worker(id, self.stop_signal());
                    }
                }
            }
            _ => {}
        }
        // Static pools also shed workers after a scale-down.
        let live = self.live_of(None);
        let max = self.scaler.max_children(&cfg);
        if live > max {
            self.shed(live - max);
        }
    }

    /// Stops `n` workers, idle and youngest first.
    fn shed(&mut self, n: usize) {
        for _ in 0..n {
            let candidates = self.candidates(|_| true);
            let Some(id) = rollout::pick_retiree(&candidates) else {
                return;
            };
            self.retire_worker(id, "the pool was scaled down");
        }
    }

    /// Live (not stopping) workers, of one generation or all.
    fn live_of(&self, generation: Option<u32>) -> usize {
        let procs = self
            .procs
            .values()
            .filter(|p| !p.stopping && generation.is_none_or(|g| p.generation == g))
            .count();
        procs + self.forking_of(generation)
    }

    fn candidates(&self, of: impl Fn(&Proc) -> bool) -> Vec<Candidate> {
        self.procs
            .iter()
            .filter(|(_, p)| !p.stopping && of(p))
            .map(|(id, _)| Candidate {
                id: *id,
                idle: self.pool.is_idle(*id),
            })
            .collect()
    }

    fn next_wake(&self) -> Instant {
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
        for t in self.procs.values().filter_map(|p| p.finish_by) {
            wake = wake.min(t);
        }
        wake
    }

    // ---- rollouts ----------------------------------------------------

    fn counts(&self, generation: u32) -> Counts {
        let mut c = Counts::default();
        for p in self.procs.values().filter(|p| !p.stopping) {
            match (p.generation == generation, p.ready_at.is_some()) {
                (true, true) => c.new_ready += 1,
                (true, false) => c.new_warming += 1,
                (false, _) => c.old += 1,
            }
        }
        c.new_warming += self.forking_of(Some(generation));
        c
    }

    fn maintain_rollout(&mut self, now: Instant) {
        let r = self.rollout.clone().expect("rolling");
        if let Some(refusal) = r.timed_out(now) {
            return self.refuse(refusal);
        }
        let mut c = self.counts(r.generation);
        c.target = self.rollout_target();
        if r.done(c) {
            return self.finish_rollout();
        }
        let stopping_old = self
            .procs
            .values()
            .filter(|p| p.stopping && p.generation != r.generation)
            .count();
        for _ in 0..r.hard_stops_wanted(c, stopping_old) {
            let old = self.candidates(|p| p.generation != r.generation);
            let Some(id) = old.iter().map(|c| c.id).min() else {
                break;
            };
            tracing::warn!(pool = %self.name(), worker = id, "hard restart: stopping worker now");
            self.stop_worker(id, Signal::SIGTERM);
        }
        if now < self.next_spawn_at {
            return;
        }
        let hard = matches!(r.kind, Kind::Hard { .. });
        for _ in 0..r.spawns_wanted(c) {
            if let Err(e) = self.spawn(r.generation, hard) {
                tracing::error!(pool = %self.name(), "failed to start a worker of generation {}: {e:#}", r.generation);
                self.rollout_failed(format!("could not start: {e:#}"), false);
                break;
            }
        }
    }

    /// The size a rollout brings the new generation to, fixed when it
    /// starts (counting the new workers would make a dynamic pool's target
    /// grow with every one started).
    fn rollout_target(&self) -> usize {
        self.rollout.as_ref().expect("rolling").target
    }

    /// Starts rolling out `cfg` as the next generation.
    fn start_rollout(&mut self, cfg: Arc<PoolConfig>, kind: Kind) -> anyhow::Result<u32> {
        let number = self.gens.keys().max().copied().unwrap_or(0) + 1;
        let generation = Generation::new(number, cfg.clone())?;
        if let Some(old) = self.rollout.take() {
            // Superseded before it finished: it ranks below the last
            // generation that did, and its workers still starting go.
            if let Some(g) = self.gens.get_mut(&old.generation) {
                g.state = GenState::Superseded;
            }
            let warming: Vec<WorkerId> = self
                .procs
                .iter()
                .filter(|(_, p)| {
                    p.generation == old.generation && p.ready_at.is_none() && !p.stopping
                })
                .map(|(id, _)| *id)
                .collect();
            for id in warming {
                self.stop_worker(id, Signal::SIGKILL);
            }
            tracing::warn!(pool = %self.name(), "generation {} superseded by {number} before its rollout finished", old.generation);
        }
        let live = crate::supervisor::scaling::Load {
            idle: self.live_of(None),
            ..Default::default()
        };
        let target = self.scaler.target(&cfg, live).max(1);
        self.gens.insert(number, generation);
        self.refused = None;
        self.rollout = Some(Rollout::new(
            target,
            number,
            kind,
            cfg.rollout_surge,
            cfg.rollout_max_failures,
            cfg.rollout_timeout,
            Instant::now(),
        ));
        self.pool.set_config(cfg);
        self.pool.set_generation(number);
        self.next_spawn_at = Instant::now();
        self.update_ranks();
        let how = match kind {
            Kind::Graceful => "rolling out".to_string(),
            Kind::Hard { batch: None } => "hard restart: replacing every worker now".to_string(),
            Kind::Hard { batch: Some(n) } => {
                format!("hard restart: replacing workers {n} at a time")
            }
        };
        tracing::info!(pool = %self.name(), generation = number, "{how}");
        Ok(number)
    }

    /// A new worker passed its gate: one old worker leaves.
    fn rollout_progress(&mut self) {
        let Some(r) = &self.rollout else { return };
        if matches!(r.kind, Kind::Hard { .. }) {
            return;
        }
        let generation = r.generation;
        let old = self.candidates(|p| p.generation != generation);
        if let Some(id) = rollout::pick_retiree(&old) {
            self.retire_worker(id, "replaced by a new generation");
        }
    }

    fn rollout_failed(&mut self, what: String, fatal: bool) {
        let Some(r) = self.rollout.as_mut() else {
            return;
        };
        if let Some(refusal) = r.failed(what, fatal) {
            self.refuse(refusal);
        }
    }

    fn finish_rollout(&mut self) {
        let r = self.rollout.take().expect("rolling");
        for g in self.gens.values_mut() {
            if g.number == r.generation {
                g.state = GenState::Stable;
                g.finished = true;
            } else if g.is_live() {
                g.state = GenState::Retired;
            }
        }
        self.serving = r.generation;
        self.update_ranks();
        tracing::info!(pool = %self.name(), generation = r.generation, "rollout done in {:.1?}: every worker is of generation {}", r.started.elapsed(), r.generation);
    }

    /// Aborts the rollout: its workers stop and the serving generation is
    /// brought back to full size. Nothing of the refused generation serves.
    fn refuse(&mut self, refusal: Refusal) {
        let r = self.rollout.take().expect("rolling");
        let reason = refusal.to_string();
        tracing::error!(pool = %self.name(), generation = r.generation, "deploy refused: {reason}; generation {} keeps serving", self.serving);
        if let Some(g) = self.gens.get_mut(&r.generation) {
            g.state = GenState::Refused(reason.clone());
        }
        let doomed: Vec<WorkerId> = self
            .procs
            .iter()
            .filter(|(_, p)| p.generation != self.serving && !p.stopping)
            .map(|(id, _)| *id)
            .collect();
        for id in doomed {
            self.retire_worker(id, "its generation was refused");
        }
        self.refused = Some(reason);
        self.pool.set_config(self.serving_gen().cfg.clone());
        self.pool.set_generation(r.generation);
        self.next_spawn_at = Instant::now();
        self.update_ranks();
    }

    fn update_ranks(&mut self) {
        // Forget generations that can never serve again and have no
        // worker left, but the newest (status shows why it was refused).
        let newest = self.gens.keys().max().copied().unwrap_or(1);
        let procs = &self.procs;
        self.gens.retain(|n, g| {
            g.is_live() || *n == newest || procs.values().any(|p| p.generation == *n)
        });
        self.pool.set_ranks(&generation::ranks(&self.gens));
    }

    /// Publishes where deploys stand, for status and `herd ctl`.
    fn publish(&mut self) {
        if !self.started && self.rollout.is_none() {
            // Started: the workers the pool wants at first are all through
            // their gate (an ondemand pool wants none).
            let (load, _) = self.pool.load();
            let want = self.scaler.max_children(&self.serving_gen().cfg).min(
                match self.serving_gen().cfg.pm {
                    crate::config::PmMode::Static => usize::MAX,
                    crate::config::PmMode::Dynamic => self.serving_gen().cfg.start_servers as usize,
                    crate::config::PmMode::Ondemand => 0,
                },
            );
            let warming = self
                .procs
                .values()
                .any(|p| p.ready_at.is_none() && !p.stopping)
                || !self.forking.is_empty();
            self.started = !warming && load.idle + load.busy >= want;
        }
        let newest = self.gens.keys().max().copied().unwrap_or(1);
        let ranks = generation::ranks(&self.gens);
        let (state, reason, ready, old, target) = match (&self.rollout, &self.refused) {
            (Some(r), _) => {
                let c = self.counts(r.generation);
                (
                    "rolling out",
                    None,
                    c.new_ready,
                    c.old,
                    self.rollout_target(),
                )
            }
            (None, Some(reason)) => ("refused", Some(reason.clone()), 0, 0, 0),
            (None, None) => {
                let live = self.live_of(None);
                ("stable", None, live, 0, live)
            }
        };
        let generations = self
            .gens
            .values()
            .filter(|g| g.is_live() || g.number == newest)
            .map(|g| GenerationStatus {
                number: g.number,
                state: g.state.name().to_string(),
                workers: self.live_of(Some(g.number)),
                rank: ranks[&g.number],
            })
            .collect();
        let status = DeployStatus {
            generation: newest,
            serving: self.serving,
            state: state.into(),
            reason,
            ready,
            old,
            target,
            generations,
            backoff_failures: self.backoff.failures(),
            started: self.started,
        };
        self.pool.deploy.send_if_modified(|s| {
            let changed = *s != status;
            *s = status;
            changed
        });
    }

    // ---- workers -----------------------------------------------------

    fn spawn(&mut self, generation: u32, hard: bool) -> anyhow::Result<()> {
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

    fn spawn_within_budget(&mut self, generation: u32, hard: bool) -> anyhow::Result<()> {
        if self.gens[&generation].cfg.spawn == SpawnMode::Preload {
            return self.spawn_forked(generation, hard);
        }
        let g = self.gens[&generation].clone();
        let id = self.next_id;
        self.next_id += 1;
        let socket = self.sockets.worker_socket(self.index, id);
        let listener = spawn::bind_worker_socket(&socket)?;
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
        })?;
        let events = self.events_tx.clone();
        let handle = process::watch(child, move |status| {
            let _ = events.send(Event::Exited { id, status });
        });
        if let Some(r) = out_read {
            output::forward(r, self.pool.name.clone(), handle.pid);
        }
        self.register_worker(id, generation, handle, socket, hard);
        Ok(())
    }

    /// A started worker: on the scoreboard, warming, and through its gate.
    fn register_worker(
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
                stopping: false,
                signalled: false,
                finish_by: None,
                gate_error: None,
            },
        );
        let events = self.events_tx.clone();
        let cfg = self.gens[&generation].cfg.clone();
        let socket: Arc<std::path::Path> = socket.into();
        tokio::spawn(async move {
            // A hard restart gates on FCGI_GET_VALUES only.
            let ev = match gate::pass(socket, &cfg, !hard).await {
                Ok(conn) => Event::Ready { id, conn },
                Err(e) => Event::GateFailed {
                    id,
                    reason: e.to_string(),
                },
            };
            let _ = events.send(ev);
        });
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
                let (pid, generation) = (p.handle.pid, p.generation);
                tracing::info!(pool = %self.name(), worker = id, pid, generation, "worker ready");
                self.pool.worker_ready(id, conn);
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
                if p.stopping {
                    return;
                }
                p.gate_error = Some(reason);
                self.stop_worker(id, Signal::SIGKILL);
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

    fn on_exit(&mut self, id: WorkerId, status: std::io::Result<std::process::ExitStatus>) {
        use std::os::unix::process::ExitStatusExt;
        let Some(p) = self.procs.remove(&id) else {
            return;
        };
        self.budget.give_back();
        let _ = std::fs::remove_file(&p.socket);
        let entry = self.pool.remove_worker(id);
        let served = entry.as_ref().map_or(0, |e| e.requests);
        let lived = p.started.elapsed();
        let how = process::describe(&status);
        let pid = p.handle.pid;
        if matches!(
            status.as_ref().ok().and_then(|s| s.signal()),
            Some(libc::SIGSEGV | libc::SIGBUS)
        ) {
            let _ = self.reports.send(Report::Crashed);
        }
        if let Some(reason) = &p.gate_error {
            // Killed by us, it hung; else it died on its own before answering.
            let what = if status.as_ref().ok().and_then(|s| s.signal()) == Some(libc::SIGKILL) {
                format!("failed its readiness gate: {reason}")
            } else {
                format!("{how} before it was ready")
            };
            let code = status.as_ref().ok().and_then(|s| s.code());
            let fatal = code.is_some_and(|c| {
                self.gens[&p.generation]
                    .cfg
                    .worker_fatal_exit_codes
                    .contains(&c)
            });
            return self.start_failed(id, pid, p.generation, what, fatal);
        }
        if p.stopping {
            tracing::info!(pool = %self.name(), worker = id, pid, "worker stopped: {how} after {lived:.1?}, {served} requests");
            return;
        }
        let cfg = self.gens[&p.generation].cfg.clone();
        // A worker that served a request works: however soon it ends after
        // (php-cgi recycling itself after PHP_FCGI_MAX_REQUESTS, the OOM
        // killer, an operator's kill -9), that is no sign of a program that
        // cannot start, and holding its respawn back would empty the pool.
        // One that dies young without serving anything is (a SIGSEGV on the
        // first request, every time), and backs the respawns off.
        let failure = p.ready_at.is_none() || (lived < cfg.worker_min_lifetime && served == 0);
        let fatal = status
            .as_ref()
            .ok()
            .and_then(|s| s.code())
            .is_some_and(|c| cfg.worker_fatal_exit_codes.contains(&c));
        if self
            .rollout
            .as_ref()
            .is_some_and(|r| r.generation == p.generation)
            && (failure || fatal)
        {
            tracing::warn!(pool = %self.name(), worker = id, pid, generation = p.generation, "new worker {how} after {lived:.1?}");
            let what = if fatal {
                format!("a new worker {how}, a fatal exit code (worker.fatal_exit_codes)")
            } else {
                format!("a new worker {how}")
            };
            return self.rollout_failed(what, fatal);
        }
        if failure {
            let delay = self.failed("a worker exited early");
            tracing::warn!(pool = %self.name(), worker = id, pid, "worker {how} after {lived:.1?}; respawning in {delay:?}");
        } else {
            tracing::warn!(pool = %self.name(), worker = id, pid, "worker {how} after {lived:.1?}, {served} requests; respawning");
        }
    }

    /// A new worker never became ready: a rollout failure for a rolling
    /// generation, else a failure for the backoff.
    fn start_failed(&mut self, id: WorkerId, pid: u32, generation: u32, what: String, fatal: bool) {
        if self
            .rollout
            .as_ref()
            .is_some_and(|r| r.generation == generation)
        {
            tracing::warn!(pool = %self.name(), worker = id, pid, generation, "new worker {what}");
            let what = if fatal {
                format!("a new worker {what}, a fatal exit code (worker.fatal_exit_codes)")
            } else {
                format!("a new worker {what}")
            };
            self.rollout_failed(what, fatal);
        } else {
            let delay = self.failed("a worker failed to start");
            tracing::warn!(pool = %self.name(), worker = id, pid, "worker {what}; respawning in {delay:?}");
        }
    }

    /// Counts a failure against the pool; returns the respawn delay.
    fn failed(&mut self, why: &str) -> Duration {
        Counters::bump(&self.pool.counters.worker_failures);
        let delay = self.backoff.fail();
        self.next_spawn_at = Instant::now() + delay;
        self.last_failure = why.to_string();
        delay
    }

    fn on_pool_event(&mut self, ev: PoolEvent) {
        match ev {
            PoolEvent::Retire { id, reason } => {
                if let Some(p) = self.procs.get(&id) {
                    tracing::info!(pool = %self.name(), worker = id, pid = p.handle.pid, "retiring worker: {reason}");
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
            PoolEvent::Demand => self.demand = true,
        }
    }

    fn on_command(&mut self, cmd: Command) {
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
                    self.start_rollout(cfg, Kind::Graceful).map(Some)
                };
                let _ = reply.send(result);
            }
            Command::HardRestart { batch, reply } => {
                let cfg = self.pool.config();
                let _ = reply.send(self.start_rollout(cfg, Kind::Hard { batch }));
            }
            Command::Scale { delta } => {
                self.scaler.adjust += delta;
                let max = self.scaler.max_children(&self.serving_gen().cfg);
                tracing::info!(pool = %self.name(), "scaled to {max} workers at most");
            }
            Command::ScaleTo { workers } => {
                self.scaler.adjust = workers as i64 - self.serving_gen().cfg.max_children as i64;
                tracing::info!(pool = %self.name(), "scaled to {workers} workers");
            }
            Command::StopGraceful => self.stop_all(true),
            Command::StopFast => self.stop_all(false),
        }
        self.next_tick = Instant::now();
    }

    fn stop_all(&mut self, graceful: bool) {
        self.stopping = true;
        let ids: Vec<WorkerId> = self.procs.keys().copied().collect();
        let signal = self.stop_signal();
        for id in ids {
            if !graceful || self.pool.retire(id) {
                self.stop_worker(id, signal);
            }
        }
    }

    fn stop_signal(&self) -> Signal {
        Signal::try_from(self.serving_gen().cfg.worker_stop_signal).unwrap_or(Signal::SIGTERM)
    }

    /// Stops routing to a worker; it is stopped now if idle, else when its
    /// request ends (the router hands it back with `PoolEvent::Retire`).
    fn retire_worker(&mut self, id: WorkerId, why: &str) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        if self.pool.retire(id) {
            tracing::info!(pool = %self.pool.name, worker = id, pid = p.handle.pid, "retiring idle worker: {why}");
            self.stop_worker(id, self.stop_signal());
        } else {
            tracing::info!(pool = %self.pool.name, worker = id, pid = p.handle.pid, "retiring worker after its current request: {why}");
            // Counted as leaving now, so a replacement may start.
            p.stopping = true;
            p.finish_by = Some(Instant::now() + self.control_timeout);
        }
    }

    /// Takes a worker out of routing and signals it; SIGKILL follows after
    /// `worker.kill_timeout` if it is still there.
    fn stop_worker(&mut self, id: WorkerId, signal: Signal) {
        self.pool.retire(id);
        let grace = self.serving_gen().cfg.worker_kill_timeout;
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        if p.signalled && signal != Signal::SIGKILL {
            return;
        }
        p.stopping = true;
        p.signalled = true;
        p.finish_by = None;
        p.handle.send(ProcessCommand::Stop { signal, grace });
    }
}
