//! The transport over real QUIC with mutual TLS on loopback: a good pair exchanges requests and a
//! push stream; every kind of bad client is refused with the right code, without a hang; bad bytes
//! are refused without a panic and without harming the connection; a subscription whose server
//! vanishes ends at once.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nexus_protocol::codec::{self, CodecConfig};
use nexus_protocol::error::{ErrorCode, ErrorDetail, WireError};
use nexus_protocol::identity::{Identity, IdentityKind, Role};
use nexus_protocol::message::{
    AgentRequest, DesiredState, Pong, Request, Response, WorkspaceRequest,
};
use nexus_protocol::transport::{
    AcceptPolicy, Connection, Connector, Credentials, Handler, Peer, Refusal, Reply, Server,
    Subscription, TransportConfig,
};
use nexus_protocol::{RequestId, clock};
use nexus_tests::pki::{self, TestPki};
use tokio::sync::{mpsc, oneshot};

/// Answers pings, pushes three desired states to a watch, and never answers a workspace list.
#[derive(Default)]
struct TestHandler {
    refusals: Mutex<Vec<Refusal>>,
    identity: Mutex<Option<Identity>>,
    /// Long-lived watches whose producer saw the client go away.
    watches_ended: Arc<std::sync::atomic::AtomicUsize>,
    /// Workspace lists being handled (they never end).
    lists: std::sync::atomic::AtomicUsize,
}

impl Handler for TestHandler {
    async fn handle(&self, peer: &Peer, _id: RequestId, request: Request) -> Reply {
        match request {
            Request::Ping => Reply::Once(Ok(Response::Pong(Pong {
                software: "test".into(),
                server: self.identity.lock().unwrap().clone().unwrap(),
                client: peer.identity.clone(),
                time: clock::now(),
            }))),
            // A watch that pushes once, then waits for changes that never come.
            Request::Agent(AgentRequest::WatchDesired {
                known_version: Some(_),
            }) => {
                let (send, receive) = mpsc::channel(4);
                let ended = self.watches_ended.clone();
                tokio::spawn(async move {
                    let state = DesiredState {
                        version: 1,
                        assignments: vec![],
                    };
                    let _ = send.send(Box::new(Ok(Response::Desired(state)))).await;
                    send.closed().await;
                    ended.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                });
                Reply::Stream(receive)
            }
            Request::Agent(AgentRequest::WatchDesired { .. }) => {
                let (send, receive) = mpsc::channel(4);
                tokio::spawn(async move {
                    for version in 1..=3 {
                        let state = DesiredState {
                            version,
                            assignments: vec![],
                        };
                        if send
                            .send(Box::new(Ok(Response::Desired(state))))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                });
                Reply::Stream(receive)
            }
            Request::Workspace(WorkspaceRequest::List) => {
                self.lists.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Reply::Once(Ok(Response::Ack))
            }
            _ => Reply::Once(Err(WireError::new(
                ErrorCode::Unsupported,
                "not in this test",
            ))),
        }
    }

    fn refused(&self, refusal: &Refusal) {
        self.refusals.lock().unwrap().push(refusal.clone());
    }
}

struct TestServer {
    address: SocketAddr,
    handler: Arc<TestHandler>,
    _stop: oneshot::Sender<()>,
}

impl TestServer {
    async fn start(pki: &TestPki, policy: AcceptPolicy, config: TransportConfig) -> TestServer {
        let identity = pki::coordinator(1);
        let credentials = pki.issue(&identity);
        let server =
            Server::bind("127.0.0.1:0".parse().unwrap(), &credentials, policy, config).unwrap();
        let address = server.local_addr().unwrap();
        let handler = Arc::new(TestHandler::default());
        *handler.identity.lock().unwrap() = Some(identity);
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server.serve(handler.clone(), async {
            let _ = stopped.await;
        }));
        TestServer {
            address,
            handler,
            _stop: stop,
        }
    }

    /// Waits briefly for the server to record a refusal, and returns the first.
    async fn refusal(&self) -> Refusal {
        nexus_tests::eventually(
            "the server to record a refusal",
            Duration::from_secs(5),
            || async { self.handler.refusals.lock().unwrap().first().cloned() },
        )
        .await
    }
}

fn config() -> TransportConfig {
    TransportConfig {
        handshake_timeout: Duration::from_secs(5),
        ..TransportConfig::default()
    }
}

