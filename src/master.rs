//! The master's lifecycle: open every listener, start every pool's
//! supervisor and accept loop, then turn signals into a graceful or fast
//! stop. `run` reads as its steps.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::logging;
use crate::phase::{Phase, PhaseRx, PhaseTx};
use crate::pool::Pool;
use crate::router::{self, Listener};
use crate::signals::{SignalEvent, Signals};
use crate::supervisor::socket_dir::SocketDir;
use crate::supervisor::{self, Supervisor};

/// A running pool, as the master holds it.
struct PoolHandle {
    pool: Arc<Pool>,
    commands: mpsc::UnboundedSender<supervisor::Command>,
    supervisor: JoinHandle<()>,
    acceptor: JoinHandle<()>,
}

/// Runs the master until it is stopped. Errors before the first worker
/// starts (a listener that cannot open, an unknown user) end it at once.
pub fn run(config: Config) -> anyhow::Result<()> {
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
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    raise_fd_limit();
    let mut signals = Signals::install().context("failed to install signal handlers")?;
    let sockets = Arc::new(SocketDir::create(config.global.socket_dir.as_deref())?);
    let listeners = open_listeners(&config)?;
    let _pid_file = PidFile::write(config.global.pid.as_deref())?;
    let (phase_tx, phase_rx) = watch::channel(Phase::Running);
    let pools = start_pools(&config, listeners, &sockets, &phase_rx)?;
    tracing::info!(
        "herd {} started: {} pool(s)",
        env!("CARGO_PKG_VERSION"),
        pools.len()
    );

    loop {
        match signals.next().await {
            SignalEvent::GracefulStop => {
                graceful_stop(&config, pools, &phase_tx, &mut signals).await;
                break;
            }
            SignalEvent::FastStop => {
                tracing::info!("fast stop");
                fast_stop(pools, &phase_tx).await;
                break;
            }
            SignalEvent::ReopenLogs => {
                logging::reopen(config.global.error_log.as_deref());
                pools.iter().for_each(|p| p.pool.logs.reopen());
            }
            other => tracing::warn!("{other:?} is not supported yet; ignored"),
        }
    }
    tracing::info!("herd stopped");
    Ok(())
}

fn open_listeners(config: &Config) -> anyhow::Result<Vec<Listener>> {
    config
        .pools
        .iter()
        .map(|p| Listener::open(p).with_context(|| format!("pool '{}'", p.name)))
        .collect()
}

fn start_pools(
    config: &Config,
    listeners: Vec<Listener>,
    sockets: &Arc<SocketDir>,
    phase: &PhaseRx,
) -> anyhow::Result<Vec<PoolHandle>> {
    let mut pools = Vec::new();
    for (index, (cfg, listener)) in config.pools.iter().zip(listeners).enumerate() {
        let (pool, events) =
            Pool::new(Arc::new(cfg.clone())).with_context(|| format!("pool '{}'", cfg.name))?;
        let (sup, commands) = Supervisor::new(pool.clone(), index, events, sockets.clone())
            .with_context(|| format!("pool '{}'", cfg.name))?;
        tracing::info!(pool = %cfg.name, "listening on {}", cfg.listen);
        pools.push(PoolHandle {
            supervisor: tokio::spawn(sup.run()),
            acceptor: tokio::spawn(router::accept_loop(listener, pool.clone(), phase.clone())),
            pool,
            commands,
        });
    }
    Ok(pools)
}

/// php-fpm's `SIGQUIT`, without its resets: report not ready (and wait
/// `shutdown.depool_delay` for load balancers to notice), stop taking new
/// connections (serving what already waits in the backlog), let queued and
/// in-flight requests finish within `process_control_timeout`, then stop
/// the workers. A second stop signal escalates to a fast stop.
async fn graceful_stop(
    config: &Config,
    pools: Vec<PoolHandle>,
    phase: &PhaseTx,
    signals: &mut Signals,
) {
    let grace = config.global.process_control_timeout;
    let depool = config.global.shutdown_depool_delay;
    phase.send_replace(Phase::Depooling);
    if !depool.is_zero() {
        tracing::info!(
            "graceful stop: reporting not ready for {depool:?} before closing the listeners"
        );
        tokio::select! {
            _ = tokio::time::sleep(depool) => {}
            ev = signals.next() => {
                tracing::info!("{ev:?} during graceful stop: stopping now");
                return fast_stop(pools, phase).await;
            }
        }
    }
    tracing::info!(
        "graceful stop: listeners closed, finishing requests in flight (up to {grace:?})"
    );
    phase.send_replace(Phase::Draining);
    let drained = async {
        for p in &pools {
            p.pool.wait_connections_closed().await;
        }
    };
    tokio::select! {
        r = tokio::time::timeout(grace, drained) => if r.is_err() {
            tracing::warn!("graceful stop: requests still running after process_control_timeout ({grace:?}); stopping their workers");
        },
        ev = signals.next() => tracing::info!("{ev:?} during graceful stop: stopping now"),
    }
    for p in &pools {
        let _ = p.commands.send(supervisor::Command::StopGraceful);
    }
    fast_stop(pools, phase).await;
}

async fn fast_stop(pools: Vec<PoolHandle>, phase: &PhaseTx) {
    phase.send_replace(Phase::Stopping);
    let mut bound = Duration::ZERO;
    for p in &pools {
        let _ = p.commands.send(supervisor::Command::StopFast);
        bound = bound.max(p.pool.config().worker_kill_timeout);
    }
    for p in pools {
        // Workers get SIGKILL at worker.kill_timeout; a little more for the
        // exits to be reaped.
        let _ = tokio::time::timeout(bound + Duration::from_secs(2), p.supervisor).await;
        p.acceptor.abort();
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

/// The pid file, removed on drop.
struct PidFile(Option<std::path::PathBuf>);

impl PidFile {
    fn write(path: Option<&std::path::Path>) -> anyhow::Result<PidFile> {
        if let Some(p) = path {
            std::fs::write(p, format!("{}\n", std::process::id()))
                .with_context(|| format!("failed to write pid file {}", p.display()))?;
        }
        Ok(PidFile(path.map(Into::into)))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}
