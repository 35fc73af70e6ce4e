//! The client side: a [`Connector`] (one UDP socket, shared by any number of connections) makes
//! [`Connection`]s, each of which has passed the hello before the caller sees it.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use rustls::pki_types::CertificateDer;

use super::socket;
use super::tls::{Credentials, TlsError};
use super::{TransportConfig, close_code, connection_error, timeout, version_mismatch};
use crate::codec::{self, CodecError, HELLO_MAGIC, HELLO_REPLY_MAGIC};
use crate::error::{ErrorCode, WireError};
use crate::id::RequestId;
use crate::identity::{Identity, IdentityError, IdentityKind};
use crate::message::{Hello, HelloReply, Request, RequestFrame, Response, ResponseFrame};

/// Makes client connections. Cheap to share: connections made by one connector share its socket.
#[derive(Debug, Clone)]
pub struct Connector {
    endpoint: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    config: TransportConfig,
    role: IdentityKind,
}

fn client_config(
    credentials: &Credentials,
    config: &TransportConfig,
) -> Result<quinn::ClientConfig, TlsError> {
    let tls = credentials.client_config()?;
    let quic = QuicClientConfig::try_from(tls).map_err(|e| TlsError::Config(e.to_string()))?;
    let mut client_config = quinn::ClientConfig::new(Arc::new(quic));
    client_config.transport_config(Arc::new(config.quinn(false)?));
    Ok(client_config)
}

/// The role a client says it speaks as in the hello.
fn role(credentials: &Credentials) -> IdentityKind {
    credentials
        .identity()
        .map_or(IdentityKind::User, Identity::kind)
}

/// How [`Connector::connect`]'s error begins when no server answered at all within the handshake
/// timeout (not refused, not gone: silent), as [`unanswered`] tells.
const UNANSWERED: &str = "no Nexus server answered";

/// Whether `error` is [`Connector::connect`]'s for an address where nothing answered within the
/// handshake timeout: a server too busy to take the connection on yet, or one cut off. Not one
/// whose address refused a probe (gone), nor a refusal, nor a handshake or hello that failed.
pub fn unanswered(error: &WireError) -> bool {
    error.code == ErrorCode::NetworkError && error.message.starts_with(UNANSWERED)
}

impl Connector {
    /// A connector that presents `credentials` to servers. Without an own certificate it can still
    /// connect, and is refused by every Nexus server (as `AUTHENTICATION_FAILED`).
    pub fn new(credentials: &Credentials, config: TransportConfig) -> Result<Connector, TlsError> {
        // A dual-stack socket reaches both IPv4 and IPv6 servers; fall back where IPv6 is off.
        let bind = |ip: std::net::IpAddr| {
            let socket = socket::bind(SocketAddr::from((ip, 0)), socket::Side::Client)?;
            quinn::Endpoint::new(
                quinn::EndpointConfig::default(),
                None,
                socket,
                Arc::new(quinn::TokioRuntime),
            )
        };
        let endpoint = bind(Ipv6Addr::UNSPECIFIED.into())
            .or_else(|_| bind(Ipv4Addr::UNSPECIFIED.into()))
            .map_err(|e| TlsError::Config(format!("cannot open a UDP socket: {e}")))?;
        Ok(Connector {
            client_config: client_config(credentials, &config)?,
            role: role(credentials),
            endpoint,
            config,
        })
    }

    /// A connector that presents other `credentials` on this one's UDP socket, so one process can
    /// be many clients (the hollow fleet: thousands of agents, each with its own certificate and
    /// connection, over a few sockets).
    pub fn sharing(&self, credentials: &Credentials) -> Result<Connector, TlsError> {
        Ok(Connector {
            endpoint: self.endpoint.clone(),
            client_config: client_config(credentials, &self.config)?,
            config: self.config.clone(),
            role: role(credentials),
        })
    }

