//! The shared test harness itself: a test that cannot run says so loudly,
//! and fails under CI; a wait that times out says what it saw last.

mod support;

use std::process::Command;
use std::time::Duration;

/// Set in the child this file starts: its `skip_probe` then skips.
const PROBE: &str = "HERD_TEST_SKIP_PROBE";

/// A test that skips when told to; run on its own by the test below.
#[test]
fn skip_probe() {
    if std::env::var_os(PROBE).is_some() {
        support::skip("the probe was told to skip");
    }
}

/// Runs `skip_probe` alone in a child of this test binary, with `ci` as
/// the `CI` variable; returns whether it passed, and its output.
fn probe(ci: Option<&str>) -> (bool, String) {
    let exe = std::env::current_exe().expect("this test binary");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", "skip_probe", "--nocapture", "--test-threads=1"])
        .env(PROBE, "1")
        .env_remove("CI");
    if let Some(ci) = ci {
        cmd.env("CI", ci);
    }
    let out = cmd.output().expect("run the probe");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn a_skipped_test_says_so_and_fails_under_ci() {
    let (passed, out) = probe(None);
    assert!(passed, "{out}");
    assert!(out.contains("SKIPPED: the probe was told to skip"), "{out}");
    let (passed, out) = probe(Some("true"));
    assert!(!passed, "a skip under CI=true passed:\n{out}");
    assert!(out.contains("CI is set"), "{out}");
    let (passed, out) = probe(Some("false"));
    assert!(passed, "CI=false is not CI:\n{out}");
}

#[test]
#[should_panic(expected = "waiting for the answer; last seen: 41")]
fn a_wait_that_times_out_says_what_it_saw_last() {
    let mut n = 0;
    support::wait_until("the answer", Duration::from_millis(100), || {
        n += 1;
        match n {
            42.. => Ok(()),
            _ => Err("41".to_string()),
        }
    });
}
