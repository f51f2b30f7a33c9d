//! A worker's exit: what it means (stopped by herd, never ready, died
//! young, or ended after serving) is decided by [`classify`], a pure
//! function; the supervisor then counts the failure, refuses a rollout or
//! respawns.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use super::workers::Life;
use super::{Report, Supervisor};
use super::{output, process};
use crate::pool::{Counters, WorkerId};

/// What is known about a worker when its exit is reaped.
#[derive(Clone, Copy, Debug)]
pub(super) struct ExitFacts<'a> {
    pub status: &'a io::Result<ExitStatus>,
    /// herd was stopping it.
    pub stopping: bool,
    /// Why it failed its readiness gate, if it did.
    pub gate_error: Option<&'a str>,
    /// It passed its gate.
    pub ready: bool,
    pub lived: Duration,
    pub served: u64,
    /// `worker.min_lifetime`.
    pub min_lifetime: Duration,
    /// `worker.fatal_exit_codes`.
    pub fatal_codes: &'a [i32],
}

/// What an exit means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Exit {
    /// herd stopped it: retired, scaled down, replaced.
    Stopped,
    /// It never passed its gate; `what` says how, for the log and a refusal.
    NeverReady { what: String, fatal: bool },
    /// It died without serving a request before `worker.min_lifetime` (a
    /// SIGSEGV on the first request, every time): a failure that backs
    /// respawns off.
    Early { fatal: bool },
    /// It served and then ended. However soon (php-cgi recycling itself
    /// after PHP_FCGI_MAX_REQUESTS, the OOM killer, an operator's kill -9),
    /// a worker that served works; holding its respawn back would empty
    /// the pool.
    Ended { fatal: bool },
}

impl Exit {
    /// Counts against a rollout of the worker's generation.
    fn fails_rollout(&self) -> bool {
        match self {
            Exit::Stopped => false,
            Exit::NeverReady { .. } | Exit::Early { .. } => true,
            Exit::Ended { fatal } => *fatal,
        }
    }
}

pub(super) fn classify(f: ExitFacts<'_>) -> Exit {
    let status = f.status.as_ref().ok();
    let fatal = status
        .and_then(ExitStatus::code)
        .is_some_and(|c| f.fatal_codes.contains(&c));
    if let Some(reason) = f.gate_error {
        // Killed by us, it hung; else it died on its own before answering.
        let what = if status.and_then(ExitStatus::signal) == Some(libc::SIGKILL) {
            format!("failed its readiness gate: {reason}")
        } else {
            format!("{} before it was ready", process::describe(f.status))
        };
        return Exit::NeverReady { what, fatal };
    }
    if f.stopping {
        return Exit::Stopped;
    }
    if !f.ready {
        let what = format!("{} before it was ready", process::describe(f.status));
        return Exit::NeverReady { what, fatal };
    }
    if f.lived < f.min_lifetime && f.served == 0 {
        Exit::Early { fatal }
    } else {
        Exit::Ended { fatal }
    }
}

/// A crash that counts towards `emergency_restart_threshold`.
pub(super) fn crashed(status: &io::Result<ExitStatus>) -> bool {
    matches!(
        status.as_ref().ok().and_then(ExitStatus::signal),
        Some(libc::SIGSEGV | libc::SIGBUS)
    )
}

impl Supervisor {
    pub(super) fn on_exit(&mut self, id: WorkerId, status: io::Result<ExitStatus>) {
        let Some(p) = self.procs.remove(&id) else {
            return;
        };
        self.budget.give_back();
        let _ = std::fs::remove_file(&p.socket);
        let _ = std::fs::remove_file(super::engine::status_socket(&p.socket));
        let entry = self.pool.remove_worker(id);
        let served = entry.as_ref().map_or(0, |e| e.requests);
        let lived = p.started.elapsed();
        let how = process::describe(&status);
        let pid = p.handle.pid;
        if crashed(&status) {
            let _ = self.reports.send(Report::Crashed);
        }
        let cfg = self.gens[&p.generation].cfg.clone();
        let exit = classify(ExitFacts {
            status: &status,
            stopping: p.life.leaving(),
            gate_error: match &p.life {
                Life::GateFailed(why) => Some(why.as_str()),
                _ => None,
            },
            ready: p.ready_at.is_some(),
            lived,
            served,
            min_lifetime: cfg.worker_min_lifetime,
            fatal_codes: &cfg.worker_fatal_exit_codes,
        });
        let rolling = self
            .rollout
            .as_ref()
            .is_some_and(|r| r.generation == p.generation);
        match exit {
            Exit::Stopped => {
                tracing::info!(pool = %self.name(), worker = id, pid, "worker stopped: {how} after {lived:.1?}, {served} requests");
            }
            Exit::NeverReady { what, fatal } => {
                let said = p.last_words.as_ref().and_then(output::LastWords::said);
                let what = match said {
                    Some(said) => format!("{what} (it said: {said})"),
                    None => what,
                };
                self.start_failed(id, pid, p.generation, what, fatal)
            }
            ref exit if rolling && exit.fails_rollout() => {
                let fatal = matches!(
                    exit,
                    Exit::Early { fatal: true } | Exit::Ended { fatal: true }
                );
                tracing::warn!(pool = %self.name(), worker = id, pid, generation = p.generation, "new worker {how} after {lived:.1?}");
                self.rollout_failed(rollout_reason(&how, fatal), fatal);
            }
            Exit::Early { .. } => {
                let delay = self.failed("a worker exited early");
                tracing::warn!(pool = %self.name(), worker = id, pid, "worker {how} after {lived:.1?}; respawning in {delay:?}");
            }
            Exit::Ended { .. } => {
                tracing::warn!(pool = %self.name(), worker = id, pid, "worker {how} after {lived:.1?}, {served} requests; respawning");
            }
        }
    }

