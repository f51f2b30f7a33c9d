//! Configuration: php-fpm's ini dialect read in two stages.
//!
//! Stage one (`ini`) turns files into sections of raw entries, each with its
//! `file:line`, following `include = glob` lines. Stage two (`build`) turns
//! those entries into the typed [`Config`] below, collecting every error with
//! its location instead of stopping at the first; `pool` builds one pool,
//! `value` parses scalars and `resolve` checks names against the system.
//! `directives` is the one table of every directive, its scope, default and
//! meaning; the README's reference is checked against it.

mod build;
pub mod directives;
mod ini;
mod php;
mod pool;
mod resolve;
mod value;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use build::{LoadOptions, load, load_partly, parse_str};
pub use resolve::this_program;

/// Where a section or entry was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One problem found in a config, with the place it was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub location: Option<Location>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(loc) => write!(f, "{loc}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Every problem found in a config; never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The whole configuration of one master.
#[derive(Clone, Debug)]
pub struct Config {
    /// The main file, or `None` for the embedded default.
    pub file: Option<PathBuf>,
    pub global: Global,
    pub pools: Vec<PoolConfig>,
    /// Problems that do not stop herd (an include matching nothing, `user`
    /// without root), each starting with `file:line: `.
    pub warnings: Vec<String>,
    /// Worth knowing but not a problem (a value an override file replaces,
    /// a php-fpm directive with no effect under herd), each with `file:line: `.
    pub notes: Vec<String>,
}

/// The `[global]` section.
#[derive(Clone, Debug, PartialEq)]
pub struct Global {
    pub pid: Option<PathBuf>,
    /// `None`: stderr.
    pub error_log: Option<PathBuf>,
    pub log_level: LogLevel,
    pub log_format: LogFormat,
    pub process_control_timeout: Duration,
    pub emergency_restart_threshold: u32,
    pub emergency_restart_interval: Duration,
    /// Directory for the workers' private sockets; `None`: chosen at start.
    pub socket_dir: Option<PathBuf>,
    /// `control.listen`: the control socket; `None`: beside the pid file.
    pub control_listen: Option<PathBuf>,
    /// `process.max`: cap on workers across all pools; 0 = none.
    pub process_max: u32,
    /// `master.threads`: threads of the master's event loop.
    pub master_threads: u32,
    /// `master.realtime`: the master's event loop under `SCHED_FIFO`.
    pub master_realtime: bool,
    /// `process.priority`: the master's nice value.
    pub process_priority: Option<i32>,
    pub shutdown_depool_delay: Duration,
    /// `rlimit_files`: the master's RLIMIT_NOFILE; `None`: raised to the
    /// hard limit.
    pub rlimit_files: Option<u64>,
    /// `rlimit_core`: the master's RLIMIT_CORE; `None`: inherited.
    pub rlimit_core: Option<u64>,
    /// `log_limit`: bytes of one line of worker output that are logged.
    pub log_limit: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Alert,
    Error,
    Warning,
    Notice,
    Debug,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ListenAddr {
    Unix(PathBuf),
    Tcp(SocketAddr),
    /// A socket passed by systemd (`LISTEN_FDS`), by its
    /// `FileDescriptorName`.
    Systemd(String),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Unix(p) => write!(f, "{}", p.display()),
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Systemd(name) => write!(f, "systemd:{name}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpawnMode {
    Exec,
    Preload,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PmMode {
    Static,
    Dynamic,
    Ondemand,
}

impl PmMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PmMode::Static => "static",
            PmMode::Dynamic => "dynamic",
            PmMode::Ondemand => "ondemand",
        }
    }
}

/// `security.limit_extensions`: which files a worker may be asked to run,
/// and how to tell which file that is (see `router::script`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptGuard {
    /// Allowed endings, such as `.php`; never empty (empty turns the check off).
    pub extensions: Vec<String>,
    pub lookup: ScriptLookup,
    /// The pool's `chroot`: paths are looked up inside it, as the worker sees them.
    pub root: Option<PathBuf>,
}

impl ScriptGuard {
    /// php-fpm's test: the path ends in an allowed extension and is longer
    /// than it (`.php` alone is not a script).
    pub fn allows(&self, script: &[u8]) -> bool {
        self.extensions
            .iter()
            .any(|e| script.len() > e.len() && script.ends_with(e.as_bytes()))
    }
}

/// How the worker turns a request's params into the file it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScriptLookup {
    /// php-cgi with `cgi.fix_pathinfo = 1`: `SCRIPT_FILENAME`, or when no
    /// such file exists, its longest leading part that is a regular file.
    FixPathinfo,
    /// php-cgi with `cgi.fix_pathinfo = 0`: `PATH_TRANSLATED` when sent
    /// (unless `cgi.discard_path`), else `SCRIPT_FILENAME`.
    Translated { discard_path: bool },
    /// Any other program: `SCRIPT_FILENAME` as sent.
    AsSent,
}

