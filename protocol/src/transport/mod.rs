//! QUIC endpoints with mutual TLS, and the Nexus handshake on top.
//!
//! Every connection starts with an application-level hello on the first bidirectional stream: the
//! client sends its protocol version and the role it speaks in, the server answers with its own
//! version and identity or refuses with a stable error code. After that, each request uses its own
//! bidirectional stream (see [`crate::message`]). Every failure a caller sees is a [`WireError`]
//! with a stable code — a refused certificate, a version mismatch, an unreachable server or a
//! timeout — never a bare I/O error or a hang: every wait is bounded.
//!
//! This module is the only home of `quinn` and `rustls`: [`tls`] holds the credentials and the
//! verifiers of established members, `enrol` the one that pins a CA by its fingerprint for a
//! client that has no certificate yet, `gate` the deny list a server enforces.

mod admission;
mod bundle;
mod client;
mod datagram;
mod enrol;
mod gate;
pub mod probe;
mod reset;
mod server;
mod socket;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use bundle::{
    BundleError, MAX_BUNDLE_BYTES, MAX_BUNDLE_CERTS, bundle, bundle_fingerprint, check_bundle,
};
pub use client::{ANSWER_EXPECTED, Connection, Connector, Subscription, unanswered};
pub use datagram::IN_FLIGHT as DATAGRAMS_IN_FLIGHT;
pub use enrol::{ca_pem_holds, certificates_der, certificates_pem, enrol, first_certificate_der};
pub use gate::Gate;
pub use server::{Handler, Refusal, Reply, Server, Update};
pub use tls::{Credentials, Expiries, Rotation, TlsError};

use crate::codec::CodecConfig;
use crate::error::{ErrorCode, ErrorDetail, WireError};
use crate::identity::{Identity, IdentityKind};
use crate::message::PROTOCOL_VERSION;

/// Streams an agent may have open at once on a connection to a server: its desired-state, deny
/// list and CA watches, a heartbeat and its reports. quinn keeps a slot (two map entries) for
/// each stream a peer may open from the connection's start, so at 256 a coordinator held about
/// 24 KiB per agent for streams never opened; every other client is raised to
/// [`TransportConfig::max_concurrent_streams`] once its hello says who it is. An agent with more
/// requests than this in flight waits for a stream, it is not refused.
pub const AGENT_STREAMS: u32 = 32;

/// Timeouts, limits and the protocol version of an endpoint.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    pub codec: CodecConfig,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Sent by a client on a quiet connection, well below the idle timeout, so live peers are
    /// never dropped. Servers send none: their clients keep their connections alive, and a
    /// coordinator pinging each of 5,000 agents every 5 s cost it as much as their heartbeats.
    pub keep_alive: Duration,
    /// How long a client waits for a server's first answer, and once it came, for the rest of
    /// the handshake and the hello: a connection takes at most twice this (an enrolment, at most
    /// this in all). A server gives a handshake it took on, and then the hello, this long each.
    pub handshake_timeout: Duration,
    /// A request's default deadline, from opening its stream to reading the response.
    pub request_timeout: Duration,
    /// How long a server waits for a request's frame on a new stream.
    pub read_request_timeout: Duration,
    /// Streams a peer may have open at once on one connection. An agent's connection to a
    /// server keeps [`AGENT_STREAMS`] (see there).
    pub max_concurrent_streams: u32,
    /// Whether a connection may hand the kernel several datagrams in one call (GSO). It costs
    /// each connection a send buffer of several datagrams for good (about 14 KiB); a server
    /// of thousands of quiet connections, a coordinator, is better without.
    pub segmentation_offload: bool,
    /// The version spoken in the hello. Only tests set anything but [`PROTOCOL_VERSION`].
    pub protocol_version: u16,
    /// Whether this endpoint takes requests in datagrams ([`Connection::request_datagram`]).
    /// Only tests of a server without them set it off.
    pub datagrams: bool,
    /// Whether a client asks its server to acknowledge each of its packets at once (QUIC's ACK
    /// frequency extension) rather than after up to 25 ms. An agent's quiet heartbeats
    /// ([`Connection::request_datagram_quietly`]) then cost the leader one wakeup of the
    /// connection, not a second for a delayed acknowledgement. A client sending much (an
    /// upload) is better without: its server would acknowledge twice as many packets.
    pub immediate_acks: bool,
    /// The most new connections a server works on at once (from a client's first packet to its
    /// hello); the bound in force follows how long they take, and the first packet of one more
    /// is ignored, so the client's QUIC sends it again ([`admission`]).
    pub max_handshakes: usize,
    /// Whether a client's streams written at once share the link in turns (QUIC's fair
    /// queueing) or go out in the order they were written. A client that sends a batch of
    /// large requests, each served as it arrives whole (a sync session's changes to an agent),
    /// is better without: in turns, every request of the batch arrived at about the end of the
    /// batch, and its server had nothing to work on meanwhile. Servers always take turns.
    pub fair_streams: bool,
}

