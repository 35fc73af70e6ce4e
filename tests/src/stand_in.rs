//! A stand-in coordinator on loopback: a test's own [`Handler`] behind real QUIC and mTLS, and
//! the CLI's settings to reach it as a user, for tests of how the CLI meets a coordinator that
//! answers in a given way (an earlier release, a stream that breaks, a refusal).

use std::sync::Arc;

use nexus_cli::settings::Settings;
use nexus_protocol::identity::Role;
use nexus_protocol::transport::{AcceptPolicy, Handler, Server, TransportConfig};

use crate::pki::{self, TestPki};

/// A stand-in being served; it stops when dropped.
#[derive(Debug)]
pub struct StandIn {
    /// Settings of user `alice` that reach it.
    pub settings: Settings,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Serves `handler` on a free loopback port, as coordinator 1 of `pki`.
pub fn serve<H: Handler>(pki: &TestPki, handler: Arc<H>) -> StandIn {
    let server = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        &pki.issue(&pki::coordinator(1)),
        AcceptPolicy::everyone(),
        TransportConfig::default(),
    )
    .unwrap();
    let address = server.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(handler, async {
        let _ = stopped.await;
    }));
    let user = pki::user("alice", Role::User);
    pki.issue(&user);
    let (cert, key) = pki.paths(&user);
    StandIn {
        settings: Settings {
            coordinators: vec![address.to_string()],
            ca: pki.ca_cert_path(),
            cert,
            key,
            request_id: None,
        },
        _stop: stop,
    }
}
