//! A real `nexus-agent` process with real coordinators: it registers, shows up with live stats,
//! runs on the Docker engine what the coordinator assigns it and reports it back through Raft,
//! survives SIGKILL without duplicating a container, and follows the leader of a three-node
//! cluster, moving when the leader dies.

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::Duration;

use nexus_protocol::HostId;
use nexus_protocol::message::{AdminRequest, DesiredRun, HostView, Request, Response};
use nexus_protocol::model::WorkspaceState;
use nexus_tests::cluster::{TestCluster, admin_request};
use nexus_tests::docker::{HostCleanup, containers_of};
use nexus_tests::eventually;
use nexus_tests::inproc::InProcessCoordinator;
use nexus_tests::pki::TestPki;
use nexus_tests::process::AgentProcess;

const IMAGE: &str = "nexus-test/busybox:latest";

async fn hosts(pki: &TestPki, address: std::net::SocketAddr) -> Vec<HostView> {
    match admin_request(
        pki,
        address,
        Request::Stale(nexus_protocol::message::StaleRead::Admin(
            AdminRequest::Hosts,
        )),
    )
    .await
    {
        Ok(Response::Hosts(hosts)) => hosts,
        other => panic!("unexpected answer {other:?}"),
    }
}

/// A port of the agent's default range (20000–32000) that nothing listens on now.
fn free_port_in_range() -> u16 {
    let start = 20_000 + u16::try_from(std::process::id() % 10_000).unwrap();
    (start..=32_000)
        .chain(20_000..start)
        .find(|&port| TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok())
        .expect("a free port in 20000-32000")
}

async fn state_of(
    coordinator: &InProcessCoordinator,
    name: &'static str,
) -> Option<WorkspaceState> {
    coordinator
        .read(move |state| {
            state
                .workspaces()
                .get(&name.parse().unwrap())
                .map(|w| w.state)
        })
        .await
}

#[tokio::test]
async fn an_agent_runs_what_it_is_assigned_on_docker_reports_it_and_survives_sigkill() {
    let pki = TestPki::new();
    let coordinator = InProcessCoordinator::start(&pki).await;
    let host = format!("e2e-{}", std::process::id());
    let host_id: HostId = host.parse().unwrap();
    let _cleanup = HostCleanup(host.clone());
    let flags = ["--runtime", "docker", "--stats-interval", "0.3"];
    let mut agent = AgentProcess::start(&pki, &host, &[coordinator.address], &flags);

    // Registered, with live stats from sysinfo.
    let view = eventually(
        "the host with its stats",
        Duration::from_secs(20),
        || async {
            hosts(&pki, coordinator.address)
                .await
                .into_iter()
                .find(|h| h.info.host_id == host_id && h.stats.is_some())
        },
    )
    .await;
    let stats = view.stats.unwrap();
    assert!(stats.memory_total_bytes > 0 && stats.memory_used_bytes > 0);
    assert!(stats.disk_total_bytes > 0);
    assert!(view.info.disk_bytes > 0 && view.info.cpus >= 1);

    let port = free_port_in_range();
    coordinator
        .place(
            &host_id,
            "web",
            IMAGE,
            &[(8080, port)],
            &["httpd", "-f", "-p", "8080"],
        )
        .await
        .unwrap();
    eventually(
        "web running, as the agent reports",
        Duration::from_secs(20),
        || async {
            (state_of(&coordinator, "web").await == Some(WorkspaceState::Running)).then_some(())
        },
    )
    .await;
    eventually(
        "the published port to answer",
        Duration::from_secs(5),
        || async { TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok() },
    )
    .await;
    let first = containers_of(&host);
    assert_eq!(first.len(), 1);

    // SIGKILL the agent and start it again: it adopts the container, makes no second one, and
    // the workspace is still running.
    agent.process.kill();
    let agent = AgentProcess::start(&pki, &host, &[coordinator.address], &flags);
    eventually(
        "the restarted agent to heartbeat",
        Duration::from_secs(20),
        || async {
            let log = agent.process.log();
            log.contains("registered; watching the desired state")
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(containers_of(&host), first, "{}", agent.process.log());
    assert_eq!(
        state_of(&coordinator, "web").await,
        Some(WorkspaceState::Running)
    );
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok());

    // No coordinator at all: what runs keeps running.
    let address = coordinator.address;
    coordinator.stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(containers_of(&host), first);
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok());
    assert!(
        agent.process.log().contains("coordinator link lost"),
        "{}",
        agent.process.log()
    );
    let coordinator = InProcessCoordinator::start_on(&pki, address).await;

    coordinator
        .set_run("web", DesiredRun::Stopped)
        .await
        .unwrap();
    eventually("web stopped", Duration::from_secs(20), || async {
        (state_of(&coordinator, "web").await == Some(WorkspaceState::Stopped)).then_some(())
    })
    .await;
    coordinator.destroy("web").await.unwrap();
    eventually(
        "web gone and its port free",
        Duration::from_secs(20),
        || async {
            let ports = coordinator.read(|state| state.ports().len()).await;
            (state_of(&coordinator, "web").await.is_none() && ports == 0).then_some(())
        },
    )
    .await;
    assert!(containers_of(&host).is_empty());
    coordinator.stop().await;
}

#[tokio::test]
async fn an_agent_heartbeats_the_leader_and_moves_when_the_leader_dies() {
    let pki = TestPki::new();
    let mut cluster = TestCluster::start(&pki, 3, &[]).await;
    let leader = cluster.leader(&pki, Duration::from_secs(20)).await.node;
    let leader_index = cluster.index_of(leader.get());
    // The leader last in the list: the agent must be sent there.
    let mut addresses: Vec<_> = cluster.members.iter().map(|m| m.address).collect();
    let leader_address = addresses.remove(leader_index);
    addresses.push(leader_address);
    let agent = AgentProcess::start(&pki, "follower", &addresses, &[]);

    let heard_by = |address| {
        let pki = &pki;
        async move {
            hosts(pki, address)
                .await
                .into_iter()
                .find(|h| h.info.host_id.as_str() == "follower")
                .and_then(|h| h.last_heartbeat)
        }
    };
    eventually(
        "the leader to hear heartbeats",
        Duration::from_secs(20),
        || heard_by(leader_address),
    )
    .await;
    // Liveness is the leader's alone: the followers keep none.
    for address in &addresses[..2] {
        assert_eq!(heard_by(*address).await, None);
    }

    cluster.kill(leader_index);
    let new_leader = cluster.leader(&pki, Duration::from_secs(20)).await.node;
    let new_address = cluster.members[cluster.index_of(new_leader.get())].address;
    eventually(
        "the new leader to hear heartbeats",
        Duration::from_secs(30),
        || heard_by(new_address),
    )
    .await;
    assert!(
        agent.process.log().contains("following the leader"),
        "{}",
        agent.process.log()
    );
}
