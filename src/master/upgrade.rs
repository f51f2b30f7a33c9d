//! `herd ctl upgrade`: replacing the master binary without refusing or
//! resetting a connection. The old master starts the new binary (the path
//! it was started from, so an upgraded package is picked up) with its
//! listening sockets and control socket inherited (`HERD_LISTENERS`) and
//! the write end of a pipe (`HERD_UPGRADE_FD`). The new master starts its
//! own workers through the readiness gate and writes `ready` when every
//! pool is serving; both masters accept from the same sockets meanwhile.
//! Then the old one stops accepting, leaves the sockets to the new one,
//! finishes what it has in flight and exits. If the new master fails or is
//! not ready in time, it is stopped and the old one serves on.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::error::UpgradeError;
use super::{Internal, Master};
use crate::router::inherit;
use crate::supervisor::strays;

/// Where the new master finds the pipe it reports readiness on.
pub const ENV: &str = "HERD_UPGRADE_FD";

/// The old master's newest generation of each pool: `POOL=N;POOL=N`.
pub const GENERATIONS_ENV: &str = "HERD_GENERATIONS";

/// The generation a pool's first workers get: 1, or the one after the old
/// master's on an upgrade.
pub fn first_generation(pool: &str) -> u32 {
    std::env::var(GENERATIONS_ENV)
        .ok()
        .and_then(|list| {
            list.split(';').find_map(|kv| {
                kv.split_once('=')
                    .filter(|(k, _)| *k == pool)
                    .and_then(|(_, v)| v.parse::<u32>().ok())
            })
        })
        .map_or(1, |n| n + 1)
}

impl Master {
    /// Starts the new master; the outcome comes back as an `Internal` event.
    pub(super) fn start_upgrade(&mut self) -> Result<u32, UpgradeError> {
        if std::process::id() == 1 {
            return Err(UpgradeError::Init);
        }
        let mut fds: Vec<(String, RawFd)> = self
            .pools
            .iter()
            .flat_map(|p| &p.listener_fds)
            .map(|(addr, fd)| (addr.to_string(), *fd))
            .collect();
        fds.push(("control".into(), self.control_fd));
        let list: Vec<String> = fds.iter().map(|(k, fd)| format!("{k}={fd}")).collect();
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(UpgradeError::Pipe)?;
        let write_fd = write.as_raw_fd();
        let mut keep: Vec<RawFd> = fds.iter().map(|(_, fd)| *fd).collect();
        keep.push(write_fd);

        // The new master's workers are the next generation of each pool.
        let generations: Vec<String> = self
            .pools
            .iter()
            .map(|p| format!("{}={}", p.pool.name, p.pool.deploy.borrow().generation))
            .collect();
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.args(self.args.iter().skip(1))
            .env(inherit::ENV, list.join(";"))
            .env(GENERATIONS_ENV, generations.join(";"))
            .env(ENV, write_fd.to_string())
            // systemd's watchdog is for the main pid, which becomes the new
            // master's: without the old pid it pings as "for us".
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null());
        // SAFETY: runs in the forked child before exec: fcntl only, on fds
        // that are open in the parent (the listeners live in their accept
        // loops, the pipe end in `write`).
        unsafe {
            cmd.pre_exec(move || {
                for fd in &keep {
                    if libc::fcntl(*fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = strays::own(|| cmd.spawn()).map_err(|source| UpgradeError::Start {
            exe: self.exe.clone(),
            source,
        })?;
        drop(write);
        let pid = child.id().unwrap_or(0);
        tracing::info!(
            "upgrade: started a new master, pid {pid} ({}); waiting for it to be ready",
            self.exe.display()
        );
        let internal = self.internal.clone();
        let limit = self.upgrade_timeout();
        tokio::spawn(async move {
            let outcome = tokio::select! {
                ready = wait_ready(read) => match ready {
                    Ok(()) => Internal::UpgradeReady(pid),
                    Err(e) => Internal::UpgradeFailed(format!("the new master failed: {e}")),
                },
                status = child.wait() => Internal::UpgradeFailed(format!("the new master exited ({})", status.map(|s| s.to_string()).unwrap_or_default())),
                _ = tokio::time::sleep(limit) => {
                    let _ = child.start_kill();
                    Internal::UpgradeFailed(format!("the new master was not ready within {limit:?}"))
                }
            };
            if let Internal::UpgradeFailed(_) = outcome {
                // Never leave a half-started master behind.
                let _ = child.start_kill();
                let _ = child.wait().await;
                strays::disown(pid);
            }
            let _ = internal.send(outcome);
        });
        Ok(pid)
    }

    /// Time for the new master to load its config and get every pool's
    /// first workers through their gate.
    fn upgrade_timeout(&self) -> Duration {
        let starts = self
            .config
            .pools
            .iter()
            .map(|p| p.worker_start_timeout + p.warmup_timeout)
            .max()
            .unwrap_or_default();
        starts + Duration::from_secs(10)
    }
}

/// Reads the pipe until the new master writes `ready`.
async fn wait_ready(read: OwnedFd) -> std::io::Result<()> {
    let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(read)?;
    let mut got = Vec::new();
    let mut chunk = [0u8; 64];
    while !got.starts_with(b"ready") {
        let n = pipe.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other(
                "it closed the pipe without saying ready",
            ));
        }
        got.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}

/// In the new master, first thing: the pipe to the old master must not
/// leak into workers (it would keep the old one waiting for ever).
pub fn claim_pipe() -> Option<OwnedFd> {
    let fd = std::env::var(ENV).ok()?.parse::<RawFd>().ok()?;
    // SAFETY: the old master passed us this pipe end, once, for us alone.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let _ = nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    Some(fd)
}

/// In the new master: says `ready` to the old one.
pub fn report_ready(pipe: OwnedFd) {
    use std::io::Write;
    let _ = std::fs::File::from(pipe).write_all(b"ready\n");
}
