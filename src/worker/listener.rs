//! The socket a worker accepts connections on: fd 0, as the FastCGI spec
//! hands it to every application (herd's exec mode, spawn-fcgi, ...), or
//! an address given with `--listen` for running the program alone.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt};
use socket2::Socket;

use super::log;

/// Why there is no socket to serve on.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(
        "fd 0 is not a listening socket: run this program under herd or another FastCGI \
         manager (spawn-fcgi, ...), or pass --listen HOST:PORT"
    )]
    NotListening,
    #[error("failed to listen on {addr}: {source}")]
    Bind { addr: String, source: io::Error },
}

/// A listening socket, blocking: the worker has nothing else to wait for.
#[derive(Debug)]
pub struct Listener {
    sock: Socket,
}

impl Listener {
    /// Takes fd 0, once checked to be a listening socket.
    pub fn from_stdin() -> Result<Listener, ListenError> {
        let fd = io::stdin().as_raw_fd();
        // SAFETY: fd 0 is open for the whole life of the process; it is only
        // borrowed for the check.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        if !matches!(getsockopt(&borrowed, sockopt::AcceptConn), Ok(true)) {
            return Err(ListenError::NotListening);
        }
        // SAFETY: fd 0 is a listening socket (checked above) that nothing
        // else in this process reads; the listener owns it from now on.
        Listener::from_fd(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// A listening socket received some other way (a preloader's).
    pub fn from_fd(fd: OwnedFd) -> Result<Listener, ListenError> {
        if !matches!(getsockopt(&fd.as_fd(), sockopt::AcceptConn), Ok(true)) {
            return Err(ListenError::NotListening);
        }
        let sock = Socket::from(fd);
        // A manager may hand the socket over non-blocking; this process
        // only ever waits in accept().
        sock.set_nonblocking(false)
            .map_err(|source| ListenError::Bind {
                addr: "fd 0".into(),
                source,
            })?;
        Ok(Listener { sock })
    }

    /// Listens on `host:port`, or on a unix socket path (anything with a
    /// `/`), for running without a manager.
    pub fn bind(addr: &str) -> Result<Listener, ListenError> {
        let bound = if addr.contains('/') {
            UnixListener::bind(addr).map(Socket::from)
        } else {
            TcpListener::bind(addr).map(Socket::from)
        };
        let sock = bound.map_err(|source| ListenError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        Ok(Listener { sock })
    }

    /// The next connection. Errors a peer causes are skipped, running out
    /// of descriptors backs off; any other error is the listener's own and
    /// ends serving.
    pub fn accept(&self) -> io::Result<Socket> {
        loop {
            let err = match self.sock.accept() {
                Ok((sock, _)) => {
                    let _ = sock.set_tcp_nodelay(true); // TCP only; unix sockets refuse
                    return Ok(sock);
                }
                Err(e) => e,
            };
            match err.raw_os_error().unwrap_or(0) {
                libc::EINTR
                | libc::ECONNABORTED
                | libc::EPROTO
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::EAGAIN => {}
                libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM => {
                    log(format_args!("failed to accept: {err}; retrying in 100 ms"));
                    std::thread::sleep(Duration::from_millis(100));
                }
                _ => return Err(err),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_that_does_not_listen_is_refused() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = Listener::from_fd(OwnedFd::from(a)).unwrap_err();
        assert!(matches!(err, ListenError::NotListening));
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(Listener::from_fd(OwnedFd::from(file)).is_err());
    }

    #[test]
    fn bind_and_accept_over_tcp() {
        let l = Listener::bind("127.0.0.1:0").unwrap();
        let addr = l.sock.local_addr().unwrap().as_socket().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        assert!(l.accept().is_ok());
        let taken = addr.to_string();
        let err = Listener::bind(&taken).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("failed to listen on {taken}: ")),
            "{err}"
        );
    }
}