    /// Connects to `address`, verifies that the server's certificate names `server_name` (an IP
    /// address or DNS name in its SANs) and carries one of the `expect`ed identities, and passes the
    /// hello. The server must answer within the handshake timeout, and once it has, the handshake
    /// and the hello get another. A busy server leaves a new client unanswered until it has a
    /// place for it (`admission`), and a client that gave up on one whole timeout would throw
    /// away the work the server began late in it (after a failover at 20,000 hosts, a new leader
    /// saw its clients abandon 13,000–18,000 handshakes it had taken on, most of them before its
    /// first flight, which this does not save).
    pub async fn connect(
        &self,
        address: SocketAddr,
        server_name: &str,
        expect: &[IdentityKind],
    ) -> Result<Connection, WireError> {
        // A handshake with a process that is gone waits for nothing: once it is late, the
        // address is probed, and a refusal ends it (a leader just killed, named by a follower
        // that has not yet noticed).
        tokio::select! {
            result = self.connect_unbounded(address, server_name, expect) => result,
            () = gone(address, connect_probe_wait) => Err(WireError::new(
                ErrorCode::NetworkError,
                format!("nothing listens at {address} (it refused a probe): is a Nexus server running there?"),
            )),
        }
    }

    async fn connect_unbounded(
        &self,
        address: SocketAddr,
        server_name: &str,
        expect: &[IdentityKind],
    ) -> Result<Connection, WireError> {
        let limit = self.config.handshake_timeout;
        let mut connecting = self
            .endpoint
            .connect_with(self.client_config.clone(), address, server_name)
            .map_err(|e| {
                WireError::new(
                    ErrorCode::InvalidArgument,
                    format!("cannot connect to {address} as {server_name:?}: {e}"),
                )
            })?;
        // The server's first flight (up to its encrypted extensions) says it took the
        // connection on.
        match tokio::time::timeout(limit, connecting.handshake_data()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(connection_error(&e)),
            Err(_) => {
                return Err(WireError::new(
                    ErrorCode::NetworkError,
                    format!("{UNANSWERED} at {address} within {limit:?}: is one running there?"),
                ));
            }
        }
        tokio::time::timeout(limit, self.taken_on(connecting, address, expect))
            .await
            .map_err(|_| {
                WireError::new(
                    ErrorCode::NetworkError,
                    format!("the Nexus server at {address} answered but did not finish the handshake and hello within {limit:?} more: is it overloaded?"),
                )
            })?
    }

    /// The rest of a connection the server took on: the handshake, the checks of the server's
    /// identity, and the hello.
    async fn taken_on(
        &self,
        connecting: quinn::Connecting,
        address: SocketAddr,
        expect: &[IdentityKind],
    ) -> Result<Connection, WireError> {
        let conn = connecting.await.map_err(|e| connection_error(&e))?;
        let server = peer_identity(&conn).map_err(|error| {
            let message = error.to_string();
            conn.close(
                close_code(ErrorCode::AuthenticationFailed),
                message.as_bytes(),
            );
            WireError::new(ErrorCode::AuthenticationFailed, message)
        })?;
        if !expect.contains(&server.kind()) {
            let message = format!(
                "{address} is {server}, not the {} this client expected",
                names(expect)
            );
            conn.close(
                close_code(ErrorCode::AuthenticationFailed),
                message.as_bytes(),
            );
            return Err(WireError::new(ErrorCode::AuthenticationFailed, message));
        }
        let (client, software) = self.hello(&conn).await?;
        Ok(Connection {
            conn,
            server,
            client,
            software,
            config: self.config.clone(),
            datagram_turn: Arc::default(),
        })
    }

