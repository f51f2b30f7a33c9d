//! herd's control plane: the control socket the master serves, its JSON
//! protocol, and `herd ctl`, the client, with the status view it prints
//! and `herd ctl top` redraws.

pub mod client;
pub mod protocol;
pub mod server;
pub mod top;
pub mod view;

use std::path::{Path, PathBuf};

use crate::config::{Config, ListenAddr};

/// Where a master with `config` listens for control commands:
/// `control.listen`, else beside the pid file (`herd.pid` → `herd.sock`),
/// else in the worker socket directory, named after the config file (so
/// masters of different configs never share one and `herd ctl -c FILE`
/// finds the right one).
pub fn socket_path(config: &Config) -> PathBuf {
    if let Some(p) = &config.global.control_listen {
        return p.clone();
    }
    if let Some(pid) = &config.global.pid {
        let beside = pid.with_extension("sock");
        // php-fpm's own layout (Debian's php8.2-fpm.pid beside the pool's
        // php8.2-fpm.sock) puts a listener exactly there.
        let taken = config
            .pools
            .iter()
            .any(|p| matches!(&p.listen, ListenAddr::Unix(path) if *path == beside));
        return if taken {
            pid.with_extension("herd-ctl.sock")
        } else {
            beside
        };
    }
    let base = crate::supervisor::socket_dir::base(config.global.socket_dir.as_deref());
    match &config.file {
        Some(file) => {
            let full = std::fs::canonicalize(file).unwrap_or_else(|_| file.clone());
            let stem = full
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            base.join(format!(
                "{stem}-{:08x}.sock",
                fnv1a(full.as_os_str().as_encoded_bytes()) as u32
            ))
        }
        None => base.join("herd.sock"),
    }
}

/// A small stable hash (FNV-1a), for names that must not change between
/// builds the way `DefaultHasher` may.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// For messages: the path as given.
pub fn show(p: &Path) -> String {
    p.display().to_string()
}
