//! The server side: accepts connections, runs the hello (refusing versions, roles and identities
//! it does not serve, with the reason sent to the client), then serves each stream with a
//! [`Handler`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use tokio::sync::mpsc;

use super::admission::{Admission, Slot};
use super::client::{peer_identity, stream_error};
use super::datagram;
use super::tls::{Credentials, TlsError};
use super::{
    AcceptPolicy, Peer, TransportConfig, close_code, connection_error, timeout, version_mismatch,
};
use crate::codec::{self, CodecError, HELLO_MAGIC, HELLO_REPLY_MAGIC};
use crate::error::{ErrorCode, WireError};
use crate::id::RequestId;
use crate::identity::{Identity, IdentityKind};
use crate::message::{Hello, HelloReply, Request, RequestFrame, Response, ResponseFrame};

/// How often a server says how many new connections it ignored ([`super::admission`]).
const IGNORED_TOLD_EVERY: Duration = Duration::from_secs(10);

/// How long a refused client gets to read the refusal before the server closes the connection.
const REFUSAL_GRACE: Duration = Duration::from_secs(1);

/// What a handler answers.
#[derive(Debug)]
pub enum Reply {
    /// One response, and the stream ends.
    Once(Result<Response, WireError>),
    /// Updates until the sender is dropped (the stream then ends cleanly) or the client goes away
    /// (the sender then fails, so the producer notices).
    Stream(mpsc::Receiver<Update>),
}

/// One update of a streamed reply, boxed: a channel holds room for 32 from its start, and a
/// coordinator keeps three watches for every agent (6 KiB each with the update inline).
pub type Update = Box<Result<Response, WireError>>;

/// A connection the server refused, for logs and tests.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub address: SocketAddr,
    /// The client's identity, when it got as far as presenting a valid certificate.
    pub identity: Option<Identity>,
    pub error: WireError,
}

/// Serves requests. One value serves every connection, each request in its own task.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        peer: &Peer,
        request_id: RequestId,
        request: Request,
    ) -> impl Future<Output = Reply> + Send;

    /// Answers an enrolment: a client without a certificate asking for one with a join token
    /// (only on an endpoint whose policy takes enrolments). Refused by default.
    fn enrol(
        &self,
        address: SocketAddr,
        request: crate::join::EnrolRequest,
    ) -> impl Future<Output = Result<crate::join::Issued, WireError>> + Send {
        let _ = (address, request);
        async {
            Err(WireError::new(
                ErrorCode::Unsupported,
                "this endpoint does not enrol hosts or users",
            ))
        }
    }

    /// Told of every refused connection. Logs by default.
    fn refused(&self, refusal: &Refusal) {
        tracing::warn!(
            address = %refusal.address,
            identity = ?refusal.identity.as_ref().map(ToString::to_string),
            code = %refusal.error.code,
            "refused a connection: {}",
            refusal.error.message
        );
    }

    /// Told when a peer's connection ends after a successful hello.
    fn disconnected(&self, peer: &Peer, reason: &WireError) {
        tracing::debug!(peer = %peer.identity, "disconnected: {}", reason.message);
    }
}

/// A bound server endpoint.
#[derive(Debug)]
pub struct Server {
    endpoint: quinn::Endpoint,
    config: TransportConfig,
    policy: AcceptPolicy,
    identity: Identity,
}

