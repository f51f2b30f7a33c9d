//! The master's lifecycle: open every listener and the control socket,
//! start every pool's supervisor and accept loop, then turn signals and
//! control commands into reloads, scaling and a graceful or fast stop.

mod control;
mod error;
mod memory;
mod pidfile;
pub(crate) mod realtime;
mod reload;
mod stop;
mod systemd;
mod upgrade;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{Config, LoadOptions, PoolConfig};
use crate::control::server::{Control, ControlSocket};
use crate::logging;
use crate::phase::{Phase, PhaseRx, PhaseTx};
use crate::pool::Pool;
use crate::router::inherit::Inherited;
use crate::router::{self, Listener};
use crate::signals::{SignalEvent, Signals};
use crate::supervisor::socket_dir::SocketDir;
use crate::supervisor::{self, Report, Supervisor};

/// How the master was started, for reloads.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// The config file to read again on reload; `None` for the embedded
    /// default, which reloads as it is.
    pub config_path: Option<PathBuf>,
    pub load: LoadOptions,
}

/// A running pool, as the master holds it.
struct PoolHandle {
    pool: Arc<Pool>,
    /// The listening sockets' fds (`listen`, then `pm.status_listen`),
    /// owned by the accept loops; passed on to a master that replaces this
    /// one, each under its address.
    listener_fds: Vec<(crate::config::ListenAddr, std::os::fd::RawFd)>,
    commands: mpsc::UnboundedSender<supervisor::Command>,
    /// `None` once a stop waits for it.
    supervisor: Option<JoinHandle<()>>,
    acceptors: Vec<JoinHandle<()>>,
}

/// A pool's listening sockets, opened before it starts.
struct PoolListeners {
    main: Listener,
    /// `pm.status_listen`.
    status: Option<Listener>,
}

struct Master {
    config: Config,
    opts: RunOptions,
    pools: Vec<PoolHandle>,
    next_index: usize,
    sockets: Arc<SocketDir>,
    phase: PhaseTx,
    reports: mpsc::UnboundedSender<Report>,
    /// Times of recent SIGSEGV/SIGBUS deaths (`emergency_restart_*`).
    crashes: VecDeque<Instant>,
    budget: Arc<supervisor::ProcessBudget>,
    systemd: systemd::Systemd,
    internal: mpsc::UnboundedSender<Internal>,
    /// The program and arguments this master was started with, for
    /// `herd ctl upgrade`.
    exe: PathBuf,
    args: Vec<std::ffi::OsString>,
    control_fd: std::os::fd::RawFd,
    /// The `herd ctl upgrade` waiting for the new master.
    upgrading: Option<mpsc::UnboundedSender<crate::control::protocol::Line>>,
    /// Every pool's first workers passed their gate.
    started: bool,
    /// Reloads whose rollouts have not settled yet.
    reloads: usize,
    /// During a graceful stop, when its current step ends: the depool
    /// delay, then `process_control_timeout` (for `herd ctl status`).
    phase_ends: std::cell::Cell<Option<tokio::time::Instant>>,
}

/// What the master's own tasks report back to its loop.
enum Internal {
    /// Every pool's first workers passed their gate.
    Started,
    /// A reload's rollouts settled (done or refused); `systemd` when it
    /// was told `RELOADING=1` and waits for `READY=1`.
    ReloadSettled {
        systemd: bool,
    },
    UpgradeReady(u32),
    UpgradeFailed(String),
}

/// What ends the master's loop.
enum Stop {
    Graceful,
    /// A new master took over the sockets (`herd ctl upgrade`).
    HandOff,
    Fast,
}

/// Sets up logging as `config` says (stderr, or `error_log` in its place),
/// then runs the master until it is stopped.
/// With `error_log` set, an error that ends herd is written to the stderr
/// it was started with as well (as php-fpm does), so `systemctl status` and
/// a shell show why it did not start, not only the log file.
pub fn start(config: Config, opts: RunOptions) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::fd::AsFd;

    logging::init(config.global.log_level, config.global.log_format);
    let mut console = None;
    if let Some(log) = &config.global.error_log {
        // A close-on-exec copy: workers never hold the console open.
        console = std::io::stderr().as_fd().try_clone_to_owned().ok();
        logging::open_over_stderr(log)
            .with_context(|| format!("failed to open error_log {}", log.display()))?;
    }
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let result = run(config, opts);
    if let (Err(e), Some(console)) = (&result, console) {
        let _ = std::fs::File::from(console).write_all(format!("herd: {e:#}\n").as_bytes());
    }
    result
}