/// One `php_value`, `php_flag`, `php_admin_value` or `php_admin_flag`
/// (flags as `1` or `0`), or a setting herd pins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhpDefine {
    pub name: String,
    pub value: String,
    /// `php_admin_*`: locked against `ini_set()` where the engine can lock
    /// it (php-fpm); php-cgi gets it as `-d` like any other.
    pub admin: bool,
}

/// The PHP program a pool runs, told apart by its file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhpEngine {
    /// `php-cgi`: a group is one php-cgi with `PHP_FCGI_CHILDREN`.
    Cgi,
    /// `php-fpm`: a group is one php-fpm master with a config herd writes.
    Fpm,
}

/// PHP processes that share one OPcache, run as one worker with one slot
/// per process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub engine: PhpEngine,
    /// PHP processes per group (`php.group_size`): the most it runs.
    pub size: u32,
    /// How the engine runs them: php-fpm as the pool's `pm` says (dynamic
    /// and ondemand start and stop children within the group), php-cgi
    /// always static.
    pub pm: PmMode,
}

/// How the readiness gate first asks a worker whether it serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerProbe {
    /// Two `FCGI_GET_VALUES` records; ready at the first answer.
    Values,
    /// The pool's first `warmup.request`, for a program that management
    /// records crash.
    Request,
}

/// One `warmup.request[]` entry: `[METHOD] URI`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WarmupRequest {
    pub method: String,
    pub uri: String,
}

/// One pool section.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolConfig {
    pub name: String,
    /// Where the section header was written.
    pub defined_at: Location,

    // Listener.
    pub listen: ListenAddr,
    pub listen_backlog: i32,
    pub listen_owner: Option<String>,
    pub listen_group: Option<String>,
    pub listen_mode: u32,
    /// `None`: any client.
    pub listen_allowed_clients: Option<Vec<IpAddr>>,
    pub listen_max_connections: usize,
    /// `listen.acl_users`/`acl_groups`: uids and gids given rw on the unix
    /// socket by a POSIX ACL; either set, owner and group are left alone.
    pub listen_acl_users: Vec<u32>,
    pub listen_acl_groups: Vec<u32>,

    // Worker identity and environment.
    pub user: Option<String>,
    pub group: Option<String>,
    /// Resolved through `PATH` when written without a slash; `herd` names
    /// the running herd binary.
    pub command: PathBuf,
    pub args: Vec<String>,
    pub chdir: Option<PathBuf>,
    pub chroot: Option<PathBuf>,
    pub clear_env: bool,
    /// `env[NAME] = value`, in file order.
    pub env: Vec<(String, String)>,
    pub rlimit_files: Option<u64>,
    pub rlimit_core: Option<u64>,
    /// `process.priority`: the workers' nice value.
    pub process_priority: Option<i32>,
    /// `php_value[k]`, `php_flag[k]`, `php_admin_value[k]`, `php_admin_flag[k]`,
    /// in file order, then the settings herd pins for `script_guard`;
    /// passed to php-cgi as `-d k=v` arguments after `args`, and written
    /// into php-fpm's pool config.
    pub php_defines: Vec<PhpDefine>,
    /// The workers are PHP: `command` is a php-cgi or a php-fpm, or the
    /// pool sets `php_*` values.
    pub php: bool,
    /// PHP processes run in groups sharing an OPcache (a php-fpm engine, or
    /// php-cgi with `php.group_size` above 1); `None`: one process per worker.
    pub php_group: Option<Group>,
    /// `security.limit_extensions` as written, for an engine that checks
    /// it itself (php-fpm); `None`: unset.
    pub limit_extensions: Option<Vec<String>>,
    /// `security.limit_extensions`; `None` when off.
    pub script_guard: Option<ScriptGuard>,
    /// Worker stdout/stderr are logged by the master line by line; otherwise
    /// they go to /dev/null.
    pub catch_workers_output: bool,
    /// `decorate_workers_output`: log worker lines with pool and pid.
    pub decorate_workers_output: bool,
    /// php-fpm settings passed to php-fpm as the engine as written
    /// (`process.dumpable`, `request_slowlog_trace_depth`, ...).
    pub engine_settings: Vec<(&'static str, String)>,
    /// How workers start: each from `command` (exec), or forked from one
    /// preloader per generation (preload, for `herd::worker` programs).
    pub spawn: SpawnMode,

    // Process manager.
    pub pm: PmMode,
    pub max_children: u32,
    pub start_servers: u32,
    pub min_spare_servers: u32,
    pub max_spare_servers: u32,
    pub max_spawn_rate: u32,
    pub process_idle_timeout: Duration,
    /// 0 = never recycle.
    pub max_requests: u64,
    pub max_queue: usize,

    // Requests.
    pub request_queue_timeout: Duration,
    pub request_read_timeout: Duration,
    /// Params complete this long after a request's first byte; zero = off.
    pub request_header_timeout: Duration,
    /// The body's first allowance; zero = off.
    pub request_body_timeout: Duration,
    /// Bytes per second: each this many body bytes add a second.
    pub request_body_min_rate: u64,
    /// A keep-alive connection idle this long closes; zero = never.
    pub request_idle_timeout: Duration,
    pub request_max_params_size: usize,
    /// Zero = off.
    pub request_terminate_timeout: Duration,
    /// Zero = off.
    pub request_slowlog_timeout: Duration,
    /// `response.hold`: how long the start of a response from a worker
    /// that hangs up after each request may wait for the rest; zero = off.
    pub response_hold: Duration,
    pub slowlog: Option<PathBuf>,
    pub access_log: Option<PathBuf>,
    pub access_format: String,
    /// `access.suppress_path[]`: URIs whose 2xx requests are not logged.
    pub access_suppress_paths: Vec<String>,
    /// `pm.status_listen`: a second address answering status and ping only.
    pub status_listen: Option<ListenAddr>,
    pub status_path: Option<String>,
    pub ping_path: Option<String>,
    pub ping_response: String,

    // Worker lifecycle.
    pub worker_start_timeout: Duration,
    pub worker_min_lifetime: Duration,
    pub worker_stop_signal: i32,
    pub worker_kill_timeout: Duration,
    /// Bytes of resident memory; `None` = no limit.
    pub worker_max_memory: Option<u64>,
    pub worker_fatal_exit_codes: Vec<i32>,
    /// `worker.slots`: requests one worker serves at once; `None`: what
    /// the worker says (`FCGI_MAX_CONNS`).
    pub worker_slots: Option<u32>,
    pub worker_probe: WorkerProbe,

    // Generations.
    pub warmup_requests: Vec<WarmupRequest>,
    pub warmup_timeout: Duration,
    pub rollout_surge: u32,
    pub rollout_max_failures: u32,
    pub rollout_timeout: Duration,
}

