//! The service's tests' fixtures: a one-node cluster on a real store, callers of each kind, and
//! requests.

use std::time::Duration;

use nexus_protocol::clock;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::{Identity, Role};
use nexus_protocol::message::{AgentRequest, Request, Response, WorkspaceRequest};
use nexus_protocol::model::{HostInfo, WorkspaceSpec};
use nexus_protocol::pki::{DEFAULT_CA_VALIDITY, PkiDir, SubjectName, Validity};
use nexus_protocol::transport::{Credentials, Peer};
use nexus_protocol::{HostId, NodeId, RequestId, UserName};

use super::Service;
use crate::{Config, Node};

/// A one-node cluster on a real store in a temporary directory.
pub(super) async fn one_node() -> (tempfile::TempDir, Node, Service) {
    let dir = tempfile::tempdir().unwrap();
    let pki = PkiDir::new(dir.path().join("pki"));
    pki.init(clock::now(), DEFAULT_CA_VALIDITY, false).unwrap();
    let identity = Identity::Coordinator(NodeId::new(1).unwrap());
    pki.issue(
        &identity,
        &[SubjectName::Ip([127, 0, 0, 1].into())],
        Validity::starting(clock::now(), Duration::from_secs(3600)),
        false,
    )
    .unwrap();
    let credentials = Credentials::from_pki_dir(pki.path(), &identity).unwrap();
    let mut config = Config::from_args(crate::config::Args {
        node_id: Some(NodeId::new(1).unwrap()),
        listen: Some("127.0.0.1:1".parse().unwrap()),
        data_dir: Some(dir.path().join("data")),
        tls_dir: Some(pki.path().to_path_buf()),
        ..Default::default()
    })
    .unwrap();
    config.driver.tick = Duration::from_millis(10);
    let node = Node::start(&config, &credentials).unwrap();
    let service = Service::new(identity, node.cluster.clone());
    (dir, node, service)
}

/// A one-node cluster that leads, with host h1 registered.
pub(super) async fn one_node_with_h1() -> (tempfile::TempDir, Node, Service) {
    let (dir, node, service) = one_node().await;
    leading(&service).await;
    register(&service, "h1").await;
    (dir, node, service)
}

/// The cluster marks `host` down, as its failure detector would.
pub(super) async fn mark_down(service: &Service, host: &str) {
    service
        .propose_own(crate::state::Command::SetHostStatus {
            host: HostId::new(host).unwrap(),
            status: nexus_protocol::model::HostStatus::Down,
        })
        .await
        .unwrap();
}

/// `host`'s agent registers its host, as the fixtures describe it.
pub(super) async fn register(service: &Service, host: &str) {
    ask(
        service,
        &agent(host),
        Request::Agent(AgentRequest::Register(info(host))),
    )
    .await
    .unwrap();
}

/// A one-node cluster that leads, with host h1 registered and a user's workspace `w` placed on
/// it.
pub(super) async fn one_node_with_w_on_h1() -> (tempfile::TempDir, Node, Service) {
    let (dir, node, service) = one_node_with_h1().await;
    ask(
        &service,
        &user(Role::User),
        ws(WorkspaceRequest::Create(workspace_spec("w", &[]))),
    )
    .await
    .unwrap();
    (dir, node, service)
}

/// Waits for the one node to elect itself.
pub(super) async fn leading(service: &Service) {
    for _ in 0..500 {
        if service.cluster.require_leader().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the one-node cluster elected no leader");
}

pub(super) fn peer(identity: Identity) -> Peer {
    Peer {
        identity,
        address: "127.0.0.1:1".parse().unwrap(),
        software: "test".into(),
    }
}

pub(super) fn agent(host: &str) -> Peer {
    peer(Identity::Agent(HostId::new(host).unwrap()))
}

pub(super) fn user(role: Role) -> Peer {
    peer(Identity::User {
        name: UserName::new("alice").unwrap(),
        role,
    })
}

pub(super) fn named(name: &str, role: Role) -> Peer {
    peer(Identity::User {
        name: UserName::new(name).unwrap(),
        role,
    })
}

/// Host `host` as its agent registers it.
pub(super) fn info(host: &str) -> HostInfo {
    nexus_fixtures::host(host)
}

/// A small workspace of image `dev:latest` publishing these container ports.
pub(super) fn workspace_spec(name: &str, ports: &[u16]) -> WorkspaceSpec {
    WorkspaceSpec {
        ports: nexus_fixtures::ports(ports),
        ..nexus_fixtures::spec(name)
    }
}

pub(super) fn ws(request: WorkspaceRequest) -> Request {
    Request::Workspace(request)
}

pub(super) fn code(result: Result<Response, WireError>) -> Option<ErrorCode> {
    result.err().map(|e| e.code)
}

pub(super) async fn ask(
    service: &Service,
    peer: &Peer,
    request: Request,
) -> Result<Response, WireError> {
    service.answer(peer, RequestId::random(), request).await
}

/// Names of each page of a list, and each page's `next`.
pub(super) type Pages = Vec<(Vec<String>, Option<String>)>;

/// A one-node cluster with h1, and ada's a1 and a2 and bob's b1 and b2 on it; also ada, bob and
/// an admin, as callers.
pub(super) async fn one_node_with_four_workspaces() -> (tempfile::TempDir, Node, Service, [Peer; 3])
{
    let (dir, node, service) = one_node_with_h1().await;
    let (ada, bob, admin) = (
        named("ada", Role::User),
        named("bob", Role::User),
        named("root", Role::Admin),
    );
    for (who, name) in [(&bob, "b1"), (&ada, "a2"), (&ada, "a1"), (&bob, "b2")] {
        let create = ws(WorkspaceRequest::Create(workspace_spec(name, &[])));
        ask(&service, who, create).await.unwrap();
    }
    (dir, node, service, [ada, bob, admin])
}

/// The walk of the list by `ListPage`, `limit` a page, as `peer` sees it.
pub(super) async fn walk_pages(service: &Service, peer: &Peer, limit: u32) -> Pages {
    let (mut pages, mut after) = (Vec::new(), None);
    loop {
        let page = ws(WorkspaceRequest::ListPage { after, limit });
        let Response::WorkspacePage { workspaces, next } = ask(service, peer, page).await.unwrap()
        else {
            panic!("not a page")
        };
        assert!(workspaces.len() <= limit.max(1) as usize);
        let names = workspaces.into_iter().map(|w| w.name.to_string()).collect();
        pages.push((names, next.as_ref().map(|n| n.to_string())));
        match next {
            Some(next) => after = Some(next),
            None => return pages,
        }
    }
}
