//! Waiting for a worker to hang up, without a wakeup per piece of its
//! response.
//!
//! PHP writes a page in pieces of up to 8 KiB as it renders it, and every
//! piece written to a socket the master's reactor watches for readability
//! wakes the master: three or four times a request on a DokuWiki page, each
//! a pair of context switches on the cores PHP needs, and as many wakeups
//! of nginx for the pieces relayed on. On a connection it does not keep,
//! PHP's FastCGI layer (php-fpm's and php-cgi's alike) shuts its side down
//! right after `FCGI_END_REQUEST`, so the hangup says the whole response is
//! in the socket.
//!
//! [`Hangups`] is one epoll instance, itself watched by the reactor, in which
//! such sockets are registered for hangup only (`EPOLLRDHUP`): the kernel
//! wakes it when the peer shuts down or closes, and not for the data before
//! (a socket's "readable" wakeup carries `EPOLLIN`, which no entry asks
//! for). A task drains it and tells each waiter. A socket held for
//! [`CHECK`], and every [`CHECK`] after that, it also asks the kernel how
//! much the socket holds (`FIONREAD`), and tells its waiter to stream
//! instead when its response has passed [`STREAM_AT`] (the child is about
//! to block on a full socket) or has had bytes waiting past its hold (a
//! script that flushed early and works on: its output goes out as it comes
//! from then on). The task wakes for that only when a socket is due: most
//! responses hang up first, and a master woken every [`CHECK`] while
//! anything is held would preempt a PHP process for nothing up to a
//! hundred times a second.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{Notify, oneshot};

/// How long a socket is held before it is first looked at, and how often
/// after that.
pub const CHECK: Duration = Duration::from_millis(10);
/// A response this large streams: the child's socket buffer (about 200 KiB
/// of it by default) would soon be full and the child would wait for us.
pub const STREAM_AT: usize = 64 * 1024;

/// Why a [`Watch`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The peer shut down or closed: everything it sent is in the socket.
    HungUp,
    /// Its response is large, or has waited its hold: relay it as it comes.
    Stream,
}

/// The hangup watcher of one pool; its task ends when it is dropped.
pub struct Hangups {
    shared: Arc<Shared>,
    task: tokio::task::AbortHandle,
}

struct Shared {
    epoll: AsyncFd<OwnedFd>,
    held: Mutex<Held>,
    /// Told when the first socket is held, so the checks start.
    first: Notify,
}

#[derive(Default)]
struct Held {
    next: u64,
    by_token: HashMap<u64, Entry>,
}

struct Entry {
    fd: RawFd,
    since: Instant,
    /// When the socket is next looked at.
    due: Instant,
    hold: Duration,
    tell: oneshot::Sender<Wake>,
}

impl Hangups {
    /// Opens the epoll instance and starts its task; needs a runtime.
    pub fn start() -> io::Result<Hangups> {
        // SAFETY: plain system call; a valid descriptor is owned at once.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the AsyncFd owns the descriptor until it drops it.
        let epoll = unsafe { AsyncFd::register_with_interest(epoll, Interest::READABLE) }?;
        let shared = Arc::new(Shared {
            epoll,
            held: Mutex::default(),
            first: Notify::new(),
        });
        let task = tokio::spawn(run(shared.clone())).abort_handle();
        Ok(Hangups { shared, task })
    }

    /// Watches `socket` until its peer hangs up, or until it should stream:
    /// past [`STREAM_AT`] bytes, or with bytes waiting longer than `hold`.
    /// The socket must stay open while the [`Watch`] lives.
    pub fn watch(&self, socket: &impl AsRawFd, hold: Duration) -> io::Result<Watch<'_>> {
        let fd = socket.as_raw_fd();
        let (tell, told) = oneshot::channel();
        let mut held = self.shared.lock();
        let token = held.next;
        held.next += 1;
        let mut event = libc::epoll_event {
            events: (libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32,
            u64: token,
        };
        // SAFETY: both descriptors are open; `event` outlives the call.
        if unsafe {
            libc::epoll_ctl(
                self.shared.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd,
                &mut event,
            )
        } < 0
        {
            return Err(io::Error::last_os_error());
        }
        let was_empty = held.by_token.is_empty();
        held.by_token.insert(
            token,
            Entry {
                fd,
                since: Instant::now(),
                due: Instant::now() + CHECK,
                hold,
                tell,
            },
        );
        if was_empty {
            self.shared.first.notify_one();
        }
        Ok(Watch {
            shared: &self.shared,
            token,
            fd,
            told,
        })
    }

    /// Sockets held right now.
    #[cfg(test)]
    fn holding(&self) -> usize {
        self.shared.lock().by_token.len()
    }
}

impl Drop for Hangups {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One socket held. Dropping it forgets the socket, which is then closed
/// (the epoll entry goes with it); [`Watch::release`] to go on reading it.
pub struct Watch<'a> {
    shared: &'a Shared,
    token: u64,
    fd: RawFd,
    told: oneshot::Receiver<Wake>,
}

