//! Listening sockets a master did not open itself: from systemd's socket
//! activation (`LISTEN_FDS`, matched to pools by `FileDescriptorName` with
//! `listen = systemd:NAME`), or from the master it replaces on
//! `herd ctl upgrade` (`HERD_LISTENERS`, matched by address), so no
//! connection is refused while masters change.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use crate::config::ListenAddr;

/// The environment variable a master passes its listeners in to the master
/// that replaces it: `KEY=FD;KEY=FD`, the key being the pool's `listen`
/// (or `control` for the control socket).
pub const ENV: &str = "HERD_LISTENERS";

/// Variables that describe this process's inherited sockets; no worker
/// may see them.
pub const PRIVATE_ENV: &[&str] = &["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", ENV];

#[derive(Default)]
pub struct Inherited {
    systemd: Vec<(String, OwnedFd)>,
    upgrade: Vec<(String, OwnedFd)>,
}

impl Inherited {
    /// Collects what this process was given. Call it once, early.
    pub fn from_env() -> Inherited {
        let mut inherited = Inherited::default();
        if let Ok(fds) = sd_notify::listen_fds_with_names() {
            for (fd, name) in fds {
                // SAFETY: systemd passed this fd to this process (LISTEN_PID
                // was checked); nothing else owns it.
                inherited
                    .systemd
                    .push((name, unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        if let Ok(list) = std::env::var(ENV) {
            for item in list.split(';').filter(|i| !i.is_empty()) {
                let Some((key, fd)) = item.rsplit_once('=') else {
                    continue;
                };
                let Ok(fd) = fd.parse::<RawFd>() else {
                    continue;
                };
                // SAFETY: the previous master left this fd open for us, and
                // names it once; we take it over.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                let _ = nix::fcntl::fcntl(
                    &fd,
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
                );
                inherited.upgrade.push((key.to_string(), fd));
            }
        }
        inherited
    }

    /// The socket for a pool's `listen`, if one was passed.
    pub fn take(&mut self, listen: &ListenAddr) -> Option<OwnedFd> {
        // The previous master's first: it may itself have had the socket
        // from systemd.
        take(&mut self.upgrade, &listen.to_string()).or_else(|| match listen {
            ListenAddr::Systemd(name) => take(&mut self.systemd, name),
            _ => None,
        })
    }

    /// The control socket of the master this one replaces.
    pub fn take_control(&mut self) -> Option<OwnedFd> {
        take(&mut self.upgrade, "control")
    }

    /// Whether this master replaces another (its sockets came with it).
    pub fn is_upgrade(&self) -> bool {
        !self.upgrade.is_empty()
    }

    /// Names of sockets no pool took; they are closed.
    pub fn unused(self) -> Vec<String> {
        self.systemd
            .into_iter()
            .chain(self.upgrade)
            .map(|(k, _)| k)
            .collect()
    }
}

fn take(list: &mut Vec<(String, OwnedFd)>, key: &str) -> Option<OwnedFd> {
    let at = list.iter().position(|(k, _)| k == key)?;
    Some(list.remove(at).1)
}
