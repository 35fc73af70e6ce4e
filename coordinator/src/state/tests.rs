//! The state machine's tests: sequences of commands applied in order, each checked against the
//! invariants, then the outcomes and the tables asserted.

use nexus_protocol::error::ErrorDetail;
use nexus_protocol::identity::{Identity, Role};
use nexus_protocol::message::ObservedWorkspace;
use nexus_protocol::model::{PortRange, ResourceClass};

use super::*;

pub(super) fn host(id: &str, first: u16, last: u16) -> HostInfo {
    HostInfo {
        cpus: 8,
        memory_bytes: 32 << 30,
        port_range: PortRange::new(first, last).unwrap(),
        ..nexus_fixtures::host(id)
    }
}

fn spec(name: &str, container_ports: &[u16]) -> WorkspaceSpec {
    WorkspaceSpec {
        image: "img".into(),
        ports: nexus_fixtures::ports(container_ports),
        ..nexus_fixtures::spec(name)
    }
}

pub(super) fn create(name: &str, on: &str, bindings: &[(u16, u16)]) -> Command {
    let container: Vec<u16> = bindings.iter().map(|b| b.0).collect();
    Command::CreateWorkspace {
        spec: spec(name, &container),
        owner: UserName::new("alice").unwrap(),
        host: HostId::new(on).unwrap(),
        ports: bindings
            .iter()
            .map(|&(container, host)| PortBinding { container, host })
            .collect(),
    }
}

/// Applies `commands` in order, each under a fresh request id, and returns the outcome codes
/// (`None` for applied) with the final state.
pub(super) fn check(commands: Vec<Command>) -> (Vec<Option<ErrorCode>>, State) {
    let mut state = State::default();
    let codes = commands
        .into_iter()
        .enumerate()
        .map(|(i, command)| {
            let proposal = Proposal {
                request_id: RequestId::from_u128(i as u128 + 1),
                at: Timestamp(1_000 + i as u64),
                proposer: Identity::User {
                    name: UserName::new("alice").unwrap(),
                    role: Role::Admin,
                },
                command,
            };
            apply_checked(&mut state, &proposal)
        })
        .collect();
    (codes, state)
}

/// Applies `proposal` to `state`, checks the invariants, and answers the outcome's code (`None`
/// for applied).
pub(super) fn apply_checked(state: &mut State, proposal: &Proposal) -> Option<ErrorCode> {
    let outcome = state.apply(proposal);
    state.check_invariants().unwrap();
    match outcome {
        Outcome::Applied => None,
        Outcome::Rejected(error) => Some(error.code),
    }
}

pub(super) fn h(id: &str) -> HostId {
    HostId::new(id).unwrap()
}

pub(super) fn w(name: &str) -> WorkspaceName {
    WorkspaceName::new(name).unwrap()
}

#[test]
fn creation_checks_host_names_ports_and_limits() {
    use ErrorCode::*;
    let (codes, state) = check(vec![
        create("a", "h1", &[(80, 20000)]), // no such host
        Command::RegisterHost(host("h1", 20000, 20002)),
        create("a", "h1", &[(80, 20000)]),              // fits
        create("a", "h1", &[(80, 20001)]),              // name taken
        create("b", "h1", &[(80, 20000)]),              // port taken
        create("b", "h1", &[(80, 19999)]),              // port outside the range
        create("b", "h1", &[(80, 20001), (81, 20001)]), // the same port twice
        create("b", "h1", &[(80, 20001), (81, 20002)]), // fits
        Command::SetLimits {
            host: None,
            patch: LimitsPatch {
                max_workspaces_per_host: Some(2),
                ..Default::default()
            },
        },
        create("c", "h1", &[]), // host full
        Command::SetLimits {
            host: Some(h("h1")),
            patch: LimitsPatch {
                max_workspaces_per_host: Some(3),
                max_ports_per_workspace: Some(1),
                ..Default::default()
            },
        },
        create("c", "h1", &[(1, 20002), (2, 20003)]), // too many ports for h1
        create("c", "h1", &[]),                       // the override lets it in
    ]);
    assert_eq!(
        codes,
        [
            Some(InvalidArgument),
            None,
            None,
            Some(WorkspaceAlreadyExists),
            Some(PortConflict),
            Some(InvalidArgument),
            Some(PortConflict),
            None,
            None,
            Some(ResourceExhausted),
            None,
            Some(InvalidArgument),
            None,
        ]
    );
    assert_eq!(state.workspaces().len(), 3);
    assert_eq!(state.ports().len(), 3);
    assert_eq!(state.limits_for(&h("h1")).max_ports_per_workspace, 1);
    assert_eq!(state.cluster_limits().max_ports_per_workspace, 10);
    assert_eq!(state.desired_version(&h("h1")), 3);
}

