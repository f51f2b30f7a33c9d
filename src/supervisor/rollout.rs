//! A rollout: replacing a pool's workers with a new generation without
//! ever dropping below the pool's size, and refusing the new generation
//! when it cannot serve. Plain state and synchronous decisions; the
//! supervisor does the spawning and signalling.
//!
//! New workers start at most `rollout.surge` beyond the pool size at a
//! time. Each one that passes the readiness gate retires one old worker
//! (idle ones first, the youngest idle first, so the warm ones leave last).
//! `rollout.max_failures` failed starts, a fatal exit code, or
//! `rollout.timeout` refuse the generation: its workers stop and the old
//! generation is brought back to full size.

use std::time::{Duration, Instant};

use crate::pool::WorkerId;

/// How a rollout was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `SIGUSR2`, `SIGHUP`, `herd ctl reload`: the safe path.
    Graceful,
    /// `herd ctl restart --hard`: old workers are stopped at once (or
    /// `batch` at a time) and new ones started without waiting.
    Hard { batch: Option<usize> },
}

#[derive(Clone, Debug)]
pub struct Rollout {
    /// The pool's size when the rollout started: what it replaces.
    pub target: usize,
    pub generation: u32,
    pub kind: Kind,
    pub started: Instant,
    pub deadline: Instant,
    pub failures: u32,
    pub max_failures: u32,
    pub surge: usize,
}

/// Worker counts the decisions need, of live workers (not stopping).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Workers of older generations still serving or starting.
    pub old: usize,
    /// New-generation workers through the gate.
    pub new_ready: usize,
    /// New-generation workers still starting.
    pub new_warming: usize,
    /// The pool's size.
    pub target: usize,
}

/// Why a generation was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    Failures { count: u32, last: String },
    Fatal { reason: String },
    Timeout(Duration),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Failures { count, last } => {
                write!(f, "{count} new workers failed (last: {last})")
            }
            Refusal::Fatal { reason } => write!(f, "{reason}"),
            Refusal::Timeout(t) => write!(f, "rollout.timeout ({t:?}) passed"),
        }
    }
}

impl Rollout {
    pub fn new(
        target: usize,
        generation: u32,
        kind: Kind,
        surge: u32,
        max_failures: u32,
        timeout: Duration,
        now: Instant,
    ) -> Rollout {
        Rollout {
            target,
            generation,
            kind,
            started: now,
            deadline: now + timeout,
            failures: 0,
            max_failures: max_failures.max(1),
            surge: surge.max(1) as usize,
        }
    }

    /// How many new workers to start now.
    pub fn spawns_wanted(&self, c: Counts) -> usize {
        let new = c.new_ready + c.new_warming;
        let missing = c.target.saturating_sub(new);
        match self.kind {
            Kind::Hard { .. } => missing,
            Kind::Graceful => {
                // Surge: new workers still starting, and processes beyond
                // the pool's size, are each bounded by `rollout.surge`. A
                // pool that shrinks counts its old size until the new
                // generation is ready to take over.
                let room_warming = self.surge.saturating_sub(c.new_warming);
                let size = c.target.max(c.old);
                let room_total = (size + self.surge).saturating_sub(c.old + new);
                missing.min(room_warming).min(room_total)
            }
        }
    }

    /// How many old workers to stop now, in a hard restart: all of them, or
    /// one batch at a time as new ones come up.
    pub fn hard_stops_wanted(&self, c: Counts, stopping_old: usize) -> usize {
        match self.kind {
            Kind::Graceful => 0,
            Kind::Hard { batch: None } => c.old,
            Kind::Hard { batch: Some(n) } => {
                // The next batch goes once the previous one has been replaced.
                if stopping_old == 0 && c.new_warming == 0 {
                    c.old.min(n.max(1))
                } else {
                    0
                }
            }
        }
    }

    /// A new worker failed its gate or exited early; `fatal` when its exit
    /// code says a retry cannot help.
    pub fn failed(&mut self, what: String, fatal: bool) -> Option<Refusal> {
        self.failures += 1;
        if fatal {
            return Some(Refusal::Fatal { reason: what });
        }
        (self.failures >= self.max_failures).then_some(Refusal::Failures {
            count: self.failures,
            last: what,
        })
    }

    /// Old workers to retire beyond the one each new worker replaces:
    /// once the new generation is at full size, every old one left. A
    /// reload that lowers `pm.max_children` has more old workers than new
    /// ones; without this they stayed until `rollout.timeout` refused it.
    pub fn surplus_old(&self, c: Counts) -> usize {
        if c.new_ready >= c.target { c.old } else { 0 }
    }

    pub fn timed_out(&self, now: Instant) -> Option<Refusal> {
        (now >= self.deadline).then(|| Refusal::Timeout(self.deadline - self.started))
    }

    /// Every old worker is gone and the new generation is at full size.
    pub fn done(&self, c: Counts) -> bool {
        c.old == 0 && c.new_ready >= c.target
    }
}

/// An old worker, as the choice of whom to retire sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: WorkerId,
    pub idle: bool,
}

