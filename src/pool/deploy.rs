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
    /// `stable`, `rolling out` or `refused`.
    pub state: String,
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

impl DeployStatus {
    /// The generation this status refuses, if it does.
    fn refused(&self) -> Option<u32> {
        (self.state == "refused").then_some(self.generation)
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

    fn publish(cell: &DeployCell, generation: u32, state: &str) {
        cell.send_if_modified(|s| {
            let new = DeployStatus {
                generation,
                state: state.into(),
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
        publish(&cell, 1, "stable");
        publish(&cell, 2, "rolling out");
        publish(&cell, 2, "refused");
        // Published again (another field changed): still one refusal.
        cell.send_if_modified(|s| {
            s.backoff_failures = 1;
            true
        });
        publish(&cell, 2, "refused");
        assert_eq!(cell.refusals(), 1);
        // The next reload is refused straight away, with no rollout seen.
        publish(&cell, 3, "refused");
        assert_eq!(cell.refusals(), 2);
        publish(&cell, 4, "rolling out");
        publish(&cell, 4, "stable");
        assert_eq!(cell.refusals(), 2);
        assert_eq!(cell.borrow().generation, 4);
        assert_eq!(cell.subscribe().borrow().state, "stable");
    }
}
