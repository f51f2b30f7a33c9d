//! The pid file, written at start and removed at exit.

use std::path::{Path, PathBuf};

use anyhow::Context;

pub struct PidFile(Option<PathBuf>);

impl PidFile {
    pub fn write(path: Option<&Path>) -> anyhow::Result<PidFile> {
        if let Some(p) = path {
            std::fs::write(p, format!("{}\n", std::process::id()))
                .with_context(|| format!("failed to write pid file {}", p.display()))?;
        }
        Ok(PidFile(path.map(Into::into)))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}
