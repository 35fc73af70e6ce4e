//! State larger than a peer frame, between real `nexus-coordinator` processes on loopback: Raft
//! snapshots, batches of entries and forwarded writes travel in pieces.
//!
//! - A state larger than 16 MiB (workspaces with large environments), with the default frame
//!   limit: a fourth coordinator added with `nexus admin cluster add` catches up from a snapshot
//!   of it and serves the same workspaces.
//! - The same with a frame limit of 64 KiB, cheaply: a registration forwarded by a follower
//!   whose proposal is larger than a frame, and a new member caught up from a snapshot larger
//!   than a frame.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nexus_protocol::error::ErrorDetail;
use nexus_protocol::identity::Role;
use nexus_protocol::message::{
    AdminRequest, AgentRequest, HostView, Request, Response, StaleRead, WorkspaceRequest,
};
use nexus_protocol::model::{HostInfo, WorkspaceSpec};
use nexus_protocol::{ErrorCode, RequestId};
use nexus_tests::cluster::{TestCluster, admin_request};
use nexus_tests::eventually;
use nexus_tests::pki::{self, TestPki};
use nexus_tests::process::{cli_as, connect};

const ELECTION: Duration = Duration::from_secs(20);
const CONVERGE: Duration = Duration::from_secs(60);

/// A host with room for many workspaces.
fn roomy_host(name: &str) -> HostInfo {
    HostInfo {
        cpus: 64,
        memory_bytes: 256 << 30,
        ..nexus_fixtures::host(name)
    }
}

/// Registers `info` at `address`, as its host's agent.
async fn register(pki: &TestPki, info: HostInfo, address: SocketAddr) {
    let connection = connect(pki, &pki::agent(info.host_id.as_str()), address)
        .await
        .unwrap();
    let answer = connection
        .request_with(
            RequestId::random(),
            Request::Agent(AgentRequest::Register(info)),
            Duration::from_secs(30),
        )
        .await;
    assert!(
        matches!(answer, Ok(Response::Registered { .. })),
        "{answer:?}"
    );
}