async fn connect_with(
    credentials: &Credentials,
    address: SocketAddr,
    config: TransportConfig,
) -> Result<Connection, WireError> {
    Connector::new(credentials, config)
        .unwrap()
        .connect(address, "127.0.0.1", &[IdentityKind::Coordinator])
        .await
}

/// A refusal must come from the refusal itself, well before any timeout could fire.
async fn refused(credentials: &Credentials, address: SocketAddr) -> WireError {
    let started = Instant::now();
    let error = connect_with(credentials, address, config())
        .await
        .expect_err("the connection was accepted");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "refusal took {:?}: {error}",
        started.elapsed()
    );
    assert_ne!(error.code, ErrorCode::Timeout, "{error}");
    error
}

#[tokio::test]
async fn a_good_pair_exchanges_requests_and_a_push_stream() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki, AcceptPolicy::everyone(), config()).await;
    let agent = pki::agent("dev-01");
    let connection = connect_with(&pki.issue(&agent), server.address, config())
        .await
        .unwrap();
    assert_eq!(connection.server(), &pki::coordinator(1));
    assert_eq!(connection.client(), &agent);

    match connection.request(Request::Ping).await.unwrap() {
        Response::Pong(pong) => {
            assert_eq!(
                pong.client, agent,
                "the handler sees the identity from the certificate"
            );
            assert_eq!(pong.server, pki::coordinator(1));
        }
        other => panic!("{other:?}"),
    }
    // Many requests at once, each on its own stream.
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let connection = connection.clone();
        requests.spawn(async move { connection.request(Request::Ping).await });
    }
    let answers = requests.join_all().await;
    assert_eq!(answers.len(), 50);
    assert!(answers.iter().all(|a| matches!(a, Ok(Response::Pong(_)))));

    let mut watch = connection
        .subscribe(Request::Agent(AgentRequest::WatchDesired {
            known_version: None,
        }))
        .await
        .unwrap();
    let mut versions = vec![];
    while let Some(update) = watch.next().await {
        match update.unwrap() {
            Response::Desired(state) => versions.push(state.version),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        versions,
        [1, 2, 3],
        "every push arrives, in order, then the stream ends"
    );

    // Errors carry their code and the request's id.
    let error = connection
        .request(Request::Agent(AgentRequest::ReportObserved(vec![])))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Unsupported);
    assert!(error.request_id.is_some());
    assert!(server.handler.refusals.lock().unwrap().is_empty());
}

