//! A php-fpm group's own per-process figures, read from its status page.
//!
//! herd starts every php-fpm group with `pm.status_listen` on a socket
//! beside the group's own (see `supervisor::engine`); php-fpm answers it
//! from a pool of its own, so it answers while every child is busy. What it
//! says of each child (its state, requests served, the request it serves or
//! last served, that request's CPU and memory) is what php-fpm's own status
//! page says, and what no look at `/proc` from outside can tell.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::client::{self, Request};
use crate::config::PhpEngine;
use crate::pool::Pool;
use crate::supervisor::engine;

/// How long a group has to answer before its figures are left out.
const TIMEOUT: Duration = Duration::from_secs(1);

/// One php-fpm child as its engine's status page has it.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct EngineProcess {
    /// Left out when shown: the process it describes has it already.
    #[serde(skip_serializing)]
    pub pid: u32,
    /// php-fpm's state name: Idle, Running, Reading headers, Finishing, ...
    pub state: String,
    pub requests: u64,
    /// Microseconds: of the current request, else of the last one.
    #[serde(rename = "request duration")]
    pub request_duration: u64,
    #[serde(rename = "request method")]
    pub request_method: String,
    #[serde(rename = "request uri")]
    pub request_uri: String,
    #[serde(rename = "content length")]
    pub content_length: u64,
    pub user: String,
    pub script: String,
    #[serde(rename = "last request cpu")]
    pub last_request_cpu: f64,
    #[serde(rename = "last request memory")]
    pub last_request_memory: u64,
}

#[derive(serde::Deserialize)]
struct Page {
    #[serde(default)]
    processes: Vec<EngineProcess>,
}

/// The children of each php-fpm group of `pool` that answered, by the pid
/// of the group's master; empty for a pool of any other kind.
pub type Figures = HashMap<u32, Vec<EngineProcess>>;

/// Asks every php-fpm group of `pool` at once, each for at most a second.
pub async fn collect(pool: &Arc<Pool>) -> Figures {
    let fpm = pool
        .config()
        .php_group
        .as_ref()
        .is_some_and(|g| g.engine == PhpEngine::Fpm);
    if !fpm {
        return Figures::new();
    }
    let groups: Vec<(u32, std::path::PathBuf)> = pool
        .snapshot()
        .workers
        .iter()
        .map(|(_, w)| (w.pid, engine::status_socket(&w.socket)))
        .collect();
    let asks = groups.into_iter().map(|(pid, socket)| async move {
        let page = tokio::time::timeout(TIMEOUT, ask(&socket)).await;
        match page {
            Ok(Ok(processes)) => Some((pid, processes)),
            Ok(Err(e)) => {
                tracing::debug!(pid, error = %e, "a php-fpm group's status page did not answer");
                None
            }
            Err(_) => None,
        }
    });
    futures_util::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// One group's status page, full, as JSON.
async fn ask(socket: &Path) -> anyhow::Result<Vec<EngineProcess>> {
    let mut stream = client::connect(&socket.display().to_string()).await?;
    let req = Request::get(&format!("{}?json&full", engine::status_path()));
    let response = client::call(&mut stream, &req, false).await?;
    parse(response.body())
}

/// php-fpm's full JSON status page: its `processes`.
pub fn parse(body: &[u8]) -> anyhow::Result<Vec<EngineProcess>> {
    let page: Page = serde_json::from_slice(body)?;
    Ok(page.processes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn php_fpms_full_page_reads() {
        // As php-fpm 8.2 writes it (its comma-space before "processes").
        let body = br#"{"pool":"www","process manager":"static","start time":1796128389,"start since":2,"accepted conn":4,"listen queue":0,"max listen queue":0,"listen queue len":0,"idle processes":1,"active processes":1,"total processes":2,"max active processes":1,"max children reached":0,"slow requests":0, "processes":[{"pid":23820,"state":"Idle","start time":1796128389,"start since":2,"requests":3,"request duration":1520,"request method":"GET","request uri":"/index.php?id=start","content length":0,"user":"-","script":"/srv/www/index.php","last request cpu":65.79,"last request memory":2097152},{"pid":23821,"state":"Running","start time":1796128389,"start since":2,"requests":1,"request duration":50123,"request method":"POST","request uri":"/save.php","content length":12,"user":"-","script":"/srv/www/save.php","last request cpu":0.00,"last request memory":0}]}"#;
        let procs = parse(body).unwrap();
        assert_eq!(procs.len(), 2);
        assert_eq!(procs[0].pid, 23820);
        assert_eq!(procs[0].requests, 3);
        assert_eq!(procs[0].request_uri, "/index.php?id=start");
        assert_eq!(procs[0].last_request_memory, 2_097_152);
        assert!((procs[0].last_request_cpu - 65.79).abs() < 1e-9);
        assert_eq!(procs[1].state, "Running");
        assert_eq!(procs[1].request_duration, 50_123);
        assert!(parse(b"File not found.\n").is_err());
    }
}
