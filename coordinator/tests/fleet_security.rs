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

/// A PKI in `dir/pki` with coordinators `1..=nodes` and the admin `root`.
fn make_pki(dir: &std::path::Path, nodes: u64) -> PkiDir {
    let pki = PkiDir::new(dir.join("pki"));
    pki.init(clock::now(), DEFAULT_CA_VALIDITY, false).unwrap();
    let validity = Validity::starting(clock::now(), Duration::from_secs(3600));
    let names = [SubjectName::parse("127.0.0.1")];
    for id in 1..=nodes {
        let coordinator = Identity::Coordinator(NodeId::new(id).unwrap());
        pki.issue(&coordinator, &names, validity, false).unwrap();
    }
    pki.issue(&admin(), &[], validity, false).unwrap();
    pki
}

/// Starts coordinator 1 alone in `dir` (its PKI in `dir/pki`); its address.
async fn start(dir: &std::path::Path) -> (SocketAddr, oneshot::Sender<()>) {
    make_pki(dir, 1);
    start_member(dir, 1, "127.0.0.1:0".parse().unwrap(), Vec::new()).await
}

/// Starts coordinator `id` on `listen` with `peers`, its data in `dir/data-ID`.
async fn start_member(
    dir: &std::path::Path,
    id: u64,
    listen: SocketAddr,
    peers: Vec<(NodeId, String)>,
) -> (SocketAddr, oneshot::Sender<()>) {
    let config = Config::from_args(nexus_coordinator::config::Args {
        node_id: Some(NodeId::new(id).unwrap()),
        listen: Some(listen),
        peers,
        data_dir: Some(dir.join(format!("data-{id}"))),
        tls_dir: Some(dir.join("pki")),
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

/// Asks until a leader takes it: a write is refused while the node asked knows none.
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

/// A free UDP port on loopback (free a moment ago).
fn free_port() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test]
async fn every_member_enrols_and_every_members_gate_shuts_a_removed_host_out() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), 3);
    let addresses: Vec<SocketAddr> = (0..3).map(|_| free_port()).collect();
    let mut stops = Vec::new();
    for id in 1..=3u64 {
        let peers = (1..=3u64)
            .filter(|&other| other != id)
            .map(|other| {
                let address = addresses[usize::try_from(other - 1).unwrap()];
                (NodeId::new(other).unwrap(), address.to_string())
            })
            .collect();
        let listen = addresses[usize::try_from(id - 1).unwrap()];
        stops.push(start_member(dir.path(), id, listen, peers).await);
    }
    let admin = connect(
        addresses[0],
        &Credentials::from_pki_dir(pki.path(), &admin()).unwrap(),
    )
    .await;
    let spec = TokenSpec {
        role: TokenRole::Agent,
        ttl_secs: 600,
        uses: Some(3),
        labels: Default::default(),
    };
    let Response::TokenCreated(created) =
        ask_until_leading(&admin, Request::Admin(AdminRequest::CreateToken(spec))).await
    else {
        panic!("not a token")
    };
    let token = JoinToken::parse(created.token.expose()).unwrap();
    // Each member enrols a host, leader or not: the use is counted once, cluster-wide.
    let mut hosts = Vec::new();
    for (n, address) in addresses.iter().enumerate() {
        let host = format!("m{n}");
        let key = KeyRequest::generate(&host).unwrap();
        let request = EnrolRequest {
            token_id: token.id.clone(),
            secret: token.secret.clone(),
            csr_pem: key.csr_pem.clone(),
            host_id: Some(HostId::new(&host).unwrap()),
            names: vec!["127.0.0.1".into()],
        };
        let issued = enrol(
            &address.to_string(),
            &token.ca_fingerprint,
            &request,
            &TransportConfig::default(),
        )
        .await
        .unwrap_or_else(|error| panic!("member {}: {error}", n + 1));
        let credentials = Credentials::from_pem(
            issued.ca_pem.as_bytes(),
            Some((issued.cert_pem.as_bytes(), key.key_pem.expose().as_bytes())),
        )
        .unwrap();
        hosts.push((host, credentials));
    }
    let Response::Tokens(tokens) = admin
        .request(Request::Admin(AdminRequest::Tokens))
        .await
        .unwrap()
    else {
        panic!("not tokens")
    };
    assert_eq!((tokens[0].used, tokens[0].uses_left), (3, Some(0)));
    // Host m0 holds a connection to every member; it registers through one of them.
    let (host, credentials) = &hosts[0];
    let mut connections = Vec::new();
    for address in &addresses {
        connections.push(connect(*address, credentials).await);
    }
    let info = nexus_fixtures::host(host);
    // Through a follower, which forwards it; an election under a loaded machine refuses it
    // until a leader is known again, as an agent would be.
    let registered = ask_until_leading(
        &connections[2],
        Request::Agent(AgentRequest::Register(info)),
    )
    .await;
    assert!(matches!(registered, Response::Registered { .. }));
    let remove = AdminRequest::RemoveHost {
        host: HostId::new(host).unwrap(),
        force: false,
    };
    let removed = ask_until_leading(&admin, Request::Admin(remove)).await;
    assert!(matches!(removed, Response::Ack), "{removed:?}");
    // Every member, leader and followers, closes it within a second, and refuses it after.
    for (n, connection) in connections.iter().enumerate() {
        let reason = tokio::time::timeout(Duration::from_secs(1), connection.closed())
            .await
            .unwrap_or_else(|_| panic!("member {} kept the removed host's connection", n + 1));
        assert_eq!(reason.code, ErrorCode::AuthenticationFailed, "{reason}");
    }
    for address in &addresses {
        let refused = Connector::new(credentials, TransportConfig::default())
            .unwrap()
            .connect(*address, "127.0.0.1", &[IdentityKind::Coordinator])
            .await
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::AuthenticationFailed, "{refused}");
    }
    // The other hosts are still let in everywhere.
    for address in &addresses {
        connect(*address, &hosts[1].1).await;
    }
}
