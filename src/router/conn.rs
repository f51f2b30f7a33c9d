//! One client connection (usually nginx): reads its records, answers
//! management records itself, and starts a [`relay`] for each request once
//! its params are complete, so a client that is slow to send its headers
//! never holds a worker. Several requests may be in flight on one
//! connection (multiplexed ids), and a keep-alive connection is never
//! pinned to a worker: each request leases one afresh. The client's
//! deadlines are kept by a [`deadline::Clock`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, mpsc, watch};
use tokio::time::Instant;

use super::deadline::{self, Clock, Owed, Waiting};
use super::local;
use super::relay::{self, Ending};
use crate::config::PoolConfig;
use crate::fastcgi::record::{self, BeginRequest, EndRequest};
use crate::fastcgi::{self, Frame, ProtocolError, pairs};
use crate::phase::{Phase, PhaseRx};
use crate::pool::{BusyInfo, Pool};
use crate::status;

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
    /// What its client still owes, and by when.
    owed: Owed,
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
}

pub async fn serve<R, W>(
    mut rd: R,
    wr: W,
    pool: Arc<Pool>,
    peer: &str,
    mut phase: PhaseRx,
    serves: Serves,
) where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let cfg = pool.config();
    let writer = Mutex::new(wr);
    let ctx = Ctx {
        pool: &pool,
        cfg: &cfg,
        writer: &writer,
        serves,
    };
    let mut buf = BytesMut::with_capacity(8192);
    let mut st = State {
        reqs: Vec::new(),
        tasks: FuturesUnordered::new(),
        stalled: None,
        phase: *phase.borrow(),
        clock: Clock::new(deadline::Limits::of(&cfg), Instant::now()),
    };
    let mut eof = false;
    // The last request is answered; the connection closes once the client
    // has sent the rest of its stdin.
    let mut draining = false;
    // While stopping, a keep-alive connection closes once it is idle; a
    // connection taken from the backlog first gets to send its request.
    let mut served = 0u64;

    loop {
        if !eof && st.stalled.is_none() {
            let before = buf.len();
            if let Err(e) = st.take_frames(&mut buf, &ctx) {
                tracing::warn!(pool = %pool.name, %peer, "dropping connection: {e}");
                st.abort_all();
                eof = true;
            }
            let now = Instant::now();
            st.clock.framed(now, buf.len() < before, !buf.is_empty());
            if st.stalled.is_some() {
                st.clock.pause(now);
            }
            if draining && !st.reqs.iter().any(|r| r.receiving()) {
                st.reqs.clear();
                eof = true;
            }
        }
        let idle = st.reqs.is_empty() && buf.is_empty() && served > 0;
        if st.tasks.is_empty() && (eof || (st.phase.closed() && idle)) {
            break;
        }
        let waiting = Waiting {
            fresh: served == 0 && st.reqs.is_empty() && buf.is_empty(),
            partial: buf.len(),
            idle: idle && st.tasks.is_empty(),
        };
        let owed = st.reqs.iter().filter(|r| r.receiving()).map(|r| &r.owed);
        let next = if eof {
            None
        } else {
            st.clock.next(waiting, owed)
        };
        let deadline = next.map_or_else(Instant::now, |(at, _)| at);
        let was_empty = buf.is_empty();
        let stalled_tx = st.stalled.as_ref().map(|(tx, _)| tx.clone());
        tokio::select! {
            r = rd.read_buf(&mut buf), if !eof && st.stalled.is_none() => match r {
                Ok(0) | Err(_) => {
                    // The client went away: what is in flight is aborted.
                    if !buf.is_empty() {
                        tracing::warn!(pool = %pool.name, %peer, "dropping connection: closed by the client in the middle of a record");
                    }
                    st.abort_all();
                    eof = true;
                }
                Ok(_) => st.clock.read(Instant::now(), was_empty),
            },
            Some((id, ending)) = st.tasks.next(), if !st.tasks.is_empty() => {
                let req = st.reqs.iter().find(|r| r.id == id);
                let keep = req.is_none_or(|r| r.begin.keep_conn());
                // The client may still be sending the stdin of a request
                // whose answer did not need it (herd's own 403, a script
                // that never read its body). Apache's mod_proxy_fcgi writes
                // it after the params and reads the answer after: closing
                // now would fail that write and turn the answer into its
                // 503. The rest is read and dropped first, as PHP's own
                // FastCGI layer does.
                let owes = req.is_some_and(|r| r.stdin.is_some()) && st.reqs.len() == 1;
                served += 1;
                st.clock.done(Instant::now());
                if !keep && owes && ending == Ending::Complete {
                    draining = true;
                } else {
                    st.reqs.retain(|r| r.id != id || id == record::NULL_REQUEST_ID);
                    if ending == Ending::CloseConnection || !keep {
                        st.abort_all();
                        eof = true;
                    }
                }
            },
            permit = async { stalled_tx.expect("guarded").reserve_owned().await }, if stalled_tx.is_some() => {
                let (_, raw) = st.stalled.take().expect("guarded");
                if let Ok(permit) = permit {
                    permit.send(raw);
                }
                st.clock.resume(Instant::now());
            },
            _ = tokio::time::sleep_until(deadline), if next.is_some() => {
                let (_, why) = next.expect("guarded");
                if why.quiet() {
                    tracing::debug!(pool = %pool.name, %peer, "closing a connection: {why}");
                } else {
                    tracing::warn!(pool = %pool.name, %peer, "dropping connection: {why}");
                }
                st.abort_all();
                eof = true;
            },
            Ok(()) = phase.changed() => st.phase = *phase.borrow_and_update(),
        }
    }
    // Dropping the halves closes the socket; a separate shutdown() would
    // cost a system call per connection for nothing.
}

