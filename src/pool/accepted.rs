//! Whether a php-fpm child has taken a connection herd opened ahead.
//!
//! A unix stream connection is complete on the client's side as soon as
//! `connect()` returns; its server end waits in the listener's queue until
//! a process calls `accept()`, and only then does it get a socket inode of
//! its own. The kernel's socket diagnostics (`sock_diag(7)`, a netlink
//! protocol) report a connected socket's peer by that inode number: 0 for
//! a server end nobody accepted yet (or one its child has since closed),
//! its inode once a child holds it.
//!
//! By hand rather than with netlink-packet-sock-diag: the one question
//! asked is a fixed 40-byte request and a 4-byte attribute read back, on
//! the dispatch path under the pool's lock, where the crate's message
//! types would allocate for every answer.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `UDIAG_SHOW_PEER`: report `UNIX_DIAG_PEER`.
const UDIAG_SHOW_PEER: u32 = 1 << 2;
const UNIX_DIAG_PEER: u16 = 2;
const HEADER: usize = 16;
/// `struct unix_diag_msg`: family, type, state, pad, inode, cookie.
const DIAG_MSG: usize = 16;

/// A netlink socket for `sock_diag` questions.
#[derive(Debug)]
pub struct Accepted {
    fd: OwnedFd,
    seq: u32,
}

impl Accepted {
    pub fn open() -> io::Result<Accepted> {
        // SAFETY: plain system call; a valid descriptor is owned at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Accepted { fd, seq: 0 })
    }

    /// Whether the server end of the connection `socket` (a connected unix
    /// stream socket of ours) is held by a process that accepted it.
    pub fn check(&mut self, socket: &impl AsRawFd) -> io::Result<bool> {
        Ok(self.peer_inode(inode(socket)?)? != 0)
    }

    /// The inode of the peer of our unix socket with inode `ino`.
    fn peer_inode(&mut self, ino: u32) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut req = [0u8; HEADER + 24];
        put_u32(&mut req, 0, (HEADER + 24) as u32);
        req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
        put_u32(&mut req, 8, self.seq);
        // struct unix_diag_req
        req[HEADER] = libc::AF_UNIX as u8;
        put_u32(&mut req, HEADER + 4, u32::MAX); // every state
        put_u32(&mut req, HEADER + 8, ino);
        put_u32(&mut req, HEADER + 12, UDIAG_SHOW_PEER);
        put_u32(&mut req, HEADER + 16, u32::MAX); // no cookie
        put_u32(&mut req, HEADER + 20, u32::MAX);
        let fd = self.fd.as_raw_fd();
        // SAFETY: `req` is valid for its length; a null address sends to
        // the kernel (the socket's default destination).
        let sent = unsafe { libc::send(fd, req.as_ptr().cast(), req.len(), libc::MSG_NOSIGNAL) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = [0u8; 256];
        loop {
            // The kernel answers while handling the send: the reply is
            // queued already, and a missing one is an error, not a wait.
            // SAFETY: `buf` is valid for writes of its length.
            let n =
                unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let reply = &buf[..n as usize];
            if reply.len() < HEADER {
                return Err(io::Error::other("short sock_diag reply"));
            }
            // A stale answer (to a question whose reply was never read)
            // is skipped.
            if get_u32(reply, 8) != self.seq {
                continue;
            }
            return parse_peer(reply);
        }
    }
}

/// The `UNIX_DIAG_PEER` of a reply: 0 when the socket has no peer.
fn parse_peer(reply: &[u8]) -> io::Result<u32> {
    let len = (get_u32(reply, 0) as usize).min(reply.len());
    let kind = u16::from_ne_bytes([reply[4], reply[5]]);
    if kind == libc::NLMSG_ERROR as u16 {
        let errno = reply
            .get(HEADER..HEADER + 4)
            .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
            .unwrap_or(0);
        return Err(io::Error::from_raw_os_error(-errno));
    }
    if kind != SOCK_DIAG_BY_FAMILY || len < HEADER + DIAG_MSG {
        return Err(io::Error::other("unexpected sock_diag reply"));
    }
    let mut at = HEADER + DIAG_MSG;
    while at + 4 <= len {
        let attr_len = u16::from_ne_bytes([reply[at], reply[at + 1]]) as usize;
        let attr_kind = u16::from_ne_bytes([reply[at + 2], reply[at + 3]]);
        if attr_len < 4 {
            break;
        }
        if attr_kind == UNIX_DIAG_PEER && attr_len >= 8 && at + 8 <= len {
            return Ok(get_u32(reply, at + 4));
        }
        at += (attr_len + 3) & !3;
    }
    Ok(0)
}

/// The inode number of `socket`, as `sock_diag` knows it (32 bits).
fn inode(socket: &impl AsRawFd) -> io::Result<u32> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills `st` when it returns 0.
    if unsafe { libc::fstat(socket.as_raw_fd(), st.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: initialised by the successful fstat above.
    let ino = unsafe { st.assume_init() }.st_ino;
    u32::try_from(ino).map_err(|_| io::Error::other("socket inode past 32 bits"))
}

/// An [`Accepted`] opened when first needed. A kernel that cannot answer
/// (no `unix_diag`, or a sandbox that forbids netlink) is told once and not
/// asked again: its questions are answered `None`.
#[derive(Debug, Default)]
pub enum Diag {
    #[default]
    Unopened,
    Open(Accepted),
    Unavailable,
}

impl Diag {
    /// [`Accepted::check`], or `None` when the kernel cannot tell.
    pub fn check(&mut self, socket: &impl AsRawFd) -> Option<bool> {
        if matches!(self, Diag::Unopened) {
            *self = match Accepted::open() {
                Ok(a) => Diag::Open(a),
                Err(e) => unavailable(e),
            };
        }
        let Diag::Open(a) = self else {
            return None;
        };
        match a.check(socket) {
            Ok(held) => Some(held),
            Err(e) => {
                *self = unavailable(e);
                None
            }
        }
    }
}

fn unavailable(e: io::Error) -> Diag {
    tracing::info!(
        "the kernel cannot say which connections php-fpm's children hold (sock_diag: {e}): while one waits to be taken, a request goes to the child idle longest"
    );
    Diag::Unavailable
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn get_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixListener, UnixStream};

    #[test]
    fn a_connection_counts_as_accepted_once_a_process_accepts_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = UnixListener::bind(&path).unwrap();
        let mut diag = Accepted::open().unwrap();
        let first = UnixStream::connect(&path).unwrap();
        let second = UnixStream::connect(&path).unwrap();
        assert!(!diag.check(&first).unwrap(), "waiting in the queue");
        assert!(!diag.check(&second).unwrap(), "waiting in the queue");
        let (held, _) = listener.accept().unwrap();
        assert!(diag.check(&first).unwrap(), "accepted");
        assert!(!diag.check(&second).unwrap(), "still waiting");
        // The server end closed again: no process holds it any more.
        drop(held);
        assert!(!diag.check(&first).unwrap(), "closed by its holder");
    }

    #[test]
    fn a_socket_that_is_gone_is_an_error() {
        let mut diag = Accepted::open().unwrap();
        // No socket has inode u32::MAX - 1 here.
        assert!(diag.peer_inode(u32::MAX - 1).is_err());
    }
}
