//! Restores as tables: a backup made by applying commands, the running state made by applying
//! more, then the restore, the invariants and the tables asserted.

use nexus_protocol::backup::BackupSchedule;
use nexus_protocol::clock::Timestamp;
use nexus_protocol::debug::{Actor, EventKind};
use nexus_protocol::identity::{Identity, Role};
use nexus_protocol::message::{DesiredRun, ObservedWorkspace};
use nexus_protocol::model::{HostInfo, PortBinding, PortRange, WorkspaceSpec};
use nexus_protocol::{HostId, NodeId, RequestId, UserName, WorkspaceName};

use super::super::{Command, Outcome, Proposal, STATE_FORMAT, State};
use super::*;

fn h(id: &str) -> HostId {
    HostId::new(id).unwrap()
}

fn w(name: &str) -> WorkspaceName {
    WorkspaceName::new(name).unwrap()
}

fn host(id: &str) -> Command {
    Command::RegisterHost(HostInfo {
        cpus: 8,
        memory_bytes: 32 << 30,
        port_range: PortRange::new(20000, 20010).unwrap(),
        ..nexus_fixtures::host(id)
    })
}

fn spec(name: &str, image: &str) -> WorkspaceSpec {
    WorkspaceSpec {
        image: image.into(),
        ports: nexus_fixtures::ports(&[80]),
        ..nexus_fixtures::spec(name)
    }
}

fn create(name: &str, on: &str, port: u16) -> Command {
    Command::CreateWorkspace {
        spec: spec(name, "img"),
        owner: UserName::new("alice").unwrap(),
        host: h(on),
        ports: vec![PortBinding {
            container: 80,
            host: port,
        }],
    }
}

fn report(on: &str, name: &str, generation: u64, state: WorkspaceState) -> Command {
    Command::RecordObserved {
        host: h(on),
        observed: vec![ObservedWorkspace {
            name: w(name),
            generation,
            state,
            ports: vec![],
            error: None,
        }],
    }
}

fn admin() -> Identity {
    Identity::User {
        name: UserName::new("root").unwrap(),
        role: Role::Admin,
    }
}

/// A state's history: each command applied under its own request id (`first` + its place) at
/// its own time, checked against the invariants.
struct Run {
    state: State,
    next: u128,
}

impl Run {
    fn new(first: u128) -> Run {
        Run {
            state: State::default(),
            next: first,
        }
    }

    fn apply(&mut self, commands: Vec<Command>) -> &mut Run {
        for command in commands {
            let outcome = self.propose(command);
            assert_eq!(outcome, Outcome::Applied);
        }
        self
    }

    fn propose(&mut self, command: Command) -> Outcome {
        let proposal = self.proposal(command);
        self.state.apply(&proposal)
    }

    fn proposal(&mut self, command: Command) -> Proposal {
        self.next += 1;
        Proposal {
            request_id: RequestId::from_u128(self.next),
            at: Timestamp(1_000_000 + self.next as u64),
            proposer: admin(),
            command,
        }
    }
}

fn header(index: u64) -> BackupHeader {
    BackupHeader {
        id: format!("b{index}"),
        cluster: "ab".repeat(32),
        node: NodeId::new(1).unwrap(),
        index,
        term: 2,
        created_at: Timestamp(1_000),
        software: "test".into(),
        state_format: STATE_FORMAT,
        counts: vec![],
    }
}

fn restore(of: &State, index: u64) -> Command {
    Command::Restore {
        header: header(index),
        state: of.to_snapshot().unwrap(),
    }
}

/// The backup every table starts from: two hosts' worth of work on h1, `a` and `b` running.
fn backup() -> State {
    let mut run = Run::new(0);
    run.apply(vec![
        host("h1"),
        create("a", "h1", 20000),
        create("b", "h1", 20001),
        report("h1", "a", 1, WorkspaceState::Running),
        report("h1", "b", 1, WorkspaceState::Running),
    ]);
    run.state
}

/// The running state: the backup's history, then `more`.
fn running(more: Vec<Command>) -> Run {
    let mut run = Run::new(0);
    run.apply(vec![
        host("h1"),
        create("a", "h1", 20000),
        create("b", "h1", 20001),
        report("h1", "a", 1, WorkspaceState::Running),
        report("h1", "b", 1, WorkspaceState::Running),
    ]);
    run.next = 100;
    run.apply(more);
    run
}

fn names(state: &State) -> Vec<&str> {
    state
        .workspaces()
        .keys()
        .map(|name| name.as_str())
        .collect()
}

fn generation(state: &State, name: &str) -> u64 {
    state.workspaces()[&w(name)].generation
}

