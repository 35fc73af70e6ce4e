//! Fleet security over the service: tokens made, listed and revoked (the secret shown once);
//! enrolment with a real signing request and each refusal; an agent's renewal; the known
//! certificates; removing a host and revoking a user, pushed to agents' deny-list watches; and
//! that only admins make those changes.

use std::sync::Arc;
use std::time::Duration;

use nexus_protocol::error::ErrorCode;
use nexus_protocol::identity::{Identity, Role};
use nexus_protocol::join::{
    CertSource, CreatedToken, EnrolRequest, Issued, JoinToken, RenewRequest, TokenRole, TokenSpec,
};
use nexus_protocol::message::{AdminRequest, AgentRequest, Request, Response};
use nexus_protocol::model::Labels;
use nexus_protocol::pki::{KeyRequest, PkiDir};
use nexus_protocol::transport::{Credentials, Handler, Reply, first_certificate_der};
use nexus_protocol::{HostId, NodeId, RequestId};

use super::super::Service;
use super::super::testing::{agent, ask, code, leading, named, one_node, one_node_with_h1, user};
use crate::config::lifetimes::Lifetimes;
use crate::signing::Signing;

/// The service of a one-node cluster in `dir`, signing with the CA in `dir/pki`.
fn signing(dir: &std::path::Path, lifetimes: Lifetimes) -> Arc<Signing> {
    let pki = dir.join("pki");
    let credentials =
        Credentials::from_pki_dir(&pki, &Identity::Coordinator(NodeId::new(1).unwrap())).unwrap();
    Arc::new(
        Signing::load(
            &pki,
            &credentials,
            Arc::new(std::sync::Mutex::new(lifetimes)),
        )
        .unwrap(),
    )
}

fn admin_request(request: AdminRequest) -> Request {
    Request::Admin(request)
}

fn spec(role: TokenRole, uses: Option<u32>) -> TokenSpec {
    let mut labels = Labels::new();
    if role == TokenRole::Agent {
        labels.insert("zone".into(), "a".into());
    }
    TokenSpec {
        role,
        ttl_secs: 3600,
        uses,
        labels,
    }
}

async fn create_token(service: &Service, spec: TokenSpec) -> CreatedToken {
    let admin = named("root", Role::Admin);
    match ask(
        service,
        &admin,
        admin_request(AdminRequest::CreateToken(spec)),
    )
    .await
    {
        Ok(Response::TokenCreated(created)) => *created,
        other => panic!("{other:?}"),
    }
}

fn enrolment(token: &CreatedToken, host: Option<&str>) -> (EnrolRequest, KeyRequest) {
    let parsed = JoinToken::parse(token.token.expose()).unwrap();
    let key = KeyRequest::generate("new host").unwrap();
    let request = EnrolRequest {
        token_id: parsed.id,
        secret: parsed.secret,
        csr_pem: key.csr_pem.clone(),
        host_id: host.map(|h| HostId::new(h).unwrap()),
        names: vec!["127.0.0.1".into(), "h9.example".into()],
    };
    (request, key)
}

async fn enrol(service: &Service, request: EnrolRequest) -> Result<Issued, ErrorCode> {
    service
        .enrol("127.0.0.1:9".parse().unwrap(), request)
        .await
        .map_err(|e| e.code)
}

