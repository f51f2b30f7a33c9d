//! Sockets on the request path that wake the master only when there is
//! something to read.
//!
//! tokio registers each of its streams for readability and writability,
//! edge-triggered. A socket turns writable again each time its peer reads
//! what was written to it, so every piece of a response nginx read, and
//! every request a worker read, woke the master's thread with nothing to
//! do: no task waits to write while the socket has room. On a page that
//! PHP flushes in pieces (DokuWiki's) that was a third of the master's
//! wakeups, each a pair of context switches on the cores PHP runs on.
//!
//! A [`Quiet`] socket is registered for readability only. Writes go straight
//! to the socket; only when its buffer is full does the writer register a
//! duplicate of the descriptor for writability, wait on it, and drop it once
//! the write went through.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// A connected, non-blocking stream socket (TCP or unix).
#[derive(Debug)]
pub struct Quiet {
    // Dropped first: the duplicate goes before the socket closes.
    waiter: Waiter,
    io: AsyncFd<OwnedFd>,
    /// Read once before asking the reactor: set for a connection fresh from
    /// the backlog, whose client usually sent its request with the connect.
    eager: bool,
}

/// The writability registration a blocked writer makes, while it is blocked.
#[derive(Debug, Default)]
struct Waiter(Option<AsyncFd<OwnedFd>>);

impl Quiet {
    /// Takes a connected socket, which must be in non-blocking mode.
    pub fn new(socket: impl Into<OwnedFd>) -> io::Result<Quiet> {
        Ok(Quiet {
            waiter: Waiter::default(),
            io: register(socket.into(), Interest::READABLE)?,
            eager: false,
        })
    }

    /// Takes a connection just accepted: its first read is tried at once,
    /// which saves a trip through the reactor when the request came with it.
    pub fn accepted(socket: impl Into<OwnedFd>) -> io::Result<Quiet> {
        let mut q = Quiet::new(socket)?;
        q.eager = true;
        Ok(q)
    }

    /// Connects to a unix socket. A unix connect completes at once or fails
    /// (`EAGAIN` when the listener's backlog is full), so there is nothing to
    /// wait for.
    pub fn connect_unix(path: &Path) -> io::Result<Quiet> {
        let sock = socket2::Socket::new(
            socket2::Domain::UNIX,
            socket2::Type::STREAM.nonblocking().cloexec(),
            None,
        )?;
        sock.connect(&socket2::SockAddr::unix(path)?)?;
        Quiet::new(sock)
    }

    /// Borrowed halves, to read and write at once.
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        (
            ReadHalf {
                io: &self.io,
                eager: &mut self.eager,
            },
            WriteHalf {
                io: &self.io,
                waiter: &mut self.waiter,
            },
        )
    }

    /// Reads without waiting. Costs no system call while the reactor has
    /// seen nothing to read.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.io.try_io(Interest::READABLE, |fd| {
            // SAFETY: `buf` is valid for writes of its length.
            cvt(unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) })
        })
    }
}

impl AsFd for Quiet {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.io.get_ref().as_fd()
    }
}

/// The reading half of a [`Quiet`] socket.
pub struct ReadHalf<'a> {
    io: &'a AsyncFd<OwnedFd>,
    eager: &'a mut bool,
}

/// The writing half of a [`Quiet`] socket.
pub struct WriteHalf<'a> {
    io: &'a AsyncFd<OwnedFd>,
    waiter: &'a mut Waiter,
}

/// Registers a descriptor with the reactor for `interest`.
fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the OwnedFd, which stays open and the same
    // descriptor until the AsyncFd drops it.
    Ok(unsafe { AsyncFd::register_with_interest(fd, interest) }?)
}

