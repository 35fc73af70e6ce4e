//! The agent's certificate renewal and deny list, against an in-test coordinator over real QUIC:
//! with certificates that live seconds, the agent renews again and again over the connection it
//! has (which keeps working), each new connection to its endpoint presents the certificate then
//! in force, and a refused renewal is retried soon; a deny list the leader pushes closes a denied
//! user's live connection to the agent's endpoint at once and refuses the next, and is
//! subscribed afresh on a new session.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::security::{Cluster, Coordinator, agent_config, host, lasting, token_file, user};
use nexus_agent::asker::Asker;
use nexus_agent::metrics::Metrics;
use nexus_agent::renewal::Renewer;
use nexus_protocol::RequestId;
use nexus_protocol::identity::IdentityKind;
use nexus_protocol::join::DenyList;
use nexus_protocol::message::{Request, Response};
use nexus_protocol::transport::{
    AcceptPolicy, Connection, Connector, Credentials, Gate, Handler, Peer, Reply, Server,
    TransportConfig,
};
use tokio::sync::watch;

/// The agent's endpoint, reduced to pings.
struct Pings;

impl Handler for Pings {
    async fn handle(&self, _peer: &Peer, _id: RequestId, _request: Request) -> Reply {
        Reply::Once(Ok(Response::Ack))
    }
}

/// Serves [`Pings`] with `credentials` (and `gate`) on loopback until `stopped` turns true.
fn serve(credentials: &Credentials, gate: Gate, stopped: watch::Receiver<bool>) -> SocketAddr {
    let server = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        credentials,
        AcceptPolicy::only(&[IdentityKind::User]).with_gate(gate),
        TransportConfig::default(),
    )
    .unwrap();
    let address = server.local_addr().unwrap();
    tokio::spawn(server.serve(Arc::new(Pings), until(stopped)));
    address
}