#[tokio::test]
async fn a_token_shows_its_secret_once_and_can_be_revoked() {
    let (dir, node, service) = one_node().await;
    let service = service.with_signing(signing(dir.path(), Lifetimes::default()));
    leading(&service).await;
    let created = create_token(&service, spec(TokenRole::Agent, Some(3))).await;
    let token = JoinToken::parse(created.token.expose()).unwrap();
    assert_eq!(token.id, created.view.id);
    let fingerprint = Credentials::from_pki_dir(
        &dir.path().join("pki"),
        &Identity::Coordinator(NodeId::new(1).unwrap()),
    )
    .unwrap()
    .ca_fingerprint()
    .to_string();
    assert_eq!(token.ca_fingerprint, fingerprint, "the token pins this CA");
    assert_eq!(
        created.view.created_by,
        named("root", Role::Admin).identity.to_string()
    );
    let secret = token.secret.expose().to_string();
    assert!(!format!("{created:?}").contains(&secret), "Debug hides it");
    // Listed, but never with its secret; the state holds only its hash.
    let admin = named("root", Role::Admin);
    let listed = ask(&service, &admin, admin_request(AdminRequest::Tokens))
        .await
        .unwrap();
    let Response::Tokens(tokens) = &listed else {
        panic!("{listed:?}")
    };
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].uses_left, Some(3));
    assert!(!format!("{listed:?}").contains(&secret));
    let state = service
        .cluster
        .read(crate::cluster::Consistency::Stale, |state| {
            format!("{state:?}")
        })
        .await
        .unwrap();
    assert!(!state.contains(&secret), "the state never sees the secret");
    assert!(state.contains(&token.secret_hash()));
    // Revoked: listed so, and it enrols no one.
    let revoke = AdminRequest::RevokeToken(token.id.clone());
    assert!(matches!(
        ask(&service, &admin, admin_request(revoke)).await,
        Ok(Response::Ack)
    ));
    let Ok(Response::Tokens(tokens)) =
        ask(&service, &admin, admin_request(AdminRequest::Tokens)).await
    else {
        panic!()
    };
    assert_eq!(tokens[0].status(nexus_protocol::clock::now()), "revoked");
    let (request, _) = enrolment(&created, Some("h9"));
    assert_eq!(
        enrol(&service, request).await.unwrap_err(),
        ErrorCode::TokenRevoked
    );
    // Stopped, not dropped: RocksDB's threads must end before the process does.
    node.stop().await.unwrap();
}

#[tokio::test]
async fn only_admins_change_who_is_in_the_fleet() {
    let (dir, node, service) = one_node_with_h1().await;
    let service = service.with_signing(signing(dir.path(), Lifetimes::default()));
    let created = create_token(&service, spec(TokenRole::Agent, None)).await;
    let changes = [
        AdminRequest::CreateToken(spec(TokenRole::Agent, None)),
        AdminRequest::RevokeToken(created.view.id.clone()),
        AdminRequest::RemoveHost {
            host: HostId::new("h1").unwrap(),
            force: true,
        },
        AdminRequest::RevokeUser("alice".parse().unwrap()),
        AdminRequest::Tokens,
        AdminRequest::Certificates,
    ];
    for request in changes {
        for peer in [user(Role::User), agent("h1")] {
            let refused = ask(&service, &peer, admin_request(request.clone())).await;
            assert_eq!(
                code(refused),
                Some(ErrorCode::PermissionDenied),
                "{request:?}"
            );
        }
    }
    // Nothing changed: h1 is in, its agent not denied, the token usable.
    assert!(service.cluster.deny_list().borrow().is_empty());
    let (request, _) = enrolment(&created, Some("h9"));
    assert!(enrol(&service, request).await.is_ok());
    // Stopped, not dropped: RocksDB's threads must end before the process does.
    node.stop().await.unwrap();
}

