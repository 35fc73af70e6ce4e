//! The spec's start SLIs, measured from the Raft log: how long a workspace takes from the commit
//! of the request that starts it to its agent's report of running, by kind — `cold` (a create),
//! `warm` (a start of a stopped workspace, or a restart) and `switch` (a context switch) — and
//! how many starts end running, failed, or in neither within [`START_TIMEOUT`].
//!
//! Every replica feeds its tracker with every entry it applies ([`Starts::applied`]), so the
//! pending starts survive a change of leader; the driver records what finished only while this
//! node leads, so in a steady cluster each start is counted once (across a failover a start may
//! be counted twice or not at all: `docs/decisions.md`). Durations are differences of the
//! proposals' own timestamps (their proposers' clocks, the same on every replica), never of this
//! node's clock.
//!
//! Pure: no clock, no I/O; time comes in the proposals.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Duration;

use nexus_protocol::clock::Timestamp;
use nexus_protocol::message::DesiredRun;
use nexus_protocol::model::WorkspaceState;
use nexus_protocol::{RequestId, WorkspaceName};

use crate::state::{Command, Outcome, Proposal, State};

/// A start not reported running or failed within this is counted as timed out and forgotten.
pub const START_TIMEOUT: Duration = Duration::from_secs(300);

/// The most starts waiting at once; beyond it the oldest is forgotten (not counted).
pub const MAX_PENDING: usize = 10_000;

/// How often, in the log's time, pending starts are checked for their timeout.
const EXPIRY_PERIOD: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartKind {
    Cold,
    Warm,
    Switch,
}

impl StartKind {
    pub const ALL: [StartKind; 3] = [StartKind::Cold, StartKind::Warm, StartKind::Switch];

    pub fn as_str(self) -> &'static str {
        match self {
            StartKind::Cold => "cold",
            StartKind::Warm => "warm",
            StartKind::Switch => "switch",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutcome {
    Ok,
    Failed,
    Timeout,
}

impl StartOutcome {
    pub const ALL: [StartOutcome; 3] = [
        StartOutcome::Ok,
        StartOutcome::Failed,
        StartOutcome::Timeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StartOutcome::Ok => "ok",
            StartOutcome::Failed => "failed",
            StartOutcome::Timeout => "timeout",
        }
    }
}

/// A start that ended: how, and how long after its request's commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub kind: StartKind,
    pub outcome: StartOutcome,
    pub took: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    kind: StartKind,
    at: Timestamp,
    /// Whether a report of running ends it. A restart of a running workspace is not armed until
    /// its agent reports it no longer running: a report of running sent before it stopped
    /// would otherwise end it at once.
    armed: bool,
}

/// The starts under way, and those that ended since the last [`Starts::take_finished`].
#[derive(Debug)]
pub struct Starts {
    pending: BTreeMap<WorkspaceName, Pending>,
    finished: Vec<Finished>,
    next_expiry: Timestamp,
    /// The request ids that opened starts, the latest [`MAX_PENDING`]: a retry of a request
    /// (the CLI resends under the same id; `apply` answers it its first outcome) opens nothing.
    opened_by: HashSet<RequestId>,
    opened_order: VecDeque<RequestId>,
}

impl Default for Starts {
    fn default() -> Starts {
        Starts {
            pending: BTreeMap::new(),
            finished: Vec::new(),
            next_expiry: Timestamp::EPOCH,
            opened_by: HashSet::new(),
            opened_order: VecDeque::new(),
        }
    }
}

