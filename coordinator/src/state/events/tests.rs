//! What each command records: logs applied in order, each workspace's events rendered one per
//! line (`seq time actor kind request: reason [error]`) and compared as golden text.

use expect_test::{Expect, expect};
use nexus_protocol::clock::Timestamp;
use nexus_protocol::debug::{Actor, EventKind, WorkspaceEvent};
use nexus_protocol::error::{ErrorCode, ErrorDetail, WireError};
use nexus_protocol::identity::{Identity, Role};
use nexus_protocol::message::{DesiredRun, ObservedWorkspace};
use nexus_protocol::model::{HostInfo, HostStatus, PortBinding, PortRange, WorkspaceState};
use nexus_protocol::{HostId, RequestId, UserName, WorkspaceName};

use super::{EVENT_TEXT_BYTES, EVENTS_KEPT};
use crate::state::{Command, PlaceRequest, Proposal, State};

/// A log applied in order: request n, at n seconds.
struct Log {
    state: State,
    next: u128,
}

impl Log {
    /// Hosts h1 and h2, registered as requests 1 and 2.
    fn new() -> Log {
        let mut log = Log {
            state: State::default(),
            next: 0,
        };
        for id in ["h1", "h2"] {
            log.by(&agent(id), Command::RegisterHost(host(id)));
        }
        log
    }

    fn by(&mut self, who: &Identity, command: Command) -> RequestId {
        self.next += 1;
        let request_id = RequestId::from_u128(self.next);
        self.state.apply(&Proposal {
            request_id,
            at: Timestamp(u64::try_from(self.next).unwrap() * 1000),
            proposer: who.clone(),
            command,
        });
        self.state.check_invariants().unwrap();
        request_id
    }

    fn create(&mut self, who: &Identity, name: &str, on: &str, ports: &[(u16, u16)]) -> RequestId {
        let owner = match who {
            Identity::User { name, .. } => name.clone(),
            _ => UserName::new("alice").unwrap(),
        };
        let spec = nexus_protocol::model::WorkspaceSpec {
            ports: nexus_fixtures::ports(&ports.iter().map(|p| p.0).collect::<Vec<_>>()),
            ..nexus_fixtures::spec(name)
        };
        let ports = ports
            .iter()
            .map(|&(container, host)| PortBinding { container, host })
            .collect();
        let command = Command::CreateWorkspace {
            spec,
            owner,
            host: h(on),
            ports,
        };
        self.by(who, command)
    }

    fn want(&mut self, who: &Identity, name: &str, run: DesiredRun) -> RequestId {
        self.by(who, Command::SetDesiredRun { name: w(name), run })
    }

    fn report(
        &mut self,
        on: &str,
        name: &str,
        generation: u64,
        state: WorkspaceState,
        error: Option<WireError>,
    ) -> RequestId {
        let observed = vec![ObservedWorkspace {
            name: w(name),
            generation,
            state,
            ports: vec![],
            error,
        }];
        self.by(
            &agent(on),
            Command::RecordObserved {
                host: h(on),
                observed,
            },
        )
    }

    fn check(&self, name: &str, expected: Expect) {
        let lines: String = self
            .state
            .events_of(&w(name))
            .unwrap_or_default()
            .iter()
            .map(|event| render(event) + "\n")
            .collect();
        expected.assert_eq(&lines);
    }
}

/// One event as a line: `seq time actor kind request: reason [error]`.
fn render(event: &WorkspaceEvent) -> String {
    let actor = match &event.actor {
        Actor::Identity(Identity::User { name, role }) => format!("{name}({role:?})"),
        Actor::Identity(Identity::Agent(host)) => format!("agent:{host}"),
        Actor::Identity(Identity::Coordinator(node)) => format!("coordinator:{node}"),
        Actor::Detector => "detector".into(),
        Actor::Policy(name) => format!("policy:{name}"),
    };
    let kind = match &event.kind {
        EventKind::Created { host } => format!("created on {host}"),
        EventKind::Wanted(run) => format!("wanted {run:?}"),
        EventKind::State { from, to } => format!("{from} -> {to}"),
        EventKind::Restart => "restart".into(),
        EventKind::Repair { generation } => format!("repair to generation {generation}"),
        EventKind::PortsReassigned => "ports reassigned".into(),
        other => format!("{other:?}"),
    };
    let request = event
        .request_id
        .map_or("-".into(), |id| format!("r{}", id.as_u128()));
    let mut line = format!(
        "{} t{} {actor} {kind} {request}",
        event.seq,
        event.at.as_millis() / 1000
    );
    if let Some(reason) = &event.reason {
        line.push_str(&format!(": {reason}"));
    }
    if let Some(error) = &event.error {
        line.push_str(&format!(" [{}]", error.code));
    }
    line
}

