//! The master's lifecycle as one value on a watch channel: accept loops,
//! connections, ping and tests read it instead of guessing.

/// Where the master is in its life. Phases only move forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Serving.
    Running,
    /// A graceful stop began: ping answers 503 so load balancers take the
    /// host out, while everything is still accepted and served
    /// (`shutdown.depool_delay`).
    Depooling,
    /// Listeners are closed; in-flight and queued requests finish and
    /// keep-alive connections close once idle.
    Draining,
    /// Workers are being stopped.
    Stopping,
}

impl Phase {
    /// Ping reports not ready from the first moment of a stop.
    pub fn ready(self) -> bool {
        self == Phase::Running
    }

    /// New connections are no longer accepted.
    pub fn closed(self) -> bool {
        self >= Phase::Draining
    }
}

pub type PhaseRx = tokio::sync::watch::Receiver<Phase>;
pub type PhaseTx = tokio::sync::watch::Sender<Phase>;
