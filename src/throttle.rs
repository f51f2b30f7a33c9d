//! Logging a kind of refusal at most once a second, so a flood of bad
//! connections costs a few log lines, not one per connection — and still
//! accounting for every one of them: refusals held back are counted into
//! the next line, or into a line of their own when the flood stops.

use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Throttle {
    last: Option<Instant>,
    /// Refusals since the last line, and the latest one's text.
    held: u64,
    latest: String,
}

impl Throttle {
    pub fn new() -> Throttle {
        Throttle {
            last: None,
            held: 0,
            latest: String::new(),
        }
    }

    /// One refusal: logged now, or held back until the window ends.
    pub fn hit(&mut self, pool: &str, what: String) {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < WINDOW) {
            self.held += 1;
            self.latest = what;
            return;
        }
        self.log(pool, &what, self.held);
        self.last = Some(now);
        self.held = 0;
    }

    /// When the refusals held back should be logged, if there are any.
    pub fn flush_at(&self) -> Option<Instant> {
        (self.held > 0).then(|| self.last.map_or_else(Instant::now, |t| t + WINDOW))
    }

    /// Logs the refusals held back, once their window is over.
    pub fn flush(&mut self, pool: &str) {
        if self.flush_at().is_some_and(|t| Instant::now() >= t) {
            let latest = std::mem::take(&mut self.latest);
            // The line stands for the latest refusal, and counts the others.
            self.log(pool, &latest, self.held - 1);
            self.held = 0;
            self.last = Some(Instant::now());
        }
    }

    /// Logs the refusals held back now, window or not: the last word
    /// before the pool goes away.
    pub fn flush_now(&mut self, pool: &str) {
        if self.held > 0 {
            let latest = std::mem::take(&mut self.latest);
            self.log(pool, &latest, self.held - 1);
            self.held = 0;
        }
    }

    /// With an empty `pool` (the control socket's refusals) the line
    /// names none.
    fn log(&self, pool: &str, what: &str, held: u64) {
        match (pool.is_empty(), held > 0) {
            (false, true) => {
                tracing::warn!(pool, "{what} (and {held} more since the last report)")
            }
            (false, false) => tracing::warn!(pool, "{what}"),
            (true, true) => tracing::warn!("{what} (and {held} more since the last report)"),
            (true, false) => tracing::warn!("{what}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_within_a_second_and_flushes_after() {
        let mut t = Throttle::new();
        t.hit("p", "first".into());
        assert_eq!(t.flush_at(), None);
        t.hit("p", "second".into());
        t.hit("p", "third".into());
        assert_eq!(t.held, 2);
        let at = t.flush_at().expect("something held");
        assert!(at > Instant::now());
        t.flush("p"); // too early: nothing happens
        assert_eq!(t.held, 2);
        t.last = Some(Instant::now() - WINDOW);
        t.flush("p");
        assert_eq!(t.held, 0);
        assert_eq!(t.flush_at(), None);
    }

    #[test]
    fn flush_now_logs_what_is_held_before_the_window_ends() {
        let mut t = Throttle::new();
        t.hit("p", "first".into());
        t.hit("p", "second".into());
        t.flush("p"); // within the window: held
        assert_eq!(t.held, 1);
        t.flush_now("p");
        assert_eq!(t.held, 0);
        assert_eq!(t.flush_at(), None);
    }
}
