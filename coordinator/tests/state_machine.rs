//! Properties of the replicated state machine over random proposal sequences in a small fleet
//! (3 hosts, 6 names, 6 ports each, small limits, so collisions are frequent):
//! - no sequence breaks an invariant (no port given twice), and no applied creation takes a port
//!   outside its host's range;
//! - no applied creation puts a host over the workspace limit in force at that moment, and a
//!   creation refused for a full host really found it full;
//! - two replicas that apply the same log hold identical state, and so does one restored from a
//!   snapshot taken anywhere in the log;
//! - re-applying any proposal already applied (a retry) changes nothing;
//! - restoring a backup of any earlier state, anywhere in the log, keeps every invariant, and
//!   replicas (and one restored from a snapshot) still agree.

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use nexus_coordinator::scheduler::Scoring;
use nexus_coordinator::state::{
    Command, FOREIGN_PORT_MEMORY_MS, LimitsPatch, Outcome, PlaceRequest, Proposal, STATE_FORMAT,
    State, WorkspaceRecord,
};
use nexus_protocol::backup::BackupHeader;
use nexus_protocol::clock::Timestamp;
use nexus_protocol::error::{ErrorCode, ErrorDetail, WireError};
use nexus_protocol::identity::Identity;
use nexus_protocol::message::{DesiredRun, ObservedWorkspace};
use nexus_protocol::model::{
    HostInfo, HostStatus, PortBinding, PortRange, PortSpec, ResourceClass, WorkspaceSpec,
    WorkspaceState,
};
use nexus_protocol::policy::{PolicyPatch, PolicyScope};
use nexus_protocol::{HostId, NodeId, RequestId, UserName, WorkspaceName};
use proptest::prelude::*;

fn host_id(i: u8) -> HostId {
    HostId::new(format!("h{i}")).unwrap()
}

fn name(i: u8) -> WorkspaceName {
    WorkspaceName::new(format!("w{i}")).unwrap()
}

fn host_info(i: u8, last_port: u16) -> HostInfo {
    HostInfo {
        // Small enough that CPU and memory bind before the workspace count does.
        cpus: 1,
        port_range: PortRange::new(20_000, last_port).unwrap(),
        ..nexus_fixtures::host(&format!("h{i}"))
    }
}