/// Runs the master until it is stopped. Errors before the first worker
/// starts (a listener that cannot open, an unknown user) end it at once.
pub fn run(config: Config, opts: RunOptions) -> anyhow::Result<()> {
    // One thread by default: the master's work per request is small, and on
    // the few cores a web host has, a second thread mostly adds wakeups
    // between threads; `master.threads` raises it for large hosts.
    let threads = config.global.master_threads;
    let realtime = config.global.master_realtime;
    let runtime = if threads <= 1 {
        if realtime {
            report_realtime(realtime::start());
        }
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        if realtime {
            // The limit and its handler; the runtime's threads then enter
            // the policy as they start, and this one leaves it again.
            let started = realtime::start();
            if started.is_ok() {
                realtime::leave();
            }
            report_realtime(started);
        }
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if realtime {
            builder.on_thread_start(|| {
                realtime::enter();
            });
        }
        builder
            .worker_threads(threads as usize)
            .enable_all()
            .thread_name("herd")
            .build()
    }
    .context("failed to start the runtime")?;
    runtime.block_on(serve(config, opts))
}

/// One line on `master.realtime`: on, or why not.
fn report_realtime(started: std::io::Result<()>) {
    match started {
        Ok(()) => tracing::info!(
            "master runs under SCHED_FIFO while the CPUs have time to spare (master.realtime; gives it up for good after {:?} without sleeping)",
            realtime::RUN_LIMIT
        ),
        Err(e) => tracing::info!(
            "master.realtime: the kernel refused SCHED_FIFO ({e}): the master runs under the ordinary policy"
        ),
    }
}

async fn serve(config: Config, opts: RunOptions) -> anyhow::Result<()> {
    if realtime::enabled() {
        tokio::spawn(realtime::govern());
    }
    set_limits(&config.global)?;
    set_priority(config.global.process_priority)?;
    // What a master killed with SIGKILL left behind goes before anything
    // new starts.
    let socket_base = crate::supervisor::socket_dir::base(config.global.socket_dir.as_deref());
    crate::supervisor::orphans::sweep(&socket_base);
    tokio::spawn(crate::supervisor::strays::run());
    let mut inherited = Inherited::from_env();
    let mut upgrade_pipe = upgrade::claim_pipe();
    let mut signals = Signals::install().context("failed to install signal handlers")?;
    let sockets = Arc::new(SocketDir::create(config.global.socket_dir.as_deref())?);
    let listeners = open_listeners(&config.pools, &mut inherited)?;
    let control_path = crate::control::socket_path(&config);
    let control = match inherited.take_control() {
        Some(fd) => ControlSocket::adopt(fd, &control_path)?,
        None => ControlSocket::open(&control_path)?,
    };
    for name in inherited.unused() {
        tracing::warn!("closing the passed socket '{name}': no pool listens on it");
    }
    let _pid_file = pidfile::PidFile::write(config.global.pid.as_deref())?;
    let (phase, _) = watch::channel(Phase::Starting);
    let (reports, mut reports_rx) = mpsc::unbounded_channel();
    let (internal, mut internal_rx) = mpsc::unbounded_channel();
    let budget = supervisor::ProcessBudget::new(config.global.process_max);
    let mut master = Master {
        config,
        opts,
        pools: Vec::new(),
        next_index: 0,
        sockets,
        phase,
        reports,
        crashes: VecDeque::new(),
        budget,
        systemd: systemd::Systemd::from_env(),
        internal,
        exe: crate::config::this_program().context("failed to find the herd binary")?,
        args: std::env::args_os().collect(),
        control_fd: control.raw_fd(),
        upgrading: None,
        started: false,
        reloads: 0,
        phase_ends: std::cell::Cell::new(None),
    };
    for (cfg, listener) in master.config.pools.clone().into_iter().zip(listeners) {
        master.start_pool(cfg, listener)?;
    }
    let (control_tx, mut control_rx) = mpsc::unbounded_channel::<Control>();
    tracing::info!("control socket {}", control.path().display());
    tokio::spawn(control.serve(control_tx));
    tracing::info!(
        "herd {} started: {} pool(s)",
        env!("CARGO_PKG_VERSION"),
        master.pools.len()
    );
    master.notify_when_started();
    let mut watchdog =
        tokio::time::interval(master.systemd.watchdog.unwrap_or(Duration::from_secs(10)));
    let mut trimmer = memory::Trimmer::new();
    let mut trim = tokio::time::interval(Duration::from_secs(2));
    trim.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    let stop = loop {
        tokio::select! {
            ev = signals.next() => if let Some(stop) = master.on_signal(ev).await {
                break stop;
            },
            Some(ctl) = control_rx.recv() => if let Some(stop) = master.on_control(ctl).await {
                break stop;
            },
            Some(report) = reports_rx.recv() => master.on_report(report).await,
            Some(ev) = internal_rx.recv() => if let Some(stop) = master.on_internal(ev, &mut upgrade_pipe) {
                break stop;
            },
            _ = trim.tick() => trimmer.tick(&master.pool_list()),
            _ = watchdog.tick() => {
                if master.systemd.watchdog.is_some() {
                    master.systemd.watchdog_ping();
                }
                master.systemd.status(&systemd::summary(&master.pool_list()));
            }
        }
    };
    if !matches!(stop, Stop::HandOff) {
        // After a hand-off the service goes on, under the new master.
        master.systemd.stopping();
    }
    let inputs = stop::Inputs {
        signals: &mut signals,
        control: &mut control_rx,
    };
    match stop {
        Stop::Graceful => master.graceful_stop(inputs, false).await,
        Stop::HandOff => master.graceful_stop(inputs, true).await,
        Stop::Fast => master.fast_stop(inputs.control).await,
    }
    tracing::info!("herd stopped");
    Ok(())
}

