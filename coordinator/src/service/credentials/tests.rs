use nexus_protocol::credentials::{CredentialKind, CredentialSpec, Secret};
use nexus_protocol::identity::Role;
use nexus_protocol::message::{AgentRequest, WorkspaceRequest};
use nexus_protocol::model::WorkspaceSpec;
use nexus_protocol::seal::Key;

use super::*;
use crate::service::testing::{
    agent, ask, code, one_node, one_node_with_h1, user, workspace_spec, ws,
};

fn admin() -> Peer {
    user(Role::Admin)
}

fn ring(keys: &[&Key]) -> KeyRing {
    KeyRing::parse(&keys.iter().map(|key| key.line()).collect::<String>()).unwrap()
}

/// A credential store holding `keys`, and the handle a reload replaces them through.
fn store_of(keys: KeyRing) -> (Arc<CredentialStore>, Arc<CredentialKeys>) {
    let keys = Arc::new(CredentialKeys::new(Some(keys)));
    (Arc::new(CredentialStore::new(keys.clone(), None)), keys)
}

fn registry(name: &str, server: &str) -> CredentialSpec {
    CredentialSpec {
        name: name.into(),
        kind: CredentialKind::Registry,
        scope: server.into(),
        username: "bot".into(),
    }
}

fn set(spec: CredentialSpec, secret: &str) -> Request {
    Request::Admin(AdminRequest::SetCredential {
        spec,
        secret: Secret::new(secret.into()),
    })
}

fn ask_for(workspace: &str, server: &str) -> Request {
    Request::Agent(AgentRequest::Credential(CredentialAsk {
        workspace: workspace.parse().unwrap(),
        purpose: CredentialPurpose::Registry {
            server: server.into(),
        },
    }))
}