/// What every request of a connection shares.
struct Ctx<'a, W> {
    pool: &'a Arc<Pool>,
    cfg: &'a Arc<PoolConfig>,
    writer: &'a Mutex<W>,
    serves: Serves,
}

/// What a listener's connections may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serves {
    /// The pool's `listen`: everything.
    Pool,
    /// `pm.status_listen`: the status and ping paths, and nothing else.
    StatusOnly,
}

/// The requests of one connection: being received, and in flight.
struct State<'a> {
    reqs: Vec<Incoming>,
    tasks: FuturesUnordered<Task<'a>>,
    /// A stdin record waiting for room in its request's queue; reading from
    /// the client pauses meanwhile.
    stalled: Option<(mpsc::Sender<Bytes>, Bytes)>,
    /// The master's phase: once stopping, ping says so; once draining, the
    /// connection closes when idle.
    phase: Phase,
    clock: Clock,
}

impl<'a> State<'a> {
    fn abort_all(&self) {
        for r in &self.reqs {
            let _ = r.abort.send(true);
        }
    }

    /// Writes `out` to the client as a task of its own, for request `id`.
    fn reply<W: AsyncWrite + Unpin + Send>(&mut self, ctx: &Ctx<'a, W>, out: BytesMut, id: u16) {
        self.tasks.push(write_task(
            ctx.writer,
            out.freeze(),
            id,
            ctx.cfg.request_read_timeout,
        ));
    }