impl Server {
    /// Binds `address` (port 0 picks a free one) with this server's credentials.
    pub fn bind(
        address: SocketAddr,
        credentials: &Credentials,
        policy: AcceptPolicy,
        config: TransportConfig,
    ) -> Result<Server, TlsError> {
        let identity = credentials
            .identity()
            .cloned()
            .ok_or_else(|| TlsError::Config("a server needs its own certificate".into()))?;
        let tls = credentials.server_config(policy.gate().cloned(), policy.enrols())?;
        let quic = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Config(e.to_string()))?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        server_config.transport_config(Arc::new(config.quinn(true)?));
        // Keyed from our private key, so that after a restart our stale connections at the
        // clients are reset at once (see `reset`).
        let endpoint_config = credentials
            .endpoint_secret()
            .map(|secret| secret.endpoint_config())
            .unwrap_or_default();
        let listen =
            |e: std::io::Error| TlsError::Config(format!("cannot listen on {address}: {e}"));
        let socket = super::socket::bind(address, super::socket::Side::Server).map_err(listen)?;
        let endpoint = quinn::Endpoint::new(
            endpoint_config,
            Some(server_config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(listen)?;
        Ok(Server {
            endpoint,
            config,
            policy,
            identity,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Serves until `shutdown` completes, then closes every connection.
    pub async fn serve<H: Handler>(
        self,
        handler: Arc<H>,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        let admission = Admission::new(self.config.max_handshakes);
        let shared = Arc::new(Shared {
            config: self.config,
            policy: self.policy,
            identity: self.identity,
        });
        tokio::pin!(shutdown);
        let mut told: Option<std::time::Instant> = None;
        loop {
            tokio::select! {
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    let slot = admission.enter();
                    // Said at the next new connection at least a period after the last saying,
                    // ignored or not, so the end of a storm is told with it.
                    if admission.has_ignored()
                        && told.is_none_or(|at| at.elapsed() >= IGNORED_TOLD_EVERY)
                    {
                        told = Some(std::time::Instant::now());
                        tracing::warn!(
                            ignored = admission.take_ignored(),
                            under_way = admission.under_way(),
                            "too many new connections at once: ignored the first packet of \
                             those beyond {} handshakes under way (their clients send it again)",
                            admission.bound()
                        );
                    }
                    let Some(slot) = slot else {
                        incoming.ignore();
                        continue;
                    };
                    tokio::spawn(serve_connection(incoming, slot, shared.clone(), handler.clone()));
                }
                () = &mut shutdown => break,
            }
        }
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"server shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

#[derive(Debug)]
struct Shared {
    config: TransportConfig,
    policy: AcceptPolicy,
    identity: Identity,
}

async fn serve_connection<H: Handler>(
    incoming: quinn::Incoming,
    slot: Slot,
    shared: Arc<Shared>,
    handler: Arc<H>,
) {
    let address = incoming.remote_address();
    let limit = shared.config.handshake_timeout;
    // The phases before the hello are boxed, so that the task that lives on with the connection
    // keeps no room for them (it is one task per agent on a coordinator).
    let conn = match tokio::time::timeout(limit, Box::pin(incoming.into_future())).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            handler.refused(&Refusal {
                address,
                identity: None,
                error: connection_error(&e),
            });
            return;
        }
        Err(_) => {
            handler.refused(&Refusal {
                address,
                identity: None,
                error: timeout("the TLS handshake", limit),
            });
            return;
        }
    };
    if conn.peer_identity().is_none() && shared.policy.enrols() {
        drop(slot);
        // No certificate at all: this client may only enrol.
        let outcome = Box::pin(super::enrol::serve(&conn, &shared.config, |request| {
            handler.enrol(address, request)
        }))
        .await;
        if let Err(error) = outcome {
            handler.refused(&Refusal {
                address,
                identity: None,
                error,
            });
        }
        return;
    }
    let peer = match tokio::time::timeout(limit, Box::pin(hello(&conn, &shared))).await {
        Ok(Ok(peer)) => peer,
        Ok(Err((identity, error))) => {
            handler.refused(&Refusal {
                address,
                identity,
                error,
            });
            return;
        }
        Err(_) => {
            let error = timeout("the hello", limit);
            conn.close(close_code(error.code), error.message.as_bytes());
            handler.refused(&Refusal {
                address,
                identity: None,
                error,
            });
            return;
        }
    };
    // Connected: the next new connection may have this one's place.
    drop(slot);
    // Let through unless denied (checked again under the gate's lock); a later denial closes it.
    let _ticket = match &shared.policy.gate() {
        None => None,
        Some(gate) => {
            let not_before = conn
                .peer_identity()
                .and_then(|any| {
                    any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                        .ok()
                })
                .and_then(|chain| {
                    chain
                        .first()
                        .and_then(|leaf| crate::identity::not_before(leaf))
                })
                .unwrap_or(i64::MIN);
            match gate.admit(&peer.identity, not_before, &conn) {
                Some(ticket) => Some(ticket),
                None => {
                    let error = WireError::new(
                        ErrorCode::AuthenticationFailed,
                        format!("{}'s certificate was revoked", peer.identity),
                    );
                    conn.close(close_code(error.code), error.message.as_bytes());
                    handler.refused(&Refusal {
                        address,
                        identity: Some(peer.identity.clone()),
                        error,
                    });
                    return;
                }
            }
        }
    };
    if peer.identity.kind() != IdentityKind::Agent {
        conn.set_max_concurrent_bi_streams(shared.config.max_concurrent_streams.into());
    }
    let peer = Arc::new(peer);
    let datagrams = Datagrams::new(conn.clone(), peer.clone(), handler.clone());
    let reason = loop {
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    tokio::spawn(serve_stream(
                        send,
                        recv,
                        peer.clone(),
                        shared.clone(),
                        handler.clone(),
                    ));
                }
                Err(e) => break connection_error(&e),
            },
            datagram = conn.read_datagram() => match datagram {
                Ok(datagram) => datagrams.serve(&datagram),
                Err(e) => break connection_error(&e),
            },
        }
    };
    handler.disconnected(&peer, &reason);
}

