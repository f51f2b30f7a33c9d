//! One request's trip through the master: lease a worker (or wait in the
//! pool's queue), send it the request, relay its records back verbatim, and
//! give the worker back only once `FCGI_END_REQUEST` has arrived.
//!
//! Requests keep their request id on the worker side: the master's
//! connection to a worker carries one request at a time, so no id is ever
//! rewritten and the response records go back to the client as they came.
//!
//! When the worker dies before answering, a GET or HEAD without a body is
//! sent once more to another worker; anything else gets a 502. A request
//! past `request_terminate_timeout` gets a 504 and its worker is replaced.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, mpsc, watch};
use tokio::time::timeout;

use super::access_log;
use super::script::{self, Denial};
use crate::config::PoolConfig;
use crate::fastcgi::frame::records;
use crate::fastcgi::record::{self, BeginRequest, EndRequest, HEADER_LEN};
use crate::fastcgi::{pairs, response};
use crate::pool::{AcquireError, BusyInfo, Counters, Lease, Outcome, Pool, Refused, WorkerConn};

/// A request whose params are complete, ready to be served.
pub struct Request {
    pub id: u16,
    pub begin: BeginRequest,
    /// The params body (all `FCGI_PARAMS` contents, concatenated).
    pub params: Bytes,
    pub info: BusyInfo,
    /// Raw `FCGI_STDIN`/`FCGI_DATA` records from the client, forwarded as
    /// they are; the channel closes after the empty record that ends stdin.
    pub stdin: mpsc::Receiver<Bytes>,
    /// Turns true when the client aborted (record or closed connection).
    pub abort: watch::Receiver<bool>,
}

/// How a request left the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The response ended with `FCGI_END_REQUEST`.
    Complete,
    /// The client cannot be written to any more, or a partial response is
    /// all it got: close the connection.
    CloseConnection,
}

/// What one attempt on one worker came to.
enum Attempt {
    /// The worker answered; `client_ok` is false when the client could not
    /// take the whole response.
    Answered { client_ok: bool },
    /// The worker went away before `FCGI_END_REQUEST`.
    WorkerLost { sent_any: bool },
    /// `request_terminate_timeout` passed.
    TimedOut { sent_any: bool },
}

/// Serves `req` and returns its id and how it ended.
pub async fn serve<W>(
    pool: Arc<Pool>,
    cfg: Arc<PoolConfig>,
    mut req: Request,
    client: &Mutex<W>,
) -> (u16, Ending)
where
    W: AsyncWrite + Unpin,
{
    let id = req.id;
    let received = SystemTime::now();
    let started = Instant::now();
    let mut log = ResponseLog::default();
    let retriable = is_retriable(&req.params);
    let ending = match cfg
        .script_guard
        .as_ref()
        .map(|g| script::check(&req.params, g))
    {
        Some(Err(denial)) => deny(&pool, &cfg, &req, denial, client, &mut log).await,
        _ => {
            let head = request_head(&mut req, retriable);
            by_worker(&pool, &cfg, &mut req, &head, retriable, client, &mut log).await
        }
    };
    // Every request is counted once when it ends: by its worker's
    // generation when its lease comes back, else as unserved above.
    pool.counters.latency.observe(started.elapsed());
    if let Some(access) = &pool.logs.access {
        let entry = access_log::Entry {
            pool: &pool.name,
            params: &req.params,
            response_head: &log.head,
            status: log.status,
            received,
            duration: started.elapsed(),
            worker_pid: log.pid,
        };
        access.write_line(&access_log::format(&cfg.access_format, &entry));
    }
    (id, ending)
}

