//! The master's side of `spawn = preload`: one preloader process per
//! generation, which loads and validates the application once and forks
//! each worker when asked (see `herd::worker::preloader` for its side and
//! the message format). This task owns the control socket: it sends fork
//! requests with the worker's listening socket, and turns the preloader's
//! messages into events for the supervisor and exit statuses for the
//! workers' watchers.

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, recvmsg, sendmsg, socketpair,
};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};

use super::process::register;
use crate::pool::WorkerId;

/// What a preloader tells its supervisor.
#[derive(Debug)]
pub enum Message {
    /// Preload and validate passed.
    Ready,
    /// They failed; the text is the application's.
    Failed(String),
    Forked {
        worker: WorkerId,
        pid: u32,
        exited: oneshot::Receiver<ExitStatus>,
    },
    ForkFailed {
        worker: WorkerId,
        reason: String,
    },
    /// The control socket closed: the preloader is gone.
    Gone,
}

/// The supervisor's handle to a preloader's control task.
#[derive(Debug)]
pub struct Control {
    forks: mpsc::UnboundedSender<(WorkerId, UnixListener)>,
}

impl Control {
    /// Asks for one more worker, serving on `listener`.
    pub fn fork(&self, worker: WorkerId, listener: UnixListener) {
        let _ = self.forks.send((worker, listener));
    }
}

/// The master's end of a new control socket and the end for the preloader
/// (to be passed as its fd 3).
pub fn socket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )?)
}

/// Starts the control task on the master's end; `deliver` gets every
/// message, in order.
pub fn start<F>(master_end: OwnedFd, deliver: F) -> std::io::Result<Control>
where
    F: Fn(Message) + Send + 'static,
{
    let fd = register(master_end, Interest::READABLE | Interest::WRITABLE)?;
    let (forks, mut requests) = mpsc::unbounded_channel::<(WorkerId, UnixListener)>();
    tokio::spawn(async move {
        let mut waiting: HashMap<u32, oneshot::Sender<ExitStatus>> = HashMap::new();
        loop {
            tokio::select! {
                req = requests.recv() => {
                    let Some((worker, listener)) = req else { break };
                    if let Err(e) = send_fork(&fd, worker, &listener).await {
                        deliver(Message::ForkFailed { worker, reason: format!("failed to reach the preloader: {e}") });
                    }
                }
                msg = recv(&fd) => match msg {
                    Ok(Some(text)) => {
                        if let Some(m) = parse(&text, &mut waiting) {
                            deliver(m);
                        }
                    }
                    Ok(None) | Err(_) => break,
                },
            }
        }
        deliver(Message::Gone);
    });
    Ok(Control { forks })
}

async fn send_fork(
    fd: &AsyncFd<OwnedFd>,
    worker: WorkerId,
    listener: &UnixListener,
) -> std::io::Result<()> {
    let text = format!("fork {worker}");
    let fds = [listener.as_raw_fd()];
    fd.async_io(Interest::WRITABLE, |f| {
        let iov = [IoSlice::new(text.as_bytes())];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        sendmsg::<()>(f.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)
            .map(|_| ())
            .map_err(std::io::Error::from)
    })
    .await
}

/// One message; `None` when the preloader closed its end.
async fn recv(fd: &AsyncFd<OwnedFd>) -> std::io::Result<Option<String>> {
    let mut buf = vec![0u8; 64 * 1024];
    let n = fd
        .async_io(Interest::READABLE, |f| {
            let mut iov = [IoSliceMut::new(&mut buf)];
            recvmsg::<()>(f.as_raw_fd(), &mut iov, None, MsgFlags::empty())
                .map(|m| m.bytes)
                .map_err(std::io::Error::from)
        })
        .await?;
    Ok((n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned()))
}

/// Turns one line of the preloader into a message (exit statuses go
/// straight to the worker's watcher).
fn parse(text: &str, waiting: &mut HashMap<u32, oneshot::Sender<ExitStatus>>) -> Option<Message> {
    let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
    match word {
        "ready" => Some(Message::Ready),
        "error" => Some(Message::Failed(rest.to_string())),
        "forked" => {
            let (worker, pid) = rest.split_once(' ')?;
            let (worker, pid) = (worker.parse().ok()?, pid.trim().parse().ok()?);
            let (tx, exited) = oneshot::channel();
            waiting.insert(pid, tx);
            Some(Message::Forked {
                worker,
                pid,
                exited,
            })
        }
        "failed" => {
            let (worker, reason) = rest.split_once(' ').unwrap_or((rest, "fork failed"));
            Some(Message::ForkFailed {
                worker: worker.parse().ok()?,
                reason: reason.to_string(),
            })
        }
        "exited" => {
            let (pid, raw) = rest.split_once(' ')?;
            let (pid, raw): (u32, i32) = (pid.parse().ok()?, raw.trim().parse().ok()?);
            if let Some(tx) = waiting.remove(&pid) {
                let _ = tx.send(ExitStatus::from_raw(raw));
            }
            None
        }
        _ => {
            tracing::warn!("preloader sent an unknown message: {text}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse() {
        let mut waiting = HashMap::new();
        assert!(matches!(parse("ready", &mut waiting), Some(Message::Ready)));
        assert!(
            matches!(parse("error validate: no new method", &mut waiting), Some(Message::Failed(t)) if t == "validate: no new method")
        );
        let Some(Message::Forked {
            worker: 7,
            pid: 1234,
            mut exited,
        }) = parse("forked 7 1234", &mut waiting)
        else {
            panic!()
        };
        assert!(parse(&format!("exited 1234 {}", 3 << 8), &mut waiting).is_none());
        assert_eq!(exited.try_recv().unwrap().code(), Some(3));
        assert!(matches!(
            parse("failed 8 fork: EAGAIN", &mut waiting),
            Some(Message::ForkFailed { worker: 8, .. })
        ));
    }
}
