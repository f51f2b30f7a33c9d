//! Reaping what herd inherits as a container's init.
//!
//! Run as PID 1 (Docker's `CMD ["herd", "run", ...]`, where the official
//! PHP image runs php-fpm), herd is the parent every orphan in its pid
//! namespace is handed to: the children fcgiwrap or php-cgi
//! (`PHP_FCGI_CHILDREN`) forked, once herd retires their parent; a command
//! a script started in the background. Each becomes herd's child, and once
//! it exits a zombie that holds its pid until its parent waits for it. A
//! container's `pids.max` is often a few thousand, and every rollout of an
//! fcgiwrap pool of two children per worker left two more.
//!
//! tokio waits for the children herd spawned, each by its own pid; a
//! `waitpid(-1)` here would take their exit statuses from it. So every
//! spawn goes through [`own`], which notes the pid until tokio has reaped
//! it ([`disown`]), and on `SIGCHLD` [`run`] waits for each other child of
//! herd's that has exited, by its pid. Outside PID 1, orphans go to init
//! and [`run`] does nothing.

use std::collections::BTreeMap;
use std::fs;
use std::sync::{Mutex, MutexGuard};

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::signal::unix::{SignalKind, signal};

/// The pids herd spawned and tokio has not reaped yet, with how many
/// spawns hold each (a pid reused between a reap and its [`disown`] would
/// otherwise lose its entry).
static OWNED: Mutex<BTreeMap<u32, u32>> = Mutex::new(BTreeMap::new());

fn owned() -> MutexGuard<'static, BTreeMap<u32, u32>> {
    OWNED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Spawns with `spawn` and notes the child as herd's own. The note is
/// taken under the lock [`run`] reaps under, so no child exits unnoted.
pub fn own<E>(spawn: impl FnOnce() -> Result<Child, E>) -> Result<Child, E> {
    let mut owned = owned();
    let child = spawn()?;
    if let Some(pid) = child.id() {
        *owned.entry(pid).or_default() += 1;
    }
    Ok(child)
}

/// tokio has reaped `pid`.
pub fn disown(pid: u32) {
    let mut owned = owned();
    if let Some(n) = owned.get_mut(&pid) {
        *n -= 1;
        if *n == 0 {
            owned.remove(&pid);
        }
    }
}

/// As PID 1, reaps every exited child herd did not spawn, at each
/// `SIGCHLD`, for as long as the master runs.
pub async fn run() {
    if std::process::id() != 1 {
        return;
    }
    let mut chld = match signal(SignalKind::child()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("as PID 1, cannot watch SIGCHLD ({e}): orphans' zombies stay");
            return;
        }
    };
    while chld.recv().await.is_some() {
        let reaped = reap();
        if !reaped.is_empty() {
            tracing::debug!("reaped {} orphaned processes: {reaped:?}", reaped.len());
        }
    }
}

/// Waits for each exited child of this process that it did not spawn;
/// returns their pids.
fn reap() -> Vec<u32> {
    reap_from(zombie_children(std::process::id()))
}

/// Waits for each of `zombies` that herd did not spawn; returns their pids.
fn reap_from(zombies: Vec<u32>) -> Vec<u32> {
    let owned = owned();
    zombies
        .into_iter()
        .filter(|pid| !owned.contains_key(pid))
        .filter(|&pid| {
            matches!(
                waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)),
                Ok(s) if s != WaitStatus::StillAlive
            )
        })
        .collect()
}

/// The children of `parent` that have exited and wait to be reaped
/// (state `Z` in `/proc/<pid>/stat`).
fn zombie_children(parent: u32) -> Vec<u32> {
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // After the command name (which may hold anything): state, ppid.
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                return false;
            };
            let mut fields = after.split_whitespace();
            fields.next() == Some("Z") && fields.next() == Some(&*parent.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A child that exits at once, and is a zombie until waited for (here,
    /// by the test's own `reap_from`).
    #[allow(clippy::zombie_processes)]
    fn exited_child() -> u32 {
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !zombie_children(std::process::id()).contains(&pid) {
            assert!(Instant::now() < deadline, "{pid} never exited");
            std::thread::sleep(Duration::from_millis(5));
        }
        pid
    }

    // Other tests of this binary may have children of their own: this one
    // reaps only its two.
    #[test]
    fn reaps_an_exited_child_it_does_not_own_and_leaves_one_it_owns() {
        let stray = exited_child();
        let mine = exited_child();
        *owned().entry(mine).or_default() += 1;
        assert_eq!(reap_from(vec![stray, mine]), [stray]);
        let zombies = zombie_children(std::process::id());
        assert!(!zombies.contains(&stray), "{zombies:?}");
        assert!(zombies.contains(&mine), "{zombies:?}");
        disown(mine);
        assert_eq!(reap_from(vec![mine]), [mine]);
    }
}