/// The request goes to a worker, and once more to another when the first
/// died before answering a request that may be sent twice.
async fn by_worker<W>(
    pool: &Arc<Pool>,
    cfg: &Arc<PoolConfig>,
    req: &mut Request,
    head: &Bytes,
    retriable: bool,
    client: &Mutex<W>,
    log: &mut ResponseLog,
) -> Ending
where
    W: AsyncWrite + Unpin,
{
    let id = req.id;
    for attempt in 0..2 {
        let lease = match acquire(pool, cfg, req).await {
            Ok(lease) => lease,
            Err(Refusal::Aborted) => {
                Counters::bump(&pool.counters.unserved);
                break;
            }
            Err(Refusal::Respond(status, body)) => {
                Counters::bump(&pool.counters.unserved);
                log.status = status;
                return respond(client, cfg, id, status, body).await;
            }
        };
        log.pid = lease.pid;
        let stdin = if retriable {
            None
        } else {
            Some(&mut req.stdin)
        };
        let may_retry = retriable && attempt == 0;
        match forward(
            pool, lease, cfg, id, head, stdin, &req.abort, client, log, may_retry,
        )
        .await
        {
            Attempt::Answered { client_ok: true } => return Ending::Complete,
            Attempt::Answered { client_ok: false } => return Ending::CloseConnection,
            Attempt::WorkerLost { sent_any: false } if retriable && attempt == 0 => {
                Counters::bump(&pool.counters.retried);
                tracing::warn!(pool = %pool.name, pid = log.pid, "worker died before answering {} {}; trying another worker", req.info.method, req.info.uri);
            }
            Attempt::WorkerLost { sent_any } => {
                Counters::bump(&pool.counters.worker_lost);
                tracing::warn!(pool = %pool.name, pid = log.pid, "worker died while serving {} {}", req.info.method, req.info.uri);
                let body = "Bad Gateway: the worker ended before responding.\n";
                return fail(client, cfg, id, sent_any, 502, body, log).await;
            }
            Attempt::TimedOut { sent_any } => {
                Counters::bump(&pool.counters.terminated);
                tracing::warn!(pool = %pool.name, pid = log.pid, "{} {} ran past request_terminate_timeout ({:?}); stopping its worker", req.info.method, req.info.uri, cfg.request_terminate_timeout);
                let body = "Gateway Timeout: the request ran past request_terminate_timeout.\n";
                return fail(client, cfg, id, sent_any, 504, body, log).await;
            }
        }
    }
    Ending::Complete
}

/// `security.limit_extensions` said no: herd answers, the worker never
/// sees the request.
async fn deny<W: AsyncWrite + Unpin>(
    pool: &Pool,
    cfg: &PoolConfig,
    req: &Request,
    denial: Denial,
    client: &Mutex<W>,
    log: &mut ResponseLog,
) -> Ending {
    Counters::bump(&pool.counters.unserved);
    let (method, uri) = (&req.info.method, &req.info.uri);
    match &denial {
        Denial::Forbidden(why) => {
            pool.refused(Refused::Script, format!("403 for {method} {uri}: {why}"))
        }
        Denial::NotFound => {
            tracing::debug!(pool = %pool.name, "404 for {method} {uri}: no such script")
        }
    }
    log.status = denial.status();
    respond(client, cfg, req.id, denial.status(), denial.body()).await
}

/// What the access log needs to know about the response.
#[derive(Default)]
struct ResponseLog {
    pid: u32,
    status: u16,
    /// The first bytes of the response's stdout (its CGI headers).
    head: Vec<u8>,
}

/// Only a request the worker cannot have acted on differently the second
/// time may be sent twice: GET or HEAD, without a body.
fn is_retriable(params: &[u8]) -> bool {
    let method = pairs::find(params, b"REQUEST_METHOD").unwrap_or_default();
    let length = pairs::find(params, b"CONTENT_LENGTH").unwrap_or_default();
    (method == b"GET" || method == b"HEAD") && (length.is_empty() || length == b"0")
}

/// `FCGI_BEGIN_REQUEST` (asking the worker to keep our connection), the
/// params, and whatever stdin already arrived — for a typical request, all
/// of it, so the request leaves in one write. A retriable request has no
/// body: its stdin is just the closing record, written here.
fn request_head(req: &mut Request, retriable: bool) -> Bytes {
    let id = req.id;
    let mut head = BytesMut::with_capacity(req.params.len() + 64);
    let begin = BeginRequest {
        flags: req.begin.flags | record::KEEP_CONN,
        ..req.begin
    };
    record::put_begin_request(&mut head, id, begin);
    record::put_stream(&mut head, record::PARAMS, id, &req.params);
    record::put_stream_end(&mut head, record::PARAMS, id);
    if retriable {
        record::put_stream_end(&mut head, record::STDIN, id);
        return head.freeze();
    }
    while head.len() < 32 * 1024 {
        match req.stdin.try_recv() {
            Ok(raw) => head.extend_from_slice(&raw),
            Err(_) => break,
        }
    }
    head.freeze()
}

