//! Host maintenance through the agent's endpoint on the hollow runtime's fake images: an admin
//! or a coordinator (the leader's schedule) may ask for a run, a user may not, and a coordinator
//! may ask nothing else of the endpoint. The image a workspace's container runs stays.

use std::sync::Arc;

use crate::common::{Agent, assignment, desired, unique_host};
use nexus_agent::endpoint::Endpoint;
use nexus_agent::runtime::hollow::{HollowConfig, HollowRuntime};
use nexus_agent::runtime::{ImageInfo, Runtime};
use nexus_protocol::error::ErrorCode;
use nexus_protocol::identity::{Identity, Role};
use nexus_protocol::maintenance::{MaintenanceRequest, ReclaimedKind};
use nexus_protocol::message::{DesiredRun, HostRequest, Request, Response};
use nexus_protocol::transport::{Handler, Peer, Reply};
use nexus_protocol::{NodeId, RequestId};
use tokio::sync::watch;

fn peer(identity: Identity) -> Peer {
    Peer {
        identity,
        address: "127.0.0.1:1".parse().unwrap(),
        software: "test".into(),
    }
}

fn user(role: Role) -> Peer {
    peer(Identity::User {
        name: "ada".parse().unwrap(),
        role,
    })
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

fn image(id: &str, tags: &[&str]) -> ImageInfo {
    ImageInfo {
        id: id.into(),
        tags: tags.iter().map(ToString::to_string).collect(),
        digests: Vec::new(),
        bytes: 100,
        containers: None,
    }
}

#[tokio::test]
async fn admins_and_coordinators_prune_and_the_image_in_use_stays() {
    let host = unique_host("maint");
    let runtime = Arc::new(HollowRuntime::new(host.clone(), HollowConfig::default()));
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::new(runtime.clone(), &host, dir.path(), 4);
    // The workspace runs the image by id: it has no tag, yet its container uses it.
    let a = assignment("a", 1, DesiredRun::Running, &[], "sha256:inuse", &[]);
    let state = desired(1, vec![a]);
    agent.reconciler.set_desired(state.clone());
    agent.settle().await;
    runtime.set_images(
        vec![
            image("sha256:inuse", &[]),
            image("sha256:old", &[]),
            image("sha256:tagged", &["dev:latest"]),
        ],
        Vec::new(),
    );
    let (_, desired_now) = watch::channel(Some(state));
    let endpoint = Endpoint::new(Identity::Agent(host.clone()), runtime.clone(), desired_now);
    let maintain = |dry_run| {
        HostRequest::Maintain(MaintenanceRequest {
            dry_run,
            ..MaintenanceRequest::ALL
        })
    };

    let refused = ask(&endpoint, &user(Role::User), maintain(true)).await;
    assert_eq!(refused.unwrap_err().code, ErrorCode::PermissionDenied);
    let coordinator = peer(Identity::Coordinator(NodeId::new(1).unwrap()));
    for request in [HostRequest::Networks, HostRequest::Orphans] {
        let refused = ask(&endpoint, &coordinator, request).await;
        assert_eq!(refused.unwrap_err().code, ErrorCode::PermissionDenied);
    }

    let Response::Maintained(dry) = ask(&endpoint, &user(Role::Admin), maintain(true))
        .await
        .unwrap()
    else {
        panic!("no report");
    };
    assert!(dry.dry_run);
    assert_eq!(dry.source, format!("agent-{host}"));
    let names: Vec<&str> = dry.removed.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["sha256:old"]);
    assert_eq!(
        runtime.images().await.unwrap().len(),
        3,
        "a dry run removed something"
    );

    let Response::Maintained(run) = ask(&endpoint, &coordinator, maintain(false)).await.unwrap()
    else {
        panic!("no report");
    };
    assert_eq!(run.removed.len(), 1);
    assert_eq!(run.removed[0].kind, ReclaimedKind::Image);
    assert_eq!(run.bytes(), 100);
    let left: Vec<String> = runtime
        .images()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(left, ["sha256:inuse", "sha256:tagged"]);
}
