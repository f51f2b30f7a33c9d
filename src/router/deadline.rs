//! The deadlines a client connection must meet, as plain state: the
//! connection's loop tells the [`Clock`] what happened and asks it for the
//! next deadline; no IO here, so the rules are tested with a clock of the
//! test's own.
//!
//! - While bytes are owed, each read must come within `request.read_timeout`
//!   (a connection that never sends one is closed quietly: port probes).
//! - A per-read timeout alone never drops a client sending one byte every
//!   `read_timeout / 2`, so a request's params must be complete within
//!   `request.header_timeout` of its first byte, and its body within
//!   `request.body_timeout` of the params plus one second for every
//!   `request.body_min_rate` bytes received (Apache's `mod_reqtimeout`
//!   rule: a trickle is dropped, a slow but steady upload goes on).
//! - A keep-alive connection idle between requests closes after
//!   `request.idle_timeout`; longer than nginx's upstream
//!   `keepalive_timeout`, so nginx closes first and never sends a request
//!   on a connection herd is closing.
//! - None runs while herd itself has stopped reading (a request's body
//!   queue is full because its worker is slow): the client is not to blame
//!   for that time.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::PoolConfig;

/// The pool's limits; a zero turns that deadline off (not the read one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub read: Duration,
    pub header: Duration,
    pub body: Duration,
    /// Bytes per second.
    pub body_min_rate: u64,
    pub idle: Duration,
}

impl Limits {
    pub fn of(cfg: &PoolConfig) -> Limits {
        Limits {
            read: cfg.request_read_timeout,
            header: cfg.request_header_timeout,
            body: cfg.request_body_timeout,
            body_min_rate: cfg.request_body_min_rate,
            idle: cfg.request_idle_timeout,
        }
    }
}

/// Why a connection is closed at a deadline; the log line says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Expired {
    #[error("sent nothing for {0:?}")]
    Silent(Duration),
    #[error("no bytes for {0:?} in the middle of a request")]
    Stalled(Duration),
    #[error("params not complete {0:?} after the request began (request.header_timeout)")]
    Header(Duration),
    #[error(
        "request body too slow: {received} bytes in {elapsed:?} (request.body_timeout, request.body_min_rate)"
    )]
    Body { received: u64, elapsed: Duration },
    #[error("idle for {0:?} between requests (request.idle_timeout)")]
    Idle(Duration),
}

impl Expired {
    /// A connection that never began, or was done, costs no warning:
    /// a flood of them would be a flood of lines.
    pub fn quiet(self) -> bool {
        matches!(self, Expired::Silent(_) | Expired::Idle(_))
    }
}

/// What one request still owes: its params, then its body.
#[derive(Clone, Copy, Debug)]
pub struct Owed {
    since: Instant,
    /// The connection's paused time when `since` was taken.
    paused_then: Duration,
    /// `Some(bytes received)` once the params are complete.
    body: Option<u64>,
}

impl Owed {
    /// Body bytes arrived.
    pub fn received(&mut self, n: usize) {
        if let Some(b) = &mut self.body {
            *b += n as u64;
        }
    }
}

/// What the connection is waiting for, as the loop sees it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Waiting {
    /// Nothing received yet.
    pub fresh: bool,
    /// Bytes of a record not complete yet, waiting in the buffer: they
    /// count towards a body's rate before the record is whole (a 64 KiB
    /// record of a slow upload takes a while).
    pub partial: usize,
    /// Served before, and nothing owed, queued or in flight now.
    pub idle: bool,
}

/// The connection's clock.
#[derive(Clone, Debug)]
pub struct Clock {
    limits: Limits,
    last_read: Instant,
    /// When the last request ended.
    last_done: Instant,
    /// When the bytes now at the front of the buffer began to arrive.
    front: Option<Instant>,
    paused_since: Option<Instant>,
    /// Time herd did not read, before `paused_since`.
    paused: Duration,
}

impl Clock {
    pub fn new(limits: Limits, now: Instant) -> Clock {
        Clock {
            limits,
            last_read: now,
            last_done: now,
            front: None,
            paused_since: None,
            paused: Duration::ZERO,
        }
    }

