//! A pool's listener: opening it as configured (`listen`, `listen.backlog`,
//! `listen.owner`/`group`/`mode`), and the accept loop that enforces
//! `listen.allowed_clients` and `listen.max_connections` and survives bad
//! peers and descriptor exhaustion.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::sync::Semaphore;

use crate::phase::PhaseRx;

use super::conn::{self, Serves};
use super::inherit::Inherited;
use crate::config::{ListenAddr, PoolConfig};
use crate::pool::Pool;
use crate::quiet::Quiet;
use crate::throttle::Throttle;

/// Listening sockets are registered with the reactor as they are (a
/// listener is never writable, so it only wakes the master to accept); the
/// connections it accepts become [`Quiet`] sockets.
pub enum Listener {
    Tcp(AsyncFd<std::net::TcpListener>),
    Unix {
        listener: AsyncFd<std::os::unix::net::UnixListener>,
        /// The socket file to remove at the end; `None` when it is not
        /// ours (systemd's).
        path: Option<PathBuf>,
    },
}

/// Set when a new master took over the listeners (`herd ctl upgrade`):
/// this one then stops accepting but leaves the sockets, their files and
/// their backlogs to the new one.
static HANDED_OFF: AtomicBool = AtomicBool::new(false);

pub fn hand_off() {
    HANDED_OFF.store(true, Ordering::SeqCst);
}

/// Whether the sockets now belong to a new master: nothing of theirs (files,
/// the pid file) may be removed on the way out.
pub fn handed_off() -> bool {
    HANDED_OFF.load(Ordering::SeqCst)
}

impl Listener {
    /// Opens the pool's listener, or takes the one systemd or the previous
    /// master passed. Must run inside the runtime.
    pub fn open(cfg: &PoolConfig, inherited: &mut Inherited) -> anyhow::Result<Listener> {
        Listener::open_at(&cfg.listen, cfg, inherited)
    }

    /// Opens `pm.status_listen` as `listen` is opened (backlog, owner,
    /// mode and ACL alike), or takes the one passed for it.
    pub fn open_status(
        cfg: &PoolConfig,
        inherited: &mut Inherited,
    ) -> anyhow::Result<Option<Listener>> {
        cfg.status_listen
            .as_ref()
            .map(|addr| Listener::open_at(addr, cfg, inherited).context("pm.status_listen"))
            .transpose()
    }

    fn open_at(
        addr: &ListenAddr,
        cfg: &PoolConfig,
        inherited: &mut Inherited,
    ) -> anyhow::Result<Listener> {
        if let Some(fd) = inherited.take(addr) {
            return adopt(fd, addr);
        }
        match addr {
            ListenAddr::Tcp(addr) => open_tcp(*addr, cfg.listen_backlog),
            ListenAddr::Unix(path) => open_unix(path, cfg),
            ListenAddr::Systemd(name) => {
                bail!(
                    "no socket named '{name}' was passed by systemd (LISTEN_FDNAMES); check FileDescriptorName= in the socket unit"
                )
            }
        }
    }

