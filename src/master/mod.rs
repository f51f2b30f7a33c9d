//! The master's lifecycle: open every listener and the control socket,
//! start every pool's supervisor and accept loop, then turn signals and
//! control commands into reloads, scaling and a graceful or fast stop.

mod control;
mod pidfile;
mod reload;
mod stop;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{Config, LoadOptions, PoolConfig};
use crate::control::server::{Control, ControlSocket};
use crate::logging;
use crate::phase::{Phase, PhaseRx, PhaseTx};
use crate::pool::Pool;
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
    commands: mpsc::UnboundedSender<supervisor::Command>,
    supervisor: JoinHandle<()>,
    acceptor: JoinHandle<()>,
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
}

/// What ends the master's loop.
enum Stop {
    Graceful,
    Fast,
}

/// Sets up logging as `config` says (stderr, or `error_log` in its place),
/// then runs the master until it is stopped.
pub fn start(config: Config, opts: RunOptions) -> anyhow::Result<()> {
    logging::init(config.global.log_level);
    if let Some(log) = &config.global.error_log {
        logging::open_over_stderr(log)
            .with_context(|| format!("failed to open error_log {}", log.display()))?;
    }
    run(config, opts)
}

/// Runs the master until it is stopped. Errors before the first worker
/// starts (a listener that cannot open, an unknown user) end it at once.
pub fn run(config: Config, opts: RunOptions) -> anyhow::Result<()> {
    // One thread by default: the master's work per request is small, and on
    // the few cores a web host has, a second thread mostly adds wakeups
    // between threads; `master.threads` raises it for large hosts.
    let threads = config.global.master_threads;
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads as usize)
            .enable_all()
            .thread_name("herd")
            .build()
    }
    .context("failed to start the runtime")?;
    runtime.block_on(serve(config, opts))
}

async fn serve(config: Config, opts: RunOptions) -> anyhow::Result<()> {
    raise_fd_limit();
    let mut signals = Signals::install().context("failed to install signal handlers")?;
    let sockets = Arc::new(SocketDir::create(config.global.socket_dir.as_deref())?);
    let listeners = open_listeners(&config.pools)?;
    let control = ControlSocket::open(&crate::control::socket_path(&config))?;
    let _pid_file = pidfile::PidFile::write(config.global.pid.as_deref())?;
    let (phase, _) = watch::channel(Phase::Running);
    let (reports, mut reports_rx) = mpsc::unbounded_channel();
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

    let stop = loop {
        tokio::select! {
            ev = signals.next() => if let Some(stop) = master.on_signal(ev).await {
                break stop;
            },
            Some(ctl) = control_rx.recv() => if let Some(stop) = master.on_control(ctl).await {
                break stop;
            },
            Some(report) = reports_rx.recv() => master.on_report(report).await,
        }
    };
    match stop {
        Stop::Graceful => master.graceful_stop(&mut signals).await,
        Stop::Fast => master.fast_stop().await,
    }
    tracing::info!("herd stopped");
    Ok(())
}

fn open_listeners(pools: &[PoolConfig]) -> anyhow::Result<Vec<Listener>> {
    pools
        .iter()
        .map(|p| Listener::open(p).with_context(|| format!("pool '{}'", p.name)))
        .collect()
}

impl Master {
    fn phase_rx(&self) -> PhaseRx {
        self.phase.subscribe()
    }

    fn start_pool(&mut self, cfg: PoolConfig, listener: Listener) -> anyhow::Result<()> {
        let name = cfg.name.clone();
        let (pool, events) =
            Pool::new(Arc::new(cfg.clone())).with_context(|| format!("pool '{name}'"))?;
        let (sup, commands) = Supervisor::new(
            pool.clone(),
            self.next_index,
            events,
            self.sockets.clone(),
            self.reports.clone(),
            self.config.global.process_control_timeout,
            self.budget.clone(),
        )
        .with_context(|| format!("pool '{name}'"))?;
        self.next_index += 1;
        tracing::info!(pool = %name, "listening on {}", cfg.listen);
        self.pools.push(PoolHandle {
            supervisor: tokio::spawn(sup.run()),
            acceptor: tokio::spawn(router::accept_loop(listener, pool.clone(), self.phase_rx())),
            pool,
            commands,
        });
        Ok(())
    }

    fn pool(&self, name: &str) -> Option<&PoolHandle> {
        self.pools.iter().find(|p| p.pool.name == name)
    }

    async fn on_signal(&mut self, ev: SignalEvent) -> Option<Stop> {
        match ev {
            SignalEvent::GracefulStop => return Some(Stop::Graceful),
            SignalEvent::FastStop => return Some(Stop::Fast),
            SignalEvent::Reload => {
                if let Err(e) = self.reload(None, false).await {
                    tracing::error!("reload refused: {e}");
                }
            }
            SignalEvent::ReopenLogs => {
                logging::reopen(self.config.global.error_log.as_deref());
                self.pools.iter().for_each(|p| p.pool.logs.reopen());
            }
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
            if let Err(e) = self.reload(None, true).await {
                tracing::error!("emergency reload refused: {e}");
            }
        }
    }
}

/// Connections are what bound herd's concurrency; the soft limit of 1024
/// would refuse clients long before `listen.max_connections`.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
