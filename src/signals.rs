//! Signals, mapped to the master's events with php-fpm's meanings. The
//! master reads [`SignalEvent`]s, never raw signals, so tests and the
//! control socket can drive the same paths.

use tokio::signal::unix::{Signal, SignalKind, signal};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalEvent {
    /// `SIGQUIT`: finish what is in flight, then exit.
    GracefulStop,
    /// `SIGTERM`, `SIGINT`: stop now.
    FastStop,
    /// `SIGUSR2`, `SIGHUP`: re-read the config and roll out.
    Reload,
    /// `SIGUSR1`: reopen log files.
    ReopenLogs,
    /// `SIGTTIN` / `SIGTTOU`: one worker more / fewer.
    MoreWorkers,
    FewerWorkers,
}

pub struct Signals {
    table: Vec<(Signal, SignalEvent)>,
}

impl Signals {
    /// Installs the handlers; from here on these signals no longer have
    /// their default action in the master.
    pub fn install() -> std::io::Result<Signals> {
        let kinds = [
            (SignalKind::quit(), SignalEvent::GracefulStop),
            (SignalKind::terminate(), SignalEvent::FastStop),
            (SignalKind::interrupt(), SignalEvent::FastStop),
            (SignalKind::user_defined2(), SignalEvent::Reload),
            (SignalKind::hangup(), SignalEvent::Reload),
            (SignalKind::user_defined1(), SignalEvent::ReopenLogs),
            (
                SignalKind::from_raw(libc::SIGTTIN),
                SignalEvent::MoreWorkers,
            ),
            (
                SignalKind::from_raw(libc::SIGTTOU),
                SignalEvent::FewerWorkers,
            ),
        ];
        let mut table = Vec::new();
        for (kind, event) in kinds {
            table.push((signal(kind)?, event));
        }
        Ok(Signals { table })
    }

    pub async fn next(&mut self) -> SignalEvent {
        let futures = self.table.iter_mut().map(|(sig, ev)| {
            let ev = *ev;
            Box::pin(async move {
                sig.recv().await;
                ev
            })
        });
        futures_util::future::select_all(futures).await.0
    }
}
