//! `State::repeats_the_state` against `State::record_observed`, case by case: every report it
//! calls a repeat must leave the whole state as it was when applied, and every report it does
//! not must change it, except the few it leaves to apply on purpose (a port conflict; a host
//! marked down or unknown).

use nexus_protocol::error::ErrorDetail;
use nexus_protocol::identity::Identity;
use nexus_protocol::message::{DesiredRun, ObservedWorkspace};
use nexus_protocol::model::PortBinding;

use super::tests::{create, h, host, w};
use super::*;

/// Hosts h1 and h2, and workspace `a` on h1 (generation 1, port 20000), as a fresh create left
/// them; `down` marks h1 down.
fn fleet(down: bool) -> State {
    let mut state = State::default();
    let mut commands = vec![
        Command::RegisterHost(host("h1", 20000, 20010)),
        Command::RegisterHost(host("h2", 20000, 20010)),
        create("a", "h1", &[(80, 20000)]),
    ];
    if down {
        commands.push(Command::SetHostStatus {
            host: h("h1"),
            status: HostStatus::Down,
        });
    }
    for (i, command) in commands.into_iter().enumerate() {
        let proposal = Proposal {
            request_id: RequestId::from_u128(i as u128 + 1),
            at: Timestamp(1_000),
            proposer: Identity::Agent(h("h1")),
            command,
        };
        assert_eq!(state.apply(&proposal), Outcome::Applied);
    }
    state
}

fn errors() -> [Option<WireError>; 4] {
    [
        None,
        Some(WireError::new(ErrorCode::Internal, "the engine failed")),
        Some(WireError::new(
            ErrorCode::Internal,
            "the engine failed again",
        )),
        Some(
            WireError::new(ErrorCode::PortConflict, "port 20000 is taken")
                .with_detail(ErrorDetail::PortConflict { port: 20000 }),
        ),
    ]
}