#[test]
fn a_port_conflict_names_the_port() {
    let mut state = State::default();
    let mut apply = |i: u128, command| {
        let proposal = Proposal {
            request_id: RequestId::from_u128(i),
            at: Timestamp(0),
            proposer: Identity::Agent(h("h1")),
            command,
        };
        state.apply(&proposal)
    };
    apply(1, Command::RegisterHost(host("h1", 20000, 20010)));
    apply(2, create("a", "h1", &[(80, 20005)]));
    match apply(3, create("b", "h1", &[(80, 20005)])) {
        Outcome::Rejected(error) => assert_eq!(
            error.detail,
            Some(ErrorDetail::PortConflict { port: 20005 })
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn hosts_that_are_not_ready_take_nothing_and_their_workspaces_are_lost_until_they_return() {
    let (codes, state) = check(vec![
        Command::RegisterHost(host("h1", 20000, 20010)),
        create("a", "h1", &[]),
        Command::SetHostStatus {
            host: h("h1"),
            status: HostStatus::Down,
        },
        create("b", "h1", &[]),
    ]);
    assert_eq!(codes[3], Some(ErrorCode::ResourceExhausted));
    assert_eq!(state.workspaces()[&w("a")].state, WorkspaceState::Lost);
    let (_, state) = check(vec![
        Command::RegisterHost(host("h1", 20000, 20010)),
        create("a", "h1", &[]),
        Command::SetHostStatus {
            host: h("h1"),
            status: HostStatus::Down,
        },
        Command::SetHostStatus {
            host: h("h1"),
            status: HostStatus::Ready,
        },
    ]);
    assert_eq!(
        state.workspaces()[&w("a")].state,
        WorkspaceState::Lost,
        "an admin's word does not bring a silent host back"
    );
    let (_, state) = check(vec![
        Command::RegisterHost(host("h1", 20000, 20010)),
        create("a", "h1", &[]),
        Command::SetHostStatus {
            host: h("h1"),
            status: HostStatus::Down,
        },
        Command::HostReturned { host: h("h1") },
    ]);
    assert_eq!(state.workspaces()[&w("a")].state, WorkspaceState::Scheduled);
}

pub(super) fn observed(name: &str, generation: u64, state: WorkspaceState) -> ObservedWorkspace {
    ObservedWorkspace {
        name: w(name),
        generation,
        state,
        ports: vec![],
        error: None,
    }
}

#[test]
fn observations_count_only_from_the_workspaces_host_and_generation() {
    let (_, state) = check(vec![
        Command::RegisterHost(host("h1", 20000, 20010)),
        Command::RegisterHost(host("h2", 20000, 20010)),
        create("a", "h1", &[(80, 20000)]),
        Command::RecordObserved {
            host: h("h2"),
            observed: vec![observed("a", 1, WorkspaceState::Failed)],
        },
        Command::RecordObserved {
            host: h("h1"),
            observed: vec![observed("a", 0, WorkspaceState::Failed)],
        },
        Command::RecordObserved {
            host: h("h1"),
            observed: vec![observed("a", 1, WorkspaceState::Running)],
        },
        Command::RecordObserved {
            host: h("h1"),
            observed: vec![observed("nobody", 1, WorkspaceState::Running)],
        },
    ]);
    assert_eq!(state.workspaces()[&w("a")].state, WorkspaceState::Running);
}

/// A report that lands while its host is marked down (one that raced the marking, or that a
/// follower forwarded) is refused where it is applied, so every replica refuses it alike: the
/// lost workspace stays lost until a heartbeat returns the host, and the same report is taken
/// then.
#[test]
fn a_report_from_a_down_host_is_refused_until_the_host_returns() {
    let running = || Command::RecordObserved {
        host: h("h1"),
        observed: vec![observed("a", 1, WorkspaceState::Running)],
    };
    let (codes, state) = check(vec![
        Command::RegisterHost(host("h1", 20000, 20010)),
        create("a", "h1", &[]),
        Command::SetHostStatus {
            host: h("h1"),
            status: HostStatus::Down,
        },
        running(),
    ]);
    assert_eq!(codes[3], Some(ErrorCode::HostDown));
    assert_eq!(state.hosts()[&h("h1")].status, HostStatus::Down);
    assert_eq!(state.workspaces()[&w("a")].state, WorkspaceState::Lost);
    let (codes, state) = check(vec![
        Command::RegisterHost(host("h1", 20000, 20010)),
        create("a", "h1", &[]),
        Command::SetHostStatus {
            host: h("h1"),
            status: HostStatus::Down,
        },
        running(),
        Command::HostReturned { host: h("h1") },
        running(),
    ]);
    assert_eq!(codes[3], Some(ErrorCode::HostDown));
    assert_eq!(codes[5], None, "the report sent again after the return");
    assert_eq!(state.hosts()[&h("h1")].status, HostStatus::Ready);
    assert_eq!(state.workspaces()[&w("a")].state, WorkspaceState::Running);
}

/// Only `Down` refuses reports: a host its admins drained or cordoned still reports what runs.
#[test]
fn reports_from_draining_and_cordoned_hosts_are_taken() {
    for status in [HostStatus::Draining, HostStatus::Cordoned] {
        let (codes, state) = check(vec![
            Command::RegisterHost(host("h1", 20000, 20010)),
            create("a", "h1", &[]),
            Command::SetHostStatus {
                host: h("h1"),
                status,
            },
            Command::RecordObserved {
                host: h("h1"),
                observed: vec![observed("a", 1, WorkspaceState::Running)],
            },
        ]);
        assert_eq!(codes[3], None, "{status:?}");
        assert_eq!(state.workspaces()[&w("a")].state, WorkspaceState::Running);
    }
}

#[test]
fn destruction_releases_ports_once_the_host_reports_it_gone() {
    let (codes, state) = check(vec![
        Command::RegisterHost(host("h1", 20000, 20010)),
        create("a", "h1", &[(80, 20000)]),
        Command::DestroyWorkspace { name: w("a") },
        Command::SetDesiredRun {
            name: w("a"),
            run: DesiredRun::Running,
        },
        Command::RecordObserved {
            host: h("h1"),
            observed: vec![observed("a", 1, WorkspaceState::Running)],
        },
    ]);
    assert_eq!(codes[3], Some(ErrorCode::InvalidArgument));
    assert_eq!(
        state.workspaces()[&w("a")].state,
        WorkspaceState::Destroying,
        "a late report does not revive it"
    );
    assert_eq!(
        state.ports().len(),
        1,
        "the port stays allocated until the container is gone"
    );
    let (_, state) = check(vec![
        Command::RegisterHost(host("h1", 20000, 20010)),
        create("a", "h1", &[(80, 20000)]),
        Command::DestroyWorkspace { name: w("a") },
        Command::RecordObserved {
            host: h("h1"),
            observed: vec![observed("a", 1, WorkspaceState::Gone)],
        },
        create("a", "h1", &[(80, 20000)]),
    ]);
    assert_eq!(
        state.workspaces().len(),
        1,
        "the name and the port are free again"
    );
}

/// Found by the fault campaign: a fast host's report that a destroyed workspace is gone, sent
/// again (or late) once a new workspace of the same name was created on it, turned the new one
/// `Gone` (a read showed it being destroyed) until the next report.
#[test]
fn a_late_gone_report_of_a_destroyed_workspace_leaves_its_successor_alone() {
    let gone = || Command::RecordObserved {
        host: h("h1"),
        observed: vec![observed("a", 1, WorkspaceState::Gone)],
    };
    let (codes, state) = check(vec![
        Command::RegisterHost(host("h1", 20000, 20010)),
        create("a", "h1", &[(80, 20000)]),
        Command::DestroyWorkspace { name: w("a") },
        gone(),
        create("a", "h1", &[(80, 20000)]),
        gone(),
        // Nor does a report that it is being destroyed (which no agent may send), then gone.
        Command::RecordObserved {
            host: h("h1"),
            observed: vec![observed("a", 1, WorkspaceState::Destroying)],
        },
        gone(),
    ]);
    assert!(codes.iter().all(Option::is_none), "{codes:?}");
    let successor = &state.workspaces()[&w("a")];
    assert_eq!(successor.state, WorkspaceState::Scheduled);
    assert_eq!(successor.desired, DesiredRun::Running);
    assert!(successor.generation > 1, "a generation of its own");
}

/// Found by the fault campaign: a late report that a destroyed workspace was gone forgot its
/// successor, itself being destroyed, while the successor's container still ran (leaked: the
/// agent never removes a container the coordinator does not name). A new workspace starts at a
/// generation no predecessor on the host reached, so the report no longer matches it.
#[test]
fn a_late_gone_report_cannot_forget_a_successor_being_destroyed() {
    let gone = |generation| Command::RecordObserved {
        host: h("h1"),
        observed: vec![observed("a", generation, WorkspaceState::Gone)],
    };
    let (codes, state) = check(vec![
        Command::RegisterHost(host("h1", 20000, 20010)),
        create("a", "h1", &[(80, 20000)]),
        Command::DestroyWorkspace { name: w("a") },
        gone(1),
        create("a", "h1", &[(80, 20000)]),
        Command::DestroyWorkspace { name: w("a") },
        gone(1),
    ]);
    assert!(codes.iter().all(Option::is_none), "{codes:?}");
    let successor = &state.workspaces()[&w("a")];
    assert_eq!(successor.state, WorkspaceState::Destroying);
    // Its own host's word forgets it.
    let generation = successor.generation;
    let mut commands = vec![
        Command::RegisterHost(host("h1", 20000, 20010)),
        create("a", "h1", &[(80, 20000)]),
        Command::DestroyWorkspace { name: w("a") },
        gone(1),
        create("a", "h1", &[(80, 20000)]),
        Command::DestroyWorkspace { name: w("a") },
    ];
    commands.push(gone(generation));
    let (_, state) = check(commands);
    assert!(state.workspaces().is_empty());
}

#[test]
fn each_host_is_told_its_own_workspaces_and_a_destroyed_one_is_absent() {
    let (_, state) = check(vec![
        Command::RegisterHost(host("h1", 20000, 20010)),
        Command::RegisterHost(host("h2", 20000, 20010)),
        create("a", "h1", &[(80, 20000)]),
        create("b", "h1", &[]),
        create("c", "h2", &[]),
        Command::SetDesiredRun {
            name: w("b"),
            run: DesiredRun::Stopped,
        },
        Command::DestroyWorkspace { name: w("a") },
    ]);
    let desired = state.desired_for(&h("h1"));
    assert_eq!(desired.version, state.desired_version(&h("h1")));
    assert_eq!(desired.version, 4, "two creates, a stop and a destroy");
    let runs: Vec<_> = desired
        .assignments
        .iter()
        .map(|a| (a.spec.name.as_str(), a.run, a.generation))
        .collect();
    assert_eq!(
        runs,
        [("a", DesiredRun::Absent, 1), ("b", DesiredRun::Stopped, 1)]
    );
    assert_eq!(desired.assignments[0].ports[0].host, 20000);
    let other = state.desired_for(&h("h2"));
    assert_eq!(other.assignments.len(), 1);
    assert_eq!(state.desired_for(&h("nowhere")).assignments.len(), 0);
}

#[test]
fn a_retried_request_gets_its_first_outcome_and_changes_nothing() {
    let mut state = State::default();
    let proposal = |id: u128, at: u64, command| Proposal {
        request_id: RequestId::from_u128(id),
        at: Timestamp(at),
        proposer: Identity::Agent(h("h1")),
        command,
    };
    state.apply(&proposal(
        1,
        0,
        Command::RegisterHost(host("h1", 20000, 20010)),
    ));
    assert_eq!(
        state.apply(&proposal(2, 1, create("a", "h1", &[]))),
        Outcome::Applied
    );
    let before = state.clone();
    // The same request again (a client retry after a lost answer): applied once only.
    assert_eq!(
        state.apply(&proposal(2, 5, create("a", "h1", &[]))),
        Outcome::Applied
    );
    assert_eq!(state, before);
    // A different request for the same name is a real conflict.
    assert!(matches!(
        state.apply(&proposal(3, 6, create("a", "h1", &[]))),
        Outcome::Rejected(_)
    ));
    // After the retention window the journal forgets, deterministically by proposal time.
    state.apply(&proposal(
        4,
        JOURNAL_RETENTION_MS + 10,
        Command::SetLimits {
            host: None,
            patch: LimitsPatch::default(),
        },
    ));
    assert!(state.outcome_of(RequestId::from_u128(2)).is_none());
    assert!(state.outcome_of(RequestId::from_u128(4)).is_some());
    state.check_invariants().unwrap();
}

fn run_of(state: &State, name: &str) -> (DesiredRun, WorkspaceState, u64) {
    let w = &state.workspaces()[&w(name)];
    (w.desired, w.state, w.generation)
}

#[test]
fn a_restart_stops_then_starts_on_the_agents_word() {
    let running = |name| Command::RecordObserved {
        host: h("h1"),
        observed: vec![observed(name, 1, WorkspaceState::Running)],
    };
    let (codes, state) = check(vec![
        Command::RegisterHost(host("h1", 20000, 20010)),
        create("a", "h1", &[]),
        running("a"),
        Command::RestartWorkspace { name: w("a") },
    ]);
    assert_eq!(codes, [None; 4]);
    assert_eq!(
        run_of(&state, "a"),
        (DesiredRun::Stopped, WorkspaceState::Running, 1)
    );
    let version = state.desired_version(&h("h1"));
    let (_, state) = check(vec![
        Command::RegisterHost(host("h1", 20000, 20010)),
        create("a", "h1", &[]),
        running("a"),
        Command::RestartWorkspace { name: w("a") },
        Command::RecordObserved {
            host: h("h1"),
            observed: vec![observed("a", 1, WorkspaceState::Stopped)],
        },
    ]);
    assert_eq!(
        run_of(&state, "a"),
        (DesiredRun::Running, WorkspaceState::Stopped, 1),
        "the stop seen, the start is asked"
    );
    assert_eq!(state.desired_version(&h("h1")), version + 1);
    // A stop while the restart is under way wins: the stopped report starts nothing.
    let (_, state) = check(vec![
        Command::RegisterHost(host("h1", 20000, 20010)),
        create("a", "h1", &[]),
        running("a"),
        Command::RestartWorkspace { name: w("a") },
        Command::SetDesiredRun {
            name: w("a"),
            run: DesiredRun::Stopped,
        },
        Command::RecordObserved {
            host: h("h1"),
            observed: vec![observed("a", 1, WorkspaceState::Stopped)],
        },
    ]);
    assert_eq!(run_of(&state, "a").0, DesiredRun::Stopped);
}

#[test]
fn a_switch_stops_the_owners_other_workspaces_only() {
    let bob = |name: &str| {
        let Command::CreateWorkspace {
            spec, host, ports, ..
        } = create(name, "h2", &[])
        else {
            unreachable!()
        };
        Command::CreateWorkspace {
            spec,
            owner: UserName::new("bob").unwrap(),
            host,
            ports,
        }
    };
    let (codes, state) = check(vec![
        Command::RegisterHost(host("h1", 20000, 20010)),
        Command::RegisterHost(host("h2", 20000, 20010)),
        create("a", "h1", &[]),
        create("b", "h2", &[]),
        Command::SetDesiredRun {
            name: w("b"),
            run: DesiredRun::Stopped,
        },
        bob("c"),
        Command::SwitchWorkspace {
            owner: UserName::new("alice").unwrap(),
            name: w("b"),
        },
        Command::SwitchWorkspace {
            owner: UserName::new("alice").unwrap(),
            name: w("c"),
        },
    ]);
    assert_eq!(codes[6], None);
    assert_eq!(codes[7], Some(ErrorCode::PermissionDenied), "not hers");
    assert_eq!(run_of(&state, "a").0, DesiredRun::Stopped);
    assert_eq!(run_of(&state, "b").0, DesiredRun::Running);
    assert_eq!(
        run_of(&state, "c").0,
        DesiredRun::Running,
        "bob's untouched"
    );
}

#[test]
fn a_repair_is_a_new_generation_and_not_for_a_down_host() {
    let (codes, state) = check(vec![
        Command::RegisterHost(host("h1", 20000, 20010)),
        create("a", "h1", &[]),
        Command::RecordObserved {
            host: h("h1"),
            observed: vec![observed("a", 1, WorkspaceState::Failed)],
        },
        Command::RepairWorkspace { name: w("a") },
        Command::SetHostStatus {
            host: h("h1"),
            status: HostStatus::Down,
        },
        Command::RepairWorkspace { name: w("a") },
    ]);
    assert_eq!(codes[3], None);
    assert_eq!(codes[5], Some(ErrorCode::BackendUnavailable));
    assert_eq!(
        run_of(&state, "a"),
        (DesiredRun::Running, WorkspaceState::Lost, 2)
    );
}

#[test]
fn cleanup_destroys_only_what_is_still_stopped() {
    let stopped = |name| Command::RecordObserved {
        host: h("h1"),
        observed: vec![observed(name, 1, WorkspaceState::Stopped)],
    };
    let (_, state) = check(vec![
        Command::RegisterHost(host("h1", 20000, 20010)),
        create("a", "h1", &[]),
        create("b", "h1", &[]),
        Command::SetDesiredRun {
            name: w("a"),
            run: DesiredRun::Stopped,
        },
        stopped("a"),
        Command::DestroyStopped {
            names: vec![w("a"), w("b"), w("nobody")],
        },
    ]);
    assert_eq!(run_of(&state, "a").1, WorkspaceState::Destroying);
    assert_eq!(run_of(&state, "b").1, WorkspaceState::Scheduled);
}

#[test]
fn restarting_a_failed_workspace_makes_its_container_again() {
    let failed = Command::RecordObserved {
        host: h("h1"),
        observed: vec![observed("a", 1, WorkspaceState::Failed)],
    };
    let (codes, state) = check(vec![
        Command::RegisterHost(host("h1", 20000, 20010)),
        create("a", "h1", &[]),
        failed,
        Command::RestartWorkspace { name: w("a") },
    ]);
    assert_eq!(codes, [None, None, None, None]);
    assert_eq!(
        run_of(&state, "a"),
        (DesiredRun::Running, WorkspaceState::Scheduled, 2)
    );
}

#[test]
fn a_repeated_report_is_not_a_change() {
    let stopped = || Command::RecordObserved {
        host: h("h1"),
        observed: vec![observed("a", 1, WorkspaceState::Stopped)],
    };
    let (_, state) = check(vec![
        Command::RegisterHost(host("h1", 20000, 20010)),
        create("a", "h1", &[]),
        Command::SetDesiredRun {
            name: w("a"),
            run: DesiredRun::Stopped,
        },
        stopped(),
        stopped(),
        stopped(),
    ]);
    // Applied at 1,003 (the first report); the agent's resends at 1,004 and 1,005 change
    // nothing, so the workspace has been stopped since 1,003.
    assert_eq!(state.workspaces()[&w("a")].updated_at, Timestamp(1_003));
}

#[test]
fn a_port_conflict_moves_the_workspace_to_another_port_once() {
    let conflict = |generation, port| Command::RecordObserved {
        host: h("h1"),
        observed: vec![ObservedWorkspace {
            error: Some(
                WireError::new(ErrorCode::PortConflict, "taken")
                    .with_detail(ErrorDetail::PortConflict { port }),
            ),
            ..observed("a", generation, WorkspaceState::Failed)
        }],
    };
    let (_, state) = check(vec![
        Command::RegisterHost(host("h1", 20000, 20010)),
        create("a", "h1", &[(80, 20000), (81, 20001)]),
        create("b", "h1", &[(80, 20002)]),
        conflict(1, 20000),
    ]);
    let a = &state.workspaces()[&w("a")];
    assert_eq!(
        a.ports,
        [
            PortBinding {
                container: 80,
                host: 20003
            },
            PortBinding {
                container: 81,
                host: 20001
            }
        ],
        "the lowest free port, the other binding kept"
    );
    assert_eq!((a.generation, a.state), (2, WorkspaceState::Scheduled));
    assert!(a.port_reassigned);
    assert!(
        !state.port_free(&h("h1"), 20000, Timestamp(5_000)),
        "held by a stranger"
    );
    assert!(state.port_free(&h("h1"), 20000, Timestamp(5_000 + FOREIGN_PORT_MEMORY_MS)));
    assert!(state.ports().get(&(h("h1"), 20000)).is_none());
    // A second conflict leaves it failed, on its second port.
    let (_, state) = check(vec![
        Command::RegisterHost(host("h1", 20000, 20010)),
        create("a", "h1", &[(80, 20000)]),
        conflict(1, 20000),
        conflict(2, 20001),
    ]);
    let a = &state.workspaces()[&w("a")];
    assert_eq!((a.generation, a.state), (2, WorkspaceState::Failed));
    assert_eq!(a.ports[0].host, 20001);
}

#[test]
fn a_cordoned_host_that_fails_and_returns_is_still_cordoned() {
    let status = |host: &str, status| Command::SetHostStatus {
        host: h(host),
        status,
    };
    let (_, state) = check(vec![
        Command::RegisterHost(host("h1", 20000, 20010)),
        create("a", "h1", &[]),
        status("h1", HostStatus::Cordoned),
        status("h1", HostStatus::Down),
        Command::HostReturned { host: h("h1") },
    ]);
    assert_eq!(state.hosts()[&h("h1")].status, HostStatus::Cordoned);
    assert_eq!(run_of(&state, "a").1, WorkspaceState::Scheduled);
    // Uncordoned while down: it returns ready.
    let (_, state) = check(vec![
        Command::RegisterHost(host("h1", 20000, 20010)),
        status("h1", HostStatus::Cordoned),
        status("h1", HostStatus::Down),
        status("h1", HostStatus::Ready),
        Command::HostReturned { host: h("h1") },
    ]);
    assert_eq!(state.hosts()[&h("h1")].status, HostStatus::Ready);
}

#[test]
fn overcommit_is_a_limit() {
    // 8 CPUs, 32 GiB: at 100 % a host takes 8 large (2 CPU, 4 GiB) workspaces... of which
    // CPU binds at 4.
    let mut commands = vec![
        Command::RegisterHost(host("h1", 20000, 20010)),
        Command::SetLimits {
            host: Some(h("h1")),
            patch: LimitsPatch {
                cpu_overcommit_percent: Some(100),
                ..Default::default()
            },
        },
    ];
    for i in 0..5 {
        let Command::CreateWorkspace {
            mut spec,
            owner,
            host,
            ports,
        } = create(&format!("w{i}"), "h1", &[])
        else {
            unreachable!()
        };
        spec.class = ResourceClass::Large;
        commands.push(Command::CreateWorkspace {
            spec,
            owner,
            host,
            ports,
        });
    }
    commands.push(Command::SetLimits {
        host: None,
        patch: LimitsPatch {
            cpu_overcommit_percent: Some(50),
            ..Default::default()
        },
    });
    let (codes, state) = check(commands);
    assert_eq!(&codes[2..6], [None; 4]);
    assert_eq!(codes[6], Some(ErrorCode::ResourceExhausted));
    assert_eq!(codes[7], Some(ErrorCode::InvalidArgument), "below 100 %");
    assert_eq!(state.capacity_of(&h("h1")).0, 8_000);
}
