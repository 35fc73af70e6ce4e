//! Applying the lifecycle commands: a user's starts count as activity, the policies' stops,
//! notices and destroys are checked again at apply, holds and extensions take notices back.

use nexus_protocol::debug::{Actor, EventKind};
use nexus_protocol::identity::{Identity, Role};
use nexus_protocol::model::{
    ActivityKind, NoticeAudience, NoticeSource, PortRange, WorkspaceState,
};
use nexus_protocol::policy::{Policy, PolicyPatch, PolicyScope};

use super::*;

const D: u64 = 86_400;

/// A state and a clock in seconds: each command is applied at the time given.
struct Log {
    state: State,
    next: u128,
}

impl Log {
    /// A host `h1` and alice's workspaces `api` and `web`, created at 0 and started.
    fn new() -> Log {
        let mut log = Log {
            state: State::default(),
            next: 0,
        };
        let info = HostInfo {
            port_range: PortRange::new(20_000, 20_100).unwrap(),
            ..nexus_fixtures::host("h1")
        };
        assert_eq!(log.at(0, Command::RegisterHost(info)), None);
        for name in ["api", "web"] {
            let create = Command::CreateWorkspace {
                spec: WorkspaceSpec {
                    image: "img".into(),
                    ..nexus_fixtures::spec(name)
                },
                owner: "alice".parse().unwrap(),
                host: "h1".parse().unwrap(),
                ports: Vec::new(),
            };
            assert_eq!(log.at(0, create), None);
        }
        log
    }

    fn at(&mut self, secs: u64, command: Command) -> Option<ErrorCode> {
        self.next += 1;
        let proposal = Proposal {
            request_id: RequestId::from_u128(self.next),
            at: Timestamp::from_millis(secs * 1000),
            proposer: Identity::User {
                name: "alice".parse().unwrap(),
                role: Role::Admin,
            },
            command,
        };
        super::tests::apply_checked(&mut self.state, &proposal)
    }

    fn record(&self, name: &str) -> &WorkspaceRecord {
        &self.state.workspaces()[&w(name)]
    }

    fn notice(&mut self, secs: u64, name: &str) -> Option<ErrorCode> {
        let command = Command::PostNotice {
            text: format!("{name} will be destroyed"),
            audience: NoticeAudience::User("alice".parse().unwrap()),
            source: NoticeSource::Policy { workspace: w(name) },
            until: None,
        };
        self.at(secs, command)
    }
}

fn w(name: &str) -> WorkspaceName {
    name.parse().unwrap()
}

fn start(name: &str) -> Command {
    Command::SetDesiredRun {
        name: w(name),
        run: DesiredRun::Running,
    }
}

#[test]
fn a_users_start_restart_switch_and_repair_are_activity() {
    let mut log = Log::new();
    assert_eq!(
        log.record("api").lifecycle.last_activity.kind,
        ActivityKind::Created
    );
    for (secs, command) in [
        (10, start("api")),
        (20, Command::RestartWorkspace { name: w("api") }),
        (
            30,
            Command::SwitchWorkspace {
                owner: "alice".parse().unwrap(),
                name: w("api"),
            },
        ),
        (40, Command::RepairWorkspace { name: w("api") }),
    ] {
        assert_eq!(log.at(secs, command), None);
        let activity = log.record("api").lifecycle.last_activity;
        assert_eq!(activity.at, Timestamp::from_millis(secs * 1000));
        assert_eq!(activity.kind, ActivityKind::Start);
    }
    // A stop is no use of it.
    let stop = Command::SetDesiredRun {
        name: w("api"),
        run: DesiredRun::Stopped,
    };
    assert_eq!(log.at(50, stop), None);
    assert_eq!(
        log.record("api").lifecycle.last_activity.at,
        Timestamp::from_millis(40_000)
    );
}

#[test]
fn an_idle_stop_is_checked_again_at_apply_and_spares_held_ones() {
    let mut log = Log::new();
    assert_eq!(log.at(1, start("api")), None);
    assert_eq!(log.at(1, start("web")), None);
    assert_eq!(
        log.at(
            2,
            Command::HoldWorkspace {
                name: w("web"),
                held: true
            }
        ),
        None
    );
    // Used since the loop decided: not stopped.
    assert_eq!(log.at(100, start("api")), None);
    let stops = vec![(w("api"), 120), (w("web"), 120), (w("gone"), 120)];
    let idle = Command::StopIdle {
        stops: stops.clone(),
        by_policy: true,
    };
    assert_eq!(log.at(130, idle), None);
    assert_eq!(log.record("api").desired, DesiredRun::Running);
    assert_eq!(log.record("web").desired, DesiredRun::Running);
    // Idle long enough: stopped, with the policy and its reason in the events.
    let idle = Command::StopIdle {
        stops,
        by_policy: true,
    };
    assert_eq!(log.at(220, idle), None);
    assert_eq!(log.record("api").desired, DesiredRun::Stopped);
    assert_eq!(log.record("web").desired, DesiredRun::Running);
    let events = log.state.events_of(&w("api")).unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.kind, EventKind::Wanted(DesiredRun::Stopped));
    assert_eq!(last.actor, Actor::Policy("inactivity".into()));
    assert_eq!(
        last.reason.as_deref(),
        Some("stopped by policy: inactive for 2 m")
    );
}

