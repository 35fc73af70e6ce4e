//! What agents report: each workspace's observed state. A report moves the workspace's state,
//! finishes a destroy (the workspace and its ports are forgotten once it is gone), completes a
//! restart, and answers a `PORT_CONFLICT` with another port, once.
//!
//! A report from a host marked down is refused (`HOST_DOWN`), here where it is applied rather
//! than where it is received: a report a follower forwarded, or one that raced the marking, is
//! then refused the same way on every replica. Its workspaces stay lost until a heartbeat
//! returns the host (`HostReturned`); the agent keeps the report and sends it again then.
//!
//! Not here: the agents' heartbeats and stats (soft state, never in the log).

use nexus_protocol::HostId;
use nexus_protocol::clock::Timestamp;
use nexus_protocol::debug::EventKind;
use nexus_protocol::error::{ErrorCode, ErrorDetail};
use nexus_protocol::message::{DesiredRun, ObservedWorkspace};
use nexus_protocol::model::{HostStatus, WorkspaceState};

use super::{Outcome, State, reject};

impl State {
    /// Takes what `host`'s agent reports it observed, workspace by workspace.
    pub(super) fn record_observed(
        &mut self,
        at: Timestamp,
        host: &HostId,
        observed: &[ObservedWorkspace],
    ) -> Outcome {
        if self
            .hosts
            .get(host)
            .is_some_and(|record| record.status == HostStatus::Down)
        {
            return reject(
                ErrorCode::HostDown,
                format!(
                    "host {host} is marked down; its report is taken once a heartbeat returns it"
                ),
            );
        }
        for report in observed {
            self.observe(at, host, report);
        }
        Outcome::Applied
    }

    /// Whether taking `observed` from `host` would change nothing: every workspace in it is as
    /// the state holds it already (or is one the report does not speak for). An agent sends
    /// its whole report again every 30 s; a repeat needs no log entry, which at 20,000 hosts
    /// would be 667 entries a second, each written, replicated and applied by every replica.
    /// Answering a repeat from the applied state is as true as committing it: what it says is
    /// committed already. A report from a host marked down, or one this replica does not know,
    /// is never a repeat: applied, it is refused or taken as it always was. Kept beside
    /// [`State::observe`], which it must follow (`reports_tests.rs` applies each case).
    pub fn repeats_the_state(&self, host: &HostId, observed: &[ObservedWorkspace]) -> bool {
        self.report_changes(host, observed)
            .is_some_and(|changes| changes.is_empty())
    }

    /// The entries of `observed` from `host` that would change the state, in order: the leader
    /// proposes those alone, since an agent reports every workspace it runs whenever
    /// one of them changes, and at fifty workspaces a host each replica looked up fifty to take
    /// one. Taking only these leaves the state as taking the whole report would, for each entry
    /// speaks for its own workspace; a report naming one workspace twice is taken whole (its
    /// entries' order matters). `None` for a host marked down or not known: its report goes to
    /// the log whole, to be refused or taken at apply. Empty: a repeat.
    pub fn report_changes(
        &self,
        host: &HostId,
        observed: &[ObservedWorkspace],
    ) -> Option<Vec<ObservedWorkspace>> {
        if self
            .hosts
            .get(host)
            .is_none_or(|record| record.status == HostStatus::Down)
        {
            return None;
        }
        let changes: Vec<ObservedWorkspace> = observed
            .iter()
            .filter(|report| self.observation_changes(host, report))
            .cloned()
            .collect();
        let mut names = std::collections::BTreeSet::new();
        if !changes.is_empty() && !observed.iter().all(|report| names.insert(&report.name)) {
            return Some(observed.to_vec());
        }
        Some(changes)
    }

    /// The epoch of `host`'s workspaces ([`super::Workspaces::epoch`]), for a host that is in
    /// the fleet and not marked down: while it has not moved, a report [`State::repeats_the_state`]
    /// found a repeat is a repeat still, for nothing it depends on has changed (a host's status
    /// aside, which is why a host marked down has none).
    pub fn report_epoch(&self, host: &HostId) -> Option<u64> {
        self.hosts
            .get(host)
            .is_some_and(|record| record.status != HostStatus::Down)
            .then(|| self.workspaces.epoch(host))
    }

