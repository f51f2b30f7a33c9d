//! Processes a killed master left behind. Workers die with their master
//! (`PR_SET_PDEATHSIG`), but what a worker started (FCGI::ProcManager's
//! children, php-cgi's `PHP_FCGI_CHILDREN`) does not: after a `kill -9` of
//! the master they would serve on, unseen, holding memory and old code.
//!
//! A master starting up finds them two ways, and kills them:
//! - every process herd starts carries
//!   `HERD_MASTER=<pid>.<start time>.<pid namespace>` in its environment,
//!   which its own children inherit: a marker naming a master of this pid
//!   namespace that is gone (no such pid, or the pid reused by a later
//!   process) marks a leftover;
//! - a program that rewrites what `/proc` shows of its environment (Perl,
//!   renaming its FCGI::ProcManager servers) still holds the listening
//!   socket its worker was started with, bound in the socket directory of
//!   the master that is gone (`m<pid>`, which this master removes next).
//!
//! A master that is alive, such as the one handing over in `herd ctl
//! upgrade` or another herd on the same host, keeps its processes. Under
//! systemd the unit's control group does the same at once; this covers
//! everything else.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The environment variable that marks a process as started by a master.
pub const ENV: &str = "HERD_MASTER";

/// This master's marker value: its pid and start time, which together name
/// one process for as long as the system runs, and its pid namespace, in
/// which alone the pid means that process.
pub fn marker() -> String {
    let pid = std::process::id();
    let started = start_time(pid).unwrap_or(0);
    match pid_namespace() {
        Some(ns) => format!("{pid}.{started}.{ns}"),
        None => format!("{pid}.{started}"),
    }
}

/// The inode of this process's pid namespace (`/proc/self/ns/pid` reads
/// `pid:[4026531836]`).
fn pid_namespace() -> Option<u64> {
    let link = fs::read_link("/proc/self/ns/pid").ok()?;
    link.to_str()?
        .strip_prefix("pid:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Kills what dead masters left behind, their sockets under
/// `socket_base`; returns the pids killed.
pub fn sweep(socket_base: &Path) -> Vec<u32> {
    let mine = std::process::id();
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let stale = stale_sockets(socket_base);
    let mut killed = Vec::new();
    for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        if pid == mine {
            continue;
        }
        let left = marker_of(pid).is_some_and(|m| is_gone(&m)) || holds_any(pid, &stale);
        if left && kill(Pid::from_raw(pid as i32), Signal::SIGKILL).is_ok() {
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

/// The inodes of the unix sockets bound in the socket directories of
/// masters that are gone (`<base>/m<pid>/...`), from `/proc/net/unix`.
fn stale_sockets(base: &Path) -> HashSet<u64> {
    let Ok(table) = fs::read_to_string("/proc/net/unix") else {
        return HashSet::new();
    };
    let prefix = format!("{}/m", base.display());
    let dead = |dir: &str| {
        dir.parse::<i32>()
            .is_ok_and(|pid| kill(Pid::from_raw(pid), None).is_err())
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            // Num RefCount Protocol Flags Type St Inode Path
            let fields: Vec<&str> = line.split_whitespace().collect();
            let path = fields.get(7)?;
            let (master, _) = path.strip_prefix(&prefix)?.split_once('/')?;
            dead(master).then(|| fields[6].parse().ok())?
        })
        .collect()
}

/// Whether `pid` holds one of the `sockets` (by inode) open.
fn holds_any(pid: u32, sockets: &HashSet<u64>) -> bool {
    if sockets.is_empty() {
        return false;
    }
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        fs::read_link(fd.path()).ok().is_some_and(|target| {
            target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|inode| sockets.contains(&inode))
        })
    })
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

/// Whether the master a marker names no longer runs. A master in another
/// pid namespace is not ours to judge: a herd in a container is PID 1 there
/// and something else here, and a host's herd sees its processes.
fn is_gone(marker: &str) -> bool {
    let mut fields = marker.split('.');
    let (Some(pid), Some(started), ns) = (fields.next(), fields.next(), fields.next()) else {
        return false; // not ours to judge
    };
    let (Ok(pid), Ok(started)) = (pid.parse::<u32>(), started.parse::<u64>()) else {
        return false;
    };
    if let Some(ns) = ns
        && ns.parse::<u64>().ok() != pid_namespace()
    {
        return false;
    }
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
        let f: Vec<&str> = m.split('.').collect();
        let (pid, started) = (f[0], f[1].parse::<u64>().unwrap());
        assert!(started > 0);
        // The same pid with another start time is a reused pid: gone.
        let reused = format!("{pid}.{}.{}", started + 1, f[2]);
        assert!(is_gone(&reused));
        // So it is in a marker written before the namespace was in it.
        assert!(is_gone(&format!("{pid}.{}", started + 1)));
    }

    #[test]
    fn a_master_in_another_pid_namespace_is_not_judged() {
        let ns = pid_namespace().expect("/proc/self/ns/pid");
        // PID 1 of a container, seen from here: whatever our pid 1 is.
        assert!(!is_gone(&format!("1.12345.{}", ns + 1)));
        assert!(is_gone(&format!("1.12345.{ns}")));
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
        // Until the child has exec'd, /proc shows the parent's environment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut seen = marker_of(child.id());
        while seen.is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
            seen = marker_of(child.id());
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(seen, Some(mine));
    }
}