fn open_listeners(
    pools: &[PoolConfig],
    inherited: &mut Inherited,
) -> anyhow::Result<Vec<PoolListeners>> {
    pools
        .iter()
        .map(|p| {
            let open = |inherited: &mut Inherited| -> anyhow::Result<PoolListeners> {
                Ok(PoolListeners {
                    main: Listener::open(p, inherited)?,
                    status: Listener::open_status(p, inherited)?,
                })
            };
            open(inherited).with_context(|| format!("pool '{}'", p.name))
        })
        .collect()
}

impl Master {
    fn phase_rx(&self) -> PhaseRx {
        self.phase.subscribe()
    }

    /// Publishes the running phase after a change of what makes it; a
    /// stop, once begun, is the stop's to publish.
    fn publish_phase(&self) {
        let now = Phase::running(self.started, self.reloads, self.upgrading.is_some());
        self.phase.send_if_modified(|phase| {
            let changed = !phase.stopping() && *phase != now;
            if changed {
                *phase = now;
            }
            changed
        });
    }

    fn start_pool(&mut self, cfg: PoolConfig, listeners: PoolListeners) -> anyhow::Result<()> {
        let name = cfg.name.clone();
        let mut listener_fds = vec![(cfg.listen.clone(), listeners.main.raw_fd())];
        let (pool, events) =
            Pool::new(Arc::new(cfg.clone())).with_context(|| format!("pool '{name}'"))?;
        let shared = supervisor::Shared {
            sockets: self.sockets.clone(),
            reports: self.reports.clone(),
            control_timeout: self.config.global.process_control_timeout,
            budget: self.budget.clone(),
        };
        let (sup, commands) = Supervisor::new(
            pool.clone(),
            self.next_index,
            events,
            shared,
            upgrade::first_generation(&name),
        )
        .with_context(|| format!("pool '{name}'"))?;
        self.next_index += 1;
        tracing::info!(pool = %name, "listening on {}", cfg.listen);
        let mut acceptors = vec![tokio::spawn(router::accept_loop(
            listeners.main,
            pool.clone(),
            self.phase_rx(),
            router::Serves::Pool,
        ))];
        if let (Some(status), Some(addr)) = (listeners.status, &cfg.status_listen) {
            tracing::info!(pool = %name, "status and ping only on {addr} (pm.status_listen)");
            listener_fds.push((addr.clone(), status.raw_fd()));
            acceptors.push(tokio::spawn(router::accept_loop(
                status,
                pool.clone(),
                self.phase_rx(),
                router::Serves::StatusOnly,
            )));
        }
        self.pools.push(PoolHandle {
            listener_fds,
            supervisor: Some(tokio::spawn(sup.run())),
            acceptors,
            pool,
            commands,
        });
        Ok(())
    }

    fn pool_list(&self) -> Vec<Arc<Pool>> {
        self.pools.iter().map(|p| p.pool.clone()).collect()
    }

    /// Sends `Internal::Started` once every pool's first workers are up.
    fn notify_when_started(&self) {
        let pools = self.pool_list();
        let internal = self.internal.clone();
        tokio::spawn(async move {
            systemd::all_started(pools).await;
            let _ = internal.send(Internal::Started);
        });
    }

    fn on_internal(
        &mut self,
        ev: Internal,
        upgrade_pipe: &mut Option<std::os::fd::OwnedFd>,
    ) -> Option<Stop> {
        match ev {
            Internal::Started => {
                self.started = true;
                self.publish_phase();
                let summary = systemd::summary(&self.pool_list());
                tracing::info!("ready: {summary}");
                self.systemd.ready(&summary);
                if let Some(pipe) = upgrade_pipe.take() {
                    tracing::info!("upgrade: telling the old master we are ready");
                    self.systemd.main_pid(std::process::id());
                    upgrade::report_ready(pipe);
                }
            }
            Internal::ReloadSettled { systemd } => {
                self.reloads -= 1;
                self.publish_phase();
                if systemd {
                    self.systemd.ready(&systemd::summary(&self.pool_list()));
                }
            }
            Internal::UpgradeReady(pid) => {
                tracing::info!(
                    "upgrade: the new master (pid {pid}) is ready; handing over and draining"
                );
                self.systemd.main_pid(pid);
                router::hand_off();
                if let Some(reply) = self.upgrading.take() {
                    let _ = reply.send(crate::control::protocol::Line::ok(format!(
                        "upgraded: the new master is pid {pid}; this one drains and exits"
                    )));
                }
                return Some(Stop::HandOff);
            }
            Internal::UpgradeFailed(why) => {
                tracing::error!("upgrade failed: {why}; this master keeps serving");
                if let Some(reply) = self.upgrading.take() {
                    let _ = reply.send(crate::control::protocol::Line::error(format!(
                        "upgrade failed: {why}; the old master keeps serving"
                    )));
                }
                self.publish_phase();
            }
        }
        None
    }

