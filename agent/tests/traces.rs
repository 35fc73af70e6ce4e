//! The agent's work on a workspace is traced under the request that caused it: the reconciler
//! runs a workspace's steps in hops under the cause the coordinator named, each engine call in
//! a hop whose outcome carries the error's code.

use std::sync::Arc;
use std::time::Duration;

use crate::common::{Agent, assignment, desired, name, unique_host};
use nexus_agent::hops::Causes;
use nexus_agent::runtime::hollow::{HollowConfig, HollowRuntime};
use nexus_protocol::RequestId;
use nexus_protocol::hop::capture::{self, CapturedHop};
use nexus_protocol::message::DesiredRun;
use tokio::sync::watch;

fn running(workspace: &str) -> nexus_protocol::message::Assignment {
    assignment(workspace, 1, DesiredRun::Running, &[], "img", &[])
}

/// `(hop, kind, outcome)` of the hops of `workspace` under `request` (`None`: under none).
fn hops_of(
    hops: &[CapturedHop],
    workspace: &str,
    request: Option<RequestId>,
) -> Vec<(String, String, String)> {
    let request = request.map(|id| id.to_string());
    hops.iter()
        .filter(|hop| hop.field("workspace") == Some(workspace))
        .filter(|hop| hop.field("request_id") == request.as_deref())
        .map(|hop| {
            let text = |field| hop.field(field).unwrap_or("-").to_string();
            (hop.name().to_string(), text("kind"), text("outcome"))
        })
        .collect()
}

fn hop(name: &str, kind: &str, outcome: &str) -> (String, String, String) {
    (name.into(), kind.into(), outcome.into())
}

#[tokio::test]
async fn a_workspaces_steps_run_under_the_request_that_caused_them() {
    let (subscriber, captured) = capture::subscriber();
    let _capturing = tracing::subscriber::set_default(subscriber);
    let host = unique_host("traced");
    let config = HollowConfig {
        start_latency: Duration::from_millis(1),
        ..HollowConfig::default()
    };
    let runtime = Arc::new(HollowRuntime::new(host.clone(), config));
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::new(runtime, &host, dir.path(), 4);
    let create = RequestId::random();
    let (_causes, causes) = watch::channel(Causes::new(1, vec![(name("api"), create)]));
    agent.reconciler = agent.reconciler.with_causes(causes);
    agent
        .reconciler
        .set_desired(desired(1, vec![running("api"), running("web")]));
    agent.settle().await;
    let hops = captured.hops();
    // In the order they closed: the engine's calls, inside the step, inside the pass's hop.
    assert_eq!(
        hops_of(&hops, "api", Some(create)),
        vec![
            hop("agent.engine", "pull", "ok"),
            hop("agent.engine", "create", "ok"),
            hop("agent.engine", "start", "ok"),
            hop("agent.step", "launch", "ok"),
            hop("agent.reconcile", "launch", "ok"),
        ]
    );
    // A workspace with no known cause is traced all the same, under no request.
    assert_eq!(hops_of(&hops, "web", None).len(), 5, "{hops:?}");
    assert!(hops_of(&hops, "web", Some(create)).is_empty());
}

#[tokio::test]
async fn a_failed_engine_call_ends_its_hops_with_the_reported_code() {
    let (subscriber, captured) = capture::subscriber();
    let _capturing = tracing::subscriber::set_default(subscriber);
    let host = unique_host("traced-failure");
    let config = HollowConfig {
        failure_rate: 1.0,
        ..HollowConfig::default()
    };
    let runtime = Arc::new(HollowRuntime::new(host.clone(), config));
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::new(runtime, &host, dir.path(), 4);
    let create = RequestId::random();
    let (_causes, causes) = watch::channel(Causes::new(2, vec![(name("api"), create)]));
    agent.reconciler = agent.reconciler.with_causes(causes);
    agent
        .reconciler
        .set_desired(desired(2, vec![running("api")]));
    agent.reconciler.pass().await;
    let hops = hops_of(&captured.hops(), "api", Some(create));
    let failed = "WORKSPACE_START_FAILED: simulated failure to create the container";
    assert_eq!(
        hops,
        vec![
            hop("agent.engine", "pull", "ok"),
            hop("agent.engine", "create", failed),
            hop("agent.step", "launch", failed),
            hop("agent.reconcile", "launch", failed),
        ]
    );
}

#[tokio::test]
async fn causes_of_another_version_trace_nothing() {
    let (subscriber, captured) = capture::subscriber();
    let _capturing = tracing::subscriber::set_default(subscriber);
    let host = unique_host("traced-stale");
    let runtime = Arc::new(HollowRuntime::new(host.clone(), HollowConfig::default()));
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::new(runtime, &host, dir.path(), 4);
    let create = RequestId::random();
    // Causes sent with version 1, while the reconciler acts on version 2.
    let (_causes, causes) = watch::channel(Causes::new(1, vec![(name("api"), create)]));
    agent.reconciler = agent.reconciler.with_causes(causes);
    agent
        .reconciler
        .set_desired(desired(2, vec![running("api")]));
    agent.settle().await;
    let hops = captured.hops();
    assert!(hops_of(&hops, "api", Some(create)).is_empty());
    assert!(!hops_of(&hops, "api", None).is_empty());
}
