//! Enrolment: a host or user with a join token and no certificate asks a coordinator for one.
//!
//! The client trusts no CA yet, so it pins the one the token names: the server sends its CA
//! certificate in its chain, and the handshake goes on only if that certificate's SHA-256 is the
//! token's fingerprint and the server's certificate verifies under it (for the name dialled, like
//! any other connection). A server of another CA (or a man in the middle with its own) learns
//! nothing: the client never sends the token's secret before the handshake completes.
//!
//! On the connection, instead of a hello, the client sends one [`EnrolRequest`] frame
//! (`NXEN` + version) and reads one reply frame (`NXEA` + version) holding
//! `Result<Issued, WireError>`.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use quinn::crypto::rustls::QuicClientConfig;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::tls::provider;
use super::{TransportConfig, close_code, connection_error, resolve, version_mismatch};
use crate::codec::{
    self, CodecError, ENROL_MAGIC, ENROL_REPLY_MAGIC, HELLO_MAGIC, HELLO_REPLY_MAGIC,
};
use crate::error::{ErrorCode, WireError};
use crate::identity::Identity;
use crate::join::{EnrolRequest, Issued};
use crate::message::{ALPN, HelloReply};

/// The largest enrolment frame a server reads: a request is a signing request (at most
/// `join::MAX_CSR_LEN`), a secret, a host id and a few names.
const ENROL_FRAME_LEN: usize = 64 * 1024;

/// Asks the coordinator at `target` (`HOST:PORT`) for a certificate, trusting it only if its CA's
/// SHA-256 is `ca_fingerprint`. Bounded by the handshake timeout and then the request timeout.
pub async fn enrol(
    target: &str,
    ca_fingerprint: &str,
    request: &EnrolRequest,
    config: &TransportConfig,
) -> Result<Issued, WireError> {
    let (address, server_name) = resolve(target).await?;
    let seen = Arc::new(Mutex::new(None));
    let verifier = Arc::new(PinnedCa {
        fingerprint: ca_fingerprint.to_string(),
        seen: seen.clone(),
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| internal(&e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| internal(&e))?;
    let mut client_config = quinn::ClientConfig::new(Arc::new(quic));
    client_config.transport_config(Arc::new(config.quinn(false).map_err(|e| internal(&e))?));
    let local = if address.is_ipv6() {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    };
    let endpoint = quinn::Endpoint::client(local).map_err(|e| {
        WireError::new(
            ErrorCode::NetworkError,
            format!("cannot open a UDP socket: {e}"),
        )
    })?;
    let connecting = endpoint
        .connect_with(client_config, address, &server_name)
        .map_err(|e| {
            WireError::new(
                ErrorCode::InvalidArgument,
                format!("cannot connect to {address} as {server_name:?}: {e}"),
            )
        })?;
    let limit = config.handshake_timeout;
    let conn = match tokio::time::timeout(limit, connecting).await {
        Err(_) => {
            return Err(WireError::new(
                ErrorCode::NetworkError,
                format!(
                    "no Nexus coordinator answered at {target} within {limit:?}: is one running there?"
                ),
            ));
        }
        Ok(Err(e)) => {
            let refused = seen.lock().unwrap_or_else(PoisonError::into_inner).take();
            return Err(match refused {
                Some(Refused::OtherCa(found)) => ca_mismatch(target, ca_fingerprint, &found),
                Some(Refused::NotCoordinator(who)) => WireError::new(
                    ErrorCode::AuthenticationFailed,
                    format!(
                        "the server at {target} is {who}, not a coordinator: only a coordinator takes an enrolment; nothing was sent"
                    ),
                ),
                None => connection_error(&e),
            });
        }
        Ok(Ok(conn)) => conn,
    };
    let limit = config.request_timeout;
    let answer = tokio::time::timeout(limit, exchange(&conn, request, config))
        .await
        .unwrap_or_else(|_| {
            Err(WireError::new(
                ErrorCode::Timeout,
                format!("{target} did not answer the enrolment within {limit:?}"),
            ))
        });
    conn.close(quinn::VarInt::from_u32(0), b"enrolled");
    let issued = answer?;
    // The CA the cluster hands back must be the one pinned, or the files would trust another.
    if !ca_pem_holds(&issued.ca_pem, ca_fingerprint) {
        return Err(ca_mismatch(
            target,
            ca_fingerprint,
            "one the answer's CA certificates do not hold",
        ));
    }
    endpoint.wait_idle().await;
    Ok(issued)
}

async fn exchange(
    conn: &quinn::Connection,
    request: &EnrolRequest,
    config: &TransportConfig,
) -> Result<Issued, WireError> {
    let ours = config.protocol_version;
    let frame = codec::encode_versioned(ENROL_MAGIC, ours, request, config.codec)
        .map_err(|e| e.to_wire())?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| connection_error(&e))?;
    let payload = async {
        codec::write_frame(&mut send, &frame).await?;
        let _ = send.finish();
        codec::read_frame(&mut recv, config.codec).await
    }
    .await
    .map_err(|e| super::client::stream_error(conn, e))?
    .ok_or_else(|| super::client::stream_error(conn, CodecError::Truncated))?;
    let (theirs, body) = codec::split_versioned(ENROL_REPLY_MAGIC, &payload).map_err(|e| {
        WireError::new(
            ErrorCode::ProtocolError,
            format!("the coordinator's enrolment answer: {e}"),
        )
    })?;
    if theirs != ours {
        return Err(version_mismatch(ours, theirs));
    }
    codec::decode::<Result<Issued, WireError>>(body).map_err(|e| {
        WireError::new(
            ErrorCode::ProtocolError,
            format!("the coordinator's enrolment answer: {e}"),
        )
    })?
}

/// Whether `ca_pem` holds a certificate whose SHA-256 is `fingerprint`.
pub fn ca_pem_holds(ca_pem: &str, fingerprint: &str) -> bool {
    CertificateDer::pem_slice_iter(ca_pem.as_bytes())
        .filter_map(Result::ok)
        .any(|cert| crate::hash::hex(&crate::hash::sha256(&cert)) == fingerprint)
}

/// The DER of the first certificate in `pem`, if it holds one: what a fingerprint or a
/// certificate's dates are read from.
pub fn first_certificate_der(pem: &str) -> Option<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .find_map(Result::ok)
        .map(|cert| cert.to_vec())
}

