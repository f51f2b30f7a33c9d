//! Starting one worker process the way the FastCGI spec says: its own
//! listening socket as fd 0, the pool's user, group, directory and
//! environment, and tied to the master's life so no orphan keeps serving
//! stale code after the master is killed.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use nix::unistd::{Gid, Group, Uid, User};
use tokio::process::{Child, Command};

use super::engine;
use crate::config::{PhpEngine, PoolConfig};

/// Who a pool's workers run as, resolved once in the master: nothing that
/// reads `/etc/passwd` may run between fork and exec.
#[derive(Clone, Debug)]
pub struct Identity {
    /// `None`: keep the master's identity (herd does not run as root).
    pub ids: Option<(Uid, Gid, Vec<Gid>)>,
    pub user_name: String,
    pub home: PathBuf,
}

impl Identity {
    /// The worker keeps root: herd runs as root and the pool names no
    /// user (`--allow-root`).
    pub fn runs_as_root(&self) -> bool {
        match &self.ids {
            Some((uid, ..)) => uid.is_root(),
            None => Uid::effective().is_root(),
        }
    }

    pub fn resolve(pool: &PoolConfig) -> anyhow::Result<Identity> {
        let me = User::from_uid(Uid::current()).ok().flatten();
        let switch = Uid::effective().is_root() && pool.user.is_some();
        if !switch {
            return Ok(Identity {
                ids: None,
                user_name: me.as_ref().map(|u| u.name.clone()).unwrap_or_default(),
                home: me.map(|u| u.dir).unwrap_or_else(|| "/".into()),
            });
        }
        let name = pool.user.as_deref().expect("checked above");
        let user = User::from_name(name)?.with_context(|| format!("no user named '{name}'"))?;
        let gid = match &pool.group {
            Some(g) => {
                Group::from_name(g)?
                    .with_context(|| format!("no group named '{g}'"))?
                    .gid
            }
            None => user.gid,
        };
        let cname = CString::new(name)?;
        let mut groups = nix::unistd::getgrouplist(&cname, gid)
            .with_context(|| format!("failed to list the groups of '{name}'"))?;
        groups.retain(|g| *g != gid);
        groups.insert(0, gid);
        Ok(Identity {
            ids: Some((user.uid, gid, groups)),
            user_name: user.name,
            home: user.dir,
        })
    }
}

/// The nice value herd started with, when `process.priority` changed it.
static START_NICE: std::sync::OnceLock<i32> = std::sync::OnceLock::new();

/// Records the nice value before the master changes its own.
pub fn remember_start_nice() {
    // SAFETY: getpriority has no preconditions; errno is cleared first as
    // -1 is a valid result.
    let nice = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, 0)
    };
    let _ = START_NICE.set(nice);
}

/// How much lower a worker's CPU priority is while it starts beside
/// serving workers (see [`start_behind`]).
const WARMING_NICE_STEP: i32 = 10;

/// Lowers the CPU priority of a worker that just started (its whole
/// process group: php-fpm's children inherit it) while workers of the pool
/// serve, so the engine's start-up, the OPcache's first compiles and the
/// warm-up requests yield to their requests. Returns the nice value to
/// give back at its gate. Only as root: anyone else could not raise it
/// again.
pub fn start_behind(pid: u32, pool: &PoolConfig) -> Option<i32> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let serving = pool
        .process_priority
        .or(START_NICE.get().copied())
        .unwrap_or(0);
    let warming = (serving + WARMING_NICE_STEP).min(19);
    (warming != serving && set_group_nice(pid, warming)).then_some(serving)
}

/// Sets the nice value of the process group `pid` leads; false (and one
/// log line) when the kernel says no.
pub fn set_group_nice(pid: u32, nice: i32) -> bool {
    // SAFETY: setpriority on a process group by id; no memory involved.
    let r = unsafe { libc::setpriority(libc::PRIO_PGRP, pid as libc::id_t, nice) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        tracing::debug!(pid, nice, "could not set the worker's priority: {e}");
    }
    r == 0
}

/// Everything needed to start one worker.
pub struct SpawnSpec<'a> {
    pub pool: &'a PoolConfig,
    pub identity: &'a Identity,
    /// The command as resolved for this generation.
    pub program: &'a Path,
    /// `chdir` as resolved for this generation.
    pub dir: Option<&'a Path>,
    pub generation: u32,
    pub worker: u64,
    /// The worker's listening socket (fd 0); `None` for a preloader.
    pub listener: Option<UnixListener>,
    /// A preloader's control socket, passed as fd 3.
    pub control: Option<OwnedFd>,
    /// Where worker output goes: a pipe's write end, or `None` for /dev/null.
    pub output: Option<OwnedFd>,
}