/// An agent's connection keeps few stream slots (quinn holds one for every stream a peer may
/// open, so a coordinator of thousands of agents held 24 KiB each for streams never opened); every
/// other client gets the configured number after its hello. A request past the limit waits.
#[tokio::test]
async fn agents_get_few_streams_at_once_and_other_clients_many() {
    use nexus_protocol::transport::AGENT_STREAMS;
    use std::sync::atomic::Ordering;
    let pki = TestPki::new();
    let wanted = AGENT_STREAMS as usize + 8;
    for (identity, at_most) in [
        (pki::agent("dev-01"), AGENT_STREAMS as usize),
        (pki::user("ada", Role::User), wanted),
    ] {
        let server = TestServer::start(&pki, AcceptPolicy::everyone(), config()).await;
        let connection = connect_with(&pki.issue(&identity), server.address, config())
            .await
            .unwrap();
        let mut requests = tokio::task::JoinSet::new();
        for _ in 0..wanted {
            let connection = connection.clone();
            requests.spawn(async move {
                connection
                    .request(Request::Workspace(WorkspaceRequest::List))
                    .await
            });
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // The hello's stream may still hold one of an agent's slots.
        let handled = server.handler.lists.load(Ordering::SeqCst);
        assert!(
            (at_most - 1..=at_most).contains(&handled),
            "{identity}: {handled} lists at once, {at_most} wanted"
        );
        assert!(!requests.is_empty(), "no request may fail for waiting");
        if let Some(done) = requests.try_join_next() {
            panic!("a request ended: {done:?}");
        }
        requests.abort_all();
    }
}

/// A watch of the test server's, once its first push has come (it then waits for changes that
/// never come).
async fn watching(connection: &Connection) -> Subscription {
    let mut watch = connection
        .subscribe(Request::Agent(AgentRequest::WatchDesired {
            known_version: Some(0),
        }))
        .await
        .unwrap();
    assert!(matches!(watch.next().await, Some(Ok(Response::Desired(_)))));
    watch
}

/// A subscription whose server vanishes as a killed process does (its tasks and socket gone,
/// no close sent) ends at once with `NETWORK_ERROR` when read with `next_unless_gone`: its
/// address refuses the probe. Read with `next`, it would wait out the idle timeout.
#[test]
fn a_subscription_whose_servers_process_is_gone_ends_at_once() {
    let pki = TestPki::new();
    // The server in a runtime of its own, which is shut down under it.
    let server_side = tokio::runtime::Runtime::new().unwrap();
    let server = server_side.block_on(TestServer::start(&pki, AcceptPolicy::everyone(), config()));
    let client_side = tokio::runtime::Runtime::new().unwrap();
    let (_connection, mut watch) = client_side.block_on(async {
        let connection = connect_with(&pki.issue(&pki::agent("dev-01")), server.address, config())
            .await
            .unwrap();
        let watch = watching(&connection).await;
        (connection, watch)
    });
    server_side.shutdown_background();
    client_side.block_on(async {
        let started = Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(20), watch.next_unless_gone())
            .await
            .expect("the subscription to end before the idle timeout");
        let error = ended.expect("an error, not a clean end").unwrap_err();
        assert_eq!(error.code, ErrorCode::NetworkError, "{error}");
        assert!(error.message.contains("refused a probe"), "{error}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    });
    drop(server);
}

#[tokio::test]
async fn a_subscription_the_client_drops_ends_its_producer() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki, AcceptPolicy::everyone(), config()).await;
    let connection = connect_with(&pki.issue(&pki::agent("dev-01")), server.address, config())
        .await
        .unwrap();
    // The client drops the subscription; the connection stays up.
    drop(watching(&connection).await);
    let ended = server.handler.watches_ended.clone();
    nexus_tests::eventually(
        "the producer to see the end",
        Duration::from_secs(5),
        || {
            let ended = ended.clone();
            async move { (ended.load(std::sync::atomic::Ordering::SeqCst) == 1).then_some(()) }
        },
    )
    .await;
    // The connection itself goes away.
    let _held = watching(&connection).await;
    connection.close();
    nexus_tests::eventually(
        "the producer to see the close",
        Duration::from_secs(5),
        || {
            let ended = ended.clone();
            async move { (ended.load(std::sync::atomic::Ordering::SeqCst) == 2).then_some(()) }
        },
    )
    .await;
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki, AcceptPolicy::everyone(), config()).await;
    let anonymous = Credentials::from_pem(&pki.ca_pem(), None).unwrap();
    let error = refused(&anonymous, server.address).await;
    assert_eq!(error.code, ErrorCode::AuthenticationFailed, "{error}");
    assert!(error.message.contains("certificate required"), "{error}");
    assert_eq!(
        server.refusal().await.error.code,
        ErrorCode::AuthenticationFailed
    );
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let pki = TestPki::new();
    let other = TestPki::new();
    let server = TestServer::start(&pki, AcceptPolicy::everyone(), config()).await;
    // Trusts our CA (so it accepts the server), but presents a certificate from another.
    let foreign = other.issue(&pki::agent("intruder"));
    let (cert, key) = other.paths(&pki::agent("intruder"));
    drop(foreign);
    let credentials = Credentials::from_pem(
        &pki.ca_pem(),
        Some((&std::fs::read(cert).unwrap(), &std::fs::read(key).unwrap())),
    )
    .unwrap();
    let error = refused(&credentials, server.address).await;
    assert_eq!(error.code, ErrorCode::AuthenticationFailed, "{error}");
    assert!(
        error.message.contains("unknown CA") || error.message.contains("bad certificate"),
        "{error}"
    );
    assert!(
        server.refusal().await.identity.is_none(),
        "refused before any identity was accepted"
    );
}

#[tokio::test]
async fn a_server_from_another_ca_is_refused_by_the_client() {
    let pki = TestPki::new();
    let other = TestPki::new();
    let server = TestServer::start(&other, AcceptPolicy::everyone(), config()).await;
    let error = refused(&pki.issue(&pki::agent("dev-01")), server.address).await;
    assert_eq!(error.code, ErrorCode::AuthenticationFailed, "{error}");
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki, AcceptPolicy::everyone(), config()).await;
    let error = refused(&pki.expired(&pki::agent("old")), server.address).await;
    assert_eq!(error.code, ErrorCode::AuthenticationFailed, "{error}");
    assert!(
        error.message.contains("expired") || error.message.contains("bad certificate"),
        "{error}"
    );
}

