//! Whether a published port accepts a TCP connection on this host, as a user's client would
//! find it (`nexus admin workspace health`).
//!
//! Connecting is not enough: the Docker engine's userland proxy listens on every published port
//! for as long as the container runs, accepts the connection itself, and only then dials the
//! container, closing the connection at once when nothing listens inside. So a connection that
//! the other side closes without a byte within [`SETTLE`] counts as refused; one that stays
//! open (a server waiting for the client to speak) or that brings data (a banner) counts as
//! accepted.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// How long an accepted connection must stay open (or bring data) to count.
pub const SETTLE: Duration = Duration::from_millis(250);

/// Whether `address` accepts within `limit` (the connection and its settling included); the
/// reason when it does not.
pub async fn tcp(address: SocketAddr, limit: Duration) -> Result<(), String> {
    let attempt = async {
        let mut stream = TcpStream::connect(address)
            .await
            .map_err(|e| format!("connecting to {address}: {e}"))?;
        let mut byte = [0u8; 1];
        match tokio::time::timeout(SETTLE, stream.read(&mut byte)).await {
            // Still open: a server that waits for its client.
            Err(_) => Ok(()),
            Ok(Ok(0)) => Err(format!(
                "{address} closed the connection at once: nothing listens behind it"
            )),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("{address} dropped the connection: {e}")),
        }
    };
    tokio::time::timeout(limit, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("{address} did not answer within {limit:?}")))
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    const LIMIT: Duration = Duration::from_secs(1);

    async fn listener() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let address = listener.local_addr().unwrap();
        (listener, address)
    }

    #[tokio::test]
    async fn a_server_that_waits_or_speaks_accepts() {
        let (quiet, address) = listener().await;
        let holding = tokio::spawn(async move {
            let (stream, _) = quiet.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(stream);
        });
        assert_eq!(tcp(address, LIMIT).await, Ok(()));
        holding.abort();

        let (banner, address) = listener().await;
        tokio::spawn(async move {
            let (mut stream, _) = banner.accept().await.unwrap();
            stream.write_all(b"SSH-2.0\r\n").await.unwrap();
        });
        assert_eq!(tcp(address, LIMIT).await, Ok(()));
    }

    #[tokio::test]
    async fn nothing_listening_or_a_proxy_that_closes_at_once_refuses() {
        let (closed, address) = listener().await;
        drop(closed);
        let refused = tcp(address, LIMIT).await.unwrap_err();
        assert!(refused.contains("connecting to"), "{refused}");

        // As the engine's proxy does when nothing listens in the container.
        let (proxy, address) = listener().await;
        tokio::spawn(async move {
            let (stream, _) = proxy.accept().await.unwrap();
            drop(stream);
        });
        let closed = tcp(address, LIMIT).await.unwrap_err();
        assert!(closed.contains("nothing listens"), "{closed}");
    }
}