impl PoolConfig {
    /// Worker processes herd keeps at most: `pm.max_children`, or for a
    /// pool of PHP groups, the groups that hold that many PHP processes.
    pub fn workers(&self) -> u32 {
        match &self.php_group {
            Some(g) => self.max_children.div_ceil(g.size),
            None => self.max_children,
        }
    }

    /// `pm.max_requests` as herd counts it: per worker, unless an engine
    /// recycles its own processes (a group's OPcache outlives them).
    pub fn herd_max_requests(&self) -> u64 {
        if self.php_group.is_some() {
            0
        } else {
            self.max_requests
        }
    }

    /// Whether the master keeps its connection to a worker open between
    /// requests (`FCGI_KEEP_CONN`). Not to a php-fpm engine: a child that
    /// called `fastcgi_finish_request()` works on after its response with
    /// the kept connection still its own, so the next request sent on it
    /// would wait for that work; a new connection is accepted by an idle
    /// child, as nginx's are by php-fpm's. Nor to a php-cgi group, whose
    /// children accept new connections the same way: PHP's FastCGI layer,
    /// under either engine, hangs up at the end of a response on a
    /// connection it does not keep, which lets the master relay the
    /// response whole (see `response_hold`).
    pub fn keeps_connections(&self) -> bool {
        self.php_group.is_none()
    }

    /// How long the master holds the start of a response to relay the
    /// whole of it at once (see `pool::hangups`): only where the worker
    /// hangs up after each request, which says the response is complete.
    pub fn response_hold(&self) -> Duration {
        if self.keeps_connections() {
            Duration::ZERO
        } else {
            self.response_hold
        }
    }

    /// Whether the pool's workers are php-fpm engines (`command` names
    /// php-fpm).
    pub fn runs_php_fpm(&self) -> bool {
        matches!(&self.php_group, Some(g) if g.engine == PhpEngine::Fpm)
    }

    /// Whether the master opens the connection for a free slot's next
    /// request as soon as the slot is free (see `pool::dispatch`): for a
    /// static php-fpm group, whose idle children each take one and wait on
    /// it, so the next request goes to the child that finished last. A
    /// child waiting on one is idle to php-fpm (its request, and
    /// `request_terminate_timeout`, start when data comes), and php-fpm
    /// closes one that brings nothing for 5 s. Not under `pm = ondemand`,
    /// whose master starts a child for every connection that waits, nor
    /// `dynamic`, where fewer children than slots may run and the rest
    /// would only wait in the queue.
    pub fn opens_ahead(&self) -> bool {
        matches!(&self.php_group,
            Some(g) if g.engine == PhpEngine::Fpm && g.pm == PmMode::Static)
    }

    /// `request_terminate_timeout` as herd enforces it: php-fpm stops its
    /// own stuck process, where herd would stop the whole group.
    pub fn herd_terminate_timeout(&self) -> Duration {
        if self.runs_php_fpm() {
            Duration::ZERO
        } else {
            self.request_terminate_timeout
        }
    }
}

impl Config {
    pub fn pool(&self, name: &str) -> Option<&PoolConfig> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// The directory relative paths in the main file are read against.
    pub fn base_dir(&self) -> &Path {
        self.file
            .as_deref()
            .and_then(Path::parent)
            .unwrap_or(Path::new("."))
    }
}