    /// Handles every complete record in `buf`, stopping early when a stdin
    /// queue is full (the record then waits in `stalled`).
    fn take_frames<W>(&mut self, buf: &mut BytesMut, ctx: &Ctx<'a, W>) -> Result<(), Fault>
    where
        W: AsyncWrite + Unpin + Send,
    {
        while self.stalled.is_none() {
            let Some(frame) = fastcgi::decode(buf)? else {
                return Ok(());
            };
            self.on_frame(frame, ctx)?;
        }
        Ok(())
    }

    fn on_frame<W>(&mut self, frame: Frame, ctx: &Ctx<'a, W>) -> Result<(), Fault>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let id = frame.request_id();
        match frame.record_type() {
            record::BEGIN_REQUEST if id != record::NULL_REQUEST_ID => {
                self.on_begin(id, &frame, ctx)?
            }
            record::PARAMS => {
                let Some(req) = self.reqs.iter_mut().find(|r| r.id == id && !r.started) else {
                    return Ok(());
                };
                if !frame.content().is_empty() {
                    let limit = ctx.cfg.request_max_params_size;
                    if req.params.len() + frame.content().len() > limit {
                        return Err(ProtocolError::ParamsTooLarge { id, limit }.into());
                    }
                    req.params.extend_from_slice(frame.content());
                    return Ok(());
                }
                req.started = true;
                self.clock.params_done(&mut req.owed, Instant::now());
                if local::needs_engine(&req.params, ctx.cfg) {
                    let task = engine_status_task(req, id, ctx, self.phase);
                    self.tasks.push(task);
                    return Ok(());
                }
                let none = status::engine::Figures::new();
                match local::answer(&req.params, id, ctx.pool, ctx.cfg, self.phase, &none) {
                    Some(out) => self.reply(ctx, out, id),
                    None if ctx.serves == Serves::StatusOnly => {
                        let out = local::not_served(&req.params, id);
                        self.reply(ctx, out, id);
                    }
                    None => {
                        let task = start(req, ctx);
                        self.tasks.push(task);
                    }
                }
            }
            record::STDIN | record::DATA => {
                let Some(req) = self.reqs.iter_mut().find(|r| r.id == id) else {
                    return Ok(()); // the request already ended
                };
                if !req.started {
                    return Err(ProtocolError::UnexpectedRecord(frame.record_type()).into());
                }
                let ends = frame.record_type() == record::STDIN && frame.content().is_empty();
                req.owed.received(frame.content().len());
                if let Some(tx) = &req.stdin
                    && let Err(mpsc::error::TrySendError::Full(raw)) =
                        tx.try_send(frame.raw.clone())
                {
                    self.stalled = Some((tx.clone(), raw));
                }
                if ends {
                    req.stdin = None;
                }
            }
            record::ABORT_REQUEST => {
                let Some(req) = self.reqs.iter_mut().find(|r| r.id == id) else {
                    return Ok(());
                };
                let _ = req.abort.send(true);
                if !req.started {
                    req.started = true;
                    let mut out = BytesMut::new();
                    record::put_end_request(
                        &mut out,
                        id,
                        EndRequest {
                            app_status: 0,
                            protocol_status: 0,
                        },
                    );
                    self.reply(ctx, out, id);
                }
            }
            t if id == record::NULL_REQUEST_ID => {
                let out = management_reply(&frame, t, ctx.cfg);
                self.reply(ctx, out, record::NULL_REQUEST_ID);
            }
            t => return Err(ProtocolError::UnexpectedRecord(t).into()),
        }
        Ok(())
    }

    fn on_begin<W>(&mut self, id: u16, frame: &Frame, ctx: &Ctx<'a, W>) -> Result<(), Fault>
    where
        W: AsyncWrite + Unpin + Send,
    {
        if self.reqs.iter().any(|r| r.id == id) {
            return Err(ProtocolError::DuplicateRequest(id).into());
        }
        let begin = BeginRequest::parse(frame.content())?;
        let refuse = if !(record::ROLE_RESPONDER..=record::ROLE_FILTER).contains(&begin.role) {
            Some(record::UNKNOWN_ROLE)
        } else if self.reqs.len() >= MAX_REQUESTS_PER_CONN {
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
            self.reply(ctx, out, id);
            // Tracked only so its keep-alive flag is known when the
            // refusal has been written.
            self.reqs.push(self.incoming(id, begin, true));
            return Ok(());
        }
        self.reqs.push(self.incoming(id, begin, false));
        Ok(())
    }

    fn incoming(&self, id: u16, begin: BeginRequest, started: bool) -> Incoming {
        Incoming {
            id,
            begin,
            params: BytesMut::new(),
            stdin: None,
            started,
            abort: watch::channel(false).0,
            owed: self.clock.begin(Instant::now()),
        }
    }
}

/// Params are complete: the request goes out to a worker.
fn start<'a, W>(req: &mut Incoming, ctx: &Ctx<'a, W>) -> Task<'a>
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
    Box::pin(relay::serve(
        ctx.pool.clone(),
        ctx.cfg.clone(),
        request,
        ctx.writer,
    ))
}

/// A full status page of a pool of php-fpm groups, answered once the
/// groups have said what their processes do (at most a second).
fn engine_status_task<'a, W>(
    req: &mut Incoming,
    id: u16,
    ctx: &Ctx<'a, W>,
    phase: Phase,
) -> Task<'a>
where
    W: AsyncWrite + Unpin + Send,
{
    let params = std::mem::take(&mut req.params);
    let pool = ctx.pool.clone();
    let cfg = ctx.cfg.clone();
    let writer = ctx.writer;
    Box::pin(async move {
        let engine = status::engine::collect(&pool).await;
        let out = local::answer(&params, id, &pool, &cfg, phase, &engine)
            .unwrap_or_else(|| local::not_served(&params, id));
        write_task(writer, out.freeze(), id, cfg.request_read_timeout).await
    })
}

fn busy_info(params: &[u8]) -> BusyInfo {
    let get = |name: &[u8]| {
        String::from_utf8_lossy(pairs::find(params, name).unwrap_or_default()).into_owned()
    };
    BusyInfo {
        method: get(b"REQUEST_METHOD"),
        uri: get(b"REQUEST_URI"),
        script: get(b"SCRIPT_FILENAME"),
        user: get(b"REMOTE_USER"),
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
    record::put_get_values_result(&mut out, frame.content(), |name| match name {
        b"FCGI_MAX_CONNS" => Some(conns.as_bytes()),
        b"FCGI_MAX_REQS" => Some(reqs.as_bytes()),
        b"FCGI_MPXS_CONNS" => Some(b"1"),
        _ => None,
    });
    out
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;
