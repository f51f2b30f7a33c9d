//! php-fpm itself, beside herd on the same requests: started in the
//! foreground with its own config, pid and log in the test's directory,
//! listening on a loopback port, and stopped by pid when the test ends.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_for};

pub struct PhpFpm {
    child: Child,
    pub addr: String,
    pub log: PathBuf,
}

/// The php-fpm binary; the test suite's installer puts it there.
pub fn binary() -> PathBuf {
    super::installed("/usr/sbin/php-fpm8.2", "php8.2-fpm")
}

impl PhpFpm {
    /// Starts php-fpm with one static pool `www` of `workers` on a loopback
    /// port; `extra` is appended to the pool's section.
    pub fn start(dir: &Path, workers: u32, extra: &str) -> PhpFpm {
        let port = free_port();
        let log = dir.join("php-fpm.log");
        let user = if super::is_root() {
            "user = nobody\ngroup = nogroup\n"
        } else {
            ""
        };
        let conf = format!(
            "[global]\npid = {dir}/php-fpm.pid\nerror_log = {log}\ndaemonize = no\n\
             [www]\nlisten = 127.0.0.1:{port}\npm = static\npm.max_children = {workers}\n\
             {user}{extra}\n",
            dir = dir.display(),
            log = log.display(),
        );
        let conf_path = dir.join("php-fpm.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(binary())
            .arg("--nodaemonize")
            .arg("--fpm-config")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start php-fpm");
        let addr = format!("127.0.0.1:{port}");
        wait_for("php-fpm to listen", Duration::from_secs(10), || {
            TcpStream::connect(&addr).ok()
        });
        PhpFpm { child, addr, log }
    }
}

impl Drop for PhpFpm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- php-fpm log ---\n{log}");
        }
        // SIGTERM: php-fpm's fast stop, which ends its children too.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
