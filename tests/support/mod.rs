//! The shared harness of the integration tests: it starts the real `herd`
//! binary (and nginx, php-cgi) on loopback or in a private directory,
//! waits on conditions with deadlines (never a bare sleep), and stops every
//! process it started by pid when the test ends, passing or failing.

#![allow(dead_code)]

pub mod fcgi;
pub mod nginx;

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const HERD: &str = env!("CARGO_BIN_EXE_herd");

/// Waits until `cond` returns `Some`, or panics naming `what` at the deadline.
pub fn wait_for<T>(what: &str, within: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A private directory that nginx and workers running as other users may
/// read (tempfile makes 0700 directories).
pub struct Dir {
    pub tmp: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Dir {
        let tmp = tempfile::Builder::new()
            .prefix("herd-test-")
            .tempdir()
            .expect("tempdir");
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        Dir { tmp }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.join(name);
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        p
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; fine on loopback).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// `user = nobody` when the tests run as root (herd refuses root workers).
pub fn user_line() -> &'static str {
    if is_root() { "user = nobody\n" } else { "" }
}

/// A running `herd run` master.
pub struct Herd {
    pub child: Option<Child>,
    pub log: PathBuf,
    pub config: PathBuf,
    pub dir: Dir,
}

impl Herd {
    /// Starts `herd run -c <config>`; `config` may use `{dir}` for the
    /// test's directory and `{herd}` for the herd binary.
    pub fn start(config: &str) -> Herd {
        let dir = Dir::new();
        Herd::start_in(dir, config)
    }

    pub fn start_in(dir: Dir, config: &str) -> Herd {
        let text = config
            .replace("{dir}", dir.path().to_str().unwrap())
            .replace("{herd}", HERD);
        let config = dir.write("herd.conf", &text);
        let log = dir.join("herd.log");
        let child = Command::new(HERD)
            .args(["run", "-c"])
            .arg(&config)
            .env("HERD_TEST", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("start herd");
        Herd {
            child: Some(child),
            log,
            config,
            dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Lines of the log that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(String::from)
            .collect()
    }

    /// Waits until `n` workers have passed the readiness gate in total;
    /// returns the pids of the ready lines, in order.
    pub fn wait_ready(&self, n: usize) -> Vec<u32> {
        wait_for(
            &format!("{n} workers ready\n{}", self.log_text()),
            Duration::from_secs(20),
            || {
                let pids: Vec<u32> = self
                    .log_lines("worker ready")
                    .iter()
                    .filter_map(|l| field(l, "pid"))
                    .collect();
                (pids.len() >= n).then_some(pids)
            },
        )
    }

    /// Sends `signal` to the master.
    pub fn signal(&self, signal: i32) {
        unsafe { libc::kill(self.pid() as i32, signal) };
    }

    /// Waits for the master to exit and returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let child = self.child.as_mut().expect("running");
        let status = wait_for("herd to exit", within, || child.try_wait().unwrap());
        self.child = None;
        status.code()
    }

    /// Stops the master with SIGTERM (SIGKILL after 10 s) and checks that
    /// no worker outlived it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let workers = self.worker_pids();
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in workers {
            wait_for(
                &format!("worker {pid} to exit with the master"),
                Duration::from_secs(10),
                || (!alive(pid)).then_some(()),
            );
        }
    }

    /// Every worker pid the log has named as spawned.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.log_lines("worker spawned")
            .iter()
            .filter_map(|l| field(l, "pid"))
            .collect()
    }
}

impl Drop for Herd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let workers = self.worker_pids();
            let _ = child.kill();
            let _ = child.wait();
            for pid in workers {
                // Workers die with the master (PR_SET_PDEATHSIG); make sure.
                if alive(pid) {
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
            }
        }
        if std::thread::panicking() {
            eprintln!("--- herd log ---\n{}", self.log_text());
        }
    }
}

/// `key=123` in a log line.
pub fn field(line: &str, key: &str) -> Option<u32> {
    let pat = format!("{key}=");
    let at = line.find(&pat)? + pat.len();
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Runs `herd <args>` to completion; returns (exit code, stdout, stderr).
pub fn herd_cmd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(HERD).args(args).output().expect("run herd");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Reads a whole stream into a string.
pub fn read_all(mut r: impl Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}

/// The php-cgi binary, if installed.
pub fn php_cgi() -> Option<PathBuf> {
    ["/usr/bin/php-cgi8.2", "/usr/bin/php-cgi"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}