type HelloFailure = (Option<Identity>, WireError);

/// Reads the client's hello and accepts or refuses it. A refusal is sent to the client, which
/// gets a moment to read it before the connection closes with the code's close code.
async fn hello(conn: &quinn::Connection, shared: &Shared) -> Result<Peer, HelloFailure> {
    let identity = peer_identity(conn).map_err(|error| {
        let error = WireError::new(ErrorCode::AuthenticationFailed, error.to_string());
        conn.close(close_code(error.code), error.message.as_bytes());
        (None, error)
    })?;
    let (mut send, mut recv) = conn
        .accept_bi()
        .await
        .map_err(|e| (Some(identity.clone()), connection_error(&e)))?;
    let verdict = read_hello(conn, &mut recv, shared, &identity).await;
    let reply = match &verdict {
        Ok(_) => HelloReply::Accepted {
            software: crate::SOFTWARE_VERSION.into(),
            server: shared.identity.clone(),
            client: identity.clone(),
        },
        Err(error) => HelloReply::Refused(error.clone()),
    };
    let ours = shared.config.protocol_version;
    let sent = match codec::encode_versioned(HELLO_REPLY_MAGIC, ours, &reply, shared.config.codec) {
        Ok(frame) => codec::write_frame(&mut send, &frame).await.is_ok() && send.finish().is_ok(),
        Err(_) => false,
    };
    match verdict {
        Ok(hello) if sent => {
            let address = conn.remote_address();
            let address = SocketAddr::new(address.ip().to_canonical(), address.port());
            Ok(Peer {
                identity,
                address,
                software: hello.software,
            })
        }
        Ok(_) => Err((Some(identity), stream_error(conn, CodecError::Truncated))),
        Err(error) => {
            let _ = tokio::time::timeout(REFUSAL_GRACE, conn.closed()).await;
            conn.close(close_code(error.code), error.message.as_bytes());
            Err((Some(identity), error))
        }
    }
}

async fn read_hello(
    conn: &quinn::Connection,
    recv: &mut quinn::RecvStream,
    shared: &Shared,
    identity: &Identity,
) -> Result<Hello, WireError> {
    let payload = codec::read_frame(recv, shared.config.codec)
        .await
        .map_err(|e| stream_error(conn, e))?
        .ok_or_else(|| WireError::new(ErrorCode::ProtocolError, "the client sent no hello"))?;
    let protocol_error = |e: CodecError| {
        WireError::new(ErrorCode::ProtocolError, format!("the client's hello: {e}"))
    };
    let (theirs, body) = codec::split_versioned(HELLO_MAGIC, &payload).map_err(protocol_error)?;
    let ours = shared.config.protocol_version;
    if theirs != ours {
        return Err(version_mismatch(ours, theirs));
    }
    let hello: Hello = codec::decode(body).map_err(protocol_error)?;
    if hello.role != identity.kind() {
        return Err(WireError::new(
            ErrorCode::AuthenticationFailed,
            format!(
                "the hello claims the role {}, but the certificate says {identity}",
                hello.role
            ),
        ));
    }
    if !shared.policy.accepts(identity.kind()) {
        return Err(WireError::new(
            ErrorCode::PermissionDenied,
            format!(
                "this endpoint does not serve the {} role ({identity})",
                identity.kind()
            ),
        ));
    }
    Ok(hello)
}

/// The id used in a response to a request whose own id could not be read.
const UNKNOWN_REQUEST: RequestId = RequestId::from_u128(0);