/// The most handshakes a server works on at once by default; the bound in force follows how
/// long they take, from 256 ([`admission`]).
pub const DEFAULT_MAX_HANDSHAKES: usize = 4_096;

impl Default for TransportConfig {
    fn default() -> TransportConfig {
        TransportConfig {
            codec: CodecConfig::default(),
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            read_request_timeout: Duration::from_secs(10),
            max_concurrent_streams: 256,
            segmentation_offload: true,
            protocol_version: PROTOCOL_VERSION,
            datagrams: true,
            immediate_acks: false,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            fair_streams: true,
        }
    }
}

impl TransportConfig {
    /// quinn's settings for a server's connections (`serves`), or a client's: only clients open
    /// streams, so a client's connection keeps no slot for streams its server could open.
    fn quinn(&self, serves: bool) -> Result<quinn::TransportConfig, TlsError> {
        let mut transport = quinn::TransportConfig::default();
        let idle = quinn::IdleTimeout::try_from(self.idle_timeout)
            .map_err(|e| TlsError::Config(format!("idle timeout: {e}")))?;
        transport.max_idle_timeout(Some(idle));
        let keep_alive = (!serves).then(|| self.keep_alive.min(self.idle_timeout / 2));
        transport.keep_alive_interval(keep_alive);
        // A server's connection starts with room for few streams, raised after the hello for
        // all but agents (quinn keeps a slot for each stream a peer may open, from the start).
        let streams = if serves {
            AGENT_STREAMS.min(self.max_concurrent_streams)
        } else {
            0
        };
        transport.max_concurrent_bidi_streams(streams.into());
        transport.enable_segmentation_offload(self.segmentation_offload);
        // Bounded: datagrams not read yet beyond this are dropped by QUIC, not held.
        transport.datagram_receive_buffer_size(self.datagrams.then_some(datagram::RECEIVE_BUFFER));
        transport.datagram_send_buffer_size(datagram::RECEIVE_BUFFER);
        transport.max_concurrent_uni_streams(0u32.into());
        transport.send_fairness(serves || self.fair_streams);
        if serves {
            // An answer larger than the congestion window (a page of 5,000 workspaces, about
            // 1 MB) waits for its client's acknowledgements; a client holds back an odd last
            // one for up to 25 ms by default. Servers ask their clients for 1 ms instead (the
            // ACK frequency extension; a client without it ignores the ask).
            let mut acks = quinn::AckFrequencyConfig::default();
            acks.max_ack_delay(Some(Duration::from_millis(1)));
            transport.ack_frequency_config(Some(acks));
        } else if self.immediate_acks {
            let mut acks = quinn::AckFrequencyConfig::default();
            acks.ack_eliciting_threshold(0u32.into());
            transport.ack_frequency_config(Some(acks));
        }
        Ok(transport)
    }
}

/// Who is on the other end of a connection, as a handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub identity: Identity,
    pub address: SocketAddr,
    pub software: String,
}

/// Which identities an endpoint serves. Anyone else is refused in the hello with
/// `PERMISSION_DENIED`.
///
/// It may also enforce a deny list ([`AcceptPolicy::with_gate`]) and take enrolments from clients
/// without a certificate ([`AcceptPolicy::with_enrolment`]).
#[derive(Debug, Clone)]
pub struct AcceptPolicy {
    kinds: Arc<[IdentityKind]>,
    gate: Option<Gate>,
    enrolment: bool,
}

impl AcceptPolicy {
    pub fn only(kinds: &[IdentityKind]) -> AcceptPolicy {
        AcceptPolicy {
            kinds: kinds.into(),
            gate: None,
            enrolment: false,
        }
    }

    /// The same policy, refusing the certificates `gate`'s deny list refuses, at the handshake and
    /// (when the list changes) on live connections.
    pub fn with_gate(mut self, gate: Gate) -> AcceptPolicy {
        self.gate = Some(gate);
        self
    }

