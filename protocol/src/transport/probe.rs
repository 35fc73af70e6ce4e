//! Whether the process behind an address is gone: one datagram to the address on a connected
//! socket. When nothing listens on that port any more (the process that did has crashed or
//! exited) and the host is up, the host answers ICMP port unreachable, which a connected socket
//! reports as a refused connection. A QUIC endpoint's own socket is not connected, and the quinn
//! in use does not read the socket's error queue, so a connection never learns it by itself: it
//! waits out its timeouts.
//!
//! Only a refusal counts. Silence (a paused process, a host that is down, a firewall that drops)
//! is not one, so a probe never takes a slow server for a dead one. The datagram is one byte,
//! which a live QUIC endpoint drops as malformed.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// How long a probe waits for the refusal (on a live network it comes back within a round trip).
const WAIT: Duration = Duration::from_millis(250);

/// Whether `address` refuses a datagram: see the module's documentation.
pub async fn refused(address: SocketAddr) -> bool {
    let refusal = |error: &std::io::Error| error.kind() == std::io::ErrorKind::ConnectionRefused;
    let local: SocketAddr = if address.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let Ok(socket) = tokio::net::UdpSocket::bind(local).await else {
        return false;
    };
    if socket.connect(address).await.is_err() {
        return false;
    }
    if let Err(error) = socket.send(&[0]).await {
        return refusal(&error);
    }
    let mut answer = [0u8; 64];
    match tokio::time::timeout(WAIT, socket.recv(&mut answer)).await {
        Ok(Err(error)) => refusal(&error),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_refuses_and_a_bound_one_does_not() {
        let bound = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let address = bound.local_addr().unwrap();
        assert!(
            !refused(address).await,
            "a bound socket that reads nothing is silent"
        );
        drop(bound);
        assert!(refused(address).await, "nothing listens there any more");
    }
}
