//! Host ports: before the agent publishes a workspace's ports it checks that each is free, so a
//! port held by a foreign process is reported as `PORT_CONFLICT` with its number (and the
//! coordinator hands out another) instead of failing inside Docker with a vaguer message.

use std::net::{Ipv4Addr, TcpListener};

use nexus_protocol::model::PortBinding;

use crate::runtime::{ErrorKind, RuntimeError};

/// Checks that every host port of `ports` can be bound on all interfaces. The check binds and
/// releases at once; the container publishes the port right after.
pub fn check_free(ports: &[PortBinding]) -> Result<(), RuntimeError> {
    for binding in ports {
        if let Err(error) = TcpListener::bind((Ipv4Addr::UNSPECIFIED, binding.host)) {
            let kind = if error.kind() == std::io::ErrorKind::AddrInUse {
                ErrorKind::PortInUse(binding.host)
            } else {
                ErrorKind::Failed
            };
            return Err(RuntimeError::new(
                kind,
                format!(
                    "host port {} (for container port {}) is not free: {error}",
                    binding.host, binding.container
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_held_by_a_listener_is_reported_with_its_number() {
        // Held on loopback only: a publish on all interfaces would still collide with it.
        let held = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = held.local_addr().unwrap().port();
        let error = check_free(&[PortBinding {
            container: 80,
            host: port,
        }])
        .unwrap_err();
        assert_eq!(error.kind, ErrorKind::PortInUse(port));
        assert!(error.message.contains(&port.to_string()));
        drop(held);
        check_free(&[PortBinding {
            container: 80,
            host: port,
        }])
        .unwrap();
    }
}