#[test]
fn policy_notices_are_kept_by_the_workspace_and_taken_back_by_a_hold() {
    let mut log = Log::new();
    // Not due yet (the first is due a day before the 30 days): refused at apply.
    assert_eq!(log.notice(10, "api"), Some(ErrorCode::InvalidArgument));
    assert_eq!(log.notice(29 * D, "api"), None);
    // The same notice proposed twice (a retry, a new leader) is not taken as the last one.
    assert_eq!(log.notice(29 * D, "api"), Some(ErrorCode::InvalidArgument));
    assert_eq!(log.notice(30 * D - 3_600, "api"), None);
    assert_eq!(
        log.notice(30 * D - 3_600, "gone"),
        Some(ErrorCode::InvalidArgument)
    );
    let kept: Vec<u64> = log
        .record("api")
        .lifecycle
        .notices
        .iter()
        .map(|n| n.0)
        .collect();
    assert_eq!(kept.len(), 2);
    assert_eq!(log.state.notices().len(), 2);
    let hold = Command::HoldWorkspace {
        name: w("api"),
        held: true,
    };
    assert_eq!(log.at(30 * D - 3_000, hold), None);
    assert!(log.record("api").lifecycle.notices.is_empty());
    assert!(log.state.notices().is_empty());
    let kinds: Vec<(EventKind, Actor)> = log
        .state
        .events_of(&w("api"))
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.actor))
        .filter(|(kind, _)| matches!(kind, EventKind::Noticed | EventKind::Held))
        .collect();
    let alice = Actor::Identity(Identity::User {
        name: "alice".parse().unwrap(),
        role: Role::Admin,
    });
    let lifetime = Actor::Policy("lifetime".into());
    assert_eq!(
        kinds,
        [
            (EventKind::Noticed, lifetime.clone()),
            (EventKind::Noticed, lifetime),
            (EventKind::Held, alice),
        ]
    );
    // Held: no policy notice is taken.
    assert_eq!(
        log.notice(30 * D - 2_000, "api"),
        Some(ErrorCode::InvalidArgument)
    );
    // Cleared by id (the loop's withdraw): gone from the workspace's record too.
    assert_eq!(log.notice(30 * D - 2_000, "web"), None);
    let ids: Vec<u64> = log
        .record("web")
        .lifecycle
        .notices
        .iter()
        .map(|n| n.0)
        .collect();
    assert_eq!(log.at(30 * D - 1_000, Command::ClearNotices(ids)), None);
    assert!(log.record("web").lifecycle.notices.is_empty());
}

#[test]
fn a_destroy_by_policy_needs_both_notices_and_their_leads() {
    let mut log = Log::new();
    let destroy = || Command::PolicyDestroy {
        name: w("api"),
        reason: "destroyed by policy: lifetime 30 d".into(),
    };
    // The lifetime is over, but nobody was told.
    assert_eq!(log.at(31 * D, destroy()), Some(ErrorCode::InvalidArgument));
    assert_eq!(log.notice(31 * D, "api"), None);
    assert_eq!(log.notice(32 * D - 3_600, "api"), None);
    // The first notice's lead has not passed.
    assert_eq!(
        log.at(32 * D - 1, destroy()),
        Some(ErrorCode::InvalidArgument)
    );
    assert_eq!(log.at(32 * D, destroy()), None);
    let api = log.record("api");
    assert_eq!(api.state, WorkspaceState::Destroying);
    assert!(api.lifecycle.notices.is_empty());
    assert!(log.state.notices().is_empty());
    let events = log.state.events_of(&w("api")).unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.kind, EventKind::Wanted(DesiredRun::Absent));
    assert_eq!(last.actor, Actor::Policy("lifetime".into()));
    // Held: never.
    let hold = Command::HoldWorkspace {
        name: w("web"),
        held: true,
    };
    assert_eq!(log.at(32 * D, hold), None);
    let web = Command::PolicyDestroy {
        name: w("web"),
        reason: "x".into(),
    };
    assert_eq!(log.at(40 * D, web), Some(ErrorCode::InvalidArgument));
}

