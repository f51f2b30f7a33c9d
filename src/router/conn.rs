//! One client connection (usually nginx): reads its records, answers
//! management records itself, and starts a [`relay`] for each request once
//! its params are complete, so a client that is slow to send its headers
//! never holds a worker. Several requests may be in flight on one
//! connection (multiplexed ids), and a keep-alive connection is never
//! pinned to a worker: each request leases one afresh.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, mpsc, watch};
use tokio::time::Instant;

use super::relay::{self, Ending};
use crate::config::PoolConfig;
use crate::fastcgi::record::{self, BeginRequest, EndRequest};
use crate::fastcgi::{self, Frame, ProtocolError, pairs};
use crate::pool::{BusyInfo, Pool};

/// Requests one connection may have in flight at once.
pub const MAX_REQUESTS_PER_CONN: usize = 32;
/// Raw stdin records buffered per request before we stop reading.
const STDIN_QUEUE: usize = 16;

/// A request being received.
struct Incoming {
    id: u16,
    begin: BeginRequest,
    params: BytesMut,
    /// Set once params are complete and the request is in flight.
    stdin: Option<mpsc::Sender<Bytes>>,
    started: bool,
    abort: watch::Sender<bool>,
}

impl Incoming {
    /// Still waiting for bytes the client owes us.
    fn receiving(&self) -> bool {
        !self.started || self.stdin.is_some()
    }
}

type Task<'a> = Pin<Box<dyn Future<Output = (u16, Ending)> + Send + 'a>>;

/// Why a connection ended early; logged once.
#[derive(Debug, thiserror::Error)]
enum Fault {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("no bytes for {0:?} in the middle of a request")]
    Stalled(std::time::Duration),
}

pub async fn serve<R, W>(
    mut rd: R,
    wr: W,
    pool: Arc<Pool>,
    peer: &str,
    mut stopping: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let cfg = pool.config();
    let writer = Mutex::new(wr);
    let mut buf = BytesMut::with_capacity(8192);
    let mut reqs: Vec<Incoming> = Vec::new();
    let mut tasks: FuturesUnordered<Task<'_>> = FuturesUnordered::new();
    let mut stalled: Option<(mpsc::Sender<Bytes>, Bytes)> = None;
    let mut eof = false;
    let mut closing = *stopping.borrow();
    // While stopping, a keep-alive connection closes once it is idle; a
    // connection taken from the backlog first gets to send its request.
    let mut served = 0u64;
    let mut progress = Instant::now();

    loop {
        if !eof
            && stalled.is_none()
            && let Err(e) = take_frames(
                &mut buf,
                &mut reqs,
                &mut tasks,
                &mut stalled,
                &pool,
                &cfg,
                &writer,
            )
        {
            tracing::warn!(pool = %pool.name, %peer, "dropping connection: {e}");
            abort_all(&reqs);
            eof = true;
        }
        let idle = reqs.is_empty() && buf.is_empty() && served > 0;
        if tasks.is_empty() && (eof || (closing && idle)) {
            break;
        }
        let receiving = !buf.is_empty() || reqs.iter().any(Incoming::receiving);
        let deadline = progress + cfg.request_read_timeout;
        let stalled_tx = stalled.as_ref().map(|(tx, _)| tx.clone());
        tokio::select! {
            r = rd.read_buf(&mut buf), if !eof && stalled.is_none() => match r {
                Ok(0) | Err(_) => {
                    // The client went away: what is in flight is aborted.
                    abort_all(&reqs);
                    eof = true;
                }
                Ok(_) => progress = Instant::now(),
            },
            Some((id, ending)) = tasks.next(), if !tasks.is_empty() => {
                let keep = reqs.iter().find(|r| r.id == id).is_none_or(|r| r.begin.keep_conn());
                reqs.retain(|r| r.id != id || id == record::NULL_REQUEST_ID);
                served += 1;
                if ending == Ending::CloseConnection || !keep {
                    abort_all(&reqs);
                    eof = true;
                }
            },
            permit = async { stalled_tx.expect("guarded").reserve_owned().await }, if stalled_tx.is_some() => {
                let (_, raw) = stalled.take().expect("guarded");
                if let Ok(permit) = permit {
                    permit.send(raw);
                }
                progress = Instant::now();
            },
            _ = tokio::time::sleep_until(deadline), if receiving && !eof => {
                tracing::warn!(pool = %pool.name, %peer, "dropping connection: {}", Fault::Stalled(cfg.request_read_timeout));
                abort_all(&reqs);
                eof = true;
            },
            _ = stopping.wait_for(|s| *s), if !closing => closing = true,
        }
    }
    // Dropping the halves closes the socket; a separate shutdown() would
    // cost a system call per connection for nothing.
}

