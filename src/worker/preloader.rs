//! `spawn = preload`: the application is loaded once, in a preloader
//! process, and every worker is forked from it, sharing what preload built
//! copy-on-write.
//!
//! herd starts the program with `HERD_PRELOAD_FD` naming a `SOCK_SEQPACKET`
//! socket to the master. Messages, one per packet, in text:
//!
//! ```text
//! preloader → master   ready | error <text>
//! master → preloader   fork <worker>            (with the worker's listening socket, SCM_RIGHTS)
//! preloader → master   forked <worker> <pid> | failed <worker> <text>
//! preloader → master   exited <pid> <raw wait status>
//! ```
//!
//! The preloader never serves. It stays single-threaded (a fork copies one
//! thread only), reaps its workers and reports their exits, and exits when
//! the master closes the socket; its workers die with it
//! (`PR_SET_PDEATHSIG`), as it dies with the master.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use super::{
    App, EXIT_CONFIG, EXIT_WORKER_INIT, Listener, ensure_single_threaded, load, log, panic, serve,
};

/// The environment variable that names the control socket's fd.
pub const ENV: &str = "HERD_PRELOAD_FD";

/// Runs the preloader on the control socket `fd`.
pub fn run<A: App>(fd: RawFd) -> ExitCode {
    // SAFETY: herd passed this fd for us alone; we own it from here.
    let ctl = unsafe { OwnedFd::from_raw_fd(fd) };
    let app = match load::<A>() {
        Ok(app) => app,
        Err(e) => {
            let text = format!("{e}");
            log(format_args!("{text}"));
            let _ = send(&ctl, &format!("error {text}"), None);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if send(&ctl, "ready", None).is_err() {
        return ExitCode::SUCCESS; // the master is gone
    }
    match Preloader::new(ctl) {
        Ok(p) => p.serve(app),
        Err(e) => {
            log(format_args!("preloader failed to start: {e}"));
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

struct Preloader {
    ctl: OwnedFd,
    sigchld: SignalFd,
    mask: SigSet,
}

impl Preloader {
    fn new(ctl: OwnedFd) -> nix::Result<Preloader> {
        // SIGCHLD comes through a signalfd, so waiting on the control
        // socket and on exits is one poll() with no handler.
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        mask.thread_block()?;
        let sigchld = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
        Ok(Preloader { ctl, sigchld, mask })
    }

    fn serve<A: App>(self, app: A) -> ExitCode {
        loop {
            let mut fds = [
                PollFd::new(self.ctl.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.sigchld.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log(format_args!("preloader: poll failed: {e}"));
                    return ExitCode::from(1);
                }
            }
            let exits = fds[1].revents().is_some_and(|r| !r.is_empty());
            let ctl = fds[0].revents().is_some_and(|r| !r.is_empty());
            if exits {
                self.report_exits();
            }
            if ctl {
                match self.receive() {
                    Ok(Some((worker, listener))) => self.fork_worker(&app, worker, listener),
                    Ok(None) => return ExitCode::SUCCESS, // the master closed the socket
                    Err(e) => log(format_args!("preloader: bad message from the master: {e}")),
                }
            }
        }
    }

    /// One `fork <worker>` message and its listening socket; `None` at EOF.
    fn receive(&self) -> Result<Option<(String, OwnedFd)>, String> {
        let mut buf = [0u8; 512];
        let mut space = nix::cmsg_space!([RawFd; 2]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            self.ctl.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| e.to_string())?;
        let mut fds: Vec<OwnedFd> = Vec::new();
        for c in msg.cmsgs().map_err(|e| e.to_string())? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: the kernel just installed these fds for us.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let len = msg.bytes;
        if len == 0 {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&buf[..len]).into_owned();
        let worker = text
            .strip_prefix("fork ")
            .ok_or_else(|| format!("unknown message '{text}'"))?;
        let listener = fds.pop().ok_or("fork without a socket")?;
        Ok(Some((worker.to_string(), listener)))
    }

    fn fork_worker<A: App>(&self, app: &A, worker: String, listener: OwnedFd) {
        if let Err(e) = ensure_single_threaded() {
            let _ = send(&self.ctl, &format!("failed {worker} {e}"), None);
            return;
        }
        let master = nix::unistd::getpid();
        // SAFETY: the process is single-threaded (checked just above), so the
        // child starts with a consistent heap and no lock held by another
        // thread.
        match unsafe { fork() } {
            Err(e) => {
                let _ = send(&self.ctl, &format!("failed {worker} fork: {e}"), None);
            }
            Ok(ForkResult::Parent { child }) => {
                drop(listener);
                let _ = send(&self.ctl, &format!("forked {worker} {child}"), None);
            }
            Ok(ForkResult::Child) => {
                let code = self.become_worker(app, &worker, listener, master);
                std::process::exit(code as i32);
            }
        }
    }

    /// In the forked child: drop the preloader's own plumbing, tie the
    /// worker's life to the preloader's, and serve.
    fn become_worker<A: App>(
        &self,
        app: &A,
        worker: &str,
        listener: OwnedFd,
        preloader: Pid,
    ) -> u8 {
        let _ = self.mask.thread_unblock();
        // SAFETY: single-threaded child; these only change this process. The
        // control socket and signalfd are closed by number: their owners
        // live in the preloader's frames, which this process never returns
        // to (it leaves through process::exit), so nothing closes them twice.
        // Closing the socket matters: the master learns of the preloader's
        // death from its end of it.
        unsafe {
            libc::close(self.ctl.as_raw_fd());
            libc::close(self.sigchld.as_fd().as_raw_fd());
            std::env::remove_var(ENV);
            std::env::set_var("HERD_WORKER", worker);
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
        }
        if nix::unistd::getppid() != preloader {
            return 1; // the preloader died while we were being forked
        }
        let listener = match Listener::from_fd(listener) {
            Ok(l) => l,
            Err(e) => {
                log(format_args!("{e}"));
                return super::EXIT_USAGE;
            }
        };
        // The worker's own copy of the application (pages it never writes
        // stay shared with the preloader).
        // SAFETY: this is the forked child: the value behind `app` is never
        // used or dropped again in this process, which only leaves through
        // process::exit, so reading it out does not duplicate an owner.
        let mut app: A = unsafe { std::ptr::read(app) };
        match panic::catch(|| app.worker_init()) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                log(format_args!("failed to initialize the worker: {e:#}"));
                return EXIT_WORKER_INIT;
            }
            Err(p) => {
                log(format_args!("worker_init {p}"));
                return EXIT_WORKER_INIT;
            }
        }
        serve(&listener, &app).exit_code()
    }

    /// Reaps every worker that exited and tells the master its status.
    fn report_exits(&self) {
        while let Ok(Some(_)) = self.sigchld.read_signal() {}
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => {
                    let Some(pid) = status.pid() else { continue };
                    let raw = match status {
                        WaitStatus::Exited(_, code) => (code & 0xff) << 8,
                        WaitStatus::Signaled(_, sig, core) => {
                            sig as i32 | if core { 0x80 } else { 0 }
                        }
                        _ => continue,
                    };
                    let _ = send(&self.ctl, &format!("exited {pid} {raw}"), None);
                }
            }
        }
    }
}

/// Sends one message, with an fd when given.
pub fn send(ctl: &OwnedFd, text: &str, fd: Option<RawFd>) -> nix::Result<()> {
    let iov = [IoSlice::new(text.as_bytes())];
    let fds = fd.map(|f| [f]);
    let cmsg: Vec<ControlMessage<'_>> = fds
        .as_ref()
        .map(|f| ControlMessage::ScmRights(f))
        .into_iter()
        .collect();
    sendmsg::<()>(ctl.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None).map(|_| ())
}