    /// A new worker never became ready: a rollout failure for a rolling
    /// generation, else a failure for the backoff.
    pub(super) fn start_failed(
        &mut self,
        id: WorkerId,
        pid: u32,
        generation: u32,
        what: String,
        fatal: bool,
    ) {
        if self
            .rollout
            .as_ref()
            .is_some_and(|r| r.generation == generation)
        {
            tracing::warn!(pool = %self.name(), worker = id, pid, generation, "new worker {what}");
            self.rollout_failed(rollout_reason(&what, fatal), fatal);
        } else {
            let delay = self.failed("a worker failed to start");
            tracing::warn!(pool = %self.name(), worker = id, pid, "worker {what}; respawning in {delay:?}");
        }
    }

    /// Counts a failure against the pool; returns the respawn delay.
    pub(super) fn failed(&mut self, why: &str) -> Duration {
        Counters::bump(&self.pool.counters.worker_failures);
        let delay = self.backoff.fail();
        self.next_spawn_at = Instant::now() + delay;
        self.last_failure = why.to_string();
        delay
    }
}

/// The reason a rollout gives for one of its workers.
fn rollout_reason(what: &str, fatal: bool) -> String {
    if fatal {
        format!("a new worker {what}, a fatal exit code (worker.fatal_exit_codes)")
    } else {
        format!("a new worker {what}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn code(c: i32) -> io::Result<ExitStatus> {
        Ok(ExitStatus::from_raw(c << 8))
    }

    fn signal(s: i32) -> io::Result<ExitStatus> {
        Ok(ExitStatus::from_raw(s))
    }

    /// A ready worker that lived 10 s and served 5 requests, exiting 0.
    fn facts(status: &io::Result<ExitStatus>) -> ExitFacts<'_> {
        ExitFacts {
            status,
            stopping: false,
            gate_error: None,
            ready: true,
            lived: 10 * SECOND,
            served: 5,
            min_lifetime: 5 * SECOND,
            fatal_codes: &[78],
        }
    }

    #[test]
    fn a_worker_herd_stopped_is_no_failure() {
        let s = signal(libc::SIGTERM);
        let f = ExitFacts {
            stopping: true,
            lived: Duration::ZERO,
            served: 0,
            ..facts(&s)
        };
        assert_eq!(classify(f), Exit::Stopped);
    }

    #[test]
    fn a_gate_failure_says_whether_it_hung_or_died() {
        let killed = signal(libc::SIGKILL);
        let hung = classify(ExitFacts {
            gate_error: Some("did not answer"),
            ready: false,
            stopping: true,
            ..facts(&killed)
        });
        assert_eq!(
            hung,
            Exit::NeverReady {
                what: "failed its readiness gate: did not answer".into(),
                fatal: false
            }
        );
        let died = code(78);
        let died = classify(ExitFacts {
            gate_error: Some("connection closed"),
            ready: false,
            ..facts(&died)
        });
        assert_eq!(
            died,
            Exit::NeverReady {
                what: "exited with code 78 before it was ready".into(),
                fatal: true
            }
        );
    }

    #[test]
    fn a_worker_that_dies_while_warming_never_became_ready() {
        let s = signal(libc::SIGSEGV);
        let exit = classify(ExitFacts {
            ready: false,
            ..facts(&s)
        });
        assert!(
            matches!(exit, Exit::NeverReady { fatal: false, .. }),
            "{exit:?}"
        );
        assert!(exit.fails_rollout());
        assert!(crashed(&s));
    }

    #[test]
    fn young_without_a_request_is_early_and_backs_off() {
        let s = code(1);
        let exit = classify(ExitFacts {
            lived: SECOND,
            served: 0,
            ..facts(&s)
        });
        assert_eq!(exit, Exit::Early { fatal: false });
        assert!(exit.fails_rollout());
    }

    #[test]
    fn young_after_serving_is_an_ordinary_end() {
        // php-cgi recycling itself, the OOM killer, an operator's kill -9.
        let s = signal(libc::SIGKILL);
        let exit = classify(ExitFacts {
            lived: SECOND,
            served: 1,
            ..facts(&s)
        });
        assert_eq!(exit, Exit::Ended { fatal: false });
        assert!(!exit.fails_rollout());
        assert!(!crashed(&s));
    }

    #[test]
    fn a_fatal_code_fails_a_rollout_even_after_serving() {
        let s = code(78);
        let exit = classify(facts(&s));
        assert_eq!(exit, Exit::Ended { fatal: true });
        assert!(exit.fails_rollout());
        let s = code(0);
        assert_eq!(classify(facts(&s)), Exit::Ended { fatal: false });
    }

    #[test]
    fn an_unknown_status_is_not_fatal() {
        let s: io::Result<ExitStatus> = Err(io::Error::other("lost"));
        let exit = classify(ExitFacts {
            lived: SECOND,
            served: 0,
            ..facts(&s)
        });
        assert_eq!(exit, Exit::Early { fatal: false });
        assert!(!crashed(&s));
    }
}