#[tokio::test]
async fn an_agent_enrols_with_a_real_signing_request_and_renews() {
    let (dir, node, service) = one_node().await;
    let lifetimes = Lifetimes {
        node: Duration::from_secs(600),
        user: Duration::from_secs(60),
    };
    let service = service.with_signing(signing(dir.path(), lifetimes));
    leading(&service).await;
    let created = create_token(&service, spec(TokenRole::Agent, Some(1))).await;
    // Refusals first, each counting no use.
    let (mut mistyped, _) = enrolment(&created, Some("h9"));
    mistyped.secret = nexus_protocol::credentials::Secret::new("0".repeat(64));
    assert_eq!(
        enrol(&service, mistyped).await.unwrap_err(),
        ErrorCode::TokenInvalid
    );
    let (no_host, _) = enrolment(&created, None);
    assert_eq!(
        enrol(&service, no_host).await.unwrap_err(),
        ErrorCode::InvalidArgument
    );
    let (mut junk, _) = enrolment(&created, Some("h9"));
    junk.csr_pem =
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".into();
    assert_eq!(
        enrol(&service, junk).await.unwrap_err(),
        ErrorCode::InvalidArgument
    );
    let (mut bad_names, _) = enrolment(&created, Some("h9"));
    bad_names.names = vec!["not a name".into()];
    assert_eq!(
        enrol(&service, bad_names).await.unwrap_err(),
        ErrorCode::InvalidArgument
    );
    // The one use.
    let (request, key) = enrolment(&created, Some("h9"));
    let issued = enrol(&service, request).await.unwrap();
    let h9 = Identity::Agent(HostId::new("h9").unwrap());
    assert_eq!(issued.identity, h9);
    assert_eq!(issued.labels.get("zone").map(String::as_str), Some("a"));
    let credentials = Credentials::from_pem(
        issued.ca_pem.as_bytes(),
        Some((issued.cert_pem.as_bytes(), key.key_pem.expose().as_bytes())),
    )
    .unwrap();
    assert_eq!(
        credentials.identity(),
        Some(&h9),
        "the certificate goes with the key"
    );
    let mut names = credentials.own_names();
    names.sort();
    assert_eq!(names, ["127.0.0.1", "h9.example"]);
    let der = first_certificate_der(&issued.cert_pem).unwrap();
    let (begins, ends) = (
        nexus_protocol::identity::not_before(&der).unwrap(),
        nexus_protocol::identity::not_after(&der).unwrap(),
    );
    assert!((590..=661).contains(&(ends - begins)), "{begins}..{ends}");
    let (again, _) = enrolment(&created, Some("h8"));
    assert_eq!(
        enrol(&service, again).await.unwrap_err(),
        ErrorCode::TokenUsedUp
    );
    let metrics = service.cluster.metrics();
    assert_eq!(metrics.enrolments.get(["ok"]), 1);
    assert_eq!(metrics.enrolments.get(["token_invalid"]), 1);
    assert_eq!(metrics.enrolments.get(["token_used_up"]), 1);
    assert_eq!(metrics.enrolments.get(["invalid_argument"]), 3);
    // The agent renews over its own connection, with a fresh key.
    let fresh = KeyRequest::generate("h9").unwrap();
    let renew = Request::Agent(AgentRequest::Renew(RenewRequest {
        csr_pem: fresh.csr_pem.clone(),
        names: vec!["127.0.0.1".into()],
    }));
    let renewed = match ask(&service, &agent("h9"), renew.clone()).await {
        Ok(Response::Issued(issued)) => *issued,
        other => panic!("{other:?}"),
    };
    assert_eq!(renewed.identity, h9);
    assert_ne!(renewed.cert_pem, issued.cert_pem);
    let refused = ask(&service, &user(Role::Admin), renew).await;
    assert_eq!(code(refused), Some(ErrorCode::PermissionDenied));
    // Both are known to the cluster, the newest one per identity.
    let admin = named("root", Role::Admin);
    let Ok(Response::Certificates(certificates)) =
        ask(&service, &admin, admin_request(AdminRequest::Certificates)).await
    else {
        panic!()
    };
    let h9_cert = certificates.iter().find(|c| c.identity == h9).unwrap();
    assert_eq!(h9_cert.cert.source, CertSource::Renewal);
    let renewed_der = first_certificate_der(&renewed.cert_pem).unwrap();
    assert_eq!(
        h9_cert.cert.fingerprint,
        nexus_protocol::hash::hex(&nexus_protocol::hash::sha256(&renewed_der))
    );
    assert_eq!(metrics.renewals.get(["agent", "ok"]), 1);
    // Stopped, not dropped: RocksDB's threads must end before the process does.
    node.stop().await.unwrap();
}

