//! Where a pool's deploys stand, as the supervisor publishes it for
//! status, metrics and `herd ctl`. Publishing goes through [`DeployCell`],
//! which counts each generation's refusal as it is announced, so the
//! `deploy_refused` metric cannot miss one that a later reload replaced
//! before anyone looked.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

/// Where the pool's deploys stand, published by the supervisor for status
/// and `herd ctl`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct DeployStatus {
    /// The newest generation.
    pub generation: u32,
    /// The generation that last finished a rollout.
    pub serving: u32,
    pub state: DeployState,
    /// Why the newest generation was refused.
    pub reason: Option<String>,
    /// Rollout progress: new workers through the gate, old ones left, the
    /// pool's size.
    pub ready: usize,
    pub old: usize,
    pub target: usize,
    pub generations: Vec<GenerationStatus>,
    /// Failed starts and early exits that are counting towards the backoff.
    pub backoff_failures: u32,
    /// The pool's first workers have all passed their gate (it stays true).
    pub started: bool,
}

/// Where the newest generation stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub enum DeployState {
    /// Every worker is of the serving generation.
    #[default]
    #[serde(rename = "stable")]
    Stable,
    /// The newest generation is replacing the serving one.
    #[serde(rename = "rolling out")]
    RollingOut,
    /// The newest generation was refused; the serving one goes on.
    #[serde(rename = "refused")]
    Refused,
}

impl DeployState {
    /// The name status, metrics and `herd ctl` show.
    pub fn name(self) -> &'static str {
        match self {
            DeployState::Stable => "stable",
            DeployState::RollingOut => "rolling out",
            DeployState::Refused => "refused",
        }
    }
}

/// How the rollout of one generation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settled {
    /// It serves (or a later generation that finished does).
    Serving,
    /// It was refused, for this reason.
    Refused(String),
    /// A later reload replaced it before it settled.
    Superseded,
}

impl DeployStatus {
    /// The generation this status refuses, if it does.
    fn refused(&self) -> Option<u32> {
        (self.state == DeployState::Refused).then_some(self.generation)
    }

    /// Whether the rollout of `generation` is over, and how: the one
    /// question `reload --wait`, systemd's READY=1 after a reload and the
    /// tests ask.
    pub fn settled(&self, generation: u32) -> Option<Settled> {
        if self.generation > generation {
            Some(Settled::Superseded)
        } else if self.serving >= generation && self.state == DeployState::Stable {
            Some(Settled::Serving)
        } else if self.generation == generation && self.state == DeployState::Refused {
            Some(Settled::Refused(self.reason.clone().unwrap_or_default()))
        } else {
            None
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct GenerationStatus {
    pub number: u32,
    pub state: String,
    pub workers: usize,
    pub rank: u64,
}

/// The published [`DeployStatus`] (a watch channel) and the number of
/// generations refused so far.
#[derive(Debug)]
pub struct DeployCell {
    tx: watch::Sender<DeployStatus>,
    refusals: AtomicU64,
}

impl Default for DeployCell {
    fn default() -> DeployCell {
        DeployCell {
            tx: watch::Sender::new(DeployStatus::default()),
            refusals: AtomicU64::new(0),
        }
    }
}

impl DeployCell {
    pub fn subscribe(&self) -> watch::Receiver<DeployStatus> {
        self.tx.subscribe()
    }

    pub fn borrow(&self) -> watch::Ref<'_, DeployStatus> {
        self.tx.borrow()
    }

    /// Publishes what `modify` made of the status when it returns true,
    /// counting a refusal when the status turns to refusing a generation it
    /// did not already refuse.
    pub fn send_if_modified(&self, modify: impl FnOnce(&mut DeployStatus) -> bool) -> bool {
        self.tx.send_if_modified(|s| {
            let before = s.refused();
            let changed = modify(s);
            if changed && s.refused().is_some() && s.refused() != before {
                self.refusals.fetch_add(1, Ordering::Relaxed);
            }
            changed
        })
    }

    /// Generations refused since the master started.
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use DeployState::{Refused, RollingOut, Stable};

    fn publish(cell: &DeployCell, generation: u32, state: DeployState) {
        cell.send_if_modified(|s| {
            let new = DeployStatus {
                generation,
                serving: if state == Stable {
                    generation
                } else {
                    s.serving
                },
                state,
                ..s.clone()
            };
            let changed = *s != new;
            *s = new;
            changed
        });
    }

    #[test]
    fn each_refused_generation_counts_once() {
        let cell = DeployCell::default();
        publish(&cell, 1, Stable);
        publish(&cell, 2, RollingOut);
        publish(&cell, 2, Refused);
        // Published again (another field changed): still one refusal.
        cell.send_if_modified(|s| {
            s.backoff_failures = 1;
            true
        });
        publish(&cell, 2, Refused);
        assert_eq!(cell.refusals(), 1);
        // The next reload is refused straight away, with no rollout seen.
        publish(&cell, 3, Refused);
        assert_eq!(cell.refusals(), 2);
        publish(&cell, 4, RollingOut);
        publish(&cell, 4, Stable);
        assert_eq!(cell.refusals(), 2);
        assert_eq!(cell.borrow().generation, 4);
        assert_eq!(cell.subscribe().borrow().state, Stable);
    }

    #[test]
    fn a_rollout_settles_serving_refused_or_superseded() {
        let status = |generation, serving, state, reason: Option<&str>| DeployStatus {
            generation,
            serving,
            state,
            reason: reason.map(String::from),
            ..DeployStatus::default()
        };
        assert_eq!(status(2, 1, RollingOut, None).settled(2), None);
        assert_eq!(
            status(2, 2, Stable, None).settled(2),
            Some(Settled::Serving)
        );
        assert_eq!(
            status(2, 1, Refused, Some("crashed")).settled(2),
            Some(Settled::Refused("crashed".into()))
        );
        assert_eq!(
            status(3, 1, RollingOut, None).settled(2),
            Some(Settled::Superseded)
        );
        // A later generation that finished serves for this one too.
        assert_eq!(
            status(3, 3, Stable, None).settled(2),
            Some(Settled::Superseded)
        );
        // Refused before: the serving generation is older than this one.
        assert_eq!(status(2, 1, Stable, None).settled(2), None);
    }
}