    /// The same policy, also letting clients without a certificate connect to enrol
    /// ([`Handler::enrol`]) and nothing else.
    pub fn with_enrolment(mut self) -> AcceptPolicy {
        self.enrolment = true;
        self
    }

    pub fn gate(&self) -> Option<&Gate> {
        self.gate.as_ref()
    }

    pub fn enrols(&self) -> bool {
        self.enrolment
    }

    pub fn everyone() -> AcceptPolicy {
        AcceptPolicy::only(&[
            IdentityKind::Coordinator,
            IdentityKind::Agent,
            IdentityKind::User,
            IdentityKind::Admin,
        ])
    }

    pub fn accepts(&self, kind: IdentityKind) -> bool {
        self.kinds.contains(&kind)
    }
}

/// Application close codes: the error code's exit code, so either side can name the reason.
fn close_code(code: ErrorCode) -> quinn::VarInt {
    quinn::VarInt::from_u32(code.exit_code().into())
}

fn code_from_close(code: quinn::VarInt) -> Option<ErrorCode> {
    ErrorCode::ALL
        .into_iter()
        .find(|c| u64::from(c.exit_code()) == code.into_inner())
}

/// A TLS alert's meaning for the side that received it.
fn alert_error(alert: u8, sent_by_peer: bool) -> WireError {
    let name = match alert {
        40 => "handshake failure",
        42 => "bad certificate",
        43 => "unsupported certificate",
        44 => "certificate revoked",
        45 => "certificate expired",
        46 => "certificate unknown",
        48 => "unknown CA",
        49 => "access denied",
        50 => "decode error",
        51 => "signature does not verify (a certificate from another CA of the same name?)",
        116 => "certificate required",
        120 => "no common application protocol",
        _ => "TLS failure",
    };
    let whose = if sent_by_peer {
        "the server refused this client's"
    } else {
        "this side refused the peer's"
    };
    match alert {
        120 => WireError::new(
            ErrorCode::VersionMismatch,
            format!(
                "the peer does not speak {} ({name})",
                String::from_utf8_lossy(crate::message::ALPN)
            ),
        ),
        42..=51 | 116 => WireError::new(
            ErrorCode::AuthenticationFailed,
            format!("{whose} certificate: {name} (TLS alert {alert})"),
        ),
        _ => WireError::new(
            ErrorCode::AuthenticationFailed,
            format!("TLS handshake failed: {name} (TLS alert {alert})"),
        ),
    }
}

/// Every way a QUIC connection can fail, as a stable error.
pub(crate) fn connection_error(error: &quinn::ConnectionError) -> WireError {
    use quinn::ConnectionError as E;
    let crypto_alert = |code: quinn::TransportErrorCode| {
        let code = u64::from(code);
        if (0x100..=0x1ff).contains(&code) {
            u8::try_from(code & 0xff).ok()
        } else {
            None
        }
    };
    match error {
        E::ConnectionClosed(close) => match crypto_alert(close.error_code) {
            Some(alert) => alert_error(alert, true),
            None => WireError::new(
                ErrorCode::NetworkError,
                format!("the peer closed the connection: {close}"),
            ),
        },
        E::TransportError(local) => match crypto_alert(local.code) {
            // The server's certificate does not hold the name it was dialled by.
            Some(_) if local.reason.contains("not valid for name") => WireError::new(
                ErrorCode::CertificateMismatch,
                format!(
                    "the peer's certificate does not name the address it was reached at: {} (give it that name with `nexus pki issue --ip/--dns`, or have it advertise a name it holds)",
                    local.reason
                ),
            ),
            // Our side refused: most often the server's certificate is not from our CA.
            Some(alert) => WireError::new(
                ErrorCode::AuthenticationFailed,
                format!(
                    "the peer's certificate was refused: {} ({})",
                    local.reason,
                    alert_error(alert, false).message
                ),
            ),
            None => WireError::new(
                ErrorCode::ProtocolError,
                format!("QUIC transport error: {local}"),
            ),
        },
        E::ApplicationClosed(close) => {
            let reason = String::from_utf8_lossy(&close.reason).into_owned();
            let code = code_from_close(close.error_code).unwrap_or(ErrorCode::NetworkError);
            WireError::new(code, format!("the peer closed the connection: {reason}"))
        }
        E::TimedOut => WireError::new(
            ErrorCode::Timeout,
            "the peer stopped answering (idle timeout)",
        ),
        E::Reset => WireError::new(ErrorCode::NetworkError, "the peer reset the connection"),
        E::LocallyClosed => WireError::new(ErrorCode::NetworkError, "the connection was closed"),
        E::VersionMismatch => WireError::new(
            ErrorCode::VersionMismatch,
            "the peer speaks no common QUIC version",
        ),
        E::CidsExhausted => WireError::new(ErrorCode::Internal, "QUIC connection ids exhausted"),
    }
}

