//! HAProxy run by a test: a config file the test wrote, checked with
//! `haproxy -c` first, run in the foreground (`-db`) with its log beside
//! the config, and stopped by its pid when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{nginx, wait_for};

pub const BINARY: &str = "/usr/sbin/haproxy";

pub struct HaProxy {
    child: Child,
    /// The port the config binds on 127.0.0.1.
    pub port: u16,
    log: PathBuf,
}

impl HaProxy {
    /// Runs `cfg`, which binds 127.0.0.1:`port`, once `haproxy -c` accepts
    /// it; returns when a GET of `ready` through it answers 200.
    pub fn run(cfg: &Path, port: u16, ready: &str) -> HaProxy {
        let binary = super::installed(BINARY, "haproxy");
        let check = Command::new(&binary)
            .arg("-c")
            .arg("-f")
            .arg(cfg)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "haproxy -c: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let log = cfg.with_extension("log");
        let child = Command::new(&binary)
            .arg("-db")
            .arg("-f")
            .arg(cfg)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(
                std::fs::File::options().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .expect("start haproxy");
        let haproxy = HaProxy { child, port, log };
        wait_for("haproxy to serve", Duration::from_secs(10), || {
            nginx::try_get(port, ready, Duration::from_secs(5))
                .ok()
                .filter(|(status, _)| *status == 200)
        });
        haproxy
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- haproxy log ---\n{}", self.log_text());
        }
    }
}
