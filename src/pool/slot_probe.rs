//! When a php-fpm child with a socket of its own is free again.
//!
//! A child's hangup ends its response, but not always its work: it runs
//! PHP's request shutdown before it accepts again, a script that called
//! `fastcgi_finish_request()` runs on (Symfony's and Laravel's
//! "terminate"), and a child that reached `pm.max_requests` is being
//! replaced. On a socket shared by a group's children that does not
//! matter, as whichever child is back first takes the next connection; on
//! a child's own socket the next request would wait in its queue while
//! other children sit idle.
//!
//! So when a slot's request ends, herd connects to the child's socket and
//! shuts its side at once ([`ask`]): a child back at `accept()` takes the
//! connection, reads its end and closes it (php-fpm then goes back to
//! accepting, logging nothing), and the close is the answer. Nothing wakes
//! herd for it while no request waits: the slot goes back with the free
//! ones, and when dispatch comes to it, one look ([`answered`]) says
//! whether the child is free; if not, dispatch goes on to the next slot,
//! and this one comes back when its child answers ([`answer`]). With
//! requests waiting, the slot goes to the first of them only once its
//! child answered. A child still at work takes the connection when it is
//! done, and a replaced child's successor when it starts: the slot stays
//! out of the way until then, however long that is.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

use tokio::io::AsyncReadExt;

/// Asks the process listening on `socket` whether it is free. `None` when
/// it cannot be asked (the socket is gone with its worker, or its queue is
/// full): the next request through the slot finds out how, as it would
/// without asking.
pub fn ask(socket: &Path) -> Option<UnixStream> {
    let probe = socket2::Socket::new(
        socket2::Domain::UNIX,
        socket2::Type::STREAM.nonblocking().cloexec(),
        None,
    )
    .ok()?;
    probe.connect(&socket2::SockAddr::unix(socket).ok()?).ok()?;
    probe.shutdown(std::net::Shutdown::Write).ok()?;
    Some(probe.into())
}

/// Whether the process answered: it took the connection and closed it (or
/// the connection broke, which the next request finds out about too).
/// Never waits.
pub fn answered(probe: &UnixStream) -> bool {
    let mut scratch = [0u8; 64];
    loop {
        // SAFETY: recv writes at most `scratch.len()` bytes into it.
        let n = unsafe {
            libc::recv(
                probe.as_raw_fd(),
                scratch.as_mut_ptr().cast(),
                scratch.len(),
                libc::MSG_DONTWAIT,
            )
        };
        match n {
            0 => return true,
            n if n > 0 => continue,
            _ => match io::Error::last_os_error().kind() {
                io::ErrorKind::WouldBlock => return false,
                io::ErrorKind::Interrupted => continue,
                _ => return true,
            },
        }
    }
}

/// Returns once the process answered.
pub async fn answer(probe: UnixStream) {
    let Ok(mut probe) = tokio::net::UnixStream::from_std(probe) else {
        return;
    };
    let mut scratch = [0u8; 64];
    while let Ok(1..) = probe.read(&mut scratch).await {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixListener;
    use std::time::Duration;

    #[tokio::test]
    async fn answered_once_the_listener_takes_the_connection_and_closes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("child.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let probe = ask(&path).expect("the socket listens");
        // Nobody accepted: the child is busy, the slot stays out.
        assert!(!answered(&probe));
        let waiting = tokio::spawn(answer(probe.try_clone().unwrap()));
        let (mut conn, _) = listener.accept().unwrap();
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "the probe sends nothing");
        assert!(!answered(&probe), "accepted, not yet closed");
        drop(conn);
        assert!(answered(&probe));
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the wait ends with the close")
            .unwrap();
    }

    #[test]
    fn a_socket_nobody_listens_on_cannot_be_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone.sock");
        drop(UnixListener::bind(&path).unwrap());
        assert!(ask(&path).is_none());
        assert!(ask(&dir.path().join("never.sock")).is_none());
    }
}