fn abort_all(reqs: &[Incoming]) {
    for r in reqs {
        let _ = r.abort.send(true);
    }
}

/// Handles every complete record in `buf`, stopping early when a stdin
/// queue is full (the record then waits in `stalled`).
fn take_frames<'a, W>(
    buf: &mut BytesMut,
    reqs: &mut Vec<Incoming>,
    tasks: &mut FuturesUnordered<Task<'a>>,
    stalled: &mut Option<(mpsc::Sender<Bytes>, Bytes)>,
    pool: &Arc<Pool>,
    cfg: &Arc<PoolConfig>,
    writer: &'a Mutex<W>,
) -> Result<(), Fault>
where
    W: AsyncWrite + Unpin + Send,
{
    while stalled.is_none() {
        let Some(frame) = fastcgi::decode(buf)? else {
            return Ok(());
        };
        let id = frame.request_id();
        match frame.record_type() {
            record::BEGIN_REQUEST if id != record::NULL_REQUEST_ID => {
                if reqs.iter().any(|r| r.id == id) {
                    return Err(ProtocolError::DuplicateRequest(id).into());
                }
                let begin = BeginRequest::parse(frame.content())?;
                let refuse =
                    if !(record::ROLE_RESPONDER..=record::ROLE_FILTER).contains(&begin.role) {
                        Some(record::UNKNOWN_ROLE)
                    } else if reqs.len() >= MAX_REQUESTS_PER_CONN {
                        Some(record::OVERLOADED)
                    } else {
                        None
                    };
                if let Some(status) = refuse {
                    let mut out = BytesMut::new();
                    record::put_end_request(
                        &mut out,
                        id,
                        EndRequest {
                            app_status: 0,
                            protocol_status: status,
                        },
                    );
                    tasks.push(write_task(
                        writer,
                        out.freeze(),
                        id,
                        cfg.request_read_timeout,
                    ));
                    // Tracked only so its keep-alive flag is known when the
                    // refusal has been written.
                    reqs.push(incoming(id, begin, true));
                    continue;
                }
                reqs.push(incoming(id, begin, false));
            }
            record::PARAMS => {
                let Some(req) = reqs.iter_mut().find(|r| r.id == id && !r.started) else {
                    continue;
                };
                if frame.content().is_empty() {
                    tasks.push(start(req, pool, cfg, writer));
                } else if req.params.len() + frame.content().len() > cfg.request_max_params_size {
                    return Err(ProtocolError::ParamsTooLarge {
                        id,
                        limit: cfg.request_max_params_size,
                    }
                    .into());
                } else {
                    req.params.extend_from_slice(frame.content());
                }
            }
            record::STDIN | record::DATA => {
                let Some(req) = reqs.iter_mut().find(|r| r.id == id) else {
                    continue; // the request already ended
                };
                if !req.started {
                    return Err(ProtocolError::UnexpectedRecord(frame.record_type()).into());
                }
                let ends = frame.record_type() == record::STDIN && frame.content().is_empty();
                if let Some(tx) = &req.stdin
                    && let Err(mpsc::error::TrySendError::Full(raw)) =
                        tx.try_send(frame.raw.clone())
                {
                    *stalled = Some((tx.clone(), raw));
                }
                if ends {
                    req.stdin = None;
                }
            }
            record::ABORT_REQUEST => {
                if let Some(req) = reqs.iter().find(|r| r.id == id) {
                    let _ = req.abort.send(true);
                    if !req.started {
                        let mut out = BytesMut::new();
                        record::put_end_request(
                            &mut out,
                            id,
                            EndRequest {
                                app_status: 0,
                                protocol_status: 0,
                            },
                        );
                        tasks.push(write_task(
                            writer,
                            out.freeze(),
                            id,
                            cfg.request_read_timeout,
                        ));
                        reqs.iter_mut()
                            .find(|r| r.id == id)
                            .expect("found above")
                            .started = true;
                    }
                }
            }
            t if id == record::NULL_REQUEST_ID => {
                let out = management_reply(&frame, t, cfg);
                tasks.push(write_task(
                    writer,
                    out.freeze(),
                    record::NULL_REQUEST_ID,
                    cfg.request_read_timeout,
                ));
            }
            t => return Err(ProtocolError::UnexpectedRecord(t).into()),
        }
    }
    Ok(())
}