    /// Bytes arrived; `was_empty`: the buffer held none before.
    pub fn read(&mut self, now: Instant, was_empty: bool) {
        self.last_read = now;
        if was_empty || self.front.is_none() {
            self.front = Some(now);
        }
    }

    /// Records were taken from the buffer (`took`); `left`: part of one
    /// is still there, and came with the latest read when records were taken.
    pub fn framed(&mut self, now: Instant, took: bool, left: bool) {
        if !left {
            self.front = None;
        } else if took {
            self.front = Some(now);
        }
    }

    /// A request ended.
    pub fn done(&mut self, now: Instant) {
        self.last_done = now;
    }

    /// herd stops reading until a body queue has room.
    pub fn pause(&mut self, now: Instant) {
        self.paused_since.get_or_insert(now);
    }

    pub fn resume(&mut self, now: Instant) {
        if let Some(since) = self.paused_since.take() {
            self.paused += now.saturating_duration_since(since);
        }
        // The client gets a full read timeout again.
        self.last_read = now;
    }

    /// A request began (its `FCGI_BEGIN_REQUEST` was read): its params are
    /// owed from the first byte of that record.
    pub fn begin(&self, now: Instant) -> Owed {
        Owed {
            since: self.front.unwrap_or(now).min(now),
            paused_then: self.paused,
            body: None,
        }
    }

    /// A request's params are complete: its body is owed from now.
    pub fn params_done(&self, owed: &mut Owed, now: Instant) {
        *owed = Owed {
            since: now,
            paused_then: self.paused,
            body: Some(0),
        };
    }

    /// The next deadline and what expires at it, for a connection in
    /// `waiting` with requests that owe `owed`; `None` while nothing is
    /// owed (or herd is not reading).
    pub fn next<'a>(
        &self,
        waiting: Waiting,
        owed: impl Iterator<Item = &'a Owed>,
    ) -> Option<(Instant, Expired)> {
        if self.paused_since.is_some() {
            return None;
        }
        let l = &self.limits;
        let mut next: Option<(Instant, Expired)> = None;
        let mut consider = |at: Option<Instant>, why: Expired| {
            if let Some(at) = at
                && next.is_none_or(|(t, _)| at < t)
            {
                next = Some((at, why));
            }
        };
        let mut any_owed = false;
        for o in owed {
            any_owed = true;
            // Time herd did not read since the request's clock started.
            let paused = self.paused - o.paused_then;
            match o.body {
                None if !l.header.is_zero() => {
                    consider(after(o.since, l.header + paused), Expired::Header(l.header));
                }
                Some(received) if !l.body.is_zero() => {
                    let received = received + waiting.partial as u64;
                    let allowed = l.body + per_rate(received, l.body_min_rate);
                    let at = after(o.since, allowed + paused);
                    consider(
                        at,
                        Expired::Body {
                            received,
                            elapsed: allowed,
                        },
                    );
                }
                _ => {}
            }
        }
        let partial = waiting.partial > 0;
        if partial && !any_owed && !l.header.is_zero() {
            // The next request is arriving: its first record counts.
            let front = self.front.unwrap_or(self.last_read);
            consider(after(front, l.header), Expired::Header(l.header));
        }
        if waiting.fresh || partial || any_owed {
            let why = if waiting.fresh && !partial {
                Expired::Silent(l.read)
            } else {
                Expired::Stalled(l.read)
            };
            consider(after(self.last_read, l.read), why);
        }
        if waiting.idle && !l.idle.is_zero() {
            let since = self.last_read.max(self.last_done);
            consider(after(since, l.idle), Expired::Idle(l.idle));
        }
        next
    }
}

/// One second for every `rate` bytes; nothing without a rate.
fn per_rate(bytes: u64, rate: u64) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    Duration::from_secs(bytes / rate) + Duration::from_nanos((bytes % rate) * 1_000_000_000 / rate)
}

/// `at + d`, or no deadline where that is past what a clock can hold.
fn after(at: Instant, d: Duration) -> Option<Instant> {
    at.checked_add(d)
}

#[cfg(test)]
#[path = "deadline_tests.rs"]
mod tests;
