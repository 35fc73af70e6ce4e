//! What the agent's endpoint notes of a workspace's use, on the hollow runtime: an exec and a
//! logs read are noted for the workspace they used; a refused request is not.

use std::sync::Arc;

use crate::common::{Agent, assignment, desired, name, unique_host};
use nexus_agent::activity::Activities;
use nexus_agent::endpoint::Endpoint;
use nexus_agent::runtime::hollow::{HollowConfig, HollowRuntime};
use nexus_protocol::RequestId;
use nexus_protocol::identity::{Identity, Role};
use nexus_protocol::message::{DesiredRun, HostRequest, Request};
use nexus_protocol::model::ActivityKind;
use nexus_protocol::transport::{Handler, Peer, Reply};
use tokio::sync::watch;

fn user(name: &str) -> Peer {
    Peer {
        identity: Identity::User {
            name: name.parse().unwrap(),
            role: Role::User,
        },
        address: "127.0.0.1:1".parse().unwrap(),
        software: "test".into(),
    }
}

async fn ok(endpoint: &Endpoint<HollowRuntime>, who: &Peer, request: HostRequest) -> bool {
    match endpoint
        .handle(who, RequestId::from_u128(1), Request::Host(request))
        .await
    {
        Reply::Once(answer) => answer.is_ok(),
        Reply::Stream(_) => true,
    }
}

#[tokio::test]
async fn exec_and_logs_are_noted_for_their_workspace_and_refusals_are_not() {
    let host = unique_host("activity");
    let runtime = Arc::new(HollowRuntime::new(host.clone(), HollowConfig::default()));
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::new(runtime.clone(), &host, dir.path(), 4);
    let state = desired(
        1,
        vec![assignment("w", 1, DesiredRun::Running, &[], "img", &[])],
    );
    agent.reconciler.set_desired(state.clone());
    agent.settle().await;
    let (_, desired_now) = watch::channel(Some(state));
    let activities = Activities::default();
    let endpoint = Endpoint::new(Identity::Agent(host), runtime, desired_now)
        .with_activity(activities.clone());
    let exec = |workspace: &str| HostRequest::Exec {
        workspace: workspace.parse().unwrap(),
        command: vec!["true".into()],
    };

    // Refused: another user's workspace, a workspace not on this host, an empty command.
    assert!(!ok(&endpoint, &user("bob"), exec("w")).await);
    assert!(!ok(&endpoint, &user("ada"), exec("elsewhere")).await);
    let empty = HostRequest::Exec {
        workspace: name("w"),
        command: vec![],
    };
    assert!(!ok(&endpoint, &user("ada"), empty).await);
    assert!(activities.drain().is_empty(), "a refusal is no use");

    assert!(ok(&endpoint, &user("ada"), exec("w")).await);
    let noted = activities.drain();
    assert_eq!(noted.len(), 1, "{noted:?}");
    assert_eq!(
        (noted[0].0.as_str(), noted[0].1.kind),
        ("w", ActivityKind::Exec)
    );

    let logs = HostRequest::Logs {
        workspace: name("w"),
        tail: 10,
        follow: false,
    };
    assert!(ok(&endpoint, &user("ada"), logs).await);
    let noted = activities.drain();
    assert_eq!(
        noted.iter().map(|(_, a)| a.kind).collect::<Vec<_>>(),
        [ActivityKind::Logs]
    );
}
