//! Enrolment and revocation at the transport, over real QUIC on loopback: a client without a
//! certificate gets one only from a server of the CA its token pins (a server of another CA learns
//! nothing, not even the secret), only a server that enrols takes such a client, and a denied
//! identity's live connection is closed at once and its next handshake refused.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nexus_protocol::credentials::Secret;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::{Identity, IdentityKind};
use nexus_protocol::join::{DenyList, EnrolRequest, Issued, JoinToken};
use nexus_protocol::message::{Pong, Request, Response};
use nexus_protocol::pki::{KeyRequest, SubjectName, Validity};
use nexus_protocol::transport::{
    AcceptPolicy, Connector, Credentials, Gate, Handler, Peer, Reply, Server, TransportConfig,
    enrol,
};
use nexus_protocol::{HostId, RequestId, clock};
use nexus_tests::pki::{self, TestPki};
use tokio::sync::oneshot;

/// Answers pings; signs every enrolment whose secret is `secret` for the host it asks for.
struct Enroller {
    ca_pem: String,
    ca: nexus_protocol::pki::CertificateAuthority,
    secret: String,
    /// Every enrolment request that reached the handler (the secret included).
    seen: Mutex<Vec<EnrolRequest>>,
}

impl Handler for Enroller {
    async fn handle(&self, peer: &Peer, _id: RequestId, request: Request) -> Reply {
        match request {
            Request::Ping => Reply::Once(Ok(Response::Pong(Pong {
                software: "test".into(),
                server: pki::coordinator(1),
                client: peer.identity.clone(),
                time: clock::now(),
            }))),
            _ => Reply::Once(Err(WireError::new(ErrorCode::Unsupported, "not here"))),
        }
    }

    async fn enrol(
        &self,
        _address: SocketAddr,
        request: EnrolRequest,
    ) -> Result<Issued, WireError> {
        self.seen.lock().unwrap().push(request.clone());
        if request.secret.expose() != self.secret {
            return Err(WireError::new(ErrorCode::TokenInvalid, "wrong secret"));
        }
        let identity = Identity::Agent(request.host_id.clone().unwrap());
        let names: Vec<SubjectName> = request
            .names
            .iter()
            .map(|n| SubjectName::parse(n))
            .collect();
        let validity = Validity::starting(clock::now(), Duration::from_secs(3600));
        let cert_pem = self
            .ca
            .sign_request(&request.csr_pem, &identity, &names, validity)
            .map_err(|e| WireError::new(ErrorCode::InvalidArgument, e.to_string()))?;
        Ok(Issued {
            identity,
            cert_pem,
            ca_pem: self.ca_pem.clone(),
            labels: Default::default(),
        })
    }
}

struct Running {
    address: SocketAddr,
    handler: Arc<Enroller>,
    _stop: oneshot::Sender<()>,
}

async fn serve(pki: &TestPki, policy: AcceptPolicy) -> Running {
    serve_as(pki, &pki::coordinator(1), policy).await
}

async fn serve_as(pki: &TestPki, identity: &Identity, policy: AcceptPolicy) -> Running {
    let credentials = pki.issue(identity);
    let server = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        &credentials,
        policy,
        TransportConfig::default(),
    )
    .unwrap();
    let address = server.local_addr().unwrap();
    let handler = Arc::new(Enroller {
        ca_pem: String::from_utf8(pki.ca_pem()).unwrap(),
        ca: pki.ca(),
        secret: "s".repeat(64),
        seen: Mutex::new(Vec::new()),
    });
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve(handler.clone(), async {
        let _ = stopped.await;
    }));
    Running {
        address,
        handler,
        _stop: stop,
    }
}

fn request(secret: &str) -> (KeyRequest, EnrolRequest) {
    let key = KeyRequest::generate("test enrolment").unwrap();
    let token = JoinToken::generate(&"0".repeat(64)).unwrap();
    let request = EnrolRequest {
        token_id: token.id,
        secret: Secret::new(secret.to_string()),
        csr_pem: key.csr_pem.clone(),
        host_id: Some(HostId::new("new-host").unwrap()),
        names: vec!["127.0.0.1".into()],
    };
    (key, request)
}

/// An enrolment with the right secret, pinning `pki`'s CA, at `server`: it must be refused.
async fn refused_enrolment(server: &Running, pki: &TestPki) -> WireError {
    let (_, request) = request(&"s".repeat(64));
    enrol(
        &server.address.to_string(),
        &pki.fingerprint(),
        &request,
        &TransportConfig::default(),
    )
    .await
    .unwrap_err()
}