    async fn hello(&self, conn: &quinn::Connection) -> Result<(Identity, String), WireError> {
        let ours = self.config.protocol_version;
        let hello = Hello {
            software: crate::SOFTWARE_VERSION.into(),
            role: self.role,
        };
        let frame = codec::encode_versioned(HELLO_MAGIC, ours, &hello, self.config.codec)
            .map_err(|e| e.to_wire())?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| connection_error(&e))?;
        let exchange = async {
            codec::write_frame(&mut send, &frame).await?;
            let _ = send.finish();
            codec::read_frame(&mut recv, self.config.codec).await
        };
        let payload = exchange
            .await
            .map_err(|e| stream_error(conn, e))?
            .ok_or_else(|| stream_error(conn, CodecError::Truncated))?;
        let (theirs, body) = codec::split_versioned(HELLO_REPLY_MAGIC, &payload).map_err(|e| {
            WireError::new(
                ErrorCode::ProtocolError,
                format!("the server's hello reply: {e}"),
            )
        })?;
        if theirs != ours {
            let error = version_mismatch(ours, theirs);
            conn.close(close_code(error.code), error.message.as_bytes());
            return Err(error);
        }
        match codec::decode::<HelloReply>(body) {
            Ok(HelloReply::Accepted {
                software, client, ..
            }) => Ok((client, software)),
            Ok(HelloReply::Refused(error)) => {
                conn.close(close_code(error.code), error.message.as_bytes());
                Err(error)
            }
            Err(e) => Err(WireError::new(
                ErrorCode::ProtocolError,
                format!("the server's hello reply: {e}"),
            )),
        }
    }
}