    /// The listening socket's fd, to pass to a master that replaces this
    /// one. Valid while the accept loop runs.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            Listener::Tcp(l) => l.get_ref().as_raw_fd(),
            Listener::Unix { listener, .. } => listener.get_ref().as_raw_fd(),
        }
    }

    /// Removes the socket file of a unix listener that is ours.
    fn cleanup(&self) {
        if let Listener::Unix {
            path: Some(path), ..
        } = self
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Registers a listening socket with the reactor. A listener is never
/// writable, so readability is all it can report.
fn register<L: std::os::fd::AsRawFd>(listener: L) -> std::io::Result<AsyncFd<L>>
where
    std::os::fd::OwnedFd: From<L>,
{
    // SAFETY: `L` owns its descriptor (it converts into an OwnedFd), which
    // stays open and the same until the AsyncFd drops `L`.
    Ok(unsafe { AsyncFd::register_with_interest(listener, tokio::io::Interest::READABLE) }?)
}

/// A listening socket received from systemd or the previous master.
fn adopt(fd: std::os::fd::OwnedFd, listen: &ListenAddr) -> anyhow::Result<Listener> {
    let sock = Socket::from(fd);
    sock.set_nonblocking(true)?;
    let local = sock
        .local_addr()
        .with_context(|| format!("passed socket for {listen} is not a socket"))?;
    if local.as_socket().is_some() {
        return Ok(Listener::Tcp(register(sock.into())?));
    }
    let path = match listen {
        ListenAddr::Unix(p) => Some(p.clone()),
        _ => None,
    };
    let std: std::os::unix::net::UnixListener = sock.into();
    Ok(Listener::Unix {
        listener: register(std)?,
        path,
    })
}

fn open_tcp(addr: SocketAddr, backlog: i32) -> anyhow::Result<Listener> {
    let wrap = |what: &str, e: std::io::Error| anyhow::anyhow!("failed to {what} {addr}: {e}");
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)
        .map_err(|e| wrap("create a socket for", e))?;
    sock.set_reuse_address(true)
        .map_err(|e| wrap("set SO_REUSEADDR on", e))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)
            .map_err(|e| wrap("set IPV6_V6ONLY on", e))?;
    }
    sock.set_nonblocking(true)
        .map_err(|e| wrap("configure", e))?;
    sock.bind(&addr.into()).map_err(|e| wrap("bind", e))?;
    // Wake the accept loop only once the client has sent something: nginx
    // writes its request right after connecting, so the request is there
    // by the time the connection is accepted (one wakeup instead of two).
    set_defer_accept(&sock).map_err(|e| wrap("set TCP_DEFER_ACCEPT on", e))?;
    sock.listen(backlog).map_err(|e| wrap("listen on", e))?;
    Ok(Listener::Tcp(register(sock.into())?))
}

fn set_defer_accept(sock: &Socket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let seconds: libc::c_int = 1;
    // SAFETY: a plain setsockopt on a socket we own, with a c_int value.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&seconds as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn open_unix(path: &Path, cfg: &PoolConfig) -> anyhow::Result<Listener> {
    remove_stale_socket(path)?;
    let sock = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    sock.set_nonblocking(true)?;
    sock.bind(&SockAddr::unix(path)?)
        .with_context(|| format!("failed to bind {}", path.display()))?;
    // Owner, group, mode and ACL are set before listen(), so no client can
    // connect while the socket still has the wrong permissions.
    let acl = !(cfg.listen_acl_users.is_empty() && cfg.listen_acl_groups.is_empty());
    if !acl {
        set_owner(path, cfg)?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(cfg.listen_mode))
        .with_context(|| format!("failed to chmod {}", path.display()))?;
    if acl {
        set_acl(path, cfg).with_context(|| {
            format!(
                "failed to set listen.acl_users/acl_groups on {}",
                path.display()
            )
        })?;
    }
    sock.listen(cfg.listen_backlog)
        .with_context(|| format!("failed to listen on {}", path.display()))?;
    let std: std::os::unix::net::UnixListener = sock.into();
    Ok(Listener::Unix {
        listener: register(std)?,
        path: Some(path.to_path_buf()),
    })
}

/// A socket file nobody listens on is left over from a crash; one that
/// answers belongs to a running server, which we must not steal from.
fn remove_stale_socket(path: &Path) -> anyhow::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        bail!("{} is in use by another server", path.display());
    }
    std::fs::remove_file(path)
        .with_context(|| format!("failed to remove stale socket {}", path.display()))
}

