//! When a php-fpm child with a socket of its own is free again.
//!
//! A child's hangup ends its response, but not always its work: a script
//! that called `fastcgi_finish_request()` runs on (Symfony's and Laravel's
//! "terminate"), and a child that reached `pm.max_requests` is being
//! replaced. On a socket shared by a group's children that does not matter,
//! as another child takes the next connection; on a child's own socket the
//! next request would wait in its queue while other children sit idle. So
//! before its slot takes another request, herd connects to the child's
//! socket and shuts its side at once: a child back at `accept()` takes the
//! connection, reads its end and closes it (php-fpm then goes back to
//! accepting, logging nothing), and that close frees the slot. A child
//! still at work takes the connection when it is done, and a replaced
//! child's successor when it starts: the slot stays out of the way until
//! then, however long that is.

use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Returns once the process listening on `socket` accepted a connection
/// and closed it, or cannot be reached (the worker is gone, and the next
/// request through the slot finds out how, as it would without this).
pub async fn until_free(socket: &Path) {
    let Ok(mut stream) = UnixStream::connect(socket).await else {
        return;
    };
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut scratch = [0u8; 64];
    while let Ok(1..) = stream.read(&mut scratch).await {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::net::UnixListener;

    #[tokio::test]
    async fn free_when_the_listener_takes_the_connection_and_closes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("child.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let probe = tokio::spawn({
            let path = path.clone();
            async move { until_free(&path).await }
        });
        // Nobody accepts: the child is busy, the slot stays out.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!probe.is_finished());
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "the probe sends nothing");
        drop(conn);
        tokio::time::timeout(Duration::from_secs(10), probe)
            .await
            .expect("free once the connection is closed")
            .unwrap();
    }

    #[tokio::test]
    async fn a_socket_nobody_listens_on_ends_the_probe() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone.sock");
        drop(UnixListener::bind(&path).unwrap());
        tokio::time::timeout(Duration::from_secs(10), until_free(&path))
            .await
            .unwrap();
    }
}