#[test]
fn an_extension_pushes_the_lifetime_and_takes_notices_back() {
    let mut log = Log::new();
    assert_eq!(log.notice(29 * D, "api"), None);
    let extend = Command::ExtendLifetime {
        name: w("api"),
        by_secs: 7 * D,
    };
    assert_eq!(log.at(29 * D, extend), None);
    let api = log.record("api");
    assert_eq!(api.lifecycle.extended_secs, 7 * D);
    assert!(api.lifecycle.notices.is_empty());
    let last = log.state.events_of(&w("api")).unwrap().pop().unwrap();
    assert_eq!(last.kind, EventKind::Extended { by_secs: 7 * D });
    let stop = Command::SetDesiredRun {
        name: w("api"),
        run: DesiredRun::Stopped,
    };
    assert_eq!(log.at(29 * D, stop), None);
    // Its first notice now comes a day before its 37th day.
    let view = log.state.lifecycle_view(&w("api")).unwrap();
    let next = view.next.unwrap();
    assert_eq!(next.action, nexus_protocol::policy::PolicyAction::Notice);
    assert_eq!(next.at, Timestamp::from_millis((36 * D) * 1000));
    assert_eq!(next.reason, "lifetime 30 d (extended by 7 d)");
    let zero = Command::ExtendLifetime {
        name: w("api"),
        by_secs: 0,
    };
    assert_eq!(log.at(29 * D, zero), Some(ErrorCode::InvalidArgument));
}

#[test]
fn policies_are_set_for_the_cluster_a_host_or_a_workspace() {
    let mut log = Log::new();
    let set = |scope, inactive: u64| Command::SetPolicy {
        scope,
        patch: PolicyPatch {
            inactive_stop_after_secs: Some(inactive),
            ..PolicyPatch::default()
        },
    };
    assert_eq!(log.at(1, set(PolicyScope::Cluster, 600)), None);
    assert_eq!(
        log.at(1, set(PolicyScope::Host("h1".parse().unwrap()), 300)),
        None
    );
    assert_eq!(log.at(1, set(PolicyScope::Workspace(w("api")), 60)), None);
    assert_eq!(
        log.at(1, set(PolicyScope::Host("h9".parse().unwrap()), 1)),
        Some(ErrorCode::InvalidArgument)
    );
    assert_eq!(
        log.at(1, set(PolicyScope::Workspace(w("gone")), 1)),
        Some(ErrorCode::WorkspaceNotFound)
    );
    let in_force = |log: &Log, name: &str| log.state.policy_for(log.record(name));
    assert_eq!(in_force(&log, "api").inactive_stop_after_secs, 60);
    assert_eq!(in_force(&log, "web").inactive_stop_after_secs, 300);
    assert_eq!(
        in_force(&log, "web").max_lifetime_secs,
        Policy::default().max_lifetime_secs
    );
    assert_eq!(log.state.policies().cluster.inactive_stop_after_secs, 600);
    let view = log.state.policies_view();
    assert_eq!(view.workspaces.len(), 1);
    assert_eq!(view.hosts.len(), 1);
}

/// The policy loop's pace reads the overridden workspaces through their index: a workspace's
/// own short policy paces it while the workspace lives, and no longer once it is forgotten, in
/// the state as applied and as read from a snapshot.
#[test]
fn the_shortest_policy_follows_workspaces_overrides_until_they_are_forgotten() {
    let mut log = Log::new();
    let cluster = Policy::default().shortest_secs();
    assert_eq!(log.state.shortest_policy_secs(), cluster);
    let short = Command::SetPolicy {
        scope: PolicyScope::Workspace(w("api")),
        patch: PolicyPatch {
            inactive_stop_after_secs: Some(30),
            ..PolicyPatch::default()
        },
    };
    assert_eq!(log.at(1, short), None);
    assert_eq!(log.state.shortest_policy_secs(), Some(30));
    let read = State::from_snapshot(&log.state.to_snapshot().unwrap()).unwrap();
    assert_eq!(read.shortest_policy_secs(), Some(30));
    read.check_invariants().unwrap();

    let destroy = Command::DestroyWorkspace { name: w("api") };
    assert_eq!(log.at(2, destroy), None);
    let gone = Command::RecordObserved {
        host: "h1".parse().unwrap(),
        observed: vec![nexus_protocol::message::ObservedWorkspace {
            name: w("api"),
            generation: log.record("api").generation,
            state: WorkspaceState::Gone,
            ports: Vec::new(),
            error: None,
        }],
    };
    assert_eq!(log.at(3, gone), None);
    assert!(!log.state.workspaces().contains_key(&w("api")));
    assert_eq!(log.state.shortest_policy_secs(), cluster);
}
