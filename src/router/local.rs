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
/// master's `phase`.
pub fn answer(
    params: &[u8],
    id: u16,
    pool: &Arc<Pool>,
    cfg: &PoolConfig,
    phase: Phase,
) -> Option<BytesMut> {
    if cfg.status_path.is_none() && cfg.ping_path.is_none() {
        return None;
    }
    let path = request_path(params);
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
        let snap = status::snapshot(pool, started, phase);
        let (content_type, body) = status::render(&snap, format, full);
        return Some(respond(id, 200, content_type, &no_cache, &body, head_only));
    }
    None
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
