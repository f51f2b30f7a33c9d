//! The master's errors: why a reload or an upgrade was refused. Each says
//! what failed and leaves everything as it was; `herd ctl` and the log show
//! its text.

use std::path::PathBuf;

use crate::config::{ConfigErrors, ListenAddr};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("invalid config, nothing changed:\n{0}")]
    Config(#[from] ConfigErrors),
    #[error("no pool named '{0}'")]
    NoSuchPool(String),
    #[error("pool '{pool}': changing 'listen' ({from} to {to}) needs a restart; nothing changed")]
    ListenChanged {
        pool: String,
        from: ListenAddr,
        to: ListenAddr,
    },
    #[error("pool '{pool}': changing 'pm.status_listen' needs a restart; nothing changed")]
    StatusListenChanged { pool: String },
    #[error("failed to open the listeners of the new pools: {0:#}")]
    Listeners(anyhow::Error),
    #[error("pool '{pool}': {source:#}")]
    Pool { pool: String, source: anyhow::Error },
}

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error(
        "herd is PID 1 of its pid namespace (a container's init): the old master's exit would \
         end the container and everything in it; replace the container instead, or run herd \
         under an init (`docker run --init`, tini)"
    )]
    Init,
    #[error("failed to make a pipe to the new master: {0}")]
    Pipe(nix::Error),
    #[error("failed to start {exe}: {source}")]
    Start {
        exe: PathBuf,
        source: std::io::Error,
    },
}