fn names(kinds: &[IdentityKind]) -> String {
    kinds
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Why a peer's identity could not be read from its certificate.
#[derive(Debug, thiserror::Error)]
pub(super) enum PeerIdentityError {
    #[error("the peer presented no certificate")]
    NoCertificate,
    #[error("the peer's certificate: {0}")]
    Certificate(#[from] IdentityError),
}

/// The identity in the peer's certificate.
pub(super) fn peer_identity(conn: &quinn::Connection) -> Result<Identity, PeerIdentityError> {
    let chain = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or(PeerIdentityError::NoCertificate)?;
    let leaf = chain.first().ok_or(PeerIdentityError::NoCertificate)?;
    Ok(Identity::from_certificate(leaf)?)
}

/// A stream failed: if the connection is gone, say why it went (a refused certificate surfaces
/// here with TLS 1.3), else describe the stream's own failure.
pub(super) fn stream_error(conn: &quinn::Connection, error: CodecError) -> WireError {
    match conn.close_reason() {
        Some(reason) => connection_error(&reason),
        None => error.to_wire(),
    }
}

/// How long a request waits for its answer before [`Connection::request_unless_gone`] starts
/// probing the server, and a handshake before [`Connector::connect`] does (a healthy server
/// answers within milliseconds).
pub const ANSWER_EXPECTED: Duration = Duration::from_millis(250);

/// The most [`Connector::connect`] waits between two probes of a server that has not finished
/// the handshake.
const CONNECT_PROBE_MOST: Duration = Duration::from_secs(2);

/// How long [`Connector::connect`] waits before its `n`th probe (from 0): [`ANSWER_EXPECTED`],
/// then twice as long each time, at most [`CONNECT_PROBE_MOST`] (each probe then waits up to
/// 250 ms for its refusal). A server dead from the start (a leader just killed, named by a
/// follower that has not noticed) refuses the first probe, as before; one that dies during the
/// handshake is found within about two seconds. Probing every [`ANSWER_EXPECTED`] throughout,
/// as a request does, made a fleet returning to a busy leader probe it thousands of times a
/// second: each waiting agent opened a socket and sent a datagram twice a second, a sixth of
/// the hollow clients' CPU at 20,000 hosts, and as many datagrams for the leader to read and
/// drop.
fn connect_probe_wait(n: u32) -> Duration {
    ANSWER_EXPECTED
        .saturating_mul(1 << n.min(16))
        .min(CONNECT_PROBE_MOST)
}

/// A request's probes: every [`ANSWER_EXPECTED`] (a request in flight to a crashed server is the
/// failover's critical path, and few are in flight at once).
fn request_probe_wait(_: u32) -> Duration {
    ANSWER_EXPECTED
}

/// Completes once `address` refuses a probe ([`super::probe::refused`]): the `n`th probe (from
/// 0) after `wait(n)` more. Never completes for a live server, a paused one or a silent network.
async fn gone(address: SocketAddr, wait: fn(u32) -> Duration) {
    let mut n = 0u32;
    loop {
        tokio::time::sleep(wait(n)).await;
        if super::probe::refused(address).await {
            return;
        }
        n = n.saturating_add(1);
    }
}

/// What a request whose server was found [`gone`] ends with.
fn gone_error(address: SocketAddr) -> WireError {
    WireError::new(
        ErrorCode::NetworkError,
        format!(
            "{address}: the server's process is gone (its address refused a probe) before it \
             answered"
        ),
    )
}

/// A connection that has passed the hello.
#[derive(Debug, Clone)]
pub struct Connection {
    conn: quinn::Connection,
    server: Identity,
    client: Identity,
    software: String,
    config: TransportConfig,
    /// Datagram exchanges go one at a time ([`Connection::request_datagram`]).
    datagram_turn: Arc<tokio::sync::Mutex<()>>,
}

impl Connection {
    /// The server's identity, from its certificate.
    pub fn server(&self) -> &Identity {
        &self.server
    }

    /// This client's identity as the server read it.
    pub fn client(&self) -> &Identity {
        &self.client
    }

    /// The certificate the server presented (DER): after a rotation, new connections show the
    /// new one.
    pub fn server_certificate(&self) -> Option<Vec<u8>> {
        let chain = self
            .conn
            .peer_identity()
            .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())?;
        chain.first().map(|leaf| leaf.to_vec())
    }

    /// The server's software version.
    pub fn server_software(&self) -> &str {
        &self.software
    }

    /// The server's address (an IPv4 address as such, not mapped into IPv6 by a dual-stack socket).
    pub fn remote_address(&self) -> SocketAddr {
        let address = self.conn.remote_address();
        SocketAddr::new(address.ip().to_canonical(), address.port())
    }

    /// A number that tells this connection from any other alive at the same time (its clones
    /// share it).
    pub fn id(&self) -> usize {
        self.conn.stable_id()
    }

    /// Sends `request` under a fresh id and waits for its response.
    pub async fn request(&self, request: Request) -> Result<Response, WireError> {
        self.request_with(RequestId::random(), request, self.config.request_timeout)
            .await
    }

    /// Sends `request` under `request_id` (a retry reuses its id) and waits up to `limit`.
    pub async fn request_with(
        &self,
        request_id: RequestId,
        request: Request,
        limit: Duration,
    ) -> Result<Response, WireError> {
        let frame = codec::encode(
            &RequestFrame {
                request_id,
                request,
            },
            self.config.codec,
        )
        .map_err(|e| e.to_wire().with_request_id(request_id))?;
        let frame = self
            .exchange(&frame, limit)
            .await
            .map_err(|e| e.with_request_id(request_id))?;
        frame.result.map_err(|e| e.or_request_id(request_id))
    }

    /// Sends `request` under `request_id` in one QUIC datagram and waits up to `limit` for its
    /// answer in one, after any exchange of this connection's already under way. Far cheaper
    /// for a server than a stream, and unreliable: a datagram lost either way ends the wait with
    /// `TIMEOUT` (at once when QUIC declares a packet of the connection's lost, else at `limit`),
    /// so it suits requests asked again anyway (heartbeats). `UNSUPPORTED` when the
    /// server takes no datagrams or the request or its answer does not fit one: ask on a
    /// stream then ([`Connection::request_with`]).
    pub async fn request_datagram(
        &self,
        request_id: RequestId,
        request: Request,
        limit: Duration,
    ) -> Result<Response, WireError> {
        super::datagram::exchange(&self.conn, &self.datagram_turn, request_id, request, limit).await
    }

    /// Sends `request` under `request_id` in one QUIC datagram that the server answers only
    /// when it fails, and waits up to `limit` for the server's QUIC to acknowledge it (or for the
    /// failure). Cheaper for the server than [`Connection::request_datagram`] by the client's
    /// acknowledgement of the answer: one packet in and one out. `Ok` says the server's QUIC
    /// acknowledged a packet after the send, none was lost and no failure came back; not that
    /// the server's application took the request (QUIC acknowledges in a task of its own).
    /// `TIMEOUT` when no acknowledgement came or a packet was lost: ask again. `PROTOCOL_ERROR`
    /// from a server of an earlier version, which cannot read the marker: ask aloud then.
    pub async fn request_datagram_quietly(
        &self,
        request_id: RequestId,
        request: Request,
        limit: Duration,
    ) -> Result<(), WireError> {
        super::datagram::exchange_quietly(
            &self.conn,
            &self.datagram_turn,
            request_id,
            request,
            limit,
        )
        .await
    }

    /// The connection's round-trip time as QUIC estimates it.
    pub fn rtt(&self) -> Duration {
        self.conn.rtt()
    }

    /// How many packets this connection has sent that QUIC declared lost.
    pub fn lost_packets(&self) -> u64 {
        self.conn.stats().path.lost_packets
    }

    /// Sends raw bytes in a datagram. For tests of how servers treat bad input.
    #[doc(hidden)]
    pub fn send_datagram_raw(&self, bytes: &[u8]) -> Result<(), WireError> {
        self.conn
            .send_datagram(bytes.to_vec().into())
            .map_err(|e| WireError::new(ErrorCode::NetworkError, e.to_string()))
    }

    /// The next datagram that comes, raw, within `limit`. For tests.
    #[doc(hidden)]
    pub async fn next_datagram_raw(&self, limit: Duration) -> Result<Vec<u8>, WireError> {
        tokio::time::timeout(limit, self.conn.read_datagram())
            .await
            .map_err(|_| timeout("a datagram", limit))?
            .map(|datagram| datagram.to_vec())
            .map_err(|e| connection_error(&e))
    }

    /// [`Connection::request_with`], given up at once when the server's process is found gone:
    /// while no answer has come, the server's address is probed every [`ANSWER_EXPECTED`]
    /// ([`probe::refused`](super::probe::refused)), and a refusal ends the attempt with
    /// `NETWORK_ERROR` where waiting could only run out `limit`. For a client that asks again
    /// elsewhere, under the same request id (a crashed coordinator answers nothing, ever; a
    /// slow or paused one is waited for as before).
    pub async fn request_unless_gone(
        &self,
        request_id: RequestId,
        request: Request,
        limit: Duration,
    ) -> Result<Response, WireError> {
        let address = self.remote_address();
        tokio::select! {
            result = self.request_with(request_id, request, limit) => result,
            () = gone(address, request_probe_wait) => {
                Err(gone_error(address).with_request_id(request_id))
            }
        }
    }

    /// Writes one encoded frame on a new stream, finishes it, and reads one response frame,
    /// all within `limit`.
    async fn exchange(&self, frame: &[u8], limit: Duration) -> Result<ResponseFrame, WireError> {
        let exchange = async {
            let (mut send, mut recv) = self.open(frame).await?;
            let _ = send.finish();
            self.read_response(&mut recv)
                .await?
                .ok_or_else(|| self.gone(CodecError::Truncated))
        };
        tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| timeout("the request", limit))?
    }

    /// Sends `request` and returns the stream of its updates, for requests that subscribe.
    pub async fn subscribe(&self, request: Request) -> Result<Subscription, WireError> {
        self.subscribe_with(RequestId::random(), request).await
    }

    /// [`Connection::subscribe`] under `request_id` (a command's own id, so that the server's
    /// work on it is traced under that id).
    pub async fn subscribe_with(
        &self,
        request_id: RequestId,
        request: Request,
    ) -> Result<Subscription, WireError> {
        let frame = codec::encode(
            &RequestFrame {
                request_id,
                request,
            },
            self.config.codec,
        )
        .map_err(|e| e.to_wire().with_request_id(request_id))?;
        let limit = self.config.request_timeout;
        let (send, recv) = tokio::time::timeout(limit, self.open(&frame))
            .await
            .map_err(|_| timeout("opening the subscription", limit))?
            .map_err(|e| e.with_request_id(request_id))?;
        Ok(Subscription {
            connection: self.clone(),
            send,
            recv,
            request_id,
        })
    }

    /// Sends raw bytes on a new stream and reads one response frame. For tests of how servers
    /// treat bad input.
    #[doc(hidden)]
    pub async fn request_raw(&self, bytes: &[u8]) -> Result<ResponseFrame, WireError> {
        self.exchange(bytes, self.config.request_timeout).await
    }

    async fn open(
        &self,
        frame: &[u8],
    ) -> Result<(quinn::SendStream, quinn::RecvStream), WireError> {
        let (mut send, recv) = self
            .conn
            .open_bi()
            .await
            .map_err(|e| connection_error(&e))?;
        codec::write_frame(&mut send, frame)
            .await
            .map_err(|e| self.gone(e))?;
        Ok((send, recv))
    }

    async fn read_response(
        &self,
        recv: &mut quinn::RecvStream,
    ) -> Result<Option<ResponseFrame>, WireError> {
        let Some(payload) = codec::read_frame(recv, self.config.codec)
            .await
            .map_err(|e| self.gone(e))?
        else {
            return Ok(None);
        };
        codec::decode::<ResponseFrame>(&payload)
            .map(Some)
            .map_err(|e| {
                WireError::new(
                    ErrorCode::ProtocolError,
                    format!("the server's response: {e}"),
                )
            })
    }

    fn gone(&self, error: CodecError) -> WireError {
        stream_error(&self.conn, error)
    }

    /// Closes the connection; pending requests fail.
    pub fn close(&self) {
        self.conn
            .close(quinn::VarInt::from_u32(0), b"closed by the client");
    }

    /// Waits until the connection is gone and says why.
    pub async fn closed(&self) -> WireError {
        connection_error(&self.conn.closed().await)
    }
}

