//! A coordinator with real QUIC: a host enrols with a join token over the anonymous connection,
//! uses its certificate, renews it, and is shut out (its live connection closed within a second,
//! its next handshake refused) when an admin removes it.

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nexus_coordinator::Config;
use nexus_protocol::error::ErrorCode;
use nexus_protocol::identity::{Identity, IdentityKind, Role};
use nexus_protocol::join::{EnrolRequest, JoinToken, RenewRequest, TokenRole, TokenSpec};
use nexus_protocol::message::{AdminRequest, AgentRequest, Request, Response};
use nexus_protocol::pki::{DEFAULT_CA_VALIDITY, KeyRequest, PkiDir, SubjectName, Validity};
use nexus_protocol::transport::{Connection, Connector, Credentials, TransportConfig, enrol};
use nexus_protocol::{HostId, NodeId, UserName, clock};
use tokio::sync::oneshot;

fn admin() -> Identity {
    Identity::User {
        name: UserName::new("root").unwrap(),
        role: Role::Admin,
    }
}

/// Starts coordinator 1 in `dir` (its PKI in `dir/pki`); its address.
async fn start(dir: &std::path::Path) -> (SocketAddr, oneshot::Sender<()>) {
    let pki = PkiDir::new(dir.join("pki"));
    pki.init(clock::now(), DEFAULT_CA_VALIDITY, false).unwrap();
    let validity = Validity::starting(clock::now(), Duration::from_secs(3600));
    let names = [SubjectName::parse("127.0.0.1")];
    let coordinator = Identity::Coordinator(NodeId::new(1).unwrap());
    pki.issue(&coordinator, &names, validity, false).unwrap();
    pki.issue(&admin(), &[], validity, false).unwrap();
    let config = Config::from_args(nexus_coordinator::config::Args {
        node_id: Some(NodeId::new(1).unwrap()),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: Some(dir.join("data")),
        tls_dir: Some(pki.path().to_path_buf()),
        tick_ms: Some(10),
        http_listen: Some("off".parse().unwrap()),
        cert_lifetime: Some("30s".into()),
        ..Default::default()
    })
    .unwrap();
    let (ready, address) = oneshot::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(nexus_coordinator::run_with(
        config,
        async {
            let _ = stopped.await;
        },
        move |address, _| {
            let _ = ready.send(address);
        },
    ));
    (address.await.unwrap(), stop)
}

async fn connect(address: SocketAddr, credentials: &Credentials) -> Connection {
    Connector::new(credentials, TransportConfig::default())
        .unwrap()
        .connect(address, "127.0.0.1", &[IdentityKind::Coordinator])
        .await
        .unwrap()
}

/// Asks until the one node leads (a write before that is refused).
async fn ask_until_leading(connection: &Connection, request: Request) -> Response {
    for _ in 0..300 {
        match connection.request(request.clone()).await {
            Ok(response) => return response,
            Err(error)
                if matches!(
                    error.code,
                    ErrorCode::NotLeader | ErrorCode::Timeout | ErrorCode::BackendUnavailable
                ) =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("{error}"),
        }
    }
    panic!("no leader")
}

#[tokio::test]
async fn a_host_enrols_renews_and_is_shut_out_when_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (address, _stop) = start(dir.path()).await;
    let pki = dir.path().join("pki");
    let admin = connect(address, &Credentials::from_pki_dir(&pki, &admin()).unwrap()).await;
    let spec = TokenSpec {
        role: TokenRole::Agent,
        ttl_secs: 600,
        uses: Some(1),
        labels: Default::default(),
    };
    let Response::TokenCreated(created) =
        ask_until_leading(&admin, Request::Admin(AdminRequest::CreateToken(spec))).await
    else {
        panic!("not a token")
    };
    let token = JoinToken::parse(created.token.expose()).unwrap();
    // Enrolment over the anonymous connection that pins the token's CA.
    let key = KeyRequest::generate("h9").unwrap();
    let request = EnrolRequest {
        token_id: token.id.clone(),
        secret: token.secret.clone(),
        csr_pem: key.csr_pem.clone(),
        host_id: Some(HostId::new("h9").unwrap()),
        names: vec!["127.0.0.1".into()],
    };
    let target = address.to_string();
    let issued = enrol(
        &target,
        &token.ca_fingerprint,
        &request,
        &TransportConfig::default(),
    )
    .await
    .unwrap();
    let again = enrol(
        &target,
        &token.ca_fingerprint,
        &request,
        &TransportConfig::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(again.code, ErrorCode::TokenUsedUp, "{again}");
    // The certificate works with the key that never left, and renews over its own connection.
    let credentials = Credentials::from_pem(
        issued.ca_pem.as_bytes(),
        Some((issued.cert_pem.as_bytes(), key.key_pem.expose().as_bytes())),
    )
    .unwrap();
    let agent = connect(address, &credentials).await;
    let h9 = nexus_fixtures::host("h9");
    let registered = agent
        .request(Request::Agent(AgentRequest::Register(h9)))
        .await
        .unwrap();
    assert!(matches!(registered, Response::Registered { .. }));
    let fresh = KeyRequest::generate("h9").unwrap();
    let renewal = RenewRequest {
        csr_pem: fresh.csr_pem.clone(),
        names: vec!["127.0.0.1".into()],
    };
    let Response::Issued(renewed) = agent
        .request(Request::Agent(AgentRequest::Renew(renewal)))
        .await
        .unwrap()
    else {
        panic!("not a certificate")
    };
    assert_eq!(renewed.identity, issued.identity);
    // Removed: its live connection closes within a second, and it cannot come back.
    let remove = AdminRequest::RemoveHost {
        host: HostId::new("h9").unwrap(),
        force: false,
    };
    let started = Instant::now();
    let removed = admin.request(Request::Admin(remove)).await.unwrap();
    assert!(matches!(removed, Response::Ack), "{removed:?}");
    let reason = tokio::time::timeout(Duration::from_secs(1), agent.closed())
        .await
        .expect("the removed host's connection closed within a second");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(reason.code, ErrorCode::AuthenticationFailed, "{reason}");
    let renewed_credentials = Credentials::from_pem(
        renewed.ca_pem.as_bytes(),
        Some((
            renewed.cert_pem.as_bytes(),
            fresh.key_pem.expose().as_bytes(),
        )),
    )
    .unwrap();
    for credentials in [credentials, renewed_credentials] {
        let refused = Connector::new(&credentials, TransportConfig::default())
            .unwrap()
            .connect(address, "127.0.0.1", &[IdentityKind::Coordinator])
            .await
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::AuthenticationFailed, "{refused}");
    }
    // The admin's connection was never disturbed, and lists what happened, the coordinator's
    // own certificate too (recorded once it leads).
    let coordinator = Identity::Coordinator(NodeId::new(1).unwrap());
    let started = Instant::now();
    loop {
        let Response::Certificates(known) = admin
            .request(Request::Admin(AdminRequest::Certificates))
            .await
            .unwrap()
        else {
            panic!("not certificates")
        };
        let h9 = known
            .iter()
            .find(|view| view.identity == issued.identity)
            .unwrap();
        assert!(h9.denied_at.is_some());
        if known.iter().any(|view| view.identity == coordinator) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the coordinator records its own certificate: {known:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
