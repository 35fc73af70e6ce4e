//! The coordinator's hops in a request's trace (see `nexus_protocol::hop`): their names, which
//! requests and log entries are traced at which level (pure, tested below), and the apply's hops,
//! made here so that the driver's apply loop stays as it is.
//!
//! Writes are hops at INFO, kept by default: they are what a trace is asked about. Reads, agents'
//! reports and subscriptions are DEBUG (a waiting CLI reads its workspace every 50 ms; every
//! agent reports every 30 s). Raft's own traffic, heartbeats and container stats are never hops:
//! they are the fleet's pulse, not anyone's request.

use nexus_protocol::WorkspaceName;
use nexus_protocol::hop::{self, Hop};
use nexus_protocol::message::{AdminRequest, AgentRequest, PeerRequest, Request, WorkspaceRequest};
use tracing::{Level, Span};

use crate::state::{Command, Outcome, Proposal, State};

/// The service's handling of one request, from its arrival to its answer (`kind`: the request's
/// kind, as the metrics name it).
pub const REQUEST: &str = "coordinator.request";
/// A write proposed until it is applied on the node that proposed it (or, forwarded, on the
/// leader); for creates, one per create of the batch that carried it.
pub const PROPOSE: &str = "coordinator.propose";
/// A follower's forward of a write to the leader, one per attempt.
pub const FORWARD: &str = "coordinator.forward";
/// The apply of a log entry on one replica; for a batch of creates, one per create, with the
/// host it was placed on.
pub const APPLY: &str = "coordinator.apply";
/// The leader's push of a host's desired state to its agent, once per workspace whose cause
/// changed since the watch's last push (`host`: the agent's host).
pub const PUSH: &str = "coordinator.push";
/// An online restore on the coordinator that holds the backup, from its checks to the apply
/// (`kind`: the backup's id and index).
pub const RESTORE: &str = "coordinator.restore";

/// The level a request's [`REQUEST`] hop is made at, or `None` for no hop.
pub fn request_level(request: &Request) -> Option<Level> {
    const WRITE: Option<Level> = Some(Level::INFO);
    const READ: Option<Level> = Some(Level::DEBUG);
    match request {
        Request::Ping
        | Request::Host(_)
        | Request::Peer(
            PeerRequest::Raft(_) | PeerRequest::Chunk { .. } | PeerRequest::EntryVersion,
        ) => None,
        Request::Peer(PeerRequest::Propose(_)) => WRITE,
        Request::Stale(_) => READ,
        Request::Agent(request) => match request {
            AgentRequest::Heartbeat { .. } | AgentRequest::ContainerStats(_) => None,
            AgentRequest::Register(_) => WRITE,
            _ => READ,
        },
        Request::Admin(request) => match request {
            AdminRequest::ClusterAdd { .. }
            | AdminRequest::ClusterRemove(_)
            | AdminRequest::TransferLeader(_)
            | AdminRequest::SetHostStatus { .. }
            | AdminRequest::SetLimits { .. }
            | AdminRequest::BackupCreate
            | AdminRequest::BackupRestore { .. }
            | AdminRequest::BackupSchedule(Some(_))
            | AdminRequest::Maintain(_)
            | AdminRequest::MaintenanceSchedule(Some(_))
            | AdminRequest::PostNotice { .. }
            | AdminRequest::ClearNotices(_)
            | AdminRequest::SetPolicy { .. }
            | AdminRequest::ExtendLifetime { .. }
            | AdminRequest::StopIdle { .. }
            | AdminRequest::SetCredential { .. }
            | AdminRequest::RotateCredential { .. }
            | AdminRequest::DeleteCredential(_)
            | AdminRequest::RotateCredentialsKey
            | AdminRequest::CreateToken(_)
            | AdminRequest::RevokeToken(_)
            | AdminRequest::RemoveHost { .. }
            | AdminRequest::RevokeUser(_) => WRITE,
            _ => READ,
        },
        Request::Workspace(request) => match request {
            WorkspaceRequest::List
            | WorkspaceRequest::ListPage { .. }
            | WorkspaceRequest::ListStream
            | WorkspaceRequest::Watch(_)
            | WorkspaceRequest::Inspect(_)
            | WorkspaceRequest::Describe(_)
            | WorkspaceRequest::Endpoint(_)
            | WorkspaceRequest::Events(_)
            | WorkspaceRequest::Notices
            | WorkspaceRequest::Lifecycle(_)
            | WorkspaceRequest::Worktree(_) => READ,
            _ => WRITE,
        },
    }
}

