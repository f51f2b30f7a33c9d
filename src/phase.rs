//! The master's lifecycle as one value on a watch channel: accept loops,
//! connections, ping, status, `herd ctl status` and tests read it instead
//! of guessing.

/// Where the master is in its life. While it runs it moves between
/// starting, serving, reloading and upgrading; once a stop begins it only
/// moves forward, through depooling, draining and stopping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Listening, with the pools' first workers still going through their
    /// readiness gate (requests wait in the queue meanwhile).
    Starting,
    /// Serving.
    Serving,
    /// A reload's rollouts are under way (`SIGUSR2`, `SIGHUP`,
    /// `herd ctl reload`, an emergency restart); serving goes on.
    Reloading,
    /// A new master (`herd ctl upgrade`) is starting beside this one;
    /// serving goes on.
    Upgrading,
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
    /// The phase of a running master: an upgrade shows over a reload, a
    /// reload over the start it interrupted.
    pub fn running(started: bool, reloads: usize, upgrading: bool) -> Phase {
        if upgrading {
            Phase::Upgrading
        } else if reloads > 0 {
            Phase::Reloading
        } else if started {
            Phase::Serving
        } else {
            Phase::Starting
        }
    }

    /// Ping reports not ready from the first moment of a stop (and, per
    /// pool, until its first workers are ready: the router checks that).
    pub fn ready(self) -> bool {
        self < Phase::Depooling
    }

    /// New connections are no longer accepted.
    pub fn closed(self) -> bool {
        self >= Phase::Draining
    }

    /// A stop began: the phase only moves forward from here.
    pub fn stopping(self) -> bool {
        self >= Phase::Depooling
    }

    /// The name status and `herd ctl status` show.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Serving => "serving",
            Phase::Reloading => "reloading",
            Phase::Upgrading => "upgrading",
            Phase::Depooling => "depooling",
            Phase::Draining => "draining",
            Phase::Stopping => "stopping",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub type PhaseRx = tokio::sync::watch::Receiver<Phase>;
pub type PhaseTx = tokio::sync::watch::Sender<Phase>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_master_shows_its_busiest_step() {
        assert_eq!(Phase::running(false, 0, false), Phase::Starting);
        assert_eq!(Phase::running(true, 0, false), Phase::Serving);
        assert_eq!(Phase::running(false, 1, false), Phase::Reloading);
        assert_eq!(Phase::running(true, 2, false), Phase::Reloading);
        assert_eq!(Phase::running(true, 1, true), Phase::Upgrading);
    }

    #[test]
    fn ready_until_a_stop_begins_and_open_until_draining() {
        let all = [
            Phase::Starting,
            Phase::Serving,
            Phase::Reloading,
            Phase::Upgrading,
            Phase::Depooling,
            Phase::Draining,
            Phase::Stopping,
        ];
        let ready: Vec<bool> = all.iter().map(|p| p.ready()).collect();
        assert_eq!(ready, [true, true, true, true, false, false, false]);
        let closed: Vec<bool> = all.iter().map(|p| p.closed()).collect();
        assert_eq!(closed, [false, false, false, false, false, true, true]);
        assert!(all.iter().all(|p| p.stopping() != p.ready()));
    }
}
