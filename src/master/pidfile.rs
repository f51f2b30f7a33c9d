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
        // After an upgrade the file holds the new master's pid.
        if let Some(p) = &self.0
            && !crate::router::handed_off()
        {
            let _ = std::fs::remove_file(p);
        }
    }
}