/// The workspace a request is about, if it names one.
pub fn request_workspace(request: &Request) -> Option<&WorkspaceName> {
    let Request::Workspace(request) = request else {
        return None;
    };
    match request {
        WorkspaceRequest::Create(spec) | WorkspaceRequest::CreateWith { spec, .. } => {
            Some(&spec.name)
        }
        WorkspaceRequest::Inspect(name)
        | WorkspaceRequest::Start(name)
        | WorkspaceRequest::Stop(name)
        | WorkspaceRequest::Restart(name)
        | WorkspaceRequest::Destroy(name)
        | WorkspaceRequest::Switch(name)
        | WorkspaceRequest::Repair(name)
        | WorkspaceRequest::Describe(name)
        | WorkspaceRequest::Endpoint(name)
        | WorkspaceRequest::Events(name)
        | WorkspaceRequest::Lifecycle(name)
        | WorkspaceRequest::Hold(name)
        | WorkspaceRequest::Release(name)
        | WorkspaceRequest::Worktree(name)
        | WorkspaceRequest::Watch(name) => Some(name),
        WorkspaceRequest::List
        | WorkspaceRequest::ListPage { .. }
        | WorkspaceRequest::ListStream
        | WorkspaceRequest::Notices
        | WorkspaceRequest::RenewSession(_)
        | WorkspaceRequest::Cleanup { .. }
        | WorkspaceRequest::CleanupOf { .. } => None,
    }
}

/// The level of an entry's [`APPLY`] hop: agents' reports are DEBUG (each is an entry, under the
/// agent's own request id), the rest INFO.
pub fn apply_level(command: &Command) -> Level {
    if matches!(command, Command::RecordObserved { .. }) {
        Level::DEBUG
    } else {
        Level::INFO
    }
}

/// The workspace a command names, if one.
pub fn command_workspace(command: &Command) -> Option<&WorkspaceName> {
    match command.inner() {
        Command::CreateWorkspace { spec, .. } => Some(&spec.name),
        Command::SetDesiredRun { name, .. }
        | Command::DestroyWorkspace { name }
        | Command::RestartWorkspace { name }
        | Command::SwitchWorkspace { name, .. }
        | Command::RepairWorkspace { name }
        | Command::HoldWorkspace { name, .. }
        | Command::ExtendLifetime { name, .. }
        | Command::PolicyDestroy { name, .. }
        | Command::RecordWorktree {
            workspace: name, ..
        } => Some(name),
        _ => None,
    }
}

/// The [`APPLY`] hops of `proposal`, made before it is applied (so that they time the apply):
/// one under its request id, or for a batch of creates one under each create's.
pub fn applying(proposal: &Proposal) -> Vec<Span> {
    let level = apply_level(&proposal.command);
    // The driver applies every entry: when nothing keeps hops of this level, nothing is made.
    if !tracing::level_enabled!(level) {
        return Vec::new();
    }
    if let Command::PlaceWorkspaces(requests) = &proposal.command {
        return requests
            .iter()
            .map(|request| {
                Hop::new(APPLY, Some(request.request_id))
                    .workspace(&request.spec.name)
                    .kind("place")
                    .at(level)
            })
            .collect();
    }
    let mut hop = Hop::new(APPLY, Some(proposal.request_id));
    if let Some(workspace) = command_workspace(&proposal.command) {
        hop = hop.workspace(workspace);
    }
    vec![hop.at(level)]
}

/// Records how `proposal`'s apply went on its [`applying`] hops: its outcome, and for each
/// create of a batch its own outcome and the host the scheduler chose (logged inside the hop).
pub fn applied(spans: &[Span], proposal: &Proposal, outcome: &Outcome, state: &State) {
    let Command::PlaceWorkspaces(requests) = &proposal.command else {
        for span in spans {
            record_outcome(span, Some(outcome));
        }
        return;
    };
    for (span, request) in spans.iter().zip(requests) {
        let outcome = state.outcome_of(request.request_id);
        if let Some(Outcome::Applied) = outcome
            && let Some(record) = state.workspaces().get(&request.spec.name)
        {
            // On the hop only: a line per create on every replica cost the apply a tenth of
            // its time at thousands of creates a second.
            span.record(hop::HOST_FIELD, record.host.as_str());
        }
        record_outcome(span, outcome);
    }
}

