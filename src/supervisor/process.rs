//! The task that owns one worker process: it waits for the exit, and it is
//! the only place that signals the process, so a signal can never reach a
//! reused pid once the exit has been reaped.
//!
//! A worker herd starts leads its own session and process group (see
//! `spawn`), and the worker is that whole group: every signal goes to the
//! group, and once the worker is reaped whatever it left in its group is
//! killed, so a program that forks (FCGI::ProcManager's `pm_manage`, php-cgi
//! with `PHP_FCGI_CHILDREN`, an app's helpers) never leaves a process behind.

use std::process::ExitStatus;
use std::time::Duration;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot};

/// A request to a process task.
#[derive(Clone, Copy, Debug)]
pub enum ProcessCommand {
    /// Send `signal`; if the process is still there after `grace`, SIGKILL.
    Stop {
        signal: Signal,
        grace: Duration,
    },
    Kill,
}

/// Handle kept by the supervisor.
#[derive(Clone, Debug)]
pub struct ProcessHandle {
    pub pid: u32,
    tx: mpsc::UnboundedSender<ProcessCommand>,
}

impl ProcessHandle {
    pub fn send(&self, cmd: ProcessCommand) {
        let _ = self.tx.send(cmd);
    }
}

/// Starts watching `child`; `on_exit` runs once with its exit status.
pub fn watch<F>(mut child: Child, on_exit: F) -> ProcessHandle
where
    F: FnOnce(std::io::Result<ExitStatus>) + Send + 'static,
{
    let pid = child.id().expect("a just-spawned child has a pid");
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut kill_at: Option<tokio::time::Instant> = None;
        let status = loop {
            let deadline = kill_at.unwrap_or_else(far_future);
            tokio::select! {
                status = child.wait() => {
                    super::strays::disown(pid);
                    // The group's id cannot be reused while any member is
                    // left, and this runs right after the reap.
                    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                    break status;
                }
                Some(cmd) = rx.recv() => match cmd {
                    ProcessCommand::Stop { signal, grace } => {
                        signal_child(&child, signal);
                        let at = tokio::time::Instant::now() + grace;
                        kill_at = Some(kill_at.map_or(at, |k| k.min(at)));
                    }
                    ProcessCommand::Kill => signal_child(&child, Signal::SIGKILL),
                },
                _ = tokio::time::sleep_until(deadline), if kill_at.is_some() => {
                    signal_child(&child, Signal::SIGKILL);
                    kill_at = None;
                }
            }
        };
        on_exit(status);
    });
    ProcessHandle { pid, tx }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86400 * 365)
}

/// Signals the child's process group unless the child has been reaped
/// already (then `id()` is `None` and the pid may belong to someone else).
fn signal_child(child: &Child, signal: Signal) {
    if let Some(pid) = child.id() {
        let pid = Pid::from_raw(pid as i32);
        // A child that has not reached its setpgid() yet is no group leader.
        if killpg(pid, signal).is_err() {
            let _ = kill(pid, signal);
        }
    }
}

/// `exited with code 3`, `killed by SIGSEGV`: for logs and status.
pub fn describe(status: &std::io::Result<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(sig)) => {
                let name = Signal::try_from(sig)
                    .map(|s| s.as_str())
                    .unwrap_or("unknown signal");
                let core = if s.core_dumped() {
                    " (core dumped)"
                } else {
                    ""
                };
                format!("killed by {name}{core}")
            }
            _ => format!("ended: {s}"),
        },
        Err(e) => format!("could not be waited for: {e}"),
    }
}

/// Watches a worker forked by a preloader. herd is not its parent, so its
/// exit status comes from the preloader (`exited`), its exit itself from a
/// pidfd (readable once the process is gone, even if the preloader died
/// first), and signals go through that pidfd, which cannot reach a reused
/// pid.
pub fn watch_forked<F>(
    pid: u32,
    exited: oneshot::Receiver<ExitStatus>,
    on_exit: F,
) -> std::io::Result<ProcessHandle>
where
    F: FnOnce(std::io::Result<ExitStatus>) + Send + 'static,
{
    let pidfd = register(pidfd_open(pid)?, Interest::READABLE)?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut exited = exited;
        let mut kill_at: Option<tokio::time::Instant> = None;
        let status = loop {
            let deadline = kill_at.unwrap_or_else(far_future);
            tokio::select! {
                status = &mut exited => break status.map_err(|_| lost()),
                _ = pidfd.readable() => {
                    // Gone; its preloader reports how, unless it is gone too.
                    break match tokio::time::timeout(Duration::from_secs(1), &mut exited).await {
                        Ok(Ok(status)) => Ok(status),
                        _ => Err(lost()),
                    };
                }
                Some(cmd) = rx.recv() => match cmd {
                    ProcessCommand::Stop { signal, grace } => {
                        pidfd_signal(pidfd.get_ref(), signal);
                        let at = tokio::time::Instant::now() + grace;
                        kill_at = Some(kill_at.map_or(at, |k| k.min(at)));
                    }
                    ProcessCommand::Kill => pidfd_signal(pidfd.get_ref(), Signal::SIGKILL),
                },
                _ = tokio::time::sleep_until(deadline), if kill_at.is_some() => {
                    pidfd_signal(pidfd.get_ref(), Signal::SIGKILL);
                    kill_at = None;
                }
            }
        };
        on_exit(status);
    });
    Ok(ProcessHandle { pid, tx })
}

/// Registers an owned fd with the reactor.
pub fn register(fd: OwnedFd, interest: Interest) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd stays open, and names the same descriptor, for as
    // long as it is owned, which is as long as the AsyncFd lives.
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(|e| e.into_parts().1)
}

fn lost() -> std::io::Error {
    std::io::Error::other("exit status unknown: its preloader is gone")
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn pidfd_signal(pidfd: &OwnedFd, signal: Signal) {
    // SAFETY: a signal to the process behind our own pidfd; no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
}
