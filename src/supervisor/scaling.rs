//! How many workers a pool should have: php-fpm's `pm = static | dynamic |
//! ondemand`, decided from counts so it is tested without processes.
//!
//! Two departures from php-fpm, both fixes of its known failures: requests
//! waiting in herd's queue count as missing idle workers, so a burst is met
//! at once instead of by one or two forks a second (php-src #69724); and the
//! youngest idle worker is the one stopped, so the warm ones stay.

use std::time::{Duration, Instant};

use crate::config::{PmMode, PoolConfig};
use crate::pool::{IdleWorker, Load, WorkerId};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Spawn(usize),
    /// Stop these idle workers.
    Reap(Vec<WorkerId>),
    Nothing,
}

/// The per-pool state php-fpm's dynamic mode keeps between ticks.
#[derive(Clone, Debug)]
pub struct Scaler {
    /// Workers a dynamic pool may start in one step; doubles while the
    /// pool stays short of idle workers, up to `pm.max_spawn_rate`.
    rate: usize,
    /// The pool is at its limit and still short; counted once per episode.
    limited: bool,
    /// `pm.max_children` set at run time, if it differs from the file's.
    scaled: Option<Scaled>,
    /// A dynamic pool has reached `pm.start_servers` once.
    started: bool,
}

/// `pm.max_children` set at run time (`herd ctl scale`, SIGTTIN/SIGTTOU),
/// in the file's unit: PHP processes for a pool of groups. It is one
/// absolute value, not a delta on the file's: a reload that changes the
/// file's `pm.max_children` must mean what the file says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scaled {
    pub max_children: u32,
    /// The file's `pm.max_children` when it was set.
    pub file: u32,
}

impl Default for Scaler {
    fn default() -> Self {
        Scaler {
            rate: 1,
            limited: false,
            scaled: None,
            started: false,
        }
    }
}

impl Scaler {
    /// `pm.max_children` in force: set at run time, else the file's.
    pub fn setting(&self, cfg: &PoolConfig) -> u32 {
        self.scaled.map_or(cfg.max_children, |s| s.max_children)
    }

    /// `pm.max_children` set at run time, if any.
    pub fn scaled(&self) -> Option<Scaled> {
        self.scaled
    }

    /// The most workers the pool may have: `pm.max_children` in force, in
    /// groups for a pool of PHP groups.
    pub fn max_children(&self, cfg: &PoolConfig) -> usize {
        let n = self.setting(cfg).max(1);
        match &cfg.php_group {
            Some(g) => n.div_ceil(g.size.max(1)) as usize,
            None => n as usize,
        }
    }

    /// Sets `pm.max_children` at run time; the file's own value clears
    /// the setting.
    pub fn set(&mut self, cfg: &PoolConfig, max_children: u32) {
        self.scaled = (max_children != cfg.max_children).then_some(Scaled {
            max_children,
            file: cfg.max_children,
        });
    }

    /// SIGTTIN/SIGTTOU: one worker more or fewer (for a pool of groups, a
    /// group of PHP processes), never fewer than one.
    pub fn step_by(&mut self, cfg: &PoolConfig, delta: i64) {
        let unit = cfg.php_group.as_ref().map_or(1, |g| g.size.max(1));
        let workers = (self.max_children(cfg) as i64 + delta).max(1) as u32;
        self.set(cfg, workers.saturating_mul(unit));
    }

    /// A reload to `cfg`: the run-time setting stays unless the file's
    /// `pm.max_children` changed, which wins; returns a setting dropped.
    pub fn reloaded(&mut self, cfg: &PoolConfig) -> Option<Scaled> {
        match self.scaled {
            Some(s) if s.file != cfg.max_children => self.scaled.take(),
            _ => None,
        }
    }

    /// The size a rollout replaces, and a static pool keeps.
    pub fn target(&self, cfg: &PoolConfig, load: Load) -> usize {
        match cfg.pm {
            PmMode::Static => self.max_children(cfg),
            PmMode::Dynamic => load
                .total()
                .max(cfg.start_servers as usize)
                .min(self.max_children(cfg)),
            PmMode::Ondemand => load.total().min(self.max_children(cfg)),
        }
    }

    /// One step: start workers, stop one, or nothing. Returns the step and
    /// whether the pool just hit `pm.max_children` while short of workers.
    pub fn step(
        &mut self,
        cfg: &PoolConfig,
        load: Load,
        idle: &[IdleWorker],
        now: Instant,
    ) -> (Step, bool) {
        let max = self.max_children(cfg);
        match cfg.pm {
            PmMode::Static => {
                let n = max.saturating_sub(load.total());
                (if n > 0 { Step::Spawn(n) } else { Step::Nothing }, false)
            }
            PmMode::Ondemand => self.ondemand(cfg, load, idle, now, max),
            PmMode::Dynamic => self.dynamic(cfg, load, idle, max),
        }
    }