fn cvt(n: isize) -> io::Result<usize> {
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn poll_read(
    io: &AsyncFd<OwnedFd>,
    eager: &mut bool,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    let fd = io.get_ref().as_raw_fd();
    if std::mem::take(eager) {
        match recv(fd, buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            r => return Poll::Ready(r.map(drop)),
        }
    }
    loop {
        let mut guard = ready!(io.poll_read_ready(cx))?;
        let room = buf.remaining();
        match guard.try_io(|_| recv(fd, buf)) {
            Ok(Ok(n)) => {
                // A short read emptied the socket: the next read waits for
                // the reactor instead of trying a read that would block.
                if n > 0 && n < room {
                    guard.clear_ready();
                }
                return Poll::Ready(Ok(()));
            }
            Ok(Err(e)) => return Poll::Ready(Err(e)),
            Err(_would_block) => continue,
        }
    }
}

/// One recv(2) into the unfilled part of `buf`, which then holds what came.
fn recv(fd: RawFd, buf: &mut ReadBuf<'_>) -> io::Result<usize> {
    // SAFETY: recv writes at most the unfilled part's length into it, and
    // exactly the `n` bytes it returns are then marked initialized.
    let unfilled = unsafe { buf.unfilled_mut() };
    let n = cvt(unsafe { libc::recv(fd, unfilled.as_mut_ptr().cast(), unfilled.len(), 0) })?;
    unsafe { buf.assume_init(n) };
    buf.advance(n);
    Ok(n)
}

fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of its length. MSG_NOSIGNAL: a peer
    // gone is an error here, not a SIGPIPE.
    cvt(unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) })
}

fn poll_write(
    io: &AsyncFd<OwnedFd>,
    waiter: &mut Waiter,
    cx: &mut Context<'_>,
    buf: &[u8],
) -> Poll<io::Result<usize>> {
    let fd = io.get_ref().as_raw_fd();
    loop {
        if let Some(w) = &waiter.0 {
            let mut guard = ready!(w.poll_write_ready(cx))?;
            if let Ok(r) = guard.try_io(|_| send(fd, buf)) {
                drop(guard);
                // Room again: back to writing without a registration.
                waiter.0 = None;
                return Poll::Ready(r);
            }
            continue;
        }
        match send(fd, buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // The buffer is full: wait for room on a duplicate of the
                // descriptor (epoll keeps one registration per descriptor,
                // and the original's is for reading). Registered after the
                // failed write, it reports room that came since at once.
                let dup = io.get_ref().try_clone()?;
                waiter.0 = Some(register(dup, Interest::WRITABLE)?);
            }
            r => return Poll::Ready(r),
        }
    }
}

impl AsyncRead for ReadHalf<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        poll_read(this.io, this.eager, cx, buf)
    }
}

impl AsyncWrite for WriteHalf<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        poll_write(this.io, this.waiter, cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // SAFETY: a plain shutdown(2) on a descriptor we own.
        let r = unsafe { libc::shutdown(self.io.get_ref().as_raw_fd(), libc::SHUT_WR) };
        Poll::Ready(cvt(r as isize).map(drop))
    }
}

// The whole socket reads and writes through its halves.
impl AsyncRead for Quiet {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().split().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Quiet {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().split().1).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().split().1).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().split().1).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair() -> (Quiet, std::os::unix::net::UnixStream) {
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("pair");
        a.set_nonblocking(true).expect("nonblocking");
        (Quiet::new(a).expect("register"), b)
    }

    /// More than the socket buffer holds: the writer blocks, waits on its
    /// own registration, and goes on as the peer reads; every byte arrives
    /// in order.
    #[tokio::test]
    async fn a_write_larger_than_the_buffer_waits_for_room() {
        let (mut q, peer) = pair();
        let data: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        let expect = data.clone();
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut got = Vec::new();
            (&peer).read_to_end(&mut got).expect("read");
            got
        });
        let (_, mut w) = q.split();
        w.write_all(&data).await.expect("write");
        w.shutdown().await.expect("shutdown");
        assert!(
            q.waiter.0.is_none(),
            "the registration is dropped once written"
        );
        assert_eq!(reader.join().expect("reader"), expect);
    }

    #[tokio::test]
    async fn reads_what_the_peer_wrote_and_sees_its_close() {
        use std::io::Write;
        let (mut q, peer) = pair();
        let mut empty = [0u8; 4];
        assert_eq!(
            q.try_read(&mut empty).expect_err("nothing yet").kind(),
            io::ErrorKind::WouldBlock
        );
        (&peer).write_all(b"hello").expect("write");
        drop(peer);
        let mut got = Vec::new();
        q.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"hello");
    }

    #[tokio::test]
    async fn a_write_to_a_closed_peer_is_an_error() {
        let (mut q, peer) = pair();
        drop(peer);
        let err = q.write_all(b"x").await.expect_err("peer gone");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