fn set_owner(path: &Path, cfg: &PoolConfig) -> anyhow::Result<()> {
    if cfg.listen_owner.is_none() && cfg.listen_group.is_none() {
        return Ok(());
    }
    let uid = match &cfg.listen_owner {
        Some(name) => Some(
            nix::unistd::User::from_name(name)?
                .with_context(|| format!("no user named '{name}'"))?
                .uid,
        ),
        None => None,
    };
    let gid = match &cfg.listen_group {
        Some(name) => Some(
            nix::unistd::Group::from_name(name)?
                .with_context(|| format!("no group named '{name}'"))?
                .gid,
        ),
        None => None,
    };
    nix::unistd::chown(path, uid, gid)
        .with_context(|| format!("failed to chown {}", path.display()))
}

/// `listen.acl_users` and `listen.acl_groups`: the socket's POSIX access
/// ACL, written as the `system.posix_acl_access` attribute (the kernel's
/// format, which is all libacl's `acl_set_file` writes): owner, group and
/// other from `listen.mode`, read-write for each named user and group, and
/// the mask that lets them through.
fn set_acl(path: &Path, cfg: &PoolConfig) -> std::io::Result<()> {
    const USER_OBJ: u16 = 0x01;
    const USER: u16 = 0x02;
    const GROUP_OBJ: u16 = 0x04;
    const GROUP: u16 = 0x08;
    const MASK: u16 = 0x10;
    const OTHER: u16 = 0x20;
    const NO_ID: u32 = u32::MAX;
    const RW: u16 = 0o6;
    let bits = |shift: u32| ((cfg.listen_mode >> shift) & 0o7) as u16;
    let mut entries = vec![(USER_OBJ, bits(6), NO_ID)];
    let mut users = cfg.listen_acl_users.clone();
    users.sort_unstable();
    users.dedup();
    entries.extend(users.into_iter().map(|uid| (USER, RW, uid)));
    entries.push((GROUP_OBJ, bits(3), NO_ID));
    let mut groups = cfg.listen_acl_groups.clone();
    groups.sort_unstable();
    groups.dedup();
    entries.extend(groups.into_iter().map(|gid| (GROUP, RW, gid)));
    entries.push((MASK, RW | bits(3), NO_ID));
    entries.push((OTHER, bits(0), NO_ID));
    let mut value = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        value.extend(tag.to_le_bytes());
        value.extend(perm.to_le_bytes());
        value.extend(id.to_le_bytes());
    }
    let c_path = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))?;
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let r = unsafe {
        libc::setxattr(
            c_path.as_ptr(),
            c"system.posix_acl_access".as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Accepts until the phase says the listeners close, then takes what is already in the
/// backlog, closes the listener and removes its socket file.
pub async fn accept_loop(listener: Listener, pool: Arc<Pool>, mut phase: PhaseRx, serves: Serves) {
    let cfg = pool.config();
    let slots = Arc::new(Semaphore::new(cfg.listen_max_connections));
    let allowed = cfg.listen_allowed_clients.clone();
    let mut refused = Throttle::new();
    let mut failures = Throttle::new();
    loop {
        let flush = refused
            .flush_at()
            .into_iter()
            .chain(failures.flush_at())
            .min();
        let accepted = tokio::select! {
            r = accept(&listener) => r,
            _ = phase.wait_for(|p| p.closed()) => break,
            _ = sleep_until(flush) => {
                refused.flush(&pool.name);
                failures.flush(&pool.name);
                continue;
            }
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                failures.hit(&pool.name, format!("failed to accept a connection: {e}"));
                back_off_after(&e).await;
                continue;
            }
        };
        if let (Some(list), Some(ip)) = (&allowed, peer)
            && !list.iter().any(|a| same_ip(*a, ip))
        {
            refused.hit(
                &pool.name,
                format!("connection from {ip} refused: not in listen.allowed_clients"),
            );
            continue;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            refused.hit(
                &pool.name,
                format!(
                    "connection refused: listen.max_connections ({}) reached",
                    cfg.listen_max_connections
                ),
            );
            continue;
        };
        spawn_conn(stream, peer, &pool, &phase, Some(permit), serves);
    }
    if HANDED_OFF.load(Ordering::SeqCst) {
        // The new master accepts from the same sockets, backlog included.
        return;
    }
    // Unix clients that come from now on find no socket file: refused,
    // not reset. Then what already waits in the backlog is served.
    listener.cleanup();
    for (stream, peer) in drain_backlog(&listener) {
        spawn_conn(stream, peer, &pool, &phase, None, serves);
    }
}

fn spawn_conn(
    mut stream: Accepted,
    peer: Option<IpAddr>,
    pool: &Arc<Pool>,
    phase: &PhaseRx,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    serves: Serves,
) {
    pool.counters
        .accepted_conns
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let guard = pool.conn_opened();
    let pool = pool.clone();
    let phase = phase.clone();
    tokio::spawn(async move {
        let _guard = guard;
        let peer = peer.map(|p| p.to_string()).unwrap_or_else(|| "unix".into());
        // Borrowed halves: dropping an owned write half would cost a
        // shutdown() per connection before the close.
        let (r, w) = stream.split();
        conn::serve(r, w, pool, &peer, phase, serves).await;
        drop(permit);
    });
}

/// A connection fresh from the backlog: non-blocking, close-on-exec, and
/// for TCP without Nagle's delay.
type Accepted = Quiet;

async fn accept(listener: &Listener) -> std::io::Result<(Accepted, Option<IpAddr>)> {
    let accepted = match listener {
        Listener::Tcp(l) => accept_from(l).await,
        Listener::Unix { listener, .. } => accept_from(listener).await,
    }?;
    into_accepted(accepted)
}

/// The next connection, once the listener has one.
async fn accept_from<L>(listener: &AsyncFd<L>) -> std::io::Result<(Socket, SockAddr)>
where
    L: std::os::fd::AsRawFd + std::os::fd::AsFd,
{
    listener
        .async_io(tokio::io::Interest::READABLE, |l| {
            accept_now(socket2::SockRef::from(l))
        })
        .await
}

/// One `accept4` that does not wait: the socket comes non-blocking, so it
/// costs no further system call before it is registered.
fn accept_now(listener: socket2::SockRef<'_>) -> std::io::Result<(Socket, SockAddr)> {
    listener.accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
}

fn into_accepted((sock, addr): (Socket, SockAddr)) -> std::io::Result<(Accepted, Option<IpAddr>)> {
    let peer = addr.as_socket().map(|a| a.ip());
    if peer.is_some() {
        let _ = sock.set_tcp_nodelay(true);
    }
    Ok((Quiet::accepted(sock)?, peer))
}

/// IPv4 clients of a dual-stack socket show up as `::ffff:a.b.c.d`.
fn same_ip(allowed: IpAddr, peer: IpAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    canon(allowed) == canon(peer)
}

/// Graceful stop: the connections already waiting in the kernel's backlog
/// were promised service, so they are served rather than reset on close.
/// Accepts without waiting until the backlog is empty.
fn drain_backlog(listener: &Listener) -> Vec<(Accepted, Option<IpAddr>)> {
    let sock = match listener {
        Listener::Tcp(l) => socket2::SockRef::from(l.get_ref()),
        Listener::Unix { listener, .. } => socket2::SockRef::from(listener.get_ref()),
    };
    let mut out = Vec::new();
    while let Ok(accepted) = sock.accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) {
        if let Ok(a) = into_accepted(accepted) {
            out.push(a);
        }
    }
    out
}

/// After a failed accept. Out of descriptors or kernel memory, the
/// connection stays in the backlog and the listener stays readable, so an
/// accept loop that tried again at once would spin; a pause gives requests
/// in flight time to end and give some back. Any other error is that one
/// connection's (it is gone already).
pub async fn back_off_after(e: &std::io::Error) {
    if matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    ) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sleeps until `at`, or forever without one.
pub async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv4_matches() {
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(same_ip(v4, mapped));
        assert!(!same_ip(v4, "127.0.0.2".parse().unwrap()));
    }
}
