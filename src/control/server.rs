//! The control socket: a unix socket (mode 0600 by default) that takes one
//! [`Request`] per connection and relays it to the master, writing back
//! whatever the master answers.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use super::protocol::{MAX_LINE, Request};

/// A request on its way to the master, with where its answers go.
pub struct Control {
    pub request: Request,
    pub reply: mpsc::UnboundedSender<Value>,
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
        let listener = UnixListener::bind(path)
            .with_context(|| format!("failed to bind control socket {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("failed to chmod {}", path.display()))?;
        Ok(ControlSocket {
            listener,
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
    pub async fn serve(self, master: mpsc::UnboundedSender<Control>) {
        loop {
            let Ok((stream, _)) = self.listener.accept().await else {
                continue;
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
                let _ = write(
                    &mut wr,
                    &json!({"done": true, "ok": false, "error": "herd is stopping"}),
                )
                .await;
                return Ok(());
            }
        }
        Err(e) => {
            return write(
                &mut wr,
                &json!({"done": true, "ok": false, "error": format!("bad request: {e}")}),
            )
            .await;
        }
    }
    while let Some(answer) = answers.recv().await {
        write(&mut wr, &answer).await?;
    }
    Ok(())
}

async fn write(wr: &mut tokio::net::unix::OwnedWriteHalf, v: &Value) -> std::io::Result<()> {
    let mut text = v.to_string();
    text.push('\n');
    wr.write_all(text.as_bytes()).await
}