fn host(id: &str) -> HostInfo {
    HostInfo {
        cpus: 8,
        memory_bytes: 32 << 30,
        port_range: PortRange::new(20000, 20010).unwrap(),
        ..nexus_fixtures::host(id)
    }
}

fn h(id: &str) -> HostId {
    HostId::new(id).unwrap()
}

fn w(name: &str) -> WorkspaceName {
    WorkspaceName::new(name).unwrap()
}

fn agent(host: &str) -> Identity {
    Identity::Agent(h(host))
}

fn user(name: &str, role: Role) -> Identity {
    Identity::User {
        name: UserName::new(name).unwrap(),
        role,
    }
}

fn id(n: u128) -> RequestId {
    RequestId::from_u128(n)
}

#[test]
fn a_workspaces_life_is_recorded_with_who_asked_and_under_which_request() {
    use WorkspaceState::*;
    let (alice, root) = (user("alice", Role::User), user("root", Role::Admin));
    let mut log = Log::new();
    let create = log.create(&alice, "w", "h1", &[(80, 20000)]);
    assert_eq!(log.state.cause_of(&w("w")), Some(create));
    log.report("h1", "w", 1, Starting, None);
    log.report("h1", "w", 1, Running, None);
    log.report("h1", "w", 1, Running, None); // a repeated report is no change
    assert_eq!(
        log.state.cause_of(&w("w")),
        Some(create),
        "a report is no cause"
    );
    let stop = log.want(&alice, "w", DesiredRun::Stopped);
    assert_eq!(log.state.cause_of(&w("w")), Some(stop));
    log.report("h1", "w", 1, Stopping, None);
    log.report("h1", "w", 1, Stopped, None);
    log.want(&alice, "w", DesiredRun::Running);
    log.report("h1", "w", 1, Running, None);
    log.by(&root, Command::RestartWorkspace { name: w("w") });
    log.report("h1", "w", 1, Stopped, None); // the restart goes on: wanted running again
    log.report("h1", "w", 1, Running, None);
    log.by(&root, Command::RepairWorkspace { name: w("w") });
    log.report("h1", "w", 1, Stopped, None); // the old generation's word: ignored
    log.report("h1", "w", 2, Running, None);
    let destroy = log.by(&root, Command::DestroyWorkspace { name: w("w") });
    log.report("h1", "w", 2, Running, None); // being destroyed: ignored
    log.check(
        "w",
        expect![[r#"
            1 t3 alice(User) created on h1 r3
            2 t4 agent:h1 scheduled -> starting r3
            3 t5 agent:h1 starting -> running r3
            4 t7 alice(User) wanted Stopped r7
            5 t8 agent:h1 running -> stopping r7
            6 t9 agent:h1 stopping -> stopped r7
            7 t10 alice(User) wanted Running r10
            8 t11 agent:h1 stopped -> running r10
            9 t12 root(Admin) restart r12
            10 t13 agent:h1 running -> stopped r12
            11 t14 agent:h1 stopped -> running r12
            12 t15 root(Admin) repair to generation 2 r15
            13 t17 agent:h1 scheduled -> running r15
            14 t18 root(Admin) wanted Absent r18
        "#]],
    );
    assert_eq!(log.state.cause_of(&w("w")), Some(destroy));
    // Gone: the workspace is forgotten, and its events with it.
    log.report("h1", "w", 2, Gone, None);
    assert!(log.state.workspaces().is_empty());
    assert_eq!(log.state.history_of(&w("w")), None);
    assert_eq!(log.state.cause_of(&w("w")), None);
    assert_eq!(log.state.request_record(create).unwrap().events, vec![]);
    // A new workspace of the same name starts a history of its own.
    log.create(&alice, "w", "h1", &[]);
    log.check(
        "w",
        expect![[r#"
            1 t21 alice(User) created on h1 r21
        "#]],
    );
}

#[test]
fn a_failure_is_recorded_with_its_reason_and_error_once_per_new_error() {
    use WorkspaceState::*;
    let mut log = Log::new();
    log.create(&user("alice", Role::User), "w", "h1", &[]);
    let pull = WireError::new(ErrorCode::BackendUnavailable, "pull: connection refused");
    log.report("h1", "w", 1, Starting, Some(pull.clone()));
    log.report("h1", "w", 1, Starting, Some(pull)); // the same error again: no event
    let long = format!("exited with code 1; last output: {}", "x".repeat(2000));
    let crash =
        WireError::new(ErrorCode::ContainerError, long).with_detail(ErrorDetail::ContainerExited {
            exit_code: 1,
            oom_killed: false,
            last_lines: vec!["x".repeat(500); 20],
        });
    log.report("h1", "w", 1, Failed, Some(crash.clone()));
    log.report("h1", "w", 1, Failed, Some(crash));
    let kept_lines = match &log.state.workspaces()[&w("w")].last_error {
        Some(WireError {
            detail: Some(ErrorDetail::ContainerExited { last_lines, .. }),
            ..
        }) => last_lines.len(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        kept_lines, 20,
        "the workspace's last error keeps the output"
    );
    let oom = WireError::new(ErrorCode::ContainerError, "killed: out of memory");
    log.report("h1", "w", 1, Failed, Some(oom));
    let events = log.state.events_of(&w("w")).unwrap();
    let failed = &events[2];
    let error = failed.error.as_ref().unwrap();
    assert_eq!(error.message.len(), EVENT_TEXT_BYTES, "the message is cut");
    assert!(error.message.ends_with("..."));
    assert_eq!(failed.reason.as_deref(), Some(error.message.as_str()));
    assert_eq!(
        error.detail,
        Some(ErrorDetail::ContainerExited {
            exit_code: 1,
            oom_killed: false,
            last_lines: vec![],
        }),
        "the exit code stays; the output lines are the workspace's last error's"
    );
    let lines: Vec<String> = events
        .iter()
        .map(|e| render(e).chars().take(100).collect())
        .collect();
    let crashed = "3 t6 agent:h1 starting -> failed r3: exited with code 1; last output: ";
    assert_eq!(
        lines,
        [
            "1 t3 alice(User) created on h1 r3".to_string(),
            "2 t4 agent:h1 scheduled -> starting r3: pull: connection refused [BACKEND_UNAVAILABLE]".into(),
            format!("{crashed}{}", "x".repeat(100 - crashed.len())),
            "4 t8 agent:h1 failed -> failed r3: killed: out of memory [CONTAINER_ERROR]".into(),
        ]
    );
}

#[test]
fn a_port_conflict_records_the_failure_and_the_new_port_under_the_create() {
    let mut log = Log::new();
    log.create(&user("alice", Role::User), "w", "h1", &[(80, 20000)]);
    let conflict = WireError::new(ErrorCode::PortConflict, "port 20000 is taken")
        .with_detail(ErrorDetail::PortConflict { port: 20000 });
    log.report("h1", "w", 1, WorkspaceState::Failed, Some(conflict.clone()));
    log.report("h1", "w", 2, WorkspaceState::Running, None);
    log.check(
        "w",
        expect![[r#"
            1 t3 alice(User) created on h1 r3
            2 t4 agent:h1 scheduled -> failed r3: port 20000 is taken [PORT_CONFLICT]
            3 t4 agent:h1 ports reassigned r3: port 20000 on host h1 is held by something else; given port 20001
            4 t5 agent:h1 scheduled -> running r3
        "#]],
    );
    assert_eq!(log.state.cause_of(&w("w")), Some(id(3)));
}

#[test]
fn a_host_down_and_back_is_the_detectors_under_its_proposal() {
    let alice = user("alice", Role::User);
    let mut log = Log::new();
    log.create(&alice, "a", "h1", &[]);
    log.create(&alice, "b", "h1", &[]);
    log.create(&alice, "c", "h2", &[]);
    log.report("h1", "a", 1, WorkspaceState::Running, None);
    log.by(&alice, Command::DestroyWorkspace { name: w("b") });
    let coordinator = Identity::Coordinator(nexus_protocol::NodeId::new(1).unwrap());
    let down = Command::SetHostStatus {
        host: h("h1"),
        status: HostStatus::Down,
    };
    log.by(&coordinator, down.clone());
    log.by(&coordinator, down); // already down: no change, no event
    log.by(&coordinator, Command::HostReturned { host: h("h1") });
    log.check(
        "a",
        expect![[r#"
            1 t3 alice(User) created on h1 r3
            2 t6 agent:h1 scheduled -> running r3
            3 t8 detector running -> lost r8: host h1 is down (silent past its TTL); its files live there
            4 t10 detector lost -> scheduled r10: host h1 heartbeats again
        "#]],
    );
    log.check(
        "b",
        expect![[r#"
            1 t4 alice(User) created on h1 r4
            2 t7 alice(User) wanted Absent r7
        "#]],
    );
    log.check(
        "c",
        expect![[r#"
            1 t5 alice(User) created on h2 r5
        "#]],
    );
    assert_eq!(
        log.state.cause_of(&w("a")),
        Some(id(3)),
        "the detector is no cause"
    );
    let down = log.state.request_record(id(8)).unwrap();
    let names: Vec<&str> = down.events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a"]);
}

#[test]
fn a_switch_records_every_workspace_it_changes() {
    let (alice, bob) = (user("alice", Role::User), user("bob", Role::User));
    let mut log = Log::new();
    log.create(&alice, "a", "h1", &[]);
    log.create(&alice, "b", "h2", &[]);
    log.create(&alice, "c", "h1", &[]);
    log.create(&bob, "d", "h1", &[]);
    log.want(&alice, "c", DesiredRun::Stopped);
    let switch = log.by(
        &alice,
        Command::SwitchWorkspace {
            owner: UserName::new("alice").unwrap(),
            name: w("c"),
        },
    );
    for (name, expected) in [
        (
            "a",
            expect![[r#"
                1 t3 alice(User) created on h1 r3
                2 t8 alice(User) wanted Stopped r8: switch to c
            "#]],
        ),
        (
            "b",
            expect![[r#"
                1 t4 alice(User) created on h2 r4
                2 t8 alice(User) wanted Stopped r8: switch to c
            "#]],
        ),
        (
            "c",
            expect![[r#"
                1 t5 alice(User) created on h1 r5
                2 t7 alice(User) wanted Stopped r7
                3 t8 alice(User) wanted Running r8: switch
            "#]],
        ),
        (
            "d",
            expect![[r#"
                1 t6 bob(User) created on h1 r6
            "#]],
        ),
    ] {
        log.check(name, expected);
    }
    for name in ["a", "b", "c"] {
        assert_eq!(log.state.cause_of(&w(name)), Some(switch), "{name}");
    }
    let record = log.state.request_record(switch).unwrap();
    let names: Vec<&str> = record.events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
}

#[test]
fn cleanup_and_a_restart_of_a_failed_workspace_say_why() {
    let alice = user("alice", Role::User);
    let mut log = Log::new();
    log.create(&alice, "old", "h1", &[]);
    log.create(&alice, "bad", "h1", &[]);
    log.want(&alice, "old", DesiredRun::Stopped);
    log.report("h1", "old", 1, WorkspaceState::Stopped, None);
    log.by(
        &alice,
        Command::DestroyStopped {
            names: vec![w("old"), w("bad")],
        },
    );
    log.report("h1", "bad", 1, WorkspaceState::Failed, None);
    log.by(&alice, Command::RestartWorkspace { name: w("bad") });
    log.check(
        "old",
        expect![[r#"
            1 t3 alice(User) created on h1 r3
            2 t5 alice(User) wanted Stopped r5
            3 t6 agent:h1 scheduled -> stopped r5
            4 t7 alice(User) wanted Absent r7: cleanup: stopped and unchanged for long enough
        "#]],
    );
    log.check(
        "bad",
        expect![[r#"
            1 t4 alice(User) created on h1 r4
            2 t8 agent:h1 scheduled -> failed r4
            3 t9 alice(User) repair to generation 2 r9: a restart of a failed workspace makes its container again
        "#]],
    );
}

#[test]
fn placed_creates_are_their_owners_under_their_own_request() {
    let mut log = Log::new();
    let coordinator = Identity::Coordinator(nexus_protocol::NodeId::new(1).unwrap());
    let place = |n: u128, name: &str| PlaceRequest {
        request_id: id(n),
        owner: UserName::new("ada").unwrap(),
        spec: nexus_fixtures::spec(name),
        scoring: None,
    };
    let batch = log.by(
        &coordinator,
        Command::PlaceWorkspaces(vec![place(100, "p"), place(101, "p"), place(102, "q")]),
    );
    log.check(
        "p",
        expect![[r#"
            1 t3 ada(User) created on h1 r100
        "#]],
    );
    let created = log.state.request_record(id(100)).unwrap();
    assert_eq!(
        (created.at, created.rejected, created.events.len()),
        (Timestamp(3000), None, 1)
    );
    let refused = log.state.request_record(id(101)).unwrap();
    assert_eq!(
        refused.rejected.map(|e| e.code),
        Some(ErrorCode::WorkspaceAlreadyExists)
    );
    assert_eq!(refused.events, vec![]);
    let batch = log.state.request_record(batch).unwrap();
    assert_eq!((batch.rejected, batch.events.len()), (None, 0));
    assert_eq!(log.state.request_record(id(999)), None, "never seen");
}

#[test]
fn a_workspace_keeps_its_newest_events_and_the_index_follows() {
    let alice = user("alice", Role::User);
    let mut log = Log::new();
    let create = log.create(&alice, "w", "h1", &[]);
    let mut asked = vec![];
    for _ in 0..40 {
        asked.push(log.want(&alice, "w", DesiredRun::Stopped));
        asked.push(log.want(&alice, "w", DesiredRun::Running));
    }
    let history = log.state.history_of(&w("w")).unwrap();
    assert_eq!(history.len(), EVENTS_KEPT);
    assert_eq!(history.last_seq(), 81);
    let seqs: Vec<u64> = history.seqs().collect();
    assert_eq!(seqs, (18..=81).collect::<Vec<_>>());
    // The dropped events' requests are still journaled, but hold no events any more; the
    // invariants (checked after every apply) hold the index to the events kept.
    assert_eq!(log.state.request_record(create).unwrap().events, vec![]);
    assert_eq!(log.state.request_record(asked[15]).unwrap().events, vec![]);
    let kept = log.state.request_record(asked[16]).unwrap();
    assert_eq!(kept.events.len(), 1);
    assert_eq!(kept.events[0].1.seq, 18);
    // A rejected request is recorded with its error and no events.
    let rejected = log.want(&alice, "nope", DesiredRun::Stopped);
    let record = log.state.request_record(rejected).unwrap();
    assert_eq!(
        record.rejected.map(|e| e.code),
        Some(ErrorCode::WorkspaceNotFound)
    );
}

#[test]
fn events_and_causes_survive_a_snapshot() {
    let alice = user("alice", Role::User);
    let mut log = Log::new();
    log.create(&alice, "a", "h1", &[(80, 20000)]);
    log.create(&alice, "b", "h2", &[]);
    log.report("h1", "a", 1, WorkspaceState::Running, None);
    let stop = log.want(&alice, "b", DesiredRun::Stopped);
    let restored = State::from_snapshot(&log.state.to_snapshot().unwrap()).unwrap();
    restored.check_invariants().unwrap();
    assert_eq!(
        restored, log.state,
        "the index of events by request is rebuilt"
    );
    assert_eq!(restored.cause_of(&w("b")), Some(stop));
    assert_eq!(
        restored.request_record(id(3)),
        log.state.request_record(id(3))
    );
    assert_eq!(restored.request_record(id(3)).unwrap().events.len(), 2);
}
