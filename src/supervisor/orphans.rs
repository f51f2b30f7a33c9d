//! Processes a killed master left behind. Workers die with their master
//! (`PR_SET_PDEATHSIG`), but what a worker started (FCGI::ProcManager's
//! children, php-cgi's `PHP_FCGI_CHILDREN`) does not: after a `kill -9` of
//! the master they would serve on, unseen, holding memory and old code.
//!
//! Every process herd starts carries `HERD_MASTER=<pid>.<start time>` in
//! its environment, which its own children inherit. A master starting up
//! kills every process whose marker names a master that is gone (no such
//! pid, or the pid reused by a later process). A master that is alive, such
//! as the one handing over in `herd ctl upgrade` or another herd on the
//! same host, keeps its processes. Under systemd the unit's control group
//! does the same at once; this covers everything else.

use std::fs;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The environment variable that marks a process as started by a master.
pub const ENV: &str = "HERD_MASTER";

/// This master's marker value: its pid and start time, which together name
/// one process for as long as the system runs.
pub fn marker() -> String {
    let pid = std::process::id();
    format!("{pid}.{}", start_time(pid).unwrap_or(0))
}

/// Kills what dead masters left behind; returns the pids killed.
pub fn sweep() -> Vec<u32> {
    let mine = std::process::id();
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut killed = Vec::new();
    for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        if pid == mine {
            continue;
        }
        let Some(master) = marker_of(pid) else {
            continue;
        };
        if is_gone(&master) && kill(Pid::from_raw(pid as i32), Signal::SIGKILL).is_ok() {
            killed.push(pid);
        }
    }
    if !killed.is_empty() {
        tracing::warn!(
            "killed {} process(es) a master that is gone left behind: {killed:?}",
            killed.len()
        );
    }
    killed
}

/// The marker in `pid`'s environment, if it has one (and we may read it).
fn marker_of(pid: u32) -> Option<String> {
    let environ = fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{ENV}=");
    environ
        .split(|b| *b == 0)
        .find_map(|var| var.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Whether the master a marker names no longer runs.
fn is_gone(marker: &str) -> bool {
    let Some((pid, started)) = marker.split_once('.') else {
        return false; // not ours to judge
    };
    let (Ok(pid), Ok(started)) = (pid.parse::<u32>(), started.parse::<u64>()) else {
        return false;
    };
    start_time(pid) != Some(started)
}

/// When `pid` started, in clock ticks since boot (`/proc/<pid>/stat`,
/// field 22).
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: count from the last ')'.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_by_its_own_marker() {
        let m = marker();
        assert!(!is_gone(&m), "{m}");
        let (pid, started) = m.split_once('.').unwrap();
        assert!(started.parse::<u64>().unwrap() > 0);
        // The same pid with another start time is a reused pid: gone.
        let reused = format!("{pid}.{}", started.parse::<u64>().unwrap() + 1);
        assert!(is_gone(&reused));
    }

    #[test]
    fn a_dead_pid_is_gone_and_garbage_is_left_alone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(is_gone(&format!("{pid}.1")));
        assert!(!is_gone("garbage"));
        assert!(!is_gone("12.x"));
    }

    #[test]
    fn a_child_carries_the_marker_it_was_given() {
        // This live process's marker: a master starting meanwhile (another
        // test's) leaves the child alone.
        let mine = marker();
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .env(ENV, &mine)
            .spawn()
            .unwrap();
        let seen = marker_of(child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(seen, Some(mine));
    }
}