async fn serve_stream<H: Handler>(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    peer: Arc<Peer>,
    shared: Arc<Shared>,
    handler: Arc<H>,
) {
    let codec_config = shared.config.codec;
    let limit = shared.config.read_request_timeout;
    let read = tokio::time::timeout(limit, codec::read_frame(&mut recv, codec_config)).await;
    let frame = match read {
        Err(_) => Err(timeout("reading the request", limit)),
        Ok(Err(e)) => Err(e.to_wire()),
        Ok(Ok(None)) => Err(WireError::new(
            ErrorCode::ProtocolError,
            "the stream ended before a request",
        )),
        Ok(Ok(Some(payload))) => codec::decode::<RequestFrame>(&payload).map_err(|e| e.to_wire()),
    };
    let RequestFrame {
        request_id,
        request,
    } = match frame {
        Ok(frame) => frame,
        Err(error) => {
            tracing::debug!(peer = %peer.identity, code = %error.code, "refused a request: {}", error.message);
            // Tell the client, and stop its sending side: whatever else it sends is not read.
            let _ = recv.stop(close_code(error.code));
            let _ = write_response(&mut send, UNKNOWN_REQUEST, Err(error), &shared).await;
            let _ = send.finish();
            return;
        }
    };
    // Boxed, and so freed once answered: a stream that lives on (a watch) would otherwise keep
    // room for the handler's whole future, for every agent a coordinator serves.
    match Box::pin(handler.handle(&peer, request_id, request)).await {
        Reply::Once(result) => {
            let _ = write_response(&mut send, request_id, result, &shared).await;
        }
        Reply::Stream(mut updates) => loop {
            // A client that goes away (it drops the subscription, or the connection ends) stops
            // the stream: drop the receiver then, so the producer notices at once rather than
            // at its next update.
            let next = tokio::select! {
                update = updates.recv() => update,
                _ = send.stopped() => None,
            };
            let Some(result) = next else { break };
            if write_response(&mut send, request_id, *result, &shared)
                .await
                .is_err()
            {
                break;
            }
        },
    }
    let _ = send.finish();
}

/// Writes one response frame; a response too large for a frame becomes an error response.
async fn write_response(
    send: &mut quinn::SendStream,
    request_id: RequestId,
    result: Result<Response, WireError>,
    shared: &Shared,
) -> Result<(), CodecError> {
    let result = result.map_err(|e| e.or_request_id(request_id));
    let frame = match codec::encode(&ResponseFrame { request_id, result }, shared.config.codec) {
        Ok(frame) => frame,
        Err(e) => {
            let error = WireError::new(
                ErrorCode::Internal,
                format!("the response could not be sent: {e}"),
            )
            .with_request_id(request_id);
            codec::encode(
                &ResponseFrame {
                    request_id,
                    result: Err(error),
                },
                shared.config.codec,
            )?
        }
    };
    codec::write_frame(send, &frame).await
}

/// A server's datagrams on one connection: each read, handled and answered (a quiet one only when
/// it fails).
struct Datagrams<H> {
    conn: quinn::Connection,
    peer: Arc<Peer>,
    handler: Arc<H>,
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl<H: Handler> Datagrams<H> {
    fn new(conn: quinn::Connection, peer: Arc<Peer>, handler: Arc<H>) -> Datagrams<H> {
        Datagrams {
            conn,
            peer,
            handler,
            in_flight: Arc::new(tokio::sync::Semaphore::new(datagram::IN_FLIGHT)),
        }
    }

    /// Handles one datagram: answered before this returns when the handler answers without
    /// waiting (a heartbeat), else from a task of its own; a quiet one only when it fails.
    fn serve(&self, datagram: &[u8]) {
        let (frame, quiet) = datagram::read(datagram);
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => {
                let error = WireError::new(
                    ErrorCode::ProtocolError,
                    format!("the datagram is not a request: {error}"),
                );
                tracing::debug!(peer = %self.peer.identity, "refused a datagram: {}", error.message);
                datagram::answer(&self.conn, datagram::UNREADABLE, Err(error));
                return;
            }
        };
        let RequestFrame {
            request_id,
            request,
        } = frame;
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            let error = WireError::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "more than {} datagram requests at once: ask on a stream",
                    datagram::IN_FLIGHT
                ),
            );
            datagram::answer(&self.conn, request_id, Err(error));
            return;
        };
        let (conn, peer, handler) = (self.conn.clone(), self.peer.clone(), self.handler.clone());
        let mut work: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
            let result = match handler.handle(&peer, request_id, request).await {
                Reply::Once(result) => result,
                Reply::Stream(_) => Err(WireError::new(
                    ErrorCode::ProtocolError,
                    "a subscription is asked on a stream, not in a datagram",
                )),
            };
            if !(quiet && result.is_ok()) {
                datagram::answer(&conn, request_id, result);
            }
            drop(permit);
        });
        // Polled once here: a handler that answers at once costs no task. One that waits is
        // polled again by its task, and registers that task's waker then.
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        if work.as_mut().poll(&mut context) == std::task::Poll::Pending {
            tokio::spawn(work);
        }
    }
}
