//! Deploys: a rollout of a new generation beside the serving one (each
//! new worker through its gate retires one old worker), its end, its
//! refusal, the dispatch ranks of generations, and what the pool publishes
//! about it for status and `herd ctl`.

use std::sync::Arc;
use std::time::Instant;

use nix::sys::signal::Signal;

use super::Supervisor;
use super::generation::{self, GenState, Generation};
use super::rollout::{self, Counts, Kind, Refusal, Rollout};
use crate::config::PoolConfig;
use crate::pool::{DeployState, DeployStatus, GenerationStatus, WorkerId};

impl Supervisor {
    pub(super) fn counts(&self, generation: u32) -> Counts {
        let mut c = Counts::default();
        for p in self.procs.values().filter(|p| !p.life.leaving()) {
            match (p.generation == generation, p.ready_at.is_some()) {
                (true, true) => c.new_ready += 1,
                (true, false) => c.new_warming += 1,
                (false, _) => c.old += 1,
            }
        }
        c.new_warming += self.forking_of(Some(generation));
        c
    }

    pub(super) fn maintain_rollout(&mut self, now: Instant) {
        let r = self.rollout.clone().expect("rolling");
        if let Some(refusal) = r.timed_out(now) {
            return self.refuse(refusal);
        }
        let mut c = self.counts(r.generation);
        c.target = self.rollout_target();
        if r.done(c) {
            return self.finish_rollout();
        }
        for _ in 0..r.surplus_old(c) {
            let old = self.candidates(|p| p.generation != r.generation);
            let Some(id) = rollout::pick_retiree(&old) else {
                break;
            };
            self.retire_worker(id, "the new generation is at full size");
        }
        let stopping_old = self
            .procs
            .values()
            .filter(|p| p.life.leaving() && p.generation != r.generation)
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
    pub(super) fn rollout_target(&self) -> usize {
        self.rollout.as_ref().expect("rolling").target
    }

    /// Starts rolling out `cfg` as the next generation.
    pub(super) fn start_rollout(
        &mut self,
        cfg: Arc<PoolConfig>,
        kind: Kind,
    ) -> anyhow::Result<u32> {
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
                    p.generation == old.generation && p.ready_at.is_none() && !p.life.leaving()
                })
                .map(|(id, _)| *id)
                .collect();
            for id in warming {
                self.stop_worker(id, Signal::SIGKILL);
            }
            tracing::warn!(pool = %self.name(), "generation {} superseded by {number} before its rollout finished", old.generation);
        }
        let live = crate::pool::Load {
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
    pub(super) fn rollout_progress(&mut self) {
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

    pub(super) fn rollout_failed(&mut self, what: String, fatal: bool) {
        let Some(r) = self.rollout.as_mut() else {
            return;
        };
        if let Some(refusal) = r.failed(what, fatal) {
            self.refuse(refusal);
        }
    }

    pub(super) fn finish_rollout(&mut self) {
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
    pub(super) fn refuse(&mut self, refusal: Refusal) {
        let r = self.rollout.take().expect("rolling");
        let reason = refusal.to_string();
        tracing::error!(pool = %self.name(), generation = r.generation, "deploy refused: {reason}; generation {} keeps serving", self.serving);
        if let Some(g) = self.gens.get_mut(&r.generation) {
            g.state = GenState::Refused(reason.clone());
        }
        let doomed: Vec<WorkerId> = self
            .procs
            .iter()
            .filter(|(_, p)| p.generation != self.serving && !p.life.leaving())
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

    pub(super) fn update_ranks(&mut self) {
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
    pub(super) fn publish(&mut self) {
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
                .any(|p| p.ready_at.is_none() && !p.life.leaving())
                || !self.forking.is_empty();
            self.started = !warming && load.idle + load.busy >= want;
        }
        let newest = self.gens.keys().max().copied().unwrap_or(1);
        let ranks = generation::ranks(&self.gens);
        let (state, reason, ready, old, target) = match (&self.rollout, &self.refused) {
            (Some(r), _) => {
                let c = self.counts(r.generation);
                (
                    DeployState::RollingOut,
                    None,
                    c.new_ready,
                    c.old,
                    self.rollout_target(),
                )
            }
            (None, Some(reason)) => (DeployState::Refused, Some(reason.clone()), 0, 0, 0),
            (None, None) => {
                let live = self.live_of(None);
                (DeployState::Stable, None, live, 0, live)
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
            state,
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
}
