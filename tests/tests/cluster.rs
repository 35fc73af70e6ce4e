//! Coordinator clusters as real processes: three (and four) `nexus-coordinator`s on loopback with
//! real QUIC, mTLS and RocksDB, killed with SIGKILL.
//!
//! - Kill -9 the leader during a stream of writes: a new leader takes over, and once the killed
//!   node is back every acknowledged write is on every node; restart all three: still there, and
//!   linearizable reads at all three at once are all answered.
//! - A node that was down while the log was compacted catches up from a snapshot; a fourth node
//!   joins as a learner and is promoted; a node is removed; leadership is transferred; the CLI's
//!   `admin status` and `health-check` tell a healthy cluster from one without quorum.
//! - `admin status` right after the leader's SIGKILL answers at once, with what the node it
//!   reached knows, and never names the dead node as a live leader.
//! - Bad input: a data dir of another cluster, a peer that is not a coordinator, corrupt peer
//!   messages and a Raft message claiming another node's id.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use nexus_coordinator::consensus::{RaftMessage, encode_message};
use nexus_protocol::error::ErrorCode;
use nexus_protocol::identity::Role;
use nexus_protocol::message::{AdminRequest, MemberRole, PeerRequest, Request, Response};
use nexus_protocol::{HostId, NodeId};
use nexus_tests::cluster::{
    TestCluster, admin_request, admin_to_leader, register, replica_hosts, status,
};
use nexus_tests::eventually;
use nexus_tests::pki::{self, TestPki};
use nexus_tests::process::{CoordinatorProcess, cli_as, connect};

const ELECTION: Duration = Duration::from_secs(20);
const CONVERGE: Duration = Duration::from_secs(30);

/// Waits until the replica at `address` holds every host of `expected`.
async fn replica_has(pki: &TestPki, address: SocketAddr, expected: &BTreeSet<HostId>) {
    eventually(
        &format!("the replica at {address} to hold every acknowledged write"),
        CONVERGE,
        || async {
            let hosts: BTreeSet<HostId> = replica_hosts(pki, address)
                .await
                .ok()?
                .into_iter()
                .collect();
            expected.is_subset(&hosts).then_some(())
        },
    )
    .await;
}