impl Watch<'_> {
    /// Resolves when the socket hung up or should stream. Cancel-safe.
    pub async fn wait(&mut self) -> Wake {
        // The sender goes only with the task, which goes only with the
        // pool: streaming is then the safe answer.
        (&mut self.told).await.unwrap_or(Wake::Stream)
    }

    /// Takes the socket out of the epoll instance, to be read as it comes
    /// from now on.
    pub fn release(self) {
        self.forget();
        // SAFETY: both descriptors are open (the caller's socket lives on).
        unsafe {
            libc::epoll_ctl(
                self.shared.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                self.fd,
                std::ptr::null_mut(),
            )
        };
    }

    fn forget(&self) {
        self.shared.lock().by_token.remove(&self.token);
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        // The socket closes after this (the epoll entry goes with it); the
        // task must not look at its descriptor again, which may be reused.
        self.forget();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Held> {
        self.held.lock().expect("hangups lock")
    }

    /// Tells the waiters whose sockets hung up.
    fn hung_up(&self, events: &[libc::epoll_event]) {
        let mut held = self.lock();
        for event in events {
            let token = event.u64;
            if let Some(entry) = held.by_token.remove(&token) {
                let _ = entry.tell.send(Wake::HungUp);
            }
        }
    }

    /// Tells the waiters whose responses should stream, of the sockets due
    /// a look. Under the lock, so no descriptor looked at here is closed
    /// meanwhile.
    fn check(&self) {
        let mut held = self.lock();
        let now = Instant::now();
        let mut streams = Vec::new();
        for (token, e) in held.by_token.iter_mut().filter(|(_, e)| e.due <= now) {
            let waiting = queued(e.fd);
            if waiting >= STREAM_AT || (waiting > 0 && now.duration_since(e.since) >= e.hold) {
                streams.push(*token);
            } else {
                e.due = now + CHECK;
            }
        }
        for token in streams {
            if let Some(entry) = held.by_token.remove(&token) {
                let _ = entry.tell.send(Wake::Stream);
            }
        }
    }

    /// When the next held socket is due a look, if any is held.
    fn next_due(&self) -> Option<Instant> {
        self.lock().by_token.values().map(|e| e.due).min()
    }
}

/// Bytes waiting to be read on a socket (0 when it cannot be asked).
fn queued(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } < 0 {
        return 0;
    }
    usize::try_from(n).unwrap_or(0)
}

async fn run(shared: Arc<Shared>) {
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
    loop {
        // A socket held later is due later: only the first one held
        // changes what the task waits for.
        let due = shared.next_due();
        let sleep = async {
            match due {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ready = shared.epoll.readable() => {
                let Ok(mut ready) = ready else { return };
                // SAFETY: `events` has room for the count passed.
                let n = unsafe {
                    libc::epoll_wait(shared.epoll.as_raw_fd(), events.as_mut_ptr(), events.len() as i32, 0)
                };
                let n = usize::try_from(n).unwrap_or(0);
                shared.hung_up(&events[..n]);
                if n < events.len() {
                    ready.clear_ready();
                }
            }
            _ = sleep => shared.check(),
            _ = shared.first.notified(), if due.is_none() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    const LONG: Duration = Duration::from_secs(3600);

    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .expect("within 10 s")
    }

    /// Whether `w` has been told anything, giving the task a few checks.
    async fn told_after_checks(w: &mut Watch<'_>) -> Option<Wake> {
        tokio::time::timeout(CHECK * 5, w.wait()).await.ok()
    }

    #[tokio::test]
    async fn data_alone_does_not_end_a_hold_and_the_hangup_does() {
        let hangups = Hangups::start().unwrap();
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut w = hangups.watch(&ours, LONG).unwrap();
        theirs.write_all(b"a response, still going").unwrap();
        assert_eq!(told_after_checks(&mut w).await, None);
        theirs.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(within(w.wait()).await, Wake::HungUp);
        assert_eq!(hangups.holding(), 0);
    }

    #[tokio::test]
    async fn a_peer_that_closes_is_a_hangup() {
        let hangups = Hangups::start().unwrap();
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut w = hangups.watch(&ours, LONG).unwrap();
        drop(theirs);
        assert_eq!(within(w.wait()).await, Wake::HungUp);
    }

    #[tokio::test]
    async fn a_large_response_streams() {
        let hangups = Hangups::start().unwrap();
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut w = hangups.watch(&ours, LONG).unwrap();
        theirs.write_all(&vec![b'x'; STREAM_AT]).unwrap();
        assert_eq!(within(w.wait()).await, Wake::Stream);
    }

    #[tokio::test]
    async fn bytes_waiting_past_the_hold_stream() {
        let hangups = Hangups::start().unwrap();
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        // Nothing written: nothing to stream, however long it is held.
        let mut w = hangups.watch(&ours, Duration::ZERO).unwrap();
        assert_eq!(told_after_checks(&mut w).await, None);
        theirs.write_all(b"flushed early").unwrap();
        assert_eq!(within(w.wait()).await, Wake::Stream);
    }

    #[tokio::test]
    async fn a_released_or_dropped_watch_is_forgotten() {
        let hangups = Hangups::start().unwrap();
        let (a, a_peer) = UnixStream::pair().unwrap();
        let (b, b_peer) = UnixStream::pair().unwrap();
        let wa = hangups.watch(&a, LONG).unwrap();
        let wb = hangups.watch(&b, LONG).unwrap();
        assert_eq!(hangups.holding(), 2);
        wa.release();
        drop(wb);
        assert_eq!(hangups.holding(), 0);
        // The other's hangup, after its watch was dropped, reaches no one
        // and harms nothing; the released socket is out of the epoll
        // instance, so it can be watched again, and its hangup is told.
        drop(b_peer);
        let mut again = hangups.watch(&a, LONG).unwrap();
        drop(a_peer);
        assert_eq!(within(again.wait()).await, Wake::HungUp);
        drop(b);
    }
}
