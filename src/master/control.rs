//! The master's side of the control socket: status, reload (with `--wait`
//! progress), hard restart, scale and stop.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::reload::Reloaded;
use super::{Master, Stop};
use crate::control::protocol::{Done, Line, Progress, Request};
use crate::control::server::Control;
use crate::phase::Phase;
use crate::pool::{Pool, Settled};
use crate::status;
use crate::supervisor;

type Reply = mpsc::UnboundedSender<Line>;

fn done_ok(reply: &Reply, message: String) {
    let _ = reply.send(Line::ok(message));
}

fn done_err(reply: &Reply, error: String) {
    let _ = reply.send(Line::error(error));
}

impl Master {
    pub(super) async fn on_control(&mut self, ctl: Control) -> Option<Stop> {
        let Control { request, reply } = ctl;
        match request {
            Request::Status | Request::Metrics => self.answer_read(Control { request, reply }),
            Request::Reload { pool, force, wait } => {
                match self.reload(pool.as_deref(), force).await {
                    Err(e) => {
                        tracing::error!("reload refused: {e}");
                        done_err(&reply, format!("reload refused: {e}"));
                    }
                    Ok(done) if wait => {
                        self.track_reload(done.clone(), false);
                        tokio::spawn(wait_rollouts(done, reply));
                    }
                    Ok(done) => {
                        done_ok(&reply, describe(&done));
                        self.track_reload(done, false);
                    }
                }
            }
            Request::Restart { pool, batch } => {
                let mut started = Vec::new();
                for p in self
                    .pools
                    .iter()
                    .filter(|p| pool.as_deref().is_none_or(|n| n == p.pool.name))
                {
                    let (tx, rx) = oneshot::channel();
                    let _ = p
                        .commands
                        .send(supervisor::Command::HardRestart { batch, reply: tx });
                    match rx.await {
                        Ok(Ok(generation)) => started.push(format!(
                            "pool {}: hard restart to generation {generation}",
                            p.pool.name
                        )),
                        Ok(Err(e)) => {
                            done_err(&reply, format!("pool {}: {e:#}", p.pool.name));
                            return None;
                        }
                        Err(_) => {}
                    }
                }
                if started.is_empty() {
                    done_err(
                        &reply,
                        format!("no pool named '{}'", pool.unwrap_or_default()),
                    );
                } else {
                    done_ok(&reply, started.join("\n"));
                }
            }
            Request::Scale { pool, max_children } => match self.pool(&pool) {
                Some(p) if max_children > 0 => {
                    let (tx, rx) = oneshot::channel();
                    let cmd = supervisor::Command::ScaleTo {
                        max_children,
                        reply: tx,
                    };
                    let _ = p.commands.send(cmd);
                    match rx.await {
                        Ok(said) => done_ok(&reply, format!("pool {pool}: {said}")),
                        Err(_) => done_err(&reply, format!("pool {pool} is stopping")),
                    }
                }
                Some(_) => done_err(&reply, "pm.max_children must be at least 1".into()),
                None => done_err(&reply, format!("no pool named '{pool}'")),
            },
            Request::Upgrade => return self.upgrade(reply).await,
            Request::Stop { fast } => {
                done_ok(
                    &reply,
                    if fast {
                        "stopping now".into()
                    } else {
                        "stopping gracefully".into()
                    },
                );
                return Some(if fast { Stop::Fast } else { Stop::Graceful });
            }
        }
        None
    }
}

impl Master {
    /// Answers the requests that only read the master's state (status,
    /// metrics), which work while it stops too.
    pub(super) fn answer_read(&self, ctl: Control) {
        let Control { request, reply } = ctl;
        match request {
            Request::Status => {
                let phase = *self.phase.borrow();
                let pools: Vec<Arc<Pool>> = self.pools.iter().map(|p| p.pool.clone()).collect();
                let now = tokio::time::Instant::now();
                let phase_ends_in = self
                    .phase_ends
                    .get()
                    .filter(|_| phase.stopping())
                    .map(|t| t.saturating_duration_since(now).as_secs_f64());
                // php-fpm groups are asked for their own figures first: a
                // task, so the master goes on meanwhile.
                tokio::spawn(async move {
                    let asks = pools.iter().map(status::engine::collect);
                    let engine = futures_util::future::join_all(asks).await;
                    let json: Vec<Value> = pools
                        .iter()
                        .zip(&engine)
                        .map(|(pool, engine)| pool_json(pool, phase, engine))
                        .collect();
                    let _ = reply.send(Line::Done(Done {
                        done: true,
                        ok: true,
                        pid: Some(std::process::id()),
                        phase: Some(phase.as_str().into()),
                        phase_ends_in,
                        pools: Some(json),
                        ..Done::default()
                    }));
                });
            }
            Request::Metrics => {
                let pools = self.pool_list();
                let phase = *self.phase.borrow();
                // As for status: php-fpm groups are asked first, on a task.
                tokio::spawn(async move {
                    let asks = pools.iter().map(status::engine::collect);
                    let engine = futures_util::future::join_all(asks).await;
                    let text = status::openmetrics(&pools, phase, &engine);
                    let _ = reply.send(Line::Done(Done {
                        done: true,
                        ok: true,
                        metrics: Some(text),
                        ..Done::default()
                    }));
                });
            }
            other => done_err(&reply, format!("not a read request: {other:?}")),
        }
    }
}