enum Refusal {
    Aborted,
    Respond(u16, &'static str),
}

async fn acquire(pool: &Arc<Pool>, cfg: &PoolConfig, req: &mut Request) -> Result<Lease, Refusal> {
    const NO_WORKERS: &str = "Service Unavailable: no worker of this pool can start.\n";
    let asked = Instant::now();
    let leased = |lease: Lease| {
        pool.counters.queue_wait.observe(asked.elapsed());
        lease
    };
    let refused = |kind: Refused, why: String| {
        pool.refused(
            kind,
            format!("503 for {} {}: {why}", req.info.method, req.info.uri),
        );
    };
    let unavailable = || {
        Counters::bump(&pool.counters.unavailable);
        let why = pool
            .unavailable_reason()
            .unwrap_or_else(|| "the pool has no worker and none is starting".into());
        refused(Refused::Unavailable, format!("no worker can start: {why}"));
        Refusal::Respond(503, NO_WORKERS)
    };
    let waiting = match pool.acquire(req.info.clone(), cfg.max_queue) {
        Ok(Ok(lease)) => return Ok(leased(lease)),
        Ok(Err(rx)) => rx,
        Err(AcquireError::QueueFull) => {
            refused(
                Refused::QueueFull,
                format!("the queue is full (pm.max_queue = {})", cfg.max_queue),
            );
            return Err(Refusal::Respond(
                503,
                "Service Unavailable: the queue of this pool is full.\n",
            ));
        }
        Err(AcquireError::NoWorkers) => return Err(unavailable()),
    };
    let mut waiting = std::pin::pin!(waiting);
    let timed_out = tokio::select! {
        got = &mut waiting => return got.map(leased).map_err(|_| unavailable()),
        _ = tokio::time::sleep(cfg.request_queue_timeout) => true,
        _ = aborted(&mut req.abort) => false,
    };
    // A worker may have been handed over just as the time ran out or the
    // client went: take it out of the receiver (dropped there, it would be
    // retired as broken).
    waiting.close();
    match (waiting.try_recv().ok(), timed_out) {
        (Some(lease), true) => Ok(leased(lease)),
        (None, true) => {
            Counters::bump(&pool.counters.queue_timeouts);
            refused(
                Refused::QueueTimeout,
                format!(
                    "no worker within request.queue_timeout ({:?})",
                    cfg.request_queue_timeout
                ),
            );
            Err(Refusal::Respond(
                503,
                "Service Unavailable: timed out waiting for a worker.\n",
            ))
        }
        // The worker never saw this request: it goes on to the next one.
        (Some(lease), false) => {
            pool.return_unused(lease);
            Err(Refusal::Aborted)
        }
        (None, false) => Err(Refusal::Aborted),
    }
}

/// A response of herd's own, with `Retry-After` for the 503s.
async fn respond<W: AsyncWrite + Unpin>(
    client: &Mutex<W>,
    cfg: &PoolConfig,
    id: u16,
    status: u16,
    body: &str,
) -> Ending {
    let mut out = BytesMut::new();
    let retry = cfg.request_queue_timeout.as_secs().clamp(1, 60).to_string();
    let headers: &[(&str, &str)] = if status == 503 {
        &[("Retry-After", &retry)]
    } else {
        &[]
    };
    response::put_simple(&mut out, id, status, headers, body);
    if write_client(client, &out, cfg.request_read_timeout).await {
        Ending::Complete
    } else {
        Ending::CloseConnection
    }
}

/// The worker failed: an error response if the client has seen nothing
/// yet, else the connection closes (nginx then knows the response is cut).
async fn fail<W: AsyncWrite + Unpin>(
    client: &Mutex<W>,
    cfg: &PoolConfig,
    id: u16,
    sent_any: bool,
    status: u16,
    body: &str,
    log: &mut ResponseLog,
) -> Ending {
    if sent_any {
        return Ending::CloseConnection;
    }
    log.status = status;
    respond(client, cfg, id, status, body).await
}

/// Writes to the client; false when it is gone or stalled past the timeout.
async fn write_client<W: AsyncWrite + Unpin>(
    client: &Mutex<W>,
    bytes: &[u8],
    limit: Duration,
) -> bool {
    let mut w = client.lock().await;
    matches!(timeout(limit, w.write_all(bytes)).await, Ok(Ok(())))
}

/// Sends the request to the leased worker and relays the response.
/// `may_retry`: a worker lost before it answered gets the request sent to
/// another one, so the request has not ended with this lease.
#[allow(clippy::too_many_arguments)]
async fn forward<W>(
    pool: &Pool,
    mut lease: Lease,
    cfg: &PoolConfig,
    id: u16,
    head: &[u8],
    stdin: Option<&mut mpsc::Receiver<Bytes>>,
    abort: &watch::Receiver<bool>,
    client: &Mutex<W>,
    log: &mut ResponseLog,
    may_retry: bool,
) -> Attempt
where
    W: AsyncWrite + Unpin,
{
    let leased_at = Instant::now();
    let (worker, slot, pid) = (lease.id, lease.slot, lease.pid);
    let want_head = pool.logs.access.is_some();
    let sent_any = AtomicBool::new(false);
    let conn = lease
        .conn
        .as_mut()
        .expect("a fresh lease has its connection");
    let end = match send_head(conn, head).await {
        Err(_) => RelayEnd::WorkerLost { sent_any: false },
        Ok(()) => {
            let (stream, buf) = conn.parts();
            let (mut from_worker, mut to_worker) = stream.expect("connected by send_head").split();
            let pump = pump_stdin(&mut to_worker, stdin, abort.clone(), id);
            let relay = relay_response(
                &mut from_worker,
                buf,
                id,
                client,
                cfg.request_read_timeout,
                want_head.then_some(&mut log.head),
                &sent_any,
            );
            tokio::pin!(pump, relay);
            let terminate = deadline(leased_at, cfg.herd_terminate_timeout());
            let mut slow = deadline(leased_at, cfg.request_slowlog_timeout);
            let mut pumping = true;
            loop {
                tokio::select! {
                    // A failed write means the worker is gone; the relay sees
                    // the same on its side and decides what the client gets.
                    _ = &mut pump, if pumping => pumping = false,
                    end = &mut relay => break end,
                    _ = sleep_until(terminate) => break RelayEnd::TimedOut,
                    _ = sleep_until(slow) => {
                        slow = None;
                        slowlog(pool, worker, slot, pid, leased_at);
                    }
                }
            }
        }
    };
    match end {
        RelayEnd::Ended { client_ok, tail } => {
            let clean = lease.conn.as_ref().is_some_and(|c| c.buf_is_empty());
            if *abort.borrow()
                && let Some(conn) = lease.conn.as_mut()
            {
                // The worker may not have read our FCGI_ABORT_REQUEST yet;
                // php-cgi, reading it as the next request, would drop the
                // connection under the next one. A fresh one avoids that.
                conn.disconnect();
            }
            log.status = response::status_of(&log.head).unwrap_or(200);
            pool.release(
                lease,
                if clean {
                    Outcome::Clean
                } else {
                    Outcome::Broken
                },
            );
            let client_ok =
                client_ok && write_client(client, &tail, cfg.request_read_timeout).await;
            Attempt::Answered { client_ok }
        }
        RelayEnd::WorkerLost { sent_any } => {
            if may_retry && !sent_any {
                pool.release_for_retry(lease);
            } else {
                pool.release(lease, Outcome::Broken);
            }
            Attempt::WorkerLost { sent_any }
        }
        RelayEnd::TimedOut => {
            pool.release(lease, Outcome::Terminated);
            Attempt::TimedOut {
                sent_any: sent_any.load(Ordering::Relaxed),
            }
        }
    }
}

fn deadline(from: Instant, after: Duration) -> Option<tokio::time::Instant> {
    (!after.is_zero()).then(|| tokio::time::Instant::from_std(from + after))
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One line per slow request, as php-fpm's slowlog has one entry (herd
/// cannot read the script's stack, so the line names the request instead).
fn slowlog(pool: &Pool, worker: crate::pool::WorkerId, slot: u32, pid: u32, since: Instant) {
    Counters::bump(&pool.counters.slow_requests);
    let Some(file) = &pool.logs.slow else { return };
    let info = pool.busy_info(worker, slot);
    let (method, uri, script) = info
        .map(|i| (i.method, i.uri, i.script))
        .unwrap_or_default();
    let now = crate::status::clf_now();
    file.write_line(&format!(
        "[{now}] pool {} pid {} {method} {uri} script {script}: running for {:.3}s",
        pool.name,
        pid,
        since.elapsed().as_secs_f64()
    ));
}

/// Writes the request's first bytes. A kept connection the worker closed
/// a moment ago fails here with nothing delivered, so it is safe to open a
/// new one and write again, once.
async fn send_head(conn: &mut WorkerConn, head: &[u8]) -> std::io::Result<()> {
    let (stream, fresh) = conn.connect().await?;
    match stream.write_all(head).await {
        Ok(()) => Ok(()),
        Err(e) if fresh => Err(e),
        Err(_) => {
            conn.disconnect();
            let (stream, _) = conn.connect().await?;
            stream.write_all(head).await
        }
    }
}

/// Forwards the client's stdin records to the worker until the stream
/// ends; on abort, sends `FCGI_ABORT_REQUEST` instead and stops.
async fn pump_stdin<W: AsyncWrite + Unpin>(
    to_worker: &mut W,
    mut stdin: Option<&mut mpsc::Receiver<Bytes>>,
    mut abort: watch::Receiver<bool>,
    id: u16,
) -> std::io::Result<()> {
    while let Some(rx) = stdin.as_deref_mut() {
        tokio::select! {
            chunk = rx.recv() => match chunk {
                Some(raw) => to_worker.write_all(&raw).await?,
                None => stdin = None,
            },
            _ = aborted(&mut abort) => break,
        }
    }
    // The request is sent (or abandoned); an abort still has to reach the
    // worker, which answers it and stays usable.
    aborted(&mut abort).await;
    if *abort.borrow() {
        let mut out = BytesMut::new();
        record::put_record(&mut out, record::ABORT_REQUEST, id, &[]);
        to_worker.write_all(&out).await?;
    }
    std::future::pending().await
}

/// Resolves when the client aborted (or the connection task is gone).
async fn aborted(abort: &mut watch::Receiver<bool>) {
    let _ = abort.wait_for(|a| *a).await;
}

enum RelayEnd {
    /// `tail` holds the last records, up to `FCGI_END_REQUEST`, still to be
    /// written to the client.
    Ended {
        client_ok: bool,
        tail: BytesMut,
    },
    WorkerLost {
        sent_any: bool,
    },
    TimedOut,
}

/// Reads the worker's records and writes each run of complete records to
/// the client in one write, until `FCGI_END_REQUEST` for `id`. When `head`
/// is given, the start of the response's stdout is copied into it.
async fn relay_response<R, W>(
    from_worker: &mut R,
    buf: &mut BytesMut,
    id: u16,
    client: &Mutex<W>,
    write_limit: Duration,
    mut head: Option<&mut Vec<u8>>,
    sent: &AtomicBool,
) -> RelayEnd
where
    R: tokio::io::AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut client_ok = true;
    let lost = || RelayEnd::WorkerLost {
        sent_any: sent.load(Ordering::Relaxed),
    };
    loop {
        let (complete, ended) = match scan(buf, id) {
            Ok(x) => x,
            Err(_) => return lost(),
        };
        if complete > 0 {
            let chunk = buf.split_to(complete);
            if let Some(h) = head.as_deref_mut() {
                copy_head(&chunk, id, h);
            }
            if ended {
                // Written after the worker is released: it is idle as of now.
                return RelayEnd::Ended {
                    client_ok,
                    tail: chunk,
                };
            }
            if client_ok {
                sent.store(true, Ordering::Relaxed);
                client_ok = write_client(client, &chunk, write_limit).await;
            }
        }
        match from_worker.read_buf(buf).await {
            Ok(0) | Err(_) => return lost(),
            Ok(_) => {}
        }
    }
}

/// Keeps the first 2 KiB of stdout content: enough for the CGI headers.
fn copy_head(chunk: &[u8], id: u16, head: &mut Vec<u8>) {
    const KEEP: usize = 2048;
    for (at, h) in records(chunk).map_while(Result::ok) {
        if head.len() >= KEEP {
            return;
        }
        if h.record_type == record::STDOUT && h.request_id == id {
            let content = &chunk[at + HEADER_LEN..at + HEADER_LEN + h.content_length as usize];
            let room = KEEP - head.len();
            head.extend_from_slice(&content[..content.len().min(room)]);
        }
    }
}

/// Length of the complete records at the front of `buf`, cut right after
/// the `FCGI_END_REQUEST` of `id` if it is among them.
fn scan(buf: &[u8], id: u16) -> Result<(usize, bool), crate::fastcgi::ProtocolError> {
    let mut walk = records(buf);
    for item in walk.by_ref() {
        let (at, h) = item?;
        if h.record_type == record::END_REQUEST && h.request_id == id {
            let content = &buf[at + HEADER_LEN..at + HEADER_LEN + h.content_length as usize];
            EndRequest::parse(content)?;
            return Ok((at + h.record_len(), true));
        }
    }
    Ok((walk.consumed(), false))
}

#[cfg(test)]
mod tests {
    use super::*;