#[tokio::test]
async fn a_certificate_without_an_identity_is_refused() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki, AcceptPolicy::everyone(), config()).await;
    let error = refused(&pki.without_identity(), server.address).await;
    assert_eq!(error.code, ErrorCode::AuthenticationFailed, "{error}");
}

#[tokio::test]
async fn a_role_the_endpoint_does_not_serve_is_refused() {
    let pki = TestPki::new();
    let server =
        TestServer::start(&pki, AcceptPolicy::only(&[IdentityKind::Agent]), config()).await;
    let alice = pki::user("alice", Role::User);
    let error = refused(&pki.issue(&alice), server.address).await;
    assert_eq!(error.code, ErrorCode::PermissionDenied, "{error}");
    let refusal = server.refusal().await;
    assert_eq!(refusal.error.code, ErrorCode::PermissionDenied);
    assert_eq!(refusal.identity, Some(alice));
    // The role it does serve still gets in.
    assert!(
        connect_with(&pki.issue(&pki::agent("h1")), server.address, config())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_client_expecting_another_kind_of_server_refuses_it() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki, AcceptPolicy::everyone(), config()).await;
    let connector = Connector::new(&pki.issue(&pki::user("bob", Role::User)), config()).unwrap();
    let error = connector
        .connect(server.address, "127.0.0.1", &[IdentityKind::Agent])
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::AuthenticationFailed);
    assert!(error.message.contains("not the agent"), "{error}");
}

#[tokio::test]
async fn a_newer_client_is_refused_clearly_on_both_sides() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki, AcceptPolicy::everyone(), config()).await;
    let newer = TransportConfig {
        protocol_version: 2,
        ..config()
    };
    let error = connect_with(&pki.issue(&pki::agent("h1")), server.address, newer)
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::VersionMismatch, "{error}");
    assert_eq!(
        error.detail,
        Some(ErrorDetail::VersionMismatch { ours: 2, theirs: 1 })
    );
    let refusal = server.refusal().await;
    assert_eq!(refusal.error.code, ErrorCode::VersionMismatch);
    assert_eq!(
        refusal.error.detail,
        Some(ErrorDetail::VersionMismatch { ours: 1, theirs: 2 })
    );
}

#[tokio::test]
async fn a_newer_server_is_refused_clearly_by_the_client() {
    let pki = TestPki::new();
    let server = TestServer::start(
        &pki,
        AcceptPolicy::everyone(),
        TransportConfig {
            protocol_version: 2,
            ..config()
        },
    )
    .await;
    let error = connect_with(&pki.issue(&pki::agent("h1")), server.address, config())
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::VersionMismatch, "{error}");
    assert_eq!(
        error.detail,
        Some(ErrorDetail::VersionMismatch { ours: 1, theirs: 2 })
    );
    assert_eq!(
        server.refusal().await.error.code,
        ErrorCode::VersionMismatch
    );
}

#[tokio::test]
async fn oversized_frames_and_garbage_are_refused_and_the_connection_survives() {
    let pki = TestPki::new();
    let small = TransportConfig {
        codec: CodecConfig::new(1024).unwrap(),
        ..config()
    };
    let server = TestServer::start(&pki, AcceptPolicy::everyone(), small).await;
    let connection = connect_with(&pki.issue(&pki::agent("h1")), server.address, config())
        .await
        .unwrap();

    // A header announcing 1 GiB: refused from the header alone, nothing allocated.
    let frame = connection
        .request_raw(&(1u32 << 30).to_be_bytes())
        .await
        .unwrap();
    let error = frame.result.unwrap_err();
    assert_eq!(error.code, ErrorCode::ProtocolError);
    assert!(
        error.message.contains("exceeds the limit of 1024"),
        "{error}"
    );

    // A real frame larger than this server's limit.
    let big = Request::Workspace(WorkspaceRequest::Inspect("a".repeat(63).parse().unwrap()));
    let mut bytes = codec::encode(
        &nexus_protocol::message::RequestFrame {
            request_id: RequestId::from_u128(1),
            request: big,
        },
        CodecConfig::default(),
    )
    .unwrap();
    bytes.extend(std::iter::repeat_n(0u8, 2000));
    let len = u32::try_from(bytes.len() - 4).unwrap();
    bytes[..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(
        connection
            .request_raw(&bytes)
            .await
            .unwrap()
            .result
            .unwrap_err()
            .code,
        ErrorCode::ProtocolError
    );

    // Garbage in a well-formed frame.
    let mut garbage = 16u32.to_be_bytes().to_vec();
    garbage.extend([0xff; 16]);
    let error = connection
        .request_raw(&garbage)
        .await
        .unwrap()
        .result
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::ProtocolError);
    assert!(error.message.contains("cannot decode"), "{error}");

    // A stream that ends mid-header.
    assert_eq!(
        connection
            .request_raw(&[0, 0])
            .await
            .unwrap()
            .result
            .unwrap_err()
            .code,
        ErrorCode::ProtocolError
    );

    // The connection and the server are fine.
    assert!(matches!(
        connection.request(Request::Ping).await,
        Ok(Response::Pong(_))
    ));
}