/// The old worker to retire when a new one passed its gate: an idle one
/// before a busy one (nothing is cut short), and among them the youngest
/// (the oldest have the warmest caches and leave last).
pub fn pick_retiree(old: &[Candidate]) -> Option<WorkerId> {
    old.iter()
        .filter(|c| c.idle)
        .map(|c| c.id)
        .max()
        .or_else(|| old.iter().map(|c| c.id).max())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graceful(surge: u32) -> Rollout {
        Rollout::new(
            4,
            2,
            Kind::Graceful,
            surge,
            3,
            Duration::from_secs(60),
            Instant::now(),
        )
    }

    #[test]
    fn graceful_rollout_stays_within_the_surge() {
        let r = graceful(2);
        let c = |old, new_ready, new_warming| Counts {
            old,
            new_ready,
            new_warming,
            target: 8,
        };
        assert_eq!(r.spawns_wanted(c(8, 0, 0)), 2);
        assert_eq!(r.spawns_wanted(c(8, 0, 2)), 0, "two already starting");
        // One passed its gate and retired an old worker: one more may start.
        assert_eq!(r.spawns_wanted(c(7, 1, 1)), 1);
        assert_eq!(r.spawns_wanted(c(1, 7, 0)), 1);
        assert_eq!(r.spawns_wanted(c(0, 8, 0)), 0);
        assert!(r.done(c(0, 8, 0)));
        assert_eq!(r.surplus_old(c(1, 7, 1)), 0, "replaced one for one");
        assert!(!r.done(c(1, 8, 0)));
    }

    #[test]
    fn capacity_never_drops_because_old_workers_leave_only_for_ready_new_ones() {
        // Simulate: each ready new worker retires one old one.
        let r = graceful(1);
        let mut c = Counts {
            old: 4,
            new_ready: 0,
            new_warming: 0,
            target: 4,
        };
        for _ in 0..10 {
            let n = r.spawns_wanted(c);
            c.new_warming += n;
            assert!(c.old + c.new_ready + c.new_warming <= 5);
            if c.new_warming > 0 {
                c.new_warming -= 1;
                c.new_ready += 1;
                if c.old > 0 {
                    c.old -= 1;
                }
            }
            assert!(c.old + c.new_ready >= 4, "serving capacity {c:?}");
        }
        assert!(r.done(c));
    }

    #[test]
    fn failures_refuse_after_the_limit_and_fatal_codes_at_once() {
        let mut r = graceful(1);
        assert_eq!(r.failed("gate".into(), false), None);
        assert_eq!(r.failed("gate".into(), false), None);
        assert!(matches!(
            r.failed("exit 1".into(), false),
            Some(Refusal::Failures { count: 3, .. })
        ));
        let mut r = graceful(1);
        assert!(matches!(
            r.failed("exited with code 3".into(), true),
            Some(Refusal::Fatal { .. })
        ));
    }

    #[test]
    fn times_out() {
        let now = Instant::now();
        let r = Rollout::new(4, 2, Kind::Graceful, 1, 3, Duration::from_secs(5), now);
        assert_eq!(r.timed_out(now + Duration::from_secs(1)), None);
        assert!(r.timed_out(now + Duration::from_secs(5)).is_some());
    }

    #[test]
    fn hard_restart_starts_everything_and_stops_old_in_batches() {
        let now = Instant::now();
        let all = Rollout::new(
            4,
            2,
            Kind::Hard { batch: None },
            1,
            3,
            Duration::from_secs(60),
            now,
        );
        let c = Counts {
            old: 4,
            new_ready: 0,
            new_warming: 0,
            target: 4,
        };
        assert_eq!(all.spawns_wanted(c), 4);
        assert_eq!(all.hard_stops_wanted(c, 0), 4);
        let batched = Rollout::new(
            4,
            2,
            Kind::Hard { batch: Some(2) },
            1,
            3,
            Duration::from_secs(60),
            now,
        );
        assert_eq!(batched.hard_stops_wanted(c, 0), 2);
        assert_eq!(
            batched.hard_stops_wanted(c, 2),
            0,
            "previous batch still exiting"
        );
    }

    #[test]
    fn retiree_is_the_youngest_idle_else_the_youngest() {
        let c = |id, idle| Candidate { id, idle };
        assert_eq!(
            pick_retiree(&[c(1, true), c(3, true), c(4, false)]),
            Some(3)
        );
        assert_eq!(pick_retiree(&[c(1, false), c(2, false)]), Some(2));
        assert_eq!(pick_retiree(&[]), None);
    }

    #[test]
    fn a_rollout_to_a_smaller_pool_retires_the_old_workers_left_over() {
        let r = graceful(1);
        let c = |old, new_ready| Counts {
            old,
            new_ready,
            new_warming: 0,
            target: 1,
        };
        // Four old workers, the new generation's size is one.
        assert_eq!(r.spawns_wanted(c(4, 0)), 1);
        assert_eq!(
            r.surplus_old(c(4, 0)),
            0,
            "nothing leaves before the new one is ready"
        );
        // The new one passed its gate and replaced one old worker.
        assert_eq!(r.surplus_old(c(3, 1)), 3);
        assert!(!r.done(c(3, 1)));
        assert!(r.done(c(0, 1)));
    }
}
