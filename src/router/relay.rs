//! One request's trip through the master: lease a worker (or wait in the
//! pool's queue), send it the request, relay its records back verbatim, and
//! give the worker back only once `FCGI_END_REQUEST` has arrived.
//!
//! Requests keep their request id on the worker side: the master's
//! connection to a worker carries one request at a time, so no id is ever
//! rewritten and the response records go back to the client as they came.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, mpsc, watch};
use tokio::time::timeout;

use crate::config::PoolConfig;
use crate::fastcgi::frame::records;
use crate::fastcgi::record::{self, BeginRequest, EndRequest};
use crate::fastcgi::response;
use crate::pool::{AcquireError, BusyInfo, Lease, Outcome, Pool};

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
    let lease = match acquire(&pool, &cfg, &mut req).await {
        Ok(lease) => lease,
        Err(Refusal::Aborted) => return (id, Ending::Complete),
        Err(Refusal::Respond(status, reason)) => {
            let mut out = BytesMut::new();
            let retry = cfg.request_queue_timeout.as_secs().clamp(1, 60).to_string();
            response::put_simple(&mut out, id, status, &[("Retry-After", &retry)], reason);
            let ending = write_client(client, &out, cfg.request_read_timeout).await;
            return (
                id,
                if ending {
                    Ending::Complete
                } else {
                    Ending::CloseConnection
                },
            );
        }
    };
    let ending = forward(&pool, lease, &cfg, req, client).await;
    (id, ending)
}