#[tokio::test]
async fn a_request_without_an_answer_times_out_with_its_id() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki, AcceptPolicy::everyone(), config()).await;
    let connection = connect_with(&pki.issue(&pki::agent("h1")), server.address, config())
        .await
        .unwrap();
    let id = RequestId::from_u128(42);
    let error = connection
        .request_with(
            id,
            Request::Workspace(WorkspaceRequest::List),
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Timeout);
    assert_eq!(error.request_id, Some(id));
}

/// A server works on at most `max_handshakes` new connections at once and ignores the first
/// packet of any beyond (it sends nothing back: the client's QUIC sends it again later), so a
/// client of a server that is full only times out; a handshake that is done gives its place back.
#[tokio::test]
async fn a_server_with_its_handshakes_full_ignores_a_new_client_and_frees_a_place_when_done() {
    let pki = TestPki::new();
    let quick = TransportConfig {
        handshake_timeout: Duration::from_millis(1_500),
        ..config()
    };
    let full = TestServer::start(
        &pki,
        AcceptPolicy::everyone(),
        TransportConfig {
            max_handshakes: 0,
            ..config()
        },
    )
    .await;
    let error = connect_with(&pki.issue(&pki::agent("h1")), full.address, quick.clone())
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::NetworkError, "{error}");
    assert!(
        error.message.contains("no Nexus server answered"),
        "{error}"
    );
    assert!(full.handler.refusals.lock().unwrap().is_empty());

    // One place: each connection's handshake gives it back once done.
    let one = TestServer::start(
        &pki,
        AcceptPolicy::everyone(),
        TransportConfig {
            max_handshakes: 1,
            ..config()
        },
    )
    .await;
    let mut held = Vec::new();
    for host in ["h1", "h2", "h3"] {
        let connection = connect_with(&pki.issue(&pki::agent(host)), one.address, quick.clone())
            .await
            .unwrap();
        assert!(matches!(
            connection.request(Request::Ping).await,
            Ok(Response::Pong(_))
        ));
        held.push(connection);
    }
}

/// A UDP relay between a client and `server` that passes the client's datagrams at once and
/// delivers each of the server's at the time `release` gives for when it was sent (since the
/// relay began), or never (`None`). Its tasks end when it is dropped.
struct Relay {
    address: SocketAddr,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Drop for Relay {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn relay(server: SocketAddr, release: fn(Duration) -> Option<Duration>) -> Relay {
    let outside = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let address = outside.local_addr().unwrap();
    let inside = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    inside.connect(server).await.unwrap();
    let started = tokio::time::Instant::now();
    let client = Arc::new(Mutex::new(None::<SocketAddr>));
    let forward = {
        let (outside, inside, client) = (outside.clone(), inside.clone(), client.clone());
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 65_536];
            loop {
                let (len, from) = outside.recv_from(&mut buffer).await.unwrap();
                // The first sender is the client; anything else (a liveness probe) goes on too.
                client.lock().unwrap().get_or_insert(from);
                let _ = inside.send(&buffer[..len]).await;
            }
        })
    };
    let back = tokio::spawn(async move {
        let mut buffer = vec![0u8; 65_536];
        loop {
            let len = inside.recv(&mut buffer).await.unwrap();
            let Some(at) = release(started.elapsed()) else {
                continue;
            };
            let datagram = buffer[..len].to_vec();
            let (outside, to) = (outside.clone(), client.lock().unwrap().unwrap());
            tokio::spawn(async move {
                tokio::time::sleep_until(started + at).await;
                let _ = outside.send_to(&datagram, to).await;
            });
        }
    });
    Relay {
        address,
        tasks: [forward, back],
    }
}