#[tokio::test]
async fn a_token_holder_gets_a_certificate_for_its_own_key_and_uses_it() {
    let pki = TestPki::new();
    let server = serve(&pki, AcceptPolicy::everyone().with_enrolment()).await;
    let (key, request) = request(&"s".repeat(64));
    let target = server.address.to_string();
    let issued = enrol(
        &target,
        &pki.fingerprint(),
        &request,
        &TransportConfig::default(),
    )
    .await
    .unwrap();
    assert_eq!(issued.identity, pki::agent("new-host"));
    // The key never left: the certificate goes with the key made here, and connects.
    let credentials = Credentials::from_pem(
        issued.ca_pem.as_bytes(),
        Some((issued.cert_pem.as_bytes(), key.key_pem.expose().as_bytes())),
    )
    .unwrap();
    let connection = Connector::new(&credentials, TransportConfig::default())
        .unwrap()
        .connect(server.address, "127.0.0.1", &[IdentityKind::Coordinator])
        .await
        .unwrap();
    assert_eq!(connection.client(), &pki::agent("new-host"));
    // A wrong secret is the handler's refusal, with its code.
    let (_, wrong) = request_with_secret("t");
    let error = enrol(
        &target,
        &pki.fingerprint(),
        &wrong,
        &TransportConfig::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::TokenInvalid, "{error}");
}

fn request_with_secret(secret: &str) -> (KeyRequest, EnrolRequest) {
    request(&secret.repeat(64))
}

#[tokio::test]
async fn a_server_of_another_ca_learns_nothing() {
    let pki = TestPki::new();
    let impostor = TestPki::new();
    // The impostor enrols anyone; the client pins our CA and must not even send its request.
    let server = serve(&impostor, AcceptPolicy::everyone().with_enrolment()).await;
    let started = Instant::now();
    let error = refused_enrolment(&server, &pki).await;
    assert_eq!(error.code, ErrorCode::CaMismatch, "{error}");
    assert!(error.message.contains("nothing was sent"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(server.handler.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_member_that_is_not_a_coordinator_learns_nothing() {
    let pki = TestPki::new();
    // An agent of the same cluster answering at an address its certificate holds (a man in the
    // middle with a host's certificate) is not trusted with the secret.
    let server = serve_as(
        &pki,
        &pki::agent("impostor"),
        AcceptPolicy::everyone().with_enrolment(),
    )
    .await;
    let error = refused_enrolment(&server, &pki).await;
    assert_eq!(error.code, ErrorCode::AuthenticationFailed, "{error}");
    assert!(error.message.contains("not a coordinator"), "{error}");
    assert!(server.handler.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn only_a_server_that_enrols_takes_a_client_without_a_certificate() {
    let pki = TestPki::new();
    let server = serve(&pki, AcceptPolicy::everyone()).await;
    let error = refused_enrolment(&server, &pki).await;
    assert_eq!(error.code, ErrorCode::AuthenticationFailed, "{error}");
    assert!(server.handler.seen.lock().unwrap().is_empty());
    // And at one that does, a client without a certificate still gets nothing but enrolment.
    let enrolling = serve(&pki, AcceptPolicy::everyone().with_enrolment()).await;
    let anonymous = Credentials::from_pem(&pki.ca_pem(), None).unwrap();
    let error = Connector::new(&anonymous, TransportConfig::default())
        .unwrap()
        .connect(enrolling.address, "127.0.0.1", &[IdentityKind::Coordinator])
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::AuthenticationFailed, "{error}");
}

#[tokio::test]
async fn a_denied_identity_is_cut_off_at_once_and_refused_after() {
    let pki = TestPki::new();
    let gate = Gate::new();
    let server = serve(&pki, AcceptPolicy::everyone().with_gate(gate.clone())).await;
    let connect = |credentials: Credentials| async move {
        Connector::new(&credentials, TransportConfig::default())
            .unwrap()
            .connect(server.address, "127.0.0.1", &[IdentityKind::Coordinator])
            .await
    };
    let host = pki::agent("gone");
    let other = pki::agent("stays");
    let doomed = connect(pki.issue(&host)).await.unwrap();
    let kept = connect(pki.issue(&other)).await.unwrap();
    assert_eq!(gate.live(), 2);
    let mut deny = DenyList::default();
    deny.deny(host.clone(), clock::now().as_millis() as i64 / 1000 + 1);
    let started = Instant::now();
    assert_eq!(gate.update(deny), 1);
    let reason = tokio::time::timeout(Duration::from_secs(1), doomed.closed())
        .await
        .expect("the denied connection closed within a second");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(reason.code, ErrorCode::AuthenticationFailed, "{reason}");
    assert!(reason.message.contains("revoked"), "{reason}");
    // The other identity is untouched and still served.
    assert!(matches!(
        kept.request(Request::Ping).await,
        Ok(Response::Pong(_))
    ));
    // The same certificate cannot come back.
    let error = connect(Credentials::from_pki_dir(pki.dir(), &host).unwrap())
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::AuthenticationFailed, "{error}");
    assert!(error.message.contains("revoked"), "{error}");
}
