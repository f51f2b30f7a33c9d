//! The readiness gate: a worker gets traffic only after its socket answers
//! `FCGI_GET_VALUES` within `worker.start_timeout`, and every
//! `warmup.request` of its pool came back 2xx through it within
//! `warmup.timeout`. Then the master opens the persistent connection the
//! router will use.

use std::path::Path;
use std::sync::Arc;

use tokio::net::UnixStream;
use tokio::time::timeout;

use crate::client;
use crate::config::PoolConfig;
use crate::pool::WorkerConn;

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("did not answer FCGI_GET_VALUES within {0:?}")]
    StartTimeout(std::time::Duration),
    #[error("failed FCGI_GET_VALUES: {0}")]
    Probe(client::CallError),
    #[error("warmup {method} {uri} failed: {reason}")]
    Warmup {
        method: String,
        uri: String,
        reason: String,
    },
    #[error("warmup did not finish within {0:?}")]
    WarmupTimeout(std::time::Duration),
    #[error("failed to connect: {0}")]
    Connect(std::io::Error),
}

pub async fn pass(
    socket: Arc<Path>,
    pool: &PoolConfig,
    warmup: bool,
) -> Result<WorkerConn, GateError> {
    let probe = async {
        let mut s = UnixStream::connect(&*socket)
            .await
            .map_err(|e| GateError::Probe(e.into()))?;
        client::get_values(
            &mut s,
            &["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"],
        )
        .await
        .map_err(GateError::Probe)
    };
    timeout(pool.worker_start_timeout, probe)
        .await
        .map_err(|_| GateError::StartTimeout(pool.worker_start_timeout))??;

    if !warmup || pool.warmup_requests.is_empty() {
        // Connected at the first request: a connection opened now could sit
        // idle long enough for the worker to drop it.
        return Ok(WorkerConn::new(socket, None));
    }
    let mut stream = UnixStream::connect(&*socket)
        .await
        .map_err(GateError::Connect)?;
    timeout(pool.warmup_timeout, warm_up(&mut stream, pool))
        .await
        .map_err(|_| GateError::WarmupTimeout(pool.warmup_timeout))??;
    Ok(WorkerConn::new(socket, Some(stream)))
}

async fn warm_up(stream: &mut UnixStream, pool: &PoolConfig) -> Result<(), GateError> {
    for warm in &pool.warmup_requests {
        let req = client::Request {
            method: warm.method.clone(),
            uri: warm.uri.clone(),
            root: pool.chdir.as_ref().map(|d| d.display().to_string()),
            ..client::Request::default()
        };
        let fail = |reason: String| GateError::Warmup {
            method: warm.method.clone(),
            uri: warm.uri.clone(),
            reason,
        };
        let resp = client::call(stream, &req, true)
            .await
            .map_err(|e| fail(e.to_string()))?;
        match resp.status() {
            Some(s) if (200..300).contains(&s) => {}
            Some(s) => return Err(fail(format!("status {s}"))),
            None => return Err(fail("no CGI headers in the response".into())),
        }
    }
    Ok(())
}
