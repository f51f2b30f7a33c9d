//! A generation: one version of a pool — its config as read at one reload,
//! the worker command and directory with their symlinks resolved at that
//! moment (so a deploy that swaps `/srv/app/current` is picked up), and the
//! identity its workers run as. The first generation is 1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use super::spawn::Identity;
use crate::config::PoolConfig;
use crate::pool::dispatch::{self, GenerationFacts};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GenState {
    /// Being rolled out.
    Rolling,
    /// Every worker of the pool is of this generation (or was, until a
    /// newer one finished).
    Stable,
    /// Replaced by a newer generation before its rollout finished.
    Superseded,
    /// Its rollout was aborted: it never takes traffic again.
    Refused(String),
    /// An older generation, replaced.
    Retired,
}

impl GenState {
    pub fn name(&self) -> &'static str {
        match self {
            GenState::Rolling => "rolling out",
            GenState::Stable => "stable",
            GenState::Superseded => "superseded",
            GenState::Refused(_) => "refused",
            GenState::Retired => "retired",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Generation {
    pub number: u32,
    pub cfg: Arc<PoolConfig>,
    /// `command` with every symlink resolved.
    pub program: PathBuf,
    /// `chdir` with every symlink resolved.
    pub dir: Option<PathBuf>,
    pub identity: Identity,
    pub state: GenState,
    /// Reached `Stable` at some point: it ranks by age among finished ones.
    pub finished: bool,
}

impl Generation {
    pub fn new(number: u32, cfg: Arc<PoolConfig>) -> anyhow::Result<Generation> {
        let program = resolve(&cfg.command)
            .with_context(|| format!("failed to resolve command {}", cfg.command.display()))?;
        let dir = match &cfg.chdir {
            // Inside a chroot the path means something else; keep it.
            Some(d) if cfg.chroot.is_none() => Some(
                resolve(d).with_context(|| format!("failed to resolve chdir {}", d.display()))?,
            ),
            other => other.clone(),
        };
        let identity = Identity::resolve(&cfg)?;
        Ok(Generation {
            number,
            cfg,
            program,
            dir,
            identity,
            state: GenState::Rolling,
            finished: false,
        })
    }

    /// Whether a reload with `cfg` would start the same workers as this
    /// generation: same settings, same resolved command and directory.
    pub fn same_as(&self, cfg: &PoolConfig) -> bool {
        let resolved = |p: &Path| resolve(p).ok();
        let dir = match &cfg.chdir {
            Some(d) if cfg.chroot.is_none() => resolved(d),
            other => other.clone(),
        };
        same_settings(&self.cfg, cfg)
            && resolved(&cfg.command).as_deref() == Some(&*self.program)
            && dir == self.dir
    }

    pub fn is_live(&self) -> bool {
        !matches!(self.state, GenState::Refused(_) | GenState::Retired)
    }
}

fn resolve(p: &Path) -> std::io::Result<PathBuf> {
    std::fs::canonicalize(p)
}

/// Settings compared without where they were written.
fn same_settings(a: &PoolConfig, b: &PoolConfig) -> bool {
    let mut b = b.clone();
    b.defined_at = a.defined_at.clone();
    *a == b
}

/// Dispatch ranks of `gens` (see [`dispatch::ranks`]).
pub fn ranks(gens: &BTreeMap<u32, Generation>) -> BTreeMap<u32, u64> {
    dispatch::ranks(gens.values().map(|g| GenerationFacts {
        number: g.number,
        live: g.is_live(),
        finished: g.finished,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen_with(number: u32, state: GenState, finished: bool) -> Generation {
        let text = "[p]\nlisten = 127.0.0.1:1\npm = static\npm.max_children = 1\ncommand = /bin/true\nuser = nobody\n";
        let cfg =
            crate::config::parse_str(text, Path::new("/x.conf"), &Default::default()).unwrap();
        let mut g = Generation::new(number, Arc::new(cfg.pools[0].clone())).unwrap();
        g.state = state;
        g.finished = finished;
        g
    }

    #[test]
    fn same_config_same_generation() {
        let g = gen_with(1, GenState::Stable, true);
        assert!(g.same_as(&g.cfg));
        let mut other = (*g.cfg).clone();
        other.max_requests = 5;
        assert!(!g.same_as(&other));
    }
}