    fn dynamic(
        &mut self,
        cfg: &PoolConfig,
        load: Load,
        idle: &[IdleWorker],
        max: usize,
    ) -> (Step, bool) {
        let min_spare = cfg.min_spare_servers as usize;
        let max_spare = cfg.max_spare_servers as usize;
        // At start, php-fpm forks pm.start_servers at once.
        if !self.started {
            let start = (cfg.start_servers as usize).min(max);
            if load.total() < start {
                return (Step::Spawn(start - load.total()), false);
            }
            self.started = true;
        }
        // Idle workers a request is already waiting for do not count.
        let spare = (load.idle + load.warming).saturating_sub(load.queued);
        if load.idle > max_spare && load.queued == 0 {
            self.rate = 1;
            // One a step, as php-fpm does: the pool shrinks gradually.
            return (
                youngest(idle).map_or(Step::Nothing, |id| Step::Reap(vec![id])),
                false,
            );
        }
        if spare >= min_spare && load.queued == 0 {
            self.rate = 1;
            self.limited = false;
            return (Step::Nothing, false);
        }
        if load.total() >= max {
            self.rate = 1;
            let first = !self.limited;
            self.limited = true;
            return (Step::Nothing, first);
        }
        let room = max - load.total();
        let cap = cfg.max_spawn_rate.max(1) as usize;
        let waiting = load.queued.saturating_sub(load.warming);
        // Requests already waiting are met at once (up to the spawn rate
        // cap); a shortfall of spare workers alone grows as php-fpm does,
        // doubling from one per second.
        let n = if waiting > 0 {
            waiting.min(cap)
        } else {
            min_spare.saturating_sub(spare).min(self.rate)
        }
        .min(room);
        self.rate = (self.rate * 2).min(cap);
        (if n > 0 { Step::Spawn(n) } else { Step::Nothing }, false)
    }

    fn ondemand(
        &mut self,
        cfg: &PoolConfig,
        load: Load,
        idle: &[IdleWorker],
        now: Instant,
        max: usize,
    ) -> (Step, bool) {
        let waiting = load.queued.saturating_sub(load.warming);
        if waiting > 0 {
            if load.total() >= max {
                let first = !self.limited;
                self.limited = true;
                return (Step::Nothing, first);
            }
            return (Step::Spawn(waiting.min(max - load.total())), false);
        }
        self.limited = false;
        // Every worker idle past the timeout goes (php-fpm stops one a
        // second, so a large pool takes minutes to shrink).
        let stale: Vec<WorkerId> = idle
            .iter()
            .filter(|w| now.duration_since(w.since) >= cfg.process_idle_timeout)
            .map(|w| w.id)
            .collect();
        (
            if stale.is_empty() {
                Step::Nothing
            } else {
                Step::Reap(stale)
            },
            false,
        )
    }

    /// When the next idle worker of an ondemand pool times out.
    pub fn next_idle_timeout(&self, cfg: &PoolConfig, idle: &[IdleWorker]) -> Option<Instant> {
        (cfg.pm == PmMode::Ondemand)
            .then(|| {
                idle.iter()
                    .map(|w| w.since + cfg.process_idle_timeout)
                    .min()
            })
            .flatten()
    }
}

fn youngest(idle: &[IdleWorker]) -> Option<WorkerId> {
    idle.iter().map(|w| w.id).max()
}

