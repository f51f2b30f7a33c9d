//! Unit tests for `stop.rs`.

use std::cell::Cell;

use tokio::sync::{oneshot, watch};

use super::*;

const DEPOOL: Duration = Duration::from_secs(3);
const GRACE: Duration = Duration::from_secs(10);

struct Fake {
    phase: PhaseTx,
    ends: Cell<Option<Instant>>,
    reopened: Cell<u32>,
}

impl Host for Fake {
    fn phase(&self) -> &PhaseTx {
        &self.phase
    }
    fn phase_ends(&self, at: Option<Instant>) {
        self.ends.set(at);
    }
    fn reopen_logs(&self) {
        self.reopened.set(self.reopened.get() + 1);
    }
    fn answer(&self, ctl: Control) {
        let _ = ctl.reply.send(Line::ok("stopping"));
    }
}

/// A stop under test: its host, its inputs, and a switch that says
/// every connection has closed.
struct Rig {
    host: Fake,
    signals: Signals,
    send: mpsc::UnboundedSender<SignalEvent>,
    control: mpsc::UnboundedReceiver<Control>,
    ctl: mpsc::UnboundedSender<Control>,
    drained: Option<oneshot::Receiver<()>>,
    drain: Option<oneshot::Sender<()>>,
}

fn rig() -> Rig {
    let (send, signals) = Signals::fake();
    let (ctl, control) = mpsc::unbounded_channel();
    let (drain, drained) = oneshot::channel();
    Rig {
        host: Fake {
            phase: watch::channel(Phase::Serving).0,
            ends: Cell::new(None),
            reopened: Cell::new(0),
        },
        signals,
        send,
        control,
        ctl,
        drained: Some(drained),
        drain: Some(drain),
    }
}

impl Rig {
    /// Runs the wait to its end; returns how it ended and when.
    async fn run(&mut self, depool: Duration) -> (Ending, Duration) {
        let start = Instant::now();
        let drained = self.drained.take().expect("run once");
        let inputs = Inputs {
            signals: &mut self.signals,
            control: &mut self.control,
        };
        let drained = async move {
            let _ = drained.await;
        };
        let ending = wait(&self.host, inputs, depool, GRACE, drained).await;
        (ending, start.elapsed())
    }

    /// Sends `ev` after `after`, from a task of its own.
    fn signal_at(&self, after: Duration, ev: SignalEvent) {
        let send = self.send.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = send.send(ev);
        });
    }

    /// Says every connection closed after `after`.
    fn drained_at(&mut self, after: Duration) {
        let drain = self.drain.take().expect("once");
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = drain.send(());
        });
    }
}

#[test]
fn only_a_stop_signal_escalates() {
    assert_eq!(on_signal(SignalEvent::GracefulStop), Response::Escalate);
    assert_eq!(on_signal(SignalEvent::FastStop), Response::Escalate);
    assert_eq!(on_signal(SignalEvent::ReopenLogs), Response::ReopenLogs);
    for ev in [
        SignalEvent::Reload,
        SignalEvent::MoreWorkers,
        SignalEvent::FewerWorkers,
    ] {
        assert_eq!(on_signal(ev), Response::Ignore, "{ev:?}");
    }
}