enum Refusal {
    Aborted,
    Respond(u16, &'static str),
}

async fn acquire(pool: &Arc<Pool>, cfg: &PoolConfig, req: &mut Request) -> Result<Lease, Refusal> {
    let waiting = match pool.acquire(req.info.clone(), cfg.max_queue) {
        Ok(Ok(lease)) => return Ok(lease),
        Ok(Err(rx)) => rx,
        Err(AcquireError::QueueFull) => {
            return Err(Refusal::Respond(
                503,
                "Service Unavailable: the queue of this pool is full.\n",
            ));
        }
        Err(AcquireError::NoWorkers) => {
            return Err(Refusal::Respond(
                503,
                "Service Unavailable: no worker of this pool can start.\n",
            ));
        }
    };
    let mut waiting = std::pin::pin!(waiting);
    tokio::select! {
        got = &mut waiting => got.map_err(|_| Refusal::Respond(503, "Service Unavailable: no worker of this pool can start.\n")),
        _ = tokio::time::sleep(cfg.request_queue_timeout) => {
            // A worker may have been handed over just as the time ran out.
            waiting.close();
            match waiting.try_recv() {
                Ok(lease) => Ok(lease),
                Err(_) => {
                    pool.counters.queue_timeouts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Err(Refusal::Respond(503, "Service Unavailable: timed out waiting for a worker.\n"))
                }
            }
        }
        _ = aborted(&mut req.abort) => Err(Refusal::Aborted),
    }
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
async fn forward<W>(
    pool: &Pool,
    mut lease: Lease,
    cfg: &PoolConfig,
    req: Request,
    client: &Mutex<W>,
) -> Ending
where
    W: AsyncWrite + Unpin,
{
    let Request {
        id,
        begin,
        params,
        mut stdin,
        abort,
        ..
    } = req;
    let mut head = BytesMut::with_capacity(params.len() + 64);
    let begin = BeginRequest {
        flags: begin.flags | record::KEEP_CONN,
        ..begin
    };
    record::put_begin_request(&mut head, id, begin);
    record::put_stream(&mut head, record::PARAMS, id, &params);
    record::put_stream_end(&mut head, record::PARAMS, id);
    // Whatever stdin already arrived goes out in the same write: for a
    // typical request, the whole of it.
    while head.len() < 32 * 1024 {
        match stdin.try_recv() {
            Ok(raw) => head.extend_from_slice(&raw),
            Err(_) => break,
        }
    }

    let result = {
        let conn = lease
            .conn
            .as_mut()
            .expect("a fresh lease has its connection");
        match send_head(conn, &head).await {
            Err(_) => RelayEnd::WorkerLost { sent_any: false },
            Ok(()) => {
                let (stream, buf) = conn.parts();
                let (mut from_worker, mut to_worker) =
                    stream.expect("connected by send_head").split();
                let pump = pump_stdin(&mut to_worker, stdin, abort, id);
                let relay =
                    relay_response(&mut from_worker, buf, id, client, cfg.request_read_timeout);
                tokio::pin!(pump, relay);
                let mut pumping = true;
                loop {
                    tokio::select! {
                        // A failed write means the worker is gone; the relay sees
                        // the same on its side and decides what the client gets.
                        _ = &mut pump, if pumping => pumping = false,
                        end = &mut relay => break end,
                    }
                }
            }
        }
    };
    match result {
        RelayEnd::Ended { client_ok, tail } => {
            let outcome = if conn_clean(&lease) {
                Outcome::Clean
            } else {
                Outcome::Broken
            };
            pool.release(lease, outcome);
            if client_ok && write_client(client, &tail, cfg.request_read_timeout).await {
                Ending::Complete
            } else {
                Ending::CloseConnection
            }
        }
        RelayEnd::WorkerLost { sent_any } => {
            tracing::warn!(pool = %pool.name, pid = lease.pid, "worker connection lost mid-request");
            pool.release(lease, Outcome::Broken);
            if sent_any {
                return Ending::CloseConnection;
            }
            let mut out = BytesMut::new();
            response::put_simple(
                &mut out,
                id,
                502,
                &[],
                "Bad Gateway: the worker ended before responding.\n",
            );
            if write_client(client, &out, cfg.request_read_timeout).await {
                Ending::Complete
            } else {
                Ending::CloseConnection
            }
        }
    }
}

/// Writes the request's first bytes. A kept connection the worker closed
/// a moment ago fails here with nothing delivered, so it is safe to open a
/// new one and write again, once.
async fn send_head(conn: &mut crate::pool::WorkerConn, head: &[u8]) -> std::io::Result<()> {
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

fn conn_clean(lease: &Lease) -> bool {
    lease.conn.as_ref().is_some_and(|c| c.buf.is_empty())
}

/// Forwards the client's stdin records to the worker until the stream
/// ends; on abort, sends `FCGI_ABORT_REQUEST` instead and stops.
async fn pump_stdin<W: AsyncWrite + Unpin>(
    to_worker: &mut W,
    mut stdin: mpsc::Receiver<Bytes>,
    mut abort: watch::Receiver<bool>,
    id: u16,
) -> std::io::Result<()> {
    loop {
        tokio::select! {
            chunk = stdin.recv() => match chunk {
                Some(raw) => to_worker.write_all(&raw).await?,
                None => break,
            },
            _ = aborted(&mut abort) => {
                let mut out = BytesMut::new();
                record::put_record(&mut out, record::ABORT_REQUEST, id, &[]);
                return to_worker.write_all(&out).await;
            }
        }
    }
    // The request is fully sent; an abort now still has to reach the worker.
    if abort.wait_for(|a| *a).await.is_ok_and(|r| *r) {
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
}

/// Reads the worker's records and writes each run of complete records to
/// the client in one write, until `FCGI_END_REQUEST` for `id`.
async fn relay_response<R, W>(
    from_worker: &mut R,
    buf: &mut BytesMut,
    id: u16,
    client: &Mutex<W>,
    write_limit: Duration,
) -> RelayEnd
where
    R: tokio::io::AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut client_ok = true;
    let mut sent_any = false;
    loop {
        let (complete, ended) = match scan(buf, id) {
            Ok(x) => x,
            Err(_) => return RelayEnd::WorkerLost { sent_any },
        };
        if complete > 0 {
            let chunk = buf.split_to(complete);
            if ended {
                // Written after the worker is released: it is idle as of now.
                return RelayEnd::Ended {
                    client_ok,
                    tail: chunk,
                };
            }
            if client_ok {
                client_ok = write_client(client, &chunk, write_limit).await;
                sent_any = true;
            }
        }
        match from_worker.read_buf(buf).await {
            Ok(0) | Err(_) => return RelayEnd::WorkerLost { sent_any },
            Ok(_) => {}
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
            let content =
                &buf[at + record::HEADER_LEN..at + record::HEADER_LEN + h.content_length as usize];
            EndRequest::parse(content)?;
            return Ok((at + h.record_len(), true));
        }
    }
    Ok((walk.consumed(), false))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
