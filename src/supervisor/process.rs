//! The task that owns one worker process: it waits for the exit, and it is
//! the only place that signals the process, so a signal can never reach a
//! reused pid once the exit has been reaped.

use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::sync::mpsc;

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
                status = child.wait() => break status,
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

/// Signals the child unless it has been reaped already (then `id()` is
/// `None` and the pid may belong to someone else).
fn signal_child(child: &Child, signal: Signal) {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), signal);
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