#[test]
fn only_stop_fast_escalates_and_reading_the_state_still_works() {
    assert_eq!(
        on_control(&Request::Stop { fast: true }),
        ControlResponse::Escalate
    );
    assert_eq!(on_control(&Request::Status), ControlResponse::Answer);
    assert_eq!(on_control(&Request::Metrics), ControlResponse::Answer);
    let reload = Request::Reload {
        pool: None,
        force: false,
        wait: false,
    };
    for r in [Request::Stop { fast: false }, reload, Request::Upgrade] {
        assert_eq!(on_control(&r), ControlResponse::Refuse, "{r:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn sigusr1_during_the_drain_reopens_the_logs_and_the_drain_goes_on() {
    let mut r = rig();
    r.signal_at(Duration::from_secs(1), SignalEvent::ReopenLogs);
    r.signal_at(DEPOOL + Duration::from_secs(1), SignalEvent::ReopenLogs);
    r.drained_at(DEPOOL + Duration::from_secs(4));
    let (ending, took) = r.run(DEPOOL).await;
    assert_eq!(ending, Ending::Drained);
    assert_eq!(took, DEPOOL + Duration::from_secs(4));
    assert_eq!(
        r.host.reopened.get(),
        2,
        "once while depooling, once draining"
    );
}

#[tokio::test(start_paused = true)]
async fn reload_and_scaling_signals_are_ignored_while_stopping() {
    let mut r = rig();
    r.signal_at(Duration::from_secs(1), SignalEvent::Reload);
    r.signal_at(DEPOOL + Duration::from_secs(1), SignalEvent::MoreWorkers);
    r.signal_at(DEPOOL + Duration::from_secs(2), SignalEvent::FewerWorkers);
    let (ending, took) = r.run(DEPOOL).await;
    assert_eq!(ending, Ending::TimedOut);
    assert_eq!(
        took,
        DEPOOL + GRACE,
        "bounded by the depool delay and grace"
    );
    assert_eq!(r.host.reopened.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_second_stop_signal_escalates_while_depooling_or_draining() {
    for (at, ev) in [
        (Duration::from_secs(1), SignalEvent::GracefulStop),
        (DEPOOL + Duration::from_secs(2), SignalEvent::FastStop),
    ] {
        let mut r = rig();
        r.signal_at(at, ev);
        let (ending, took) = r.run(DEPOOL).await;
        assert_eq!((ending, took), (Ending::Escalated, at), "{ev:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn listeners_close_when_the_depool_delay_is_over() {
    let mut r = rig();
    let phase = r.host.phase.subscribe();
    let watch = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut phase = phase;
        let start = Instant::now();
        while phase.changed().await.is_ok() {
            seen.push((*phase.borrow_and_update(), start.elapsed()));
        }
        seen
    });
    r.drained_at(Duration::ZERO);
    let (ending, took) = r.run(DEPOOL).await;
    // Drained at once, but only counted once the listeners closed.
    assert_eq!((ending, took), (Ending::Drained, DEPOOL));
    drop(r);
    let seen = watch.await.unwrap();
    assert_eq!(
        seen,
        vec![
            (Phase::Depooling, Duration::ZERO),
            (Phase::Draining, DEPOOL)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn herd_ctl_answers_status_while_stopping_and_stop_fast_escalates() {
    let mut r = rig();
    let ctl = r.ctl.clone();
    let asked = tokio::spawn(async move {
        let mut answers = Vec::new();
        for (after, request) in [
            (1, Request::Status),
            (1, Request::Upgrade),
            (1, Request::Stop { fast: true }),
        ] {
            tokio::time::sleep(Duration::from_secs(after)).await;
            let (reply, mut rx) = mpsc::unbounded_channel();
            let _ = ctl.send(Control {
                request: request.clone(),
                reply,
            });
            let ok = match rx.recv().await.expect("an answer") {
                Line::Done(done) => done.ok,
                Line::Progress(_) => panic!("a progress line for {request:?}"),
            };
            answers.push(ok);
        }
        answers
    });
    let (ending, took) = r.run(DEPOOL).await;
    assert_eq!((ending, took), (Ending::Escalated, Duration::from_secs(3)));
    assert_eq!(asked.await.unwrap(), vec![true, false, true]);
}

/// Status tells how long the drain has left: `process_control_timeout`
/// from the moment the listeners closed, not from the signal.
#[tokio::test(start_paused = true)]
async fn the_drain_says_when_it_ends() {
    let mut r = rig();
    let start = Instant::now();
    r.drained_at(GRACE * 2);
    let (ending, took) = r.run(DEPOOL).await;
    assert_eq!((ending, took), (Ending::TimedOut, DEPOOL + GRACE));
    assert_eq!(r.host.ends.get(), Some(start + DEPOOL + GRACE));
}
