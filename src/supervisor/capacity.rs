//! Keeping a pool at its size: php-fpm's process manager steps for the
//! serving generation, shedding after a scale-down, `worker.max_memory`,
//! the grace of a busy retiring worker, forgiving failures after a healthy
//! spell, and telling the router when no worker can come.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::Supervisor;
use super::rollout::{self, Candidate};
use super::scaling::{self, Step};
use super::workers::Proc;
use crate::config::{PmMode, PoolConfig};
use crate::pool::{Counters, WorkerId};

/// A change of `pm.max_children` at run time.
#[derive(Clone, Copy, Debug)]
pub(super) enum Rescale {
    /// `herd ctl scale POOL N`.
    To(u32),
    /// SIGTTIN (+1) or SIGTTOU (-1): a worker more or fewer.
    By(i64),
}

impl Supervisor {
    /// `worker.max_memory`: a worker grown past it is retired after its
    /// current request and replaced (uWSGI's reload-on-rss), checked once a
    /// second.
    pub(super) fn check_memory(&mut self, now: Instant) {
        if now < self.next_memory_check {
            return;
        }
        self.next_memory_check = now + scaling::TICK;
        let over: Vec<(WorkerId, u32, u64, u64)> = self
            .procs
            .iter()
            .filter(|(_, p)| !p.life.leaving() && p.ready_at.is_some())
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
    pub(super) fn enforce_finish_by(&mut self, now: Instant) {
        let late: Vec<WorkerId> = self
            .procs
            .iter()
            .filter(|(_, p)| p.life.finish_by().is_some_and(|t| now >= t))
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            tracing::warn!(pool = %self.name(), worker = id, "retiring worker still busy after process_control_timeout; stopping it");
            self.stop_worker(id, Signal::SIGTERM);
        }
    }

    /// Past failures are forgiven once a worker has stayed up for
    /// `worker.min_lifetime`.
    pub(super) fn forgive_failures(&mut self, now: Instant) {
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
    pub(super) fn update_availability(&mut self, now: Instant) {
        let up = self.procs.values().any(|p| !p.life.leaving()) || !self.forking.is_empty();
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
    pub(super) fn scale(&mut self, now: Instant) {
        let cfg = self.serving_gen().cfg.clone();
        let (mut load, idle) = self.pool.load();
        // Workers started but not yet on the scoreboard's warming count.
        load.warming = self
            .procs
            .values()
            .filter(|p| !p.life.leaving() && p.ready_at.is_none())
            .count()
            + self.forking_of(None);
        let (step, limited) = self.scaler.step(&cfg, load, &idle, now);
        if limited {
            Counters::bump(&self.pool.counters.max_children_reached);
            tracing::warn!(pool = %self.name(), "server reached pm.max_children setting ({}), consider raising it", self.scaler.setting(&cfg));
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

    /// `herd ctl scale` and SIGTTIN/SIGTTOU: `pm.max_children` set at run
    /// time. Returns what it now means for this pool, as logged.
    pub(super) fn rescale(&mut self, how: Rescale) -> String {
        let cfg = self.pool.config();
        let before = self.scaler.setting(&cfg);
        match how {
            Rescale::To(n) => self.scaler.set(&cfg, n),
            Rescale::By(delta) => self.scaler.step_by(&cfg, delta),
        }
        self.publish_scale();
        let said = self.describe_scale(&cfg, before);
        tracing::info!(pool = %self.name(), "{said}");
        said
    }

    /// A reload to `cfg` keeps `pm.max_children` set at run time, unless
    /// the file's own value changed: then the file wins.
    pub(super) fn reload_scale(&mut self, cfg: &PoolConfig) {
        if let Some(dropped) = self.scaler.reloaded(cfg) {
            tracing::info!(pool = %self.name(), "pm.max_children changed in the config file ({} to {}): the run-time value {} no longer applies", dropped.file, cfg.max_children, dropped.max_children);
        } else if let Some(kept) = self.scaler.scaled() {
            tracing::info!(pool = %self.name(), "keeping pm.max_children {} set at run time (the config file says {})", kept.max_children, cfg.max_children);
        }
        self.publish_scale();
    }

    fn publish_scale(&self) {
        let scaled = self.scaler.scaled().map(|s| s.max_children);
        self.pool.set_scaled_max_children(scaled);
    }

    /// What `pm.max_children` means for this pool now, in one answer.
    fn describe_scale(&self, cfg: &PoolConfig, before: u32) -> String {
        let now = self.scaler.setting(cfg);
        let change = if now == before {
            format!("pm.max_children stays {now}")
        } else {
            format!("pm.max_children is now {now} (was {before})")
        };
        let max = self.scaler.max_children(cfg);
        let (unit, of) = match &cfg.php_group {
            Some(g) if g.pm != PmMode::Static => (
                "groups",
                format!(
                    " of up to {} PHP processes (php-fpm's pm = {} within each)",
                    g.size,
                    g.pm.as_str()
                ),
            ),
            Some(g) => ("groups", format!(" of {} PHP processes", g.size)),
            None => ("workers", String::new()),
        };
        let meaning = match cfg.pm {
            PmMode::Static => format!("a static pool keeps {max} {unit}{of}"),
            PmMode::Dynamic => format!(
                "a dynamic pool runs at most {max} {unit}{of}, keeping {} to {} idle",
                cfg.min_spare_servers, cfg.max_spare_servers
            ),
            PmMode::Ondemand => {
                format!("an ondemand pool starts {unit}{of} for waiting requests, at most {max}")
            }
        };
        let origin = match self.scaler.scaled() {
            Some(_) => format!(
                " Set at run time: the config file says {}, and a reload keeps {now} until the file's pm.max_children changes.",
                cfg.max_children
            ),
            None => " That is the config file's value.".into(),
        };
        format!("{change}: {meaning}, {} now.{origin}", self.live_of(None))
    }

    /// Stops `n` workers, idle and youngest first.
    pub(super) fn shed(&mut self, n: usize) {
        for _ in 0..n {
            let candidates = self.candidates(|_| true);
            let Some(id) = rollout::pick_retiree(&candidates) else {
                return;
            };
            self.retire_worker(id, "the pool was scaled down");
        }
    }

    /// Live (not stopping) workers, of one generation or all.
    pub(super) fn live_of(&self, generation: Option<u32>) -> usize {
        let procs = self
            .procs
            .values()
            .filter(|p| !p.life.leaving() && generation.is_none_or(|g| p.generation == g))
            .count();
        procs + self.forking_of(generation)
    }

    pub(super) fn candidates(&self, of: impl Fn(&Proc) -> bool) -> Vec<Candidate> {
        self.procs
            .iter()
            .filter(|(_, p)| !p.life.leaving() && of(p))
            .map(|(id, _)| Candidate {
                id: *id,
                idle: self.pool.is_idle(*id),
            })
            .collect()
    }
}