/// Resolves `HOST:PORT` to an address and the name the server's certificate must carry (the IP
/// address or DNS name as written).
pub async fn resolve(target: &str) -> Result<(SocketAddr, String), WireError> {
    let invalid = |why: &str| {
        WireError::new(
            ErrorCode::InvalidArgument,
            format!("invalid address {target:?}: {why}"),
        )
    };
    if let Ok(address) = target.parse::<SocketAddr>() {
        return Ok((address, address.ip().to_string()));
    }
    let (host, _port) = target
        .rsplit_once(':')
        .ok_or_else(|| invalid("expected HOST:PORT"))?;
    let address = tokio::net::lookup_host(target)
        .await
        .map_err(|e| {
            WireError::new(
                ErrorCode::NetworkError,
                format!("cannot resolve {target:?}: {e}"),
            )
        })?
        .next()
        .ok_or_else(|| invalid("the name has no address"))?;
    Ok((
        address,
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    ))
}

/// Completes when the process is asked to stop (SIGINT or SIGTERM). The handlers are installed
/// when this is called, not when the future is first polled: a daemon calls it as it starts, so
/// that a stop asked for while it starts up (`nexus down` right after `up`) is taken when the
/// daemon first looks, and it stops cleanly, rather than ending it at once by the signal's
/// default action. Called within a Tokio runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                (Ok(mut one), Err(_)) | (Err(_), Ok(mut one)) => {
                    one.recv().await;
                }
                (Err(_), Err(_)) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Calls `reload` at each SIGHUP, for as long as the task runs (abort it to stop). Without
/// Unix signals, never.
pub async fn on_hangup(reload: impl Fn() + Send) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hangups) => {
                while hangups.recv().await.is_some() {
                    reload();
                }
            }
            Err(error) => {
                tracing::warn!("cannot listen for SIGHUP, reload by request only: {error}")
            }
        }
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await;
}

pub(crate) fn version_mismatch(ours: u16, theirs: u16) -> WireError {
    WireError::new(
        ErrorCode::VersionMismatch,
        format!("this side speaks Nexus protocol {ours}, the peer speaks {theirs}"),
    )
    .with_detail(ErrorDetail::VersionMismatch { ours, theirs })
}

pub(crate) fn timeout(what: &str, after: Duration) -> WireError {
    WireError::new(
        ErrorCode::Timeout,
        format!("{what} took longer than {after:?}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_sends_streams_in_order_only_when_told_and_a_server_never() {
        // quinn says its setting only in its Debug output.
        let fairness = |config: &TransportConfig, serves: bool| {
            let quinn = config.quinn(serves).unwrap_or_else(|e| panic!("{e}"));
            let debug = format!("{quinn:?}");
            if debug.contains("send_fairness: true") {
                true
            } else {
                assert!(debug.contains("send_fairness: false"), "{debug}");
                false
            }
        };
        let in_order = TransportConfig {
            fair_streams: false,
            ..TransportConfig::default()
        };
        assert!(!fairness(&in_order, false));
        assert!(fairness(&in_order, true), "servers always take turns");
        assert!(fairness(&TransportConfig::default(), false));
    }

    #[test]
    fn close_codes_round_trip() {
        for code in ErrorCode::ALL {
            assert_eq!(code_from_close(close_code(code)), Some(code));
        }
        assert_eq!(code_from_close(quinn::VarInt::from_u32(0)), None);
    }

    #[test]
    fn alerts_name_the_refusal() {
        assert_eq!(alert_error(48, true).code, ErrorCode::AuthenticationFailed);
        assert!(alert_error(48, true).message.contains("unknown CA"));
        assert_eq!(alert_error(116, true).code, ErrorCode::AuthenticationFailed);
        assert_eq!(alert_error(120, true).code, ErrorCode::VersionMismatch);
    }

    /// A SIGTERM that comes after the call and before the future is first polled (a daemon
    /// still starting up) is taken, not left to its default action, which would end this
    /// process (nextest runs each test in a process of its own) and fail the test.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_stop_asked_for_before_the_first_look_is_taken() {
        let stop = shutdown_signal();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        tokio::time::timeout(std::time::Duration::from_secs(5), stop)
            .await
            .expect("the stop was taken");
    }
}