/// Every certificate of a PEM text (DER), in order; what does not parse is skipped.
pub fn certificates_der(pem: &str) -> Vec<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .map(|cert| cert.to_vec())
        .collect()
}

/// Every certificate of a PEM text, as DER and as its own PEM block, in order.
pub fn certificates_pem(pem: &str) -> Vec<(Vec<u8>, String)> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(begin) = rest.find(BEGIN) {
        let Some(length) = rest[begin..].find(END) else {
            break;
        };
        let block = format!("{}\n", &rest[begin..begin + length + END.len()]);
        if let Some(der) = first_certificate_der(&block) {
            out.push((der, block));
        }
        rest = &rest[begin + length + END.len()..];
    }
    out
}

fn ca_mismatch(target: &str, expected: &str, found: &str) -> WireError {
    WireError::new(
        ErrorCode::CaMismatch,
        format!(
            "the coordinator at {target} is not of the token's cluster: the token pins CA {}…, the coordinator presents {found}; nothing was sent",
            &expected[..16.min(expected.len())]
        ),
    )
}

fn internal(error: &dyn std::fmt::Display) -> WireError {
    WireError::new(
        ErrorCode::Internal,
        format!("cannot set up the enrolment connection: {error}"),
    )
}

/// Trusts a server whose chain holds the pinned CA certificate and verifies under it alone.
#[derive(Debug)]
struct PinnedCa {
    fingerprint: String,
    /// Why the server was refused, when it was for the pin or its identity.
    seen: Arc<Mutex<Option<Refused>>>,
}