#[tokio::test]
async fn a_user_enrols_for_a_short_session_and_a_node_without_the_ca_key_refuses() {
    let (dir, node, service) = one_node().await;
    let lifetimes = Lifetimes {
        node: Duration::from_secs(86_400),
        user: Duration::from_secs(120),
    };
    let signer = signing(dir.path(), lifetimes);
    let service = service.with_signing(signer);
    leading(&service).await;
    let bob = TokenRole::User {
        name: "bob".parse().unwrap(),
        role: Role::User,
    };
    let created = create_token(&service, spec(bob, Some(2))).await;
    let (with_host, _) = enrolment(&created, Some("h1"));
    assert_eq!(
        enrol(&service, with_host).await.unwrap_err(),
        ErrorCode::InvalidArgument
    );
    let (request, _) = enrolment(&created, None);
    let issued = enrol(&service, request).await.unwrap();
    assert_eq!(
        issued.identity,
        Identity::User {
            name: "bob".parse().unwrap(),
            role: Role::User
        }
    );
    let der = first_certificate_der(&issued.cert_pem).unwrap();
    let life = nexus_protocol::identity::not_after(&der).unwrap()
        - nexus_protocol::identity::not_before(&der).unwrap();
    assert!((120..=132).contains(&life), "a user's session: {life} s");
    assert!(nexus_protocol::identity::subject_names(&der).is_empty());
    // Without ca.key, a coordinator refuses to sign, saying why.
    std::fs::remove_file(PkiDir::new(dir.path().join("pki")).ca_key()).unwrap();
    let keyless = Service::new(
        Identity::Coordinator(NodeId::new(1).unwrap()),
        service.cluster.clone(),
    )
    .with_signing(signing(dir.path(), lifetimes));
    let (request, _) = enrolment(&created, None);
    let error = keyless
        .enrol("127.0.0.1:9".parse().unwrap(), request)
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Unsupported);
    assert!(error.message.contains("ca.key"), "{}", error.message);
    // Stopped, not dropped: RocksDB's threads must end before the process does.
    node.stop().await.unwrap();
}

/// The next push of a deny-list watch, within a second.
async fn next(
    pushes: &mut tokio::sync::mpsc::Receiver<nexus_protocol::transport::Update>,
) -> nexus_protocol::join::DenyList {
    match tokio::time::timeout(Duration::from_secs(1), pushes.recv())
        .await
        .map(|push| push.map(|push| *push))
    {
        Ok(Some(Ok(Response::DenyList(list)))) => list,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_removed_host_and_a_revoked_user_reach_the_agents_watches() {
    let (dir, node, service) = one_node_with_h1().await;
    let service = service.with_signing(signing(dir.path(), Lifetimes::default()));
    let watcher = super::super::testing::peer(Identity::Agent(HostId::new("h2").unwrap()));
    let Reply::Stream(mut pushes) = service
        .handle(
            &watcher,
            RequestId::random(),
            Request::Agent(AgentRequest::WatchDenyList),
        )
        .await
    else {
        panic!("not a subscription")
    };
    assert!(next(&mut pushes).await.is_empty());
    let admin = named("root", Role::Admin);
    let remove = AdminRequest::RemoveHost {
        host: HostId::new("h1").unwrap(),
        force: false,
    };
    assert!(matches!(
        ask(&service, &admin, admin_request(remove)).await,
        Ok(Response::Ack)
    ));
    let list = next(&mut pushes).await;
    let h1 = Identity::Agent(HostId::new("h1").unwrap());
    assert!(list.refuses(&h1, 0));
    assert!(service.cluster.deny_list().borrow().refuses(&h1, 0));
    let Ok(Response::Hosts(hosts)) =
        ask(&service, &admin, admin_request(AdminRequest::Hosts)).await
    else {
        panic!()
    };
    assert!(hosts.is_empty());
    let revoke = AdminRequest::RevokeUser("alice".parse().unwrap());
    ask(&service, &admin, admin_request(revoke)).await.unwrap();
    let list = next(&mut pushes).await;
    assert!(list.refuses(&user(Role::Admin).identity, 0));
    assert_eq!(list.len(), 2);
    // Only agents watch it.
    let refused = service
        .handle(
            &user(Role::Admin),
            RequestId::random(),
            Request::Agent(AgentRequest::WatchDenyList),
        )
        .await;
    assert!(matches!(refused, Reply::Once(Err(ref e)) if e.code == ErrorCode::PermissionDenied));
    // Stopped, not dropped: RocksDB's threads must end before the process does.
    node.stop().await.unwrap();
}