fn record_outcome(span: &Span, outcome: Option<&Outcome>) {
    match outcome {
        Some(Outcome::Applied) => hop::ok(span),
        Some(Outcome::Rejected(error)) => hop::failed(span, error),
        None => {
            span.record(hop::OUTCOME_FIELD, "INTERNAL: no outcome in the journal");
        }
    }
}

#[cfg(test)]
mod tests {
    use nexus_protocol::message::StaleRead;
    use nexus_protocol::{HostId, NodeId};

    use super::*;

    #[test]
    fn writes_are_kept_reads_are_debug_and_the_pulse_is_no_hop() {
        let name = WorkspaceName::new("api").unwrap();
        let spec = nexus_fixtures::spec("api");
        let cases: Vec<(Request, Option<Level>, Option<&str>)> = vec![
            (
                Request::Workspace(WorkspaceRequest::Create(spec.clone())),
                Some(Level::INFO),
                Some("api"),
            ),
            (
                Request::Workspace(WorkspaceRequest::Stop(name.clone())),
                Some(Level::INFO),
                Some("api"),
            ),
            (
                Request::Workspace(WorkspaceRequest::Cleanup { older_than_secs: 1 }),
                Some(Level::INFO),
                None,
            ),
            (
                Request::Workspace(WorkspaceRequest::Describe(name.clone())),
                Some(Level::DEBUG),
                Some("api"),
            ),
            (
                Request::Stale(StaleRead::Workspace(WorkspaceRequest::List)),
                Some(Level::DEBUG),
                None,
            ),
            (
                Request::Admin(AdminRequest::SetHostStatus {
                    host: HostId::new("h1").unwrap(),
                    status: nexus_protocol::model::HostStatus::Cordoned,
                }),
                Some(Level::INFO),
                None,
            ),
            (
                Request::Admin(AdminRequest::Hosts),
                Some(Level::DEBUG),
                None,
            ),
            (
                Request::Admin(AdminRequest::TransferLeader(NodeId::new(2).unwrap())),
                Some(Level::INFO),
                None,
            ),
            (Request::Peer(PeerRequest::Raft(vec![])), None, None),
            (
                Request::Peer(PeerRequest::Propose(vec![])),
                Some(Level::INFO),
                None,
            ),
            (
                Request::Agent(AgentRequest::Heartbeat {
                    sequence: 1,
                    stats: None,
                }),
                None,
                None,
            ),
            (
                Request::Agent(AgentRequest::ContainerStats(vec![])),
                None,
                None,
            ),
            (
                Request::Agent(AgentRequest::ReportObserved(vec![])),
                Some(Level::DEBUG),
                None,
            ),
            (Request::Ping, None, None),
        ];
        for (request, level, workspace) in cases {
            assert_eq!(request_level(&request), level, "{request:?}");
            assert_eq!(
                request_workspace(&request).map(WorkspaceName::as_str),
                workspace,
                "{request:?}"
            );
        }
    }

    #[test]
    fn reports_apply_at_debug_and_changes_name_their_workspace() {
        let name = WorkspaceName::new("api").unwrap();
        let report = Command::RecordObserved {
            host: HostId::new("h1").unwrap(),
            observed: vec![],
        };
        assert_eq!(apply_level(&report), Level::DEBUG);
        assert_eq!(command_workspace(&report), None);
        let stop = Command::SetDesiredRun {
            name: name.clone(),
            run: nexus_protocol::message::DesiredRun::Stopped,
        };
        assert_eq!(apply_level(&stop), Level::INFO);
        assert_eq!(command_workspace(&stop), Some(&name));
        // A user's change checked against its owner at apply names the same workspace.
        let owned = Command::Owned(Box::new(stop));
        assert_eq!(command_workspace(&owned), Some(&name));
        assert_eq!(apply_level(&Command::PlaceWorkspaces(vec![])), Level::INFO);
    }
}