/// Why [`PinnedCa`] refused a server.
#[derive(Debug)]
enum Refused {
    /// Its chain holds no certificate of the pinned fingerprint: what it holds instead.
    OtherCa(String),
    /// A member of the cluster, but not a coordinator (an agent's certificate names addresses
    /// too): who it is.
    NotCoordinator(String),
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pinned = intermediates
            .iter()
            .find(|cert| crate::hash::hex(&crate::hash::sha256(cert)) == self.fingerprint);
        let Some(ca) = pinned else {
            let presented: Vec<String> = intermediates
                .iter()
                .map(|cert| {
                    let hex = crate::hash::hex(&crate::hash::sha256(cert));
                    format!("{}…", &hex[..16])
                })
                .collect();
            let found = if presented.is_empty() {
                "no CA certificate".to_string()
            } else {
                format!("CA {}", presented.join(", "))
            };
            *self.seen.lock().unwrap_or_else(PoisonError::into_inner) =
                Some(Refused::OtherCa(found));
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let verified =
            inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)?;
        // Only a coordinator signs: any other member of the cluster (an agent answering at an
        // address it holds) would be handed the token's secret.
        match Identity::from_certificate(end_entity) {
            Ok(Identity::Coordinator(_)) => Ok(verified),
            other => {
                let who = other.map_or_else(|e| format!("a server ({e})"), |id| id.to_string());
                *self.seen.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(Refused::NotCoordinator(who));
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The server's side: reads the one enrolment frame of a connection without a certificate, has
/// `answer` decide, and sends the answer back. Answers what it sent, for the server's log.
pub(super) async fn serve<F, Fut>(
    conn: &quinn::Connection,
    config: &TransportConfig,
    answer: F,
) -> Result<(), WireError>
where
    F: FnOnce(EnrolRequest) -> Fut,
    Fut: std::future::Future<Output = Result<Issued, WireError>>,
{
    // An anonymous client gets one bounded wait for one small frame: it cannot hold a connection
    // (and a task) open, nor make the server buffer more than a request can need.
    let small = codec::CodecConfig::new(ENROL_FRAME_LEN.min(config.codec.max_frame_len()))
        .map_err(|e| e.to_wire())?;
    let read = async {
        let (send, mut recv) = conn.accept_bi().await.map_err(|e| connection_error(&e))?;
        let payload = codec::read_frame(&mut recv, small)
            .await
            .map_err(|e| e.to_wire())?
            .ok_or_else(|| WireError::new(ErrorCode::ProtocolError, "the client sent nothing"))?;
        Ok::<_, WireError>((send, payload))
    };
    let (mut send, payload) = match tokio::time::timeout(config.read_request_timeout, read).await {
        Ok(read) => read,
        Err(_) => Err(WireError::new(
            ErrorCode::Timeout,
            "the client sent no enrolment request in time",
        )),
    }
    .inspect_err(|error| conn.close(close_code(error.code), error.message.as_bytes()))?;
    let ours = config.protocol_version;
    if codec::split_versioned(HELLO_MAGIC, &payload).is_ok() {
        // A member's hello without a member's certificate: refused in the hello's own terms.
        let error = WireError::new(
            ErrorCode::AuthenticationFailed,
            "the server refused this client: it presented no certificate (without one, only an enrolment with a join token is served)",
        );
        let reply = HelloReply::Refused(error.clone());
        if let Ok(frame) = codec::encode_versioned(HELLO_REPLY_MAGIC, ours, &reply, config.codec) {
            let _ = codec::write_frame(&mut send, &frame).await;
            let _ = send.finish();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), conn.closed()).await;
        }
        conn.close(close_code(error.code), error.message.as_bytes());
        return Err(error);
    }
    let verdict = match codec::split_versioned(ENROL_MAGIC, &payload) {
        Err(_) => Err(WireError::new(
            ErrorCode::AuthenticationFailed,
            "a client without a certificate may only enrol, with a join token",
        )),
        Ok((theirs, _)) if theirs != ours => Err(version_mismatch(ours, theirs)),
        Ok((_, body)) => match codec::decode::<EnrolRequest>(body) {
            Ok(request) => answer(request).await,
            Err(e) => Err(WireError::new(
                ErrorCode::ProtocolError,
                format!("the enrolment request: {e}"),
            )),
        },
    };
    let outcome = verdict.as_ref().map(|_| ()).map_err(Clone::clone);
    let frame = codec::encode_versioned(ENROL_REPLY_MAGIC, ours, &verdict, config.codec)
        .map_err(|e| e.to_wire())?;
    let _ = codec::write_frame(&mut send, &frame).await;
    let _ = send.finish();
    // Give the client a moment to read the answer; it closes the connection when it has.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), conn.closed()).await;
    if let Err(error) = &outcome {
        conn.close(close_code(error.code), error.message.as_bytes());
    }
    outcome
}
