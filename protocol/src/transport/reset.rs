//! A server that restarts tells its peers' stale connections so at once. A QUIC connection to a
//! process that died lives on at the client until its idle timeout: the restarted process does
//! not know the connection, and by default (a random key per start) cannot prove it is the same
//! server, so it drops the packets without a word. Here the endpoint's stateless-reset key and
//! the key its connection ids are signed with are derived from the server's private key, so they
//! are the same on every start with that key: the new process recognises its predecessor's
//! connection ids and answers them with a stateless reset (RFC 9000, 10.3) that the client can
//! check, and the client reconnects at its next request instead of waiting out the timeout.
//!
//! Found by the failover bench: a coordinator restarted after a kill kept receiving its peers'
//! messages on their old connections, dropped, until the next failover needed those messages
//! (a pre-vote's answer) and waited out the idle timeout for them. quinn also sends at most one
//! reset per 20 ms by default, which here kept one of two peers' stale connections alive; the
//! interval is off (see [`EndpointSecret::endpoint_config`]).

use std::sync::Arc;

/// A secret derived from this party's private key (see the module's documentation). Its
/// `Debug` shows nothing of it.
#[derive(Clone)]
pub(crate) struct EndpointSecret([u8; 32]);

impl std::fmt::Debug for EndpointSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EndpointSecret(..)")
    }
}

impl EndpointSecret {
    /// Derived from a private key's DER bytes.
    pub(crate) fn of(private_key_der: &[u8]) -> EndpointSecret {
        EndpointSecret(derive(private_key_der, b"nexus: QUIC endpoint secret, v1"))
    }

    /// An endpoint configuration whose stateless resets and connection ids are keyed with this
    /// secret.
    pub(crate) fn endpoint_config(&self) -> quinn::EndpointConfig {
        let reset = ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            &derive(&self.0, b"stateless reset"),
        );
        let mut config = quinn::EndpointConfig::new(Arc::new(reset));
        let ids = derive(&self.0, b"connection ids");
        let mut key = [0u8; 8];
        key.copy_from_slice(&ids[..8]);
        let key = u64::from_le_bytes(key);
        config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(key))
        });
        // quinn sends at most one reset per 20 ms by default, for the whole endpoint: two peers'
        // stale connections whose keep-alives come together (they were opened together) then
        // get one reset between them, again at every keep-alive, and the other never learns.
        // Only packets bearing a connection id this key signed are answered, and a reset is
        // always smaller than the packet that drew it, so no interval is needed here.
        config.min_reset_interval(std::time::Duration::ZERO);
        config
    }
}

/// HMAC-SHA256 of `label` under `key`.
fn derive(key: &[u8], label: &[u8]) -> [u8; 32] {
    let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), label);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_follows_the_key_and_shows_nothing() {
        let a = EndpointSecret::of(b"one key");
        assert_eq!(a.0, EndpointSecret::of(b"one key").0);
        assert_ne!(a.0, EndpointSecret::of(b"another key").0);
        assert_eq!(format!("{a:?}"), "EndpointSecret(..)");
    }
}
