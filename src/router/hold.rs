//! A response relayed whole. The request goes out on a socket the reactor
//! does not watch; the worker's hangup (see `pool::hangups`) says its
//! response is complete, and it is read at once and written to the client
//! in one piece. A response that should stream instead is handed to the
//! usual relay with the socket registered as any other.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::pool::WorkerConn;
use crate::pool::hangups::{Hangups, Watch};
use crate::pool::worker_conn::SPARE_AGE;
use crate::quiet::Quiet;

/// A request sent, its response held until the worker hangs up.
pub(super) struct Holding<'a> {
    // Dropped first: the watch is forgotten before the socket closes.
    pub watch: Watch<'a>,
    socket: socket2::Socket,
}

/// Sends `head` to the worker without the reactor, on the connection the
/// slot opened ahead (see `WorkerConn::open_spare`) while it is young
/// enough and takes it, else on a new one. `None`
/// when nothing was sent (the usual path then tries, and reports, itself).
/// A head the socket took only part of is finished on the usual path:
/// `Err` carries the connection, registered, and what is left to send.
pub(super) fn send<'a>(
    conn: &mut WorkerConn,
    hangups: &'a Hangups,
    head: &[u8],
    hold: Duration,
) -> Option<Result<Holding<'a>, (Quiet, usize)>> {
    let spare = conn
        .take_spare(SPARE_AGE)
        .and_then(|s| Some((s.send_with_flags(head, libc::MSG_NOSIGNAL).ok()?, s)));
    let (sent, socket) = match spare {
        Some((sent, socket)) => (sent, socket),
        None => {
            let socket = conn.connect_raw().ok()?;
            (
                socket.send_with_flags(head, libc::MSG_NOSIGNAL).ok()?,
                socket,
            )
        }
    };
    if sent < head.len() {
        return Some(Err((Quiet::new(socket).ok()?, sent)));
    }
    // The whole request is out, so our side shuts down. PHP's FastCGI layer
    // ends a response on a connection it does not keep by shutting its own
    // side down and reading until the other end closes (`fcgi_close`):
    // finding ours already shut, it closes at once and goes on to its next
    // request, instead of sleeping until the master wakes and closes.
    let _ = socket.shutdown(std::net::Shutdown::Write);
    match hangups.watch(&socket, hold) {
        Ok(watch) => Some(Ok(Holding { watch, socket })),
        Err(_) => Some(Err((Quiet::new(socket).ok()?, sent))),
    }
}

impl Holding<'_> {
    /// After the hangup: everything the worker sent, read into `buf`. The
    /// socket is handed back, to be closed when the caller is done.
    pub fn read_all(self, buf: &mut BytesMut) -> io::Result<socket2::Socket> {
        let Holding { watch, socket } = self;
        // Forgotten before the socket can close.
        drop(watch);
        let fd = socket.as_raw_fd();
        buf.clear();
        loop {
            buf.reserve(super::exchange::READ_ROOM);
            let spare = buf.spare_capacity_mut();
            let room = spare.len();
            // SAFETY: recv writes at most `spare.len()` bytes into `spare`.
            let n = unsafe {
                libc::recv(
                    fd,
                    spare.as_mut_ptr().cast(),
                    spare.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            match n {
                0 => return Ok(socket),
                n if n > 0 => {
                    // SAFETY: the kernel initialised the `n` bytes it wrote.
                    unsafe { buf.set_len(buf.len() + n as usize) };
                    // Less than asked for: the socket is empty, and a peer
                    // that hung up sends nothing more. (A read to learn it
                    // again would cost a system call a request.)
                    if (n as usize) < room {
                        return Ok(socket);
                    }
                }
                _ => {
                    let e = io::Error::last_os_error();
                    // A peer that shut down its side but has not closed it
                    // yet leaves no EOF to read.
                    return match e.kind() {
                        io::ErrorKind::WouldBlock => Ok(socket),
                        io::ErrorKind::Interrupted => continue,
                        _ => Err(e),
                    };
                }
            }
        }
    }

    /// The response goes on as it comes: the socket becomes the lease's
    /// connection, registered with the reactor.
    pub fn stream(self, conn: &mut WorkerConn) -> io::Result<()> {
        self.watch.release();
        conn.adopt(Quiet::new(self.socket)?);
        Ok(())
    }
}

/// Sends the rest of a head the socket took only part of, on the adopted
/// connection.
pub(super) async fn finish_send(conn: &mut WorkerConn, rest: &[u8]) -> io::Result<()> {
    let (stream, _) = conn.parts();
    let stream = stream.ok_or(io::ErrorKind::NotConnected)?;
    let (_, mut to_worker) = stream.split();
    to_worker.write_all(rest).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use std::path::Path;
    use std::sync::Arc;

    use crate::pool::hangups::Wake;

    /// The worker's side of a held request ends as PHP's `fcgi_close` ends a
    /// connection it does not keep: it writes its response, shuts its side
    /// down and reads until the master's side is done. It reads the end at
    /// once, while the master still holds the socket.
    #[tokio::test]
    async fn a_held_request_s_worker_reads_its_end_without_waiting_for_the_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let hangups = Hangups::start().unwrap();
        let mut conn = WorkerConn::new(Arc::<Path>::from(path.as_path()), None);
        let Some(Ok(mut holding)) = send(&mut conn, &hangups, b"request", Duration::from_secs(5))
        else {
            panic!("sent whole and held");
        };
        let (mut worker, _) = listener.accept().unwrap();
        let mut got = [0u8; 7];
        worker.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"request");
        worker.write_all(b"response").unwrap();
        worker.shutdown(std::net::Shutdown::Write).unwrap();
        worker
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let n = worker
            .read(&mut [0u8; 8])
            .expect("the end, not a wait for the master's close");
        assert_eq!(n, 0);
        assert_eq!(holding.watch.wait().await, Wake::HungUp);
        let mut buf = BytesMut::new();
        let socket = holding.read_all(&mut buf).unwrap();
        assert_eq!(&buf[..], b"response");
        drop(socket);
    }
}