/// Variables that belong to herd's own supervisor and must never reach a
/// worker, even with `clear_env = no`.
const PRIVATE_ENV: &[&str] = &[
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

pub fn spawn(spec: SpawnSpec<'_>) -> anyhow::Result<Child> {
    let pool = spec.pool;
    let engine = pool.php_group.as_ref().map(|g| (g.engine, g.size));
    let mut cmd = Command::new(spec.program);
    cmd.args(&pool.args);
    // Descriptors the child gets at fixed numbers (beyond 0, 1 and 2).
    let mut passed: Vec<(OwnedFd, i32)> = Vec::new();
    let mut listener = spec.listener;
    let mut fpm_sockets = None;
    match engine {
        Some((PhpEngine::Fpm, size)) => {
            let socket = listener
                .take()
                .context("a php-fpm group needs its socket")?;
            let path = socket
                .local_addr()?
                .as_pathname()
                .context("the worker socket has no path")?
                .to_path_buf();
            let text = engine::fpm_config(pool, &path, size);
            let config = engine::memfd("herd-php-fpm.conf", &text)
                .context("failed to write php-fpm's config")?;
            let status_path = engine::status_socket(&path);
            let status = bind_worker_socket(&status_path)?;
            cmd.args(engine::fpm_args(pool, spec.identity.runs_as_root()));
            fpm_sockets = Some(format!(
                "{}={},{}={}",
                path.display(),
                engine::FPM_SOCKET_FD,
                status_path.display(),
                engine::FPM_STATUS_FD
            ));
            passed.push((OwnedFd::from(socket), engine::FPM_SOCKET_FD));
            passed.push((config, engine::FPM_CONFIG_FD));
            passed.push((OwnedFd::from(status), engine::FPM_STATUS_FD));
        }
        _ => {
            for d in &pool.php_defines {
                cmd.arg("-d")
                    .arg(format!("{}={}", d.name, engine::quote(&d.value)));
            }
        }
    }
    if pool.clear_env {
        cmd.env_clear();
        cmd.env("USER", &spec.identity.user_name)
            .env("HOME", &spec.identity.home);
    }
    for name in PRIVATE_ENV {
        cmd.env_remove(name);
    }
    cmd.envs(pool.env.iter().map(|(k, v)| (k, v)));
    if let Some((PhpEngine::Cgi, size)) = engine {
        cmd.envs(engine::cgi_env(pool, size));
    }
    if let Some(sockets) = fpm_sockets {
        cmd.env("FPM_SOCKETS", sockets);
    }
    if let Some(n) = pool.worker_slots {
        // FCGI::ProcManager scripts read their n_processes from it.
        cmd.env("HERD_SLOTS", n.to_string());
    }
    cmd.env("HERD_POOL", &pool.name)
        .env("HERD_GENERATION", spec.generation.to_string())
        .env(super::orphans::ENV, master_marker());
    if let Some(control) = spec.control {
        cmd.env(crate::worker::preloader::ENV, PRELOADER_FD.to_string());
        passed.push((control, PRELOADER_FD));
    } else {
        cmd.env("HERD_WORKER", spec.worker.to_string());
    }
    match listener {
        Some(l) => cmd.stdin(Stdio::from(OwnedFd::from(l))),
        None => cmd.stdin(Stdio::null()),
    };
    match spec.output {
        Some(fd) => {
            let err = fd
                .try_clone()
                .context("failed to duplicate the output pipe")?;
            cmd.stdout(Stdio::from(fd)).stderr(Stdio::from(err));
        }
        None => {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    cmd.kill_on_drop(false);

    // Every descriptor passed moves above every number it is passed at, so
    // that placing one in the child never closes another still to place.
    let above = passed.iter().map(|(_, at)| *at).max().unwrap_or(2) + 1;
    let passed = passed
        .into_iter()
        .map(|(fd, at)| Ok((dup_above(&fd, above)?, at)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut child_setup = ChildSetup::new(pool, spec.dir, spec.identity)?;
    child_setup.passed = passed
        .iter()
        .map(|(fd, at)| (fd.as_raw_fd(), *at))
        .collect();
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe system calls on data prepared in the parent.
    unsafe {
        cmd.pre_exec(move || child_setup.apply());
    }
    let child = super::strays::own(|| cmd.spawn())
        .with_context(|| format!("failed to start {}", spec.program.display()));
    // The child has its copies now.
    drop(passed);
    child
}

/// A copy of `fd` at `floor` or above, closed on exec.
fn dup_above(fd: &OwnedFd, floor: i32) -> anyhow::Result<OwnedFd> {
    // SAFETY: fcntl on an open descriptor; a new one is owned at once.
    let high = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, floor) };
    if high < 0 {
        return Err(std::io::Error::last_os_error()).context("failed to pass a descriptor");
    }
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(high) })
}

/// This master's `HERD_MASTER` value, read once.
fn master_marker() -> &'static str {
    static MARKER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    MARKER.get_or_init(super::orphans::marker)
}

