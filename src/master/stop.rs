//! Stopping the master: php-fpm's `SIGQUIT` without its resets, and the
//! fast stop of `SIGTERM`/`SIGINT`. While a graceful stop waits, the
//! master still answers signals and `herd ctl`; only a second stop cuts
//! the wait short.

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Master;
use crate::control::protocol::{Line, Request};
use crate::control::server::Control;
use crate::phase::{Phase, PhaseTx};
use crate::signals::{SignalEvent, Signals};
use crate::supervisor;

/// What a graceful stop does with a signal. Only a second stop signal
/// escalates: a logrotate `postrotate` sending `SIGUSR1` while herd drains
/// once aborted every request in flight. Logs are reopened as while
/// serving; reloads and scaling make no sense any more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Response {
    Escalate,
    ReopenLogs,
    Ignore,
}

pub(super) fn on_signal(ev: SignalEvent) -> Response {
    match ev {
        SignalEvent::GracefulStop | SignalEvent::FastStop => Response::Escalate,
        SignalEvent::ReopenLogs => Response::ReopenLogs,
        SignalEvent::Reload | SignalEvent::MoreWorkers | SignalEvent::FewerWorkers => {
            Response::Ignore
        }
    }
}

/// What a graceful stop does with a `herd ctl` request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ControlResponse {
    /// `stop --fast`: the second stop.
    Escalate,
    /// Reading the state (status, metrics) works as while serving.
    Answer,
    /// Anything that would change what is being stopped.
    Refuse,
}

pub(super) fn on_control(request: &Request) -> ControlResponse {
    match request {
        Request::Stop { fast: true } => ControlResponse::Escalate,
        Request::Status | Request::Metrics => ControlResponse::Answer,
        Request::Stop { fast: false }
        | Request::Reload { .. }
        | Request::Restart { .. }
        | Request::Scale { .. }
        | Request::Upgrade => ControlResponse::Refuse,
    }
}

/// How a graceful stop's wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ending {
    /// Every connection closed.
    Drained,
    /// `process_control_timeout` passed first.
    TimedOut,
    /// A second stop came.
    Escalated,
}

/// What the wait needs from the master; tests give it a fake.
pub(super) trait Host {
    fn phase(&self) -> &PhaseTx;
    /// When the current step of the stop ends, for status.
    fn phase_ends(&self, at: Option<Instant>);
    fn reopen_logs(&self);
    /// Answers a status or metrics request.
    fn answer(&self, ctl: Control);
}

/// Answers a `herd ctl` request while the master stops: status and
/// metrics as ever, a refusal for what would change what is being
/// stopped. Returns true for a second stop (`stop --fast`), which the
/// caller acts on.
fn answer_during_stop(host: &impl Host, ctl: Control) -> bool {
    match on_control(&ctl.request) {
        ControlResponse::Escalate => {
            let _ = ctl.reply.send(Line::ok("stopping now"));
            true
        }
        ControlResponse::Answer => {
            host.answer(ctl);
            false
        }
        ControlResponse::Refuse => {
            let _ = ctl.reply.send(Line::error("herd is stopping"));
            false
        }
    }
}

/// Where a graceful stop's wait gets its events from.
pub(super) struct Inputs<'a> {
    pub signals: &'a mut Signals,
    pub control: &'a mut mpsc::UnboundedReceiver<Control>,
}

