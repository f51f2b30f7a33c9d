//! The private directory that holds this master's worker sockets. Only the
//! master connects to them (workers accept on fd 0), so the directory is
//! mode 0700 and owned by the master's user.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Removed with everything in it when dropped.
#[derive(Debug)]
pub struct SocketDir {
    path: PathBuf,
}

impl SocketDir {
    /// Creates `<base>/m<pid>` under the configured or default base.
    pub fn create(configured: Option<&Path>) -> anyhow::Result<SocketDir> {
        let base = configured
            .map(Path::to_path_buf)
            .unwrap_or_else(default_base);
        ensure_private_dir(&base)?;
        remove_stale(&base);
        let path = base.join(format!("m{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("failed to create {}", path.display()))?;
        Ok(SocketDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn worker_socket(&self, pool_index: usize, worker: u64) -> PathBuf {
        self.path.join(format!("p{pool_index}-w{worker}.sock"))
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The directory under which each master makes its own: configured, or
/// the default for herd's user.
pub fn base(configured: Option<&Path>) -> PathBuf {
    configured
        .map(Path::to_path_buf)
        .unwrap_or_else(default_base)
}

fn default_base() -> PathBuf {
    let uid = nix::unistd::Uid::effective();
    if uid.is_root() {
        return PathBuf::from("/run/herd");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("herd"),
        _ => PathBuf::from(format!("/tmp/herd-{uid}")),
    }
}

/// Creates `dir` 0700 if missing, and refuses one that someone else owns or
/// that others may write to (a shared /tmp is hostile ground).
fn ensure_private_dir(dir: &Path) -> anyhow::Result<()> {
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        bail!("failed to create socket directory {}: {e}", dir.display());
    }
    let meta = std::fs::symlink_metadata(dir)
        .with_context(|| format!("failed to inspect {}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != nix::unistd::Uid::effective().as_raw() {
        bail!(
            "socket directory {} is not a directory owned by herd's user",
            dir.display()
        );
    }
    if meta.permissions().mode() & 0o022 != 0 {
        bail!(
            "socket directory {} is writable by others; make it 0700",
            dir.display()
        );
    }
    Ok(())
}

/// Removes the directories of masters that are gone (killed with SIGKILL).
fn remove_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix('m'))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
