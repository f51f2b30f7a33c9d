//! The master's connection to one worker.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::accepted::Diag;
use crate::quiet::Quiet;
use bytes::BytesMut;

/// The master's connection to one worker, kept open between requests
/// (`FCGI_KEEP_CONN`) and opened again when the worker closed it.
#[derive(Debug)]
pub struct WorkerConn {
    pub socket: Arc<Path>,
    stream: Option<Quiet>,
    pub buf: BytesMut,
    /// A connection opened ahead of the next request, when it was opened,
    /// and its place in the order such connections were opened.
    spare: Option<(socket2::Socket, Instant, u64)>,
}

/// How long a connection opened ahead may wait for its request: php-fpm
/// closes one that brings nothing for 5 s.
pub const SPARE_AGE: Duration = Duration::from_secs(4);
/// When one is replaced (see [`WorkerConn::renew_spare`]); the supervisor
/// looks once a second, so none reaches [`SPARE_AGE`].
pub const SPARE_RENEW: Duration = Duration::from_millis(2500);

/// Counts the connections opened ahead: their order.
static SPARES: AtomicU64 = AtomicU64::new(1);

impl WorkerConn {
    pub fn new(socket: Arc<Path>, stream: Option<Quiet>) -> WorkerConn {
        WorkerConn {
            socket,
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
            spare: None,
        }
    }

    /// Opens the connection for the slot's next request now, while the
    /// slot is free (`PoolConfig::opens_ahead`): an idle php-fpm child takes
    /// it at once and waits on it, so connecting and accepting are done
    /// before the request comes, and, with every idle child waiting on a
    /// slot's connection, the one opened last is taken by the child that
    /// finished last. A connection nobody takes yet waits in the group's
    /// queue as a new one would.
    pub fn open_spare(&mut self) {
        if let Ok(socket) = self.connect_raw() {
            let order = SPARES.fetch_add(1, Ordering::Relaxed);
            self.spare = Some((socket, Instant::now(), order));
        }
    }

    /// Replaces the connection opened ahead once it is `after` old, keeping
    /// its place in the order. php-fpm gives a connection 5 s to bring a
    /// request, then closes it and its child goes back to accepting; a child
    /// back in accept takes the next connection opened ahead for any slot,
    /// before the child that finished last, and the newest connection no
    /// longer leads to the warmest child. The new one is opened before the
    /// old one closes, so the child that held the old one takes it.
    pub fn renew_spare(&mut self, after: Duration) {
        let Some((_, opened, order)) = &self.spare else {
            return;
        };
        if opened.elapsed() < after {
            return;
        }
        let order = *order;
        if let Ok(socket) = self.connect_raw() {
            self.spare = Some((socket, Instant::now(), order));
        }
    }

    /// A new non-blocking connection to the worker that the reactor does
    /// not watch (see the router's `hold`).
    pub fn connect_raw(&self) -> std::io::Result<socket2::Socket> {
        let socket = socket2::Socket::new(
            socket2::Domain::UNIX,
            socket2::Type::STREAM.nonblocking().cloexec(),
            None,
        )?;
        socket.connect(&socket2::SockAddr::unix(&*self.socket)?)?;
        Ok(socket)
    }

    /// The connection opened ahead, unless it is older than `max_age`.
    pub fn take_spare(&mut self, max_age: Duration) -> Option<socket2::Socket> {
        let (socket, opened, _) = self.spare.take()?;
        (opened.elapsed() < max_age).then_some(socket)
    }

    /// Makes the connection opened ahead, while young enough, the stream
    /// the next request goes on. An idle php-fpm child waits on it; a new
    /// connection would wait in the group's queue until a child is back in
    /// accept, which, with every idle child holding a slot's connection
    /// opened ahead, is when one of those is renewed: seconds.
    pub fn use_spare(&mut self) {
        if self.stream.is_some() {
            return;
        }
        if let Some(socket) = self.take_spare(SPARE_AGE)
            && let Ok(stream) = Quiet::new(socket)
        {
            self.adopt(stream);
        }
    }

    /// Whether a process holds the connection opened ahead (has accepted
    /// it); `None` when there is none or the kernel cannot tell.
    pub fn spare_held(&self, diag: &mut Diag) -> Option<bool> {
        let (socket, _, _) = self.spare.as_ref()?;
        diag.check(socket)
    }

    /// The place of the connection opened ahead in the order they were
    /// opened.
    pub fn spare_order(&self) -> Option<u64> {
        self.spare.as_ref().map(|s| s.2)
    }

    /// The open stream, unless the worker closed it while it was idle
    /// (php-cgi closes a connection that stays silent for 5 s after its
    /// accept; other programs time idle connections out too); then a new one.
    /// Returns whether the stream is freshly connected.
    pub fn connect(&mut self) -> std::io::Result<(&mut Quiet, bool)> {
        if self.stream.as_ref().is_some_and(closed_while_idle) {
            self.stream = None;
        }
        let fresh = self.stream.is_none();
        if fresh {
            self.buf.clear();
            self.stream = Some(Quiet::connect_unix(&self.socket)?);
        }
        Ok((self.stream.as_mut().expect("connected above"), fresh))
    }

    /// The open stream, if any, and the read buffer.
    pub fn parts(&mut self) -> (Option<&mut Quiet>, &mut BytesMut) {
        (self.stream.as_mut(), &mut self.buf)
    }

    /// No bytes are buffered beyond the last request's end.
    pub fn buf_is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Takes a stream connected to the worker elsewhere (see the router's
    /// `hold`), with nothing read from it yet.
    pub fn adopt(&mut self, stream: Quiet) {
        self.buf.clear();
        self.stream = Some(stream);
    }

    /// Forgets the stream; the next request connects again.
    pub fn disconnect(&mut self) {
        self.stream = None;
        self.buf.clear();
    }
}

/// An idle connection has nothing to read; if it has, the worker closed it
/// (or misbehaves). Costs no system call while the reactor has seen nothing.
fn closed_while_idle(stream: &Quiet) -> bool {
    !matches!(stream.try_read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixListener;

    #[test]
    fn a_renewed_connection_keeps_its_place_and_the_old_one_closes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let mut conn = WorkerConn::new(Arc::from(path.as_path()), None);
        conn.open_spare();
        let order = conn.spare_order().expect("opened ahead");
        let (mut first, _) = listener.accept().unwrap();

        // Young: left alone.
        conn.renew_spare(Duration::from_secs(3600));
        listener.set_nonblocking(true).unwrap();
        assert!(listener.accept().is_err(), "nothing new while it is young");

        conn.renew_spare(Duration::ZERO);
        assert_eq!(conn.spare_order(), Some(order), "same place in the order");
        let (mut second, _) = listener.accept().expect("a new connection");
        // The old one is closed: its reader sees the end.
        assert_eq!(first.read(&mut [0u8; 1]).unwrap(), 0);
        // The new one is the one a request goes out on.
        let spare = conn.take_spare(SPARE_AGE).expect("young enough");
        spare.send(b"x").unwrap();
        let mut got = [0u8; 1];
        second.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"x");
    }
}
