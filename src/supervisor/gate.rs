//! The readiness gate: a worker gets traffic only after its socket answers
//! `FCGI_GET_VALUES` within `worker.start_timeout`, and every
//! `warmup.request` of its pool came back 2xx through it within
//! `warmup.timeout`. The answer also says how many requests the worker
//! serves at once (`FCGI_MAX_CONNS`), unless the pool says so itself
//! (`worker.slots`): the gate hands the router one connection per slot.

use std::path::Path;
use std::sync::Arc;

use tokio::net::UnixStream;
use tokio::time::timeout;

use crate::client;
use crate::config::{PoolConfig, WorkerProbe};
use crate::pool::WorkerConn;
use crate::quiet::Quiet;

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

/// Slots a worker may claim: past this, a garbled answer would open
/// thousands of connections.
pub const MAX_SLOTS: u32 = 1024;

/// Passes the gate; returns the worker's connections, one per slot (the
/// first one open when warmup opened it, the others opened at first use).
pub async fn pass(
    socket: Arc<Path>,
    pool: &PoolConfig,
    warmup: bool,
) -> Result<Vec<WorkerConn>, GateError> {
    let answer = match pool.worker_probe {
        WorkerProbe::Values => timeout(pool.worker_start_timeout, probe(&socket))
            .await
            .map_err(|_| GateError::StartTimeout(pool.worker_start_timeout))??,
        // A program that no management record can probe (Ruby's fcgi dies
        // on them): its first warm-up request is the probe.
        WorkerProbe::Request => Vec::new(),
    };
    let slots = pool
        .worker_slots
        .unwrap_or_else(|| slots_in(&answer))
        .clamp(1, MAX_SLOTS);
    if pool.worker_slots.is_none() && slots == 1 && serves_many(&answer) {
        tracing::info!(
            pool = %pool.name,
            "the worker says it serves requests side by side (FCGI_MPXS_CONNS=1) and names no \
             count herd can take: it gets 1 slot; `worker.slots = N` lets it serve N at once"
        );
    }
    // The others connect at their first request: a connection opened now
    // could sit idle long enough for the worker to drop it.
    let mut conns: Vec<WorkerConn> = (0..slots)
        .map(|_| WorkerConn::new(socket.clone(), None))
        .collect();
    let warmup = warmup || pool.worker_probe == WorkerProbe::Request;
    if !warmup || pool.warmup_requests.is_empty() {
        return Ok(conns);
    }
    let mut stream = Quiet::connect_unix(&socket).map_err(GateError::Connect)?;
    timeout(pool.warmup_timeout, warm_up(&mut stream, pool))
        .await
        .map_err(|_| GateError::WarmupTimeout(pool.warmup_timeout))??;
    // Kept for the first request, unless the pool's workers get a new
    // connection per request (a php-fpm engine): closed now, it frees the
    // child that holds it.
    if pool.keeps_connections() {
        conns[0] = WorkerConn::new(socket, Some(stream));
    }
    Ok(conns)
}

/// Two `FCGI_GET_VALUES` records in one write, ready at the first answer:
/// the one probe libfcgi, Perl FCGI, FCGI::ProcManager, flup, php-cgi and
/// herd's own library all answer at once (contrib/interop/PROBES.md). The
/// connection closes after: libfcgi is reading the second record, and the
/// child of a forking program that accepted it is freed.
async fn probe(socket: &Path) -> Result<Vec<(String, String)>, GateError> {
    let mut s = UnixStream::connect(socket)
        .await
        .map_err(|e| GateError::Probe(e.into()))?;
    let names = ["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"];
    client::get_values_times(&mut s, &names, 2)
        .await
        .map_err(GateError::Probe)
}

/// The requests a worker says it serves at once: the smaller of
/// `FCGI_MAX_CONNS` and `FCGI_MAX_REQS` (herd sends one request per
/// connection). php-cgi says N with `PHP_FCGI_CHILDREN=N`, and 0 without
/// children; libfcgi always says 1 (a ProcManager group too: each server
/// answers for itself); flup says nothing. A missing or garbled value, or
/// one past [`MAX_SLOTS`] (a file descriptor limit, not a count of
/// processes), is 1.
fn slots_in(answer: &[(String, String)]) -> u32 {
    let value = |name: &str| {
        answer
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.trim().parse::<u32>().ok())
            .filter(|n| *n > 0)
    };
    let n = match (value("FCGI_MAX_CONNS"), value("FCGI_MAX_REQS")) {
        (Some(c), Some(r)) => c.min(r),
        (Some(n), None) | (None, Some(n)) => n,
        (None, None) => 1,
    };
    if n > MAX_SLOTS { 1 } else { n }
}

/// Whether a worker whose answer gave 1 slot says it multiplexes: Go's
/// `net/http/fcgi` names nothing else, node-fastcgi a count past
/// [`MAX_SLOTS`].
fn serves_many(answer: &[(String, String)]) -> bool {
    answer
        .iter()
        .any(|(n, v)| n == "FCGI_MPXS_CONNS" && v.trim() == "1")
}

async fn warm_up(stream: &mut Quiet, pool: &PoolConfig) -> Result<(), GateError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn slots_come_from_the_answer() {
        let php_children = answer(&[
            ("FCGI_MPXS_CONNS", "0"),
            ("FCGI_MAX_REQS", "3"),
            ("FCGI_MAX_CONNS", "3"),
        ]);
        assert_eq!(slots_in(&php_children), 3);
        let php_alone = answer(&[("FCGI_MAX_REQS", "0"), ("FCGI_MAX_CONNS", "0")]);
        assert_eq!(slots_in(&php_alone), 1);
        let libfcgi = answer(&[("FCGI_MAX_CONNS", "1"), ("FCGI_MAX_REQS", "1")]);
        assert_eq!(slots_in(&libfcgi), 1);
        assert_eq!(
            slots_in(&answer(&[("FCGI_MAX_CONNS", "8"), ("FCGI_MAX_REQS", "4")])),
            4
        );
        assert_eq!(slots_in(&answer(&[("FCGI_MAX_CONNS", "x")])), 1);
        assert_eq!(slots_in(&[]), 1);
        // flup's view of "connections": its descriptor limit.
        assert_eq!(slots_in(&answer(&[("FCGI_MAX_CONNS", "20000")])), 1);
        // Go: multiplexes, names no count.
        let go = answer(&[("FCGI_MPXS_CONNS", "1")]);
        assert_eq!(slots_in(&go), 1);
        assert!(serves_many(&go));
        assert!(!serves_many(&libfcgi));
    }
}