/// The waits of a graceful stop: report not ready for `depool` while still
/// accepting, then close the listeners ([`Phase::Draining`]) and wait for
/// `drained`, at most `grace`. Signals and control requests are answered
/// throughout.
pub(super) async fn wait(
    host: &impl Host,
    inputs: Inputs<'_>,
    depool: Duration,
    grace: Duration,
    drained: impl Future<Output = ()>,
) -> Ending {
    let Inputs { signals, control } = inputs;
    host.phase().send_replace(Phase::Depooling);
    if !depool.is_zero() {
        tracing::info!(
            "graceful stop: reporting not ready for {depool:?} before closing the listeners"
        );
    }
    let mut drained = std::pin::pin!(drained);
    let mut until = Instant::now() + depool;
    host.phase_ends(Some(until));
    let mut draining = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until), if !draining => {
                tracing::info!(
                    "graceful stop: listeners closed, finishing requests in flight (up to {grace:?})"
                );
                until = Instant::now() + grace;
                host.phase_ends(Some(until));
                host.phase().send_replace(Phase::Draining);
                draining = true;
            }
            _ = tokio::time::sleep_until(until), if draining => {
                tracing::warn!("graceful stop: requests still running after process_control_timeout ({grace:?}); stopping their workers");
                return Ending::TimedOut;
            }
            _ = &mut drained, if draining => return Ending::Drained,
            ev = signals.next() => match on_signal(ev) {
                Response::Escalate => {
                    tracing::info!("{} during the graceful stop: stopping now", ev.signals());
                    return Ending::Escalated;
                }
                Response::ReopenLogs => host.reopen_logs(),
                Response::Ignore => tracing::info!("{}: stopping, ignored", ev.signals()),
            },
            Some(ctl) = control.recv() => if answer_during_stop(host, ctl) {
                tracing::info!("herd ctl stop --fast during the graceful stop: stopping now");
                return Ending::Escalated;
            },
        }
    }
}

impl Master {
    /// Report not ready (and wait `shutdown.depool_delay` for load
    /// balancers to notice), stop taking new connections (serving what
    /// already waits in the backlog), let queued and in-flight requests
    /// finish within `process_control_timeout`, then stop the workers. A
    /// second stop escalates to a fast stop.
    ///
    /// After `herd ctl upgrade` (`handoff`) the new master already serves
    /// from the same sockets: no depool delay, and the sockets, their
    /// files and backlogs are left to it.
    pub(super) async fn graceful_stop(self, inputs: Inputs<'_>, handoff: bool) {
        let grace = self.config.global.process_control_timeout;
        let depool = if handoff {
            Duration::ZERO
        } else {
            self.config.global.shutdown_depool_delay
        };
        let pools = self.pool_list();
        let drained = async move {
            for p in pools {
                p.wait_connections_closed().await;
            }
        };
        let Inputs { signals, control } = inputs;
        let waits = Inputs {
            signals,
            control: &mut *control,
        };
        if wait(&self, waits, depool, grace, drained).await != Ending::Escalated {
            for p in &self.pools {
                let _ = p.commands.send(supervisor::Command::StopGraceful);
            }
        }
        self.fast_stop(control).await;
    }

    /// Listeners close, workers get their stop signal, then SIGKILL.
    /// `herd ctl status` is answered until the last worker is gone (a
    /// worker slow to exit on its stop signal once made it hang).
    pub(super) async fn fast_stop(mut self, control: &mut mpsc::UnboundedReceiver<Control>) {
        self.phase.send_replace(Phase::Stopping);
        self.phase_ends.set(None);
        let mut bound = Duration::ZERO;
        for p in &self.pools {
            let _ = p.commands.send(supervisor::Command::StopFast);
            bound = bound.max(p.pool.config().worker_kill_timeout);
        }
        let supervisors: Vec<_> = self
            .pools
            .iter_mut()
            .filter_map(|p| p.supervisor.take())
            .collect();
        // Workers get SIGKILL at worker.kill_timeout; a little more for
        // the exits to be reaped.
        let stopped = tokio::time::timeout(
            bound + Duration::from_secs(2),
            futures_util::future::join_all(supervisors),
        );
        let mut stopped = std::pin::pin!(stopped);
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                Some(ctl) = control.recv() => {
                    answer_during_stop(&self, ctl);
                }
            }
        }
        for p in &self.pools {
            p.acceptors.iter().for_each(tokio::task::JoinHandle::abort);
        }
    }
}

impl Host for Master {
    fn phase(&self) -> &PhaseTx {
        &self.phase
    }

    fn phase_ends(&self, at: Option<Instant>) {
        self.phase_ends.set(at);
    }

    fn reopen_logs(&self) {
        Master::reopen_logs(self);
    }

    fn answer(&self, ctl: Control) {
        self.answer_read(ctl);
    }
}

#[cfg(test)]
#[path = "stop_tests.rs"]
mod tests;