    use futures_util::FutureExt;

    use crate::pool::{PoolEvent, WorkerEntry};

    fn info() -> BusyInfo {
        BusyInfo {
            method: "GET".into(),
            uri: "/".into(),
            script: String::new(),
            user: String::new(),
            content_length: 0,
            started: Instant::now(),
        }
    }

    /// The race a burst of client timeouts hits: a worker is handed to a
    /// queued request just as its client goes away. The worker never saw
    /// the request; it must stay in service, not be retired as broken.
    #[tokio::test]
    async fn a_client_gone_as_its_worker_is_handed_over_leaves_the_worker_in_service() {
        let text = "[www]\nlisten = 127.0.0.1:9\nuser = nobody\ncommand = /bin/true\n\
                    pm = static\npm.max_children = 1\n";
        let config = crate::config::parse_str(
            text,
            std::path::Path::new("test.conf"),
            &crate::config::LoadOptions::default(),
        )
        .expect("config");
        let cfg = Arc::new(config.pools[0].clone());
        let (pool, mut events) = Pool::new(cfg.clone()).expect("pool");
        pool.add_worker(1, WorkerEntry::new(4242, 1, 1));
        let socket: Arc<std::path::Path> = Arc::from(std::path::Path::new("/nonexistent"));
        pool.worker_ready(1, vec![WorkerConn::new(socket, None)]);

        let mut outcomes = (0, 0);
        for _ in 0..64 {
            let Ok(Ok(first)) = pool.acquire(info(), 8) else {
                panic!("the worker is idle");
            };
            let (abort_tx, abort) = watch::channel(false);
            let mut req = Request {
                id: 1,
                begin: BeginRequest {
                    role: record::ROLE_RESPONDER,
                    flags: 0,
                },
                params: Bytes::new(),
                info: info(),
                stdin: mpsc::channel(1).1,
                abort,
            };
            let mut waiting = Box::pin(acquire(&pool, &cfg, &mut req));
            assert!(waiting.as_mut().now_or_never().is_none(), "queued");
            // The worker frees up and is handed to the waiter; then, before
            // the waiter runs, its client goes.
            pool.release(first, Outcome::Clean);
            abort_tx.send(true).unwrap();
            match waiting.await {
                Ok(lease) => {
                    outcomes.0 += 1;
                    pool.release(lease, Outcome::Clean);
                }
                Err(Refusal::Aborted) => outcomes.1 += 1,
                Err(Refusal::Respond(status, body)) => panic!("{status} {body}"),
            }
            assert!(pool.is_idle(1), "the worker is back in the idle set");
            while let Ok(ev) = events.try_recv() {
                assert!(
                    !matches!(ev, PoolEvent::Retire { .. }),
                    "the worker was retired"
                );
            }
        }
        // Either branch may win the race; the abort must have won some.
        assert!(outcomes.1 > 0, "{outcomes:?}");
    }

