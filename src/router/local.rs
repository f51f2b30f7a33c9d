//! Requests the master answers itself, without a worker: the status page
//! and the ping, so both work while every worker is busy (php-fpm serves
//! them from a worker, so they queue with everything else).

use std::sync::Arc;
use std::time::SystemTime;

use bytes::BytesMut;

use crate::config::PoolConfig;
use crate::fastcgi::{pairs, record, response};
use crate::phase::Phase;
use crate::pool::Pool;
use crate::status;

/// The complete response for `params` if the master answers it, in the
/// master's `phase`; `engine`: what the pool's php-fpm groups said of their
/// processes, when [`needs_engine`] asked for it.
pub fn answer(
    params: &[u8],
    id: u16,
    pool: &Arc<Pool>,
    cfg: &PoolConfig,
    phase: Phase,
    engine: &status::engine::Figures,
) -> Option<BytesMut> {
    let fpm = is_fpm(cfg);
    if cfg.status_path.is_none() && cfg.ping_path.is_none() && !fpm {
        return None;
    }
    let path = request_path(params);
    if fpm && path == crate::supervisor::engine::status_path() {
        // The status page herd's php-fpm groups answer to is herd's to read.
        let head_only = pairs::find(params, b"REQUEST_METHOD") == Some(b"HEAD");
        return Some(respond(
            id,
            404,
            "text/plain",
            &[],
            "Not found.\n",
            head_only,
        ));
    }
    let head_only = pairs::find(params, b"REQUEST_METHOD") == Some(b"HEAD");
    let no_cache = [
        ("Expires", "Thu, 01 Jan 1970 00:00:00 GMT"),
        (
            "Cache-Control",
            "no-cache, no-store, must-revalidate, max-age=0",
        ),
    ];
    if cfg.ping_path.as_deref() == Some(path) {
        // Until the pool's first workers are ready (a load balancer must
        // not send traffic before that), and from the moment a stop begins,
        // load balancers are told to look elsewhere (while in-flight
        // requests still finish).
        let ready = phase.ready() && pool.deploy.borrow().started;
        let (status, body) = if ready {
            (200, format!("{}\n", cfg.ping_response))
        } else {
            (503, "not ready\n".to_string())
        };
        return Some(respond(
            id,
            status,
            "text/plain",
            &no_cache,
            &body,
            head_only,
        ));
    }
    if cfg.status_path.as_deref() == Some(path) {
        let query =
            String::from_utf8_lossy(pairs::find(params, b"QUERY_STRING").unwrap_or_default());
        let (format, full) = status::parse_query(&query);
        if full {
            pool.watch_usage();
        }
        let started = SystemTime::now() - pool.started.elapsed();
        let snap = status::snapshot(pool, started, phase, engine);
        let (content_type, body) = status::render(&snap, format, full);
        return Some(respond(id, 200, content_type, &no_cache, &body, head_only));
    }
    None
}

/// Whether `params` ask for the full JSON or the OpenMetrics status page of
/// a pool of php-fpm groups, which show what each group's own status page says: they are
/// asked first (see `status::engine`).
pub fn needs_engine(params: &[u8], cfg: &PoolConfig) -> bool {
    let Some(status_path) = cfg.status_path.as_deref() else {
        return false;
    };
    if !is_fpm(cfg) || status_path != request_path(params) {
        return false;
    }
    let query = String::from_utf8_lossy(pairs::find(params, b"QUERY_STRING").unwrap_or_default());
    // The JSON page lists a group's processes field by field; OpenMetrics
    // counts them by state.
    matches!(
        status::parse_query(&query),
        (status::Format::Json, true) | (status::Format::OpenMetrics, _)
    )
}

fn is_fpm(cfg: &PoolConfig) -> bool {
    cfg.php_group
        .as_ref()
        .is_some_and(|g| g.engine == crate::config::PhpEngine::Fpm)
}

/// The answer on a `pm.status_listen` address to anything but the status
/// and ping paths: that address runs no PHP.
pub fn not_served(params: &[u8], id: u16) -> BytesMut {
    let head_only = pairs::find(params, b"REQUEST_METHOD") == Some(b"HEAD");
    let body = "Not found: this address answers only the pool's status and ping paths.\n";
    respond(id, 404, "text/plain", &[], body, head_only)
}

/// `SCRIPT_NAME` when set (what nginx's `fastcgi_script_name` gives), else
/// the path of `REQUEST_URI`.
fn request_path(params: &[u8]) -> &str {
    let script = pairs::find(params, b"SCRIPT_NAME").filter(|s| !s.is_empty());
    let raw = script
        .or_else(|| pairs::find(params, b"REQUEST_URI"))
        .unwrap_or_default();
    let raw = std::str::from_utf8(raw).unwrap_or("");
    raw.split('?').next().unwrap_or("")
}

fn respond(
    id: u16,
    status: u16,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &str,
    head_only: bool,
) -> BytesMut {
    let mut head = format!(
        "Status: {status} {}\r\nContent-Type: {content_type}\r\n",
        response::reason(status)
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = BytesMut::new();
    record::put_stream(&mut out, record::STDOUT, id, head.as_bytes());
    if !head_only {
        record::put_stream(&mut out, record::STDOUT, id, body.as_bytes());
    }
    record::put_stream_end(&mut out, record::STDOUT, id);
    record::put_end_request(
        &mut out,
        id,
        record::EndRequest {
            app_status: 0,
            protocol_status: record::REQUEST_COMPLETE,
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool of php-fpm groups (a stand-in named like php-fpm: the router
    /// does not run it).
    fn fpm_pool(dir: &std::path::Path) -> (Arc<Pool>, Arc<PoolConfig>) {
        use std::os::unix::fs::PermissionsExt;
        let fpm = dir.join("php-fpm8.2");
        std::fs::write(&fpm, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&fpm, std::fs::Permissions::from_mode(0o755)).unwrap();
        let text = format!(
            "[www]\nlisten = 127.0.0.1:9\nuser = nobody\ncommand = {}\n\
             pm = static\npm.max_children = 2\n",
            fpm.display()
        );
        let config = crate::config::parse_str(
            &text,
            std::path::Path::new("test.conf"),
            &crate::config::LoadOptions::default(),
        )
        .expect("config");
        let cfg = Arc::new(config.pools[0].clone());
        (Pool::new(cfg.clone()).expect("pool").0, cfg)
    }

    fn params(script: &str) -> Vec<u8> {
        let mut out = BytesMut::new();
        pairs::put_pair(&mut out, b"REQUEST_METHOD", b"GET");
        pairs::put_pair(&mut out, b"SCRIPT_NAME", script.as_bytes());
        pairs::put_pair(&mut out, b"REQUEST_URI", script.as_bytes());
        out.to_vec()
    }

    #[test]
    fn the_engines_own_status_path_is_not_served_to_clients() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, cfg) = fpm_pool(dir.path());
        let none = status::engine::Figures::new();
        let path = crate::supervisor::engine::status_path();
        assert!(path.len() > "/.herd-engine-status-".len() + 8, "{path}");
        let out =
            answer(&params(path), 1, &pool, &cfg, Phase::Serving, &none).expect("answered by herd");
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("Status: 404"), "{text}");
        // Anything else goes to the group.
        assert!(answer(&params("/index.php"), 1, &pool, &cfg, Phase::Serving, &none).is_none());
    }
}