#[test]
fn a_restore_onto_an_empty_state_is_the_backup_with_its_versions_raised() {
    let backup = backup();
    let mut run = Run::new(500);
    let outcome = run.propose(restore(&backup, 42));
    assert_eq!(outcome, Outcome::Applied);
    let state = &run.state;
    state.check_invariants().unwrap();
    assert_eq!(names(state), ["a", "b"]);
    assert_eq!(state.hosts().keys().collect::<Vec<_>>(), [&h("h1")]);
    assert_eq!(state.ports().len(), 2);
    assert_eq!(
        state.desired_version(&h("h1")),
        backup.desired_version(&h("h1")) + 1
    );
    assert_eq!(state.desired_for(&h("h1")).assignments.len(), 2);
    assert_eq!(generation(state, "a"), 1);
}

#[test]
fn a_restore_forgets_what_came_after_the_backup_but_not_the_hosts() {
    let backup = backup();
    let mut run = running(vec![
        host("h2"),
        create("c", "h2", 20000),
        create("d", "h1", 20002),
    ]);
    let versions_before = (
        run.state.desired_version(&h("h1")),
        run.state.desired_version(&h("h2")),
    );
    assert_eq!(run.propose(restore(&backup, 7)), Outcome::Applied);
    let state = &run.state;
    state.check_invariants().unwrap();
    assert_eq!(names(state), ["a", "b"], "c and d are not the backup's");
    assert_eq!(
        state.hosts().keys().collect::<Vec<_>>(),
        [&h("h1"), &h("h2")],
        "a host registered since stays"
    );
    assert!(state.desired_version(&h("h1")) > versions_before.0);
    assert!(state.desired_version(&h("h2")) > versions_before.1);
    assert!(
        state.desired_for(&h("h2")).assignments.is_empty(),
        "h2's agent is told it runs nothing: c's container becomes an orphan"
    );
    // The orphans' ports are still held by their containers: not handed out again for a while.
    let at = Timestamp(2_000_000);
    assert!(
        !state.port_free(&h("h1"), 20002, at),
        "d's port is not handed out"
    );
    assert!(state.port_free(&h("h1"), 20005, at));
}

#[test]
fn a_destroyed_workspace_comes_back_and_running_containers_keep_their_generation() {
    let backup = backup();
    let mut run = running(vec![
        Command::DestroyWorkspace { name: w("a") },
        report("h1", "a", 1, WorkspaceState::Gone),
    ]);
    assert_eq!(names(&run.state), ["b"]);
    assert_eq!(run.propose(restore(&backup, 9)), Outcome::Applied);
    let state = &run.state;
    state.check_invariants().unwrap();
    assert_eq!(names(state), ["a", "b"]);
    let a = &state.workspaces()[&w("a")];
    assert_eq!((a.desired, a.generation), (DesiredRun::Running, 1));
    assert_eq!(
        generation(state, "b"),
        1,
        "b's running container is the backup's: left alone"
    );
}

#[test]
fn a_container_newer_than_the_backup_is_kept_when_it_matches_and_replaced_when_not() {
    let backup = backup();
    // After the backup: b is repaired (a new generation, same spec and ports); a's port moves
    // after a conflict (a new generation with another port).
    let mut run = running(vec![
        report("h1", "b", 1, WorkspaceState::Failed),
        Command::RepairWorkspace { name: w("b") },
        Command::RecordObserved {
            host: h("h1"),
            observed: vec![ObservedWorkspace {
                name: w("a"),
                generation: 1,
                state: WorkspaceState::Failed,
                ports: vec![],
                error: Some(
                    nexus_protocol::error::WireError::new(ErrorCode::PortConflict, "taken")
                        .with_detail(nexus_protocol::error::ErrorDetail::PortConflict {
                            port: 20000,
                        }),
                ),
            }],
        },
    ]);
    assert_eq!(generation(&run.state, "b"), 2);
    assert_eq!(generation(&run.state, "a"), 2);
    assert_ne!(
        run.state.workspaces()[&w("a")].ports,
        backup.workspaces()[&w("a")].ports
    );
    assert_eq!(run.propose(restore(&backup, 11)), Outcome::Applied);
    let state = &run.state;
    state.check_invariants().unwrap();
    assert_eq!(
        generation(state, "b"),
        2,
        "b's container matches the backup: kept at its generation"
    );
    assert_eq!(
        generation(state, "a"),
        3,
        "a's container holds other ports: made anew with the backup's"
    );
    assert_eq!(
        state.workspaces()[&w("a")].ports,
        backup.workspaces()[&w("a")].ports
    );
}

