//! One request's exchange with one worker: the request written (head,
//! then the client's stdin as it comes, or `FCGI_ABORT_REQUEST` when the
//! client left), the response relayed to the client record run by record
//! run, the `request_terminate_timeout` and slowlog timers, and what the
//! exchange came to for the lease.

use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, mpsc, watch};
use tokio::time::timeout;

use super::access_log;
use super::hold::{self, Holding};
use super::relay::{Attempt, Trip};
use crate::config::PoolConfig;
use crate::fastcgi::frame::records;
use crate::fastcgi::record::{self, EndRequest, HEADER_LEN};
use crate::fastcgi::response;
use crate::pool::hangups::Wake;
use crate::pool::{Counters, Lease, Outcome, Pool, WorkerConn, usage};

/// Writes to the client; false when it is gone or stalled past the timeout.
pub(super) async fn write_client<W: AsyncWrite + Unpin>(
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
pub(super) async fn forward<W>(
    trip: &mut Trip<'_, W>,
    mut lease: Lease,
    stdin: Option<&mut mpsc::Receiver<Bytes>>,
    may_retry: bool,
) -> Attempt
where
    W: AsyncWrite + Unpin,
{
    let Trip {
        pool,
        cfg,
        id,
        head,
        abort,
        client,
        log,
    } = trip;
    let (pool, cfg, id, head, client): (&Pool, &PoolConfig, u16, &[u8], &Mutex<W>) =
        (pool, cfg, *id, head, client);
    let leased_at = Instant::now();
    let (worker, slot, pid) = (lease.id, lease.slot, lease.pid);
    let want_head = pool.logs.access.is_some();
    let measured = measures(pool, cfg, &lease)
        .then(|| usage::start(pid))
        .flatten();
    let sent_any = AtomicBool::new(false);
    let conn = lease
        .conn
        .as_mut()
        .expect("a fresh lease has its connection");
    let terminate = deadline(leased_at, cfg.herd_terminate_timeout());
    let mut slow = deadline(leased_at, cfg.request_slowlog_timeout);
    // The response is held for the worker's hangup when the whole request
    // goes out with its head: the relay below has nothing to pump then.
    let complete = stdin
        .as_ref()
        .is_none_or(|rx| rx.is_closed() && rx.is_empty());
    let hold = cfg.response_hold();
    let hangups = (complete && !hold.is_zero())
        .then(|| pool.hangups())
        .flatten();
    let mut sent = None;
    let mut held = None;
    match hangups.and_then(|h| hold::send(conn, h, head, hold)) {
        None => {}
        Some(Err((stream, n))) => {
            conn.adopt(stream);
            sent = Some(hold::finish_send(conn, &head[n..]).await);
        }
        Some(Ok(mut holding)) => {
            let mut abort = abort.clone();
            loop {
                tokio::select! {
                    wake = holding.watch.wait() => {
                        match wake {
                            Wake::HungUp => held = Some(whole(holding, conn, id, want_head.then_some(&mut log.head))),
                            Wake::Stream => sent = Some(holding.stream(conn)),
                        }
                        break;
                    }
                    // The relay below sends the worker FCGI_ABORT_REQUEST.
                    _ = aborted(&mut abort) => {
                        sent = Some(holding.stream(conn));
                        break;
                    }
                    _ = sleep_until(terminate) => {
                        held = Some(RelayEnd::TimedOut);
                        break;
                    }
                    _ = sleep_until(slow) => {
                        slow = None;
                        slowlog(pool, worker, slot, pid, leased_at);
                    }
                }
            }
        }
    }
    let sent = match (held.is_some(), sent) {
        (true, _) => Ok(()),
        (false, Some(sent)) => sent,
        (false, None) => {
            // A request whose body is still coming (or one not held) goes
            // on the connection opened ahead too, as a held one does.
            conn.use_spare();
            send_head(conn, head).await
        }
    };
    let end = match (held, sent) {
        (Some(end), _) => end,
        (None, Err(_)) => RelayEnd::WorkerLost { sent_any: false },
        (None, Ok(())) => {
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
        RelayEnd::Ended {
            client_ok,
            tail,
            engine,
        } => {
            let clean = lease.conn.as_ref().is_some_and(|c| c.buf_is_empty());
            // The worker may not have read our FCGI_ABORT_REQUEST yet;
            // php-cgi, reading it as the next request, would drop the
            // connection under the next one. A fresh one avoids that. And a
            // connection not kept (see `keeps_connections`) is done.
            if (*abort.borrow() || !cfg.keeps_connections())
                && let Some(conn) = lease.conn.as_mut()
            {
                conn.disconnect();
            }
            log.status = response::status_of(&log.head).unwrap_or(200);
            lease.usage = measured.and_then(usage::finish);
            log.usage = lease.usage;
            // The response goes to the client before the worker's connection
            // is closed and the slot's next one opened (`release`): those
            // system calls wait, not the client. Only as far as the client's
            // socket takes it at once: a slow client never holds the slot.
            let mut write = std::pin::pin!(write_client(client, &tail, cfg.request_read_timeout));
            let written = if client_ok {
                std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await
            } else {
                Poll::Ready(false)
            };
            drop(engine);
            pool.release(
                lease,
                if clean {
                    Outcome::Clean
                } else {
                    Outcome::Broken
                },
            );
            let client_ok = match written {
                Poll::Ready(ok) => ok,
                Poll::Pending => write.await,
            };
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

/// The response of a worker that hung up, read whole: its records up to
/// `FCGI_END_REQUEST`, to be written to the client in one piece.
fn whole(
    holding: Holding<'_>,
    conn: &mut WorkerConn,
    id: u16,
    head: Option<&mut Vec<u8>>,
) -> RelayEnd {
    let lost = RelayEnd::WorkerLost { sent_any: false };
    let buf = &mut conn.buf;
    let Ok(engine) = holding.read_all(buf) else {
        return lost;
    };
    match scan(buf, id) {
        Ok((complete, true)) => {
            let tail = buf.split_to(complete);
            if let Some(h) = head {
                copy_head(&tail, id, h);
            }
            RelayEnd::Ended {
                client_ok: true,
                tail,
                engine: Some(engine),
            }
        }
        // It hung up before its response ended.
        _ => lost,
    }
}

/// Whether to measure what this request costs its worker: for the access
/// log's `%C`/`%M`, or while someone watches per-worker status; and only
/// where the leased process is the one that serves (see `pool::usage`).
fn measures(pool: &Pool, cfg: &PoolConfig, lease: &Lease) -> bool {
    let serves_itself = lease.slots == 1 && cfg.php_group.is_none();
    let logged = pool.logs.access.is_some() && access_log::measures_usage(&cfg.access_format);
    serves_itself && (logged || pool.usage_wanted())
}

pub(super) fn deadline(from: Instant, after: Duration) -> Option<tokio::time::Instant> {
    (!after.is_zero()).then(|| tokio::time::Instant::from_std(from + after))
}

/// Sleeps until `at`, or forever without one.
pub(super) async fn sleep_until(at: Option<tokio::time::Instant>) {
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
    let (stream, fresh) = conn.connect()?;
    match stream.write_all(head).await {
        Ok(()) => Ok(()),
        Err(e) if fresh => Err(e),
        Err(_) => {
            conn.disconnect();
            let (stream, _) = conn.connect()?;
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
pub(super) async fn aborted(abort: &mut watch::Receiver<bool>) {
    let _ = abort.wait_for(|a| *a).await;
}

enum RelayEnd {
    /// `tail` holds the last records, up to `FCGI_END_REQUEST`, still to be
    /// written to the client.
    /// `engine`: a held response's connection, closed once the client has
    /// the response.
    Ended {
        client_ok: bool,
        tail: BytesMut,
        engine: Option<socket2::Socket>,
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
                    engine: None,
                };
            }
            if client_ok {
                sent.store(true, Ordering::Relaxed);
                client_ok = write_client(client, &chunk, write_limit).await;
            }
        }
        // Room for a whole piece: after the split the buffer's tail may be
        // short, and a read into it would take a second read to finish.
        buf.reserve(READ_ROOM);
        match from_worker.read_buf(buf).await {
            Ok(0) | Err(_) => return lost(),
            Ok(_) => {}
        }
    }
}

/// Free space the relay gives each read from a worker: php-fpm and php-cgi
/// send their output in records of up to 8 KiB.
pub(super) const READ_ROOM: usize = 16 * 1024;

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
}
