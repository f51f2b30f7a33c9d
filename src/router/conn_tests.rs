//! Unit tests for a client connection's deadlines, on an in-memory stream
//! with tokio's paused time: the deadlines land to the second, and a test
//! that waits minutes takes none.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

/// A pool answering `/ping` itself (no worker needed), with `extra`.
fn pool(extra: &str) -> Arc<Pool> {
    let text = format!(
        "[www]\nlisten = 127.0.0.1:9\nuser = nobody\ncommand = /bin/true\n\
         pm = static\npm.max_children = 1\nping.path = /ping\n{extra}"
    );
    let config = crate::config::parse_str(
        &text,
        std::path::Path::new("test.conf"),
        &crate::config::LoadOptions::default(),
    )
    .expect("config");
    Pool::new(Arc::new(config.pools[0].clone()))
        .expect("pool")
        .0
}

/// Serves one connection on a task of its own; returns the client's end.
fn connect(pool: Arc<Pool>) -> DuplexStream {
    let (client, server) = tokio::io::duplex(1 << 16);
    let phase = watch::channel(Phase::Serving).1;
    tokio::spawn(async move {
        let (rd, wr) = tokio::io::split(server);
        serve(rd, wr, pool, "test", phase, Serves::Pool).await;
    });
    client
}

/// A keep-alive GET of `uri`: begin, params, empty stdin.
fn request(uri: &str) -> BytesMut {
    let mut out = BytesMut::new();
    let begin = BeginRequest {
        role: record::ROLE_RESPONDER,
        flags: record::KEEP_CONN,
    };
    record::put_begin_request(&mut out, 1, begin);
    let mut params = BytesMut::new();
    pairs::put_pair(&mut params, b"REQUEST_METHOD", b"GET");
    pairs::put_pair(&mut params, b"REQUEST_URI", uri.as_bytes());
    record::put_record(&mut out, record::PARAMS, 1, &params);
    record::put_record(&mut out, record::PARAMS, 1, b"");
    record::put_record(&mut out, record::STDIN, 1, b"");
    out
}

/// Reads until the server closes the connection (failing the test after
/// an hour); returns how long that took.
async fn closed_after(client: &mut (impl AsyncRead + Unpin)) -> Duration {
    let start = Instant::now();
    let mut sink = [0u8; 4096];
    let closed = async { while client.read(&mut sink).await.is_ok_and(|n| n > 0) {} };
    tokio::time::timeout(Duration::from_secs(3600), closed)
        .await
        .expect("the connection is still open after an hour");
    start.elapsed()
}

#[tokio::test(start_paused = true)]
async fn a_client_trickling_its_params_is_dropped_at_the_header_deadline() {
    let client = connect(pool(
        "request.read_timeout = 30s\nrequest.header_timeout = 60s\n",
    ));
    let (mut rd, mut wr) = tokio::io::split(client);
    // A byte every 20 s: within the read timeout each time, for ever.
    let bytes = request("/ping");
    tokio::spawn(async move {
        for b in bytes.iter().cycle() {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(20)).await;
        }
    });
    let waited = closed_after(&mut rd).await;
    assert_eq!(waited, Duration::from_secs(60), "at the header deadline");
}

#[tokio::test(start_paused = true)]
async fn an_idle_keepalive_connection_closes_at_the_idle_timeout() {
    let mut client = connect(pool("request.idle_timeout = 120s\n"));
    client.write_all(&request("/ping")).await.unwrap();
    let mut answer = [0u8; 4096];
    // The answer comes in one write; then nothing, until the close.
    assert!(client.read(&mut answer).await.unwrap() > 0, "an answer");
    let waited = closed_after(&mut client).await;
    assert_eq!(waited, Duration::from_secs(120));
}