#[test]
fn each_restored_workspace_says_so_under_the_restores_request() {
    let backup = backup();
    let mut run = running(vec![]);
    let proposal = run.proposal(restore(&backup, 42));
    assert_eq!(run.state.apply(&proposal), Outcome::Applied);
    let state = &run.state;
    for name in ["a", "b"] {
        let events = state.events_of(&w(name)).unwrap();
        let last = events.last().unwrap();
        assert_eq!(last.kind, EventKind::Wanted(DesiredRun::Running));
        assert_eq!(last.request_id, Some(proposal.request_id));
        assert_eq!(last.actor, Actor::Identity(admin()));
        assert_eq!(
            last.reason.as_deref(),
            Some("restored from backup b42 (index 42, term 2)")
        );
        assert_eq!(state.cause_of(&w(name)), Some(proposal.request_id));
        assert!(events.len() > 1, "the backup's own events are kept");
    }
    let record = state.request_record(proposal.request_id).unwrap();
    assert_eq!(record.rejected, None);
    assert_eq!(record.events.len(), 2);
}

#[test]
fn a_retried_restore_is_answered_from_the_journal_and_changes_nothing() {
    let backup = backup();
    let mut run = running(vec![create("c", "h1", 20003)]);
    let proposal = run.proposal(restore(&backup, 5));
    assert_eq!(run.state.apply(&proposal), Outcome::Applied);
    let once = run.state.to_snapshot().unwrap();
    // Work after the restore, then the restore's request again.
    run.apply(vec![create("e", "h1", 20004)]);
    let after = run.state.to_snapshot().unwrap();
    assert_eq!(run.state.apply(&proposal), Outcome::Applied);
    assert_eq!(run.state.to_snapshot().unwrap(), after, "nothing changed");
    assert_ne!(once, after);
    assert_eq!(names(&run.state), ["a", "b", "e"]);
}

#[test]
fn a_request_retried_across_the_restore_gets_its_first_outcome() {
    let backup = backup();
    let mut run = running(vec![]);
    let create_c = run.proposal(create("c", "h1", 20003));
    assert_eq!(run.state.apply(&create_c), Outcome::Applied);
    assert_eq!(run.propose(restore(&backup, 5)), Outcome::Applied);
    assert_eq!(run.state.apply(&create_c), Outcome::Applied);
    assert_eq!(
        names(&run.state),
        ["a", "b"],
        "the retry does not create c again"
    );
}

#[test]
fn the_running_clusters_hosts_schedule_and_members_stay() {
    let backup = backup();
    let schedule = BackupSchedule {
        every_secs: 60,
        keep: 3,
    };
    let mut run = running(vec![
        Command::SetBackupSchedule(schedule),
        Command::SetHostStatus {
            host: h("h1"),
            status: HostStatus::Down,
        },
    ]);
    let node = NodeId::new(4).unwrap();
    run.state
        .set_member_address(node, Some("10.0.0.4:7400".into()));
    assert_eq!(run.propose(restore(&backup, 5)), Outcome::Applied);
    let state = &run.state;
    state.check_invariants().unwrap();
    assert_eq!(state.backup_schedule(), schedule);
    assert_eq!(state.member_addresses().len(), 1);
    assert_eq!(state.hosts()[&h("h1")].status, HostStatus::Down);
    assert_eq!(
        state.workspaces()[&w("a")].state,
        WorkspaceState::Lost,
        "a down host's workspaces are lost until it returns"
    );
}

#[test]
fn a_backup_of_another_format_or_damaged_is_refused_and_changes_nothing() {
    let backup = backup();
    let mut run = running(vec![create("c", "h1", 20003)]);
    let before = run.state.to_snapshot().unwrap();
    let mut newer = header(5);
    newer.state_format = STATE_FORMAT + 1;
    let mut older = header(5);
    older.state_format = STATE_FORMAT - 1;
    let snapshot = backup.to_snapshot().unwrap();
    let mut damaged = snapshot.clone();
    let at = damaged.len() / 2;
    damaged.truncate(at);
    let cases = [
        (newer, snapshot.clone(), ErrorCode::BackupVersionUnsupported),
        (older, snapshot, ErrorCode::BackupVersionUnsupported),
        (header(5), damaged, ErrorCode::BackupCorrupt),
        (header(5), b"not a state".to_vec(), ErrorCode::BackupCorrupt),
    ];
    for (header, state, code) in cases {
        let outcome = run.propose(Command::Restore { header, state });
        let Outcome::Rejected(error) = outcome else {
            panic!("applied");
        };
        assert_eq!(error.code, code, "{}", error.message);
        // The journal remembers the refusal; nothing else changed.
        let mut now = State::from_snapshot(&run.state.to_snapshot().unwrap()).unwrap();
        now.journal = State::from_snapshot(&before).unwrap().journal;
        now.journal_by_time = State::from_snapshot(&before).unwrap().journal_by_time;
        assert_eq!(now.to_snapshot().unwrap(), before);
    }
}