async fn until(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

async fn connect(credentials: &Credentials, to: SocketAddr, kind: IdentityKind) -> Connection {
    Connector::new(credentials, TransportConfig::default())
        .unwrap()
        .connect(to, "127.0.0.1", &[kind])
        .await
        .unwrap()
}

fn fingerprint(der: &[u8]) -> String {
    nexus_protocol::hash::hex(&nexus_protocol::hash::sha256(der))
}

/// An agent enrolled with `coordinator` (whose certificates live as it says), its credentials,
/// and an asker on a session with the coordinator, as the link would hold.
async fn enrolled(
    cluster: &Cluster,
    coordinator: &Coordinator,
    dir: &std::path::Path,
) -> (nexus_agent::Config, Credentials, Asker) {
    let token = token_file(dir, &cluster.token());
    let config = agent_config(
        dir,
        "h1",
        coordinator.address,
        &["--join-token-file", token.to_str().unwrap()],
    );
    nexus_agent::enrol::ensure(&config, None).await.unwrap();
    let credentials = Credentials::from_pki_dir(&config.tls_dir, &host("h1")).unwrap();
    let asker = Asker::default();
    let session = connect(&credentials, coordinator.address, IdentityKind::Coordinator).await;
    asker.connected(Some(session));
    (config, credentials, asker)
}

#[tokio::test]
async fn a_certificate_of_seconds_is_renewed_again_and_again_without_a_restart() {
    let cluster = Cluster::new();
    let coordinator = Coordinator::start(&cluster, Duration::from_secs(3));
    // The first renewal is refused: it is tried again soon, not at the next due time.
    coordinator
        .behaviour
        .refuse_renewals
        .store(1, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let (config, credentials, asker) = enrolled(&cluster, &coordinator, dir.path()).await;
    let first = credentials.own_certificate().unwrap();
    let (stop, stopped) = watch::channel(false);
    let endpoint = serve(&credentials, Gate::new(), stopped.clone());
    let renewer = Renewer::new(
        credentials.clone(),
        config.tls_dir.clone(),
        asker.clone(),
        vec!["box".into()],
    )
    .monitored(
        Metrics::unserved(),
        nexus_telemetry::Registry::for_daemon("agent", "t").1,
    );
    let renewing = tokio::spawn(renewer.run(until(stopped.clone())));

    // A user's certificate, to see what the agent's endpoint presents.
    let alice = cluster.credentials(&user("alice"), lasting(Duration::from_secs(3600)));
    let mut presented = BTreeSet::new();
    let started = Instant::now();
    while presented.len() < 4 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "only {} certificates seen in 20 s; renewals asked: {}",
            presented.len(),
            coordinator.behaviour.renewals.lock().unwrap().len()
        );
        let in_force = credentials.own_certificate().unwrap();
        let connection = connect(&alice, endpoint, IdentityKind::Agent).await;
        let shown = connection.server_certificate().unwrap();
        // Each new connection presents the certificate in force (or one renewed meanwhile).
        let now_in_force = credentials.own_certificate().unwrap();
        assert!(shown == in_force || shown == now_in_force);
        presented.insert(fingerprint(&shown));
        connection.close();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_ne!(credentials.own_certificate().unwrap(), first);
    let renewals = coordinator.behaviour.renewals.lock().unwrap().clone();
    assert!(renewals.len() >= 4, "{}", renewals.len());
    assert!(renewals.iter().all(|(who, _)| *who == host("h1")));
    // It keeps the names it had and asks for those it wants.
    assert_eq!(
        renewals[0].1.names,
        ["127.0.0.1", "::1", "localhost", "box"]
    );
    let _ = stop.send(true);
    renewing.await.unwrap();
    // The files hold the certificate in force.
    let on_disk = Credentials::from_pki_dir(&config.tls_dir, &host("h1")).unwrap();
    assert_eq!(on_disk.own_certificate(), credentials.own_certificate());
    // The session it renewed over, opened with the first certificate, still works.
    let session = asker
        .ask(Request::Ping, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(matches!(session, Response::Pong(_)), "{session:?}");
}

#[tokio::test]
async fn a_denied_users_live_connection_is_closed_at_once_and_the_next_refused() {
    let cluster = Cluster::new();
    let coordinator = Coordinator::start(&cluster, Duration::from_secs(3600));
    let dir = tempfile::tempdir().unwrap();
    let (_config, credentials, asker) = enrolled(&cluster, &coordinator, dir.path()).await;
    let (stop, stopped) = watch::channel(false);
    let gate = Gate::new();
    let endpoint = serve(&credentials, gate.clone(), stopped.clone());
    let following = tokio::spawn(nexus_agent::denials::follow(
        asker.clone(),
        gate.clone(),
        Metrics::unserved(),
        dir.path().to_path_buf(),
        until(stopped.clone()),
    ));
    let alice = cluster.credentials(&user("alice"), lasting(Duration::from_secs(3600)));
    let bob = cluster.credentials(&user("bob"), lasting(Duration::from_secs(3600)));
    let alices = connect(&alice, endpoint, IdentityKind::Agent).await;
    let bobs = connect(&bob, endpoint, IdentityKind::Agent).await;
    wait_for(|| coordinator.behaviour.deny_watches.load(Ordering::SeqCst) == 1).await;

    let mut deny = DenyList::default();
    deny.deny(user("alice"), i64::MAX / 2);
    let denied_at = Instant::now();
    coordinator.behaviour.deny.send_replace(deny.clone());
    let closed = alices.closed().await;
    assert!(denied_at.elapsed() < Duration::from_secs(1), "{closed}");
    // Bob is untouched; Alice's next handshake is refused.
    bobs.request(Request::Ping).await.unwrap();
    let refused = Connector::new(&alice, TransportConfig::default())
        .unwrap()
        .connect(endpoint, "127.0.0.1", &[IdentityKind::Agent])
        .await;
    assert!(refused.is_err());

    // A new session (a reconnect, a new leader) subscribes afresh; the list stays in force.
    let session = connect(&credentials, coordinator.address, IdentityKind::Coordinator).await;
    asker.connected(Some(session));
    wait_for(|| coordinator.behaviour.deny_watches.load(Ordering::SeqCst) == 2).await;
    assert!(gate.refuses(&user("alice"), 0));
    coordinator.behaviour.deny.send_replace(DenyList::default());
    wait_for(|| !gate.refuses(&user("alice"), 0)).await;
    connect(&alice, endpoint, IdentityKind::Agent).await;
    let _ = stop.send(true);
    following.await.unwrap();
}

async fn wait_for(condition: impl Fn() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < Duration::from_secs(5), "timed out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