/// php-fpm's dynamic maintenance runs once a second.
pub const TICK: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    fn pool(pm: &str) -> PoolConfig {
        let text = format!(
            "[p]\nlisten = 127.0.0.1:1\ncommand = herd\nuser = nobody\npm.max_children = 10\n{pm}\n"
        );
        let doc = parse_str(&text, std::path::Path::new("/x.conf"), &Default::default());
        // Dynamic and ondemand may still be refused by this build's gate;
        // build the config directly in that case.
        match doc {
            Ok(c) => c.pools[0].clone(),
            Err(e) => panic!("{e}"),
        }
    }

    fn idle(ids: &[u64], since: Instant) -> Vec<IdleWorker> {
        ids.iter().map(|id| IdleWorker { id: *id, since }).collect()
    }

    #[test]
    fn static_fills_to_max_children_and_follows_the_run_time_setting() {
        let cfg = pool("pm = static");
        let mut s = Scaler::default();
        let now = Instant::now();
        assert_eq!(
            s.step(
                &cfg,
                Load {
                    idle: 7,
                    ..Load::default()
                },
                &[],
                now
            )
            .0,
            Step::Spawn(3)
        );
        s.set(&cfg, 8);
        assert_eq!(s.target(&cfg, Load::default()), 8);
        s.step_by(&cfg, 1);
        assert_eq!(s.setting(&cfg), 9);
        s.set(&cfg, 10);
        assert_eq!(s.scaled(), None, "the file's own value is no override");
    }

    #[test]
    fn a_reload_keeps_the_run_time_setting_unless_the_file_changed_it() {
        let four = PoolConfig {
            max_children: 4,
            ..pool("pm = static")
        };
        let mut s = Scaler::default();
        s.set(&four, 6);
        // `reload --force`, or any other change: 6 stays, and SIGTTIN
        // counts from it (not from the file).
        assert_eq!(s.reloaded(&four), None);
        s.step_by(&four, 1);
        assert_eq!(s.setting(&four), 7);
        // The file now says 8: the file wins, whatever was set.
        let eight = PoolConfig {
            max_children: 8,
            ..four.clone()
        };
        let dropped = s.reloaded(&eight).expect("dropped");
        assert_eq!((dropped.max_children, dropped.file), (7, 4));
        assert_eq!(s.setting(&eight), 8);
        assert_eq!(s.max_children(&eight), 8);
    }

    #[test]
    fn a_pool_of_groups_scales_in_php_processes_and_steps_by_a_group() {
        let base = pool("pm = static");
        let cfg = PoolConfig {
            max_children: 8,
            php_group: Some(crate::config::Group {
                engine: crate::config::PhpEngine::Fpm,
                size: 4,
                pm: PmMode::Static,
            }),
            ..base
        };
        let mut s = Scaler::default();
        assert_eq!(s.max_children(&cfg), 2);
        s.set(&cfg, 10);
        assert_eq!(
            s.max_children(&cfg),
            3,
            "10 PHP processes need 3 groups of 4"
        );
        s.step_by(&cfg, -1);
        assert_eq!((s.setting(&cfg), s.max_children(&cfg)), (8, 2));
        assert_eq!(s.scaled(), None);
    }

    #[test]
    fn dynamic_doubles_its_spawn_rate_and_reaps_the_youngest() {
        let cfg = pool(
            "pm = dynamic\npm.min_spare_servers = 4\npm.max_spare_servers = 6\npm.max_spawn_rate = 4",
        );
        let mut s = Scaler::default();
        let now = Instant::now();
        // pm.start_servers (default 5 here) first.
        assert_eq!(s.step(&cfg, Load::default(), &[], now).0, Step::Spawn(5));
        let started = Load {
            idle: 5,
            ..Load::default()
        };
        assert_eq!(s.step(&cfg, started, &[], now).0, Step::Nothing);
        let short = Load {
            idle: 0,
            busy: 2,
            ..Load::default()
        };
        assert_eq!(s.step(&cfg, short, &[], now).0, Step::Spawn(1));
        assert_eq!(s.step(&cfg, short, &[], now).0, Step::Spawn(2));
        assert_eq!(s.step(&cfg, short, &[], now).0, Step::Spawn(4));
        assert_eq!(
            s.step(&cfg, short, &[], now).0,
            Step::Spawn(4),
            "capped by max_spawn_rate and the shortfall"
        );
        let surplus = Load {
            idle: 8,
            ..Load::default()
        };
        assert_eq!(
            s.step(&cfg, surplus, &idle(&[3, 9, 5], now), now).0,
            Step::Reap(vec![9])
        );
    }

    #[test]
    fn dynamic_meets_queued_requests_and_notes_the_limit_once() {
        let cfg = pool(
            "pm = dynamic\npm.min_spare_servers = 1\npm.max_spare_servers = 3\npm.max_spawn_rate = 32",
        );
        let mut s = Scaler {
            started: true,
            ..Scaler::default()
        };
        let now = Instant::now();
        let burst = Load {
            idle: 0,
            busy: 2,
            warming: 0,
            queued: 6,
        };
        // Six requests wait: six workers at once, not 1, 2, 4...
        assert_eq!(s.step(&cfg, burst, &[], now).0, Step::Spawn(6));
        let starting = Load {
            warming: 6,
            ..burst
        };
        // While they start, only the one spare worker min_spare asks for.
        assert_eq!(s.step(&cfg, starting, &[], now).0, Step::Spawn(1));
        let full = Load {
            idle: 0,
            busy: 10,
            warming: 0,
            queued: 3,
        };
        assert_eq!(s.step(&cfg, full, &[], now), (Step::Nothing, true));
        assert_eq!(s.step(&cfg, full, &[], now), (Step::Nothing, false));
    }

    #[test]
    fn ondemand_spawns_for_every_waiting_request_and_reaps_after_the_idle_timeout() {
        let cfg = pool("pm = ondemand\npm.process_idle_timeout = 10s");
        let mut s = Scaler::default();
        let now = Instant::now();
        let burst = Load {
            idle: 0,
            busy: 0,
            warming: 2,
            queued: 30,
        };
        assert_eq!(s.step(&cfg, burst, &[], now).0, Step::Spawn(10 - 2));
        let old = now - Duration::from_secs(11);
        let quiet = Load {
            idle: 3,
            ..Load::default()
        };
        let workers = [
            IdleWorker { id: 1, since: old },
            IdleWorker { id: 2, since: now },
            IdleWorker { id: 3, since: old },
        ];
        assert_eq!(s.step(&cfg, quiet, &workers, now).0, Step::Reap(vec![1, 3]));
        assert_eq!(
            s.next_idle_timeout(&cfg, &workers),
            Some(old + Duration::from_secs(10))
        );
    }
}
