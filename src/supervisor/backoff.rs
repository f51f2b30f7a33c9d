//! The respawn delay of a pool whose workers keep failing: 100 ms doubling
//! to 30 s, back to nothing after a healthy period. A worker program that
//! exits at once therefore costs the master a handful of spawns a minute,
//! not php-fpm's hundreds a second.

use std::time::Duration;

pub const FIRST: Duration = Duration::from_millis(100);
pub const MAX: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// Records a failure; returns how long to wait before the next spawn.
    pub fn fail(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.delay()
    }

    /// The delay the next spawn waits: zero while healthy.
    pub fn delay(&self) -> Duration {
        match self.failures {
            0 => Duration::ZERO,
            n => FIRST.saturating_mul(1 << (n - 1).min(16)).min(MAX),
        }
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_100ms_to_30s() {
        let mut b = Backoff::default();
        assert_eq!(b.delay(), Duration::ZERO);
        let seen: Vec<_> = (0..12).map(|_| b.fail().as_millis()).collect();
        assert_eq!(
            seen,
            [
                100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000
            ]
        );
        for _ in 0..100 {
            b.fail();
        }
        assert_eq!(b.delay(), MAX);
        b.reset();
        assert_eq!(b.delay(), Duration::ZERO);
    }
}
