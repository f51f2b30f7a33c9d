//! Signals, mapped to the master's events with php-fpm's meanings. The
//! master reads [`SignalEvent`]s, never raw signals, from a [`Signals`]
//! source that tests can fake ([`Signals::fake`]), so the lifecycle's
//! decisions are tested without sending a process a signal.

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

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

impl SignalEvent {
    /// The signals behind the event, for log lines.
    pub fn signals(self) -> &'static str {
        match self {
            SignalEvent::GracefulStop => "SIGQUIT",
            SignalEvent::FastStop => "SIGTERM/SIGINT",
            SignalEvent::Reload => "SIGUSR2/SIGHUP",
            SignalEvent::ReopenLogs => "SIGUSR1",
            SignalEvent::MoreWorkers => "SIGTTIN",
            SignalEvent::FewerWorkers => "SIGTTOU",
        }
    }
}

/// Where the master's signal events come from.
pub struct Signals {
    source: Source,
}

enum Source {
    Os(Vec<(Signal, SignalEvent)>),
    Fake(mpsc::UnboundedReceiver<SignalEvent>),
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
        Ok(Signals {
            source: Source::Os(table),
        })
    }

    /// A source fed by the test through the sender: each event sent
    /// arrives as its signal would. Once the sender is gone, no more come.
    pub fn fake() -> (mpsc::UnboundedSender<SignalEvent>, Signals) {
        let (tx, rx) = mpsc::unbounded_channel();
        let source = Source::Fake(rx);
        (tx, Signals { source })
    }

    pub async fn next(&mut self) -> SignalEvent {
        let table = match &mut self.source {
            Source::Os(table) => table,
            Source::Fake(rx) => match rx.recv().await {
                Some(ev) => return ev,
                None => std::future::pending().await,
            },
        };
        let futures = table.iter_mut().map(|(sig, ev)| {
            let ev = *ev;
            Box::pin(async move {
                sig.recv().await;
                ev
            })
        });
        futures_util::future::select_all(futures).await.0
    }
}
