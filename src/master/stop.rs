//! Stopping the master: php-fpm's `SIGQUIT` without its resets, and the
//! fast stop of `SIGTERM`/`SIGINT`.

use std::time::Duration;

use super::Master;
use crate::phase::Phase;
use crate::signals::Signals;
use crate::supervisor;

impl Master {
    /// Report not ready (and wait `shutdown.depool_delay` for load
    /// balancers to notice), stop taking new connections (serving what
    /// already waits in the backlog), let queued and in-flight requests
    /// finish within `process_control_timeout`, then stop the workers. A
    /// second stop signal escalates to a fast stop.
    ///
    /// After `herd ctl upgrade` (`handoff`) the new master already serves
    /// from the same sockets: no depool delay, and the sockets, their
    /// files and backlogs are left to it.
    pub(super) async fn graceful_stop(self, signals: &mut Signals, handoff: bool) {
        let grace = self.config.global.process_control_timeout;
        let depool = if handoff {
            Duration::ZERO
        } else {
            self.config.global.shutdown_depool_delay
        };
        self.phase.send_replace(Phase::Depooling);
        if !depool.is_zero() {
            tracing::info!(
                "graceful stop: reporting not ready for {depool:?} before closing the listeners"
            );
            tokio::select! {
                _ = tokio::time::sleep(depool) => {}
                ev = signals.next() => {
                    tracing::info!("{ev:?} during graceful stop: stopping now");
                    return self.fast_stop().await;
                }
            }
        }
        tracing::info!(
            "graceful stop: listeners closed, finishing requests in flight (up to {grace:?})"
        );
        self.phase.send_replace(Phase::Draining);
        let drained = async {
            for p in &self.pools {
                p.pool.wait_connections_closed().await;
            }
        };
        tokio::select! {
            r = tokio::time::timeout(grace, drained) => if r.is_err() {
                tracing::warn!("graceful stop: requests still running after process_control_timeout ({grace:?}); stopping their workers");
            },
            ev = signals.next() => tracing::info!("{ev:?} during graceful stop: stopping now"),
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
            p.acceptor.abort();
        }
    }
}
