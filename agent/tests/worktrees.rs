//! The reconciler makes a workspace's worktree before its container and removes it at
//! destroy; a git failure fails the launch with its code (on the hollow runtime, real git).

use std::sync::Arc;

use crate::common::{Agent, assignment, desired, name, observed, unique_host};
use nexus_agent::cache::Cache;
use nexus_agent::endpoint::Endpoint;
use nexus_agent::git::host::GitHost;
use nexus_agent::reconcile::Reconciler;
use nexus_agent::runtime::hollow::{HollowConfig, HollowRuntime};
use nexus_fixtures::githttp::{GitServer, make_repo};
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::git::{RepoBase, RepoSource};
use nexus_protocol::identity::{Identity, Role};
use nexus_protocol::message::{Assignment, DesiredRun, HostRequest, Request, Response};
use nexus_protocol::model::WorkspaceState;
use nexus_protocol::transport::{Handler, Peer, Reply};
use nexus_protocol::{NodeId, RequestId};

fn agent(test: &str, dir: &std::path::Path) -> (Agent<HollowRuntime>, Arc<GitHost>) {
    std::fs::create_dir_all(dir).unwrap();
    let host = unique_host(test);
    let runtime = Arc::new(HollowRuntime::new(host.clone(), HollowConfig::default()));
    let git = GitHost::new(dir, None);
    let (reconciler, reports) = Reconciler::new(runtime, host, 4, Cache::new(dir));
    let reconciler = reconciler
        .with_files(dir.join("workspaces"))
        .with_git(git.clone());
    (
        Agent {
            reconciler,
            reports,
        },
        git,
    )
}

fn with_repo(workspace: &str, run: DesiredRun, url: &str, base: RepoBase) -> Assignment {
    let mut assignment = assignment(workspace, 1, run, &[], "img", &[]);
    assignment.spec.repo = Some(RepoSource {
        url: url.into(),
        base,
    });
    assignment
}

#[tokio::test]
async fn a_workspace_with_a_repository_gets_its_worktree_and_loses_it_at_destroy() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = dir.path().join("upstream.git");
    let [_, main, _] = make_repo(&upstream);
    let url = format!("file://{}", upstream.display());
    let data = dir.path().join("data");
    let (mut agent, git) = agent("wt", &data);
    agent.reconciler.set_desired(desired(
        1,
        vec![with_repo("w", DesiredRun::Running, &url, RepoBase::Default)],
    ));
    let report = agent.settle().await;
    assert_eq!(observed(&report, "w").state, WorkspaceState::Running);
    let files = data.join("workspaces/w");
    assert!(files.join(".git").is_file());
    assert!(files.join("README.md").is_file());
    let record = git.layout().read_record(&name("w")).unwrap().unwrap();
    assert_eq!(record.base_commit, main);
    agent.reconciler.set_desired(desired(
        2,
        vec![with_repo("w", DesiredRun::Absent, &url, RepoBase::Default)],
    ));
    agent.settle().await;
    assert!(!files.exists());
    assert!(git.layout().read_record(&name("w")).unwrap().is_none());
    let worktrees = record.mirror.join("worktrees");
    assert!(!worktrees.join("w").exists());
}

#[tokio::test]
async fn a_git_failure_fails_the_launch_with_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let server = GitServer::start();
    let url = server.repo("app");
    server.require("bot", "pw");
    let data = dir.path().join("data");
    let (mut agent, _) = agent("wtfail", &data);
    agent.reconciler.set_desired(desired(
        1,
        vec![
            with_repo("locked", DesiredRun::Running, &url, RepoBase::Default),
            with_repo(
                "nobranch",
                DesiredRun::Running,
                &format!("file://{}", server.path("app").display()),
                RepoBase::Branch("nope".into()),
            ),
        ],
    ));
    let report = agent.settle().await;
    // Refused credentials: failed at once, not retried by itself.
    let locked = observed(&report, "locked");
    assert_eq!(locked.state, WorkspaceState::Failed);
    assert_eq!(
        locked.error.as_ref().map(|e| e.code),
        Some(ErrorCode::GitAuthFailed)
    );
    // Any other git failure is retried (the workspace is still starting).
    let missing = observed(&report, "nobranch");
    assert_eq!(missing.state, WorkspaceState::Starting);
    let error = missing.error.as_ref().unwrap();
    assert_eq!(error.code, ErrorCode::GitFailed);
    assert!(error.message.contains("nope"), "{}", error.message);
}

fn peer(identity: Identity) -> Peer {
    Peer {
        identity,
        address: "127.0.0.1:1".parse().unwrap(),
        software: "test".into(),
    }
}

fn user(name: &str, role: Role) -> Peer {
    peer(Identity::User {
        name: name.parse().unwrap(),
        role,
    })
}

async fn status_for(
    endpoint: &Endpoint<HollowRuntime>,
    who: &Peer,
    workspace: &str,
) -> Result<Response, WireError> {
    let request = Request::Host(HostRequest::WorktreeStatus(name(workspace)));
    match endpoint.handle(who, RequestId::from_u128(1), request).await {
        Reply::Once(answer) => answer,
        Reply::Stream(_) => panic!("a stream"),
    }
}

#[tokio::test]
async fn the_worktrees_status_is_for_its_owner_an_admin_or_a_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = dir.path().join("upstream.git");
    let [_, main, _] = make_repo(&upstream);
    let url = format!("file://{}", upstream.display());
    let data = dir.path().join("data");
    let host = unique_host("wtstatus");
    let runtime = Arc::new(HollowRuntime::new(host.clone(), HollowConfig::default()));
    std::fs::create_dir_all(&data).unwrap();
    let git = GitHost::new(&data, None);
    let (reconciler, reports) =
        Reconciler::new(runtime.clone(), host.clone(), 4, Cache::new(&data));
    let mut agent = Agent {
        reconciler: reconciler
            .with_files(data.join("workspaces"))
            .with_git(git.clone()),
        reports,
    };
    let state = desired(
        1,
        vec![with_repo("w", DesiredRun::Running, &url, RepoBase::Default)],
    );
    agent.reconciler.set_desired(state.clone());
    agent.settle().await;
    std::fs::write(data.join("workspaces/w/new.txt"), "x").unwrap();
    let (_, desired_now) = tokio::sync::watch::channel(Some(state));
    let endpoint = Endpoint::new(Identity::Agent(host), runtime, desired_now)
        .with_files(data.join("workspaces"))
        .with_git(git);
    let coordinator = peer(Identity::Coordinator(NodeId::new(1).unwrap()));
    // The owner (ada), an admin and a coordinator are answered; another user is not.
    for who in [
        user("ada", Role::User),
        user("root", Role::Admin),
        coordinator,
    ] {
        let Response::Worktree {
            facts: Some(facts),
            status: Some(status),
        } = status_for(&endpoint, &who, "w").await.unwrap()
        else {
            panic!("no status for {who:?}");
        };
        assert_eq!(facts.branch, "nexus/w");
        assert_eq!(
            (status.head.as_str(), status.dirty_files),
            (main.as_str(), 1)
        );
    }
    let refused = status_for(&endpoint, &user("bob", Role::User), "w").await;
    assert_eq!(refused.unwrap_err().code, ErrorCode::PermissionDenied);
    let coordinator = peer(Identity::Coordinator(NodeId::new(1).unwrap()));
    let missing = status_for(&endpoint, &coordinator, "other").await;
    assert_eq!(missing.unwrap_err().code, ErrorCode::WorkspaceNotFound);
}
