//! The shared harness of the integration tests: it starts the real `herd`
//! binary (and nginx, php-cgi) on loopback or in a private directory,
//! waits on conditions with deadlines (never a bare sleep), and stops every
//! process it started by pid when the test ends, passing or failing.

#![allow(dead_code)]

pub mod fcgi;
pub mod haproxy;
pub mod load;
pub mod nginx;
pub mod notify;
pub mod php_fpm;
pub mod procfs;
pub mod shipped;

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const HERD: &str = env!("CARGO_BIN_EXE_herd");

/// Waits until `cond` returns `Some`, or panics naming `what` at the deadline.
pub fn wait_for<T>(what: &str, within: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    wait_until(what, within, || cond().ok_or_else(String::new))
}

/// Waits until `cond` returns `Ok`; its `Err` says what it saw instead,
/// and the last one is in the panic at the deadline (a timeout that says
/// "3 of 4 workers ready" needs no second run to be understood).
pub fn wait_until<T>(
    what: &str,
    within: Duration,
    mut cond: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match cond() {
            Ok(v) => return v,
            Err(seen) if Instant::now() > deadline => {
                let seen = if seen.is_empty() {
                    String::new()
                } else {
                    format!("; last seen: {seen}")
                };
                panic!("timed out after {within:?} waiting for {what}{seen}");
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The refusals throttled log lines account for: one per line, plus the
/// "(and N more since the last report)" each line carries.
pub fn refusals_accounted<S: AsRef<str>>(lines: &[S]) -> usize {
    lines
        .iter()
        .map(|l| {
            1 + l
                .as_ref()
                .split("(and ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0)
        })
        .sum()
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

    /// A subdirectory anyone may write to (workers run as `nobody`).
    pub fn shared(&self, name: &str) -> PathBuf {
        let p = self.join(name);
        fs::create_dir_all(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o777)).unwrap();
        p
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

/// A test that cannot run here (no root, no systemd, a missing program)
/// says so where no one can miss it, and the caller returns. Under CI (the
/// `CI` variable set, as CI services set it) it fails instead: CI exists to
/// run every test, and a green run that skipped one proves nothing.
pub fn skip(why: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"));
    if ci {
        panic!("this test cannot run here, and CI is set: {why}");
    }
    eprintln!("\n******** SKIPPED: {why} ********\n");
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// `user = nobody` when the tests run as root (herd refuses root workers).
pub fn user_line() -> &'static str {
    if is_root() { "user = nobody\n" } else { "" }
}

/// A config with one pool `app` of `workers` static `herd example-app`
/// workers listening on `listen`, logging to the test's `herd.log`;
/// `extra` is appended to the pool's section.
pub fn example_pool(listen: &str, workers: u32, extra: &str) -> String {
    format!(
        "[global]\nerror_log = {{dir}}/herd.log\n\
         [app]\nlisten = {listen}\npm = static\npm.max_children = {workers}\n\
         command = {{herd}}\nargs = example-app\n{user}{extra}",
        user = user_line()
    )
}

/// [`example_pool`] with `global` lines in `[global]`, such as
/// `control.listen = {dir}/ctl.sock\n` for tests that use `herd ctl`.
pub fn example_pool_with(global: &str, listen: &str, workers: u32, extra: &str) -> String {
    example_pool(listen, workers, extra).replacen("[global]\n", &format!("[global]\n{global}"), 1)
}

/// `text` with `{dir}` replaced by the test's directory and `{herd}` by the
/// herd binary.
pub fn expand(text: &str, dir: &Dir) -> String {
    text.replace("{dir}", dir.path().to_str().unwrap())
        .replace("{herd}", HERD)
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
        Herd::start_with(dir, config, |config| {
            let mut cmd = Command::new(HERD);
            cmd.args(["run", "-c"]).arg(config);
            cmd
        })
    }

    /// Starts herd the way `launch` says: it gets the written config file's
    /// path and returns the command to run, with whatever environment,
    /// wrapper or inherited fds the test needs (a wrapper must `exec` herd,
    /// so that the child's pid is the master's). Standard input, output and
    /// the log are set here.
    pub fn start_with(dir: Dir, config: &str, launch: impl FnOnce(&Path) -> Command) -> Herd {
        let text = expand(config, &dir);
        let config = dir.write("herd.conf", &text);
        let log = dir.join("herd.log");
        let child = launch(&config)
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

    /// Replaces the config file with `config` (`{dir}` and `{herd}` as in
    /// [`Herd::start`]), for the next reload to read.
    pub fn rewrite_config(&self, config: &str) {
        let text = expand(config, &self.dir);
        let tmp = self.config.with_extension("conf.new");
        fs::write(&tmp, text).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
        fs::rename(&tmp, &self.config).unwrap();
    }

    /// `herd ctl --socket SOCKET ARGS...`; returns (exit code, stdout,
    /// stderr). A `herd ctl` still running after 10 s (a `reload --wait`
    /// that never ends) is killed and fails the test.
    pub fn ctl(&self, socket: &Path, args: &[&str]) -> (i32, String, String) {
        let mut all = vec!["ctl", "--socket", socket.to_str().unwrap()];
        all.extend_from_slice(args);
        herd_cmd_within(&all, Duration::from_secs(10))
    }

    /// The master's `herd ctl status --json` answer (its one JSON line).
    pub fn ctl_status(&self, socket: &Path) -> serde_json::Value {
        let (code, out, err) = self.ctl(socket, &["status", "--json"]);
        assert_eq!(code, 0, "herd ctl status failed: {out}{err}");
        serde_json::from_str(out.lines().last().unwrap_or(""))
            .unwrap_or_else(|e| panic!("herd ctl status --json printed no JSON ({e}): {out}"))
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

    /// Waits until at least `n` log lines contain `needle`; returns them.
    /// (At a timeout, the whole log is printed as the test fails.)
    pub fn wait_log(&self, needle: &str, n: usize, within: Duration) -> Vec<String> {
        wait_until(&format!("{n} log line(s) with {needle:?}"), within, || {
            let lines = self.log_lines(needle);
            match lines.len() {
                found if found >= n => Ok(lines),
                found => Err(format!("{found} line(s)")),
            }
        })
    }

    /// The WARN and ERROR lines of the log.
    pub fn warnings(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .map(String::from)
            .collect()
    }

    /// Whether the master process is still there (not exited, not a zombie).
    pub fn running(&self) -> bool {
        self.child.as_ref().is_some_and(|c| alive(c.id()))
    }

    /// Waits until `n` workers have passed the readiness gate in total;
    /// returns the pids of the ready lines, in order.
    pub fn wait_ready(&self, n: usize) -> Vec<u32> {
        wait_until(
            &format!("{n} workers ready"),
            Duration::from_secs(20),
            || {
                let pids: Vec<u32> = self
                    .log_lines("worker ready")
                    .iter()
                    .filter_map(|l| field(l, "pid"))
                    .collect();
                if pids.len() >= n {
                    return Ok(pids);
                }
                let spawned = self.worker_pids();
                Err(format!("ready {pids:?} of spawned {spawned:?}"))
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
        let workers = self.worker_pids();
        if let Some(mut child) = self.child.take() {
            // A fast stop first, so herd removes its sockets (a control
            // socket left in /run/herd by every test would pile up), then
            // SIGKILL if it takes more than a few seconds.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
            for &pid in &workers {
                // Workers die with the master (PR_SET_PDEATHSIG); make sure.
                if alive(pid) {
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
            }
        } else {
            // The test already saw the master exit (it may have killed it):
            // a worker that outlived it is an orphan now; stop it too, once
            // sure the pid was not reused by someone else's process.
            for &pid in &workers {
                if alive(pid) && orphaned_worker(pid) {
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
            }
        }
        // A master killed with SIGKILL (some tests do) leaves its control
        // socket behind, in /run/herd by default: remove it once nothing
        // answers on it.
        for line in self.log_lines("control socket ") {
            let Some(path) = line.split("control socket ").nth(1) else {
                continue;
            };
            let path = Path::new(path.trim());
            if path.exists() && std::os::unix::net::UnixStream::connect(path).is_err() {
                let _ = fs::remove_file(path);
            }
        }
        if std::thread::panicking() {
            eprintln!("--- herd log ---\n{}", self.log_text());
        }
    }
}

/// A herd worker (it has `HERD_WORKER` in its environment) whose master
/// is gone (its parent is no longer a `herd`).
fn orphaned_worker(pid: u32) -> bool {
    let Ok(env) = fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    if !env
        .split(|&b| b == 0)
        .any(|kv| kv.starts_with(b"HERD_WORKER="))
    {
        return false;
    }
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let ppid: u32 = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let parent = fs::read_to_string(format!("/proc/{ppid}/comm")).unwrap_or_default();
    parent.trim() != "herd"
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

/// CPU time a process has used, user plus system, in clock ticks
/// (fields 14 and 15 of /proc/<pid>/stat).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e}"));
    // Fields after the command name (which may contain spaces) start at 3.
    let rest: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let utime: u64 = rest[14 - 3].parse().unwrap();
    let stime: u64 = rest[15 - 3].parse().unwrap();
    utime + stime
}

/// Whether `pid` is blocked in nanosleep/clock_nanosleep right now (from
/// /proc/<pid>/syscall); `None` where that cannot be told (other
/// architectures, no permission).
pub fn in_sleep_syscall(pid: u32) -> Option<bool> {
    let sleeps: &[u64] = if cfg!(target_arch = "x86_64") {
        &[35, 230]
    } else if cfg!(target_arch = "aarch64") {
        &[101, 115]
    } else {
        return None;
    };
    let text = fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    let nr: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(sleeps.contains(&nr))
}

/// The TCP states (as /proc/net/tcp numbers them: 1 established, 8
/// close-wait, ...) of every socket whose local port is `port`, listener
/// included (10). A connection the peer closed but the local process has
/// not is in close-wait (8).
pub fn tcp_states(port: u16) -> Vec<u8> {
    tcp_sockets(port).map(|(state, _)| state).collect()
}

/// How many connections wait in the accept queue of the socket listening
/// on loopback `port` (a listener's `rx_queue` in `/proc/net/tcp`).
pub fn tcp_accept_queue(port: u16) -> usize {
    tcp_sockets(port)
        .filter(|&(state, _)| state == TCP_LISTEN)
        .map(|(_, rx_queue)| rx_queue)
        .sum()
}

/// (state, rx_queue) of each TCP socket whose local port is `port`, from
/// `/proc/net/tcp` and `/proc/net/tcp6`.
fn tcp_sockets(port: u16) -> impl Iterator<Item = (u8, usize)> {
    let mut sockets = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(queues)) = (cols.get(1), cols.get(3), cols.get(4))
            else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            let rx_queue = queues
                .split(':')
                .nth(1)
                .and_then(|rx| usize::from_str_radix(rx, 16).ok());
            if local_port == Some(port)
                && let Ok(st) = u8::from_str_radix(state, 16)
            {
                sockets.push((st, rx_queue.unwrap_or(0)));
            }
        }
    }
    sockets.into_iter()
}

pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_CLOSE_WAIT: u8 = 8;
pub const TCP_LISTEN: u8 = 10;

/// `herd run -c config` started through `sh`, which runs `prelude` (shell
/// commands ending in `;` or `&&`) and then execs herd in the same process,
/// so the child's pid is the master's: how a test sets a limit or a
/// variable that must hold herd's own pid. For [`Herd::start_with`].
pub fn herd_via_shell(prelude: &str, config: &Path) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("{prelude} exec \"$0\" run -c \"$1\""))
        .arg(HERD)
        .arg(config);
    cmd
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

/// Like [`herd_cmd`], but a command still running after `within` is
/// killed and fails the test, with what it printed so far.
pub fn herd_cmd_within(args: &[&str], within: Duration) -> (i32, String, String) {
    output_within(Command::new(HERD).args(args), within)
}

/// Runs `cmd` to completion; returns (exit code, stdout, stderr). One
/// still running after `within` is killed (by its pid) and fails the
/// test, with what it printed so far.
pub fn output_within(cmd: &mut Command, within: Duration) -> (i32, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("failed to start {cmd:?}: {e}"));
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || read_all(out));
    let err = std::thread::spawn(move || read_all(err));
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    match status {
        Some(status) => (status.code().unwrap_or(-1), out, err),
        None => panic!("{cmd:?} still running after {within:?}; it printed:\n{out}{err}"),
    }
}

/// Reads a whole stream into a string.
pub fn read_all(mut r: impl Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}

/// A program the test command installs (`package` names it); a missing one
/// fails the test, never skips it.
pub fn installed(path: &str, package: &str) -> PathBuf {
    let p = PathBuf::from(path);
    assert!(
        p.exists(),
        "{package} is not installed ({path}): run the test command from the README, which installs it"
    );
    p
}

/// The php-cgi binary, if installed.
pub fn php_cgi() -> Option<PathBuf> {
    ["/usr/bin/php-cgi8.2", "/usr/bin/php-cgi"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

impl Herd {
    /// `(worker id, pid)` of every worker the log has named as spawned, in
    /// spawn order (worker ids grow with age: the lowest is the oldest).
    pub fn spawned_workers(&self) -> Vec<(u32, u32)> {
        self.log_lines("worker spawned")
            .iter()
            .filter_map(|l| Some((field(l, "worker")?, field(l, "pid")?)))
            .collect()
    }
}

/// `target/<profile>/examples/<name>`, next to `target/<profile>/deps/`
/// where the test runs from (`cargo test` builds the examples first).
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: build the examples first: cargo build --examples",
        path.display()
    );
    path
}

/// Makes `fds` the child's fds 3, 4, ... (in that order, without
/// `FD_CLOEXEC`), as systemd passes sockets to a socket-activated service.
/// The caller keeps its own copies open until the child has started.
pub fn pass_fds(cmd: &mut Command, fds: &[std::os::fd::RawFd]) {
    use std::os::unix::process::CommandExt;
    let fds = fds.to_vec();
    // SAFETY: runs in the forked child before exec and calls only fcntl
    // and dup2, which are async-signal-safe, on fds open in the parent.
    unsafe {
        cmd.pre_exec(move || {
            // First out of the way (a source may already sit on 3 or 4),
            // then into place; dup2 clears FD_CLOEXEC on the target.
            let mut high = Vec::with_capacity(fds.len());
            for &fd in &fds {
                let h = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100);
                if h < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                high.push(h);
            }
            for (i, &h) in high.iter().enumerate() {
                if libc::dup2(h, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// The inodes of the sockets `pid` has open (from /proc/<pid>/fd), to tell
/// whether a process holds a given socket.
pub fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_str()?.to_string();
            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// The inode of a socket this process holds.
pub fn inode_of(fd: &impl std::os::fd::AsRawFd) -> u64 {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }, 0, "fstat");
    st.st_ino
}