fn incoming(id: u16, begin: BeginRequest, started: bool) -> Incoming {
    Incoming {
        id,
        begin,
        params: BytesMut::new(),
        stdin: None,
        started,
        abort: watch::channel(false).0,
    }
}

/// Params are complete: the request goes out to a worker.
fn start<'a, W>(
    req: &mut Incoming,
    pool: &Arc<Pool>,
    cfg: &Arc<PoolConfig>,
    writer: &'a Mutex<W>,
) -> Task<'a>
where
    W: AsyncWrite + Unpin + Send,
{
    let (tx, rx) = mpsc::channel(STDIN_QUEUE);
    req.started = true;
    req.stdin = Some(tx);
    let params = std::mem::take(&mut req.params).freeze();
    let request = relay::Request {
        id: req.id,
        begin: req.begin,
        info: busy_info(&params),
        params,
        stdin: rx,
        abort: req.abort.subscribe(),
    };
    Box::pin(relay::serve(pool.clone(), cfg.clone(), request, writer))
}

fn busy_info(params: &[u8]) -> BusyInfo {
    let get = |name: &[u8]| {
        String::from_utf8_lossy(pairs::find(params, name).unwrap_or_default()).into_owned()
    };
    BusyInfo {
        method: get(b"REQUEST_METHOD"),
        uri: get(b"REQUEST_URI"),
        script: get(b"SCRIPT_FILENAME"),
        content_length: get(b"CONTENT_LENGTH").parse().unwrap_or(0),
        started: std::time::Instant::now(),
    }
}

fn write_task<'a, W>(
    writer: &'a Mutex<W>,
    out: Bytes,
    id: u16,
    limit: std::time::Duration,
) -> Task<'a>
where
    W: AsyncWrite + Unpin + Send,
{
    Box::pin(async move {
        let mut w = writer.lock().await;
        match tokio::time::timeout(limit, w.write_all(&out)).await {
            Ok(Ok(())) => (id, Ending::Complete),
            _ => (id, Ending::CloseConnection),
        }
    })
}

/// Answers `FCGI_GET_VALUES` for the master itself, and any other
/// management record with `FCGI_UNKNOWN_TYPE`.
fn management_reply(frame: &Frame, record_type: u8, cfg: &PoolConfig) -> BytesMut {
    let mut out = BytesMut::new();
    if record_type != record::GET_VALUES {
        record::put_unknown_type(&mut out, record_type);
        return out;
    }
    let conns = cfg.listen_max_connections.to_string();
    let reqs = (cfg.listen_max_connections * MAX_REQUESTS_PER_CONN).to_string();
    let mut body = BytesMut::new();
    for (name, _) in pairs::pairs(frame.content()).map_while(Result::ok) {
        let value = match name {
            b"FCGI_MAX_CONNS" => conns.as_bytes(),
            b"FCGI_MAX_REQS" => reqs.as_bytes(),
            b"FCGI_MPXS_CONNS" => b"1",
            _ => continue,
        };
        pairs::put_pair(&mut body, name, value);
    }
    record::put_record(
        &mut out,
        record::GET_VALUES_RESULT,
        record::NULL_REQUEST_ID,
        &body,
    );
    out
}