async fn records(service: &Service) -> Vec<CredentialRecord> {
    service
        .cluster
        .read(Consistency::Linearizable, |state| {
            state.credentials().iter().cloned().collect()
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn without_a_key_file_every_operation_says_so() {
    let (_dir, _node, service) = one_node_with_h1().await;
    let refused = ask(
        &service,
        &admin(),
        set(registry("reg", "r.example.com"), "s3cret"),
    )
    .await;
    let error = refused.unwrap_err();
    assert_eq!(error.code, ErrorCode::CredentialsKeyMissing);
    assert!(error.code.suggestion().contains("--credentials-key-file"));
    assert_eq!(
        code(
            ask(
                &service,
                &admin(),
                Request::Admin(AdminRequest::RotateCredentialsKey)
            )
            .await
        ),
        Some(ErrorCode::CredentialsKeyMissing)
    );
    match ask(
        &service,
        &admin(),
        Request::Admin(AdminRequest::CredentialKeys),
    )
    .await
    {
        Ok(Response::CredentialKeys { keys, .. }) => assert!(keys.is_empty()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn admins_set_rotate_list_and_delete_and_the_state_holds_only_ciphertext() {
    let (_dir, _node, service) = one_node().await;
    let key = Key::generate().unwrap();
    let service = service.with_credentials(store_of(ring(&[&key])).0);
    crate::service::testing::leading(&service).await;
    let planted = "planted-Zq8xK3v9";
    // Users may not.
    assert_eq!(
        code(
            ask(
                &service,
                &user(Role::User),
                set(registry("reg", "r.example.com"), planted)
            )
            .await
        ),
        Some(ErrorCode::PermissionDenied)
    );
    // A bad spec or secret is refused before anything is sealed.
    assert_eq!(
        code(
            ask(
                &service,
                &admin(),
                set(registry("reg", "r.example.com/x"), planted)
            )
            .await
        ),
        Some(ErrorCode::InvalidArgument)
    );
    assert_eq!(
        code(
            ask(
                &service,
                &admin(),
                set(registry("reg", "r.example.com"), "")
            )
            .await
        ),
        Some(ErrorCode::InvalidArgument)
    );
    ask(
        &service,
        &admin(),
        set(registry("reg", "r.example.com"), planted),
    )
    .await
    .unwrap();
    let stored = records(&service).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].sealed.key_id, key.id());
    let snapshot = service
        .cluster
        .read(Consistency::Linearizable, |state| {
            state.to_snapshot().unwrap()
        })
        .await
        .unwrap();
    assert!(
        !snapshot
            .windows(planted.len())
            .any(|w| w == planted.as_bytes()),
        "the snapshot holds the secret in clear"
    );
    assert_eq!(
        seal::open(&ring(&[&key]), &stored[0].spec, &stored[0].sealed)
            .unwrap()
            .expose(),
        planted
    );
    // The list shows no secret.
    match ask(
        &service,
        &admin(),
        Request::Admin(AdminRequest::Credentials),
    )
    .await
    {
        Ok(Response::Credentials(views)) => {
            assert_eq!(views.len(), 1);
            assert_eq!(views[0].key_id, key.id());
            assert!(!format!("{views:?}").contains(planted));
        }
        other => panic!("{other:?}"),
    }
    // Rotate: a new secret under the same spec.
    ask(
        &service,
        &admin(),
        Request::Admin(AdminRequest::RotateCredential {
            name: "reg".into(),
            secret: Secret::new("second".into()),
        }),
    )
    .await
    .unwrap();
    let stored = records(&service).await;
    assert_eq!(
        seal::open(&ring(&[&key]), &stored[0].spec, &stored[0].sealed)
            .unwrap()
            .expose(),
        "second"
    );
    assert!(stored[0].rotated_at.is_some());
    assert_eq!(
        code(
            ask(
                &service,
                &admin(),
                Request::Admin(AdminRequest::RotateCredential {
                    name: "nope".into(),
                    secret: Secret::new("x".into()),
                }),
            )
            .await
        ),
        Some(ErrorCode::InvalidArgument)
    );
    ask(
        &service,
        &admin(),
        Request::Admin(AdminRequest::DeleteCredential("reg".into())),
    )
    .await
    .unwrap();
    assert!(records(&service).await.is_empty());
}

#[tokio::test]
async fn an_agent_gets_a_credential_only_for_its_own_workspace_and_its_image() {
    let (_dir, _node, service) = one_node_with_h1().await;
    let key = Key::generate().unwrap();
    let service = service.with_credentials(store_of(ring(&[&key])).0);
    ask(
        &service,
        &user(Role::User),
        ws(WorkspaceRequest::Create(WorkspaceSpec {
            image: "127.0.0.1:5000/app:1".into(),
            ..workspace_spec("w", &[])
        })),
    )
    .await
    .unwrap();
    ask(
        &service,
        &agent("h2"),
        Request::Agent(AgentRequest::Register(crate::service::testing::info("h2"))),
    )
    .await
    .unwrap();
    // No credential stored yet: none.
    match ask(&service, &agent("h1"), ask_for("w", "127.0.0.1:5000")).await {
        Ok(Response::Credential(None)) => {}
        other => panic!("{other:?}"),
    }
    ask(
        &service,
        &admin(),
        set(registry("reg", "127.0.0.1:5000"), "pull-secret"),
    )
    .await
    .unwrap();
    match ask(&service, &agent("h1"), ask_for("w", "127.0.0.1:5000")).await {
        Ok(Response::Credential(Some(granted))) => {
            assert_eq!(granted.name, "reg");
            assert_eq!(granted.username, "bot");
            assert_eq!(granted.secret.expose(), "pull-secret");
        }
        other => panic!("{other:?}"),
    }
    let record = records(&service).await.remove(0);
    assert_eq!(record.last_used_by, Some(HostId::new("h1").unwrap()));
    let cases = [
        ("another host", agent("h2"), ask_for("w", "127.0.0.1:5000")),
        (
            "a registry its image does not use",
            agent("h1"),
            ask_for("w", "evil.example.com"),
        ),
        (
            "a workspace that does not exist",
            agent("h1"),
            ask_for("nope", "127.0.0.1:5000"),
        ),
    ];
    for (what, who, request) in cases {
        assert_eq!(
            code(ask(&service, &who, request).await),
            Some(ErrorCode::PermissionDenied),
            "{what}"
        );
    }
    // An admin is no agent.
    assert_eq!(
        code(ask(&service, &admin(), ask_for("w", "127.0.0.1:5000")).await),
        Some(ErrorCode::PermissionDenied)
    );
}

/// A git credential goes to an agent only for the repository its own workspace checks out.
#[tokio::test]
async fn an_agent_gets_a_git_credential_only_for_its_workspace_repository() {
    let (_dir, _node, service) = one_node_with_h1().await;
    let key = Key::generate().unwrap();
    let service = service.with_credentials(store_of(ring(&[&key])).0);
    let repo = "https://git.example.com/team/app.git";
    ask(
        &service,
        &user(Role::User),
        ws(WorkspaceRequest::Create(WorkspaceSpec {
            repo: Some(nexus_protocol::git::RepoSource {
                url: repo.into(),
                base: nexus_protocol::git::RepoBase::Default,
            }),
            ..workspace_spec("w", &[])
        })),
    )
    .await
    .unwrap();
    let spec = CredentialSpec {
        name: "team".into(),
        kind: CredentialKind::Git,
        scope: "https://git.example.com/team/".into(),
        username: "bot".into(),
    };
    ask(&service, &admin(), set(spec, "git-token"))
        .await
        .unwrap();
    let git = |url: &str| {
        Request::Agent(AgentRequest::Credential(CredentialAsk {
            workspace: "w".parse().unwrap(),
            purpose: CredentialPurpose::Git { url: url.into() },
        }))
    };
    match ask(&service, &agent("h1"), git(repo)).await {
        Ok(Response::Credential(Some(granted))) => {
            assert_eq!(granted.name, "team");
            assert_eq!(granted.secret.expose(), "git-token");
        }
        other => panic!("{other:?}"),
    }
    // Another repository under the same prefix is not what the workspace uses.
    assert_eq!(
        code(
            ask(
                &service,
                &agent("h1"),
                git("https://git.example.com/team/other.git")
            )
            .await
        ),
        Some(ErrorCode::PermissionDenied)
    );
}

#[tokio::test]
async fn a_key_rotation_reseals_every_record_under_the_newest_key() {
    let (_dir, _node, service) = one_node().await;
    let old = Key::generate().unwrap();
    let new = Key::generate().unwrap();
    let (service_store, store) = store_of(ring(&[&old]));
    let service = service.with_credentials(service_store);
    crate::service::testing::leading(&service).await;
    for name in ["a", "b", "c"] {
        ask(
            &service,
            &admin(),
            set(
                registry(name, &format!("{name}.example.com")),
                &format!("secret-{name}"),
            ),
        )
        .await
        .unwrap();
    }
    // The new key is added to the file and reloaded; new records seal under it.
    store.replace(Some(ring(&[&old, &new])));
    ask(
        &service,
        &admin(),
        set(registry("d", "d.example.com"), "secret-d"),
    )
    .await
    .unwrap();
    match ask(
        &service,
        &admin(),
        Request::Admin(AdminRequest::CredentialKeys),
    )
    .await
    {
        Ok(Response::CredentialKeys { keys, .. }) => {
            assert_eq!(keys, vec![old.id().to_string(), new.id().to_string()]);
        }
        other => panic!("{other:?}"),
    }
    match ask(
        &service,
        &admin(),
        Request::Admin(AdminRequest::RotateCredentialsKey),
    )
    .await
    {
        Ok(Response::KeysRotated(report)) => {
            assert_eq!(report.key_id, new.id());
            assert_eq!(report.reencrypted, 3);
            assert_eq!(report.already, 1);
        }
        other => panic!("{other:?}"),
    }
    // The old key can go: every record opens with the new one alone.
    let only_new = ring(&[&new]);
    for record in records(&service).await {
        let secret = seal::open(&only_new, &record.spec, &record.sealed).unwrap();
        assert_eq!(secret.expose(), format!("secret-{}", record.spec.name));
    }
    // With a key file that lacks a record's key, opening says which key is missing.
    store.replace(Some(ring(&[&old])));
    let error = ask(
        &service,
        &admin(),
        Request::Admin(AdminRequest::RotateCredentialsKey),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::CredentialsKeyMissing);
    assert!(error.message.contains(new.id()), "{error:?}");
}