/// Registers `count` hosts named `prefix-N` through any live member; returns those acknowledged.
/// Each write is tried at one member after another until one acknowledges it or `ELECTION` has
/// passed: while there is no leader every member refuses it, and an election lost to a split vote
/// takes one more election timeout (over 2 s in all).
async fn write(
    pki: &TestPki,
    addresses: &[SocketAddr],
    prefix: &str,
    count: usize,
) -> BTreeSet<HostId> {
    let mut acked = BTreeSet::new();
    for i in 0..count {
        let host = format!("{prefix}-{i}");
        let started = std::time::Instant::now();
        for attempt in 0.. {
            let address = addresses[(i + attempt) % addresses.len()];
            if register(pki, &host, address).await.is_ok() {
                acked.insert(HostId::new(&host).unwrap());
                break;
            }
            if started.elapsed() > ELECTION {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_killing_the_leader_and_restarting_everything() {
    let pki = TestPki::new();
    let mut cluster = TestCluster::start(&pki, 3, &[]).await;
    let first = cluster.leader(&pki, ELECTION).await;
    let killed = cluster.index_of(first.node.get());
    let addresses: Vec<SocketAddr> = cluster.members.iter().map(|m| m.address).collect();
    // Each member learns that every member applies this build's log entries (so users' changes
    // are checked against their owner at apply): asked over the members' own connections.
    eventually(
        "every member agrees on this build's entries",
        CONVERGE,
        || async {
            let logs = cluster.logs();
            let members: Vec<&str> = logs.split("--- coordinator ").skip(1).collect();
            (members.len() == 3
                && members
                    .iter()
                    .all(|log| log.contains("now applies log entries of version 2")))
            .then_some(())
        },
    )
    .await;

    // A writer registers host after host at each node in turn; what it records as acknowledged
    // must survive. Meanwhile the leader is killed.
    let acked = RefCell::new(BTreeSet::new());
    let failed = Cell::new(0usize);
    let stop = Cell::new(false);
    let writer = async {
        // An address that failed rests a while, so the writer does not keep waiting on the dead.
        let mut resting = vec![std::time::Instant::now(); addresses.len()];
        let mut i = 0usize;
        while !stop.get() {
            let host = format!("host-{i}");
            i += 1;
            let now = std::time::Instant::now();
            let Some(target) = (0..addresses.len())
                .map(|k| (i + k) % addresses.len())
                .find(|k| resting[*k] <= now)
            else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            match register(&pki, &host, addresses[target]).await {
                Ok(()) => {
                    acked.borrow_mut().insert(HostId::new(&host).unwrap());
                }
                Err(_) => {
                    failed.set(failed.get() + 1);
                    resting[target] = std::time::Instant::now() + Duration::from_secs(3);
                }
            }
        }
    };
    let control = async {
        eventually("20 writes before the kill", CONVERGE, || async {
            (acked.borrow().len() >= 20).then_some(())
        })
        .await;
        cluster.kill(killed);
        // A write that a follower forwards to the dead leader is not held until the proposal
        // times out: once the follower sees a new term it asks the new leader. While there is
        // none it answers NOT_LEADER if the write never left it, and TIMEOUT (unknown: the dead
        // leader may have taken it) if it was forwarded; never NOT_LEADER after a forward, which
        // would tell the client it did not happen.
        let survivor = addresses[(killed + 1) % addresses.len()];
        match register(&pki, "forwarded-across-the-kill", survivor).await {
            Ok(()) => {
                acked
                    .borrow_mut()
                    .insert(HostId::new("forwarded-across-the-kill").unwrap());
            }
            Err(error) if error.code == ErrorCode::Timeout => {
                assert!(error.message.contains("forwarded"), "{error}");
            }
            Err(error) => assert_eq!(error.code, ErrorCode::NotLeader, "{error}"),
        }
        let before = acked.borrow().len();
        eventually("20 more writes after the kill", CONVERGE, || async {
            (acked.borrow().len() >= before + 20).then_some(())
        })
        .await;
        stop.set(true);
    };
    tokio::join!(writer, control);
    let acked = acked.into_inner();
    assert!(
        failed.get() > 0,
        "writes to the killed node must fail, not hang"
    );

    let second = cluster.leader(&pki, ELECTION).await;
    assert_ne!(second.node, first.node, "a new leader took over");
    assert!(second.term > first.term);

    cluster.restart(&pki, killed).await;
    for address in &addresses {
        replica_has(&pki, *address, &acked).await;
    }

    for index in 0..3 {
        cluster.kill(index);
    }
    for index in 0..3 {
        cluster.restart(&pki, index).await;
    }
    cluster.leader(&pki, ELECTION).await;
    for address in &addresses {
        replica_has(&pki, *address, &acked).await;
    }

    // Linearizable reads at every node at once, just after a restart: each node numbers its
    // reads for the leader, and none may be lost to another's number (each would time out).
    let mut connections = Vec::new();
    for address in &addresses {
        let reader = pki::user("reader", Role::Admin);
        connections.push(connect(&pki, &reader, *address).await.unwrap());
    }
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..32 {
        for connection in &connections {
            let connection = connection.clone();
            reads.spawn(async move {
                // An election just after the restart (the nodes share 2 cores with the suite)
                // answers NOT_LEADER, which clients retry; what must never happen is a read lost
                // to another's number, which would time out.
                // (The fleet's numbers: a read every member serves, unlike the hosts with their
                // heartbeats, which only the leader answers.)
                let mut answer = connection
                    .request(Request::Admin(AdminRequest::Stats))
                    .await;
                for _ in 0..20 {
                    match &answer {
                        Err(error) if error.code == ErrorCode::NotLeader => {
                            tokio::time::sleep(Duration::from_millis(250)).await;
                            answer = connection
                                .request(Request::Admin(AdminRequest::Stats))
                                .await;
                        }
                        _ => break,
                    }
                }
                answer
            });
        }
    }
    while let Some(answer) = reads.join_next().await {
        match answer.unwrap() {
            Ok(Response::FleetStats(stats)) => {
                let hosts: usize = stats.hosts.iter().map(|(_, n)| *n as usize).sum();
                assert!(hosts >= acked.len(), "{stats:?}");
            }
            other => panic!("a linearizable read failed: {other:?}"),
        }
    }
}

/// How many batches of Raft messages for `peer` the coordinator at `index` has logged as not
/// delivered. Each is reported to Raft, which then stops streaming entries to that peer.
fn failed_sends(cluster: &TestCluster, index: usize, peer: u64) -> usize {
    let field = format!("peer={peer}");
    let log = cluster.running[index]
        .as_ref()
        .map(|c| c.process.log())
        .unwrap_or_default();
    log.lines()
        .filter(|line| line.contains("cannot reach the peer"))
        .filter(|line| line.split_whitespace().any(|word| word == field))
        .count()
}

fn nexus(pki: &TestPki, home: &Path, coordinator: SocketAddr, args: &[&str]) -> Output {
    cli_as(
        pki,
        &pki::user("harness", Role::Admin),
        home,
        coordinator,
        args,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_catch_up_from_snapshots_join_leave_and_hand_over() {
    let pki = TestPki::new();
    let mut cluster = TestCluster::start(&pki, 3, &["--snapshot-every", "20"]).await;
    let leader = cluster.leader(&pki, ELECTION).await;
    let follower = cluster
        .members
        .iter()
        .position(|m| m.id != leader.node.get())
        .unwrap();
    cluster.kill(follower);

    // 50 writes while it is down, compacted away before it returns. They start only once the leader
    // has found it unreachable: until then the leader streams it every new entry, and its sender
    // keeps what it could not deliver for the next connection, which reaches the node once it is
    // back. Given the entries up to the leader's last snapshot (index 41, 39 entries), the node
    // needs no snapshot. Once the leader knows, Raft sends the node one probe at most until it
    // answers.
    let leader_index = cluster.index_of(leader.node.get());
    let follower_id = cluster.members[follower].id;
    let failed_before = failed_sends(&cluster, leader_index, follower_id);
    eventually(
        "the leader to log that it cannot reach the stopped node",
        CONVERGE,
        || async {
            (failed_sends(&cluster, leader_index, follower_id) > failed_before).then_some(())
        },
    )
    .await;
    let live = cluster.live_addresses();
    let mut acked = write(&pki, &live, "early", 50).await;
    assert_eq!(acked.len(), 50, "a two-node majority takes every write");
    cluster.restart(&pki, follower).await;
    replica_has(&pki, cluster.members[follower].address, &acked).await;
    // The driver writes the line before the restored state answers any read.
    let log = cluster.running[follower].as_ref().unwrap().process.log();
    assert!(
        log.contains("restored from the leader's snapshot"),
        "the returning node caught up from a snapshot:\n{log}"
    );

    // A fourth node joins as a learner, catches up (from a snapshot too) and votes.
    let fourth = cluster.start_joiner(&pki, 4).await;
    let fourth_address = cluster.members[fourth].address;
    let added = admin_to_leader(
        &pki,
        cluster.members[0].address,
        Request::Admin(AdminRequest::ClusterAdd {
            id: NodeId::new(4).unwrap(),
            address: fourth_address.to_string(),
        }),
    )
    .await
    .unwrap_or_else(|e| panic!("add failed: {e:?}\n{}", cluster.logs()));
    let Response::ClusterStatus(added) = added else {
        panic!("{added:?}")
    };
    let member = added
        .members
        .iter()
        .find(|m| m.id.get() == 4)
        .expect("node 4 is a member");
    assert_ne!(member.role, MemberRole::Learner, "promoted once caught up");
    assert_eq!(added.members.len(), 4);
    replica_has(&pki, fourth_address, &acked).await;

    // Remove node 1 (whichever role it has); the other three carry on.
    let removed = admin_to_leader(
        &pki,
        fourth_address,
        Request::Admin(AdminRequest::ClusterRemove(NodeId::new(1).unwrap())),
    )
    .await
    .unwrap();
    let Response::ClusterStatus(removed) = removed else {
        panic!("{removed:?}")
    };
    assert!(
        removed.members.iter().all(|m| m.id.get() != 1),
        "{removed:?}"
    );
    cluster.kill(0);
    let rest: Vec<SocketAddr> = cluster.live_addresses();
    acked.extend(write(&pki, &rest, "late", 10).await);
    assert_eq!(acked.len(), 60);

    // Hand leadership to node 4.
    let transferred = admin_to_leader(
        &pki,
        rest[0],
        Request::Admin(AdminRequest::TransferLeader(NodeId::new(4).unwrap())),
    )
    .await
    .unwrap();
    let Response::ClusterStatus(transferred) = transferred else {
        panic!()
    };
    assert_eq!(transferred.leader, NodeId::new(4).ok());
    for address in &rest {
        replica_has(&pki, *address, &acked).await;
    }
    // No coordinator keeps showing a round trip to the removed node (it is sent nothing more,
    // so its last one would stay), well within the 30 s a round trip is shown for; the leader
    // shows its followers', and each follower the leader's.
    for process in cluster.running.iter().flatten() {
        let http = process.http.expect("the harness serves monitoring");
        let peers: Vec<u64> = if process.node_id.get() == 4 {
            vec![2, 3]
        } else {
            vec![4]
        };
        eventually(
            "the removed node's round trip to be forgotten",
            Duration::from_secs(10),
            || {
                let peers = peers.clone();
                async move {
                    let (_, text) = nexus_tests::http::get(http, "/metrics").await;
                    let shown = |peer: u64| {
                        text.lines().any(|line| {
                            line.starts_with(&format!("nexus_peer_rtt_seconds{{peer=\"{peer}\"}}"))
                        })
                    };
                    (!shown(1) && peers.iter().all(|peer| shown(*peer))).then_some(())
                }
            },
        )
        .await;
    }

    // The CLI: healthy with three of three voters, unhealthy with one of three.
    let home = pki.scratch("home");
    let out = nexus(
        &pki,
        &home,
        rest[0],
        &["--output", "json", "admin", "health-check"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["healthy"], true);
    assert_eq!(report["voters"], 3);
    let out = nexus(
        &pki,
        &home,
        rest[0],
        &["--output", "json", "admin", "status"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["leader"], 4);
    assert_eq!(shown["members"].as_array().unwrap().len(), 3);

    let survivor = cluster.index_of(4);
    for index in 0..cluster.members.len() {
        if index != survivor {
            cluster.kill(index);
        }
    }
    // Until the survivor gives up its lead (an election timeout without a quorum), the CLI finds
    // other checks failing first, each after its 5 s for a coordinator that does not answer (one
    // health-check took 14 s so); then the quorum.
    eventually("the survivor to know no leader", CONVERGE, || async {
        let status = status(&pki, fourth_address).await.ok()?;
        status.leader.is_none().then_some(())
    })
    .await;
    let out = eventually("health-check to fail without quorum", CONVERGE, || async {
        let out = nexus(
            &pki,
            &home,
            fourth_address,
            &["--output", "json", "admin", "health-check"],
        );
        (!out.status.success() && !out.stderr.is_empty()).then_some(out)
    })
    .await;
    let error: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(error["error"]["code"], "NOT_LEADER", "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_peers_and_foreign_data_dirs_are_refused() {
    let pki = TestPki::new();
    let mut cluster = TestCluster::start(&pki, 1, &[]).await;
    cluster.leader(&pki, ELECTION).await;
    let address = cluster.members[0].address;

    // Only coordinators speak Raft.
    let admin = admin_request(&pki, address, Request::Peer(PeerRequest::Raft(vec![]))).await;
    assert_eq!(admin.unwrap_err().code, ErrorCode::PermissionDenied);
    // A coordinator of this cluster sending garbage, or a message in another node's name.
    let rogue = connect(&pki, &pki::coordinator(7), address).await.unwrap();
    let garbage = rogue
        .request(Request::Peer(PeerRequest::Raft(vec![vec![0xff; 64]])))
        .await;
    assert_eq!(garbage.unwrap_err().code, ErrorCode::ProtocolError);
    let forged = RaftMessage {
        from: 2,
        to: 1,
        term: 1000,
        ..Default::default()
    };
    let forged = rogue
        .request(Request::Peer(PeerRequest::Raft(vec![
            encode_message(&forged).unwrap(),
        ])))
        .await;
    assert_eq!(forged.unwrap_err().code, ErrorCode::PermissionDenied);
    let corrupt = rogue
        .request(Request::Peer(PeerRequest::Propose(vec![0, 0, 0, 9, 1])))
        .await;
    assert_eq!(corrupt.unwrap_err().code, ErrorCode::ProtocolError);
    // None of it moved the node: same leader, same term.
    let after = status(&pki, address).await.unwrap();
    assert_eq!(after.leader, NodeId::new(1).ok());
    assert!(after.term < 1000);
    register(&pki, "still-works", address).await.unwrap();

    // The data dir now belongs to this cluster; a node of another CA refuses it.
    cluster.kill(0);
    let other = TestPki::new();
    other.issue(&pki::coordinator(1));
    let data_dir = cluster.members[0].data_dir.clone();
    let mut process = nexus_tests::process::Process::spawn(
        "nexus-coordinator",
        &[
            "--node-id".into(),
            "1".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--http-listen".into(),
            "off".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--tls-dir".into(),
            other.dir().display().to_string(),
        ],
        other.scratch("log").join("coordinator.log"),
    );
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = process.exited() {
            break status;
        }
        assert!(
            started.elapsed() < CONVERGE,
            "the foreign node did not exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    assert!(
        process.log().contains("belongs to another cluster"),
        "{}",
        process.log()
    );
    // And the rightful node still starts on it, with its data.
    let restarted = CoordinatorProcess::start_at(&pki, 1, address, data_dir).await;
    let hosts = eventually("the restarted node to answer", CONVERGE, || async {
        replica_hosts(&pki, restarted.address).await.ok()
    })
    .await;
    assert!(hosts.contains(&HostId::new("still-works").unwrap()));
}

/// A leader that loses its quorum with a write pending steps down (check-quorum) and answers the
/// write at once as unknown (`TIMEOUT`: the entry may still be committed by the next leader),
/// rather than holding it until the proposal's 10 s deadline. The followers are paused, not
/// killed: they come back, and the write asked again under the same request id is registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_its_quorum_answers_a_pending_write_as_unknown() {
    let pki = TestPki::new();
    let cluster = TestCluster::start(&pki, 3, &[]).await;
    let leader = cluster.leader(&pki, ELECTION).await;
    let leading = cluster.index_of(leader.node.get());
    let address = cluster.members[leading].address;
    let host = "pending-when-the-quorum-went";
    let agent = connect(&pki, &pki::agent(host), address).await.unwrap();
    for (index, process) in cluster.running.iter().enumerate() {
        if index != leading {
            process.as_ref().unwrap().process.pause();
        }
    }
    let request_id = nexus_protocol::RequestId::random();
    let register = Request::Agent(nexus_protocol::message::AgentRequest::Register(
        nexus_tests::cluster::host_info(host),
    ));
    let answer = agent
        .request_with(request_id, register.clone(), Duration::from_secs(30))
        .await;
    let error = answer.expect_err("no quorum, no acknowledgement");
    assert_eq!(error.code, ErrorCode::Timeout, "{error}");
    assert!(
        error.message.contains("ended with the write pending"),
        "answered when the leadership ended, not at the proposal's deadline: {error}"
    );
    for (index, process) in cluster.running.iter().enumerate() {
        if index != leading {
            process.as_ref().unwrap().process.resume();
        }
    }
    // Asked again under the same id, the write is applied once.
    let again = eventually("the write asked again", CONVERGE, || async {
        let node = cluster.leader(&pki, ELECTION).await.node;
        let address = cluster.members[cluster.index_of(node.get())].address;
        let connection = connect(&pki, &pki::agent(host), address).await.ok()?;
        connection
            .request_with(request_id, register.clone(), Duration::from_secs(10))
            .await
            .ok()
    })
    .await;
    assert!(matches!(again, Response::Registered { .. }), "{again:?}");
}

/// An on-call admin's `nexus admin status` sent right after the leader's SIGKILL: it answers
/// within a second (it waited out a 5 s handshake with the dead leader before) and does not name
/// the dead node as a live leader; it says what the node it reached knows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_status_answers_at_once_after_the_leader_dies_without_naming_it_live() {
    let pki = TestPki::new();
    let mut cluster = TestCluster::start(&pki, 3, &[]).await;
    let leader = cluster.leader(&pki, ELECTION).await;
    let home = pki.scratch("home-oncall");
    let survivor = cluster
        .members
        .iter()
        .find(|m| m.id != leader.node.get())
        .unwrap()
        .address;
    // The CLI's files and the binary warm, and the leader heard from lately.
    let out = nexus(
        &pki,
        &home,
        survivor,
        &["admin", "status", "--output", "json"],
    );
    assert!(out.status.success(), "{out:?}");
    let healthy: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(healthy["leader"], leader.node.get());
    assert_eq!(healthy["leader_state"], "confirmed", "{healthy}");
    assert_eq!(healthy["leader_last_heard_ms"], 0, "{healthy}");

    cluster.kill(cluster.index_of(leader.node.get()));
    let started = std::time::Instant::now();
    let out = nexus(
        &pki,
        &home,
        survivor,
        &["admin", "status", "--output", "json"],
    );
    let took = started.elapsed();
    assert!(out.status.success(), "{out:?}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // A second, not the ~500 ms aimed at: the assertion must hold on a loaded two-core runner
    // (the bench's status-failover scenario measures it).
    assert!(took < Duration::from_secs(1), "took {took:?}: {answer}");
    let named_dead = answer["leader"] == leader.node.get();
    assert!(
        !(named_dead && answer["leader_state"] == "confirmed"),
        "the dead leader named as live: {answer}"
    );
    // What the survivor knew: the dead leader not reached (and when it last heard it), or no
    // leader, or a new one that answered itself.
    match answer["leader_state"].as_str() {
        Some("unreachable") => assert!(answer["leader_last_heard_ms"].is_u64(), "{answer}"),
        Some("unknown") => assert!(answer["leader"].is_null(), "{answer}"),
        Some("confirmed") => assert!(!named_dead, "{answer}"),
        other => panic!("leader_state {other:?}: {answer}"),
    }
}

/// A leader's SIGKILL is learned at once (its address refuses a probe) rather than after an
/// election timeout: with a 6 s timeout, a survivor leads within 3 s, after one election.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_without_waiting_out_the_election_timeout() {
    let pki = TestPki::new();
    let mut cluster = TestCluster::start(&pki, 3, &["--election-ticks", "60"]).await;
    let leader = cluster.leader(&pki, ELECTION).await;
    cluster.kill(cluster.index_of(leader.node.get()));
    let killed = std::time::Instant::now();
    let next = cluster.leader(&pki, ELECTION).await;
    let took = killed.elapsed();
    assert_ne!(next.node, leader.node);
    assert!(
        took < Duration::from_secs(3),
        "a new leader only after {took:?}: the election timeout, not the crash, moved it\n{}",
        cluster.logs()
    );
    assert_eq!(
        next.term,
        leader.term + 1,
        "one election, not a split vote\n{}",
        cluster.logs()
    );
    assert!(
        cluster.logs().contains("refused a probe"),
        "{}",
        cluster.logs()
    );
}

/// A paused leader is not a crashed one: its socket still takes the probes, so nobody campaigns
/// before the election timeout and it still leads, in the same term, when it wakes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_not_taken_for_a_crashed_one() {
    let pki = TestPki::new();
    let cluster = TestCluster::start(&pki, 3, &["--election-ticks", "60"]).await;
    let leader = cluster.leader(&pki, ELECTION).await;
    let leading = cluster.running[cluster.index_of(leader.node.get())]
        .as_ref()
        .unwrap();
    leading.process.pause();
    // Long enough for a dozen probes each, shorter than the 6 s election timeout.
    tokio::time::sleep(Duration::from_secs(3)).await;
    leading.process.resume();
    let after = cluster.leader(&pki, ELECTION).await;
    assert_eq!(
        (after.node, after.term),
        (leader.node, leader.term),
        "{}",
        cluster.logs()
    );
    assert!(
        !cluster.logs().contains("refused a probe"),
        "{}",
        cluster.logs()
    );
}

/// A request whose coordinator dies before answering ends as soon as the process is found gone
/// (its address refuses a probe), not at the request's limit, so a client asks another
/// coordinator at once; while the coordinator is only paused, the request keeps waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_to_a_restarted_coordinator_is_reset_not_left_to_time_out() {
    let pki = TestPki::new();
    let mut cluster = TestCluster::start(&pki, 1, &[]).await;
    let host = "asked-across-a-restart";
    let agent = connect(&pki, &pki::agent(host), cluster.members[0].address)
        .await
        .unwrap();
    agent.request(Request::Ping).await.unwrap();
    // Killed and started again on the same address, with the same key: the new process does
    // not know the connection, but can say so in a way the client can check.
    cluster.kill(0);
    cluster.restart(&pki, 0).await;
    let error = agent
        .request_with(
            nexus_protocol::RequestId::random(),
            Request::Ping,
            Duration::from_secs(20),
        )
        .await
        .expect_err("the connection was to the process that died");
    assert_eq!(error.code, ErrorCode::NetworkError, "{error}");
    assert!(error.message.contains("reset"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_ends_when_its_coordinators_process_is_gone() {
    let pki = TestPki::new();
    let mut cluster = TestCluster::start(&pki, 1, &[]).await;
    let host = "asked-of-the-dead";
    let agent = connect(&pki, &pki::agent(host), cluster.members[0].address)
        .await
        .unwrap();
    cluster.running[0].as_ref().unwrap().process.pause();
    let register = Request::Agent(nexus_protocol::message::AgentRequest::Register(
        nexus_tests::cluster::host_info(host),
    ));
    let mut asking = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let result = agent
            .request_unless_gone(
                nexus_protocol::RequestId::random(),
                register,
                Duration::from_secs(30),
            )
            .await;
        (result, started.elapsed())
    });
    // Paused: probed several times, silent, still waited for. Should the request end, what
    // ended it is the clue.
    if let Ok(ended) = tokio::time::timeout(Duration::from_secs(1), &mut asking).await {
        panic!("a paused coordinator is not a dead one, yet the request ended: {ended:?}");
    }
    cluster.kill(0);
    let (result, took) = asking.await.unwrap();
    let error = result.expect_err("nobody answered");
    assert_eq!(error.code, ErrorCode::NetworkError, "{error}");
    assert!(error.message.contains("refused a probe"), "{error}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}