fn state_strategy() -> impl Strategy<Value = WorkspaceState> {
    prop_oneof![
        Just(WorkspaceState::Running),
        Just(WorkspaceState::Stopped),
        Just(WorkspaceState::Failed),
        Just(WorkspaceState::Gone),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    let hosts = 0u8..3;
    let names = 0u8..6;
    prop_oneof![
        2 => (hosts.clone(), 20_002u16..20_006).prop_map(|(h, last)| Command::RegisterHost(host_info(h, last))),
        1 => (hosts.clone(), prop_oneof![Just(HostStatus::Ready), Just(HostStatus::Down), Just(HostStatus::Cordoned)])
            .prop_map(|(h, status)| Command::SetHostStatus { host: host_id(h), status }),
        6 => (names.clone(), hosts.clone(), proptest::collection::vec((80u16..83, 19_999u16..20_007), 0..4), proptest::sample::select(ResourceClass::ALL.to_vec())).prop_map(
            |(n, h, bindings, class)| Command::CreateWorkspace {
                spec: WorkspaceSpec {
                    image: "img".into(),
                    class,
                    ports: bindings.iter().map(|&(container, _)| PortSpec { container }).collect(),
                    ..nexus_fixtures::spec(name(n).as_str())
                },
                owner: UserName::new("alice").unwrap(),
                host: host_id(h),
                ports: bindings.into_iter().map(|(container, host)| PortBinding { container, host }).collect(),
            }
        ),
        1 => (names.clone(), any::<bool>()).prop_map(|(n, run)| Command::SetDesiredRun {
            name: name(n),
            run: if run { DesiredRun::Running } else { DesiredRun::Stopped },
        }),
        2 => (hosts.clone(), names.clone(), 0u64..3, state_strategy(), proptest::option::of(19_999u16..20_007)).prop_map(|(h, n, generation, state, conflict)| {
            // Some failures are port conflicts, which the state machine answers with a new port.
            let error = conflict.map(|port| {
                WireError::new(ErrorCode::PortConflict, "taken").with_detail(ErrorDetail::PortConflict { port })
            });
            Command::RecordObserved {
                host: host_id(h),
                observed: vec![ObservedWorkspace { name: name(n), generation, state, ports: vec![], error }],
            }
        }),
        1 => names.clone().prop_map(|n| Command::RestartWorkspace { name: name(n) }),
        1 => names.clone().prop_map(|n| Command::RepairWorkspace { name: name(n) }),
        1 => (names.clone(), any::<bool>()).prop_map(|(n, alice)| Command::SwitchWorkspace {
            owner: UserName::new(if alice { "alice" } else { "bob" }).unwrap(),
            name: name(n),
        }),
        1 => proptest::collection::vec(names.clone(), 0..4).prop_map(|ns| Command::DestroyStopped {
            names: ns.into_iter().map(name).collect(),
        }),
        1 => hosts.clone().prop_map(|h| Command::HostReturned { host: host_id(h) }),
        // A workspace's own policy, which the index of overrides follows.
        1 => (names.clone(), proptest::option::of(60u64..120)).prop_map(|(n, secs)| Command::SetPolicy {
            scope: PolicyScope::Workspace(name(n)),
            patch: PolicyPatch { inactive_stop_after_secs: secs, ..Default::default() },
        }),
        // A batch of creates scheduled at apply; request ids from a small pool, so a batch may
        // repeat one (a retry) or reuse one from an earlier batch.
        3 => proptest::collection::vec((0u128..8, names.clone(), 0usize..3, proptest::sample::select(ResourceClass::ALL.to_vec()), any::<bool>()), 1..6).prop_map(
            |creates| Command::PlaceWorkspaces(creates.into_iter().map(|(id, n, ports, class, spread)| PlaceRequest {
                request_id: RequestId::from_u128(1_000_000 + id),
                owner: UserName::new("alice").unwrap(),
                spec: WorkspaceSpec {
                    image: "img".into(),
                    class,
                    ports: (0..ports).map(|i| PortSpec { container: 80 + i as u16 }).collect(),
                    ..nexus_fixtures::spec(name(n).as_str())
                },
                scoring: spread.then_some(Scoring::Spread),
            }).collect())
        ),
        2 => names.clone().prop_map(|n| Command::DestroyWorkspace { name: name(n) }),
        1 => (proptest::option::of(hosts), proptest::option::of(0u32..4), proptest::option::of(0u32..4), proptest::option::of(100u32..500)).prop_map(
            |(h, workspaces, ports, overcommit)| Command::SetLimits {
                host: h.map(host_id),
                patch: LimitsPatch {
                    max_workspaces_per_host: workspaces,
                    max_ports_per_workspace: ports,
                    cpu_overcommit_percent: overcommit,
                    memory_overcommit_percent: overcommit,
                    ..Default::default()
                },
            }
        ),
    ]
}

fn proposals() -> impl Strategy<Value = Vec<Proposal>> {
    proptest::collection::vec(command(), 1..80).prop_map(|commands| {
        commands
            .into_iter()
            .enumerate()
            .map(|(i, command)| Proposal {
                request_id: RequestId::from_u128(i as u128 + 1),
                at: Timestamp(1_000 * i as u64),
                proposer: Identity::Coordinator(NodeId::new(1).unwrap()),
                command,
            })
            .collect()
    })
}

fn snapshot(state: &State) -> State {
    State::from_snapshot(&state.to_snapshot().unwrap()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_sequence_breaks_a_limit_and_replicas_agree(log in proposals(), snapshot_at in any::<prop::sample::Index>()) {
        let mut leader = State::default();
        let mut restored: Option<State> = None;
        let snapshot_at = snapshot_at.index(log.len());
        for (i, proposal) in log.iter().enumerate() {
            let before = leader.clone();
            let outcome = leader.apply(proposal);
            leader.check_invariants().map_err(|broken| TestCaseError::fail(broken.to_string()))?;
            if let Command::CreateWorkspace { host, ports, spec, .. } = &proposal.command {
                let limit = leader.limits_for(host).max_workspaces_per_host;
                // The host's capacity, counted here independently of the state machine.
                let capacity = |state: &State| {
                    let info = &state.hosts()[host].info;
                    let limits = state.limits_for(host);
                    (
                        u64::from(info.cpus) * 10 * u64::from(limits.cpu_overcommit_percent),
                        (u128::from(info.memory_bytes) * u128::from(limits.memory_overcommit_percent) / 100) as u64,
                    )
                };
                let promised = |state: &State| {
                    state.workspaces().values().filter(|w| &w.host == host).fold((0, 0), |(c, m), w| {
                        let r = w.spec.class.resources();
                        (c + u64::from(r.cpu_millis), m + r.memory_bytes)
                    })
                };
                match &outcome {
                    Outcome::Applied => {
                        prop_assert!(leader.workspaces_on(host) <= limit, "{host} over {limit}");
                        let range = leader.hosts()[host].info.port_range;
                        prop_assert!(ports.iter().all(|p| range.contains(p.host)), "a port outside {range}");
                        let ((cpu, memory), (cpu_cap, memory_cap)) = (promised(&leader), capacity(&leader));
                        prop_assert!(cpu <= cpu_cap && memory <= memory_cap, "{host} overcommitted");
                    }
                    Outcome::Rejected(error) if error.code == ErrorCode::ResourceExhausted => {
                        let ready = before.hosts().get(host).is_some_and(|h| h.status == HostStatus::Ready);
                        let full = before.workspaces_on(host) >= limit;
                        let wanted = spec.class.resources();
                        let ((cpu, memory), (cpu_cap, memory_cap)) = (promised(&before), capacity(&before));
                        let no_cpu = cpu + u64::from(wanted.cpu_millis) > cpu_cap;
                        let no_memory = memory + wanted.memory_bytes > memory_cap;
                        // Free ports counted from the tables and the range alone: allocated, or
                        // found held by something else within the hour (and not allocated).
                        let range = before.hosts()[host].info.port_range;
                        let allocated = before.ports().keys().filter(|(h, p)| h == host && range.contains(*p)).count();
                        let foreign = before.foreign_ports().iter().filter(|((h, p), seen)| {
                            h == host
                                && range.contains(*p)
                                && !before.ports().contains_key(&(h.clone(), *p))
                                && proposal.at.as_millis() < seen.as_millis() + FOREIGN_PORT_MEMORY_MS
                        }).count();
                        let taken = allocated + foreign;
                        let no_ports = (range.len() as usize - taken) < ports.len();
                        prop_assert!(!ready || full || no_cpu || no_memory || no_ports, "refused with room on {host}");
                    }
                    Outcome::Rejected(_) => {}
                }
            }
            if let Command::PlaceWorkspaces(requests) = &proposal.command {
                // Every create placed by this batch landed on a host that is Ready and within its
                // limits after all of them; each journaled outcome is one the batch decided.
                for request in requests {
                    prop_assert!(leader.outcome_of(request.request_id).is_some(), "a create without an outcome");
                    let Some(workspace) = leader.workspaces().get(&request.spec.name) else { continue };
                    if before.workspaces().contains_key(&request.spec.name) || workspace.spec != request.spec {
                        continue;
                    }
                    let host = &workspace.host;
                    prop_assert_eq!(before.hosts()[host].status, HostStatus::Ready);
                    let limits = leader.limits_for(host);
                    prop_assert!(leader.workspaces_on(host) <= limits.max_workspaces_per_host, "{} over its count", host);
                    let (cpu, memory) = leader.reserved_on(host);
                    let (cpu_cap, memory_cap) = leader.capacity_of(host);
                    prop_assert!(cpu <= cpu_cap && memory <= memory_cap, "{} overcommitted", host);
                    let range = leader.hosts()[host].info.port_range;
                    prop_assert!(workspace.ports.iter().all(|p| range.contains(p.host)));
                }
            }
            // A host's epoch that did not move vouches that none of its workspaces changed: the
            // leader answers a repeated report by it alone.
            for host in before.hosts().keys().chain(leader.hosts().keys()) {
                if before.workspaces().epoch(host) == leader.workspaces().epoch(host) {
                    let on = |state: &State| -> Vec<(WorkspaceName, WorkspaceRecord)> {
                        state.workspaces().iter().filter(|(_, w)| &w.host == host).map(|(n, w)| (n.clone(), w.clone())).collect()
                    };
                    prop_assert_eq!(on(&before), on(&leader), "{}'s workspaces changed, its epoch did not", host);
                }
            }
            // A retry of this very proposal changes nothing and answers the same.
            let after = leader.clone();
            prop_assert_eq!(leader.apply(proposal), outcome);
            prop_assert_eq!(&leader, &after);
            if i == snapshot_at {
                restored = Some(snapshot(&leader));
            }
            if let Some(replica) = restored.as_mut().filter(|_| i > snapshot_at) {
                replica.apply(proposal);
            }
        }
        let mut follower = State::default();
        for proposal in &log {
            follower.apply(proposal);
        }
        prop_assert_eq!(&follower, &leader);
        prop_assert_eq!(restored.as_ref(), Some(&leader));
    }

    #[test]
    fn restoring_an_earlier_state_keeps_the_invariants_and_replicas_agree(
        log in proposals(),
        backed_up in any::<prop::sample::Index>(),
        restored_at in any::<prop::sample::Index>(),
        snapshot_at in any::<prop::sample::Index>(),
    ) {
        // The backup: the state after `backed_up` proposals; the restore goes in after
        // `restored_at` (at least as many), and the rest of the log follows it.
        let backed_up = backed_up.index(log.len());
        let restored_at = backed_up + restored_at.index(log.len() - backed_up);
        let mut backup = State::default();
        for proposal in &log[..backed_up] {
            backup.apply(proposal);
        }
        let header = BackupHeader {
            id: "20261203T120000Z-i1".into(),
            cluster: "ab".repeat(32),
            node: NodeId::new(1).unwrap(),
            index: backed_up as u64,
            term: 1,
            created_at: Timestamp(0),
            software: "test".into(),
            state_format: STATE_FORMAT,
            counts: vec![],
        };
        let restore = Proposal {
            request_id: RequestId::from_u128(u128::MAX),
            at: Timestamp(1_000 * restored_at as u64 + 500),
            proposer: Identity::Coordinator(NodeId::new(1).unwrap()),
            command: Command::Restore { header, state: backup.to_snapshot().unwrap() },
        };
        let mut with_restore: Vec<&Proposal> = log.iter().collect();
        with_restore.insert(restored_at, &restore);
        let snapshot_at = snapshot_at.index(with_restore.len());
        let mut leader = State::default();
        let mut replica: Option<State> = None;
        for (i, proposal) in with_restore.iter().enumerate() {
            let outcome = leader.apply(proposal);
            leader.check_invariants().map_err(|broken| TestCaseError::fail(broken.to_string()))?;
            if std::ptr::eq(*proposal, &restore) {
                prop_assert_eq!(&outcome, &Outcome::Applied);
                let names: Vec<_> = leader.workspaces().keys().collect();
                let backed: Vec<_> = backup.workspaces().keys().collect();
                prop_assert_eq!(names, backed);
                for host in backup.hosts().keys() {
                    prop_assert!(leader.desired_version(host) > backup.desired_version(host));
                }
            }
            if i == snapshot_at {
                replica = Some(snapshot(&leader));
            }
            if let Some(replica) = replica.as_mut().filter(|_| i > snapshot_at) {
                replica.apply(proposal);
            }
        }
        let mut follower = State::default();
        for proposal in &with_restore {
            follower.apply(proposal);
        }
        prop_assert_eq!(&follower, &leader);
        prop_assert_eq!(replica.as_ref(), Some(&leader));
    }
}
