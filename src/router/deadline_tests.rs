//! Unit tests for `deadline.rs`.

use super::*;

const S: fn(u64) -> Duration = Duration::from_secs;

fn limits() -> Limits {
    Limits {
        read: S(30),
        header: S(60),
        body: S(60),
        body_min_rate: 500,
        idle: S(120),
    }
}

const FRESH: Waiting = Waiting {
    fresh: true,
    partial: 0,
    idle: false,
};
const IDLE: Waiting = Waiting {
    fresh: false,
    partial: 0,
    idle: true,
};

fn partial(bytes: usize) -> Waiting {
    Waiting {
        partial: bytes,
        ..Waiting::default()
    }
}

fn clock() -> (Clock, Instant) {
    let t0 = Instant::now();
    (Clock::new(limits(), t0), t0)
}

#[test]
fn a_fresh_connection_gets_the_read_timeout_quietly() {
    let (c, t0) = clock();
    let fresh = FRESH;
    assert_eq!(
        c.next(fresh, [].iter()),
        Some((t0 + S(30), Expired::Silent(S(30))))
    );
    assert!(Expired::Silent(S(30)).quiet());
}

#[test]
fn a_trickle_of_params_is_dropped_at_the_header_deadline() {
    let (mut c, t0) = clock();
    c.read(t0, true);
    let mut owed = c.begin(t0);
    let partial = partial(1);
    // A byte every 15 s keeps the read timeout away for ever...
    for s in [15, 30, 45] {
        c.read(t0 + S(s), false);
    }
    for s in [50, 55] {
        c.read(t0 + S(s), false);
        let next = c.next(partial, [&owed].into_iter());
        assert_eq!(next, Some((t0 + S(60), Expired::Header(S(60)))), "{s}");
    }
    // ...but not the header deadline. Complete params start the body's.
    c.params_done(&mut owed, t0 + S(50));
    let next = c.next(Waiting::default(), [&owed].into_iter());
    assert_eq!(next.map(|n| n.0), Some(t0 + S(55) + S(30)), "read timeout");
}

#[test]
fn the_header_clock_starts_at_the_first_byte_of_the_request() {
    let (mut c, t0) = clock();
    // The begin record trickles in before it can be read as one.
    c.read(t0 + S(1), true);
    let partial = partial(1);
    c.read(t0 + S(20), false);
    assert_eq!(
        c.next(partial, [].iter()),
        Some((t0 + S(50), Expired::Stalled(S(30))))
    );
    c.read(t0 + S(45), false);
    assert_eq!(
        c.next(partial, [].iter()),
        Some((t0 + S(61), Expired::Header(S(60))))
    );
    let owed = c.begin(t0 + S(46));
    c.framed(t0 + S(46), true, false);
    assert_eq!(
        c.next(Waiting::default(), [&owed].into_iter()),
        Some((t0 + S(61), Expired::Header(S(60))))
    );
}

#[test]
fn each_body_byte_buys_time_at_the_minimum_rate() {
    let (mut c, t0) = clock();
    let mut owed = c.begin(t0);
    c.params_done(&mut owed, t0);
    owed.received(1000);
    c.read(t0 + S(50), false);
    // 60 s, plus 2 s for 1000 bytes at 500 bytes/s.
    let (at, why) = c.next(Waiting::default(), [&owed].into_iter()).unwrap();
    assert_eq!(at, t0 + S(62));
    assert_eq!(
        why,
        Expired::Body {
            received: 1000,
            elapsed: S(62)
        }
    );
    // Bytes of a record still arriving count too.
    let partial = partial(500);
    let (at, _) = c.next(partial, [&owed].into_iter()).unwrap();
    assert_eq!(at, t0 + S(63));
    assert_eq!(per_rate(750, 500), Duration::from_millis(1500));
    assert_eq!(per_rate(750, 0), Duration::ZERO);
}

#[test]
fn no_deadline_runs_while_herd_is_not_reading() {
    let (mut c, t0) = clock();
    let mut owed = c.begin(t0);
    c.params_done(&mut owed, t0);
    c.pause(t0 + S(10));
    assert_eq!(c.next(Waiting::default(), [&owed].into_iter()), None);
    c.resume(t0 + S(100));
    // 90 s paused are not the client's: the body deadline moves by them.
    let next = c.next(Waiting::default(), [&owed].into_iter());
    assert_eq!(next.map(|n| n.0), Some(t0 + S(100) + S(30)), "read first");
    c.read(t0 + S(120), false);
    c.read(t0 + S(140), false);
    let next = c.next(Waiting::default(), [&owed].into_iter());
    assert_eq!(next.map(|n| n.0), Some(t0 + S(150)), "60 s + 90 s paused");
}

#[test]
fn an_idle_keepalive_connection_closes_after_the_idle_timeout() {
    let (mut c, t0) = clock();
    c.read(t0 + S(1), true);
    c.framed(t0 + S(1), true, false);
    c.done(t0 + S(3));
    let idle = IDLE;
    assert_eq!(
        c.next(idle, [].iter()),
        Some((t0 + S(123), Expired::Idle(S(120))))
    );
    // Waiting for a response is no one's deadline here.
    assert_eq!(c.next(Waiting::default(), [].iter()), None);
}

#[test]
fn zero_turns_a_deadline_off() {
    let t0 = Instant::now();
    let off = Limits {
        header: Duration::ZERO,
        body: Duration::ZERO,
        idle: Duration::ZERO,
        ..limits()
    };
    let c = Clock::new(off, t0);
    let mut owed = c.begin(t0);
    let next = c.next(Waiting::default(), [&owed].into_iter());
    assert_eq!(next, Some((t0 + S(30), Expired::Stalled(S(30)))));
    c.params_done(&mut owed, t0);
    let next = c.next(Waiting::default(), [&owed].into_iter());
    assert_eq!(next, Some((t0 + S(30), Expired::Stalled(S(30)))));
    let idle = IDLE;
    assert_eq!(c.next(idle, [].iter()), None);
}
