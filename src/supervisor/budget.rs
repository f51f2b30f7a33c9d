//! `process.max`: one budget of worker processes shared by every pool of
//! the master; a pool takes from it before it starts a process and gives
//! back when the process is gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

/// `process.max`: workers across every pool of the master.
#[derive(Debug, Default)]
pub struct ProcessBudget {
    max: usize,
    live: AtomicUsize,
    warned: AtomicBool,
}

impl ProcessBudget {
    pub fn new(max: u32) -> Arc<ProcessBudget> {
        Arc::new(ProcessBudget {
            max: max as usize,
            ..ProcessBudget::default()
        })
    }

    /// Takes one process from the budget, or says why not.
    pub(super) fn take(&self) -> Result<(), String> {
        let ok = self
            .live
            .fetch_update(SeqCst, SeqCst, |n| {
                (self.max == 0 || n < self.max).then_some(n + 1)
            })
            .is_ok();
        if ok {
            self.warned.store(false, SeqCst);
            return Ok(());
        }
        let first = !self.warned.swap(true, SeqCst);
        Err(if first {
            format!("process.max ({}) reached", self.max)
        } else {
            String::new()
        })
    }

    pub(super) fn give_back(&self) {
        self.live.fetch_sub(1, SeqCst);
    }
}