fn describe(done: &[Reloaded]) -> String {
    let lines: Vec<String> = done
        .iter()
        .map(|r| match r.generation {
            Some(g) => format!("pool {}: rolling out generation {g}", r.pool.name),
            None => format!("pool {}: unchanged", r.pool.name),
        })
        .collect();
    lines.join("\n")
}

/// `reload --wait`: streams progress until every rollout is done or one
/// is refused; the last line says which.
async fn wait_rollouts(done: Vec<Reloaded>, reply: Reply) {
    let mut refused = Vec::new();
    for r in done {
        let Some(generation) = r.generation else {
            continue;
        };
        let mut rx = r.pool.deploy.subscribe();
        loop {
            let d = rx.borrow_and_update().clone();
            let _ = reply.send(Line::Progress(Progress {
                event: "progress".into(),
                pool: Some(r.pool.name.clone()),
                generation: Some(generation),
                state: Some(d.state.name().into()),
                ready: Some(d.ready),
                old: Some(d.old),
                target: Some(d.target),
                message: None,
            }));
            match d.settled(generation) {
                None => {}
                Some(Settled::Serving | Settled::Superseded) => break,
                Some(Settled::Refused(reason)) => {
                    refused.push(format!("pool {}: deploy refused: {reason}", r.pool.name));
                    break;
                }
            }
            if rx.changed().await.is_err() || reply.is_closed() {
                return;
            }
        }
    }
    if refused.is_empty() {
        done_ok(&reply, "rollout done".into());
    } else {
        done_err(&reply, refused.join("\n"));
    }
}

/// A pool's status for `herd ctl status`: php-fpm's fields (full), the
/// deploy state and per-worker CPU, memory and idle time.
fn pool_json(pool: &Arc<Pool>, phase: Phase, engine: &status::engine::Figures) -> Value {
    pool.watch_usage();
    let started = SystemTime::now() - pool.started.elapsed();
    let snap = status::snapshot(pool, started, phase, engine);
    let (_, body) = status::render(&snap, status::Format::Json, true);
    let mut v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["listen"] = json!(pool.config().listen.to_string());
    v["deploy"] = serde_json::to_value(pool.deploy.borrow().clone()).unwrap_or(Value::Null);
    v["connections open"] = json!(snap.metrics.connections_open);
    // The JSON rendering lists the processes in the snapshot's order.
    if let Some(procs) = v["processes"].as_array_mut() {
        for (p, s) in procs.iter_mut().zip(&snap.processes) {
            p["requests in flight"] = json!(s.in_flight);
        }
    }
    v
}

impl Master {
    /// `herd ctl upgrade`: answered when the new master is ready or failed.
    async fn upgrade(&mut self, reply: Reply) -> Option<Stop> {
        if self.upgrading.is_some() {
            done_err(&reply, "an upgrade is already under way".into());
            return None;
        }
        match self.start_upgrade() {
            Ok(pid) => {
                let _ = reply.send(Line::message(format!(
                    "new master started, pid {pid}; waiting for its workers"
                )));
                self.upgrading = Some(reply);
                self.publish_phase();
            }
            Err(e) => done_err(&reply, format!("upgrade failed: {e}")),
        }
        None
    }

    /// The phase says reloading until a reload's rollouts settled; then,
    /// with `systemd`, it is told `READY=1` again.
    pub(super) fn track_reload(&mut self, done: Vec<Reloaded>, systemd: bool) {
        self.reloads += 1;
        self.publish_phase();
        let internal = self.internal.clone();
        tokio::spawn(async move {
            for r in done {
                let Some(generation) = r.generation else {
                    continue;
                };
                let mut rx = r.pool.deploy.subscribe();
                let _ = rx.wait_for(|d| d.settled(generation).is_some()).await;
            }
            let _ = internal.send(super::Internal::ReloadSettled { systemd });
        });
    }
}
