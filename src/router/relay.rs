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
use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWrite;
use tokio::sync::{Mutex, mpsc, watch};

use super::access_log;
use super::answer::Answer;
use super::exchange::{self, aborted, write_client};
use super::script;
use crate::config::PoolConfig;
use crate::fastcgi::pairs;
use crate::fastcgi::record::{self, BeginRequest};
use crate::pool::{AcquireError, BusyInfo, Counters, Lease, Pool, RequestUsage};

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
pub(super) enum Attempt {
    /// The worker answered; `client_ok` is false when the client could not
    /// take the whole response.
    Answered { client_ok: bool },
    /// The worker went away before `FCGI_END_REQUEST`.
    WorkerLost { sent_any: bool },
    /// `request_terminate_timeout` passed.
    TimedOut { sent_any: bool },
}

/// What every attempt of one request shares.
pub(super) struct Trip<'a, W> {
    pub pool: &'a Pool,
    pub cfg: &'a PoolConfig,
    pub id: u16,
    /// The request as the worker gets it: begin, params, and the stdin
    /// that came with them.
    pub head: &'a [u8],
    pub abort: &'a watch::Receiver<bool>,
    pub client: &'a Mutex<W>,
    pub log: &'a mut ResponseLog,
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
    let denied = cfg
        .script_guard
        .as_ref()
        .map(|g| script::check(&req.params, g));
    let ending = match denied {
        // The worker never sees it.
        Some(Err(denial)) => {
            let answer = Answer::from(denial);
            answer.account(&pool, &cfg, &req.info);
            respond(client, &cfg, id, &answer, &mut log).await
        }
        _ => {
            let head = request_head(&mut req, retriable, cfg.keeps_connections());
            by_worker(&pool, &cfg, &mut req, &head, retriable, client, &mut log).await
        }
    };
    // Every request is counted once when it ends: by its worker's
    // generation when its lease comes back, else as unserved.
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
            usage: log.usage,
        };
        if !access_log::suppressed(&cfg.access_suppress_paths, &entry) {
            access.write_line(&access_log::format(&cfg.access_format, &entry));
        }
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
            Err(None) => {
                // The client left while it waited.
                Counters::bump(&pool.counters.unserved);
                break;
            }
            Err(Some(answer)) => {
                answer.account(pool, cfg, &req.info);
                return respond(client, cfg, id, &answer, log).await;
            }
        };
        log.pid = lease.pid;
        let stdin = if retriable {
            None
        } else {
            Some(&mut req.stdin)
        };
        let may_retry = retriable && attempt == 0;
        let mut trip = Trip {
            pool,
            cfg,
            id,
            head,
            abort: &req.abort,
            client,
            log,
        };
        let (answer, sent_any) = match exchange::forward(&mut trip, lease, stdin, may_retry).await {
            Attempt::Answered { client_ok: true } => return Ending::Complete,
            Attempt::Answered { client_ok: false } => return Ending::CloseConnection,
            Attempt::WorkerLost { sent_any: false } if may_retry => {
                Counters::bump(&pool.counters.retried);
                tracing::warn!(pool = %pool.name, pid = log.pid, "worker died before answering {} {}; trying another worker", req.info.method, req.info.uri);
                continue;
            }
            Attempt::WorkerLost { sent_any } => {
                tracing::warn!(pool = %pool.name, pid = log.pid, "worker died while serving {} {}", req.info.method, req.info.uri);
                (Answer::WorkerLost, sent_any)
            }
            Attempt::TimedOut { sent_any } => {
                tracing::warn!(pool = %pool.name, pid = log.pid, "{} {} ran past request_terminate_timeout ({:?}); stopping its worker", req.info.method, req.info.uri, cfg.request_terminate_timeout);
                (Answer::Terminated, sent_any)
            }
        };
        answer.account(pool, cfg, &req.info);
        // The client has part of a response already: only closing the
        // connection tells nginx it is cut.
        if sent_any {
            return Ending::CloseConnection;
        }
        return respond(client, cfg, id, &answer, log).await;
    }
    Ending::Complete
}

/// What the access log needs to know about the response.
#[derive(Default)]
pub(super) struct ResponseLog {
    pub pid: u32,
    pub status: u16,
    /// The first bytes of the response's stdout (its CGI headers).
    pub head: Vec<u8>,
    /// What the request cost its worker, when it was measured.
    pub usage: Option<RequestUsage>,
}

/// Only a request the worker cannot have acted on differently the second
/// time may be sent twice: GET or HEAD, without a body.
fn is_retriable(params: &[u8]) -> bool {
    let method = pairs::find(params, b"REQUEST_METHOD").unwrap_or_default();
    let length = pairs::find(params, b"CONTENT_LENGTH").unwrap_or_default();
    (method == b"GET" || method == b"HEAD") && (length.is_empty() || length == b"0")
}

/// `FCGI_BEGIN_REQUEST` (asking the worker to keep our connection when
/// `keep`, whatever the client asked of ours), the params, and whatever
/// stdin already arrived — for a typical request, all of it, so the
/// request leaves in one write. A retriable request has no body: its stdin
/// is just the closing record, written here.
fn request_head(req: &mut Request, retriable: bool, keep: bool) -> Bytes {
    let id = req.id;
    let mut head = BytesMut::with_capacity(req.params.len() + 64);
    let flags = if keep {
        req.begin.flags | record::KEEP_CONN
    } else {
        req.begin.flags & !record::KEEP_CONN
    };
    let begin = BeginRequest { flags, ..req.begin };
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

/// A worker's lease, or why there is none: `None` when the client left
/// while it waited, else herd's own answer.
async fn acquire(
    pool: &Arc<Pool>,
    cfg: &PoolConfig,
    req: &mut Request,
) -> Result<Lease, Option<Answer>> {
    let asked = Instant::now();
    let leased = |lease: Lease| {
        pool.counters.queue_wait.observe(asked.elapsed());
        lease
    };
    let unavailable = || {
        let why = pool
            .unavailable_reason()
            .unwrap_or_else(|| "the pool has no worker and none is starting".into());
        Some(Answer::Unavailable(why))
    };
    let waiting = match pool.acquire(req.info.clone(), cfg.max_queue) {
        Ok(Ok(lease)) => return Ok(leased(lease)),
        Ok(Err(rx)) => rx,
        Err(AcquireError::QueueFull) => {
            return Err(Some(Answer::QueueFull {
                max_queue: cfg.max_queue,
            }));
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
        (None, true) => Err(Some(Answer::QueueTimeout)),
        // The worker never saw this request: it goes on to the next one.
        (Some(lease), false) => {
            pool.return_unused(lease);
            Err(None)
        }
        (None, false) => Err(None),
    }
}

/// Writes one of herd's own answers to the client.
async fn respond<W: AsyncWrite + Unpin>(
    client: &Mutex<W>,
    cfg: &PoolConfig,
    id: u16,
    answer: &Answer,
    log: &mut ResponseLog,
) -> Ending {
    log.status = answer.status();
    let out = answer.records(id, cfg);
    if write_client(client, &out, cfg.request_read_timeout).await {
        Ending::Complete
    } else {
        Ending::CloseConnection
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use futures_util::FutureExt;

    use crate::pool::{Outcome, PoolEvent, WorkerConn, WorkerEntry};

    fn info() -> BusyInfo {
        BusyInfo::get("/")
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
                Err(None) => outcomes.1 += 1,
                Err(Some(answer)) => panic!("{answer:?}"),
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