impl Starts {
    /// Takes one applied entry: `outcome` is what applying `proposal` gave, and `state` the state
    /// right after it.
    pub fn applied(&mut self, proposal: &Proposal, outcome: &Outcome, state: &State) {
        let at = proposal.at;
        if at >= self.next_expiry {
            self.expire(at);
            self.next_expiry = at.saturating_add(EXPIRY_PERIOD);
        }
        let applied = matches!(outcome, Outcome::Applied);
        let state_of = |name: &WorkspaceName| state.workspaces().get(name).map(|w| w.state);
        match proposal.command.inner() {
            Command::PlaceWorkspaces(requests) => {
                for request in requests {
                    if let Some(Outcome::Applied) = state.outcome_of(request.request_id)
                        && self.first_time(request.request_id)
                    {
                        self.open(request.spec.name.clone(), StartKind::Cold, at, true);
                    }
                }
            }
            Command::CreateWorkspace { spec, .. }
                if applied && self.first_time(proposal.request_id) =>
            {
                self.open(spec.name.clone(), StartKind::Cold, at, true);
            }
            Command::SetDesiredRun {
                name,
                run: DesiredRun::Running,
            } if applied && self.first_time(proposal.request_id) => {
                self.open_unless_running(name, StartKind::Warm, at, state_of(name));
            }
            Command::SwitchWorkspace { owner, name } if applied => {
                // The owner's other workspaces were stopped by it: their starts will not end.
                let stopped: Vec<WorkspaceName> =
                    self.pending
                        .keys()
                        .filter(|other| *other != name)
                        .filter(|other| {
                            state.workspaces().get(*other).is_some_and(|w| {
                                w.owner == *owner && w.desired == DesiredRun::Stopped
                            })
                        })
                        .cloned()
                        .collect();
                for other in &stopped {
                    self.forget(other);
                }
                if self.first_time(proposal.request_id) {
                    self.open_unless_running(name, StartKind::Switch, at, state_of(name));
                }
            }
            Command::RestartWorkspace { name }
                if applied && self.first_time(proposal.request_id) =>
            {
                let armed = state_of(name) != Some(WorkspaceState::Running);
                self.open(name.clone(), StartKind::Warm, at, armed);
            }
            // Refused (another user's workspace, checked at apply), it ended no start.
            Command::SetDesiredRun {
                name,
                run: DesiredRun::Stopped,
            }
            | Command::DestroyWorkspace { name }
                if applied =>
            {
                self.forget(name)
            }
            // A refused report (its host is down) changed nothing.
            Command::RecordObserved { observed, .. } if applied => {
                for report in observed {
                    if self.pending.contains_key(&report.name) {
                        // The state says what the report changed (reports of another host or
                        // generation change nothing).
                        match state_of(&report.name) {
                            Some(now) => self.observed(&report.name, now, at),
                            None => self.forget(&report.name),
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Whether `request` opens a start for the first time (and remembers that it did).
    fn first_time(&mut self, request: RequestId) -> bool {
        if !self.opened_by.insert(request) {
            return false;
        }
        self.opened_order.push_back(request);
        if self.opened_order.len() > MAX_PENDING
            && let Some(oldest) = self.opened_order.pop_front()
        {
            self.opened_by.remove(&oldest);
        }
        true
    }

    /// A start of `name` of `kind`, requested at `at`. A start already under way is kept: the
    /// user has been waiting since the first request, and a second (a start while it is still
    /// starting) ends with it.
    pub fn open(&mut self, name: WorkspaceName, kind: StartKind, at: Timestamp, armed: bool) {
        if self.pending.contains_key(&name) {
            return;
        }
        if self.pending.len() >= MAX_PENDING
            && !self.pending.contains_key(&name)
            && let Some(oldest) = self
                .pending
                .iter()
                .min_by_key(|(_, pending)| pending.at)
                .map(|(name, _)| name.clone())
        {
            self.pending.remove(&oldest);
        }
        self.pending.insert(name, Pending { kind, at, armed });
    }

    fn open_unless_running(
        &mut self,
        name: &WorkspaceName,
        kind: StartKind,
        at: Timestamp,
        now: Option<WorkspaceState>,
    ) {
        match now {
            Some(WorkspaceState::Running) | None => {}
            Some(_) => self.open(name.clone(), kind, at, true),
        }
    }

    /// `name` is now in `state`, as of `at`.
    pub fn observed(&mut self, name: &WorkspaceName, state: WorkspaceState, at: Timestamp) {
        let Some(pending) = self.pending.get_mut(name) else {
            return;
        };
        let outcome = match state {
            WorkspaceState::Running if pending.armed => StartOutcome::Ok,
            WorkspaceState::Failed if pending.armed => StartOutcome::Failed,
            WorkspaceState::Running => return,
            _ => {
                pending.armed = true;
                return;
            }
        };
        let took = at.saturating_since(pending.at);
        let kind = pending.kind;
        self.pending.remove(name);
        self.finished.push(Finished {
            kind,
            outcome,
            took,
        });
    }

    /// Forgets a start that will never end (its workspace stopped, or went).
    pub fn forget(&mut self, name: &WorkspaceName) {
        self.pending.remove(name);
    }

    /// Ends, as timed out, the starts requested more than [`START_TIMEOUT`] before `now`.
    pub fn expire(&mut self, now: Timestamp) {
        let finished = &mut self.finished;
        self.pending.retain(|_, pending| {
            let took = now.saturating_since(pending.at);
            if took <= START_TIMEOUT {
                return true;
            }
            finished.push(Finished {
                kind: pending.kind,
                outcome: StartOutcome::Timeout,
                took,
            });
            false
        });
    }

    /// The starts that ended since the last call.
    pub fn take_finished(&mut self) -> Vec<Finished> {
        std::mem::take(&mut self.finished)
    }

    /// Forgets everything: the state was replaced by a leader's snapshot, past entries this
    /// tracker never saw.
    pub fn clear(&mut self) {
        self.pending.clear();
        self.finished.clear();
        self.opened_by.clear();
        self.opened_order.clear();
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use nexus_protocol::RequestId;
    use nexus_protocol::identity::Identity;
    use nexus_protocol::message::ObservedWorkspace;

    use super::*;

    fn w(name: &str) -> WorkspaceName {
        nexus_fixtures::workspace_name(name)
    }

    fn t(secs: f64) -> Timestamp {
        Timestamp::from_millis((secs * 1000.0) as u64)
    }

    fn ok(kind: StartKind, secs: f64) -> Finished {
        Finished {
            kind,
            outcome: StartOutcome::Ok,
            took: Duration::from_secs_f64(secs),
        }
    }

    #[test]
    fn a_start_ends_with_the_report_of_running_or_failed() {
        let mut starts = Starts::default();
        starts.open(w("a"), StartKind::Cold, t(10.0), true);
        starts.open(w("b"), StartKind::Switch, t(11.0), true);
        starts.observed(&w("a"), WorkspaceState::Starting, t(12.0));
        starts.observed(&w("a"), WorkspaceState::Running, t(13.5));
        starts.observed(&w("b"), WorkspaceState::Failed, t(14.0));
        starts.observed(&w("c"), WorkspaceState::Running, t(14.0));
        assert_eq!(
            starts.take_finished(),
            [
                ok(StartKind::Cold, 3.5),
                Finished {
                    kind: StartKind::Switch,
                    outcome: StartOutcome::Failed,
                    took: Duration::from_secs(3),
                }
            ]
        );
        assert_eq!(starts.pending(), 0);
        assert!(starts.take_finished().is_empty());
    }

    #[test]
    fn a_restart_of_a_running_workspace_waits_for_it_to_stop_first() {
        let mut starts = Starts::default();
        starts.open(w("a"), StartKind::Warm, t(10.0), false);
        // A report sent before the agent stopped it.
        starts.observed(&w("a"), WorkspaceState::Running, t(10.1));
        assert!(starts.take_finished().is_empty());
        starts.observed(&w("a"), WorkspaceState::Stopped, t(10.5));
        starts.observed(&w("a"), WorkspaceState::Running, t(11.0));
        assert_eq!(starts.take_finished(), [ok(StartKind::Warm, 1.0)]);
    }

    #[test]
    fn starts_never_reported_time_out_and_the_map_stays_bounded() {
        let mut starts = Starts::default();
        starts.open(w("a"), StartKind::Cold, t(0.0), true);
        starts.open(w("b"), StartKind::Warm, t(100.0), true);
        starts.expire(t(301.0));
        assert_eq!(
            starts.take_finished(),
            [Finished {
                kind: StartKind::Cold,
                outcome: StartOutcome::Timeout,
                took: Duration::from_secs(301),
            }]
        );
        assert_eq!(starts.pending(), 1);
        starts.forget(&w("b"));
        for i in 0..MAX_PENDING + 5 {
            starts.open(w(&format!("w{i}")), StartKind::Cold, t(i as f64), true);
        }
        assert_eq!(starts.pending(), MAX_PENDING);
        // The oldest went first.
        starts.observed(&w("w0"), WorkspaceState::Running, t(20_000.0));
        assert!(starts.take_finished().is_empty());
    }

    /// The log's entries, applied to a real state, drive the tracker.
    #[test]
    fn applied_entries_open_and_close_starts() {
        let mut state = State::default();
        let mut starts = Starts::default();
        let mut id = 0;
        let mut apply = |state: &mut State, starts: &mut Starts, at: f64, command: Command| {
            id += 1;
            feed(state, starts, id, at, command);
        };
        let host = nexus_fixtures::host_id("h1");
        let report = |state: WorkspaceState, generation| Command::RecordObserved {
            host: host.clone(),
            observed: vec![ObservedWorkspace {
                name: w("a"),
                generation,
                state,
                ports: vec![],
                error: None,
            }],
        };
        apply(
            &mut state,
            &mut starts,
            1.0,
            Command::RegisterHost(nexus_protocol::model::HostInfo {
                cpus: 8,
                memory_bytes: 32 << 30,
                ..nexus_fixtures::host("h1")
            }),
        );
        apply(
            &mut state,
            &mut starts,
            2.0,
            Command::CreateWorkspace {
                spec: nexus_fixtures::spec("a"),
                owner: nexus_fixtures::user("alice"),
                host: host.clone(),
                ports: vec![],
            },
        );
        let generation = state.workspaces()[&w("a")].generation;
        // Another generation's report changes nothing.
        apply(
            &mut state,
            &mut starts,
            3.0,
            report(WorkspaceState::Running, generation + 1),
        );
        assert!(starts.take_finished().is_empty());
        apply(
            &mut state,
            &mut starts,
            6.0,
            report(WorkspaceState::Running, generation),
        );
        assert_eq!(starts.take_finished(), [ok(StartKind::Cold, 4.0)]);
        // Starting what runs is no start; a stop and a start is a warm one.
        let run = |run| Command::SetDesiredRun { name: w("a"), run };
        apply(&mut state, &mut starts, 7.0, run(DesiredRun::Running));
        assert_eq!(starts.pending(), 0);
        apply(&mut state, &mut starts, 8.0, run(DesiredRun::Stopped));
        apply(
            &mut state,
            &mut starts,
            9.0,
            report(WorkspaceState::Stopped, generation),
        );
        apply(&mut state, &mut starts, 10.0, run(DesiredRun::Running));
        apply(
            &mut state,
            &mut starts,
            10.5,
            report(WorkspaceState::Running, generation),
        );
        assert_eq!(starts.take_finished(), [ok(StartKind::Warm, 0.5)]);
        // A destroy forgets a start under way, checked against its owner at apply or not.
        apply(&mut state, &mut starts, 11.0, run(DesiredRun::Stopped));
        apply(
            &mut state,
            &mut starts,
            11.5,
            report(WorkspaceState::Stopped, generation),
        );
        apply(&mut state, &mut starts, 12.0, run(DesiredRun::Running));
        assert_eq!(starts.pending(), 1);
        apply(
            &mut state,
            &mut starts,
            13.0,
            Command::Owned(Box::new(Command::DestroyWorkspace { name: w("a") })),
        );
        assert_eq!(starts.pending(), 0);
    }

    /// A proposal of `command` at `at` under request id `id`, applied to `state` and fed to
    /// `starts`.
    fn feed(state: &mut State, starts: &mut Starts, id: u128, at: f64, command: Command) {
        let proposal = Proposal {
            request_id: RequestId::from_u128(id),
            at: t(at),
            // An admin: a user's change checked at apply ([`Command::Owned`]) is theirs too.
            proposer: Identity::User {
                name: nexus_protocol::UserName::new("root").unwrap(),
                role: nexus_protocol::Role::Admin,
            },
            command,
        };
        let outcome = state.apply(&proposal);
        starts.applied(&proposal, &outcome, state);
    }

    /// Host h1 and alice's workspaces `names`, created (ids 1..).
    fn fleet_with(names: &[&str]) -> (State, Starts) {
        let mut state = State::default();
        let mut starts = Starts::default();
        let host = nexus_protocol::model::HostInfo {
            cpus: 8,
            memory_bytes: 32 << 30,
            ..nexus_fixtures::host("h1")
        };
        feed(
            &mut state,
            &mut starts,
            100,
            0.0,
            Command::RegisterHost(host),
        );
        for (i, name) in names.iter().enumerate() {
            let create = Command::CreateWorkspace {
                spec: nexus_fixtures::spec(name),
                owner: nexus_fixtures::user("alice"),
                host: nexus_fixtures::host_id("h1"),
                ports: vec![],
            };
            feed(&mut state, &mut starts, 1 + i as u128, 1.0, create);
        }
        (state, starts)
    }

    fn report(name: &str, state: &State, now: WorkspaceState) -> Command {
        Command::RecordObserved {
            host: nexus_fixtures::host_id("h1"),
            observed: vec![ObservedWorkspace {
                name: w(name),
                generation: state.workspaces()[&w(name)].generation,
                state: now,
                ports: vec![],
                error: None,
            }],
        }
    }

    #[test]
    fn a_retried_request_opens_no_second_start() {
        let (mut state, mut starts) = fleet_with(&["a"]);
        let running = report("a", &state, WorkspaceState::Running);
        feed(&mut state, &mut starts, 200, 3.0, running);
        assert_eq!(starts.take_finished(), [ok(StartKind::Cold, 2.0)]);
        // The CLI resends the create under its id; apply answers its first outcome.
        let create = Command::CreateWorkspace {
            spec: nexus_fixtures::spec("a"),
            owner: nexus_fixtures::user("alice"),
            host: nexus_fixtures::host_id("h1"),
            ports: vec![],
        };
        feed(&mut state, &mut starts, 1, 4.0, create);
        assert_eq!(starts.pending(), 0);
    }

    #[test]
    fn a_start_while_starting_keeps_the_first_request_time() {
        let (mut state, mut starts) = fleet_with(&["a"]);
        let again = Command::SetDesiredRun {
            name: w("a"),
            run: DesiredRun::Running,
        };
        feed(&mut state, &mut starts, 200, 2.0, again);
        let running = report("a", &state, WorkspaceState::Running);
        feed(&mut state, &mut starts, 201, 5.0, running);
        assert_eq!(starts.take_finished(), [ok(StartKind::Cold, 4.0)]);
    }

    #[test]
    fn a_switch_forgets_the_starts_of_what_it_stopped() {
        let (mut state, mut starts) = fleet_with(&["a", "b"]);
        assert_eq!(starts.pending(), 2);
        let switch = Command::SwitchWorkspace {
            owner: nexus_fixtures::user("alice"),
            name: w("b"),
        };
        feed(&mut state, &mut starts, 200, 2.0, switch);
        // a's start will never end: a was stopped; b's first start goes on.
        assert_eq!(starts.pending(), 1);
        let running = report("b", &state, WorkspaceState::Running);
        feed(&mut state, &mut starts, 201, 3.0, running);
        assert_eq!(starts.take_finished(), [ok(StartKind::Cold, 2.0)]);
        starts.expire(t(1_000.0));
        assert!(starts.take_finished().is_empty());
    }
}