    /// Whether [`State::observe`] would change anything for `report` from `host`.
    fn observation_changes(&self, host: &HostId, report: &ObservedWorkspace) -> bool {
        let Some(workspace) = self.workspaces.get(&report.name) else {
            return false;
        };
        if &workspace.host != host || report.generation != workspace.generation {
            return false;
        }
        if workspace.state == WorkspaceState::Destroying {
            return report.state == WorkspaceState::Gone;
        }
        if matches!(
            report.state,
            WorkspaceState::Gone | WorkspaceState::Destroying
        ) {
            return false;
        }
        if workspace.state != report.state || workspace.last_error != report.error {
            return true;
        }
        let stopped = matches!(
            report.state,
            WorkspaceState::Stopped | WorkspaceState::Failed
        );
        // A restart waits for a stopped report; a port conflict is answered (or left failed)
        // by `reassign_port`: both are decisions taken at apply, never skipped here.
        (workspace.restart_pending && stopped && workspace.desired == DesiredRun::Stopped)
            || report
                .error
                .as_ref()
                .is_some_and(|error| error.code == ErrorCode::PortConflict)
    }

    /// Takes one observation from `host`'s agent. Reports about another host's workspace, or an
    /// older generation, are ignored: an agent speaks only for what it currently runs.
    fn observe(&mut self, at: Timestamp, host: &HostId, report: &ObservedWorkspace) {
        let Some(workspace) = self.workspaces.get_mut(&report.name) else {
            return;
        };
        if &workspace.host != host || report.generation != workspace.generation {
            return;
        }
        if workspace.state == WorkspaceState::Destroying && report.state == WorkspaceState::Gone {
            let name = report.name.clone();
            self.forget_workspace(&name);
            self.bump(host);
            return;
        }
        if workspace.state == WorkspaceState::Destroying {
            return;
        }
        // An agent reports a workspace gone only when its desired state no longer holds it: for
        // one that is not being destroyed, the report is about an earlier workspace of the same
        // name (every new workspace starts at generation 1), sent again or late after that one
        // was forgotten. Taken, it turned a new workspace `Gone` under its owner's eyes.
        // Nor may an agent set `Destroying` (the service refuses it in a report).
        if matches!(
            report.state,
            WorkspaceState::Gone | WorkspaceState::Destroying
        ) {
            return;
        }
        // A report repeats what the agent sees (every 30 s): only a change is an update, so
        // `cleanup --older-than` measures how long a workspace has been as it is.
        if workspace.state != report.state || workspace.last_error != report.error {
            workspace.updated_at = at;
        }
        // An event for each new state, and for each new error in the same state (a retry's).
        let from = workspace.state;
        let event = from != report.state
            || (report.error.is_some() && workspace.last_error != report.error);
        workspace.state = report.state;
        self.tally.moved(host, Some(from), Some(report.state));
        workspace.last_error = report.error.clone();
        if event {
            let kind = EventKind::State {
                from,
                to: report.state,
            };
            self.record_reported(&report.name, at, kind, None, report.error.as_ref());
        }
        let Some(workspace) = self.workspaces.get_mut(&report.name) else {
            return;
        };
        let stopped = matches!(
            report.state,
            WorkspaceState::Stopped | WorkspaceState::Failed
        );
        if workspace.restart_pending && stopped && workspace.desired == DesiredRun::Stopped {
            workspace.restart_pending = false;
            workspace.desired = DesiredRun::Running;
            self.bump(host);
            return;
        }
        let conflict = report.error.as_ref().and_then(|error| match error.detail {
            Some(ErrorDetail::PortConflict { port }) if error.code == ErrorCode::PortConflict => {
                Some(port)
            }
            _ => None,
        });
        if let Some(port) = conflict
            && report.state == WorkspaceState::Failed
        {
            let name = report.name.clone();
            self.reassign_port(at, host, &name, port);
        }
    }
}
