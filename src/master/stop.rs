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
    fn reopen_logs(&self);
    /// Answers a status or metrics request.
    fn answer(&self, ctl: Control);
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
    let mut draining = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until), if !draining => {
                tracing::info!(
                    "graceful stop: listeners closed, finishing requests in flight (up to {grace:?})"
                );
                host.phase().send_replace(Phase::Draining);
                until = Instant::now() + grace;
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
            Some(ctl) = control.recv() => match on_control(&ctl.request) {
                ControlResponse::Escalate => {
                    let _ = ctl.reply.send(Line::ok("stopping now"));
                    tracing::info!("herd ctl stop --fast during the graceful stop: stopping now");
                    return Ending::Escalated;
                }
                ControlResponse::Answer => host.answer(ctl),
                ControlResponse::Refuse => {
                    let _ = ctl.reply.send(Line::error("herd is stopping"));
                }
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
        if wait(&self, inputs, depool, grace, drained).await == Ending::Escalated {
            return self.fast_stop().await;
        }
        for p in &self.pools {
            let _ = p.commands.send(supervisor::Command::StopGraceful);
        }
        self.fast_stop().await;
    }

    /// Listeners close, workers get their stop signal, then SIGKILL.
    pub(super) async fn fast_stop(self) {
        self.phase.send_replace(Phase::Stopping);
        let mut bound = Duration::ZERO;
        for p in &self.pools {
            let _ = p.commands.send(supervisor::Command::StopFast);
            bound = bound.max(p.pool.config().worker_kill_timeout);
        }
        for p in self.pools {
            // Workers get SIGKILL at worker.kill_timeout; a little more for
            // the exits to be reaped.
            let _ = tokio::time::timeout(bound + Duration::from_secs(2), p.supervisor).await;
            p.acceptors.iter().for_each(tokio::task::JoinHandle::abort);
        }
    }
}

impl Host for Master {
    fn phase(&self) -> &PhaseTx {
        &self.phase
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