    fn pool(&self, name: &str) -> Option<&PoolHandle> {
        self.pools.iter().find(|p| p.pool.name == name)
    }

    async fn on_signal(&mut self, ev: SignalEvent) -> Option<Stop> {
        match ev {
            SignalEvent::GracefulStop => return Some(Stop::Graceful),
            SignalEvent::FastStop => return Some(Stop::Fast),
            SignalEvent::Reload => {
                self.systemd.reloading();
                match self.reload(None, false).await {
                    Ok(done) => self.track_reload(done, true),
                    Err(e) => {
                        tracing::error!("reload refused: {e}");
                        self.systemd.ready(&systemd::summary(&self.pool_list()));
                    }
                }
            }
            SignalEvent::ReopenLogs => self.reopen_logs(),
            SignalEvent::MoreWorkers | SignalEvent::FewerWorkers => {
                let delta = if ev == SignalEvent::MoreWorkers {
                    1
                } else {
                    -1
                };
                for p in &self.pools {
                    let _ = p.commands.send(supervisor::Command::Scale { delta });
                }
            }
        }
        None
    }

    /// `SIGUSR1`: the error log, and every pool's access log and slowlog,
    /// are opened again by name (after a rotation renamed them).
    fn reopen_logs(&self) {
        logging::reopen(self.config.global.error_log.as_deref());
        self.pools.iter().for_each(|p| p.pool.logs.reopen());
    }

    /// php-fpm's `emergency_restart_threshold`: that many workers dying of
    /// SIGSEGV or SIGBUS within `emergency_restart_interval` reload every
    /// pool (as a rollout here, so it costs no capacity).
    async fn on_report(&mut self, report: Report) {
        let Report::Crashed = report;
        let g = &self.config.global;
        if g.emergency_restart_threshold == 0 || g.emergency_restart_interval.is_zero() {
            return;
        }
        let now = Instant::now();
        self.crashes.push_back(now);
        while self
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > g.emergency_restart_interval)
        {
            self.crashes.pop_front();
        }
        if self.crashes.len() >= g.emergency_restart_threshold as usize {
            tracing::error!(
                "failed processes threshold ({} in {:?}) is reached, initiating reload",
                g.emergency_restart_threshold,
                g.emergency_restart_interval
            );
            self.crashes.clear();
            match self.reload(None, true).await {
                Ok(done) => self.track_reload(done, false),
                Err(e) => tracing::error!("emergency reload refused: {e}"),
            }
        }
    }
}

/// `process.priority` for the master. Workers do not inherit it: they get
/// their pool's `process.priority`, or the nice value herd started with.
fn set_priority(nice: Option<i32>) -> anyhow::Result<()> {
    let Some(nice) = nice else { return Ok(()) };
    crate::supervisor::spawn::remember_start_nice();
    // SAFETY: setpriority on this process only.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
        anyhow::bail!(
            "failed to set process.priority {nice}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// `rlimit_files` and `rlimit_core` of `[global]`, as php-fpm sets them on
/// its master (soft and hard alike); workers inherit them. Without
/// `rlimit_files`, the soft limit goes up to the hard one: connections are
/// what bound herd's concurrency, and 1024 would refuse clients long before
/// `listen.max_connections`.
fn set_limits(global: &crate::config::Global) -> anyhow::Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let set = |what: &str, resource, n: u64| {
        setrlimit(resource, n, n).with_context(|| {
            let n = if n == u64::MAX {
                "unlimited".to_string()
            } else {
                n.to_string()
            };
            format!("failed to set {what} to {n}")
        })
    };
    match global.rlimit_files {
        Some(n) => set("rlimit_files", Resource::RLIMIT_NOFILE, n)?,
        None => {
            if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
                && soft < hard
            {
                let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
            }
        }
    }
    if let Some(n) = global.rlimit_core {
        set("rlimit_core", Resource::RLIMIT_CORE, n)?;
    }
    crate::supervisor::output::set_line_limit(global.log_limit);
    Ok(())
}