/// A busy server answers a new client late (it ignores the first packets until it has a place
/// for the handshake): once it has answered, the client gives the rest of the handshake and the
/// hello a timeout of its own, rather than abandoning work the server began late in the first.
/// The relay holds the server's first flight until 1.5 s and anything it sends after until
/// 2.6 s: past one 2 s timeout, within the second.
#[tokio::test]
async fn a_client_answered_late_gets_a_second_timeout_for_the_rest_of_the_handshake() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki, AcceptPolicy::everyone(), config()).await;
    let started = tokio::time::Instant::now();
    let relay = relay(server.address, |sent| {
        Some(if sent < Duration::from_millis(500) {
            Duration::from_millis(1_500)
        } else {
            sent.max(Duration::from_millis(2_600))
        })
    })
    .await;
    let patience = TransportConfig {
        handshake_timeout: Duration::from_secs(2),
        ..config()
    };
    let connection = connect_with(&pki.issue(&pki::agent("h1")), relay.address, patience)
        .await
        .expect("the client waits for the rest of a handshake the server answered");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(2_600), "{waited:?}");
    assert!(matches!(
        connection.request(Request::Ping).await,
        Ok(Response::Pong(_))
    ));
}

/// The second timeout ends: a server that answers and then goes silent fails the connection
/// one timeout after its answer, and says so; one that never answers, after one timeout, as
/// silent (`transport::unanswered`, which an agent's link acts on).
#[tokio::test]
async fn a_server_silent_before_or_after_its_answer_fails_the_connection_in_time() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki, AcceptPolicy::everyone(), config()).await;
    let patience = TransportConfig {
        handshake_timeout: Duration::from_secs(1),
        ..config()
    };
    let credentials = pki.issue(&pki::agent("h1"));

    let started = tokio::time::Instant::now();
    let answered_then_silent = relay(server.address, |sent| {
        (sent < Duration::from_millis(300)).then_some(Duration::from_millis(300))
    })
    .await;
    let error = connect_with(&credentials, answered_then_silent.address, patience.clone())
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert_eq!(error.code, ErrorCode::NetworkError, "{error}");
    assert!(
        error.message.contains("answered but did not finish"),
        "{error}"
    );
    assert!(!nexus_protocol::transport::unanswered(&error), "{error}");
    assert!(
        waited >= Duration::from_millis(1_300) && waited < Duration::from_secs(4),
        "{waited:?}"
    );

    let started = tokio::time::Instant::now();
    let silent = relay(server.address, |_| None).await;
    let error = connect_with(&credentials, silent.address, patience)
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(nexus_protocol::transport::unanswered(&error), "{error}");
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}

#[tokio::test]
async fn nobody_listening_is_a_network_error_not_a_hang() {
    let pki = TestPki::new();
    let port = nexus_tests::process::free_port();
    let quick = TransportConfig {
        handshake_timeout: Duration::from_millis(500),
        ..config()
    };
    let error = connect_with(
        &pki.issue(&pki::agent("h1")),
        ([127, 0, 0, 1], port).into(),
        quick,
    )
    .await
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::NetworkError, "{error}");
    // With all the time in the world, a handshake with nobody still ends: the address refuses
    // the probe that a late handshake sends.
    let patient = TransportConfig {
        handshake_timeout: Duration::from_secs(60),
        ..config()
    };
    let error = connect_with(
        &pki.issue(&pki::agent("h1")),
        ([127, 0, 0, 1], port).into(),
        patient,
    )
    .await
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::NetworkError, "{error}");
    assert!(error.message.contains("refused a probe"), "{error}");
}

