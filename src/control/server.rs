//! The control socket: a unix socket, mode 0600 from the moment it exists,
//! that takes one [`Request`] per connection and relays it to the master,
//! writing back whatever the master answers.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use super::protocol::{Line, MAX_LINE, Request};
use crate::router::listener::{back_off_after, sleep_until};
use crate::throttle::Throttle;

/// A request on its way to the master, with where its answers go.
pub struct Control {
    pub request: Request,
    pub reply: mpsc::UnboundedSender<Line>,
}

pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    pub fn open(path: &Path) -> anyhow::Result<ControlSocket> {
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!(
                    "control socket {} is in use by another herd",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("failed to remove stale {}", path.display()))?;
        }
        let listener = bind_private(path)
            .with_context(|| format!("failed to bind control socket {}", path.display()))?;
        listener.set_nonblocking(true)?;
        Ok(ControlSocket {
            listener: UnixListener::from_std(listener)?,
            path: path.to_path_buf(),
        })
    }

    /// Takes over the control socket of the master this one replaces.
    pub fn adopt(fd: std::os::fd::OwnedFd, path: &Path) -> anyhow::Result<ControlSocket> {
        let std = std::os::unix::net::UnixListener::from(fd);
        std.set_nonblocking(true)?;
        Ok(ControlSocket {
            listener: UnixListener::from_std(std)?,
            path: path.to_path_buf(),
        })
    }

    /// The socket's fd, to pass to a master that replaces this one.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.listener.as_raw_fd()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts control connections forever, handing requests to `master`.
    /// Failures are logged at most once a second, and out of descriptors
    /// it pauses instead of spinning, as a pool's accept loop does.
    pub async fn serve(self, master: mpsc::UnboundedSender<Control>) {
        let mut failures = Throttle::new();
        loop {
            let accepted = tokio::select! {
                r = self.listener.accept() => r,
                _ = sleep_until(failures.flush_at()) => {
                    failures.flush("");
                    continue;
                }
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    failures.hit("", format!("failed to accept a control connection: {e}"));
                    back_off_after(&e).await;
                    continue;
                }
            };
            let master = master.clone();
            tokio::spawn(async move {
                if let Err(e) = handle(stream, master).await {
                    tracing::warn!("control connection ended: {e}");
                }
            });
        }
    }
}

/// Binds `path` with mode 0600 from the start: the socket is made in a
/// new 0700 directory beside it, given its mode and its listen queue there,
/// then renamed into place. Binding in place and chmod-ing after would leave
/// a moment in which it exists with the umask's mode, and anyone the umask
/// lets in could connect and stop the master.
fn bind_private(path: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // Short, so the socket's path is no longer than `path` in most cases
    // (a unix socket path has 107 bytes at most).
    let private = parent.join(format!(".herd{}", std::process::id()));
    // A crashed master of the same pid may have left it; never followed if
    // it is a link.
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let bound = (|| {
        let inside = private.join("s");
        let listener = std::os::unix::net::UnixListener::bind(&inside)?;
        std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&inside, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    bound
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        if !crate::router::handed_off() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

async fn handle(stream: UnixStream, master: mpsc::UnboundedSender<Control>) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut line = String::new();
    BufReader::new(rd.take(MAX_LINE as u64))
        .read_line(&mut line)
        .await?;
    if line.is_empty() {
        return Ok(()); // a probe (another herd checking the socket is live)
    }
    let (reply, mut answers) = mpsc::unbounded_channel();
    match serde_json::from_str::<Request>(line.trim()) {
        Ok(request) => {
            if master.send(Control { request, reply }).is_err() {
                let _ = write(&mut wr, &Line::error("herd is stopping")).await;
                return Ok(());
            }
        }
        Err(e) => {
            return write(&mut wr, &Line::error(format!("bad request: {e}"))).await;
        }
    }
    while let Some(answer) = answers.recv().await {
        write(&mut wr, &answer).await?;
    }
    Ok(())
}

async fn write(wr: &mut tokio::net::unix::OwnedWriteHalf, line: &Line) -> std::io::Result<()> {
    let mut text = serde_json::to_string(line).map_err(std::io::Error::other)?;
    text.push('\n');
    wr.write_all(text.as_bytes()).await
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileTypeExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// Whoever looks, the socket file is never there with a mode other
    /// than 0600: a watcher polls it while it is bound again and again.
    #[tokio::test]
    async fn the_socket_never_exists_with_a_looser_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (path, done) = (path.clone(), done.clone());
            std::thread::spawn(move || {
                let mut seen = std::collections::BTreeSet::new();
                while !done.load(Ordering::Relaxed) {
                    if let Ok(meta) = std::fs::symlink_metadata(&path)
                        && meta.file_type().is_socket()
                    {
                        seen.insert(meta.permissions().mode() & 0o7777);
                    }
                }
                seen
            })
        };
        for _ in 0..300 {
            drop(ControlSocket::open(&path).expect("bind"));
        }
        done.store(true, Ordering::Relaxed);
        let seen = watcher.join().unwrap();
        let modes: Vec<String> = seen.iter().map(|m| format!("{m:o}")).collect();
        assert!(modes.iter().all(|m| m == "600"), "modes seen: {modes:?}");
        // Nothing is left beside it.
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
