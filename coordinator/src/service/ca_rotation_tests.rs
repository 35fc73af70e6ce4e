//! A CA rotation's requests over the service: only admins start or finish one; a leader without
//! a seal key or without the CA key refuses to start; one started holds the new CA's key only
//! sealed (it opens with the seal key, bound to that CA) and waits for this coordinator and the
//! host; a second start is refused; an agent's word moves it on. A user renews a session (a
//! certificate without names); an agent may not ask for one.

use std::sync::Arc;

use nexus_protocol::ca_rotation::CaPhase;
use nexus_protocol::error::ErrorCode;
use nexus_protocol::identity::{Identity, Role};
use nexus_protocol::message::{AdminRequest, AgentRequest, Request, Response};
use nexus_protocol::seal::{Key, KeyRing};
use nexus_protocol::{NodeId, seal};

use super::super::credentials::CredentialStore;
use super::super::testing::{agent, ask, code, named, one_node_with_h1};
use crate::config::lifetimes::Lifetimes;
use crate::credential_keys::CredentialKeys;
use crate::signing::Signing;
use crate::trust::key_binding;

fn signing(dir: &std::path::Path) -> Arc<Signing> {
    let pki = dir.join("pki");
    let credentials = nexus_protocol::transport::Credentials::from_pki_dir(
        &pki,
        &Identity::Coordinator(NodeId::new(1).unwrap()),
    )
    .unwrap();
    Arc::new(
        Signing::load(
            &pki,
            &credentials,
            Arc::new(std::sync::Mutex::new(Lifetimes::default())),
        )
        .unwrap(),
    )
}

fn admin_request(request: AdminRequest) -> Request {
    Request::Admin(request)
}

#[tokio::test]
async fn a_rotation_starts_sealed_once_waits_for_everyone_and_is_refused_to_users() {
    let (dir, _node, service) = one_node_with_h1().await;
    let admin = named("root", Role::Admin);
    let user = named("bob", Role::User);
    let service = service.with_signing(signing(dir.path()));

    // No seal key file: refused, nothing started.
    let refused = ask(&service, &admin, admin_request(AdminRequest::RotateCa)).await;
    assert_eq!(code(refused), Some(ErrorCode::CredentialsKeyMissing));

    let key = Key::generate().unwrap();
    let ring = KeyRing::parse(&key.line()).unwrap();
    let keys = Arc::new(CredentialKeys::new(Some(
        KeyRing::parse(&key.line()).unwrap(),
    )));
    let service = service.with_credentials(Arc::new(CredentialStore::new(keys, None)));
    for request in [AdminRequest::RotateCa, AdminRequest::FinishCaRotation] {
        let refused = ask(&service, &user, admin_request(request)).await;
        assert_eq!(code(refused), Some(ErrorCode::PermissionDenied));
    }
    let Ok(Response::CaStatus(status)) =
        ask(&service, &admin, admin_request(AdminRequest::RotateCa)).await
    else {
        panic!("no rotation started");
    };
    let rotation = status.rotation.unwrap();
    assert_eq!(rotation.phase, CaPhase::Trust);
    let parties: Vec<String> = rotation
        .parties
        .iter()
        .map(|p| p.identity.to_string())
        .collect();
    assert_eq!(parties, ["coordinator 1", "agent h1"]);
    let again = ask(&service, &admin, admin_request(AdminRequest::RotateCa)).await;
    assert_eq!(code(again), Some(ErrorCode::CaRotationInProgress));

    // The state holds the new key sealed, bound to the new CA: it opens with the seal key as
    // that CA's key only.
    let sealed = service
        .cluster
        .read(crate::cluster::Consistency::Linearizable, |state| {
            state.ca_rotations().current().unwrap().sealed_key.clone()
        })
        .await
        .unwrap()
        .unwrap();
    let opened = seal::open_for(&ring, &key_binding(&rotation.new_ca), &sealed).unwrap();
    assert!(opened.expose().contains("PRIVATE KEY"));
    assert!(seal::open_for(&ring, &key_binding(&rotation.old_ca), &sealed).is_err());
    assert!(!format!("{sealed:?}").contains("ciphertext:"));

    // The host's word is taken; a forced finish still waits for this coordinator's.
    let host = agent("h1");
    let word = AgentRequest::TrustsCa {
        new_ca: rotation.new_ca.clone(),
    };
    assert!(matches!(
        ask(&service, &host, Request::Agent(word)).await,
        Ok(Response::Ack)
    ));
    let early = ask(
        &service,
        &admin,
        admin_request(AdminRequest::FinishCaRotation),
    )
    .await;
    assert_eq!(code(early), Some(ErrorCode::CaRotationInProgress));
}

#[tokio::test]
async fn a_user_renews_a_session_without_names_and_an_agent_may_not() {
    let (dir, _node, service) = one_node_with_h1().await;
    let service = service.with_signing(signing(dir.path()));
    let user = named("bob", Role::User);
    let key = nexus_protocol::pki::KeyRequest::generate("test").unwrap();
    let renewal = |names: Vec<String>| {
        Request::Workspace(nexus_protocol::message::WorkspaceRequest::RenewSession(
            nexus_protocol::join::RenewRequest {
                csr_pem: key.csr_pem.clone(),
                names,
            },
        ))
    };
    let Ok(Response::Issued(issued)) = ask(&service, &user, renewal(Vec::new())).await else {
        panic!("no certificate");
    };
    assert_eq!(issued.identity, user.identity);
    let named_cert = ask(&service, &user, renewal(vec!["127.0.0.1".into()])).await;
    assert_eq!(code(named_cert), Some(ErrorCode::InvalidArgument));
    let from_agent = ask(&service, &agent("h1"), renewal(Vec::new())).await;
    assert_eq!(code(from_agent), Some(ErrorCode::PermissionDenied));
}