/// The updates of one subscription, until the server ends it or the connection goes.
#[derive(Debug)]
pub struct Subscription {
    connection: Connection,
    /// Kept so the server sees the subscription end when this value is dropped.
    #[allow(dead_code)]
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    request_id: RequestId,
}

impl Subscription {
    pub fn request_id(&self) -> RequestId {
        self.request_id
    }

    /// The next update; `None` once the server has ended the subscription cleanly.
    pub async fn next(&mut self) -> Option<Result<Response, WireError>> {
        match self.connection.read_response(&mut self.recv).await {
            Ok(Some(frame)) => Some(frame.result),
            Ok(None) => None,
            Err(error) => Some(Err(error.with_request_id(self.request_id))),
        }
    }

    /// [`Subscription::next`], given up with `NETWORK_ERROR` once the server's process is found
    /// gone, as [`Connection::request_unless_gone`] does: a crashed server sends nothing, ever.
    pub async fn next_unless_gone(&mut self) -> Option<Result<Response, WireError>> {
        let address = self.connection.remote_address();
        let request_id = self.request_id;
        tokio::select! {
            next = self.next() => next,
            () = gone(address, request_probe_wait) => {
                Some(Err(gone_error(address).with_request_id(request_id)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connect_probes_after_250_ms_then_twice_as_long_each_time_up_to_two_seconds() {
        assert_eq!(
            (0..6).map(connect_probe_wait).collect::<Vec<_>>(),
            [250, 500, 1_000, 2_000, 2_000, 2_000].map(Duration::from_millis)
        );
        assert_eq!(connect_probe_wait(u32::MAX), CONNECT_PROBE_MOST);
        assert_eq!(request_probe_wait(7), ANSWER_EXPECTED);
    }
}
