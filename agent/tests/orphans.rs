//! Orphans on the hollow runtime: a desired state that stops naming a workspace (as after a
//! restore from an older backup) leaves its container running, the agent's endpoint reports it
//! to admins, and removes it only on an admin's word and only while it is an orphan.

use std::sync::Arc;

use crate::common::{Agent, assignment, desired, unique_host};
use nexus_agent::endpoint::Endpoint;
use nexus_agent::runtime::hollow::{HollowConfig, HollowRuntime};
use nexus_agent::runtime::{ContainerStatus, Runtime};
use nexus_protocol::RequestId;
use nexus_protocol::error::ErrorCode;
use nexus_protocol::identity::{Identity, Role};
use nexus_protocol::message::{DesiredRun, HostRequest, Request, Response};
use nexus_protocol::transport::{Handler, Peer, Reply};
use tokio::sync::watch;

fn peer(role: Role) -> Peer {
    Peer {
        identity: Identity::User {
            name: "ada".parse().unwrap(),
            role,
        },
        address: "127.0.0.1:1".parse().unwrap(),
        software: "test".into(),
    }
}

async fn ask<R: Runtime>(
    endpoint: &Endpoint<R>,
    who: &Peer,
    request: HostRequest,
) -> Result<Response, nexus_protocol::error::WireError> {
    match endpoint
        .handle(who, RequestId::from_u128(1), Request::Host(request))
        .await
    {
        Reply::Once(answer) => answer,
        Reply::Stream(_) => panic!("a stream"),
    }
}

#[tokio::test]
async fn an_orphan_keeps_running_is_reported_and_goes_only_on_an_admins_word() {
    let host = unique_host("orphans");
    let runtime = Arc::new(HollowRuntime::new(host.clone(), HollowConfig::default()));
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::new(runtime.clone(), &host, dir.path(), 4);
    let a = assignment("a", 1, DesiredRun::Running, &[], "img", &[]);
    let b = assignment("b", 1, DesiredRun::Running, &[], "img", &[]);
    agent.reconciler.set_desired(desired(1, vec![a.clone(), b]));
    agent.settle().await;
    // The coordinators stop naming b, as after a restore from a backup made before b.
    let restored = desired(2, vec![a]);
    agent.reconciler.set_desired(restored.clone());
    agent.settle().await;
    let containers = runtime.list().await.unwrap();
    assert_eq!(containers.len(), 2, "b's container is left alone");
    assert!(
        containers
            .iter()
            .all(|c| c.status == ContainerStatus::Running)
    );

    let (_, desired_now) = watch::channel(Some(restored));
    let endpoint = Endpoint::new(Identity::Agent(host.clone()), runtime.clone(), desired_now);
    let admin = peer(Role::Admin);
    let Response::Orphans(orphans) = ask(&endpoint, &admin, HostRequest::Orphans).await.unwrap()
    else {
        panic!("not orphans");
    };
    assert_eq!(orphans.len(), 1, "{orphans:?}");
    assert_eq!(orphans[0].workspace, "b");
    assert_eq!(orphans[0].host, host);
    let b_container = orphans[0].container.clone();
    let a_container = format!("nexus.{host}.a.g1");

    let user = ask(&endpoint, &peer(Role::User), HostRequest::Orphans).await;
    assert_eq!(user.unwrap_err().code, ErrorCode::PermissionDenied);
    let user = ask(
        &endpoint,
        &peer(Role::User),
        HostRequest::RemoveOrphan {
            container: b_container.clone(),
        },
    )
    .await;
    assert_eq!(user.unwrap_err().code, ErrorCode::PermissionDenied);
    let named = ask(
        &endpoint,
        &admin,
        HostRequest::RemoveOrphan {
            container: a_container,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(named.code, ErrorCode::InvalidArgument);
    assert!(named.message.contains("not an orphan"), "{}", named.message);
    assert_eq!(
        runtime.list().await.unwrap().len(),
        2,
        "nothing was removed"
    );

    let removed = ask(
        &endpoint,
        &admin,
        HostRequest::RemoveOrphan {
            container: b_container.clone(),
        },
    )
    .await;
    assert_eq!(removed.unwrap(), Response::Ack);
    let left: Vec<String> = runtime
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.workspace.to_string())
        .collect();
    assert_eq!(left, ["a"]);
    let Response::Orphans(orphans) = ask(&endpoint, &admin, HostRequest::Orphans).await.unwrap()
    else {
        panic!("not orphans");
    };
    assert!(orphans.is_empty());
    let again = ask(
        &endpoint,
        &admin,
        HostRequest::RemoveOrphan {
            container: b_container,
        },
    )
    .await;
    assert_eq!(again.unwrap_err().code, ErrorCode::InvalidArgument);
}