/// A CA rotation's trust swap: the CA certificates a server and a client trust change while they
/// run. New handshakes are verified against the bundle in force; a connection made before a
/// swap keeps going.
#[tokio::test]
async fn a_new_trust_bundle_governs_new_handshakes_and_spares_open_connections() {
    let old = TestPki::new();
    let new = TestPki::new();
    let both: Vec<u8> = [old.ca_pem(), new.ca_pem()].concat();
    let identity = pki::coordinator(1);
    let credentials = old.issue(&identity);
    let server = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        &credentials,
        AcceptPolicy::everyone(),
        config(),
    )
    .unwrap();
    let address = server.local_addr().unwrap();
    let handler = Arc::new(TestHandler::default());
    *handler.identity.lock().unwrap() = Some(identity);
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve(handler.clone(), async {
        let _ = stopped.await;
    }));

    // A host re-issued by the new CA, trusting both: the server does not trust it yet.
    let host = pki::agent("dev-01");
    new.issue(&host);
    let (cert, key) = new.paths(&host);
    let (cert, key) = (std::fs::read(cert).unwrap(), std::fs::read(key).unwrap());
    let renewed = Credentials::from_pem(&both, Some((&cert, &key))).unwrap();
    let error = refused(&renewed, address).await;
    assert_eq!(error.code, ErrorCode::AuthenticationFailed, "{error}");

    // The server trusts both: the new certificate is let in, and so is one of the old CA.
    assert!(credentials.trust(&both).unwrap());
    assert!(!credentials.trust(&both).unwrap(), "the same bundle again");
    assert_eq!(
        credentials.trusted_fingerprint(),
        renewed.trusted_fingerprint()
    );
    let before = connect_with(&old.issue(&pki::agent("dev-02")), address, config())
        .await
        .unwrap();
    let after = connect_with(&renewed, address, config()).await.unwrap();
    assert!(matches!(
        after.request(Request::Ping).await,
        Ok(Response::Pong(_))
    ));

    // The old CA dropped: its certificates are refused at the handshake, the connection made
    // before the swap keeps going.
    assert!(credentials.trust(&new.ca_pem()).unwrap());
    let error = refused(&old.issue(&pki::agent("dev-03")), address).await;
    assert_eq!(error.code, ErrorCode::AuthenticationFailed, "{error}");
    assert!(matches!(
        before.request(Request::Ping).await,
        Ok(Response::Pong(_))
    ));

    // A client follows its own bundle: trusting only the new CA, it refuses the server's
    // certificate of the old one until the server presents a new one.
    let client = Credentials::from_pem(&new.ca_pem(), Some((&cert, &key))).unwrap();
    let error = refused(&client, address).await;
    assert_eq!(error.code, ErrorCode::AuthenticationFailed, "{error}");
    assert!(credentials.trust(b"not a certificate").is_err());
    assert_eq!(
        credentials.trusted_fingerprint(),
        client.trusted_fingerprint()
    );
}

