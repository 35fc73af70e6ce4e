//! A UDP socket for QUIC: bound, and given a receive buffer sized for a fleet.
//!
//! Every packet of every agent, CLI and peer reaches a coordinator through its one socket, and
//! the kernel holds what arrives while the endpoint's task is busy. With Linux's default buffer
//! (208 KiB, about a hundred full packets) a leader of 20,000 hollow hosts dropped 450,000
//! packets at the socket during a burst of creates, and lost heartbeats (datagrams, never sent
//! again) had 9,000 live hosts marked down (benchmarks.md, "C1M"). The buffer asked for here
//! holds a few seconds of a 20,000-host fleet's heartbeats; the kernel grants at most
//! `net.core.rmem_max`, so when it gives less a server says so, with the setting to raise. A
//! client asks for the same, quietly: an agent's pushes, a CLI's long list or a sync's files
//! come in bursts too, and the buffer is a ceiling, not memory taken.

use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// The receive buffer a socket asks for: what quic-go asks for too (7.5 MB), rounded up.
pub(crate) const RECEIVE_BUFFER_BYTES: usize = 8 << 20;

/// Whose socket: a server warns when its buffer is smaller than asked, a client says it at debug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Server,
    Client,
}

/// Binds `address` (an IPv6 one for both families, as quinn's own client endpoint does) and
/// asks for [`RECEIVE_BUFFER_BYTES`] of receive buffer; the socket works with whatever the
/// kernel grants.
pub(crate) fn bind(address: SocketAddr, side: Side) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if address.is_ipv6() {
        // Refused where IPv6 is IPv6-only by policy; the socket still serves IPv6.
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&address.into())?;
    // A refusal leaves the default, which works; the reading below tells what we have.
    let asked = socket.set_recv_buffer_size(RECEIVE_BUFFER_BYTES);
    let granted = socket.recv_buffer_size();
    if let Some(warning) = shortfall(asked.err().as_ref(), granted.as_ref().ok().copied()) {
        match side {
            Side::Server => tracing::warn!("{warning}"),
            Side::Client => tracing::debug!("{warning}"),
        }
    }
    Ok(socket.into())
}

/// What to tell an operator when the receive buffer is smaller than asked, or `None` when it
/// is not. `granted` is what the kernel reports, which on Linux is twice what it reserved for
/// data (the rest is its bookkeeping), so it is compared with what was asked as it is.
fn shortfall(refused: Option<&std::io::Error>, granted: Option<usize>) -> Option<String> {
    let wanted = RECEIVE_BUFFER_BYTES;
    let got = match (refused, granted) {
        (None, Some(granted)) if granted >= wanted => return None,
        (_, Some(granted)) => format!("{} KiB", granted / 1024),
        (_, None) => "an unknown size".to_string(),
    };
    let why = refused.map_or(String::new(), |e| format!(" ({e})"));
    Some(format!(
        "the kernel gave this UDP socket a receive buffer of {got}, less than the {} KiB asked{why}: \
         what arrives beyond it while this process is busy is dropped (at a coordinator, lost \
         heartbeats mark live hosts down). Raise net.core.rmem_max to at least {wanted}: \
         `sysctl -w net.core.rmem_max={wanted}` now, and the package's \
         /usr/lib/sysctl.d/60-nexus-coordinator.conf at boot; then restart this process",
        wanted / 1024,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_as_large_as_asked_is_not_told() {
        assert_eq!(shortfall(None, Some(RECEIVE_BUFFER_BYTES)), None);
        assert_eq!(shortfall(None, Some(2 * RECEIVE_BUFFER_BYTES)), None);
    }

    #[test]
    fn a_smaller_buffer_names_what_it_got_and_the_setting_to_raise() {
        // Debian's default net.core.rmem_max (212,992), doubled as Linux reports it.
        let told = shortfall(None, Some(425_984)).unwrap();
        assert!(told.contains("receive buffer of 416 KiB"), "{told}");
        assert!(told.contains("less than the 8192 KiB asked:"), "{told}");
        assert!(
            told.contains("sysctl -w net.core.rmem_max=8388608"),
            "{told}"
        );
    }

    #[test]
    fn a_refusal_is_told_with_its_reason_even_with_a_large_default() {
        let refused = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let told = shortfall(Some(&refused), Some(RECEIVE_BUFFER_BYTES)).unwrap();
        assert!(told.contains("asked (permission denied)"), "{told}");
        let told = shortfall(Some(&refused), None).unwrap();
        assert!(told.contains("of an unknown size"), "{told}");
    }

    #[test]
    fn a_bound_socket_has_what_the_kernel_grants_and_works() {
        let socket = bind(([127, 0, 0, 1], 0).into(), Side::Server).unwrap();
        let granted = socket2::SockRef::from(&socket).recv_buffer_size().unwrap();
        // Linux grants up to net.core.rmem_max, and reports twice what it granted.
        let max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(granted, 2 * RECEIVE_BUFFER_BYTES.min(max));
        let to = socket.local_addr().unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(b"ping", to).unwrap();
        let mut buffer = [0u8; 8];
        let (n, _) = socket.recv_from(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"ping");
    }
}
