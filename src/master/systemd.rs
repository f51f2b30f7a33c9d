//! Telling systemd (`Type=notify`, `Type=notify-reload`) where the master
//! stands: `READY=1` once every pool's first workers passed their gate,
//! `RELOADING=1` with `MONOTONIC_USEC` during a reload and `READY=1` when
//! its rollouts settled, `STOPPING=1`, a one-line `STATUS=`, and watchdog
//! pings. Without `NOTIFY_SOCKET` every call is a no-op.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::pool::{DeployState, Pool};

pub struct Systemd {
    enabled: bool,
    /// Half of `WATCHDOG_USEC`, when systemd watches us.
    pub watchdog: Option<Duration>,
}

impl Systemd {
    pub fn from_env() -> Systemd {
        Systemd {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            watchdog: sd_notify::watchdog_enabled().map(|d| d / 2),
        }
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if self.enabled
            && let Err(e) = sd_notify::notify(states)
        {
            tracing::warn!("failed to notify systemd: {e}");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    pub fn main_pid(&self, pid: u32) {
        self.send(&[NotifyState::MainPid(pid)]);
    }

    pub fn watchdog_ping(&self) {
        self.send(&[NotifyState::Watchdog]);
    }
}

/// Resolves once every pool's first workers are through their gate.
pub async fn all_started(pools: Vec<Arc<Pool>>) {
    for pool in pools {
        let mut rx = pool.deploy.subscribe();
        let _ = rx.wait_for(|d| d.started).await;
    }
}

/// `www: generation 2 stable, 8 workers, queue 0; api: ...`
pub fn summary(pools: &[Arc<Pool>]) -> String {
    let parts: Vec<String> = pools
        .iter()
        .map(|p| {
            let d = p.deploy.borrow().clone();
            let (load, _) = p.load();
            let state = match d.state {
                DeployState::Refused => format!("deploy of generation {} refused", d.generation),
                other => format!("generation {} {}", d.generation, other.name()),
            };
            format!(
                "{}: {state}, {} workers, {} busy, queue {}",
                p.name,
                load.idle + load.busy + load.warming,
                load.busy,
                load.queued
            )
        })
        .collect();
    parts.join("; ")
}