/// Creates `spec` as user alice through the leader, following `NOT_LEADER`.
async fn create(pki: &TestPki, address: SocketAddr, spec: WorkspaceSpec) {
    let alice = pki::user("alice", Role::Admin);
    let mut address = address;
    let request_id = RequestId::random();
    for _ in 0..10 {
        let connection = connect(pki, &alice, address).await.unwrap();
        let answer = connection
            .request_with(
                request_id,
                Request::Workspace(WorkspaceRequest::Create(spec.clone())),
                Duration::from_secs(30),
            )
            .await;
        match answer {
            Ok(Response::Workspace(_)) => return,
            Err(error) if error.code == ErrorCode::NotLeader => {
                if let Some(ErrorDetail::NotLeader {
                    address: Some(leader),
                    ..
                }) = &error.detail
                {
                    address = leader.parse().unwrap();
                } else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            other => panic!("creating {}: {other:?}", spec.name),
        }
    }
    panic!("no leader took {}", spec.name);
}

/// The workspaces (name and image) in the replica at `address`: a stale read, that node's own
/// state.
async fn replica_workspaces(pki: &TestPki, address: SocketAddr) -> BTreeMap<String, String> {
    let request = Request::Stale(StaleRead::Workspace(WorkspaceRequest::List));
    match admin_request(pki, address, request).await {
        Ok(Response::Workspaces(views)) => views
            .into_iter()
            .map(|view| (view.name.to_string(), view.image))
            .collect(),
        other => panic!("unexpected answer {other:?}"),
    }
}

/// The hosts in the replica at `address` (a stale read).
async fn replica_hosts(pki: &TestPki, address: SocketAddr) -> Vec<HostView> {
    let request = Request::Stale(StaleRead::Admin(AdminRequest::Hosts));
    match admin_request(pki, address, request).await {
        Ok(Response::Hosts(hosts)) => hosts,
        other => panic!("unexpected answer {other:?}"),
    }
}

/// The `bytes` of the first log line with `message` in the log of the coordinator at `index`.
fn logged_bytes(cluster: &TestCluster, index: usize, message: &str) -> Option<u64> {
    let log = cluster.running[index].as_ref()?.process.log();
    let line = log.lines().find(|line| line.contains(message))?;
    line.split_whitespace()
        .find_map(|word| word.strip_prefix("bytes="))
        .and_then(|bytes| bytes.parse().ok())
}

/// Adds coordinator `id` (started with `--join`) with the CLI, as an operator would, and waits
/// until it serves what the leader serves. Answers the size of the snapshot it caught up from.
async fn add_member_and_compare(pki: &TestPki, cluster: &mut TestCluster, id: u64) -> u64 {
    let leader = cluster.leader(pki, ELECTION).await;
    let leader_address = cluster.members[cluster.index_of(leader.node.get())].address;
    let index = cluster.start_joiner(pki, id).await;
    let address = cluster.members[index].address;
    let home = pki.scratch("home");
    let out = cli_as(
        pki,
        &pki::user("harness", Role::Admin),
        &home,
        leader_address,
        &[
            "--output",
            "json",
            "admin",
            "cluster",
            "add",
            &id.to_string(),
            &address.to_string(),
        ],
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        cluster.logs()
    );
    let expected = replica_workspaces(pki, leader_address).await;
    eventually(
        "the new member to serve the leader's workspaces",
        CONVERGE,
        || async { (replica_workspaces(pki, address).await == expected).then_some(()) },
    )
    .await;
    logged_bytes(cluster, index, "restored from the leader's snapshot").unwrap_or_else(|| {
        panic!(
            "the new member caught up from a snapshot:\n{}",
            cluster.logs()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_catches_up_from_a_snapshot_larger_than_16_mib() {
    let pki = Arc::new(TestPki::new());
    // The hosts have no agents: they must not be marked down while the test runs.
    let mut cluster = TestCluster::start(&pki, 3, &["--host-ttl", "600"]).await;
    let leader = cluster.leader(&pki, ELECTION).await;
    let leader_address = cluster.members[cluster.index_of(leader.node.get())].address;
    // 20 hosts take 15 workspaces each: under the 20 operations a host may have in flight,
    // which these never leave (no agent runs them).
    for host in 0..20 {
        register(&pki, roomy_host(&format!("h{host}")), leader_address).await;
    }
    // 300 workspaces of 60 KB each (the most a spec may take is 64 KiB): 18 MB of specs, in the
    // log as entries of up to 4 MiB, sent to the followers in batches larger than a frame.
    let value = "v".repeat(3_990);
    let specs: Vec<WorkspaceSpec> = (0..300)
        .map(|i| {
            let mut spec = nexus_fixtures::spec(&format!("large-{i:03}"));
            spec.image = format!("image-{i}:latest");
            spec.env = (0..15)
                .map(|k| (format!("VAR_{k:02}"), value.clone()))
                .collect();
            spec
        })
        .collect();
    let specs = Arc::new(std::sync::Mutex::new(specs));
    // Issued once, before the creators share it.
    pki.issue(&pki::user("alice", Role::Admin));
    let mut creators = Vec::new();
    for _ in 0..8 {
        let specs = specs.clone();
        let pki = pki.clone();
        creators.push(tokio::spawn(async move {
            loop {
                let Some(spec) = specs.lock().unwrap().pop() else {
                    return;
                };
                create(&pki, leader_address, spec).await;
            }
        }));
    }
    for creator in creators {
        creator.await.unwrap();
    }
    assert_eq!(replica_workspaces(&pki, leader_address).await.len(), 300);

    let bytes = add_member_and_compare(&pki, &mut cluster, 4).await;
    println!("the new member caught up from a snapshot of {bytes} bytes");
    assert!(bytes > 16 << 20, "a snapshot of {bytes} bytes");
    // The followers got the same entries, in batches sent in pieces.
    for member in &cluster.members {
        let workspaces = replica_workspaces(&pki, member.address).await;
        assert_eq!(workspaces.len(), 300, "coordinator {}", member.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_snapshots_larger_than_a_small_frame_travel_in_pieces() {
    let pki = TestPki::new();
    let frame = 64 << 10;
    let mut cluster = TestCluster::start(
        &pki,
        3,
        &["--max-frame-bytes", "65536", "--host-ttl", "600"],
    )
    .await;
    let leader = cluster.leader(&pki, ELECTION).await;
    // A registration sent to a follower, which forwards it to the leader: its proposal (40 KB of
    // labels) is larger than a piece (half a frame), not than a frame.
    let follower = cluster
        .members
        .iter()
        .find(|m| m.id != leader.node.get())
        .unwrap()
        .address;
    let mut labelled = roomy_host("labelled");
    labelled.labels = (0..10)
        .map(|k| (format!("label-{k}"), "l".repeat(4_000)))
        .collect();
    register(&pki, labelled.clone(), follower).await;
    let leader_address = cluster.members[cluster.index_of(leader.node.get())].address;
    let on_leader = replica_hosts(&pki, leader_address).await;
    assert_eq!(on_leader.len(), 1);
    assert_eq!(on_leader[0].info.labels, labelled.labels);

    // Workspaces of 20 KB each: a state of several frames.
    for host in 0..2 {
        register(&pki, roomy_host(&format!("h{host}")), leader_address).await;
    }
    for i in 0..10 {
        let mut spec = nexus_fixtures::spec(&format!("small-{i}"));
        spec.env = (0..5)
            .map(|k| (format!("VAR_{k}"), "v".repeat(4_000)))
            .collect();
        create(&pki, leader_address, spec).await;
    }
    let bytes = add_member_and_compare(&pki, &mut cluster, 4).await;
    println!("the new member caught up from a snapshot of {bytes} bytes");
    assert!(bytes > frame, "a snapshot of {bytes} bytes");
    let fourth = cluster.members[cluster.index_of(4)].address;
    let on_fourth = replica_hosts(&pki, fourth).await;
    assert_eq!(on_fourth.len(), 3);
    assert!(on_fourth.iter().any(|h| h.info.labels == labelled.labels));
}