/// Requests in datagrams: answered like those on streams; a subscription, a request too large,
/// one the server cannot read and one too many at once each refused with their code and the
/// request's id, the connection serving on.
#[tokio::test]
async fn requests_in_datagrams_are_answered_and_bad_ones_refused() {
    use nexus_protocol::message::{RequestFrame, ResponseFrame};
    use nexus_protocol::transport::DATAGRAMS_IN_FLIGHT;
    let pki = TestPki::new();
    let server = TestServer::start(&pki, AcceptPolicy::everyone(), config()).await;
    let connection = connect_with(&pki.issue(&pki::agent("dev-01")), server.address, config())
        .await
        .unwrap();
    let limit = Duration::from_secs(5);
    let ask = |request: Request, limit: Duration| {
        let connection = connection.clone();
        async move {
            let id = RequestId::random();
            (id, connection.request_datagram(id, request, limit).await)
        }
    };
    let (_, pong) = ask(Request::Ping, limit).await;
    assert!(matches!(pong, Ok(Response::Pong(_))), "{pong:?}");

    let watch = Request::Agent(AgentRequest::WatchDesired {
        known_version: None,
    });
    let (id, refused) = ask(watch, limit).await;
    let refused = refused.unwrap_err();
    assert_eq!(refused.code, ErrorCode::ProtocolError, "{refused}");
    assert_eq!(refused.request_id, Some(id));

    let large = Request::Agent(AgentRequest::Serving("h".repeat(4_000)));
    let (id, refused) = ask(large, limit).await;
    let refused = refused.unwrap_err();
    assert_eq!(refused.code, ErrorCode::Unsupported, "{refused}");
    assert_eq!(refused.request_id, Some(id));

    // An answer that never comes is a timeout under the request's id, and the next exchange
    // is not confused by anything late.
    let list = Request::Workspace(WorkspaceRequest::List);
    let (id, silent) = ask(list, Duration::from_millis(300)).await;
    let silent = silent.unwrap_err();
    assert_eq!(silent.code, ErrorCode::Timeout, "{silent}");
    assert_eq!(silent.request_id, Some(id));
    let (_, pong) = ask(Request::Ping, limit).await;
    assert!(matches!(pong, Ok(Response::Pong(_))), "{pong:?}");

    // Garbage is answered with PROTOCOL_ERROR.
    let answer = |bytes: Vec<u8>| codec::decode::<ResponseFrame>(&bytes).unwrap();
    connection.send_datagram_raw(b"\xff\x00garbage").unwrap();
    let refused = answer(connection.next_datagram_raw(limit).await.unwrap());
    assert_eq!(refused.result.unwrap_err().code, ErrorCode::ProtocolError);

    // The server works on a few at once per connection (one list is still under way).
    let frame = |request: Request| {
        codec::encode_payload(&RequestFrame {
            request_id: RequestId::random(),
            request,
        })
        .unwrap()
    };
    for _ in 1..DATAGRAMS_IN_FLIGHT {
        connection
            .send_datagram_raw(&frame(Request::Workspace(WorkspaceRequest::List)))
            .unwrap();
    }
    nexus_tests::eventually("the lists to be under way", limit, || async {
        (server
            .handler
            .lists
            .load(std::sync::atomic::Ordering::SeqCst)
            == DATAGRAMS_IN_FLIGHT)
            .then_some(())
    })
    .await;
    connection.send_datagram_raw(&frame(Request::Ping)).unwrap();
    let busy = answer(connection.next_datagram_raw(limit).await.unwrap());
    assert_eq!(busy.result.unwrap_err().code, ErrorCode::ResourceExhausted);
    // Streams are not held up by it.
    assert!(matches!(
        connection.request(Request::Ping).await,
        Ok(Response::Pong(_))
    ));

    quiet_requests_are_answered_only_when_they_fail(&pki, &server).await;

    // A server that takes no datagrams: the client is told to ask on a stream.
    let without = TransportConfig {
        datagrams: false,
        ..config()
    };
    let server = TestServer::start(&pki, AcceptPolicy::everyone(), without).await;
    let connection = connect_with(&pki.issue(&pki::agent("dev-02")), server.address, config())
        .await
        .unwrap();
    let refused = connection
        .request_datagram(RequestId::random(), Request::Ping, limit)
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::Unsupported, "{refused}");
}

/// Quiet requests in datagrams: one that succeeds is acknowledged by QUIC and not answered (no
/// datagram comes back), one that fails is answered with its error under its id, and a quiet
/// request to a server that never answers (a list) is still acknowledged.
async fn quiet_requests_are_answered_only_when_they_fail(pki: &TestPki, server: &TestServer) {
    let connection = connect_with(&pki.issue(&pki::agent("dev-03")), server.address, config())
        .await
        .unwrap();
    let limit = Duration::from_secs(5);
    connection
        .request_datagram_quietly(RequestId::random(), Request::Ping, limit)
        .await
        .unwrap();
    // Sent by hand (the marker, then the frame), a quiet ping that succeeds is not answered.
    let mut quiet = vec![0xFF];
    quiet.extend(
        codec::encode_payload(&nexus_protocol::message::RequestFrame {
            request_id: RequestId::random(),
            request: Request::Ping,
        })
        .unwrap(),
    );
    connection.send_datagram_raw(&quiet).unwrap();
    let nothing = connection
        .next_datagram_raw(Duration::from_millis(500))
        .await
        .unwrap_err();
    assert_eq!(nothing.code, ErrorCode::Timeout, "{nothing}");

    let id = RequestId::random();
    let heartbeat = Request::Agent(AgentRequest::Heartbeat {
        sequence: 1,
        stats: None,
    });
    let failed = connection
        .request_datagram_quietly(id, heartbeat, limit)
        .await
        .unwrap_err();
    assert_eq!(failed.code, ErrorCode::Unsupported, "{failed}");
    assert_eq!(failed.request_id, Some(id));

    connection
        .request_datagram_quietly(
            RequestId::random(),
            Request::Workspace(WorkspaceRequest::List),
            limit,
        )
        .await
        .unwrap();
    // Asked aloud after it, the same connection is answered.
    let pong = connection
        .request_datagram(RequestId::random(), Request::Ping, limit)
        .await;
    assert!(matches!(pong, Ok(Response::Pong(_))), "{pong:?}");
}
