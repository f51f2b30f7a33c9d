//! A reload: read and check the whole config first (a bad one is refused
//! and nothing changes), then roll out a new generation in every pool
//! whose settings or resolved command changed, start new pools and retire
//! removed ones.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::error::ReloadError;
use super::{Master, open_listeners};
use crate::config::{self, Config, PoolConfig};
use crate::pool::Pool;
use crate::supervisor;

/// What a reload did to one pool.
#[derive(Clone)]
pub struct Reloaded {
    pub pool: Arc<Pool>,
    /// The generation being rolled out, or `None` when nothing changed.
    pub generation: Option<u32>,
}

impl Master {
    /// Reloads every pool, or only `only` (which then always gets a new
    /// generation); `force` rolls out even unchanged pools.
    pub(super) async fn reload(
        &mut self,
        only: Option<&str>,
        force: bool,
    ) -> Result<Vec<Reloaded>, ReloadError> {
        let new = self.read_config()?;
        if let Some(name) = only
            && new.pool(name).is_none()
        {
            return Err(ReloadError::NoSuchPool(name.to_string()));
        }
        self.check_reload(&new)?;
        let added: Vec<PoolConfig> = new
            .pools
            .iter()
            .filter(|p| self.pool(&p.name).is_none())
            .cloned()
            .collect();
        let listeners =
            open_listeners(&added, &mut Default::default()).map_err(ReloadError::Listeners)?;

        let mut done = Vec::new();
        for cfg in new
            .pools
            .iter()
            .filter(|p| only.is_none_or(|n| n == p.name))
        {
            let Some(handle) = self.pool(&cfg.name) else {
                continue;
            };
            let (reply, answer) = oneshot::channel();
            let cmd = supervisor::Command::Reload {
                cfg: Arc::new(cfg.clone()),
                force: force || only.is_some(),
                reply,
            };
            if handle.commands.send(cmd).is_err() {
                continue;
            }
            let generation = match answer.await {
                Ok(Ok(g)) => g,
                Ok(Err(source)) => {
                    return Err(ReloadError::Pool {
                        pool: cfg.name.clone(),
                        source,
                    });
                }
                Err(_) => None,
            };
            if generation.is_none() {
                tracing::info!(pool = %cfg.name, "reload: unchanged");
            }
            done.push(Reloaded {
                pool: handle.pool.clone(),
                generation,
            });
        }
        if only.is_none() {
            for (cfg, listener) in added.into_iter().zip(listeners) {
                tracing::info!(pool = %cfg.name, "reload: new pool");
                let pool = cfg.name.clone();
                self.start_pool(cfg, listener)
                    .map_err(|source| ReloadError::Pool { pool, source })?;
                let handle = self.pools.last().expect("just started");
                done.push(Reloaded {
                    pool: handle.pool.clone(),
                    generation: Some(1),
                });
            }
            self.retire_removed(&new);
        }
        if let Err(e) = super::set_limits(&new.global) {
            tracing::error!("{e:#}");
        }
        self.config.global = new.global.clone();
        self.config.pools = new.pools;
        Ok(done)
    }

    /// The config to reload: the file again, or the embedded default.
    fn read_config(&self) -> Result<Config, ReloadError> {
        match &self.opts.config_path {
            Some(path) => Ok(config::load(path, &self.opts.load)?),
            None => Ok(self.config.clone()),
        }
    }

    /// Changes that a reload cannot apply are refused before anything is
    /// touched.
    fn check_reload(&self, new: &Config) -> Result<(), ReloadError> {
        for cfg in &new.pools {
            if let Some(old) = self.pool(&cfg.name)
                && old.pool.config().listen != cfg.listen
            {
                return Err(ReloadError::ListenChanged {
                    pool: cfg.name.clone(),
                    from: old.pool.config().listen.clone(),
                    to: cfg.listen.clone(),
                });
            }
            if let Some(old) = self.pool(&cfg.name)
                && old.pool.config().status_listen != cfg.status_listen
            {
                return Err(ReloadError::StatusListenChanged {
                    pool: cfg.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// Pools no longer in the config stop taking connections; their
    /// workers finish what they serve and leave.
    fn retire_removed(&mut self, new: &Config) {
        let (keep, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pools)
            .into_iter()
            .partition(|p| new.pool(&p.pool.name).is_some());
        self.pools = keep;
        for p in gone {
            tracing::info!(pool = %p.pool.name, "reload: pool removed from the config; stopping it");
            p.acceptors.iter().for_each(tokio::task::JoinHandle::abort);
            for (addr, _) in &p.listener_fds {
                if let crate::config::ListenAddr::Unix(path) = addr {
                    let _ = std::fs::remove_file(path);
                }
            }
            let _ = p.commands.send(supervisor::Command::StopGraceful);
        }
    }
}