/// Where a preloader finds its control socket.
const PRELOADER_FD: i32 = 3;

/// What the child does between fork and exec, prepared in the parent.
struct ChildSetup {
    master_pid: libc::pid_t,
    rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
    chroot: Option<CString>,
    chdir: Option<CString>,
    ids: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
    /// Descriptors to put at fixed numbers: `(ours, theirs)`.
    passed: Vec<(libc::c_int, libc::c_int)>,
    /// The pool's `process.priority`, or the nice herd started with.
    nice: Option<i32>,
    /// `RLIMIT_RTTIME` as herd found it, when `master.realtime` lowered
    /// the master's.
    rttime: Option<libc::rlimit>,
}

impl ChildSetup {
    fn new(
        pool: &PoolConfig,
        dir: Option<&Path>,
        identity: &Identity,
    ) -> anyhow::Result<ChildSetup> {
        let cstr =
            |p: &Path| CString::new(p.as_os_str().as_bytes()).context("path contains a NUL byte");
        let mut rlimits = Vec::new();
        if let Some(n) = pool.rlimit_files {
            rlimits.push((libc::RLIMIT_NOFILE, n));
        }
        if let Some(n) = pool.rlimit_core {
            rlimits.push((libc::RLIMIT_CORE, n));
        }
        if pool.chroot.is_some() && identity.ids.is_none() {
            bail!("chroot needs herd to run as root");
        }
        Ok(ChildSetup {
            master_pid: std::process::id() as libc::pid_t,
            rlimits,
            chroot: pool.chroot.as_deref().map(cstr).transpose()?,
            chdir: dir.map(cstr).transpose()?,
            ids: identity.ids.as_ref().map(|(u, g, groups)| {
                (
                    u.as_raw(),
                    g.as_raw(),
                    groups.iter().map(|g| g.as_raw()).collect(),
                )
            }),
            passed: Vec::new(),
            nice: pool.process_priority.or(START_NICE.get().copied()),
            rttime: crate::master::realtime::original_limit(),
        })
    }

    /// Runs in the child. Order matters: everything that needs root happens
    /// before the ids change, and the parent-death signal is set last
    /// because changing ids clears it.
    fn apply(&self) -> std::io::Result<()> {
        let check = |r: libc::c_int| {
            if r == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        };
        // SAFETY (whole function): plain system calls on owned, NUL-terminated
        // data; no allocation, no locks.
        unsafe {
            // Own process group: a Ctrl-C at the master's terminal reaches
            // the master only, which then stops workers in order, and a
            // worker's signals reach whatever it forked. The master's
            // session, though: with the kernel's autogroups (on in Debian's
            // and most distributions' kernels) a session is one scheduling
            // entity, so a session per worker would give every worker the
            // CPU weight of a whole service (32 php-cgi workers 32 times
            // nginx's) and make the nice steps of a warming worker
            // meaningless beside the others. In one session herd weighs
            // what php-fpm does.
            check(libc::setpgid(0, 0))?;
            // Each descriptor sits above every target (see `spawn`), so
            // placing one never closes another; dup2 leaves the copy
            // without FD_CLOEXEC.
            for (fd, at) in &self.passed {
                if libc::dup2(*fd, *at) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(nice) = self.nice {
                check(libc::setpriority(libc::PRIO_PROCESS, 0, nice))?;
            }
            if let Some(lim) = &self.rttime {
                check(libc::setrlimit(libc::RLIMIT_RTTIME, lim))?;
            }
            for (resource, value) in &self.rlimits {
                let lim = libc::rlimit {
                    rlim_cur: *value,
                    rlim_max: *value,
                };
                check(libc::setrlimit(*resource, &lim))?;
            }
            if let Some(root) = &self.chroot {
                check(libc::chroot(root.as_ptr()))?;
                check(libc::chdir(c"/".as_ptr()))?;
            }
            if let Some(dir) = &self.chdir {
                check(libc::chdir(dir.as_ptr()))?;
            }
            if let Some((uid, gid, groups)) = &self.ids {
                check(libc::setgroups(groups.len(), groups.as_ptr()))?;
                check(libc::setgid(*gid))?;
                check(libc::setuid(*uid))?;
            }
            check(libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ))?;
            // The master may have died before the line above ran.
            if libc::getppid() != self.master_pid {
                libc::_exit(1);
            }
        }
        Ok(())
    }
}

/// Binds a worker's private listening socket.
pub fn bind_worker_socket(path: &Path) -> anyhow::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path)
        .with_context(|| format!("failed to bind worker socket {}", path.display()))
}