#[test]
fn a_report_is_a_repeat_exactly_when_applying_it_changes_nothing() {
    let (mut repeats, mut changes, mut left_to_apply) = (0, 0, 0);
    for down in [false, true] {
        let base = fleet(down);
        for held in WorkspaceState::ALL {
            for held_error in errors() {
                for (restart_pending, desired) in [
                    (false, DesiredRun::Running),
                    (false, DesiredRun::Stopped),
                    (true, DesiredRun::Stopped),
                ] {
                    let mut before = base.clone();
                    let record = before.workspaces.get_mut(&w("a")).unwrap();
                    record.state = held;
                    record.last_error = held_error.clone();
                    record.restart_pending = restart_pending;
                    record.desired = desired;
                    // Set by hand, so counted again as an apply would have kept it.
                    before.tally = before.tally_index();
                    for (from, name, generation) in [
                        ("h1", "a", 1),
                        ("h1", "a", 2),
                        ("h2", "a", 1),
                        ("h1", "zz", 1),
                        ("h3", "a", 1),
                    ] {
                        for state in WorkspaceState::ALL {
                            for error in errors() {
                                let report = ObservedWorkspace {
                                    name: w(name),
                                    generation,
                                    state,
                                    ports: vec![PortBinding {
                                        container: 80,
                                        host: 20000,
                                    }],
                                    error: error.clone(),
                                };
                                let repeat = before
                                    .repeats_the_state(&h(from), std::slice::from_ref(&report));
                                let mut after = before.clone();
                                after.record_observed(Timestamp(9_000), &h(from), &[report]);
                                let changed = after != before;
                                let case = format!(
                                    "down {down}, held {held:?} {held_error:?} restart \
                                     {restart_pending} {desired:?}; report from {from} of \
                                     {name} gen {generation}: {state:?} {error:?}"
                                );
                                assert!(!(repeat && changed), "a repeat changed the state: {case}");
                                let on_purpose = down
                                    || from == "h3"
                                    || error
                                        .as_ref()
                                        .is_some_and(|e| e.code == ErrorCode::PortConflict);
                                assert!(
                                    repeat || changed || on_purpose,
                                    "a report that changes nothing was not a repeat: {case}"
                                );
                                match (repeat, changed) {
                                    (true, _) => repeats += 1,
                                    (false, true) => changes += 1,
                                    (false, false) => left_to_apply += 1,
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    // Every kind of case was met: the test cannot pass by calling everything one thing.
    assert!(repeats > 1_000, "{repeats} repeats");
    assert!(changes > 1_000, "{changes} changes");
    assert!(left_to_apply > 0, "{left_to_apply} left to apply");
}

#[test]
fn a_report_is_a_repeat_only_if_every_workspace_in_it_is() {
    let state = fleet(false);
    let record = &state.workspaces()[&w("a")];
    let same = ObservedWorkspace {
        name: w("a"),
        generation: record.generation,
        state: record.state,
        ports: vec![],
        error: None,
    };
    let running = ObservedWorkspace {
        state: WorkspaceState::Running,
        ..same.clone()
    };
    assert!(state.repeats_the_state(&h("h1"), std::slice::from_ref(&same)));
    assert!(
        state.repeats_the_state(&h("h1"), &[]),
        "an empty report says nothing new"
    );
    assert!(!state.repeats_the_state(&h("h1"), &[same.clone(), running]));
    assert!(
        !fleet(true).repeats_the_state(&h("h1"), &[same]),
        "a down host's is refused at apply"
    );
}

/// The leader proposes only a report's entries that change the state (`report_changes`): taking
/// those alone leaves the state exactly as taking the whole report does, for every held state
/// of one workspace and every entry for it beside another workspace's entry; a report that names
/// a workspace twice is taken whole.
#[test]
fn taking_only_a_reports_changes_leaves_the_state_as_the_whole_report() {
    let mut base = fleet(false);
    let proposal = Proposal {
        request_id: RequestId::from_u128(99),
        at: Timestamp(2_000),
        proposer: Identity::Agent(h("h1")),
        command: create("b", "h1", &[(80, 20001)]),
    };
    assert_eq!(base.apply(&proposal), Outcome::Applied);
    let entry = |name: &str, generation, state, error: Option<WireError>| ObservedWorkspace {
        name: w(name),
        generation,
        state,
        ports: vec![],
        error,
    };
    let (mut filtered, mut whole) = (0, 0);
    for held in WorkspaceState::ALL {
        for held_error in errors() {
            let mut before = base.clone();
            let record = before.workspaces.get_mut(&w("a")).unwrap();
            record.state = held;
            record.last_error = held_error.clone();
            before.tally = before.tally_index();
            for generation in [1, 2] {
                for state in WorkspaceState::ALL {
                    for error in errors() {
                        for other in [WorkspaceState::Scheduled, WorkspaceState::Running] {
                            let report = [
                                entry("a", generation, state, error.clone()),
                                entry("b", 1, other, None),
                            ];
                            let changes = before.report_changes(&h("h1"), &report).unwrap();
                            if changes.len() < report.len() {
                                filtered += 1;
                            }
                            let mut by_changes = before.clone();
                            by_changes.record_observed(Timestamp(9_000), &h("h1"), &changes);
                            let mut by_whole = before.clone();
                            by_whole.record_observed(Timestamp(9_000), &h("h1"), &report);
                            if changes.len() == report.len() {
                                whole += 1;
                            }
                            assert!(
                                by_changes == by_whole,
                                "held {held:?} {held_error:?}; report {report:?}: took {changes:?}"
                            );
                        }
                    }
                }
            }
        }
    }
    assert!(
        filtered > 1_000 && whole > 10,
        "{filtered} filtered, {whole} whole"
    );

    // Named twice, the order of the entries matters: the whole report goes.
    let mut state = base.clone();
    state.workspaces.get_mut(&w("a")).unwrap().state = WorkspaceState::Running;
    state.tally = state.tally_index();
    let twice = [
        entry("a", 1, WorkspaceState::Stopped, None),
        entry("a", 1, WorkspaceState::Running, None),
    ];
    assert_eq!(state.report_changes(&h("h1"), &twice).unwrap(), twice);
    assert_eq!(fleet(true).report_changes(&h("h1"), &twice), None);
}