    #[test]
    fn scan_cuts_after_end_request() {
        let mut buf = BytesMut::new();
        record::put_stream(&mut buf, record::STDOUT, 1, b"Status: 200\r\n\r\nhi");
        record::put_stream_end(&mut buf, record::STDOUT, 1);
        record::put_end_request(
            &mut buf,
            1,
            EndRequest {
                app_status: 0,
                protocol_status: 0,
            },
        );
        let end = buf.len();
        record::put_stream(&mut buf, record::STDOUT, 1, b"junk");
        assert_eq!(scan(&buf, 1).unwrap(), (end, true));
        assert_eq!(scan(&buf[..end - 3], 1).unwrap(), (end - 16, false));
        // Another request's end does not end ours.
        assert!(!scan(&buf[..end], 2).unwrap().1);
        let mut head = Vec::new();
        copy_head(&buf[..end], 1, &mut head);
        assert_eq!(head, b"Status: 200\r\n\r\nhi");
    }

    #[test]
    fn only_bodiless_gets_and_heads_are_retried() {
        let params = |method: &str, len: &str| {
            let mut p = BytesMut::new();
            pairs::put_pair(&mut p, b"REQUEST_METHOD", method.as_bytes());
            pairs::put_pair(&mut p, b"CONTENT_LENGTH", len.as_bytes());
            p
        };
        assert!(is_retriable(&params("GET", "")));
        assert!(is_retriable(&params("HEAD", "0")));
        assert!(!is_retriable(&params("GET", "12")));
        assert!(!is_retriable(&params("POST", "")));
    }
}