#[test]
fn a_backup_whose_state_breaks_the_invariants_is_refused() {
    let mut broken = backup();
    broken.ports.clear();
    let mut run = running(vec![]);
    let Outcome::Rejected(error) = run.propose(restore(&broken, 5)) else {
        panic!("applied");
    };
    assert_eq!(error.code, ErrorCode::BackupCorrupt);
    assert_eq!(names(&run.state), ["a", "b"]);
}

#[test]
fn replicas_restore_alike() {
    let backup = backup();
    let mut one = running(vec![create("c", "h1", 20003)]);
    let mut two = running(vec![create("c", "h1", 20003)]);
    let proposal = one.proposal(restore(&backup, 5));
    one.state.apply(&proposal);
    two.state.apply(&proposal);
    assert_eq!(
        one.state.to_snapshot().unwrap(),
        two.state.to_snapshot().unwrap()
    );
    let reread = State::from_snapshot(&one.state.to_snapshot().unwrap()).unwrap();
    reread.check_invariants().unwrap();
    assert_eq!(reread, one.state);
}

#[test]
fn a_restore_starts_the_policies_afresh_and_keeps_the_running_clusters_notices() {
    use nexus_protocol::model::{ActivityKind, NoticeAudience, NoticeSource};
    use nexus_protocol::policy::{PolicyPatch, PolicyScope};
    // A lifetime already over, with its first notice posted to a's owner: the backup.
    let policy = Command::SetPolicy {
        scope: PolicyScope::Cluster,
        patch: PolicyPatch {
            max_lifetime_secs: Some(1),
            ..PolicyPatch::default()
        },
    };
    let notice = |text: &str, source| Command::PostNotice {
        text: text.into(),
        audience: NoticeAudience::Everyone,
        source,
        until: None,
    };
    let mut run = running(vec![
        policy,
        notice("a goes", NoticeSource::Policy { workspace: w("a") }),
        notice("maintenance tonight", NoticeSource::Admin),
    ]);
    let backup = run.state.clone();
    assert_eq!(backup.workspaces()[&w("a")].lifecycle.notices.len(), 1);
    assert_eq!(run.propose(restore(&backup, 42)), Outcome::Applied);
    let state = &run.state;
    state.check_invariants().unwrap();
    for name in ["a", "b"] {
        let lifecycle = &state.workspaces()[&w(name)].lifecycle;
        assert!(lifecycle.notices.is_empty(), "{name}: {lifecycle:?}");
        assert_eq!(lifecycle.last_activity.kind, ActivityKind::Restored);
        assert_eq!(lifecycle.last_activity.at, Timestamp(1_000_000 + 103 + 1));
    }
    let texts: Vec<&str> = state.notices().all().map(|n| n.text.as_str()).collect();
    assert_eq!(texts, ["maintenance tonight"]);
    // The policy itself is the backup's, and announces a's destroy again from the first notice.
    assert_eq!(state.policies().cluster.max_lifetime_secs, 1);
}

/// A registry credential named `name`, sealed (as far as the state knows) with `byte`.
fn credential(name: &str, byte: u8) -> Command {
    Command::SetCredential {
        spec: nexus_protocol::credentials::CredentialSpec {
            name: name.into(),
            kind: nexus_protocol::credentials::CredentialKind::Registry,
            scope: "r.example.com".into(),
            username: "bot".into(),
        },
        sealed: crate::state::Sealed {
            key_id: "k".into(),
            nonce: vec![byte; 12],
            ciphertext: vec![byte; 24],
        },
    }
}

#[test]
fn the_running_clusters_credentials_stay_unless_it_has_none() {
    // The backup holds an old secret of `reg`; the running cluster rotated it since.
    let mut backed_up = Run::new(0);
    backed_up.apply(vec![host("h1"), credential("reg", 1), credential("old", 1)]);
    let backup = backed_up.state;
    let mut run = running(vec![credential("reg", 2)]);
    assert_eq!(run.propose(restore(&backup, 5)), Outcome::Applied);
    let credentials = run.state.credentials();
    assert_eq!(credentials.len(), 1);
    assert_eq!(credentials.get("reg").unwrap().sealed.nonce, vec![2; 12]);
    // A fresh cluster with none takes the backup's.
    let mut fresh = running(vec![]);
    assert_eq!(fresh.propose(restore(&backup, 5)), Outcome::Applied);
    let names: Vec<&str> = fresh
        .state
        .credentials()
        .iter()
        .map(|r| r.spec.name.as_str())
        .collect();
    assert_eq!(names, ["old", "reg"]);
}
