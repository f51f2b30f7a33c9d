//! A stand-in for systemd's notification socket (`NOTIFY_SOCKET`): a unix
//! datagram socket in the test's directory that records every message
//! with the sender's pid (`SO_PASSCRED`, as systemd reads it) and the time
//! it arrived.

use std::io::IoSliceMut;
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, UnixCredentials, recvmsg, setsockopt, sockopt,
};

/// One datagram: `KEY=VALUE` lines.
#[derive(Clone, Debug)]
pub struct Message {
    pub at: Instant,
    /// The sending process, from its credentials.
    pub pid: Option<u32>,
    pub text: String,
}

impl Message {
    /// Whether the message has exactly this line (`READY=1`).
    pub fn has(&self, line: &str) -> bool {
        self.text.lines().any(|l| l == line)
    }

    /// The value of `KEY=` in the message.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.text
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    }
}

pub struct NotifySocket {
    sock: UnixDatagram,
    pub path: PathBuf,
    /// Every message received so far, in order.
    pub seen: Vec<Message>,
}

impl NotifySocket {
    pub fn bind(path: &Path) -> NotifySocket {
        let _ = std::fs::remove_file(path);
        let sock = UnixDatagram::bind(path).expect("bind the notify socket");
        setsockopt(&sock, sockopt::PassCred, &true).expect("SO_PASSCRED");
        NotifySocket {
            sock,
            path: path.to_path_buf(),
            seen: Vec::new(),
        }
    }

    /// The next message, or `None` if none came within `within`.
    pub fn recv(&mut self, within: Duration) -> Option<Message> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            if left.is_zero() {
                return None;
            }
            self.sock.set_read_timeout(Some(left)).unwrap();
            let mut buf = vec![0u8; 4096];
            let mut cmsg = nix::cmsg_space!(UnixCredentials);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let fd = self.sock.as_fd();
            let got = recvmsg::<()>(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::empty(),
            );
            let (n, pid) = match got {
                Ok(msg) => {
                    let pid = msg.cmsgs().ok().and_then(|mut c| {
                        c.find_map(|m| match m {
                            ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid() as u32),
                            _ => None,
                        })
                    });
                    (msg.bytes, pid)
                }
                Err(nix::errno::Errno::EAGAIN) => return None,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => panic!("recvmsg on the notify socket: {e}"),
            };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let m = Message {
                at: Instant::now(),
                pid,
                text,
            };
            self.seen.push(m.clone());
            return Some(m);
        }
    }

    /// Reads messages until one satisfies `pred` and returns it; panics
    /// naming `what`, with every message seen, at the deadline.
    pub fn wait(
        &mut self,
        what: &str,
        within: Duration,
        mut pred: impl FnMut(&Message) -> bool,
    ) -> Message {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Some(m) if pred(&m) => return m,
                Some(_) => {}
                None => panic!(
                    "timed out after {within:?} waiting for {what}; messages so far:\n{:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Every message that arrives within `during`.
    pub fn collect(&mut self, during: Duration) -> Vec<Message> {
        let deadline = Instant::now() + during;
        let mut got = Vec::new();
        while let Some(m) = self.recv(deadline.saturating_duration_since(Instant::now())) {
            got.push(m);
        }
        got
    }
}
